/**
 * `vault export` / `vault import` through the real CLI, on SQLite and Postgres: a vault filled over HTTP (a pypi proxy of
 * a loopback PEP 503 index, an npm proxy of a loopback registry built from the real fixtures, a pypi hosted repository
 * holding the same wheel as the proxy, an http proxy) is exported; the archive is read back (manifest first, each blob once, digests);
 * `--package` selections; an import into a fresh vault with every upstream stopped serves the files (cache hits) and
 * documents (stale, revalidated when online), hosted pages regenerated; a second import records nothing; a tampered
 * blob and truncated archives record nothing and name what is wrong; `--map`, format and type refusals, `--dry-run`.
 * The real pip/npm/twine round trip is test/transfer/clients.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { and, eq } from "drizzle-orm";
import { buildWheel, startPypiIndex, type TestPypiIndex } from "../helpers/pypi-index.ts";
import { startNpmRegistry, NPM_FIXTURES, type TestNpmRegistry } from "../helpers/npm-registry.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { twineUploadForm } from "../helpers/python.ts";
import { metadataDrivers, useMetadata } from "../helpers/metadata.ts";
import { tablesOf, type OpenDb } from "../../core/db/index.ts";
import type { VaultConfig } from "../../core/config/types.ts";
import { blobOffset, readArchive, sha256, storedPaths, vaultCli, writeConfig, type ReadArchive } from "./env.ts";

const PW = "pw-xfer-1";
const ADMIN = { authorization: `Basic ${btoa(`admin:${PW}`)}` };
const PEP691 = { accept: "application/vnd.pypi.simple.v1+json" };
const ABBREV = { accept: "application/vnd.npm.install-v1+json" };
/** A generic file behind the http proxy. */
const TOOL = new Uint8Array(70_000).map((_, i) => (i * 31) & 0xff);

for (const driver of metadataDrivers())
  describe(`vault export / vault import (${driver})`, () => {
    const md = useMetadata(driver);
    let idx: TestPypiIndex;
    let reg: TestNpmRegistry;
    let httpUp: TestUpstream;
    let A: StartedVault;
    let dbA: OpenDb;
    let repos: VaultConfig["repositories"];
    /** A config on the database `o`. */
    const configOn = (o: OpenDb, repositories = repos): VaultConfig => ({ auth: { admin: { user: "admin", password: PW } }, metadata: md.configOf(o), repositories });
    let cfgA: string;
    let archive: string;
    let read: ReadArchive;
    /** Vault paths and bytes of the files fetched through A. */
    const files: Record<string, { path: string; sha256: string }> = {};

    /** Fetches a PEP 691 page and one of its files through `base`; returns the file's vault path and sha256. */
    async function fetchWheel(base: string, repo: string, project: string, filename: string): Promise<{ path: string; sha256: string }> {
      const pageUrl = `${base}/${repo}/simple/${project}/`;
      const page = (await (await fetch(pageUrl, { headers: PEP691 })).json()) as { files: { filename: string; url: string }[] };
      const f = page.files.find((x) => x.filename === filename)!;
      const url = new URL(f.url, pageUrl);
      const res = await fetch(url);
      expect(res.status).toBe(200);
      return { path: decodeURIComponent(url.pathname.slice(`/${repo}/`.length)), sha256: sha256(await res.bytes()) };
    }

    beforeAll(async () => {
      idx = await startPypiIndex();
      reg = startNpmRegistry();
      httpUp = await startUpstream({ handler: (req) => (new URL(req.url).pathname === "/dist/tool-1.0.tar.gz" ? new Response(TOOL) : undefined) });
      repos = [
        { name: "pypi", format: "pypi", type: "proxy", upstream: idx.indexUrl, fileHosts: [idx.url, idx.files.url] },
        { name: "pypi-local", format: "pypi", type: "hosted" },
        { name: "npm", format: "npm", type: "proxy", upstream: reg.url },
        { name: "python", format: "pypi", type: "group", members: ["pypi-local", "pypi"] },
        { name: "files", format: "http", type: "proxy", upstream: `${httpUp.url}/dist/` },
      ];
      dbA = await md.open();
      A = await startVault({ config: configOn(dbA) });
      cfgA = await writeConfig(configOn(dbA));
      files.example = await fetchWheel(A.url, "pypi", "example", "example-21.12-py3-none-any.whl");
      files.wheel = await fetchWheel(A.url, "pypi", "wheel", "wheel-0.38.4-py3-none-any.whl");
      // the same wheel uploaded to the hosted repository: one blob in the archive
      const bytes = await Bun.file(join(idx.root, idx.byName.get("example-21.12-py3-none-any.whl")!.path)).bytes();
      const up = await fetch(`${A.url}/pypi-local/`, { method: "POST", body: twineUploadForm({ name: "example", version: "21.12", filename: "example-21.12-py3-none-any.whl", bytes }), headers: ADMIN });
      expect(up.status).toBe(200);
      const pack = (await (await fetch(`${A.url}/npm/chalk`, { headers: ABBREV })).json()) as { versions: Record<string, { dist: { tarball: string } }> };
      const tgz = await fetch(pack.versions["4.1.0"].dist.tarball);
      expect(tgz.status).toBe(200);
      files.chalk = { path: "chalk/-/chalk-4.1.0.tgz", sha256: sha256(await tgz.bytes()) };
      expect(sha256(await (await fetch(`${A.url}/files/tool-1.0.tar.gz`)).bytes())).toBe(sha256(TOOL));
      archive = join(await tmpDataDir("xfer-out-"), "set.tar");
    }, 120_000);

    afterAll(async () => {
      await A?.stop(1);
      await idx?.stop();
      await reg?.stop();
      await httpUp?.stop();
    }, 30_000);

    test("export writes manifest.json first, then each blob once; entries carry digest, package, upstream state", async () => {
      const r = await vaultCli(["export", "--config", cfgA, "--data", A.dataDir, "--out", archive]);
      expect(r.err).toContain("exported ");
      expect(r.code).toBe(0);
      expect(await readdir(dirname(archive))).toEqual(["set.tar"]); // the temp file was renamed
      read = await readArchive(archive);
      const m = read.manifest;
      expect(read.names[0]).toBe("manifest.json");
      expect(m.format).toBe("artifact-vault-export");
      expect(m.version).toBe(1);
      expect(m.repositories.map((x) => `${x.name} ${x.format} ${x.type}`)).toEqual(["pypi pypi proxy", "pypi-local pypi hosted", "npm npm proxy", "files http proxy"]);
      expect(m.repositories[0].upstream).toBe(idx.indexUrl);
      // every blob once, named by its digest, bytes matching
      const shas = new Set(m.entries.map((e) => e.sha256));
      expect(read.names.length).toBe(1 + shas.size);
      expect(m.blobs.count).toBe(shas.size);
      for (const [name, bytes] of read.blobs) expect(`blobs/sha256/${sha256(bytes)}`).toBe(name);
      // the wheel reached through the proxy and uploaded to the hosted repository is one blob
      const ex = m.entries.filter((e) => e.sha256 === files.example.sha256);
      expect(ex.map((e) => `${e.repository}:${e.path}`).sort()).toEqual([`pypi-local:files/example/example-21.12-py3-none-any.whl`, `pypi:${files.example.path}`]);
      expect(read.names.filter((n) => n.endsWith(files.example.sha256))).toHaveLength(1);
      expect(ex[0].package).toEqual({ name: "example", version: "21.12" });
      const chalk = m.entries.find((e) => e.repository === "npm" && e.path === files.chalk.path)!;
      expect(chalk).toMatchObject({ format: "npm", type: "proxy", kind: "artifact", sha256: files.chalk.sha256, package: { name: "chalk", version: "4.1.0" } });
      expect(chalk.mutable).toBeUndefined();
      expect(chalk.size).toBe(Bun.file(join(NPM_FIXTURES, "tarballs", "chalk-4.1.0.tgz")).size);
      // cached documents are marked mutable (revalidated), with their package from ownerOf
      const snap = m.entries.find((e) => e.repository === "pypi" && e.path === "simple/example/")!;
      expect(snap).toMatchObject({ kind: "metadata", mutable: true, package: { name: "example" } });
      expect(m.entries.some((e) => e.repository === "npm" && e.path.startsWith("chalk#abbrev#") && e.mutable === true)).toBe(true);
      // hosted rows are never mutable
      expect(m.entries.filter((e) => e.repository === "pypi-local" && e.mutable)).toEqual([]);

      // through standard output and standard input: the same set (a dry run into A itself finds it all stored)
      const piped = join(await tmpDataDir("xfer-pipe-"), "piped.tar");
      const w = await vaultCli(["export", "--config", cfgA, "--data", A.dataDir, "--out", "-"], { stdout: piped });
      expect(w.code).toBe(0);
      expect((await readArchive(piped)).manifest.entries).toEqual(m.entries);
      const dry = await vaultCli(["import", "--config", cfgA, "--data", A.dataDir, "--dry-run", "-"], { stdin: piped });
      expect(dry.code).toBe(0);
      expect(dry.out).toMatch(/^  pypi \(pypi proxy\): would record 0 files \(0 B\), \d+ already stored$/m);
    }, 60_000);

    test("--package selects a package's files with its documents; one that matches nothing writes nothing", async () => {
      const out = join(await tmpDataDir("xfer-sub-"), "example.tar");
      const r = await vaultCli(["export", "--config", cfgA, "--data", A.dataDir, "--out", out, "--repo", "pypi", "--package", "example@21.12"]);
      expect(r.code).toBe(0);
      const m = (await readArchive(out)).manifest;
      const paths = m.entries.map((e) => `${e.repository}:${e.path}`);
      expect(paths).toContain(`pypi:${files.example.path}`);
      expect(paths).toContain("pypi:simple/example/");
      expect(paths.some((p) => p.startsWith("pypi:simple/example/#"))).toBe(true);
      expect(paths.some((p) => p.includes("wheel-0.38.4") || p.includes("simple/wheel/") || !p.startsWith("pypi:"))).toBe(false);
      expect(m.selection).toMatchObject({ repositories: ["pypi"], packages: ["example@21.12"] });

      // a list file and an npm package with its packuments
      const list = join(await tmpDataDir("xfer-list-"), "list.txt");
      await Bun.write(list, "# wanted\nchalk@4.1.0\n\n");
      const out2 = join(await tmpDataDir("xfer-sub-"), "chalk.tar");
      expect((await vaultCli(["export", "--config", cfgA, "--data", A.dataDir, "--out", out2, "--list", list])).code).toBe(0);
      const m2 = (await readArchive(out2)).manifest;
      expect(m2.entries.every((e) => e.path.startsWith("chalk/") || e.path.startsWith("chalk#"))).toBe(true);
      expect(m2.entries.map((e) => e.path)).toContain(files.chalk.path);
      expect(m2.entries.every((e) => e.repository === "npm")).toBe(true);
      expect(m2.entries.some((e) => e.path.startsWith("chalk#abbrev#"))).toBe(true);

      // a group stands for its members
      const out4 = join(await tmpDataDir("xfer-sub-"), "group.tar");
      expect((await vaultCli(["export", "--config", cfgA, "--data", A.dataDir, "--out", out4, "--repo", "python", "--package", "example"])).code).toBe(0);
      const m4 = (await readArchive(out4)).manifest;
      expect(m4.repositories.map((r) => r.name)).toEqual(["pypi-local", "pypi"]);
      expect(m4.entries.filter((e) => e.sha256 === files.example.sha256).map((e) => e.repository).sort()).toEqual(["pypi", "pypi-local"]);

      const out3 = join(await tmpDataDir("xfer-sub-"), "none.tar");
      const bad = await vaultCli(["export", "--config", cfgA, "--data", A.dataDir, "--out", out3, "--package", "example@99.9", "--package", "no-such-project"]);
      expect(bad.code).toBe(1);
      expect(bad.err).toContain("no stored file matches --package example@99.9, --package no-such-project");
      expect(existsSync(out3)).toBe(false);

      const since = await vaultCli(["export", "--config", cfgA, "--data", A.dataDir, "--out", out3, "--since", "yesterday"]);
      expect(since.code).toBe(2);
      expect(since.err).toContain("--since: expected a date");
      const future = await vaultCli(["export", "--config", cfgA, "--data", A.dataDir, "--out", out3, "--since", "2999-01-01"]);
      expect(future.code).toBe(0);
      expect((await readArchive(out3)).manifest.entries).toEqual([]);
    }, 60_000);

    test("import into a fresh vault with every upstream stopped: files are cache hits, documents stale, hosted pages listed", async () => {
      await A.stop();
      await idx.stop();
      await reg.stop();
      await httpUp.stop();
      const dbB = await md.open();
      const dirB = await tmpDataDir("xfer-b-");
      const cfgB = await writeConfig(configOn(dbB));
      const before = Date.now();
      const r = await vaultCli(["import", "--config", cfgB, "--data", dirB, archive]);
      expect(r.err).toBe("");
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/pypi \(pypi proxy\): recorded \d+ files/);
      expect(r.out).toContain("pypi-local (pypi hosted): recorded");
      expect(r.out).toContain("indexes regenerated");
      const m = read.manifest;
      for (const repo of ["pypi", "npm", "files"]) expect(await storedPaths(dbB.db, repo)).toEqual(m.entries.filter((e) => e.repository === repo).map((e) => e.path).sort());
      // imported cached documents expire at the import (revalidated when online); fetchedAt is the exporter's
      const { artifacts } = tablesOf(dbB.db);
      const [snap] = await dbB.db.select().from(artifacts).where(and(eq(artifacts.repository, "pypi"), eq(artifacts.path, "simple/example/")));
      expect(snap.expiresAt).toBeGreaterThanOrEqual(before);
      expect(snap.expiresAt!).toBeLessThanOrEqual(Date.now());
      expect(snap.fetchedAt).toBe(m.entries.find((e) => e.repository === "pypi" && e.path === "simple/example/")!.fetchedAt);
      const [whl] = await dbB.db.select().from(artifacts).where(and(eq(artifacts.repository, "pypi"), eq(artifacts.path, files.example.path)));
      expect(whl.expiresAt).toBeNull();
      // one audit record per repository written to
      const { auditLog } = tablesOf(dbB.db);
      const audit = await dbB.db.select().from(auditLog).where(eq(auditLog.action, "import"));
      expect(audit.map((a) => [a.actor, a.repository]).sort()).toEqual([["vault-import", "files"], ["vault-import", "npm"], ["vault-import", "pypi"], ["vault-import", "pypi-local"]]);
      expect(JSON.parse(audit.find((a) => a.repository === "npm")!.detail!)).toMatchObject({ source: "npm", files: m.entries.filter((e) => e.repository === "npm").length, archiveCreatedAt: m.createdAt });

      const B = await startVault({ config: configOn(dbB), dataDir: dirB });
      try {
        const page = await fetch(`${B.url}/pypi/simple/example/`, { headers: PEP691 });
        expect(page.status).toBe(200);
        expect(page.headers.get("x-vault-cache")).toBe("STALE");
        const got = await fetchWheel(B.url, "pypi", "example", "example-21.12-py3-none-any.whl");
        expect(got).toEqual(files.example);
        const hosted = (await (await fetch(`${B.url}/pypi-local/simple/example/`, { headers: PEP691 })).json()) as { files: { filename: string; hashes: { sha256: string } }[] };
        expect(hosted.files.map((f) => [f.filename, f.hashes.sha256])).toEqual([["example-21.12-py3-none-any.whl", files.example.sha256]]);
        expect(await fetchWheel(B.url, "pypi-local", "example", "example-21.12-py3-none-any.whl")).toMatchObject({ sha256: files.example.sha256 });
        // npm: the packument rendered for A's URL is served for B's, tarball URLs pointing at B
        const pr = await fetch(`${B.url}/npm/chalk`, { headers: ABBREV });
        expect(pr.status).toBe(200);
        expect(pr.headers.get("x-vault-cache")).toBe("STALE");
        const pack = (await pr.json()) as { versions: Record<string, { dist: { tarball: string } }> };
        expect(pack.versions["4.1.0"].dist.tarball).toBe(`${B.url}/npm/chalk/-/chalk-4.1.0.tgz`);
        const tgz = await fetch(pack.versions["4.1.0"].dist.tarball);
        expect(tgz.status).toBe(200);
        expect(tgz.headers.get("x-vault-cache")).toBe("HIT");
        expect(sha256(await tgz.bytes())).toBe(files.chalk.sha256);
        // http: the generic file is a hit
        const tool = await fetch(`${B.url}/files/tool-1.0.tar.gz`);
        expect(tool.headers.get("x-vault-cache")).toBe("HIT");
        expect(sha256(await tool.bytes())).toBe(sha256(TOOL));

        // a second import into the running vault changes nothing
        const again = await vaultCli(["import", "--config", cfgB, "--data", dirB, archive]);
        expect(again.code).toBe(0);
        expect(again.out).not.toMatch(/recorded [1-9]/);
        expect(again.out).toMatch(/pypi \(pypi proxy\): recorded 0 files \(0 B\), \d+ already stored/);
        expect(again.out).toContain(", 0 written to the blob store");
        for (const repo of ["pypi", "npm", "files"]) expect(await storedPaths(dbB.db, repo)).toEqual(m.entries.filter((e) => e.repository === repo).map((e) => e.path).sort());
      } finally {
        await B.stop();
      }
    }, 120_000);

    test("a tampered blob: the error names its entries and nothing is recorded", async () => {
      const bytes = new Uint8Array(await Bun.file(archive).arrayBuffer());
      bytes[blobOffset(bytes, files.chalk.sha256) + 100] ^= 0xff;
      const bad = join(await tmpDataDir("xfer-bad-"), "tampered.tar");
      await Bun.write(bad, bytes);
      const dbD = await md.open();
      const r = await vaultCli(["import", "--config", await writeConfig(configOn(dbD)), "--data", await tmpDataDir("xfer-d-"), bad]);
      expect(r.code).toBe(1);
      expect(r.err).toContain("1 blob does not match the manifest; nothing was recorded");
      expect(r.err).toContain(`${files.chalk.sha256}: its bytes hash to`);
      expect(r.err).toContain(`npm:${files.chalk.path}`);
      for (const repo of ["pypi", "npm"]) expect(await storedPaths(dbD.db, repo)).toEqual([]);
      expect(await storedPaths(dbD.db, "pypi-local", "files/")).toEqual([]);
    }, 60_000);

    test("a truncated archive (mid-blob, or at an entry boundary) records nothing", async () => {
      const bytes = new Uint8Array(await Bun.file(archive).arrayBuffer());
      const dir = await tmpDataDir("xfer-trunc-");
      const half = join(dir, "half.tar");
      await Bun.write(half, bytes.subarray(0, blobOffset(bytes, files.chalk.sha256) + 1000));
      const manifestOnly = join(dir, "manifest-only.tar");
      await Bun.write(manifestOnly, bytes.subarray(0, blobOffset(bytes, read.names[1].slice("blobs/sha256/".length)) - 512));
      for (const [file, msg] of [
        [half, "truncated or damaged archive"],
        [manifestOnly, `the archive ends before ${read.manifest.blobs.count} of its ${read.manifest.blobs.count} blobs (truncated?); nothing was recorded`],
      ]) {
        const dbE = await md.open();
        const r = await vaultCli(["import", "--config", await writeConfig(configOn(dbE)), "--data", await tmpDataDir("xfer-e-"), file]);
        expect(r.code).toBe(1);
        expect(r.err).toContain(msg);
        for (const repo of ["pypi", "npm"]) expect(await storedPaths(dbE.db, repo)).toEqual([]);
        expect(await storedPaths(dbE.db, "pypi-local", "files/")).toEqual([]);
      }
    }, 60_000);

    test("--map to other names; another format or type is refused; --dry-run stores nothing", async () => {
      const dbF = await md.open();
      const dirF = await tmpDataDir("xfer-f-");
      const cfgF = await writeConfig(
        configOn(dbF, [
          { name: "mirror", format: "pypi", type: "proxy", upstream: repos![0].upstream, fileHosts: repos![0].fileHosts as string[] },
          { name: "team", format: "pypi", type: "hosted" },
          { name: "js", format: "npm", type: "proxy", upstream: repos![2].upstream },
          { name: "generic", format: "http", type: "proxy", upstream: repos![4].upstream },
        ]),
      );
      const maps = ["--map", "pypi=mirror", "--map", "pypi-local=team", "--map", "npm=js", "--map", "files=generic"];
      const missing = await vaultCli(["import", "--config", cfgF, "--data", dirF, archive]);
      expect(missing.code).toBe(1);
      expect(missing.err).toContain("pypi (pypi proxy): this vault has no repository pypi; configure one or map it with --map pypi=NAME");
      const format = await vaultCli(["import", "--config", cfgF, "--data", dirF, ...maps.slice(0, 4), "--map", "npm=team", "--map", "files=generic", archive]);
      expect(format.code).toBe(1);
      expect(format.err).toContain("npm → team: refusing to import npm files into a pypi repository");
      const type = await vaultCli(["import", "--config", cfgF, "--data", dirF, "--map", "pypi=team", "--map", "pypi-local=mirror", "--map", "npm=js", "--map", "files=generic", archive]);
      expect(type.code).toBe(1);
      expect(type.err).toContain("pypi → team: refusing to import a proxy repository's files into a hosted repository");
      const typo = await vaultCli(["import", "--config", cfgF, "--data", dirF, ...maps, "--map", "pypy=mirror", archive]);
      expect(typo.code).toBe(1);
      expect(typo.err).toContain("--map pypy=mirror: the archive has no repository pypy");

      const dry = await vaultCli(["import", "--config", cfgF, "--data", dirF, "--dry-run", ...maps, archive]);
      expect(dry.code).toBe(0);
      expect(dry.out).toContain("pypi → mirror (pypi proxy): would record");
      expect(dry.out).toContain("verified (dry run, nothing stored)");
      for (const repo of ["mirror", "js"]) expect(await storedPaths(dbF.db, repo)).toEqual([]);
      expect(await storedPaths(dbF.db, "team", "files/")).toEqual([]);

      const r = await vaultCli(["import", "--config", cfgF, "--data", dirF, ...maps, archive]);
      expect(r.code).toBe(0);
      expect(r.out).toContain("pypi-local → team (pypi hosted): recorded");
      expect(await storedPaths(dbF.db, "team", "files/")).toEqual(["files/example/example-21.12-py3-none-any.whl", "files/example/example-21.12-py3-none-any.whl.metadata"]);
      expect(await storedPaths(dbF.db, "team", "simple/example/")).toEqual(["simple/example/", "simple/example/#html", "simple/example/#json", "simple/example/#text-html"]);
      expect(await storedPaths(dbF.db, "js")).toEqual(read.manifest.entries.filter((e) => e.repository === "npm").map((e) => e.path).sort());
    }, 60_000);

    test("a hosted file stored with other contents refuses the whole import before a blob is read", async () => {
      const dbG = await md.open();
      const G = await startVault({ config: configOn(dbG) });
      const other = buildWheel("example", "21.12");
      const up = await fetch(`${G.url}/pypi-local/`, { method: "POST", body: twineUploadForm({ name: "example", version: "21.12", filename: "example-21.12-py3-none-any.whl", bytes: other }), headers: ADMIN });
      expect(up.status).toBe(200);
      await G.stop();
      const r = await vaultCli(["import", "--config", await writeConfig(configOn(dbG)), "--data", G.dataDir, archive]);
      expect(r.code).toBe(1);
      expect(r.err).toContain("hosted files already stored with other contents (an import never replaces a hosted file)");
      expect(r.err).toContain(`pypi-local:files/example/example-21.12-py3-none-any.whl (stored sha256:${sha256(other)}, archive sha256:${files.example.sha256})`);
      for (const repo of ["pypi", "npm"]) expect(await storedPaths(dbG.db, repo)).toEqual([]);
    }, 60_000);
  });

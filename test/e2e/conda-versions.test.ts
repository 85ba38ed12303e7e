/**
 * e2e: package versions of a conda hosted channel as the web UI API and retention see them (the plugin's `packageOf`,
 * `compareVersions`, `deleteVersion`), with packages built by the real `tar` + `bzip2` and rattler's `simpleSolve`
 * (pixi's engine) as the client: `/-/api/` search and package pages find uploaded packages with their versions (conda
 * order) and sha256, never repodata or shards; `deleteVersion` removes every build of one version from every subdir
 * with repodata, its variants and channeldata regenerated (rattler then no longer picks it); `DELETE` of one file
 * (permissions, audit, through a group's `writeTo`); retention's `keepVersions` through `deleteVersion`, audited; a
 * listing left without its info row by a cut-short deletion is dropped by the next write.
 *
 * Under CI=true a missing client (rattler's bindings, cph, tar, bzip2) fails the tests; elsewhere they are skipped.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { mkdir, writeFile } from "node:fs/promises";
import { eq } from "drizzle-orm";
import { ZLIB_CHANNEL, rattlerSolve, requireCondaClients, sha256Hex } from "../helpers/conda.ts";
import { requireTools } from "../helpers/registry.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { tablesOf } from "../../core/db/index.ts";
import { runRetention } from "../../core/retention.ts";
import { silentLogger } from "../../core/log.ts";

const CLIENTS = (await requireCondaClients()) && requireTools(["tar", "bzip2"]);
const clientTest = CLIENTS ? test : test.skip;
const T = 120_000;
const PW = "s3cret-conda-versions";
const ADMIN = "Basic " + btoa(`admin:${PW}`);
const PLATFORMS = ["linux-64", "noarch"];

/** A package built by {@link buildPackage}. */
interface Built {
  subdir: string;
  filename: string;
  bytes: Uint8Array;
  sha256: string;
}

/** Builds `<subdir>/vaultdemo-<version>-<build>.tar.bz2` with the real tar and bzip2: info/index.json, about.json, one file. */
async function buildPackage(dir: string, version: string, build: string, subdir: string): Promise<Built> {
  const root = join(dir, `${subdir}-${version}-${build}`);
  await mkdir(join(root, "info"), { recursive: true });
  await mkdir(join(root, "share/vaultdemo"), { recursive: true });
  await writeFile(join(root, "share/vaultdemo/VERSION"), `${version} ${build} ${subdir}\n`);
  const index: Record<string, unknown> = { name: "vaultdemo", version, build, build_number: 0, depends: [], license: "MIT", subdir, timestamp: 1700000000000 };
  if (subdir === "noarch") index.noarch = "generic";
  else Object.assign(index, { arch: "x86_64", platform: "linux" });
  await writeFile(join(root, "info/index.json"), JSON.stringify(index));
  await writeFile(join(root, "info/about.json"), JSON.stringify({ summary: `vaultdemo ${version}`, license: "MIT" }));
  await writeFile(join(root, "info/paths.json"), JSON.stringify({ paths: [{ _path: "share/vaultdemo/VERSION", path_type: "hardlink" }], paths_version: 1 }));
  const filename = `vaultdemo-${version}-${build}.tar.bz2`;
  const out = join(dir, `${subdir}-${filename}`);
  const p = Bun.spawn(["tar", "-cjf", out, "-C", root, "info", "share"], { stdout: "pipe", stderr: "pipe" });
  const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`tar failed: ${err}`);
  const bytes = await Bun.file(out).bytes();
  return { subdir, filename, bytes, sha256: sha256Hex(bytes) };
}

describe("conda hosted channel: versions in the web UI API, deleteVersion, DELETE and retention with rattler", () => {
  let vault: StartedVault;
  let chan: string;
  const built = new Map<string, Built>();
  const put = (repo: string, b: { subdir: string; filename: string; bytes: Uint8Array }) =>
    fetch(`${vault.url}/${repo}/${b.subdir}/${b.filename}`, { method: "PUT", body: b.bytes as BodyInit, headers: { authorization: ADMIN } });
  const api = async <T>(path: string): Promise<T> => {
    const r = await fetch(`${vault.url}/-/api/${path}`);
    expect(r.status).toBe(200);
    return (await r.json()) as T;
  };
  const repodata = async (subdir: string) => (await (await fetch(`${chan}${subdir}/repodata.json`)).json()) as { packages: Record<string, unknown>; "packages.conda": Record<string, unknown> };
  const solve = (spec: string) => rattlerSolve([spec], [chan], PLATFORMS);
  /** rattler's answer for a spec it cannot solve (it rejects with a message string). */
  const unsolvable = async (spec: string) => {
    try {
      await solve(spec);
    } catch (e) {
      return String(e).trim();
    }
    throw new Error(`rattler solved ${spec}`);
  };
  const hosted = () => ({ ctx: vault.vault.repositories.get("conda-local")!, plugin: vault.vault.plugins.get("conda")! });

  beforeAll(async () => {
    if (!CLIENTS) return;
    vault = await startVault({
      config: {
        auth: { anonymousRead: true, admin: { user: "admin", password: PW } },
        retention: { intervalMinutes: 0 }, // the test runs retention itself
        repositories: [
          { name: "conda-local", format: "conda", type: "hosted", retention: { keepVersions: 2 } },
          { name: "conda", format: "conda", type: "group", members: ["conda-local"], writeTo: "conda-local" },
        ],
      },
    });
    chan = `${vault.url}/conda-local/`;
    const dir = await tmpDataDir("conda-versions-pkgs-");
    for (const [v, b, s] of [
      ["1.0", "0", "noarch"],
      ["2.0rc1", "0", "noarch"],
      ["2.0", "0", "noarch"],
      ["2.0", "h1234567_0", "linux-64"],
      ["10.0", "0", "noarch"],
    ]) {
      const p = await buildPackage(dir, v, b, s);
      built.set(`${s}/${p.filename}`, p);
      expect((await put("conda-local", p)).status).toBe(201);
    }
    const zlib = await Bun.file(join(ZLIB_CHANNEL, "linux-64/zlib-1.2.11-h7b6447c_3.conda")).bytes();
    expect((await put("conda-local", { subdir: "linux-64", filename: "zlib-1.2.11-h7b6447c_3.conda", bytes: zlib })).status).toBe(201);
  }, T);
  afterAll(async () => {
    await vault?.stop();
  });

  clientTest("/-/api/ search and package page: conda versions in conda's order with every build's sha256; documents are no packages", async () => {
    const found = await api<{ results: { repository: string; name: string; versions: string[]; latestVersion: string; files: number }[] }>("search?q=vaultdemo&repository=conda-local");
    // 10.0 after 2.0, a release candidate before its release; 2.0 has a noarch and a linux-64 build
    expect(found.results.map((r) => [r.repository, r.name, r.versions, r.latestVersion, r.files])).toEqual([["conda-local", "vaultdemo", ["10.0", "2.0", "2.0rc1", "1.0"], "10.0", 5]]);
    const all = await api<{ results: { name: string }[] }>("search?q=&repository=conda-local");
    expect(all.results.map((r) => r.name).sort()).toEqual(["vaultdemo", "zlib"]); // no repodata.json, shards, channeldata, info rows
    const page = await api<{ versions: { version: string; files: { path: string; file: string; digest: string; url: string }[] }[]; setup: { client: string; code: string }[] }>(
      "repositories/conda-local/packages/vaultdemo",
    );
    const two = page.versions.find((v) => v.version === "2.0")!;
    expect(two.files.map((f) => [f.file, f.digest]).sort()).toEqual([
      ["linux-64/vaultdemo-2.0-h1234567_0.tar.bz2", `sha256:${built.get("linux-64/vaultdemo-2.0-h1234567_0.tar.bz2")!.sha256}`],
      ["noarch/vaultdemo-2.0-0.tar.bz2", `sha256:${built.get("noarch/vaultdemo-2.0-0.tar.bz2")!.sha256}`],
    ]);
    expect(two.files.map((f) => f.url).sort()).toEqual([`${chan}linux-64/vaultdemo-2.0-h1234567_0.tar.bz2`, `${chan}noarch/vaultdemo-2.0-0.tar.bz2`]);
    expect(page.setup.find((s) => s.client === "conda")!.code).toBe(`conda install -c ${chan} vaultdemo==10.0`);
    expect(page.setup.find((s) => s.client === "pixi.toml")!.code).toContain(`channels = ["${chan}"]`);
    // the real zlib package, found by its digest
    const digest = sha256Hex(await Bun.file(join(ZLIB_CHANNEL, "linux-64/zlib-1.2.11-h7b6447c_3.conda")).bytes());
    const zlib = await api<{ results: { repository: string; name: string; versions: string[] }[] }>(`search?q=sha256:${digest}`);
    expect(zlib.results.map((r) => [r.repository, r.name, r.versions])).toEqual([["conda-local", "zlib", ["1.2.11"]]]);
    const z = await api<{ versions: { version: string; files: { file: string; digest: string }[] }[] }>("repositories/conda-local/packages/zlib");
    expect(z.versions.map((v) => [v.version, v.files.map((f) => [f.file, f.digest])])).toEqual([["1.2.11", [["linux-64/zlib-1.2.11-h7b6447c_3.conda", `sha256:${digest}`]]]]);
  }, T);

  clientTest("deleteVersion removes every build of a version from every subdir; repodata, its variants and channeldata follow; rattler no longer picks it", async () => {
    const before = await solve("vaultdemo==2.0");
    expect(before.find((p) => p.name === "vaultdemo")!.version).toBe("2.0");
    const { ctx, plugin } = hosted();
    const removed = await plugin.deleteVersion!(ctx, { name: "vaultdemo", version: "2.0" });
    expect(removed.paths.sort()).toEqual([
      "info/linux-64/vaultdemo-2.0-h1234567_0.tar.bz2",
      "info/noarch/vaultdemo-2.0-0.tar.bz2",
      "linux-64/vaultdemo-2.0-h1234567_0.tar.bz2",
      "noarch/vaultdemo-2.0-0.tar.bz2",
    ]);
    expect(removed.bytes).toBeGreaterThan(built.get("noarch/vaultdemo-2.0-0.tar.bz2")!.bytes.byteLength + built.get("linux-64/vaultdemo-2.0-h1234567_0.tar.bz2")!.bytes.byteLength);
    expect(Object.keys((await repodata("noarch")).packages).sort()).toEqual(["vaultdemo-1.0-0.tar.bz2", "vaultdemo-10.0-0.tar.bz2", "vaultdemo-2.0rc1-0.tar.bz2"]);
    expect(Object.keys((await repodata("linux-64")).packages)).toEqual([]);
    expect(Object.keys((await repodata("linux-64"))["packages.conda"])).toEqual(["zlib-1.2.11-h7b6447c_3.conda"]);
    // the variants come from the new repodata
    const zst = JSON.parse(new TextDecoder().decode(Bun.zstdDecompressSync(new Uint8Array(await (await fetch(`${chan}noarch/repodata.json.zst`)).arrayBuffer()))));
    expect(Object.keys(zst.packages).sort()).toEqual(["vaultdemo-1.0-0.tar.bz2", "vaultdemo-10.0-0.tar.bz2", "vaultdemo-2.0rc1-0.tar.bz2"]);
    for (const f of ["noarch/vaultdemo-2.0-0.tar.bz2", "linux-64/vaultdemo-2.0-h1234567_0.tar.bz2"]) expect((await fetch(chan + f)).status).toBe(404);

    // rattler (shards first, as pixi): 2.0 cannot be solved any more; below 10 the newest left is 2.0rc1
    expect(await unsolvable("vaultdemo==2.0")).toBe("Cannot solve the request because of: No candidates were found for vaultdemo ==2.0.");
    const below = (await solve("vaultdemo<10")).find((p) => p.name === "vaultdemo")!;
    expect([below.version, below.url, below.sha256]).toEqual(["2.0rc1", `${chan}noarch/vaultdemo-2.0rc1-0.tar.bz2`, built.get("noarch/vaultdemo-2.0rc1-0.tar.bz2")!.sha256]);
    expect(await plugin.deleteVersion!(ctx, { name: "vaultdemo", version: "2.0" })).toEqual({ paths: [], bytes: 0 });
    const cd = await (await fetch(`${chan}channeldata.json`)).json();
    expect([cd.packages.vaultdemo.version, cd.packages.vaultdemo.subdirs]).toEqual(["10.0", ["noarch"]]);
  }, T);

  clientTest("DELETE of a package file: delete permission, through the group's writeTo, audited; the last file of a name leaves channeldata", async () => {
    const file = `${vault.url}/conda/linux-64/zlib-1.2.11-h7b6447c_3.conda`;
    const anon = await fetch(file, { method: "DELETE" });
    expect(anon.status).toBe(401);
    expect((await anon.json()).error.code).toBe("VAULT_UNAUTHORIZED");
    const notPackage = await fetch(`${chan}linux-64/repodata.json`, { method: "DELETE", headers: { authorization: ADMIN } });
    expect([notPackage.status, (await notPackage.json()).error.code]).toEqual([405, "VAULT_METHOD_NOT_ALLOWED"]);
    const ok = await fetch(file, { method: "DELETE", headers: { authorization: ADMIN } });
    expect([ok.status, await ok.json()]).toEqual([200, { ok: true, removed: ["linux-64/zlib-1.2.11-h7b6447c_3.conda"] }]);
    const again = await fetch(file, { method: "DELETE", headers: { authorization: ADMIN } });
    expect([again.status, (await again.json()).error.code]).toEqual([404, "VAULT_NOT_FOUND"]);
    expect((await repodata("linux-64"))["packages.conda"]).toEqual({});
    expect((await (await fetch(`${chan}channeldata.json`)).json()).packages.zlib).toBeUndefined();
    expect(await unsolvable("zlib")).toBe("Cannot solve the request because of: No candidates were found for zlib *.");
    const { auditLog } = tablesOf(hosted().ctx.metadata);
    const rows = await hosted().ctx.metadata.select().from(auditLog).where(eq(auditLog.action, "conda.delete"));
    expect(rows.map((r) => [r.actor, r.repository, r.path, JSON.parse(r.detail ?? "{}").via])).toEqual([["admin", "conda-local", "linux-64/zlib-1.2.11-h7b6447c_3.conda", "conda"]]);
  }, T);

  clientTest("retention keepVersions: 2 removes the oldest version (conda order) through deleteVersion, audited; rattler solves the newest", async () => {
    const { ctx, plugin } = hosted();
    const [report] = await runRetention([{ ctx, plugin }], { log: silentLogger });
    expect(report.errors).toBe(0);
    expect(report.plan.removals.map((r) => `${r.version?.name} ${r.version?.version}`)).toEqual(["vaultdemo 1.0"]);
    expect(report.removedFiles).toBe(2); // the package file and its info row
    expect(Object.keys((await repodata("noarch")).packages).sort()).toEqual(["vaultdemo-10.0-0.tar.bz2", "vaultdemo-2.0rc1-0.tar.bz2"]);
    const { auditLog } = tablesOf(ctx.metadata);
    const audit = await ctx.metadata.select().from(auditLog).where(eq(auditLog.action, "retention.delete"));
    expect(audit.map((a) => [a.actor, a.repository, a.path])).toEqual([["vault-retention", "conda-local", "vaultdemo@1.0"]]);
    expect(await unsolvable("vaultdemo==1.0")).toBe("Cannot solve the request because of: No candidates were found for vaultdemo ==1.0.");
    const newest = (await solve("vaultdemo")).find((p) => p.name === "vaultdemo")!;
    expect([newest.version, newest.sha256]).toEqual(["10.0", built.get("noarch/vaultdemo-10.0-0.tar.bz2")!.sha256]);
  }, T);

  clientTest("a listing whose info row a cut-short deletion removed is dropped by the next write to the subdir", async () => {
    const { ctx } = hosted();
    await ctx.artifacts.delete("info/noarch/vaultdemo-2.0rc1-0.tar.bz2"); // as a deletion that stopped after its first step
    expect(Object.keys((await repodata("noarch")).packages)).toContain("vaultdemo-2.0rc1-0.tar.bz2");
    const dir = await tmpDataDir("conda-versions-more-");
    expect((await put("conda-local", await buildPackage(dir, "11.0", "0", "noarch"))).status).toBe(201);
    expect(Object.keys((await repodata("noarch")).packages).sort()).toEqual(["vaultdemo-10.0-0.tar.bz2", "vaultdemo-11.0-0.tar.bz2"]);
    // and deleteVersion still removes the file left behind
    const { plugin } = hosted();
    expect((await plugin.deleteVersion!(ctx, { name: "vaultdemo", version: "2.0rc1" })).paths).toEqual(["noarch/vaultdemo-2.0rc1-0.tar.bz2"]);
    expect((await fetch(`${chan}noarch/vaultdemo-2.0rc1-0.tar.bz2`)).status).toBe(404);
  }, T);
});

/**
 * e2e: package versions of an apt hosted repository as the web UI API and retention see them (the plugin's `packageOf`,
 * `compareVersions`, `deleteVersion`), with .debs built by the real `dpkg-deb` and the real `apt-get`:
 * `/-/api/` search and package pages find uploaded packages with their Debian versions (dpkg order) and sha256, never
 * the indexes; `deleteVersion` removes every architecture's file of one version from every suite in one signed
 * generation (apt-get update then no longer offers it); retention's `keepVersions` removes the oldest versions through
 * it, audited.
 *
 * Under CI=true a missing apt-get/gpg/dpkg-deb fails the tests; elsewhere they are skipped with the reason printed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { mkdir, writeFile } from "node:fs/promises";
import { eq } from "drizzle-orm";
import { APT_TOOLS, aptClient, fetchKeyring, fixtureDeb, FIXTURE_DEBS, makeKey, run, sha256File, type AptClient, type TestKey } from "../helpers/apt.ts";
import { requireTools } from "../helpers/registry.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { tablesOf } from "../../core/db/index.ts";
import { runRetention } from "../../core/retention.ts";
import { silentLogger } from "../../core/log.ts";
import { fieldValue, parseDeb822 } from "../../plugins/apt/deb822.ts";

const HAVE = requireTools([...APT_TOOLS, "dpkg-deb"]);
const aptTest = HAVE ? test : test.skip;
const TIMEOUT = 180_000;
const PW = "s3cret-apt-versions";
const AUTH = "Basic " + btoa(`admin:${PW}`);

/** A .deb built with dpkg-deb: its path and sha256. */
interface Built {
  file: string;
  sha256: string;
}

/** Builds `vaultdemo_<version>_<arch>.deb` with the real dpkg-deb (one file, a control file naming the version). */
async function buildDeb(dir: string, version: string, arch: string): Promise<Built> {
  const root = join(dir, `vaultdemo-${version}-${arch}`);
  await mkdir(join(root, "DEBIAN"), { recursive: true });
  await mkdir(join(root, "usr/share/doc/vaultdemo"), { recursive: true });
  await writeFile(join(root, "usr/share/doc/vaultdemo/README"), `vaultdemo ${version} for ${arch}\n`);
  await writeFile(
    join(root, "DEBIAN/control"),
    `Package: vaultdemo\nVersion: ${version}\nArchitecture: ${arch}\nMaintainer: Vault Test <test@example.invalid>\nSection: misc\nPriority: optional\nDescription: retention demo\n version ${version}\n`,
  );
  const file = join(dir, `vaultdemo_${version}_${arch}.deb`);
  const r = await run(["dpkg-deb", "--root-owner-group", "--build", root, file]);
  if (r.code !== 0) throw new Error(`dpkg-deb failed: ${r.out}`);
  return { file, sha256: await sha256File(file) };
}

describe("apt hosted repository: versions in the web UI API, deleteVersion and retention with apt-get", () => {
  let key: TestKey;
  let vault: StartedVault;
  let client: AptClient;
  const debs = new Map<string, Built>();
  const repo = () => `${vault.url}/apt-local`;
  const upload = async (b: Built, suite: string) => {
    const r = await fetch(`${repo()}/upload/${suite}/main/`, { method: "POST", body: Bun.file(b.file), headers: { authorization: AUTH } });
    expect([r.status, await r.text()]).toMatchObject([201, expect.stringContaining("published pool/main/v/vaultdemo/")]);
  };
  /** The Packages stanzas `Package version arch` of a suite's index of `arch`, as the vault serves them now; null on 404. */
  const listed = async (suite: string, arch = "amd64") => {
    const r = await fetch(`${repo()}/dists/${suite}/main/binary-${arch}/Packages`);
    const text = await r.text();
    if (r.status === 404) return null;
    expect(r.status).toBe(200);
    return parseDeb822(text).map((p) => `${fieldValue(p, "Package")} ${fieldValue(p, "Version")} ${fieldValue(p, "Architecture")}`);
  };
  const api = async <T>(path: string): Promise<T> => {
    const r = await fetch(`${vault.url}/-/api/${path}`);
    expect(r.status).toBe(200);
    return (await r.json()) as T;
  };

  beforeAll(async () => {
    if (!HAVE) return;
    key = await makeKey("Vault Versions Test <versions@example.invalid>");
    vault = await startVault({
      config: {
        auth: { anonymousRead: true, admin: { user: "admin", password: PW } },
        // the periodic job stays off: the test runs retention itself
        retention: { intervalMinutes: 0 },
        repositories: [{ name: "apt-local", format: "apt", type: "hosted", signing: { key: key.secretArmored }, architectures: ["amd64"], retention: { keepVersions: 2 } }],
      },
    });
    const dir = await tmpDataDir("apt-versions-debs-");
    for (const [v, a] of [["1.0-1", "amd64"], ["2.0~rc1-1", "amd64"], ["2.0-1", "amd64"], ["2.0-1", "arm64"], ["10.0-1", "amd64"]]) debs.set(`${v} ${a}`, await buildDeb(dir, v, a));
    for (const b of debs.values()) await upload(b, "stable");
    await upload(debs.get("2.0-1 amd64")!, "testing");
    const hello = await fetch(`${repo()}/upload/stable/main/`, { method: "POST", body: Bun.file(fixtureDeb("hello")), headers: { authorization: AUTH } });
    expect(hello.status).toBe(201);
    const keyring = await fetchKeyring(repo(), await tmpDataDir("apt-versions-keys-"));
    client = await aptClient(`deb [signed-by=${keyring}] ${repo()} stable main\ndeb [signed-by=${keyring}] ${repo()} testing main\n`);
  }, TIMEOUT);
  afterAll(async () => {
    await vault?.stop();
  });

  aptTest("/-/api/ search and package page: Debian versions in dpkg order with their files' sha256; indexes are no packages", async () => {
    const found = await api<{ results: { repository: string; format: string; name: string; versions: string[]; latestVersion: string; files: number }[] }>("search?q=vaultdemo");
    expect(found.results.map((r) => [r.repository, r.format, r.name, r.versions, r.latestVersion, r.files])).toEqual([
      // 10.0 after 2.0 (numbers as numbers), the ~rc1 pre-release before its release; 2.0-1 has two architectures
      ["apt-local", "apt", "vaultdemo", ["10.0-1", "2.0-1", "2.0~rc1-1", "1.0-1"], "10.0-1", 5],
    ]);
    // every package of the repository: no Release, Packages or by-hash "package"
    const all = await api<{ results: { name: string }[] }>("search?q=&repository=apt-local");
    expect(all.results.map((r) => r.name).sort()).toEqual(["hello", "vaultdemo"]);
    const page = await api<{
      versions: { version: string; files: { path: string; digest: string; url: string; sizeBytes: number }[] }[];
      setup: { client: string; code: string }[];
    }>("repositories/apt-local/packages/vaultdemo");
    expect(page.versions.map((v) => v.version)).toEqual(["10.0-1", "2.0-1", "2.0~rc1-1", "1.0-1"]);
    const two = page.versions.find((v) => v.version === "2.0-1")!;
    expect(two.files.map((f) => [f.path, f.digest]).sort()).toEqual([
      ["pool/main/v/vaultdemo/vaultdemo_2.0-1_amd64.deb", `sha256:${debs.get("2.0-1 amd64")!.sha256}`],
      ["pool/main/v/vaultdemo/vaultdemo_2.0-1_arm64.deb", `sha256:${debs.get("2.0-1 arm64")!.sha256}`],
    ]);
    // the download URL answers the same bytes
    const dl = await fetch(two.files[0].url);
    expect(new Bun.CryptoHasher("sha256").update(new Uint8Array(await dl.arrayBuffer())).digest("hex")).toBe(two.files[0].digest.slice(7));
    expect(page.setup.find((s) => s.client === "apt")!.code).toContain(`sudo curl -fsSL ${repo()}/public.gpg -o /etc/apt/keyrings/apt-local.gpg`);
    expect(page.setup.find((s) => s.client === "deb822")!.code).toContain("Signed-By: /etc/apt/keyrings/apt-local.gpg");
    // a file found by its digest
    const byDigest = await api<{ results: { name: string; versions: string[] }[] }>(`search?q=sha256:${FIXTURE_DEBS.hello.sha256}`);
    expect(byDigest.results.map((r) => [r.name, r.versions])).toEqual([["hello", ["2.10-3"]]]);
  }, TIMEOUT);

  aptTest("deleteVersion removes every architecture's file of one version from every suite in one signed generation; apt-get no longer offers it", async () => {
    const before = await client.aptGet(["update"]);
    expect(before.code).toBe(0);
    expect((await client.aptGet(["download", "vaultdemo=2.0-1"])).code).toBe(0);
    const gensBefore = (await fetch(`${repo()}/dists/testing/Release`)).headers.get("etag");

    const ctx = vault.vault.repositories.get("apt-local")!;
    const plugin = vault.vault.plugins.get("apt")!;
    const removed = await plugin.deleteVersion!(ctx, { name: "vaultdemo", version: "2.0-1" });
    expect(removed.paths.sort()).toEqual([
      "-/records/stable/main/vaultdemo_2.0-1_amd64.deb",
      "-/records/stable/main/vaultdemo_2.0-1_arm64.deb",
      "-/records/testing/main/vaultdemo_2.0-1_amd64.deb",
      "pool/main/v/vaultdemo/vaultdemo_2.0-1_amd64.deb",
      "pool/main/v/vaultdemo/vaultdemo_2.0-1_arm64.deb",
    ]);
    const sizes = await Promise.all(["2.0-1 amd64", "2.0-1 arm64"].map((k) => Bun.file(debs.get(k)!.file).size));
    expect(removed.bytes).toBeGreaterThan(sizes[0] + sizes[1]); // the .debs and their stanzas
    expect(await listed("stable")).toEqual(["hello 2.10-3 amd64", "vaultdemo 1.0-1 amd64", "vaultdemo 2.0~rc1-1 amd64", "vaultdemo 10.0-1 amd64"]);
    // arm64 had no other package: the suite no longer lists the architecture, its index by name is gone
    expect(await listed("stable", "arm64")).toBeNull();
    expect(await (await fetch(`${repo()}/dists/stable/Release`)).text()).toContain("\nArchitectures: amd64\n");
    expect(await listed("testing")).toEqual([]);
    expect((await fetch(`${repo()}/dists/testing/Release`)).headers.get("etag")).not.toBe(gensBefore);
    for (const a of ["amd64", "arm64"]) {
      const r = await fetch(`${repo()}/pool/main/v/vaultdemo/vaultdemo_2.0-1_${a}.deb`);
      expect([a, r.status, await r.text()]).toEqual([a, 404, `404 pool/main/v/vaultdemo/vaultdemo_2.0-1_${a}.deb not found\n`]);
    }

    // apt-get: the new generation verifies with the repository's key; 2.0-1 is gone, the others are there
    const after = await client.aptGet(["update"]);
    expect(after.code).toBe(0);
    expect(after.out).not.toContain("NO_PUBKEY");
    const gone = await client.aptGet(["download", "vaultdemo=2.0-1"]);
    expect(gone.code).not.toBe(0);
    expect(gone.out).toContain("Version '2.0-1' for 'vaultdemo' was not found");
    const kept = await client.aptGet(["download", "vaultdemo=2.0~rc1-1"]);
    expect(kept.code).toBe(0);
    expect(await sha256File(join(client.downloads, "vaultdemo_2.0~rc1-1_amd64.deb"))).toBe(debs.get("2.0~rc1-1 amd64")!.sha256);

    // a version already gone removes nothing; the repository's own API no longer lists it
    expect(await plugin.deleteVersion!(ctx, { name: "vaultdemo", version: "2.0-1" })).toEqual({ paths: [], bytes: 0 });
    const page = await api<{ versions: { version: string }[] }>("repositories/apt-local/packages/vaultdemo");
    expect(page.versions.map((v) => v.version)).toEqual(["10.0-1", "2.0~rc1-1", "1.0-1"]);
  }, TIMEOUT);

  aptTest("retention keepVersions: 2 removes the oldest versions in dpkg order through deleteVersion, audited; apt-get installs the newest", async () => {
    const ctx = vault.vault.repositories.get("apt-local")!;
    const plugin = vault.vault.plugins.get("apt")!;
    const [report] = await runRetention([{ ctx, plugin }], { log: silentLogger });
    expect(report.errors).toBe(0);
    // dpkg order keeps 10.0-1 and 2.0~rc1-1 (the newest two left) and removes 1.0-1
    expect(report.plan.removals.map((r) => `${r.version?.name} ${r.version?.version}`)).toEqual(["vaultdemo 1.0-1"]);
    expect(report.removedFiles).toBe(2); // the pool file and its stanza record
    expect(await listed("stable")).toEqual(["hello 2.10-3 amd64", "vaultdemo 2.0~rc1-1 amd64", "vaultdemo 10.0-1 amd64"]);
    const { auditLog } = tablesOf(ctx.metadata);
    const audit = await ctx.metadata.select().from(auditLog).where(eq(auditLog.action, "retention.delete"));
    expect(audit.map((a) => [a.actor, a.repository, a.path])).toEqual([["vault-retention", "apt-local", "vaultdemo@1.0-1"]]);

    expect((await client.aptGet(["update"])).code).toBe(0);
    expect((await client.aptGet(["download", "vaultdemo=1.0-1"])).code).not.toBe(0);
    const newest = await client.aptGet(["download", "vaultdemo"]);
    expect(newest.code).toBe(0);
    expect(await sha256File(join(client.downloads, "vaultdemo_10.0-1_amd64.deb"))).toBe(debs.get("10.0-1 amd64")!.sha256);
  }, TIMEOUT);
});

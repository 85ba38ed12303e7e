/**
 * e2e: an apt proxy with `upstreamKeyring` checks the upstream's InRelease (and Release + Release.gpg) with the real
 * `gpgv` before storing a new generation. Upstream archives are built with apt-ftparchive from ../shared/fixtures/apt
 * and signed with a throwaway key; a generation signed by a second throwaway key is refused with 502 and the
 * previous generation stays served to the real `apt-get`.
 *
 * Under CI=true a missing apt-get/gpg/gpgv/apt-ftparchive fails the tests; elsewhere they are skipped with the reason printed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { rm, writeFile } from "node:fs/promises";
import { APT_TOOLS, FIXTURE_DEBS, aptClient, aptDownload, expectedSha256, makeKey, run, writeArchive, type AptClient, type ArchiveGeneration, type TestKey } from "../helpers/apt.ts";
import { requireTools } from "../helpers/registry.ts";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { parseRelease } from "../../plugins/apt/release.ts";

const HAVE = requireTools(APT_TOOLS);
const aptTest = HAVE ? test : test.skip;
const TIMEOUT = 180_000;

describe("apt proxy with upstreamKeyring: upstream Release files verified with gpgv", () => {
  let key: TestKey;
  let other: TestKey;
  let root: string;
  let up: TestUpstream;
  let vault: StartedVault;
  let gen1: ArchiveGeneration;
  let client: AptClient;
  /** Each generation a later Date (and Last-Modified), so the vault's revalidation sees a change. */
  let minutesAgo = 50;
  const later = () => ({ date: new Date(Date.now() - 60_000 * minutesAgo--) });
  const inReleaseGets = (repo: string) => up.count((r) => r.method === "GET" && r.path === `/${repo}/dists/stable/InRelease`);

  beforeAll(async () => {
    if (!HAVE) return;
    [key, other] = await Promise.all([makeKey("Archive <archive@example.invalid>"), makeKey("Someone Else <else@example.invalid>")]);
    root = await tmpDataDir("apt-verify-upstream-");
    gen1 = await writeArchive(join(root, "debian"), "stable", ["hello", "sl"], key, later());
    await writeArchive(join(root, "evil"), "stable", ["hello"], other, later());
    // a mirror without InRelease: apt (and the vault) use Release + Release.gpg
    await writeArchive(join(root, "norel"), "stable", ["hello"], key, later());
    await rm(join(root, "norel/dists/stable/InRelease"));
    // the keyring armored, as keys are often published (.asc): converted with gpg --dearmor
    const armored = join(await tmpDataDir("apt-verify-keys-"), "archive.asc");
    await writeFile(armored, (await run(["gpg", "--homedir", key.home, "--armor", "--export", key.fingerprint])).out);
    up = await startUpstream({ root });
    vault = await startVault({
      config: {
        repositories: [
          { name: "debian", format: "apt", type: "proxy", upstream: `${up.url}/debian/`, upstreamKeyring: key.keyring },
          { name: "evil", format: "apt", type: "proxy", upstream: `${up.url}/evil/`, upstreamKeyring: key.keyring },
          { name: "norel", format: "apt", type: "proxy", upstream: `${up.url}/norel/`, upstreamKeyring: armored },
        ],
      },
    });
  });
  afterAll(async () => {
    await vault?.stop();
    await up?.stop();
  });

  aptTest("a good signature: apt-get update and download through the proxy", async () => {
    client = await aptClient(`deb [signed-by=${key.keyring}] ${vault.url}/debian stable main\n`);
    const u = await client.aptGet(["update"]);
    expect(u.out).not.toMatch(/W: |Err/);
    expect(u.code).toBe(0);
    expect((await aptDownload(client, "hello", "sl")).sha256).toEqual(expectedSha256("hello", "sl"));
  }, TIMEOUT);

  aptTest("a new generation signed by another key is refused with 502; the previous generation stays served", async () => {
    await writeArchive(join(root, "debian"), "stable", ["hello", "sl", "tree"], other, later());
    const before = inReleaseGets("debian");
    const bad = await fetch(`${vault.url}/debian/dists/stable/InRelease`, { headers: { "cache-control": "max-age=0" } });
    expect(bad.status).toBe(502);
    expect(await bad.text()).toMatch(/^502 upstream InRelease signature does not verify with upstreamKeyring/);
    // nothing stored: the next revalidation asks upstream again, and is refused again
    expect((await fetch(`${vault.url}/debian/dists/stable/InRelease`, { headers: { "cache-control": "max-age=0" } })).status).toBe(502);
    expect(inReleaseGets("debian")).toBe(before + 2);
    // without revalidation the stored generation is the answer, and its indexes are served by name
    const cur = await fetch(`${vault.url}/debian/dists/stable/InRelease`);
    expect(cur.status).toBe(200);
    expect(parseRelease(await cur.text()).files.get("main/binary-amd64/Packages")!.hashes.SHA256).toBe(gen1.packagesSha256);
    const idx = await fetch(`${vault.url}/debian/dists/stable/main/binary-amd64/Packages.xz`);
    expect(idx.status).toBe(200);
    expect(new Bun.CryptoHasher("sha256").update(new Uint8Array(await idx.arrayBuffer())).digest("hex")).toBe(gen1.packagesXzSha256);
    // apt reports the 502 and keeps its lists: tree (only in the refused generation) is not offered, hello still downloads
    const u = await client.aptGet(["update"]);
    expect(u.out).toContain("502");
    expect((await client.aptGet(["download", "tree"])).code).not.toBe(0);
    await rm(join(client.downloads, "hello_2.10-3_amd64.deb"));
    expect((await aptDownload(client, "hello")).sha256).toEqual(expectedSha256("hello"));
  }, TIMEOUT);

  aptTest("once upstream is signed by the archive key again, the new generation is taken", async () => {
    await writeArchive(join(root, "debian"), "stable", ["hello", "sl", "tree"], key, later());
    const u = await client.aptGet(["update"]);
    expect(u.out).not.toMatch(/W: |Err|502/);
    expect(u.code).toBe(0);
    expect((await aptDownload(client, "tree")).sha256).toEqual(expectedSha256("tree"));
  }, TIMEOUT);

  aptTest("an upstream signed by another key from the start: 502 for InRelease and Release, nothing stored", async () => {
    for (const f of ["InRelease", "Release"]) {
      const r = await fetch(`${vault.url}/evil/dists/stable/${f}`);
      expect(r.status).toBe(502);
      expect(await r.text()).toContain(`upstream ${f} signature does not verify`);
    }
    expect((await fetch(`${vault.url}/evil/dists/stable/InRelease`)).status).toBe(502);
    expect(inReleaseGets("evil")).toBe(2);
    const c = await aptClient(`deb [signed-by=${other.keyring}] ${vault.url}/evil stable main\n`);
    const u = await c.aptGet(["update"]);
    expect(u.out).toContain("502");
    expect((await c.aptGet(["download", "hello"])).code).not.toBe(0);
    expect(up.count((r) => r.path === `/evil/${FIXTURE_DEBS.hello.path}`)).toBe(0);
  }, TIMEOUT);

  aptTest("a mirror without InRelease: Release verified against the upstream's Release.gpg (armored keyring)", async () => {
    const c = await aptClient(`deb [signed-by=${key.keyring}] ${vault.url}/norel stable main\n`);
    const u = await c.aptGet(["update"]);
    expect(u.out).not.toMatch(/W: |502/);
    expect(u.code).toBe(0);
    expect((await aptDownload(c, "hello")).sha256).toEqual(expectedSha256("hello"));
    // a new Release whose Release.gpg is by another key
    await writeArchive(join(root, "norel"), "stable", ["hello", "sl"], other, later());
    await rm(join(root, "norel/dists/stable/InRelease"));
    const bad = await fetch(`${vault.url}/norel/dists/stable/Release`, { headers: { "cache-control": "max-age=0" } });
    expect(bad.status).toBe(502);
    expect(await bad.text()).toContain("upstream Release signature does not verify");
    expect((await c.aptGet(["download", "sl"])).code).not.toBe(0);
  }, TIMEOUT);
});

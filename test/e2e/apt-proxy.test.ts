/**
 * e2e: the real `apt-get` (isolated root, test/helpers/apt.ts) through an apt proxy repository whose upstream is a
 * loopback archive built at test time from the real .debs of ../shared/fixtures/apt with apt-ftparchive and signed
 * with a throwaway gpg key. Covers update + download, a second client served from the cache, an upstream Release
 * change (new generation, no Hash Sum mismatch), consistency of by-name indexes with the Release the vault serves,
 * a tampered upstream .deb, Range/If-Range with dates, errors and Content-Encoding.
 *
 * Under CI=true a missing apt-get/gpg/apt-ftparchive fails the tests; elsewhere they are skipped with the reason printed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { rm } from "node:fs/promises";
import { APT_TOOLS, FIXTURE_DEBS, aptClient, aptDownload, expectedSha256, makeKey, sha256File, writeArchive, type ArchiveGeneration, type TestKey } from "../helpers/apt.ts";
import { requireTools } from "../helpers/registry.ts";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { parseRelease } from "../../plugins/apt/release.ts";

const HAVE = requireTools(APT_TOOLS);
const aptTest = HAVE ? test : test.skip;
const TIMEOUT = 180_000;

describe("apt-get through an apt proxy repository", () => {
  let key: TestKey;
  let root: string;
  let up: TestUpstream;
  let vault: StartedVault;
  let gen1: ArchiveGeneration;
  /** Upstream paths answered with one byte flipped. */
  const tampered = new Set<string>();
  /** When set, upstream labels `.gz` files `Content-Encoding: gzip` (a misconfigured mirror). */
  let gzipEncoding = false;
  const archive = () => join(root, "debian");
  const sources = () => `deb [signed-by=${key.keyring}] ${vault.url}/debian stable main\n`;
  const poolGets = (p: string) => up.count((r) => r.method === "GET" && r.path === `/debian/${p}`);

  beforeAll(async () => {
    if (!HAVE) return;
    key = await makeKey();
    root = await tmpDataDir("apt-upstream-");
    gen1 = await writeArchive(archive(), "stable", ["hello", "sl", "tree", "fortunes-min"], key);
    // a mirror whose Release says Acquire-By-Hash but that has no by-hash objects (the vault falls back to names)
    await writeArchive(join(root, "plain"), "stable", ["hello", "sl"], key);
    await rm(join(root, "plain/dists/stable/main/binary-amd64/by-hash"), { recursive: true });
    up = await startUpstream({
      root,
      handler: async (req) => {
        // the vault sends `+` as %2B, as APT does
        const path = decodeURIComponent(new URL(req.url).pathname);
        if (tampered.has(path)) {
          const b = await Bun.file(join(root, path)).bytes();
          b[b.length >> 1] ^= 0xff;
          return new Response(b, { headers: { "content-type": "application/octet-stream" } });
        }
        if (gzipEncoding && path.endsWith(".gz") && req.method === "GET") {
          const f = Bun.file(join(root, path));
          if (await f.exists()) return new Response(f, { headers: { "content-encoding": "gzip", "content-type": "application/x-gzip" } });
        }
        return undefined;
      },
    });
    // every Packages index (1-2 KB here) is parsed in the worker pool, as bookworm's 9 MB one would be
    vault = await startVault({
      config: {
        pool: { offloadThresholdBytes: 512 },
        repositories: [
          { name: "debian", format: "apt", type: "proxy", upstream: `${up.url}/debian/` },
          { name: "plain", format: "apt", type: "proxy", upstream: `${up.url}/plain/` },
        ],
      },
    });
  });
  afterAll(async () => {
    await vault?.stop();
    await up?.stop();
  });

  let first: Awaited<ReturnType<typeof aptClient>>;

  aptTest("apt-get update, download and install --download-only through the proxy", async () => {
    first = await aptClient(sources());
    const u = await first.aptGet(["update"]);
    expect(u.out).not.toContain("Hash Sum mismatch");
    expect(u.code).toBe(0);
    expect(u.out).toContain(`${vault.url}/debian stable InRelease`);
    const d = await aptDownload(first, "hello", "sl");
    expect(d.code).toBe(0);
    expect(d.sha256).toEqual(expectedSha256("hello", "sl"));
    // an epoch version: apt names the file with %3a, the pool file has none
    const i = await first.aptGet(["install", "--download-only", "-y", "--no-install-recommends", "fortunes-min"]);
    expect(i.code).toBe(0);
    expect(await sha256File(join(first.archives, "fortunes-min_1%3a1.99.1-7.3_all.deb"))).toBe(FIXTURE_DEBS["fortunes-min"].sha256);
    // the index came by hash (Acquire-By-Hash: yes), each pool file once
    expect(up.count((r) => r.path.includes("/by-hash/SHA256/"))).toBeGreaterThanOrEqual(1);
    expect(poolGets(FIXTURE_DEBS.hello.path)).toBe(1);
    expect(poolGets(FIXTURE_DEBS["fortunes-min"].path)).toBe(1);
  }, TIMEOUT);

  aptTest("a second client with an empty apt cache is served from the vault: no upstream pool request", async () => {
    const before = up.requests.filter((r) => r.path.startsWith("/debian/pool/")).length;
    const c = await aptClient(sources());
    expect((await c.aptGet(["update"])).code).toBe(0);
    const d = await aptDownload(c, "hello", "sl", "fortunes-min");
    expect(d.code).toBe(0);
    expect(d.sha256).toEqual(expectedSha256("hello", "sl", "fortunes-min"));
    expect(up.requests.filter((r) => r.path.startsWith("/debian/pool/")).length).toBe(before);
    const r = await fetch(`${vault.url}/debian/${FIXTURE_DEBS.hello.path}`);
    expect(r.headers.get("x-vault-cache")).toBe("HIT");
    expect(r.headers.get("content-encoding")).toBeNull();
    await r.arrayBuffer();
  }, TIMEOUT);

  aptTest("an upstream Release change is a new generation: apt picks it up without a Hash Sum mismatch (by hash and by name)", async () => {
    const gen2 = await writeArchive(archive(), "stable", ["hello", "sl", "tree", "fortunes-min", "cowsay"], key, { date: new Date(Date.now() - 30_000) });
    expect(gen2.packagesXzSha256).not.toBe(gen1.packagesXzSha256);
    const u = await first.aptGet(["update"]);
    expect(u.out).not.toContain("Hash Sum mismatch");
    expect(u.code).toBe(0);
    const d = await aptDownload(first, "cowsay");
    expect(d.code).toBe(0);
    expect(d.sha256).toEqual(expectedSha256("cowsay"));
    // a client that never uses by-hash gets the same generation by name
    const byName = await aptClient(sources());
    const u2 = await byName.aptGet(["update"], { extra: ["Acquire::By-Hash=no"] });
    expect(u2.out).not.toContain("Hash Sum mismatch");
    expect(u2.code).toBe(0);
    expect((await byName.aptGet(["download", "cowsay"])).code).toBe(0);
  }, TIMEOUT);

  aptTest("indexes by name are served from the generation of the Release the vault serves, never a newer or older one", async () => {
    const rel = await fetch(`${vault.url}/debian/dists/stable/InRelease`);
    expect(rel.status).toBe(200);
    const listed = parseRelease(await rel.text()).files;
    // upstream moves on (sl removed) while the vault's InRelease is still fresh
    const gen3 = await writeArchive(archive(), "stable", ["hello", "tree", "fortunes-min", "cowsay"], key, { date: new Date(Date.now() - 10_000) });
    const gz = await fetch(`${vault.url}/debian/dists/stable/main/binary-amd64/Packages.gz`);
    expect(gz.status).toBe(200);
    const gzBytes = new Uint8Array(await gz.arrayBuffer());
    expect(new Bun.CryptoHasher("sha256").update(gzBytes).digest("hex")).toBe(listed.get("main/binary-amd64/Packages.gz")!.hashes.SHA256!);
    expect(up.count("/debian/dists/stable/main/binary-amd64/by-hash/SHA256/" + listed.get("main/binary-amd64/Packages.gz")!.hashes.SHA256)).toBe(1);
    // the mirror drops its old by-hash objects: the by-name file (a newer generation) is refused, not served as the old one
    await rm(join(archive(), "dists/stable/main/binary-amd64/by-hash"), { recursive: true });
    const plainIdx = await fetch(`${vault.url}/debian/dists/stable/main/binary-amd64/Packages`);
    expect(plainIdx.status).toBe(502);
    expect(plainIdx.headers.get("content-type")).toStartWith("text/plain");
    expect(await plainIdx.text()).toMatch(/^502 upstream (size|bytes) .*(expected size|digest)/);
    // once a client revalidates the Release (APT sends max-age=0), the new generation is served
    const fresh = await fetch(`${vault.url}/debian/dists/stable/InRelease`, { headers: { "cache-control": "max-age=0" } });
    expect(parseRelease(await fresh.text()).files.get("main/binary-amd64/Packages")!.hashes.SHA256).toBe(gen3.packagesSha256);
    const now = await fetch(`${vault.url}/debian/dists/stable/main/binary-amd64/Packages`);
    expect(now.status).toBe(200);
    expect(new Bun.CryptoHasher("sha256").update(new Uint8Array(await now.arrayBuffer())).digest("hex")).toBe(gen3.packagesSha256);
    // and apt is happy with it
    const c = await aptClient(sources());
    const u = await c.aptGet(["update"]);
    expect(u.code).toBe(0);
    expect(u.out).not.toContain("Hash Sum mismatch");
  }, TIMEOUT);

  aptTest("a tampered upstream .deb fails the download and is never cached", async () => {
    const p = FIXTURE_DEBS.tree.path;
    tampered.add(`/debian/${p}`);
    const c = await aptClient(sources());
    expect((await c.aptGet(["update"])).code).toBe(0);
    const before = poolGets(p);
    const d = await c.aptGet(["download", "tree"]);
    expect(d.code).not.toBe(0);
    expect(d.out).toMatch(/502|Hash Sum mismatch|size/i);
    // not cached: the next request goes upstream again and fails again
    const r = await fetch(`${vault.url}/debian/${p}`);
    expect(r.status).toBe(502);
    expect(await r.text()).toContain("digest");
    expect(poolGets(p)).toBe(before + 2);
    tampered.clear();
    const ok = await aptDownload(c, "tree");
    expect(ok.code).toBe(0);
    expect(ok.sha256).toEqual(expectedSha256("tree"));
  }, TIMEOUT);

  aptTest("a mirror without by-hash objects: indexes come by name, and pool files are still verified against them", async () => {
    const c = await aptClient(`deb [signed-by=${key.keyring}] ${vault.url}/plain stable main\n`);
    const u = await c.aptGet(["update"]);
    expect(u.out).not.toContain("Hash Sum mismatch");
    expect(u.code).toBe(0);
    expect(up.count((r) => r.path.startsWith("/plain/") && r.path.includes("/by-hash/"))).toBeGreaterThanOrEqual(1);
    expect(up.count("/plain/dists/stable/main/binary-amd64/Packages.xz")).toBe(1);
    tampered.add(`/plain/${FIXTURE_DEBS.sl.path}`);
    try {
      const r = await fetch(`${vault.url}/plain/${FIXTURE_DEBS.sl.path}`);
      expect(r.status).toBe(502);
      expect(await r.text()).toContain("digest");
    } finally {
      tampered.clear();
    }
    const d = await aptDownload(c, "sl");
    expect(d.code).toBe(0);
    expect(d.sha256).toEqual(expectedSha256("sl"));
  }, TIMEOUT);

  aptTest("Range with If-Range: a matching HTTP-date gives 206, another date the whole file (apt's resume)", async () => {
    const url = `${vault.url}/debian/${FIXTURE_DEBS.hello.path}`;
    const full = await fetch(url);
    const lm = full.headers.get("last-modified")!;
    const size = Number(full.headers.get("content-length"));
    await full.arrayBuffer();
    expect(lm).toMatch(/GMT$/);
    const part = await fetch(url, { headers: { range: "bytes=1000-", "if-range": lm } });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe(`bytes 1000-${size - 1}/${size}`);
    expect((await part.arrayBuffer()).byteLength).toBe(size - 1000);
    const other = await fetch(url, { headers: { range: "bytes=1000-", "if-range": new Date(Date.parse(lm) - 86_400_000).toUTCString() } });
    expect(other.status).toBe(200);
    expect((await other.arrayBuffer()).byteLength).toBe(size);
  }, TIMEOUT);

  aptTest("errors: upstream 404 is a plain-text 404, bad paths 400, uploads 405; .gz is never sent with Content-Encoding", async () => {
    const nf = await fetch(`${vault.url}/debian/pool/main/n/nope/nope_1.0_amd64.deb`);
    expect(nf.status).toBe(404);
    expect(nf.headers.get("content-type")).toStartWith("text/plain");
    expect(await nf.text()).toStartWith("404 ");
    expect((await fetch(`${vault.url}/debian/dists/nosuchsuite/InRelease`)).status).toBe(404);
    for (const bad of ["dists/sta%20ble/InRelease", "pool/main/h/hello/%3Cx%3E.deb", "dists/stable/main/binary-amd64/by-hash/SHA256/zz", "pool/main/h/hello/"]) {
      const r = await fetch(`${vault.url}/debian/${bad}`);
      expect(r.status).toBe(400);
      expect(await r.text()).toStartWith("400 bad path");
    }
    const put = await fetch(`${vault.url}/debian/pool/main/h/hello/x.deb`, { method: "PUT", body: "x" });
    expect(put.status).toBe(405);
    expect(put.headers.get("allow")).toBe("GET, HEAD");
    gzipEncoding = true;
    try {
      await fetch(`${vault.url}/debian/dists/stable/InRelease`, { headers: { "cache-control": "max-age=0" } }).then((r) => r.arrayBuffer());
      const gz = await fetch(`${vault.url}/debian/dists/stable/main/binary-amd64/Packages.gz`, { headers: { "accept-encoding": "identity" } });
      expect(gz.status).toBe(200);
      expect(gz.headers.get("content-encoding")).toBeNull();
      const bytes = new Uint8Array(await gz.arrayBuffer());
      expect(bytes[0]).toBe(0x1f);
      expect(bytes[1]).toBe(0x8b);
    } finally {
      gzipEncoding = false;
    }
  }, TIMEOUT);
});

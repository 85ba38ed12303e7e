/**
 * Retention of proxy repositories filled through the vault: a pypi proxy of a loopback PEP 503 index (keepVersions by
 * PEP 440) and an http proxy (age, LRU quota), applied in-process as `vault serve`'s job does, by `vault cleanup` (dry
 * run, then for real, then gc frees the bytes), and by the periodic job itself. Evicted files are fetched again on their
 * next request; kept ones stay hits.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { eq, and } from "drizzle-orm";
import { buildWheel } from "../helpers/pypi-index.ts";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { tablesOf } from "../../core/db/index.ts";
import { blobKey } from "../../core/storage/driver.ts";
import { runRetention, type RetentionTarget } from "../../core/retention.ts";
import { run as cleanup } from "../../core/cli/commands/cleanup.ts";
import type { VaultArtifactStore } from "../../core/artifacts.ts";
import type { VaultConfig } from "../../core/config/types.ts";
import type { PluginContext } from "../../core/plugin.ts";

const HOUR = 60 * 60 * 1000;
const DAY = 24 * HOUR;
/** Versions of the upstream project `demo`, in PEP 440 order (as strings, "10.0" sorts before "2.0"). */
const VERSIONS = ["1.0", "1.0.post1", "2.0rc1", "2.0", "10.0"];
const FILE_BYTES = 10 * 1024;
const sha256 = (b: Uint8Array) => new Bun.CryptoHasher("sha256").update(b).digest("hex");

let pypiUp: TestUpstream;
let filesUp: TestUpstream;
const wheels = new Map<string, Uint8Array>();
/** Generic files of the http upstream: `/f/<i>.bin`, FILE_BYTES each, distinct content. */
const fileBody = (i: number) => new Uint8Array(FILE_BYTES).fill(i + 1);

beforeAll(async () => {
  for (const v of VERSIONS) wheels.set(`demo-${v}-py3-none-any.whl`, buildWheel("demo", v));
  pypiUp = await startUpstream({
    handler(req) {
      const p = new URL(req.url).pathname;
      if (p === "/simple/demo/") {
        const links = [...wheels].map(([f, b]) => `<a href="/packages/${f}#sha256=${sha256(b)}">${f}</a>`).join("\n");
        return new Response(`<!DOCTYPE html><html><body>\n${links}\n</body></html>\n`, { headers: { "content-type": "text/html" } });
      }
      const w = p.startsWith("/packages/") ? wheels.get(p.slice("/packages/".length)) : undefined;
      return w ? new Response(w as BodyInit, { headers: { "content-type": "application/octet-stream" } }) : undefined;
    },
  });
  filesUp = await startUpstream({
    handler(req) {
      const m = /^\/f\/(\d+)\.bin$/.exec(new URL(req.url).pathname);
      return m ? new Response(fileBody(Number(m[1])) as BodyInit) : undefined;
    },
  });
});

afterAll(async () => {
  await pypiUp.stop();
  await filesUp.stop();
});

function config(extra: Partial<VaultConfig> = {}): VaultConfig {
  return {
    ...extra,
    repositories: [
      { name: "pypi", format: "pypi", type: "proxy", upstream: `${pypiUp.url}/simple/`, retention: { keepVersions: 2 } },
      { name: "files", format: "http", type: "proxy", upstream: `${filesUp.url}/`, retention: { maxAgeDays: 30, maxBytes: 45 * 1024 } },
    ],
  };
}

/** The vault paths of demo's files, from its simple page (fetched through the vault). */
async function demoFiles(v: StartedVault): Promise<Map<string, string>> {
  const page = await (await fetch(`${v.url}/pypi/simple/demo/`, { headers: { accept: "text/html" } })).text();
  const out = new Map<string, string>();
  for (const m of page.matchAll(/href="([^"#]+)[^"]*"[^>]*>([^<]+)</g)) out.set(m[2], new URL(m[1], `${v.url}/pypi/simple/demo/`).pathname);
  expect([...out.keys()].sort()).toEqual([...wheels.keys()].sort());
  return out;
}

/** GET through the vault: status, X-Vault-Cache, body bytes. */
async function get(url: string): Promise<{ status: number; cache: string | null; body: Uint8Array }> {
  const r = await fetch(url);
  return { status: r.status, cache: r.headers.get("x-vault-cache"), body: new Uint8Array(await r.arrayBuffer()) };
}

/** Fills both repositories through the vault; returns demo's file paths. */
async function fill(v: StartedVault): Promise<Map<string, string>> {
  const files = await demoFiles(v);
  for (const [name, path] of files) {
    const r = await get(`${v.url}${path}`);
    expect({ name, status: r.status, same: sha256(r.body) === sha256(wheels.get(name)!) }).toEqual({ name, status: 200, same: true });
  }
  for (let i = 0; i < 10; i++) expect((await get(`${v.url}/files/f/${i}.bin`)).status).toBe(200);
  return files;
}

/**
 * Gives the http repository's rows an access history: file i last read (10 - i) hours ago; file 9 also stored 40 days
 * ago. Batched hit counts are written first, so they do not overwrite it.
 */
async function ageFiles(ctx: PluginContext): Promise<void> {
  await (ctx.artifacts as VaultArtifactStore).flush();
  const { artifacts } = tablesOf(ctx.metadata);
  const now = Date.now();
  for (let i = 0; i < 10; i++) {
    const set = { lastAccessAt: now - (10 - i) * HOUR, ...(i === 9 ? { fetchedAt: now - 40 * DAY } : {}) };
    await ctx.metadata.update(artifacts).set(set).where(and(eq(artifacts.repository, "files"), eq(artifacts.path, `f/${i}.bin`)));
  }
}

async function paths(ctx: PluginContext, prefix: string): Promise<string[]> {
  return (await ctx.artifacts.list(prefix)).map((e) => e.path);
}

function targetsOf(v: StartedVault): RetentionTarget[] {
  return [...v.vault.repositories.values()].map((ctx) => ({ ctx, plugin: v.vault.plugins.get(ctx.config.format)! }));
}

describe("retention of proxy repositories", () => {
  test("applied in the serving process: newest 2 versions by PEP 440 stay, old and least recently used files go, evicted files are fetched again", async () => {
    const v = await startVault({ config: config() });
    try {
      const files = await fill(v);
      const pypi = v.vault.repositories.get("pypi")!;
      const http = v.vault.repositories.get("files")!;
      await ageFiles(http);
      const upstreamFileGets = () => pypiUp.count((r) => r.path.startsWith("/packages/"));
      expect(upstreamFileGets()).toBe(5);

      const reports = await runRetention(targetsOf(v), { log: v.vault.repositories.get("pypi")!.log });
      const byRepo = Object.fromEntries(reports.map((r) => [r.repository, r]));
      expect(byRepo.pypi.plan.removals.map((r) => [r.version?.version, r.reason]).sort()).toEqual([
        ["1.0", "keep_versions"],
        ["1.0.post1", "keep_versions"],
        ["2.0rc1", "keep_versions"],
      ]);
      expect(byRepo.pypi.removedFiles).toBe(3);
      // kept: the two newest versions' files and the simple page
      const left = await paths(pypi, "");
      expect(left.filter((p) => p.startsWith("files/")).sort()).toEqual([files.get("demo-10.0-py3-none-any.whl")!, files.get("demo-2.0-py3-none-any.whl")!].map((p) => p.slice("/pypi/".length)).sort());
      expect(left.some((p) => p.startsWith("simple/demo/"))).toBe(true);
      // http: f/9 too old; then LRU until at most 45 KiB: f/0 … f/4 (9 files of 10 KiB left → 4 fit)
      expect(byRepo.files.plan.removals.map((r) => [r.paths[0], r.reason])).toEqual([
        ["f/9.bin", "max_age"],
        ["f/0.bin", "quota"],
        ["f/1.bin", "quota"],
        ["f/2.bin", "quota"],
        ["f/3.bin", "quota"],
        ["f/4.bin", "quota"],
      ]);
      expect(await paths(http, "f/")).toEqual(["f/5.bin", "f/6.bin", "f/7.bin", "f/8.bin"]);
      expect(byRepo.files.plan.keptBytes).toBe(4 * FILE_BYTES);

      // metrics by repository and reason
      const metrics = await (await fetch(`${v.url}/-/metrics`)).text();
      expect(metrics).toContain('vault_retention_removed_total{reason="keep_versions",repository="pypi"} 3');
      expect(metrics).toContain('vault_retention_removed_total{reason="quota",repository="files"} 5');
      expect(metrics).toContain('vault_retention_removed_total{reason="max_age",repository="files"} 1');
      expect(metrics).toContain(`vault_retention_removed_bytes_total{reason="quota",repository="files"} ${5 * FILE_BYTES}`);

      // evicted files are fetched again (MISS, one more upstream request, same bytes), then hits; kept ones stay hits
      const old = files.get("demo-1.0-py3-none-any.whl")!;
      const again = await get(`${v.url}${old}`);
      expect([again.status, again.cache, sha256(again.body)]).toEqual([200, "MISS", sha256(wheels.get("demo-1.0-py3-none-any.whl")!)]);
      expect(upstreamFileGets()).toBe(6);
      expect((await get(`${v.url}${old}`)).cache).toBe("HIT");
      expect((await get(`${v.url}${files.get("demo-10.0-py3-none-any.whl")!}`)).cache).toBe("HIT");
      expect(upstreamFileGets()).toBe(6);
      const f0 = await get(`${v.url}/files/f/0.bin`);
      expect([f0.status, f0.cache, f0.body]).toEqual([200, "MISS", fileBody(0)]);
      expect((await get(`${v.url}/files/f/8.bin`)).cache).toBe("HIT");
    } finally {
      await v.stop();
    }
  }, 60_000);

  test("vault cleanup: --dry-run changes nothing; then it removes, and gc frees the evicted blobs", async () => {
    const base = await tmpDataDir("vault-cleanup-");
    const dataDir = join(base, "data");
    const configFile = join(base, "vault.config.json");
    await Bun.write(configFile, JSON.stringify({ ...config(), server: { dataDir: "./data" } }));
    let v = await startVault({ config: config(), dataDir });
    const files = await fill(v);
    await ageFiles(v.vault.repositories.get("files")!);
    const digests = new Map((await v.vault.repositories.get("pypi")!.artifacts.list("files/")).map((e) => [e.path, e.blobDigest!]));
    await v.stop();
    const blobFile = (digest: string) => join(dataDir, "store", blobKey(digest));

    const out: string[] = [];
    const io = { out: (s: string) => void out.push(s), err: (s: string) => void out.push(s) };
    expect(await cleanup(["--config", configFile, "--dry-run"], io)).toBe(0);
    const dry = out.join("");
    expect(dry).toContain("pypi (proxy): 7 files"); // 5 wheels, the snapshot and the HTML page
    expect(dry).toMatch(/pypi \(proxy\): .*would remove 3 files.*\(keep_versions 3\)/);
    expect(dry).toMatch(/files \(proxy\): 10 files, 100 KiB; would remove 6 files, 60 KiB \(max_age 1, quota 5\); 40 KiB kept/);
    expect(dry).toContain(`keep_versions ${files.get("demo-1.0-py3-none-any.whl")!.slice("/pypi/".length)}`);
    expect(dry).not.toContain("swept");
    for (const d of digests.values()) expect(await Bun.file(blobFile(d)).exists()).toBe(true);

    out.length = 0;
    expect(await cleanup(["--config", configFile, "--gc-min-age-minutes", "0"], io)).toBe(0);
    const real = out.join("");
    expect(real).toMatch(/pypi \(proxy\): 7 files, .*; removed 3 files/);
    expect(real).toContain("files (proxy): 10 files, 100 KiB; removed 6 files, 60 KiB (max_age 1, quota 5); 40 KiB kept");
    expect(real).toMatch(/swept 9 blobs \(\d+(\.\d)? KiB\) unreferenced for at least 0 minutes/);
    for (const [path, d] of digests) {
      const kept = path.includes("demo-10.0") || path.includes("demo-2.0-");
      expect({ path, stored: await Bun.file(blobFile(d)).exists() }).toEqual({ path, stored: kept });
    }

    // a second run finds nothing; the repositories still answer, fetching evicted files again
    out.length = 0;
    expect(await cleanup(["--config", configFile, "--no-gc"], io)).toBe(0);
    expect(out.join("")).toContain("files (proxy): 4 files, 40 KiB; removed 0 files, 0 B; 40 KiB kept");
    v = await startVault({ config: config(), dataDir });
    try {
      const r = await get(`${v.url}${files.get("demo-2.0rc1-py3-none-any.whl")!}`);
      expect([r.status, r.cache]).toEqual([200, "MISS"]);
      expect((await get(`${v.url}/files/f/9.bin`)).cache).toBe("MISS");
      expect((await get(`${v.url}/files/f/7.bin`)).cache).toBe("HIT");
    } finally {
      await v.stop();
    }

    // usage errors
    expect(await cleanup(["--config", configFile, "--repo", "nope"], io)).toBe(2);
    expect(await cleanup(["--bogus"], io)).toBe(2);
  }, 90_000);

  test("the periodic job of vault serve evicts files unused for unusedForDays on its own", async () => {
    const v = await startVault({
      config: {
        retention: { intervalMinutes: 0.002 }, // 120 ms, for the test
        repositories: [{ name: "job", format: "http", type: "proxy", upstream: `${filesUp.url}/`, retention: { unusedForDays: 7 } }],
      },
    });
    try {
      for (const i of [1, 2]) expect((await get(`${v.url}/job/f/${i}.bin`)).status).toBe(200);
      const ctx = v.vault.repositories.get("job")!;
      await (ctx.artifacts as VaultArtifactStore).flush();
      const { artifacts } = tablesOf(ctx.metadata);
      await ctx.metadata.update(artifacts).set({ lastAccessAt: Date.now() - 8 * DAY }).where(and(eq(artifacts.repository, "job"), eq(artifacts.path, "f/1.bin")));
      // the job runs every 120 ms: wait (bounded) until it evicted the unused file
      const deadline = Date.now() + 30_000;
      while ((await paths(ctx, "f/")).includes("f/1.bin") && Date.now() < deadline) await Bun.sleep(50);
      expect(await paths(ctx, "f/")).toEqual(["f/2.bin"]);
      expect(await (await fetch(`${v.url}/-/metrics`)).text()).toContain('vault_retention_removed_total{reason="unused",repository="job"} 1');
      expect((await get(`${v.url}/job/f/1.bin`)).cache).toBe("MISS");
      expect((await get(`${v.url}/job/f/2.bin`)).cache).toBe("HIT");
    } finally {
      await v.stop();
    }
  }, 60_000);
});

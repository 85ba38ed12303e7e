#!/usr/bin/env bun
/**
 * Benchmark: a cached OCI blob (1 MiB and 64 MiB) served by the vault's oci proxy vs the same blob served by
 * Debian's docker-registry (CNCF distribution) running as a pull-through proxy of the same upstream.
 *   bun scripts/bench/oci-cached-blob.ts [--seconds 10] [--rounds 2]
 * One upstream docker-registry holds both blobs; a second docker-registry is its `proxy:` cache; the vault (real CLI,
 * `vault serve`) is an oci proxy of the same upstream. Both caches are warmed, then wrk (same load generator, same
 * connection counts) alternates between them each round. The two servers share the server core(s) (taskset), wrk runs
 * on the other core(s). Prints req/s, MB/s, p99 and the vault/distribution ratios (target: vault ≥ 1.5×).
 * Needs wrk and docker-registry (apt-get install -y wrk docker-registry).
 */
import { startRegistry } from "../../test/helpers/registry.ts";
import { download, flag, pinPid, pinning, printTable, requireTool, requireWrk, runWrk, startVaultCli, tempDir, type WrkResult } from "./lib.ts";

requireWrk();
requireTool("docker-registry", "apt-get install -y docker-registry");
const seconds = flag("seconds", 10);
const rounds = flag("rounds", 2);
const pin = pinning();

/** Deterministic pseudo-random bytes. */
function bytesOf(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  const v = new Uint32Array(out.buffer, 0, size >>> 2);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < v.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    v[i] = x;
  }
  return out;
}

async function pushBlob(base: string, name: string, bytes: Uint8Array): Promise<string> {
  const digest = "sha256:" + new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
  const post = await fetch(`${base}/v2/${name}/blobs/uploads/`, { method: "POST" });
  const loc = new URL(post.headers.get("location")!, base);
  loc.searchParams.set("digest", digest);
  const put = await fetch(loc, { method: "PUT", body: bytes as BodyInit, headers: { "content-type": "application/octet-stream" } });
  if (put.status !== 201) throw new Error(`push failed: ${put.status}`);
  return digest;
}

const blobs = [
  { label: "1 MiB", size: 1024 * 1024, connections: [16, 64] },
  { label: "64 MiB", size: 64 * 1024 * 1024, connections: [4, 16] },
];

const tmp = await tempDir("vault-bench-oci-");
const upstream = await startRegistry();
const distribution = await startRegistry({ proxy: { remoteurl: upstream.url } });
await pinPid(distribution.pid, pin.server);
const vault = await startVaultCli({ repositories: [{ name: "hub", format: "oci", type: "proxy", upstream: upstream.url, libraryPrefix: false }] }, tmp.dir);
await pinPid(vault.pid, pin.server);
console.log(`cores: servers ${pin.server ?? "(not pinned)"}, wrk ${pin.client ?? "(not pinned)"}; ${seconds} s per run, ${rounds} round(s)`);

try {
  const urls: { label: string; connections: number[]; size: number; dist: string; vault: string }[] = [];
  for (const [i, b] of blobs.entries()) {
    const digest = await pushBlob(upstream.url, "bench/img", bytesOf(b.size, 11 + i));
    const u = { ...b, dist: `${distribution.url}/v2/bench/img/blobs/${digest}`, vault: `${vault.url}/v2/hub/bench/img/blobs/${digest}` };
    // warm both caches (the vault row is committed just after the first body ends)
    const d = await download(u.dist);
    if (d.status !== 200 || d.sizeBytes !== b.size) throw new Error(`warming distribution failed: ${d.status}`);
    let v = await download(u.vault);
    for (let k = 0; v.cache !== "HIT" && k < 100; k++) {
      await Bun.sleep(20);
      v = await download(u.vault);
    }
    if (v.status !== 200 || v.sizeBytes !== b.size || v.cache !== "HIT") throw new Error(`warming the vault failed: ${v.status} ${v.cache}`);
    const again = await download(u.dist);
    if (again.status !== 200) throw new Error("distribution proxy does not serve the cached blob");
    urls.push(u);
  }
  const upstreamBlobGets = upstream.count((r) => r.method === "GET" && r.uri.includes("/blobs/"));
  for (const u of [urls[0].dist, urls[0].vault]) await runWrk({ url: u, connections: 16, seconds: 2, pin });

  const rows: (string | number)[][] = [["blob", "conns", "distribution req/s", "vault req/s", "req/s ratio", "distribution MB/s", "vault MB/s", "MB/s ratio", "dist p99 ms", "vault p99 ms"]];
  const ratios: number[] = [];
  for (const u of urls)
    for (const c of u.connections) {
      const d: WrkResult[] = [];
      const v: WrkResult[] = [];
      for (let r = 0; r < rounds; r++) {
        const order = r % 2 === 0 ? ["dist", "vault"] : ["vault", "dist"];
        for (const who of order) {
          if (who === "dist") d.push(await runWrk({ url: u.dist, connections: c, seconds, pin }));
          else v.push(await runWrk({ url: u.vault, connections: c, seconds, pin }));
        }
      }
      const avg = (xs: WrkResult[], k: keyof WrkResult) => xs.reduce((a, x) => a + (x[k] as number), 0) / xs.length;
      const errs = [...d, ...v].reduce((a, x) => a + x.errors, 0);
      if (errs) console.warn(`warning: ${errs} errors during ${u.label} c=${c}`);
      const dr = avg(d, "requestsPerSecond");
      const vr = avg(v, "requestsPerSecond");
      const dm = avg(d, "bytesPerSecond") / 1e6;
      const vm = avg(v, "bytesPerSecond") / 1e6;
      ratios.push(vr / dr);
      rows.push([u.label, c, dr.toFixed(0), vr.toFixed(0), (vr / dr).toFixed(2), dm.toFixed(0), vm.toFixed(0), (vm / dm).toFixed(2), avg(d, "p99Ms").toFixed(1), avg(v, "p99Ms").toFixed(1)]);
    }
  printTable(rows);
  const extra = upstream.count((r) => r.method === "GET" && r.uri.includes("/blobs/")) - upstreamBlobGets;
  console.log(`upstream blob GETs during the measurement: ${extra} (both caches served every request)`);
  console.log(`lowest vault/distribution req/s ratio: ${Math.min(...ratios).toFixed(2)} (target ≥ 1.5)`);
} finally {
  await vault.stop();
  await distribution.stop();
  await upstream.stop();
  await tmp.remove();
}

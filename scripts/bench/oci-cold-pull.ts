#!/usr/bin/env bun
/**
 * Benchmark: a cold pull of a multi-layer image with skopeo, through the vault's oci proxy (empty cache each round)
 * vs directly from the upstream registry (Debian's docker-registry).
 *   bun scripts/bench/oci-cold-pull.ts [--rounds 3] [--layers 8] [--layer-mib 8]
 * The upstream holds one image of `layers` random layers; each round starts a fresh vault (real CLI, empty data dir),
 * warms it with a pull of another small image (JIT, upstream auth discovery), then times `skopeo copy docker://…
 * dir:…` of the measured image (not in the vault's cache) both ways, alternating the order. Prints wall times and the median
 * vault/direct ratio (target ≤ 1.15). Needs skopeo and docker-registry (apt-get install -y skopeo docker-registry).
 */
import { join } from "node:path";
import { mkdir, rm } from "node:fs/promises";
import { startRegistry, skopeo } from "../../test/helpers/registry.ts";
import { flag, printTable, requireTool, startVaultCli, tempDir } from "./lib.ts";

requireTool("docker-registry", "apt-get install -y docker-registry");
requireTool("skopeo", "apt-get install -y skopeo");
const rounds = flag("rounds", 3);
const layers = flag("layers", 8);
const layerMiB = flag("layer-mib", 8);

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
const sha = (b: Uint8Array | string) => "sha256:" + new Bun.CryptoHasher("sha256").update(b).digest("hex");

async function pushBlob(base: string, name: string, bytes: Uint8Array): Promise<{ digest: string; size: number }> {
  const digest = sha(bytes);
  const post = await fetch(`${base}/v2/${name}/blobs/uploads/`, { method: "POST" });
  const loc = new URL(post.headers.get("location")!, base);
  loc.searchParams.set("digest", digest);
  const put = await fetch(loc, { method: "PUT", body: bytes as BodyInit, headers: { "content-type": "application/octet-stream" } });
  if (put.status !== 201) throw new Error(`push failed: ${put.status}`);
  return { digest, size: bytes.byteLength };
}

async function timedCopy(src: string, dest: string): Promise<number> {
  const t0 = performance.now();
  const r = await skopeo(["copy", "--src-tls-verify=false", src, `dir:${dest}`], 600_000);
  const s = (performance.now() - t0) / 1000;
  if (r.code !== 0) throw new Error(`skopeo copy ${src} failed: ${r.stderr}`);
  await rm(dest, { recursive: true, force: true });
  return s;
}

const tmp = await tempDir("vault-bench-oci-cold-");
const upstream = await startRegistry();
try {
  const name = "bench/multi";
  const cfg = new TextEncoder().encode(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, config: {} }));
  const config = await pushBlob(upstream.url, name, cfg);
  const layerDescs = [];
  for (let i = 0; i < layers; i++) {
    const l = await pushBlob(upstream.url, name, bytesOf(layerMiB * 1024 * 1024, 1000 + i));
    layerDescs.push({ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: l.digest, size: l.size });
  }
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config.digest, size: config.size },
    layers: layerDescs,
  });
  const put = await fetch(`${upstream.url}/v2/${name}/manifests/latest`, { method: "PUT", body: manifest, headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" } });
  if (put.status !== 201) throw new Error(`manifest push failed: ${put.status}`);
  // a small other image to warm each fresh vault (JIT, upstream auth discovery) before the measured cold pull
  const warmCfg = await pushBlob(upstream.url, "bench/warm", cfg);
  const warmLayer = await pushBlob(upstream.url, "bench/warm", bytesOf(64 * 1024, 7));
  const warmManifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: warmCfg.digest, size: warmCfg.size },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: warmLayer.digest, size: warmLayer.size }],
  });
  await fetch(`${upstream.url}/v2/bench/warm/manifests/latest`, { method: "PUT", body: warmManifest, headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" } });
  console.log(`image: ${layers} layers × ${layerMiB} MiB; ${rounds} round(s); fresh vault per round`);

  // warm the page cache and skopeo itself
  await timedCopy(`docker://${upstream.host}/${name}:latest`, join(tmp.dir, "warm"));

  const rows: (string | number)[][] = [["round", "direct s", "vault (cold) s", "ratio"]];
  const ratios: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const vdir = join(tmp.dir, `vault-${r}`);
    await mkdir(vdir, { recursive: true });
    const vtmp = await tempDir("vault-bench-cold-v-");
    const vault = await startVaultCli({ repositories: [{ name: "hub", format: "oci", type: "proxy", upstream: upstream.url, libraryPrefix: false }] }, vtmp.dir);
    const host = vault.url.replace(/^http:\/\//, "");
    await timedCopy(`docker://${host}/hub/bench/warm:latest`, join(vdir, "w"));
    let direct = 0;
    let through = 0;
    try {
      if (r % 2 === 0) {
        direct = await timedCopy(`docker://${upstream.host}/${name}:latest`, join(vdir, "d"));
        through = await timedCopy(`docker://${host}/hub/${name}:latest`, join(vdir, "v"));
      } else {
        through = await timedCopy(`docker://${host}/hub/${name}:latest`, join(vdir, "v"));
        direct = await timedCopy(`docker://${upstream.host}/${name}:latest`, join(vdir, "d"));
      }
    } finally {
      await vault.stop();
      await vtmp.remove();
    }
    ratios.push(through / direct);
    rows.push([r + 1, direct.toFixed(3), through.toFixed(3), (through / direct).toFixed(2)]);
  }
  printTable(rows);
  const sorted = [...ratios].sort((a, b) => a - b);
  console.log(`median vault/direct wall-time ratio: ${sorted[Math.floor(sorted.length / 2)].toFixed(2)} (target ≤ 1.15)`);
} finally {
  await upstream.stop();
  await tmp.remove();
}

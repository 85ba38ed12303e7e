#!/usr/bin/env bun
/**
 * Benchmark: cache misses. A 256 MiB artifact fetched through the vault (cold every round: a new URL of the same
 * bytes) vs straight from the local upstream, then the vault's peak RSS growth while it streams a 1 GiB miss.
 *   bun scripts/bench/miss.ts [--rounds 3] [--tail-hash on|off]
 * `--tail-hash` sets the vault's `pool.tailHash` (hash large downloads on another thread; default: on above 2 cores).
 * The client is curl (writing to /dev/null) when installed, else fetch. Nothing is pinned: upstream, vault and
 * client all work at once here, and the OS spreads them.
 */
import { createHash } from "node:crypto";
import { startVaultCli, download, flag, makeFile, mib, printTable, sampleRss, startFileServer, tempDir, rssBytes } from "./lib.ts";

const rounds = flag("rounds", 3);
const th = process.argv.indexOf("--tail-hash");
const tailHash = th < 0 ? undefined : process.argv[th + 1] === "on";
const MIB = 1024 * 1024;
const tmp = await tempDir("vault-bench-miss-");
await makeFile(`${tmp.dir}/big.bin`, 256 * MIB);
await makeFile(`${tmp.dir}/huge.bin`, 1024 * MIB);
const upstream = await startFileServer(tmp.dir);
const vault = await startVaultCli(
  { ...(tailHash === undefined ? {} : { pool: { tailHash } }), repositories: [{ name: "files", format: "http", type: "proxy", upstream: upstream.url + "/" }] },
  tmp.dir,
);
if (tailHash !== undefined) console.log(`pool.tailHash: ${tailHash}`);

try {
  // Warm both processes with a small miss so JIT and connection set-up are not in round 1.
  await download(`${upstream.url}/alias/warm/big.bin`);
  await download(`${vault.url}/files/alias/warm/big.bin`);

  const rows: (string | number)[][] = [["round", "direct MiB/s", "vault (MISS) MiB/s", "ratio", "vault HIT MiB/s"]];
  let sumRatio = 0;
  for (let r = 1; r <= rounds; r++) {
    const direct = await download(`${upstream.url}/alias/d${r}/big.bin`);
    const miss = await download(`${vault.url}/files/alias/v${r}/big.bin`);
    const hit = await download(`${vault.url}/files/alias/v${r}/big.bin`);
    for (const [what, d] of [["direct", direct], ["miss", miss], ["hit", hit]] as const)
      if (d.status !== 200 || d.sizeBytes !== 256 * MIB) throw new Error(`${what} round ${r}: status ${d.status}, ${d.sizeBytes} bytes`);
    if (miss.cache !== "MISS" || hit.cache !== "HIT") console.warn(`warning: round ${r} cache headers were ${miss.cache} then ${hit.cache}`);
    const rate = (d: { sizeBytes: number; seconds: number }) => d.sizeBytes / MIB / d.seconds;
    sumRatio += rate(miss) / rate(direct);
    rows.push([r, rate(direct).toFixed(0), rate(miss).toFixed(0), (rate(miss) / rate(direct)).toFixed(2), rate(hit).toFixed(0)]);
  }
  printTable(rows);
  console.log(`mean throughput ratio vault MISS / direct: ${(sumRatio / rounds).toFixed(2)}`);

  // The cached copy is byte-identical to the source.
  const want = createHash("sha256").update(new Uint8Array(await Bun.file(`${tmp.dir}/big.bin`).arrayBuffer())).digest("hex");
  const got = new Bun.CryptoHasher("sha256");
  for await (const c of (await fetch(`${vault.url}/files/alias/v1/big.bin`)).body!) got.update(c);
  console.log(`cached copy sha256 ${got.digest("hex") === want ? "matches" : "DIFFERS from"} the source`);

  // RSS while streaming a 1 GiB miss.
  await Bun.sleep(500);
  const before = await rssBytes(vault.pid);
  const s = sampleRss(vault.pid, 20);
  const big = await download(`${vault.url}/files/alias/huge/huge.bin`);
  const rss = await s.stop();
  if (big.status !== 200 || big.sizeBytes !== 1024 * MIB) throw new Error(`1 GiB miss: status ${big.status}, ${big.sizeBytes} bytes`);
  printTable([
    ["1 GiB miss", "MiB/s", "RSS before", "RSS peak", "peak growth"],
    ["vault", (big.sizeBytes / MIB / big.seconds).toFixed(0), mib(before), mib(rss.peakBytes), mib(rss.peakBytes - before)],
  ]);
} finally {
  await vault.stop();
  await upstream.stop();
  await tmp.remove();
}

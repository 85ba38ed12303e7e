#!/usr/bin/env bun
/**
 * Benchmark: cache hits through the vault vs a bare `Bun.serve` answering `Bun.file` for the same file.
 *   bun scripts/bench/cache-hit.ts [--seconds 10] [--rounds 2]
 * Starts the real CLI (`vault serve`, via spawnVault) with an `http` proxy repository in front of a local upstream,
 * warms a 4 KiB and a 1 MiB artifact, then measures with wrk (16 and 64 connections), alternating baseline and
 * vault each round; server and wrk are pinned to different cores with taskset when available. Prints req/s, p99
 * latency, both servers' peak RSS during their runs (the bare runtime's own growth under load is the baseline's), and
 * the vault/baseline ratio. Needs wrk (apt-get install -y wrk).
 */
import { startVaultCli, flag, makeFile, pinPid, pinning, printTable, requireWrk, runWrk, sampleRss, startFileServer, tempDir, download, mib, type WrkResult } from "./lib.ts";

requireWrk();
const seconds = flag("seconds", 10);
const rounds = flag("rounds", 2);
const pin = pinning();

const files = [
  { name: "a-4k.bin", label: "4 KiB", sizeBytes: 4096 },
  { name: "a-1m.bin", label: "1 MiB", sizeBytes: 1024 * 1024 },
];
const connections = [16, 64];

const tmp = await tempDir("vault-bench-hit-");
for (const f of files) await makeFile(`${tmp.dir}/${f.name}`, f.sizeBytes);
const upstream = await startFileServer(tmp.dir);
const baseline = await startFileServer(tmp.dir, { cpus: pin.server });
const vault = await startVaultCli({ repositories: [{ name: "files", format: "http", type: "proxy", upstream: upstream.url + "/" }] }, tmp.dir);
await pinPid(vault.pid, pin.server);
console.log(`cores: server ${pin.server ?? "(not pinned)"}, wrk ${pin.client ?? "(not pinned)"}; ${seconds} s per run, ${rounds} round(s)`);

try {
  for (const f of files) {
    const miss = await download(`${vault.url}/files/${f.name}`);
    // The entry is recorded before the miss's body ends: the next request is a HIT.
    const hit = await download(`${vault.url}/files/${f.name}`);
    if (miss.status !== 200 || hit.status !== 200 || hit.sizeBytes !== f.sizeBytes || hit.cache !== "HIT")
      throw new Error(`warming ${f.name} failed: first ${miss.status} ${miss.cache}, second ${hit.status} ${hit.cache} ${hit.sizeBytes} bytes`);
  }
  // JIT warm-up of both servers.
  for (const base of [baseline.url, `${vault.url}/files`]) await runWrk({ url: `${base}/${files[0].name}`, connections: 16, seconds: 2, pin });

  const rows: (string | number)[][] = [["artifact", "conns", "baseline req/s", "vault req/s", "ratio", "baseline p99", "vault p99", "baseline RSS peak", "vault RSS peak"]];
  for (const f of files)
    for (const c of connections) {
      const b: WrkResult[] = [];
      const v: WrkResult[] = [];
      let rssPeak = 0;
      let baseRssPeak = 0;
      for (let r = 0; r < rounds; r++) {
        const order = r % 2 === 0 ? (["baseline", "vault"] as const) : (["vault", "baseline"] as const);
        for (const who of order) {
          if (who === "baseline") {
            const s = sampleRss(baseline.pid, 200);
            b.push(await runWrk({ url: `${baseline.url}/${f.name}`, connections: c, seconds, pin }));
            baseRssPeak = Math.max(baseRssPeak, (await s.stop()).peakBytes);
          } else {
            const s = sampleRss(vault.pid, 200);
            v.push(await runWrk({ url: `${vault.url}/files/${f.name}`, connections: c, seconds, pin }));
            rssPeak = Math.max(rssPeak, (await s.stop()).peakBytes);
          }
        }
      }
      const mean = (xs: WrkResult[], k: keyof WrkResult) => xs.reduce((a, x) => a + x[k], 0) / xs.length;
      const errors = [...b, ...v].reduce((a, x) => a + x.errors, 0);
      if (errors) console.warn(`warning: ${errors} socket errors / non-2xx responses for ${f.label} @ ${c}`);
      const br = mean(b, "requestsPerSecond");
      const vr = mean(v, "requestsPerSecond");
      rows.push([f.label, c, br.toFixed(0), vr.toFixed(0), (vr / br).toFixed(2), `${mean(b, "p99Ms").toFixed(2)} ms`, `${mean(v, "p99Ms").toFixed(2)} ms`, mib(baseRssPeak), mib(rssPeak)]);
    }
  printTable(rows);
  const counts = await upstream.counts();
  console.log(`upstream requests: ${files.map((f) => `${f.name} ${counts["/" + f.name] ?? 0}`).join(", ")} (1 each expected: the rest were hits)`);
} finally {
  await vault.stop();
  await baseline.stop();
  await upstream.stop();
  await tmp.remove();
}

#!/usr/bin/env bun
/**
 * Benchmark: a thundering herd. 50 concurrent misses of one 64 MiB artifact from a rate-limited upstream
 * (default 128 MiB/s, so one download takes ~0.5 s) must make exactly one upstream request, and followers must get
 * their first byte while the leader's download is still running (they tail the spool file), not after it ends.
 *   bun scripts/bench/thundering-herd.ts [--clients 50] [--rate-mib 128]
 * Two herds: (A) all clients at once; (B) one leader, then the others as soon as the leader's first byte arrived.
 */
import { startVaultCli, flag, makeFile, mib, printTable, rssBytes, sampleRss, startFileServer, tempDir } from "./lib.ts";

const MIB = 1024 * 1024;
const clients = flag("clients", 50);
const rateMib = flag("rate-mib", 128);
const SIZE = 64 * MIB;

interface Timing {
  status: number;
  cache?: string;
  /** ms from request to response headers, to first body byte, to end of body */
  headersMs: number;
  firstByteMs: number;
  endMs: number;
  /** epoch-relative (performance.now()) instants */
  startAt: number;
  firstByteAt: number;
  endAt: number;
  sizeBytes: number;
}

async function timedGet(url: string, onFirstByte?: () => void): Promise<Timing> {
  const startAt = performance.now();
  const res = await fetch(url);
  const headersAt = performance.now();
  let firstByteAt = NaN;
  let sizeBytes = 0;
  for await (const c of res.body!) {
    if (sizeBytes === 0 && c.byteLength > 0) {
      firstByteAt = performance.now();
      onFirstByte?.();
    }
    sizeBytes += c.byteLength;
  }
  const endAt = performance.now();
  return {
    status: res.status,
    cache: res.headers.get("x-vault-cache") ?? undefined,
    headersMs: headersAt - startAt,
    firstByteMs: firstByteAt - startAt,
    endMs: endAt - startAt,
    startAt,
    firstByteAt,
    endAt,
    sizeBytes,
  };
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

const tmp = await tempDir("vault-bench-herd-");
await makeFile(`${tmp.dir}/herd.bin`, SIZE);
const upstream = await startFileServer(tmp.dir, { rateBytesPerSecond: rateMib * MIB });
const vault = await startVaultCli({ repositories: [{ name: "files", format: "http", type: "proxy", upstream: upstream.url + "/" }] }, tmp.dir);

try {
  // Warm-up miss of a different key.
  await timedGet(`${vault.url}/files/alias/warm/herd.bin`);

  // (A) everyone at once (the vault's RSS sampled meanwhile: followers tail the spool, they do not buffer).
  const rssBefore = await rssBytes(vault.pid);
  const rssA = sampleRss(vault.pid, 20);
  const a = await Promise.all(Array.from({ length: clients }, () => timedGet(`${vault.url}/files/alias/A/herd.bin`)));
  const rssPeakA = (await rssA.stop()).peakBytes;
  // (B) leader first, followers once the leader is streaming.
  let release!: () => void;
  const leaderStreaming = new Promise<void>((r) => (release = r));
  const leaderP = timedGet(`${vault.url}/files/alias/B/herd.bin`, () => release());
  await leaderStreaming;
  const followers = await Promise.all(Array.from({ length: clients - 1 }, () => timedGet(`${vault.url}/files/alias/B/herd.bin`)));
  const leader = await leaderP;

  const counts = await upstream.counts();
  for (const t of [...a, leader, ...followers]) if (t.status !== 200 || t.sizeBytes !== SIZE) throw new Error(`a client got ${t.status} with ${t.sizeBytes} bytes`);
  const ms = (v: number) => `${v.toFixed(0)} ms`;
  const row = (label: string, ts: Timing[]) => [label, ts.length, ms(pct(ts.map((t) => t.firstByteMs), 50)), ms(pct(ts.map((t) => t.firstByteMs), 95)), ms(Math.max(...ts.map((t) => t.firstByteMs))), ms(pct(ts.map((t) => t.endMs), 50)), ms(Math.max(...ts.map((t) => t.endMs)))];
  console.log(`${clients} clients, ${SIZE / MIB} MiB artifact, upstream limited to ${rateMib} MiB/s (one download ≈ ${ms((SIZE / (rateMib * MIB)) * 1000)})`);
  printTable([
    ["herd", "clients", "TTFB p50", "TTFB p95", "TTFB max", "total p50", "total max"],
    row("A: all at once", a),
    row("B: leader", [leader]),
    row("B: followers", followers),
  ]);
  const followersDoneAfterLeader = Math.max(...followers.map((t) => t.endAt)) - leader.endAt;
  const followersFirstByteBeforeLeaderEnd = followers.filter((t) => t.firstByteAt < leader.endAt).length;
  console.log(`upstream requests: herd A ${counts["/alias/A/herd.bin"] ?? 0}, herd B ${counts["/alias/B/herd.bin"] ?? 0} (1 each expected)`);
  console.log(`herd B: ${followersFirstByteBeforeLeaderEnd}/${followers.length} followers had their first byte before the leader finished; last follower ended ${ms(followersDoneAfterLeader)} after the leader`);
  console.log(`vault RSS during herd A: ${mib(rssBefore)} before, ${mib(rssPeakA)} peak (growth ${mib(rssPeakA - rssBefore)})`);
  console.log(`cache headers: A ${[...new Set(a.map((t) => t.cache))].join("/")}, B leader ${leader.cache}, followers ${[...new Set(followers.map((t) => t.cache))].join("/")}`);
} finally {
  await vault.stop();
  await upstream.stop();
  await tmp.remove();
}

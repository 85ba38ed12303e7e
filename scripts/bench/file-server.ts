#!/usr/bin/env bun
/**
 * Benchmark file server (a child process): `bun scripts/bench/file-server.ts ROOT [--rate BYTES_PER_SECOND]`.
 * GET /<path> answers `Bun.file(ROOT/<path>)` (sendfile): the baseline for cache hits, and the upstream for misses.
 * `/alias/<anything>/<path>` serves ROOT/<path> too, so every round can ask for a new URL of the same bytes.
 * With --rate the body is streamed in 256 KiB chunks at about that rate (a slow upstream for the thundering herd).
 * Prints `{"port":N}` on stdout once listening; counts requests per path, reported at GET /__stats.
 */
import { resolve, sep } from "node:path";

const [rootArg, ...rest] = process.argv.slice(2);
if (!rootArg) {
  process.stderr.write("usage: bun scripts/bench/file-server.ts ROOT [--rate BYTES_PER_SECOND]\n");
  process.exit(2);
}
const root = resolve(rootArg);
const rateAt = rest.indexOf("--rate");
const rate = rateAt >= 0 ? Number(rest[rateAt + 1]) : 0;
const counts: Record<string, number> = {};

function throttled(file: ReturnType<typeof Bun.file>, bytesPerSecond: number): ReadableStream<Uint8Array> {
  const chunk = 256 * 1024;
  let offset = 0;
  const t0 = performance.now();
  return new ReadableStream({
    async pull(c) {
      if (offset >= file.size) return c.close();
      const due = t0 + (offset / bytesPerSecond) * 1000;
      const wait = due - performance.now();
      if (wait > 0) await Bun.sleep(wait);
      const end = Math.min(offset + chunk, file.size);
      c.enqueue(new Uint8Array(await file.slice(offset, end).arrayBuffer()));
      offset = end;
    },
  });
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  idleTimeout: 120,
  fetch(req) {
    let path = decodeURIComponent(new URL(req.url).pathname);
    if (path === "/__stats") return Response.json(counts);
    counts[path] = (counts[path] ?? 0) + 1;
    const alias = /^\/alias\/[^/]+(\/.*)$/.exec(path);
    if (alias) path = alias[1];
    const abs = resolve(root, "." + path);
    if (!abs.startsWith(root + sep)) return new Response("not found\n", { status: 404 });
    const file = Bun.file(abs);
    if (!rate) return new Response(file);
    return new Response(throttled(file, rate), { headers: { "content-length": String(file.size), "content-type": "application/octet-stream" } });
  },
});
process.stdout.write(JSON.stringify({ port: server.port }) + "\n");

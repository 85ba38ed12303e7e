/** Single flight under load: 50 concurrent misses of a 64 MiB file stream from one upstream request, before it ends. */
import { afterEach, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { cacheFixture, drainBody, gatedBody, sha256, startLengthUpstream, type CacheFixture } from "./fixture.ts";

let fx: CacheFixture | undefined;
let extra: { stop(): Promise<void> } | undefined;
afterEach(async () => {
  await fx?.stop();
  await extra?.stop();
  fx = undefined;
  extra = undefined;
});

const MiB = 1024 * 1024;

test("50 concurrent misses of 64 MiB → exactly 1 upstream request, identical bytes, first bytes before upstream finished", async () => {
  const chunks = Array.from({ length: 64 }, () => new Uint8Array(randomBytes(MiB)));
  const whole = new Bun.CryptoHasher("sha256");
  for (const c of chunks) whole.update(c);
  const expected = whole.digest("hex");
  let upstreamDoneAt = 0;
  // node:http upstream: sends Content-Length (so the engine checks the byte count) and the body slowly, in 1 MiB chunks.
  const up = await startLengthUpstream(chunks, () => Bun.sleep(8), () => (upstreamDoneAt = Date.now()));
  extra = up;
  fx = await cacheFixture({ spec: (key) => ({ upstreamUrl: `${up.url}/${key}` }) });
  const url = `${fx.url}/pool/big.tar`;
  const results = await Promise.all(
    Array.from({ length: 50 }, async () => {
      const res = await fetch(url);
      expect(res.status).toBe(200);
      expect(res.headers.get("x-vault-cache")).toBe("MISS");
      expect(res.headers.get("content-type")).toBe("application/x-tar");
      return drainBody(res);
    }),
  );
  expect(up.requests).toEqual(["/pool/big.tar"]);
  expect(upstreamDoneAt).toBeGreaterThan(0);
  for (const r of results) {
    expect(r.size).toBe(64 * MiB);
    expect(r.sha256).toBe(expected);
    expect(r.firstByteAt).toBeGreaterThan(0);
    expect(r.firstByteAt).toBeLessThan(upstreamDoneAt);
  }
  await fx.engine.drain(10_000);
  const hit = await fetch(url);
  expect(hit.headers.get("x-vault-cache")).toBe("HIT");
  expect(hit.headers.get("content-length")).toBe(String(64 * MiB));
  const h = await drainBody(hit);
  expect(h.sha256).toBe(expected);
  expect(up.requests.length).toBe(1);
  expect(await fx.spoolFiles()).toEqual([]);
  const entry = await fx.artifacts.get("pool/big.tar");
  expect(entry?.blobDigest).toBe(`sha256:${expected}`);
  expect(entry?.sizeBytes).toBe(64 * MiB);
}, 60_000);

test("a follower joining mid-download gets the bytes already written plus the rest", async () => {
  const chunks = Array.from({ length: 16 }, () => new Uint8Array(randomBytes(256 * 1024)));
  const expected = sha256(Buffer.concat(chunks));
  const g = gatedBody(chunks);
  fx = await cacheFixture({ upstream: { handler: () => new Response(g.body) } });
  const url = `${fx.url}/late-joiner.bin`;
  const first = fetch(url).then(drainBody);
  g.release(8);
  await g.sent(8);
  expect(fx.engine.inflight()).toBe(1);
  const second = fetch(url).then(async (r) => {
    expect(r.headers.get("x-vault-cache")).toBe("MISS");
    return drainBody(r);
  });
  g.release(8);
  const [a, b] = await Promise.all([first, second]);
  expect(a.sha256).toBe(expected);
  expect(b.sha256).toBe(expected);
  expect(fx.up.count("/late-joiner.bin")).toBe(1);
});

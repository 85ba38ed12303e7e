/** storageDriverSuite: the conformance tests every StorageDriver (fs, s3, third-party) must pass, using only the contract. */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { DigestMismatchError, InvalidKeyError, NotFoundError, type StorageDriver } from "../../core/storage/driver.ts";

/** What a suite factory returns: a driver over an empty store, and how to dispose of the store afterwards. */
export interface DriverUnderTest {
  driver: StorageDriver;
  cleanup?: () => Promise<void>;
}

/** Deterministic pseudo-random bytes (xorshift32), so failures are reproducible. */
export function pseudoRandomBytes(n: number, seed = 0x9e3779b9): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** A body delivering `bytes` in chunks of `chunkBytes` (uneven sizes exercise batching in drivers). */
export function streamOf(bytes: Uint8Array | string, chunkBytes = 64 * 1024 + 7): ReadableStream<Uint8Array> {
  const data = typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes;
  let off = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (off >= data.byteLength) return c.close();
      const end = Math.min(off + chunkBytes, data.byteLength);
      c.enqueue(data.slice(off, end));
      off = end;
    },
  });
}

/** A body that delivers `goodBytes` bytes, then errors (an upstream connection dropping mid-way). */
export function failingStream(goodBytes: number, chunkBytes = 32 * 1024): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (sent >= goodBytes) return c.error(new Error("body stream failed mid-way"));
      const n = Math.min(chunkBytes, goodBytes - sent);
      c.enqueue(new Uint8Array(n).fill(0x61));
      sent += n;
    },
  });
}

async function readAll(s: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(s).arrayBuffer());
}

function sha256Hex(b: Uint8Array | string): string {
  return new Bun.CryptoHasher("sha256").update(b).digest("hex");
}

async function keysOf(d: StorageDriver, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of d.list(prefix)) out.push(o.key);
  return out;
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection, but the promise resolved");
}

/**
 * Registers a bun:test `describe` block of conformance tests for a StorageDriver.
 *
 * `make` is called once per test and must return a driver over an empty store (e.g. a fresh temp dir or a fresh
 * bucket); `cleanup` then disposes of it. Every test removes what it wrote, and fails if any key is left behind
 * (`list("")` must be empty at the end). Only the StorageDriver contract (core/storage/driver.ts) is used.
 */
export function storageDriverSuite(name: string, make: () => Promise<DriverUnderTest>): void {
  describe(`StorageDriver conformance: ${name}`, () => {
    /** Runs `fn` against a fresh driver, then checks nothing was left behind and disposes of the store. */
    function it(title: string, fn: (d: StorageDriver) => Promise<void>, timeoutMs?: number): void {
      test(
        title,
        async () => {
          const { driver, cleanup } = await make();
          try {
            await fn(driver);
            expect(await keysOf(driver, "")).toEqual([]);
          } finally {
            await driver.close?.();
            await cleanup?.();
          }
        },
        timeoutMs,
      );
    }

    it("put/get round trip of a small object, with the digest computed while writing", async (d) => {
      const before = Date.now();
      const r = await d.put("conf/small.txt", streamOf("hello, vault"));
      expect(r.key).toBe("conf/small.txt");
      expect(r.sizeBytes).toBe(12);
      expect(r.sha256).toBe(sha256Hex("hello, vault"));
      expect(r.modifiedAt).toBeGreaterThan(before - 5_000);
      expect(r.modifiedAt).toBeLessThan(Date.now() + 5_000);
      expect(new TextDecoder().decode(await readAll(await d.get("conf/small.txt")))).toBe("hello, vault");
      await d.delete("conf/small.txt");
    });

    it("put/get round trip of an empty object", async (d) => {
      const r = await d.put("conf/empty", streamOf(new Uint8Array(0)));
      expect(r.sizeBytes).toBe(0);
      expect(r.sha256).toBe(sha256Hex(new Uint8Array(0)));
      expect((await readAll(await d.get("conf/empty"))).byteLength).toBe(0);
      expect((await d.stat("conf/empty")).sizeBytes).toBe(0);
      await d.delete("conf/empty");
    });

    it("put/get round trip of a multi-MiB object", async (d) => {
      const data = pseudoRandomBytes(6 * 1024 * 1024 + 123);
      const r = await d.put("conf/big.bin", streamOf(data), { sha256: sha256Hex(data), sizeBytes: data.byteLength });
      expect(r.sizeBytes).toBe(data.byteLength);
      expect(r.sha256).toBe(sha256Hex(data));
      const back = await readAll(await d.get("conf/big.bin"));
      expect(back.byteLength).toBe(data.byteLength);
      expect(sha256Hex(back)).toBe(sha256Hex(data));
      await d.delete("conf/big.bin");
    });

    it("get with inclusive byte ranges: first byte, middle, end, end clamped to the size", async (d) => {
      const data = pseudoRandomBytes(300_000, 7);
      await d.put("conf/ranged", streamOf(data));
      const size = data.byteLength;
      const cases: [number, number, Uint8Array][] = [
        [0, 0, data.subarray(0, 1)],
        [1000, 200_999, data.subarray(1000, 201_000)],
        [size - 10, size - 1, data.subarray(size - 10)],
        [size - 5, size + 1000, data.subarray(size - 5)],
      ];
      for (const [start, end, want] of cases) {
        const got = await readAll(await d.get("conf/ranged", { start, end }));
        expect({ start, end, len: got.byteLength }).toEqual({ start, end, len: want.byteLength });
        expect(Buffer.from(got).equals(Buffer.from(want))).toBe(true);
      }
      await d.delete("conf/ranged");
    });

    it("stat reports sizes; stat and get of a missing key throw NotFoundError", async (d) => {
      await d.put("conf/a", streamOf("a"));
      await d.put("conf/b", streamOf(pseudoRandomBytes(70_001)));
      expect((await d.stat("conf/a")).sizeBytes).toBe(1);
      const b = await d.stat("conf/b");
      expect(b.key).toBe("conf/b");
      expect(b.sizeBytes).toBe(70_001);
      expect(b.modifiedAt).toBeGreaterThan(0);
      // One call at a time: creating all three promises first could leave a rejection unhandled while another is awaited.
      for (const call of [() => d.stat("conf/missing"), () => d.get("conf/missing"), () => d.get("conf/missing", { start: 0, end: 0 })]) {
        const err = await rejection(call());
        expect(err).toBeInstanceOf(NotFoundError);
        expect((err as NotFoundError).key).toBe("conf/missing");
        expect((err as NotFoundError).driver).toBe(d.name);
      }
      await d.delete("conf/a");
      await d.delete("conf/b");
    });

    it("exists is true only for stored keys (not for prefixes)", async (d) => {
      expect(await d.exists("conf/x/y")).toBe(false);
      await d.put("conf/x/y", streamOf("y"));
      expect(await d.exists("conf/x/y")).toBe(true);
      expect(await d.exists("conf/x")).toBe(false);
      await d.delete("conf/x/y");
      expect(await d.exists("conf/x/y")).toBe(false);
    });

    it("delete is idempotent and a missing key is fine", async (d) => {
      await d.put("conf/del", streamOf("x"));
      await d.delete("conf/del");
      await d.delete("conf/del");
      await d.delete("conf/never/was");
      expect(await d.exists("conf/del")).toBe(false);
    });

    it("a put replaces the previous content of a key", async (d) => {
      await d.put("conf/over", streamOf("first version"));
      await d.put("conf/over", streamOf("second"));
      expect(new TextDecoder().decode(await readAll(await d.get("conf/over")))).toBe("second");
      expect((await d.stat("conf/over")).sizeBytes).toBe(6);
      await d.delete("conf/over");
    });

    it("list yields keys in lexicographic order and filters by prefix", async (d) => {
      const keys = ["c", "b/2", "a/1", "a/10", "a-b", "a/1x/z", "a/0/deep/er", "b/1"];
      for (const k of keys) await d.put(k, streamOf(k));
      const all = await keysOf(d, "");
      expect(all).toEqual(["a-b", "a/0/deep/er", "a/1", "a/10", "a/1x/z", "b/1", "b/2", "c"]);
      expect(await keysOf(d, "a/")).toEqual(["a/0/deep/er", "a/1", "a/10", "a/1x/z"]);
      expect(await keysOf(d, "a/1")).toEqual(["a/1", "a/10", "a/1x/z"]);
      expect(await keysOf(d, "a")).toEqual(["a-b", "a/0/deep/er", "a/1", "a/10", "a/1x/z"]);
      expect(await keysOf(d, "b/2")).toEqual(["b/2"]);
      expect(await keysOf(d, "zzz")).toEqual([]);
      expect(await keysOf(d, "nothing/here/")).toEqual([]);
      const infos: { key: string; sizeBytes: number }[] = [];
      for await (const o of d.list("a/1")) infos.push({ key: o.key, sizeBytes: o.sizeBytes });
      expect(infos).toEqual([
        { key: "a/1", sizeBytes: 3 },
        { key: "a/10", sizeBytes: 4 },
        { key: "a/1x/z", sizeBytes: 6 },
      ]);
      for (const k of keys) await d.delete(k);
    });

    it("invalid keys are rejected with InvalidKeyError and nothing is written", async (d) => {
      const bad = ["../x", "a/../../x", "/abs", "a//b", "a\\b", "a\0b", "./a", "", "k".repeat(1025)];
      for (const key of bad) {
        for (const p of [d.put(key, streamOf("x")), d.get(key), d.stat(key), d.delete(key)]) {
          const err = await rejection(p);
          expect(err).toBeInstanceOf(InvalidKeyError);
        }
      }
      expect(await keysOf(d, "")).toEqual([]);
    });

    it("expect.sha256 mismatch throws DigestMismatchError and stores nothing", async (d) => {
      const err = await rejection(d.put("conf/bad-digest", streamOf("payload"), { sha256: sha256Hex("other") }));
      expect(err).toBeInstanceOf(DigestMismatchError);
      expect((err as DigestMismatchError).key).toBe("conf/bad-digest");
      expect(await d.exists("conf/bad-digest")).toBe(false);
      // the right digest passes
      const ok = await d.put("conf/bad-digest", streamOf("payload"), { sha256: sha256Hex("payload"), sizeBytes: 7 });
      expect(ok.sha256).toBe(sha256Hex("payload"));
      await d.delete("conf/bad-digest");
    });

    it("expect.sizeBytes mismatch (short or long body) throws DigestMismatchError and stores nothing", async (d) => {
      const data = pseudoRandomBytes(200_000, 3);
      for (const sizeBytes of [data.byteLength - 1, data.byteLength + 1, 10]) {
        const err = await rejection(d.put("conf/bad-size", streamOf(data), { sizeBytes }));
        expect(err).toBeInstanceOf(DigestMismatchError);
        expect(await d.exists("conf/bad-size")).toBe(false);
      }
    });

    it("a body stream erroring mid-way makes nothing visible, and keeps a previous version intact", async (d) => {
      const err = await rejection(d.put("conf/broken", failingStream(3 * 1024 * 1024)));
      expect((err as Error).message).toContain("mid-way");
      expect(await d.exists("conf/broken")).toBe(false);
      await d.put("conf/broken", streamOf("good old bytes"));
      await rejection(d.put("conf/broken", failingStream(100_000)));
      expect(new TextDecoder().decode(await readAll(await d.get("conf/broken")))).toBe("good old bytes");
      await d.delete("conf/broken");
    });

    it("10 concurrent puts of the same key and content all succeed", async (d) => {
      const data = pseudoRandomBytes(1024 * 1024 + 5, 11);
      const hex = sha256Hex(data);
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) => d.put("conf/same/key", streamOf(data, 16 * 1024 + i), { sha256: hex })),
      );
      for (const r of results) expect(r.sha256).toBe(hex);
      const back = await readAll(await d.get("conf/same/key"));
      expect(sha256Hex(back)).toBe(hex);
      expect(await keysOf(d, "")).toEqual(["conf/same/key"]);
      await d.delete("conf/same/key");
    });

    it("putFile adopts a complete file from spoolDir and removes the local file", async (d) => {
      const data = pseudoRandomBytes(500_000, 5);
      const spool = join(d.spoolDir(), `conformance-${crypto.randomUUID()}.part-test`);
      await Bun.write(spool, data);
      const info = await d.putFile("conf/spooled.bin", spool);
      expect(info.key).toBe("conf/spooled.bin");
      expect(info.sizeBytes).toBe(data.byteLength);
      expect(sha256Hex(await readAll(await d.get("conf/spooled.bin")))).toBe(sha256Hex(data));
      expect(await Bun.file(spool).exists()).toBe(false);
      await d.delete("conf/spooled.bin");
    });

    it("cleanTemp removes old spool files and keeps young ones", async (d) => {
      const spool = join(d.spoolDir(), `orphan-${crypto.randomUUID()}.part-test`);
      await Bun.write(spool, "half a download");
      expect(await d.cleanTemp(60 * 60 * 1000)).toBe(0);
      expect(await Bun.file(spool).exists()).toBe(true);
      expect(await d.cleanTemp(0)).toBeGreaterThanOrEqual(1);
      expect(await Bun.file(spool).exists()).toBe(false);
    });

    it("localPath, when the driver has one, points at the stored bytes", async (d) => {
      await d.put("conf/local", streamOf("on disk"));
      const p = d.localPath?.("conf/local");
      if (p !== undefined) expect(await Bun.file(p).text()).toBe("on disk");
      else expect(d.localPath === undefined || d.localPath("conf/local") === undefined).toBe(true);
      await d.delete("conf/local");
    });
  });
}

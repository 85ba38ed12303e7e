/**
 * The spool of an in-flight download (core/cache/spool.ts): readers fed from memory or from the file when they lag,
 * ranges, clean end only after finish, cut on failure, bounded memory for the pump.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Spool } from "../../core/cache/spool.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

const MIB = 1024 * 1024;

/** Deterministic chunk `i` of `size` bytes. */
function chunk(i: number, size: number): Uint8Array {
  const c = new Uint8Array(size);
  for (let k = 0; k < size; k += 4096) c[k] = (i * 7 + k) & 0xff;
  c[0] = i & 0xff;
  return c;
}

function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.byteLength, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}

async function bytesOf(s: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(s).arrayBuffer());
}

describe("Spool", () => {
  test("a reader keeping up, one joining late (reads the file) and a range all get the exact bytes, ending only after finish", async () => {
    const dir = await tmpDataDir("vault-spool-");
    const spool = await Spool.create(join(dir, "a.part-cache"));
    const parts: Uint8Array[] = [];
    let appended = 0;
    const early = bytesOf(spool.reader(0, undefined)!);
    // 24 MiB in 64 KiB chunks: more than the in-memory window, so a reader joining now starts in the file
    for (let i = 0; i < 384; i++) {
      const c = chunk(i, 64 * 1024);
      parts.push(c);
      appended += c.byteLength;
      const wait = spool.append(c);
      if (wait) await wait;
      if (i % 64 === 0) await Bun.sleep(0);
    }
    const late = bytesOf(spool.reader(0, undefined)!);
    const range = bytesOf(spool.reader(5 * MIB + 3, 20 * MIB)!);
    let settled = false;
    void Promise.all([early, late, range]).then(() => (settled = true));
    await spool.flush();
    await Bun.sleep(20);
    expect(settled).toBe(false); // not finished: no reader may end cleanly yet
    spool.finish();
    spool.end();
    const whole = concat(parts);
    expect(appended).toBe(24 * MIB);
    expect(spool.durable).toBe(24 * MIB);
    expect(await early).toEqual(whole);
    expect(await late).toEqual(whole);
    expect(await range).toEqual(whole.subarray(5 * MIB + 3, 20 * MIB));
    expect(await Bun.file(spool.path).bytes()).toEqual(whole);
  });

  test("append asks the pump to wait while too much is not yet written", async () => {
    const dir = await tmpDataDir("vault-spool-");
    const spool = await Spool.create(join(dir, "b.part-cache"));
    let waited = 0;
    for (let i = 0; i < 64; i++) {
      const w = spool.append(chunk(i, 256 * 1024));
      if (w) {
        waited++;
        await w;
      }
      expect(spool.bytesWritten - spool.durable).toBeLessThanOrEqual(4 * MIB + 256 * 1024);
    }
    expect(waited).toBeGreaterThan(0);
    await spool.flush();
    expect(spool.durable).toBe(16 * MIB);
    spool.finish();
    spool.end();
  });

  test("a failure cuts every reader (an error, never a clean short body)", async () => {
    const dir = await tmpDataDir("vault-spool-");
    const spool = await Spool.create(join(dir, "c.part-cache"));
    const r1 = bytesOf(spool.reader(0, undefined)!).then(
      () => "clean",
      () => "cut",
    );
    spool.append(chunk(1, 1000));
    await Bun.sleep(5);
    const r2 = bytesOf(spool.reader(0, 500)!).then(
      () => "clean",
      () => "cut",
    );
    await Bun.sleep(5);
    spool.fail(new Error("upstream went away"));
    expect(await r1).toBe("cut");
    expect(await r2).toBe("cut");
    await spool.remove();
    spool.end();
    expect(await Bun.file(spool.path).exists()).toBe(false);
  });

  test("after the flight ended and its last reader left, no new reader is handed out", async () => {
    const dir = await tmpDataDir("vault-spool-");
    const spool = await Spool.create(join(dir, "d.part-cache"));
    spool.append(chunk(2, 10));
    await spool.flush();
    spool.finish();
    const r = spool.reader(0, undefined)!;
    spool.end();
    expect((await bytesOf(r)).byteLength).toBe(10);
    await Bun.sleep(5);
    expect(spool.reader(0, undefined)).toBeNull();
  });
});

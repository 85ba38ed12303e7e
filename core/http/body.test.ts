/** core/http/body.ts: spoolBody against a real spool directory (fs driver layout, no mocks). */
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { spoolBody } from "./body.ts";
import { PART_MARKER, TEMP_OWNER } from "../storage/driver.ts";
import { tmpDataDir } from "../../test/helpers/tmp.ts";

const tooLarge = () => new Error("too large");
const truncated = (got: number, want: number) => new Error(`short ${got}/${want}`);
const streamOf = (...chunks: Uint8Array[]) =>
  new ReadableStream<Uint8Array>({
    start(c) {
      for (const x of chunks) c.enqueue(x);
      c.close();
    },
  });

describe("spoolBody", () => {
  test("writes the body to an owner-tagged spool file with the requested digests", async () => {
    const dir = await tmpDataDir("spool-body-");
    const a = new Uint8Array(70_000).fill(7);
    const b = new TextEncoder().encode("tail");
    const s = await spoolBody({ spoolDir: () => dir }, streamOf(a, b), { maxBytes: 1 << 20, tooLarge, truncated, algorithms: ["md5", "sha256"], tag: "t", declaredBytes: 70_004 });
    const all = Buffer.concat([a, b]);
    expect(s.size).toBe(70_004);
    expect(s.digests).toEqual({ md5: createHash("md5").update(all).digest("hex"), sha256: createHash("sha256").update(all).digest("hex") });
    expect(s.path.startsWith(join(dir, "/"))).toBe(true);
    expect(s.path).toContain(`${PART_MARKER}t${TEMP_OWNER}`);
    expect(Buffer.from(await Bun.file(s.path).bytes()).equals(all)).toBe(true);
  });

  test("too large (declared or streamed), shorter than declared, or a failing stream: the plugin's error and no file left", async () => {
    const dir = await tmpDataDir("spool-body-");
    const o = { maxBytes: 10, tooLarge, truncated, algorithms: ["sha256"], tag: "t" };
    await expect(spoolBody({ spoolDir: () => dir }, streamOf(new Uint8Array(5)), { ...o, declaredBytes: 11 })).rejects.toThrow("too large");
    await expect(spoolBody({ spoolDir: () => dir }, streamOf(new Uint8Array(6), new Uint8Array(6)), o)).rejects.toThrow("too large");
    await expect(spoolBody({ spoolDir: () => dir }, streamOf(new Uint8Array(4)), { ...o, declaredBytes: 8 })).rejects.toThrow("short 4/8");
    const failing = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new Uint8Array(3));
        c.error(new Error("client went away"));
      },
    });
    await expect(spoolBody({ spoolDir: () => dir }, failing, o)).rejects.toThrow("client went away");
    expect(await readdir(dir)).toEqual([]);
  });
});

/**
 * The compressions of Debian archives: gzip (node:zlib), xz (@napi-rs/lzma, loaded on first use), zstd (Bun's
 * built-in), none. Used for .deb members (specs/apt.md §5) and index files (`Packages.gz`; upstream `Packages.xz`).
 * Pure: no core imports (also loaded by the worker pool). gzip and xz run on libuv's thread pool, not the event loop.
 * xz is read only: @napi-rs/lzma 1.4 (the last release whose native binding installs on Node 20) writes xz streams of
 * stored, uncompressed blocks, so published indexes are gzip.
 */
import { gunzip, gzip } from "node:zlib";
import { promisify } from "node:util";

/** A compression named by a file suffix. */
export type Compression = "none" | "gz" | "xz" | "zst";

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

type Lzma = typeof import("@napi-rs/lzma");
let lzma: Promise<Lzma> | undefined;
/** The xz binding, imported once (a native module: only processes that meet xz data load it). */
function xzModule(): Promise<Lzma> {
  return (lzma ??= import("@napi-rs/lzma"));
}

/** The compression of a file name by suffix (`Packages.xz` → `xz`, `control.tar` → `none`); undefined for others (`.bz2`, `.lzma`). */
export function compressionOf(name: string): Compression | undefined {
  if (name.endsWith(".gz")) return "gz";
  if (name.endsWith(".xz")) return "xz";
  if (name.endsWith(".zst")) return "zst";
  if (/\.(bz2|lzma|lz4|Z)$/.test(name)) return undefined;
  return "none";
}

/** The compression of a buffer by its magic bytes (gzip 1f 8b, xz fd 37 7a 58 5a 00, zstd 28 b5 2f fd), else `none`. */
export function sniffCompression(b: Uint8Array): Compression {
  if (b[0] === 0x1f && b[1] === 0x8b) return "gz";
  if (b[0] === 0xfd && b[1] === 0x37 && b[2] === 0x7a && b[3] === 0x58 && b[4] === 0x5a && b[5] === 0x00) return "xz";
  if (b[0] === 0x28 && b[1] === 0xb5 && b[2] === 0x2f && b[3] === 0xfd) return "zst";
  return "none";
}

/**
 * Decompresses `data`. A result larger than `maxBytes` is refused (decompression bombs in uploads).
 * @throws Error on corrupt data or when the output exceeds `maxBytes`
 */
export async function decompress(data: Uint8Array, c: Compression, maxBytes = Number.MAX_SAFE_INTEGER): Promise<Uint8Array> {
  let out: Uint8Array;
  if (c === "none") out = data;
  else if (c === "gz") out = await gunzipAsync(data, { maxOutputLength: Math.min(maxBytes + 1, 2 ** 32) });
  else if (c === "zst") out = Bun.zstdDecompressSync(data);
  else out = await (await xzModule()).xz.decompress(data);
  if (out.byteLength > maxBytes) throw new Error(`decompressed data larger than ${maxBytes} bytes`);
  return out;
}

/** gzip at level 9 with a zero mtime: the same input always gives the same bytes (deterministic indexes). */
export function gzipDeterministic(data: Uint8Array): Promise<Uint8Array> {
  return gzipAsync(data, { level: 9 });
}

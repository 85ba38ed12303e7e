/**
 * Request bodies with a size cap: read into memory (manifests, upload forms) or streamed to a hashed spool file (package
 * uploads). One place for the 413 logic of every plugin.
 */
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { PART_MARKER, TEMP_OWNER, type StorageDriver } from "../storage/driver.ts";

/**
 * Reads a request body into one buffer, refusing more than `maxBytes` bytes: a `Content-Length` over the cap is refused
 * before anything is read, and a chunked body as soon as it grows past it (the rest is not read).
 * @param maxBytes largest accepted body, bytes
 * @param tooLarge makes the error thrown (the plugin's own 413 in its ecosystem's format)
 * @returns the body bytes (empty when there is no body)
 * @throws whatever `tooLarge()` returns, when the body is larger than `maxBytes`
 */
export async function readBodyLimited(req: Request, maxBytes: number, tooLarge: () => Error): Promise<Uint8Array> {
  const cl = req.headers.get("content-length");
  if (cl !== null && /^\d+$/.test(cl) && Number(cl) > maxBytes) throw tooLarge();
  if (!req.body) return new Uint8Array(0);
  const parts: Uint8Array[] = [];
  let n = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.byteLength;
    if (n > maxBytes) {
      void reader.cancel().catch(() => {});
      throw tooLarge();
    }
    parts.push(value);
  }
  return Buffer.concat(parts);
}

/** A request body written to a spool file by {@link spoolBody}. */
export interface SpooledBody {
  /** The spool file (in the driver's spool directory, named so start-up cleaning knows its owner). The caller removes or adopts it. */
  path: string;
  /** Bytes written. */
  size: number;
  /** Lower-case hex digest of the bytes per requested algorithm (`md5`, `sha1`, `sha256`, `sha512`). */
  digests: Record<string, string>;
}

/**
 * Streams an upload body into a spool file of `storage` while hashing it, in constant memory: the counterpart of
 * {@link readBodyLimited} for package files (a .deb, a conda package) that are validated from disk and then stored.
 * A `Content-Length` over the cap is refused before reading; a body growing past it, a client that stops mid-body, or
 * a body shorter than its declared length leaves no file behind.
 * @param o.maxBytes largest accepted body, bytes
 * @param o.tooLarge the plugin's own 413 error
 * @param o.truncated the plugin's own 400 error for a body shorter than `declaredBytes` (default: Content-Length)
 * @param o.algorithms digests to compute while writing (Bun.CryptoHasher names)
 * @param o.tag short ASCII tag in the spool file's name (e.g. `apt-upload`)
 * @throws `tooLarge()`, `truncated()`, or the body stream's own error (the file removed first)
 */
export async function spoolBody(
  storage: Pick<StorageDriver, "spoolDir">,
  body: ReadableStream<Uint8Array> | null,
  o: { maxBytes: number; tooLarge: () => Error; truncated: (got: number, declared: number) => Error; algorithms: readonly string[]; tag: string; declaredBytes?: number },
): Promise<SpooledBody> {
  if (o.declaredBytes !== undefined && o.declaredBytes > o.maxBytes) throw o.tooLarge();
  const dir = storage.spoolDir();
  await mkdir(dir, { recursive: true });
  const path = join(dir, `${crypto.randomUUID()}${PART_MARKER}${o.tag}${TEMP_OWNER}`);
  const hashers = o.algorithms.map((a) => [a, new Bun.CryptoHasher(a as "sha256")] as const);
  const w = Bun.file(path).writer();
  let size = 0;
  try {
    if (body)
      for await (const chunk of body) {
        size += chunk.byteLength;
        if (size > o.maxBytes) throw o.tooLarge();
        for (const [, h] of hashers) h.update(chunk);
        w.write(chunk);
      }
    await w.end();
    if (o.declaredBytes !== undefined && o.declaredBytes !== size) throw o.truncated(size, o.declaredBytes);
  } catch (e) {
    await Promise.resolve(w.end()).catch(() => {});
    await rm(path, { force: true });
    throw e;
  }
  const digests: Record<string, string> = {};
  for (const [a, h] of hashers) digests[a] = h.digest("hex");
  return { path, size, digests };
}

/** The filesystem storage driver: objects are plain files under a root directory, written atomically (temp file, fsync, rename). */
import { mkdirSync } from "node:fs";
import { copyFile, mkdir, open, opendir, readdir, rename, rmdir, stat, unlink } from "node:fs/promises";
import type { Stats } from "node:fs";
import { join, resolve, sep } from "node:path";
import {
  checkKey,
  DigestMismatchError,
  InvalidKeyError,
  NotFoundError,
  StorageError,
  type ByteRange,
  type ObjectInfo,
  type PutExpect,
  type PutResult,
  type StorageDriver,
  PART_MARKER,
  TEMP_OWNER,
  tempRemovable,
} from "./driver.ts";

/** Options of {@link createFsDriver}. */
export interface FsDriverOptions {
  /** Directory holding the objects; created when missing. Relative paths resolve against the cwd. */
  root: string;
}

/** Name of the directory under the root that holds temp and spool files; a key may not start with it. */
export const FS_TEMP_DIR = "tmp";

export { PART_MARKER } from "./driver.ts";

/** Bytes gathered before one `writev` to the temp file (fewer syscalls for small chunks). */
const WRITE_BATCH_BYTES = 512 * 1024;

/** A fresh temp file name in `dir`: `<uuid>.part-<tag>~<host>~<pid>` (the owner suffix tells cleaning whose file it is). */
export function tempName(dir: string, tag = "put"): string {
  return join(dir, `${crypto.randomUUID()}${PART_MARKER}${tag}${TEMP_OWNER}`);
}

function errCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** Expected digest as bare lowercase hex (accepts a `sha256:` prefix). */
function bareHex(sha256: string): string {
  const s = sha256.toLowerCase();
  return s.startsWith("sha256:") ? s.slice(7) : s;
}

/**
 * Streams `body` into a new local file at `path` (created exclusively; its directory must exist), hashing the
 * bytes with sha256 while writing and checking `expect` (size is checked as bytes arrive, so an oversized body
 * is cut short). On any failure — the body stream erroring, a write error, a digest or size mismatch — the body
 * is cancelled, the file is removed and the error is rethrown. Used by the fs driver's `put` and by the blob
 * store to spool a body of yet unknown digest.
 *
 * @param o.driver / o.key name the object in errors
 * @param o.fsync fsync the file before closing it (default false)
 * @returns lowercase hex sha256, size in bytes and the file's mtime (epoch ms)
 * @throws DigestMismatchError on a sha256 or size mismatch (nothing left behind); the body's own error; fs errors
 */
export async function streamToFile(
  body: ReadableStream<Uint8Array>,
  path: string,
  o: { driver: string; key: string; expect?: PutExpect; fsync?: boolean },
): Promise<{ sha256: string; sizeBytes: number; modifiedAt: number }> {
  const expectSize = o.expect?.sizeBytes;
  const reader = body.getReader();
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  try {
    fh = await open(path, "wx", 0o644);
    const hasher = new Bun.CryptoHasher("sha256");
    let size = 0;
    let batch: Uint8Array[] = [];
    let batchBytes = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (!value || value.byteLength === 0) continue;
      size += value.byteLength;
      if (expectSize !== undefined && size > expectSize) {
        throw new DigestMismatchError(o.driver, o.key, `${expectSize} bytes`, `more than ${expectSize} bytes`);
      }
      hasher.update(value);
      batch.push(value);
      batchBytes += value.byteLength;
      if (batchBytes >= WRITE_BATCH_BYTES) {
        await fh.writev(batch);
        batch = [];
        batchBytes = 0;
      }
    }
    if (batch.length > 0) await fh.writev(batch);
    if (expectSize !== undefined && size !== expectSize) {
      throw new DigestMismatchError(o.driver, o.key, `${expectSize} bytes`, `${size} bytes`);
    }
    const hex = hasher.digest("hex");
    if (o.expect?.sha256 !== undefined && bareHex(o.expect.sha256) !== hex) {
      throw new DigestMismatchError(o.driver, o.key, `sha256:${bareHex(o.expect.sha256)}`, `sha256:${hex}`);
    }
    if (o.fsync) await fh.sync();
    const st = await fh.stat();
    await fh.close();
    fh = undefined;
    return { sha256: hex, sizeBytes: size, modifiedAt: Math.floor(st.mtimeMs) };
  } catch (err) {
    await reader.cancel(err).catch(() => {});
    if (fh) await fh.close().catch(() => {});
    // Only remove what we created: a failed exclusive open (EEXIST) must not delete someone else's file.
    if (errCode(err) !== "EEXIST") await unlink(path).catch(() => {});
    throw err;
  } finally {
    try {
      reader.releaseLock();
    } catch {
      /* already released or still pending after cancel */
    }
  }
}

/** Opens `path` and fsyncs it (data and size reach the disk before the rename that publishes it). */
async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Compares keys in binary UTF-8 order, the order S3 lists in, so every driver agrees. */
function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * Creates the filesystem driver (DESIGN.md §3 "Filesystem writes").
 *
 * Layout on disk (keys map 1:1 onto paths under the root):
 * ```
 * <root>/
 *   blobs/sha256/ab/abcdef…     objects, one file per key
 *   uploads/<id>/…
 *   tmp/                        temp files of in-flight puts and spool files (`*.part-*`), same filesystem
 * ```
 * A put streams into `tmp/<uuid>.part-<pid>`, hashes and verifies, fsyncs, then renames over the final path, so
 * readers see the whole object or nothing; a crash leaves only an orphan in `tmp/` that {@link StorageDriver.cleanTemp}
 * removes. Keys whose first segment is `tmp` are refused (InvalidKeyError) because that directory is reserved.
 * A key cannot be both an object and the parent of other keys (files vs directories); such a put fails with a
 * StorageError. Deleting an object removes parent directories left empty (up to, not including, the root).
 *
 * @param o.root the store directory (default in the host: `<dataDir>/store`)
 */
export function createFsDriver(o: FsDriverOptions): StorageDriver {
  const name = "fs";
  const root = resolve(o.root);
  const tmpDir = join(root, FS_TEMP_DIR);
  mkdirSync(tmpDir, { recursive: true });

  /** Validated key → absolute path inside the root. */
  function pathOf(key: string): string {
    checkKey(name, key);
    if (key === FS_TEMP_DIR || key.startsWith(FS_TEMP_DIR + "/")) {
      throw new InvalidKeyError(name, key, `the "${FS_TEMP_DIR}/" prefix is reserved by the fs driver`);
    }
    const p = join(root, key);
    if (!p.startsWith(root + sep)) throw new InvalidKeyError(name, key, "escapes the store root");
    return p;
  }

  async function statFile(key: string, p: string): Promise<Stats> {
    let st: Stats;
    try {
      st = await stat(p);
    } catch (err) {
      const c = errCode(err);
      if (c === "ENOENT" || c === "ENOTDIR") throw new NotFoundError(name, key);
      throw err;
    }
    if (!st.isFile()) throw new NotFoundError(name, key);
    return st;
  }

  /** Renames a complete temp file over `dest`, creating parent directories; retries when a concurrent delete pruned them. */
  async function publish(key: string, from: string, dest: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await mkdir(join(dest, ".."), { recursive: true });
        await rename(from, dest);
        return;
      } catch (err) {
        const c = errCode(err);
        if (c === "ENOENT" && attempt < 5 && (await stat(from).then(() => true, () => false))) continue;
        if (c === "ENOTDIR" || c === "EEXIST" || c === "EISDIR") {
          throw new StorageError(name, key, `cannot store ${key}: a parent is an object or the key is a prefix of other keys (${c})`);
        }
        throw err;
      }
    }
  }

  /** Removes directories left empty by a delete, from `dir` up to (not including) the root. */
  async function pruneEmptyParents(dir: string): Promise<void> {
    while (dir.startsWith(root + sep) && dir !== tmpDir) {
      try {
        await rmdir(dir);
      } catch {
        return; // not empty, already gone, or busy: stop
      }
      dir = join(dir, "..");
    }
  }

  /** Recursive walk yielding files under `dir` (relative key prefix `rel`) in key order. */
  async function* walk(dir: string, rel: string, prefix: string): AsyncGenerator<ObjectInfo> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      const c = errCode(err);
      if (c === "ENOENT" || c === "ENOTDIR") return;
      throw err;
    }
    const items = entries
      .filter((e) => e.isFile() || e.isDirectory())
      .map((e) => ({ name: e.name, dir: e.isDirectory(), sortKey: e.isDirectory() ? e.name + "/" : e.name }))
      .sort((a, b) => compareKeys(a.sortKey, b.sortKey));
    for (const it of items) {
      const key = rel + it.name;
      if (rel === "" && it.name === FS_TEMP_DIR) continue;
      if (it.dir) {
        const sub = key + "/";
        // descend only into directories that can hold keys matching the prefix
        if (sub.startsWith(prefix) || prefix.startsWith(sub)) yield* walk(join(dir, it.name), sub, prefix);
        continue;
      }
      if (!key.startsWith(prefix)) continue;
      let st: Stats;
      try {
        st = await stat(join(dir, it.name));
      } catch {
        continue; // deleted while listing
      }
      if (st.isFile()) yield { key, sizeBytes: st.size, modifiedAt: Math.floor(st.mtimeMs) };
    }
  }

  const driver: StorageDriver = {
    name,

    async get(key: string, range?: ByteRange): Promise<ReadableStream<Uint8Array>> {
      const p = pathOf(key);
      const st = await statFile(key, p);
      const file = Bun.file(p);
      if (!range) return file.stream();
      if (!Number.isInteger(range.start) || !Number.isInteger(range.end) || range.start < 0 || range.end < range.start) {
        throw new RangeError(`invalid byte range ${range.start}-${range.end} for ${key}`);
      }
      const end = Math.min(range.end, st.size - 1);
      if (range.start > end) throw new RangeError(`byte range ${range.start}-${range.end} outside ${key} (${st.size} bytes)`);
      return file.slice(range.start, end + 1).stream();
    },

    async stat(key: string): Promise<ObjectInfo> {
      const st = await statFile(key, pathOf(key));
      return { key, sizeBytes: st.size, modifiedAt: Math.floor(st.mtimeMs) };
    },

    async exists(key: string): Promise<boolean> {
      const p = pathOf(key);
      try {
        return (await stat(p)).isFile();
      } catch {
        return false;
      }
    },

    async put(key: string, body: ReadableStream<Uint8Array>, expect?: PutExpect): Promise<PutResult> {
      let dest: string;
      try {
        dest = pathOf(key);
      } catch (err) {
        await body.cancel(err).catch(() => {});
        throw err;
      }
      await mkdir(tmpDir, { recursive: true });
      const tmp = tempName(tmpDir);
      const r = await streamToFile(body, tmp, { driver: name, key, expect, fsync: true });
      try {
        await publish(key, tmp, dest);
      } catch (err) {
        await unlink(tmp).catch(() => {});
        throw err;
      }
      return { key, sizeBytes: r.sizeBytes, modifiedAt: r.modifiedAt, sha256: r.sha256 };
    },

    async putFile(key: string, localPath: string): Promise<ObjectInfo> {
      const dest = pathOf(key);
      const from = resolve(localPath);
      await fsyncFile(from);
      try {
        await publish(key, from, dest);
      } catch (err) {
        if (errCode(err) !== "EXDEV") throw err;
        // The file lives on another filesystem: copy it into our temp dir, then rename atomically.
        const tmp = tempName(tmpDir);
        try {
          await copyFile(from, tmp);
          await fsyncFile(tmp);
          await publish(key, tmp, dest);
        } catch (e) {
          await unlink(tmp).catch(() => {});
          throw e;
        }
        await unlink(from).catch(() => {});
      }
      const st = await statFile(key, dest);
      return { key, sizeBytes: st.size, modifiedAt: Math.floor(st.mtimeMs) };
    },

    async delete(key: string): Promise<void> {
      const p = pathOf(key);
      try {
        await unlink(p);
      } catch (err) {
        const c = errCode(err);
        if (c === "ENOENT" || c === "ENOTDIR" || c === "EISDIR" || c === "EPERM") return;
        throw err;
      }
      await pruneEmptyParents(join(p, ".."));
    },

    list(prefix: string): AsyncIterable<ObjectInfo> {
      if (prefix.includes("\0") || prefix.includes("\\") || prefix.startsWith("/")) {
        throw new InvalidKeyError(name, prefix, "invalid list prefix");
      }
      // Start at the deepest directory the prefix names completely.
      const cut = prefix.lastIndexOf("/");
      const rel = cut < 0 ? "" : prefix.slice(0, cut + 1);
      if (rel !== "") checkKey(name, rel.slice(0, -1));
      const start = rel === "" ? root : join(root, rel);
      if (rel !== "" && (rel === FS_TEMP_DIR + "/" || rel.startsWith(FS_TEMP_DIR + "/"))) return (async function* () {})();
      return walk(start, rel, prefix);
    },

    spoolDir(): string {
      mkdirSync(tmpDir, { recursive: true });
      return tmpDir;
    },

    localPath(key: string): string {
      return pathOf(key);
    },

    /**
     * Removes `*.part-*` files under `<root>/tmp` (recursively) last modified at least `olderThanMs` ago, and
     * subdirectories of it left empty. `0` (the default) removes every temp file, whatever its age: only safe
     * before serving, as at start-up.
     * @returns how many files were removed
     */
    async cleanTemp(olderThanMs = 0): Promise<number> {
      const now = Date.now();
      let removed = 0;
      async function sweepDir(dir: string): Promise<boolean> {
        let d;
        try {
          d = await opendir(dir);
        } catch {
          return false;
        }
        let empty = true;
        for await (const e of d) {
          const p = join(dir, e.name);
          if (e.isDirectory()) {
            if ((await sweepDir(p)) && (await rmdir(p).then(() => true, () => false))) continue;
            empty = false;
          } else if (e.name.includes(PART_MARKER)) {
            const st = await stat(p).catch(() => undefined);
            if (!st) continue;
            if (tempRemovable(e.name, now - Math.floor(st.mtimeMs), olderThanMs) && (await unlink(p).then(() => true, () => false))) {
              removed++;
              continue;
            }
            empty = false;
          } else {
            empty = false;
          }
        }
        return empty;
      }
      await sweepDir(tmpDir);
      return removed;
    },
  };
  return driver;
}


/** The storage contract: what every blob-store driver (fs, s3, third-party) implements, and the content-addressed layout. */
import { hostname } from "node:os";

/**
 * Key layout inside a driver (keys use `/`, never `..`, never a leading `/`):
 *
 * ```
 * blobs/
 *   sha256/
 *     ab/
 *       abcdef0123…          one immutable blob, named by the sha256 of its bytes
 * uploads/<id>/…             resumable upload sessions (OCI, S3 multipart parts); gc'd when abandoned
 * ```
 * Local spool files (`<dataDir>/tmp/…` for fs) are not keys; they are paths returned by {@link StorageDriver.spoolDir}.
 */
export const BLOB_PREFIX = "blobs/sha256/";

/** Marker every temp/spool file name contains (`<id>.part-<tag>~<host>~<pid>`); cleaning removes only such files. */
export const PART_MARKER = ".part-";

/**
 * Owner suffix of this process's temp/spool file names: `~<hostname>~<pid>`. Several vault processes may share one
 * store (and its spool directory): cleaning uses the owner to leave a live process's files alone.
 */
/** This host's name as it appears in {@link TEMP_OWNER} (`~` and `/` replaced by `_`). */
export const THIS_HOST = hostname().replace(/[~/]/g, "_");
export const TEMP_OWNER = `~${THIS_HOST}~${process.pid}`;

/** Files of processes on other hosts (a shared file system) are removed only when at least this old, ms (1 hour). */
export const FOREIGN_TEMP_MIN_AGE_MS = 60 * 60 * 1000;

/** Whether process `pid` on this host exists (signal 0; EPERM means it exists but is not ours to signal). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Whether a temp/spool file may be removed by {@link StorageDriver.cleanTemp}.
 * - Owned by a process on this host: only when that process is gone (whatever the age), never while it runs.
 * - Owned by a process on another host: when older than `max(olderThanMs, 1 hour)`.
 * - Without an owner suffix (written by an older version): when older than `olderThanMs`.
 * @param name the file's base name (must contain {@link PART_MARKER})
 * @param ageMs how long ago it was last modified, ms
 * @param olderThanMs the caller's age threshold, ms (0 at start-up)
 */
export function tempRemovable(name: string, ageMs: number, olderThanMs: number): boolean {
  if (!name.includes(PART_MARKER)) return false;
  const m = /~([^~/]+)~(\d+)$/.exec(name);
  if (!m) return ageMs >= olderThanMs;
  if (m[1] === THIS_HOST) return Number(m[2]) !== process.pid && !pidAlive(Number(m[2]));
  return ageMs >= Math.max(olderThanMs, FOREIGN_TEMP_MIN_AGE_MS);
}

/** Builds the key of a blob from its digest (`sha256:<64 hex>` or bare hex). Throws InvalidKeyError on a malformed digest. */
export function blobKey(digest: string): string {
  const hex = digest.startsWith("sha256:") ? digest.slice(7) : digest;
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new InvalidKeyError("?", digest, "not a sha256 digest");
  return `${BLOB_PREFIX}${hex.slice(0, 2)}/${hex}`;
}

/** An inclusive byte range, as in HTTP `Range: bytes=start-end`. Both in bytes, `end` ≥ `start`. */
export interface ByteRange {
  start: number;
  end: number;
}

/** What a driver knows about one stored object. */
export interface ObjectInfo {
  key: string;
  /** Size in bytes. */
  sizeBytes: number;
  /** Last modification time, epoch ms. */
  modifiedAt: number;
}

/** Result of a put: the stored object plus the digest computed while streaming. */
export interface PutResult extends ObjectInfo {
  /** Lowercase hex sha256 of the bytes written. */
  sha256: string;
}

/** Verification a put performs while streaming; a mismatch throws {@link DigestMismatchError} and nothing becomes visible. */
export interface PutExpect {
  /** Expected lowercase hex sha256 (no `sha256:` prefix). */
  sha256?: string;
  /** Expected size in bytes. */
  sizeBytes?: number;
}

/**
 * A blob-store driver. Every driver passes `test/conformance/storage.ts` (storageDriverSuite).
 *
 * Atomicity: a `put`/`putFile` is visible all at once or not at all (fs: temp file + fsync + rename;
 * s3: multipart complete). Concurrent puts of the same key with the same bytes are safe (last rename wins, same content).
 */
export interface StorageDriver {
  /** Driver id, e.g. `"fs"` or `"s3"`. */
  readonly name: string;

  /** Opens the object for reading, optionally one byte range. Throws NotFoundError. */
  get(key: string, range?: ByteRange): Promise<ReadableStream<Uint8Array>>;

  /** Metadata of one object. Throws NotFoundError. */
  stat(key: string): Promise<ObjectInfo>;

  /** True when the key exists. Never throws for a missing key. */
  exists(key: string): Promise<boolean>;

  /**
   * Streams `body` into the store under `key`, hashing while writing. Verifies `expect` before making the
   * object visible. Throws DigestMismatchError (nothing stored) or InvalidKeyError; if `body` errors, nothing is stored.
   */
  put(key: string, body: ReadableStream<Uint8Array>, expect?: PutExpect): Promise<PutResult>;

  /**
   * Adopts a complete local file (from {@link spoolDir}) as `key`. fs: fsync + rename (the file is moved, not copied);
   * s3: uploads it (multipart above the part size) and deletes the local file. The caller has already verified the bytes.
   */
  putFile(key: string, localPath: string): Promise<ObjectInfo>;

  /** Removes the object. A missing key is not an error. */
  delete(key: string): Promise<void>;

  /** Lists objects whose key starts with `prefix`, in lexicographic key order. */
  list(prefix: string): AsyncIterable<ObjectInfo>;

  /**
   * A local directory on the same filesystem as the store (fs) or a local scratch dir (s3) where the cache
   * engine spools in-flight downloads (`*.part-*` files) that followers can tail. Created on demand.
   */
  spoolDir(): string;

  /**
   * The local filesystem path of a stored object, when the driver keeps objects on local disk (fs),
   * so hits are answered with `Bun.file` (kernel sendfile). `undefined` for remote drivers.
   */
  localPath?(key: string): string | undefined;

  /** A presigned GET URL valid for `ttlSeconds` (s3 only; used when a repository sets `redirectDownloads`). */
  presignGet?(key: string, ttlSeconds: number, response?: { contentType?: string; contentDisposition?: string }): Promise<string>;

  /**
   * Removes orphaned temp/spool files (`*.part-*`) as {@link tempRemovable} decides: files of a live vault process on
   * this host are kept (several processes may share a store), those of a dead one are removed at once, others when older
   * than `olderThanMs` (ms; files of other hosts: at least 1 hour). Called at start-up (0) and by `vault gc`.
   * @returns how many files were removed
   */
  cleanTemp(olderThanMs?: number): Promise<number>;

  /** Releases connections and handles. */
  close?(): Promise<void>;
}

/** Base class of storage errors; every one carries `{ driver, key }`. */
export class StorageError extends Error {
  constructor(
    readonly driver: string,
    readonly key: string,
    message: string,
  ) {
    super(message);
    this.name = "StorageError";
  }
}
/** The key does not exist. */
export class NotFoundError extends StorageError {
  constructor(driver: string, key: string) {
    super(driver, key, `not found: ${key}`);
    this.name = "NotFoundError";
  }
}
/** The key is not a valid storage key (absolute, `..`, NUL, backslash, empty segment, over 1024 bytes). */
export class InvalidKeyError extends StorageError {
  constructor(driver: string, key: string, why: string) {
    super(driver, key, `invalid key ${JSON.stringify(key)}: ${why}`);
    this.name = "InvalidKeyError";
  }
}
/** The bytes written did not match the expected digest or size; nothing was stored. */
export class DigestMismatchError extends StorageError {
  constructor(
    driver: string,
    key: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(driver, key, `digest mismatch for ${key}: expected ${expected}, got ${actual}`);
    this.name = "DigestMismatchError";
  }
}

/** Validates a storage key; throws InvalidKeyError. Shared by every driver so they agree on what a key is. */
export function checkKey(driver: string, key: string): string {
  if (typeof key !== "string" || key.length === 0) throw new InvalidKeyError(driver, String(key), "empty");
  if (Buffer.byteLength(key) > 1024) throw new InvalidKeyError(driver, key.slice(0, 64) + "…", "longer than 1024 bytes");
  if (key.startsWith("/")) throw new InvalidKeyError(driver, key, "absolute");
  if (/[\x00-\x1f\\]/.test(key)) throw new InvalidKeyError(driver, key, "control character or backslash");
  for (const seg of key.split("/")) {
    if (seg === "") throw new InvalidKeyError(driver, key, "empty segment");
    if (seg === "." || seg === "..") throw new InvalidKeyError(driver, key, "dot segment");
  }
  return key;
}

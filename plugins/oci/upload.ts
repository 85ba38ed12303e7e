/**
 * Blob upload sessions of a hosted repository (specs/oci.md §4): one spool file per session in the store's temp
 * area (`<spoolDir>/<id>.part-ociupload~<host>~<pid>`), appended chunk by chunk in order while an incremental sha256 runs, so the
 * closing `PUT ?digest=` needs no second pass. Abandoned sessions are collected after an idle time (and their files
 * are `*.part-*` temp files that `vault gc` / start-up cleaning remove as well).
 */
import { open, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { PART_MARKER, TEMP_OWNER, type Logger } from "../../core/plugin.ts";
import { ociError } from "./errors.ts";
import { uploadRangeHeader, type ChunkRange } from "./content-range.ts";

/** Spool file suffix: the core's temp marker and this process as owner, so storage cleaning knows whose file it is. */
const SUFFIX = `${PART_MARKER}ociupload${TEMP_OWNER}`;

/** One upload session. Sizes in bytes, times epoch ms. */
export interface UploadSession {
  /** Session id (a UUID): the last segment of the upload `Location`, and `Docker-Upload-UUID`. */
  id: string;
  /** Image (inside the repository) the session was opened for; the session answers only there. */
  image: string;
  /** The spool file. */
  path: string;
  /** Bytes received so far. */
  sizeBytes: number;
  /** Incremental sha256 of the bytes so far; null after a failure left it unknown (then the file is re-hashed). */
  hasher: Bun.CryptoHasher | null;
  /** Opened at, epoch ms. */
  createdAt: number;
  /** Last successful append, epoch ms (idle time is measured from here). */
  updatedAt: number;
  /** Serialises the requests of one session. */
  lock: Promise<unknown>;
}

/** Options of {@link UploadManager}. */
export interface UploadManagerOptions {
  /** The store's local temp directory (`ctx.storage.spoolDir()`). */
  spoolDir: () => string;
  /** Logger of the repository (collection notes). */
  log: Logger;
  /** Largest blob accepted, bytes (default unlimited). */
  maxBlobBytes?: number;
}

/** The upload sessions of one repository (in this process). */
export class UploadManager {
  private readonly sessions = new Map<string, UploadSession>();

  constructor(private readonly o: UploadManagerOptions) {}

  /** Opens a session with an empty spool file. @throws Error from the file system when the file cannot be created */
  async create(image: string): Promise<UploadSession> {
    const id = crypto.randomUUID();
    const path = join(this.o.spoolDir(), id + SUFFIX);
    const fh = await open(path, "wx");
    await fh.close();
    const now = Date.now();
    const s: UploadSession = { id, image, path, sizeBytes: 0, hasher: new Bun.CryptoHasher("sha256"), createdAt: now, updatedAt: now, lock: Promise.resolve() };
    this.sessions.set(id, s);
    return s;
  }

  /**
   * The session `id` of `image`.
   * @throws VaultError BLOB_UPLOAD_UNKNOWN (404) when unknown here, finished, collected, or opened for another image
   */
  get(id: string, image: string): UploadSession {
    const s = this.sessions.get(id);
    if (!s || s.image !== image) throw ociError("BLOB_UPLOAD_UNKNOWN", "blob upload unknown", { id });
    return s;
  }

  /** Runs `fn` with the session locked (requests of one session never interleave). */
  async locked<T>(s: UploadSession, fn: () => Promise<T>): Promise<T> {
    const prev = s.lock;
    let release!: () => void;
    s.lock = new Promise<void>((r) => (release = r));
    try {
      await prev.catch(() => {});
      if (this.sessions.get(s.id) !== s) throw ociError("BLOB_UPLOAD_UNKNOWN", "blob upload unknown", { id: s.id });
      return await fn();
    } finally {
      release();
    }
  }

  /**
   * Appends a chunk (call inside {@link locked}). With `range`, its start must equal the bytes received so far
   * (else 416 with the current `Range`), and its length must equal `contentLength` when both are given and the bytes
   * actually sent. On any failure (short body, client gone) the file and hash are rolled back to before the chunk.
   * @param contentLength the request's Content-Length, if any (bytes)
   * @returns bytes appended
   * @throws VaultError RANGE_INVALID (416), SIZE_INVALID (400), BLOB_UPLOAD_INVALID (413) over maxBlobBytes
   */
  async append(s: UploadSession, body: ReadableStream<Uint8Array> | null, range: ChunkRange | null, contentLength: number | null): Promise<number> {
    if (range && range.start !== s.sizeBytes)
      throw ociError("RANGE_INVALID", `chunk starts at ${range.start}, but ${s.sizeBytes} bytes were received`, { received: s.sizeBytes }, {
        range: uploadRangeHeader(s.sizeBytes),
        "docker-upload-uuid": s.id,
      });
    const want = range ? range.end - range.start + 1 : null;
    if (want !== null && contentLength !== null && want !== contentLength)
      throw ociError("SIZE_INVALID", "Content-Range and Content-Length disagree", { contentRange: `${range!.start}-${range!.end}`, contentLength });
    if (!body) {
      if (want !== null && want !== 0) throw ociError("SIZE_INVALID", "chunk has no body", { expected: want });
      return 0;
    }
    const before = s.sizeBytes;
    const snapshot = s.hasher ? s.hasher.copy() : null;
    const limit = want ?? contentLength;
    const max = this.o.maxBlobBytes;
    const fh = await open(s.path, "r+");
    let n = 0;
    try {
      const reader = body.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          if (!value || value.byteLength === 0) continue;
          n += value.byteLength;
          if (limit !== null && n > limit) throw ociError("SIZE_INVALID", "chunk is longer than announced", { expected: limit });
          if (max !== undefined && before + n > max) throw ociError("BLOB_UPLOAD_INVALID", `blob exceeds the limit of ${max} bytes`, { limit: max }, {}, 413);
          s.hasher?.update(value);
          await fh.write(value, 0, value.byteLength, before + n - value.byteLength);
        }
      } finally {
        reader.releaseLock();
      }
      if (limit !== null && n !== limit) throw ociError("SIZE_INVALID", `chunk is ${n} bytes, ${limit} were announced`, { expected: limit, actual: n });
    } catch (e) {
      await fh.truncate(before).catch(() => {});
      s.hasher = snapshot;
      await fh.close().catch(() => {});
      void body.cancel().catch(() => {});
      throw e;
    }
    await fh.close();
    s.sizeBytes = before + n;
    s.updatedAt = Date.now();
    return n;
  }

  /** `sha256:<hex>` of everything received (re-reads the file when the incremental hash was lost). */
  async digest(s: UploadSession): Promise<string> {
    if (s.hasher) return "sha256:" + s.hasher.copy().digest("hex");
    const h = new Bun.CryptoHasher("sha256");
    for await (const chunk of Bun.file(s.path).stream()) h.update(chunk);
    return "sha256:" + h.digest("hex");
  }

  /** Ends a session and removes its spool file (a file already moved away is fine). */
  async remove(s: UploadSession): Promise<void> {
    if (this.sessions.get(s.id) === s) this.sessions.delete(s.id);
    await rm(s.path, { force: true });
  }

  /** Forgets a session whose file was adopted elsewhere. */
  forget(s: UploadSession): void {
    if (this.sessions.get(s.id) === s) this.sessions.delete(s.id);
  }

  /** Number of open sessions. */
  get size(): number {
    return this.sessions.size;
  }

  /**
   * Removes sessions idle for more than `maxIdleMs` ms (and sessions whose spool file vanished, e.g. removed by
   * `vault gc`). `now` is epoch ms. @returns how many were removed
   */
  async collect(maxIdleMs: number, now = Date.now()): Promise<number> {
    let removed = 0;
    for (const s of [...this.sessions.values()]) {
      let gone = false;
      if (now - s.updatedAt > maxIdleMs) gone = true;
      else {
        try {
          await stat(s.path);
        } catch {
          gone = true;
        }
      }
      if (!gone) continue;
      await this.remove(s).catch((e) => this.o.log.warn("could not remove abandoned upload", { id: s.id, error: (e as Error).message }));
      removed++;
    }
    if (removed) this.o.log.info("collected abandoned blob uploads", { count: removed });
    return removed;
  }

  /** Drops every session and its file (shutdown). */
  async clear(): Promise<void> {
    for (const s of [...this.sessions.values()]) await this.remove(s).catch(() => {});
  }
}

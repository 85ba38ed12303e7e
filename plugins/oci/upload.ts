/**
 * Blob upload sessions of a hosted repository (specs/oci.md §4), shared by every vault process on one database and
 * store, and kept across restarts. A session is an `oci_uploads` row plus a file `<spoolDir>/oci-uploads/<id>` (no
 * `.part-` marker, so the core's temp cleaning never removes it; on the store's file system). A request that writes a
 * session (append, completion) first takes the row's `writer` claim with a conditional update, so two requests — in one
 * process or in several — never write one session at once; an append then advances `size_bytes` with a conditional
 * update from its value before. This process keeps an incremental sha256 of the sessions it appended to, used at
 * completion when its byte count equals the row's; otherwise the file is re-read. Idle sessions, and files left
 * without a row by a crash, are removed by {@link UploadManager.collect}.
 */
import { mkdir, open, readdir, rm, stat, truncate } from "node:fs/promises";
import { join } from "node:path";
import { and, eq, isNull, type SQL } from "drizzle-orm";
import { THIS_HOST, pidAlive, type Db, type Logger } from "../../core/plugin.ts";
import type { ociUploads } from "../../core/db/schema.ts";
import { first, tablesOf } from "../../core/db/index.ts";
import { ociError } from "./errors.ts";
import { uploadRangeHeader, type ChunkRange } from "./content-range.ts";

/** Directory of the session files inside the store's spool directory (`ctx.storage.spoolDir()`). */
export const UPLOAD_DIR = "oci-uploads";

/** A writer claim whose `updated_at` is older than this is taken over by the next request, ms. */
export const WRITER_LEASE_MS = 60_000;

/**
 * Least age of a session-directory file without a row before {@link UploadManager.collect} removes it, ms, whatever the
 * idle time: a session's row is written right after its file, but may wait for a busy database (5 s at most).
 */
export const STRAY_MIN_AGE_MS = 60_000;

/** How often a claim holder refreshes `updated_at`, ms. */
const HEARTBEAT_MS = 10_000;


/** Claims held by requests of this process (any repository), so a claim of this pid can be told from a predecessor's. */
const liveClaims = new Set<string>();

type Row = typeof ociUploads.$inferSelect;

/** One upload session, as its row says. Sizes in bytes, times epoch ms. */
export interface UploadSession {
  /** Upload id (a UUID): the last segment of the upload `Location`, and `Docker-Upload-UUID`. */
  id: string;
  /** Image (inside the repository) the session was opened for; the session answers only there. */
  image: string;
  /** Absolute path of the session file. */
  path: string;
  /** Bytes received so far (the file may hold more only while a writer is at work, or after it crashed). */
  sizeBytes: number;
  /** Opened at, epoch ms. */
  createdAt: number;
  /** Last activity (creation, append, a writer's heartbeat), epoch ms: idle time is measured from here. */
  updatedAt: number;
}

/** A session whose writer claim the current request holds (given by {@link UploadManager.locked}). */
export interface ClaimedSession extends UploadSession {
  /** The claim, `<host>~<pid>~<uuid>`, as written to the row's `writer`. */
  readonly writer: string;
  /** When the claim was last confirmed in the database (taken or refreshed), epoch ms. */
  confirmedAt: number;
  /** Set when a refresh found the claim gone (the row removed, or taken over): nothing more is written. */
  lost: boolean;
}

/** Options of {@link UploadManager}. */
export interface UploadManagerOptions {
  /** The metadata database (`ctx.metadata`), shared with the other vault processes. */
  db: Db;
  /** Repository name: the rows' `repository`. */
  repository: string;
  /** The store's local spool directory (`ctx.storage.spoolDir()`); session files go in its `oci-uploads/`. */
  spoolDir: () => string;
  /** Logger of the repository (collection and takeover notes). */
  log: Logger;
  /** Largest blob accepted, bytes (default unlimited). */
  maxBlobBytes?: number;
}

/** What this process keeps of a session: its request queue and, while in step with the row, an incremental hash. */
interface Local {
  /** sha256 of the file's first `hashedBytes` bytes; null when unknown here. */
  hasher: Bun.CryptoHasher | null;
  hashedBytes: number;
  /** Settles when this process's last queued request on the session is done. */
  tail: Promise<unknown>;
}

/**
 * Whether a row's `writer` claim may be taken over at `now` (epoch ms): not refreshed for {@link WRITER_LEASE_MS}
 * (`updatedAt`, epoch ms), or held on this host by a process that is gone (a claim of this very process counts as
 * gone unless one of its requests holds it: the pid was reused after a restart).
 */
export function writerStale(writer: string, updatedAt: number, now: number): boolean {
  if (now - updatedAt > WRITER_LEASE_MS) return true;
  const m = /^([^~]*)~(\d+)~/.exec(writer);
  if (!m || m[1] !== THIS_HOST) return false;
  const pid = Number(m[2]);
  if (pid === process.pid) return !liveClaims.has(writer);
  return !pidAlive(pid);
}

function unknownUpload(id: string) {
  return ociError("BLOB_UPLOAD_UNKNOWN", "blob upload unknown", { id });
}

/** 416 RANGE_INVALID with the session's current `Range` (specs/oci.md §4: the client then asks for the status). */
function rangeInvalid(id: string, sizeBytes: number, message: string) {
  return ociError("RANGE_INVALID", message, { received: sizeBytes }, { range: uploadRangeHeader(sizeBytes), "docker-upload-uuid": id });
}

const errCode = (e: unknown) => (e as NodeJS.ErrnoException)?.code;

/** The upload sessions of one repository: rows shared by every process, this process's hashes and request queues. */
export class UploadManager {
  private readonly local = new Map<string, Local>();
  /** The `oci_uploads` table of the database's dialect. */
  private readonly t: typeof ociUploads;

  constructor(private readonly o: UploadManagerOptions) {
    this.t = tablesOf(o.db).ociUploads;
  }

  /** Absolute directory of the session files (not created here). */
  dir(): string {
    return join(this.o.spoolDir(), UPLOAD_DIR);
  }

  private session(r: Row): UploadSession {
    return { id: r.id, image: r.image, path: join(this.o.spoolDir(), r.path), sizeBytes: r.sizeBytes, createdAt: r.createdAt, updatedAt: r.updatedAt };
  }

  private async row(id: string): Promise<Row | undefined> {
    const ociUploads = this.t;
    return first(
      await this.o.db
        .select()
        .from(ociUploads)
        .where(and(eq(ociUploads.id, id), eq(ociUploads.repository, this.o.repository))),
    );
  }

  private localOf(id: string): Local {
    let l = this.local.get(id);
    if (!l) this.local.set(id, (l = { hasher: null, hashedBytes: -1, tail: Promise.resolve() }));
    return l;
  }

  /** Runs `fn` after this process's earlier requests on session `id` (they never interleave here). */
  private async serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const l = this.localOf(id);
    const prev = l.tail;
    let release!: () => void;
    l.tail = new Promise<void>((r) => (release = r));
    try {
      await prev.catch(() => {});
      return await fn();
    } finally {
      release();
    }
  }

  /**
   * Opens a session: an empty file, then its row (a crash in between leaves a file {@link collect} removes).
   * @throws Error from the file system or the database (no file is left behind)
   */
  async create(image: string): Promise<UploadSession> {
    const id = crypto.randomUUID();
    const rel = `${UPLOAD_DIR}/${id}`;
    const path = join(this.o.spoolDir(), rel);
    for (let attempt = 0; ; attempt++) {
      await mkdir(this.dir(), { recursive: true });
      try {
        await (await open(path, "wx")).close();
        break;
      } catch (e) {
        // the core's temp cleaning (another process's start-up, `vault gc`) removes empty directories of the spool dir
        if (errCode(e) !== "ENOENT" || attempt >= 3) throw e;
      }
    }
    const now = Date.now();
    try {
      await this.o.db.insert(this.t).values({ repository: this.o.repository, id, image, path: rel, sizeBytes: 0, createdAt: now, updatedAt: now });
    } catch (e) {
      await rm(path, { force: true });
      throw e;
    }
    this.local.set(id, { hasher: new Bun.CryptoHasher("sha256"), hashedBytes: 0, tail: Promise.resolve() });
    return { id, image, path, sizeBytes: 0, createdAt: now, updatedAt: now };
  }

  /**
   * The session `id` of `image`, whichever process opened it.
   * @throws VaultError BLOB_UPLOAD_UNKNOWN (404) when unknown, finished, cancelled, collected, or opened for another image
   */
  async get(id: string, image: string): Promise<UploadSession> {
    const r = await this.row(id);
    if (!r || r.image !== image) throw unknownUpload(id);
    return this.session(r);
  }

  /**
   * Runs `fn` holding the session's writer claim: after this process's earlier requests on the session, takes the row's
   * `writer` (conditional update; a stale claim, see {@link writerStale}, is taken over) with the row as it is now, and
   * refreshes it every 10 s until `fn` settles. Bytes past `size_bytes` (left by a writer that crashed) are cut first.
   * @throws VaultError BLOB_UPLOAD_UNKNOWN (404) when the session (or its file) is gone; RANGE_INVALID (416) with the
   *   current `Range` while another request, in another process, writes the session
   */
  async locked<T>(s: UploadSession, fn: (c: ClaimedSession) => Promise<T>): Promise<T> {
    return this.serial(s.id, async () => {
      const c = await this.claim(s);
      const beat = setInterval(() => void this.refresh(c), HEARTBEAT_MS);
      beat.unref?.();
      try {
        return await fn(c);
      } finally {
        clearInterval(beat);
        await this.release(c);
      }
    });
  }

  private async claim(s: UploadSession): Promise<ClaimedSession> {
    const { db, log } = this.o;
    const ociUploads = this.t;
    const r = await this.row(s.id);
    if (!r || r.image !== s.image) throw unknownUpload(s.id);
    const now = Date.now();
    if (r.writer !== null && !writerStale(r.writer, r.updatedAt, now)) throw rangeInvalid(r.id, r.sizeBytes, "another request is writing this upload");
    const writer = `${THIS_HOST}~${process.pid}~${crypto.randomUUID()}`;
    liveClaims.add(writer);
    const same: SQL = r.writer === null ? isNull(ociUploads.writer) : eq(ociUploads.writer, r.writer);
    const got = first(
      await db
        .update(ociUploads)
        .set({ writer, updatedAt: now })
        .where(and(eq(ociUploads.id, r.id), eq(ociUploads.sizeBytes, r.sizeBytes), same))
        .returning(),
    );
    if (!got) {
      liveClaims.delete(writer);
      const cur = await this.row(s.id);
      if (!cur || cur.image !== s.image) throw unknownUpload(s.id);
      throw rangeInvalid(cur.id, cur.sizeBytes, "another request is writing this upload");
    }
    if (r.writer !== null) log.warn("took over the upload of a writer that is gone", { id: r.id, writer: r.writer, sizeBytes: r.sizeBytes });
    const c: ClaimedSession = { ...this.session(got), writer, confirmedAt: now, lost: false };
    let lost: string | null = null;
    try {
      const st = await stat(c.path);
      if (st.size > c.sizeBytes) await truncate(c.path, c.sizeBytes);
      else if (st.size < c.sizeBytes) lost = `the file holds ${st.size} bytes, the row says ${c.sizeBytes}`;
    } catch (e) {
      if (errCode(e) !== "ENOENT") {
        await this.release(c);
        throw e;
      }
      lost = "the file is gone";
    }
    if (lost) {
      await this.release(c);
      log.error("upload session file lost; session removed", { id: c.id, error: lost });
      await this.remove(c).catch(() => {});
      throw unknownUpload(c.id);
    }
    return c;
  }

  /** Refreshes a claim's `updated_at` (heartbeat); marks it lost when the row no longer names it. */
  private async refresh(c: ClaimedSession): Promise<void> {
    const ociUploads = this.t;
    try {
      const now = Date.now();
      const ok = first(
        await this.o.db
          .update(ociUploads)
          .set({ updatedAt: now })
          .where(and(eq(ociUploads.id, c.id), eq(ociUploads.writer, c.writer)))
          .returning({ id: ociUploads.id }),
      );
      if (ok) c.confirmedAt = now;
      else c.lost = true;
    } catch (e) {
      this.o.log.warn("could not refresh an upload claim", { id: c.id, error: (e as Error).message });
    }
  }

  private async release(c: ClaimedSession): Promise<void> {
    liveClaims.delete(c.writer);
    const ociUploads = this.t;
    try {
      await this.o.db
        .update(ociUploads)
        .set({ writer: null })
        .where(and(eq(ociUploads.id, c.id), eq(ociUploads.writer, c.writer)));
    } catch (e) {
      this.o.log.warn("could not release an upload claim", { id: c.id, error: (e as Error).message });
    }
  }

  /** The error for a claimed session the row no longer agrees with: gone (404) or moved on (416 with its Range). */
  private async conflict(c: ClaimedSession) {
    const cur = await this.row(c.id);
    if (!cur || cur.image !== c.image) return unknownUpload(c.id);
    return rangeInvalid(cur.id, cur.sizeBytes, "the upload was written meanwhile by another request");
  }

  /**
   * Appends a chunk at the session's size (call with the claim of {@link locked}). With `range`, its start must equal
   * the bytes received so far (else 416 with the current `Range`), and its length must equal `contentLength` when both
   * are given and the bytes actually sent. The bytes are synced, then `size_bytes` advanced by a conditional update
   * from its value before; on any failure (short body, client gone, claim lost) nothing is counted and, while the claim
   * holds, the file is cut back to before the chunk.
   * @param contentLength the request's Content-Length, if any (bytes)
   * @returns bytes appended
   * @throws VaultError RANGE_INVALID (416), SIZE_INVALID (400), BLOB_UPLOAD_INVALID (413) over maxBlobBytes,
   *   BLOB_UPLOAD_UNKNOWN (404) when the session was cancelled meanwhile
   */
  async append(c: ClaimedSession, body: ReadableStream<Uint8Array> | null, range: ChunkRange | null, contentLength: number | null): Promise<number> {
    const before = c.sizeBytes;
    if (range && range.start !== before) throw rangeInvalid(c.id, before, `chunk starts at ${range.start}, but ${before} bytes were received`);
    const want = range ? range.end - range.start + 1 : null;
    if (want !== null && contentLength !== null && want !== contentLength)
      throw ociError("SIZE_INVALID", "Content-Range and Content-Length disagree", { contentRange: `${range!.start}-${range!.end}`, contentLength });
    if (!body) {
      if (want !== null && want !== 0) throw ociError("SIZE_INVALID", "chunk has no body", { expected: want });
      return 0;
    }
    const l = this.localOf(c.id);
    const hasher = l.hasher && l.hashedBytes === before ? l.hasher.copy() : null;
    const limit = want ?? contentLength;
    const max = this.o.maxBlobBytes;
    const fh = await open(c.path, "r+");
    let n = 0;
    try {
      const reader = body.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          if (!value || value.byteLength === 0) continue;
          // never write once another request may have taken the claim over (lease half gone without a confirmation)
          if (c.lost || Date.now() - c.confirmedAt > WRITER_LEASE_MS / 2) throw await this.conflict(c);
          n += value.byteLength;
          if (limit !== null && n > limit) throw ociError("SIZE_INVALID", "chunk is longer than announced", { expected: limit });
          if (max !== undefined && before + n > max) throw ociError("BLOB_UPLOAD_INVALID", `blob exceeds the limit of ${max} bytes`, { limit: max }, {}, 413);
          hasher?.update(value);
          await fh.write(value, 0, value.byteLength, before + n - value.byteLength);
        }
      } finally {
        reader.releaseLock();
      }
      if (limit !== null && n !== limit) throw ociError("SIZE_INVALID", `chunk is ${n} bytes, ${limit} were announced`, { expected: limit, actual: n });
      await fh.datasync();
    } catch (e) {
      if (!c.lost) await fh.truncate(before).catch(() => {});
      await fh.close().catch(() => {});
      void body.cancel().catch(() => {});
      throw e;
    }
    await fh.close();
    const now = Date.now();
    const ociUploads = this.t;
    const done = first(
      await this.o.db
        .update(ociUploads)
        .set({ sizeBytes: before + n, updatedAt: now })
        .where(and(eq(ociUploads.id, c.id), eq(ociUploads.sizeBytes, before), eq(ociUploads.writer, c.writer)))
        .returning({ id: ociUploads.id }),
    );
    if (!done) {
      c.lost = true;
      throw await this.conflict(c);
    }
    c.sizeBytes = before + n;
    c.updatedAt = c.confirmedAt = now;
    l.hasher = hasher;
    l.hashedBytes = hasher ? before + n : -1;
    return n;
  }

  /**
   * `sha256:<hex>` of the session's bytes: this process's incremental hash when it covers exactly the row's size,
   * else the file's first `sizeBytes` bytes re-read.
   */
  async digest(s: UploadSession): Promise<string> {
    const l = this.local.get(s.id);
    if (l?.hasher && l.hashedBytes === s.sizeBytes) return "sha256:" + l.hasher.copy().digest("hex");
    const h = new Bun.CryptoHasher("sha256");
    for await (const chunk of Bun.file(s.path).slice(0, s.sizeBytes).stream()) h.update(chunk);
    return "sha256:" + h.digest("hex");
  }

  /** Ends a session: its row, then its file (a file already moved away is fine), and this process's hash. */
  async remove(s: UploadSession): Promise<void> {
    const ociUploads = this.t;
    await this.o.db.delete(ociUploads).where(and(eq(ociUploads.id, s.id), eq(ociUploads.repository, this.o.repository)));
    this.local.delete(s.id);
    await rm(s.path, { force: true });
  }

  /**
   * Cancels a session (DELETE), after this process's earlier requests on it; a request writing it in another process
   * then fails with BLOB_UPLOAD_UNKNOWN. @throws VaultError BLOB_UPLOAD_UNKNOWN (404) when it is gone meanwhile
   */
  async cancel(s: UploadSession): Promise<void> {
    await this.serial(s.id, async () => {
      const r = await this.row(s.id);
      if (!r || r.image !== s.image) throw unknownUpload(s.id);
      await this.remove(this.session(r));
    });
  }

  /**
   * Removes this repository's sessions idle for more than `maxIdleMs` ms, and those whose file vanished, unless a live
   * writer holds them; then files in the session directory older than `maxIdleMs` (and {@link STRAY_MIN_AGE_MS}) that
   * no row (of any repository) names (a crash between file and row, or between row and file removal). `now` is epoch ms. Safe to run in several
   * processes at once: a row is removed only if unchanged since it was read.
   * @returns how many sessions and stray files were removed
   */
  async collect(maxIdleMs: number, now = Date.now()): Promise<number> {
    const { db, log } = this.o;
    const ociUploads = this.t;
    let sessions = 0;
    for (const r of await db.select().from(ociUploads).where(eq(ociUploads.repository, this.o.repository))) {
      if (r.writer !== null && !writerStale(r.writer, r.updatedAt, now)) continue;
      const path = join(this.o.spoolDir(), r.path);
      let gone = now - r.updatedAt > maxIdleMs;
      if (!gone) gone = await stat(path).then(() => false, (e) => errCode(e) === "ENOENT");
      if (!gone) continue;
      const same: SQL = r.writer === null ? isNull(ociUploads.writer) : eq(ociUploads.writer, r.writer);
      const removed = first(
        await db
          .delete(ociUploads)
          .where(and(eq(ociUploads.id, r.id), eq(ociUploads.updatedAt, r.updatedAt), eq(ociUploads.sizeBytes, r.sizeBytes), same))
          .returning({ id: ociUploads.id }),
      );
      if (!removed) continue;
      this.local.delete(r.id);
      await rm(path, { force: true }).catch((e) => log.warn("could not remove an abandoned upload's file", { id: r.id, error: (e as Error).message }));
      sessions++;
    }
    if (sessions) log.info("collected abandoned blob uploads", { count: sessions });

    let strays = 0;
    const dir = this.dir();
    const strayAge = Math.max(maxIdleMs, STRAY_MIN_AGE_MS);
    const names = await readdir(dir).catch(() => [] as string[]);
    const known = async (id: string) => (await db.select({ id: ociUploads.id }).from(ociUploads).where(eq(ociUploads.id, id))).length > 0;
    for (const name of names) {
      if (await known(name)) continue;
      const p = join(dir, name);
      const st = await stat(p).catch(() => undefined);
      if (!st?.isFile() || now - st.mtimeMs <= strayAge) continue;
      // a row may have been written since the check above (a session opened just now has a young file, though)
      if (await known(name)) continue;
      if (await rm(p).then(() => true, () => false)) strays++;
    }
    if (strays) log.info("removed upload files without a session", { count: strays });

    // hashes of sessions finished or removed by other processes
    for (const id of [...this.local.keys()]) if (!(await this.row(id))) this.local.delete(id);
    return sessions + strays;
  }

  /** Forgets this process's hashes (shutdown). Rows and files stay: the sessions resume on any process, or after a restart. */
  close(): void {
    this.local.clear();
  }
}

/** A growing spool file of one in-flight download that many readers tail while it is written (specs/http-caching.md §6–§7). */
import { open, unlink } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";

/** Largest chunk a reader takes from the file in one read, bytes. */
const READ_CHUNK = 256 * 1024;
/**
 * A reader that pushed this many bytes without having to wait (a fast client, bytes already in memory) lets the event
 * loop run other work before pushing more, so one download cannot hold up other clients, bytes.
 */
const YIELD_EVERY = 4 * 1024 * 1024;
/** Bytes appended but not yet written to the file above which {@link Spool.append} asks the pump to wait, bytes. */
const MAX_UNWRITTEN = 4 * 1024 * 1024;
/** Bytes already in the file kept in memory for readers that lag behind the writer (then they read the file), bytes. */
const KEEP_WRITTEN = 4 * 1024 * 1024;
/**
 * The writer asks the kernel to write the file's dirty pages out (fdatasync, in the background) every this many
 * bytes, so the fsync before the file is published at the end has little left to do, bytes.
 */
const SYNC_EVERY = 32 * 1024 * 1024;

/** Bun's "direct" stream controller (write returns a promise when the client pushes back). */
interface DirectController {
  write(chunk: Uint8Array): number | Promise<number>;
  close(): void;
}

/**
 * One spool file (`<spoolDir>/<uuid>.part-cache`), created exclusively, appended to by exactly one pump and read by
 * any number of tailing readers.
 *
 * - The pump calls {@link append} with each upstream chunk (kept by reference, no copy). One `writev` at a time
 *   writes every chunk appended so far (so writes coalesce by themselves when the disk is
 *   slower than the upstream), and `append` returns a promise to wait on only when more than 4 MiB are not yet
 *   written (bounded memory). Every 32 MiB an fdatasync runs in the background.
 * - `bytesWritten` counts bytes appended (what readers may have); bytes below {@link durable} are in the file.
 * - Readers are Bun "direct" streams that push to the client, honouring its backpressure. Appended chunks stay in
 *   memory until they are in the file and every reader has passed them, or until more than 4 MiB of written bytes
 *   are kept: a reader within that window is handed the chunks themselves (the clients of a download are fed from
 *   memory while the file is written, no file read); a reader further behind reads the file in 256 KiB positional
 *   reads through one shared read handle. A slow or gone client never slows the download (it falls behind and reads
 *   the file).
 * - {@link finish} (after the caller verified length and digest, and stored the entry) lets readers end cleanly;
 *   {@link fail} cuts every reader's response at once (the cause is logged by the engine), so clients see an aborted
 *   response, never a clean short one.
 * - The read handle stays open until the spool is ended ({@link end}) and the last reader is released, so readers
 *   keep working after the file has been renamed into the blob store or unlinked.
 */
export class Spool {
  /** Bytes appended (readers may have them). */
  bytesWritten = 0;
  /** Bytes in the file. */
  durable = 0;
  finished = false;
  error: Error | undefined;
  /** Called with {@link durable} after each write to the file (e.g. to hash the written bytes on another thread). */
  onDurable: ((bytes: number) => void) | undefined;
  private wfd: FileHandle | undefined;
  private rfd: FileHandle | undefined;
  /** Appended chunks kept in memory, in order: `mem[0]` starts at `memStart`; `mem[wIdx]` on are not yet in the file. */
  private mem: Uint8Array[] = [];
  private memStart = 0;
  private wIdx = 0;
  /** Positions of the readers still reading. */
  private active = new Set<{ pos: number }>();
  private writing: Promise<void> | undefined;
  private writeError: Error | undefined;
  private syncing: Promise<void> | undefined;
  private syncedTo = 0;
  private readers = 0;
  private ended = false;
  private closed = false;
  private progress: Promise<void> | undefined;
  private wake: (() => void) | undefined;

  private constructor(readonly path: string) {}

  /** Creates the file exclusively (`wx`) and opens the shared read handle. */
  static async create(path: string): Promise<Spool> {
    const s = new Spool(path);
    s.wfd = await open(path, "wx", 0o644);
    try {
      s.rfd = await open(path, "r");
    } catch (e) {
      await s.wfd.close().catch(() => {});
      await unlink(path).catch(() => {});
      throw e;
    }
    return s;
  }

  /** Wakes readers waiting for more bytes or for the end. */
  private notify(): void {
    const w = this.wake;
    if (w) {
      this.wake = undefined;
      this.progress = undefined;
      w();
    }
  }

  /** Resolves at the next append, finish or failure. */
  private next(): Promise<void> {
    return (this.progress ??= new Promise<void>((r) => (this.wake = r)));
  }

  /**
   * Appends `chunk` (kept by reference: the caller must not modify it) and wakes the readers.
   * @returns a promise to wait on before appending more when too many bytes are not yet written, else undefined;
   *   it rejects when writing the file failed
   */
  append(chunk: Uint8Array): Promise<void> | undefined {
    if (this.writeError) return Promise.reject(this.writeError);
    this.mem.push(chunk);
    this.bytesWritten += chunk.byteLength;
    this.notify();
    if (!this.writing) this.writing = this.writeLoop();
    return this.bytesWritten - this.durable > MAX_UNWRITTEN ? this.writing : undefined;
  }

  /** Drops the chunks in the file that no reader needs any more (or that fall out of the kept window). */
  private trim(): void {
    let min = this.durable;
    for (const r of this.active) if (r.pos < min) min = r.pos;
    let drop = 0;
    let at = this.memStart;
    while (drop < this.wIdx) {
      const end = at + this.mem[drop].byteLength;
      if (end > min && this.durable - at <= KEEP_WRITTEN) break;
      at = end;
      drop++;
    }
    if (drop > 0) {
      this.mem.splice(0, drop);
      this.memStart = at;
      this.wIdx -= drop;
    }
  }

  /** Writes the unwritten chunks to the file, one writev of everything appended so far at a time, until none is left. */
  private async writeLoop(): Promise<void> {
    try {
      while (this.wIdx < this.mem.length) {
        const batch = this.mem.slice(this.wIdx);
        let pos = this.durable;
        let left = 0;
        for (const c of batch) left += c.byteLength;
        let bufs = batch;
        for (;;) {
          const { bytesWritten } = await this.wfd!.writev(bufs, pos);
          pos += bytesWritten;
          left -= bytesWritten;
          if (left <= 0) break;
          if (bytesWritten <= 0) throw new Error("spool write made no progress");
          bufs = skip(bufs, bytesWritten);
        }
        this.wIdx += batch.length;
        this.durable = pos;
        this.onDurable?.(pos);
        this.trim();
        if (pos - this.syncedTo >= SYNC_EVERY && !this.syncing) {
          this.syncedTo = pos;
          const fd = this.wfd!;
          this.syncing = fd.datasync().then(
            () => {
              this.syncing = undefined;
            },
            () => {
              this.syncing = undefined;
            },
          );
        }
      }
    } catch (e) {
      this.writeError = e instanceof Error ? e : new Error(String(e));
      throw this.writeError;
    } finally {
      this.writing = undefined;
    }
  }

  /**
   * Waits until every appended byte is in the file, then closes the write handle (the caller then verifies and
   * publishes the file).
   * @throws the write error, if writing failed
   */
  async flush(): Promise<void> {
    while (this.writing) await this.writing;
    if (this.writeError) throw this.writeError;
    if (this.wIdx < this.mem.length) {
      this.writing = this.writeLoop();
      await this.writing;
    }
    if (this.syncing) await this.syncing;
    await this.closeWriter();
  }

  /** Closes the write handle. */
  private async closeWriter(): Promise<void> {
    const w = this.wfd;
    this.wfd = undefined;
    await w?.close();
  }

  /** All bytes are written, verified (and stored): readers end cleanly at `bytesWritten`. */
  finish(): void {
    this.finished = true;
    this.notify();
  }

  /** The download failed: every reader's response is cut. */
  fail(err: Error): void {
    if (this.finished || this.error) return;
    this.error = err;
    this.notify();
  }

  /**
   * The flight is over (entry recorded or discarded): close handles once no reader needs them. Clients woken by the
   * flight's answer in this same turn still get their reader: the check runs on the next macrotask.
   */
  end(): void {
    this.ended = true;
    setImmediate(() => void this.maybeClose());
  }

  /** Removes the spool file (after a failure, or when the response must not be stored). */
  async remove(): Promise<void> {
    while (this.writing) await this.writing.catch(() => {});
    if (this.syncing) await this.syncing;
    await this.closeWriter().catch(() => {});
    await unlink(this.path).catch(() => {});
  }

  private async maybeClose(): Promise<void> {
    if (this.closed || !this.ended || this.readers > 0) return;
    this.closed = true;
    this.mem = [];
    this.wIdx = 0;
    this.memStart = this.durable;
    while (this.writing) await this.writing.catch(() => {});
    if (this.syncing) await this.syncing;
    await this.closeWriter().catch(() => {});
    await this.rfd?.close().catch(() => {});
  }

  /** The appended bytes at `pos` (≥ `memStart`) up to `limit`, from one chunk in memory (no copy). */
  private fromMemory(pos: number, limit: number): Uint8Array | undefined {
    let at = this.memStart;
    for (const c of this.mem) {
      const end = at + c.byteLength;
      if (pos < end) {
        const a = pos - at;
        const b = Math.min(c.byteLength, limit - at);
        return a === 0 && b === c.byteLength ? c : c.subarray(a, b);
      }
      at = end;
    }
    return undefined;
  }

  /**
   * A reader of bytes `[start, end)` (`end` undefined: to the end of the download), as a Bun direct stream. It ends
   * cleanly only after {@link finish} (a range too), and is cut when the download fails. Returns null when the spool
   * is already closed (the caller then serves the stored entry).
   * @param onEnd called once with the number of bytes delivered when the reader ends, fails or is cancelled
   */
  reader(start: number, end: number | undefined, onEnd?: (bytes: number) => void): ReadableStream<Uint8Array> | null {
    if (this.closed) return null;
    this.readers++;
    const me = { pos: start };
    this.active.add(me);
    let released = false;
    let cancelled = false;
    const release = () => {
      if (released) return;
      released = true;
      this.readers--;
      this.active.delete(me);
      onEnd?.(me.pos - start);
      this.trim();
      void this.maybeClose();
    };
    const limit = end ?? Infinity;
    let unyielded = 0;
    /** This reader's file-read buffer: reused, since Bun copies what a direct stream writes (no garbage per read). */
    let buf: Buffer | undefined;
    const pull = async (ctrl: DirectController): Promise<void> => {
      try {
        for (;;) {
          if (cancelled) return;
          if (this.error) throw this.error;
          const pos = me.pos;
          const avail = Math.min(this.bytesWritten, limit);
          if (pos < avail) {
            let chunk: Uint8Array | undefined;
            if (pos >= this.memStart) {
              chunk = this.fromMemory(pos, avail);
              if (chunk === undefined) throw new Error("spool bytes missing from memory");
            } else {
              const n = Math.min(this.memStart - pos, avail - pos, READ_CHUNK);
              buf ??= Buffer.allocUnsafe(READ_CHUNK);
              const got = (await this.rfd!.read(buf, 0, n, pos)).bytesRead;
              if (got <= 0) throw new Error("spool file shorter than announced");
              if (this.error || cancelled) continue;
              chunk = buf.subarray(0, got);
            }
            me.pos = pos + chunk.byteLength;
            const w = ctrl.write(chunk);
            if (w instanceof Promise) {
              await w;
              unyielded = 0;
            } else if ((unyielded += chunk.byteLength) >= YIELD_EVERY) {
              unyielded = 0;
              await new Promise<void>((r) => setImmediate(r));
            }
            if (this.memStart < this.durable && me.pos > this.memStart) this.trim();
            continue;
          }
          // A response ends cleanly only once the whole download is verified and stored: bytes of a file that then
          // fails its digest check must not reach a client as a complete response (a range too).
          if (this.finished) {
            if (end !== undefined && me.pos < end) throw new Error("download ended before the requested range");
            release();
            ctrl.close();
            return;
          }
          await this.next();
        }
      } catch {
        release();
        // Rejected with no reason on purpose: Bun.serve prints a stream's error to stderr (a multi-line dump that
        // would break JSON-line logs); the engine logs a failed download. The client sees the connection cut.
        throw undefined;
      }
    };
    return new ReadableStream<Uint8Array>({
      type: "direct",
      pull: pull as never,
      cancel: () => {
        cancelled = true;
        release();
      },
    } as unknown as UnderlyingDefaultSource<Uint8Array>);
  }
}

/** `bufs` without its first `n` bytes. */
function skip(bufs: Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const b of bufs) {
    if (n >= b.byteLength) {
      n -= b.byteLength;
      continue;
    }
    out.push(n > 0 ? b.subarray(n) : b);
    n = 0;
  }
  return out;
}

/** A growing spool file of one in-flight download that many readers tail while it is written (specs/http-caching.md §6–§7). */
import { open, unlink } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";

/** Largest chunk a reader takes from the file in one read, bytes. */
const READ_CHUNK = 256 * 1024;

/** What the writer announces after each append: the chunk and where it starts. */
interface Progress {
  offset: number;
  chunk: Uint8Array;
}

/**
 * One spool file (`<spoolDir>/<uuid>.part-cache`), created exclusively, written by exactly one pump and read by
 * any number of tailing readers.
 *
 * - The writer appends with {@link write}; `bytesWritten` counts bytes already in the file (visible to readers).
 * - Each append resolves the current progress promise with the chunk, so a reader waiting at exactly that offset
 *   takes the chunk directly (it is fed by the pump, no file read); a reader further behind reads the file with
 *   positional reads through one shared read handle. Readers pull: nothing is queued beyond what a client asks for
 *   (backpressure), and a slow or gone client never slows the download nor buffers memory.
 * - {@link finish} (after the caller verified length and digest) lets readers end cleanly; {@link fail} errors every
 *   reader at once (with no reason: the cause is logged by the engine), so clients see an aborted response, never a
 *   clean short one.
 * - The read handle stays open until the spool is ended ({@link end}) and the last reader is released, so readers
 *   keep working after the file has been renamed into the blob store or unlinked.
 */
export class Spool {
  bytesWritten = 0;
  finished = false;
  error: Error | undefined;
  private wfd: FileHandle | undefined;
  private rfd: FileHandle | undefined;
  private readers = 0;
  private ended = false;
  private closed = false;
  private progress!: Promise<Progress | null>;
  private resolveProgress!: (p: Progress | null) => void;

  private constructor(readonly path: string) {
    this.arm();
  }

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

  private arm(): void {
    this.progress = new Promise((r) => (this.resolveProgress = r));
  }

  private announce(p: Progress | null): void {
    const resolve = this.resolveProgress;
    this.arm();
    resolve(p);
  }

  /** Appends `chunk` (all of it) and wakes the readers. */
  async write(chunk: Uint8Array): Promise<void> {
    const offset = this.bytesWritten;
    let done = 0;
    while (done < chunk.byteLength) {
      const { bytesWritten } = await this.wfd!.write(chunk, done, chunk.byteLength - done, offset + done);
      done += bytesWritten;
    }
    this.bytesWritten = offset + done;
    this.announce({ offset, chunk });
  }

  /** Closes the write handle (the caller then publishes the file). */
  async closeWriter(): Promise<void> {
    const w = this.wfd;
    this.wfd = undefined;
    await w?.close();
  }

  /** All bytes are written and verified: readers end cleanly at `bytesWritten`. */
  finish(): void {
    this.finished = true;
    this.announce(null);
  }

  /** The download failed: every reader errors with `err` (abnormal end of the client response). */
  fail(err: Error): void {
    if (this.finished || this.error) return;
    this.error = err;
    this.announce(null);
  }

  /** The flight is over (entry recorded or discarded): close handles once no reader needs them. */
  end(): void {
    this.ended = true;
    void this.maybeClose();
  }

  /** Removes the spool file (after a failure, or when the response must not be stored). */
  async remove(): Promise<void> {
    await this.closeWriter().catch(() => {});
    await unlink(this.path).catch(() => {});
  }

  private async maybeClose(): Promise<void> {
    if (this.closed || !this.ended || this.readers > 0) return;
    this.closed = true;
    await this.closeWriter().catch(() => {});
    await this.rfd?.close().catch(() => {});
  }

  /**
   * A reader of bytes `[start, end)` (`end` undefined: to the end of the download) as a pull-based stream. It ends
   * cleanly only after {@link finish} (a range too), and errors when the download fails. Returns null when the spool is already closed (the caller then serves the stored entry).
   * @param onEnd called once with the number of bytes delivered when the reader ends, errors or is cancelled
   */
  reader(start: number, end: number | undefined, onEnd?: (bytes: number) => void): ReadableStream<Uint8Array> | null {
    if (this.closed) return null;
    this.readers++;
    let pos = start;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.readers--;
      onEnd?.(pos - start);
      void this.maybeClose();
    };
    const limit = end ?? Infinity;
    return new ReadableStream<Uint8Array>(
      {
        pull: async (ctrl) => {
          for (;;) {
            if (this.error) {
              release();
              // No reason on purpose: Bun.serve prints a stream's error reason to stderr (a multi-line dump that would
              // break JSON-line logs); the engine logs the cause. The client sees the connection cut either way.
              ctrl.error(undefined);
              return;
            }
            if (pos >= limit) {
              // A range ends cleanly only once the whole download is verified: bytes of a file that then fails its
              // digest check must not reach a client as a complete response.
              if (!this.finished) {
                await this.progress;
                continue;
              }
              release();
              ctrl.close();
              return;
            }
            const avail = Math.min(this.bytesWritten, limit);
            if (pos < avail) {
              const n = Math.min(avail - pos, READ_CHUNK);
              const buf = Buffer.allocUnsafe(n);
              let got = 0;
              try {
                got = (await this.rfd!.read(buf, 0, n, pos)).bytesRead;
              } catch (e) {
                release();
                ctrl.error(e);
                return;
              }
              if (got <= 0) {
                release();
                ctrl.error(new Error("spool file shorter than announced"));
                return;
              }
              if (this.error) continue;
              pos += got;
              ctrl.enqueue(got === n ? buf : buf.subarray(0, got));
              return;
            }
            if (this.finished) {
              release();
              if (end !== undefined && pos < end) ctrl.error(new Error("download ended before the requested range"));
              else ctrl.close();
              return;
            }
            const p = await this.progress;
            if (p && p.offset === pos && !this.error) {
              const take = Math.min(p.chunk.byteLength, limit - pos);
              pos += take;
              ctrl.enqueue(take === p.chunk.byteLength ? p.chunk : p.chunk.subarray(0, take));
              return;
            }
          }
        },
        cancel: () => release(),
      },
      { highWaterMark: 0 },
    );
  }
}

/**
 * The tail-hash worker thread (core/cache/tail-hash.ts owns it): sha256 of files that are still being written, read
 * back from the page cache as the writer reports progress, so a large download is hashed on another core while the
 * event loop only receives, writes and serves bytes.
 *
 * Messages in (one job per `id`, processed in order):
 * - `{ op: "open", id, path }` opens the file (the job keeps its descriptor, so a rename or unlink of the path later
 *   does not matter);
 * - `{ op: "progress", id, bytes }`: the first `bytes` bytes are in the file; they are read and hashed now;
 * - `{ op: "end", id, bytes }`: the file is complete at `bytes` bytes: hashes the rest, answers
 *   `{ id, hex, bytes }` (lowercase hex sha256, bytes hashed) or `{ id, error, code? }`, and closes the job;
 * - `{ op: "abort", id }` closes the job without an answer.
 * A job that failed (read error, file shorter than announced) answers its error at `end`.
 * Workers never import core/.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { parentPort } from "node:worker_threads";

/** Bytes read per `readSync`: 1 MiB (one reused buffer for every job of this thread). */
const READ_BYTES = 1024 * 1024;

/** A message to the tail-hash worker. */
export type TailHashIn =
  | { op: "open"; id: number; path: string }
  | { op: "progress"; id: number; bytes: number }
  | { op: "end"; id: number; bytes: number }
  | { op: "abort"; id: number };

/** The worker's answer to `end`. */
export type TailHashOut = { id: number; hex: string; bytes: number } | { id: number; error: string; code?: string };

interface Job {
  fd: number;
  pos: number;
  hasher: Bun.CryptoHasher;
  error?: { error: string; code?: string };
}

const jobs = new Map<number, Job>();
const buf = Buffer.allocUnsafe(READ_BYTES);

/** Hashes the job's file from its position up to `bytes`; records the first failure on the job. */
function advance(job: Job, bytes: number): void {
  while (!job.error && job.pos < bytes) {
    const n = readSync(job.fd, buf, 0, Math.min(READ_BYTES, bytes - job.pos), job.pos);
    if (n <= 0) {
      job.error = { error: `file ended at ${job.pos} bytes, ${bytes} were announced` };
      return;
    }
    job.hasher.update(buf.subarray(0, n));
    job.pos += n;
  }
}

function close(id: number): void {
  const job = jobs.get(id);
  if (!job) return;
  jobs.delete(id);
  if (job.fd >= 0) closeSync(job.fd);
}

function handle(m: TailHashIn): TailHashOut | undefined {
  if (m.op === "open") {
    const job: Job = { fd: -1, pos: 0, hasher: new Bun.CryptoHasher("sha256") };
    try {
      job.fd = openSync(m.path, "r");
    } catch (e) {
      job.error = { error: (e as Error).message, code: (e as NodeJS.ErrnoException).code };
    }
    jobs.set(m.id, job);
    return undefined;
  }
  const job = jobs.get(m.id);
  if (m.op === "abort") {
    close(m.id);
    return undefined;
  }
  if (!job) return m.op === "end" ? { id: m.id, error: "unknown tail-hash job" } : undefined;
  try {
    advance(job, m.bytes);
  } catch (e) {
    job.error ??= { error: (e as Error).message, code: (e as NodeJS.ErrnoException).code };
  }
  if (m.op !== "end") return undefined;
  close(m.id);
  return job.error ? { id: m.id, ...job.error } : { id: m.id, hex: job.hasher.digest("hex"), bytes: job.pos };
}

parentPort?.on("message", (m: TailHashIn) => {
  const out = handle(m);
  if (out) parentPort!.postMessage(out);
});

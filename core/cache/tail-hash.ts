/**
 * sha256 of a spool file while it is written, computed on one worker thread (workers/tail-hash.ts) that reads the
 * written bytes back from the page cache. A large download then costs the event loop only receiving, writing and
 * serving its bytes; hashing (about as much CPU per byte as all of those together) runs on another core.
 *
 * Not a piscina task on purpose: a hash state lives in one thread for the whole download (minutes, for a slow
 * upstream), and a pool task held that long would block the pool's request/response work. One thread serves every
 * download of the process; it is started at the first job and lets the process exit (unref'd).
 */
import { Worker } from "node:worker_threads";
import type { TailHashIn, TailHashOut } from "../../workers/tail-hash.ts";
import { metrics } from "../metrics.ts";
import { threadEntry } from "../threads.ts";

/** The worker entry (scripts/build.ts lists it among the binary's entrypoints). */
const ENTRY: URL = threadEntry("workers/tail-hash.ts");

/** One file being hashed: report progress, then ask for the digest. */
export interface TailHash {
  /** The first `bytes` bytes are in the file (durable for readers of the same file): hash them. Cheap; call often. */
  progress(bytes: number): void;
  /**
   * The file is complete at `bytes` bytes.
   * @returns lowercase hex sha256 of those bytes
   * @throws Error when the file could not be read (the message names why), or the worker thread died
   */
  end(bytes: number): Promise<string>;
  /** Drops the job (the download failed); `end` must not be called after. */
  abort(): void;
}

let worker: Worker | undefined;
let nextId = 1;
const waiting = new Map<number, { ok: (hex: string) => void; fail: (e: Error) => void }>();

function theWorker(): Worker {
  if (worker) return worker;
  const w = new Worker(ENTRY);
  w.unref();
  w.on("message", (m: TailHashOut) => {
    const p = waiting.get(m.id);
    if (!p) return;
    waiting.delete(m.id);
    if ("hex" in m) {
      metrics.tailHashed.inc({}, m.bytes);
      p.ok(m.hex);
    }
    else p.fail(Object.assign(new Error(`hashing the spool file failed: ${m.error}`), m.code ? { code: m.code } : {}));
  });
  const died = (e: Error) => {
    if (worker !== w) return;
    worker = undefined;
    for (const p of waiting.values()) p.fail(e);
    waiting.clear();
  };
  w.on("error", died);
  w.on("exit", (code) => died(new Error(`tail-hash worker exited (code ${code})`)));
  return (worker = w);
}

/**
 * Starts hashing `path`, a file that exists and is being appended to.
 * @param path absolute path of the file (opened by the worker at once; later renames or unlinks do not matter)
 */
export function tailHash(path: string): TailHash {
  const w = theWorker();
  const id = nextId++;
  const post = (m: TailHashIn) => w.postMessage(m);
  post({ op: "open", id, path });
  let reported = 0;
  let over = false;
  return {
    progress(bytes) {
      if (over || bytes <= reported) return;
      reported = bytes;
      post({ op: "progress", id, bytes });
    },
    end(bytes) {
      over = true;
      return new Promise<string>((ok, fail) => {
        if (worker !== w) return fail(new Error("tail-hash worker exited"));
        // The worker holds the event loop open only while a digest is awaited.
        w.ref();
        const settle = () => {
          if (waiting.size === 0) w.unref();
        };
        waiting.set(id, {
          ok: (hex) => {
            settle();
            ok(hex);
          },
          fail: (e) => {
            settle();
            fail(e);
          },
        });
        post({ op: "end", id, bytes });
      });
    },
    abort() {
      if (over) return;
      over = true;
      if (worker === w) post({ op: "abort", id });
    },
  };
}

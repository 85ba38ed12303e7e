/**
 * The worker pool (DESIGN.md §5): piscina threads running the task functions exported by workers/index.ts, so
 * the event loop never hashes a big file or parses a multi-megabyte document itself.
 *
 * ## Bun
 * piscina 5 runs unchanged on Bun's `node:worker_threads` (TypeScript worker files load directly; transfers,
 * `AbortSignal`, `close()` behave as on Node). Two Bun differences are handled here:
 * - structured clone drops `code` from Error objects, so workers/transfer.ts flattens a thrown error and
 *   {@link createPool}'s `run` rebuilds it (an ENOENT stays `code: "ENOENT"`);
 * - aborting a running task terminates its thread (piscina's behaviour; Bun stops even a busy loop) and piscina
 *   starts a replacement.
 *
 * ## Single binary (`bun build --compile`)
 * The worker entry comes from core/threads.ts `threadEntry` (beside the binary's root when compiled).
 * scripts/build.ts (`npm run build`) builds the binary with the repository as `root`, the worker entry and piscina's
 * own worker bootstrap as extra entrypoints, and {@link bunCompilePlugin}.
 * The plugin fixes two things piscina needs inside the binary (verified with node_modules removed): Bun inlines
 * piscina's `__dirname` as the build machine's path, so the bootstrap path is pointed at its embedded copy; and
 * each entrypoint gets its own copy of piscina, so the module-private `kMovable` symbol becomes a registered one
 * (`Symbol.for`) and `move()` in a worker is still recognised by piscina's bootstrap.
 */
import { availableParallelism } from "node:os";
import type { Piscina } from "piscina";
import type { BunPlugin } from "bun";
import type { TaskPool, TaskOptions } from "./plugin.ts";
import type { PoolConfig } from "./config/types.ts";
import { metrics } from "./metrics.ts";
import { threadEntry } from "./threads.ts";
import type { TaskName, TaskInput, TaskOutput } from "../workers/tasks.ts";
import { TASK_ERROR, type FlatTaskError } from "../workers/transfer.ts";

export type { TaskName, TaskInput, TaskOutput } from "../workers/tasks.ts";

/** Default size (bytes) above which a document is handed to the pool: 1 MiB. */
export const DEFAULT_OFFLOAD_THRESHOLD_BYTES = 1024 * 1024;


/** URL of the worker entry (workers/index.ts), from source or inside a compiled binary. */
export const WORKER_ENTRY: URL = threadEntry("workers/index.ts");

/**
 * Whether an input of `sizeBytes` should run in the pool (true) or inline on the event loop (false).
 * @param sizeBytes size of the document or file, bytes
 * @param cfg `pool.offloadThresholdBytes` (default 1 MiB); strictly larger inputs are offloaded
 */
export function shouldOffload(sizeBytes: number, cfg?: Pick<PoolConfig, "offloadThresholdBytes">): boolean {
  return sizeBytes > (cfg?.offloadThresholdBytes ?? DEFAULT_OFFLOAD_THRESHOLD_BYTES);
}

/** The vault's pool: the plugin-facing TaskPool plus lifecycle for the host. */
export interface VaultPool extends TaskPool {
  /**
   * Runs task `name` with `input`: in the pool when `sizeBytes` is over the offload threshold, else inline with
   * the same function (workers/tasks.ts). `transfer` is honoured only when offloaded.
   */
  runSized<N extends TaskName>(name: N, input: TaskInput<N>, sizeBytes: number, opts?: TaskOptions): Promise<TaskOutput<N>>;
  /** Waits for queued and running tasks (at most 10 s, then terminates threads) and stops the threads. Idempotent. */
  close(): Promise<void>;
}

/** Extra knobs of {@link createPool}, beyond the config file's. */
export interface PoolOptions {
  /** Threads kept alive when idle (default 0: the first task starts a thread, ~tens of ms). */
  minThreads?: number;
  /** Milliseconds an idle thread above `minThreads` lives (default 30 000). */
  idleTimeoutMs?: number;
}

function reviveError(e: unknown): unknown {
  if (e && typeof e === "object" && (e as FlatTaskError)[TASK_ERROR] === true) {
    const f = e as FlatTaskError;
    const Ctor = ({ TypeError, RangeError, SyntaxError } as Record<string, ErrorConstructor>)[f.name] ?? Error;
    const err = new Ctor(f.message) as Error & { code?: string };
    if (Ctor === Error && f.name !== "Error") err.name = f.name;
    if (f.code !== undefined) err.code = f.code;
    if (f.stack) err.stack = f.stack;
    return err;
  }
  return e;
}

/**
 * The task functions (workers/tasks.ts) and piscina are loaded on first use: a vault whose plugins never offload
 * (or never run a task at all) does not pay for their modules (several MiB of memory). Static `require` specifiers,
 * so `bun build --compile` still embeds them.
 */
let taskModule: typeof import("../workers/tasks.ts") | undefined;
function loadTasks(): typeof import("../workers/tasks.ts")["tasks"] {
  return (taskModule ??= require("../workers/tasks.ts") as typeof import("../workers/tasks.ts")).tasks;
}
let taskNames: ReadonlySet<string> | undefined;
function knownTasks(): ReadonlySet<string> {
  return (taskNames ??= new Set(Object.keys(loadTasks())));
}

/**
 * Creates the worker pool over piscina.
 * @param cfg `threads` (default max(1, cores - 1)), `offloadThresholdBytes` (default 1 MiB, used by `runSized`)
 * @returns a {@link VaultPool}; `run(task, input, { signal, transfer })` rejects with:
 *   TypeError for an unknown task name; `AbortError` when `signal` aborts (a queued task is dropped, a running
 *   one's thread is terminated and replaced); the task's own error with `name`, `message` and `code` kept;
 *   Error when the pool is closed.
 * @throws RangeError when `threads` is not a positive integer
 */
export function createPool(cfg: PoolConfig = {}, o: PoolOptions = {}): VaultPool {
  const threads = cfg.threads ?? Math.max(1, availableParallelism() - 1);
  if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`pool.threads must be a positive integer (got ${threads})`);
  let lib: typeof import("piscina") | undefined;
  let piscina: Piscina | undefined;
  /** piscina and its pool, made at the first offloaded task (threads start then too: minThreads defaults to 0). */
  const pool = (): Piscina => {
    lib ??= require("piscina") as typeof import("piscina");
    return (piscina ??= new lib.Piscina({
      filename: WORKER_ENTRY.href,
      minThreads: Math.min(o.minThreads ?? 0, threads),
      maxThreads: threads,
      idleTimeout: o.idleTimeoutMs ?? 30_000,
      closeTimeout: 10_000,
    }));
  };
  if ((o.minThreads ?? 0) > 0) pool();
  let inFlight = 0;
  let closing: Promise<void> | undefined;

  const run = async <I, O>(task: string, input: I, opts: TaskOptions = {}): Promise<O> => {
    if (closing) throw new Error("worker pool is closed");
    const names = knownTasks();
    if (!names.has(task)) throw new TypeError(`unknown pool task "${task}" (known: ${[...names].join(", ")})`);
    opts.signal?.throwIfAborted();
    const p = pool();
    const payload = opts.transfer?.length ? lib!.move({ [lib!.transferableSymbol]: opts.transfer, [lib!.valueSymbol]: input } as never) : input;
    inFlight++;
    try {
      const out = (await p.run(payload, { name: task, signal: opts.signal ?? null })) as O;
      metrics.poolTasks.inc({ task, outcome: "ok" });
      return out;
    } catch (e) {
      metrics.poolTasks.inc({ task, outcome: "error" });
      throw reviveError(e);
    } finally {
      inFlight--;
    }
  };

  return {
    run,
    offloads: (sizeBytes) => shouldOffload(sizeBytes, cfg),
    async runSized<N extends TaskName>(name: N, input: TaskInput<N>, sizeBytes: number, opts: TaskOptions = {}): Promise<TaskOutput<N>> {
      if (shouldOffload(sizeBytes, cfg)) return run<TaskInput<N>, TaskOutput<N>>(name, input, opts);
      opts.signal?.throwIfAborted();
      return (await (loadTasks()[name] as (i: TaskInput<N>) => unknown)(input)) as TaskOutput<N>;
    },
    stats() {
      const queued = closing || !piscina ? 0 : piscina.queueSize;
      const running = Math.min(threads, Math.max(0, inFlight - queued));
      return { queued, running, utilization: running / threads, threads };
    },
    close() {
      return (closing ??= piscina ? piscina.close() : Promise.resolve());
    },
  };
}

/**
 * Sets the pool gauges (`vault_pool_queue_length`, `vault_pool_utilization`) from `pool.stats()`.
 * The host calls it right before `renderMetrics()` on each scrape.
 */
export function updatePoolMetrics(pool: TaskPool): void {
  const s = pool.stats();
  metrics.poolQueue.set({}, s.queued);
  metrics.poolUtilization.set({}, s.utilization);
}

/**
 * Bun.build plugin for `--compile` builds that embed the pool (see the file comment): points piscina's worker
 * bootstrap at its embedded copy under `/$bunfs/root/` and makes its `kMovable` symbol a registered one.
 * Build-time only. Assumes `root` is the repository (so the bootstrap is `node_modules/piscina/dist/worker.js`).
 */
export function bunCompilePlugin(): BunPlugin {
  return {
    name: "vault-piscina-compile",
    setup(build) {
      build.onLoad({ filter: /[\\/]piscina[\\/]dist[\\/](index|symbols)\.js$/ }, async (a) => {
        const src = await Bun.file(a.path).text();
        const out = src
          .replace("(0, node_path_1.resolve)(__dirname, 'worker.js')", JSON.stringify("/$bunfs/root/node_modules/piscina/dist/worker.js"))
          .replace("Symbol('Piscina.kMovable')", "Symbol.for('Piscina.kMovable')");
        if (a.path.endsWith("index.js") && out === src) throw new Error("bunCompilePlugin: piscina's worker path expression not found (piscina changed?)");
        return { contents: out, loader: "js" };
      });
    },
  };
}

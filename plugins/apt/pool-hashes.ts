/**
 * What the indexes a proxy served say about pool files (specs/apt.md §7: pool files are verified against the
 * Packages/Sources hash). Each Packages or Sources index that passes through the proxy is parsed once (task.ts
 * `aptIndex`, in the worker pool when big) right after it is served; a pool request waits for parses still running.
 * The paths an index adds or changes are stored as `-/pool-hashes/<index sha256>` (TSV, see task.ts) and read back
 * after a restart.
 */
import type { CacheRequest, PluginContext } from "../../core/plugin.ts";
import type { Compression } from "./compress.ts";
import { aptIndex, type PoolHashesInput, type PoolHashesOutput } from "./task.ts";

/** A pool file's expected digest and size. */
export interface PoolFile {
  sha256: string;
  /** bytes */
  size: number;
}

/** Prefix of the stored deltas (never requested by clients: request paths are `dists/…` and `pool/…`). */
export const POOL_HASHES_PREFIX = "-/pool-hashes/";

/** Most paths remembered in memory per repository (oldest dropped first). */
const MAX_PATHS = 2_000_000;

interface Pending {
  spec: CacheRequest;
  kind: "packages" | "sources";
  compression: Compression;
}

/** The pool-file table of one proxy repository. */
export class PoolHashes {
  private known = new Map<string, PoolFile>();
  private pending = new Map<string, Pending>();
  /** Index blobs already merged (`sha256:<hex>`). */
  private merged = new Set<string>();
  private running: Promise<void> | undefined;
  private loaded: Promise<void> | undefined;

  constructor(private ctx: PluginContext) {}

  /**
   * Queues an index for parsing (its cache spec: fetched again through the cache, which answers from the stored entry
   * or joins the running download). Starts parsing in the background.
   */
  add(spec: CacheRequest, kind: "packages" | "sources", compression: Compression): void {
    if (this.pending.has(spec.key)) return;
    this.pending.set(spec.key, { spec, kind, compression });
    this.kick();
  }

  /** The expected digest of a pool file (path relative to the archive root), after every queued index is parsed. */
  async lookup(path: string): Promise<PoolFile | undefined> {
    await (this.loaded ??= this.load());
    for (;;) {
      if (this.running) await this.running;
      else if (this.pending.size) this.kick();
      else break;
    }
    return this.known.get(path);
  }

  private kick(): void {
    if (this.running) return;
    this.running = this.drain().finally(() => (this.running = undefined));
  }

  private async drain(): Promise<void> {
    await (this.loaded ??= this.load());
    while (this.pending.size) {
      const [key, p] = this.pending.entries().next().value!;
      this.pending.delete(key);
      try {
        await this.parse(p);
      } catch (e) {
        this.ctx.log.warn("cannot read pool hashes from an index; its pool files are served unverified", { key, error: (e as Error).message });
      }
    }
  }

  private async parse(p: Pending): Promise<void> {
    const { entry } = await this.ctx.cache.fetch(p.spec);
    const digest = entry.blobDigest;
    if (!digest || this.merged.has(digest)) return;
    const data = await this.ctx.artifacts.read(entry);
    const input: PoolHashesInput = { op: "pool-hashes", data, compression: p.compression, kind: p.kind };
    const out = this.ctx.pool.offloads(data.byteLength) ? await this.ctx.pool.run<PoolHashesInput, PoolHashesOutput>("aptIndex", input) : await aptIndex(input);
    const delta = this.merge(out.tsv);
    this.merged.add(digest);
    if (delta !== "") await this.ctx.artifacts.put(POOL_HASHES_PREFIX + digest.slice(7), delta, { contentType: "text/tab-separated-values", kind: "metadata" });
  }

  /** Merges TSV lines; returns the lines that added or changed a path. */
  private merge(tsv: string): string {
    let delta = "";
    for (const line of tsv.split("\n")) {
      if (line === "") continue;
      const [path, sha256, size] = line.split("\t");
      const old = this.known.get(path);
      if (old && old.sha256 === sha256) continue;
      this.known.delete(path);
      this.known.set(path, { sha256, size: Number(size) });
      delta += line + "\n";
    }
    while (this.known.size > MAX_PATHS) this.known.delete(this.known.keys().next().value!);
    return delta;
  }

  /** Reads the stored deltas, oldest first. */
  private async load(): Promise<void> {
    const rows = (await this.ctx.artifacts.list(POOL_HASHES_PREFIX)).filter((r) => r.blobDigest && r.status === 200);
    rows.sort((a, b) => a.fetchedAt - b.fetchedAt);
    const dec = new TextDecoder();
    for (const r of rows) {
      try {
        this.merge(dec.decode(await this.ctx.artifacts.read(r)));
        this.merged.add(`sha256:${r.path.slice(POOL_HASHES_PREFIX.length)}`);
      } catch (e) {
        this.ctx.log.warn("cannot read stored pool hashes", { path: r.path, error: (e as Error).message });
      }
    }
  }
}

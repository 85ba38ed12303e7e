/** Plain cache hits replayed by the host without Elysia or the plugin: the tags the artifact store puts on hit responses. */
import type { BunFile } from "bun";

/**
 * A stored entry's full-body answer that the host may replay for later plain requests of the same URL
 * (core/server.ts fast path): built once per hot entry by the artifact store (core/artifacts.ts).
 */
export interface FastHit {
  /** The blob on a local disk (the response body: sendfile). */
  readonly file: BunFile;
  /** Body size, bytes. */
  readonly sizeBytes: number;
  /**
   * Whether the entry is still the current one: not replaced, deleted, invalidated or evicted from the hot map, and
   * re-read from the database less than the hot TTL ago (other processes may write). When false the host takes the
   * normal path, which re-reads the row (and revives this record when the row did not change).
   * @param now epoch ms
   */
  live(now: number): boolean;
  /** Whether the entry is gone for good (replaced, deleted or evicted): the host drops its copy. */
  gone(): boolean;
  /** Counts one replayed answer as the normal path would: hit count and last access (batched), bytes served for GET. */
  hit(get: boolean): void;
}

/** What a tagged response carries: the entry's fast hit, plus counters its caller (the cache engine) bumped. */
export interface FastTag {
  readonly hit: FastHit;
  /** Extra counter of the caller (e.g. `vault_cache_results_total{result="HIT"}`), replayed with every answer. */
  extra: (() => void) | undefined;
}

const tags = new WeakMap<Response, FastTag>();

/**
 * Marks `res` (a 200 whose body is `hit.file` whole, answered to a GET without Range or conditional headers, for an
 * entry that never expires, with request-independent headers) as replayable. Called by the artifact store.
 */
export function tagFastHit(res: Response, hit: FastHit, extra?: () => void): void {
  tags.set(res, { hit, extra });
}

/** The tag of a response, if the artifact store put one on it. */
export function fastTagOf(res: Response): FastTag | undefined {
  return tags.get(res);
}

/** Negative cache: a bounded, TTL'd in-memory map of keys the upstream answered 404/410 for (specs/http-caching.md §9). */

/**
 * Remembers upstream 404/410 answers per cache key (variant suffix included) for a short TTL.
 *
 * Kept in memory, not as `artifacts` rows: random names must not grow the database nor cost a write each, and a
 * lost record after a restart only costs one upstream request. Bounded to `max` keys; the oldest record is evicted
 * first (insertion order; a re-set moves a key to the end). Never used for 401, 403, 429, 5xx or timeouts.
 */
export class NegativeCache {
  private readonly map = new Map<string, number>();
  /** @param max most keys kept (default 10 000) */
  constructor(readonly max = 10_000) {}

  /** True while `key` has an unexpired record at `now` (epoch ms); expired records are dropped on the way. */
  has(key: string, now: number): boolean {
    if (this.map.size === 0) return false;
    const until = this.map.get(key);
    if (until === undefined) return false;
    if (until > now) return true;
    this.map.delete(key);
    return false;
  }

  /** Records `key` as absent until `until` (epoch ms). */
  set(key: string, until: number): void {
    this.map.delete(key);
    if (this.map.size >= this.max) {
      const oldest = this.map.keys().next().value;
      if (oldest !== undefined) this.map.delete(oldest);
    }
    this.map.set(key, until);
  }

  /** Forgets `key` (explicit refresh, hosted publish, successful fetch). */
  delete(key: string): void {
    this.map.delete(key);
  }

  /** Number of records (expired ones included until touched). */
  get size(): number {
    return this.map.size;
  }
}

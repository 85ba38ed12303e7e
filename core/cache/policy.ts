/** Freshness rules of the proxy cache: Cache-Control parsing, what may be stored, expiry and flags (specs/http-caching.md §1–§2, §8). */
import type { CacheRequest } from "../plugin.ts";
import type { CachePolicy } from "../config/types.ts";

/** Parsed Cache-Control: lower-case directive → argument (`true` when it has none). */
export type Directives = Map<string, string | true>;

const DIRECTIVE = /[\s,]*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*(?:=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*)))?\s*(?:,|$)/gy;

/** Parses a Cache-Control header value (RFC 9111 §5.2); quoted arguments may contain commas. Unparseable tails are ignored. */
export function parseCacheControl(v: string | null | undefined): Directives {
  const out: Directives = new Map();
  if (!v) return out;
  DIRECTIVE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while (DIRECTIVE.lastIndex < v.length && (m = DIRECTIVE.exec(v))) {
    const name = m[1].toLowerCase();
    if (!out.has(name)) out.set(name, m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : m[3] !== undefined ? m[3] : true);
  }
  return out;
}

/** Non-negative integer seconds of a delta-seconds directive, else undefined. */
function seconds(d: Directives, name: string): number | undefined {
  const v = d.get(name);
  if (typeof v !== "string" || !/^\d+$/.test(v)) return undefined;
  return Number(v);
}

/** Defaults of {@link CachePolicy}, seconds. */
export const POLICY_DEFAULTS = {
  metadataTtlSeconds: 600,
  negativeTtlSeconds: 60,
  maxStaleSeconds: 7 * 24 * 3600,
  lockTimeoutSeconds: 30,
} as const;

/** What to do with one upstream 200 response. */
export interface StoreDecision {
  /** false for `no-store` / `private` (on the response) or `no-store` on the client request. */
  store: boolean;
  /** epoch ms after which the entry must be revalidated; null = immutable. */
  expiresAt: number | null;
  /**
   * Flags persisted with the entry: `must-revalidate` (also for proxy-revalidate), `no-cache`, `immutable`, and
   * `stale-while-revalidate=N` (seconds, RFC 5861 §3) when the upstream gave one.
   */
  flags: string[];
}

/**
 * Lifetime the upstream gives a response, seconds (RFC 9111 §4.2.1): `s-maxage` › `max-age` › `Expires − Date`,
 * minus the upstream's `Age`. `undefined` when it states none.
 */
export function upstreamLifetime(h: Headers, cc: Directives): number | undefined {
  let life = seconds(cc, "s-maxage") ?? seconds(cc, "max-age");
  if (life === undefined) {
    const exp = h.get("expires");
    if (exp !== null) {
      const e = Date.parse(exp);
      const d = Date.parse(h.get("date") ?? "");
      // An invalid Expires (e.g. "0") means already expired (RFC 9111 §5.3).
      life = Number.isNaN(e) ? 0 : Math.max(0, Math.round((e - (Number.isNaN(d) ? Date.now() : d)) / 1000));
    }
  }
  if (life === undefined) return undefined;
  const age = Number(h.get("age") ?? 0);
  return Math.max(0, life - (Number.isFinite(age) && age > 0 ? Math.floor(age) : 0));
}

/**
 * Decides storage and freshness of an upstream 200 (specs/http-caching.md §2 table).
 *
 * - `no-store` or `private` on the response → not stored (any class).
 * - immutable class → `expiresAt = null` (repository policy: artifacts never change), flags still recorded.
 * - mutable class → fresh for `min(policy TTL, upstream lifetime)` where the policy TTL is `spec.ttlSeconds` ›
 *   `cache.metadataTtlSeconds` › 600 s, and the upstream lifetime comes from `s-maxage`/`max-age`/`Expires`
 *   (so an upstream may shorten but never lengthen the configured TTL); `no-cache` → stale at once (revalidate every use).
 * - `must-revalidate`/`proxy-revalidate` → flag: never served stale without a successful revalidation.
 * - `immutable` (RFC 8246) → flag: client `no-cache` does not trigger a revalidation while fresh.
 * - `stale-while-revalidate=N` (RFC 5861 §3) → flag: for N s after expiry the stale copy is served at once while
 *   one background revalidation runs.
 * @param now epoch ms of the response
 */
export function decideStore(spec: CacheRequest, policy: CachePolicy | undefined, h: Headers, now: number): StoreDecision {
  const cc = parseCacheControl(h.get("cache-control"));
  const flags: string[] = [];
  if (cc.has("must-revalidate") || cc.has("proxy-revalidate")) flags.push("must-revalidate");
  const noCache = cc.get("no-cache") === true; // no-cache="field" only restricts those fields
  if (noCache) flags.push("no-cache");
  if (cc.has("immutable")) flags.push("immutable");
  const swr = seconds(cc, "stale-while-revalidate");
  if (swr !== undefined && swr > 0) flags.push(`stale-while-revalidate=${swr}`);
  const store = !cc.has("no-store") && !cc.has("private");
  if (spec.class === "immutable") return { store, expiresAt: null, flags };
  let ttl = spec.ttlSeconds ?? policy?.metadataTtlSeconds ?? POLICY_DEFAULTS.metadataTtlSeconds;
  const life = upstreamLifetime(h, cc);
  if (life !== undefined) ttl = Math.min(ttl, life);
  if (noCache) ttl = 0;
  return { store, expiresAt: now + ttl * 1000, flags };
}

/**
 * How long after expiry an entry may still be answered at once while a background revalidation runs, ms
 * (RFC 5861 §3): the larger of the repository's `cache.staleWhileRevalidateSeconds` and the upstream's
 * `stale-while-revalidate=N` recorded in `flags`; 0 when neither is set.
 */
export function staleWhileRevalidateMs(flags: readonly string[], policy: CachePolicy | undefined): number {
  let s = policy?.staleWhileRevalidateSeconds ?? 0;
  for (const f of flags) if (f.startsWith("stale-while-revalidate=")) s = Math.max(s, Number(f.slice(23)) || 0);
  return s * 1000;
}

/** Client request directives that matter to the cache (§2 "Request directives"). */
export interface RequestDirectives {
  /** `no-cache`, `max-age=0` (or `Pragma: no-cache` without Cache-Control): check upstream (conditionally) before reuse. */
  revalidate: boolean;
  /** `only-if-cached`: 504 when nothing is stored. */
  onlyIfCached: boolean;
  /** `no-store`: do not store this response. */
  noStore: boolean;
}

const NO_DIRECTIVES: RequestDirectives = Object.freeze({ revalidate: false, onlyIfCached: false, noStore: false });

/** Reads the client's Cache-Control / Pragma. Cheap when neither header is present (the common case). */
export function requestDirectives(h: Headers): RequestDirectives {
  const v = h.get("cache-control");
  if (v === null) {
    const p = h.get("pragma");
    return p !== null && /no-cache/i.test(p) ? { revalidate: true, onlyIfCached: false, noStore: false } : NO_DIRECTIVES;
  }
  const cc = parseCacheControl(v);
  return { revalidate: cc.has("no-cache") || cc.get("max-age") === "0", onlyIfCached: cc.has("only-if-cached"), noStore: cc.has("no-store") };
}

/** The proxy cache engine of one repository: single-flight fills streamed while stored, revalidation, stale-if-error, negative cache. */
import type { ArtifactEntry, CacheEngine, CacheRequest, CacheStatus, Logger, UpstreamClient } from "../plugin.ts";
import type { RepositoryConfig } from "../config/types.ts";
import type { BlobStore } from "../storage/blobs.ts";
import type { VaultArtifactStore } from "../artifacts.ts";
import { tempName } from "../storage/fs.ts";
import { VaultError, errors, redactUrl, toVaultError } from "../errors.ts";
import { metrics } from "../metrics.ts";
import { parseRange } from "../http/respond.ts";
import { NegativeCache } from "./negative.ts";
import { POLICY_DEFAULTS, decideStore, requestDirectives, staleWhileRevalidateMs, type StoreDecision } from "./policy.ts";
import { Spool } from "./spool.ts";
import { tailHash, type TailHash } from "./tail-hash.ts";
import { upstreamBody } from "../upstream/client.ts";
import { mkdir } from "node:fs/promises";
import { availableParallelism } from "node:os";

/** Options of {@link createCacheEngine}. */
export interface CacheEngineOptions {
  /** The proxy repository: `name` (metrics), `cache` policy (TTLs, stale cap, lock timeout). */
  repo: RepositoryConfig;
  /** The repository's artifact store (from core/artifacts.ts `createArtifactStore`). */
  artifacts: VaultArtifactStore;
  blobs: BlobStore;
  upstream: UpstreamClient;
  log: Logger;
  /** Most keys in the negative cache (default 10 000). */
  negativeEntries?: number;
  /**
   * Hash downloads announced larger than 1 MiB on the tail-hash thread (./tail-hash.ts) instead of on the event loop.
   * Default: when the machine has more than 2 cores. On 2 cores the upstream, the vault and its clients already use
   * both, so moving the hash only adds the re-read of the file (measured: no gain) and the thread's memory.
   */
  tailHash?: boolean;
}

/** The cache engine plus graceful shutdown. */
export interface VaultCacheEngine extends CacheEngine {
  /**
   * Waits up to `timeoutMs` for in-flight downloads to finish into the cache, then aborts the rest (their spool
   * files are deleted, no entry is created, their clients' responses end abnormally).
   */
  drain(timeoutMs: number): Promise<void>;
  /** Number of downloads in flight. */
  inflight(): number;
}

/** Upstream response headers always kept with an entry and replayed (bytes are stored as sent). */
const ALWAYS_KEEP = ["content-encoding", "content-disposition", "content-language"];
/** Upstream request headers a plugin may not set (the engine owns conditionals and ranges). */
const DROP_UPSTREAM = new Set(["range", "if-range", "if-none-match", "if-modified-since", "if-match", "if-unmodified-since"]);
/** Consecutive upstream failures that open the circuit breaker, and how long it stays open (ms). */
const BREAKER_THRESHOLD = 5;
const BREAKER_OPEN_MS = 10_000;

const STALE_WARNING = '110 - "Response is Stale"';
/** A streaming fill answers its clients once this many bytes are spooled (bytes)… */
const ANNOUNCE_BYTES = 1024 * 1024;
/** …or this long after the first byte arrived (ms), or when the verified body is complete. */
const ANNOUNCE_MS = 250;
/**
 * A download announced larger than this is hashed on the tail-hash thread from the spool file (./tail-hash.ts);
 * smaller or unannounced ones are hashed inline as bytes arrive, bytes.
 */
const TAIL_HASH_BYTES = 1024 * 1024;
/** Default of {@link CacheEngineOptions.tailHash}. */
const TAIL_HASH_DEFAULT = availableParallelism() > 2;

/** How clients of a flight are answered once the upstream replied. */
type FlightHead =
  /** Streaming fill: clients tail the spool. */
  | { kind: "stream"; headers: Record<string, string>; size: number | undefined; spool: Spool }
  /** Answer from a stored entry (revalidated 304, or a buffered/transformed document now stored). */
  | { kind: "entry"; entry: ArtifactEntry; status: CacheStatus }
  /** A buffered document that must not be stored (no-store + transform). */
  | { kind: "bytes"; body: Uint8Array; headers: Record<string, string> };

interface Flight {
  key: string;
  ac: AbortController;
  /** Settles when the upstream answered: resolves how to answer, rejects (VaultError) if nothing can be streamed. */
  head: Promise<FlightHead>;
  /** Settles when the flight is over: the stored entry, null when not stored; rejects on failure. */
  done: Promise<ArtifactEntry | null>;
  /** True once `head` settled. */
  headSettled: boolean;
  /** True once the flight ended well and only lingers (one macrotask) for requests that looked the key up just before. */
  finished: boolean;
}

class LockTimeout extends Error {}

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((a, b) => {
    resolve = a;
    reject = b;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/** Bare lower-case hex of an expected sha256 (`sha256:` prefix allowed). */
function expectHex(v: string | undefined): string | undefined {
  if (!v) return undefined;
  const s = v.toLowerCase();
  return s.startsWith("sha256:") ? s.slice(7) : s;
}

/** One digest verified while streaming: the algorithm, the expected lower-case hex, the running hash. */
type DigestCheck = { alg: "sha256" | "sha512" | "sha1"; want: string; h: Bun.CryptoHasher };

/** Running hashes of a spec's `expectDigests` (sha512, sha1), one per algorithm given. */
function digestChecks(spec: CacheRequest): DigestCheck[] {
  const out: DigestCheck[] = [];
  for (const alg of ["sha512", "sha1"] as const) {
    const want = spec.expectDigests?.[alg];
    if (want) out.push({ alg, want: want.toLowerCase(), h: new Bun.CryptoHasher(alg) });
  }
  return out;
}

/** Throws VAULT_DIGEST_MISMATCH (502) for the first check whose digest differs. */
function verifyChecks(checks: DigestCheck[], url: string): void {
  for (const c of checks) {
    const actual = c.h.digest("hex");
    if (actual !== c.want)
      throw new VaultError("VAULT_DIGEST_MISMATCH", 502, `upstream bytes do not match the expected ${c.alg} digest`, { url, algorithm: c.alg, expected: c.want, actual });
  }
}

/**
 * Creates the cache engine of one proxy repository (core/plugin.ts `CacheEngine`; DESIGN.md §4;
 * specs/http-caching.md §2–§9). Behaviour, per request for `spec.key`:
 *
 * - **Negative cache** (§9): an upstream 404/410 is remembered in a bounded in-memory map for
 *   `cache.negativeTtlSeconds` (default 60, 0 = off; not when the 404 says `no-store`) and answered as
 *   VAULT_NOT_FOUND without asking upstream. Never for 401/403/429/5xx/timeouts.
 * - **HIT**: a stored entry that is fresh (immutable, or `now < expiresAt`) is answered by the artifact store
 *   (Bun.file, Range, conditionals). Mutable hits carry `Age`.
 * - **MISS** (single flight, §6–§7): the first request inserts one flight per key before any await; the flight fetches
 *   upstream once, appends to a spool file in `driver.spoolDir()` while hashing (sha256) and counting, and every client —
 *   the first one and all followers — streams from that spool as bytes arrive (see core/cache/spool.ts). A client
 *   leaving never cancels the download. At the end: byte count = Content-Length (when sent), digest and size = `expect`,
 *   digests = `expectDigests` (sha512/sha1, hashed inline);
 *   then the file is adopted by the blob store and the row recorded. On upstream abort, stall, short body or mismatch the
 *   spool is deleted, no entry is created and every streaming response is errored (the connection is cut, never a clean
 *   short 200). Clients get their status line only once the first byte is spooled, so a failure before that answers
 *   502/503/504, or stale.
 * - **Followers** wait for the upstream's answer at most `cache.lockTimeoutSeconds` (default 30); then they fetch
 *   directly without caching (`X-Vault-Cache: BYPASS`).
 * - **Revalidation** (§3, §7): a mutable entry past `expiresAt`, or any mutable entry when the client sends
 *   `Cache-Control: no-cache`/`max-age=0` (unless marked `immutable` and fresh), is checked with ONE coalesced conditional
 *   request (If-None-Match / If-Modified-Since from the stored validators): 304 → REVALIDATED (expiry, validators and kept
 *   headers merged, no body transferred); 200 → the entry is replaced (streamed as a MISS); 404/410 → evicted, 404.
 * - **stale-while-revalidate** (RFC 5861 §3): within `max(cache.staleWhileRevalidateSeconds, upstream's
 *   stale-while-revalidate=N)` seconds after expiry, a stale entry is answered at once (`X-Vault-Cache: STALE`,
 *   `Warning: 110`, `Age`) and that same coalesced revalidation runs in the background; not for
 *   `must-revalidate`/`no-cache` entries nor for clients asking `no-cache`/`max-age=0`/`no-store`.
 * - **Stale** (§8): on connection error, timeout or an upstream error status, a stored entry is answered with
 *   `X-Vault-Cache: STALE`, `Warning: 110` and `Age`, if it went stale less than `cache.maxStaleSeconds` ago (default
 *   7 days) and is not marked `must-revalidate`/`no-cache` (then 504). After 5 consecutive failures the upstream is skipped
 *   for 10 s (stale answered directly, misses fail fast).
 * - **Freshness and storage** per core/cache/policy.ts `decideStore` (no-store/private not stored; upstream lifetime may
 *   shorten the configured TTL; no-cache; must-revalidate; immutable).
 * - **transform** (mutable documents): the body is buffered (gzip/deflate/br content-encoding decoded first), verified,
 *   transformed once per upstream fetch and the rewritten bytes stored; clients are answered from the stored entry.
 * - **HEAD on a miss** is forwarded upstream as HEAD without creating an entry (a fill when the spec has a `transform`,
 *   since the stored document differs from upstream's, or when upstream answers the HEAD 405/501); a HEAD joining a
 *   running flight is answered from its headers.
 * - **Client Cache-Control**: `only-if-cached` → 504 VAULT_NOT_CACHED when nothing is stored (a stale copy is answered
 *   STALE); `no-store` → the fill is streamed but not stored.
 * - **Range on a miss**: the whole object is fetched; when upstream sent Content-Length the client gets `206` for its
 *   slice as those bytes arrive, otherwise `200` with the whole body. An upstream `206` is never stored.
 * - Every response carries `X-Vault-Cache: HIT|MISS|REVALIDATED|STALE|BYPASS`; errors thrown carry it in `headers`.
 * - Metrics: `vault_cache_results_total{repository,result}` (HIT, MISS, REVALIDATED, STALE, NEGATIVE, BYPASS),
 *   `vault_inflight_downloads{repository}`, `vault_bytes_served_total{repository}` (streamed misses; hits are counted by
 *   the artifact store).
 *
 * A process killed mid-download leaves only `*.part-*` spool files (removed by `driver.cleanTemp` at start-up): rows are
 * written only after their blob is in place.
 */
export function createCacheEngine(o: CacheEngineOptions): VaultCacheEngine {
  const { artifacts, blobs, upstream, log } = o;
  const repository = o.repo.name;
  const policy = o.repo.cache;
  const negativeTtlMs = (policy?.negativeTtlSeconds ?? POLICY_DEFAULTS.negativeTtlSeconds) * 1000;
  const maxStaleMs = (policy?.maxStaleSeconds ?? POLICY_DEFAULTS.maxStaleSeconds) * 1000;
  const lockTimeoutMs = (policy?.lockTimeoutSeconds ?? POLICY_DEFAULTS.lockTimeoutSeconds) * 1000;
  const negative = new NegativeCache(o.negativeEntries);
  const useTailHash = o.tailHash ?? TAIL_HASH_DEFAULT;
  const flights = new Map<string, Flight>();
  let failures = 0;
  let breakerUntil = 0;

  const L = (result: string) => metrics.cache.bind({ repository, result });
  const labels = { HIT: L("HIT"), MISS: L("MISS"), REVALIDATED: L("REVALIDATED"), STALE: L("STALE"), NEGATIVE: L("NEGATIVE"), BYPASS: L("BYPASS") };
  const repoLabel = { repository };
  const HIT_HEADERS = Object.freeze({ "x-vault-cache": "HIT" });
  const count = (s: keyof typeof labels) => labels[s]();
  const gauge = () => metrics.inflight.set(repoLabel, flights.size);
  const addBytes = metrics.bytesServed.bind(repoLabel);
  const onBytes = (n: number) => {
    if (n > 0) addBytes(n);
  };

  function notFound(key: string, cacheStatus: CacheStatus): VaultError {
    return new VaultError("VAULT_NOT_FOUND", 404, `${key} not found`, {}, { "x-vault-cache": cacheStatus });
  }
  function withCacheHeader(e: unknown, status: CacheStatus): VaultError {
    const v = toVaultError(e);
    if (!v.headers["x-vault-cache"]) v.headers["x-vault-cache"] = status;
    return v;
  }

  function succeeded(): void {
    failures = 0;
  }
  function failed(): void {
    if (++failures >= BREAKER_THRESHOLD) {
      breakerUntil = Date.now() + BREAKER_OPEN_MS;
      failures = 0;
      log.warn("upstream failing, skipping it for a while", { seconds: BREAKER_OPEN_MS / 1000 });
    }
  }

  const ageOf = (e: ArtifactEntry, now: number) => String(Math.max(0, Math.floor((now - e.fetchedAt) / 1000)));

  function isFresh(e: ArtifactEntry, now: number): boolean {
    return e.expiresAt === null || now < e.expiresAt;
  }

  function canServeStale(e: ArtifactEntry, now: number): boolean {
    if (e.status >= 400 || !e.blobDigest) return false;
    if (mustRevalidate(e)) return false;
    return now - (e.expiresAt ?? now) <= maxStaleMs;
  }

  /** Stale answer after an upstream failure, or the error to throw. */
  function staleOrThrow(req: Request, e: ArtifactEntry | null, err: unknown, now: number): Promise<Response> {
    const v = toVaultError(err);
    if (e && v.code !== "VAULT_NOT_FOUND") {
      if (canServeStale(e, now)) {
        count("STALE");
        log.info("serving stale", { key: e.path, error: v.message });
        return artifacts.respond(req, e, { "x-vault-cache": "STALE", warning: STALE_WARNING, age: ageOf(e, now) });
      }
      if (mustRevalidate(e)) throw gatewayTimeout(v);
    }
    throw withCacheHeader(v, "MISS");
  }

  function mustRevalidate(e: ArtifactEntry): boolean {
    return e.cacheFlags.includes("must-revalidate") || e.cacheFlags.includes("no-cache");
  }

  /** RFC 9111 §5.2.2.2: a must-revalidate entry that cannot be revalidated answers 504. */
  function gatewayTimeout(v: VaultError): VaultError {
    return new VaultError("VAULT_UPSTREAM_TIMEOUT", 504, `stored copy must be revalidated and upstream failed: ${v.message}`, v.detail, {
      "x-vault-cache": "MISS",
    });
  }

  /* ---------------------------------------------------------------- flights */

  function startFlight(spec: CacheRequest, stale: ArtifactEntry | null, noStore: boolean): Flight {
    const head = deferred<FlightHead>();
    const done = deferred<ArtifactEntry | null>();
    const f: Flight = { key: spec.key, ac: new AbortController(), head: head.promise, done: done.promise, headSettled: false, finished: false };
    // registered first, so the flag is set before any waiter's continuation runs
    f.done.then(
      () => (f.finished = true),
      () => {},
    );
    flights.set(spec.key, f);
    gauge();
    const settleHead = {
      ok: (h: FlightHead) => {
        f.headSettled = true;
        head.resolve(h);
      },
      fail: (e: unknown) => {
        f.headSettled = true;
        head.reject(e);
      },
    };
    void runFlight(f, spec, stale, noStore, settleHead, done).then(
      (ok) => {
        // Keep a successful flight visible for one more macrotask so a request that looked the key up just
        // before the row was recorded joins it (and is answered from the entry) instead of fetching again.
        const drop = () => {
          if (flights.get(spec.key) === f) flights.delete(spec.key);
          gauge();
        };
        if (ok) setImmediate(drop);
        else drop();
      },
      (e) => {
        log.error("cache flight crashed", { key: spec.key, error: (e as Error)?.message });
        if (flights.get(spec.key) === f) flights.delete(spec.key);
        gauge();
      },
    );
    return f;
  }

  /** One upstream fetch for a key. Returns true when it ended with a stored or served response. */
  async function runFlight(
    f: Flight,
    spec: CacheRequest,
    stale: ArtifactEntry | null,
    noStore: boolean,
    head: { ok: (h: FlightHead) => void; fail: (e: unknown) => void },
    done: ReturnType<typeof deferred<ArtifactEntry | null>>,
  ): Promise<boolean> {
    const fail = (e: unknown) => {
      const v = withCacheHeader(e, "MISS");
      if (!f.headSettled) head.fail(v);
      done.reject(v);
      return false;
    };
    const headers: Record<string, string> = {};
    if (spec.upstreamHeaders) for (const [k, v] of Object.entries(spec.upstreamHeaders)) if (!DROP_UPSTREAM.has(k.toLowerCase())) headers[k] = v;
    if (stale?.upstreamEtag) headers["if-none-match"] = stale.upstreamEtag;
    if (stale?.upstreamLastModified) headers["if-modified-since"] = stale.upstreamLastModified;

    let res: Response;
    try {
      res = await upstream.fetch(spec.upstreamUrl, { headers, signal: f.ac.signal });
    } catch (e) {
      if (!f.ac.signal.aborted) failed();
      return fail(e);
    }
    const now = Date.now();
    const status = res.status;

    if (status === 304 && stale) {
      succeeded();
      void res.body?.cancel().catch(() => {});
      const d = decideStore(spec, policy, res.headers, now);
      const entry =
        (await artifacts.refresh(spec.key, {
          expiresAt: d.expiresAt,
          fetchedAt: now,
          upstreamEtag: res.headers.get("etag") ?? undefined,
          upstreamLastModified: res.headers.get("last-modified") ?? undefined,
          headers: keptHeaders(res.headers, spec),
          // RFC 9111 §4.3.4: a 304 without Cache-Control leaves the stored directives in force.
          cacheFlags: res.headers.has("cache-control") ? d.flags : undefined,
        })) ?? stale;
      head.ok({ kind: "entry", entry, status: "REVALIDATED" });
      done.resolve(entry);
      return true;
    }
    if (status === 404 || status === 410) {
      succeeded();
      void res.body?.cancel().catch(() => {});
      if (stale) await artifacts.delete(spec.key).catch((e) => log.warn("evict failed", { key: spec.key, error: (e as Error).message }));
      const cc = res.headers.get("cache-control") ?? "";
      if (negativeTtlMs > 0 && !/no-store/i.test(cc)) negative.set(spec.key, now + negativeTtlMs);
      return fail(notFound(spec.key, "MISS"));
    }
    if (status !== 200) {
      void res.body?.cancel().catch(() => {});
      if (status >= 500 || status === 429) failed();
      return fail(errors.upstream(status, spec.upstreamUrl));
    }
    succeeded();
    negative.delete(spec.key);
    const d = decideStore(spec, policy, res.headers, now);
    if (noStore) d.store = false;
    if (spec.transform) return buffered(f, spec, res, d, now, head, done);
    return pump(f, spec, res, d, now, head, done, fail);
  }

  /** Streams the upstream body into a spool file that every client tails; verifies; stores. */
  async function pump(
    f: Flight,
    spec: CacheRequest,
    res: Response,
    d: StoreDecision,
    now: number,
    head: { ok: (h: FlightHead) => void },
    done: ReturnType<typeof deferred<ArtifactEntry | null>>,
    fail: (e: unknown) => boolean,
  ): Promise<boolean> {
    const url = redactUrl(spec.upstreamUrl);
    const cl = res.headers.get("content-length");
    const contentLength = cl !== null && /^\d+$/.test(cl) ? Number(cl) : undefined;
    const wantHex = expectHex(spec.expect?.sha256);
    const wantSize = spec.expect?.sizeBytes;
    if (contentLength !== undefined && wantSize !== undefined && contentLength !== wantSize) {
      void res.body?.cancel().catch(() => {});
      return fail(new VaultError("VAULT_SIZE_MISMATCH", 502, "upstream size differs from the expected size", { url, expected: wantSize, actual: contentLength }));
    }
    let spool: Spool;
    try {
      const dir = blobs.driver.spoolDir();
      await mkdir(dir, { recursive: true });
      spool = await Spool.create(tempName(dir, "cache"));
    } catch (e) {
      void res.body?.cancel().catch(() => {});
      log.error("cannot create spool file", { error: (e as Error).message });
      return fail(new VaultError("VAULT_STORAGE", 500, "cannot create spool file"));
    }
    const hdrs = responseHeaders(res.headers, spec);
    hdrs["x-vault-cache"] = "MISS";
    // Clients get their status line once ANNOUNCE_BYTES are spooled, ANNOUNCE_MS after the first byte, or at the verified
    // end, whichever comes first: a failure before that (small files are usually complete by then, so a digest
    // mismatch is caught) is answered properly — 502/503/504 or stale — instead of with a cut connection, which some
    // clients (Bun's fetch among them) silently retry when no byte of the response arrived.
    let announced = false;
    let announceTimer: ReturnType<typeof setTimeout> | undefined;
    const announce = () => {
      clearTimeout(announceTimer);
      if (announced || f.headSettled) return;
      announced = true;
      head.ok({ kind: "stream", headers: hdrs, size: contentLength, spool });
    };

    // Large downloads are hashed on another thread from the spool file; the rest inline.
    let tail: TailHash | undefined;
    const hasher = useTailHash && contentLength !== undefined && contentLength > TAIL_HASH_BYTES ? undefined : new Bun.CryptoHasher("sha256");
    if (!hasher) {
      tail = tailHash(spool.path);
      spool.onDurable = (n) => tail!.progress(n);
    }
    const checks = digestChecks(spec);
    const body = upstreamBody(res) ?? (res.body ? genericBody(res.body) : null);
    try {
      if (body) {
        for (let chunks = await body.read(); chunks !== null; chunks = await body.read()) {
          for (const value of chunks) {
            const total = spool.bytesWritten + value.byteLength;
            if ((wantSize !== undefined && total > wantSize) || (contentLength !== undefined && total > contentLength))
              throw new VaultError("VAULT_SIZE_MISMATCH", 502, "upstream sent more bytes than announced", { url });
            hasher?.update(value);
            for (const c of checks) c.h.update(value);
            const wait = spool.append(value);
            if (wait) await wait;
          }
          if (!announced) {
            if (spool.bytesWritten >= ANNOUNCE_BYTES) announce();
            else announceTimer ??= setTimeout(announce, ANNOUNCE_MS);
          }
        }
      }
      await spool.flush();
      const size = spool.bytesWritten;
      if (contentLength !== undefined && size !== contentLength)
        throw new VaultError("VAULT_SIZE_MISMATCH", 502, "upstream body shorter than Content-Length", { url, expected: contentLength, actual: size });
      if (wantSize !== undefined && size !== wantSize)
        throw new VaultError("VAULT_SIZE_MISMATCH", 502, "upstream size differs from the expected size", { url, expected: wantSize, actual: size });
      let hex: string;
      if (hasher) hex = hasher.digest("hex");
      else {
        const t = tail!;
        tail = undefined;
        try {
          hex = await t.end(size);
        } catch (e) {
          log.error("hashing a download failed", { key: spec.key, error: (e as Error).message });
          throw new VaultError("VAULT_STORAGE", 500, "cannot hash the downloaded file");
        }
      }
      if (wantHex !== undefined && hex !== wantHex)
        throw new VaultError("VAULT_DIGEST_MISMATCH", 502, "upstream bytes do not match the expected digest", { url, expected: wantHex, actual: hex });
      verifyChecks(checks, url);
      // Verified. Publish the blob and record the row BEFORE the clients' responses end, so that a request made after
      // a download finished is a HIT.
      let entry: ArtifactEntry | null = null;
      if (d.store) {
        try {
          await blobs.putFile(spool.path, `sha256:${hex}`, size);
          entry = (await artifacts.record([
            {
              path: spec.key,
              blobDigest: `sha256:${hex}`,
              sizeBytes: size,
              contentType: res.headers.get("content-type") ?? spec.contentType ?? null,
              kind: spec.class === "immutable" ? "artifact" : "metadata",
              upstreamEtag: res.headers.get("etag"),
              upstreamLastModified: res.headers.get("last-modified"),
              headers: keptHeaders(res.headers, spec),
              cacheFlags: d.flags,
              fetchedAt: now,
              expiresAt: d.expiresAt,
            },
          ]))[0];
        } catch (e) {
          log.error("storing a verified download failed", { key: spec.key, error: (e as Error).message });
          await spool.remove();
        }
      } else await spool.remove();
      clearTimeout(announceTimer);
      if (!announced && !f.headSettled) {
        // Nothing announced yet (a small, fast download): answer every client from the stored entry (sendfile, ETag).
        announced = true;
        if (entry) head.ok({ kind: "entry", entry, status: "MISS" });
        else head.ok({ kind: "stream", headers: hdrs, size: contentLength ?? size, spool });
      }
      spool.finish();
      spool.end();
      done.resolve(entry);
      return true;
    } catch (e) {
      clearTimeout(announceTimer);
      const v = toVaultError(e);
      if (!f.ac.signal.aborted && v.code !== "VAULT_DIGEST_MISMATCH" && v.code !== "VAULT_SIZE_MISMATCH") failed();
      log.warn("upstream download failed; nothing stored", { key: spec.key, url, code: v.code, error: v.message, bytes: spool.bytesWritten });
      spool.fail(v);
      tail?.abort();
      void body?.cancel().catch(() => {});
      await spool.remove().catch(() => {});
      spool.end();
      fail(v);
      return false;
    }
  }

  /** Buffers a document, applies `transform` once, stores the rewritten bytes; clients are answered from the entry. */
  async function buffered(
    f: Flight,
    spec: CacheRequest,
    res: Response,
    d: StoreDecision,
    now: number,
    head: { ok: (h: FlightHead) => void; fail: (e: unknown) => void },
    done: ReturnType<typeof deferred<ArtifactEntry | null>>,
  ): Promise<boolean> {
    const url = redactUrl(spec.upstreamUrl);
    try {
      let raw = new Uint8Array(await res.arrayBuffer());
      const cl = res.headers.get("content-length");
      if (cl !== null && /^\d+$/.test(cl) && Number(cl) !== raw.byteLength)
        throw new VaultError("VAULT_SIZE_MISMATCH", 502, "upstream body shorter than Content-Length", { url });
      const wantHex = expectHex(spec.expect?.sha256);
      if (spec.expect?.sizeBytes !== undefined && spec.expect.sizeBytes !== raw.byteLength)
        throw new VaultError("VAULT_SIZE_MISMATCH", 502, "upstream size differs from the expected size", { url });
      if (wantHex !== undefined && new Bun.CryptoHasher("sha256").update(raw).digest("hex") !== wantHex)
        throw new VaultError("VAULT_DIGEST_MISMATCH", 502, "upstream bytes do not match the expected digest", { url });
      const checks = digestChecks(spec);
      for (const c of checks) c.h.update(raw);
      verifyChecks(checks, url);
      const enc = (res.headers.get("content-encoding") ?? "identity").toLowerCase().trim();
      if (enc === "gzip" || enc === "x-gzip") raw = Bun.gunzipSync(raw);
      else if (enc === "deflate") raw = Bun.inflateSync(raw);
      else if (enc === "br") raw = new Uint8Array(require("node:zlib").brotliDecompressSync(raw));
      else if (enc !== "identity" && enc !== "") throw new VaultError("VAULT_UPSTREAM_ERROR", 502, `unsupported content-encoding ${enc}`, { url });
      const out = await spec.transform!(raw, res);
      const body = typeof out.body === "string" ? new TextEncoder().encode(out.body) : out.body;
      const contentType = out.contentType ?? res.headers.get("content-type") ?? spec.contentType ?? null;
      const kept = keptHeaders(res.headers, spec);
      delete kept["content-encoding"];
      if (!d.store) {
        const headers: Record<string, string> = { ...kept, "content-type": contentType ?? "application/octet-stream", "x-vault-cache": "MISS" };
        head.ok({ kind: "bytes", body, headers });
        done.resolve(null);
        return true;
      }
      const stored = await blobs.putStream(new Blob([body as BlobPart]).stream());
      const entry = (await artifacts.record([
        {
          path: spec.key,
          blobDigest: stored.digest,
          sizeBytes: stored.sizeBytes,
          contentType,
          kind: spec.class === "immutable" ? "artifact" : "metadata",
          upstreamEtag: res.headers.get("etag"),
          upstreamLastModified: res.headers.get("last-modified"),
          headers: kept,
          cacheFlags: d.flags,
          fetchedAt: now,
          expiresAt: d.expiresAt,
        },
      ]))[0];
      head.ok({ kind: "entry", entry, status: "MISS" });
      done.resolve(entry);
      return true;
    } catch (e) {
      const v = withCacheHeader(e, "MISS");
      if (!f.ac.signal.aborted && (v.code === "VAULT_UPSTREAM_DOWN" || v.code === "VAULT_UPSTREAM_TIMEOUT")) failed();
      log.warn("document fetch failed; nothing stored", { key: spec.key, url, code: v.code, error: v.message });
      head.fail(v);
      done.reject(v);
      return false;
    }
  }

  /** Upstream headers replayed from the entry: content-encoding & co. plus `spec.keepHeaders`. */
  function keptHeaders(h: Headers, spec: CacheRequest): Record<string, string> {
    const out: Record<string, string> = {};
    for (const k of ALWAYS_KEEP) {
      const v = h.get(k);
      if (v !== null) out[k] = v;
    }
    if (spec.keepHeaders)
      for (const k of spec.keepHeaders) {
        const v = h.get(k);
        if (v !== null) out[k.toLowerCase()] = v;
      }
    return out;
  }

  /** Headers of a streamed MISS (no ETag: ours is known only once the digest is). */
  function responseHeaders(h: Headers, spec: CacheRequest): Record<string, string> {
    const out = keptHeaders(h, spec);
    out["content-type"] = h.get("content-type") ?? spec.contentType ?? "application/octet-stream";
    const lm = h.get("last-modified");
    if (lm) out["last-modified"] = lm;
    if (!out["content-disposition"]) out["content-disposition"] = "inline";
    return out;
  }

  /* ---------------------------------------------------------------- answering */

  /** Starts the flight that revalidates a stale entry with no client waiting on it; its outcome is only logged. */
  function revalidateInBackground(spec: CacheRequest, stale: ArtifactEntry): void {
    const f = startFlight(spec, stale, false);
    f.head.catch(() => {});
    f.done.then(
      () => {},
      (e) => log.warn("background revalidation failed; the stale copy stays", { key: spec.key, error: toVaultError(e).message }),
    );
  }

  /** Answers a client from a flight (leader or follower). */
  async function fromFlight(req: Request, spec: CacheRequest, stale: ArtifactEntry | null, noStore: boolean): Promise<Response> {
    let f = flights.get(spec.key);
    const leader = !f;
    if (!f) f = startFlight(spec, stale, noStore);
    let h: FlightHead;
    try {
      h = leader || f.headSettled ? await f.head : await withTimeout(f.head, lockTimeoutMs);
    } catch (e) {
      if (e instanceof LockTimeout) return bypass(req, spec);
      return staleOrThrow(req, stale, e, Date.now());
    }
    if (h.kind === "entry") {
      count(h.status as keyof typeof labels);
      return artifacts.respond(req, h.entry, { "x-vault-cache": h.status, age: ageOf(h.entry, Date.now()) });
    }
    count("MISS");
    if (h.kind === "bytes") {
      return new Response(req.method === "HEAD" ? null : (h.body as Uint8Array<ArrayBuffer>), { headers: { ...h.headers, "content-length": String(h.body.byteLength) } });
    }
    return streamFrom(req, spec, f, h);
  }

  /** A client of a streaming flight: HEAD from the headers; Range as 206 when the size is known; else the whole body. */
  async function streamFrom(req: Request, spec: CacheRequest, f: Flight, h: Extract<FlightHead, { kind: "stream" }>): Promise<Response> {
    if (req.method === "HEAD") {
      const headers = { ...h.headers };
      if (h.size !== undefined) headers["content-length"] = String(h.size);
      return new Response(null, { headers });
    }
    let start = 0;
    let end: number | undefined;
    let status = 200;
    const headers = { ...h.headers };
    const range = req.headers.get("range");
    if (range !== null && h.size !== undefined && req.headers.get("if-range") === null) {
      const r = parseRange(range, h.size);
      if (r === "unsatisfiable")
        throw new VaultError("VAULT_RANGE_NOT_SATISFIABLE", 416, "range not satisfiable", { size: h.size }, { "content-range": `bytes */${h.size}`, "x-vault-cache": "MISS" });
      if (r) {
        start = r.start;
        end = r.end + 1;
        status = 206;
        headers["content-range"] = `bytes ${r.start}-${r.end}/${h.size}`;
        headers["content-length"] = String(end - start);
      }
    } else if (h.size !== undefined) headers["content-length"] = String(h.size);
    const body = h.spool.reader(start, end, onBytes);
    if (!body) {
      // The flight ended and its spool closed between lookup and now: answer from what it stored.
      const entry = await f.done.catch(() => null);
      if (entry) return artifacts.respond(req, entry, { "x-vault-cache": "MISS" });
      // Not stored (no-store, or storing failed): this flight is over for good, fetch again.
      if (flights.get(spec.key) === f) {
        flights.delete(spec.key);
        gauge();
      }
      return fromFlight(req, spec, null, false);
    }
    return new Response(body, { status, headers });
  }

  /** Direct upstream fetch without caching (follower wait cap exceeded); expected digests error the body at its end. */
  async function bypass(req: Request, spec: CacheRequest): Promise<Response> {
    count("BYPASS");
    const headers: Record<string, string> = {};
    if (spec.upstreamHeaders) for (const [k, v] of Object.entries(spec.upstreamHeaders)) if (!DROP_UPSTREAM.has(k.toLowerCase())) headers[k] = v;
    const res = await upstream.fetch(spec.upstreamUrl, { method: req.method === "HEAD" ? "HEAD" : "GET", headers }).catch((e) => {
      throw withCacheHeader(e, "BYPASS");
    });
    if (res.status === 404 || res.status === 410) {
      void res.body?.cancel().catch(() => {});
      throw notFound(spec.key, "BYPASS");
    }
    if (res.status !== 200) {
      void res.body?.cancel().catch(() => {});
      throw withCacheHeader(errors.upstream(res.status, spec.upstreamUrl), "BYPASS");
    }
    const out = responseHeaders(res.headers, spec);
    out["x-vault-cache"] = "BYPASS";
    const cl = res.headers.get("content-length");
    if (cl) out["content-length"] = cl;
    const checks = digestChecks(spec);
    const wantHex = expectHex(spec.expect?.sha256);
    if (wantHex) checks.push({ alg: "sha256", want: wantHex, h: new Bun.CryptoHasher("sha256") });
    let body: ReadableStream<Uint8Array> | null = res.body;
    if (body && checks.length > 0 && req.method !== "HEAD") {
      const url = redactUrl(spec.upstreamUrl);
      body = body.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, ctl) {
            for (const c of checks) c.h.update(chunk);
            ctl.enqueue(chunk);
          },
          flush(ctl) {
            try {
              verifyChecks(checks, url);
            } catch (e) {
              log.warn("bypassed download failed verification", { key: spec.key, error: (e as Error).message });
              ctl.error(e);
            }
          },
        }),
      );
    }
    return new Response(req.method === "HEAD" ? null : (body as ReadableStream<Uint8Array<ArrayBuffer>> | null), { headers: out });
  }

  /** HEAD on a miss: forwarded upstream as HEAD, nothing stored (an upstream refusing HEAD gets a GET fill instead). */
  async function headMiss(req: Request, spec: CacheRequest): Promise<Response> {
    const headers: Record<string, string> = {};
    if (spec.upstreamHeaders) for (const [k, v] of Object.entries(spec.upstreamHeaders)) if (!DROP_UPSTREAM.has(k.toLowerCase())) headers[k] = v;
    let res: Response;
    try {
      res = await upstream.fetch(spec.upstreamUrl, { method: "HEAD", headers });
    } catch (e) {
      failed();
      throw withCacheHeader(e, "MISS");
    }
    const now = Date.now();
    if (res.status === 404 || res.status === 410) {
      succeeded();
      if (negativeTtlMs > 0 && !/no-store/i.test(res.headers.get("cache-control") ?? "")) negative.set(spec.key, now + negativeTtlMs);
      throw notFound(spec.key, "MISS");
    }
    if (res.status === 405 || res.status === 501) return fromFlight(req, spec, null, false);
    if (res.status !== 200) {
      if (res.status >= 500 || res.status === 429) failed();
      throw withCacheHeader(errors.upstream(res.status, spec.upstreamUrl), "MISS");
    }
    succeeded();
    count("MISS");
    const out = responseHeaders(res.headers, spec);
    out["x-vault-cache"] = "MISS";
    const cl = res.headers.get("content-length");
    if (cl) out["content-length"] = cl;
    return new Response(null, { headers: out });
  }

  /**
   * The lookup `serve` and `fetch` share: a key known to be missing upstream (in-memory negative cache, or a fresh
   * stored 404/410 row) throws VAULT_NOT_FOUND marked HIT; an expired negative row counts as no entry.
   * @returns the stored entry with a blob, or null on a miss
   */
  async function lookup(key: string, now: number): Promise<ArtifactEntry | null> {
    if (negative.has(key, now)) {
      count("NEGATIVE");
      throw notFound(key, "HIT");
    }
    const entry = await artifacts.get(key);
    if (entry && (entry.status >= 400 || !entry.blobDigest)) {
      if (isFresh(entry, now)) {
        count("NEGATIVE");
        throw notFound(key, "HIT");
      }
      return null;
    }
    return entry;
  }

  async function serve(req: Request, spec: CacheRequest): Promise<Response> {
    const method = req.method;
    if (method !== "GET" && method !== "HEAD")
      throw new VaultError("VAULT_METHOD_NOT_ALLOWED", 405, `${method} not allowed`, {}, { allow: "GET, HEAD" });
    const key = spec.key;
    const now = Date.now();
    const entry = await lookup(key, now);
    if (entry) {
      if (entry.expiresAt === null) {
        labels.HIT();
        return artifacts.respondCounted(req, entry, HIT_HEADERS, labels.HIT);
      }
      const rd = requestDirectives(req.headers);
      const fresh = now < entry.expiresAt;
      if (fresh && (!rd.revalidate || entry.cacheFlags.includes("immutable"))) {
        count("HIT");
        return artifacts.respond(req, entry, { "x-vault-cache": "HIT", age: ageOf(entry, now) });
      }
      if (rd.onlyIfCached) {
        count("STALE");
        return artifacts.respond(req, entry, { "x-vault-cache": "STALE", warning: STALE_WARNING, age: ageOf(entry, now) });
      }
      // stale: revalidate through the (coalesced) flight; serve this copy if upstream fails
      if (now < breakerUntil && !flights.has(key)) return staleOrThrow(req, entry, errors.upstreamDown(spec.upstreamUrl, "upstream skipped after repeated failures"), now);
      // RFC 5861 §3: within the stale-while-revalidate window the stale copy is the answer, and one background
      // revalidation (the same coalesced flight) refreshes the entry for later requests.
      // (A window of 0 is no window: at now === expiresAt the entry is already stale and must be revalidated.)
      const swrMs = staleWhileRevalidateMs(entry.cacheFlags, policy);
      if (swrMs > 0 && !rd.revalidate && !rd.noStore && !mustRevalidate(entry) && now - entry.expiresAt <= swrMs) {
        if (!flights.has(key)) revalidateInBackground(spec, entry);
        count("STALE");
        return artifacts.respond(req, entry, { "x-vault-cache": "STALE", warning: STALE_WARNING, age: ageOf(entry, now) });
      }
      return fromFlight(req, spec, entry, rd.noStore);
    }
    const rd = requestDirectives(req.headers);
    if (rd.onlyIfCached) throw new VaultError("VAULT_NOT_CACHED", 504, `${key} is not cached`, {}, { "x-vault-cache": "MISS" });
    if (now < breakerUntil && !flights.has(key))
      throw withCacheHeader(errors.upstreamDown(spec.upstreamUrl, "upstream skipped after repeated failures"), "MISS");
    if (method === "HEAD" && !spec.transform) {
      const f = flights.get(key);
      if (!f) return headMiss(req, spec);
    }
    return fromFlight(req, spec, null, rd.noStore);
  }

  async function fetchEntry(spec: CacheRequest, opts?: { signal?: AbortSignal }): Promise<{ entry: ArtifactEntry; status: CacheStatus }> {
    const key = spec.key;
    const now = Date.now();
    const entry = await lookup(key, now);
    let stale: ArtifactEntry | null = null;
    if (entry) {
      if (isFresh(entry, now)) {
        count("HIT");
        return { entry, status: "HIT" };
      } else stale = entry;
    }
    const fallback = (e: unknown): { entry: ArtifactEntry; status: CacheStatus } => {
      const v = toVaultError(e);
      if (stale && v.code !== "VAULT_NOT_FOUND") {
        if (canServeStale(stale, Date.now())) {
          count("STALE");
          return { entry: stale, status: "STALE" };
        }
        if (mustRevalidate(stale)) throw gatewayTimeout(v);
      }
      throw withCacheHeader(v, "MISS");
    };
    if (now < breakerUntil && !flights.has(key)) return fallback(errors.upstreamDown(spec.upstreamUrl, "upstream skipped after repeated failures"));
    const f = flights.get(key) ?? startFlight(spec, stale, false);
    let h: FlightHead;
    try {
      h = await abortable(f.head, opts?.signal);
    } catch (e) {
      if (opts?.signal?.aborted) throw e;
      return fallback(e);
    }
    if (h.kind === "entry") {
      count(h.status as keyof typeof labels);
      return { entry: h.entry, status: h.status };
    }
    let stored: ArtifactEntry | null;
    try {
      stored = await abortable(f.done, opts?.signal);
    } catch (e) {
      if (opts?.signal?.aborted) throw e;
      return fallback(e);
    }
    if (!stored) throw new VaultError("VAULT_NOT_CACHED", 504, `${key}: upstream forbids storing it (no-store/private)`);
    count("MISS");
    return { entry: stored, status: "MISS" };
  }

  return {
    serve,
    fetch: fetchEntry,

    async invalidate(key) {
      negative.delete(key);
      // a finished flight lingering for late joiners would hand them the entry being invalidated
      const f = flights.get(key);
      if (f?.finished) {
        flights.delete(key);
        gauge();
      }
      await artifacts.delete(key);
    },

    inflight: () => flights.size,

    async drain(timeoutMs) {
      const pending = () => [...flights.values()].map((f) => f.done.then(() => {}, () => {}));
      let list = pending();
      if (list.length === 0) return;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = await Promise.race([
        Promise.all(list).then(() => false),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(true), Math.max(0, timeoutMs)))),
      ]);
      clearTimeout(timer);
      if (!timedOut) return;
      list = pending();
      log.warn("aborting downloads still in flight at shutdown", { count: list.length });
      for (const f of flights.values()) f.ac.abort(new VaultError("VAULT_UPSTREAM_DOWN", 503, "shutting down"));
      await Promise.all(list);
    },
  };
}

/** A batch reader over any body stream (a response that did not come from the upstream client). */
function genericBody(stream: ReadableStream<Uint8Array>): { read(): Promise<Uint8Array[] | null>; cancel(): Promise<void> } {
  const reader = stream.getReader();
  return {
    async read() {
      for (;;) {
        const r = await reader.read();
        if (r.done) return null;
        if (r.value && r.value.byteLength > 0) return [r.value];
      }
    },
    cancel: () => reader.cancel().catch(() => {}),
  };
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new LockTimeout()), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

function abortable<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

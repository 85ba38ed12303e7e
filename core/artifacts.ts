/** The ArtifactStore of one repository: `artifacts` rows over the content-addressed blob store, a hot-entry map, batched hit counts. */
import { and, asc, eq, gt, gte, lt, sql } from "drizzle-orm";
import type { ArtifactEntry, ArtifactPut, ArtifactStore, Db, Logger } from "./plugin.ts";
import type { RepositoryConfig } from "./config/types.ts";
import { sqlMax, type BlobStore } from "./storage/blobs.ts";
import { DigestMismatchError, NotFoundError, blobKey } from "./storage/driver.ts";
import { atomic, dialectOf, exec, rows, tablesOf, type Tx, type Work } from "./db/index.ts";
import type { artifacts } from "./db/schema.ts";
import { VaultError, errors } from "./errors.ts";
import { etagForDigest, prepareEntry, respondEntry } from "./http/respond.ts";
import { tagFastHit, type FastHit } from "./http/fast.ts";
import { metrics } from "./metrics.ts";

type Row = typeof artifacts.$inferSelect;

/** A row to record for a blob that is already in the blob store (or a negative entry without blob). */
export interface ArtifactRecord {
  path: string;
  /** `sha256:<hex>`; null for negative-cache rows. */
  blobDigest: string | null;
  sizeBytes: number;
  contentType?: string | null;
  /** 200, or 404/410 for negative rows. Default 200. */
  status?: number;
  kind?: "artifact" | "metadata";
  /** Served ETag (quoted); default derived from the digest. */
  etag?: string | null;
  upstreamEtag?: string | null;
  upstreamLastModified?: string | null;
  headers?: Record<string, string>;
  cacheFlags?: string[];
  /** epoch ms; default now. */
  fetchedAt?: number;
  /** epoch ms; null = never expires. */
  expiresAt?: number | null;
}

/** Freshness fields a successful revalidation (upstream 304) updates (RFC 9111 §4.3.4). */
export interface ArtifactRefresh {
  /** epoch ms; null = never. */
  expiresAt: number | null;
  /** epoch ms of the revalidation (becomes `fetchedAt`, the base of `Age`). */
  fetchedAt: number;
  upstreamEtag?: string | null;
  upstreamLastModified?: string | null;
  /** Replayed headers merged over the stored ones. */
  headers?: Record<string, string>;
  cacheFlags?: string[];
}

/**
 * What {@link createArtifactStore} returns: the plugin-facing ArtifactStore plus the operations the cache engine
 * and the host need (recording rows for blobs already stored, refreshing freshness, flushing hit counts).
 */
export interface VaultArtifactStore extends ArtifactStore {
  readonly repository: string;
  readonly blobs: BlobStore;
  /**
   * Records rows for blobs that are already in the blob store (e.g. adopted spool files), in ONE transaction with the
   * blob reference counts (a replaced row releases its old blob). Visible all at once.
   * On Postgres each row's key is locked (transaction advisory lock) for the read-modify-write, so racing writers of
   * one key on several nodes end with one row and the right reference counts.
   * @throws VaultError VAULT_STORAGE when a blob is being swept at that very moment
   */
  record(rows: ArtifactRecord[]): Promise<ArtifactEntry[]>;
  /**
   * `respond` for the cache engine: `counter` is bumped again by every host fast-path replay of this answer
   * (core/server.ts), as the engine bumps it for every hit it answers itself.
   */
  respondCounted(req: Request, entry: ArtifactEntry, extraHeaders: Record<string, string> | undefined, counter: () => void): Promise<Response>;
  /** Applies a revalidation result to a stored row; returns the updated entry, or null when the row is gone. */
  refresh(path: string, f: ArtifactRefresh): Promise<ArtifactEntry | null>;
  /**
   * Writes the batched hit counts / last-access times now (one transaction). On SQLite the write is done when this
   * returns; the promise settles after it on either dialect. Never rejects (a failure is logged).
   */
  flush(): Promise<void>;
  /** Flushes and stops the flush timer. */
  close(): Promise<void>;
}

/** Options of {@link createArtifactStore}. */
export interface ArtifactStoreOptions {
  db: Db;
  blobs: BlobStore;
  repo: RepositoryConfig;
  log: Logger;
  /** Entries kept in the in-memory hot map (default 10 000). */
  hotEntries?: number;
  /** How long a hot entry is trusted before it is re-read from the database, ms (default 5000; other processes may write). */
  hotTtlMs?: number;
  /** Hit-count flush period, ms (default 1000). */
  flushIntervalMs?: number;
  /** Lifetime of presigned redirect URLs, seconds (default 300). */
  presignTtlSeconds?: number;
}

const MAX_KEY = "\u{10ffff}";

/** One entry of the hot map. `gone` is set when it is replaced, deleted or evicted (host fast-path copies then die). */
interface HotRecord {
  entry: ArtifactEntry;
  /** epoch ms of the last database read or write that confirmed it */
  loadedAt: number;
  gone: boolean;
  /** Built on the first plain full-body hit. */
  fast?: FastHit;
}

/** Request headers after which an answer is not the plain full 200 (or depends on more than the URL). */
const NOT_PLAIN = ["range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range"];

/** Raw row → plugin-facing entry. */
function toEntry(r: Row): ArtifactEntry {
  return {
    repository: r.repository,
    path: r.path,
    blobDigest: r.blobDigest,
    sizeBytes: r.sizeBytes,
    contentType: r.contentType,
    status: r.status,
    kind: r.kind === "metadata" ? "metadata" : "artifact",
    etag: r.etag,
    upstreamEtag: r.upstreamEtag,
    upstreamLastModified: r.upstreamLastModified,
    headers: r.headers ? (JSON.parse(r.headers) as Record<string, string>) : {},
    cacheFlags: r.cacheFlags ? r.cacheFlags.split(",").filter(Boolean) : [],
    fetchedAt: r.fetchedAt,
    expiresAt: r.expiresAt,
    lastAccessAt: r.lastAccessAt,
    hitCount: r.hitCount,
  };
}

/** Fields whose change means the stored response changed (hit counters do not). */
function sameVersion(a: ArtifactEntry, r: Row): boolean {
  return (
    a.blobDigest === r.blobDigest &&
    a.fetchedAt === r.fetchedAt &&
    a.expiresAt === r.expiresAt &&
    a.status === r.status &&
    a.etag === r.etag &&
    a.contentType === r.contentType &&
    a.upstreamEtag === r.upstreamEtag &&
    a.upstreamLastModified === r.upstreamLastModified
  );
}

function toBody(body: ReadableStream<Uint8Array> | Uint8Array | string): ReadableStream<Uint8Array> {
  if (body instanceof ReadableStream) return body;
  return new Blob([body as BlobPart]).stream();
}

/**
 * Creates the artifact store of one repository (core/plugin.ts `ArtifactStore`, DESIGN.md §3).
 *
 * - Writes: blobs first (`blobs.putStream`, verified against `expect`), then rows in ONE drizzle transaction together
 *   with the blob reference counts (a replaced or deleted row releases its old blob), so `commit` is all-or-nothing.
 * - Reads: a bounded in-memory map of hot entries (FIFO-evicted, `hotEntries`) answers `get` without the database; an
 *   entry is re-read after `hotTtlMs` so writes by other processes (or nodes) show up; writes through this store update
 *   it at once. On SQLite a re-read is one prepared synchronous statement (no await on the hit path).
 * - Postgres (several nodes): `record` and `delete` lock the row's key for their read-modify-write (see {@link atomic}),
 *   blob reference deltas are applied per digest in sorted order (no deadlock between two commits).
 * - Hits: `respond` counts hits and last-access in memory; a timer (unref'd, so it never keeps the process alive)
 *   writes them every `flushIntervalMs` in one transaction; `flush()`/`close()` write them at once.
 * - `respond` answers with `Bun.file` on local drivers, a 302 to a presigned URL when the repository sets
 *   `redirectDownloads` and the driver can presign, else the driver's stream.
 */
export function createArtifactStore(o: ArtifactStoreOptions): VaultArtifactStore {
  const { db, blobs, log } = o;
  const { artifacts } = tablesOf(db);
  const sqlite = dialectOf(db) === "sqlite";
  const repository = o.repo.name;
  const maxHot = o.hotEntries ?? 10_000;
  const hotTtlMs = o.hotTtlMs ?? 5000;
  const flushMs = o.flushIntervalMs ?? 1000;
  const presignTtl = o.presignTtlSeconds ?? 300;
  const redirect = o.repo.redirectDownloads === true && typeof blobs.driver.presignGet === "function";
  const hot = new Map<string, HotRecord>();
  const pending = new Map<string, { hits: number; at: number }>();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const addBytes = metrics.bytesServed.bind({ repository });

  const rowOf = (path: string) => and(eq(artifacts.repository, repository), eq(artifacts.path, path));
  /** SQLite: prepared statements run synchronously (the hot path's re-read, the hit-count flush). */
  const selectOne = sqlite
    ? db
        .select()
        .from(artifacts)
        .where(and(eq(artifacts.repository, sql.placeholder("repository")), eq(artifacts.path, sql.placeholder("path"))))
        .prepare()
    : undefined;
  const bumpHits = sqlite
    ? db
        .update(artifacts)
        .set({
          hitCount: sql`${artifacts.hitCount} + ${sql.placeholder("hits")}`,
          lastAccessAt: sqlMax(artifacts.lastAccessAt, sql.placeholder("at")),
        })
        .where(and(eq(artifacts.repository, sql.placeholder("repository")), eq(artifacts.path, sql.placeholder("path"))))
        .prepare()
    : undefined;
  /** Advisory lock name of a row's key (Postgres). */
  const lockOf = (path: string) => `artifact:${repository}:${path}`;

  function remember(entry: ArtifactEntry, now = Date.now()): void {
    const old = hot.get(entry.path);
    if (old) old.gone = true;
    else if (hot.size >= maxHot) {
      const oldest = hot.keys().next().value;
      if (oldest !== undefined) {
        hot.get(oldest)!.gone = true;
        hot.delete(oldest);
      }
    }
    hot.set(entry.path, { entry, loadedAt: now, gone: false });
  }

  function forget(path: string): void {
    const h = hot.get(path);
    if (!h) return;
    h.gone = true;
    hot.delete(path);
  }

  /** The entry at `path`: the hot map while fresh; else re-read (synchronously on SQLite, a promise on Postgres). */
  function load(path: string): ArtifactEntry | null | Promise<ArtifactEntry | null> {
    const now = Date.now();
    const h = hot.get(path);
    if (h && now - h.loadedAt < hotTtlMs) return h.entry;
    if (selectOne) return loaded(path, h, now, selectOne.get({ repository, path }));
    return db
      .select()
      .from(artifacts)
      .where(rowOf(path))
      .then((r) => loaded(path, hot.get(path), now, r[0]));
  }

  /** Updates the hot map with a row just read (`h`: the hot record when the read started). */
  function loaded(path: string, h: HotRecord | undefined, now: number, row: Row | undefined): ArtifactEntry | null {
    if (!row) {
      forget(path);
      return null;
    }
    if (h && sameVersion(h.entry, row)) {
      h.loadedAt = now;
      return h.entry;
    }
    const e = toEntry(row);
    remember(e, now);
    return e;
  }

  /** The fast-path record of a hot entry (built once per record). */
  function fastOf(h: HotRecord, file: ReturnType<typeof Bun.file>): FastHit {
    if (h.fast) return h.fast;
    const path = h.entry.path;
    const size = h.entry.sizeBytes;
    return (h.fast = {
      file,
      sizeBytes: size,
      live: (now) => !h.gone && now - h.loadedAt < hotTtlMs,
      gone: () => h.gone,
      hit(get) {
        countHit(path);
        if (get) addBytes(size);
      },
    });
  }

  /**
   * Tags `res` for the host fast path when it is the plain full answer of the current hot entry: GET without Range or
   * conditionals, 200 from Bun.file, an entry that never expires, no per-request extra headers (only `X-Vault-Cache: HIT`).
   */
  function maybeTag(req: Request, entry: ArtifactEntry, res: Response, extra: Record<string, string> | undefined, counter?: () => void): void {
    if (entry.expiresAt !== null || req.method !== "GET" || res.status !== 200) return;
    if (extra) for (const k in extra) if (k !== "x-vault-cache" || extra[k] !== "HIT") return;
    const h = hot.get(entry.path);
    if (!h || h.entry !== entry || h.gone) return;
    const headers = req.headers;
    for (const n of NOT_PLAIN) if (headers.has(n)) return;
    const file = prepareEntry(entry, blobs).file;
    if (!file) return;
    tagFastHit(res, fastOf(h, file), counter);
  }

  /** Writes the rows, then the net reference-count change of each blob (sorted by digest). */
  function* writeRows(tx: Tx, recs: ArtifactRecord[], now: number): Work<ArtifactEntry[]> {
    const out: ArtifactEntry[] = [];
    const deltas = new Map<string, { sizeBytes: number; delta: number }>();
    const addRef = (digest: string, sizeBytes: number, delta: number) => {
      const d = deltas.get(digest);
      if (d) d.delta += delta;
      else deltas.set(digest, { sizeBytes, delta });
    };
    for (const r of recs) {
      const old = (yield* rows(
        tx.select({ blobDigest: artifacts.blobDigest, sizeBytes: artifacts.sizeBytes }).from(artifacts).where(rowOf(r.path)),
      ))[0];
      const row: Row = {
        repository,
        path: r.path,
        blobDigest: r.blobDigest,
        sizeBytes: r.sizeBytes,
        contentType: r.contentType ?? null,
        status: r.status ?? 200,
        kind: r.kind ?? "artifact",
        upstreamEtag: r.upstreamEtag ?? null,
        upstreamLastModified: r.upstreamLastModified ?? null,
        etag: r.etag ?? (r.blobDigest ? etagForDigest(r.blobDigest) : null),
        headers: r.headers && Object.keys(r.headers).length ? JSON.stringify(r.headers) : null,
        cacheFlags: r.cacheFlags?.length ? r.cacheFlags.join(",") : null,
        fetchedAt: r.fetchedAt ?? now,
        expiresAt: r.expiresAt ?? null,
        lastAccessAt: now,
        hitCount: 0,
      };
      if (r.blobDigest) addRef(r.blobDigest, r.sizeBytes, +1);
      if (old?.blobDigest) addRef(old.blobDigest, old.sizeBytes, -1);
      const { repository: _r, path: _p, ...set } = row;
      yield* exec(tx.insert(artifacts).values(row).onConflictDoUpdate({ target: [artifacts.repository, artifacts.path], set }));
      out.push(toEntry(row));
    }
    for (const [digest, d] of [...deltas].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
      if (d.delta !== 0) yield* blobs.ref(tx, digest, d.sizeBytes, d.delta);
    }
    return out;
  }

  async function record(recs: ArtifactRecord[]): Promise<ArtifactEntry[]> {
    const now = Date.now();
    const out = await atomic(db, (tx) => writeRows(tx, recs, now), { locks: recs.map((r) => lockOf(r.path)) });
    for (const e of out) {
      pending.delete(e.path);
      remember(e, now);
    }
    return out;
  }

  async function storeBody(body: ReadableStream<Uint8Array> | Uint8Array | string, opts: ArtifactPut | undefined, path: string) {
    try {
      return await blobs.putStream(toBody(body), opts?.expect);
    } catch (e) {
      if (e instanceof DigestMismatchError)
        throw new VaultError("VAULT_DIGEST_MISMATCH", 400, `content of ${path} does not match the expected digest or size`, {
          path,
          expected: e.expected,
          actual: e.actual,
        });
      throw e;
    }
  }

  function putRecord(path: string, stored: { digest: string; sizeBytes: number }, opts?: ArtifactPut): ArtifactRecord {
    return {
      path,
      blobDigest: stored.digest,
      sizeBytes: stored.sizeBytes,
      contentType: opts?.contentType ?? null,
      kind: opts?.kind ?? "artifact",
      headers: opts?.headers,
      expiresAt: null,
    };
  }

  async function flush(): Promise<void> {
    if (timer) {
      clearTimeout(timer);
      timer = undefined;
    }
    if (pending.size === 0) return;
    const batch = [...pending].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    pending.clear();
    try {
      if (bumpHits) {
        db.transaction(() => {
          for (const [path, p] of batch) bumpHits.run({ repository, path, hits: p.hits, at: p.at });
        });
      } else {
        await atomic(db, function* (tx) {
          for (const [path, p] of batch) {
            yield* exec(
              tx
                .update(artifacts)
                .set({ hitCount: sql`${artifacts.hitCount} + ${p.hits}`, lastAccessAt: sqlMax(artifacts.lastAccessAt, p.at) })
                .where(rowOf(path)),
            );
          }
        });
      }
    } catch (e) {
      log.warn("hit count flush failed", { error: (e as Error).message, paths: batch.length });
    }
  }

  function countHit(path: string): void {
    const p = pending.get(path);
    const now = Date.now();
    if (p) {
      p.hits++;
      p.at = now;
    } else pending.set(path, { hits: 1, at: now });
    if (!timer) {
      timer = setTimeout(() => void flush(), flushMs);
      timer.unref?.();
    }
  }

  return {
    repository,
    blobs,

    async get(path) {
      return load(path);
    },

    async put(path, body, opts) {
      const stored = await storeBody(body, opts, path);
      return (await record([putRecord(path, stored, opts)]))[0];
    },

    async commit(files) {
      const recs: ArtifactRecord[] = [];
      for (const f of files) recs.push(putRecord(f.path, await storeBody(f.body, f.opts, f.path), f.opts));
      return record(recs);
    },

    async delete(path) {
      await atomic(
        db,
        function* (tx) {
          const old = (yield* rows(tx.delete(artifacts).where(rowOf(path)).returning({ blobDigest: artifacts.blobDigest, sizeBytes: artifacts.sizeBytes })))[0];
          if (old?.blobDigest) yield* blobs.ref(tx, old.blobDigest, old.sizeBytes, -1);
        },
        { locks: [lockOf(path)] },
      );
      forget(path);
      pending.delete(path);
    },

    async list(prefix, opts) {
      const conds = [eq(artifacts.repository, repository), gte(artifacts.path, prefix), lt(artifacts.path, prefix + MAX_KEY)];
      if (opts?.after !== undefined) conds.push(gt(artifacts.path, opts.after));
      const q = db.select().from(artifacts).where(and(...conds)).orderBy(asc(artifacts.path));
      return (await (opts?.limit !== undefined ? q.limit(opts.limit) : q)).map(toEntry);
    },

    async read(entry) {
      if (!entry.blobDigest || entry.status >= 400) throw errors.notFound(entry.path);
      const local = blobs.localPath(entry.blobDigest);
      try {
        if (local) return await Bun.file(local).bytes();
        return await new Response(await blobs.open(entry.blobDigest)).bytes();
      } catch (e) {
        if (e instanceof NotFoundError || (e as NodeJS.ErrnoException)?.code === "ENOENT") throw errors.notFound(entry.path);
        throw e;
      }
    },

    respond(req, entry, extraHeaders) {
      return respond(req, entry, extraHeaders, undefined);
    },

    respondCounted: (req, entry, extraHeaders, counter) => respond(req, entry, extraHeaders, counter),

    record,

    async refresh(path, f) {
      const cur = await load(path);
      if (!cur) return null;
      const headers = f.headers ? { ...cur.headers, ...f.headers } : cur.headers;
      const flags = f.cacheFlags ?? cur.cacheFlags;
      const set = {
        expiresAt: f.expiresAt,
        fetchedAt: f.fetchedAt,
        upstreamEtag: f.upstreamEtag !== undefined ? f.upstreamEtag : cur.upstreamEtag,
        upstreamLastModified: f.upstreamLastModified !== undefined ? f.upstreamLastModified : cur.upstreamLastModified,
        headers: Object.keys(headers).length ? JSON.stringify(headers) : null,
        cacheFlags: flags.length ? flags.join(",") : null,
      };
      const updated = await db.update(artifacts).set(set).where(rowOf(path)).returning();
      if (updated.length === 0) {
        forget(path);
        return null;
      }
      const e = toEntry(updated[0]);
      remember(e);
      return e;
    },

    flush,

    close() {
      return flush();
    },
  };

  async function respond(req: Request, entry: ArtifactEntry, extraHeaders: Record<string, string> | undefined, counter: (() => void) | undefined): Promise<Response> {
    const res = await (redirect ? respondRedirect(req, entry, extraHeaders) : respondEntry(req, entry, blobs, { extraHeaders }));
    const s = res.status;
    if (s === 200 || s === 206 || s === 302) {
      countHit(entry.path);
      if (req.method === "GET" && s !== 302) {
        let n = entry.sizeBytes;
        if (s === 206) {
          const m = /^bytes (\d+)-(\d+)\//.exec(res.headers.get("content-range") ?? "");
          if (m) n = Number(m[2]) - Number(m[1]) + 1;
        }
        addBytes(n);
        if (s === 200 && !redirect) maybeTag(req, entry, res, extraHeaders, counter);
      }
    }
    return res;
  }

  /** `redirectDownloads` on a remote driver: 302 to a presigned GET URL (conditionals are still answered here). */
  async function respondRedirect(req: Request, entry: ArtifactEntry, extra?: Record<string, string>): Promise<Response> {
    if (blobs.localPath(entry.blobDigest ?? "") !== undefined || !entry.blobDigest || entry.status >= 400 || req.method !== "GET")
      return respondEntry(req, entry, blobs, { extraHeaders: extra });
    // Let respond.ts answer 304/412/416 from metadata; only a full or partial body becomes a redirect.
    const h = req.headers;
    if (h.has("if-none-match") || h.has("if-modified-since") || h.has("if-match") || h.has("if-unmodified-since")) {
      const probe = await respondEntry(new Request(req.url, { method: "HEAD", headers: h }), entry, blobs, { extraHeaders: extra });
      if (probe.status !== 200) return probe;
    }
    const url = await blobs.driver.presignGet!(blobKey(entry.blobDigest), presignTtl, {
      contentType: entry.contentType ?? undefined,
    });
    return new Response(null, { status: 302, headers: { location: url, "cache-control": "no-store", ...extra } });
  }
}

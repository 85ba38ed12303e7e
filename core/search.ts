/**
 * Search and statistics over the stored artifacts of every repository, for the web UI and `/-/api/` (DESIGN.md §1,
 * docs/api.md): packages found by name across formats, a package's versions and files, per-repository counts and
 * sizes, cache results. Which package a stored path belongs to is the plugin's `packageOf` hook (core/plugin.ts);
 * without one, files are grouped by directory.
 *
 * Queries, on SQLite and Postgres alike (docs/api.md "Cost"):
 * - search and package pages read one repository at a time through the `(repository, path)` primary key, in path
 *   order, narrowed by `lower(path) LIKE` and bounded by {@link SCAN_LIMIT} rows per query (`truncated` says when the
 *   bound was reached); a `sha256:` query uses the `blob_digest` index instead;
 * - repository figures are one grouped aggregate over the rows of the repositories asked for, reused for 10 s
 *   ({@link CONTENT_TTL_MS}).
 */
import { and, asc, eq, inArray, isNotNull, sql, type SQL } from "drizzle-orm";
import { tablesOf, type Db } from "./db/index.ts";
import { directoryPackageOf, type PackageRef, type PluginContext, type VaultPlugin } from "./plugin.ts";
import { metrics } from "./metrics.ts";

/** Most candidate rows one query reads (per repository for search; for one package page). */
export const SCAN_LIMIT = 20_000;
/** Most versions listed in a search result (the newest first; `versionCount` has them all). */
export const RESULT_VERSIONS = 10;

/** A repository the catalog can read: its context (config, base URL, auth) and its plugin (hooks). */
export interface CatalogRepository {
  ctx: PluginContext;
  plugin: VaultPlugin;
}

/** Options of {@link createCatalog}. */
export interface CatalogOptions {
  db: Db;
  /** Every repository by name, in config order. */
  repositories: Map<string, CatalogRepository>;
  /** Writes batched hit counts of these repositories to the database (so download counts are current); optional. */
  flushHits?: (repositories: string[]) => Promise<void>;
  /** How long {@link Catalog.content} reuses a repository's figures, ms (default {@link CONTENT_TTL_MS}; 0 = always query). */
  contentTtlMs?: number;
}

/**
 * Default reuse of per-repository figures, ms: `content` aggregates every row of the repositories asked for (about
 * 0.2 s per 200 000 rows on SQLite and Postgres), so pages listing repositories cost at most one such scan per
 * repository every 10 s.
 */
export const CONTENT_TTL_MS = 10_000;

/** Stored content of one repository (rows with status 200), from the metadata database. */
export interface RepositoryContent {
  /** Rows of kind `artifact` (package files, blobs, objects). */
  artifacts: number;
  /** Rows of kind `metadata` (indexes, packuments, tags, snapshots). */
  metadataFiles: number;
  /** Sum of the rows' sizes, bytes (identical blobs in two rows count twice; see {@link BlobStoreStats}). */
  storedBytes: number;
  /** Sum of the rows' hit counts: downloads answered (2xx and presigned redirects, first fetches included), every node. */
  downloads: number;
  /** Latest access of any row, epoch ms; null when the repository stores nothing. */
  lastAccessAt: number | null;
}

/** The content-addressed blob store as a whole (deduplicated). */
export interface BlobStoreStats {
  /** Blobs referenced by at least one row. */
  blobs: number;
  /** Their total size, bytes. */
  sizeBytes: number;
}

/** Cache results and bytes served by this process since it started (`vault_cache_results_total`, `vault_bytes_served_total`). */
export interface CacheCounters {
  /** By result: `HIT`, `MISS`, `REVALIDATED`, `STALE`, `NEGATIVE`, `BYPASS` (only those seen). */
  results: Record<string, number>;
  /** Response body bytes served, bytes. */
  bytesServed: number;
}

/** Query of {@link Catalog.search}. */
export interface SearchQuery {
  /** Name, or part of one (case-insensitive; `-`, `_`, `.` alike); `sha256:<hex>` or 64 hex digits finds files by digest; empty lists every package. */
  q: string;
  /** Only repositories of this format. */
  format?: string;
  /** Only this repository. */
  repository?: string;
  /** Results per page (1..100). */
  limit: number;
  /** Results to skip. */
  offset: number;
}

/** One package in search results: a name in one repository. Times are epoch ms, sizes bytes. */
export interface PackageSummary {
  repository: string;
  format: string;
  name: string;
  /** The newest versions (the format's `compareVersions`, else natural order; newest first), at most {@link RESULT_VERSIONS}. */
  versions: string[];
  versionCount: number;
  latestVersion: string | null;
  files: number;
  sizeBytes: number;
  downloads: number;
  lastFetchedAt: number;
}

/** Answer of {@link Catalog.search}. */
export interface SearchResult {
  /** Packages matching, over every page. */
  total: number;
  /** True when a repository had more candidate rows than {@link SCAN_LIMIT}: some packages may be missing. */
  truncated: boolean;
  results: PackageSummary[];
}

/** One stored file of a package. Times are epoch ms, sizes bytes. */
export interface PackageFile {
  /** Repository-relative path of the stored row. */
  path: string;
  /** Label (file name). */
  file: string;
  version: string | null;
  /** Download URL relative to the repository's base URL; null when the file has no plain download URL. */
  url: string | null;
  /** `sha256:<hex>` */
  digest: string;
  sizeBytes: number;
  contentType: string | null;
  kind: "artifact" | "metadata";
  fetchedAt: number;
  lastAccessAt: number;
  downloads: number;
}

/** One version of a package with its files. */
export interface PackageVersion {
  version: string;
  files: PackageFile[];
  sizeBytes: number;
  downloads: number;
  /** Latest fetch or upload of its files, epoch ms. */
  fetchedAt: number;
}

/** Answer of {@link Catalog.package}. */
export interface PackageDetail {
  repository: string;
  format: string;
  name: string;
  /** Newest first (the format's `compareVersions`, else natural order). */
  versions: PackageVersion[];
  /** Files that belong to no one version (OCI manifests by digest and blobs). */
  files: PackageFile[];
  sizeBytes: number;
  downloads: number;
  /** True when the package's candidate rows exceeded {@link SCAN_LIMIT}. */
  truncated: boolean;
}

/** The queries of the web UI and `/-/api/`, over repositories the caller may read (the caller filters by permission). */
export interface Catalog {
  /**
   * Stored content of each named repository (repositories that store nothing are absent); a repository's figures are
   * reused for `contentTtlMs` (default 10 s) after they were read.
   */
  content(repositories: string[]): Promise<Map<string, RepositoryContent>>;
  /** The blob store as a whole. */
  blobStore(): Promise<BlobStoreStats>;
  /** Cache counters of a repository in this process. */
  cacheCounters(repository: string): CacheCounters;
  /** Packages whose name matches, grouped per repository, ranked exact, prefix, substring, then by name. */
  search(query: SearchQuery, readable: string[]): Promise<SearchResult>;
  /** A package's versions and files in one repository; null when it stores no file of that name. */
  package(repository: string, name: string): Promise<PackageDetail | null>;
  /** The package of a stored path: the plugin's `packageOf`, else {@link directoryPackageOf}; null when it is none (or the hook throws). */
  packageOf(repository: string, path: string): PackageRef | null;
}

/** Name comparison form: lower-case, runs of `-`, `_`, `.` as one `-` (PEP 503's rule, applied to every format). */
export function normalizePackageName(s: string): string {
  return s.toLowerCase().replace(/[-_.]+/g, "-");
}

/**
 * A `LIKE` pattern (escape character `\`) matching lower-cased paths that contain `q` lower-cased, with `-`, `_`, `.`
 * (and runs of them) matching any characters: a superset of the rows whose package name matches.
 */
export function likePattern(q: string): string {
  let out = "%";
  for (const ch of q.toLowerCase()) {
    if (ch === "-" || ch === "_" || ch === ".") {
      if (!out.endsWith("%")) out += "%";
    } else if (ch === "%" || ch === "\\") out += "\\" + ch;
    else out += ch;
  }
  return out.endsWith("%") ? out : out + "%";
}

/** Natural order (numeric runs compared as numbers), ascending: names, and versions of formats without `compareVersions`. */
export function compareVersions(a: string, b: string): number {
  return collator.compare(a, b);
}
const collator = new Intl.Collator("en", { numeric: true, sensitivity: "base" });

/** A `sha256:<hex>` digest when `q` is one (or 64 hex digits), else undefined. */
function digestQuery(q: string): string | undefined {
  const m = /^(?:sha256:)?([0-9a-f]{64})$/i.exec(q.trim());
  return m ? `sha256:${m[1].toLowerCase()}` : undefined;
}

/** `http://x/a b/c` style: each segment of a stored path percent-encoded. */
function encodePath(path: string): string {
  return path.split("/").map(encodeURIComponent).join("/");
}

/** Values of a metrics counter whose labels include `repository`, by the counter's other label `by` (or "" when none). */
function counterBy(values: Map<string, number>, repository: string, by?: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, v] of values) {
    const labels: Record<string, string> = {};
    for (const m of key.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]] = m[2].replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    if (labels.repository !== repository) continue;
    const k = by ? (labels[by] ?? "") : "";
    out[k] = (out[k] ?? 0) + v;
  }
  return out;
}

/**
 * Creates the catalog over the metadata database (either dialect).
 * @throws nothing itself; its queries reject with the driver's error
 */
export function createCatalog(o: CatalogOptions): Catalog {
  const { db } = o;
  const { artifacts, blobs } = tablesOf(db);
  const cols = {
    path: artifacts.path,
    blobDigest: artifacts.blobDigest,
    sizeBytes: artifacts.sizeBytes,
    contentType: artifacts.contentType,
    kind: artifacts.kind,
    fetchedAt: artifacts.fetchedAt,
    lastAccessAt: artifacts.lastAccessAt,
    hitCount: artifacts.hitCount,
  };
  type Row = { repository?: string } & { [K in keyof typeof cols]: (typeof artifacts.$inferSelect)[K] };

  const stored = and(eq(artifacts.status, 200), isNotNull(artifacts.blobDigest))!;
  const pathLike = (pattern: string): SQL => sql`lower(${artifacts.path}) like ${pattern} escape '\\'`;

  function packageOf(repository: string, path: string): PackageRef | null {
    const r = o.repositories.get(repository);
    if (!r) return null;
    const hook = r.plugin.packageOf;
    if (typeof hook !== "function") return directoryPackageOf(path);
    try {
      const p = hook.call(r.plugin, path, r.ctx);
      return p && typeof p.name === "string" && p.name !== "" ? p : null;
    } catch {
      return null;
    }
  }

  /** Rows of one repository whose path matches `pattern` (all rows when undefined), path order, at most SCAN_LIMIT + 1. */
  async function candidates(repository: string, pattern: string | undefined): Promise<Row[]> {
    const where = pattern === undefined ? and(eq(artifacts.repository, repository), stored) : and(eq(artifacts.repository, repository), stored, pathLike(pattern));
    return (await db.select(cols).from(artifacts).where(where).orderBy(asc(artifacts.path)).limit(SCAN_LIMIT + 1)) as Row[];
  }

  function fileOf(row: Row, ref: PackageRef): PackageFile {
    const i = row.path.lastIndexOf("/");
    return {
      path: row.path,
      file: ref.file ?? row.path.slice(i + 1),
      version: ref.version ?? null,
      url: ref.url === undefined ? encodePath(row.path) : ref.url,
      digest: row.blobDigest!,
      sizeBytes: row.sizeBytes,
      contentType: row.contentType,
      kind: row.kind === "metadata" ? "metadata" : "artifact",
      fetchedAt: row.fetchedAt,
      lastAccessAt: row.lastAccessAt,
      downloads: row.hitCount,
    };
  }

  const contentTtlMs = o.contentTtlMs ?? CONTENT_TTL_MS;
  /** Figures per repository with when they were read (`value` undefined: it stored nothing). */
  const contentCache = new Map<string, { at: number; value: RepositoryContent | undefined }>();

  /**
   * Version order of a repository's format, ascending: the plugin's `compareVersions` (PEP 440, semver, OCI tags), then
   * natural order where it cannot tell (0) or throws.
   */
  function versionOrder(repository: string): (a: string, b: string) => number {
    const p = o.repositories.get(repository)?.plugin;
    const hook = p?.compareVersions;
    if (typeof hook !== "function") return compareVersions;
    return (a, b) => {
      let c = 0;
      try {
        c = hook.call(p, a, b);
      } catch {
        c = 0;
      }
      return c || compareVersions(a, b);
    };
  }

  async function flush(repositories: string[]): Promise<void> {
    if (o.flushHits && repositories.length > 0) await o.flushHits(repositories);
  }

  /** One grouped aggregate over the rows of `repositories` (hit counts flushed first). */
  async function queryContent(repositories: string[]): Promise<Map<string, RepositoryContent>> {
    const out = new Map<string, RepositoryContent>();
    await flush(repositories);
    const rowsOf = await db
      .select({
        repository: artifacts.repository,
        artifacts: sql<number>`coalesce(sum(case when ${artifacts.kind} = 'artifact' then 1 else 0 end), 0)`.mapWith(Number),
        metadataFiles: sql<number>`coalesce(sum(case when ${artifacts.kind} <> 'artifact' then 1 else 0 end), 0)`.mapWith(Number),
        storedBytes: sql<number>`coalesce(sum(${artifacts.sizeBytes}), 0)`.mapWith(Number),
        downloads: sql<number>`coalesce(sum(${artifacts.hitCount}), 0)`.mapWith(Number),
        lastAccessAt: sql<number | null>`max(${artifacts.lastAccessAt})`.mapWith((v) => (v === null ? null : Number(v))),
      })
      .from(artifacts)
      .where(and(inArray(artifacts.repository, repositories), stored))
      .groupBy(artifacts.repository);
    for (const r of rowsOf) {
      const { repository, ...c } = r;
      out.set(repository, c);
    }
    return out;
  }

  return {
    packageOf,

    async content(repositories) {
      const out = new Map<string, RepositoryContent>();
      const now = Date.now();
      const stale: string[] = [];
      for (const name of repositories) {
        const c = contentCache.get(name);
        if (c && now - c.at < contentTtlMs) {
          if (c.value) out.set(name, c.value);
        } else stale.push(name);
      }
      if (stale.length === 0) return out;
      const fresh = await queryContent(stale);
      for (const name of stale) {
        const value = fresh.get(name);
        contentCache.set(name, { at: now, value });
        if (value) out.set(name, value);
      }
      return out;
    },

    async blobStore() {
      const [r] = await db
        .select({
          blobs: sql<number>`count(*)`.mapWith(Number),
          sizeBytes: sql<number>`coalesce(sum(${blobs.sizeBytes}), 0)`.mapWith(Number),
        })
        .from(blobs)
        .where(sql`${blobs.refCount} > 0`);
      return { blobs: r?.blobs ?? 0, sizeBytes: r?.sizeBytes ?? 0 };
    },

    cacheCounters(repository) {
      return {
        results: counterBy(metrics.cache.values, repository, "result"),
        bytesServed: counterBy(metrics.bytesServed.values, repository)[""] ?? 0,
      };
    },

    async search(query, readable) {
      const names = readable.filter((n) => {
        const r = o.repositories.get(n);
        if (!r || r.ctx.repo.type === "group") return false;
        if (query.repository !== undefined && n !== query.repository) return false;
        return query.format === undefined || r.ctx.config.format === query.format;
      });
      await flush(names);
      const q = query.q.trim();
      const digest = digestQuery(q);
      const needle = normalizePackageName(q);
      const groups = new Map<string, { repository: string; name: string; versions: Set<string>; files: number; sizeBytes: number; downloads: number; lastFetchedAt: number }>();
      let truncated = false;
      const add = (repository: string, row: Row) => {
        const ref = packageOf(repository, row.path);
        if (!ref) return;
        if (!digest && needle !== "" && !normalizePackageName(ref.name).includes(needle)) return;
        const key = `${repository}\u0000${ref.name}`;
        let g = groups.get(key);
        if (!g) groups.set(key, (g = { repository, name: ref.name, versions: new Set(), files: 0, sizeBytes: 0, downloads: 0, lastFetchedAt: 0 }));
        if (ref.version !== undefined) g.versions.add(ref.version);
        g.files++;
        g.sizeBytes += row.sizeBytes;
        g.downloads += row.hitCount;
        g.lastFetchedAt = Math.max(g.lastFetchedAt, row.fetchedAt);
      };
      if (digest) {
        if (names.length > 0) {
          const found = await db
            .select({ repository: artifacts.repository, ...cols })
            .from(artifacts)
            .where(and(eq(artifacts.blobDigest, digest), eq(artifacts.status, 200), inArray(artifacts.repository, names)))
            .limit(SCAN_LIMIT + 1);
          truncated = found.length > SCAN_LIMIT;
          for (const row of found.slice(0, SCAN_LIMIT)) add(row.repository, row as Row);
        }
      } else {
        const pattern = q === "" ? undefined : likePattern(q);
        for (const n of names) {
          const found = await candidates(n, pattern);
          if (found.length > SCAN_LIMIT) truncated = true;
          for (const row of found.slice(0, SCAN_LIMIT)) add(n, row);
        }
      }
      const rank = (name: string) => {
        const n = normalizePackageName(name);
        return n === needle ? 0 : n.startsWith(needle) ? 1 : 2;
      };
      const all = [...groups.values()].sort(
        (a, b) => rank(a.name) - rank(b.name) || compareVersions(a.name, b.name) || (a.repository < b.repository ? -1 : a.repository > b.repository ? 1 : 0),
      );
      const results = all.slice(query.offset, query.offset + query.limit).map((g): PackageSummary => {
        const order = versionOrder(g.repository);
        const versions = [...g.versions].sort((a, b) => order(b, a));
        return {
          repository: g.repository,
          format: o.repositories.get(g.repository)!.ctx.config.format,
          name: g.name,
          versions: versions.slice(0, RESULT_VERSIONS),
          versionCount: versions.length,
          latestVersion: versions[0] ?? null,
          files: g.files,
          sizeBytes: g.sizeBytes,
          downloads: g.downloads,
          lastFetchedAt: g.lastFetchedAt,
        };
      });
      return { total: all.length, truncated, results };
    },

    async package(repository, name) {
      const r = o.repositories.get(repository);
      if (!r || name === "") return null;
      await flush([repository]);
      const want = normalizePackageName(name);
      const found = await candidates(repository, likePattern(name));
      const byVersion = new Map<string, PackageVersion>();
      const loose: PackageFile[] = [];
      let shownName: string | undefined;
      let sizeBytes = 0;
      let downloads = 0;
      for (const row of found.slice(0, SCAN_LIMIT)) {
        const ref = packageOf(repository, row.path);
        if (!ref || normalizePackageName(ref.name) !== want) continue;
        // the exact spelling asked for wins when a package is stored under several (e.g. `Foo` and `foo`)
        if (shownName === undefined || ref.name === name) shownName = ref.name;
        const f = fileOf(row, ref);
        sizeBytes += f.sizeBytes;
        downloads += f.downloads;
        if (f.version === null) {
          loose.push(f);
          continue;
        }
        let v = byVersion.get(f.version);
        if (!v) byVersion.set(f.version, (v = { version: f.version, files: [], sizeBytes: 0, downloads: 0, fetchedAt: 0 }));
        v.files.push(f);
        v.sizeBytes += f.sizeBytes;
        v.downloads += f.downloads;
        v.fetchedAt = Math.max(v.fetchedAt, f.fetchedAt);
      }
      if (shownName === undefined) return null;
      const order = versionOrder(repository);
      return {
        repository,
        format: r.ctx.config.format,
        name: shownName,
        versions: [...byVersion.values()].sort((a, b) => order(b.version, a.version)),
        files: loose,
        sizeBytes,
        downloads,
        truncated: found.length > SCAN_LIMIT,
      };
    },
  };
}

/**
 * The public, versioned plugin API: what a plugin declares (VaultPlugin) and everything the host hands it
 * (PluginContext). A plugin imports only from this file (and core/errors.ts, re-exported here).
 * Documented for plugin authors in docs/plugins.md.
 */
import type { Elysia } from "elysia";
import type { BunSQLiteDatabase } from "drizzle-orm/bun-sqlite";
import type { StorageDriver, PutExpect } from "./storage/driver.ts";
import type { RepositoryConfig } from "./config/types.ts";
import { VaultError } from "./errors.ts";
import type { Tables } from "./db/schema.ts";

export { VaultError, errors } from "./errors.ts";
export { checkRequestPath, checkPathComponent, pathProblem, type PathCheckOptions } from "./http/path.ts";
export { readBodyLimited, spoolBody, type SpooledBody } from "./http/body.ts";
export { KeyedLock } from "./keyed-lock.ts";
export type { StorageDriver, PutExpect, ByteRange, ObjectInfo } from "./storage/driver.ts";
/** The driver key of a blob (`blobs/sha256/ab/<hex>`), for plugins reading stored blobs through `ctx.storage`. */
export { blobKey } from "./storage/driver.ts";
/**
 * A plugin's own files in `ctx.storage.spoolDir()` are named `<id>` + {@link PART_MARKER} + `<tag>` + {@link TEMP_OWNER}
 * so start-up and `vault gc` cleaning remove them once their process is gone, and never while it runs.
 */
export { PART_MARKER, TEMP_OWNER, THIS_HOST, pidAlive } from "./storage/driver.ts";
export type { RepositoryConfig } from "./config/types.ts";
/**
 * Metadata helpers for code that runs on both dialects (docs/plugins.md "Metadata"): the tables of `ctx.metadata`'s
 * dialect, transactions as units of work, the dialect itself.
 */
export { atomic, rows, exec, first, tablesOf, dialectOf, type Dialect, type Tables, type Tx, type Work, type AtomicOptions } from "./db/index.ts";

/** The plugin API version this host implements. A plugin declaring another version is refused at boot. */
export const PLUGIN_API_VERSION = 1 as const;

/**
 * The drizzle database handle of the metadata database (DESIGN.md §3): SQLite (bun:sqlite) by default, or Postgres
 * (Bun's SQL client, drizzle `bun-sql`) when `metadata.driver` is `postgres`. Typed with the SQLite dialect's builders
 * either way; code meant for both dialects takes the tables from `tablesOf(db)`, awaits builders instead of calling
 * `.all()/.get()/.run()`, and runs transactions through `atomic` (core/db/index.ts, docs/plugins.md "Metadata").
 */
export type Db = BunSQLiteDatabase<Tables>;

/* ------------------------------------------------------------------ logging */

/** Structured JSON logger. Fields are merged into the line; never pass secrets. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** A logger that adds `fields` to every line (e.g. `{ repo }`, `{ reqId }`). */
  child(fields: Record<string, unknown>): Logger;
}

/* ------------------------------------------------------------------ worker pool */

/** Options of one pool task. */
export interface TaskOptions {
  /** Aborts the task: a queued task is dropped; a running one's thread is terminated (piscina starts a replacement). The promise rejects with an AbortError. */
  signal?: AbortSignal;
  /** ArrayBuffers to move (not copy) into the worker. */
  transfer?: ArrayBuffer[];
}

/**
 * The piscina worker pool. Task names are the exported functions of `workers/index.ts`
 * (e.g. `sha256File`, `rewriteDocument`). Inputs/outputs are structured-cloneable.
 */
export interface TaskPool {
  run<I, O>(task: string, input: I, opts?: TaskOptions): Promise<O>;
  /**
   * Whether an input of `sizeBytes` belongs in the pool: strictly larger than the config's `pool.offloadThresholdBytes`
   * (default 1 MiB). Smaller documents cost less to handle inline than to send to a thread.
   */
  offloads(sizeBytes: number): boolean;
  /** Queue length and utilisation (0..1), for metrics. */
  stats(): { queued: number; running: number; utilization: number; threads: number };
}

/* ------------------------------------------------------------------ upstream */

/** Options of one upstream request, on top of fetch's RequestInit. */
export interface UpstreamInit extends Omit<RequestInit, "signal"> {
  /** Milliseconds to wait for response headers (default from config, 10 s). */
  connectTimeoutMs?: number;
  /** Milliseconds of silence allowed between body chunks (default 30 s). */
  readTimeoutMs?: number;
  /** Retries for idempotent methods on connect errors / 502 / 503 / 504 (default 2). */
  retries?: number;
  signal?: AbortSignal;
}

/**
 * HTTP client for upstreams, bound to one repository: adds its configured credentials to requests whose
 * origin is the upstream's, never decompresses bodies (`decompress: false`), reuses connections, honours
 * HTTPS_PROXY/NO_PROXY, verifies TLS. Throws VaultError VAULT_UPSTREAM_DOWN / VAULT_UPSTREAM_TIMEOUT.
 * The returned body enforces the read timeout (errors the stream on stall).
 */
export interface UpstreamClient {
  fetch(url: string | URL, init?: UpstreamInit): Promise<Response>;
}

/* ------------------------------------------------------------------ artifacts (hosted + cache entries) */

/** One stored file of a repository (a row of `artifacts`), as plugins see it. */
export interface ArtifactEntry {
  repository: string;
  path: string;
  /** `sha256:<hex>`; null for negative-cache entries. */
  blobDigest: string | null;
  sizeBytes: number;
  contentType: string | null;
  status: number;
  kind: "artifact" | "metadata";
  /** Strong ETag we serve, quoted (`"sha256-…"`). */
  etag: string | null;
  upstreamEtag: string | null;
  upstreamLastModified: string | null;
  /** Extra headers replayed on every response from this entry. */
  headers: Record<string, string>;
  cacheFlags: string[];
  /** epoch ms */
  fetchedAt: number;
  /** epoch ms; null = immutable */
  expiresAt: number | null;
  lastAccessAt: number;
  hitCount: number;
}

/** Fields a writer sets when storing an artifact. */
export interface ArtifactPut {
  contentType?: string;
  kind?: "artifact" | "metadata";
  headers?: Record<string, string>;
  expect?: PutExpect;
}

/**
 * Repository-scoped file index over the content-addressed blob store: hosted uploads and the cache engine
 * both write through it. Blobs are written first (invisible until referenced); rows are then written in one
 * DB transaction, so a multi-file commit (`commit`) becomes visible all at once.
 */
export interface ArtifactStore {
  get(path: string): Promise<ArtifactEntry | null>;
  /** Streams `body` into the blob store (verified against `expect`) and records it at `path`, replacing any previous row. */
  put(path: string, body: ReadableStream<Uint8Array> | Uint8Array | string, opts?: ArtifactPut): Promise<ArtifactEntry>;
  /** Stores several files at once: all blobs first, then every row in one transaction. */
  commit(files: { path: string; body: ReadableStream<Uint8Array> | Uint8Array | string; opts?: ArtifactPut }[]): Promise<ArtifactEntry[]>;
  /** Removes the row (and drops the blob's refcount). Missing path is fine. */
  delete(path: string): Promise<void>;
  /** Rows whose path starts with `prefix`, ordered by path. */
  list(prefix: string, opts?: { limit?: number; after?: string }): Promise<ArtifactEntry[]>;
  /** Reads a stored file fully (for small metadata documents). Throws VAULT_NOT_FOUND. */
  read(entry: ArtifactEntry): Promise<Uint8Array>;
  /**
   * Answers `req` from the entry: 200/206/304/416 with Range, HEAD, ETag, Last-Modified, If-None-Match,
   * If-Modified-Since, If-Range (RFC 9110 §13, §14). Uses `Bun.file` (sendfile) on local drivers,
   * `302` to a presigned URL when the repository sets `redirectDownloads` on a remote driver, else streams.
   */
  respond(req: Request, entry: ArtifactEntry, extraHeaders?: Record<string, string>): Promise<Response>;
}

/* ------------------------------------------------------------------ cache engine */

/** How the cache treats one upstream path (DESIGN.md §4). */
export type CacheClass = "immutable" | "mutable";

/** Value of the `X-Vault-Cache` response header. */
export type CacheStatus = "HIT" | "MISS" | "REVALIDATED" | "STALE" | "BYPASS";

/** One proxied resource, described by the plugin. */
export interface CacheRequest {
  /** Repository-relative cache key (the artifact path); add a variant suffix for negotiated documents. */
  key: string;
  /** Absolute upstream URL (the plugin builds it from the configured upstream + validated components). */
  upstreamUrl: string;
  /** immutable: cached forever; mutable: revalidated after `ttlSeconds`. */
  class: CacheClass;
  /** Freshness for mutable entries, seconds (default: repository's `cache.metadataTtlSeconds`). */
  ttlSeconds?: number;
  /** Verified while streaming; mismatch → entry discarded, request fails / connection aborted. */
  expect?: PutExpect;
  /**
   * Digests besides sha256 verified the same way as `expect` (lower-case hex by algorithm), e.g. npm's `dist.integrity`
   * (sha512) and `dist.shasum` (sha1): hashed inline while streaming; a mismatch stores nothing and fails every client
   * (an error status when nothing was sent yet, else a cut connection, never a clean end). Also checked on BYPASS answers.
   */
  expectDigests?: { sha512?: string; sha1?: string };
  /** Extra upstream request headers (Accept, auth). */
  upstreamHeaders?: Record<string, string>;
  /** Content-Type to store when upstream sends none. */
  contentType?: string;
  /**
   * Rewrites a mutable document before it is stored (e.g. file URLs pointing at the vault). Receives the full
   * upstream body; runs once per upstream fetch, never per hit. Large documents should be handed to `ctx.pool`.
   */
  transform?: (body: Uint8Array, upstream: Response) => Promise<{ body: Uint8Array | string; contentType?: string }>;
  /** Upstream response headers to keep and replay (lower-case names). */
  keepHeaders?: string[];
}

/**
 * The proxy cache engine (DESIGN.md §4, specs/http-caching.md), bound to one repository: single-flight,
 * tee to client while writing, followers tail the growing spool file, digest verification, TTL +
 * conditional revalidation, stale-if-error, negative caching of 404/410.
 */
export interface CacheEngine {
  /** Answers `req` for the resource: HIT / MISS (streamed while stored) / REVALIDATED / STALE. Throws VaultError (rendered by the plugin). */
  serve(req: Request, spec: CacheRequest): Promise<Response>;
  /** Ensures the resource is cached and returns its entry (for prefetch, or plugins that post-process metadata). */
  fetch(spec: CacheRequest, opts?: { signal?: AbortSignal }): Promise<{ entry: ArtifactEntry; status: CacheStatus }>;
  /** Drops an entry (and its negative-cache record). */
  invalidate(key: string): Promise<void>;
}

/* ------------------------------------------------------------------ auth */

/** Permission actions, each implying the ones before it in this order: read < write < delete < admin. */
export type Action = "read" | "write" | "delete" | "admin";

/** Who is making a request. `anonymous` has `name === "anonymous"` and `userId === null`. */
export interface Principal {
  userId: number | null;
  name: string;
  isAdmin: boolean;
  /** How they authenticated. */
  via: "anonymous" | "basic" | "bearer" | "token" | "s3";
}

/** Auth core (DESIGN.md §6), repository-scoped for `authorize`/`require`. */
export interface AuthService {
  /** Reads `Authorization` (Basic user:password, Basic user:token, `Bearer <token>`). Throws 401 on bad credentials; anonymous when none. */
  authenticate(req: Request): Promise<Principal>;
  /** Whether `principal` may do `action` on this repository. */
  can(principal: Principal, action: Action): boolean;
  /** authenticate + can; throws VaultError 401 (no credentials) or 403 (not allowed). */
  require(req: Request, action: Action): Promise<Principal>;
  /** Appends to the audit log (every write and delete). */
  audit(entry: { principal: Principal; action: string; path?: string; detail?: Record<string, unknown>; req?: Request }): void;

  /*
   * Login flows of the ecosystems (npm adduser/logout, docker token endpoint, Conan authenticate, S3 SigV4).
   * The host's implementation (core/auth) always provides these; they are optional only so that a test double
   * of AuthService need not implement them.
   */

  /** Checks a user name + password given in a request body (npm adduser). Throws VaultError 401. */
  verifyPassword?(name: string, password: string): Promise<Principal>;
  /**
   * Issues an API token (`vault_<id>_<secret>`) for an authenticated user (npm login); the plaintext is returned
   * once. `expiresAt` epoch ms or null. Throws VaultError 401 for the anonymous principal.
   */
  createToken?(principal: Principal, o?: { name?: string; expiresInSeconds?: number }): Promise<{ id: string; token: string; expiresAt: number | null }>;
  /** Revokes an API token given in plaintext when it belongs to `principal` (or `principal` is an admin) (npm logout). */
  revokeToken?(principal: Principal, token: string): Promise<boolean>;
  /** Signs a registry token (HS256 JWT) valid `ttlSeconds` (docker token flow, Conan authenticate). */
  signToken?(claims: RegistryTokenClaims, ttlSeconds: number): string;
  /** Verifies a registry token made by `signToken`. Throws VaultError 401 (invalid, expired). */
  verifyToken?(jwt: string): RegistryTokenClaims;
  /** The owner and secret of an S3 access key, for SigV4 verification; null when unknown, expired or disabled. */
  lookupAccessKey?(accessKeyId: string): Promise<{ principal: Principal; secret: string } | null>;
}

/**
 * Claims of a registry token. `sub` is the user name (`""` or `anonymous` for anonymous pull tokens); `access` the
 * granted OCI scopes (distribution token spec). `iat`/`nbf`/`exp` are epoch **seconds**, filled in by `signToken`.
 */
export interface RegistryTokenClaims {
  sub: string;
  access?: { type: string; name: string; actions: string[] }[];
  iss?: string;
  aud?: string | string[];
  iat?: number;
  nbf?: number;
  exp?: number;
  jti?: string;
  [claim: string]: unknown;
}

/* ------------------------------------------------------------------ context and plugin */

/** Everything a plugin may use, for one repository. */
export interface PluginContext<C extends RepositoryConfig = RepositoryConfig> {
  /** Name, type, and the URL prefix the routes are mounted under (`/<name>`, or `""` on its own listener). */
  repo: { name: string; type: "proxy" | "hosted" | "group"; mount: string };
  /** The repository's validated config entry (core keys + this plugin's keys). */
  config: C;
  /** Public base URL of this repository as clients see it, without trailing slash, derived per request (`server.publicUrl` or the Host header). */
  baseUrl(req: Request): string;
  /**
   * Resolves a file path taken from this repository's config (a key file, a keyring): absolute paths unchanged,
   * relative ones against the config file's directory, as the core resolves `upstreamCaFile` and `storage.root`.
   */
  configPath(path: string): string;
  storage: StorageDriver;
  metadata: Db;
  artifacts: ArtifactStore;
  cache: CacheEngine;
  upstream: UpstreamClient;
  auth: AuthService;
  pool: TaskPool;
  log: Logger;
  /** Other repositories' contexts by name (group members). Only repositories of the same format. */
  member(name: string): PluginContext | undefined;
}

/* ------------------------------------------------------------------ web UI: packages and client set-up */

/** The package a stored file belongs to, as a plugin's `packageOf` names it (web UI, `/-/api/`). */
export interface PackageRef {
  /**
   * The package's name as its ecosystem writes it: a PyPI project (normalized), an npm package (`@scope/name`), an OCI
   * image (`library/alpine`), a directory of generic files.
   */
  name: string;
  /** The version the file belongs to (PyPI/npm version, OCI tag); omitted for files of no one version (OCI blobs). */
  version?: string;
  /** Label shown for the file (default: the path's last segment). */
  file?: string;
  /**
   * Where a client downloads the file, relative to the repository's base URL (percent-encoded as needed); default: the
   * stored path, each segment percent-encoded. null when the file has no plain download URL (OCI manifests, blobs).
   */
  url?: string | null;
}

/** One "how to configure your client" snippet of the web UI. */
export interface ClientSetup {
  /** The client, e.g. `pip`, `npm`, `docker`, `curl`. */
  client: string;
  /** What the snippet does, one short line (`Install from this index`). */
  title: string;
  /** Shell commands or a config file's text, ready to paste (shown verbatim, escaped). */
  code: string;
}

/**
 * The host's default {@link VaultPlugin.packageOf}: files grouped by directory. `a/b/c.tar.gz` → package `a/b`, file
 * `c.tar.gz`; a file at the root is its own package. Paths ending in `/` (directory listings) or holding a `#` (stored
 * variants of documents, `CacheRequest.key`) are no package file (null).
 * @param o.opaqueKeys `#` is part of a name, not a variant suffix (S3 object keys)
 */
export function directoryPackageOf(path: string, o?: { opaqueKeys?: boolean }): PackageRef | null {
  if (path === "" || path.endsWith("/") || (!o?.opaqueKeys && path.includes("#"))) return null;
  const i = path.lastIndexOf("/");
  return i <= 0 ? { name: path } : { name: path.slice(0, i), file: path.slice(i + 1) };
}

/**
 * The `host[:port]` of `url` when clients treat it as insecure and must be told to trust it (pip's `--trusted-host`,
 * Docker's `insecure-registries`, podman's `--tls-verify=false`): plain `http:` to a host other than `localhost`,
 * `127.0.0.0/8` or `[::1]`. Undefined otherwise (https, loopback, or not a URL). For `clientSetup` snippets.
 */
export function insecureHostOf(url: string): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  if (u.protocol !== "http:") return undefined;
  const h = u.hostname;
  if (h === "localhost" || h === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(h)) return undefined;
  return u.host;
}

/** One version of one package (retention: `compareVersions`, `deleteVersion`), named as {@link PackageRef} names it. */
export interface PackageVersion {
  /** The package, as `packageOf` names it (normalized PyPI project, npm `@scope/name`, OCI image). */
  name: string;
  /** The version (OCI: the tag), as `packageOf` gives it. */
  version: string;
}

/** What a plugin's `gc` hook receives: the repository's metadata and stores, nothing that talks to the network. */
export type GcContext<C extends RepositoryConfig = RepositoryConfig> = Pick<PluginContext<C>, "repo" | "config" | "storage" | "metadata" | "artifacts" | "log">;

/** The Elysia instance a plugin adds routes to (already prefixed with the repository mount). */
export type PluginApp = Elysia<any, any, any, any, any, any, any>;

/**
 * A plugin: one ecosystem's protocol. Built-in ones live in plugins/<format>/index.ts; third-party ones
 * are loaded by path or npm name from `plugins:` in the config. Checked at boot: `apiVersion` must equal
 * PLUGIN_API_VERSION, `configSchema` must compile, `format` must be unique.
 */
export interface VaultPlugin<C extends RepositoryConfig = RepositoryConfig> {
  /** Format id used in `repositories[].format`, e.g. `"pypi"`. */
  format: string;
  /** Must equal PLUGIN_API_VERSION. */
  apiVersion: number;
  /** Repository types this plugin supports. */
  types: ("proxy" | "hosted" | "group")[];
  /**
   * JSON Schema (draft-07, ajv) of this plugin's extra keys on a repository entry. Merged into the one config
   * schema under `repositories[]` when `format` matches; use `additionalProperties: false`-friendly `properties`.
   */
  configSchema: { type: "object"; properties: Record<string, unknown>; required?: string[] };
  /** Default upstream URL for proxy repositories that name none. */
  defaultUpstream?: string;
  /** Classifies a repository-relative path for the cache engine and metrics. */
  classify?(path: string): "artifact" | "metadata" | "stream";
  /** Adds routes for one repository. Runs once per repository at boot; throwing stops the boot. */
  routes(app: PluginApp, ctx: PluginContext<C>): void;
  /**
   * Adds routes outside `/<name>/` (e.g. OCI's `/v2/` and `/token`), once per plugin with every repository of
   * this format. Optional.
   */
  hostRoutes?(app: PluginApp, ctxs: PluginContext<C>[]): void;
  /**
   * The repository a request answered by this plugin's `hostRoutes` addresses, for `vault_http_requests_total` and the
   * access log's `repo` (e.g. OCI's `/v2/<repo>/<image>/…`, `/token?scope=repository:<repo>/<image>:pull`). Called
   * after the response is made, with the same `ctxs` as `hostRoutes`; must be cheap and not read the body. A name that
   * is not one of `ctxs`, `undefined`, or a throw counts the request under repository `-` (as without this hook). Optional.
   * @returns a repository name, or undefined when the request names none (`/v2/`, `_catalog`)
   */
  repositoryOf?(req: Request, ctxs: PluginContext<C>[]): string | undefined;
  /** Renders an error in the ecosystem's own format (status, headers from `err.headers`). */
  renderError(err: VaultError, req: Request): Response;
  /** If true the host does not check read permission before the plugin's routes (the plugin calls `ctx.auth.require`). */
  handlesAuth?: boolean;
  /**
   * If true the host's path check (core/http/path.ts) lets `%2F` through for this plugin's mounts (npm scoped names
   * `@scope%2fname`); the plugin must then parse such segments itself. Default false: `%2F` is refused with 400.
   */
  allowEncodedSlash?: boolean;
  /**
   * If true the host skips its path check (core/http/path.ts) for this plugin's mounts entirely: the plugin treats
   * the rest of the path as opaque names and validates them itself (S3 object keys may contain `//`, `%2F`, `%25`,
   * encoded control characters). Bun has already resolved `.`/`..` segments. Default false.
   */
  ownsPaths?: boolean;
  /**
   * Garbage collection of the plugin's own references (e.g. OCI blob links that no manifest references), run by
   * `vault gc` for each repository of this format BEFORE the blob sweep, so blobs whose last row it removed are swept
   * in the same run. Must be safe while the server runs on the same data: never remove rows younger than `olderThan`
   * (epoch ms). Receives a reduced context (no upstream, cache, auth or pool: gc runs outside the server too).
   * @returns how many artifact rows were removed
   */
  gc?(ctx: GcContext<C>, o: { olderThan: number }): Promise<{ removed: number }>;
  /**
   * Which package (and version) a stored file belongs to, for the web UI and `/-/api/` search and package pages
   * (DESIGN.md §1, docs/api.md). Called with the repository-relative path of an `artifacts` row (status 200); must be
   * pure and cheap (it runs for every candidate row of a search). Search narrows candidate rows with a case-insensitive
   * `LIKE` on the path before calling it, so the returned `name` (lower-cased, `-`, `_`, `.` alike) must occur in the
   * path. Optional: without it the host groups files by directory ({@link directoryPackageOf}).
   * @returns the package, or null for rows that are no package file (indexes, snapshots, renderings, markers)
   */
  packageOf?(path: string, ctx: PluginContext<C>): PackageRef | null;
  /**
   * "How to configure your client" for the web UI's repository and package pages: ready-to-paste commands and config
   * files built from `ctx.baseUrl(o.req)` (the URL clients see). Called per page view, never on the download path.
   * Optional: without it the UI shows a generic `curl` download.
   * @param o.package the package (and version) the page shows, when it shows one
   */
  clientSetup?(ctx: PluginContext<C>, o: { req: Request; package?: { name: string; version?: string } }): ClientSetup[];
  /**
   * Retention's `keepVersions` (docs/retention.md): orders two versions of one package by the format's rules (PEP 440,
   * semver, …): negative when `a` is older than `b`, positive when newer, 0 when the rules cannot tell (then the version
   * stored last counts as newer). The versions are those `packageOf` gives; files with the same package and version
   * are kept or removed together, files of no version (documents, indexes) never by `keepVersions`. Must be cheap and
   * pure, never throw. Optional; without it `retention.keepVersions` is a config error for the format.
   */
  compareVersions?(a: string, b: string): number;
  /**
   * Hosted retention: removes one version through the plugin's own delete path, so the package's documents (simple
   * pages, packuments, tag lists) are regenerated. Called by the retention job (`vault cleanup`, `vault serve`), which
   * writes the audit record. A version already gone removes nothing. Optional; without it hosted repositories of the
   * format accept only `retention.maxBytes`.
   * @returns the repository-relative paths removed and their total size in bytes
   */
  deleteVersion?(ctx: PluginContext<C>, v: PackageVersion): Promise<{ paths: string[]; bytes: number }>;
  /**
   * Air-gap export (`vault export --package`, docs/export-import.md): the package a stored row belongs to when
   * `packageOf` names none, for the rows a client needs together with the package's files: the package's documents
   * (simple pages and their snapshot, packuments and their renderings: no `version`, exported with any version of the
   * package) and a file's companions (PEP 658 `.metadata`, hosted version records: the file's version). Must be pure
   * and cheap. Optional: without it `--package` selects only the files `packageOf` names.
   * @returns the owning package (and version), or null for rows of no one package (root indexes, markers)
   */
  ownerOf?(path: string, ctx: PluginContext<C>): PackageRef | null;
  /**
   * Air-gap import (`vault import`, docs/export-import.md): called once per hosted repository of this format after an
   * import wrote to it, with the repository-relative paths of every row the archive holds for it (newly recorded or
   * already stored with the same bytes, so a second import repairs what a failed hook left). The plugin regenerates
   * the repository's index documents here (simple pages, packuments) so they list the imported files together with
   * the files already stored (imported proxy rows need none: they are cache entries); documents (`kind: metadata`)
   * the repository already had were kept as they were, not replaced by the exporter's. Runs in the importing process,
   * possibly while a server serves the same data: follow the plugin's rules for several processes. Optional: without
   * it the imported rows are served as exported, index documents included (exact for a whole repository imported into
   * an empty one).
   * @throws whatever fails; the import reports it (the rows stay recorded)
   */
  afterImport?(ctx: PluginContext<C>, o: { paths: string[] }): Promise<void>;
  /** Called after routes are mounted, before listening. */
  start?(ctx: PluginContext<C>): Promise<void>;
  /** Called on shutdown, after in-flight requests finished. */
  stop?(ctx: PluginContext<C>): Promise<void>;
}

/**
 * Builds the `serviceOf(ctx)` every format plugin keeps: one service object per repository, made on first use by the
 * factory of its type and shared by all of the repository's mounts, listeners and the groups that read it. Keyed by the
 * repository's config object (a WeakMap), so several vaults in one process never share a service.
 * @param make factories by repository type; `hosted` and `group` also get `serviceOf` itself (to reach members)
 * @returns `serviceOf(ctx)`
 * @throws Error when a repository's type has no factory (the host only sets up the types a plugin declares)
 */
export function serviceRegistry<S, C extends RepositoryConfig = RepositoryConfig>(make: {
  proxy?(ctx: PluginContext<C>): S;
  hosted?(ctx: PluginContext<C>, serviceOf: (ctx: PluginContext) => S): S;
  group?(ctx: PluginContext<C>, serviceOf: (ctx: PluginContext) => S): S;
}): (ctx: PluginContext) => S {
  const services = new WeakMap<object, S>();
  const serviceOf = (ctx: PluginContext): S => {
    let s = services.get(ctx.config);
    if (s !== undefined) return s;
    const f = make[ctx.repo.type];
    if (!f) throw new Error(`no ${ctx.repo.type} service for repository ${ctx.repo.name}`);
    s = f(ctx as PluginContext<C>, serviceOf);
    services.set(ctx.config, s);
    return s;
  };
  return serviceOf;
}

/** Identity helper that gives a plugin object its type. */
export function definePlugin<C extends RepositoryConfig = RepositoryConfig>(p: VaultPlugin<C>): VaultPlugin<C> {
  return p;
}

/** Plain-text error response (pip, apt, conda, conan, http clients): status + short message, never a 200 page. */
export function textError(err: VaultError): Response {
  return new Response(`${err.status} ${err.message}\n`, {
    status: err.status,
    headers: { "content-type": "text/plain; charset=utf-8", ...err.headers },
  });
}

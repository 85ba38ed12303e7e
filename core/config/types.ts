/** Config types: the typed shape of vault.config.ts / YAML (validated by the JSON Schema in core/config/schema.ts). */

/** Cache policy of a proxy repository. */
export interface CachePolicy {
  /** Freshness of mutable metadata (simple pages, packuments, tags, Release), seconds. Default 600. */
  metadataTtlSeconds?: number;
  /** How long an upstream 404/410 is remembered, seconds. Default 60. 0 disables negative caching. */
  negativeTtlSeconds?: number;
  /** Longest a stale entry may be served when upstream fails, seconds. Default 7 days. */
  maxStaleSeconds?: number;
  /** How long a follower waits for the leader's download before fetching on its own, seconds. Default 30. */
  lockTimeoutSeconds?: number;
  /**
   * For this long after expiry a stale entry is answered at once while one background revalidation runs, seconds
   * (RFC 5861 §3). Default 0: clients wait for the revalidation. An upstream's `stale-while-revalidate=N` also applies.
   */
  staleWhileRevalidateSeconds?: number;
}

/**
 * Retention policy of one repository (docs/retention.md). Every key is optional; a file goes when any policy names it.
 * Proxy: the cached file is evicted (fetched again on its next request). Hosted: `maxBytes` refuses uploads that would
 * exceed it (413 in the format's error shape); the other policies remove whole versions through the plugin's
 * `deleteVersion` hook (formats without one accept only `maxBytes`). Groups hold no files and take no policy.
 */
export interface RetentionPolicy {
  /** Remove files stored (proxy: fetched or revalidated; hosted: uploaded) more than this many days ago. */
  maxAgeDays?: number;
  /** Remove files not downloaded for this many days (last access; a file never downloaded counts from when it was stored). */
  unusedForDays?: number;
  /** Keep the newest N versions of each package (format's own version order: PEP 440, semver, …); older versions go. */
  keepVersions?: number;
  /**
   * Quota of the repository's stored files, bytes. Proxy: least-recently-used files are evicted until the total is under
   * it. Hosted: an upload that would take the total over it is refused (413).
   */
  maxBytes?: number;
}

/** `retention:` the periodic retention job of `vault serve` (core/retention.ts; docs/retention.md). */
export interface RetentionJobConfig {
  /**
   * Minutes between runs of the retention policies and the blob sweep inside `vault serve`. Default 60 when any
   * repository has a `retention` policy, else off; `0` turns it off. With several processes or nodes on one
   * database, one of them runs it per interval.
   */
  intervalMinutes?: number;
  /** Minimum age of an unreferenced blob before the periodic sweep deletes it, minutes. Default 60 (as `vault gc`). */
  gcMinAgeMinutes?: number;
}

/** Credentials sent to an upstream (Basic, or a Bearer token). */
export interface UpstreamAuth {
  /** Basic user; its password is `password`, else `token`. */
  username?: string;
  /** Basic password of `username`. */
  password?: string;
  /** Without `username`: sent as `Authorization: Bearer <token>`. */
  token?: string;
}

/** One repository entry. Plugin-specific keys sit beside the core ones (validated by the plugin's schema part). */
export interface RepositoryConfig {
  /** Unique name; the mount is `/<name>/`. `[a-z0-9][a-z0-9._-]*`. */
  name: string;
  /** Plugin id: `http`, `pypi`, `npm`, `oci`, `apt`, `conda`, `conan`, `s3`, or a third-party format. */
  format: string;
  /**
   * `proxy` (read-through cache of `upstream`), `hosted` (content stored here) or `group` (`members` merged); the
   * plugin's `types` say which it supports.
   */
  type: "proxy" | "hosted" | "group";
  /** Absolute http(s) URL of the upstream (proxy). Defaults to the plugin's `defaultUpstream`. */
  upstream?: string;
  /** Credentials sent to the upstream's origin only (never to hosts it redirects to). */
  upstreamAuth?: UpstreamAuth;
  /**
   * PEM file of extra CA certificates trusted for this repository's upstream requests (a private CA, a self-signed
   * mirror), in addition to the system roots; relative to the config file. Certificates are always verified.
   */
  upstreamCaFile?: string;
  /** Members of a group, in read order. */
  members?: string[];
  /** The hosted member that receives writes to a group. */
  writeTo?: string;
  /** Custom mount prefix instead of `/<name>` (e.g. `/apache` for seed-style backends). */
  prefix?: string;
  /**
   * TCP port of an extra listener of its own, serving this repository at the root path (buckets for s3, `/v2/` for
   * oci); `0` = any free port.
   */
  port?: number;
  /** Anonymous read; default `auth.anonymousRead` (true). */
  anonymousRead?: boolean;
  /** Cache policy (proxy). */
  cache?: CachePolicy;
  /** On a remote storage driver, answer downloads of stored files with a 302 to a presigned URL. */
  redirectDownloads?: boolean;
  /** Cleanup policies and quota (proxy and hosted; docs/retention.md). */
  retention?: RetentionPolicy;
  /** Plugin-specific keys. */
  [key: string]: unknown;
}

/** `server:` the main listener, data directory and logging (defaults: core/config/schema.ts CONFIG_DEFAULTS). */
export interface ServerConfig {
  /** Address the listeners bind. Default `127.0.0.1`; `0.0.0.0` for every interface. */
  host?: string;
  /** TCP port of the main listener. Default 8080; `0` = any free port. */
  port?: number;
  /** Directory of the SQLite file, blob store and spool. Default `./data`. */
  dataDir?: string;
  /** Public base URL clients use, e.g. `https://vault.example.com` (default: derived from the Host header). */
  publicUrl?: string;
  /** Least severe level logged. Default `info` (one access-log line per request). */
  logLevel?: "debug" | "info" | "warn" | "error";
  /** Seconds graceful shutdown waits for in-flight downloads. Default 30. */
  shutdownGraceSeconds?: number;
}

/**
 * `storage:` the blob store (DESIGN.md §3, core/storage/index.ts createStorage; docs/storage-s3.md). Default
 * `{ driver: "fs" }`.
 */
export type StorageConfig =
  | {
      driver: "fs";
      /** Directory of the store. Default `<dataDir>/store`; relative paths resolve against the config file's directory. */
      root?: string;
    }
  | {
      driver: "s3";
      /** Endpoint URL (MinIO, Ceph RGW). Default `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, else AWS S3. */
      endpoint?: string;
      /** Default `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`. */
      region?: string;
      /** Bucket holding the store; it must exist. */
      bucket: string;
      /** Path-style addressing (`endpoint/bucket/key`). Default true when `endpoint` is set, false on AWS. */
      pathStyle?: boolean;
      /** Static credentials. Default: the AWS SDK chain (environment, profile, web identity, instance role). */
      accessKeyId?: string;
      /** Secret of `accessKeyId`. */
      secretAccessKey?: string;
      /** Key prefix inside the bucket (e.g. `vault/`), so the bucket can hold other data too. */
      prefix?: string;
      /** Default of every repository's `redirectDownloads` (302 to a presigned URL for downloads of stored files). */
      redirectDownloads?: boolean;
    };

/**
 * `metadata:` the metadata database (DESIGN.md §3, §7). `sqlite` (default): `path` defaults to `<dataDir>/vault.db`
 * (`:memory:` allowed; relative paths resolve against the config file's directory). `postgres`: `url`
 * (`postgres://user:password@host:5432/db`, usually `${VAULT_PG_URL}`) of a database several vault nodes share; its
 * tables are created and migrated at start-up (docs/metadata-postgres.md).
 */
export type MetadataConfig = { driver: "sqlite"; path?: string } | { driver: "postgres"; url: string };

/** `auth:` anonymous-read default and identities bootstrapped at start-up (core/auth; errors there are VAULT_CONFIG). */
export interface AuthConfig {
  /** Anonymous read for repositories that do not say otherwise. Default true. */
  anonymousRead?: boolean;
  /** Admin bootstrapped at start-up when set (password usually `${VAULT_ADMIN_PASSWORD}`). */
  admin?: { user: string; password: string };
  /**
   * S3 access keys created or updated at start-up: `id` (access key id), `secret` (at least 8 characters), `user`
   * (created without a password when missing).
   */
  accessKeys?: { id: string; secret: string; user: string }[];
  /**
   * Key material for registry tokens and sealed S3 secrets; default: generated once and kept in the metadata DB.
   * Set it when several nodes share a database.
   */
  tokenSecret?: string;
}

/** `upstream:` defaults of every repository's upstream client (core/upstream/client.ts). */
export interface UpstreamDefaults {
  /** Bound on the time to the final response headers (redirects included), seconds. Default 10. */
  connectTimeoutSeconds?: number;
  /** Longest silence while a body chunk is awaited, seconds. Default 30. */
  readTimeoutSeconds?: number;
  /** Retries of GET/HEAD after connection errors and 502/503/504 (backoff 100 ms·2ⁿ). Default 2. */
  retries?: number;
}

/** `pool:` the worker-thread pool (core/pool.ts, DESIGN.md §5). */
export interface PoolConfig {
  /** Worker threads; default max(1, cores - 1). */
  threads?: number;
  /** Documents larger than this (bytes) are parsed/rewritten in the pool. Default 1 MiB. */
  offloadThresholdBytes?: number;
  /**
   * Proxy downloads announced larger than 1 MiB are hashed (sha256) on one extra thread that re-reads the spool file,
   * instead of on the event loop (core/cache/tail-hash.ts). Default: true when the machine has more than 2 cores.
   */
  tailHash?: boolean;
}

/** The whole configuration (DESIGN.md §1). */
export interface VaultConfig {
  /** Listeners, data directory, logging. */
  server?: ServerConfig;
  /** Blob store; default the filesystem under `<dataDir>/store`. */
  storage?: StorageConfig;
  /** Metadata database; default SQLite at `<dataDir>/vault.db`. */
  metadata?: MetadataConfig;
  /** Anonymous read and bootstrapped identities. */
  auth?: AuthConfig;
  /** Timeouts and retries of upstream requests. */
  upstream?: UpstreamDefaults;
  /** Worker threads. */
  pool?: PoolConfig;
  /** Third-party plugins: file paths (relative to the config file) or npm package names. */
  plugins?: string[];
  /** The repositories, each mounted at `/<name>/` (or `prefix`); names unique. */
  repositories?: RepositoryConfig[];
  /** The periodic retention job of `vault serve` (policies are per repository: `repositories[].retention`). */
  retention?: RetentionJobConfig;
  /** The seed read-through cache's format, accepted as is and mapped onto proxy repositories. */
  backends?: { type: string; config: Record<string, unknown> }[];
}

/** Types a config file: `export default defineConfig({...})`. */
export function defineConfig(c: VaultConfig): VaultConfig {
  return c;
}

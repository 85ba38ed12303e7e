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

/** Credentials sent to an upstream (Basic, or a Bearer token). */
export interface UpstreamAuth {
  username?: string;
  password?: string;
  token?: string;
}

/** One repository entry. Plugin-specific keys sit beside the core ones (validated by the plugin's schema part). */
export interface RepositoryConfig {
  /** Unique name; the mount is `/<name>/`. `[a-z0-9][a-z0-9._-]*`. */
  name: string;
  /** Plugin id: `http`, `pypi`, `npm`, `oci`, `apt`, `conda`, `conan`, `s3`, or a third-party format. */
  format: string;
  type: "proxy" | "hosted" | "group";
  /** Absolute http(s) URL of the upstream (proxy). Defaults to the plugin's `defaultUpstream`. */
  upstream?: string;
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
  /** An extra listener of its own (buckets at the root for s3, `/v2/` for oci). */
  port?: number;
  /** Anonymous read; default `auth.anonymousRead` (true). */
  anonymousRead?: boolean;
  cache?: CachePolicy;
  /** On a remote storage driver, answer downloads of stored files with a 302 to a presigned URL. */
  redirectDownloads?: boolean;
  /** Plugin-specific keys. */
  [key: string]: unknown;
}

export interface ServerConfig {
  host?: string;
  port?: number;
  /** Directory of the SQLite file, blob store and spool. Default `./data`. */
  dataDir?: string;
  /** Public base URL clients use, e.g. `https://vault.example.com` (default: derived from the Host header). */
  publicUrl?: string;
  logLevel?: "debug" | "info" | "warn" | "error";
  /** Seconds graceful shutdown waits for in-flight downloads. Default 30. */
  shutdownGraceSeconds?: number;
}

export type StorageConfig =
  | { driver: "fs"; root?: string }
  | {
      driver: "s3";
      endpoint?: string;
      region?: string;
      bucket: string;
      pathStyle?: boolean;
      accessKeyId?: string;
      secretAccessKey?: string;
      prefix?: string;
      redirectDownloads?: boolean;
    };

export type MetadataConfig = { driver: "sqlite"; path?: string } | { driver: "postgres"; url: string };

export interface AuthConfig {
  /** Anonymous read for repositories that do not say otherwise. Default true. */
  anonymousRead?: boolean;
  /** Admin bootstrapped at start-up when set (password usually `${VAULT_ADMIN_PASSWORD}`). */
  admin?: { user: string; password: string };
  /** S3 access keys declared for bootstrapping. */
  accessKeys?: { id: string; secret: string; user: string }[];
  /** Secret for signing registry tokens; default: generated and kept in the data dir. */
  tokenSecret?: string;
}

export interface UpstreamDefaults {
  connectTimeoutSeconds?: number;
  readTimeoutSeconds?: number;
  retries?: number;
}

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
  server?: ServerConfig;
  storage?: StorageConfig;
  metadata?: MetadataConfig;
  auth?: AuthConfig;
  upstream?: UpstreamDefaults;
  pool?: PoolConfig;
  /** Third-party plugins: file paths (relative to the config file) or npm package names. */
  plugins?: string[];
  repositories?: RepositoryConfig[];
  /** The seed read-through cache's format, accepted as is and mapped onto proxy repositories. */
  backends?: { type: string; config: Record<string, unknown> }[];
}

/** Types a config file: `export default defineConfig({...})`. */
export function defineConfig(c: VaultConfig): VaultConfig {
  return c;
}

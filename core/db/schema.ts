/**
 * The one metadata schema (drizzle): every table of the core, and the tables plugins declare, described ONCE in
 * {@link describeSchema} and built for both dialects from that description (DESIGN.md §3 "Metadata"):
 *
 * - SQLite (the embedded default): the exports of this module (`blobs`, `artifacts`, …), `drizzle-orm/sqlite-core`
 *   tables; migrations in core/db/migrations (`npx drizzle-kit generate`, drizzle.config.ts).
 * - Postgres (several nodes): {@link pgTables}, the same description built with `drizzle-orm/pg-core` column
 *   constructors; migrations in core/db/migrations-pg (`npx drizzle-kit generate --config drizzle.pg.config.ts`, which
 *   reads ./schema-pg.ts).
 *
 * Why one description and not two table files: drizzle needs a table object per dialect (sqlite-core and pg-core
 * columns differ in SQL types and value mapping), and two hand-kept files drift. The description is written against
 * a small kit of constructors ({@link SchemaKit}: text, int, bool, serial, table, index, primaryKey); the SQLite kit is
 * drizzle's own functions, the Postgres kit maps `int` to `bigint` (epoch ms does not fit an int4), `bool` to
 * `boolean` and `serial` to a bigint identity. Both results carry the SQLite tables' TypeScript type, so the stores
 * are written once; core/db/db.test.ts asserts the two builds have the same tables, columns, nullability, defaults,
 * keys and indexes. Portable on purpose: integers, text and booleans only (times are epoch ms), no dialect-only
 * features.
 */
import { sqliteTable, text, integer, primaryKey, index } from "drizzle-orm/sqlite-core";
import * as pg from "drizzle-orm/pg-core";

/** SQLite: drizzle's sqlite-core constructors. `int` is SQLite's 64-bit integer; `bool` an integer 0/1. */
const sqliteKit = {
  table: sqliteTable,
  text: (name: string) => text(name),
  int: (name: string) => integer(name),
  bool: (name: string) => integer(name, { mode: "boolean" }),
  serial: (name: string) => integer(name).primaryKey({ autoIncrement: true }),
  index,
  primaryKey,
};

/** The constructors the schema description is written with (the SQLite kit's types; see {@link pgKit}). */
export type SchemaKit = typeof sqliteKit;

/**
 * Postgres `text COLLATE "C"`: comparisons and ORDER BY in byte order, as SQLite's BINARY collation (UTF-8 byte order is
 * code point order), whatever the database's default collation. Path ranges (`>= prefix`, `< prefix + U+10FFFF`) and
 * S3 listings depend on it.
 */
const pgTextC = pg.customType<{ data: string; driverData: string }>({ dataType: () => 'text COLLATE "C"' });

/**
 * Postgres: pg-core constructors under the SQLite kit's types (the builders offer the same `.notNull()`, `.default()`,
 * `.primaryKey()`, `.unique()`, `.references()`, `.on()` calls the description uses). `text` is `text COLLATE "C"`,
 * `int` is `bigint` in number mode, `bool` is `boolean`, `serial` a `bigint` identity primary key.
 */
const pgKit = {
  table: pg.pgTable,
  text: (name: string) => pgTextC(name),
  int: (name: string) => pg.bigint(name, { mode: "number" }),
  bool: (name: string) => pg.boolean(name),
  serial: (name: string) => pg.bigint(name, { mode: "number" }).primaryKey().generatedByDefaultAsIdentity(),
  index: pg.index,
  primaryKey: pg.primaryKey,
} as unknown as SchemaKit;

/** The schema, described once; see the module comment. Table and column names are the SQL names. */
export function describeSchema(k: SchemaKit) {
  const { table, text, int, bool, serial, primaryKey, index } = k;
  /** Content-addressed blobs known to the store. `refCount` counts artifacts rows pointing at the blob. */
  const blobs = table("blobs", {
    /** `sha256:<hex>` */
    digest: text("digest").primaryKey(),
    sizeBytes: int("size_bytes").notNull(),
    refCount: int("ref_count").notNull().default(0),
    /** epoch ms */
    createdAt: int("created_at").notNull(),
  });

  /**
   * One addressable file of one repository: a cached upstream response (proxy) or an uploaded file (hosted).
   * `status` 404 rows are negative-cache entries (no blob). Metadata documents we rewrite are stored
   * as blobs of the rewritten bytes, so hits are served as pre-built bytes.
   */
  const artifacts = table(
    "artifacts",
    {
      repository: text("repository").notNull(),
      /** Repository-relative path, including a variant suffix for negotiated documents (e.g. `simple/foo/#json`). */
      path: text("path").notNull(),
      /** `sha256:<hex>`; null for negative entries. */
      blobDigest: text("blob_digest"),
      sizeBytes: int("size_bytes").notNull().default(0),
      contentType: text("content_type"),
      /** HTTP status this entry answers with: 200, or 404/410 for negative-cache entries. */
      status: int("status").notNull().default(200),
      /** `artifact` (immutable) or `metadata` (mutable, revalidated after expiresAt). */
      kind: text("kind").notNull().default("artifact"),
      /** Validators the upstream gave us, sent back on revalidation. */
      upstreamEtag: text("upstream_etag"),
      upstreamLastModified: text("upstream_last_modified"),
      /** Strong ETag we serve (derived from the stored bytes). */
      etag: text("etag"),
      /** Extra response headers to replay, JSON object (lower-case names). */
      headers: text("headers"),
      /** Upstream `Cache-Control` flags that bind us: `must-revalidate`, `no-cache`. Comma list. */
      cacheFlags: text("cache_flags"),
      fetchedAt: int("fetched_at").notNull(),
      /** epoch ms after which the entry must be revalidated; null = never (immutable). */
      expiresAt: int("expires_at"),
      lastAccessAt: int("last_access_at").notNull(),
      hitCount: int("hit_count").notNull().default(0),
    },
    (t) => [primaryKey({ columns: [t.repository, t.path] }), index("artifacts_blob_idx").on(t.blobDigest)],
  );

  /** People and machines that authenticate. */
  const users = table("users", {
    id: serial("id"),
    name: text("name").notNull().unique(),
    /** `Bun.password` hash (argon2id); null for users that may only use API tokens. */
    passwordHash: text("password_hash"),
    isAdmin: bool("is_admin").notNull().default(false),
    disabled: bool("disabled").notNull().default(false),
    createdAt: int("created_at").notNull(),
  });

  /**
   * API tokens. The token shown once to the user is `vault_<id>_<secret>`; only a hash of the secret is stored.
   * S3 access keys are tokens too (`kind = "s3"`): `id` is the access key id, and the secret is kept sealed
   * because SigV4 needs it to verify signatures.
   */
  const apiTokens = table(
    "api_tokens",
    {
      id: text("id").primaryKey(),
      userId: int("user_id")
        .notNull()
        .references(() => users.id, { onDelete: "cascade" }),
      name: text("name").notNull(),
      kind: text("kind").notNull().default("api"),
      /** Lower-case hex sha256 of the secret part (compared in constant time). */
      secretHash: text("secret_hash").notNull(),
      /**
       * S3 access keys only: the secret access key sealed with AES-256-GCM (`v1.<keyId>.<base64url iv|ciphertext|tag>`,
       * the token id as associated data), because SigV4 verification needs the secret itself. Null for API tokens.
       */
      sealedSecret: text("sealed_secret"),
      createdAt: int("created_at").notNull(),
      expiresAt: int("expires_at"),
      lastUsedAt: int("last_used_at"),
    },
    (t) => [index("api_tokens_user_idx").on(t.userId)],
  );

  /** Per-repository grants. `repository` may be `*`. `actions` is a comma list of read, write, delete, admin. */
  const permissions = table(
    "permissions",
    {
      userId: int("user_id")
        .notNull()
        .references(() => users.id, { onDelete: "cascade" }),
      repository: text("repository").notNull(),
      actions: text("actions").notNull(),
    },
    (t) => [primaryKey({ columns: [t.userId, t.repository] })],
  );

  /** Every write and delete, by whom, from where. Never holds secrets. */
  const auditLog = table(
    "audit_log",
    {
      id: serial("id"),
      at: int("at").notNull(),
      actor: text("actor").notNull(),
      action: text("action").notNull(),
      repository: text("repository"),
      path: text("path"),
      detail: text("detail"),
      remoteAddr: text("remote_addr"),
      requestId: text("request_id"),
    },
    (t) => [index("audit_log_at_idx").on(t.at)],
  );

  /**
   * Small key/value settings the vault generates once and shares between nodes through the database
   * (e.g. `auth.jwt_secret`, `auth.seal_key`: base64url random keys used when `auth.tokenSecret` is not configured).
   */
  const settings = table("settings", {
    key: text("key").primaryKey(),
    value: text("value").notNull(),
    /** epoch ms */
    createdAt: int("created_at").notNull(),
  });

  /* ------------------------------------------------------------------ s3 plugin (plugins/s3) */

  /**
   * Buckets of an `s3` repository. Objects themselves are `artifacts` rows at path `<bucket>/<key>` (so they live in
   * the content-addressed blob store with reference counts); their S3 metadata (ETag, user metadata, checksums) is
   * kept in the row's `headers`.
   */
  const s3Buckets = table(
    "s3_buckets",
    {
      repository: text("repository").notNull(),
      name: text("name").notNull(),
      /** User name of the creator (the bucket owner shown in listings and ACLs). */
      owner: text("owner").notNull(),
      /** LocationConstraint given at creation ("" = us-east-1). */
      region: text("region").notNull().default(""),
      /** epoch ms */
      createdAt: int("created_at").notNull(),
    },
    (t) => [primaryKey({ columns: [t.repository, t.name] })],
  );

  /** Multipart uploads in progress (CreateMultipartUpload … Complete/Abort). */
  const s3Uploads = table(
    "s3_uploads",
    {
      uploadId: text("upload_id").primaryKey(),
      repository: text("repository").notNull(),
      bucket: text("bucket").notNull(),
      key: text("key").notNull(),
      owner: text("owner").notNull(),
      contentType: text("content_type"),
      /** Object headers given at creation (user metadata, content-disposition, …), JSON object. */
      headers: text("headers").notNull().default("{}"),
      /** `crc32` | `crc32c` | `sha1` | `sha256` when the client asked for per-part checksums. */
      checksumAlgorithm: text("checksum_algorithm"),
      /** epoch ms */
      initiatedAt: int("initiated_at").notNull(),
    },
    (t) => [index("s3_uploads_bucket_idx").on(t.repository, t.bucket, t.key)],
  );

  /** Uploaded parts of a multipart upload; the bytes are a storage key under `uploads/`. */
  const s3Parts = table(
    "s3_parts",
    {
      uploadId: text("upload_id")
        .notNull()
        .references(() => s3Uploads.uploadId, { onDelete: "cascade" }),
      partNumber: int("part_number").notNull(),
      /** Storage key of the part's bytes (`uploads/s3/<uploadId>/<part>-<random>`). */
      storageKey: text("storage_key").notNull(),
      sizeBytes: int("size_bytes").notNull(),
      /** Hex md5 of the part (its ETag without quotes). */
      md5: text("md5").notNull(),
      /** base64 checksum of the part in the upload's algorithm, when any. */
      checksum: text("checksum"),
      /** epoch ms */
      modifiedAt: int("modified_at").notNull(),
    },
    (t) => [primaryKey({ columns: [t.uploadId, t.partNumber] })],
  );

  /* ------------------------------------------------------------------ oci plugin (plugins/oci) */

  /**
   * Blob upload sessions of hosted `oci` repositories (specs/oci.md §4), shared by every vault process on the database:
   * a `PATCH` may land on another process than the `POST`, or after a restart. The bytes are a file in the store's spool
   * directory; `sizeBytes` counts those received, advanced only by a conditional update from its previous value.
   */
  const ociUploads = table(
    "oci_uploads",
    {
      repository: text("repository").notNull(),
      /** Upload id (a UUID): the last segment of the upload `Location`, and `Docker-Upload-UUID`. */
      id: text("id").primaryKey(),
      /** Image (inside the repository) the session was opened for. */
      image: text("image").notNull(),
      /** The session's file, relative to the store's spool directory (`oci-uploads/<id>`). */
      path: text("path").notNull(),
      /** Bytes received (and synced to the file) so far. */
      sizeBytes: int("size_bytes").notNull().default(0),
      /**
       * The append or completion in progress, `<host>~<pid>~<uuid>`; null when none. Taken by a conditional update, so
       * two requests (in any processes) never write the session at once; a holder whose process is gone, or which has not
       * refreshed `updatedAt` for a minute, is taken over.
       */
      writer: text("writer"),
      /** epoch ms */
      createdAt: int("created_at").notNull(),
      /** Last activity (creation, append, heartbeat of a writer), epoch ms: idle time is measured from here. */
      updatedAt: int("updated_at").notNull(),
    },
    (t) => [index("oci_uploads_repository_idx").on(t.repository, t.updatedAt)],
  );

  return { blobs, artifacts, users, apiTokens, permissions, auditLog, settings, s3Buckets, s3Uploads, s3Parts, ociUploads };
}

/** The tables of one dialect, by their TypeScript names (both builds carry the SQLite tables' types). */
export type Tables = ReturnType<typeof describeSchema>;

/** The SQLite build of the schema. */
export const sqliteTables: Tables = describeSchema(sqliteKit);

/** The Postgres build of the schema (pg-core tables at run time; typed as {@link Tables}). */
export const pgTables: Tables = describeSchema(pgKit);

export const { blobs, artifacts, users, apiTokens, permissions, auditLog, settings, s3Buckets, s3Uploads, s3Parts, ociUploads } = sqliteTables;

/**
 * The Postgres build of the one metadata schema (core/db/schema.ts `pgTables`), exported table by table for
 * drizzle-kit (`npx drizzle-kit generate --config drizzle.pg.config.ts`), which reads a module's top-level tables.
 * Stores get the tables of their database from `tablesOf(db)` (core/db/index.ts), not from here.
 */
import { pgTables } from "./schema.ts";

export const { blobs, artifacts, users, apiTokens, permissions, auditLog, settings, s3Buckets, s3Uploads, s3Parts, ociUploads } = pgTables;

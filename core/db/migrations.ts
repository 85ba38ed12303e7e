/**
 * The drizzle-kit migrations of both dialects, generated from the one schema description (core/db/schema.ts):
 * SQLite in core/db/migrations/ (`npx drizzle-kit generate`), Postgres in core/db/migrations-pg/
 * (`npx drizzle-kit generate --config drizzle.pg.config.ts`). Embedded as text imports so a `bun build --compile`
 * binary carries them: nothing is read from disk at open. After generating a migration, add its import and its entry
 * in {@link MIGRATION_SQL} or {@link PG_MIGRATION_SQL}: core/db/db.test.ts fails while a file in a folder or an entry
 * of a journal is missing here.
 */
import { createHash } from "node:crypto";
import journal from "./migrations/meta/_journal.json";
import m0000 from "./migrations/0000_initial.sql" with { type: "text" };
import m0001 from "./migrations/0001_auth_settings_sealed_secret.sql" with { type: "text" };
import m0002 from "./migrations/0002_s3_plugin.sql" with { type: "text" };
import m0003 from "./migrations/0003_oci_uploads.sql" with { type: "text" };
import pgJournal from "./migrations-pg/meta/_journal.json";
import pg0000 from "./migrations-pg/0000_initial.sql" with { type: "text" };

/** SQL text of each migration, by journal tag. */
export const MIGRATION_SQL: Readonly<Record<string, string>> = {
  "0000_initial": m0000,
  "0001_auth_settings_sealed_secret": m0001,
  "0002_s3_plugin": m0002,
  "0003_oci_uploads": m0003,
};

/** SQL text of each Postgres migration, by journal tag. */
export const PG_MIGRATION_SQL: Readonly<Record<string, string>> = {
  "0000_initial": pg0000,
};

/** One migration as drizzle's migrators apply it (drizzle-orm's `MigrationMeta`). */
export interface MigrationMeta {
  /** Statements, split at drizzle-kit's `--> statement-breakpoint` markers. */
  sql: string[];
  /** Whether the file uses breakpoints. */
  bps: boolean;
  /** The journal's `when` (epoch ms): a database whose last applied migration is older gets this one. */
  folderMillis: number;
  /** sha256 hex of the SQL text, as drizzle's file reader records it. */
  hash: string;
}

/**
 * The migrations of a dialect in journal order, shaped as drizzle's file-based reader would return them from the folder
 * (same statements, timestamps and hashes), so databases migrated either way agree.
 * @param dialect `sqlite` (default) or `postgres`
 * @throws Error naming the tag when the journal lists a migration that is not embedded
 */
export function embeddedMigrations(dialect: "sqlite" | "postgres" = "sqlite"): MigrationMeta[] {
  const [j, texts] = dialect === "postgres" ? [pgJournal, PG_MIGRATION_SQL] : [journal, MIGRATION_SQL];
  return j.entries.map((e) => {
    const text = texts[e.tag];
    if (text === undefined) throw new Error(`${dialect} migration ${e.tag} is in the journal but not embedded (core/db/migrations.ts)`);
    return { sql: text.split("--> statement-breakpoint"), bps: e.breakpoints, folderMillis: e.when, hash: createHash("sha256").update(text).digest("hex") };
  });
}

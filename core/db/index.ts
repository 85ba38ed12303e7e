/** Opens the metadata database: bun:sqlite in WAL mode, drizzle over the one schema, migrations applied at open. */
import { Database } from "bun:sqlite";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { drizzle } from "drizzle-orm/bun-sqlite";
import * as schema from "./schema.ts";
import { embeddedMigrations, type MigrationMeta } from "./migrations.ts";
import type { Db } from "../plugin.ts";

export type { Db } from "../plugin.ts";

/** Folder of the drizzle-kit generated migrations (their text is embedded by ./migrations.ts; nothing reads this at run time). */
export const MIGRATIONS_DIR = join(import.meta.dir, "migrations");

/** drizzle's migration runner, present on every drizzle database object but not in its public types. */
interface MigratingDb {
  dialect: { migrate(m: MigrationMeta[], session: unknown, config: { migrationsFolder: string }): void };
  session: unknown;
}

/** An open metadata database. */
export interface OpenDb {
  /** drizzle handle over {@link schema}; pass it (or a transaction from `db.transaction`) to the stores. */
  db: Db;
  /** The underlying bun:sqlite connection, for pragmas and raw statements. */
  sqlite: Database;
  /** Closes the connection (idempotent). */
  close(): void;
}

/**
 * Opens (creating when missing) the SQLite metadata database at `path` (DESIGN.md §3 "Metadata").
 *
 * Sets `journal_mode=WAL` (not for `:memory:`, which SQLite keeps in `memory` mode), `synchronous=NORMAL`,
 * `foreign_keys=ON` and `busy_timeout=5000` (ms), then applies every pending migration (embedded from
 * {@link MIGRATIONS_DIR} by ./migrations.ts, the same way drizzle's bun-sqlite migrator applies the folder). Reopening an existing file applies only what is new, so it is idempotent.
 *
 * @param path file path (its parent directory is created) or `":memory:"`
 * @throws Error from bun:sqlite when the file cannot be opened, or from the migrator when a migration fails
 *   (the connection is closed before rethrowing)
 */
export function openDb(path: string): OpenDb {
  const memory = path === ":memory:" || path === "";
  if (!memory) mkdirSync(dirname(path), { recursive: true });
  const sqlite = new Database(path, { create: true, strict: true });
  try {
    sqlite.exec("PRAGMA busy_timeout = 5000");
    if (!memory) sqlite.exec("PRAGMA journal_mode = WAL");
    sqlite.exec("PRAGMA synchronous = NORMAL");
    sqlite.exec("PRAGMA foreign_keys = ON");
    const db = drizzle(sqlite, { schema });
    const m = db as unknown as MigratingDb;
    m.dialect.migrate(embeddedMigrations(), m.session, { migrationsFolder: MIGRATIONS_DIR });
    let closed = false;
    return {
      db,
      sqlite,
      close() {
        if (closed) return;
        closed = true;
        sqlite.close();
      },
    };
  } catch (err) {
    sqlite.close();
    throw err;
  }
}

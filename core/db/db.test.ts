/** openDb: pragmas, migrations creating every table of the schema, idempotent reopen. */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { getTableConfig, SQLiteTable } from "drizzle-orm/sqlite-core";
import { eq } from "drizzle-orm";
import { readdirSync } from "node:fs";
import { Database } from "bun:sqlite";
import { drizzle } from "drizzle-orm/bun-sqlite";
import { migrate } from "drizzle-orm/bun-sqlite/migrator";
import { readMigrationFiles } from "drizzle-orm/migrator";
import { MIGRATIONS_DIR, openDb } from "./index.ts";
import { MIGRATION_SQL, embeddedMigrations } from "./migrations.ts";
import * as schema from "./schema.ts";
import { tmpDataDir } from "../../test/helpers/tmp.ts";

const schemaTables = (Object.values(schema) as unknown[])
  .filter((t): t is SQLiteTable => t instanceof SQLiteTable)
  .map((t) => getTableConfig(t).name)
  .sort();

function tableNames(sqlite: import("bun:sqlite").Database): string[] {
  return sqlite
    .query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '__drizzle%' ORDER BY name")
    .all()
    .map((r) => r.name);
}

describe("openDb", () => {
  test("file database: WAL, synchronous NORMAL, foreign keys, busy timeout", async () => {
    const path = join(await tmpDataDir(), "nested", "vault.db");
    const { sqlite, close } = openDb(path);
    try {
      expect(sqlite.query<{ journal_mode: string }, []>("PRAGMA journal_mode").get()?.journal_mode).toBe("wal");
      expect(sqlite.query<{ synchronous: number }, []>("PRAGMA synchronous").get()?.synchronous).toBe(1); // NORMAL
      expect(sqlite.query<{ foreign_keys: number }, []>("PRAGMA foreign_keys").get()?.foreign_keys).toBe(1);
      expect(sqlite.query<{ timeout: number }, []>("PRAGMA busy_timeout").get()?.timeout).toBe(5000);
    } finally {
      close();
    }
    expect(await Bun.file(path).exists()).toBe(true);
  });

  test("migrations create every table of core/db/schema.ts", () => {
    expect(schemaTables.length).toBeGreaterThanOrEqual(6);
    const { sqlite, close } = openDb(":memory:");
    try {
      expect(tableNames(sqlite)).toEqual(schemaTables);
    } finally {
      close();
    }
  });

  test("foreign keys are enforced", () => {
    const { db, close } = openDb(":memory:");
    try {
      expect(() =>
        db.insert(schema.apiTokens).values({ id: "t1", userId: 999, name: "x", secretHash: "h", createdAt: 1 }).run(),
      ).toThrow(/FOREIGN KEY/);
    } finally {
      close();
    }
  });

  test("reopening an existing file keeps data and applies nothing twice", async () => {
    const path = join(await tmpDataDir(), "vault.db");
    const first = openDb(path);
    first.db.insert(schema.blobs).values({ digest: "sha256:" + "a".repeat(64), sizeBytes: 3, refCount: 1, createdAt: 1000 }).run();
    const applied = first.sqlite.query<{ n: number }, []>("SELECT count(*) AS n FROM __drizzle_migrations").get()?.n;
    expect(applied).toBeGreaterThanOrEqual(1);
    first.close();
    first.close(); // idempotent

    const second = openDb(path);
    try {
      expect(tableNames(second.sqlite)).toEqual(schemaTables);
      expect(second.sqlite.query<{ n: number }, []>("SELECT count(*) AS n FROM __drizzle_migrations").get()?.n).toBe(applied!);
      const row = second.db.select().from(schema.blobs).where(eq(schema.blobs.digest, "sha256:" + "a".repeat(64))).get();
      expect(row).toEqual({ digest: "sha256:" + "a".repeat(64), sizeBytes: 3, refCount: 1, createdAt: 1000 });
    } finally {
      second.close();
    }
  });

  test("every migration drizzle-kit wrote is embedded, identical to what drizzle's folder reader returns", () => {
    const files = readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith(".sql")).map((f) => f.replace(/\.sql$/, "")).sort();
    expect(Object.keys(MIGRATION_SQL).sort()).toEqual(files);
    expect(embeddedMigrations()).toEqual(readMigrationFiles({ migrationsFolder: MIGRATIONS_DIR }));
  });

  test("a database migrated from the folder by drizzle's own migrator opens with nothing applied twice", async () => {
    const path = join(await tmpDataDir(), "vault.db");
    const raw = new Database(path, { create: true });
    migrate(drizzle(raw), { migrationsFolder: MIGRATIONS_DIR });
    const before = raw.query<{ n: number }, []>("SELECT count(*) AS n FROM __drizzle_migrations").get()!.n;
    raw.close();
    const o = openDb(path);
    try {
      expect(o.sqlite.query<{ n: number }, []>("SELECT count(*) AS n FROM __drizzle_migrations").get()!.n).toBe(before);
      expect(tableNames(o.sqlite)).toEqual(schemaTables);
    } finally {
      o.close();
    }
  });
});

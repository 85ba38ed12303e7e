/**
 * The metadata database: openDb (SQLite pragmas, migrations creating every table, idempotent reopen), openPostgres on a
 * real server (migrations, several nodes migrating at once), the two builds of the one schema description being the
 * same tables, and the dialect-neutral helpers (atomic, rows, exec) on both drivers.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { getTableConfig, SQLiteTable } from "drizzle-orm/sqlite-core";
import { getTableConfig as getPgTableConfig } from "drizzle-orm/pg-core";
import { eq, sql } from "drizzle-orm";
import { readdirSync } from "node:fs";
import { Database } from "bun:sqlite";
import { drizzle } from "drizzle-orm/bun-sqlite";
import { migrate } from "drizzle-orm/bun-sqlite/migrator";
import { readMigrationFiles } from "drizzle-orm/migrator";
import { MIGRATIONS_DIR, PG_MIGRATIONS_DIR, type OpenPostgresDb, atomic, dialectOf, exec, openDb, openPostgres, pgErrorCode, rows, tablesOf } from "./index.ts";
import { MIGRATION_SQL, PG_MIGRATION_SQL, embeddedMigrations } from "./migrations.ts";
import * as schema from "./schema.ts";
import { pgTables, sqliteTables } from "./schema.ts";
import { tmpDataDir } from "../../test/helpers/tmp.ts";
import { checkConfig } from "../config/schema.ts";
import httpPlugin from "../../plugins/http/index.ts";
import { metadataDrivers, useMetadata } from "../../test/helpers/metadata.ts";

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

describe("one schema description, two dialects", () => {
  /** Everything of a table that must agree between the SQLite and the Postgres build, with SQL types mapped. */
  function shape(t: unknown, pg: boolean) {
    const c = pg ? getPgTableConfig(t as never) : getTableConfig(t as never);
    const type = (col: { columnType: string; getSQLType(): string }) => {
      if (!pg) return col.columnType === "SQLiteBoolean" ? "bool" : col.getSQLType();
      return { PgBigInt53: "integer", PgBoolean: "bool", PgCustomColumn: col.getSQLType() === 'text COLLATE "C"' ? "text" : col.getSQLType() }[col.columnType] ?? col.getSQLType();
    };
    const tableName = (x: unknown) => (pg ? getPgTableConfig(x as never) : getTableConfig(x as never)).name;
    return {
      name: c.name,
      columns: c.columns.map((col) => ({
        name: col.name,
        type: type(col),
        notNull: col.notNull,
        primary: col.primary,
        default: col.default,
        unique: col.isUnique,
        // SQLite AUTOINCREMENT ↔ Postgres identity
        generated: pg ? (col as unknown as { generatedIdentity?: unknown }).generatedIdentity !== undefined : (col as unknown as { autoIncrement?: boolean }).autoIncrement === true,
      })),
      primaryKeys: c.primaryKeys.map((k) => k.columns.map((x) => x.name)),
      indexes: c.indexes.map((i) => ({ name: i.config.name, columns: i.config.columns.map((x) => (x as { name: string }).name), unique: i.config.unique })),
      foreignKeys: c.foreignKeys.map((f) => {
        const r = f.reference();
        return { columns: r.columns.map((x) => x.name), table: tableName(r.foreignTable), foreign: r.foreignColumns.map((x) => x.name), onDelete: f.onDelete };
      }),
    };
  }

  test("the SQLite and Postgres builds have the same tables, columns, types, defaults, keys and indexes", () => {
    const names = Object.keys(sqliteTables);
    expect(Object.keys(pgTables)).toEqual(names);
    expect(names.length).toBeGreaterThanOrEqual(11);
    for (const n of names) {
      const k = n as keyof typeof sqliteTables;
      expect({ table: n, ...shape(pgTables[k], true) }).toEqual({ table: n, ...shape(sqliteTables[k], false) });
    }
    // and the shape is not trivially empty
    expect(shape(sqliteTables.users, false).columns.find((c) => c.name === "id")).toMatchObject({ type: "integer", primary: true, generated: true });
    expect(shape(pgTables.artifacts, true).primaryKeys).toEqual([["repository", "path"]]);
  });

  test("the module's exports are the SQLite build; every Postgres migration is embedded as drizzle's folder reader returns it", () => {
    expect(schema.artifacts).toBe(sqliteTables.artifacts);
    const files = readdirSync(PG_MIGRATIONS_DIR).filter((f) => f.endsWith(".sql")).map((f) => f.replace(/\.sql$/, "")).sort();
    expect(Object.keys(PG_MIGRATION_SQL).sort()).toEqual(files);
    expect(embeddedMigrations("postgres")).toEqual(readMigrationFiles({ migrationsFolder: PG_MIGRATIONS_DIR }));
  });
});

describe("metadata config", () => {
  test("postgres needs a postgres:// URL; it resolves as given; sqlite stays the default", () => {
    const plugins = new Map([["http", httpPlugin]]);
    const ok = checkConfig({ metadata: { driver: "postgres", url: "postgresql://u:p@127.0.0.1:5432/vault" } }, plugins);
    expect(ok.errors).toEqual([]);
    expect(ok.config?.metadata).toEqual({ driver: "postgres", url: "postgresql://u:p@127.0.0.1:5432/vault" });
    expect(checkConfig({ metadata: { driver: "postgres", url: "mysql://x/y" } }, plugins).errors).toEqual(["metadata.url: must be a postgres:// or postgresql:// URL"]);
    expect(checkConfig({ metadata: { driver: "postgres" } }, plugins).errors.join("\n")).toContain("url");
    expect(checkConfig({}, plugins).config?.metadata).toEqual({ driver: "sqlite" });
  });
});

const pgOnly = metadataDrivers().includes("postgres");

describe.if(pgOnly)("openPostgres", () => {
  const md = useMetadata("postgres");

  const pgTableNames = async (client: Bun.SQL) =>
    ((await client`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name`) as { table_name: string }[]).map((r) => r.table_name);

  test("migrations create every table of the schema; text sorts in byte order (COLLATE \"C\") like SQLite", async () => {
    const o = (await md.open()) as OpenPostgresDb;
    expect(dialectOf(o.db)).toBe("postgres");
    expect(tablesOf(o.db)).toBe(pgTables);
    expect(await pgTableNames(o.client)).toEqual(schemaTables);
    const { artifacts } = tablesOf(o.db);
    for (const path of ["a-b", "ab", "B", "a\u{10ffff}", "é", "a/b"])
      await o.db.insert(artifacts).values({ repository: "r", path, fetchedAt: 1, lastAccessAt: 1 });
    const sorted = (await o.db.select({ p: artifacts.path }).from(artifacts).orderBy(artifacts.path)).map((r) => r.p);
    expect(sorted).toEqual(["B", "a-b", "a/b", "ab", "a\u{10ffff}", "é"]);
    await o.ping();
  });

  test("several nodes starting at once apply each migration once (advisory lock); reopening applies nothing", async () => {
    const first = (await md.open()) as OpenPostgresDb;
    await first.client.unsafe("DROP SCHEMA public CASCADE; CREATE SCHEMA public; DROP SCHEMA drizzle CASCADE");
    const nodes = await Promise.all([md.reopen(first), md.reopen(first), md.reopen(first), md.reopen(first)]);
    const [{ n }] = (await first.client`SELECT count(*)::int AS n FROM drizzle.__drizzle_migrations`) as { n: number }[];
    expect(n).toBe(embeddedMigrations("postgres").length);
    expect(await pgTableNames(first.client)).toEqual(schemaTables);
    await md.reopen(first);
    const [{ n: again }] = (await first.client`SELECT count(*)::int AS n FROM drizzle.__drizzle_migrations`) as { n: number }[];
    expect(again).toBe(n);
    for (const o of nodes) expect(dialectOf(o.db)).toBe("postgres");
  });

  test("foreign keys are enforced; errors carry the SQLSTATE", async () => {
    const { db } = await md.open();
    const t = tablesOf(db);
    const e = await db.insert(t.apiTokens).values({ id: "t1", userId: 999, name: "x", secretHash: "h", createdAt: 1 }).then(
      () => null,
      (x: unknown) => x,
    );
    expect(pgErrorCode(e)).toBe("23503");
  });

  test("an unreachable server fails the open with the driver's error", async () => {
    await expect(openPostgres("postgres://vault@127.0.0.1:1/vault", { connectTimeoutSeconds: 2 })).rejects.toThrow();
  });
});

for (const driver of metadataDrivers()) {
  describe(`atomic (${driver})`, () => {
    const md = useMetadata(driver);

    test("commits every statement together, returns the work's value; a throw rolls everything back", async () => {
      const { db } = await md.open();
      const { blobs } = tablesOf(db);
      const got = await atomic(db, function* (tx) {
        yield* exec(tx.insert(blobs).values({ digest: "sha256:a", sizeBytes: 1, refCount: 1, createdAt: 1 }));
        const r = yield* rows(tx.select().from(blobs));
        return r.length;
      });
      expect(got).toBe(1);
      await expect(
        atomic(db, function* (tx) {
          yield* exec(tx.insert(blobs).values({ digest: "sha256:b", sizeBytes: 1, refCount: 1, createdAt: 1 }));
          throw new Error("no");
        }),
      ).rejects.toThrow("no");
      expect((await db.select().from(blobs)).map((b) => b.digest)).toEqual(["sha256:a"]);
    });

    test("read-modify-write under the same lock names from two connections never loses an update", async () => {
      const a = await md.open();
      const b = await md.reopen(a);
      const { settings } = tablesOf(a.db);
      await a.db.insert(settings).values({ key: "n", value: "0", createdAt: 1 });
      const bump = (db: typeof a.db) =>
        atomic(
          db,
          function* (tx) {
            const [r] = yield* rows(tx.select().from(settings).where(eq(settings.key, "n")));
            yield* exec(tx.update(settings).set({ value: String(Number(r.value) + 1) }).where(eq(settings.key, "n")));
          },
          { locks: ["counter:n"] },
        );
      await Promise.all(Array.from({ length: 20 }, (_, i) => bump(i % 2 ? a.db : b.db)));
      const [r] = await a.db.select().from(settings).where(eq(settings.key, "n"));
      expect(r.value).toBe("20");
      expect((await a.db.select({ n: sql<number>`count(*)`.mapWith(Number) }).from(settings))[0].n).toBe(1);
    });
  });
}

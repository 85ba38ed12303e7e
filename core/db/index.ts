/**
 * Opens the metadata database (DESIGN.md §3 "Metadata"): SQLite through bun:sqlite in WAL mode (the embedded default),
 * or Postgres through Bun's SQL client (several nodes on one database), drizzle over the one schema, migrations applied
 * at open. Also the dialect-neutral helpers the stores are written with: {@link tablesOf}, {@link dialectOf},
 * {@link atomic} (transactions) with {@link rows} / {@link exec} (their statements), {@link first}.
 *
 * How one store runs on both: `Db` carries the SQLite drizzle types; on Postgres the object is a drizzle `bun-sql`
 * database and the tables are the pg build of the same description (`tablesOf(db)`). Both accept the same builder
 * calls (`select/insert/update/delete`, `onConflictDoNothing/DoUpdate({ target, set, setWhere })`, `returning`), and
 * both builders are awaitable. Not portable, so not used by the stores: the SQLite-only synchronous terminators
 * `.all()/.get()/.run()` outside {@link atomic}, and SQL functions of one dialect (two-argument `max`, `greatest`).
 */
import { Database } from "bun:sqlite";
import { SQL } from "bun";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/bun-sqlite";
import { drizzle as drizzlePg } from "drizzle-orm/bun-sql";
import { pgTables, sqliteTables, type Tables } from "./schema.ts";
import { embeddedMigrations, type MigrationMeta } from "./migrations.ts";
import type { Db } from "../plugin.ts";

export type { Db } from "../plugin.ts";
export type { Tables } from "./schema.ts";

/** Folder of the drizzle-kit generated SQLite migrations (their text is embedded by ./migrations.ts; nothing reads this at run time). */
export const MIGRATIONS_DIR = join(import.meta.dir, "migrations");
/** Folder of the drizzle-kit generated Postgres migrations (embedded the same way). */
export const PG_MIGRATIONS_DIR = join(import.meta.dir, "migrations-pg");

/** The SQL dialect of a metadata database. */
export type Dialect = "sqlite" | "postgres";

/** drizzle's migration runner, present on every drizzle database object but not in its public types. */
interface MigratingDb {
  dialect: { migrate(m: MigrationMeta[], session: unknown, config: { migrationsFolder: string }): void | Promise<void> };
  session: unknown;
}

/** Dialect and tables of each database object opened here (a drizzle db made elsewhere counts as SQLite). */
const known = new WeakMap<object, { dialect: Dialect; tables: Tables }>();

/** The dialect of `db`: `postgres` for a database opened by {@link openPostgres}, else `sqlite`. */
export function dialectOf(db: Db): Dialect {
  return known.get(db)?.dialect ?? "sqlite";
}

/**
 * The schema's tables for `db`'s dialect (core/db/schema.ts): pass these, not the module's exports (which are the
 * SQLite build), to queries on a database that may be Postgres.
 */
export function tablesOf(db: Db): Tables {
  return known.get(db)?.tables ?? sqliteTables;
}

/** An open metadata database. */
export interface OpenDb {
  /** drizzle handle over the schema; pass it to the stores (transactions: {@link atomic}). */
  db: Db;
  dialect: Dialect;
  /** Resolves when the database answers `SELECT 1`. @throws the driver's error */
  ping(): Promise<void>;
  /** Closes the connection(s) (idempotent). */
  close(): void | Promise<void>;
}

/** An open SQLite metadata database. */
export interface OpenSqliteDb extends OpenDb {
  dialect: "sqlite";
  /** The underlying bun:sqlite connection, for pragmas and raw statements. */
  sqlite: Database;
  close(): void;
}

/** An open Postgres metadata database. */
export interface OpenPostgresDb extends OpenDb {
  dialect: "postgres";
  /** The underlying Bun SQL client (a pool). */
  client: SQL;
  close(): Promise<void>;
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
export function openDb(path: string): OpenSqliteDb {
  const memory = path === ":memory:" || path === "";
  if (!memory) mkdirSync(dirname(path), { recursive: true });
  const sqlite = new Database(path, { create: true, strict: true });
  try {
    sqlite.exec("PRAGMA busy_timeout = 5000");
    if (!memory) sqlite.exec("PRAGMA journal_mode = WAL");
    sqlite.exec("PRAGMA synchronous = NORMAL");
    sqlite.exec("PRAGMA foreign_keys = ON");
    const db = drizzle(sqlite, { schema: sqliteTables });
    const m = db as unknown as MigratingDb;
    m.dialect.migrate(embeddedMigrations(), m.session, { migrationsFolder: MIGRATIONS_DIR });
    known.set(db, { dialect: "sqlite", tables: sqliteTables });
    let closed = false;
    return {
      db,
      dialect: "sqlite",
      sqlite,
      async ping() {
        sqlite.query("SELECT 1").get();
      },
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

/** Options of {@link openPostgres}. */
export interface PostgresOptions {
  /** Connections in the pool (default 10). */
  maxConnections?: number;
  /** Seconds to wait for a connection (default 10). */
  connectTimeoutSeconds?: number;
}

/** Key of the session-level advisory lock held while migrating (any node starting at the same time waits on it). */
const MIGRATION_LOCK = "artifact-vault:migrate";

/**
 * Opens a Postgres metadata database at `url` (`postgres://user:pass@host:port/db`, or a unix socket via `?host=`) with
 * Bun's SQL client and drizzle's `bun-sql` driver, after applying the pending Postgres migrations (embedded from
 * {@link PG_MIGRATIONS_DIR}). Migrations run on a connection of their own holding a session advisory lock, so several
 * nodes starting at once apply each migration exactly once (the others wait, then find nothing to do).
 * @throws Error from the driver when the server cannot be reached or refuses the login, or from a failing migration
 *   (the pool is closed before rethrowing)
 */
export async function openPostgres(url: string, o: PostgresOptions = {}): Promise<OpenPostgresDb> {
  const connectionTimeout = o.connectTimeoutSeconds ?? 10;
  const lockConn = new SQL(url, { max: 1, connectionTimeout });
  try {
    await lockConn`SELECT pg_advisory_lock(hashtextextended(${MIGRATION_LOCK}, 0))`;
    const mdb = drizzlePg({ client: lockConn }) as unknown as MigratingDb;
    await mdb.dialect.migrate(embeddedMigrations("postgres"), mdb.session, { migrationsFolder: PG_MIGRATIONS_DIR });
  } finally {
    await lockConn.close(); // ends the session: releases the advisory lock
  }
  const client = new SQL(url, { max: o.maxConnections ?? 10, connectionTimeout });
  const db = drizzlePg({ client }) as unknown as Db;
  known.set(db, { dialect: "postgres", tables: pgTables });
  let closed: Promise<void> | undefined;
  return {
    db,
    dialect: "postgres",
    client,
    async ping() {
      await client`SELECT 1`;
    },
    close() {
      return (closed ??= client.close());
    },
  };
}

/**
 * Opens the metadata database the config names: `metadata.driver` `sqlite` (`metadata.path`, default
 * `<dataDir>/vault.db`) or `postgres` (`metadata.url`).
 * @throws as {@link openDb} / {@link openPostgres}
 */
export async function openMetadata(md: { driver: "sqlite"; path?: string } | { driver: "postgres"; url: string }, dataDir: string): Promise<OpenDb> {
  if (md.driver === "postgres") return openPostgres(md.url);
  return openDb(md.path ?? join(dataDir, "vault.db"));
}

/* ------------------------------------------------------------------ units of work */

/** One statement of a unit of work: a drizzle query builder, and whether its rows are wanted. */
export interface Step {
  query: unknown;
  rows: boolean;
}

/** A unit of work for {@link atomic}: a generator that yields its statements (through {@link rows} / {@link exec}). */
export type Work<T> = Generator<Step, T, unknown>;

/** A transaction handle inside {@link atomic} (typed as SQLite's; a drizzle pg transaction on Postgres). */
export type Tx = Parameters<Parameters<Db["transaction"]>[0]>[0];

/** A database handle or a transaction opened on one. */
export type DbOrTx = Db | Tx;

/** The rows of a select or `…returning()` statement inside a unit of work: `const r = yield* rows(tx.select()…)`. */
export function* rows<T>(query: PromiseLike<T>): Work<T> {
  return (yield { query, rows: true }) as T;
}

/** Executes a statement whose result is not needed, inside a unit of work: `yield* exec(tx.update()…)`. */
export function* exec(query: PromiseLike<unknown>): Work<void> {
  yield { query, rows: false };
}

/** The first row of a result, or undefined (`first(await db.select()…limit(1))`). */
export function first<T>(r: T[]): T | undefined {
  return r[0];
}

/** SQLSTATE of a Postgres error (drizzle wraps the driver's error in `cause`), or undefined. */
export function pgErrorCode(e: unknown): string | undefined {
  for (let x = e as { errno?: unknown; code?: unknown; cause?: unknown } | undefined, i = 0; x && i < 4; x = x.cause as typeof x, i++) {
    if (typeof x.errno === "string" && /^[0-9A-Z]{5}$/.test(x.errno)) return x.errno;
    if (typeof x.code === "string" && /^[0-9A-Z]{5}$/.test(x.code)) return x.code;
  }
  return undefined;
}

/** serialization_failure, deadlock_detected: the transaction is rolled back and may simply run again. */
const RETRYABLE = new Set(["40001", "40P01"]);
/** Attempts of a Postgres unit of work that keeps failing with a retryable error. */
const ATTEMPTS = 5;

/** Options of {@link atomic}. */
export interface AtomicOptions {
  /**
   * Postgres: names to take transaction-scoped advisory locks on (`pg_advisory_xact_lock(hashtextextended(name, 0))`)
   * before the work, in sorted order (so two units of work never wait on each other crosswise). Serialises units of
   * work on the same names across every node; a hash collision only serialises more. SQLite needs none: its
   * transactions are serial.
   */
  locks?: string[];
}

/**
 * Runs `work` as ONE transaction and returns its result.
 *
 * - SQLite: synchronously inside drizzle's `db.transaction`, each yielded statement executed at once (`.all()` /
 *   `.run()`), so nothing else on the connection can interleave and the transaction is over before this returns its
 *   promise (the behaviour of the synchronous code it replaces).
 * - Postgres: inside `db.transaction(async …)` (READ COMMITTED) after the advisory `locks`, each statement awaited;
 *   retried from the start (the generator is made again) on a serialization failure or deadlock, at most 5 times.
 *
 * `work` must keep its effects inside the database (or in values it returns): on Postgres it may run more than once.
 * @throws whatever a statement or `work` throws (the transaction is rolled back)
 */
export async function atomic<T>(db: Db, work: (tx: Tx) => Work<T>, o?: AtomicOptions): Promise<T> {
  if (dialectOf(db) === "sqlite") {
    return db.transaction((tx) => {
      const g = work(tx);
      for (let r = g.next(); ; ) {
        if (r.done) return r.value;
        const q = r.value.query as { all(): unknown; run(): unknown };
        r = g.next(r.value.rows ? q.all() : q.run());
      }
    });
  }
  const locks = [...new Set(o?.locks ?? [])].sort();
  for (let attempt = 1; ; attempt++) {
    try {
      return await (db as unknown as PgLike).transaction(async (tx) => {
        for (const k of locks) await tx.execute(sql`SELECT pg_advisory_xact_lock(hashtextextended(${k}, 0))`);
        const g = work(tx as unknown as Tx);
        for (let r = g.next(); ; ) {
          if (r.done) return r.value;
          r = g.next(await (r.value.query as PromiseLike<unknown>));
        }
      });
    } catch (e) {
      const code = pgErrorCode(e);
      if (attempt >= ATTEMPTS || !code || !RETRYABLE.has(code)) throw e;
      await Bun.sleep(Math.random() * 20 * attempt);
    }
  }
}

/** The part of a drizzle pg database {@link atomic} uses. */
interface PgLike {
  transaction<T>(fn: (tx: { execute(q: unknown): Promise<unknown> }) => Promise<T>): Promise<T>;
}

/**
 * Runs a suite against each metadata driver: SQLite (a file in a temp dir) and Postgres (a real server from
 * test/helpers/postgres.ts, one per test file, a fresh database per `open()`). Under `CI=true` a missing Postgres fails
 * the run; elsewhere the Postgres variant is left out with a printed reason.
 *
 * ```ts
 * for (const driver of metadataDrivers()) describe(`blob store (${driver})`, () => {
 *   const md = useMetadata(driver);
 *   test("…", async () => { const { db } = await md.open(); … });
 * });
 * ```
 */
import { afterAll, beforeAll } from "bun:test";
import { join } from "node:path";
import { openDb, openPostgres, type Dialect, type OpenDb } from "../../core/db/index.ts";
import { requirePostgres, startPostgres, type TestPostgres } from "./postgres.ts";
import { tmpDataDir } from "./tmp.ts";

let available: boolean | undefined;

/** `["sqlite", "postgres"]`, or `["sqlite"]` when no Postgres server is installed (outside CI only; see requirePostgres). */
export function metadataDrivers(): Dialect[] {
  available ??= requirePostgres();
  return available ? ["sqlite", "postgres"] : ["sqlite"];
}

/** The metadata databases of one suite (see {@link useMetadata}). */
export interface TestMetadata {
  readonly driver: Dialect;
  /** A fresh, migrated, empty database of the driver (closed after the suite). */
  open(): Promise<OpenDb>;
  /** Opens the same database once more (another connection / pool, as another process would). */
  reopen(o: OpenDb): Promise<OpenDb>;
  /** The Postgres server (postgres only; set once the suite's beforeAll ran). */
  readonly server: TestPostgres | undefined;
  /** The `metadata:` config section of a database made by {@link open} (a vault process opens it itself). */
  configOf(o: OpenDb): { driver: "sqlite"; path: string } | { driver: "postgres"; url: string };
}

/** Postgres server shared by the suites of the current test file, with how many of them use it. */
let shared: { server: Promise<TestPostgres>; users: number } | undefined;

/**
 * Registers the suite's hooks for `driver` (call inside `describe`): Postgres is started in beforeAll (shared by the
 * suites of one file) and stopped, with every database opened, in afterAll.
 */
export function useMetadata(driver: Dialect): TestMetadata {
  const opened: OpenDb[] = [];
  const where = new WeakMap<OpenDb, string>();
  let server: TestPostgres | undefined;
  beforeAll(async () => {
    if (driver !== "postgres") return;
    shared ??= { server: startPostgres(), users: 0 };
    shared.users++;
    server = await shared.server;
  });
  afterAll(async () => {
    for (const o of opened.splice(0)) await o.close();
    if (driver !== "postgres" || !shared) return;
    if (--shared.users === 0) {
      const s = shared.server;
      shared = undefined;
      await (await s).stop();
    }
  });
  const track = <T extends OpenDb>(o: T, at: string): T => {
    opened.push(o);
    where.set(o, at);
    return o;
  };
  return {
    driver,
    get server() {
      return server;
    },
    async open() {
      if (driver === "sqlite") {
        const path = join(await tmpDataDir("vault-md-"), "vault.db");
        return track(openDb(path), path);
      }
      const url = await server!.freshDatabase();
      return track(await openPostgres(url), url);
    },
    async reopen(o) {
      const at = where.get(o)!;
      return track(driver === "sqlite" ? openDb(at) : await openPostgres(at), at);
    },
    configOf(o) {
      const at = where.get(o)!;
      return driver === "sqlite" ? { driver, path: at } : { driver, url: at };
    },
  };
}

/** `vault gc`: removes orphan temp/spool files and unreferenced blobs older than a minimum age. */
import { existsSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_CONFIG_FILES, loadConfig } from "../../config/load.ts";
import type { VaultConfig } from "../../config/types.ts";
import { openDb } from "../../db/index.ts";
import { createBlobStore } from "../../storage/blobs.ts";
import { createStorage } from "../../storage/index.ts";

const USAGE = `usage: vault gc [--config FILE] [--data DIR] [--min-age-minutes N]

Removes temp/spool files (*.part-*) and blobs no artifact references, when older than N minutes (default 60).
Safe while the server runs on the same data directory: young files are never touched.
`;

/** Where the data lives, resolved like the server does: `--data`, else `server.dataDir` against the config's directory. */
interface Target {
  dataDir: string;
  config: VaultConfig;
  dbPath: string;
}

async function resolveTarget(configFile: string | undefined, dataArg: string | undefined): Promise<Target> {
  const cwd = process.cwd();
  let config: VaultConfig = {};
  let configDir = cwd;
  if (configFile !== undefined || DEFAULT_CONFIG_FILES.some((f) => existsSync(resolve(cwd, f)))) {
    const loaded = await loadConfig(configFile);
    config = loaded.config;
    configDir = loaded.configDir;
  }
  const abs = (p: string, base: string) => (isAbsolute(p) ? p : resolve(base, p));
  const dataDir = dataArg !== undefined ? abs(dataArg, cwd) : abs(config.server?.dataDir ?? "./data", configDir);
  const storage = config.storage?.driver === "fs" && config.storage.root ? { ...config.storage, root: abs(config.storage.root, configDir) } : config.storage;
  const meta = config.metadata;
  if (meta?.driver === "postgres") throw new Error("vault gc: metadata.driver postgres is not supported yet");
  const dbPath = meta?.path ? abs(meta.path, configDir) : join(dataDir, "vault.db");
  return { dataDir, config: { ...config, storage }, dbPath };
}

/**
 * Runs `vault gc`: `driver.cleanTemp(minAge)`, then `blobs.sweep(now - minAge)` (see BlobStore.sweep), and prints
 * what was removed. Refuses to run when the metadata database does not exist (sweeping without it would treat every
 * blob as unreferenced).
 *
 * @param args the arguments after `gc`
 * @param io where to print (default stdout/stderr)
 * @returns exit code: 0 done, 1 failure, 2 usage error
 */
export async function run(
  args: string[],
  io: { out: (s: string) => void; err: (s: string) => void } = {
    out: (s) => process.stdout.write(s),
    err: (s) => process.stderr.write(s),
  },
): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        config: { type: "string", short: "c" },
        data: { type: "string" },
        "min-age-minutes": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    io.err(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  const minutes = values["min-age-minutes"] === undefined ? 60 : Number(values["min-age-minutes"]);
  if (!Number.isFinite(minutes) || minutes < 0) {
    io.err(`--min-age-minutes must be a number of minutes ≥ 0, got ${JSON.stringify(values["min-age-minutes"])}\n`);
    return 2;
  }
  const ageMs = Math.round(minutes * 60_000);

  try {
    const t = await resolveTarget(values.config, values.data);
    if (!existsSync(t.dbPath)) {
      io.err(`vault gc: no metadata database at ${t.dbPath}; refusing to sweep blobs without it\n`);
      return 1;
    }
    const driver = createStorage(t.config.storage, t.dataDir);
    const { db, close } = openDb(t.dbPath);
    try {
      const temp = await driver.cleanTemp(ageMs);
      const swept = await createBlobStore(db, driver).sweep(Date.now() - ageMs);
      io.out(
        `removed ${temp} temp file${temp === 1 ? "" : "s"} and ${swept.removed} blob${swept.removed === 1 ? "" : "s"} ` +
          `(${swept.bytes} bytes) older than ${minutes} minutes from ${t.dataDir}\n`,
      );
    } finally {
      close();
      await driver.close?.();
    }
    return 0;
  } catch (e) {
    io.err(`vault gc: ${(e as Error).message}\n`);
    return 1;
  }
}

/** `vault gc`: removes orphan temp/spool files and blobs unreferenced for a minimum age. */
import { existsSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { DEFAULT_CONFIG_FILES, loadConfig } from "../../config/load.ts";
import type { VaultConfig } from "../../config/types.ts";
import { openMetadata } from "../../db/index.ts";
import { createBlobStore, type BlobStore } from "../../storage/blobs.ts";
import { createStorage } from "../../storage/index.ts";
import type { StorageDriver } from "../../storage/driver.ts";
import { loadPlugins } from "../../loader.ts";
import { mountOf, resolveConfig } from "../../config/schema.ts";
import { createArtifactStore } from "../../artifacts.ts";
import { createLogger } from "../../log.ts";
import type { Db, GcContext } from "../../plugin.ts";
import { parseDataCommandArgs, STDIO, type CommandIo } from "../args.ts";

const USAGE = `usage: vault gc [--config FILE] [--data DIR] [--min-age-minutes N]

Removes temp/spool files (*.part-*) older than N minutes (default 60), and blobs no artifact references that
were neither written nor released (their last reference dropped) in the last N minutes.
Before the blob sweep, each plugin's own gc runs for its repositories (e.g. oci: blob links no manifest
references; s3: abandoned multipart uploads).
Safe while servers write to the same store (docs/retention.md "gc"): a blob being written is never deleted once
referenced; with N = 0 a write racing the sweep may fail with a retryable 503, never leave a dangling file.
Retention policies (repositories[].retention) are applied by "vault cleanup".
`;


/** Where the data lives, resolved like the server does: `--data`, else `server.dataDir` against the config's directory. */
interface Target {
  dataDir: string;
  config: VaultConfig;
  configDir: string;
  /** The SQLite file; undefined with the Postgres driver. */
  dbPath: string | undefined;
  /** The Postgres driver's settings, when configured. */
  metadata?: { driver: "postgres"; url: string };
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
  const dbPath = meta?.driver === "postgres" ? undefined : meta?.path ? abs(meta.path, configDir) : join(dataDir, "vault.db");
  return { dataDir, config: { ...config, storage }, configDir, dbPath, metadata: meta?.driver === "postgres" ? meta : undefined };
}

/**
 * Runs `vault gc`: `driver.cleanTemp(minAge)`, the plugins' gc hooks, then `blobs.sweep(now - minAge)` (see
 * BlobStore.sweep: blobs unreferenced, and not written, for `minAge`), and prints
 * what was removed. Refuses to run when the metadata database does not exist (sweeping without it would treat every
 * blob as unreferenced).
 *
 * @param args the arguments after `gc`
 * @param io where to print (default stdout/stderr)
 * @returns exit code: 0 done, 1 failure, 2 usage error
 */
export async function run(args: string[], io: CommandIo = STDIO): Promise<number> {
  const parsed = parseDataCommandArgs(args, { "min-age-minutes": { type: "string" } }, USAGE, io, false);
  if (typeof parsed === "number") return parsed;
  const { values } = parsed;
  const minutes = values["min-age-minutes"] === undefined ? 60 : Number(values["min-age-minutes"]);
  if (!Number.isFinite(minutes) || minutes < 0) {
    io.err(`--min-age-minutes must be a number of minutes ≥ 0, got ${JSON.stringify(values["min-age-minutes"])}\n`);
    return 2;
  }
  const ageMs = Math.round(minutes * 60_000);

  try {
    const t = await resolveTarget(values.config, values.data);
    if (t.dbPath !== undefined && !existsSync(t.dbPath)) {
      io.err(`vault gc: no metadata database at ${t.dbPath}; refusing to sweep blobs without it\n`);
      return 1;
    }
    const { db, close } = await openMetadata(t.metadata ?? { driver: "sqlite", path: t.dbPath }, t.dataDir);
    const driver = createStorage(t.config.storage, t.dataDir);
    try {
      const temp = await driver.cleanTemp(ageMs);
      const store = createBlobStore(db, driver);
      const rows = await runPluginGc(t, db, store, driver, Date.now() - ageMs);
      if (rows.repositories > 0) io.out(`plugins removed ${rows.removed} unreferenced row${rows.removed === 1 ? "" : "s"} in ${rows.repositories} repositor${rows.repositories === 1 ? "y" : "ies"}\n`);
      const swept = await store.sweep(Date.now() - ageMs);
      io.out(
        `removed ${temp} temp file${temp === 1 ? "" : "s"} and ${swept.removed} blob${swept.removed === 1 ? "" : "s"} ` +
          `(${swept.bytes} bytes) older than ${minutes} minutes from ${t.dataDir}\n`,
      );
    } finally {
      await close();
      await driver.close?.();
    }
    return 0;
  } catch (e) {
    io.err(`vault gc: ${(e as Error).message}\n`);
    return 1;
  }
}

/**
 * Runs the `gc` hook (core/plugin.ts VaultPlugin.gc) of every plugin that has one, once per repository of its format,
 * with a GcContext over this process's own artifact store (no upstream, cache, auth or pool). Rows younger than
 * `olderThan` (epoch ms) are left alone by contract. Runs before the blob sweep so blobs whose last row went are swept
 * in the same run.
 * @returns rows removed and repositories visited
 * @throws ConfigError / PluginLoadError when the config or a plugin is invalid (gc then removes nothing)
 */
export async function runPluginGc(
  t: { config: VaultConfig; configDir: string },
  db: Db,
  blobs: BlobStore,
  driver: StorageDriver,
  olderThan: number,
): Promise<{ removed: number; repositories: number }> {
  const repos = t.config.repositories ?? [];
  if (repos.length === 0 && !(t.config.backends && t.config.backends.length)) return { removed: 0, repositories: 0 };
  const plugins = await loadPlugins(t.config, t.configDir);
  const config = resolveConfig(t.config, plugins, { configDir: t.configDir });
  const log = createLogger("warn");
  let removed = 0;
  let repositories = 0;
  for (const repo of config.repositories) {
    const plugin = plugins.get(repo.format);
    if (!plugin?.gc) continue;
    const rlog = log.child({ repo: repo.name });
    const artifacts = createArtifactStore({ db, blobs, repo, log: rlog });
    const ctx: GcContext = { repo: { name: repo.name, type: repo.type, mount: mountOf(repo) }, config: repo, storage: driver, metadata: db, artifacts, log: rlog };
    try {
      removed += (await plugin.gc(ctx, { olderThan })).removed;
      repositories++;
    } finally {
      await artifacts.close();
    }
  }
  return { removed, repositories };
}

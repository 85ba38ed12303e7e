/** `vault export`: writes a resolved set of stored files (any format) as one archive with a manifest of digests (docs/export-import.md). */
import { existsSync } from "node:fs";
import { createWriteStream } from "node:fs";
import { open, rename, unlink } from "node:fs/promises";
import { join, resolve } from "node:path";
import { SingleBar } from "cli-progress";
import { applyOverrides, loadConfig } from "../../config/load.ts";
import { resolveConfig } from "../../config/schema.ts";
import { loadPlugins } from "../../loader.ts";
import { createLogger } from "../../log.ts";
import { createVault, type Vault } from "../../server.ts";
import { formatBytes } from "../../ui/html.ts";
import { TEMP_OWNER } from "../../storage/driver.ts";
import {
  expandRepositories,
  parseSelector,
  parseSelectorList,
  planExport,
  sourceOf,
  storeOf,
  TransferError,
  writeArchive,
  type PackageSelector,
  type TransferRepository,
} from "../../transfer.ts";
import { parseDataCommandArgs, STDIO, type CommandIo } from "../args.ts";
import type { ProgressStream } from "./prefetch.ts";

const USAGE = `usage: vault export [--config FILE] [--data DIR] --out FILE [--repo NAME]... [--package NAME[@VERSION]]... [--list FILE] [--since DATE]

Writes the selected stored files of this vault as one tar archive: manifest.json first (source, and per file:
repository, format, type, path, size, sha256, content type, package and version, upstream validators), then
each blob once under blobs/sha256/<hex>. "vault import" reads it on another vault (docs/export-import.md).

  --out FILE                 the archive (written to FILE.part~… and renamed when complete); "-" for standard output
  --repo NAME                only this repository (repeatable; a group stands for its members). Default: every
                             proxy and hosted repository. A proxy exports its cached files and documents, which the
                             other vault then serves offline as cache hits
  --package NAME[@VERSION]   only this package: every stored file of it (all versions, or one), with its documents
                             (simple page, packument) and companions (.metadata, version records). Repeatable
  --list FILE                more --package selectors, one NAME[@VERSION] per line (# comments)
  --since DATE               only files stored (uploaded, fetched) at or after DATE (2025-03-01 or an ISO 8601 time)

A --package that matches no stored file is an error (nothing is written).
`;


/** The repositories of an opened vault as export and import see them. */
export function transferRepositories(vault: Vault): Map<string, TransferRepository> {
  const out = new Map<string, TransferRepository>();
  for (const [name, ctx] of vault.repositories) out.set(name, { ctx, plugin: vault.plugins.get(ctx.config.format)! });
  return out;
}

/**
 * Opens the vault of `--config` / `--data` without a listener (database migrated, plugins started), as `vault cleanup`
 * does, for commands that work on its stores.
 * @param requireDb refuse when the SQLite metadata database does not exist yet (the message says why)
 * @throws ConfigError, PluginLoadError, TransferError (no database)
 */
export async function openCliVault(values: { config?: string; data?: string }, requireDb: boolean): Promise<{ vault: Vault; configFile: string }> {
  const loaded = await loadConfig(values.config);
  const raw = values.data !== undefined ? applyOverrides(loaded.config, { dataDir: resolve(values.data) }) : loaded.config;
  const plugins = await loadPlugins(raw, loaded.configDir, { builtins: "needed" });
  const config = resolveConfig(raw, plugins, { configDir: loaded.configDir, source: loaded.file });
  if (requireDb && config.metadata.driver === "sqlite") {
    const dbPath = config.metadata.path ?? join(config.server.dataDir, "vault.db");
    if (dbPath !== ":memory:" && !existsSync(dbPath)) throw new TransferError(`no metadata database at ${dbPath}: this vault has stored nothing`);
  }
  const vault = await createVault(raw, { configDir: loaded.configDir, plugins, resolved: config, log: createLogger("warn"), accessLog: false });
  return { vault, configFile: loaded.file };
}

/** A byte progress bar on a TTY (nothing otherwise): `label [bar] 42% | 1.2 GiB/3.0 GiB | 85 MiB/s`. */
export function byteProgress(out: ProgressStream, label: string): { start(total: number): void; add(n: number): void; stop(): void } {
  if (out.isTTY !== true) return { start() {}, add() {}, stop() {} };
  const bar = new SingleBar({
    stream: out as NodeJS.WritableStream,
    format: `${label} [{bar}] {percentage}% | {done}/{size} | {rate}`,
    barsize: 24,
    hideCursor: true,
    clearOnComplete: false,
    gracefulExit: true,
  });
  let done = 0;
  let total = 0;
  let t0 = 0;
  let last = 0;
  const payload = () => ({ done: formatBytes(done), size: formatBytes(total), rate: `${formatBytes(done / Math.max((performance.now() - t0) / 1000, 0.001))}/s` });
  return {
    start(n) {
      total = n;
      t0 = performance.now();
      bar.start(Math.max(n, 1), 0, payload());
    },
    add(n) {
      done += n;
      const now = performance.now();
      if (now - last < 100 && done < total) return;
      last = now;
      bar.update(Math.min(done, Math.max(total, 1)), payload());
    },
    stop() {
      bar.update(Math.max(total, 1), payload());
      bar.stop();
    },
  };
}

/**
 * Parses `--since`: `YYYY-MM-DD` (UTC midnight) or an ISO 8601 date-time.
 * @returns epoch ms
 * @throws TransferError for anything else
 */
export function parseSince(s: string): number {
  const ms = /^\d{4}-\d{2}-\d{2}$/.test(s) ? Date.parse(`${s}T00:00:00Z`) : /^\d{4}-\d{2}-\d{2}T/.test(s) ? Date.parse(s) : NaN;
  if (!Number.isFinite(ms)) throw new TransferError(`--since: expected a date (2025-03-01) or an ISO 8601 time (2025-03-01T12:00:00Z), got ${JSON.stringify(s)}`);
  return ms;
}

/**
 * Runs `vault export`: selects the rows ({@link planExport}), writes the archive ({@link writeArchive}) to
 * `--out` through a temp file renamed when complete (a failed export leaves no archive), draws a byte progress bar
 * on a TTY and prints what was exported per repository.
 * @param args the arguments after `export`
 * @param io where to print the report (progress goes to `progress`, default stderr)
 * @returns exit code: 0 written, 1 failure (nothing written), 2 usage error
 */
export async function run(args: string[], io: CommandIo = STDIO, progress: ProgressStream = process.stderr): Promise<number> {
  const parsed = parseDataCommandArgs(
    args,
    { out: { type: "string", short: "o" }, repo: { type: "string", multiple: true }, package: { type: "string", multiple: true }, list: { type: "string" }, since: { type: "string" } },
    USAGE,
    io,
    false,
  );
  if (typeof parsed === "number") return parsed;
  const { values } = parsed;
  if (!values.out) {
    io.err(`vault export: --out FILE is required\n${USAGE}`);
    return 2;
  }
  let packages: PackageSelector[];
  let since: number | undefined;
  try {
    packages = (values.package ?? []).map(parseSelector);
    if (values.list !== undefined) packages.push(...parseSelectorList(await Bun.file(values.list).text()));
    since = values.since !== undefined ? parseSince(values.since) : undefined;
  } catch (e) {
    io.err(`vault export: ${(e as Error).message}\n`);
    return 2;
  }

  const toStdout = values.out === "-";
  const outPath = toStdout ? "" : resolve(values.out);
  const part = `${outPath}.part${TEMP_OWNER}`;
  let vault: Vault | undefined;
  let wrote = false;
  try {
    const opened = await openCliVault(values, true);
    vault = opened.vault;
    const repos = expandRepositories(transferRepositories(vault), values.repo ?? []);
    const pkg = (await import("../../../package.json")) as { default?: { version?: string }; version?: string };
    const source = sourceOf({ version: pkg.default?.version ?? pkg.version ?? "?", publicUrl: vault.config.server.publicUrl, config: opened.configFile });
    const { manifest, unmatched } = await planExport(repos, { repositories: values.repo ?? [], packages, since }, source);
    if (unmatched.length > 0) throw new TransferError(`nothing written: no stored file matches ${unmatched.map((s) => `--package ${s}`).join(", ")}${since !== undefined ? " (stored since --since)" : ""} in ${repos.map((t) => t.ctx.repo.name).join(", ")}`);
    if (repos.length === 0) throw new TransferError("nothing written: the config has no proxy or hosted repository");
    const blobs = storeOf(repos[0].ctx).blobs;
    const bar = byteProgress(progress, "export");
    const t0 = performance.now();
    bar.start(manifest.blobs.bytes);
    if (toStdout) await writeArchive(manifest, blobs, process.stdout, bar.add);
    else {
      await (await open(part, "wx")).close(); // fails here, with the file system's reason, when FILE cannot be written
      wrote = true;
      await writeArchive(manifest, blobs, createWriteStream(part, { flags: "w" }), bar.add);
      const fh = await open(part, "r+");
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(part, outPath);
      wrote = false;
    }
    bar.stop();
    const seconds = (performance.now() - t0) / 1000;
    const per = new Map<string, { files: number; bytes: number }>();
    for (const e of manifest.entries) {
      const p = per.get(e.repository) ?? { files: 0, bytes: 0 };
      p.files++;
      p.bytes += e.size;
      per.set(e.repository, p);
    }
    for (const r of manifest.repositories) {
      const p = per.get(r.name) ?? { files: 0, bytes: 0 };
      io.err(`  ${r.name} (${r.format} ${r.type}): ${p.files} file${p.files === 1 ? "" : "s"}, ${formatBytes(p.bytes)}\n`);
    }
    io.err(
      `exported ${manifest.entries.length} file${manifest.entries.length === 1 ? "" : "s"} (${manifest.blobs.count} blob${manifest.blobs.count === 1 ? "" : "s"}, ${formatBytes(manifest.blobs.bytes)}) ` +
        `to ${toStdout ? "standard output" : outPath} in ${seconds.toFixed(1)} s\n`,
    );
    return 0;
  } catch (e) {
    io.err(`vault export: ${(e as Error).message}\n`);
    return 1;
  } finally {
    if (wrote) await unlink(part).catch(() => {});
    await vault?.stop(0);
  }
}

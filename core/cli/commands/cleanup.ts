/** `vault cleanup`: applies the repositories' retention policies now (or shows what they would remove), then sweeps blobs. */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { applyOverrides, loadConfig } from "../../config/load.ts";
import { resolveConfig } from "../../config/schema.ts";
import { loadPlugins } from "../../loader.ts";
import { createLogger } from "../../log.ts";
import { createVault, type Vault } from "../../server.ts";
import { createBlobStore } from "../../storage/blobs.ts";
import { collectGarbage, DEFAULT_GC_MIN_AGE_MINUTES, runRetention, type RetentionReason, type RetentionReport, type RetentionTarget } from "../../retention.ts";
import { formatBytes } from "../../ui/html.ts";
import { parseDataCommandArgs, STDIO, type CommandIo } from "../args.ts";

const USAGE = `usage: vault cleanup [--config FILE] [--data DIR] [--repo NAME]... [--dry-run] [--gc-min-age-minutes N] [--no-gc]

Applies each repository's retention policy (repositories[].retention: maxAgeDays, unusedForDays, keepVersions,
maxBytes; docs/retention.md) now: proxies evict cached files (fetched again when next requested), hosted
repositories delete whole versions through their format's delete path (audited as retention.delete). Then gc runs
over the same repositories as "vault gc" does (plugins' gc, then blobs unreferenced for the minimum age).
Safe while the server runs on the same data.

  --repo NAME               only this repository (repeatable; default: every repository with a policy)
  --dry-run                 print what would be removed; change nothing
  --gc-min-age-minutes N    minimum age of the unreferenced blobs swept afterwards (default: retention.gcMinAgeMinutes, else 60)
  --no-gc                   do not sweep blobs afterwards
`;

const REASONS: RetentionReason[] = ["max_age", "unused", "keep_versions", "quota"];

/** The report of one repository as printed: a summary line, then one line per removal. */
export function formatReport(r: RetentionReport): string {
  const p = r.plan;
  const counts = REASONS.map((k) => [k, p.removals.filter((x) => x.reason === k).reduce((n, x) => n + x.paths.length, 0)] as const).filter(([, n]) => n > 0);
  const planned = p.removals.reduce((n, x) => n + x.paths.length, 0);
  const plannedBytes = p.storedBytes - p.keptBytes;
  const verb = r.dryRun ? "would remove" : "removed";
  const files = r.dryRun ? planned : r.removedFiles;
  const bytes = r.dryRun ? plannedBytes : r.removedBytes;
  let s = `${r.repository} (${r.type}): ${p.files} file${p.files === 1 ? "" : "s"}, ${formatBytes(p.storedBytes)}; ${verb} ${files} file${files === 1 ? "" : "s"}, ${formatBytes(bytes)}`;
  if (counts.length) s += ` (${counts.map(([k, n]) => `${k} ${n}`).join(", ")})`;
  if (r.errors) s += `; ${r.errors} failed (see the log)`;
  s += `; ${formatBytes(p.keptBytes)} kept\n`;
  for (const x of p.removals) {
    const what = r.type === "hosted" && x.version ? `${x.version.name} ${x.version.version} (${x.paths.length} file${x.paths.length === 1 ? "" : "s"})` : x.paths[0];
    s += `  ${x.reason.padEnd(14)}${what}  ${formatBytes(x.sizeBytes)}\n`;
  }
  return s;
}

/**
 * Runs `vault cleanup`: opens the vault of the config (database, store, plugins; no listener), applies the retention
 * policies ({@link runRetention}) of every repository with one (or of `--repo`), prints a report per repository, then
 * sweeps unreferenced blobs older than the minimum age (`BlobStore.sweep`). Refuses to run when the SQLite metadata
 * database does not exist (a sweep would treat every blob as unreferenced).
 * @param args the arguments after `cleanup`
 * @param io where to print (default stdout/stderr)
 * @returns exit code: 0 done, 1 failure (or a removal failed), 2 usage error
 */
export async function run(args: string[], io: CommandIo = STDIO): Promise<number> {
  const parsed = parseDataCommandArgs(
    args,
    { repo: { type: "string", multiple: true }, "dry-run": { type: "boolean" }, "gc-min-age-minutes": { type: "string" }, "no-gc": { type: "boolean" } },
    USAGE,
    io,
    false,
  );
  if (typeof parsed === "number") return parsed;
  const { values } = parsed;
  const minAgeArg = values["gc-min-age-minutes"];
  if (minAgeArg !== undefined && !(Number.isFinite(Number(minAgeArg)) && Number(minAgeArg) >= 0)) {
    io.err(`--gc-min-age-minutes must be a number of minutes ≥ 0, got ${JSON.stringify(minAgeArg)}\n`);
    return 2;
  }

  let vault: Vault | undefined;
  try {
    const loaded = await loadConfig(values.config);
    const raw = values.data !== undefined ? applyOverrides(loaded.config, { dataDir: resolve(values.data) }) : loaded.config;
    const plugins = await loadPlugins(raw, loaded.configDir, { builtins: "needed" });
    const config = resolveConfig(raw, plugins, { configDir: loaded.configDir, source: loaded.file });
    if (config.metadata.driver === "sqlite") {
      const dbPath = config.metadata.path ?? join(config.server.dataDir, "vault.db");
      if (dbPath !== ":memory:" && !existsSync(dbPath)) {
        io.err(`vault cleanup: no metadata database at ${dbPath}; nothing to clean\n`);
        return 1;
      }
    }
    const names = values.repo ?? [];
    for (const n of names) {
      const r = config.repositories.find((x) => x.name === n);
      if (!r) {
        io.err(`vault cleanup: no repository named ${JSON.stringify(n)}\n`);
        return 2;
      }
      if (!r.retention) io.err(`vault cleanup: repository ${n} has no retention policy; skipped\n`);
    }
    vault = await createVault(raw, { configDir: loaded.configDir, plugins, resolved: config, log: createLogger("warn"), accessLog: false });
    const targets: RetentionTarget[] = [];
    for (const r of config.repositories) {
      if (names.length > 0 && !names.includes(r.name)) continue;
      targets.push({ ctx: vault.repositories.get(r.name)!, plugin: vault.plugins.get(r.format)! });
    }
    const dryRun = values["dry-run"] === true;
    const reports = await runRetention(targets, { dryRun, log: createLogger("warn") });
    if (reports.length === 0) io.out("no repository has a retention policy\n");
    for (const r of reports) io.out(formatReport(r));
    if (!dryRun && values["no-gc"] !== true && targets.length > 0) {
      const minutes = minAgeArg !== undefined ? Number(minAgeArg) : (config.retention?.gcMinAgeMinutes ?? DEFAULT_GC_MIN_AGE_MINUTES);
      const { ctx } = targets[0];
      const gc = await collectGarbage(targets, createBlobStore(ctx.metadata, ctx.storage), Math.round(minutes * 60_000), createLogger("warn"));
      const { removed, bytes } = gc.swept;
      if (gc.rows > 0) io.out(`plugins removed ${gc.rows} unreferenced row${gc.rows === 1 ? "" : "s"}\n`);
      io.out(`swept ${removed} blob${removed === 1 ? "" : "s"} (${formatBytes(bytes)}) unreferenced for at least ${minutes} minutes\n`);
    }
    return reports.some((r) => r.errors > 0) ? 1 : 0;
  } catch (e) {
    io.err(`vault cleanup: ${(e as Error).message}\n`);
    return 1;
  } finally {
    await vault?.stop(0);
  }
}

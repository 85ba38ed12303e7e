/**
 * Retention (docs/retention.md): per-repository cleanup policies (age, last access, keep the newest N versions,
 * quota) planned from the repository's `artifacts` rows and applied through the repository's own context, plus the
 * periodic job of `vault serve` (policies, then gc). The hosted quota check on uploads is core/retention-quota.ts.
 *
 * - Proxy repositories: a removal evicts one cached file (`ctx.cache.invalidate`); it is fetched again on its next
 *   request. Policies apply to every row (files, documents, negative entries); the quota evicts least-recently-used
 *   files until the repository's stored bytes are at most `maxBytes`.
 * - Hosted repositories: removals are whole versions (as the plugin's `packageOf` names them), deleted through the
 *   plugin's `deleteVersion` hook so the package's documents are regenerated; each one is audited (`retention.delete`).
 *   Rows that belong to no version (documents, markers) are never removed. `maxBytes` is not evicted: uploads over it
 *   are refused.
 * - Group repositories own nothing (a policy on one is a config error).
 *
 * Removing a row only drops a reference to its blob; the blob's bytes go with the next sweep (`vault gc`, `vault
 * cleanup`, or the periodic job) once unreferenced for the sweep's minimum age.
 */
import { and, eq, lt } from "drizzle-orm";
import type { ResolvedConfig } from "./config/schema.ts";
import type { RetentionPolicy } from "./config/types.ts";
import { tablesOf } from "./db/index.ts";
import { metrics } from "./metrics.ts";
import { directoryPackageOf, type ArtifactEntry, type Db, type Logger, type PackageVersion, type PluginContext, type Principal, type VaultPlugin } from "./plugin.ts";
import type { BlobStore } from "./storage/blobs.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

/** Why a file goes: the policy that named it (first match in this order). Also the `reason` label of the metrics. */
export type RetentionReason = "max_age" | "unused" | "keep_versions" | "quota";

/** The fields of a stored row that policies look at. */
export interface RetentionRow {
  path: string;
  /** bytes */
  sizeBytes: number;
  /** epoch ms: when the row was stored (proxy: fetched or revalidated; hosted: uploaded) */
  fetchedAt: number;
  /** epoch ms: last download (the store time when never downloaded) */
  lastAccessAt: number;
  /** HTTP status of the row: 200, or 404/410 for negative-cache rows (never a version) */
  status: number;
}

/** One planned removal: a cached file (proxy), or every file of one version (hosted). */
export interface RetentionRemoval {
  reason: RetentionReason;
  /** Repository-relative paths (one for a proxy removal). */
  paths: string[];
  /** Total size of `paths`, bytes. */
  sizeBytes: number;
  /** The version removed (hosted; for proxies when the file belongs to one). */
  version?: PackageVersion;
}

/** What the policies would remove from one repository. */
export interface RetentionPlan {
  /** Rows looked at. */
  files: number;
  /** Their total size, bytes. */
  storedBytes: number;
  removals: RetentionRemoval[];
  /** Size left after the removals, bytes. */
  keptBytes: number;
}

/** The format's hooks a plan uses: the package and version of a path (the plugin's `packageOf`), and the version order. */
export interface VersionHooks {
  /** The package version a repository-relative path belongs to; undefined (or no version) for files of none. */
  versionOf(path: string): { name: string; version?: string } | null | undefined;
  compareVersions?: VaultPlugin["compareVersions"];
}

/** Options of {@link planRetention}. */
export interface PlanOptions {
  type: "proxy" | "hosted";
  /** epoch ms the ages are measured from */
  now: number;
  hooks: VersionHooks;
}

/** A version of a package and its rows. */
interface VersionGroup {
  version: PackageVersion;
  rows: RetentionRow[];
  /** newest fetchedAt of its rows, epoch ms */
  storedAt: number;
  /** latest lastAccessAt of its rows, epoch ms */
  accessedAt: number;
}

/** Groups the live rows (status < 400) that belong to a version, by package, each package's versions newest first. */
function versionsByPackage(rows: RetentionRow[], hooks: VersionHooks): Map<string, VersionGroup[]> {
  const groups = new Map<string, Map<string, VersionGroup>>();
  for (const r of rows) {
    if (r.status >= 400) continue;
    const ref = hooks.versionOf(r.path);
    if (!ref || ref.version === undefined) continue;
    const v: PackageVersion = { name: ref.name, version: ref.version };
    let byVersion = groups.get(v.name);
    if (!byVersion) groups.set(v.name, (byVersion = new Map()));
    const g = byVersion.get(v.version);
    if (g) {
      g.rows.push(r);
      g.storedAt = Math.max(g.storedAt, r.fetchedAt);
      g.accessedAt = Math.max(g.accessedAt, r.lastAccessAt);
    } else byVersion.set(v.version, { version: v, rows: [r], storedAt: r.fetchedAt, accessedAt: r.lastAccessAt });
  }
  const compare = hooks.compareVersions;
  const out = new Map<string, VersionGroup[]>();
  for (const [pkg, byVersion] of groups) {
    const list = [...byVersion.values()].sort((a, b) => {
      const c = compare ? compare(b.version.version, a.version.version) : 0;
      if (c !== 0) return c;
      return b.storedAt - a.storedAt || (a.version.version < b.version.version ? 1 : a.version.version > b.version.version ? -1 : 0);
    });
    out.set(pkg, list);
  }
  return out;
}

const sizeOf = (rows: RetentionRow[]) => rows.reduce((n, r) => n + r.sizeBytes, 0);

/**
 * Plans what `policy` removes from a repository's rows (pure: nothing is read or written).
 * - proxy: each row is checked against `maxAgeDays` (fetchedAt), then `unusedForDays` (lastAccessAt), then
 *   `keepVersions` (rows of versions, as `hooks.versionOf` names them, older than the newest N of their package); then,
 *   while the rows left exceed `maxBytes`, the least recently used ones (lastAccessAt, then path) go for `quota`. One
 *   removal per row.
 * - hosted: whole versions only — a version goes when all its rows are older than `maxAgeDays`, when none was
 *   downloaded for `unusedForDays`, or when it is not among the newest `keepVersions`; `maxBytes` removes nothing.
 * @returns the removals (in the order above) and the sizes before and after, bytes
 */
export function planRetention(rows: RetentionRow[], policy: RetentionPolicy, o: PlanOptions): RetentionPlan {
  const storedBytes = sizeOf(rows);
  const ageCut = policy.maxAgeDays !== undefined ? o.now - policy.maxAgeDays * DAY_MS : undefined;
  const unusedCut = policy.unusedForDays !== undefined ? o.now - policy.unusedForDays * DAY_MS : undefined;
  const keep = policy.keepVersions;
  const versions = keep !== undefined || o.type === "hosted" ? versionsByPackage(rows, o.hooks) : new Map<string, VersionGroup[]>();
  const removals: RetentionRemoval[] = [];

  if (o.type === "hosted") {
    for (const list of versions.values()) {
      list.forEach((g, i) => {
        let reason: RetentionReason | undefined;
        if (ageCut !== undefined && g.storedAt < ageCut) reason = "max_age";
        else if (unusedCut !== undefined && g.accessedAt < unusedCut) reason = "unused";
        else if (keep !== undefined && i >= keep) reason = "keep_versions";
        if (reason) removals.push({ reason, paths: g.rows.map((r) => r.path), sizeBytes: sizeOf(g.rows), version: g.version });
      });
    }
    return { files: rows.length, storedBytes, removals, keptBytes: storedBytes - removals.reduce((n, r) => n + r.sizeBytes, 0) };
  }

  const doomed = new Map<string, RetentionRemoval>();
  const versionOfRow = new Map<string, PackageVersion>();
  const olderVersions = new Set<string>();
  for (const list of versions.values())
    list.forEach((g, i) => {
      for (const r of g.rows) {
        versionOfRow.set(r.path, g.version);
        if (keep !== undefined && i >= keep) olderVersions.add(r.path);
      }
    });
  for (const r of rows) {
    let reason: RetentionReason | undefined;
    if (ageCut !== undefined && r.fetchedAt < ageCut) reason = "max_age";
    else if (unusedCut !== undefined && r.lastAccessAt < unusedCut) reason = "unused";
    else if (olderVersions.has(r.path)) reason = "keep_versions";
    if (reason) doomed.set(r.path, { reason, paths: [r.path], sizeBytes: r.sizeBytes, version: versionOfRow.get(r.path) });
  }
  let left = storedBytes - [...doomed.values()].reduce((n, d) => n + d.sizeBytes, 0);
  if (policy.maxBytes !== undefined && left > policy.maxBytes) {
    const lru = rows.filter((r) => !doomed.has(r.path)).sort((a, b) => a.lastAccessAt - b.lastAccessAt || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    for (const r of lru) {
      if (left <= policy.maxBytes) break;
      doomed.set(r.path, { reason: "quota", paths: [r.path], sizeBytes: r.sizeBytes, version: versionOfRow.get(r.path) });
      left -= r.sizeBytes;
    }
  }
  removals.push(...doomed.values());
  return { files: rows.length, storedBytes, removals, keptBytes: left };
}

/** The principal retention acts as (the audit log's actor of its deletions in hosted repositories). */
export const RETENTION_PRINCIPAL: Principal = { userId: null, name: "vault-retention", isAdmin: true, via: "token" };

/** Rows per page when a repository's rows are read for planning. */
const LIST_PAGE = 5000;

/** Every row of the repository, as {@link RetentionRow}s (read in pages of {@link LIST_PAGE}). */
async function rowsOf(ctx: PluginContext): Promise<RetentionRow[]> {
  const out: RetentionRow[] = [];
  for (let after: string | undefined; ; ) {
    const page: ArtifactEntry[] = await ctx.artifacts.list("", { limit: LIST_PAGE, after });
    for (const e of page) out.push({ path: e.path, sizeBytes: e.sizeBytes, fetchedAt: e.fetchedAt, lastAccessAt: e.lastAccessAt, status: e.status });
    if (page.length < LIST_PAGE) return out;
    after = page[page.length - 1].path;
  }
}

/** One repository retention runs over: its context (the serving one inside `vault serve`) and its plugin. */
export interface RetentionTarget {
  ctx: PluginContext;
  plugin: VaultPlugin;
}

/** What one run did (or, dry, would do) to one repository. */
export interface RetentionReport {
  repository: string;
  type: "proxy" | "hosted";
  plan: RetentionPlan;
  /** Files removed (dry run: 0). */
  removedFiles: number;
  /** Bytes of the files removed (dry run: 0). */
  removedBytes: number;
  /** Removals that failed (logged); the next run tries again. */
  errors: number;
  dryRun: boolean;
}

/** Options of {@link runRetention}. */
export interface RunRetentionOptions {
  /** Plan and report only. */
  dryRun?: boolean;
  /** epoch ms the ages are measured from (default now). */
  now?: number;
  log: Logger;
  /** Stops between removals when aborted (shutdown). */
  signal?: AbortSignal;
}

/**
 * Applies each target's `retention` policy (targets without one, and groups, are skipped): reads the repository's rows,
 * plans ({@link planRetention}), then removes — proxies through `ctx.cache.invalidate` (also drops the hot entry and
 * the negative cache), hosted repositories through the plugin's `deleteVersion` with an audit record
 * (`retention.delete`, actor `vault-retention`). Counts `vault_retention_removed_total` and
 * `vault_retention_removed_bytes_total` by repository and reason. Hit counts batched in memory are written first, so
 * last-access times are current. A failing removal is logged and counted in `errors`; the run goes on.
 * @returns one report per repository with a policy
 */
export async function runRetention(targets: RetentionTarget[], o: RunRetentionOptions): Promise<RetentionReport[]> {
  const reports: RetentionReport[] = [];
  for (const { ctx, plugin } of targets) {
    const policy = ctx.config.retention;
    const type = ctx.repo.type;
    if (!policy || type === "group") continue;
    if (o.signal?.aborted) break;
    await (ctx.artifacts as { flush?: () => Promise<void> }).flush?.();
    const hooks: VersionHooks = {
      versionOf: (path) => (plugin.packageOf ? plugin.packageOf(path, ctx) : directoryPackageOf(path)),
      compareVersions: plugin.compareVersions,
    };
    const plan = planRetention(await rowsOf(ctx), policy, { type, now: o.now ?? Date.now(), hooks });
    const report: RetentionReport = { repository: ctx.repo.name, type, plan, removedFiles: 0, removedBytes: 0, errors: 0, dryRun: o.dryRun === true };
    reports.push(report);
    if (o.dryRun) continue;
    const repository = ctx.repo.name;
    for (const r of plan.removals) {
      if (o.signal?.aborted) break;
      try {
        let paths = r.paths;
        let bytes = r.sizeBytes;
        if (type === "proxy") {
          for (const p of r.paths) await ctx.cache.invalidate(p);
        } else {
          if (!plugin.deleteVersion || !r.version) continue; // refused by the config check; never reached
          ({ paths, bytes } = await plugin.deleteVersion(ctx, r.version));
          ctx.auth.audit({
            principal: RETENTION_PRINCIPAL,
            action: "retention.delete",
            path: `${r.version.name}@${r.version.version}`,
            detail: { reason: r.reason, package: r.version.name, version: r.version.version, files: paths, sizeBytes: bytes },
          });
        }
        report.removedFiles += paths.length;
        report.removedBytes += bytes;
        metrics.retentionRemoved.inc({ repository, reason: r.reason }, paths.length);
        metrics.retentionRemovedBytes.inc({ repository, reason: r.reason }, bytes);
      } catch (e) {
        report.errors++;
        o.log.warn("retention: removal failed", { repo: repository, reason: r.reason, paths: r.paths.slice(0, 5), error: e instanceof Error ? e.message : String(e) });
      }
    }
    if (report.removedFiles > 0 || report.errors > 0)
      o.log.info("retention: removed", { repo: repository, files: report.removedFiles, bytes: report.removedBytes, errors: report.errors });
  }
  return reports;
}

/** What {@link collectGarbage} removed. */
export interface GcResult {
  /** Rows the plugins' own `gc` hooks removed (e.g. OCI blob links no manifest references). */
  rows: number;
  /** Blobs the sweep deleted and their bytes. */
  swept: { removed: number; bytes: number };
}

/**
 * gc over serving contexts, as `vault gc` does from the config: each plugin's `gc` hook per repository (rows older than
 * `minAgeMs` only; a failing hook is logged and skipped), then the blob sweep of blobs unreferenced for `minAgeMs`.
 * @param minAgeMs ms
 */
export async function collectGarbage(targets: RetentionTarget[], blobs: BlobStore, minAgeMs: number, log: Logger): Promise<GcResult> {
  let rows = 0;
  for (const { ctx, plugin } of targets) {
    if (!plugin.gc) continue;
    try {
      rows += (await plugin.gc(ctx, { olderThan: Date.now() - minAgeMs })).removed;
    } catch (e) {
      log.warn("gc: plugin gc failed", { repo: ctx.repo.name, error: e instanceof Error ? e.message : String(e) });
    }
  }
  return { rows, swept: await blobs.sweep(Date.now() - minAgeMs) };
}

/** Default minutes between runs of the periodic job when a repository has a policy. */
export const DEFAULT_RETENTION_INTERVAL_MINUTES = 60;
/** Default minimum age of an unreferenced blob before the periodic sweep deletes it, minutes (as `vault gc`). */
export const DEFAULT_GC_MIN_AGE_MINUTES = 60;
/** Longest wait between two checks whether a run is due (ms). */
const MAX_TICK_MS = 5 * 60_000;
/** Key of the `settings` row holding the time of the last periodic run (shared by every process on the database). */
const LAST_RUN_KEY = "retention.last_run";

/**
 * Minutes between periodic runs the config asks for: `retention.intervalMinutes` when set (0 = off), else
 * {@link DEFAULT_RETENTION_INTERVAL_MINUTES} when any non-group repository has a `retention` policy, else 0 (off).
 */
export function retentionIntervalMinutes(config: ResolvedConfig): number {
  const set = config.retention?.intervalMinutes;
  if (set !== undefined) return set;
  return config.repositories.some((r) => r.retention && r.type !== "group") ? DEFAULT_RETENTION_INTERVAL_MINUTES : 0;
}

/**
 * Takes the periodic run of this interval: one statement that records `now` (epoch ms) as the last run unless another
 * process (or node) on the database recorded one less than `intervalMs` ago (minus a tenth of it, at most a minute).
 * @returns true when the caller should run now
 */
export async function takeRun(db: Db, intervalMs: number, now: number): Promise<boolean> {
  const { settings } = tablesOf(db);
  // a little slack (a tenth of the interval, at most a minute), so timer jitter never skips a whole interval
  const due = and(eq(settings.key, LAST_RUN_KEY), lt(settings.createdAt, now - intervalMs + Math.min(intervalMs / 10, 60_000)));
  const taken = await db
    .insert(settings)
    .values({ key: LAST_RUN_KEY, value: String(now), createdAt: now })
    .onConflictDoUpdate({ target: settings.key, set: { value: String(now), createdAt: now }, setWhere: due })
    .returning({ key: settings.key });
  return taken.length > 0;
}

/** The periodic retention job of one `vault serve` process. */
export interface RetentionJob {
  /** Minutes between runs (0: the job is off and never runs). */
  readonly intervalMinutes: number;
  /**
   * Runs the policies, the plugins' gc hooks and the blob sweep now (whether due or not), after any run in progress.
   * @returns the reports and what gc removed
   */
  runNow(): Promise<{ reports: RetentionReport[]; gc: GcResult | undefined }>;
  /** Stops the timer; a run in progress stops between removals and is awaited. Idempotent. */
  stop(): Promise<void>;
}

/** Options of {@link startRetentionJob}. */
export interface RetentionJobOptions {
  config: ResolvedConfig;
  /** Every repository's serving context and plugin. */
  targets: RetentionTarget[];
  db: Db;
  blobs: BlobStore;
  log: Logger;
}

/**
 * Starts the periodic retention job of `vault serve`: every `retention.intervalMinutes` ({@link retentionIntervalMinutes};
 * off when 0) it applies every repository's policy ({@link runRetention}), then runs gc ({@link collectGarbage}: the
 * plugins' gc hooks, the sweep of blobs unreferenced for `retention.gcMinAgeMinutes`, default 60). Due runs are checked every min(interval, 5 min) (the timer is unref'd); the
 * time of the last run is kept in the database (`settings` row `retention.last_run`), so processes sharing it run the
 * job once per interval between them, and a restart does not postpone it. Failures are logged, never thrown.
 */
export function startRetentionJob(o: RetentionJobOptions): RetentionJob {
  const intervalMinutes = retentionIntervalMinutes(o.config);
  const intervalMs = intervalMinutes * 60_000;
  const minAgeMs = (o.config.retention?.gcMinAgeMinutes ?? DEFAULT_GC_MIN_AGE_MINUTES) * 60_000;
  const log = o.log.child({ job: "retention" });
  const abort = new AbortController();
  let running: Promise<unknown> = Promise.resolve();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;

  const once = async () => {
    const reports = await runRetention(o.targets, { log, signal: abort.signal });
    const gc = abort.signal.aborted ? undefined : await collectGarbage(o.targets, o.blobs, minAgeMs, log);
    if (gc && (gc.rows > 0 || gc.swept.removed > 0)) log.info("retention: gc", { rows: gc.rows, blobs: gc.swept.removed, bytes: gc.swept.bytes });
    return { reports, gc };
  };
  const runNow = () => {
    const r = running.then(once, once);
    running = r.catch(() => {});
    return r;
  };
  const tick = async () => {
    timer = undefined;
    try {
      if (await takeRun(o.db, intervalMs, Date.now())) await runNow();
    } catch (e) {
      log.error("retention run failed", { error: e instanceof Error ? e.message : String(e) });
    }
    if (!stopped) schedule();
  };
  const schedule = () => {
    timer = setTimeout(() => void tick(), Math.min(intervalMs, MAX_TICK_MS));
    timer.unref?.();
  };
  if (intervalMs > 0) schedule();

  return {
    intervalMinutes,
    runNow,
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      abort.abort();
      await running;
    },
  };
}

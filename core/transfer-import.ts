/**
 * `vault import`: reads an archive written by `vault export` (core/transfer.ts) into this vault's repositories
 * (docs/export-import.md). The manifest comes first, so the whole plan — targets, formats, conflicts — is checked
 * before a byte is stored; blobs are then verified against the manifest while they stream into the blob store, and
 * rows are recorded only once every blob of the archive arrived intact.
 */
import { pipeline } from "node:stream/promises";
import { and, eq, inArray } from "drizzle-orm";
import { extract as tarExtract } from "tar-stream";
import type { Principal } from "./plugin.ts";
import { tablesOf } from "./db/index.ts";
import type { ArtifactRecord } from "./artifacts.ts";
import { DigestMismatchError } from "./storage/driver.ts";
import type { BlobStore } from "./storage/blobs.ts";
import {
  MANIFEST_NAME,
  MAX_MANIFEST_BYTES,
  TransferError,
  parseManifest,
  storeOf,
  type ExportManifest,
  type ManifestEntry,
  type TransferRepository,
} from "./transfer.ts";

/** The principal an import acts as in the audit log. */
export const IMPORT_PRINCIPAL: Principal = { userId: null, name: "vault-import", isAdmin: true, via: "token" };

/** Rows recorded per transaction, and paths per existence query. */
const BATCH = 500;
/** Problems listed in one error message before "and N more". */
const MAX_LISTED = 20;

/** What an import does with one entry of the archive. */
export type ImportAction =
  /** recorded: no row yet, or a row the entry replaces */
  | "record"
  /** the target holds the same bytes at that path */
  | "unchanged"
  /** proxy: the target's cached copy is as new or newer; hosted: a document the target has (its plugin regenerates it) */
  | "kept";

/** One source repository of the archive and where it goes. */
export interface ImportTarget {
  source: string;
  target: TransferRepository;
  format: string;
  type: "proxy" | "hosted";
  entries: { entry: ManifestEntry; action: ImportAction }[];
}

/** The checked plan of an import (before any blob is read). */
export interface ImportPlan {
  manifest: ExportManifest;
  targets: ImportTarget[];
  /** Things worth knowing that do not stop the import (upstream differs, no index regeneration). */
  warnings: string[];
  /** Bytes of blobs to verify (every blob of the archive), and of those to store. */
  bytes: number;
  storeBytes: number;
}

/** Per source repository: counts of what the import did (or, dry, would do). */
export interface ImportTargetReport {
  source: string;
  target: string;
  format: string;
  type: "proxy" | "hosted";
  /** Rows written (new or replaced) and their bytes. */
  recorded: number;
  bytes: number;
  /** Rows the target already held with the same bytes. */
  unchanged: number;
  /** Rows the target keeps: proxy copies as new or newer, hosted documents (brought in line by `afterImport`). */
  kept: number;
  /** The plugin's afterImport: ran, failed (message), or absent. */
  afterImport?: { ok: true } | { ok: false; error: string };
}

/** Result of {@link importArchive}. */
export interface ImportReport {
  manifest: ExportManifest;
  dryRun: boolean;
  targets: ImportTargetReport[];
  /** Blobs verified, how many were written to the blob store, total verified bytes. */
  blobs: { verified: number; written: number; bytes: number };
  warnings: string[];
}

/** Options of {@link importArchive}. */
export interface ImportOptions {
  /** The archive's bytes (a file read stream, standard input). */
  input: NodeJS.ReadableStream;
  /** Every repository of this vault by name. */
  repositories: Map<string, TransferRepository>;
  /** `--map src=dst`: source repository → target repository (default: the same name). */
  map?: Map<string, string>;
  /** Verify the archive and report the plan; store and record nothing. */
  dryRun?: boolean;
  /** Called once the manifest is read and the plan checked (e.g. to size a progress bar). */
  onPlan?(plan: ImportPlan): void;
  /** Called with the byte count of each blob chunk read. */
  onBytes?(n: number): void;
  /** epoch ms of the import: imported cached documents expire at this time (default now). */
  now?: number;
}

/** Reads a small tar entry fully, refusing more than `max` bytes. */
async function readEntry(entry: AsyncIterable<Buffer>, max: number, what: string): Promise<Uint8Array> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of entry) {
    n += c.byteLength;
    if (n > max) throw new TransferError(`${what} is larger than ${max} bytes`);
    parts.push(c);
  }
  return new Uint8Array(Buffer.concat(parts));
}

/** A web stream over a tar entry, pulled on demand (backpressure), counting bytes. */
function webStream(entry: AsyncIterable<Buffer>, onBytes?: (n: number) => void): ReadableStream<Uint8Array> {
  const it = entry[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>(
    {
      async pull(ctl) {
        const r = await it.next();
        if (r.done) return ctl.close();
        onBytes?.(r.value.byteLength);
        ctl.enqueue(new Uint8Array(r.value.buffer, r.value.byteOffset, r.value.byteLength));
      },
      async cancel(reason) {
        await it.return?.(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

/** `repo:path` of an entry, for messages. */
const where = (e: ManifestEntry) => `${e.repository}:${e.path}`;

/** "a, b, c and 4 more" */
function listed(items: string[]): string {
  const head = items.slice(0, MAX_LISTED).join("\n  ");
  return items.length > MAX_LISTED ? `${head}\n  … and ${items.length - MAX_LISTED} more` : head;
}

/**
 * Checks the manifest against this vault and decides each entry (see {@link ImportAction}): every source repository must map
 * onto a configured repository of the same format and type (not a group); no two entries may land on one target path;
 * a hosted file (`kind: artifact`) may not replace a stored file with other bytes (hosted files are immutable); a
 * hosted document (`kind: metadata`: pages, packuments, records) the target already has is kept when the plugin has
 * an `afterImport` that brings it in line with the files (so the target never serves the exporter's listing), else
 * replaced; a proxy row replaces the target's only when the exported copy was fetched later.
 * @throws TransferError listing every problem
 */
export async function planImport(manifest: ExportManifest, repositories: Map<string, TransferRepository>, map: Map<string, string> = new Map()): Promise<ImportPlan> {
  const problems: string[] = [];
  const warnings: string[] = [];
  const bySource = new Map<string, ManifestEntry[]>();
  for (const e of manifest.entries) {
    const l = bySource.get(e.repository);
    if (l) l.push(e);
    else bySource.set(e.repository, [e]);
  }
  const sources = new Set(manifest.repositories.map((r) => r.name));
  for (const s of map.keys()) if (!sources.has(s)) problems.push(`--map ${s}=${map.get(s)}: the archive has no repository ${s} (it has ${[...sources].join(", ") || "none"})`);
  const targets: ImportTarget[] = [];
  const targetPaths = new Map<string, string>();
  for (const r of manifest.repositories) {
    const entries = bySource.get(r.name);
    if (!entries) continue;
    const name = map.get(r.name) ?? r.name;
    const t = repositories.get(name);
    if (!t) {
      problems.push(`${r.name} (${r.format} ${r.type}): this vault has no repository ${name}; configure one or map it with --map ${r.name}=NAME`);
      continue;
    }
    const tc = t.ctx.config;
    if (tc.format !== r.format) {
      problems.push(`${r.name} → ${name}: refusing to import ${r.format} files into a ${tc.format} repository`);
      continue;
    }
    if (t.ctx.repo.type !== r.type) {
      problems.push(`${r.name} → ${name}: refusing to import a ${r.type} repository's files into a ${t.ctx.repo.type} repository (layouts differ)`);
      continue;
    }
    if (r.type === "proxy" && r.upstream && tc.upstream && r.upstream !== tc.upstream)
      warnings.push(`${name}: the exported cache came from ${r.upstream}, this repository's upstream is ${tc.upstream}; documents that name their upstream may be fetched again instead of served`);
    if (r.type === "hosted" && !t.plugin.afterImport)
      warnings.push(`${name}: the ${r.format} plugin does not regenerate its index documents after an import (no afterImport hook); they are imported as exported`);
    for (const e of entries) {
      const k = `${name}\n${e.path}`;
      const prev = targetPaths.get(k);
      if (prev !== undefined) problems.push(`${e.repository}:${e.path} and ${prev}:${e.path} would both land on ${name}:${e.path}`);
      else targetPaths.set(k, e.repository);
    }
    targets.push({ source: r.name, target: t, format: r.format, type: r.type, entries: entries.map((entry) => ({ entry, action: "record" as ImportAction })) });
  }
  if (problems.length === 0) {
    const conflicts: string[] = [];
    for (const t of targets) await decide(t, conflicts);
    if (conflicts.length > 0) problems.push(`hosted files already stored with other contents (an import never replaces a hosted file):\n  ${listed(conflicts)}`);
  }
  if (problems.length > 0) throw new TransferError(`nothing imported:\n  ${listed(problems)}`);
  let bytes = 0;
  let storeBytes = 0;
  const needed = new Set<string>();
  for (const t of targets) for (const x of t.entries) if (x.action === "record") needed.add(x.entry.sha256);
  const seen = new Set<string>();
  for (const e of manifest.entries) {
    if (seen.has(e.sha256)) continue;
    seen.add(e.sha256);
    bytes += e.size;
    if (needed.has(e.sha256)) storeBytes += e.size;
  }
  return { manifest, targets, warnings, bytes, storeBytes };
}

/** Reads the target's existing rows for the entries (batched queries) and sets each entry's action. */
async function decide(t: ImportTarget, conflicts: string[]): Promise<void> {
  const db = t.target.ctx.metadata;
  const { artifacts } = tablesOf(db);
  const repo = t.target.ctx.repo.name;
  for (let i = 0; i < t.entries.length; i += BATCH) {
    const chunk = t.entries.slice(i, i + BATCH);
    const have = await db
      .select({ path: artifacts.path, blobDigest: artifacts.blobDigest, status: artifacts.status, fetchedAt: artifacts.fetchedAt })
      .from(artifacts)
      .where(and(eq(artifacts.repository, repo), inArray(artifacts.path, chunk.map((x) => x.entry.path))));
    const byPath = new Map(have.map((r) => [r.path, r]));
    for (const x of chunk) {
      const cur = byPath.get(x.entry.path);
      if (!cur || cur.status !== 200 || !cur.blobDigest) continue;
      if (cur.blobDigest === `sha256:${x.entry.sha256}`) x.action = "unchanged";
      else if (t.type === "proxy") {
        if (cur.fetchedAt >= x.entry.fetchedAt) x.action = "kept";
      } else if (x.entry.kind === "artifact") conflicts.push(`${repo}:${x.entry.path} (stored ${cur.blobDigest}, archive sha256:${x.entry.sha256})`);
      else if (t.target.plugin.afterImport) x.action = "kept";
    }
  }
}

/** The row an entry becomes in its target (imported cached documents expire at `now`: revalidated when online). */
function recordOf(e: ManifestEntry, type: "proxy" | "hosted", now: number): ArtifactRecord {
  return {
    path: e.path,
    blobDigest: `sha256:${e.sha256}`,
    sizeBytes: e.size,
    contentType: e.contentType,
    status: 200,
    kind: e.kind,
    ...(e.etag ? { etag: e.etag } : {}),
    upstreamEtag: e.upstreamEtag ?? null,
    upstreamLastModified: e.upstreamLastModified ?? null,
    headers: e.headers,
    cacheFlags: e.cacheFlags,
    fetchedAt: e.fetchedAt,
    expiresAt: type === "proxy" && e.mutable ? now : null,
  };
}

/**
 * Imports an archive (DESIGN.md §1 `vault import`, docs/export-import.md):
 * 1. reads `manifest.json` (the first entry) and checks it ({@link parseManifest}) and the plan ({@link planImport});
 * 2. streams every blob: each is verified against the manifest (sha256 and size) while it is written through the blob
 *    store (or, when no row needs it or on a dry run, only hashed); unknown or repeated entries stop the import;
 * 3. when every blob arrived intact, records the rows of each target through its artifact store (files before
 *    documents, 500 rows per transaction) — imported cached documents expire at once, so they are revalidated when
 *    the upstream is reachable and served stale (`cache.maxStaleSeconds`) until then; hosted rows the target lacks
 *    are written as exported, then the plugin's `afterImport` regenerates the indexes — and writes one audit record
 *    per target.
 * A failure before step 3 (bad manifest or plan, a blob that does not match, a truncated or damaged archive) records
 * no row: blobs already written stay unreferenced and `vault gc` removes them. Running the same import again finds
 * the rows unchanged and records nothing (idempotent).
 * @throws TransferError naming what is wrong (the entries of a blob that does not match, how many blobs are missing)
 */
export async function importArchive(o: ImportOptions): Promise<ImportReport> {
  const ex = tarExtract();
  const feed = (pipeline as unknown as (streams: unknown[]) => Promise<void>)([o.input, ex]);
  feed.catch(() => {}); // its error also ends the iteration below
  const it = ex[Symbol.asyncIterator]();
  let plan: ImportPlan;
  const verified = new Set<string>();
  const bad: string[] = [];
  const failed = new Set<string>();
  let written = 0;
  let blobs: BlobStore | undefined;
  try {
    const first = await it.next();
    if (first.done) throw new TransferError(`the archive is empty (expected ${MANIFEST_NAME} first)`);
    if (first.value.header.name !== MANIFEST_NAME) throw new TransferError(`not a vault export: the first entry is ${JSON.stringify(first.value.header.name)}, expected ${MANIFEST_NAME}`);
    const manifest = parseManifest(await readEntry(first.value as AsyncIterable<Buffer>, MAX_MANIFEST_BYTES, MANIFEST_NAME));
    plan = await planImport(manifest, o.repositories, o.map);
    o.onPlan?.(plan);
    const byBlob = new Map<string, { size: number; entries: ManifestEntry[]; store: boolean }>();
    for (const e of manifest.entries) {
      const b = byBlob.get(e.sha256);
      if (b) b.entries.push(e);
      else byBlob.set(e.sha256, { size: e.size, entries: [e], store: false });
    }
    for (const t of plan.targets) for (const x of t.entries) if (x.action === "record") byBlob.get(x.entry.sha256)!.store = true;
    if (plan.targets.length > 0) blobs = storeOf(plan.targets[0].target.ctx).blobs;
    for (;;) {
      const r = await it.next();
      if (r.done) break;
      const entry = r.value;
      const name = entry.header.name;
      const m = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(name);
      const b = m ? byBlob.get(m[1]) : undefined;
      if (!m || !b || entry.header.type !== "file") throw new TransferError(`unexpected entry ${JSON.stringify(name)} in the archive (not a blob its manifest lists)`);
      const hex = m[1];
      if (verified.has(hex) || failed.has(hex)) throw new TransferError(`blob ${hex} appears twice in the archive`);
      const problem = (got: string) => {
        failed.add(hex);
        return `${hex}: ${got}, used by ${b.entries.map(where).join(", ")}`;
      };
      if (entry.header.size !== b.size) {
        bad.push(problem(`${entry.header.size} bytes in the archive, the manifest says ${b.size}`));
        for await (const c of entry as AsyncIterable<Buffer>) o.onBytes?.(c.byteLength);
        continue;
      }
      if (b.store && !o.dryRun && blobs) {
        try {
          await blobs.putStream(webStream(entry as AsyncIterable<Buffer>, o.onBytes), { sha256: hex, sizeBytes: b.size });
          written++;
        } catch (e) {
          if (!(e instanceof DigestMismatchError)) throw e;
          bad.push(problem(`its bytes hash to ${e.actual.replace(/^sha256:/, "")}`));
          continue;
        }
      } else {
        const h = new Bun.CryptoHasher("sha256");
        for await (const c of entry as AsyncIterable<Buffer>) {
          h.update(c);
          o.onBytes?.(c.byteLength);
        }
        const got = h.digest("hex");
        if (got !== hex) {
          bad.push(problem(`its bytes hash to ${got}`));
          continue;
        }
      }
      verified.add(hex);
    }
    const missing = [...byBlob].filter(([hex]) => !verified.has(hex) && !failed.has(hex));
    if (missing.length > 0)
      throw new TransferError(
        `the archive ends before ${missing.length} of its ${byBlob.size} blobs (truncated?); nothing was recorded. Missing, e.g.:\n  ${listed(missing.slice(0, MAX_LISTED).map(([hex, b]) => `${hex} (${b.entries.map(where).join(", ")})`))}`,
      );
  } catch (e) {
    ex.destroy();
    if (e instanceof TransferError) throw e;
    throw new TransferError(`reading the archive failed after ${verified.size} blobs: ${(e as Error).message} (truncated or damaged archive?); nothing was recorded`);
  }
  if (bad.length > 0) throw new TransferError(`${bad.length} blob${bad.length === 1 ? " does" : "s do"} not match the manifest; nothing was recorded:\n  ${listed(bad)}`);

  const now = o.now ?? Date.now();
  const reports: ImportTargetReport[] = [];
  for (const t of plan.targets) {
    const todo = t.entries.filter((x) => x.action === "record").map((x) => x.entry);
    const rep: ImportTargetReport = {
      source: t.source,
      target: t.target.ctx.repo.name,
      format: t.format,
      type: t.type,
      recorded: todo.length,
      bytes: todo.reduce((n, e) => n + e.size, 0),
      unchanged: t.entries.filter((x) => x.action === "unchanged").length,
      kept: t.entries.filter((x) => x.action === "kept").length,
    };
    reports.push(rep);
    if (o.dryRun) continue;
    const store = storeOf(t.target.ctx);
    // files before documents: a document never lists a file not recorded yet
    todo.sort((a, b) => (a.kind === b.kind ? 0 : a.kind === "artifact" ? -1 : 1));
    for (let i = 0; i < todo.length; i += BATCH) await store.record(todo.slice(i, i + BATCH).map((e) => recordOf(e, t.type, now)));
    if (todo.length > 0)
      t.target.ctx.auth.audit({
        principal: IMPORT_PRINCIPAL,
        action: "import",
        detail: { source: t.source, files: todo.length, bytes: rep.bytes, archiveCreatedAt: plan.manifest.createdAt, sourceHost: plan.manifest.source.host },
      });
    if (t.type === "hosted" && t.target.plugin.afterImport) {
      try {
        await t.target.plugin.afterImport(t.target.ctx, { paths: t.entries.map((x) => x.entry.path) });
        rep.afterImport = { ok: true };
      } catch (e) {
        rep.afterImport = { ok: false, error: e instanceof Error ? e.message : String(e) };
      }
    }
  }
  return { manifest: plan.manifest, dryRun: o.dryRun === true, targets: reports, blobs: { verified: verified.size, written, bytes: plan.bytes }, warnings: plan.warnings };
}

/**
 * repodata.json documents (specs/conda.md §2, §4, §5): parsing, the variants derived from one snapshot (`.zst`,
 * `current_repodata.json`, CEP-16 shards, the file → digest lookup), deterministic rendering of a hosted subdir, group
 * merges and `channeldata.json`. Pure and structured-cloneable (no core imports): run inline for small documents and in
 * the worker pool (plugins/conda/task.ts) for big ones.
 */
import { decode as msgpackDecode, encode as msgpackEncode } from "@msgpack/msgpack";
import { compareRecords } from "./version.ts";
import { parsePackageFile } from "./paths.ts";

/** A repodata record (info/index.json minus platform fields, plus md5, sha256, size). Unknown fields are kept. */
export interface PackageRecord {
  name: string;
  version: string;
  build: string;
  build_number: number;
  depends?: string[];
  subdir?: string;
  md5?: string;
  sha256?: string;
  size?: number;
  timestamp?: number;
  [field: string]: unknown;
}

/** A parsed repodata.json (unknown top-level keys are kept as they are). */
export interface Repodata {
  info?: { subdir?: string; base_url?: string; [k: string]: unknown };
  packages?: Record<string, PackageRecord>;
  "packages.conda"?: Record<string, PackageRecord>;
  removed?: string[];
  repodata_version?: number;
  [k: string]: unknown;
}

/** Why a repodata document cannot be used (the message is shown in logs and 502 answers). */
export class RepodataError extends Error {
  override name = "RepodataError";
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Parses repodata bytes. An empty body counts as `{}` (specs/conda.md §2).
 * @throws RepodataError when the bytes are not a JSON object or `packages`/`packages.conda` are not objects
 */
export function parseRepodata(bytes: Uint8Array): Repodata {
  const text = decoder.decode(bytes);
  if (text.trim() === "") return {};
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new RepodataError(`not JSON: ${(e as Error).message}`);
  }
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) throw new RepodataError("not a JSON object");
  const r = doc as Repodata;
  for (const k of ["packages", "packages.conda"] as const)
    if (r[k] !== undefined && (typeof r[k] !== "object" || r[k] === null || Array.isArray(r[k]))) throw new RepodataError(`"${k}" is not an object`);
  return r;
}

/** JSON with object keys sorted at every level, compact: the same document always gives the same bytes. */
export function stableStringify(v: unknown): string {
  if (v === null || typeof v !== "object") return JSON.stringify(v) ?? "null";
  if (Array.isArray(v)) return "[" + v.map((x) => (x === undefined ? "null" : stableStringify(x))).join(",") + "]";
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort();
  return "{" + keys.map((k) => JSON.stringify(k) + ":" + stableStringify(o[k])).join(",") + "}";
}

/* ------------------------------------------------------------------ proxy snapshots */

/** Input of {@link normalizeSnapshot}. */
export interface NormalizeInput {
  /** The upstream body (decoded from any Content-Encoding). */
  body: Uint8Array;
  /** `zst` when fetched as `repodata.json.zst`. */
  compression: "zst" | "none";
  /** The upstream URL of the document (base for a relative `info.base_url`). */
  url: string;
}

/** Output of {@link normalizeSnapshot}. */
export interface NormalizeOutput {
  /** The repodata.json to store and serve. */
  body: Uint8Array;
  /** Absolute upstream base URL of the package files when upstream's `info.base_url` (CEP-15) pointed elsewhere. */
  baseUrl?: string;
  /** Number of records. */
  count: number;
}

/**
 * Turns an upstream repodata document into the snapshot a proxy stores: decompressed, checked, and — when upstream sets
 * `info.base_url` (CEP-15) — rewritten without it (and with `repodata_version: 1`) so that clients fetch packages from
 * the vault's subdir; the upstream base is returned for the proxy's package fetches. Otherwise the bytes are kept as sent.
 * @throws RepodataError for data that is not zstd (when `zst`) or not repodata
 */
export function normalizeSnapshot(i: NormalizeInput): NormalizeOutput {
  let body = i.body;
  if (i.compression === "zst") {
    if (!(body[0] === 0x28 && body[1] === 0xb5 && body[2] === 0x2f && body[3] === 0xfd)) throw new RepodataError("repodata.json.zst is not zstd data");
    try {
      body = Bun.zstdDecompressSync(body);
    } catch (e) {
      throw new RepodataError(`repodata.json.zst does not decompress: ${(e as Error).message}`);
    }
  }
  const doc = parseRepodata(body);
  const count = Object.keys(doc.packages ?? {}).length + Object.keys(doc["packages.conda"] ?? {}).length;
  const base = doc.info?.base_url;
  if (typeof base !== "string" || base === "") return { body, count };
  let baseUrl: string;
  try {
    baseUrl = new URL(base.endsWith("/") ? base : base + "/", i.url).href;
  } catch {
    throw new RepodataError(`info.base_url is not a URL: ${JSON.stringify(base)}`);
  }
  delete doc.info!.base_url;
  doc.repodata_version = 1;
  return { body: encoder.encode(JSON.stringify(doc)), baseUrl, count };
}

/* ------------------------------------------------------------------ derived variants */

/** Input of {@link deriveVariants}. */
export interface DeriveInput {
  /** The subdir's repodata.json snapshot. */
  snapshot: Uint8Array;
  subdir: string;
  /** Also build CEP-16 shards. */
  shards: boolean;
  /** zstd level of `repodata.json.zst` (default 3). */
  zstdLevel?: number;
}

/** Output of {@link deriveVariants}. */
export interface DeriveOutput {
  /** `repodata.json.zst`: the snapshot, zstd-compressed. */
  zst: Uint8Array;
  /** `current_repodata.json`: for each package name, the records of its newest version only. */
  current: Uint8Array;
  /** File lookup, one line per file: `<filename>\t<sha256>\t<size>\t<md5>\n` (empty fields when unknown). */
  records: string;
  /** `repodata_shards.msgpack.zst` (when `shards`). */
  shardIndex?: Uint8Array;
  /** The shard files by lower-case hex sha256 of their bytes (when `shards`). */
  shards?: [string, Uint8Array][];
  /** Number of records. */
  count: number;
}

type RecordMap = Record<string, PackageRecord>;

function recordMaps(doc: Repodata): { packages: RecordMap; conda: RecordMap } {
  return { packages: doc.packages ?? {}, conda: doc["packages.conda"] ?? {} };
}

/** The records of a document by package name (from the record, else from the file name), both formats. */
function byName(doc: Repodata): Map<string, { packages: [string, PackageRecord][]; conda: [string, PackageRecord][] }> {
  const out = new Map<string, { packages: [string, PackageRecord][]; conda: [string, PackageRecord][] }>();
  const { packages, conda } = recordMaps(doc);
  const add = (fn: string, r: PackageRecord, which: "packages" | "conda") => {
    const name = typeof r?.name === "string" ? r.name : parsePackageFile(fn)?.name;
    if (!name) return;
    let g = out.get(name);
    if (!g) out.set(name, (g = { packages: [], conda: [] }));
    g[which].push([fn, r]);
  };
  for (const fn of Object.keys(packages)) add(fn, packages[fn], "packages");
  for (const fn of Object.keys(conda)) add(fn, conda[fn], "conda");
  return out;
}

const HEX = /^[0-9a-f]+$/i;

function hexBytes(h: unknown): unknown {
  if (typeof h !== "string" || h.length % 2 !== 0 || !HEX.test(h)) return h;
  return Uint8Array.from(Buffer.from(h, "hex"));
}

/** A record as CEP-16 stores it: `md5` and `sha256` as raw bytes. */
function shardRecord(r: PackageRecord): Record<string, unknown> {
  const o: Record<string, unknown> = { ...r };
  if (o.md5 !== undefined) o.md5 = hexBytes(o.md5);
  if (o.sha256 !== undefined) o.sha256 = hexBytes(o.sha256);
  return o;
}

function sortedObject<T>(entries: [string, T][], map: (v: T) => unknown = (v) => v): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const [k, v] of entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) o[k] = map(v);
  return o;
}

function sha256Hex(b: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(b).digest("hex");
}

/**
 * Every variant served from one repodata.json snapshot (specs/conda.md §5 "keep .json, .zst, shards generated from the
 * same snapshot"): see {@link DeriveOutput}. Shards (CEP-16): one per package name, `{packages, packages.conda, removed}`
 * with md5/sha256 as bytes, zstd-compressed, named by the sha256 of the compressed bytes; the index carries
 * `info: {base_url: "", shards_base_url: "./shards/", subdir}`. Deterministic for the same snapshot.
 * @throws RepodataError when the snapshot is not repodata
 */
export function deriveVariants(i: DeriveInput): DeriveOutput {
  const doc = parseRepodata(i.snapshot);
  const { packages, conda } = recordMaps(doc);
  const zst = Bun.zstdCompressSync(i.snapshot, { level: i.zstdLevel ?? 3 });
  let records = "";
  let count = 0;
  for (const map of [packages, conda])
    for (const fn of Object.keys(map)) {
      const r = map[fn];
      if (!r || typeof r !== "object") continue;
      count++;
      records += `${fn}\t${typeof r.sha256 === "string" ? r.sha256.toLowerCase() : ""}\t${typeof r.size === "number" ? r.size : ""}\t${typeof r.md5 === "string" ? r.md5.toLowerCase() : ""}\n`;
    }
  const groups = byName(doc);
  // current_repodata.json: the newest version of each name (all its builds, both formats)
  const curPackages: [string, PackageRecord][] = [];
  const curConda: [string, PackageRecord][] = [];
  for (const g of groups.values()) {
    const all = [...g.packages, ...g.conda];
    let newest = all[0][1];
    for (const [, r] of all) if (compareRecords(r, newest) > 0) newest = r;
    const keep = (r: PackageRecord) => compareRecords({ version: r.version }, { version: newest.version }) === 0;
    for (const e of g.packages) if (keep(e[1])) curPackages.push(e);
    for (const e of g.conda) if (keep(e[1])) curConda.push(e);
  }
  const current: Repodata = {
    info: { subdir: i.subdir },
    packages: sortedObject(curPackages) as RecordMap,
    "packages.conda": sortedObject(curConda) as RecordMap,
    removed: [],
    repodata_version: 1,
  };
  const out: DeriveOutput = { zst, current: encoder.encode(JSON.stringify(current)), records, count };
  if (i.shards) {
    const removedByName = new Map<string, string[]>();
    for (const fn of doc.removed ?? []) {
      const n = typeof fn === "string" ? parsePackageFile(fn)?.name : undefined;
      if (!n) continue;
      const l = removedByName.get(n) ?? [];
      l.push(fn);
      removedByName.set(n, l);
    }
    const shards: [string, Uint8Array][] = [];
    const index: [string, Uint8Array][] = [];
    for (const [name, g] of groups) {
      const shard = {
        packages: sortedObject(g.packages, shardRecord),
        "packages.conda": sortedObject(g.conda, shardRecord),
        removed: (removedByName.get(name) ?? []).sort(),
      };
      const bytes = Bun.zstdCompressSync(msgpackEncode(shard), { level: i.zstdLevel ?? 3 });
      const hex = sha256Hex(bytes);
      shards.push([hex, bytes]);
      index.push([name, Uint8Array.from(Buffer.from(hex, "hex"))]);
    }
    const idx = { version: 1, info: { base_url: "", shards_base_url: "./shards/", subdir: i.subdir }, shards: sortedObject(index) };
    out.shardIndex = Bun.zstdCompressSync(msgpackEncode(idx), { level: i.zstdLevel ?? 3 });
    out.shards = shards;
  }
  return out;
}

/** One file's lookup values (from {@link DeriveOutput.records}). */
export interface FileDigests {
  sha256?: string;
  size?: number;
  md5?: string;
}

/** Parses the lookup lines of {@link DeriveOutput.records} into a map by file name. */
export function parseRecordLines(text: string): Map<string, FileDigests> {
  const m = new Map<string, FileDigests>();
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf("\n", start);
    if (end < 0) end = text.length;
    const [fn, sha, size, md5] = text.slice(start, end).split("\t");
    start = end + 1;
    if (!fn) continue;
    const d: FileDigests = {};
    if (sha && /^[0-9a-f]{64}$/.test(sha)) d.sha256 = sha;
    if (size && /^\d+$/.test(size)) d.size = Number(size);
    if (md5 && /^[0-9a-f]{32}$/.test(md5)) d.md5 = md5;
    m.set(fn, d);
  }
  return m;
}

/** What a CEP-16 shard index says about where its shards and packages are (`info`), and its shard count. */
export interface ShardIndexInfo {
  base_url?: string;
  shards_base_url?: string;
  subdir?: string;
  count: number;
}

/**
 * Reads the `info` of a `repodata_shards.msgpack.zst`.
 * @throws RepodataError when the bytes are not a zstd msgpack map with a `shards` map
 */
export function shardIndexInfo(bytes: Uint8Array): ShardIndexInfo {
  let doc: unknown;
  try {
    doc = msgpackDecode(Bun.zstdDecompressSync(bytes));
  } catch (e) {
    throw new RepodataError(`not a zstd msgpack shard index: ${(e as Error).message}`);
  }
  if (!doc || typeof doc !== "object" || !(doc as { shards?: unknown }).shards || typeof (doc as { shards?: unknown }).shards !== "object")
    throw new RepodataError("shard index without a shards map");
  const d = doc as { info?: Record<string, unknown>; shards: Record<string, unknown> };
  const str = (v: unknown) => (typeof v === "string" ? v : undefined);
  return { base_url: str(d.info?.base_url), shards_base_url: str(d.info?.shards_base_url), subdir: str(d.info?.subdir), count: Object.keys(d.shards).length };
}

/* ------------------------------------------------------------------ hosted and group documents */

/** One record to add to a hosted subdir's repodata. */
export interface AddedRecord {
  filename: string;
  record: PackageRecord;
}

/**
 * A hosted subdir's repodata.json with `add` merged in (same file name replaced) and the files named in `remove` left
 * out (a deletion: they are not listed under `removed`, which conda reserves for patched-out files), rendered
 * deterministically: compact JSON, keys sorted, `{info: {subdir}, packages, packages.conda, removed: [], repodata_version: 1}`.
 * @param current the stored document, or undefined for a new subdir
 * @param remove package file names (`<name>-<version>-<build>.conda|.tar.bz2`) to drop
 */
export function addRecords(current: Uint8Array | undefined, subdir: string, add: AddedRecord[], remove: string[] = []): Uint8Array {
  const doc = current ? parseRepodata(current) : {};
  const packages: RecordMap = { ...(doc.packages ?? {}) };
  const conda: RecordMap = { ...(doc["packages.conda"] ?? {}) };
  for (const fn of remove) delete (fn.endsWith(".conda") ? conda : packages)[fn];
  for (const a of add) (a.filename.endsWith(".conda") ? conda : packages)[a.filename] = a.record;
  return renderRepodata(subdir, packages, conda, doc.removed ?? []);
}

/** Renders a repodata.json deterministically (see {@link addRecords}). */
export function renderRepodata(subdir: string, packages: RecordMap, conda: RecordMap, removed: string[]): Uint8Array {
  return encoder.encode(
    stableStringify({ info: { subdir }, packages, "packages.conda": conda, removed: [...new Set(removed)].sort(), repodata_version: 1 }),
  );
}

/**
 * Merges members' repodata.json for a group (read order): per file name the first member listing it wins; `removed` is
 * the union minus names still listed. Rendered deterministically. Members' `info.base_url` must already be gone.
 * @throws RepodataError when a source is not repodata
 */
export function mergeRepodata(sources: Uint8Array[], subdir: string): Uint8Array {
  const packages: RecordMap = {};
  const conda: RecordMap = {};
  const removed = new Set<string>();
  for (const s of sources) {
    const doc = parseRepodata(s);
    for (const [fn, r] of Object.entries(doc.packages ?? {})) if (!(fn in packages)) packages[fn] = r;
    for (const [fn, r] of Object.entries(doc["packages.conda"] ?? {})) if (!(fn in conda)) conda[fn] = r;
    for (const fn of doc.removed ?? []) if (typeof fn === "string") removed.add(fn);
  }
  return renderRepodata(subdir, packages, conda, [...removed].filter((fn) => !(fn in packages) && !(fn in conda)));
}

/** What a hosted channel keeps about one package file for `channeldata.json` (from info/about.json and run_exports). */
export interface ChannelFileInfo {
  subdir: string;
  record: PackageRecord;
  /** info/about.json fields: `home`, `license`, `summary`, `description`, `dev_url`, `doc_url`, `source_url`, … */
  about?: Record<string, unknown>;
  /** info/run_exports.json (a list means weak exports). */
  run_exports?: unknown;
}

const ABOUT_FIELDS = ["description", "dev_url", "doc_url", "doc_source_url", "home", "license", "license_family", "source_url", "summary", "icon_url", "identifiers", "keywords", "tags", "source_git_url"];

/**
 * `channeldata.json` (CEP-38) of a hosted channel: `current` with the entries of every package name in `files`
 * recomputed from those files (all of that name's files, every subdir): the newest record's version, license and about
 * fields, the subdirs it appears in, its newest timestamp and the run_exports of its newest version. `subdirs` is the
 * union of `current`'s and `subdirs`. Rendered deterministically.
 * @param recomputed names whose entries are recomputed even when `files` holds none of them: those entries are dropped
 *   (the last file of the package was deleted)
 */
export function renderChanneldata(current: Uint8Array | undefined, files: ChannelFileInfo[], subdirs: string[], recomputed: string[] = []): Uint8Array {
  let doc: { packages?: Record<string, unknown>; subdirs?: string[] } = {};
  if (current) {
    try {
      doc = JSON.parse(decoder.decode(current));
    } catch {
      doc = {};
    }
  }
  const packages: Record<string, unknown> = { ...(doc.packages ?? {}) };
  const allSubdirs = new Set<string>([...(doc.subdirs ?? []), ...subdirs]);
  const byName = new Map<string, ChannelFileInfo[]>();
  for (const f of files) {
    allSubdirs.add(f.subdir);
    const l = byName.get(f.record.name) ?? [];
    l.push(f);
    byName.set(f.record.name, l);
  }
  for (const name of recomputed) if (!byName.has(name)) delete packages[name];
  for (const [name, l] of byName) {
    let newest = l[0];
    for (const f of l) if (compareRecords(f.record, newest.record) > 0) newest = f;
    const entry: Record<string, unknown> = {
      subdirs: [...new Set(l.map((f) => f.subdir))].sort(),
      version: newest.record.version,
      timestamp: Math.max(...l.map((f) => (typeof f.record.timestamp === "number" ? f.record.timestamp : 0))),
    };
    for (const k of ABOUT_FIELDS) if (newest.about?.[k] !== undefined) entry[k] = newest.about[k];
    if (entry.license === undefined && newest.record.license !== undefined) entry.license = newest.record.license;
    if (newest.run_exports !== undefined) {
      const re = Array.isArray(newest.run_exports) ? { weak: newest.run_exports } : newest.run_exports;
      entry.run_exports = { [newest.record.version]: re };
    }
    packages[name] = entry;
  }
  return encoder.encode(stableStringify({ channeldata_version: 1, packages, subdirs: [...allSubdirs].sort() }));
}

/** Merges members' `channeldata.json` (read order): a package's entry comes from the first member that has it, its `subdirs` are the union; `subdirs` likewise. */
export function mergeChanneldata(sources: Uint8Array[]): Uint8Array {
  const packages: Record<string, Record<string, unknown>> = {};
  const subdirs = new Set<string>();
  for (const s of sources) {
    let doc: { packages?: Record<string, Record<string, unknown>>; subdirs?: unknown[] };
    try {
      doc = JSON.parse(decoder.decode(s));
    } catch {
      continue;
    }
    for (const d of doc.subdirs ?? []) if (typeof d === "string") subdirs.add(d);
    for (const [name, e] of Object.entries(doc.packages ?? {})) {
      if (!e || typeof e !== "object") continue;
      const have = packages[name];
      if (!have) packages[name] = { ...e };
      else if (Array.isArray(e.subdirs)) have.subdirs = [...new Set([...((have.subdirs as string[]) ?? []), ...(e.subdirs as string[])])].sort();
    }
  }
  return encoder.encode(stableStringify({ channeldata_version: 1, packages, subdirs: [...subdirs].sort() }));
}

/**
 * Packument documents the vault produces (specs/npm.md §3): the full and abbreviated ("corgi") renderings of a hosted
 * package document, the merged packument of a group, one version's document. Pure (no core/ imports): runs inline or in
 * the worker pool through the `npmPackument` task (task.ts).
 */

/** A parsed JSON object. */
export type Json = Record<string, unknown>;

/** The `dist` fields the vault verifies a tarball against (specs/npm.md §3: integrity). */
export interface TarballDist {
  /** Subresource Integrity string, e.g. `sha512-<base64>` (may list several, space-separated). */
  integrity?: string;
  /** Hex sha1 of the tarball (legacy). */
  shasum?: string;
}

/**
 * Expected digests of a tarball from its `dist`: lower-case hex per algorithm (sha512 and sha1 from `integrity`, sha1
 * from `shasum` when `integrity` has none), empty when neither field is usable. Other SRI algorithms are ignored.
 */
export function expectedDigests(dist: TarballDist): { sha512?: string; sha1?: string } {
  const out: { sha512?: string; sha1?: string } = {};
  for (const part of (typeof dist.integrity === "string" ? dist.integrity : "").trim().split(/\s+/)) {
    const m = /^(sha512|sha1)-([A-Za-z0-9+/]+={0,2})(\?.*)?$/.exec(part);
    if (!m) continue;
    const hex = Buffer.from(m[2], "base64").toString("hex");
    if (m[1] === "sha512" && hex.length === 128) out.sha512 ??= hex;
    if (m[1] === "sha1" && hex.length === 40) out.sha1 ??= hex;
  }
  if (!out.sha1 && typeof dist.shasum === "string" && /^[0-9a-fA-F]{40}$/.test(dist.shasum)) out.sha1 = dist.shasum.toLowerCase();
  return out;
}

/** Which rendering of a packument: full (`application/json`) or abbreviated (`application/vnd.npm.install-v1+json`). */
export type Variant = "full" | "abbrev";

/** Thrown for documents that are not a packument (not JSON, not an object). */
export class PackumentParseError extends Error {
  override name = "PackumentParseError";
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Parses a packument. @throws PackumentParseError when `body` is not a JSON object */
export function parseDoc(body: Uint8Array): Json {
  let doc: unknown;
  try {
    doc = JSON.parse(decoder.decode(body));
  } catch (e) {
    throw new PackumentParseError(`packument is not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!isObject(doc)) throw new PackumentParseError("packument is not a JSON object");
  return doc;
}

/** Compact UTF-8 JSON. */
export function encodeDoc(doc: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(doc));
}

/** Whether `v` is a plain JSON object (not null, not an array). */
export function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** `doc.versions` as an object (empty when absent or malformed). */
export function versionsMap(doc: Json): Record<string, Json> {
  const v = doc.versions;
  if (!isObject(v)) return {};
  const out: Record<string, Json> = {};
  for (const [k, m] of Object.entries(v)) if (isObject(m)) out[k] = m;
  return out;
}

/** `doc["dist-tags"]` with string values only (empty when absent). */
export function distTagsOf(doc: Json): Record<string, string> {
  const tags = doc["dist-tags"];
  const out: Record<string, string> = {};
  if (isObject(tags)) for (const [k, v] of Object.entries(tags)) if (typeof v === "string") out[k] = v;
  return out;
}

/** `doc.time` with string values only (empty when absent). */
export function timeOf(doc: Json): Record<string, string> {
  const t = doc.time;
  const out: Record<string, string> = {};
  if (isObject(t)) for (const [k, v] of Object.entries(t)) if (typeof v === "string") out[k] = v;
  return out;
}

/**
 * Per-version fields an abbreviated packument keeps (specs/npm.md §3), plus `libc` and `acceptDependencies`, which
 * npm reads from install manifests too.
 */
export const ABBREVIATED_VERSION_FIELDS = [
  "name",
  "version",
  "dist",
  "deprecated",
  "dependencies",
  "optionalDependencies",
  "devDependencies",
  "peerDependencies",
  "peerDependenciesMeta",
  "bundleDependencies",
  "acceptDependencies",
  "bin",
  "directories",
  "engines",
  "os",
  "cpu",
  "libc",
  "_hasShrinkwrap",
  "hasInstallScript",
] as const;

/** The abbreviated form of a full packument: `name`, `modified` (from `time.modified`), `dist-tags`, trimmed `versions`. */
export function abbreviate(doc: Json): Json {
  const versions: Json = {};
  for (const [v, m] of Object.entries(versionsMap(doc))) {
    const out: Json = {};
    for (const k of ABBREVIATED_VERSION_FIELDS) if (m[k] !== undefined) out[k] = m[k];
    versions[v] = out;
  }
  const out: Json = { name: doc.name };
  const modified = typeof doc.modified === "string" ? doc.modified : timeOf(doc).modified;
  if (modified !== undefined) out.modified = modified;
  out["dist-tags"] = distTagsOf(doc);
  out.versions = versions;
  return out;
}

/**
 * Renders a hosted package document (tarball URLs stored as repository-relative paths `<name>/-/<file>.tgz`) for the
 * public repository URL `base` (no trailing slash): every relative `dist.tarball` becomes `<base>/<path>`.
 * `full` keeps every field and adds top-level `modified`; `abbrev` is {@link abbreviate}d.
 * @throws PackumentParseError when `body` is not a JSON object
 */
export function renderHosted(body: Uint8Array, base: string, variant: Variant): Uint8Array {
  const doc = parseDoc(body);
  for (const m of Object.values(versionsMap(doc))) {
    const d = m.dist;
    if (isObject(d) && typeof d.tarball === "string" && !/^[a-z][a-z0-9+.-]*:/i.test(d.tarball)) d.tarball = `${base}/${d.tarball}`;
  }
  const modified = timeOf(doc).modified;
  if (modified !== undefined) doc.modified = modified;
  return encodeDoc(variant === "abbrev" ? abbreviate(doc) : doc);
}

/** One member's packument in a group merge. */
export interface MergeSource {
  /** The member's packument, in the variant being merged, tarball URLs under `base`. */
  body: Uint8Array;
  /** The member's public repository URL (no trailing slash): its tarball URLs `<base>/…` become `<group base>/…`. */
  base: string;
}

/**
 * Merges group members' packuments of one package (specs/npm.md; plugins/npm/README.md "Groups"), members in read
 * order: a version comes from the first member that has it (its tarball URL moved under the group's `base`, other hosts
 * left alone), each dist-tag from the first member that has the tag, `time` per version likewise with `created` the
 * earliest and `modified` the latest; other top-level fields from the first member. `_rev` is dropped (writes go to the
 * group's `writeTo` member, whose own document carries it).
 * @throws PackumentParseError when a source is not a JSON object
 */
export function mergePackuments(sources: MergeSource[], base: string, variant: Variant): Uint8Array {
  let top: Json | undefined;
  const versions: Json = {};
  const tags: Record<string, string> = {};
  const time: Record<string, string> = {};
  let created: string | undefined;
  let modified: string | undefined;
  for (const s of sources) {
    const doc = parseDoc(s.body);
    top ??= doc;
    const t = timeOf(doc);
    const prefix = `${s.base}/`;
    for (const [v, m] of Object.entries(versionsMap(doc))) {
      if (Object.hasOwn(versions, v)) continue;
      const d = m.dist;
      if (isObject(d) && typeof d.tarball === "string" && d.tarball.startsWith(prefix)) d.tarball = `${base}/${d.tarball.slice(prefix.length)}`;
      versions[v] = m;
      if (t[v] !== undefined) time[v] = t[v];
    }
    for (const [k, v] of Object.entries(distTagsOf(doc))) if (!Object.hasOwn(tags, k)) tags[k] = v;
    const docModified = typeof doc.modified === "string" ? doc.modified : t.modified;
    if (docModified !== undefined && (modified === undefined || docModified > modified)) modified = docModified;
    if (t.created !== undefined && (created === undefined || t.created < created)) created = t.created;
  }
  if (!top) throw new PackumentParseError("nothing to merge");
  const out: Json = { ...top, "dist-tags": tags, versions };
  delete out._rev;
  if (modified !== undefined) out.modified = modified;
  if (variant === "full") {
    const merged: Record<string, string> = {};
    if (created !== undefined) merged.created = created;
    if (modified !== undefined) merged.modified = modified;
    out.time = { ...merged, ...time };
  }
  return encodeDoc(variant === "abbrev" ? abbreviate(out) : out);
}

/**
 * The document of one version (`GET <name>/<version-or-tag>`): `versions[spec]`, else `versions[dist-tags[spec]]`.
 * @returns its JSON bytes, or undefined when the packument has neither
 * @throws PackumentParseError when `body` is not a JSON object
 */
export function versionDocument(body: Uint8Array, spec: string): Uint8Array | undefined {
  const doc = parseDoc(body);
  const versions = versionsMap(doc);
  const tags = distTagsOf(doc);
  const key = Object.hasOwn(versions, spec) ? spec : Object.hasOwn(tags, spec) && Object.hasOwn(versions, tags[spec]) ? tags[spec] : undefined;
  return key === undefined ? undefined : encodeDoc(versions[key]);
}

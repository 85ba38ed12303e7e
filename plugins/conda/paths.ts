/**
 * Conda channel paths (specs/conda.md §1, §3): subdir names, package file names (CEP-26), and the parse of a
 * repository-relative request path into what it addresses. Pure: no core imports (also used by the worker pool and the
 * mirror CLI).
 */

/** A subdir: `noarch` or `{os}-{arch}` (`linux-64`, `osx-arm64`, `win-64`, …). */
export const SUBDIR = /^(noarch|[a-z0-9]+-[a-z0-9]+)$/;

/** A channel label (`<channel>/label/<label>/<subdir>/…`). */
const LABEL = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** CEP-26 package name: lower-case `[a-z0-9._-]`, starting with a letter, digit or one `_`, at most 64 characters. */
export const PACKAGE_NAME = /^(?!__)[a-z0-9_][a-z0-9._-]{0,63}$/;
/** A version as it appears in file names: no `-` (CEP-26; upper case and `*` are seen in old packages). */
const VERSION = /^[A-Za-z0-9_.+!*]{1,64}$/;
/** A build string (CEP-26). */
const BUILD = /^[A-Za-z0-9_.+]{1,64}$/;

/** The two package formats: `.tar.bz2` (v1, listed under `packages`) and `.conda` (v2, under `packages.conda`). */
export type PackageFormat = "tar.bz2" | "conda";

/** A package file name split per CEP-26. */
export interface PackageFile {
  /** The whole file name, e.g. `zlib-1.2.11-h7b6447c_3.conda`. */
  filename: string;
  name: string;
  version: string;
  build: string;
  format: PackageFormat;
}

/**
 * Splits a package file name `<name>-<version>-<build>.<conda|tar.bz2>` (`rsplit("-", 2)`), checking each part.
 * @returns null when the name is not a valid package file name (length ≤ 211, CEP-26 grammar)
 */
export function parsePackageFile(filename: string): PackageFile | null {
  if (filename.length > 211) return null;
  let format: PackageFormat;
  let stem: string;
  if (filename.endsWith(".conda")) {
    format = "conda";
    stem = filename.slice(0, -6);
  } else if (filename.endsWith(".tar.bz2")) {
    format = "tar.bz2";
    stem = filename.slice(0, -8);
  } else return null;
  const b = stem.lastIndexOf("-");
  if (b <= 0) return null;
  const v = stem.lastIndexOf("-", b - 1);
  if (v <= 0) return null;
  const name = stem.slice(0, v);
  const version = stem.slice(v + 1, b);
  const build = stem.slice(b + 1);
  if (!PACKAGE_NAME.test(name) || !VERSION.test(version) || !BUILD.test(build)) return null;
  return { filename, name, version, build, format };
}

/** The repodata key a file of `format` is listed under. */
export function packagesKey(format: PackageFormat): "packages" | "packages.conda" {
  return format === "conda" ? "packages.conda" : "packages";
}

/** Metadata documents of a subdir that the plugin answers (every other name in a subdir must be a package file). */
export type SubdirDocument =
  | "repodata.json"
  | "repodata.json.zst"
  | "repodata.json.bz2"
  | "repodata.jlap"
  | "current_repodata.json"
  | "current_repodata.json.zst"
  | "current_repodata.json.bz2"
  | "repodata_from_packages.json"
  | "repodata_shards.msgpack.zst"
  | "run_exports.json"
  | "patch_instructions.json";

const DOCUMENTS = new Set<string>([
  "repodata.json",
  "repodata.json.zst",
  "repodata.json.bz2",
  "repodata.jlap",
  "current_repodata.json",
  "current_repodata.json.zst",
  "current_repodata.json.bz2",
  "repodata_from_packages.json",
  "repodata_shards.msgpack.zst",
  "run_exports.json",
  "patch_instructions.json",
]);

/** A shard file name: lower-case hex sha256 of the compressed shard + `.msgpack.zst` (CEP-16). */
const SHARD = /^([0-9a-f]{64})\.msgpack\.zst$/;

/** What a repository-relative path addresses. `prefix` is `""` or `label/<label>/` (kept in cache keys and upstream URLs). */
export type CondaPath =
  | { kind: "channeldata"; prefix: string }
  | { kind: "document"; prefix: string; subdir: string; doc: SubdirDocument }
  | { kind: "shard"; prefix: string; subdir: string; hex: string }
  | { kind: "package"; prefix: string; subdir: string; file: PackageFile }
  | { kind: "subdir-index"; prefix: string; subdir: string }
  | { kind: "channel-index"; prefix: string };

/**
 * Parses a decoded repository-relative path (no leading slash):
 * `channeldata.json`, `<subdir>/<document>`, `<subdir>/[shards/]<hex>.msgpack.zst`, `<subdir>/<package file>`,
 * `<subdir>/` and `""` (listings), each optionally below `label/<label>/`.
 * @returns null when the path is none of these
 */
export function parseCondaPath(rel: string): CondaPath | null {
  let prefix = "";
  let rest = rel;
  if (rest.startsWith("label/")) {
    const i = rest.indexOf("/", 6);
    if (i < 0) return null;
    const label = rest.slice(6, i);
    if (!LABEL.test(label)) return null;
    prefix = `label/${label}/`;
    rest = rest.slice(i + 1);
  }
  if (rest === "") return { kind: "channel-index", prefix };
  if (rest === "channeldata.json") return { kind: "channeldata", prefix };
  const segs = rest.split("/");
  const subdir = segs[0];
  if (!SUBDIR.test(subdir)) return null;
  if (segs.length === 2) {
    const name = segs[1];
    if (name === "") return { kind: "subdir-index", prefix, subdir };
    if (DOCUMENTS.has(name)) return { kind: "document", prefix, subdir, doc: name as SubdirDocument };
    const m = SHARD.exec(name);
    if (m) return { kind: "shard", prefix, subdir, hex: m[1] };
    const file = parsePackageFile(name);
    return file ? { kind: "package", prefix, subdir, file } : null;
  }
  if (segs.length === 3 && segs[1] === "shards") {
    const m = SHARD.exec(segs[2]);
    if (m) return { kind: "shard", prefix, subdir, hex: m[1] };
  }
  return null;
}

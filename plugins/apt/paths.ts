/**
 * Request paths of an APT repository (specs/apt.md §1, §3): validated, decoded segments; the repository-relative key;
 * the upstream URL; what kind of file a path names.
 */
import { errors } from "../../core/plugin.ts";

/** Longest path accepted below the mount, characters. */
export const MAX_PATH_LENGTH = 2048;

/** Characters a decoded segment may contain (Debian file and suite names, `Translation-en_GB`, `by-hash/SHA256/<hex>`). */
const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._~+:@=,-]*$/;

/** The digest fields APT uses in by-hash paths, and the hex length of each. */
export const BY_HASH_FIELDS: Record<string, number> = { MD5Sum: 32, SHA1: 40, SHA256: 64, SHA512: 128 };

/** Files of a release directory that describe the suite itself (volatile, specs/apt.md §7). */
export const RELEASE_FILES = new Set(["InRelease", "Release", "Release.gpg"]);

/** What a path names. */
export type AptPath =
  /** `…/InRelease`, `…/Release`, `…/Release.gpg`: the release directory is `dir`. */
  | { kind: "release"; key: string; segs: string[]; dir: string; file: "InRelease" | "Release" | "Release.gpg" }
  /** `…/by-hash/<field>/<hex>`: `dir` is the directory of the indexes it stands for. */
  | { kind: "by-hash"; key: string; segs: string[]; dir: string; field: string; hex: string }
  /** A file under `pool/` (or a package file of a flat repository): immutable. */
  | { kind: "pool"; key: string; segs: string[] }
  /** Anything else below `dists/` (or in a flat repository): an index when the Release lists it. */
  | { kind: "index"; key: string; segs: string[] };

/** Package files outside `pool/` (flat repositories) that are immutable by name. */
const PACKAGE_FILE = /\.(deb|udeb|ddeb|dsc|diff\.gz|tar\.(gz|xz|bz2|zst|lzma))$/;

/**
 * Parses a path below the mount (raw, percent-encoded, no leading slash, no query).
 * @throws VaultError VAULT_NOT_FOUND (404) for the empty path (the archive root has no listing), VAULT_BAD_PATH (400) for
 *   a too long or malformed path, a segment outside Debian's file
 *   name characters, a dot segment or a trailing slash
 */
export function parseAptPath(raw: string): AptPath {
  if (raw === "") throw errors.notFound("a listing of the archive root (point APT at this URL)");
  if (raw.endsWith("/")) throw errors.badPath(raw, "not a file path");
  if (raw.length > MAX_PATH_LENGTH) throw errors.badPath(raw.slice(0, 200), "path too long");
  const segs: string[] = [];
  for (const s of raw.split("/")) {
    let d: string;
    try {
      d = decodeURIComponent(s);
    } catch {
      throw errors.badPath(raw, "malformed percent-encoding");
    }
    if (!SEGMENT.test(d)) throw errors.badPath(raw, d === "" ? "empty segment" : `segment ${JSON.stringify(d.slice(0, 80))} has characters Debian file names do not use`);
    segs.push(d);
  }
  const key = segs.join("/");
  const n = segs.length;
  const base = segs[n - 1];
  const dirOf = (k: number) => (k === 0 ? "" : segs.slice(0, k).join("/") + "/");
  if (segs[0] === "pool") return { kind: "pool", key, segs };
  if (RELEASE_FILES.has(base)) return { kind: "release", key, segs, dir: dirOf(n - 1), file: base as "InRelease" | "Release" | "Release.gpg" };
  if (n >= 3 && segs[n - 3] === "by-hash" && BY_HASH_FIELDS[segs[n - 2]] !== undefined) {
    const hex = base.toLowerCase();
    if (hex.length !== BY_HASH_FIELDS[segs[n - 2]] || !/^[0-9a-f]+$/.test(hex)) throw errors.badPath(raw, `not a ${segs[n - 2]} digest`);
    return { kind: "by-hash", key: segs.slice(0, n - 1).concat(hex).join("/"), segs, dir: dirOf(n - 3), field: segs[n - 2], hex };
  }
  if (segs[0] !== "dists" && PACKAGE_FILE.test(base)) return { kind: "pool", key, segs };
  return { kind: "index", key, segs };
}

/** Upstream URL of a repository-relative key: each segment percent-encoded (`+` as `%2B`, as APT sends it) under `base`. */
export function upstreamUrl(base: string, key: string): string {
  return base + key.split("/").map(encodeURIComponent).join("/");
}

/** The directory part of a key, with trailing slash (`""` for a top-level file). */
export function dirname(key: string): string {
  const i = key.lastIndexOf("/");
  return i < 0 ? "" : key.slice(0, i + 1);
}

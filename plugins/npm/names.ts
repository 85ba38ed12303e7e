/**
 * npm package names and request paths (specs/npm.md: names, scoped names `@scope%2fname`, tarball paths).
 * Pure: no core imports, so the worker task can use it too.
 */
import semver from "semver";

/** Longest package name the registry accepts, characters. */
export const MAX_NAME_LENGTH = 214;

/**
 * One name part (scope without `@`, or the bare name): URL-safe characters only, not starting with `.` or `_`.
 * Upper case is accepted (legacy packages such as `JSONStream` exist upstream).
 */
const PART = /^[A-Za-z0-9~-][A-Za-z0-9._~-]*$/;

/**
 * Whether `name` is a valid npm package name: `name` or `@scope/name`, each part {@link PART}, at most
 * {@link MAX_NAME_LENGTH} characters, never `.`/`..`/`node_modules`/`favicon.ico`.
 */
export function isValidPackageName(name: string): boolean {
  if (name.length === 0 || name.length > MAX_NAME_LENGTH) return false;
  let bare = name;
  if (name.startsWith("@")) {
    const slash = name.indexOf("/");
    if (slash < 2 || slash !== name.lastIndexOf("/")) return false;
    if (!PART.test(name.slice(1, slash))) return false;
    bare = name.slice(slash + 1);
  } else if (name.includes("/")) return false;
  if (!PART.test(bare)) return false;
  const lower = bare.toLowerCase();
  return lower !== "node_modules" && lower !== "favicon.ico";
}

/** Whether `file` is a tarball file name the vault serves: `<something>.tgz`, URL-safe characters, no `/`. */
export function isValidTarballName(file: string): boolean {
  return file.length <= 300 && /^[A-Za-z0-9~-][A-Za-z0-9._~+-]*\.tgz$/.test(file);
}

/** A dist-tag name: URL-safe, starting with a letter, at most 128 characters. */
const TAG = /^[A-Za-z][A-Za-z0-9._-]{0,127}$/;

/**
 * Whether `tag` may name a dist-tag (`latest`, `next`, `beta-2`): {@link TAG}, and never something that parses as a
 * semver range (`v2`, `x`), which npm would read as a version instead of a tag.
 */
export function isValidTagName(tag: string): boolean {
  return TAG.test(tag) && semver.validRange(tag) === null;
}

/** A `<version-or-tag>` path segment (`GET <name>/<spec>`): a semver version or a tag name, URL-safe characters. */
const SPEC = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,255}$/;

/** A parsed request path below the mount (specs/npm.md §2). `rev` is the CouchDB revision segment, when given. */
export type NpmRoute =
  | { kind: "packument"; name: string; rev?: string }
  | { kind: "version"; name: string; spec: string }
  | { kind: "tarball"; name: string; file: string; rev?: string }
  | { kind: "dist-tags"; name: string }
  | { kind: "dist-tag"; name: string; tag: string }
  | { kind: "ping" }
  | { kind: "search" }
  | { kind: "whoami" }
  | { kind: "web-login" }
  | { kind: "user"; user: string }
  | { kind: "logout"; token: string };

/** `-rev/<rev>` at the end of `rest`: the revision, or undefined when `rest` has none; `"bad"` when malformed. */
function revOf(rest: string[]): string | "bad" | undefined {
  if (rest.length !== 2 || rest[0] !== "-rev") return undefined;
  return /^[A-Za-z0-9._-]{1,128}$/.test(rest[1]) ? rest[1] : "bad";
}

/** Routes under `-/` that name no package: ping, search, whoami, web login, legacy login, logout. */
function dashRoute(segs: string[]): NpmRoute | "bad" | undefined {
  const p = segs.slice(1).join("/");
  if (p === "ping") return { kind: "ping" };
  if (p === "v1/search") return { kind: "search" };
  if (p === "whoami") return { kind: "whoami" };
  if (p === "v1/login") return { kind: "web-login" };
  if (segs[1] === "user" && segs.length >= 3) {
    if (segs[2] === "token" && segs.length === 4) return segs[3].length <= 512 ? { kind: "logout", token: segs[3] } : "bad";
    const m = /^org\.couchdb\.user:(.{1,64})$/.exec(segs[2]);
    if (!m) return undefined;
    if (segs.length === 3 || revOf(segs.slice(3)) !== undefined) return { kind: "user", user: m[1] };
  }
  return undefined;
}

/**
 * Parses the raw (percent-encoded) path below the mount, without its leading `/` (specs/npm.md §1–§2):
 * - `<name>`, `@scope%2fname`, `@scope/name` → packument (`…/-rev/<rev>` too: document replace / package unpublish)
 * - `<name>/<version-or-tag>` → version; `<name>/-/<file>.tgz` (scoped in either encoding, `/-rev/<rev>` too) → tarball
 * - `-/package/<name>/dist-tags[/<tag>]` → dist-tags / dist-tag
 * - `-/ping`, `-/v1/search`, `-/whoami`, `-/v1/login`, `-/user/org.couchdb.user:<user>[/-rev/<rev>]`,
 *   `-/user/token/<token>` → the routes of those names
 * @returns the route, `"bad"` when a component is malformed (bad escape, invalid name, file, tag or revision), or
 *   undefined when the path matches no route
 */
export function parseNpmPath(raw: string): NpmRoute | "bad" | undefined {
  let segs: string[];
  try {
    segs = raw.split("/").flatMap((s) => {
      const d = decodeURIComponent(s);
      // `@scope%2fname` is one encoded segment: split it back into scope + name
      return d.startsWith("@") && d.includes("/") ? d.split("/") : [d];
    });
  } catch {
    return "bad";
  }
  if (segs.some((s) => s === "" || s === "." || s === ".." || /[\\\u0000-\u001f\u007f]/.test(s))) return "bad";
  let tail = segs;
  let distTags = false;
  if (segs[0] === "-") {
    if (segs[1] !== "package") return dashRoute(segs);
    const at = segs.lastIndexOf("dist-tags");
    if (at < 3 || at < segs.length - 2) return undefined;
    tail = segs.slice(2, at);
    distTags = true;
  }
  const scoped = tail[0]?.startsWith("@") ?? false;
  const n = scoped ? 2 : 1;
  if (tail.length !== (distTags ? n : tail.length) || tail.length < n) return undefined;
  const name = tail.slice(0, n).join("/");
  if (!isValidPackageName(name)) return "bad";
  if (distTags) {
    const tag = segs[segs.length - 1] === "dist-tags" ? undefined : segs[segs.length - 1];
    if (tag === undefined) return { kind: "dist-tags", name };
    return isValidTagName(tag) ? { kind: "dist-tag", name, tag } : "bad";
  }
  const rest = tail.slice(n);
  if (rest.length === 0) return { kind: "packument", name };
  const rev = revOf(rest);
  if (rev === "bad") return "bad";
  if (rev !== undefined) return { kind: "packument", name, rev };
  if (rest[0] === "-" && (rest.length === 2 || rest.length === 4)) {
    if (!isValidTarballName(rest[1])) return "bad";
    if (rest.length === 2) return { kind: "tarball", name, file: rest[1] };
    const trev = revOf(rest.slice(2));
    if (trev === "bad") return "bad";
    return trev === undefined ? undefined : { kind: "tarball", name, file: rest[1], rev: trev };
  }
  if (rest.length === 1 && rest[0] !== "-") return SPEC.test(rest[0]) ? { kind: "version", name, spec: rest[0] } : "bad";
  return undefined;
}

/** The name as it appears in an upstream registry URL: `@scope%2fname` for scoped names (specs/npm.md), else as is. */
export function encodeName(name: string): string {
  return name.startsWith("@") ? "@" + name.slice(1).split("/").map(encodeURIComponent).join("%2f") : encodeURIComponent(name);
}

/**
 * npm package names and request paths (specs/npm.md: names, scoped names `@scope%2fname`, tarball paths).
 * Pure: no core imports, so the worker task can use it too.
 */

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

/** A parsed request path below the mount. */
export type NpmRoute =
  | { kind: "packument"; name: string }
  | { kind: "tarball"; name: string; file: string }
  | { kind: "dist-tags"; name: string }
  | { kind: "ping" }
  | { kind: "search" };

/**
 * Parses the raw (percent-encoded) path below the mount, without its leading `/`:
 * `<name>`, `@scope%2fname`, `@scope/name` → packument; `<name>/-/<file>.tgz` (scoped in either encoding) → tarball;
 * `-/package/<name>/dist-tags` → dist-tags; `-/ping`, `-/v1/search` → ping, search.
 * @returns the route, `"bad"` when a component is malformed (bad escape, invalid name or file name), or undefined
 *   when the path matches no route
 */
export function parseNpmPath(raw: string): NpmRoute | "bad" | undefined {
  if (raw === "-/ping") return { kind: "ping" };
  if (raw === "-/v1/search") return { kind: "search" };
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
  let prefix: string[] = [];
  if (segs[0] === "-") {
    if (segs[1] !== "package" || segs[segs.length - 1] !== "dist-tags") return undefined;
    tail = segs.slice(2, -1);
    prefix = ["dist-tags"];
  }
  const scoped = tail[0]?.startsWith("@") ?? false;
  const n = scoped ? 2 : 1;
  if (tail.length < n) return undefined;
  const name = tail.slice(0, n).join("/");
  if (!isValidPackageName(name)) return "bad";
  const rest = tail.slice(n);
  if (prefix.length) return rest.length === 0 ? { kind: "dist-tags", name } : undefined;
  if (rest.length === 0) return { kind: "packument", name };
  if (rest.length === 2 && rest[0] === "-") {
    if (!isValidTarballName(rest[1])) return "bad";
    return { kind: "tarball", name, file: rest[1] };
  }
  return undefined;
}

/** The name as it appears in an upstream registry URL: `@scope%2fname` for scoped names (specs/npm.md), else as is. */
export function encodeName(name: string): string {
  return name.startsWith("@") ? "@" + name.slice(1).split("/").map(encodeURIComponent).join("%2f") : encodeURIComponent(name);
}

/** The one request-path check (specs/http-caching.md §10): refuses traversal, encoded separators, NUL/control characters and double encoding. */
import { errors } from "../errors.ts";

/** Options of {@link pathProblem} / {@link checkRequestPath}. */
export interface PathCheckOptions {
  /** Accept `%2F` inside a segment (npm scoped names `@scope%2fname`). The plugin must then parse those segments itself. */
  allowEncodedSlash?: boolean;
}

/** Anything that needs a closer look: `%`, backslash, control characters, `//`, a `.`/`..` segment. */
const SUSPICIOUS = /[%\\\x00-\x1f\x7f]|\/\/|\/\.\.?(?:\/|$)/;

/**
 * Why a raw (still percent-encoded) URL path is refused, or null when it is acceptable.
 * Bun already resolves `..`, `%2e%2e` and backslashes out of the URL before the app sees it; this catches what
 * still arrives: `%2f`/`%2F` (unless allowed), `%5c`, `%00` and other encoded control characters, raw control
 * characters, `%25` double encoding (`%252e`), malformed escapes, empty segments (`//`) and dot segments.
 * Cheap when the path has nothing suspicious (one regex test).
 *
 * @param pathname the URL path as received (starts with `/`, no query), or a relative component path
 */
export function pathProblem(pathname: string, o?: PathCheckOptions): string | null {
  if (!SUSPICIOUS.test(pathname)) return null;
  if (/[\x00-\x1f\x7f]/.test(pathname)) return "control character";
  if (pathname.includes("\\")) return "backslash";
  if (pathname.includes("//")) return "empty segment";
  for (let i = pathname.indexOf("%"); i !== -1; i = pathname.indexOf("%", i + 1)) {
    const hex = pathname.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return "malformed percent-encoding";
    const c = parseInt(hex, 16);
    if (c < 0x20 || c === 0x7f) return "encoded control character";
    if (c === 0x5c) return "encoded backslash";
    if (c === 0x2f && !o?.allowEncodedSlash) return "encoded slash";
    if (c === 0x25 && /^[0-9A-Fa-f]{2}$/.test(pathname.slice(i + 3, i + 5))) return "double percent-encoding";
  }
  for (const seg of pathname.split("/")) {
    const d = seg.includes("%") ? safeDecode(seg) : seg;
    if (d === "." || d === "..") return "dot segment";
    if (d !== seg && d.includes("/")) {
      // an allowed %2F: the parts it separates must be proper segments too (`@scope%2fname`, not `..%2f`)
      for (const part of d.split("/")) {
        if (part === "." || part === "..") return "dot segment";
        if (part === "") return "empty segment";
      }
    }
  }
  return null;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * Throws unless `pathname` passes {@link pathProblem}.
 * @returns `pathname` unchanged
 * @throws VaultError VAULT_BAD_PATH (400) naming the reason
 */
export function checkRequestPath(pathname: string, o?: PathCheckOptions): string {
  const why = pathProblem(pathname, o);
  if (why) throw errors.badPath(pathname, why);
  return pathname;
}

/**
 * Checks one already-decoded path component (a file name, project name, image name segment) a plugin is about to
 * use as a storage path or upstream URL part: non-empty, not `.`/`..`, no `/`, `\`, NUL or control characters.
 * @returns `component` unchanged
 * @throws VaultError VAULT_BAD_PATH (400)
 */
export function checkPathComponent(component: string): string {
  let why: string | null = null;
  if (component === "") why = "empty component";
  else if (component === "." || component === "..") why = "dot segment";
  else if (/[\/\\]/.test(component)) why = "slash or backslash in a component";
  else if (/[\x00-\x1f\x7f]/.test(component)) why = "control character";
  if (why) throw errors.badPath(component, why);
  return component;
}

/**
 * The path of an absolute request URL without building a URL object (hot path): from the first `/` after
 * `scheme://host` up to `?` or `#`.
 */
export function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start === -1) return "/";
  let end = url.indexOf("?", start);
  if (end === -1) end = url.indexOf("#", start);
  return end === -1 ? url.slice(start) : url.slice(start, end);
}

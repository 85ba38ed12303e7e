/**
 * Request path → upstream URL for the generic http plugin (specs/http-caching.md §10): every segment validated and
 * re-encoded, the result pinned under the configured base (origin + base path), so a client never chooses scheme,
 * host, port or a path outside the base.
 */
import { errors } from "../../core/plugin.ts";

/** Longest path accepted below the mount, in characters. */
export const MAX_PATH_LENGTH = 4096;
/** Longest single segment, in characters. */
export const MAX_SEGMENT_LENGTH = 1024;

/** Characters kept verbatim in a re-encoded segment (RFC 3986 pchar minus `%`, which is validated separately). */
const PCHAR = /[^A-Za-z0-9\-._~!$&'()*+,;=:@%]/g;

/**
 * Why a raw (percent-encoded) path segment is refused, or null. Refused: empty, over-long, raw `\` or control
 * characters, malformed `%`, and after decoding once: `.`/`..`, `/` or `\` (`%2f`, `%5c`), NUL/control characters
 * (`%00`), a leftover `%XX` escape (double encoding such as `%252e`).
 */
export function segmentProblem(raw: string): string | null {
  if (raw === "") return "empty segment";
  if (raw.length > MAX_SEGMENT_LENGTH) return "segment too long";
  if (/[\\\x00-\x1f\x7f]/.test(raw)) return "backslash or control character";
  if (/%(?![0-9A-Fa-f]{2})/.test(raw)) return "malformed percent-encoding";
  let d: string;
  try {
    d = decodeURIComponent(raw);
  } catch {
    return "malformed percent-encoding";
  }
  if (d === "." || d === "..") return "dot segment";
  if (d.includes("/")) return "encoded slash";
  if (d.includes("\\")) return "encoded backslash";
  if (/[\x00-\x1f\x7f]/.test(d)) return "encoded control character";
  if (/%[0-9A-Fa-f]{2}/.test(d)) return "double percent-encoding";
  return null;
}

/** Canonical spelling of a valid segment: existing escapes kept (hex upper-cased), other non-pchar characters percent-encoded. */
export function canonicalSegment(raw: string): string {
  return raw.replace(/%[0-9a-fA-F]{2}/g, (e) => e.toUpperCase()).replace(PCHAR, (c) => encodeURIComponent(c));
}

/** Result of {@link resolveUpstream}. */
export interface ResolvedPath {
  /** Cache key: the canonical repository-relative path (`a/b.tgz`, `dir/`), `/` for the base itself. */
  key: string;
  /** Absolute upstream URL, always under the base. */
  url: string;
}

/**
 * Maps a path below the mount (raw, no leading slash, no query; a trailing slash is kept: directory listings) to
 * the upstream URL `base + canonical path`.
 * @param base absolute http(s) upstream URL ending in `/`
 * @throws VaultError VAULT_BAD_PATH (400) for any refused segment, an over-long path, or a URL that would leave the base
 */
export function resolveUpstream(base: string, rel: string): ResolvedPath {
  if (rel.length > MAX_PATH_LENGTH) throw errors.badPath(rel.slice(0, 200), "path too long");
  if (rel === "") return { key: "/", url: base };
  const segs = rel.split("/");
  const dir = segs.length > 1 && segs[segs.length - 1] === "";
  if (dir) segs.pop();
  const out: string[] = [];
  for (const s of segs) {
    const why = segmentProblem(s);
    if (why) throw errors.badPath(rel, why);
    out.push(canonicalSegment(s));
  }
  const key = out.join("/") + (dir ? "/" : "");
  const url = base + key;
  const b = new URL(base);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw errors.badPath(rel, "not a valid URL path");
  }
  if (u.origin !== b.origin || !u.pathname.startsWith(b.pathname) || u.href !== url || u.search !== "" || u.hash !== "")
    throw errors.badPath(rel, "leaves the upstream base");
  return { key, url };
}

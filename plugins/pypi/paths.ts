/** Request-path checks of the pypi plugin (specs/http-caching.md §10): segment grammar for `files/…` paths. */

/** Longest repository-relative path accepted, in characters. */
export const MAX_PATH_LENGTH = 2048;

/** Why a path segment is refused, or null when it is acceptable. */
export function segmentProblem(raw: string): string | null {
  if (raw === "") return "empty segment";
  if (raw.length > 255) return "segment too long";
  if (!/^[A-Za-z0-9._~!$&'()*+,;=:@%-]+$/.test(raw)) return "forbidden character";
  if (/%(?![0-9A-Fa-f]{2})/.test(raw)) return "malformed percent-encoding";
  let decoded: string;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    return "malformed percent-encoding";
  }
  if (decoded === "." || decoded === "..") return "dot segment";
  if (/[\/\\]/.test(decoded)) return "encoded slash or backslash";
  if (/[\x00-\x1f\x7f]/.test(decoded)) return "control character";
  if (/%[0-9A-Fa-f]{2}/.test(decoded)) return "double percent-encoding";
  return null;
}

/**
 * Checks a slash-separated, still percent-encoded path (no leading slash): every segment must pass
 * {@link segmentProblem}; a trailing slash is allowed only when `allowTrailingSlash`.
 * @returns null when fine, else the reason
 */
export function pathProblem(rel: string, allowTrailingSlash = false): string | null {
  if (rel.length > MAX_PATH_LENGTH) return "path too long";
  const segs = rel.split("/");
  if (allowTrailingSlash && segs.length > 1 && segs[segs.length - 1] === "") segs.pop();
  for (const s of segs) {
    const p = segmentProblem(s);
    if (p) return p;
  }
  return null;
}

/** PyPI project names (PEP 503 / name-normalization spec) and distribution file names: validation, normalization, parsing. */

/** Valid project name, case-insensitive (specs/pypi.md §1). */
const NAME_RE = /^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$/i;

/** Longest project name accepted, in characters (PyPI's own limit is far below). */
export const MAX_NAME_LENGTH = 200;

/**
 * Normalized project name (PEP 503): lower-case, every run of `-`, `_`, `.` replaced by one `-`.
 * @example normalizeName("Foo.Bar_baz") === "foo-bar-baz"
 */
export function normalizeName(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, "-");
}

/** Whether `name` is a syntactically valid project name (specs/pypi.md §1); the normalized form is valid too. */
export function isValidName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LENGTH && NAME_RE.test(name);
}

/** Whether `name` is already in normalized form (the only spelling the vault serves without a redirect). */
export function isNormalized(name: string): boolean {
  return normalizeName(name) === name;
}

/** Version text as it may appear in URLs (`/pypi/<p>/<version>/json`): PEP 440 characters, ≤ 128. */
export function isValidVersion(v: string): boolean {
  return v.length > 0 && v.length <= 128 && /^[A-Za-z0-9][A-Za-z0-9._+!-]*$/.test(v);
}

/** Archive suffixes of distribution files, longest first. */
const SUFFIXES = [".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".tgz", ".tbz", ".zip", ".tar", ".whl", ".egg", ".exe", ".msi", ".rpm", ".dmg", ".deb"];

/**
 * Normalized project names a distribution file name may belong to, most likely first.
 * Wheels (`{dist}-{ver}(-{build})?-{py}-{abi}-{plat}.whl`) have one answer; legacy sdists (`foo-bar-1.0.tar.gz`)
 * are ambiguous, so every prefix followed by a part starting with a digit is a candidate, then the first part.
 * @returns at most 4 distinct valid normalized names (empty for unparseable names)
 */
export function projectCandidates(filename: string): string[] {
  const lower = filename.toLowerCase();
  const suffix = SUFFIXES.find((s) => lower.endsWith(s));
  const stem = suffix ? filename.slice(0, -suffix.length) : filename;
  const parts = stem.split("-");
  const out: string[] = [];
  const add = (n: string) => {
    const norm = normalizeName(n);
    if (isValidName(n) && !out.includes(norm)) out.push(norm);
  };
  if (suffix === ".whl" || suffix === ".egg") add(parts[0]);
  for (let i = 1; i < parts.length; i++) if (/^[0-9]/.test(parts[i])) add(parts.slice(0, i).join("-"));
  add(parts[0]);
  return out.slice(0, 4);
}

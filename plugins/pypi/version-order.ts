/** PEP 440 version order (via @renovatebot/pep440), for retention's `keepVersions` of pypi repositories. */
import { compare, valid } from "@renovatebot/pep440";

/**
 * Orders two versions of one project by PEP 440 (`1.0.dev1 < 1.0a1 < 1.0 < 1.0.post1`, epochs first, `1.0 == 1.0.0`).
 * A version that is not PEP 440 (legacy names) sorts before every valid one; two such compare as 0 (the caller then
 * orders them by time). Never throws.
 * @returns negative when `a` is older than `b`, positive when newer, 0 when equal or not comparable
 */
export function comparePep440(a: string, b: string): number {
  const va = valid(a) !== null;
  const vb = valid(b) !== null;
  if (va && vb) return compare(a, b);
  return va === vb ? 0 : va ? 1 : -1;
}

/** Whether two version strings name the same PEP 440 version (`1.0 == 1.0.0`); strings that are not PEP 440 only when equal. */
export function samePep440(a: string, b: string): boolean {
  return a === b || (valid(a) !== null && valid(b) !== null && compare(a, b) === 0);
}

/**
 * Conda version ordering (conda's `VersionOrder`): the order `current_repodata.json`, `channeldata.json` and the
 * mirror's `pull-cache` use to find the newest version of a package. Pure: no core imports.
 *
 * A version `[epoch!]version[+local]` is lower-cased; `_` separates components like `.`; each component splits into
 * runs of digits (numbers) and non-digits (strings); a component starting with a string gets a leading 0; `post` sorts
 * after everything, `dev` before every other string; strings sort before numbers; missing parts count as 0.
 * So `1.1dev1 < 1.1a1 < 1.1rc1 < 1.1 == 1.1.0 < 1.1.0post1 < 1.2 < 1!0.1`.
 */

/** One part of a component: a number, a string, or `Infinity` for `post`. */
type Part = number | string;

/** A parsed version: epoch, components of the public version, components of the local version. */
export interface ParsedVersion {
  epoch: number;
  version: Part[][];
  local: Part[][];
}

const RUN = /[0-9]+|\*+|[^0-9*]+/g;

function components(s: string): Part[][] {
  if (s === "") return [];
  return s.split(/[._]/).map((c) => {
    const parts: Part[] = [];
    for (const m of c.match(RUN) ?? []) {
      if (/^[0-9]/.test(m)) parts.push(Number(m));
      else if (m === "post") parts.push(Infinity);
      else if (m === "dev") parts.push("DEV");
      else parts.push(m);
    }
    if (parts.length === 0 || typeof parts[0] === "string") parts.unshift(0);
    return parts;
  });
}

/** Parses a conda version string (never throws: odd input still gets a consistent order). */
export function parseVersion(v: string): ParsedVersion {
  let s = v.trim().toLowerCase();
  let epoch = 0;
  const bang = s.indexOf("!");
  if (bang >= 0) {
    epoch = /^\d+$/.test(s.slice(0, bang)) ? Number(s.slice(0, bang)) : 0;
    s = s.slice(bang + 1);
  }
  let local = "";
  const plus = s.indexOf("+");
  if (plus >= 0) {
    local = s.slice(plus + 1);
    s = s.slice(0, plus);
  }
  return { epoch, version: components(s), local: components(local) };
}

function comparePart(a: Part, b: Part): number {
  if (a === b) return 0;
  if (typeof a === "string") {
    if (typeof b !== "string") return -1;
    return a < b ? -1 : 1;
  }
  if (typeof b === "string") return 1;
  return a < b ? -1 : 1;
}

function compareComponents(a: Part[][], b: Part[][]): number {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i] ?? [];
    const y = b[i] ?? [];
    const m = Math.max(x.length, y.length);
    for (let j = 0; j < m; j++) {
      const c = comparePart(x[j] ?? 0, y[j] ?? 0);
      if (c !== 0) return c;
    }
  }
  return 0;
}

/** Compares two conda versions: negative when `a` sorts before `b`, 0 when equal (`1.1 == 1.1.0`), positive after. */
export function compareVersions(a: string, b: string): number {
  const x = parseVersion(a);
  const y = parseVersion(b);
  if (x.epoch !== y.epoch) return x.epoch < y.epoch ? -1 : 1;
  return compareComponents(x.version, y.version) || compareComponents(x.local, y.local);
}

/** The fields of a repodata record that order builds of one package. */
export interface Orderable {
  version: string;
  build_number?: number;
  timestamp?: number;
}

/** Orders records as conda prefers them: version, then build number, then timestamp (ms); newest last. */
export function compareRecords(a: Orderable, b: Orderable): number {
  return compareVersions(a.version, b.version) || (a.build_number ?? 0) - (b.build_number ?? 0) || (a.timestamp ?? 0) - (b.timestamp ?? 0);
}

/**
 * Debian package names and versions (Debian Policy §5.6.1, §5.6.12) and dpkg's version ordering, used to validate
 * uploads and to sort Packages stanzas deterministically. Pure.
 */

/** Package (and source) name: lower-case alphanumerics and `+ - .`, at least two characters, starting alphanumeric. */
export const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]+$/;
/** `[epoch:]upstream[-revision]` with Policy's character sets; upstream starts with a digit. */
export const VERSION = /^(?:\d+:)?[0-9][A-Za-z0-9.+~:-]*$/;
/** Architecture name (`amd64`, `all`, `arm64`, `musl-linux-amd64`). */
export const ARCHITECTURE = /^[a-z0-9][a-z0-9-]*$/;

/** Whether `v` is a well-formed Debian version (a `:` only after a numeric epoch, a `-` only with a revision). */
export function isValidVersion(v: string): boolean {
  if (v.length > 256 || !VERSION.test(v)) return false;
  const colon = v.indexOf(":");
  const rest = colon >= 0 ? v.slice(colon + 1) : v;
  if (colon >= 0 && !/^\d+$/.test(v.slice(0, colon))) return false;
  if (rest === "" || !/^[0-9]/.test(rest)) return false;
  const dash = rest.lastIndexOf("-");
  if (dash === rest.length - 1) return false;
  // without an epoch the upstream part may not contain a colon
  if (colon < 0 && rest.includes(":")) return false;
  return true;
}

/** The version without its epoch, as it appears in pool file names (`1:1.99.1-7.3` → `1.99.1-7.3`). */
export function withoutEpoch(v: string): string {
  const i = v.indexOf(":");
  return i >= 0 ? v.slice(i + 1) : v;
}

function order(c: string | undefined): number {
  if (c === undefined) return 0;
  if (c === "~") return -1;
  const code = c.charCodeAt(0);
  if (code >= 48 && code <= 57) return 0;
  if ((code >= 65 && code <= 90) || (code >= 97 && code <= 122)) return code;
  return code + 256;
}

/** dpkg's `verrevcmp`: compares two upstream versions or revisions. */
function verrevcmp(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    let first = 0;
    while ((i < a.length && !/[0-9]/.test(a[i])) || (j < b.length && !/[0-9]/.test(b[j]))) {
      const ac = order(i < a.length && !/[0-9]/.test(a[i]) ? a[i] : undefined);
      const bc = order(j < b.length && !/[0-9]/.test(b[j]) ? b[j] : undefined);
      if (ac !== bc) return ac - bc;
      i++;
      j++;
    }
    while (a[i] === "0") i++;
    while (b[j] === "0") j++;
    while (i < a.length && /[0-9]/.test(a[i]) && j < b.length && /[0-9]/.test(b[j])) {
      if (!first) first = a.charCodeAt(i) - b.charCodeAt(j);
      i++;
      j++;
    }
    if (i < a.length && /[0-9]/.test(a[i])) return 1;
    if (j < b.length && /[0-9]/.test(b[j])) return -1;
    if (first) return first;
  }
  return 0;
}

function split(v: string): [number, string, string] {
  const colon = v.indexOf(":");
  // a malformed epoch (dpkg refuses it) counts as 0, so that the order stays total and never NaN
  const epoch = colon >= 0 && /^\d+$/.test(v.slice(0, colon)) ? Number(v.slice(0, colon)) : 0;
  const rest = colon >= 0 ? v.slice(colon + 1) : v;
  const dash = rest.lastIndexOf("-");
  return dash >= 0 ? [epoch, rest.slice(0, dash), rest.slice(dash + 1)] : [epoch, rest, ""];
}

/**
 * Compares two Debian versions as dpkg does (`dpkg --compare-versions`, Debian Policy §5.6.12): epoch numerically,
 * then upstream version and revision with `~` sorting before everything and letters before other characters. Pure,
 * never throws (also the plugin's `compareVersions` for retention and the web UI).
 * @returns negative, 0 or positive
 */
export function compareVersions(a: string, b: string): number {
  const [ea, ua, ra] = split(a);
  const [eb, ub, rb] = split(b);
  if (ea !== eb) return ea - eb;
  const u = verrevcmp(ua, ub);
  if (u !== 0) return u;
  return verrevcmp(ra, rb);
}

/**
 * The pool directory prefix of a source package (specs/apt.md §1): `lib` + next letter for `lib*` sources, else the
 * first letter (`hello` → `h`, `libxml2` → `libx`).
 */
export function poolPrefix(source: string): string {
  return source.startsWith("lib") && source.length > 3 ? source.slice(0, 4) : source.slice(0, 1);
}

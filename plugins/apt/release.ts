/**
 * Release files (specs/apt.md §2): reading the signed body of an `InRelease`, the file list of a Release (sizes and
 * digests of every index, relative to the release directory), and rendering a Release for hosted repositories. Pure.
 */
import { fieldValue, parseDeb822, renderParagraph, type Paragraph } from "./deb822.ts";

/** The digest fields of a Release, strongest last; `MD5Sum`/`SHA1` are weak (APT needs at least SHA256). */
export const RELEASE_HASHES = ["MD5Sum", "SHA1", "SHA256", "SHA512"] as const;
export type ReleaseHash = (typeof RELEASE_HASHES)[number];

/** What a Release says about one file. */
export interface ReleaseFile {
  /** bytes */
  size: number;
  /** Lower-case hex digests by field (`SHA256` always present for files {@link parseRelease} keeps). */
  hashes: Partial<Record<ReleaseHash, string>>;
}

/** A parsed Release. */
export interface ParsedRelease {
  /** The paragraph's fields (Suite, Codename, Date, Architectures, …, and the raw hash lists). */
  fields: Paragraph;
  /** Files with a SHA256 line, by path relative to the release directory (`main/binary-amd64/Packages.xz`). */
  files: Map<string, ReleaseFile>;
  /** `Acquire-By-Hash: yes`. */
  acquireByHash: boolean;
  /** Lookup of by-hash names: `<HashField>/<hex>` → path of the file it names. */
  byDigest: Map<string, string>;
}

/** Thrown for a document that is not a Release (or an InRelease without a signed body). */
export class ReleaseError extends Error {
  override name = "ReleaseError";
}

const BEGIN_SIGNED = "-----BEGIN PGP SIGNED MESSAGE-----";
const BEGIN_SIGNATURE = "-----BEGIN PGP SIGNATURE-----";

/**
 * The signed text of a clearsigned message (RFC 4880 §7): after the armor headers (`Hash: …`) and a blank line, up
 * to the signature, with dash-escaping (`- `) undone. Text without the clearsign header is returned as is (a Release).
 * @throws ReleaseError when the header is there but the signature block is missing
 */
export function signedText(text: string): string {
  const start = text.indexOf(BEGIN_SIGNED);
  if (start < 0) return text;
  const lines = text.slice(start).split(/\r?\n/);
  let i = 1;
  while (i < lines.length && lines[i].trim() !== "") i++;
  const body: string[] = [];
  for (i++; i < lines.length; i++) {
    if (lines[i] === BEGIN_SIGNATURE) return body.join("\n") + "\n";
    body.push(lines[i].startsWith("- ") ? lines[i].slice(2) : lines[i]);
  }
  throw new ReleaseError("clearsigned message without a signature block");
}

/**
 * Parses a Release or InRelease document.
 * @throws ReleaseError when it has no paragraph or a malformed digest line
 */
export function parseRelease(text: string): ParsedRelease {
  let paras: Paragraph[];
  try {
    paras = parseDeb822(signedText(text));
  } catch (e) {
    throw new ReleaseError(`not a Release file: ${(e as Error).message}`);
  }
  const fields = paras[0];
  if (!fields) throw new ReleaseError("not a Release file: empty");
  const files = new Map<string, ReleaseFile>();
  const all = new Map<string, ReleaseFile>();
  for (const h of RELEASE_HASHES) {
    const v = fieldValue(fields, h);
    if (v === undefined) continue;
    for (const line of v.split("\n")) {
      const t = line.trim();
      if (t === "") continue;
      const m = /^([0-9a-fA-F]+)\s+(\d+)\s+(\S+)$/.exec(t);
      if (!m) throw new ReleaseError(`malformed ${h} line: ${t.slice(0, 120)}`);
      let f = all.get(m[3]);
      if (!f) all.set(m[3], (f = { size: Number(m[2]), hashes: {} }));
      f.hashes[h] = m[1].toLowerCase();
    }
  }
  const byDigest = new Map<string, string>();
  for (const [path, f] of all) {
    if (f.hashes.SHA256) files.set(path, f);
    for (const [h, hex] of Object.entries(f.hashes)) byDigest.set(`${h}/${hex}`, path);
  }
  return { fields, files, acquireByHash: (fieldValue(fields, "Acquire-By-Hash") ?? "").toLowerCase() === "yes", byDigest };
}

/** One file a rendered Release lists. */
export interface ReleaseEntry {
  /** Relative to the release directory. */
  path: string;
  size: number;
  md5: string;
  sha1: string;
  sha256: string;
}

/** Input of {@link renderRelease}. */
export interface ReleaseInfo {
  origin: string;
  label: string;
  suite: string;
  codename?: string;
  /** epoch ms, rendered as RFC 2822 UTC (`Sat, 01 Jun 2024 08:00:00 UTC`). */
  date: number;
  /** `Valid-Until:` epoch ms (rendered like `date`); APT refuses the Release after it ("is expired"). */
  validUntil?: number;
  architectures: string[];
  components: string[];
  description?: string;
  entries: ReleaseEntry[];
}

/** `Date:` value of a Release: RFC 2822 in UTC. */
export function releaseDate(ms: number): string {
  return new Date(ms).toUTCString().replace(/GMT$/, "UTC");
}

/**
 * Renders a Release (specs/apt.md §2, §6 step 4): the identity fields (`Valid-Until` after `Date` when given),
 * `Acquire-By-Hash: yes`, then `MD5Sum`, `SHA1` and `SHA256` lists of every entry, in the order given (callers sort them).
 */
export function renderRelease(r: ReleaseInfo): string {
  const p: Paragraph = [
    { name: "Origin", value: r.origin },
    { name: "Label", value: r.label },
    { name: "Suite", value: r.suite },
  ];
  if (r.codename) p.push({ name: "Codename", value: r.codename });
  p.push(
    { name: "Date", value: releaseDate(r.date) },
    ...(r.validUntil === undefined ? [] : [{ name: "Valid-Until", value: releaseDate(r.validUntil) }]),
    { name: "Architectures", value: r.architectures.join(" ") },
    { name: "Components", value: r.components.join(" ") },
  );
  if (r.description) p.push({ name: "Description", value: r.description });
  p.push({ name: "Acquire-By-Hash", value: "yes" });
  const w = String(Math.max(0, ...r.entries.map((e) => e.size))).length;
  const list = (hex: (e: ReleaseEntry) => string) => r.entries.map((e) => `\n ${hex(e)} ${String(e.size).padStart(w)} ${e.path}`).join("");
  p.push({ name: "MD5Sum", value: list((e) => e.md5) }, { name: "SHA1", value: list((e) => e.sha1) }, { name: "SHA256", value: list((e) => e.sha256) });
  return renderParagraph(p);
}

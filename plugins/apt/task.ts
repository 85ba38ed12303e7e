/**
 * The apt plugin's worker-pool task, `aptIndex`, with two operations. `pool-hashes`: reads a Packages or Sources index
 * (any compression) and lists the pool files it names with their SHA256 and size, so the proxy can verify
 * `.deb`/`.dsc`/tarball downloads (specs/apt.md §7). `merge-packages`: a group's Packages indexes of one component
 * from its members' (first member wins per package, version and architecture), gzipped and digested. Pure and
 * structured-cloneable (imports no core/): runs inline for small indexes, in the pool for big ones (bookworm's
 * main/binary-amd64 Packages is 46 MB uncompressed).
 */
import { createHash } from "node:crypto";
import { decompress, gzipDeterministic, type Compression } from "./compress.ts";
import { compareVersions } from "./version.ts";

/** Input of the `pool-hashes` operation. */
export interface PoolHashesInput {
  op: "pool-hashes";
  /** The index file as stored (compressed or not). */
  data: Uint8Array;
  compression: Compression;
  /** `packages`: stanzas' `Filename`/`SHA256`/`Size`; `sources`: `Directory` + `Checksums-Sha256` lines. */
  kind: "packages" | "sources";
}

/** Output of the `pool-hashes` operation. */
export interface PoolHashesOutput {
  /** One line per file: `<path relative to the archive root>\t<sha256 hex>\t<size bytes>\n`. */
  tsv: string;
  count: number;
}

const SAFE_PATH = /^[A-Za-z0-9][A-Za-z0-9._~+:@=,\/-]*$/;

/** Whether an index names a file by a path the proxy could request (no `..`, no absolute path, no odd characters). */
function usable(path: string): boolean {
  return SAFE_PATH.test(path) && !path.split("/").some((s) => s === ".." || s === "." || s === "");
}

/** Input of the `merge-packages` operation: the Packages indexes of one component of a group's members. */
export interface MergePackagesInput {
  op: "merge-packages";
  /** The members' indexes as stored; `member` is the member's position in the group (lower wins). */
  sources: { member: number; arch: string; data: Uint8Array; compression: Compression }[];
  /** Architectures to render, one `Packages` each (`Architecture: all` stanzas go into every one). */
  archs: string[];
}

/** One rendered file of {@link MergePackagesOutput}: its place in `data` and its digests (hex). */
export interface MergedFile {
  arch: string;
  name: "Packages" | "Packages.gz";
  /** bytes */
  offset: number;
  size: number;
  md5: string;
  sha1: string;
  sha256: string;
}

/** Output of the `merge-packages` operation. */
export interface MergePackagesOutput {
  /** Every rendered file, one after the other (one buffer: moved, not copied, out of the worker). */
  data: Uint8Array;
  files: MergedFile[];
  /** `<Filename>\t<member>\n` for the pool file of every stanza kept (the first member listing a Filename). */
  pool: string;
}

/** Input of {@link aptIndex}. */
export type AptIndexInput = PoolHashesInput | MergePackagesInput;
/** Output of {@link aptIndex}: {@link PoolHashesOutput} for `pool-hashes`, {@link MergePackagesOutput} for `merge-packages`. */
export type AptIndexOutput = PoolHashesOutput | MergePackagesOutput;

/**
 * Runs one operation (see the file header).
 * @throws Error when an index cannot be decompressed
 */
export async function aptIndex(input: PoolHashesInput): Promise<PoolHashesOutput>;
export async function aptIndex(input: MergePackagesInput): Promise<MergePackagesOutput>;
export async function aptIndex(input: AptIndexInput): Promise<AptIndexOutput>;
export async function aptIndex(input: AptIndexInput): Promise<AptIndexOutput> {
  return input.op === "merge-packages" ? mergePackages(input) : poolHashes(input);
}

/** A stanza of a Packages index, verbatim (ending with one newline), with the fields the merge needs. */
interface Stanza {
  text: string;
  package: string;
  version: string;
  architecture: string;
  filename: string | undefined;
  member: number;
}

/** The stanzas of a Packages text; those without Package, Version or Architecture are skipped. */
function stanzas(text: string, member: number): Stanza[] {
  const out: Stanza[] = [];
  for (const raw of text.split(/\r?\n[ \t]*\r?\n/)) {
    const t = raw.replace(/^\s+/, "").trimEnd();
    if (t === "") continue;
    let pkg: string | undefined;
    let version: string | undefined;
    let arch: string | undefined;
    let filename: string | undefined;
    let start = 0;
    while (start < t.length) {
      let end = t.indexOf("\n", start);
      if (end < 0) end = t.length;
      const c = t.charCodeAt(start);
      if (c !== 32 && c !== 9) {
        const colon = t.indexOf(":", start);
        if (colon > start && colon < end) {
          const name = t.slice(start, colon);
          const value = t.slice(colon + 1, end).trim();
          if (name === "Package") pkg = value;
          else if (name === "Version") version = value;
          else if (name === "Architecture") arch = value;
          else if (name === "Filename") filename = value;
        }
      }
      start = end + 1;
    }
    if (pkg && version && arch) out.push({ text: t + "\n", package: pkg, version, architecture: arch, filename, member });
  }
  return out;
}

/** Merges the members' indexes of one component (see {@link MergePackagesInput}); sorted by name, version, architecture. */
async function mergePackages(input: MergePackagesInput): Promise<MergePackagesOutput> {
  const winners = new Map<string, Stanza>();
  const sources = [...input.sources].sort((a, b) => a.member - b.member);
  for (const src of sources) {
    const text = new TextDecoder().decode(await decompress(src.data, src.compression));
    for (const s of stanzas(text, src.member)) {
      const key = `${s.package}\0${s.version}\0${s.architecture}`;
      if (!winners.has(key)) winners.set(key, s);
    }
  }
  const all = [...winners.values()].sort(
    (a, b) => (a.package < b.package ? -1 : a.package > b.package ? 1 : compareVersions(a.version, b.version) || (a.architecture < b.architecture ? -1 : a.architecture > b.architecture ? 1 : 0)),
  );
  const pool = new Map<string, number>();
  for (const s of all) if (s.filename && !pool.has(s.filename)) pool.set(s.filename, s.member);
  const parts: Uint8Array[] = [];
  const files: MergedFile[] = [];
  let offset = 0;
  const enc = new TextEncoder();
  for (const arch of input.archs) {
    const plain = enc.encode(all.filter((s) => s.architecture === arch || s.architecture === "all").map((s) => s.text).join("\n"));
    const gz = await gzipDeterministic(plain);
    for (const [name, bytes] of [["Packages", plain], ["Packages.gz", gz]] as const) {
      const h = (alg: string) => createHash(alg).update(bytes).digest("hex");
      files.push({ arch, name, offset, size: bytes.byteLength, md5: h("md5"), sha1: h("sha1"), sha256: h("sha256") });
      parts.push(bytes);
      offset += bytes.byteLength;
    }
  }
  const data = new Uint8Array(offset);
  let o = 0;
  for (const p of parts) {
    data.set(p, o);
    o += p.byteLength;
  }
  let tsv = "";
  for (const [f, m] of pool) tsv += `${f}\t${m}\n`;
  return { data, files, pool: tsv };
}

/**
 * Lists the files an index names with their SHA256 and size (see {@link PoolHashesOutput}); stanzas without a SHA256
 * are skipped. Paths are as the index writes them (relative to the archive root).
 * @throws Error when the data cannot be decompressed
 */
async function poolHashes(input: PoolHashesInput): Promise<PoolHashesOutput> {
  const text = new TextDecoder().decode(await decompress(input.data, input.compression));
  let tsv = "";
  let count = 0;
  let filename: string | undefined;
  let sha256: string | undefined;
  let size: string | undefined;
  let directory: string | undefined;
  let checksums: string[] = [];
  let inChecksums = false;
  const flush = () => {
    if (input.kind === "packages") {
      if (filename && sha256 && size && usable(filename)) {
        tsv += `${filename}\t${sha256}\t${size}\n`;
        count++;
      }
    } else if (directory) {
      for (const line of checksums) {
        const m = /^([0-9a-f]{64})\s+(\d+)\s+(\S+)$/.exec(line);
        const path = m && `${directory}/${m[3]}`;
        if (m && path && usable(path)) {
          tsv += `${path}\t${m[1]}\t${m[2]}\n`;
          count++;
        }
      }
    }
    filename = sha256 = size = directory = undefined;
    checksums = [];
    inChecksums = false;
  };
  let start = 0;
  while (start <= text.length) {
    let end = text.indexOf("\n", start);
    if (end < 0) end = text.length;
    const line = text.charCodeAt(end - 1) === 13 ? text.slice(start, end - 1) : text.slice(start, end);
    start = end + 1;
    if (line === "" || line.trim() === "") {
      flush();
      if (end === text.length) break;
      continue;
    }
    const c = line.charCodeAt(0);
    if (c === 32 || c === 9) {
      if (inChecksums) checksums.push(line.trim());
      continue;
    }
    inChecksums = false;
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const name = line.slice(0, colon);
    const value = line.slice(colon + 1).trim();
    if (input.kind === "packages") {
      if (name === "Filename") filename = value;
      else if (name === "SHA256") sha256 = value.toLowerCase();
      else if (name === "Size") size = value;
    } else if (name === "Directory") directory = value;
    else if (name === "Checksums-Sha256") inChecksums = true;
  }
  flush();
  return { tsv, count };
}

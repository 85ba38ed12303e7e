/**
 * The apt plugin's worker-pool task, `aptIndex`: reads a Packages or Sources index (any compression) and lists the
 * pool files it names with their SHA256 and size, so the proxy can verify `.deb`/`.dsc`/tarball downloads (specs/apt.md
 * §7). Pure and structured-cloneable (imports no core/): runs inline for small indexes, in the pool for big ones
 * (bookworm's main/binary-amd64 Packages is 46 MB uncompressed).
 */
import { decompress, type Compression } from "./compress.ts";

/** Input of {@link aptIndex}. */
export interface AptIndexInput {
  op: "pool-hashes";
  /** The index file as stored (compressed or not). */
  data: Uint8Array;
  compression: Compression;
  /** `packages`: stanzas' `Filename`/`SHA256`/`Size`; `sources`: `Directory` + `Checksums-Sha256` lines. */
  kind: "packages" | "sources";
}

/** Output of {@link aptIndex}. */
export interface AptIndexOutput {
  /** One line per file: `<path relative to the archive root>\t<sha256 hex>\t<size bytes>\n`. */
  tsv: string;
  count: number;
}

const SAFE_PATH = /^[A-Za-z0-9][A-Za-z0-9._~+:@=,\/-]*$/;

/** Whether an index names a file by a path the proxy could request (no `..`, no absolute path, no odd characters). */
function usable(path: string): boolean {
  return SAFE_PATH.test(path) && !path.split("/").some((s) => s === ".." || s === "." || s === "");
}

/**
 * Lists the files an index names with their SHA256 and size (see {@link AptIndexOutput}); stanzas without a SHA256
 * are skipped. Paths are as the index writes them (relative to the archive root).
 * @throws Error when the data cannot be decompressed
 */
export async function aptIndex(input: AptIndexInput): Promise<AptIndexOutput> {
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

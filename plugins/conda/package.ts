/**
 * Reading conda package files (specs/conda.md §3): `.conda` (an uncompressed ZIP holding `metadata.json`,
 * `info-<n>-<v>-<b>.tar.zst` and `pkg-<n>-<v>-<b>.tar.zst`; fflate's streaming unzip, Bun's zstd, tar-stream) and
 * `.tar.bz2` (a bzip2 tar; unbzip2-stream, tar-stream). Files are streamed from disk, never held whole in memory; the
 * `info/` files are collected (bounded). Pure: no core imports (runs in the worker pool).
 */
import { Unzip, UnzipInflate, UnzipPassThrough } from "fflate";
import { extract, pack } from "tar-stream";
import bunzip2 from "unbzip2-stream";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { gzipSync } from "node:zlib";
import type { PackageFormat } from "./paths.ts";
import type { PackageRecord } from "./repodata.ts";

/** Most bytes of `info/` files collected from one package (decompressed). */
export const MAX_INFO_BYTES = 64 * 1024 * 1024;

/** Why a file is not a usable conda package (the message is shown to the uploader). */
export class PackageError extends Error {
  override name = "PackageError";
}

/** What a package says about itself. */
export interface PackageInfo {
  /** info/index.json as written in the package. */
  index: Record<string, unknown>;
  /** info/about.json, when present and valid JSON. */
  about?: Record<string, unknown>;
  /** info/run_exports.json, when present and valid JSON. */
  runExports?: unknown;
  /** Every `info/` file (path inside the package, bytes), when asked for (the mirror re-tars them). */
  infoFiles?: [string, Uint8Array][];
}

/** Reads a tar stream, keeping `info/` files (up to {@link MAX_INFO_BYTES}) and draining everything else. */
async function readInfoTar(streams: NodeJS.ReadableStream[], keep: Map<string, Uint8Array>): Promise<void> {
  const ex = extract();
  let total = 0;
  const consume = (async () => {
    for await (const entry of ex) {
      const name = entry.header.name.replace(/^\.\//, "");
      if (entry.header.type === "file" && name.startsWith("info/")) {
        const parts: Buffer[] = [];
        for await (const c of entry) {
          total += (c as Buffer).byteLength;
          if (total > MAX_INFO_BYTES) throw new PackageError(`info/ files larger than ${MAX_INFO_BYTES} bytes`);
          parts.push(c as Buffer);
        }
        keep.set(name, new Uint8Array(Buffer.concat(parts)));
      } else entry.resume();
    }
  })();
  const run = pipeline as unknown as (streams: unknown[]) => Promise<void>;
  await Promise.all([run([...streams, ex]), consume]);
}

/** The `info/` files of a `.conda`: the zip streamed through fflate, the info member zstd-decompressed and untarred. */
async function condaInfo(path: string): Promise<Map<string, Uint8Array>> {
  const uz = new Unzip();
  uz.register(UnzipPassThrough);
  uz.register(UnzipInflate);
  const info: Uint8Array[] = [];
  let infoBytes = 0;
  let infoName: string | undefined;
  let pkgName: string | undefined;
  let meta: Uint8Array[] | undefined;
  let failure: Error | undefined;
  uz.onfile = (f) => {
    const base = f.name.slice(f.name.lastIndexOf("/") + 1);
    const sink = (into: Uint8Array[], limit: number) => {
      f.ondata = (err, d) => {
        if (err) failure ??= new PackageError(`zip member ${base}: ${err.message}`);
        else {
          infoBytes += d.byteLength;
          if (infoBytes > limit) failure ??= new PackageError(`${base} larger than ${limit} bytes`);
          else into.push(d);
        }
      };
      f.start();
    };
    if (/^info-.+\.tar\.zst$/.test(base)) {
      infoName = base;
      sink(info, MAX_INFO_BYTES);
    } else if (base === "metadata.json") sink((meta = []), 64 * 1024);
    else if (/^pkg-.+\.tar\.zst$/.test(base)) pkgName = base;
  };
  try {
    for await (const chunk of Bun.file(path).stream()) {
      uz.push(chunk);
      if (failure) break;
    }
    if (!failure) uz.push(new Uint8Array(0), true);
  } catch (e) {
    throw new PackageError(`not a valid .conda (zip) archive: ${(e as Error).message}`);
  }
  if (failure) throw failure;
  if (!infoName) throw new PackageError("not a valid .conda archive: no info-*.tar.zst member");
  if (!pkgName) throw new PackageError("not a valid .conda archive: no pkg-*.tar.zst member");
  if (meta) {
    let m: unknown;
    try {
      m = JSON.parse(Buffer.concat(meta).toString("utf8"));
    } catch {
      throw new PackageError("metadata.json is not JSON");
    }
    const v = (m as { conda_pkg_format_version?: unknown })?.conda_pkg_format_version;
    if (v !== 2) throw new PackageError(`metadata.json: unsupported conda_pkg_format_version ${JSON.stringify(v)}`);
  }
  let tar: Uint8Array;
  try {
    tar = Bun.zstdDecompressSync(Buffer.concat(info));
  } catch (e) {
    throw new PackageError(`${infoName} is not zstd data: ${(e as Error).message}`);
  }
  const files = new Map<string, Uint8Array>();
  try {
    await readInfoTar([Readable.from([Buffer.from(tar.buffer, tar.byteOffset, tar.byteLength)])], files);
  } catch (e) {
    if (e instanceof PackageError) throw e;
    throw new PackageError(`${infoName} is not a tar archive: ${(e as Error).message}`);
  }
  return files;
}

/** The `info/` files of a `.tar.bz2`: the whole archive is decompressed and walked (so a truncated file is refused). */
async function tarBz2Info(path: string): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  const head = new Uint8Array(await Bun.file(path).slice(0, 3).arrayBuffer());
  if (!(head[0] === 0x42 && head[1] === 0x5a && head[2] === 0x68)) throw new PackageError("not a valid .tar.bz2 archive: no bzip2 magic");
  try {
    const src = Readable.from(Bun.file(path).stream() as unknown as AsyncIterable<Uint8Array>);
    await readInfoTar([src, bunzip2() as unknown as NodeJS.ReadableStream], files);
  } catch (e) {
    if (e instanceof PackageError) throw e;
    // unbzip2-stream reports truncation as a TypeError from deep inside its decoder: say what it means
    throw new PackageError(`not a valid .tar.bz2 archive: corrupt or truncated bzip2/tar data${e instanceof TypeError ? "" : ` (${e instanceof Error ? e.message : String(e)})`}`);
  }
  return files;
}

function jsonOf(files: Map<string, Uint8Array>, name: string): unknown {
  const b = files.get(name);
  if (!b) return undefined;
  try {
    return JSON.parse(new TextDecoder().decode(b));
  } catch {
    return undefined;
  }
}

/**
 * Reads a package file's `info/index.json` (required), `about.json` and `run_exports.json`.
 * @param withInfoFiles also return every `info/` file (sorted by path)
 * @throws PackageError when the archive is malformed or info/index.json is missing or not a JSON object
 */
export async function inspectPackage(path: string, format: PackageFormat, withInfoFiles = false): Promise<PackageInfo> {
  const files = format === "conda" ? await condaInfo(path) : await tarBz2Info(path);
  const index = jsonOf(files, "info/index.json");
  if (!files.has("info/index.json")) throw new PackageError("the package has no info/index.json");
  if (!index || typeof index !== "object" || Array.isArray(index)) throw new PackageError("info/index.json is not a JSON object");
  const out: PackageInfo = { index: index as Record<string, unknown> };
  const about = jsonOf(files, "info/about.json");
  if (about && typeof about === "object" && !Array.isArray(about)) out.about = about as Record<string, unknown>;
  const re = jsonOf(files, "info/run_exports.json");
  if (re !== undefined) out.runExports = re;
  if (withInfoFiles) out.infoFiles = [...files.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
  return out;
}

/** info/index.json fields that repodata records leave out (specs/conda.md §2). */
const NOT_IN_RECORD = new Set(["arch", "has_prefix", "mtime", "platform", "ucs", "requires_features", "binstar", "target-triplet", "machine", "operatingsystem"]);

/**
 * The repodata record of a package: its info/index.json without the platform fields, plus the archive's md5, sha256
 * and size (bytes).
 * @throws PackageError when `name`, `version`, `build` (strings) or `build_number` (integer) are missing
 */
export function recordOf(index: Record<string, unknown>, digests: { md5: string; sha256: string; size: number }): PackageRecord {
  for (const k of ["name", "version", "build"]) if (typeof index[k] !== "string" || index[k] === "") throw new PackageError(`info/index.json: "${k}" must be a non-empty string`);
  if (!Number.isInteger(index.build_number)) throw new PackageError('info/index.json: "build_number" must be an integer');
  const r: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(index)) if (!NOT_IN_RECORD.has(k)) r[k] = v;
  if (!Array.isArray(r.depends)) r.depends = [];
  r.md5 = digests.md5;
  r.sha256 = digests.sha256;
  r.size = digests.size;
  return r as PackageRecord;
}

/**
 * The `info/` directory as a gzip tar (the mirror's `application/vnd.conda.info.v1.tar+gzip` layer): entries sorted,
 * mode 0644, mtime 0, owner root, so the same files always give the same bytes.
 */
export async function infoTarGz(files: [string, Uint8Array][]): Promise<Uint8Array> {
  const p = pack();
  const parts: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) parts.push(c as Buffer);
  })();
  for (const [name, bytes] of files) {
    await new Promise<void>((resolve, reject) =>
      p.entry({ name, size: bytes.byteLength, mode: 0o644, mtime: new Date(0), uid: 0, gid: 0, uname: "root", gname: "root" }, Buffer.from(bytes), (err) => (err ? reject(err) : resolve())),
    );
  }
  p.finalize();
  await done;
  return new Uint8Array(gzipSync(Buffer.concat(parts), { level: 9 }));
}

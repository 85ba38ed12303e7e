/**
 * Reading a Debian binary package (deb(5), specs/apt.md §5): the `ar` container, the `debian-binary` version, the
 * `control.tar[.gz|.xz|.zst]` member and its `control` file. Only the members before `data.tar` are read, from a file
 * on disk, so a large upload is never held in memory.
 */
import { extract } from "tar-stream";
import { compressionOf, decompress } from "./compress.ts";
import { fieldValue, parseDeb822, type Paragraph } from "./deb822.ts";
import { ARCHITECTURE, PACKAGE_NAME, isValidVersion } from "./version.ts";

/** Largest `control.tar*` member read, bytes (compressed and decompressed). */
export const MAX_CONTROL_BYTES = 16 * 1024 * 1024;

/** Why an upload is not an acceptable .deb (the message is shown to the uploader). */
export class DebError extends Error {
  override name = "DebError";
}

/** What a .deb says about itself. */
export interface DebInfo {
  /** The `control` paragraph as written in the package. */
  control: Paragraph;
  package: string;
  version: string;
  architecture: string;
  /** `Source:` name without a version (`fortune-mod` from `fortune-mod (1:1.99.1-7.3)`), else the package name. */
  source: string;
}

const AR_MAGIC = "!<arch>\n";
const HEADER = 60;

/** One `ar` member: name (trailing `/` removed), data offset and size in the file. */
interface Member {
  name: string;
  offset: number;
  size: number;
}

async function readSlice(file: ReturnType<typeof Bun.file>, start: number, end: number): Promise<Uint8Array> {
  return new Uint8Array(await file.slice(start, end).arrayBuffer());
}

/** Lists the ar members of `path` up to and including the first `data.tar*` (later members are ignored, per deb(5)). */
async function members(path: string, fileSize: number): Promise<Member[]> {
  const file = Bun.file(path);
  const dec = new TextDecoder("latin1");
  if (fileSize < 8 || dec.decode(await readSlice(file, 0, 8)) !== AR_MAGIC) throw new DebError("not a Debian binary package: the ar magic `!<arch>` is missing");
  const out: Member[] = [];
  let off = 8;
  while (off < fileSize) {
    if (off + HEADER > fileSize) throw new DebError("truncated ar member header");
    const h = dec.decode(await readSlice(file, off, off + HEADER));
    if (h.slice(58, 60) !== "`\n") throw new DebError("malformed ar member header");
    const name = h.slice(0, 16).trimEnd().replace(/\/$/, "");
    const sizeText = h.slice(48, 58).trim();
    if (!/^\d+$/.test(sizeText)) throw new DebError(`malformed ar member size of ${JSON.stringify(name)}`);
    const size = Number(sizeText);
    if (off + HEADER + size > fileSize) throw new DebError(`truncated ar member ${JSON.stringify(name)}`);
    out.push({ name, offset: off + HEADER, size });
    if (name.startsWith("data.tar")) return out;
    off += HEADER + size + (size % 2);
  }
  return out;
}

/** The `./control` file of a control tarball; absolute or `..` member paths are refused. */
async function controlFile(tar: Uint8Array): Promise<string> {
  const ex = extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on("error", reject);
    ex.on("finish", resolve);
  });
  let control: string | undefined;
  let problem: string | undefined;
  ex.on("entry", (header, stream, next) => {
    const name = header.name;
    if (name.startsWith("/") || name.split("/").includes("..")) problem ??= `unsafe path ${JSON.stringify(name.slice(0, 100))} in control.tar`;
    const chunks: Uint8Array[] = [];
    stream.on("data", (c: unknown) => chunks.push(c as Uint8Array));
    stream.on("end", () => {
      if ((name === "./control" || name === "control") && header.type === "file") control = new TextDecoder().decode(Buffer.concat(chunks));
      next();
    });
    stream.resume();
  });
  ex.end(tar);
  try {
    await done;
  } catch (e) {
    throw new DebError(`corrupt control.tar: ${(e as Error).message}`);
  }
  if (problem) throw new DebError(problem);
  if (control === undefined) throw new DebError("control.tar has no ./control file");
  return control;
}

/**
 * Validates a .deb on disk and reads its control paragraph: ar magic and headers, members `debian-binary` (`2.x`),
 * `control.tar` (none/gz/xz/zst) and `data.tar` (none/gz/xz/zst/bz2/lzma) in that order (`_`-prefixed members may
 * come between), `control` with valid `Package`, `Version`, `Architecture`.
 * @param path the file
 * @param size its size in bytes
 * @throws DebError naming the first problem found
 */
export async function readDeb(path: string, size: number): Promise<DebInfo> {
  const ms = (await members(path, size)).filter((m) => !m.name.startsWith("_"));
  const file = Bun.file(path);
  if (ms[0]?.name !== "debian-binary") throw new DebError("the first ar member must be debian-binary");
  if (ms[0].size > 64) throw new DebError("debian-binary is too large");
  const fmt = new TextDecoder().decode(await readSlice(file, ms[0].offset, ms[0].offset + ms[0].size)).trim();
  if (!/^2\.\d+$/.test(fmt)) throw new DebError(`unsupported package format ${JSON.stringify(fmt.slice(0, 20))} (expected 2.x)`);
  const ctl = ms[1];
  if (!ctl || !ctl.name.startsWith("control.tar")) throw new DebError("the second ar member must be control.tar[.gz|.xz|.zst]");
  const cc = compressionOf(ctl.name);
  if (cc === undefined || !/^control\.tar(\.(gz|xz|zst))?$/.test(ctl.name)) throw new DebError(`unsupported control member ${ctl.name}`);
  const data = ms[2];
  if (!data || !/^data\.tar(\.(gz|xz|zst|bz2|lzma))?$/.test(data.name)) throw new DebError("the third ar member must be data.tar[.gz|.xz|.zst|.bz2|.lzma]");
  if (ctl.size > MAX_CONTROL_BYTES) throw new DebError("control.tar is too large");
  let tar: Uint8Array;
  try {
    tar = await decompress(await readSlice(file, ctl.offset, ctl.offset + ctl.size), cc, MAX_CONTROL_BYTES);
  } catch (e) {
    throw new DebError(`cannot decompress ${ctl.name}: ${(e as Error).message}`);
  }
  let control: Paragraph;
  try {
    [control] = parseDeb822(await controlFile(tar));
  } catch (e) {
    if (e instanceof DebError) throw e;
    throw new DebError(`malformed control file: ${(e as Error).message}`);
  }
  if (!control) throw new DebError("empty control file");
  const pkg = fieldValue(control, "Package");
  const version = fieldValue(control, "Version");
  const arch = fieldValue(control, "Architecture");
  if (!pkg || !PACKAGE_NAME.test(pkg)) throw new DebError(`invalid or missing Package field ${JSON.stringify(pkg?.slice(0, 100) ?? "")}`);
  if (!version || !isValidVersion(version)) throw new DebError(`invalid or missing Version field ${JSON.stringify(version?.slice(0, 100) ?? "")}`);
  if (!arch || !ARCHITECTURE.test(arch)) throw new DebError(`invalid or missing Architecture field ${JSON.stringify(arch?.slice(0, 100) ?? "")}`);
  for (const f of control)
    if (/^(Filename|Size|MD5sum|SHA1|SHA256|SHA512)$/i.test(f.name)) throw new DebError(`control field ${f.name} is set by the repository, not the package`);
  const srcField = fieldValue(control, "Source");
  const source = srcField ? srcField.split(/\s+/)[0] : pkg;
  if (!PACKAGE_NAME.test(source)) throw new DebError(`invalid Source field ${JSON.stringify(srcField!.slice(0, 100))}`);
  return { control, package: pkg, version, architecture: arch, source };
}

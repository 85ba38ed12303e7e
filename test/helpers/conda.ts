/**
 * Conda test helpers: an upstream channel served on loopback from the real fixture channel
 * (`../shared/fixtures/conda/channels/anaconda-zlib-channel`, both package formats, CEP-16 shards) or from the real
 * pytorch linux-64 repodata, counting requests; the real clients — rattler's JS bindings (`simpleSolve`, the engine of
 * pixi) and Debian's `cph` (conda-package-handling) and python3-conda-package-streaming — and the CI rule for them.
 */
import { cp, mkdir, readdir, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { startUpstream, type TestUpstream } from "./upstream.ts";
import { tmpDataDir } from "./tmp.ts";
import { requireTools } from "./registry.ts";

/** The fixtures' conda folder. */
export const CONDA_FIXTURES = resolve(import.meta.dir, "../../../shared/fixtures/conda");
/** The real mini channel (zlib 1.2.11 for linux-64, osx-64, win-32, win-64 in both formats). */
export const ZLIB_CHANNEL = join(CONDA_FIXTURES, "channels/anaconda-zlib-channel");

/** sha256 (hex) of bytes. */
export function sha256Hex(b: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(b).digest("hex");
}

/** Options of {@link startCondaChannel}. */
export interface CondaChannelOptions {
  /** Keep the fixture's CEP-16 shard files (default true); false serves a channel without shards. */
  shards?: boolean;
  /** Serve the real pytorch linux-64 repodata.json (1.2 MB) as `linux-64/repodata.json` instead of the fixture's. */
  pytorch?: boolean;
  /** Also serve `<subdir>/repodata.json.zst` (zstd of repodata.json) for every subdir. */
  zst?: boolean;
  /** Runs before the files: may answer a request itself (tampering, failures). */
  handler?: (req: Request) => Response | undefined | Promise<Response | undefined>;
}

/** A loopback conda channel. */
export interface TestCondaChannel {
  /** The channel URL with a trailing slash. */
  url: string;
  /** The directory served. */
  root: string;
  upstream: TestUpstream;
  /** GET/HEAD requests whose path ends with `suffix`. */
  count(suffix: string, method?: string): number;
  stop(): Promise<void>;
}

/**
 * Starts a conda channel on 127.0.0.1 (port 0) from a temp copy of the fixture channel (test/helpers/upstream.ts:
 * ETag, Last-Modified, 304, Range).
 */
export async function startCondaChannel(o: CondaChannelOptions = {}): Promise<TestCondaChannel> {
  const root = join(await tmpDataDir("conda-channel-"), "channel");
  await cp(ZLIB_CHANNEL, root, { recursive: true });
  if (o.shards === false)
    for (const sub of await readdir(root, { withFileTypes: true }))
      if (sub.isDirectory())
        for (const f of await readdir(join(root, sub.name))) if (f.endsWith(".msgpack.zst")) await rm(join(root, sub.name, f));
  if (o.pytorch) {
    await cp(join(CONDA_FIXTURES, "repodata/pytorch-linux-64-repodata.json"), join(root, "linux-64/repodata.json"));
    for (const f of await readdir(join(root, "linux-64"))) if (f.endsWith(".msgpack.zst")) await rm(join(root, "linux-64", f));
  }
  if (o.zst)
    for (const sub of await readdir(root, { withFileTypes: true }))
      if (sub.isDirectory()) {
        const json = Bun.file(join(root, sub.name, "repodata.json"));
        if (await json.exists()) await Bun.write(join(root, sub.name, "repodata.json.zst"), Bun.zstdCompressSync(await json.bytes()));
      }
  await mkdir(root, { recursive: true });
  const upstream = await startUpstream({ root, handler: o.handler });
  return {
    url: upstream.url + "/",
    root,
    upstream,
    count: (suffix, method) => upstream.count((r) => r.path.endsWith(suffix) && (method === undefined || r.method === method)),
    stop: () => upstream.stop(),
  };
}

/**
 * Whether the conda clients are usable: `cph` on PATH and rattler's JS bindings importable. Under CI=true a missing
 * one throws (the run must fail, not skip); elsewhere the reason is printed and false returned.
 */
export async function requireCondaClients(): Promise<boolean> {
  if (!requireTools(["cph"])) return false;
  try {
    await import("@conda-org/rattler");
    return true;
  } catch (e) {
    const msg = `rattler's JS bindings (@conda-org/rattler, a devDependency) cannot be loaded: ${(e as Error).message}`;
    if (process.env.CI === "true") throw new Error(msg);
    console.warn(`skipping: ${msg}`);
    return false;
  }
}

/** One package of a solution, as rattler reports it. */
export interface Solved {
  url: string;
  name: string;
  version: string;
  build: string;
  sha256?: string;
  md5?: string;
  size?: number;
}

/**
 * Solves `specs` with rattler (`simpleSolve`: fetches the channels' repodata over HTTP — shards, `.zst` or `.json`, as
 * rattler chooses — and solves). Bounded by `timeoutMs` (default 60 s).
 */
export async function rattlerSolve(specs: string[], channels: string[], platforms: string[], timeoutMs = 60_000): Promise<Solved[]> {
  const { simpleSolve } = await import("@conda-org/rattler");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const solved = await Promise.race([
    simpleSolve(specs, channels, platforms as Parameters<typeof simpleSolve>[2], []),
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`rattler solve timed out after ${timeoutMs} ms`)), timeoutMs))),
  ]).finally(() => clearTimeout(timer));
  return solved.map((p) => ({
    url: p.url,
    name: p.packageName,
    version: p.version,
    build: p.build,
    sha256: p.sha256 ?? undefined,
    md5: p.md5 ?? undefined,
    size: p.size === undefined || p.size === null ? undefined : Number(p.size),
  }));
}

/** Lists every member of a package's `pkg` component and reads each regular file to its end (python3-conda-package-streaming). */
const LIST_PKG = `
import sys
from conda_package_streaming import package_streaming as ps
for tar, member in ps.stream_conda_component(sys.argv[1], component=ps.CondaComponent.pkg):
    if member.isfile():
        tar.extractfile(member).read()
    print(member.name)
`;

async function run(cmd: string[]): Promise<{ code: number; out: string }> {
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const timer = setTimeout(() => p.kill("SIGKILL"), 60_000);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  return { code, out: out + err };
}

/**
 * Checks a downloaded package with the Debian tools: `cph x` extracts it (for `.conda` only its `info/`: Debian's cph
 * 2.0 cannot stream-extract the `pkg` tars of packages holding symlinks on Python 3.11), and
 * python3-conda-package-streaming reads every member of its `pkg` component to the end (which verifies the zstd or
 * bzip2 stream).
 * @returns the extraction directory, the exit codes, the pkg members' paths, and the tools' output
 */
export async function checkPackage(file: string): Promise<{ dir: string; code: number; members: string[]; out: string }> {
  const dir = join(await tmpDataDir("cph-"), "x");
  await mkdir(dir, { recursive: true });
  const x = await run(["cph", "x", file, "--dest", dir, ...(file.endsWith(".conda") ? ["--info"] : [])]);
  if (x.code !== 0) return { dir, code: x.code, members: [], out: x.out };
  const l = await run(["/usr/bin/python3", "-c", LIST_PKG, file]);
  return { dir, code: l.code, members: l.code === 0 ? l.out.split("\n").filter(Boolean) : [], out: x.out + l.out };
}

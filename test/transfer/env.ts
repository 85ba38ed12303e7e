/**
 * Helpers of the export/import suites: the real CLI as a child process, reading an archive back with tar-stream,
 * counting a repository's rows, uploading to a pypi hosted repository the way twine does.
 */
import { createReadStream } from "node:fs";
import { join, resolve } from "node:path";
import { pipeline } from "node:stream/promises";
import { eq } from "drizzle-orm";
import { extract } from "tar-stream";
import { tablesOf, type Db } from "../../core/db/index.ts";
import type { ExportManifest } from "../../core/transfer.ts";
import type { VaultConfig } from "../../core/config/types.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

/** The repository root. */
export const ROOT = resolve(import.meta.dir, "..", "..");

export const sha256 = (b: Uint8Array) => new Bun.CryptoHasher("sha256").update(b).digest("hex");

/**
 * Runs `bun core/cli/bin.ts <args>` (at most 120 s), standard input from the file `o.stdin`, standard output to the file
 * `o.stdout` when given.
 * @returns exit code, stdout (empty when sent to a file), stderr
 */
export async function vaultCli(args: string[], o: { stdin?: string; stdout?: string } = {}): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn([process.execPath, join(ROOT, "core/cli/bin.ts"), ...args], {
    cwd: ROOT,
    stdout: o.stdout ? Bun.file(o.stdout) : "pipe",
    stderr: "pipe",
    stdin: o.stdin ? Bun.file(o.stdin) : "ignore",
    timeout: 120_000,
    killSignal: "SIGKILL",
  });
  const [out, err, code] = await Promise.all([p.stdout instanceof ReadableStream ? new Response(p.stdout).text() : "", new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

/** Writes `config` as a JSON config file in a fresh directory; returns its path. */
export async function writeConfig(config: VaultConfig): Promise<string> {
  const file = join(await tmpDataDir("vault-xfer-config-"), "vault.json");
  await Bun.write(file, JSON.stringify(config, null, 2));
  return file;
}

/** An archive read back: the entry names in order, the manifest, the bytes of each blob entry by name. */
export interface ReadArchive {
  names: string[];
  manifest: ExportManifest;
  blobs: Map<string, Uint8Array>;
}

/** Reads a whole archive (small test archives only). */
export async function readArchive(path: string): Promise<ReadArchive> {
  const ex = extract();
  const names: string[] = [];
  const bodies = new Map<string, Uint8Array>();
  const consume = (async () => {
    for await (const e of ex) {
      const parts: Buffer[] = [];
      for await (const c of e) parts.push(c as Buffer);
      names.push(e.header.name);
      bodies.set(e.header.name, new Uint8Array(Buffer.concat(parts)));
    }
  })();
  await Promise.all([(pipeline as unknown as (s: unknown[]) => Promise<void>)([createReadStream(path), ex]), consume]);
  const manifest = JSON.parse(new TextDecoder().decode(bodies.get("manifest.json"))) as ExportManifest;
  bodies.delete("manifest.json");
  return { names, manifest, blobs: bodies };
}

/** Paths of a repository's rows (status 200 with a blob), optionally under `prefix`, sorted. */
export async function storedPaths(db: Db, repository: string, prefix = ""): Promise<string[]> {
  const { artifacts } = tablesOf(db);
  const rows = await db
    .select({ path: artifacts.path, blobDigest: artifacts.blobDigest })
    .from(artifacts)
    .where(eq(artifacts.repository, repository));
  return rows
    .filter((r) => r.blobDigest && r.path.startsWith(prefix))
    .map((r) => r.path)
    .sort();
}

/** The offset of a blob's bytes inside an uncompressed archive written by `vault export` (header block + 512). */
export function blobOffset(archive: Uint8Array, hex: string): number {
  const name = new TextEncoder().encode(`blobs/sha256/${hex}`);
  for (let i = 0; i + 512 <= archive.length; i += 512) {
    let same = true;
    for (let j = 0; j < name.length && same; j++) same = archive[i + j] === name[j];
    if (same && archive[i + name.length] === 0) return i + 512;
  }
  throw new Error(`no tar header for blob ${hex}`);
}

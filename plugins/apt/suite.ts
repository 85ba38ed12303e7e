/**
 * Suites a repository publishes itself — hosted and group (specs/apt.md §6): one generation of a suite is every
 * `Packages` index (+ `.gz`; no `.xz`: see compress.ts), their `by-hash/SHA256/<hex>` copies, the `Release` (with `Valid-Until` when
 * `validForSeconds` is set), `InRelease` and `Release.gpg`, stored in one `artifacts.commit` so that a Release never
 * lists a file that is not visible. The by-hash files of the last `keepGenerations` earlier generations stay. Release
 * files and indexes by name are read from the database and answered with `Cache-Control: no-cache`; a Release
 * requested past half its validity is regenerated in the background, one requested at its expiry before the answer.
 *
 * Repository-relative paths: `dists/<suite>/…` (served), `-/generations/<suite>` (JSON: by-hash paths of the kept
 * generations, never served: client paths cannot start with `-`).
 */
import { readFile } from "node:fs/promises";
import { errors, type ArtifactEntry, type ArtifactPut, type Logger, type PluginContext } from "../../core/plugin.ts";
import { gzipDeterministic } from "./compress.ts";
import { Signer } from "./gpg.ts";
import { dirname } from "./paths.ts";
import { parseRelease, renderRelease, type ReleaseFile } from "./release.ts";
import type { AptRepoConfig } from "./service.ts";

/** One file of an `artifacts.commit`. */
export type CommitFile = { path: string; body: ReadableStream<Uint8Array> | Uint8Array | string; opts?: ArtifactPut };

/** Default `keepGenerations`. */
export const DEFAULT_KEEP_GENERATIONS = 3;
/** Header of the stored Release files: their `Valid-Until`, epoch ms (absent when they have none). */
export const VALID_UNTIL_HEADER = "x-vault-valid-until";
/**
 * Header of a generation's Release files and indexes by name: the `Last-Modified` (epoch ms, whole seconds) of the
 * generation before it. When both fall in the same second, `If-Modified-Since` (one-second resolution, what APT sends)
 * cannot tell them apart and is ignored.
 */
export const PREVIOUS_HEADER = "x-vault-previous-modified";
const GENERATIONS = "-/generations/";
const TEXT = "text/plain; charset=utf-8";
const enc = new TextEncoder();

/** One index of a generation, with its digests (lower-case hex; computed when absent). */
export interface IndexFile {
  /** Relative to `dists/<suite>/` (`main/binary-amd64/Packages.gz`). */
  path: string;
  bytes: Uint8Array;
  contentType: string;
  md5?: string;
  sha1?: string;
  sha256?: string;
}

/** md5, sha1 and sha256 of `b`, hex. */
export function digestsOf(b: Uint8Array): { md5: string; sha1: string; sha256: string } {
  const h = (alg: "md5" | "sha1" | "sha256") => new Bun.CryptoHasher(alg).update(b).digest("hex");
  return { md5: h("md5"), sha1: h("sha1"), sha256: h("sha256") };
}

/**
 * `Packages` and `Packages.gz` (gzip -9, no mtime: deterministic) of one `binary-<arch>` directory.
 * @param dir relative to `dists/<suite>/`, with trailing slash (`main/binary-amd64/`)
 */
export async function packagesFiles(dir: string, plain: Uint8Array): Promise<IndexFile[]> {
  return [
    { path: dir + "Packages", bytes: plain, contentType: TEXT },
    { path: dir + "Packages.gz", bytes: await gzipDeterministic(plain), contentType: "application/gzip" },
  ];
}

/** The fields of a Release besides its file lists. */
export interface SuiteIdentity {
  origin: string;
  label: string;
  /** `Suite:` and `Codename:` (the `dists/` directory name). */
  suite: string;
  architectures: string[];
  components: string[];
}

/** Input of {@link buildGeneration}. */
export interface GenerationOptions {
  identity: SuiteIdentity;
  indexes: IndexFile[];
  /** Signs `InRelease` and `Release.gpg`; without one only `Release` is published. */
  signer?: Signer;
  /** `Valid-Until` = `Date` + this many seconds. */
  validForSeconds?: number;
  /** Headers stored on the three Release files (the caller's record of what the generation was built from). */
  headers: Record<string, string>;
  /** The suite's Release before this generation, if any ({@link PREVIOUS_HEADER}). */
  previous: ArtifactEntry | null;
  /** `Date`, epoch ms (default now). */
  now?: number;
}

/**
 * Every file of one generation of `dists/<suite>/` (see the file header): the indexes by name and by hash, `Release`
 * listing them (sorted by path; MD5Sum, SHA1, SHA256), `InRelease` and `Release.gpg` when there is a signer.
 * @returns the files to commit, and the by-hash paths (for {@link pruneGenerations})
 * @throws GpgError when signing fails
 */
export async function buildGeneration(o: GenerationOptions): Promise<{ files: CommitFile[]; byHash: string[] }> {
  const base = `dists/${o.identity.suite}/`;
  const files: CommitFile[] = [];
  const byHash: string[] = [];
  const previous: Record<string, string> = o.previous ? { [PREVIOUS_HEADER]: String(modifiedSecond(o.previous)) } : {};
  const entries = o.indexes.map((f) => {
    const d = f.md5 && f.sha1 && f.sha256 ? { md5: f.md5, sha1: f.sha1, sha256: f.sha256 } : digestsOf(f.bytes);
    const dir = f.path.slice(0, f.path.lastIndexOf("/") + 1);
    const bh = `${base}${dir}by-hash/SHA256/${d.sha256}`;
    const opts: ArtifactPut = { contentType: f.contentType, kind: "metadata" };
    files.push({ path: base + f.path, body: f.bytes, opts: { ...opts, headers: previous } }, { path: bh, body: f.bytes, opts });
    byHash.push(bh);
    return { path: f.path, size: f.bytes.byteLength, ...d };
  });
  entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const date = o.now ?? Date.now();
  const validUntil = o.validForSeconds ? date + o.validForSeconds * 1000 : undefined;
  const release = renderRelease({ ...o.identity, codename: o.identity.suite, date, validUntil, entries });
  const headers = { ...o.headers, ...previous };
  // Valid-Until is rendered with one-second resolution: the header holds the same instant
  if (validUntil !== undefined) headers[VALID_UNTIL_HEADER] = String(Math.floor(validUntil / 1000) * 1000);
  files.push({ path: `${base}Release`, body: release, opts: { contentType: TEXT, kind: "metadata", headers } });
  if (o.signer) {
    const [inRelease, detached] = await Promise.all([o.signer.clearsign(release), o.signer.detachSign(release)]);
    files.push(
      { path: `${base}InRelease`, body: inRelease, opts: { contentType: TEXT, kind: "metadata", headers } },
      { path: `${base}Release.gpg`, body: detached, opts: { contentType: "application/pgp-signature", kind: "metadata", headers } },
    );
  }
  return { files, byHash };
}

/** The `Last-Modified` the artifact store gives a stored generation file, epoch ms (whole seconds). */
function modifiedSecond(e: ArtifactEntry): number {
  return Math.floor(e.fetchedAt / 1000) * 1000;
}

/** The row at exactly `path`, read from the database (another process may have written it); null without a blob. */
export async function freshEntry(ctx: PluginContext, path: string): Promise<ArtifactEntry | null> {
  const [e] = await ctx.artifacts.list(path, { limit: 1 });
  return e && e.path === path && e.status === 200 && e.blobDigest ? e : null;
}

/**
 * An index this repository published (`path` relative to the archive root), read from its by-hash copy — the bytes of
 * the generation whose Release says `file` (service.ts AptMember.index).
 * @throws VaultError 404 when that generation's copy is gone
 */
export async function publishedIndex(ctx: PluginContext, path: string, file: ReleaseFile): Promise<Uint8Array> {
  const e = await freshEntry(ctx, `${dirname(path)}by-hash/SHA256/${file.hashes.SHA256}`);
  if (!e) throw errors.notFound(path);
  return ctx.artifacts.read(e);
}

/**
 * After a new generation of `suite` was committed: deletes the indexes by name that the `previous` Release listed and
 * the new generation (`files`) no longer has — an architecture or component whose last package went — while they still
 * hold the bytes that Release names (a newer generation of another process is left alone). Their by-hash copies stay
 * for clients holding the older Release ({@link pruneGenerations}). A previous Release that does not parse is skipped.
 */
export async function dropUnlistedIndexes(ctx: PluginContext, suite: string, previous: ArtifactEntry | null, files: CommitFile[]): Promise<void> {
  if (!previous) return;
  let listed: Map<string, ReleaseFile>;
  try {
    listed = parseRelease(new TextDecoder().decode(await ctx.artifacts.read(previous))).files;
  } catch {
    return;
  }
  const now = new Set(files.map((f) => f.path));
  for (const [rel, file] of listed) {
    const path = `dists/${suite}/${rel}`;
    if (now.has(path)) continue;
    const e = await freshEntry(ctx, path);
    if (e && e.blobDigest === `sha256:${file.hashes.SHA256}`) await ctx.artifacts.delete(path);
  }
}

/**
 * Records a new generation of `suite` and deletes the by-hash files no longer in the last `keep` + 1 generations
 * (a generation identical to the previous one — signed again, nothing changed — is not counted twice).
 */
export async function pruneGenerations(ctx: PluginContext, suite: string, byHash: string[], keep: number): Promise<void> {
  const path = GENERATIONS + suite;
  const e = await freshEntry(ctx, path);
  const gens: string[][] = e ? (JSON.parse(new TextDecoder().decode(await ctx.artifacts.read(e))) as { generations: string[][] }).generations : [];
  const last = gens.at(-1);
  if (last && last.length === byHash.length && last.every((p, i) => p === byHash[i])) return;
  gens.push(byHash);
  const dropped = gens.splice(0, Math.max(0, gens.length - (keep + 1)));
  await ctx.artifacts.put(path, JSON.stringify({ generations: gens }), { contentType: "application/json", kind: "metadata" });
  const live = new Set(gens.flat());
  for (const p of new Set(dropped.flat())) if (!live.has(p)) await ctx.artifacts.delete(p);
}

/**
 * Whether a stored Release needs signing again: `expired` at its `Valid-Until` (less a margin of a quarter of the
 * validity, at most a minute, so APT does not see it expire while it fetches the indexes), `refresh` past half its
 * validity (or when `validForSeconds` was set or removed since), else `current`.
 * @param now epoch ms
 */
export function releaseState(release: ArtifactEntry, validForSeconds: number | undefined, now: number): "current" | "refresh" | "expired" {
  const h = release.headers[VALID_UNTIL_HEADER];
  const validUntil = h === undefined ? undefined : Number(h);
  if (validUntil !== undefined && now >= validUntil - Math.min(60_000, (validForSeconds ?? 0) * 250)) return "expired";
  if (!validForSeconds) return validUntil === undefined ? "current" : "refresh";
  if (validUntil === undefined) return "refresh";
  return now >= validUntil - validForSeconds * 500 ? "refresh" : "current";
}

/** At most one running regeneration per suite (within this process); callers wait for it or not. */
export class SuiteRefresh {
  private running = new Map<string, Promise<void>>();

  constructor(
    private regenerate: (suite: string) => Promise<void>,
    private log: Logger,
  ) {}

  /** Starts the regeneration of `suite`, or joins the running one. The promise rejects with its error (also logged). */
  start(suite: string): Promise<void> {
    let p = this.running.get(suite);
    if (!p) {
      p = this.regenerate(suite).finally(() => this.running.delete(suite));
      p.catch((e) => this.log.warn("cannot sign the suite again", { suite, error: (e as Error).message }));
      this.running.set(suite, p);
    }
    return p;
  }
}

/**
 * Answers a mutable file of a suite (Release files, indexes by name) from the database with `Cache-Control: no-cache`;
 * `If-Modified-Since` is ignored when the previous generation has the same `Last-Modified` second ({@link PREVIOUS_HEADER}).
 * For a Release file (`release` given) the suite is first signed again when {@link releaseState} says so: at once when
 * expired, in the background past half its validity.
 * @throws VaultError 404 when there is no such file
 */
export async function respondSuiteFile(
  ctx: PluginContext<AptRepoConfig>,
  req: Request,
  path: string,
  release?: { suite: string; refresh: SuiteRefresh },
): Promise<Response> {
  let e = await freshEntry(ctx, path);
  if (e && release) {
    const state = releaseState(e, ctx.config.validForSeconds, Date.now());
    if (state !== "current") {
      const done = release.refresh.start(release.suite);
      if (state === "expired") {
        await done;
        e = await freshEntry(ctx, path);
      } else done.catch(() => {});
    }
  }
  if (!e) throw errors.notFound(path);
  if (req.headers.has("if-modified-since") && e.headers[PREVIOUS_HEADER] === String(modifiedSecond(e))) {
    const headers = new Headers(req.headers);
    headers.delete("if-modified-since");
    req = new Request(req.url, { method: req.method, headers, signal: req.signal });
  }
  return ctx.artifacts.respond(req, e, { "cache-control": "no-cache" });
}

/**
 * The configured signing key imported into its own GnuPG home, or undefined (with a warning) when `signing` is absent.
 * `keyFile` is resolved against the config file's directory (`ctx.configPath`).
 * @throws GpgError when the key does not import or cannot sign; Error when the key file cannot be read
 */
export async function signerOf(ctx: PluginContext<AptRepoConfig>): Promise<Signer | undefined> {
  const s = ctx.config.signing;
  const key = s?.key ? enc.encode(s.key) : s?.keyFile ? new Uint8Array(await readFile(ctx.configPath(s.keyFile))) : undefined;
  if (!key) {
    ctx.log.warn(`${ctx.repo.type} apt repository without a signing key: APT accepts it only with [trusted=yes]`);
    return undefined;
  }
  return Signer.create({ key, passphrase: s?.passphrase, keyId: s?.keyId });
}

/** `public.key` (armored) and `public.gpg` (binary keyring for `signed-by=`) of a signing key, exported once. */
export class PublicKeys {
  private keys = new Map<boolean, Uint8Array>();

  /** Answers `GET /<name>/public.key|public.gpg`. @throws VaultError 404 without a signer */
  async respond(req: Request, signer: Signer | undefined, armor: boolean): Promise<Response> {
    if (!signer) throw errors.notFound("signing key (this repository is unsigned)");
    let k = this.keys.get(armor);
    if (!k) this.keys.set(armor, (k = await signer.publicKey(armor)));
    const headers = { "content-type": armor ? "application/pgp-keys" : "application/octet-stream", "content-length": String(k.byteLength) };
    return new Response(req.method === "HEAD" ? null : (k as Uint8Array<ArrayBuffer>), { headers });
  }
}

/**
 * What the conda repository types share: the config keys, the service interface a group reads its members through, the
 * routing of a request below a mount (specs/conda.md §1), the variants derived from one repodata snapshot
 * (`repodata.json.zst`, `current_repodata.json`, CEP-16 shards, the file lookup) stored beside it, answers of stored
 * documents, pool dispatch, and the plugin's errors (plain text for conda clients, JSON for uploads).
 *
 * Derived files of a subdir (artifact paths below `<prefix><subdir>/`), each tagged `x-vault-snapshot: <digest of the
 * repodata.json they were made from>` and committed together:
 * ```
 * repodata.json.zst                     zstd of the snapshot
 * current_repodata.json                 newest version of each package
 * repodata_shards.msgpack.zst#derived   CEP-16 shard index (when shards are derived)
 * shards/<hex>.msgpack.zst              CEP-16 shards (content-addressed, immutable)
 * repodata.json#records                 "<file>\t<sha256>\t<size>\t<md5>" lines (package verification, group lookups)
 * ```
 */
import { VaultError, errors, KeyedLock, type ArtifactEntry, type ArtifactPut, type PluginContext, type Principal, type RepositoryConfig } from "../../core/plugin.ts";
import { parseCondaPath, type CondaPath, type PackageFile } from "./paths.ts";
import { parseRecordLines, type FileDigests } from "./repodata.ts";
import { condaRepodata, type CondaTaskInput, type CondaTaskOutput } from "./task.ts";

/** Keys a conda repository entry may carry besides the core ones (plugins/conda/index.ts `condaConfigSchema`). */
export interface CondaRepoConfig extends RepositoryConfig {
  /** proxy: freshness of repodata.json, shard indexes and channeldata.json, seconds (default: `cache.metadataTtlSeconds`, else 600). */
  repodataTtlSeconds?: number;
  /**
   * proxy: where CEP-16 shards come from. `auto` (default): upstream's when it has a shard index, else derived from the
   * cached repodata.json; `upstream`: only upstream's (404 without); `derive`: always derived from repodata.json (for
   * upstreams whose shards clients cannot read); `off`: 404, clients use repodata.json.
   */
  shards?: "auto" | "upstream" | "derive" | "off";
  /** hosted: largest package file an upload may carry, bytes (default {@link DEFAULT_MAX_UPLOAD_BYTES}). */
  maxUploadBytes?: number;
}

/** Default `maxUploadBytes`: 2 GiB (CUDA builds of large libraries exceed 1 GiB). */
export const DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024 * 1024 * 1024;

/** Header tying a derived file to the snapshot digest it was made from. */
export const SNAPSHOT_HEADER = "x-vault-snapshot";

/** One file of an `artifacts.commit`. */
export type CommitFile = { path: string; body: ReadableStream<Uint8Array> | Uint8Array | string; opts?: ArtifactPut };

/** Content types of what the plugin serves. */
export const CONTENT_TYPE = {
  json: "application/json",
  zst: "application/zstd",
  msgpackZst: "application/octet-stream",
  package: "application/octet-stream",
} as const;

/** Cache-Control of shard files: content-addressed, never change (specs/conda.md §5). */
export const IMMUTABLE = "public, max-age=31536000, immutable";

/**
 * One conda repository as the plugin (and a group reading it) sees it. Created once per repository
 * (index.ts `serviceOf`), shared by its mounts.
 */
export interface CondaService {
  readonly ctx: PluginContext<CondaRepoConfig>;
  /** Answers a request under `mount`. Throws VaultError (rendered by the plugin). */
  handle(req: Request, mount: string): Promise<Response>;
  /**
   * The subdir's repodata.json snapshot entry (proxies fetch or revalidate it); null when the repository has none.
   * @param prefix `""` or `label/<label>/`
   * @throws VaultError for upstream failures without a stored copy
   */
  snapshot(prefix: string, subdir: string, signal?: AbortSignal): Promise<ArtifactEntry | null>;
  /** The digests the repository's repodata lists for a file; null when it does not list it. */
  lookup(prefix: string, subdir: string, filename: string, signal?: AbortSignal): Promise<FileDigests | null>;
  /** Answers GET/HEAD of a package file of this repository. Throws 404 when it has none. */
  servePackage(req: Request, prefix: string, subdir: string, file: PackageFile): Promise<Response>;
  /** The channel's channeldata.json entry; null when there is none. */
  channeldata(prefix: string, signal?: AbortSignal): Promise<ArtifactEntry | null>;
  /** Takes an upload whose `write` permission was checked (hosted; a group passes its `writeTo` member's). */
  upload?(req: Request, principal: Principal, target: { subdir?: string; filename?: string }, via?: string): Promise<Response>;
  /** Deletes one package file whose `delete` permission was checked (hosted; a group passes its `writeTo` member's). Throws 404 when absent. */
  remove?(req: Request, principal: Principal, target: { subdir: string; filename: string }, via?: string): Promise<Response>;
  /**
   * hosted, for retention (the plugin's `deleteVersion`): removes every package file of one version (`name` and
   * `version` as the file names carry them: each build, both formats, every subdir), repodata and channeldata
   * regenerated in one commit. No audit record (the retention job writes it). A version already gone removes nothing.
   * @returns the repository-relative paths removed and their total size, bytes
   */
  removeVersion?(name: string, version: string): Promise<{ paths: string[]; bytes: number }>;
  start?(): Promise<void>;
}

/* ------------------------------------------------------------------ errors */

/** Errors of the conda plugin (each returns, does not throw, a VaultError). */
export const condaErrors = {
  notFound: (what: string) => new VaultError("VAULT_NOT_FOUND", 404, `${what} not found`),
  noRoute: (path: string) => new VaultError("VAULT_NOT_FOUND", 404, `not a conda channel path: ${path}`, { path }),
  method: (m: string, allow: string, why = `method ${m} not allowed here`) => new VaultError("VAULT_METHOD_NOT_ALLOWED", 405, why, { method: m }, { allow }),
  /** 400 for an upload that is not an acceptable package; the message says why. */
  badPackage: (filename: string, why: string) => new VaultError("CONDA_INVALID_PACKAGE", 400, `${filename}: ${why}`, { filename }),
  badRequest: (message: string) => new VaultError("VAULT_BAD_REQUEST", 400, message),
  /** 409: the file name is taken by other bytes. */
  exists: (path: string, sha256: string) =>
    new VaultError("CONDA_FILE_EXISTS", 409, `${path} already exists with other contents (sha256 ${sha256}); package files are immutable: publish a new build number`, { path, sha256 }),
  tooLarge: (limit: number) => new VaultError("VAULT_TOO_LARGE", 413, `package larger than maxUploadBytes (${limit} bytes)`, { limit }),
  badUpstream: (url: string, why: string) => new VaultError("VAULT_UPSTREAM_ERROR", 502, `upstream document unusable: ${why}`, { url }),
};

/**
 * Renders an error: JSON `{"error": {"code", "message", "detail"}}` for writes (uploads, deletes: their clients show the
 * message), plain text `<status> <message>` for GET/HEAD (conda, mamba, pixi print it).
 */
export function renderCondaError(err: VaultError, req: Request): Response {
  const headers = { ...err.headers };
  if (req.method === "GET" || req.method === "HEAD") {
    return new Response(req.method === "HEAD" ? null : `${err.status} ${err.message}\n`, {
      status: err.status,
      headers: { "content-type": "text/plain; charset=utf-8", ...headers },
    });
  }
  return Response.json({ error: { code: err.code, message: err.message, detail: err.detail } }, { status: err.status, headers: { ...headers, "content-type": "application/json" } });
}

/* ------------------------------------------------------------------ helpers */

/** Runs a conda task inline, or in the worker pool when `sizeBytes` is over the offload threshold. */
export async function runTask(ctx: PluginContext, input: CondaTaskInput, sizeBytes: number, signal?: AbortSignal): Promise<CondaTaskOutput> {
  if (ctx.pool.offloads(sizeBytes)) return ctx.pool.run<CondaTaskInput, CondaTaskOutput>("condaRepodata", input, { signal });
  return condaRepodata(input);
}

/** A stored file with bytes (status 200 and a blob), or null. */
export function usable(e: ArtifactEntry | null | undefined): ArtifactEntry | null {
  return e && e.status === 200 && e.blobDigest ? e : null;
}

/**
 * The row at exactly `path`, read from the database (not from the store's in-memory entries, which may lag writes of
 * another process sharing the data directory). Null when absent or not a stored file.
 */
export async function freshEntry(ctx: PluginContext, path: string): Promise<ArtifactEntry | null> {
  const [e] = await ctx.artifacts.list(path, { limit: 1 });
  return e && e.path === path ? usable(e) : null;
}

/**
 * Splits a request below `mount` into the method and the decoded repository-relative path, checked.
 * @throws VaultError 400 bad path, 404 outside the mount
 */
export function relativePath(req: Request, mount: string): { url: URL; rel: string } {
  const url = new URL(req.url);
  const p = url.pathname;
  if (!p.startsWith(mount)) throw condaErrors.noRoute(p);
  let rest = p.slice(mount.length);
  if (rest.startsWith("/")) rest = rest.slice(1);
  let rel: string;
  try {
    rel = decodeURIComponent(rest);
  } catch {
    throw errors.badPath(p, "malformed percent-encoding");
  }
  if (rel.split("/").some((s) => s === "." || s === "..") || /[\\\0-\x1f]/.test(rel)) throw errors.badPath(p, "refused path segment");
  return { url, rel };
}

/** Parses the repository-relative path, or throws 404 naming it. */
export function condaPath(rel: string): CondaPath {
  const p = parseCondaPath(rel);
  if (!p) throw condaErrors.noRoute("/" + rel);
  return p;
}

/** Headers of a document answer: its content type and cache policy. */
export function docHeaders(contentType: string, cacheControl: string): Record<string, string> {
  return { "content-type": contentType, "cache-control": cacheControl };
}

/** Max-age for a proxy's document: the seconds left of its snapshot's freshness (0 when stale or immutable-less). */
export function remainingMaxAge(e: ArtifactEntry): string {
  const s = e.expiresAt === null ? 0 : Math.max(0, Math.floor((e.expiresAt - Date.now()) / 1000));
  return `public, max-age=${s}`;
}

/* ------------------------------------------------------------------ derived variants */

/** The derived-file paths of a subdir (see the file header). */
export function derivedPaths(prefix: string, subdir: string) {
  const base = `${prefix}${subdir}/`;
  return {
    base,
    snapshot: `${base}repodata.json`,
    zst: `${base}repodata.json.zst`,
    current: `${base}current_repodata.json`,
    shardIndex: `${base}repodata_shards.msgpack.zst#derived`,
    shard: (hex: string) => `${base}shards/${hex}.msgpack.zst`,
    records: `${base}repodata.json#records`,
  };
}

/** Most snapshots' file lookups kept in memory per repository. */
const LOOKUPS_KEPT = 8;

/**
 * The variants derived from repodata snapshots of one repository (see the file header): made once per snapshot digest
 * (in the pool when big), committed together, looked up by file name.
 */
export class Variants {
  private locks = new KeyedLock();
  private lookups = new Map<string, Map<string, FileDigests>>();

  /** @param shards whether shards are derived (they cost one msgpack+zstd pass per package name) */
  constructor(
    private ctx: PluginContext,
    private shards: boolean,
  ) {}

  /**
   * The commit entries of every variant of `snapshot` (bytes of the subdir's repodata.json whose sha256 is `digest`).
   * @throws RepodataError (from the task) when the snapshot is not repodata
   */
  async files(snapshot: Uint8Array, digest: string, prefix: string, subdir: string, signal?: AbortSignal): Promise<CommitFile[]> {
    const out = (await runTask(this.ctx, { op: "derive", snapshot, subdir, shards: this.shards }, snapshot.byteLength, signal)).derive!;
    const d = derivedPaths(prefix, subdir);
    const tag = { [SNAPSHOT_HEADER]: digest };
    const meta = (contentType: string): ArtifactPut => ({ contentType, kind: "metadata", headers: tag });
    const files: CommitFile[] = [
      { path: d.zst, body: out.zst, opts: meta(CONTENT_TYPE.zst) },
      { path: d.current, body: out.current, opts: meta(CONTENT_TYPE.json) },
    ];
    if (out.shardIndex && out.shards) {
      for (const [hex, bytes] of out.shards) files.push({ path: d.shard(hex), body: bytes, opts: { contentType: CONTENT_TYPE.msgpackZst, kind: "metadata" } });
      files.push({ path: d.shardIndex, body: out.shardIndex, opts: meta(CONTENT_TYPE.msgpackZst) });
    }
    files.push({ path: d.records, body: out.records, opts: meta("text/plain; charset=utf-8") });
    this.remember(digest, out.records);
    return files;
  }

  private remember(digest: string, records: string): Map<string, FileDigests> {
    const m = parseRecordLines(records);
    this.lookups.delete(digest);
    this.lookups.set(digest, m);
    while (this.lookups.size > LOOKUPS_KEPT) this.lookups.delete(this.lookups.keys().next().value!);
    return m;
  }

  /** Whether the variants of `snap` are stored (the records file carries its digest). */
  private async current(snap: ArtifactEntry, prefix: string, subdir: string): Promise<ArtifactEntry | null> {
    const r = usable(await this.ctx.artifacts.get(derivedPaths(prefix, subdir).records));
    return r && r.headers[SNAPSHOT_HEADER] === snap.blobDigest ? r : null;
  }

  /** Makes sure the variants of `snap` are stored (derived and committed once per digest, per process). */
  async ensure(snap: ArtifactEntry, prefix: string, subdir: string, signal?: AbortSignal): Promise<void> {
    if (await this.current(snap, prefix, subdir)) return;
    await this.locks.run(`${prefix}${subdir}`, async () => {
      if (await this.current(snap, prefix, subdir)) return;
      const bytes = await this.ctx.artifacts.read(snap);
      await this.ctx.artifacts.commit(await this.files(bytes, snap.blobDigest!, prefix, subdir, signal));
    });
  }

  /** The digests `snap` lists for `filename` (variants derived first when needed); null when it does not list it. */
  async lookup(snap: ArtifactEntry, prefix: string, subdir: string, filename: string, signal?: AbortSignal): Promise<FileDigests | null> {
    let m = this.lookups.get(snap.blobDigest!);
    if (!m) {
      await this.ensure(snap, prefix, subdir, signal);
      const r = await this.current(snap, prefix, subdir);
      if (!r) return null;
      m = this.remember(snap.blobDigest!, new TextDecoder().decode(await this.ctx.artifacts.read(r)));
    }
    return m.get(filename) ?? null;
  }

  /**
   * Answers a derived document of `snap` (`repodata.json.zst`, `current_repodata.json`, or the derived shard index).
   * @param cacheControl the Cache-Control to send
   */
  async respond(req: Request, snap: ArtifactEntry, prefix: string, subdir: string, which: "zst" | "current" | "shardIndex", cacheControl: string, extra: Record<string, string> = {}): Promise<Response> {
    await this.ensure(snap, prefix, subdir, req.signal);
    const d = derivedPaths(prefix, subdir);
    const e = usable(await this.ctx.artifacts.get(d[which]));
    if (!e || e.headers[SNAPSHOT_HEADER] !== snap.blobDigest) throw condaErrors.notFound(`${d[which]}`);
    const ct = which === "current" ? CONTENT_TYPE.json : which === "zst" ? CONTENT_TYPE.zst : CONTENT_TYPE.msgpackZst;
    return this.ctx.artifacts.respond(req, e, { ...docHeaders(ct, cacheControl), ...extra });
  }

  /** Answers a stored shard file (derived or cached from upstream); null when none is stored under that digest. */
  async shard(req: Request, prefix: string, subdir: string, hex: string): Promise<Response | null> {
    const e = usable(await this.ctx.artifacts.get(derivedPaths(prefix, subdir).shard(hex)));
    if (!e) return null;
    return this.ctx.artifacts.respond(req, e, docHeaders(CONTENT_TYPE.msgpackZst, IMMUTABLE));
  }
}

/** Which stored document answers a subdir document served from the snapshot: the snapshot itself or a derived variant. */
export type SnapshotDoc = "snapshot" | "zst" | "current" | "shardIndex";

/** The subdir documents hosted and group channels serve from their snapshot (the proxy passes `repodata_from_packages.json` and shards through). */
export const SNAPSHOT_DOCS: Partial<Record<string, SnapshotDoc>> = {
  "repodata.json": "snapshot",
  "repodata_from_packages.json": "snapshot",
  "repodata.json.zst": "zst",
  "current_repodata.json": "current",
  "repodata_shards.msgpack.zst": "shardIndex",
};

/** Answers a subdir document from `snap`: the snapshot itself (`application/json`) or one of its derived variants. */
export function respondSnapshotDoc(ctx: PluginContext, variants: Variants, req: Request, snap: ArtifactEntry, prefix: string, subdir: string, which: SnapshotDoc, cacheControl: string): Promise<Response> {
  if (which === "snapshot") return ctx.artifacts.respond(req, snap, docHeaders(CONTENT_TYPE.json, cacheControl));
  return variants.respond(req, snap, prefix, subdir, which, cacheControl);
}

/** What a write request names: PUT of `<subdir>/<file>`, or a multipart POST to the mount, `upload` or quetz's `api/channels/<c>/files/`. */
export type UploadTarget = { subdir?: string; filename?: string };

/**
 * The upload a PUT/POST addresses (hosted channels, and groups writing through to one).
 * @throws VaultError 405 for other methods and paths
 */
export function uploadTarget(req: Request, rel: string): UploadTarget {
  if (req.method === "PUT") {
    const p = parseCondaPath(rel);
    if (p?.kind !== "package" || p.prefix !== "") throw condaErrors.method("PUT", "GET, HEAD", "PUT takes a package file: /<name>/<subdir>/<name>-<version>-<build>.conda|.tar.bz2");
    return { subdir: p.subdir, filename: p.file.filename };
  }
  if (req.method === "POST" && (rel === "" || rel === "upload" || /^api\/channels\/[^/]+\/files\/?$/.test(rel))) return {};
  throw condaErrors.method(req.method, "GET, HEAD, PUT, POST, DELETE");
}

/**
 * The package file a DELETE addresses (hosted channels, and groups writing through to one): `<subdir>/<file>`.
 * @throws VaultError 405 for other paths
 */
export function deleteTarget(rel: string): { subdir: string; filename: string } {
  const p = parseCondaPath(rel);
  if (p?.kind !== "package" || p.prefix !== "") throw condaErrors.method("DELETE", "GET, HEAD", "DELETE takes a package file: /<name>/<subdir>/<name>-<version>-<build>.conda|.tar.bz2");
  return { subdir: p.subdir, filename: p.file.filename };
}

/** An empty but valid repodata.json for a subdir nothing was uploaded to (conda needs `noarch/repodata.json` to take a URL as a channel). */
function emptyRepodata(req: Request, subdir: string): Response {
  const body = JSON.stringify({ info: { subdir }, packages: {}, "packages.conda": {}, removed: [], repodata_version: 1 });
  return new Response(req.method === "HEAD" ? null : body, { headers: { ...docHeaders(CONTENT_TYPE.json, "no-cache"), "content-length": String(body.length) } });
}

/**
 * Answers GET/HEAD of a hosted or group channel from stored entries: packages (`svc.servePackage`), channeldata.json,
 * shards, and the snapshot documents with `Cache-Control: no-cache` (clients revalidate: 304).
 * @param emptySubdirs answer an empty repodata.json for a subdir without packages (hosted) instead of 404
 * @throws VaultError 404 for what the channel does not have, 405 for other methods
 */
export async function serveStoredChannel(req: Request, rel: string, svc: CondaService, variants: Variants, emptySubdirs: boolean): Promise<Response> {
  if (req.method !== "GET" && req.method !== "HEAD") throw condaErrors.method(req.method, "GET, HEAD, PUT, POST, DELETE");
  const p = condaPath(rel);
  switch (p.kind) {
    case "package":
      return svc.servePackage(req, p.prefix, p.subdir, p.file);
    case "channeldata": {
      const e = await svc.channeldata(p.prefix, req.signal);
      if (!e) throw condaErrors.notFound("channeldata.json");
      return svc.ctx.artifacts.respond(req, e, docHeaders(CONTENT_TYPE.json, "no-cache"));
    }
    case "shard": {
      const r = await variants.shard(req, p.prefix, p.subdir, p.hex);
      if (!r) throw condaErrors.notFound(`shard ${p.hex}`);
      return r;
    }
    case "document": {
      const which = SNAPSHOT_DOCS[p.doc];
      if (!which) throw notOffered(p.doc);
      const snap = await svc.snapshot(p.prefix, p.subdir, req.signal);
      if (!snap) {
        if (emptySubdirs && which === "snapshot" && p.prefix === "") return emptyRepodata(req, p.subdir);
        throw condaErrors.notFound(`${p.prefix}${p.subdir}/${p.doc}`);
      }
      return respondSnapshotDoc(svc.ctx, variants, req, snap, p.prefix, p.subdir, which, "no-cache");
    }
    default:
      throw condaErrors.noRoute("/" + rel);
  }
}

/** The answer to a HEAD/GET of a document variant the repository does not offer (`.bz2`, `.jlap`): a real 404 (specs/conda.md pitfalls). */
export function notOffered(doc: string): VaultError {
  return condaErrors.notFound(`${doc} (not offered: use repodata.json or repodata.json.zst)`);
}

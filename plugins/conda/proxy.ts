/**
 * Conda proxy channel (specs/conda.md §1–§5): an upstream channel (`https://conda.anaconda.org/conda-forge/` by default)
 * mirrored at `/<name>/`.
 *
 * | path | cache key | policy |
 * |---|---|---|
 * | `<subdir>/repodata.json` | the path | the subdir's **snapshot**: fetched upstream as `repodata.json.zst` (as `repodata.json` when upstream has no `.zst`), decompressed, checked (in the pool when big), `info.base_url` (CEP-15) removed so packages come through the vault; mutable, `repodataTtlSeconds`, revalidated with upstream's validators |
 * | `<subdir>/repodata.json.zst`, `current_repodata.json` | derived (service.ts) | made from the snapshot they are served with, never fetched separately, so every variant is of one upstream generation |
 * | `<subdir>/repodata_shards.msgpack.zst` | the path, or derived | CEP-16 index: upstream's (mutable) or derived from the snapshot, per `shards` |
 * | `<subdir>/[shards/]<hex>.msgpack.zst` | `<subdir>/shards/<hex>.msgpack.zst` | immutable, verified: its name is the sha256 of its bytes |
 * | `<subdir>/<name>-<version>-<build>.conda\|.tar.bz2` | the path | immutable; verified against the sha256 and size of the snapshot's record when it lists the file |
 * | `channeldata.json`, `<subdir>/repodata_from_packages.json`, `run_exports.json`, `patch_instructions.json` | the path | mutable, passed through |
 * | `.bz2` variants, `repodata.jlap`, `current_repodata.json.zst` | — | 404 (clients fall back to what is offered) |
 *
 * Everything may sit below `label/<label>/`.
 */
import { VaultError, type ArtifactEntry, type CacheRequest, type PluginContext } from "../../core/plugin.ts";
import type { PackageFile } from "./paths.ts";
import type { FileDigests } from "./repodata.ts";
import {
  CONTENT_TYPE,
  IMMUTABLE,
  Variants,
  condaErrors,
  condaPath,
  derivedPaths,
  docHeaders,
  notOffered,
  relativePath,
  remainingMaxAge,
  respondSnapshotDoc,
  runTask,
  SNAPSHOT_DOCS,
  usable,
  type CondaRepoConfig,
  type CondaService,
} from "./service.ts";

/** Default upstream: conda-forge on anaconda.org. */
export const CONDA_DEFAULT_UPSTREAM = "https://conda.anaconda.org/conda-forge/";
/** Default `repodataTtlSeconds` when the repository's cache policy names no metadata TTL. */
export const DEFAULT_REPODATA_TTL_SECONDS = 600;
/** How long an upstream's lack of `repodata.json.zst` or of a shard index is remembered, ms (conda remembers ~7 days). */
const ABSENCE_MS = 60 * 60 * 1000;

/** The snapshot's content type: records where it came from and the upstream base of its packages. */
function snapshotType(source: "zst" | "json", baseUrl?: string): string {
  return `${CONTENT_TYPE.json}; x-vault-source=${source}` + (baseUrl ? `; x-vault-base-url=${encodeURIComponent(baseUrl)}` : "");
}

function param(contentType: string | null, name: string): string | undefined {
  const m = new RegExp(`;\\s*${name}=([^;\\s]+)`).exec(contentType ?? "");
  return m ? decodeURIComponent(m[1]) : undefined;
}

/** URL without userinfo, for error details. */
function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = u.password = "";
    return u.href;
  } catch {
    return "<invalid url>";
  }
}

/**
 * Creates the service of one conda proxy repository (table above).
 */
export function createCondaProxy(ctx: PluginContext<CondaRepoConfig>): CondaService {
  const up = ctx.config.upstream ?? CONDA_DEFAULT_UPSTREAM;
  const base = new URL(up.endsWith("/") ? up : up + "/").href;
  const ttl = ctx.config.repodataTtlSeconds ?? ctx.config.cache?.metadataTtlSeconds ?? DEFAULT_REPODATA_TTL_SECONDS;
  const mode = ctx.config.shards ?? "auto";
  const variants = new Variants(ctx, mode === "derive" || mode === "auto");
  /** Subdirs (`<prefix><subdir>/`) whose upstream has no repodata.json.zst / no shard index, until epoch ms. */
  const noZst = new Map<string, number>();
  const noShards = new Map<string, number>();
  /** Upstream shard base URL by subdir, from the shard index last served. */
  const shardBases = new Map<string, string>();

  const absent = (m: Map<string, number>, k: string) => (m.get(k) ?? 0) > Date.now();
  const upstreamUrl = (rel: string) => new URL(rel.split("/").map(encodeURIComponent).join("/"), base).href;

  function snapshotSpec(prefix: string, subdir: string, source: "zst" | "json"): CacheRequest {
    const d = derivedPaths(prefix, subdir);
    const url = upstreamUrl(d.base + (source === "zst" ? "repodata.json.zst" : "repodata.json"));
    return {
      key: d.snapshot,
      upstreamUrl: url,
      class: "mutable",
      ttlSeconds: ttl,
      upstreamHeaders: { "accept-encoding": "gzip", accept: "application/json, */*" },
      contentType: snapshotType(source),
      transform: async (body) => {
        try {
          const out = await runTask(ctx, { op: "normalize", body, compression: source === "zst" ? "zst" : "none", url }, body.byteLength);
          return { body: out.body!, contentType: snapshotType(source, out.normalize!.baseUrl) };
        } catch (e) {
          throw condaErrors.badUpstream(safeUrl(url), e instanceof Error ? e.message : String(e));
        }
      },
    };
  }

  /** The snapshot entry (fresh, revalidated, or stale when upstream fails); null when upstream has no repodata.json. */
  async function snapshot(prefix: string, subdir: string, signal?: AbortSignal): Promise<ArtifactEntry | null> {
    const d = derivedPaths(prefix, subdir);
    const stored = usable(await ctx.artifacts.get(d.snapshot));
    let source: "zst" | "json" = stored ? (param(stored.contentType, "x-vault-source") === "zst" ? "zst" : "json") : absent(noZst, d.base) ? "json" : "zst";
    for (;;) {
      try {
        return (await ctx.cache.fetch(snapshotSpec(prefix, subdir, source), { signal })).entry;
      } catch (e) {
        if (!(e instanceof VaultError && e.status === 404)) throw e;
        if (source === "json") return null;
        // no repodata.json.zst upstream: remember it, and fetch repodata.json under the same key
        noZst.set(d.base, Date.now() + ABSENCE_MS);
        await ctx.cache.invalidate(d.snapshot);
        source = "json";
      }
    }
  }

  async function requireSnapshot(prefix: string, subdir: string, signal?: AbortSignal): Promise<ArtifactEntry> {
    const s = await snapshot(prefix, subdir, signal);
    if (!s) throw condaErrors.notFound(`${prefix}${subdir}/repodata.json`);
    return s;
  }

  /**
   * The record digests of a file: from the stored snapshot (no upstream request when one is stored), else from a
   * fetched one; a stored snapshot that does not list the file is refreshed once when stale.
   */
  async function lookup(prefix: string, subdir: string, filename: string, signal?: AbortSignal): Promise<FileDigests | null> {
    const d = derivedPaths(prefix, subdir);
    let snap = usable(await ctx.artifacts.get(d.snapshot));
    if (snap) {
      const hit = await variants.lookup(snap, prefix, subdir, filename, signal);
      if (hit || (snap.expiresAt !== null && snap.expiresAt > Date.now())) return hit;
    }
    snap = await snapshot(prefix, subdir, signal);
    return snap ? variants.lookup(snap, prefix, subdir, filename, signal) : null;
  }

  async function servePackage(req: Request, prefix: string, subdir: string, file: PackageFile): Promise<Response> {
    const d = derivedPaths(prefix, subdir);
    const key = d.base + file.filename;
    let digests: FileDigests | null = null;
    let snap: ArtifactEntry | null = null;
    try {
      digests = await lookup(prefix, subdir, file.filename, req.signal);
      snap = usable(await ctx.artifacts.get(d.snapshot));
    } catch (e) {
      // repodata unavailable: a package already cached is still served; otherwise fetched unverified
      ctx.log.warn("repodata unavailable; package not verified against it", { key, error: (e as Error).message });
    }
    const pkgBase = param(snap?.contentType ?? null, "x-vault-base-url");
    const spec: CacheRequest = {
      key,
      upstreamUrl: pkgBase ? new URL(encodeURIComponent(file.filename), pkgBase).href : upstreamUrl(key),
      class: "immutable",
      contentType: CONTENT_TYPE.package,
    };
    if (digests?.sha256 || digests?.size !== undefined) {
      spec.expect = {};
      if (digests.sha256) spec.expect.sha256 = digests.sha256;
      if (digests.size !== undefined) spec.expect.sizeBytes = digests.size;
      const cached = usable(await ctx.artifacts.get(key));
      if (cached && digests.sha256 && cached.blobDigest !== `sha256:${digests.sha256}`) {
        ctx.log.warn("cached package differs from the repodata that lists it now; fetching it again", { key });
        await ctx.cache.invalidate(key);
      }
    } else ctx.log.info("package not listed in the subdir's repodata; served unverified", { key });
    return ctx.cache.serve(req, spec);
  }

  /** A mutable document passed through as upstream has it. */
  function passThrough(req: Request, key: string): Promise<Response> {
    return ctx.cache.serve(req, { key, upstreamUrl: upstreamUrl(key), class: "mutable", ttlSeconds: ttl, contentType: CONTENT_TYPE.json, upstreamHeaders: { "accept-encoding": "gzip" } });
  }

  /** Upstream's shard index (passed through after a check), or null when upstream has none or one clients cannot follow through the vault. */
  async function upstreamShardIndex(req: Request, prefix: string, subdir: string): Promise<Response | null> {
    const d = derivedPaths(prefix, subdir);
    if (absent(noShards, d.base)) return null;
    const key = d.base + "repodata_shards.msgpack.zst";
    const url = upstreamUrl(key);
    try {
      const res = await ctx.cache.serve(req, {
        key,
        upstreamUrl: url,
        class: "mutable",
        ttlSeconds: ttl,
        contentType: CONTENT_TYPE.msgpackZst,
        transform: async (body) => {
          let info;
          try {
            info = (await runTask(ctx, { op: "shard-index", body }, body.byteLength)).shardIndex!;
          } catch (e) {
            throw condaErrors.badUpstream(safeUrl(url), e instanceof Error ? e.message : String(e));
          }
          // absolute URLs would send clients around the vault: such an index is not passed through
          if (/^[a-z][a-z0-9+.-]*:/i.test(info.base_url ?? "") || /^[a-z][a-z0-9+.-]*:/i.test(info.shards_base_url ?? ""))
            throw new VaultError("CONDA_SHARDS_ELSEWHERE", 502, "upstream shard index points to another host", { url: safeUrl(url) });
          shardBases.set(d.base, new URL(info.shards_base_url ?? "", url).href);
          return { body, contentType: CONTENT_TYPE.msgpackZst };
        },
      });
      res.headers.set("content-type", CONTENT_TYPE.msgpackZst);
      return res;
    } catch (e) {
      if (e instanceof VaultError && (e.status === 404 || e.code === "CONDA_SHARDS_ELSEWHERE")) {
        noShards.set(d.base, Date.now() + ABSENCE_MS);
        return null;
      }
      throw e;
    }
  }

  /** The upstream URL of a shard: from the index's `shards_base_url` (read from the stored index after a restart). */
  async function shardUrl(prefix: string, subdir: string, hex: string): Promise<string | null> {
    const d = derivedPaths(prefix, subdir);
    let b = shardBases.get(d.base);
    if (!b) {
      const idx = usable(await ctx.artifacts.get(d.base + "repodata_shards.msgpack.zst"));
      if (!idx) return null;
      const bytes = await ctx.artifacts.read(idx);
      const info = (await runTask(ctx, { op: "shard-index", body: bytes }, bytes.byteLength)).shardIndex!;
      b = new URL(info.shards_base_url ?? "", upstreamUrl(d.base + "repodata_shards.msgpack.zst")).href;
      shardBases.set(d.base, b);
    }
    return new URL(`${hex}.msgpack.zst`, b).href;
  }

  async function shardIndex(req: Request, prefix: string, subdir: string): Promise<Response> {
    if (mode === "off") throw notOffered("repodata_shards.msgpack.zst");
    if (mode === "upstream" || mode === "auto") {
      const r = await upstreamShardIndex(req, prefix, subdir);
      if (r) return r;
      if (mode === "upstream") throw condaErrors.notFound(`${prefix}${subdir}/repodata_shards.msgpack.zst`);
    }
    const snap = await requireSnapshot(prefix, subdir, req.signal);
    return variants.respond(req, snap, prefix, subdir, "shardIndex", remainingMaxAge(snap));
  }

  async function shard(req: Request, prefix: string, subdir: string, hex: string): Promise<Response> {
    if (mode === "off") throw condaErrors.notFound("shard");
    const stored = await variants.shard(req, prefix, subdir, hex);
    if (stored) return stored;
    const url = mode === "derive" ? null : await shardUrl(prefix, subdir, hex);
    if (!url) throw condaErrors.notFound(`shard ${hex}`);
    const res = await ctx.cache.serve(req, { key: derivedPaths(prefix, subdir).shard(hex), upstreamUrl: url, class: "immutable", expect: { sha256: hex }, contentType: CONTENT_TYPE.msgpackZst });
    res.headers.set("cache-control", IMMUTABLE);
    return res;
  }

  async function handle(req: Request, mount: string): Promise<Response> {
    if (req.method !== "GET" && req.method !== "HEAD") {
      if (req.method === "PUT" || req.method === "POST") throw condaErrors.method(req.method, "GET, HEAD", "a proxy channel takes no uploads: upload to a hosted conda repository");
      throw condaErrors.method(req.method, "GET, HEAD");
    }
    const { rel } = relativePath(req, mount);
    const p = condaPath(rel);
    switch (p.kind) {
      case "channeldata":
        return passThrough(req, p.prefix + "channeldata.json");
      case "package":
        return servePackage(req, p.prefix, p.subdir, p.file);
      case "shard":
        return shard(req, p.prefix, p.subdir, p.hex);
      case "document": {
        const { prefix, subdir, doc } = p;
        switch (doc) {
          case "repodata.json":
          case "repodata.json.zst":
          case "current_repodata.json": {
            const s = await requireSnapshot(prefix, subdir, req.signal);
            return respondSnapshotDoc(ctx, variants, req, s, prefix, subdir, SNAPSHOT_DOCS[doc]!, remainingMaxAge(s));
          }
          case "repodata_shards.msgpack.zst":
            return shardIndex(req, prefix, subdir);
          case "repodata_from_packages.json":
          case "run_exports.json":
          case "patch_instructions.json":
            return passThrough(req, `${prefix}${subdir}/${doc}`);
          default:
            throw notOffered(doc);
        }
      }
      default:
        throw condaErrors.noRoute("/" + rel);
    }
  }

  return {
    ctx,
    handle,
    snapshot,
    lookup,
    servePackage,
    async channeldata(prefix, signal) {
      try {
        return (await ctx.cache.fetch({ key: prefix + "channeldata.json", upstreamUrl: upstreamUrl(prefix + "channeldata.json"), class: "mutable", ttlSeconds: ttl, contentType: CONTENT_TYPE.json }, { signal })).entry;
      } catch (e) {
        if (e instanceof VaultError && e.status === 404) return null;
        throw e;
      }
    },
  };
}

/**
 * npm proxy repository (specs/npm.md): packuments (full and abbreviated, negotiated by `Accept`) through the cache as
 * mutable documents with tarball URLs rewritten to the vault; tarballs through the cache as immutable files, streamed
 * on their first download while verified against the packument's `dist.integrity` (sha512/sha1 SRI) or `dist.shasum`.
 *
 * Cache keys under the repository:
 * ```
 * <name>#full#<tag>, <name>#abbrev#<tag>   packument variants (tag: hash of the public repository URL)
 * <name>/-/<file>.tgz                      tarball (scoped: @scope/name/-/<file>.tgz)
 * ```
 */
import { VaultError, errors, type ArtifactEntry, type CacheRequest, type PluginContext } from "../../core/plugin.ts";
import { encodeName } from "./names.ts";
import { PackumentParseError, type TarballDist } from "./task.ts";
import { expectedDigests, type Variant } from "./documents.ts";
import { npmErrors } from "./errors.ts";
import { ABBREVIATED, VARIANT_CONTENT_TYPE, runTask, tagOf, type NpmRepoConfig, type NpmService } from "./service.ts";

export { expectedDigests } from "./documents.ts";

/** Age of a cached packument (ms) after which a tarball it does not list makes the vault fetch it again. */
const RELIST_AFTER_MS = 60_000;

/** `Accept` sent upstream per variant. */
const UPSTREAM_ACCEPT = {
  abbrev: `${ABBREVIATED}; q=1.0, application/json; q=0.8, */*`,
  full: "application/json",
} as const;

/**
 * Creates the service of one npm proxy repository. `config.upstream` is required (no built-in default).
 * Errors thrown: 404 VAULT_NOT_FOUND, 502 (unusable packument, integrity mismatch before the first byte was sent),
 * 503/504 from upstream.
 */
export function createNpmProxy(ctx: PluginContext<NpmRepoConfig>): NpmService {
  if (!ctx.config.upstream) throw new VaultError("VAULT_CONFIG", 500, `npm proxy repository "${ctx.repo.name}" needs an upstream`);
  let upstreamBase = ctx.config.upstream;
  if (!upstreamBase.endsWith("/")) upstreamBase += "/";
  const ttlSeconds = ctx.config.cache?.metadataTtlSeconds;

  function packumentSpec(name: string, variant: Variant, vaultBase: string): CacheRequest {
    const upstreamUrl = upstreamBase + encodeName(name);
    const contentType = VARIANT_CONTENT_TYPE[variant];
    return {
      key: `${name}#${variant}#${tagOf(vaultBase)}`,
      upstreamUrl,
      class: "mutable",
      ttlSeconds,
      upstreamHeaders: { accept: UPSTREAM_ACCEPT[variant] },
      contentType,
      transform: async (body) => {
        try {
          const out = await runTask(ctx, { op: "rewrite", body, upstreamBase, vaultBase }, body.byteLength);
          return { body: out.body!, contentType };
        } catch (e) {
          if (e instanceof PackumentParseError || (e instanceof Error && e.name === "PackumentParseError")) throw npmErrors.badUpstream(upstreamUrl, e.message);
          throw e;
        }
      },
    };
  }

  /**
   * When upstream fails and nothing is stored for this public URL: the newest stored rendering of the variant for
   * another public URL (`<name>#<variant>#<other tag>`: the vault was reached under another name, or filled by
   * `vault import` from another vault, docs/export-import.md). Null when the error is no upstream failure (502–504) or
   * there is no such rendering; renderings marked `must-revalidate`/`no-cache` upstream are never used.
   */
  async function otherRendering(err: unknown, name: string, variant: Variant, vaultBase: string): Promise<ArtifactEntry | null> {
    if (!(err instanceof VaultError) || err.status < 502 || err.status > 504) return null;
    const own = packumentSpec(name, variant, vaultBase).key;
    const bound = (e: ArtifactEntry) => e.cacheFlags.includes("must-revalidate") || e.cacheFlags.includes("no-cache");
    const rows = (await ctx.artifacts.list(`${name}#${variant}#`)).filter((e) => e.path !== own && e.status === 200 && e.blobDigest && !bound(e));
    return rows.length === 0 ? null : rows.reduce((a, b) => (b.fetchedAt > a.fetchedAt ? b : a));
  }

  /** A rendering made for another public URL, its tarball URLs rewritten to `vaultBase`. */
  async function renderedFor(entry: ArtifactEntry, name: string, vaultBase: string, signal?: AbortSignal): Promise<Uint8Array> {
    const bytes = await ctx.artifacts.read(entry);
    // its public URL: what precedes `/<name>/-/` in its first tarball URL (stored documents are compact JSON)
    const text = new TextDecoder().decode(bytes);
    const at = text.indexOf('"tarball":"');
    const url = at === -1 ? "" : text.slice(at + 11, text.indexOf('"', at + 11));
    const cut = url.indexOf(`/${name}/-/`);
    if (cut <= 0) return bytes;
    return (await runTask(ctx, { op: "rewrite", body: bytes, upstreamBase: url.slice(0, cut + 1), vaultBase }, bytes.byteLength, { signal })).body!;
  }

  async function servePackument(req: Request, name: string, variant: Variant): Promise<Response> {
    let res: Response;
    try {
      res = await ctx.cache.serve(req, packumentSpec(name, variant, ctx.baseUrl(req)));
    } catch (e) {
      const alt = await otherRendering(e, name, variant, ctx.baseUrl(req));
      if (!alt) throw e;
      ctx.log.info("upstream failed: serving a stored packument rendered for another public URL", { name, error: (e as Error).message });
      const age = String(Math.max(0, Math.floor((Date.now() - alt.fetchedAt) / 1000)));
      const body = req.method === "HEAD" ? null : ((await renderedFor(alt, name, ctx.baseUrl(req), req.signal)) as Uint8Array<ArrayBuffer>);
      return new Response(body, {
        headers: { "content-type": VARIANT_CONTENT_TYPE[variant], vary: "Accept", "cache-control": "no-cache", "x-vault-cache": "STALE", warning: '110 - "Response is Stale"', age },
      });
    }
    const headers = new Headers(res.headers);
    headers.set("vary", "Accept");
    return new Response(res.body, { status: res.status, headers });
  }

  /** The stored packument variant (fetched or revalidated when needed); null when upstream has no such package. */
  async function packument(req: Request, name: string, variant: Variant): Promise<ArtifactEntry | null> {
    try {
      const { entry } = await ctx.cache.fetch(packumentSpec(name, variant, ctx.baseUrl(req)), { signal: req.signal });
      return entry.status === 200 && entry.blobDigest ? entry : null;
    } catch (e) {
      if (e instanceof VaultError && e.status === 404) return null;
      // upstream down: a rendering for another public URL still answers dist-tags and versions (its tarball URLs are that URL's)
      const alt = await otherRendering(e, name, variant, ctx.baseUrl(req));
      if (alt) return alt;
      throw e;
    }
  }

  /** The `dist` of `file` in the stored abbreviated packument (fetched again once when older than a minute); null when not listed. */
  async function listedDist(req: Request, name: string, file: string, key: string): Promise<TarballDist | null> {
    const find = async (): Promise<{ dist: TarballDist | null; fetchedAt: number }> => {
      const e = await packument(req, name, "abbrev");
      if (!e) return { dist: null, fetchedAt: Date.now() };
      const body = await ctx.artifacts.read(e);
      const out = await runTask(ctx, { op: "lookup", body, file, url: `${ctx.baseUrl(req)}/${key}` }, body.byteLength, { signal: req.signal });
      return { dist: out.found ? (out.dist ?? {}) : null, fetchedAt: e.fetchedAt };
    };
    const first = await find();
    if (first.dist || Date.now() - first.fetchedAt <= RELIST_AFTER_MS) return first.dist;
    // a version published since the cached packument was fetched: fetch the packument again (at most once a minute)
    await ctx.cache.invalidate(packumentSpec(name, "abbrev", ctx.baseUrl(req)).key);
    return (await find()).dist;
  }

  /**
   * A tarball: a cache hit is served as is; otherwise the packument must list it (else null, and no upstream request),
   * and the download is streamed to the client while it is stored, verified against the listed sha512/sha1
   * (`expectDigests`): a mismatch stores nothing and fails the response (502 before the first byte, else a cut).
   */
  async function tarball(req: Request, name: string, file: string): Promise<Response | null> {
    const key = `${name}/-/${file}`;
    const spec: CacheRequest = {
      key,
      upstreamUrl: `${upstreamBase}${encodeName(name).replace("%2f", "/")}/-/${encodeURIComponent(file)}`,
      class: "immutable",
      contentType: "application/octet-stream",
    };
    const cached = await ctx.artifacts.get(key);
    if (cached && cached.status === 200 && cached.blobDigest) return ctx.cache.serve(req, spec);
    const dist = await listedDist(req, name, file, key);
    if (!dist) return null;
    const want = expectedDigests(dist);
    if (want.sha512 === undefined && want.sha1 === undefined) ctx.log.warn("tarball has no usable integrity or shasum in its packument: stored unverified", { file });
    try {
      return await ctx.cache.serve(req, { ...spec, expectDigests: want });
    } catch (e) {
      if (e instanceof VaultError && e.code === "VAULT_DIGEST_MISMATCH") {
        ctx.log.warn("tarball failed integrity check: nothing stored", { file, ...e.detail });
        throw npmErrors.integrity(file, `${String(e.detail.algorithm ?? "digest")} mismatch`);
      }
      throw e;
    }
  }

  /** Passes `-/ping` and `-/v1/search` (query re-encoded) through to the upstream, uncached. */
  async function passthrough(req: Request, path: string, url: URL): Promise<Response> {
    const q = new URLSearchParams();
    for (const [k, v] of url.searchParams) if (/^[a-z]{1,20}$/.test(k)) q.append(k, v);
    const target = upstreamBase + path + (q.size ? `?${q}` : "");
    const res = await ctx.upstream.fetch(target, { headers: { accept: "application/json" }, signal: req.signal });
    const body = await res.arrayBuffer();
    if (res.status === 404) throw errors.notFound(path);
    if (res.status >= 400) throw errors.upstream(res.status, target);
    return new Response(body, { status: res.status, headers: { "content-type": res.headers.get("content-type") ?? "application/json" } });
  }

  return { ctx, servePackument, packument, tarball, passthrough };
}

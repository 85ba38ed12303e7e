/**
 * npm proxy repository (specs/npm.md): packuments (full and abbreviated, negotiated by `Accept`) through the cache as
 * mutable documents with tarball URLs rewritten to the vault; tarballs through the cache as immutable files,
 * verified against the packument's `dist.integrity` (sha512/sha1 SRI) or `dist.shasum` (sha1).
 *
 * Cache keys under the repository:
 * ```
 * <name>#full#<tag>, <name>#abbrev#<tag>   packument variants (tag: hash of the public repository URL)
 * <name>/-/<file>.tgz                      tarball (scoped: @scope/name/-/<file>.tgz)
 * ```
 */
import { VaultError, blobKey, errors, type CacheRequest, type PluginContext, type RepositoryConfig } from "../../core/plugin.ts";
import { encodeName, parseNpmPath, type NpmRoute } from "./names.ts";
import { npmPackument, PackumentParseError, type NpmTaskInput, type NpmTaskOutput, type TarballDist } from "./task.ts";

/** Keys an npm repository entry may carry besides the core ones (none yet). */
export type NpmRepoConfig = RepositoryConfig;

/** Media type of abbreviated packuments (specs/npm.md). */
export const ABBREVIATED = "application/vnd.npm.install-v1+json";

/** Age of a cached packument (ms) after which a tarball it does not list makes the vault fetch it again. */
const RELIST_AFTER_MS = 60_000;

/** `Accept` sent upstream per variant. */
const UPSTREAM_ACCEPT = {
  abbrev: `${ABBREVIATED}; q=1.0, application/json; q=0.8, */*`,
  full: "application/json",
} as const;

/** Which packument variant a client `Accept` header asks for: abbreviated when it names the install-v1 type. */
export function variantOf(accept: string | null): "abbrev" | "full" {
  return accept !== null && accept.toLowerCase().includes(ABBREVIATED) ? "abbrev" : "full";
}

/** npm-style errors (VaultError with the plugin's messages). */
const npmErrors = {
  badUpstream: (url: string, why: string) => new VaultError("VAULT_UPSTREAM_ERROR", 502, `upstream packument unusable: ${why}`, { url }),
  integrity: (file: string, why: string) => new VaultError("VAULT_DIGEST_MISMATCH", 502, `tarball ${file} failed integrity check: ${why}`, { file }),
  notListed: (file: string) => new VaultError("VAULT_NOT_FOUND", 404, `tarball ${file} not found`),
  method: (m: string) => new VaultError("VAULT_METHOD_NOT_ALLOWED", 405, `method ${m} not allowed on a proxy repository`, {}, { allow: "GET, HEAD" }),
};

/** Expected digests of a tarball from its `dist`: hex per algorithm, or empty when neither field is usable. */
export function expectedDigests(dist: TarballDist): { sha512?: string; sha1?: string } {
  const out: { sha512?: string; sha1?: string } = {};
  for (const part of (dist.integrity ?? "").trim().split(/\s+/)) {
    const m = /^(sha512|sha1)-([A-Za-z0-9+/]+={0,2})(\?.*)?$/.exec(part);
    if (!m) continue;
    const hex = Buffer.from(m[2], "base64").toString("hex");
    if (m[1] === "sha512" && hex.length === 128) out.sha512 ??= hex;
    if (m[1] === "sha1" && hex.length === 40) out.sha1 ??= hex;
  }
  if (!out.sha1 && dist.shasum && /^[0-9a-fA-F]{40}$/.test(dist.shasum)) out.sha1 = dist.shasum.toLowerCase();
  return out;
}

/** The request handler of one npm proxy repository. */
export interface NpmProxy {
  /** Answers a GET/HEAD below `mount`; throws VaultError (rendered by the plugin's renderError). */
  handle(req: Request, mount: string): Promise<Response>;
}

/**
 * Creates the handler of one npm proxy repository. `config.upstream` is required (no built-in default).
 * Errors thrown: 400 VAULT_BAD_PATH, 404 VAULT_NOT_FOUND, 405, 502 (unusable packument, integrity mismatch),
 * 503/504 from upstream.
 */
export function createNpmProxy(ctx: PluginContext<NpmRepoConfig>): NpmProxy {
  if (!ctx.config.upstream) throw new VaultError("VAULT_CONFIG", 500, `npm proxy repository "${ctx.repo.name}" needs an upstream`);
  let upstreamBase = ctx.config.upstream;
  if (!upstreamBase.endsWith("/")) upstreamBase += "/";
  const ttlSeconds = ctx.config.cache?.metadataTtlSeconds;
  const tags = new Map<string, string>();

  function tagOf(vaultBase: string): string {
    let t = tags.get(vaultBase);
    if (!t) {
      t = new Bun.CryptoHasher("sha256").update(vaultBase).digest("hex").slice(0, 12);
      if (tags.size < 100) tags.set(vaultBase, t);
    }
    return t;
  }

  async function task(input: NpmTaskInput, signal?: AbortSignal): Promise<NpmTaskOutput> {
    if (ctx.pool.offloads(input.body.byteLength)) return ctx.pool.run<NpmTaskInput, NpmTaskOutput>("npmPackument", input, { signal });
    return npmPackument(input);
  }

  function packumentSpec(name: string, variant: "abbrev" | "full", vaultBase: string): CacheRequest {
    const upstreamUrl = upstreamBase + encodeName(name);
    const contentType = variant === "abbrev" ? ABBREVIATED : "application/json";
    return {
      key: `${name}#${variant}#${tagOf(vaultBase)}`,
      upstreamUrl,
      class: "mutable",
      ttlSeconds,
      upstreamHeaders: { accept: UPSTREAM_ACCEPT[variant] },
      contentType,
      transform: async (body) => {
        try {
          const out = await task({ op: "rewrite", body, upstreamBase, vaultBase });
          return { body: out.body!, contentType };
        } catch (e) {
          if (e instanceof PackumentParseError || (e instanceof Error && e.name === "PackumentParseError")) throw npmErrors.badUpstream(upstreamUrl, e.message);
          throw e;
        }
      },
    };
  }

  async function packument(req: Request, name: string): Promise<Response> {
    const variant = variantOf(req.headers.get("accept"));
    const res = await ctx.cache.serve(req, packumentSpec(name, variant, ctx.baseUrl(req)));
    const headers = new Headers(res.headers);
    headers.set("vary", "Accept");
    return new Response(res.body, { status: res.status, headers });
  }

  /**
   * The stored abbreviated packument of `name` (fetched when needed): its bytes and when it was fetched (epoch ms).
   * Throws 404 when upstream has none.
   */
  async function storedPackument(req: Request, name: string): Promise<{ body: Uint8Array; fetchedAt: number }> {
    const { entry } = await ctx.cache.fetch(packumentSpec(name, "abbrev", ctx.baseUrl(req)), { signal: req.signal });
    if (entry.status !== 200 || !entry.blobDigest) throw errors.notFound(`package ${name}`);
    return { body: await ctx.artifacts.read(entry), fetchedAt: entry.fetchedAt };
  }

  async function distTags(req: Request, name: string): Promise<Response> {
    const { body } = await storedPackument(req, name);
    const out = await task({ op: "dist-tags", body }, req.signal);
    return Response.json(out.distTags ?? {});
  }

  /** sha512/sha1 of a stored blob (pool `digests` when the blob is a local file, else streamed here). */
  async function blobDigests(digest: string, algorithms: ("sha512" | "sha1")[]): Promise<Record<string, string>> {
    const key = blobKey(digest);
    const local = ctx.storage.localPath?.(key);
    if (local) return ctx.pool.run<{ path: string; algorithms: string[] }, Record<string, string>>("digests", { path: local, algorithms });
    const hashers = algorithms.map((a) => new Bun.CryptoHasher(a));
    for await (const chunk of await ctx.storage.get(key)) for (const h of hashers) h.update(chunk);
    return Object.fromEntries(algorithms.map((a, n) => [a, hashers[n].digest("hex")]));
  }

  async function tarball(req: Request, name: string, file: string): Promise<Response> {
    const key = `${name}/-/${file}`;
    const spec: CacheRequest = {
      key,
      upstreamUrl: `${upstreamBase}${encodeName(name).replace("%2f", "/")}/-/${encodeURIComponent(file)}`,
      class: "immutable",
      contentType: "application/octet-stream",
    };
    const cached = await ctx.artifacts.get(key);
    if (cached && cached.status === 200 && cached.blobDigest) return ctx.cache.serve(req, spec);
    // Not cached: the packument must list this tarball; its integrity is checked before any byte reaches a client.
    const lookup = { op: "lookup" as const, file, url: `${ctx.baseUrl(req)}/${key}` };
    const doc = await storedPackument(req, name);
    let found = await task({ ...lookup, body: doc.body }, req.signal);
    if (!found.found && Date.now() - doc.fetchedAt > RELIST_AFTER_MS) {
      // a version published since the cached packument was fetched: fetch the packument again (at most once a minute)
      await ctx.cache.invalidate(packumentSpec(name, "abbrev", ctx.baseUrl(req)).key);
      found = await task({ ...lookup, body: (await storedPackument(req, name)).body }, req.signal);
    }
    if (!found.found) throw npmErrors.notListed(file);
    const want = expectedDigests(found.dist ?? {});
    const { entry, status } = await ctx.cache.fetch(spec, { signal: req.signal });
    if (status === "MISS" && entry.blobDigest) {
      const algs = (["sha512", "sha1"] as const).filter((a) => want[a] !== undefined);
      if (algs.length === 0) ctx.log.warn("tarball has no usable integrity or shasum in its packument: stored unverified", { file });
      else {
        const got = await blobDigests(entry.blobDigest, [...algs]);
        for (const a of algs) {
          if (got[a] !== want[a]) {
            await ctx.cache.invalidate(key);
            ctx.log.warn("tarball failed integrity check: discarded", { file, algorithm: a, expected: want[a], actual: got[a] });
            throw npmErrors.integrity(file, `${a} mismatch`);
          }
        }
      }
    }
    return ctx.cache.serve(req, spec);
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

  async function handle(req: Request, mount: string): Promise<Response> {
    if (req.method !== "GET" && req.method !== "HEAD") throw npmErrors.method(req.method);
    const url = new URL(req.url);
    const pathname = url.pathname;
    if (!pathname.startsWith(mount + "/")) throw errors.notFound("route");
    const rest = pathname.slice(mount.length + 1);
    const r: NpmRoute | "bad" | undefined = parseNpmPath(rest);
    if (r === "bad") throw errors.badPath(pathname, "not a valid npm package or tarball path");
    if (r === undefined) throw errors.notFound("route");
    switch (r.kind) {
      case "packument":
        return packument(req, r.name);
      case "tarball":
        return tarball(req, r.name, r.file);
      case "dist-tags":
        return distTags(req, r.name);
      case "ping":
        return passthrough(req, "-/ping", url);
      case "search":
        return passthrough(req, "-/v1/search", url);
    }
  }

  return { handle };
}

/**
 * APT proxy repository (specs/apt.md §7, §8): an upstream archive root mirrored at `/<name>/`.
 *
 * | path | cache key | policy |
 * |---|---|---|
 * | `…/InRelease`, `…/Release` | the path | volatile: `releaseTtlSeconds` (60), revalidated whenever APT sends `max-age=0`; an upstream answer that is not a Release is refused (502, not stored) |
 * | `…/Release.gpg` | `<path>#<Release digest>` | fetched again whenever the Release changes, so the pair stays consistent |
 * | an index the current Release lists (`Packages.xz`, `Translation-en`, …) | `<dir>/by-hash/SHA256/<hex>` | immutable, verified against the Release's size and SHA256: one suite generation; fetched upstream by hash when the Release says `Acquire-By-Hash: yes`, else (or on a 404) by name |
 * | `…/by-hash/<field>/<hex>` | SHA256: the path; other fields: the SHA256 key of the file the Release names | immutable, verified |
 * | other files under `dists/` | the path | volatile (`releaseTtlSeconds`) |
 * | `pool/**` (and package files of flat repositories) | the path | immutable; verified against the SHA256 and size of the Packages/Sources stanza when an index served by this proxy lists it (pool-hashes.ts); a stored copy that differs from it is fetched again |
 *
 * The "current Release" of a release directory (`dists/<suite>/`, or the directory of a flat repository) is the newest
 * stored `InRelease`/`Release` — what the last client was given — fetched only when none is stored.
 *
 * With `upstreamKeyring`, every upstream `InRelease` (and `Release`, with the upstream's `Release.gpg`) is verified with
 * `gpgv` before it is stored: a bad or missing signature answers 502 and stores nothing, so the previous generation
 * stays the current one (its indexes and pool files are still served; the request that met the bad signature gets the
 * 502 rather than the stale copy the cache engine would give, so that APT reports it). Indexes are never
 * served from an older or newer generation than the Release they are checked against, so APT does not meet
 * "Hash Sum mismatch" while the upstream moves on. Bodies are stored and served as sent (`Accept-Encoding: identity`
 * upstream, no `Content-Encoding` to clients).
 */
import { VaultError, type ArtifactEntry, type CacheRequest, type PluginContext } from "../../core/plugin.ts";
import { compressionOf } from "./compress.ts";
import { Keyring } from "./gpg.ts";
import { parseAptPath, upstreamUrl, dirname, type AptPath } from "./paths.ts";
import { parseRelease, ReleaseError, signedText, type ParsedRelease, type ReleaseFile } from "./release.ts";
import { PoolHashes } from "./pool-hashes.ts";
import type { AptRepoConfig, AptService } from "./service.ts";
import { ParsedReleases, methodNotAllowed, routeRest } from "./service.ts";

/** Default `releaseTtlSeconds`. */
export const DEFAULT_RELEASE_TTL_SECONDS = 60;

const UPSTREAM_HEADERS = { "accept-encoding": "identity" };
const INDEX_KINDS: Record<string, "packages" | "sources"> = { Packages: "packages", Sources: "sources" };

/** Content-Type of a file by name (upstream's own wins when it sends one). */
function contentTypeOf(name: string): string {
  if (name.endsWith(".deb") || name.endsWith(".udeb") || name.endsWith(".ddeb")) return "application/vnd.debian.binary-package";
  if (name === "Release.gpg") return "application/pgp-signature";
  if (compressionOf(name) === "none" && !/\.(dsc|tar)$/.test(name)) return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

/** Serves bytes as stored: a `Content-Encoding` an upstream sent for a `.gz` file would make clients decompress it. */
function plain(res: Response): Response {
  if (res.headers.has("content-encoding")) res.headers.delete("content-encoding");
  return res;
}

/**
 * Creates the service of one apt proxy repository (table above).
 * @throws VaultError VAULT_CONFIG when the repository has no upstream
 */
export function createAptProxy(ctx: PluginContext<AptRepoConfig>): AptService {
  const up = ctx.config.upstream;
  if (!up) throw new VaultError("VAULT_CONFIG", 500, `repository ${ctx.repo.name}: an apt proxy needs an upstream URL (the archive root)`);
  const base = new URL(up.endsWith("/") ? up : up + "/").href;
  const releaseTtl = ctx.config.releaseTtlSeconds ?? DEFAULT_RELEASE_TTL_SECONDS;
  const releases = new ParsedReleases(ctx);
  const poolHashes = new PoolHashes(ctx);
  let keyring: Keyring | undefined;
  /** Release keys whose last upstream copy failed verification, with when (epoch ms) and the error answered. */
  const rejected = new Map<string, { at: number; error: VaultError }>();

  /**
   * Checks an upstream InRelease (clearsigned; with a keyring, gpgv must find a good signature and the text it verified
   * must be the text parsed) or Release (with a keyring, the upstream's Release.gpg must verify it).
   * @throws VaultError 502 (recorded in `rejected` when it is the signature)
   */
  async function verifyRelease(key: string, file: "InRelease" | "Release", body: Uint8Array): Promise<void> {
    const text = new TextDecoder().decode(body);
    try {
      if (file === "InRelease" && !text.startsWith("-----BEGIN PGP SIGNED MESSAGE-----")) throw new ReleaseError("not clearsigned");
      parseRelease(text);
    } catch (e) {
      throw new VaultError("VAULT_UPSTREAM_ERROR", 502, `upstream ${file} is not a Release file (${(e as Error).message})`, { key });
    }
    if (!keyring) return;
    let problem: string | undefined;
    try {
      if (file === "InRelease") {
        if ((await keyring.verifyClearsigned(body)) !== signedText(text)) problem = "text outside the signed part";
      } else {
        const sig = await ctx.upstream.fetch(upstreamUrl(base, key + ".gpg"), { headers: UPSTREAM_HEADERS });
        if (sig.status !== 200) {
          await sig.body?.cancel();
          problem = `upstream Release.gpg answered ${sig.status}`;
        } else await keyring.verifyDetached(body, new Uint8Array(await sig.arrayBuffer()));
      }
    } catch (e) {
      if (e instanceof VaultError) throw e;
      problem = (e as Error).message;
    }
    if (problem === undefined) return;
    const error = new VaultError("VAULT_UPSTREAM_ERROR", 502, `upstream ${file} signature does not verify with upstreamKeyring: ${problem}`, { key });
    rejected.set(key, { at: Date.now(), error });
    throw error;
  }

  function releaseSpec(dir: string, file: "InRelease" | "Release"): CacheRequest {
    const key = dir + file;
    return {
      key,
      upstreamUrl: upstreamUrl(base, key),
      class: "mutable",
      ttlSeconds: releaseTtl,
      upstreamHeaders: UPSTREAM_HEADERS,
      contentType: "text/plain; charset=utf-8",
      // an error page answered 200 (captive portal, misconfigured mirror) or a badly signed Release must never become
      // the suite's Release
      transform: async (body) => {
        await verifyRelease(key, file, body);
        return { body, contentType: "text/plain; charset=utf-8" };
      },
    };
  }

  /**
   * Serves a Release through the cache; a revalidation whose upstream copy failed verification answers that 502
   * instead of the stale copy (which stays stored and current).
   */
  async function serveVerified(req: Request, spec: CacheRequest): Promise<Response> {
    const t0 = Date.now();
    const res = await serve(req, spec);
    const r = rejected.get(spec.key);
    if (r && r.at >= t0 && res.headers.get("x-vault-cache") === "STALE") {
      await res.body?.cancel();
      throw r.error;
    }
    return res;
  }

  const usable = (e: ArtifactEntry | null): e is ArtifactEntry => !!e && e.status === 200 && !!e.blobDigest;

  /** The newest stored InRelease/Release of `dir`; fetched (InRelease, then Release) when `mayFetch` and none is stored. */
  async function releaseEntry(dir: string, mayFetch: boolean, signal?: AbortSignal): Promise<ArtifactEntry | null> {
    const [a, b] = await Promise.all([ctx.artifacts.get(dir + "InRelease"), ctx.artifacts.get(dir + "Release")]);
    const stored = [a, b].filter(usable).sort((x, y) => y.fetchedAt - x.fetchedAt);
    if (stored.length) return stored[0];
    if (!mayFetch) return null;
    for (const f of ["InRelease", "Release"] as const) {
      try {
        return (await ctx.cache.fetch(releaseSpec(dir, f), { signal })).entry;
      } catch (e) {
        if (!(e instanceof VaultError && e.status === 404)) throw e;
      }
    }
    return null;
  }

  /**
   * Finds the Release that lists a file of `fileDir`: for `dists/` paths each ancestor release directory from
   * `dists/<suite>/` down (only the first may be fetched); for a flat repository the directory itself.
   */
  async function locate<T>(fileDir: string, pick: (r: ParsedRelease, relDir: string) => T | undefined, signal?: AbortSignal): Promise<{ dir: string; hit: T; release: ParsedRelease } | null> {
    const parts = fileDir.split("/").filter(Boolean);
    const dirs: string[] = [];
    if (parts[0] === "dists") for (let k = 2; k <= parts.length; k++) dirs.push(parts.slice(0, k).join("/") + "/");
    else dirs.push(fileDir);
    for (let i = 0; i < dirs.length; i++) {
      const e = await releaseEntry(dirs[i], i === 0, signal);
      const r = e && (await releases.of(e));
      if (!r) continue;
      const hit = pick(r, fileDir.slice(dirs[i].length));
      if (hit !== undefined) return { dir: dirs[i], hit, release: r };
    }
    return null;
  }

  async function serve(req: Request, spec: CacheRequest): Promise<Response> {
    return plain(await ctx.cache.serve(req, spec));
  }

  /**
   * Gets an index the Release lists under its by-hash key (one generation, verified) with `get`: from `upstreamByHash`
   * first when given, by name when that is a 404. A Packages/Sources index got is queued for its pool hashes, fetched
   * the same way.
   */
  async function getListed<T>(indexPath: string, file: ReleaseFile, upstreamByHash: string | undefined, get: (spec: CacheRequest) => Promise<T>): Promise<T> {
    const sha = file.hashes.SHA256!;
    const dir = dirname(indexPath);
    const name = indexPath.slice(dir.length);
    const key = `${dir}by-hash/SHA256/${sha}`;
    const spec: CacheRequest = {
      key,
      upstreamUrl: upstreamUrl(base, indexPath),
      class: "immutable",
      expect: { sha256: sha, sizeBytes: file.size },
      contentType: contentTypeOf(name),
      upstreamHeaders: UPSTREAM_HEADERS,
    };
    const stem = name.replace(/\.(gz|xz|zst)$/, "");
    const compression = compressionOf(name);
    const attempt = async (upstream: string): Promise<T> => {
      const s = { ...spec, upstreamUrl: upstream };
      const out = await get(s);
      if (INDEX_KINDS[stem] && compression) poolHashes.add(s, INDEX_KINDS[stem], compression);
      return out;
    };
    if (!upstreamByHash) return attempt(spec.upstreamUrl);
    try {
      return await attempt(upstreamByHash);
    } catch (e) {
      if (!(e instanceof VaultError && e.status === 404)) throw e;
      // the mirror has no such by-hash object: the same bytes by name (verified against the same digest)
      await ctx.cache.invalidate(key);
      return attempt(spec.upstreamUrl);
    }
  }

  /** Serves an index the Release lists (see {@link getListed}). */
  function serveListed(req: Request, indexPath: string, file: ReleaseFile, upstreamByHash: string | undefined): Promise<Response> {
    return getListed(indexPath, file, upstreamByHash, (s) => serve(req, s));
  }

  async function serveRelease(req: Request, p: Extract<AptPath, { kind: "release" }>): Promise<Response> {
    if (p.file !== "Release.gpg") return serveVerified(req, releaseSpec(p.dir, p.file));
    // the signature belongs to the Release the proxy serves now: keyed by that Release's digest
    const rel = await ctx.cache.fetch(releaseSpec(p.dir, "Release"), { signal: req.signal });
    const digest = rel.entry.blobDigest!.slice(7, 23);
    return serve(req, {
      key: `${p.key}#${digest}`,
      upstreamUrl: upstreamUrl(base, p.key),
      class: "mutable",
      ttlSeconds: releaseTtl,
      contentType: "application/pgp-signature",
      upstreamHeaders: UPSTREAM_HEADERS,
      transform: async (body) => {
        const t = new TextDecoder().decode(body.subarray(0, 64));
        if (!t.includes("-----BEGIN PGP SIGNATURE-----") && !(body[0]! & 0x80))
          throw new VaultError("VAULT_UPSTREAM_ERROR", 502, "upstream Release.gpg is not an OpenPGP signature", { key: p.key });
        return { body, contentType: "application/pgp-signature" };
      },
    });
  }

  async function serveByHash(req: Request, p: Extract<AptPath, { kind: "by-hash" }>): Promise<Response> {
    const found = await locate(p.dir, (r, relDir) => {
      const path = r.byDigest.get(`${p.field}/${p.hex}`);
      return path !== undefined && dirname(path) === relDir ? path : undefined;
    }, req.signal);
    const file = found?.release.files.get(found.hit);
    if (found && file) return serveListed(req, found.dir + found.hit, file, upstreamUrl(base, p.key));
    // a generation the current Release no longer lists (a client holding an older Release): content-addressed all the same
    const spec: CacheRequest = { key: p.key, upstreamUrl: upstreamUrl(base, p.key), class: "immutable", upstreamHeaders: UPSTREAM_HEADERS };
    if (p.field === "SHA256") spec.expect = { sha256: p.hex };
    return serve(req, spec);
  }

  async function serveIndex(req: Request, p: Extract<AptPath, { kind: "index" }>): Promise<Response> {
    const dir = dirname(p.key);
    const name = p.key.slice(dir.length);
    const found = await locate(dir, (r, relDir) => r.files.get(relDir + name), req.signal);
    if (found) return serveListed(req, p.key, found.hit, found.release.acquireByHash ? upstreamUrl(base, `${dir}by-hash/SHA256/${found.hit.hashes.SHA256}`) : undefined);
    return serve(req, { key: p.key, upstreamUrl: upstreamUrl(base, p.key), class: "mutable", ttlSeconds: releaseTtl, contentType: contentTypeOf(name), upstreamHeaders: UPSTREAM_HEADERS });
  }

  async function servePool(req: Request, p: Extract<AptPath, { kind: "pool" }>): Promise<Response> {
    const known = await poolHashes.lookup(p.key);
    const spec: CacheRequest = {
      key: p.key,
      upstreamUrl: upstreamUrl(base, p.key),
      class: "immutable",
      contentType: contentTypeOf(p.segs[p.segs.length - 1]),
      upstreamHeaders: UPSTREAM_HEADERS,
    };
    if (known) {
      spec.expect = { sha256: known.sha256, sizeBytes: known.size };
      const cached = await ctx.artifacts.get(p.key);
      if (usable(cached) && cached.blobDigest !== `sha256:${known.sha256}`) {
        ctx.log.warn("stored pool file differs from the index that lists it now; fetching it again", { key: p.key });
        await ctx.cache.invalidate(p.key);
      }
    }
    return serve(req, spec);
  }

  /** The group's view (service.ts AptMember): the Release revalidated as `req` asks, the stored one when that fails. */
  async function memberRelease(dir: string, req: Request): Promise<ParsedRelease | null> {
    const cc: Record<string, string> = {};
    for (const h of ["cache-control", "pragma"]) {
      const v = req.headers.get(h);
      if (v !== null) cc[h] = v;
    }
    let failure: unknown;
    for (const f of ["InRelease", "Release"] as const) {
      try {
        const res = await serveVerified(new Request(req.url, { method: "HEAD", headers: cc, signal: req.signal }), releaseSpec(dir, f));
        await res.body?.cancel();
        break;
      } catch (e) {
        if (e instanceof VaultError && e.status === 404) continue;
        failure = e;
        break;
      }
    }
    const e = await releaseEntry(dir, false);
    if (!e) {
      if (failure !== undefined) throw failure;
      return null;
    }
    if (failure !== undefined) ctx.log.warn("upstream Release not revalidated; the stored one stays current", { dir, error: (failure as Error).message });
    return releases.of(e);
  }

  return {
    ctx,
    member: {
      release: memberRelease,
      async index(path, file, byHash) {
        const { entry } = await getListed(path, file, byHash ? upstreamUrl(base, `${dirname(path)}by-hash/SHA256/${file.hashes.SHA256}`) : undefined, (s) => ctx.cache.fetch(s));
        return ctx.artifacts.read(entry);
      },
    },
    async start() {
      if (ctx.config.upstreamKeyring) keyring = await Keyring.open(ctx.configPath(ctx.config.upstreamKeyring));
    },
    async stop() {
      await keyring?.close();
      keyring = undefined;
    },
    async handle(req, mount) {
      if (req.method !== "GET" && req.method !== "HEAD") {
        if (req.method === "PUT" || req.method === "POST") throw methodNotAllowed(req.method, "a proxy repository takes no uploads: upload to a hosted apt repository");
        throw methodNotAllowed(req.method);
      }
      const p = parseAptPath(routeRest(req, mount));
      switch (p.kind) {
        case "release":
          return serveRelease(req, p);
        case "by-hash":
          return serveByHash(req, p);
        case "pool":
          return servePool(req, p);
        default:
          return serveIndex(req, p);
      }
    },
  };
}

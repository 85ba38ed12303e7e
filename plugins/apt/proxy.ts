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
 * stored `InRelease`/`Release` — what the last client was given — fetched only when none is stored. Indexes are never
 * served from an older or newer generation than the Release they are checked against, so APT does not meet
 * "Hash Sum mismatch" while the upstream moves on. Bodies are stored and served as sent (`Accept-Encoding: identity`
 * upstream, no `Content-Encoding` to clients).
 */
import { VaultError, type ArtifactEntry, type CacheRequest, type PluginContext } from "../../core/plugin.ts";
import { compressionOf } from "./compress.ts";
import { parseAptPath, upstreamUrl, dirname, type AptPath } from "./paths.ts";
import { parseRelease, ReleaseError, type ParsedRelease, type ReleaseFile } from "./release.ts";
import { PoolHashes } from "./pool-hashes.ts";
import type { AptRepoConfig, AptService } from "./service.ts";
import { methodNotAllowed, routeRest } from "./service.ts";

/** Default `releaseTtlSeconds`. */
export const DEFAULT_RELEASE_TTL_SECONDS = 60;

/** Parsed Releases kept in memory per repository (by blob digest). */
const PARSED_RELEASES = 32;

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
  const parsed = new Map<string, ParsedRelease>();
  const poolHashes = new PoolHashes(ctx);

  function releaseSpec(dir: string, file: "InRelease" | "Release"): CacheRequest {
    const key = dir + file;
    return {
      key,
      upstreamUrl: upstreamUrl(base, key),
      class: "mutable",
      ttlSeconds: releaseTtl,
      upstreamHeaders: UPSTREAM_HEADERS,
      contentType: "text/plain; charset=utf-8",
      // an error page answered 200 (captive portal, misconfigured mirror) must never become the suite's Release
      transform: async (body) => {
        const text = new TextDecoder().decode(body);
        try {
          if (file === "InRelease" && !text.startsWith("-----BEGIN PGP SIGNED MESSAGE-----")) throw new ReleaseError("not clearsigned");
          parseRelease(text);
        } catch (e) {
          throw new VaultError("VAULT_UPSTREAM_ERROR", 502, `upstream ${file} is not a Release file (${(e as Error).message})`, { key });
        }
        return { body, contentType: "text/plain; charset=utf-8" };
      },
    };
  }

  async function parse(entry: ArtifactEntry): Promise<ParsedRelease | null> {
    const d = entry.blobDigest!;
    let r = parsed.get(d);
    if (!r) {
      try {
        r = parseRelease(new TextDecoder().decode(await ctx.artifacts.read(entry)));
      } catch (e) {
        ctx.log.warn("stored Release does not parse", { key: entry.path, error: (e as Error).message });
        return null;
      }
      parsed.set(d, r);
      if (parsed.size > PARSED_RELEASES) parsed.delete(parsed.keys().next().value!);
    }
    return r;
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
      const r = e && (await parse(e));
      if (!r) continue;
      const hit = pick(r, fileDir.slice(dirs[i].length));
      if (hit !== undefined) return { dir: dirs[i], hit, release: r };
    }
    return null;
  }

  async function serve(req: Request, spec: CacheRequest): Promise<Response> {
    return plain(await ctx.cache.serve(req, spec));
  }

  /** Serves an index the Release lists, under its by-hash key (one generation, verified). */
  async function serveListed(req: Request, indexPath: string, file: ReleaseFile, upstreamByHash: string | undefined): Promise<Response> {
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
    /** Serves with `upstream`; a Packages/Sources index that was served is queued for its pool hashes, fetched the same way. */
    const attempt = async (upstream: string): Promise<Response> => {
      const s = { ...spec, upstreamUrl: upstream };
      const res = await serve(req, s);
      if (INDEX_KINDS[stem] && compression) poolHashes.add(s, INDEX_KINDS[stem], compression);
      return res;
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

  async function serveRelease(req: Request, p: Extract<AptPath, { kind: "release" }>): Promise<Response> {
    if (p.file !== "Release.gpg") return serve(req, releaseSpec(p.dir, p.file));
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

  return {
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

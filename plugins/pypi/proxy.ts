/**
 * PyPI proxy repository: simple index (PEP 503 HTML / PEP 691 JSON, negotiated), files and `.metadata` through the
 * cache with sha256 verification, and Warehouse's JSON API, all read through an upstream PEP 503 index.
 *
 * Layout under the repository mount (`simplePrefix` = `simple/` natively, `""` for seed-style `backends:`):
 * ```
 * <simplePrefix>                     root index            cache key simple/           (+ #json, #html, #text-html)
 * <simplePrefix><project>/           project page          cache key simple/<project>/ (+ #json, #html, #text-html)
 * files/<upstream file URL path>     wheel / sdist         cache key files/<path>      (immutable, sha256-verified)
 * files/<…>.metadata, files/<…>.asc  PEP 658 metadata, signature (only when the page advertised them)
 * pypi/<project>[/<version>]/json    Warehouse JSON API    cache key pypi/<…>/json#<hash of public URL + file hosts>
 * ```
 * The snapshot entry (`simple/<project>/`) holds the parsed upstream page; each representation is rendered from it
 * once per snapshot and stored as pre-built bytes, tagged with the snapshot's digest.
 */
import {
  VaultError,
  errors,
  type CacheRequest,
  type ArtifactEntry,
  type PluginContext,
  type RepositoryConfig,
} from "../../core/plugin.ts";
import { isNormalized, isValidName, isValidVersion, normalizeName, projectCandidates } from "./names.ts";
import { CONTENT_TYPES, negotiate, type Representation } from "./negotiate.ts";
import { pathProblem } from "./paths.ts";
import { SNAPSHOT_CONTENT_TYPE, SimpleParseError, UPSTREAM_ACCEPT, filesPathOf, type FileLink } from "./simple.ts";
import { pypiSimple, type PypiTaskInput, type PypiTaskOutput } from "./task.ts";
import { badUpstreamPage, fileNotListed, methodNotAllowed, noRoute, notAcceptable, uploadsNotAllowed } from "./errors.ts";
import type { PypiService } from "./site.ts";

/** Keys a pypi repository entry may carry besides the core ones (validated by the plugin's configSchema). */
export interface PypiRepoConfig extends RepositoryConfig {
  /**
   * Path of the simple index below the mount: `simple/` (default; pip's index URL is `/<name>/simple/`) or `""`
   * (seed layout: `GET /<prefix>/<project>/`).
   */
  simplePrefix?: string;
  /** Origins whose file links are rewritten to the vault and may be fetched through it (default: the upstream's origin, plus files.pythonhosted.org for pypi.org). */
  fileHosts?: string[];
  /** Base URL of Warehouse's JSON API (default: the upstream with its trailing `simple/` replaced by `pypi/`; none otherwise). */
  jsonApiUrl?: string;
  /** Freshness of the root project list, seconds (default 86400: it is huge upstream and rarely needed). */
  indexTtlSeconds?: number;
  /** hosted: largest file accepted by an upload, bytes (default 100 MiB); larger uploads answer 413. */
  maxUploadBytes?: number;
}

/** Default upstream index. */
export const PYPI_DEFAULT_UPSTREAM = "https://pypi.org/simple/";


/** Most file links remembered in memory per repository (older ones are found again through the snapshots). */
const MAX_LINKS = 200_000;

/** The effective settings of one pypi proxy repository. */
export interface ResolvedPypiConfig {
  /** Upstream simple index URL, with trailing slash. */
  upstreamBase: string;
  /** `simple/` or `""` (always ends with `/` when non-empty). */
  simplePrefix: string;
  /** Allowed file origins (`https://host[:port]`). */
  fileOrigins: string[];
  /** Warehouse JSON API base with trailing slash, or undefined. */
  jsonApiBase?: string;
  /** Project page freshness, seconds (undefined ⇒ the engine's default from the cache policy). */
  ttlSeconds?: number;
  indexTtlSeconds: number;
}

/** Applies defaults to a repository entry (see {@link PypiRepoConfig}). */
export function resolvePypiConfig(c: PypiRepoConfig): ResolvedPypiConfig {
  let upstreamBase = c.upstream ?? PYPI_DEFAULT_UPSTREAM;
  if (!upstreamBase.endsWith("/")) upstreamBase += "/";
  const up = new URL(upstreamBase);
  let sp = c.simplePrefix ?? "simple/";
  sp = sp.replace(/^\/+/, "");
  if (sp !== "" && !sp.endsWith("/")) sp += "/";
  const origins = c.fileHosts?.length
    ? c.fileHosts.map((h) => new URL(h).origin)
    : up.hostname === "pypi.org"
      ? [up.origin, "https://files.pythonhosted.org"]
      : [up.origin];
  let jsonApiBase = c.jsonApiUrl;
  if (jsonApiBase === undefined && /\/simple\/$/.test(up.pathname)) jsonApiBase = new URL("../pypi/", upstreamBase).href;
  if (jsonApiBase !== undefined && !jsonApiBase.endsWith("/")) jsonApiBase += "/";
  return {
    upstreamBase,
    simplePrefix: sp,
    fileOrigins: [...new Set(origins)],
    jsonApiBase,
    ttlSeconds: c.cache?.metadataTtlSeconds,
    indexTtlSeconds: c.indexTtlSeconds ?? 86_400,
  };
}

/**
 * The repository-relative path under which a pypi proxy repository serves an upstream URL: the reverse of the upstream
 * URLs it fetches, for tools given upstream URLs (`vault prefetch`). Tried in this order:
 * - `upstreamBase` itself or `<upstreamBase><project>/` (root index, project page) → `<simplePrefix><rest>`;
 * - `<jsonApiBase><project>[/<version>]/json` (Warehouse JSON API) → `pypi/<rest>`;
 * - anything else on an allowed file host (`fileOrigins`, which include the upstream's own origin by default) →
 *   `files/<URL path>`, as project pages rewrite file links ({@link filesPathOf}); the vault serves such a file once a
 *   project page lists it (it looks the page up itself).
 * A `#fragment` (`#sha256=…`) is ignored.
 * @param url absolute upstream URL
 * @returns the path without leading slash (`""` is the mount root), or undefined when the URL is none of these or its
 *   file path could not be served back
 */
export function pypiPathOf(c: ResolvedPypiConfig, url: string): string | undefined {
  const hash = url.indexOf("#");
  const u = hash === -1 ? url : url.slice(0, hash);
  if (u.startsWith(c.upstreamBase)) {
    const rest = u.slice(c.upstreamBase.length);
    if (rest === "" || /^[^/?]+\/$/.test(rest)) return c.simplePrefix + rest;
  }
  if (c.jsonApiBase !== undefined && u.startsWith(c.jsonApiBase)) {
    const rest = u.slice(c.jsonApiBase.length);
    if (/^[^/?]+\/([^/?]+\/)?json$/.test(rest)) return "pypi/" + rest;
  }
  return filesPathOf(u, new Set(c.fileOrigins));
}

/** URL without userinfo, for error details. */
function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = "";
    u.password = "";
    return u.href;
  } catch {
    return "<invalid url>";
  }
}

/** Bounded in-memory map vault file path → upstream link (insertion-ordered; oldest dropped first). */
class LinkTable {
  private m = new Map<string, FileLink>();
  constructor(private max: number) {}
  get(path: string): FileLink | undefined {
    return this.m.get(path);
  }
  addAll(links: [string, FileLink][]): void {
    for (const [p, l] of links) {
      this.m.delete(p);
      this.m.set(p, l);
    }
    while (this.m.size > this.max) this.m.delete(this.m.keys().next().value!);
  }
}

/** One simple-index document to serve: where its snapshot comes from and how to render it. */
interface DocumentSpec {
  /** Snapshot cache key: `simple/` or `simple/<project>/`. */
  key: string;
  upstreamUrl: string;
  kind: "project" | "index";
  project?: string;
  ttlSeconds?: number;
  /** From the page URL to the repository root (`../../` for `/<repo>/simple/<p>/`). */
  rootHref: string;
}

/**
 * A pypi proxy bound to one repository: `handle(req, mount)` answers every request under a mount; the snapshot and file
 * functions are what a group reads it through (site.ts `PypiService`).
 */
export interface PypiProxy extends PypiService {
  readonly config: ResolvedPypiConfig;
}

/**
 * Creates the request handler of one pypi proxy repository.
 * Errors are thrown as VaultError (the plugin's renderError answers status + text/plain):
 * 400 VAULT_BAD_PATH, 404 VAULT_NOT_FOUND, 405, 406 VAULT_NOT_ACCEPTABLE, 502/503/504 from upstream.
 */
export function createPypiProxy(ctx: PluginContext<PypiRepoConfig>): PypiProxy {
  const c = resolvePypiConfig(ctx.config);
  const sp = c.simplePrefix;
  const spDepth = sp === "" ? 0 : sp.split("/").length - 1;
  const projectRootHref = "../".repeat(spDepth + 1);
  const allowedOrigins = new Set(c.fileOrigins);
  // Snapshots and JSON API documents map file links with the file hosts in force when they were built; a 304
  // revalidation keeps them as they are. The hosts' fingerprint is therefore stored with each of them (the snapshot's
  // content type, the JSON document's key), so documents built under other `fileHosts` are rebuilt, not kept forever.
  const originsTag = new Bun.CryptoHasher("sha256").update([...allowedOrigins].sort().join("\n")).digest("hex").slice(0, 12);
  const snapshotType = `${SNAPSHOT_CONTENT_TYPE}; file-hosts=${originsTag}`;
  const links = new LinkTable(MAX_LINKS);
  /** File hosts already reported as outside `fileHosts` (one warning per host and process). */
  const warnedOrigins = new Set<string>();

  /** Warns once per host when a page links files the vault does not rewrite (clients then bypass the cache). */
  function warnForeign(origins: string[] | undefined, project: string | undefined): void {
    for (const o of origins ?? []) {
      if (warnedOrigins.has(o) || warnedOrigins.size >= 100) continue;
      warnedOrigins.add(o);
      ctx.log.warn("project page links files on a host not in fileHosts: they are left pointing upstream, so clients download them directly, bypassing the vault (add the host to fileHosts to cache them)", {
        fileHost: o,
        project,
      });
    }
  }

  /** Runs a pypi document task inline, or in the pool when the document is big. */
  async function task(input: PypiTaskInput, sizeBytes: number, signal?: AbortSignal): Promise<PypiTaskOutput> {
    if (ctx.pool.offloads(sizeBytes)) return ctx.pool.run<PypiTaskInput, PypiTaskOutput>("pypiSimple", input, { signal });
    return pypiSimple(input);
  }

  function redirect(location: string): Response {
    return new Response(null, { status: 301, headers: { location, "content-length": "0" } });
  }

  function snapshotSpec(d: DocumentSpec): CacheRequest {
    return {
      key: d.key,
      upstreamUrl: d.upstreamUrl,
      class: "mutable",
      ttlSeconds: d.ttlSeconds,
      upstreamHeaders: { accept: UPSTREAM_ACCEPT },
      contentType: snapshotType,
      transform: async (body, upstream) => {
        try {
          const out = await task(
            {
              op: "build",
              body,
              contentType: upstream.headers.get("content-type"),
              pageUrl: upstream.url || d.upstreamUrl,
              kind: d.kind,
              project: d.project,
              fileOrigins: c.fileOrigins,
            },
            body.byteLength,
          );
          warnForeign(out.foreignOrigins, d.project);
          return { body: out.body!, contentType: snapshotType };
        } catch (e) {
          if (e instanceof SimpleParseError || (e instanceof Error && e.name === "SimpleParseError"))
            throw badUpstreamPage(safeUrl(d.upstreamUrl), e.message);
          throw e;
        }
      },
    };
  }

  /** Whether a stored snapshot was built with the current file hosts (see `snapshotType`). */
  function currentSnapshot(e: ArtifactEntry): boolean {
    return e.contentType === snapshotType;
  }

  /**
   * The snapshot entry of a document (fresh, revalidated, or stale when upstream fails); one built under other
   * `fileHosts` is dropped and fetched again. Throws 404 when upstream has none.
   */
  async function snapshot(d: DocumentSpec, signal?: AbortSignal) {
    // Checked before the fetch: a revalidation would keep the old snapshot, and a fetch right after one joins it.
    const old = await ctx.artifacts.get(d.key);
    if (old && old.status === 200 && !currentSnapshot(old)) await ctx.cache.invalidate(d.key);
    const r = await ctx.cache.fetch(snapshotSpec(d), { signal });
    if (r.entry.status !== 200 || !r.entry.blobDigest) throw errors.notFound(d.kind === "index" ? "simple index" : `project ${d.project}`);
    return r;
  }

  /** Serves one representation of a simple document: stored bytes when rendered from the current snapshot, else rendered once and stored. */
  async function serveDocument(req: Request, d: DocumentSpec, rep: Representation): Promise<Response> {
    const { entry: snap, status } = await snapshot(d, req.signal);
    const vkey = `${d.key}#${rep}`;
    let v: ArtifactEntry | null = await ctx.artifacts.get(vkey);
    if (!v || v.status !== 200 || v.headers["x-vault-snapshot"] !== snap.blobDigest) {
      const bytes = await ctx.artifacts.read(snap);
      const out = await task({ op: "render", snapshot: bytes, representation: rep, rootHref: d.rootHref }, bytes.byteLength, req.signal);
      links.addAll(out.links);
      v = await ctx.artifacts.put(vkey, out.body!, {
        contentType: CONTENT_TYPES[rep],
        kind: "metadata",
        headers: { vary: "Accept", "x-vault-snapshot": snap.blobDigest! },
      });
    }
    const maxAge = snap.expiresAt === null ? 0 : Math.max(0, Math.floor((snap.expiresAt - Date.now()) / 1000));
    return ctx.artifacts.respond(req, v, {
      "content-type": CONTENT_TYPES[rep],
      vary: "Accept",
      "cache-control": `max-age=${maxAge}, public`,
      "x-vault-cache": status,
    });
  }

  function projectDoc(name: string): DocumentSpec {
    return { key: `simple/${name}/`, upstreamUrl: c.upstreamBase + name + "/", kind: "project", project: name, ttlSeconds: c.ttlSeconds, rootHref: projectRootHref };
  }

  function chooseRepresentation(req: Request, url: URL): Representation {
    const rep = negotiate(req.headers.get("accept"), url.searchParams.get("format"));
    if (!rep) throw notAcceptable();
    return rep;
  }

  async function projectPage(req: Request, url: URL, mount: string, raw: string, slash: boolean): Promise<Response> {
    if (!isValidName(raw)) throw errors.notFound("project");
    const name = normalizeName(raw);
    if (!slash || !isNormalized(raw)) return redirect(`${mount}/${sp}${name}/${url.search}`);
    return serveDocument(req, projectDoc(name), chooseRepresentation(req, url));
  }

  function indexDoc(): DocumentSpec {
    return { key: "simple/", upstreamUrl: c.upstreamBase, kind: "index", ttlSeconds: c.indexTtlSeconds, rootHref: "../" };
  }

  async function rootIndex(req: Request, url: URL): Promise<Response> {
    return serveDocument(req, indexDoc(), chooseRepresentation(req, url));
  }

  /** Finds the upstream link of a `files/…` path through the cached project pages (and, when none lists it, the page of the likeliest project). */
  async function findLink(path: string, signal?: AbortSignal): Promise<FileLink | undefined> {
    const seg = path.slice(path.lastIndexOf("/") + 1);
    let filename: string;
    try {
      filename = decodeURIComponent(seg);
    } catch {
      return undefined;
    }
    const cands = projectCandidates(filename);
    const uncached: string[] = [];
    for (const p of cands) {
      const e = await ctx.artifacts.get(`simple/${p}/`);
      if (!e || e.status !== 200 || !e.blobDigest || !currentSnapshot(e)) {
        uncached.push(p);
        continue;
      }
      const bytes = await ctx.artifacts.read(e);
      links.addAll((await task({ op: "links", snapshot: bytes }, bytes.byteLength, signal)).links);
      const l = links.get(path);
      if (l) return l;
    }
    for (const p of uncached.slice(0, 2)) {
      let r;
      try {
        r = await snapshot(projectDoc(p), signal);
      } catch (e) {
        if (e instanceof VaultError && e.status === 404) continue;
        throw e;
      }
      const bytes = await ctx.artifacts.read(r.entry);
      links.addAll((await task({ op: "links", snapshot: bytes }, bytes.byteLength, signal)).links);
      const l = links.get(path);
      if (l) return l;
    }
    return undefined;
  }

  async function serveFile(req: Request, rel: string): Promise<Response> {
    const why = pathProblem(rel);
    if (why) throw errors.badPath(rel, why);
    const kind = rel.endsWith(".metadata") ? "metadata" : rel.endsWith(".asc") ? "asc" : "file";
    const base = kind === "metadata" ? rel.slice(0, -9) : kind === "asc" ? rel.slice(0, -4) : rel;
    let link = links.get(base);
    if (!link) {
      const cached = await ctx.artifacts.get(rel);
      if (cached && cached.status === 200 && cached.blobDigest) return ctx.artifacts.respond(req, cached, { "x-vault-cache": "HIT" });
      link = await findLink(base, req.signal);
    }
    if (!link || (kind === "metadata" && !link.coreMetadata) || (kind === "asc" && !link.gpgSig)) throw fileNotListed(rel);
    if (!allowedOrigins.has(new URL(link.url).origin)) throw fileNotListed(rel);
    const spec: CacheRequest = { key: rel, upstreamUrl: link.url, class: "immutable", contentType: "application/octet-stream" };
    if (kind === "file") {
      spec.expect = {};
      if (link.sha256) spec.expect.sha256 = link.sha256;
      if (link.sizeBytes !== undefined) spec.expect.sizeBytes = link.sizeBytes;
    } else {
      const u = new URL(link.url);
      u.pathname += kind === "metadata" ? ".metadata" : ".asc";
      spec.upstreamUrl = u.href;
      if (kind === "metadata" && link.coreMetadata !== true && link.coreMetadata?.sha256) spec.expect = { sha256: link.coreMetadata.sha256 };
      spec.contentType = kind === "metadata" ? "text/plain; charset=utf-8" : "application/pgp-signature";
    }
    return ctx.cache.serve(req, spec);
  }

  async function jsonApi(req: Request, url: URL, mount: string, raw: string, version: string | undefined): Promise<Response> {
    if (!c.jsonApiBase || !isValidName(raw) || (version !== undefined && !isValidVersion(version))) throw errors.notFound("project");
    const name = normalizeName(raw);
    const tail = version !== undefined ? `${version}/json` : "json";
    if (!isNormalized(raw)) return redirect(`${mount}/pypi/${name}/${tail}${url.search}`);
    const repoUrl = ctx.baseUrl(req) + "/";
    const tag = new Bun.CryptoHasher("sha256").update(`${repoUrl}\n${originsTag}`).digest("hex").slice(0, 12);
    const upstreamUrl = `${c.jsonApiBase}${name}/${version !== undefined ? encodeURIComponent(version) + "/" : ""}json`;
    return ctx.cache.serve(req, {
      key: `pypi/${name}/${tail}#${tag}`,
      upstreamUrl,
      class: "mutable",
      ttlSeconds: c.ttlSeconds,
      upstreamHeaders: { accept: "application/json" },
      contentType: "application/json",
      transform: async (body, upstream) => {
        let out: PypiTaskOutput;
        try {
          out = await task({ op: "jsonapi", body, pageUrl: upstream.url || upstreamUrl, fileOrigins: c.fileOrigins, repoUrl }, body.byteLength);
        } catch (e) {
          throw badUpstreamPage(safeUrl(upstreamUrl), e instanceof Error ? e.message : String(e));
        }
        links.addAll(out.links);
        return { body: out.body!, contentType: "application/json" };
      },
    });
  }

  async function handle(req: Request, mount: string): Promise<Response> {
    if (req.method === "POST") throw uploadsNotAllowed("a proxy repository takes no uploads: upload to a hosted repository (or a group with writeTo)");
    if (req.method !== "GET" && req.method !== "HEAD") throw methodNotAllowed(req.method);
    const url = new URL(req.url);
    const pathname = url.pathname;
    if (!pathname.startsWith(mount)) throw noRoute(pathname);
    let rest = pathname.slice(mount.length);
    if (rest === "") return redirect(`${mount}/${url.search}`);
    if (!rest.startsWith("/")) throw noRoute(pathname);
    rest = rest.slice(1);
    if (rest !== "") {
      const why = pathProblem(rest, true);
      if (why) throw errors.badPath(pathname, why);
    }
    if (rest === sp) return rootIndex(req, url);
    if (sp !== "" && rest === sp.slice(0, -1)) return redirect(`${mount}/${sp}${url.search}`);
    const segs = rest.split("/");
    if (segs[0] === "files" && segs.length >= 2 && segs[segs.length - 1] !== "") return serveFile(req, rest);
    if (segs[0] === "pypi" && segs.length === 3 && segs[2] === "json") return jsonApi(req, url, mount, segs[1], undefined);
    if (segs[0] === "pypi" && segs.length === 4 && segs[3] === "json") return jsonApi(req, url, mount, segs[1], decodeURIComponent(segs[2]));
    if (rest.startsWith(sp)) {
      const p = rest.slice(sp.length).split("/");
      if (p.length === 2 && p[1] === "") return projectPage(req, url, mount, p[0], true);
      if (p.length === 1) return projectPage(req, url, mount, p[0], false);
    }
    throw noRoute(pathname);
  }

  /** The snapshot entry of a document, or null when upstream has none (404/410, also from the negative cache). */
  async function snapshotOrNull(d: DocumentSpec, signal?: AbortSignal): Promise<ArtifactEntry | null> {
    try {
      return (await snapshot(d, signal)).entry;
    } catch (e) {
      if (e instanceof VaultError && e.status === 404) return null;
      throw e;
    }
  }

  return {
    ctx,
    handle,
    config: c,
    projectSnapshot: (project, signal) => snapshotOrNull(projectDoc(project), signal),
    indexSnapshot: (signal) => snapshotOrNull(indexDoc(), signal),
    serveFile,
  };
}

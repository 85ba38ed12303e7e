/**
 * The web UI (DESIGN.md §1) and its JSON API, mounted by the host at `/-/ui/` and `/-/api/` (docs/api.md): repositories,
 * search across formats, package pages with client set-up, cache statistics. Server-rendered HTML (./pages.ts) and
 * JSON from the same views (./views.ts); only repositories the caller may read are shown (HTTP Basic or Bearer
 * credentials as for every repository; anonymous read rules apply). Read-only: GET and HEAD.
 *
 * ```
 * /-/api/repositories                               list
 * /-/api/repositories/<repo>                        one, with client set-up
 * /-/api/repositories/<repo>/packages/<name>        a package's versions and files (name may contain /)
 * /-/api/search?q=&format=&repository=&limit=&offset=
 * /-/api/stats
 * /-/ui/  /-/ui/search  /-/ui/stats  /-/ui/login  /-/ui/repositories/<repo>[/packages/<name>]  /-/ui/static/…
 * ```
 */
import { VaultError, errors, toVaultError } from "../errors.ts";
import type { Db, Logger, PluginContext, Principal, VaultPlugin } from "../plugin.ts";
import { createCatalog, type Catalog, type CatalogRepository, type SearchQuery } from "../search.ts";
import { ANONYMOUS } from "../auth/index.ts";
import { Views } from "./views.ts";
import { errorPage, homePage, layout, packagePage, repositoryPage, searchPage, statsPage, type PageContext } from "./pages.ts";
import { html, type Html } from "./html.ts";
import { ASSETS, ASSET_VERSION } from "./assets.ts";

/** Path prefix of the JSON API. */
export const API_PREFIX = "/-/api";
/** Path prefix of the pages. */
export const UI_PREFIX = "/-/ui";

/** Options of {@link createWebUi}. */
export interface WebUiOptions {
  /** Every repository by name, in config order. */
  repositories: Map<string, CatalogRepository>;
  catalog: Catalog;
  /** Reads the request's credentials (the auth core's `authenticate`). @throws VaultError 401 on bad credentials */
  authenticate(req: Request): Promise<Principal>;
  /** `server.publicUrl`: its path (if any) prefixes the UI's links. */
  publicUrl?: string;
  log: Logger;
}

/** The mounted UI. */
export interface WebUi {
  /** Whether `path` (raw request path) is the UI's or the API's. */
  owns(path: string): boolean;
  /** Answers a request for a path it owns. Never rejects: errors become JSON (API) or HTML (pages) error answers. */
  handle(req: Request, path: string): Promise<Response>;
}

/** Results per page: default and most. */
const DEFAULT_LIMIT = 20;
const MAX_LIMIT = 100;
/** Packages per page on a repository page. */
const BROWSE_LIMIT = 50;
/** Longest search text, characters. */
const MAX_QUERY = 256;

const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "same-origin",
  "x-frame-options": "DENY",
};
/** Pages load only their own stylesheet and script; no inline script, no plugins, no framing, forms post to the vault only. */
const CSP = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
const BASIC_CHALLENGE = 'Basic realm="vault"';

/** Splits the raw rest of a path into decoded segments. @throws VaultError VAULT_BAD_PATH on a malformed escape */
function segmentsOf(rest: string, path: string): string[] {
  if (rest === "") return [];
  try {
    return rest.split("/").map((s) => decodeURIComponent(s));
  } catch {
    throw errors.badPath(path, "malformed percent-encoding");
  }
}

/** An integer query parameter within bounds. @throws VaultError VAULT_BAD_REQUEST */
function intParam(u: URLSearchParams, name: string, dflt: number, min: number, max: number): number {
  const v = u.get(name);
  if (v === null || v === "") return dflt;
  if (!/^\d{1,9}$/.test(v) || Number(v) < min || Number(v) > max) throw new VaultError("VAULT_BAD_REQUEST", 400, `${name} must be an integer from ${min} to ${max}`);
  return Number(v);
}

/** The search parameters of a request. @throws VaultError VAULT_BAD_REQUEST */
function searchQuery(u: URLSearchParams, limitDefault = DEFAULT_LIMIT): SearchQuery {
  const q = u.get("q") ?? "";
  if (q.length > MAX_QUERY) throw new VaultError("VAULT_BAD_REQUEST", 400, `q is longer than ${MAX_QUERY} characters`);
  const format = u.get("format") || undefined;
  const repository = u.get("repository") || undefined;
  return { q, format, repository, limit: intParam(u, "limit", limitDefault, 1, MAX_LIMIT), offset: intParam(u, "offset", 0, 0, 1_000_000_000) };
}

/**
 * Creates the UI over the catalog and the repositories' contexts.
 * @see docs/api.md
 */
export function createWebUi(o: WebUiOptions): WebUi {
  const views = new Views(o.catalog, o.repositories);
  const basePath = o.publicUrl ? new URL(o.publicUrl).pathname.replace(/\/+$/, "") : "";
  const ui = basePath + UI_PREFIX;
  const api = basePath + API_PREFIX;
  const assetUrl = (file: string) => `${ui}/static/${ASSET_VERSION}/${file}`;
  const formats = [...new Set([...o.repositories.values()].map((r) => r.ctx.config.format))].sort();

  const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
    new Response(JSON.stringify(body), {
      status,
      headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store", ...SECURITY_HEADERS, ...headers },
    });

  const page = (status: number, body: Html, headers: Record<string, string> = {}) =>
    new Response(body.value, {
      status,
      headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store", "content-security-policy": CSP, ...SECURITY_HEADERS, ...headers },
    });

  /** The error as `{ "error": { "code", "message" } }` with its status and headers. */
  const apiError = (e: unknown, path: string) => {
    const err = report(e, path);
    return json(err.status, { error: { code: err.code, message: err.message } }, err.headers);
  };

  const report = (e: unknown, path: string): VaultError => {
    const err = toVaultError(e);
    if (err.status >= 500) o.log.error("request failed", { code: err.code, error: err.message, detail: err.detail, path });
    return err;
  };

  const pageContext = (principal: Principal, q?: string): PageContext => ({ ui, api, css: assetUrl("ui.css"), js: assetUrl("ui.js"), principal, q });

  /** The caller, once authenticated (kept for the error page). */
  type Who = { principal: Principal };

  async function handleApi(req: Request, path: string, url: URL, who: Who): Promise<Response> {
    const principal = (who.principal = await o.authenticate(req));
    const rest = path.slice(API_PREFIX.length + 1);
    if (rest === "repositories") return json(200, { repositories: await views.repositoryList(principal, req) });
    if (rest === "search") return json(200, await views.search(principal, searchQuery(url.searchParams)));
    if (rest === "stats") return json(200, await views.stats(principal, req));
    if (rest.startsWith("repositories/")) {
      const segs = segmentsOf(rest.slice("repositories/".length), path);
      if (segs.length === 1 && segs[0] !== "") return json(200, await views.repositoryDetail(principal, req, segs[0]));
      if (segs.length >= 3 && segs[1] === "packages") return json(200, await views.packageDetail(principal, req, segs[0], segs.slice(2).join("/")));
    }
    throw errors.notFound(path);
  }

  async function handlePage(req: Request, path: string, url: URL, who: Who): Promise<Response> {
    const rest = path.slice(UI_PREFIX.length + 1);
    if (rest.startsWith("static/")) return serveAsset(req, rest.slice("static/".length), path);
    const principal = (who.principal = await o.authenticate(req));
    const p = pageContext(principal);
    if (rest === "") return page(200, homePage(p, await views.repositoryList(principal, req)));
    if (rest === "search") {
      const q = searchQuery(url.searchParams);
      return page(200, searchPage(p, await views.search(principal, q), formats, views.readable(principal)));
    }
    if (rest === "stats") return page(200, statsPage(p, await views.stats(principal, req)));
    if (rest === "login") {
      if (principal.userId === null)
        return page(401, layout(p, "Sign in", html`<h1>Sign in</h1><p>Give your vault user name and password (or an API token as the password) when your browser asks.</p>`), { "www-authenticate": BASIC_CHALLENGE });
      const next = url.searchParams.get("next");
      return new Response(null, { status: 303, headers: { location: next && next.startsWith(`${ui}/`) && !next.startsWith("//") ? next : `${ui}/`, "cache-control": "no-store" } });
    }
    if (rest.startsWith("repositories/")) {
      const segs = segmentsOf(rest.slice("repositories/".length), path);
      if (segs.length === 1 && segs[0] !== "") {
        const r = await views.repositoryDetail(principal, req, segs[0]);
        const q = searchQuery(url.searchParams, BROWSE_LIMIT);
        const packages =
          r.type === "group"
            ? { query: { ...q, repository: r.name }, total: 0, truncated: false, results: [] }
            : await views.search(principal, { ...q, format: undefined, repository: r.name });
        return page(200, repositoryPage(p, r, packages));
      }
      if (segs.length >= 3 && segs[1] === "packages") return page(200, packagePage(p, await views.packageDetail(principal, req, segs[0], segs.slice(2).join("/"))));
    }
    throw errors.notFound(path);
  }

  /** `static/<version>/<file>` (immutable) or `static/<file>` (revalidated). */
  function serveAsset(req: Request, rest: string, path: string): Response {
    const slash = rest.indexOf("/");
    const versioned = slash !== -1;
    const name = versioned ? rest.slice(slash + 1) : rest;
    const a = ASSETS.get(name);
    if (!a || (versioned && rest.slice(0, slash) !== ASSET_VERSION)) throw errors.notFound(path);
    const headers = {
      "content-type": a.contentType,
      etag: a.etag,
      "cache-control": versioned ? "public, max-age=31536000, immutable" : "no-cache",
      ...SECURITY_HEADERS,
    };
    const inm = req.headers.get("if-none-match");
    if (inm !== null && inm.split(",").some((t) => t.trim().replace(/^W\//, "") === a.etag)) return new Response(null, { status: 304, headers });
    return new Response(a.body, { headers });
  }

  return {
    owns: (path) => path === UI_PREFIX || path.startsWith(UI_PREFIX + "/") || path === API_PREFIX || path.startsWith(API_PREFIX + "/"),

    async handle(req, path) {
      const isApi = path === API_PREFIX || path.startsWith(API_PREFIX + "/");
      if (path === UI_PREFIX) return new Response(null, { status: 301, headers: { location: `${ui}/` } });
      const who: Who = { principal: ANONYMOUS };
      try {
        if (req.method !== "GET" && req.method !== "HEAD")
          throw new VaultError("VAULT_METHOD_NOT_ALLOWED", 405, `${req.method} is not allowed here`, {}, { allow: "GET, HEAD" });
        const url = new URL(req.url);
        return isApi ? await handleApi(req, path, url, who) : await handlePage(req, path, url, who);
      } catch (e) {
        if (isApi) return apiError(e, path);
        const err = report(e, path);
        return page(err.status, errorPage(pageContext(who.principal), err.status, err.message), err.headers);
      }
    },
  };
}

/** What {@link createHostUi} needs from the host (core/server.ts). */
export interface HostUiParts {
  db: Db;
  /** Plugin contexts by repository name, in config order. */
  contexts: Map<string, PluginContext>;
  plugins: Map<string, VaultPlugin>;
  /** Every repository's artifact store: their batched hit counts are flushed before counts are read. */
  artifacts: { repository: string; flush(): Promise<void> }[];
  authenticate(req: Request): Promise<Principal>;
  publicUrl?: string;
  log: Logger;
}

/** The UI of a vault: the catalog (core/search.ts) over its database and repositories, and {@link createWebUi} on it. */
export function createHostUi(h: HostUiParts): WebUi {
  const repositories = new Map<string, CatalogRepository>();
  for (const [name, ctx] of h.contexts) {
    const plugin = h.plugins.get(ctx.config.format);
    if (plugin) repositories.set(name, { ctx, plugin });
  }
  const catalog = createCatalog({
    db: h.db,
    repositories,
    flushHits: async (names) => {
      const want = new Set(names);
      await Promise.all(h.artifacts.filter((a) => want.has(a.repository)).map((a) => a.flush()));
    },
  });
  return createWebUi({ repositories, catalog, authenticate: h.authenticate, publicUrl: h.publicUrl, log: h.log });
}

/**
 * Request routing of the registry API (DESIGN.md §1 addressing, specs/oci.md §2): parses `/v2/…`, resolves the name
 * to a vault repository and image, authorizes the action (token flow), and calls the repository's service. One
 * {@link Addressing} per way of reaching the API: the host's `/v2/<repo>/<image>/…` (first component = repository,
 * else the `root: true` repository), a repository's own mount `/<repo>/v2/<image>/…` (containerd), its own port.
 */
import type { PluginContext, Principal } from "../../core/plugin.ts";
import { VaultError } from "../../core/plugin.ts";
import { API_VERSION, API_VERSION_HEADER, ociError, renderOciError } from "./errors.ts";
import { bearerChallenge } from "./auth-challenge.ts";
import { isValidName, parseApiPath, parseReference, splitFirst } from "./name.ts";
import { parseDigest } from "./digest.ts";
import { jsonReply, linkHeader, paginate, parsePage, referrersReply, sortUnique } from "./reply.ts";
import { authorize, callerMay, parseScopes, tokenEndpoint, tokenGrants, type AccessNeed, type RealmInfo, type RegistryAction, type ResolvedName } from "./token.ts";
import type { ImageRef, MountRequest, RegistryService } from "./types.ts";

/** One way of reaching the registry API. */
export interface Addressing {
  /** URL path of the API root as clients use it, no trailing slash: `/v2`, `/<repo>/v2`, `/<prefix>` (seed layout). */
  api: string;
  /** Maps a repository name (as the client wrote it) to a vault repository and image, or null. */
  resolve(name: string): ResolvedName | null;
  /** Token realm and service for challenges (built from the request's origin or `server.publicUrl`). */
  realm(req: Request): RealmInfo;
  /** Repositories listed by `_catalog`, with how their images are named in this addressing. */
  catalog: { ctx: PluginContext; display(image: string): string }[];
  /** Looks up the service of a repository. */
  serviceOf(ctx: PluginContext): RegistryService;
}

const ANONYMOUS: Principal = Object.freeze({ userId: null, name: "anonymous", isAdmin: false, via: "anonymous" as const });
const NS_RE = /^[A-Za-z0-9.-]{1,253}(?::\d{1,5})?$/;

/** The raw path (no query) and query string of a request URL, without building a URL object. */
export function splitUrl(url: string): { path: string; query: string } {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start === -1) return { path: "/", query: "" };
  const q = url.indexOf("?", start);
  return q === -1 ? { path: url.slice(start), query: "" } : { path: url.slice(start, q), query: url.slice(q + 1) };
}

/** The registry action (token scope) a route kind + method needs; null when the method is not allowed there. */
function actionFor(kind: string, method: string): RegistryAction | null {
  const read = method === "GET" || method === "HEAD";
  switch (kind) {
    case "manifest":
      return read ? "pull" : method === "PUT" ? "push" : method === "DELETE" ? "delete" : null;
    case "blob":
      return read ? "pull" : method === "DELETE" ? "delete" : null;
    case "uploads":
      return method === "POST" || method === "PATCH" || method === "PUT" || read || method === "DELETE" ? "push" : null;
    case "tags":
    case "referrers":
      return read ? "pull" : null;
    default:
      return null;
  }
}

function withApiHeader(res: Response): Response {
  if (res.headers.has(API_VERSION_HEADER)) return res;
  try {
    res.headers.set(API_VERSION_HEADER, API_VERSION);
    return res;
  } catch {
    const r = new Response(res.body, res);
    r.headers.set(API_VERSION_HEADER, API_VERSION);
    return r;
  }
}

/**
 * Answers one registry API request. `rest` is the raw path after the API root (`""` for the base endpoint).
 * Every error is rendered as OCI JSON; 5xx are logged with the logger of the repository the name resolved to (else `log`).
 */
export async function handleApi(req: Request, rest: string, query: string, a: Addressing, log: PluginContext["log"]): Promise<Response> {
  const resolved: { ctx?: PluginContext } = {};
  try {
    return withApiHeader(await dispatch(req, rest, query, a, resolved));
  } catch (e) {
    if (resolved.ctx) log = resolved.ctx.log;
    let err = e instanceof VaultError ? e : new VaultError("VAULT_INTERNAL", 500, "internal error", { cause: e instanceof Error ? e.message : String(e) });
    if (err.status >= 500 && req.signal.aborted) {
      // The client went away mid-request (a push cancelled during a PATCH/PUT body): not a server fault. The upload
      // session is left as it was before the request; answer (to nobody) as a bad upload, for the access log and metrics.
      log.info("registry client disconnected", { method: req.method, path: splitUrl(req.url).path });
      err = ociError("BLOB_UPLOAD_INVALID", "the client closed the connection before the body ended");
    } else if (err.status >= 500) log.error("registry request failed", { code: err.code, error: err.message, detail: err.detail, method: req.method, path: splitUrl(req.url).path });
    return renderOciError(err, req);
  }
}

/** Parses the path, resolves the name, authorizes the action and calls the service (specs/oci.md §2 endpoint table). */
async function dispatch(req: Request, rest: string, query: string, a: Addressing, resolved: { ctx?: PluginContext }): Promise<Response> {
  const route = parseApiPath(rest);
  if (!route) throw ociError("NAME_UNKNOWN", "no such registry endpoint", {}, {}, 404);
  const method = req.method;
  if (route.kind === "base") {
    if (method !== "GET" && method !== "HEAD") throw ociError("UNSUPPORTED", `${method} not allowed`);
    return base(req, a);
  }
  if (route.kind === "catalog") {
    if (method !== "GET" && method !== "HEAD") throw ociError("UNSUPPORTED", `${method} not allowed`);
    return catalog(req, a);
  }
  const target = a.resolve(route.name);
  if (!target) throw ociError("NAME_UNKNOWN", "repository name not known to registry", { name: route.name });
  resolved.ctx = target.ctx;
  const svc = a.serviceOf(target.ctx);
  const action = actionFor(route.kind, method);
  if (!action) throw ociError("UNSUPPORTED", `${method} not allowed here`);
  const params = query ? new URLSearchParams(query) : null;
  const nsParam = params?.get("ns") ?? null;
  const ns = nsParam && NS_RE.test(nsParam) && target.ctx.repo.type !== "hosted" ? nsParam : null;
  const t: ImageRef = { name: route.name, image: target.image, api: a.api, ns };
  const needs: AccessNeed[] = [{ target, name: route.name, action }];
  const caller = await authorize(req, needs, a.realm(req));

  switch (route.kind) {
    case "manifest": {
      const ref = parseReference(route.reference);
      if (method === "PUT") return svc.putManifest(req, t, ref, caller);
      if (method === "DELETE") return svc.deleteManifest(req, t, ref, caller);
      return svc.getManifest(req, t, ref);
    }
    case "blob":
      if (method === "DELETE") return svc.deleteBlob(req, t, route.digest, caller);
      return svc.getBlob(req, t, route.digest);
    case "uploads": {
      if (route.id !== null) return svc.upload(req, t, route.id, caller);
      if (method !== "POST") throw ociError("UNSUPPORTED", `${method} not allowed on the uploads endpoint`);
      let mount: MountRequest | null = null;
      const m = params?.get("mount");
      if (m) {
        const from = params?.get("from") ?? "";
        const src = from && isValidName(from) ? a.resolve(from) : null;
        mount = { digest: m, from: src, allowed: src !== null && callerMay(caller, src, "pull") };
      }
      return svc.startUpload(req, t, caller, mount);
    }
    case "tags": {
      const page = parsePage(new URL(req.url));
      const all = await svc.tags(t);
      if (all === null) throw ociError("NAME_UNKNOWN", "repository name not known to registry", { name: route.name });
      const { items, next } = paginate(all, page);
      const headers: Record<string, string> = {};
      if (next !== undefined && page.n !== undefined) headers.link = linkHeader(`${a.api}/${route.name}/tags/list`, page.n, next);
      if (ns) headers["oci-namespace"] = ns;
      return jsonReply(req, { name: route.name, tags: items }, 200, headers);
    }
    case "referrers": {
      const d = parseDigest(route.digest);
      const list = await svc.referrers(t, d.value);
      if (list === null) throw ociError("MANIFEST_UNKNOWN", "referrers unknown", { digest: d.value });
      return referrersReply(req, list, params?.get("artifactType") ?? null, ns ? { "oci-namespace": ns } : undefined);
    }
  }
}

/** `GET /v2/`: 200 `{}` to authenticated callers; 401 with our Bearer challenge otherwise (docker login probes this). */
async function base(req: Request, a: Addressing): Promise<Response> {
  const realm = a.realm(req);
  const h = req.headers.get("authorization");
  const challenge = (error?: string) => ({ "www-authenticate": bearerChallenge(realm.realm, realm.service, undefined, error) });
  if (!h) throw ociError("UNAUTHORIZED", "authentication required", {}, challenge());
  const auth = a.catalog[0]?.ctx.auth;
  if (!auth) throw ociError("UNAUTHORIZED", "authentication required", {}, challenge());
  try {
    const cred = h.slice(h.indexOf(" ") + 1).trim();
    if (/^bearer /i.test(h) && /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(cred)) auth.verifyToken!(cred);
    else await auth.authenticate(req);
  } catch (e) {
    if (e instanceof VaultError && e.status === 401) throw ociError("UNAUTHORIZED", e.message, {}, challenge("invalid_token"));
    throw e;
  }
  return jsonReply(req, {});
}

/** `GET /v2/_catalog` with `n`/`last`/`Link` (Docker extension): the images of every repository the caller may read. */
async function catalog(req: Request, a: Addressing): Promise<Response> {
  const realm = a.realm(req);
  const auth = a.catalog[0]?.ctx.auth;
  const h = req.headers.get("authorization");
  let principal: Principal = ANONYMOUS;
  const challenge = (error?: string) => ({ "www-authenticate": bearerChallenge(realm.realm, realm.service, "registry:catalog:*", error) });
  if (h && auth) {
    const cred = h.slice(h.indexOf(" ") + 1).trim();
    const jwt = /^bearer /i.test(h) && /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(cred);
    try {
      if (jwt && !tokenGrants(auth.verifyToken!(cred), "registry", "catalog", "*")) principal = ANONYMOUS;
      else principal = await auth.authenticate(req);
    } catch (e) {
      if (e instanceof VaultError && e.status === 401) throw ociError("UNAUTHORIZED", e.message, {}, challenge("invalid_token"));
      throw e;
    }
    if (jwt && principal.userId === null && !tokenGrants(auth.verifyToken!(cred), "registry", "catalog", "*"))
      throw ociError("UNAUTHORIZED", "token does not grant the catalog", {}, challenge("insufficient_scope"));
  }
  const readable = a.catalog.filter((c) => c.ctx.auth.can(principal, "read"));
  if (readable.length === 0 && principal.userId === null) throw ociError("UNAUTHORIZED", "authentication required", {}, challenge());
  const names: string[] = [];
  for (const c of readable) for (const img of await a.serviceOf(c.ctx).images()) names.push(c.display(img));
  const page = parsePage(new URL(req.url));
  const { items, next } = paginate(sortUnique(names), page);
  const headers: Record<string, string> = {};
  if (next !== undefined && page.n !== undefined) headers.link = linkHeader(`${a.api}/_catalog`, page.n, next);
  return jsonReply(req, { repositories: items }, 200, headers);
}

/** Answers the token endpoint of an addressing (`/token` at the root, `/<repo>/token`). */
export async function handleToken(req: Request, a: Addressing, log: PluginContext["log"]): Promise<Response> {
  try {
    const auth = a.catalog[0]?.ctx.auth;
    if (!auth) throw ociError("NAME_UNKNOWN", "no OCI repositories");
    const realm = a.realm(req);
    return await tokenEndpoint(req, {
      auth,
      resolve: (name) => (isValidName(name) ? a.resolve(name) : null),
      catalogRepos: a.catalog.map((c) => c.ctx),
      service: realm.service,
    });
  } catch (e) {
    const err = e instanceof VaultError ? e : new VaultError("VAULT_INTERNAL", 500, "internal error", { cause: e instanceof Error ? e.message : String(e) });
    if (err.status >= 500) log.error("token request failed", { code: err.code, error: err.message });
    return renderOciError(err, req);
  }
}

/**
 * The host addressing (`/v2/<repo>/<image>/…`, `/token`): the first name component chooses the repository; names
 * whose first component is no OCI repository go to the `root: true` repository, if any.
 * @param origin the public origin of the host for a request (no trailing slash)
 */
export function hostAddressing(ctxs: PluginContext[], origin: (req: Request) => string, serviceOf: (ctx: PluginContext) => RegistryService): Addressing {
  const byName = new Map(ctxs.map((c) => [c.repo.name, c]));
  const root = ctxs.find((c) => c.config.root === true);
  return {
    api: "/v2",
    resolve(name) {
      const { first, rest } = splitFirst(name);
      const c = byName.get(first);
      if (c && rest !== null) return { ctx: c, image: rest };
      if (root) return { ctx: root, image: name };
      return null;
    },
    realm(req) {
      const o = origin(req);
      return { realm: `${o}/token`, service: hostOf(o) };
    },
    catalog: ctxs.map((c) => ({ ctx: c, display: (img: string) => `${c.repo.name}/${img}` })),
    serviceOf,
  };
}

/**
 * The vault repository a request to the host addressing names, without answering it (VaultPlugin.repositoryOf: metrics
 * and the access log): `/v2/<name>/…` → the repository `<name>` resolves to (its first component, else the `root: true`
 * repository); `/token` → the first `scope=repository:<name>:…` query parameter that resolves. Scopes sent only in a
 * POST form body are not seen (the body is the endpoint's).
 * @returns the repository name; undefined for `/v2/`, `/v2/_catalog`, malformed paths and names nothing resolves
 */
export function hostRepositoryOf(req: Request, a: Pick<Addressing, "resolve">): string | undefined {
  const { path, query } = splitUrl(req.url);
  if (path === "/token") {
    if (!query.includes("scope=")) return undefined;
    for (const s of parseScopes(new URLSearchParams(query).getAll("scope"))) {
      if (s.type !== "repository" || !isValidName(s.name)) continue;
      const r = a.resolve(s.name);
      if (r) return r.ctx.repo.name;
    }
    return undefined;
  }
  if (!path.startsWith("/v2/")) return undefined;
  let route;
  try {
    route = parseApiPath(path.slice(4));
  } catch {
    return undefined; // NAME_INVALID: no repository to speak of
  }
  if (route === null || !("name" in route)) return undefined;
  return a.resolve(route.name)?.ctx.repo.name;
}

/** A repository's own addressing (`<mount>/<apiPrefix>…`, `<mount>/token`): names are images of that repository. */
export function repoAddressing(ctx: PluginContext, api: string, serviceOf: (ctx: PluginContext) => RegistryService): Addressing {
  return {
    api,
    resolve: (name) => ({ ctx, image: name }),
    realm(req) {
      const b = ctx.baseUrl(req);
      return { realm: `${b}/token`, service: hostOf(b) };
    },
    catalog: [{ ctx, display: (img: string) => img }],
    serviceOf,
  };
}

function hostOf(url: string): string {
  const i = url.indexOf("//");
  const rest = i === -1 ? url : url.slice(i + 2);
  const j = rest.indexOf("/");
  return j === -1 ? rest : rest.slice(0, j);
}

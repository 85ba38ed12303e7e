/**
 * What the npm repository types share: the service interface a group reads its members through, the routing of every
 * request below a mount (specs/npm.md §2) onto it, the login routes (legacy `npm login`, `npm whoami`, logout: on the
 * auth core, never creating users), and small helpers (pool dispatch, the tag of a public URL, answers of stored
 * packuments).
 */
import { VaultError, errors, readBodyLimited, type Action, type ArtifactEntry, type PluginContext, type Principal, type RepositoryConfig } from "../../core/plugin.ts";
import { parseNpmPath, type NpmRoute } from "./names.ts";
import { npmPackument, type NpmTaskInput, type NpmTaskOutput } from "./task.ts";
import type { Variant } from "./documents.ts";
import { npmErrors } from "./errors.ts";

/** Keys an npm repository entry may carry besides the core ones (plugins/npm/index.ts `npmConfigSchema`). */
export interface NpmRepoConfig extends RepositoryConfig {
  /** hosted: largest tarball a publish may carry, bytes (default {@link DEFAULT_MAX_UPLOAD_BYTES}). */
  maxUploadBytes?: number;
  /** Lifetime of tokens `npm login` creates, seconds (default: no expiry). */
  loginTokenTtlSeconds?: number;
}

/** Default `maxUploadBytes`: 100 MiB of tarball. */
export const DEFAULT_MAX_UPLOAD_BYTES = 100 * 1024 * 1024;

/** Media type of abbreviated packuments (specs/npm.md §3). */
export const ABBREVIATED = "application/vnd.npm.install-v1+json";

/** Content-Type of each packument variant. */
export const VARIANT_CONTENT_TYPE: Record<Variant, string> = { abbrev: ABBREVIATED, full: "application/json" };

/** Which packument variant a client `Accept` header asks for: abbreviated when it names the install-v1 type. */
export function variantOf(accept: string | null): Variant {
  return accept !== null && accept.toLowerCase().includes(ABBREVIATED) ? "abbrev" : "full";
}

/** Who writes, as the repository the request addressed sees them. */
export interface Actor {
  principal: Principal;
  /** Throws 401 (anonymous, with a challenge) or 403 unless the principal may do `action` on the addressed repository. */
  need(action: Action): void;
  /** The group a write came through, for the audit log. */
  via?: string;
}

/** The write operations of a hosted repository (also reached through a group's `writeTo`). Each throws VaultError. */
export interface NpmWrites {
  /** `GET <name>?write=true`: the current full document, read from the database (never a cached rendering). */
  writeDoc(req: Request, name: string): Promise<Response>;
  /** `PUT <name>[/-rev/<rev>]`: a publish (with `_attachments`) or a document update (deprecate, unpublish a version). */
  put(req: Request, actor: Actor, name: string): Promise<Response>;
  /** `DELETE <name>/-rev/<rev>`: unpublishes the whole package (delete permission). */
  unpublish(req: Request, actor: Actor, name: string): Promise<Response>;
  /** `DELETE <name>/-/<file>/-rev/<rev>`: removes one tarball and its version (delete permission). */
  deleteTarball(req: Request, actor: Actor, name: string, file: string): Promise<Response>;
  /** `PUT -/package/<name>/dist-tags/<tag>` with a JSON string body: points a tag at a version (write). */
  setTag(req: Request, actor: Actor, name: string, tag: string): Promise<Response>;
  /** `DELETE -/package/<name>/dist-tags/<tag>` (write). */
  removeTag(req: Request, actor: Actor, name: string, tag: string): Promise<Response>;
}

/**
 * One npm repository as the plugin (and a group reading its members) sees it, whatever its type. Created once per
 * repository (index.ts `serviceOf`), shared by its mounts.
 */
export interface NpmService {
  readonly ctx: PluginContext<NpmRepoConfig>;
  /** Answers `GET/HEAD <name>` with the packument variant (negotiated by the caller). Throws 404 when there is none. */
  servePackument(req: Request, name: string, variant: Variant): Promise<Response>;
  /**
   * The stored packument variant for this request's public URL (`ctx.baseUrl(req)`), for groups and derived answers
   * (dist-tags, one version).
   * @returns null when the repository has no such package
   * @throws VaultError for upstream failures without a stale copy (502/503/504)
   */
  packument(req: Request, name: string, variant: Variant): Promise<ArtifactEntry | null>;
  /**
   * Answers GET/HEAD of a tarball this repository lists (a proxy fetches it, verified while streaming).
   * @returns null when no version of the package lists `file`
   */
  tarball(req: Request, name: string, file: string): Promise<Response | null>;
  /** Hosted repositories (and groups with `writeTo`, through their member). */
  writes?(): NpmWrites | undefined;
  /** `-/ping` and `-/v1/search` answered by the upstream (proxies). */
  passthrough?(req: Request, path: string, url: URL): Promise<Response>;
  /** Called by the plugin's `start` hook. */
  start?(): Promise<void>;
  /** Hosted: unpublishes one version for retention (the plugin's `deleteVersion`); paths removed and their bytes. */
  removeVersion?(name: string, version: string): Promise<{ paths: string[]; bytes: number }>;
  /** Hosted: brings the documents of imported packages in line with their version records (the plugin's `afterImport`). */
  afterImport?(names: string[]): Promise<void>;
}

/** Runs the npm task inline, or in the worker pool when `sizeBytes` is over the offload threshold. */
export function runTask(ctx: PluginContext, input: NpmTaskInput, sizeBytes: number, o: { signal?: AbortSignal; transfer?: ArrayBuffer[] } = {}): Promise<NpmTaskOutput> {
  if (ctx.pool.offloads(sizeBytes)) return ctx.pool.run<NpmTaskInput, NpmTaskOutput>("npmPackument", input, o);
  try {
    return Promise.resolve(npmPackument(input));
  } catch (e) {
    return Promise.reject(e);
  }
}

const urlTags = new Map<string, string>();

/**
 * A short tag (12 hex of sha256) of a public repository URL: stored packument renderings carry it in their key
 * (`<name>#<variant>#<tag>`), so documents with absolute tarball URLs for one public URL are never served under another.
 */
export function tagOf(base: string): string {
  let t = urlTags.get(base);
  if (!t) {
    t = new Bun.CryptoHasher("sha256").update(base).digest("hex").slice(0, 12);
    if (urlTags.size < 1000) urlTags.set(base, t);
  }
  return t;
}

/**
 * Answers a stored packument rendering of package `name` (hosted, group): its bytes with the variant's Content-Type,
 * `Vary: Accept`, `Cache-Control: no-cache` (npm revalidates with the strong ETag and gets 304s, and sees new versions
 * at once), Range and conditionals as `ArtifactStore.respond` does them.
 * @throws VaultError 404 when `entry` is null (no such package)
 */
export async function respondPackument(ctx: PluginContext, req: Request, name: string, variant: Variant, entry: ArtifactEntry | null): Promise<Response> {
  if (!entry) throw errors.notFound(`package ${name}`);
  return ctx.artifacts.respond(req, entry, { "content-type": VARIANT_CONTENT_TYPE[variant], vary: "Accept", "cache-control": "no-cache" });
}

/**
 * The row at exactly `path`, read from the database (not from the store's in-memory entries, which may be up to a few
 * seconds behind writes of another process sharing the data directory). Null when absent or not a stored file.
 */
export async function freshEntry(ctx: PluginContext, path: string): Promise<ArtifactEntry | null> {
  const [e] = await ctx.artifacts.list(path, { limit: 1 });
  return e && e.path === path && e.status === 200 && e.blobDigest ? e : null;
}

/** The actor of a write request on the repository `ctx` (credentials checked now; permission by `need`). */
async function actorOf(ctx: PluginContext, req: Request): Promise<Actor> {
  const principal = await ctx.auth.authenticate(req);
  return {
    principal,
    need(action) {
      if (ctx.auth.can(principal, action)) return;
      if (principal.userId === null) throw errors.unauthorized();
      throw errors.forbidden(action, ctx.repo.name);
    },
    via: ctx.repo.type === "group" ? ctx.repo.name : undefined,
  };
}

/** Largest `npm login` body, bytes. */
const MAX_LOGIN_BYTES = 64 * 1024;

/**
 * `PUT -/user/org.couchdb.user:<user>` (legacy `npm login`/`npm adduser`, specs/npm.md §6): checks the body's name and
 * password against the vault's users and answers 201 `{ok, id, token}` with a new API token. Unknown users and wrong
 * passwords both answer 401 (users are never created here).
 */
async function login(ctx: PluginContext<NpmRepoConfig>, req: Request, user: string): Promise<Response> {
  const raw = await readBodyLimited(req, MAX_LOGIN_BYTES, () => npmErrors.tooLarge(MAX_LOGIN_BYTES));
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder().decode(raw));
  } catch {
    throw npmErrors.badRequest("the login body is not JSON");
  }
  const b = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
  if (b.name !== user) throw npmErrors.badRequest(`the body's name must be the user of the URL (${user})`);
  if (typeof b.password !== "string" || b.password === "") throw npmErrors.badRequest("a password is required");
  if (!ctx.auth.verifyPassword || !ctx.auth.createToken) throw new VaultError("VAULT_INTERNAL", 500, "this host's auth service has no login support");
  let principal: Principal;
  try {
    principal = await ctx.auth.verifyPassword(user, b.password);
  } catch (e) {
    if (e instanceof VaultError && e.status === 401) throw npmErrors.badLogin();
    throw e;
  }
  const ttl = ctx.config.loginTokenTtlSeconds;
  const t = await ctx.auth.createToken(principal, { name: `npm login (${ctx.repo.name})`, ...(ttl ? { expiresInSeconds: ttl } : {}) });
  ctx.auth.audit({ principal, action: "npm.login", detail: { tokenId: t.id }, req });
  return Response.json({ ok: true, id: `org.couchdb.user:${user}`, rev: "1", token: t.token }, { status: 201 });
}

/** `DELETE -/user/token/<token>` (`npm logout`): revokes the token when it is the caller's (or the caller is an admin). */
async function logout(ctx: PluginContext, req: Request, token: string): Promise<Response> {
  const principal = await ctx.auth.authenticate(req);
  if (principal.userId === null) throw errors.unauthorized();
  const ok = ctx.auth.revokeToken ? await ctx.auth.revokeToken(principal, token) : false;
  if (!ok) throw errors.notFound("token");
  ctx.auth.audit({ principal, action: "npm.logout", req });
  return Response.json({ ok: true });
}

const READ = "GET, HEAD";

/**
 * Routes one request below `mount` onto a service (the table of specs/npm.md §2; plugins/npm/README.md "Routes").
 * Reads answer through the service; writes through its `writes()` (405 when it has none), with the caller
 * authenticated here and permission checked per operation. Throws VaultError (rendered by the plugin's renderError):
 * 400 bad path or body, 401, 403, 404, 405, 409, 413, upstream 5xx.
 */
export async function routeNpm(req: Request, mount: string, svc: NpmService): Promise<Response> {
  const ctx = svc.ctx;
  const url = new URL(req.url);
  const pathname = url.pathname;
  if (!pathname.startsWith(mount + "/")) throw errors.notFound("route");
  const r: NpmRoute | "bad" | undefined = parseNpmPath(pathname.slice(mount.length + 1));
  if (r === "bad") throw errors.badPath(pathname, "not a valid npm package, version, tag or tarball path");
  if (r === undefined) throw errors.notFound("route");
  const m = req.method;
  const read = m === "GET" || m === "HEAD";
  const writes = () => {
    const w = svc.writes?.();
    if (!w) throw npmErrors.readOnly(m, `${ctx.repo.type === "group" ? "this group has no writeTo member" : `a ${ctx.repo.type} repository takes no writes`}: publish to a hosted repository`);
    return w;
  };
  switch (r.kind) {
    case "ping":
    case "search":
      if (!read) throw npmErrors.method(m, READ);
      if (svc.passthrough) return svc.passthrough(req, r.kind === "ping" ? "-/ping" : "-/v1/search", url);
      if (r.kind === "ping") return Response.json({});
      throw errors.notFound("search");
    case "whoami": {
      if (!read) throw npmErrors.method(m, READ);
      const p = await ctx.auth.authenticate(req);
      if (p.userId === null) throw npmErrors.notLoggedIn();
      return Response.json({ username: p.name });
    }
    case "web-login":
      // no web login: npm falls back to the legacy PUT on a 4xx (specs/npm.md §6)
      throw errors.notFound("web login");
    case "user":
      if (m !== "PUT") throw npmErrors.method(m, "PUT");
      return login(ctx, req, r.user);
    case "logout":
      if (m !== "DELETE") throw npmErrors.method(m, "DELETE");
      return logout(ctx, req, r.token);
    case "packument":
      if (read && r.rev === undefined) {
        if (url.searchParams.get("write") === "true" && svc.writes?.()) return writes().writeDoc(req, r.name);
        return svc.servePackument(req, r.name, variantOf(req.headers.get("accept")));
      }
      if (m === "PUT") return writes().put(req, await actorOf(ctx, req), r.name);
      if (m === "DELETE" && r.rev !== undefined) return writes().unpublish(req, await actorOf(ctx, req), r.name);
      throw npmErrors.method(m, r.rev === undefined ? "GET, HEAD, PUT" : "PUT, DELETE");
    case "version": {
      if (!read) throw npmErrors.method(m, READ);
      const e = await svc.packument(req, r.name, "full");
      if (!e) throw errors.notFound(`package ${r.name}`);
      const bytes = await ctx.artifacts.read(e);
      const out = await runTask(ctx, { op: "version", body: bytes, spec: r.spec }, bytes.byteLength, { signal: req.signal });
      if (!out.found) throw errors.notFound(`${r.name}@${r.spec}`);
      return new Response(m === "HEAD" ? null : (out.body as Uint8Array<ArrayBuffer>), { headers: { "content-type": "application/json", "cache-control": "no-cache" } });
    }
    case "tarball": {
      if (read && r.rev === undefined) {
        const res = await svc.tarball(req, r.name, r.file);
        if (!res) throw npmErrors.notListed(r.file);
        return res;
      }
      if (m === "DELETE" && r.rev !== undefined) return writes().deleteTarball(req, await actorOf(ctx, req), r.name, r.file);
      throw npmErrors.method(m, r.rev === undefined ? READ : "DELETE");
    }
    case "dist-tags": {
      if (!read) throw npmErrors.method(m, READ);
      const e = await svc.packument(req, r.name, "abbrev");
      if (!e) throw errors.notFound(`package ${r.name}`);
      const bytes = await ctx.artifacts.read(e);
      const out = await runTask(ctx, { op: "dist-tags", body: bytes }, bytes.byteLength, { signal: req.signal });
      return Response.json(out.distTags ?? {}, { headers: { "cache-control": "no-cache" } });
    }
    case "dist-tag":
      if (m === "PUT") return writes().setTag(req, await actorOf(ctx, req), r.name, r.tag);
      if (m === "DELETE") return writes().removeTag(req, await actorOf(ctx, req), r.name, r.tag);
      throw npmErrors.method(m, "PUT, DELETE");
  }
}

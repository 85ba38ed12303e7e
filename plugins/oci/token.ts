/**
 * The vault as its own registry token server (distribution token spec, specs/oci.md §7): scope grammar, the granted
 * intersection, the `/token` endpoint (GET with Basic or anonymous, OAuth2 POST password grant), and checking the
 * Bearer tokens (or Basic credentials) of API requests against the action a request needs.
 */
import type { Action, AuthService, PluginContext, Principal, RegistryTokenClaims } from "../../core/plugin.ts";
import { VaultError } from "../../core/plugin.ts";
import { bearerChallenge } from "./auth-challenge.ts";
import { API_VERSION, API_VERSION_HEADER, ociError } from "./errors.ts";

/** Registry actions in scopes and tokens. */
export type RegistryAction = "pull" | "push" | "delete";

/** Lifetime of the tokens we issue, seconds (distribution's default is 60; Docker Hub's 300). */
export const TOKEN_TTL_SECONDS = 300;

/** One requested scope (`type:name:actions`). */
export interface Scope {
  /** `repository` or `registry` (others are ignored by the token endpoint). */
  type: string;
  /** Resource name as requested (may contain `host:port`), e.g. `team/app` or `catalog`. */
  name: string;
  /** Requested actions as sent (`pull`, `push`, `delete`, `*`; unknown ones kept). */
  actions: string[];
}

/** Registry action → permission of the auth core. */
const ACTION_PERMISSION: Record<RegistryAction, Action> = { pull: "read", push: "write", delete: "delete" };

/** The principal of requests without credentials (as the auth core reports it). */
const ANONYMOUS: Principal = Object.freeze({ userId: null, name: "anonymous", isAdmin: false, via: "anonymous" as const });

/**
 * Parses one scope string. The name may itself contain `:` (a `host:port` prefix), so the type ends at the first
 * `:` and the actions start after the last one (specs/oci.md §7).
 * @returns null when malformed (fewer than three parts, empty type or name)
 */
export function parseScope(s: string): Scope | null {
  const first = s.indexOf(":");
  const last = s.lastIndexOf(":");
  if (first <= 0 || last === first) return null;
  const type = s.slice(0, first);
  const name = s.slice(first + 1, last);
  const actions = s
    .slice(last + 1)
    .split(",")
    .map((a) => a.trim())
    .filter(Boolean);
  if (!name) return null;
  return { type, name, actions };
}

/** Every scope of a token request: repeated `scope=` parameters, each possibly holding several space-separated scopes. */
export function parseScopes(values: string[]): Scope[] {
  const out: Scope[] = [];
  for (const v of values)
    for (const part of v.split(" ")) {
      if (!part) continue;
      const s = parseScope(part);
      if (s) out.push(s);
    }
  return out;
}

/**
 * The granted actions of one repository scope: the intersection of the requested actions and what `allowed` says
 * (`*` stands for pull, push and delete). Unknown actions are dropped. Order follows pull, push, delete.
 */
export function intersectActions(requested: string[], allowed: (a: RegistryAction) => boolean): RegistryAction[] {
  const want = new Set<string>();
  for (const a of requested) {
    if (a === "*") {
      want.add("pull");
      want.add("push");
      want.add("delete");
    } else want.add(a);
  }
  const out: RegistryAction[] = [];
  for (const a of ["pull", "push", "delete"] as const) if (want.has(a) && allowed(a)) out.push(a);
  return out;
}

/** Whether the token's `access` claim grants `action` on `name` of `type` (a granted `*` covers every action). */
export function tokenGrants(claims: RegistryTokenClaims, type: string, name: string, action: string): boolean {
  for (const a of claims.access ?? []) {
    if (a.type !== type || a.name !== name) continue;
    if (a.actions.includes(action) || a.actions.includes("*")) return true;
  }
  return false;
}

/** A name as the token endpoint and API requests see it, resolved to a repository and an image inside it. */
export interface ResolvedName {
  /** The vault repository. */
  ctx: PluginContext;
  /** Image name inside the repository. */
  image: string;
}

/** The name recorded in tokens: `<repository>/<image>`, independent of how the client addressed it. */
export function canonicalName(r: ResolvedName): string {
  return `${r.ctx.repo.name}/${r.image}`;
}

/** How the token endpoint of one addressing context resolves scope names. */
export interface TokenEndpointOptions {
  /** Any repository's AuthService (authentication and token signing do not depend on the repository). */
  auth: AuthService;
  /** Maps a scope's repository name to the vault repository and image, or null (then nothing is granted). */
  resolve(name: string): ResolvedName | null;
  /** Repositories the catalog may list; `registry:catalog:*` is granted when the principal may read one of them. */
  catalogRepos: PluginContext[];
  /** `service` value expected and put into `aud`. */
  service: string;
}

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", "cache-control": "no-store", [API_VERSION_HEADER]: API_VERSION, ...headers },
  });
}

/**
 * Answers the token endpoint (`GET /token?service=…&scope=…` with Basic credentials or none; `POST` with an OAuth2
 * form `grant_type=password&username&password&scope`). Credentials are users' passwords or API tokens of the auth
 * core. Grants, per requested repository scope, the intersection of requested and allowed actions (an empty grant is
 * not an error); anonymous callers get what anonymous read allows.
 * @returns 200 `{"token","access_token","expires_in","issued_at"}`
 * @throws VaultError UNAUTHORIZED (401) on bad credentials, UNSUPPORTED (405) for other methods or grant types
 */
export async function tokenEndpoint(req: Request, o: TokenEndpointOptions): Promise<Response> {
  const url = new URL(req.url);
  let scopes: string[] = url.searchParams.getAll("scope");
  let principal: Principal;
  if (req.method === "GET" || req.method === "HEAD") {
    principal = await authenticateOrThrow(o.auth, req);
  } else if (req.method === "POST") {
    const ct = req.headers.get("content-type") ?? "";
    if (!ct.startsWith("application/x-www-form-urlencoded")) throw ociError("UNSUPPORTED", "token POST must be application/x-www-form-urlencoded");
    const text = await req.text();
    if (text.length > 16384) throw ociError("UNSUPPORTED", "token request too large");
    const form = new URLSearchParams(text);
    scopes = scopes.concat(form.getAll("scope"));
    const grant = form.get("grant_type");
    if (grant === "password") {
      const user = form.get("username") ?? "";
      const pass = form.get("password") ?? "";
      const basic = "Basic " + Buffer.from(`${user}:${pass}`).toString("base64");
      principal = await authenticateOrThrow(o.auth, new Request(req.url, { headers: { authorization: basic } }));
    } else if (grant === "refresh_token") {
      const rt = form.get("refresh_token") ?? "";
      principal = await authenticateOrThrow(o.auth, new Request(req.url, { headers: { authorization: `Bearer ${rt}` } }));
    } else throw ociError("UNSUPPORTED", `unsupported grant_type ${JSON.stringify((grant ?? "").slice(0, 40))}`);
  } else throw ociError("UNSUPPORTED", `${req.method} not allowed on the token endpoint`, {}, { allow: "GET, POST" });

  const access: NonNullable<RegistryTokenClaims["access"]> = [];
  for (const s of parseScopes(scopes)) {
    if (s.type === "repository") {
      const r = o.resolve(s.name);
      if (!r) continue;
      const granted = intersectActions(s.actions, (a) => r.ctx.auth.can(principal, ACTION_PERMISSION[a]));
      if (granted.length) access.push({ type: "repository", name: canonicalName(r), actions: granted });
    } else if (s.type === "registry" && s.name === "catalog") {
      if (s.actions.includes("*") && o.catalogRepos.some((c) => c.auth.can(principal, "read"))) access.push({ type: "registry", name: "catalog", actions: ["*"] });
    }
  }
  const sign = o.auth.signToken;
  if (!sign) throw new VaultError("VAULT_INTERNAL", 500, "the auth core cannot sign registry tokens");
  const token = sign({ sub: principal.userId === null ? "anonymous" : principal.name, access, aud: o.service }, TOKEN_TTL_SECONDS);
  return json({ token, access_token: token, expires_in: TOKEN_TTL_SECONDS, issued_at: new Date().toISOString() });
}

async function authenticateOrThrow(auth: AuthService, req: Request): Promise<Principal> {
  try {
    return await auth.authenticate(req);
  } catch (e) {
    if (e instanceof VaultError && e.status === 401) throw ociError("UNAUTHORIZED", "invalid credentials", {}, { "www-authenticate": 'Basic realm="vault"' });
    throw e;
  }
}

/** One permission an API request needs: `action` on `image` of the resolved repository (`name` as the client wrote it). */
export interface AccessNeed {
  /** Repository and image the request addresses. */
  target: ResolvedName;
  /** The repository name as the client addressed it (used in the challenge's scope). */
  name: string;
  /** What the request does: `pull` (GET/HEAD), `push` (PUT, uploads), `delete`. */
  action: RegistryAction;
}

/** Where clients get tokens: the realm URL and service of the addressing context. */
export interface RealmInfo {
  /** Absolute URL of our token endpoint (`<origin or mount>/token`). */
  realm: string;
  /** Service name: the `host[:port]` of that URL (the `aud` of the tokens issued there). */
  service: string;
}

/** Who made an API request and how they proved it. */
export interface Caller {
  /** The authenticated user, or the anonymous principal. */
  principal: Principal;
  /** Claims of the Bearer registry token, when that is how they authenticated. */
  claims?: RegistryTokenClaims;
}

/** Cheap shape test for a compact JWS (three base64url parts). */
function looksLikeJwt(s: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(s);
}

function scopeOf(needs: AccessNeed[]): string {
  const byName = new Map<string, Set<string>>();
  for (const n of needs) {
    let s = byName.get(n.name);
    if (!s) byName.set(n.name, (s = new Set()));
    if (n.action === "push") s.add("pull");
    s.add(n.action);
  }
  return [...byName].map(([name, acts]) => `repository:${name}:${[...acts].join(",")}`).join(" ");
}

/**
 * Authenticates an API request and checks that it may do every `need`:
 * - `Bearer <registry token>`: verified (signature, expiry) and its `access` claim must grant each need on the
 *   canonical name; otherwise 401 with `error="insufficient_scope"` and the needed scope, so clients fetch a new token;
 * - Basic credentials or a `Bearer <API token>`: the auth core authenticates, the repository's permissions decide;
 * - no credentials: anonymous, allowed where anonymous read is (pull only).
 * A caller who is not allowed gets 401 with a Bearer challenge pointing at `realm` when anonymous or token-based,
 * 403 DENIED when authenticated with Basic credentials.
 * @throws VaultError UNAUTHORIZED (401) with `WWW-Authenticate`, DENIED (403)
 */
export async function authorize(req: Request, needs: AccessNeed[], realm: RealmInfo): Promise<Caller> {
  const h = req.headers.get("authorization");
  const challenge = (error?: string) => bearerChallenge(realm.realm, realm.service, scopeOf(needs), error);
  if (h === null || h === "") {
    for (const n of needs)
      if (!n.target.ctx.auth.can(ANONYMOUS, ACTION_PERMISSION[n.action]))
        throw ociError("UNAUTHORIZED", "authentication required", {}, { "www-authenticate": challenge() });
    return { principal: ANONYMOUS };
  }
  if (h.length > 7 && h.slice(0, 7).toLowerCase() === "bearer ") {
    const cred = h.slice(7).trim();
    if (looksLikeJwt(cred)) {
      const auth = needs[0]?.target.ctx.auth;
      if (!auth?.verifyToken) throw new VaultError("VAULT_INTERNAL", 500, "the auth core cannot verify registry tokens");
      let claims: RegistryTokenClaims;
      try {
        claims = auth.verifyToken(cred);
      } catch (e) {
        if (e instanceof VaultError && e.status === 401) throw ociError("UNAUTHORIZED", e.message, {}, { "www-authenticate": challenge("invalid_token") });
        throw e;
      }
      for (const n of needs)
        if (!tokenGrants(claims, "repository", canonicalName(n.target), n.action))
          throw ociError("UNAUTHORIZED", "token does not grant this action", { action: n.action, name: n.name }, { "www-authenticate": challenge("insufficient_scope") });
      const anon = claims.sub === "" || claims.sub === "anonymous";
      return { principal: anon ? ANONYMOUS : { userId: null, name: claims.sub, isAdmin: false, via: "bearer" }, claims };
    }
  }
  const auth = needs[0]?.target.ctx.auth;
  if (!auth) return { principal: ANONYMOUS };
  let principal: Principal;
  try {
    principal = await auth.authenticate(req);
  } catch (e) {
    if (e instanceof VaultError && e.status === 401) throw ociError("UNAUTHORIZED", e.message, {}, { "www-authenticate": challenge("invalid_token") });
    throw e;
  }
  for (const n of needs) {
    if (n.target.ctx.auth.can(principal, ACTION_PERMISSION[n.action])) continue;
    if (principal.userId === null) throw ociError("UNAUTHORIZED", "authentication required", {}, { "www-authenticate": challenge() });
    throw ociError("DENIED", `${n.action} on ${n.name} is not allowed`, { action: n.action, name: n.name });
  }
  return { principal };
}

/**
 * Whether `caller` may do `action` on `target` (used for optional checks such as the source of a cross-repository
 * mount), without throwing.
 */
export function callerMay(caller: Caller, target: ResolvedName, action: RegistryAction): boolean {
  if (caller.claims) return tokenGrants(caller.claims, "repository", canonicalName(target), action);
  return target.ctx.auth.can(caller.principal, ACTION_PERMISSION[action]);
}

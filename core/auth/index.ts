/** The auth core (DESIGN.md §6): users, API tokens, S3 access keys, registry tokens, per-repository permissions, audit log. */
import { and, eq, inArray, sql } from "drizzle-orm";
import type { Action, AuthService, Db, Logger, Principal } from "../plugin.ts";
import type { AuthConfig, RepositoryConfig } from "../config/types.ts";
import { VaultError, errors } from "../errors.ts";
import { atomic, dialectOf, exec, first, rows, tablesOf } from "../db/index.ts";
import { AuditWriter, type AuditRecord } from "./audit.ts";
import { looksLikeJwt, signJwt, verifyJwt, type RegistryClaims } from "./jwt.ts";
import { PasswordVerifier, checkPassword, hashPassword, type PasswordVerifierOptions } from "./passwords.ts";
import { actionLevel, actionsOf, checkGrantRepository, parseActions } from "./permissions.ts";
import {
  KeyRing,
  mintToken,
  newAccessKeyId,
  newSecretAccessKey,
  parseToken,
  seal,
  secretMatches,
  sha256Hex,
  unseal,
} from "./secrets.ts";

export { setRemoteAddress } from "./audit.ts";
export type { RegistryAccess, RegistryClaims } from "./jwt.ts";
export { ACTIONS, actionLevel, parseActions, parseGrantSpec } from "./permissions.ts";
export { parseToken, TOKEN_PREFIX } from "./secrets.ts";

/** The principal of requests without credentials. */
export const ANONYMOUS: Principal = Object.freeze({ userId: null, name: "anonymous", isAdmin: false, via: "anonymous" as const });

/** `lastUsedAt` of a token is written at most once per this many ms (lazy, not a write per request). */
export const LAST_USED_RESOLUTION_MS = 60_000;

/** The challenge sent with 401 answers. */
const BASIC_CHALLENGE = 'Basic realm="vault"';

/** User names: start with a letter or digit, then letters, digits, `.`, `_`, `@`, `-`; at most 64 chars. */
const USER_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
/** Names that never denote a user (`__token__` is twine's token user name). */
const RESERVED_NAMES = new Set(["anonymous", "__token__"]);

/** A user as listed (no secrets). Times are epoch ms. */
export interface UserInfo {
  id: number;
  name: string;
  isAdmin: boolean;
  disabled: boolean;
  /** false for token-only users */
  hasPassword: boolean;
  createdAt: number;
  /** Per-repository grants; `actions` lists every implied action. */
  grants: { repository: string; actions: Action[] }[];
}

/** An API token or S3 access key as listed (never the secret). Times are epoch ms. */
export interface TokenInfo {
  /** Token id (`vault_<id>_…`) or S3 access key id. */
  id: string;
  userId: number;
  user: string;
  name: string;
  kind: "api" | "s3";
  createdAt: number;
  expiresAt: number | null;
  lastUsedAt: number | null;
}

/** Options of a new token or access key. */
export interface NewTokenOptions {
  /** Label shown in lists. Default `<kind>-<YYYY-MM-DD>`. */
  name?: string;
  /** Lifetime in seconds; none = does not expire. */
  expiresInSeconds?: number;
  /** Actor recorded in the audit log. Default `system`. */
  by?: string;
}

/** The AuthService of one repository, with the login-flow members (optional in the contract) always present. */
export interface RepositoryAuth extends AuthService {
  /** The repository name grants are matched against (besides `*`). */
  readonly repository: string;
  /** Whether anonymous principals may read this repository. */
  readonly anonymousRead: boolean;
  verifyPassword(name: string, password: string): Promise<Principal>;
  createToken(principal: Principal, o?: { name?: string; expiresInSeconds?: number }): Promise<{ id: string; token: string; expiresAt: number | null }>;
  revokeToken(principal: Principal, token: string): Promise<boolean>;
  signToken(claims: RegistryClaims, ttlSeconds: number): string;
  verifyToken(jwt: string): RegistryClaims;
  lookupAccessKey(accessKeyId: string): Promise<{ principal: Principal; secret: string } | null>;
}

/** Everything the server, plugins (through `forRepository`) and the CLI use. */
export interface AuthCore {
  /**
   * Creates or updates the admin from `auth.admin`, or else from env `VAULT_ADMIN_USER` (default `admin`) +
   * `VAULT_ADMIN_PASSWORD`, and the declared S3 `auth.accessKeys`. Idempotent: an unchanged password is not
   * rehashed, an existing key is left alone.
   * @throws VaultError VAULT_CONFIG (500) when the configured admin has an empty name or password, or a declared
   *   access key is malformed or collides with an API token id
   */
  bootstrap(): Promise<void>;
  /**
   * Resolves when the synchronous members work (the registry-token and sealing keys are loaded). Always at once on
   * SQLite; on Postgres `bootstrap` and `authenticate` wait for it themselves, so only a caller signing or verifying
   * registry tokens before either ran needs it. @throws the driver's error
   */
  ready(): Promise<void>;
  /** The repository-scoped AuthService (permissions against `*` and `repo.name`, anonymous read per repo). */
  forRepository(repo: RepositoryConfig): RepositoryAuth;

  /**
   * Reads `Authorization` (no repository involved): `Basic user:password`, `Basic user:<API token>`,
   * `Basic __token__:<API token>`, `Bearer <API token>`, `Bearer <registry JWT>`.
   * @returns ANONYMOUS when there is no `Authorization` header (or Basic with empty user and password)
   * @throws VaultError VAULT_UNAUTHORIZED (401) on bad, expired or revoked credentials, disabled users, unknown schemes
   */
  authenticate(req: Request): Promise<Principal>;
  /** Checks a user name + password (npm adduser body, login forms). @throws VaultError 401 */
  verifyPassword(name: string, password: string): Promise<Principal>;
  /** Checks an API token (`vault_<id>_<secret>`). @throws VaultError 401 (unknown, wrong secret, expired, user disabled) */
  verifyApiToken(token: string): Promise<Principal>;
  /** The principal of an existing, enabled user, or null. */
  principalFor(name: string): Promise<Principal | null>;

  /* users */
  /**
   * Adds a user. Without `password` the user can only use API tokens.
   * @throws VaultError VAULT_BAD_REQUEST (400) bad name/password/grant, VAULT_CONFLICT (409) name taken
   */
  addUser(o: { name: string; password?: string; admin?: boolean; grants?: { repository: string; actions: string }[]; by?: string }): Promise<UserInfo>;
  /** Removes a user with their tokens, keys and grants. @throws VaultError VAULT_NOT_FOUND (404) */
  removeUser(name: string, by?: string): Promise<void>;
  /** Sets (or with null clears) a user's password. @throws VaultError 404, 400 */
  setPassword(name: string, password: string | null, by?: string): Promise<void>;
  /** Makes a user an admin or not. @throws VaultError 404 */
  setAdmin(name: string, isAdmin: boolean, by?: string): Promise<void>;
  /** Disables (no authentication at all) or re-enables a user. @throws VaultError 404 */
  setDisabled(name: string, disabled: boolean, by?: string): Promise<void>;
  getUser(name: string): Promise<UserInfo | null>;
  listUsers(): Promise<UserInfo[]>;
  /**
   * Grants `actions` (comma list, e.g. `write` — implies read) on `repository` (a name or `*`); adds to what the
   * user already has there. @throws VaultError 404 (user), 400 (action, repository)
   */
  grant(name: string, repository: string, actions: string, by?: string): Promise<UserInfo>;
  /**
   * Revokes `action` and every action above it on `repository` (revoking write leaves read); without
   * `action`, the whole grant. @throws VaultError 404 (user), 400
   */
  revoke(name: string, repository: string, action?: Action, by?: string): Promise<UserInfo>;

  /* API tokens */
  /**
   * Creates an API token for `user`. The plaintext (`vault_<id>_<secret>`) is returned once and never stored.
   * @returns expiresAt epoch ms or null
   * @throws VaultError VAULT_NOT_FOUND (404) unknown user, VAULT_BAD_REQUEST (400) bad expiry
   */
  createToken(user: string, o?: NewTokenOptions): Promise<{ id: string; token: string; expiresAt: number | null }>;
  /** Tokens and access keys (optionally of one user), newest first. */
  listTokens(o?: { user?: string; kind?: "api" | "s3" }): Promise<TokenInfo[]>;
  /** Deletes a token or access key by id. @returns false when no such id */
  revokeToken(id: string, by?: string): Promise<boolean>;

  /* S3 access keys */
  /**
   * Creates an S3 access key for `user`; the secret is returned once and kept sealed (AES-256-GCM).
   * @throws VaultError VAULT_NOT_FOUND (404) unknown user
   */
  createAccessKey(user: string, o?: NewTokenOptions): Promise<{ accessKeyId: string; secretAccessKey: string; expiresAt: number | null }>;
  /**
   * For SigV4 verification: the principal owning access key `id` and its secret. Null when unknown, expired,
   * the user is disabled, or the secret cannot be unsealed (logged).
   */
  lookupAccessKey(id: string): Promise<{ principal: Principal; secret: string } | null>;

  /* registry tokens */
  /** Signs an HS256 registry token (docker token flow, Conan authenticate) valid `ttlSeconds`. */
  signToken(claims: RegistryClaims, ttlSeconds: number): string;
  /** Verifies a registry token. @throws VaultError VAULT_UNAUTHORIZED (401) invalid or expired */
  verifyToken(jwt: string): RegistryClaims;

  /** Appends a non-repository audit record (user and token management, logins). */
  audit(r: AuditRecord): void;
  /** Writes audit rows still pending (after a failed insert; on Postgres also those being written); call on shutdown. */
  flush(): Promise<void>;
}

/** Options of {@link createAuthCore}. */
export interface AuthCoreOptions {
  db: Db;
  config?: AuthConfig;
  log: Logger;
  /** Environment read by bootstrap (default `process.env`). */
  env?: Record<string, string | undefined>;
  /** Tuning of the Basic-auth password cache. */
  passwordCache?: PasswordVerifierOptions;
}

function unauthorized(message = "invalid credentials", challenge = BASIC_CHALLENGE): VaultError {
  return new VaultError("VAULT_UNAUTHORIZED", 401, message, {}, { "www-authenticate": challenge });
}

function badRequest(message: string): VaultError {
  return new VaultError("VAULT_BAD_REQUEST", 400, message);
}

function checkUserName(name: string): void {
  if (!USER_NAME_RE.test(name) || RESERVED_NAMES.has(name.toLowerCase()))
    throw badRequest(`bad user name "${name}" (letters, digits, . _ @ -; at most 64; not anonymous or __token__)`);
}

function expiryOf(o: NewTokenOptions | undefined, now: number): number | null {
  const s = o?.expiresInSeconds;
  if (s === undefined) return null;
  if (!Number.isFinite(s) || s <= 0) throw badRequest("expiry must be a positive number of seconds");
  return now + Math.round(s * 1000);
}

/**
 * Creates the auth core over the metadata database.
 *
 * Storage: passwords as argon2id hashes (Bun.password); API token secrets as sha256 (they are 256-bit random)
 * compared with `crypto.timingSafeEqual`, looked up by token id; S3 secrets sealed with AES-256-GCM. The keys
 * for registry tokens and sealing come from `auth.tokenSecret` (HKDF) or are generated once into the `settings`
 * table (see KeyRing). Successful Basic password checks are cached in memory for 60 s keyed by an HMAC.
 *
 * Dialects: on SQLite every lookup is a prepared synchronous statement, `can` reads the grants table each time. On
 * Postgres lookups are awaited; `can` (synchronous in the plugin contract) answers from the grants this node loaded for
 * the user when it last made a principal for them (every `authenticate`, `verifyPassword`, `lookupAccessKey`, …), so a
 * grant changed on another node counts from that user's next request on. The keys are loaded by `bootstrap` (or the
 * first `authenticate`).
 */
export function createAuthCore(o: AuthCoreOptions): AuthCore {
  const { db } = o;
  const { apiTokens, permissions, users } = tablesOf(db);
  const sqlite = dialectOf(db) === "sqlite";
  const cfg = o.config ?? {};
  const log = o.log.child({ component: "auth" });
  const env = o.env ?? process.env;
  const ring = new KeyRing(db, cfg.tokenSecret);
  const passwords = new PasswordVerifier(o.passwordCache);
  const auditWriter = new AuditWriter(db, log);
  /** token id → epoch ms of the last lastUsedAt write by this process */
  const touched = new Map<string, number>();
  if (cfg.tokenSecret !== undefined && cfg.tokenSecret.length < 32)
    log.warn("auth.tokenSecret is shorter than 32 characters; use a long random value");

  /* ---------------------------------------------------------------- hot-path queries (prepared on SQLite) */

  const userCols = { id: users.id, name: users.name, passwordHash: users.passwordHash, isAdmin: users.isAdmin, disabled: users.disabled };
  const qUserByName = db.select(userCols).from(users).where(eq(users.name, sql.placeholder("name")));
  const tokenCols = {
      id: apiTokens.id,
      kind: apiTokens.kind,
      secretHash: apiTokens.secretHash,
      sealedSecret: apiTokens.sealedSecret,
      expiresAt: apiTokens.expiresAt,
      lastUsedAt: apiTokens.lastUsedAt,
      userId: users.id,
      name: users.name,
      isAdmin: users.isAdmin,
      disabled: users.disabled,
  };
  const qTokenById = db.select(tokenCols).from(apiTokens).innerJoin(users, eq(users.id, apiTokens.userId)).where(eq(apiTokens.id, sql.placeholder("id")));
  const qGrants = db
    .select({ actions: permissions.actions })
    .from(permissions)
    .where(and(eq(permissions.userId, sql.placeholder("userId")), inArray(permissions.repository, [sql.placeholder("repo"), "*"])));
  const pUserByName = sqlite ? qUserByName.prepare() : undefined;
  const pTokenById = sqlite ? qTokenById.prepare() : undefined;
  const pGrants = sqlite ? qGrants.prepare() : undefined;
  type UserRow = Awaited<typeof qUserByName>[number];
  type TokenRow = Awaited<typeof qTokenById>[number];

  /** The user named `name` (SQLite: synchronously). */
  const userByName = (name: string): UserRow | undefined | Promise<UserRow | undefined> =>
    pUserByName ? pUserByName.get({ name }) : db.select(userCols).from(users).where(eq(users.name, name)).then(first);
  /** The token or access key `id` with its user (SQLite: synchronously). */
  const tokenById = (id: string): TokenRow | undefined | Promise<TokenRow | undefined> =>
    pTokenById ? pTokenById.get({ id }) : db.select(tokenCols).from(apiTokens).innerJoin(users, eq(users.id, apiTokens.userId)).where(eq(apiTokens.id, id)).then(first);

  /** Postgres: each user's grants (repository → level) as loaded when a principal was last made for them. */
  const grantCache = new Map<number, Map<string, number>>();

  /** A principal for user `u`; on Postgres with the user's grants loaded for `can`. */
  async function principalOf(u: { id: number; name: string; isAdmin: boolean }, via: Principal["via"]): Promise<Principal> {
    if (!sqlite) {
      const levels = new Map<string, number>();
      for (const g of await db.select({ repository: permissions.repository, actions: permissions.actions }).from(permissions).where(eq(permissions.userId, u.id)))
        levels.set(g.repository, parseActions(g.actions));
      if (grantCache.size >= 10_000 && !grantCache.has(u.id)) grantCache.clear();
      grantCache.set(u.id, levels);
    }
    return { userId: u.id, name: u.name, isAdmin: u.isAdmin, via };
  }

  function touch(id: string, lastUsedAt: number | null): void {
    const now = Date.now();
    if (lastUsedAt !== null && now - lastUsedAt < LAST_USED_RESOLUTION_MS) return;
    const mine = touched.get(id);
    if (mine !== undefined && now - mine < LAST_USED_RESOLUTION_MS) return;
    touched.set(id, now);
    if (touched.size > 10_000) touched.clear();
    // SQLite: the update runs within this call (then() executes it synchronously); Postgres: in the background
    db.update(apiTokens)
      .set({ lastUsedAt: now })
      .where(eq(apiTokens.id, id))
      .then(undefined, (e: unknown) => log.warn("could not record token use", { id, error: e instanceof Error ? e.message : String(e) }));
  }

  async function requireUser(name: string) {
    const u = await userByName(name);
    if (!u) throw errors.notFound(`user ${name}`);
    return u;
  }

  /** Highest level granted to `userId` on `repo` or `*` (Postgres: from the grants loaded with the principal). */
  function grantedLevel(userId: number, repo: string): number {
    let level = 0;
    if (pGrants) {
      for (const g of pGrants.all({ userId, repo })) level = Math.max(level, parseActions(g.actions));
      return level;
    }
    const levels = grantCache.get(userId);
    return Math.max(levels?.get(repo) ?? 0, levels?.get("*") ?? 0);
  }

  async function userInfo(name: string): Promise<UserInfo | null> {
    const u = first(await db.select().from(users).where(eq(users.name, name)));
    if (!u) return null;
    const grants = await db.select().from(permissions).where(eq(permissions.userId, u.id)).orderBy(permissions.repository);
    return {
      id: u.id,
      name: u.name,
      isAdmin: u.isAdmin,
      disabled: u.disabled,
      hasPassword: u.passwordHash !== null,
      createdAt: u.createdAt,
      grants: grants.map((g) => ({ repository: g.repository, actions: actionsOf(parseActions(g.actions)) })),
    };
  }

  /** The level granted to `userId` on exactly `repository` (a name or `*`), 0 when none. */
  async function grantOn(userId: number, repository: string): Promise<number> {
    const g = first(await db.select({ actions: permissions.actions }).from(permissions).where(and(eq(permissions.userId, userId), eq(permissions.repository, repository))));
    return g ? parseActions(g.actions) : 0;
  }

  async function setGrantLevel(userId: number, repository: string, level: number): Promise<void> {
    grantCache.delete(userId);
    if (level <= 0) {
      await db.delete(permissions).where(and(eq(permissions.userId, userId), eq(permissions.repository, repository)));
      return;
    }
    const actions = actionsOf(level).join(",");
    await db
      .insert(permissions)
      .values({ userId, repository, actions })
      .onConflictDoUpdate({ target: [permissions.userId, permissions.repository], set: { actions } });
  }

  /* ---------------------------------------------------------------- credentials */

  async function verifyPassword(name: string, password: string): Promise<Principal> {
    const u = name.length <= 64 ? await userByName(name) : undefined;
    const ok = await passwords.verify(name, password, u && !u.disabled ? u.passwordHash : null);
    if (!ok || !u || u.disabled) {
      log.debug("password authentication failed", { user: name.slice(0, 64) });
      throw unauthorized();
    }
    return principalOf(u, "basic");
  }

  async function verifyParsedToken(id: string, secret: string): Promise<Principal> {
    const row = await tokenById(id);
    if (!row || row.kind !== "api" || !secretMatches(secret, row.secretHash)) {
      log.debug("token authentication failed", { id });
      throw unauthorized();
    }
    if (row.expiresAt !== null && row.expiresAt <= Date.now()) {
      log.debug("expired token used", { id });
      throw unauthorized("token expired");
    }
    if (row.disabled) throw unauthorized();
    touch(row.id, row.lastUsedAt);
    return principalOf({ id: row.userId, name: row.name, isAdmin: row.isAdmin }, "token");
  }

  async function verifyApiToken(token: string): Promise<Principal> {
    const t = parseToken(token);
    if (!t) throw unauthorized();
    return verifyParsedToken(t.id, t.secret);
  }

  async function principalFor(name: string): Promise<Principal | null> {
    const u = name.length <= 64 ? await userByName(name) : undefined;
    return u && !u.disabled ? principalOf(u, "basic") : null;
  }

  function verifyRegistryJwt(jwt: string): RegistryClaims {
    return verifyJwt(ring, jwt);
  }

  async function authenticate(req: Request): Promise<Principal> {
    if (!ring.ready()) await ring.init();
    const h = req.headers.get("authorization");
    if (h === null || h.trim() === "") return ANONYMOUS;
    const sp = h.indexOf(" ");
    const scheme = (sp < 0 ? h : h.slice(0, sp)).toLowerCase();
    const cred = sp < 0 ? "" : h.slice(sp + 1).trim();
    if (scheme === "basic") {
      let decoded: string;
      try {
        decoded = Buffer.from(cred, "base64").toString("utf8");
      } catch {
        throw unauthorized();
      }
      const i = decoded.indexOf(":");
      if (i < 0) throw unauthorized();
      const user = decoded.slice(0, i);
      const pass = decoded.slice(i + 1);
      if (user === "" && pass === "") return ANONYMOUS;
      const t = parseToken(pass);
      if (t) {
        const p = await verifyParsedToken(t.id, t.secret);
        if (user !== "__token__" && user !== p.name) {
          log.debug("token used with another user name", { id: t.id, user: user.slice(0, 64) });
          throw unauthorized();
        }
        return p;
      }
      if (user === "__token__" || user === "") throw unauthorized();
      return verifyPassword(user, pass);
    }
    if (scheme === "bearer") {
      const t = parseToken(cred);
      if (t) return verifyParsedToken(t.id, t.secret);
      if (looksLikeJwt(cred)) {
        const claims = verifyRegistryJwt(cred);
        if (claims.sub === "" || claims.sub === "anonymous") return ANONYMOUS;
        const u = claims.sub.length <= 64 ? await userByName(claims.sub) : undefined;
        if (!u || u.disabled) throw unauthorized();
        return principalOf(u, "bearer");
      }
      throw unauthorized();
    }
    throw unauthorized("unsupported authorization scheme");
  }

  /* ---------------------------------------------------------------- the core */

  const core: AuthCore = {
    async bootstrap() {
      await ring.init();
      let admin = cfg.admin;
      if (!admin && env.VAULT_ADMIN_PASSWORD) admin = { user: env.VAULT_ADMIN_USER || "admin", password: env.VAULT_ADMIN_PASSWORD };
      else if (!admin && env.VAULT_ADMIN_USER) log.warn("VAULT_ADMIN_USER is set without VAULT_ADMIN_PASSWORD; no admin bootstrapped");
      if (admin) {
        if (!admin.user || !admin.password) throw new VaultError("VAULT_CONFIG", 500, "auth.admin needs a user and a non-empty password");
        checkUserName(admin.user);
        let u = await userByName(admin.user);
        if (!u) {
          const passwordHash = await hashPassword(admin.password);
          // another node sharing the database may be bootstrapping the same admin right now
          const created = await db
            .insert(users)
            .values({ name: admin.user, passwordHash, isAdmin: true, createdAt: Date.now() })
            .onConflictDoNothing()
            .returning({ id: users.id });
          if (created.length > 0) {
            log.info("admin user created", { user: admin.user });
            auditWriter.write({ actor: "bootstrap", action: "user.add", detail: { user: admin.user, admin: true } });
          } else u = await userByName(admin.user);
        }
        if (u) {
          const same = u.passwordHash !== null && (await Bun.password.verify(admin.password, u.passwordHash).catch(() => false));
          if (!same || !u.isAdmin || u.disabled) {
            const passwordHash = same ? u.passwordHash : await hashPassword(admin.password);
            await db.update(users).set({ passwordHash, isAdmin: true, disabled: false }).where(eq(users.id, u.id));
            passwords.clear();
            log.info("admin user updated", { user: admin.user, passwordChanged: !same });
            auditWriter.write({ actor: "bootstrap", action: "user.update", detail: { user: admin.user, admin: true, passwordChanged: !same } });
          }
        }
      }
      for (const k of cfg.accessKeys ?? []) {
        if (!/^[A-Za-z0-9]{3,128}$/.test(k.id)) throw new VaultError("VAULT_CONFIG", 500, `auth.accessKeys: bad access key id "${k.id}"`);
        if (!k.secret || k.secret.length < 8) throw new VaultError("VAULT_CONFIG", 500, `auth.accessKeys[${k.id}]: secret must be at least 8 characters`);
        checkUserName(k.user);
        let u = await userByName(k.user);
        if (!u) {
          await db.insert(users).values({ name: k.user, passwordHash: null, isAdmin: false, createdAt: Date.now() }).onConflictDoNothing();
          u = (await userByName(k.user))!;
          log.info("user created for access key", { user: k.user, keyId: k.id });
        }
        const row = await tokenById(k.id);
        if (row && row.kind !== "s3") throw new VaultError("VAULT_CONFIG", 500, `auth.accessKeys: id "${k.id}" is taken by an API token`);
        let current: string | null = null;
        if (row?.sealedSecret) {
          try {
            current = unseal(ring, row.sealedSecret, k.id);
          } catch {
            current = null;
          }
        }
        if (row && current === k.secret && row.userId === u.id) continue;
        const values = { userId: u.id, secretHash: sha256Hex(k.secret), sealedSecret: seal(ring, k.secret, k.id) };
        if (row) await db.update(apiTokens).set(values).where(eq(apiTokens.id, k.id));
        else await db.insert(apiTokens).values({ id: k.id, name: "config", kind: "s3", createdAt: Date.now(), ...values });
        log.info(row ? "access key updated" : "access key created", { keyId: k.id, user: k.user });
        auditWriter.write({ actor: "bootstrap", action: row ? "s3key.update" : "s3key.create", detail: { user: k.user, keyId: k.id } });
      }
    },

    ready: () => ring.init(),

    forRepository(repo) {
      const repository = repo.name;
      const anonymousRead = repo.anonymousRead ?? cfg.anonymousRead ?? true;
      const can = (principal: Principal, action: Action): boolean => {
        if (principal.isAdmin) return true;
        const need = actionLevel(action);
        if (need === 1 && anonymousRead) return true;
        if (principal.userId === null) return false;
        return grantedLevel(principal.userId, repository) >= need;
      };
      return {
        repository,
        anonymousRead,
        authenticate,
        can,
        async require(req, action) {
          const p = await authenticate(req);
          if (can(p, action)) return p;
          if (p.userId === null) throw errors.unauthorized(BASIC_CHALLENGE);
          throw errors.forbidden(action, repository);
        },
        audit(e) {
          auditWriter.write({ actor: e.principal.name, action: e.action, repository, path: e.path, detail: e.detail, req: e.req });
        },
        verifyPassword,
        async createToken(principal, t) {
          if (principal.userId === null) throw unauthorized("authentication required");
          return core.createToken(principal.name, { name: t?.name, expiresInSeconds: t?.expiresInSeconds, by: principal.name });
        },
        async revokeToken(principal, token) {
          const t = parseToken(token);
          if (!t || principal.userId === null) return false;
          const row = await tokenById(t.id);
          if (!row || row.kind !== "api" || !secretMatches(t.secret, row.secretHash)) return false;
          if (row.userId !== principal.userId && !principal.isAdmin) return false;
          return core.revokeToken(t.id, principal.name);
        },
        signToken: (claims, ttlSeconds) => signJwt(ring, claims, ttlSeconds),
        verifyToken: verifyRegistryJwt,
        lookupAccessKey: (id) => core.lookupAccessKey(id),
      };
    },

    authenticate,
    verifyPassword,
    verifyApiToken,
    principalFor,

    async addUser(u) {
      checkUserName(u.name);
      if (u.password !== undefined) checkPassword(u.password);
      const grants = (u.grants ?? []).map((g) => {
        checkGrantRepository(g.repository);
        return { repository: g.repository, level: parseActions(g.actions) };
      });
      if (await userByName(u.name)) throw new VaultError("VAULT_CONFLICT", 409, `user ${u.name} exists`);
      const passwordHash = u.password !== undefined ? await hashPassword(u.password) : null;
      await atomic(db, function* (tx) {
        const [row] = yield* rows(
          tx
            .insert(users)
            .values({ name: u.name, passwordHash, isAdmin: u.admin ?? false, createdAt: Date.now() })
            .returning({ id: users.id }),
        );
        for (const g of grants) {
          if (g.level > 0) yield* exec(tx.insert(permissions).values({ userId: row.id, repository: g.repository, actions: actionsOf(g.level).join(",") }));
        }
      });
      log.info("user added", { user: u.name, admin: u.admin ?? false });
      auditWriter.write({
        actor: u.by ?? "system",
        action: "user.add",
        detail: { user: u.name, admin: u.admin ?? false, grants: grants.map((g) => `${g.repository}:${actionsOf(g.level).join(",")}`) },
      });
      return (await userInfo(u.name))!;
    },

    async removeUser(name, by) {
      const u = await requireUser(name);
      await db.delete(users).where(eq(users.id, u.id));
      grantCache.delete(u.id);
      passwords.clear();
      log.info("user removed", { user: name });
      auditWriter.write({ actor: by ?? "system", action: "user.remove", detail: { user: name } });
    },

    async setPassword(name, password, by) {
      const u = await requireUser(name);
      const passwordHash = password === null ? null : await hashPassword(password);
      await db.update(users).set({ passwordHash }).where(eq(users.id, u.id));
      passwords.clear();
      log.info(password === null ? "password cleared" : "password changed", { user: name });
      auditWriter.write({ actor: by ?? "system", action: "user.passwd", detail: { user: name, cleared: password === null } });
    },

    async setAdmin(name, isAdmin, by) {
      const u = await requireUser(name);
      await db.update(users).set({ isAdmin }).where(eq(users.id, u.id));
      auditWriter.write({ actor: by ?? "system", action: "user.admin", detail: { user: name, admin: isAdmin } });
    },

    async setDisabled(name, disabled, by) {
      const u = await requireUser(name);
      await db.update(users).set({ disabled }).where(eq(users.id, u.id));
      passwords.clear();
      auditWriter.write({ actor: by ?? "system", action: disabled ? "user.disable" : "user.enable", detail: { user: name } });
    },

    getUser: userInfo,

    async listUsers() {
      const all = await db.select().from(users).orderBy(users.name);
      const grants = await db.select().from(permissions).orderBy(permissions.repository);
      return all.map((u) => ({
        id: u.id,
        name: u.name,
        isAdmin: u.isAdmin,
        disabled: u.disabled,
        hasPassword: u.passwordHash !== null,
        createdAt: u.createdAt,
        grants: grants
          .filter((g) => g.userId === u.id)
          .map((g) => ({ repository: g.repository, actions: actionsOf(parseActions(g.actions)) })),
      }));
    },

    async grant(name, repository, actions, by) {
      checkGrantRepository(repository);
      const level = parseActions(actions);
      const u = await requireUser(name);
      const next = Math.max(level, await grantOn(u.id, repository));
      await setGrantLevel(u.id, repository, next);
      auditWriter.write({ actor: by ?? "system", action: "user.grant", repository, detail: { user: name, actions: actionsOf(next).join(",") } });
      return (await userInfo(name))!;
    },

    async revoke(name, repository, action, by) {
      checkGrantRepository(repository);
      const u = await requireUser(name);
      const had = await grantOn(u.id, repository);
      const next = action === undefined ? 0 : Math.min(had, actionLevel(action) - 1);
      await setGrantLevel(u.id, repository, next);
      auditWriter.write({ actor: by ?? "system", action: "user.revoke", repository, detail: { user: name, actions: actionsOf(next).join(",") } });
      return (await userInfo(name))!;
    },

    async createToken(user, t) {
      const u = await requireUser(user);
      const now = Date.now();
      const expiresAt = expiryOf(t, now);
      const m = mintToken();
      const name = t?.name ?? `api-${new Date(now).toISOString().slice(0, 10)}`;
      await db.insert(apiTokens).values({ id: m.id, userId: u.id, name, kind: "api", secretHash: sha256Hex(m.secret), createdAt: now, expiresAt });
      log.info("api token created", { id: m.id, user, expiresAt });
      auditWriter.write({ actor: t?.by ?? "system", action: "token.create", detail: { user, id: m.id, name, expiresAt } });
      return { id: m.id, token: m.token, expiresAt };
    },

    async listTokens(f) {
      const conds = [];
      if (f?.user) conds.push(eq(users.name, f.user));
      if (f?.kind) conds.push(eq(apiTokens.kind, f.kind));
      const found = await db
        .select({
          id: apiTokens.id,
          userId: apiTokens.userId,
          user: users.name,
          name: apiTokens.name,
          kind: apiTokens.kind,
          createdAt: apiTokens.createdAt,
          expiresAt: apiTokens.expiresAt,
          lastUsedAt: apiTokens.lastUsedAt,
        })
        .from(apiTokens)
        .innerJoin(users, eq(users.id, apiTokens.userId))
        .where(conds.length ? and(...conds) : undefined)
        .orderBy(sql`${apiTokens.createdAt} desc`, apiTokens.id);
      return found.map((r) => ({ ...r, kind: r.kind === "s3" ? "s3" : "api" }));
    },

    async revokeToken(id, by) {
      const row = await tokenById(id);
      if (!row) return false;
      await db.delete(apiTokens).where(eq(apiTokens.id, id));
      touched.delete(id);
      log.info(row.kind === "s3" ? "access key revoked" : "api token revoked", { id, user: row.name });
      auditWriter.write({ actor: by ?? "system", action: row.kind === "s3" ? "s3key.revoke" : "token.revoke", detail: { user: row.name, id } });
      return true;
    },

    async createAccessKey(user, t) {
      const u = await requireUser(user);
      const now = Date.now();
      const expiresAt = expiryOf(t, now);
      const accessKeyId = newAccessKeyId();
      const secretAccessKey = newSecretAccessKey();
      const name = t?.name ?? `s3-${new Date(now).toISOString().slice(0, 10)}`;
      await ring.init();
      await db.insert(apiTokens).values({
          id: accessKeyId,
          userId: u.id,
          name,
          kind: "s3",
          secretHash: sha256Hex(secretAccessKey),
          sealedSecret: seal(ring, secretAccessKey, accessKeyId),
          createdAt: now,
          expiresAt,
        });
      log.info("access key created", { keyId: accessKeyId, user, expiresAt });
      auditWriter.write({ actor: t?.by ?? "system", action: "s3key.create", detail: { user, keyId: accessKeyId, name, expiresAt } });
      return { accessKeyId, secretAccessKey, expiresAt };
    },

    async lookupAccessKey(id) {
      if (id.length > 128) return null;
      if (!ring.ready()) await ring.init();
      const row = await tokenById(id);
      if (!row || row.kind !== "s3" || row.sealedSecret === null || row.disabled) return null;
      if (row.expiresAt !== null && row.expiresAt <= Date.now()) return null;
      let secret: string;
      try {
        secret = unseal(ring, row.sealedSecret, row.id);
      } catch (e) {
        log.error("cannot unseal access key", { keyId: row.id, error: e instanceof Error ? e.message : String(e) });
        return null;
      }
      touch(row.id, row.lastUsedAt);
      return { principal: await principalOf({ id: row.userId, name: row.name, isAdmin: row.isAdmin }, "s3"), secret };
    },

    signToken: (claims, ttlSeconds) => signJwt(ring, claims, ttlSeconds),
    verifyToken: verifyRegistryJwt,

    audit: (r) => auditWriter.write(r),
    flush: async () => {
      await auditWriter.flush();
    },
  };
  return core;
}

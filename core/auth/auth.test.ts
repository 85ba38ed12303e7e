/** Tests of the auth core against a real metadata database (SQLite in a temp dir, and Postgres): credentials, permissions, tokens, S3 keys, registry JWTs, audit, bootstrap, logs. */
import { afterEach, beforeEach, describe, expect, spyOn, test } from "bun:test";
import crypto from "node:crypto";
import { count, eq } from "drizzle-orm";
import { first, tablesOf, type OpenDb, type OpenSqliteDb, type Tables } from "../db/index.ts";
import { createLogger } from "../log.ts";
import type { Action, Principal } from "../plugin.ts";
import type { AuthConfig, RepositoryConfig } from "../config/types.ts";
import { VaultError } from "../errors.ts";
import { metadataDrivers, useMetadata, type TestMetadata } from "../../test/helpers/metadata.ts";
import { ANONYMOUS, createAuthCore, setRemoteAddress, type AuthCore } from "./index.ts";
import { KeyRing, secretMatches, sha256Hex } from "./secrets.ts";
import { signJwt, verifyJwt } from "./jwt.ts";
import { PasswordVerifier } from "./passwords.ts";

let md: TestMetadata;
let opened: OpenDb;
let logLines: string[];
let auth: AuthCore;
let apiTokens: Tables["apiTokens"];
let auditLog: Tables["auditLog"];
let settings: Tables["settings"];
let users: Tables["users"];
let permissions: Tables["permissions"];

async function freshDb(): Promise<OpenDb> {
  const o = await md.open();
  ({ apiTokens, auditLog, settings, users, permissions } = tablesOf(o.db));
  return o;
}

function makeAuth(config?: AuthConfig, env: Record<string, string | undefined> = {}): AuthCore {
  return createAuthCore({ db: opened.db, config, env, log: createLogger("debug", {}, (l) => logLines.push(l)) });
}

/** makeAuth, once its keys are loaded (signToken / verifyToken right away also on Postgres). */
async function readyAuth(config?: AuthConfig): Promise<AuthCore> {
  const a = makeAuth(config);
  await a.ready();
  return a;
}

/** Resolves once `cond` holds (polled; for effects a background write makes), at most 5 s. */
async function waitFor(cond: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await cond()) return;
    await Bun.sleep(10);
  }
  throw new Error("condition not met within 5 s");
}

const repo = (name: string, extra: Partial<RepositoryConfig> = {}): RepositoryConfig => ({ name, format: "pypi", type: "hosted", ...extra });
const req = (authorization?: string, headers: Record<string, string> = {}) =>
  new Request("http://127.0.0.1/x", { headers: authorization ? { authorization, ...headers } : headers });
const basic = (user: string, pass: string) => req("Basic " + Buffer.from(`${user}:${pass}`).toString("base64"));
const bearer = (t: string) => req("Bearer " + t);

async function expectStatus(p: Promise<unknown>, status: number): Promise<VaultError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(VaultError);
    expect((e as VaultError).status).toBe(status);
    return e as VaultError;
  }
  throw new Error(`expected VaultError ${status}, got success`);
}

for (const driver of metadataDrivers()) describe(`auth (${driver})`, () => {
const suiteMd = useMetadata(driver);

beforeEach(async () => {
  md = suiteMd;
  opened = await freshDb();
  logLines = [];
  auth = makeAuth();
  await auth.ready();
});
afterEach(() => opened.close());

describe("authenticate", () => {
  test("no Authorization → anonymous; Basic with empty user and password → anonymous", async () => {
    const svc = auth.forRepository(repo("pypi"));
    expect(await svc.authenticate(req())).toEqual(ANONYMOUS);
    expect(await svc.authenticate(basic("", ""))).toEqual(ANONYMOUS);
  });

  test("Basic user:password", async () => {
    await auth.addUser({ name: "alice", password: "correct horse" });
    const p = await auth.forRepository(repo("pypi")).authenticate(basic("alice", "correct horse"));
    expect(p).toMatchObject({ name: "alice", isAdmin: false, via: "basic" });
    expect(typeof p.userId).toBe("number");
  });

  test("bad password, unknown user, password-less user → 401 with a Basic challenge (no anonymous fallback)", async () => {
    await auth.addUser({ name: "alice", password: "correct horse" });
    await auth.addUser({ name: "robot" });
    const svc = auth.forRepository(repo("pypi"));
    const e = await expectStatus(svc.authenticate(basic("alice", "wrong")), 401);
    expect(e.headers["www-authenticate"]).toBe('Basic realm="vault"');
    await expectStatus(svc.authenticate(basic("mallory", "whatever")), 401);
    await expectStatus(svc.authenticate(basic("robot", "")), 401);
    await expectStatus(svc.authenticate(req("Basic !!!not-base64")), 401);
    await expectStatus(svc.authenticate(req("Basic " + btoa("no-colon"))), 401);
    await expectStatus(svc.authenticate(req("Digest username=alice")), 401);
    await expectStatus(svc.authenticate(bearer("not-a-token")), 401);
  });

  test("API token via Basic user:token, Basic __token__:token and Bearer", async () => {
    await auth.addUser({ name: "alice" });
    const { token, id } = await auth.createToken("alice", { name: "ci" });
    expect(token).toMatch(/^vault_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(token).toContain(id);
    const svc = auth.forRepository(repo("pypi"));
    expect(await svc.authenticate(basic("alice", token))).toMatchObject({ name: "alice", via: "token" });
    expect(await svc.authenticate(basic("__token__", token))).toMatchObject({ name: "alice", via: "token" });
    expect(await svc.authenticate(bearer(token))).toMatchObject({ name: "alice", via: "token" });
  });

  test("token with another user name, wrong secret, or __token__ with a password → 401", async () => {
    await auth.addUser({ name: "alice", password: "pw-alice-1" });
    await auth.addUser({ name: "bob" });
    const { token, id } = await auth.createToken("alice");
    const svc = auth.forRepository(repo("pypi"));
    await expectStatus(svc.authenticate(basic("bob", token)), 401);
    const forged = `vault_${id}_${crypto.randomBytes(32).toString("base64url")}`;
    await expectStatus(svc.authenticate(bearer(forged)), 401);
    await expectStatus(svc.authenticate(basic("__token__", forged)), 401);
    await expectStatus(svc.authenticate(basic("__token__", "pw-alice-1")), 401);
  });

  test("revoked and expired tokens → 401", async () => {
    await auth.addUser({ name: "alice" });
    const a = await auth.createToken("alice");
    const b = await auth.createToken("alice", { expiresInSeconds: 3600 });
    const svc = auth.forRepository(repo("pypi"));
    expect(await svc.authenticate(bearer(a.token))).toMatchObject({ name: "alice" });
    expect(await svc.authenticate(bearer(b.token))).toMatchObject({ name: "alice" });
    expect(b.expiresAt).toBeGreaterThan(Date.now());

    expect(await auth.revokeToken(a.id)).toBe(true);
    expect(await auth.revokeToken(a.id)).toBe(false);
    await expectStatus(svc.authenticate(bearer(a.token)), 401);

    // move the expiry into the past in the real database rather than waiting an hour
    await opened.db.update(apiTokens).set({ expiresAt: Date.now() - 1 }).where(eq(apiTokens.id, b.id));
    const e = await expectStatus(svc.authenticate(bearer(b.token)), 401);
    expect(e.message).toBe("token expired");
  });

  test("disabled users cannot authenticate with password or token", async () => {
    await auth.addUser({ name: "alice", password: "pw-alice-1" });
    const { token } = await auth.createToken("alice");
    const svc = auth.forRepository(repo("pypi"));
    await svc.authenticate(basic("alice", "pw-alice-1")); // now cached
    await auth.setDisabled("alice", true);
    await expectStatus(svc.authenticate(basic("alice", "pw-alice-1")), 401);
    await expectStatus(svc.authenticate(bearer(token)), 401);
    await auth.setDisabled("alice", false);
    expect(await svc.authenticate(bearer(token))).toMatchObject({ name: "alice" });
  });

  test("password change (also by another process) invalidates the cached verification", async () => {
    await auth.addUser({ name: "alice", password: "old-password" });
    const svc = auth.forRepository(repo("pypi"));
    await svc.authenticate(basic("alice", "old-password"));
    // a second core over the same database file, like the CLI changing the password while the server runs
    const other = await md.reopen(opened);
    const cli = createAuthCore({ db: other.db, log: createLogger("error", {}, () => {}) });
    await cli.setPassword("alice", "new-password");
    other.close();
    await expectStatus(svc.authenticate(basic("alice", "old-password")), 401);
    expect(await svc.authenticate(basic("alice", "new-password"))).toMatchObject({ name: "alice" });
  });

  test("lastUsedAt is written lazily (once per minute), not per request", async () => {
    await auth.addUser({ name: "alice" });
    const { token, id } = await auth.createToken("alice");
    const svc = auth.forRepository(repo("pypi"));
    const row = async () => first(await opened.db.select().from(apiTokens).where(eq(apiTokens.id, id)))!;
    expect((await row()).lastUsedAt).toBeNull();
    await svc.authenticate(bearer(token));
    // Postgres: the lastUsedAt update runs in the background
    await waitFor(async () => (await row()).lastUsedAt !== null);
    const firstUse = (await row()).lastUsedAt;
    // SQLite counts every row change of the connection: no write may happen for the next 20 uses
    const changes = () => (md.driver === "sqlite" ? ((opened as OpenSqliteDb).sqlite.query("select total_changes() as n").get() as { n: number }).n : 0);
    const before = changes();
    for (let i = 0; i < 20; i++) await svc.authenticate(bearer(token));
    expect(changes()).toBe(before);
    expect((await row()).lastUsedAt).toBe(firstUse);
  });

  test("token secrets are stored as sha256 only and compared with crypto.timingSafeEqual", async () => {
    await auth.addUser({ name: "alice" });
    const { token, id } = await auth.createToken("alice");
    const secret = token.slice(`vault_${id}_`.length);
    const stored = first(await opened.db.select().from(apiTokens).where(eq(apiTokens.id, id)))!;
    expect(stored.secretHash).toBe(sha256Hex(secret));
    expect(JSON.stringify(stored)).not.toContain(secret);
    expect(stored.sealedSecret).toBeNull();

    const spy = spyOn(crypto, "timingSafeEqual");
    try {
      const svc = auth.forRepository(repo("pypi"));
      await svc.authenticate(bearer(token));
      expect(spy).toHaveBeenCalledTimes(1);
      await expectStatus(svc.authenticate(bearer(`vault_${id}_${"A".repeat(43)}`)), 401);
      expect(spy).toHaveBeenCalledTimes(2);
      await svc.authenticate(bearer(auth.signToken({ sub: "alice" }, 60)));
      expect(spy).toHaveBeenCalledTimes(3); // the JWT signature check too
    } finally {
      spy.mockRestore();
    }
    expect(secretMatches(secret, stored.secretHash)).toBe(true);
    expect(secretMatches(secret + "x", stored.secretHash)).toBe(false);
    expect(secretMatches(secret, "abcd")).toBe(false);
  });
});

describe("password cache", () => {
  test("a repeated verification does not rerun argon2; a changed hash does", async () => {
    const v = new PasswordVerifier();
    const h1 = await Bun.password.hash("pw1", { algorithm: "argon2id" });
    expect(await v.verify("alice", "pw1", h1)).toBe(true);
    expect(await v.verify("alice", "pw1", h1)).toBe(true);
    expect(v.argonRuns).toBe(1);
    expect(await v.verify("alice", "nope", h1)).toBe(false);
    expect(await v.verify("alice", "nope", h1)).toBe(false);
    expect(v.argonRuns).toBe(2);
    const h2 = await Bun.password.hash("pw2", { algorithm: "argon2id" });
    expect(await v.verify("alice", "pw1", h2)).toBe(false);
    expect(v.argonRuns).toBe(3);
    // concurrent checks of the same credentials share one argon2 run
    const v2 = new PasswordVerifier();
    const rs = await Promise.all(Array.from({ length: 10 }, () => v2.verify("alice", "pw2", h2)));
    expect(rs.every(Boolean)).toBe(true);
    expect(v2.argonRuns).toBe(1);
    // unknown users cost an argon2 run too (no timing oracle), and never succeed
    expect(await v2.verify("ghost", "pw2", null)).toBe(false);
    expect(v2.argonRuns).toBe(2);
  });

  test("argon2 runs are bounded: at most maxConcurrent at once, a full queue fails fast without caching", async () => {
    const h = await Bun.password.hash("right", { algorithm: "argon2id" });
    const v = new PasswordVerifier({ maxConcurrent: 2 });
    const rs = await Promise.all(Array.from({ length: 8 }, (_, i) => v.verify("alice", i === 7 ? "right" : `guess-${i}`, h)));
    expect(rs.filter(Boolean)).toHaveLength(1);
    expect(v.argonRuns).toBe(8);
    expect(v.peakRunning).toBe(2);
    const tiny = new PasswordVerifier({ maxConcurrent: 1, maxQueued: 1 });
    const r3 = await Promise.all([tiny.verify("a", "g1", h), tiny.verify("a", "g2", h), tiny.verify("a", "right", h)]);
    expect(r3).toEqual([false, false, false]);
    expect(tiny.argonRuns).toBe(2);
    // the refused check was not cached as a failure
    expect(await tiny.verify("a", "right", h)).toBe(true);
  });

  test("stored passwords are argon2id PHC strings", async () => {
    await auth.addUser({ name: "alice", password: "pw-alice-1" });
    const row = first(await opened.db.select().from(users).where(eq(users.name, "alice")))!;
    expect(row.passwordHash).toStartWith("$argon2id$");
  });
});

describe("permissions", () => {
  async function principal(name: string, pass = "pw-" + name, core = auth): Promise<Principal> {
    return core.forRepository(repo("any")).authenticate(basic(name, pass));
  }

  test("matrix: implication read < write < delete < admin, * grants, per-repo grants, admins", async () => {
    await auth.addUser({ name: "reader", password: "pw-reader", grants: [{ repository: "*", actions: "read" }] });
    await auth.addUser({ name: "writer", password: "pw-writer", grants: [{ repository: "pypi-local", actions: "write" }] });
    await auth.addUser({ name: "deleter", password: "pw-deleter", grants: [{ repository: "*", actions: "delete" }] });
    await auth.addUser({ name: "repoadmin", password: "pw-repoadmin", grants: [{ repository: "pypi-local", actions: "admin" }] });
    await auth.addUser({ name: "root", password: "pw-root", admin: true });
    await auth.addUser({ name: "nobody", password: "pw-nobody" });

    const closed = makeAuth({ anonymousRead: false });
    const local = closed.forRepository(repo("pypi-local"));
    const other = closed.forRepository(repo("npm-local"));
    const P: Record<string, Principal> = { anonymous: ANONYMOUS };
    // principals made by the core that checks them (on Postgres `can` answers from the grants loaded with the principal)
    for (const n of ["reader", "writer", "deleter", "repoadmin", "root", "nobody"]) P[n] = await principal(n, undefined, closed);

    const acts: Action[] = ["read", "write", "delete", "admin"];
    const expected: Record<string, [string, string]> = {
      // who: [allowed on pypi-local, allowed on npm-local] as action initials
      anonymous: ["", ""],
      nobody: ["", ""],
      reader: ["r", "r"],
      writer: ["rw", ""],
      deleter: ["rwd", "rwd"],
      repoadmin: ["rwda", ""],
      root: ["rwda", "rwda"],
    };
    for (const [who, [onLocal, onOther]] of Object.entries(expected)) {
      const got = (svc: typeof local) => acts.filter((a) => svc.can(P[who], a)).map((a) => a[0]).join("");
      expect(`${who}:${got(local)}`).toBe(`${who}:${onLocal}`);
      expect(`${who}:${got(other)}`).toBe(`${who}:${onOther}`);
    }
  });

  test("a grant given or revoked through another core (node) counts from the user's next authentication there", async () => {
    await auth.addUser({ name: "late", password: "pw-late" });
    const node2 = makeAuth();
    const svc = node2.forRepository(repo("pypi-local"));
    expect(svc.can(await principal("late", undefined, node2), "write")).toBe(false);
    await auth.grant("late", "pypi-local", "write");
    expect(svc.can(await principal("late", undefined, node2), "write")).toBe(true);
    await auth.revoke("late", "pypi-local", "write");
    expect(svc.can(await principal("late", undefined, node2), "write")).toBe(false);
    expect(svc.can(await principal("late", undefined, node2), "read")).toBe(true);
  });

  test("anonymous read: config default true, config false, per-repository override both ways", async () => {
    const can = (cfg: AuthConfig | undefined, r: RepositoryConfig) => makeAuth(cfg).forRepository(r).can(ANONYMOUS, "read");
    expect(can(undefined, repo("a"))).toBe(true);
    expect(can({ anonymousRead: false }, repo("a"))).toBe(false);
    expect(can({ anonymousRead: false }, repo("a", { anonymousRead: true }))).toBe(true);
    expect(can({ anonymousRead: true }, repo("a", { anonymousRead: false }))).toBe(false);
    // never more than read
    const open = makeAuth().forRepository(repo("a"));
    expect(open.can(ANONYMOUS, "write")).toBe(false);
    expect(open.anonymousRead).toBe(true);
    // authenticated users without grants may read what anonymous may read
    await auth.addUser({ name: "nobody", password: "pw-nobody" });
    expect(open.can(await principal("nobody"), "read")).toBe(true);
    expect(open.can(await principal("nobody"), "write")).toBe(false);
  });

  test("require: 401 + WWW-Authenticate for anonymous, 403 for an authenticated user without the grant", async () => {
    await auth.addUser({ name: "reader", password: "pw-reader", grants: [{ repository: "pypi-local", actions: "read" }] });
    const svc = makeAuth({ anonymousRead: false }).forRepository(repo("pypi-local"));
    const e401 = await expectStatus(svc.require(req(), "read"), 401);
    expect(e401.headers["www-authenticate"]).toBe('Basic realm="vault"');
    expect((await svc.require(basic("reader", "pw-reader"), "read")).name).toBe("reader");
    const e403 = await expectStatus(svc.require(basic("reader", "pw-reader"), "write"), 403);
    expect(e403.code).toBe("VAULT_FORBIDDEN");
    await expectStatus(svc.require(basic("reader", "wrong"), "read"), 401);
  });

  test("grant adds, revoke lowers (implied actions kept), revoke without action removes; grants follow user removal", async () => {
    await auth.addUser({ name: "alice", password: "pw-alice" });
    let u = await auth.grant("alice", "pypi-local", "write");
    expect(u.grants).toEqual([{ repository: "pypi-local", actions: ["read", "write"] }]);
    u = await auth.grant("alice", "pypi-local", "read");
    expect(u.grants).toEqual([{ repository: "pypi-local", actions: ["read", "write"] }]);
    u = await auth.grant("alice", "*", "read,delete");
    expect(u.grants).toContainEqual({ repository: "*", actions: ["read", "write", "delete"] });
    u = await auth.revoke("alice", "pypi-local", "write");
    expect(u.grants).toContainEqual({ repository: "pypi-local", actions: ["read"] });
    u = await auth.revoke("alice", "*");
    expect(u.grants).toEqual([{ repository: "pypi-local", actions: ["read"] }]);
    await expectStatus(auth.grant("alice", "pypi-local", "fly"), 400);
    await expectStatus(auth.grant("alice", "Bad Repo", "read"), 400);
    await expectStatus(auth.grant("ghost", "pypi-local", "read"), 404);
    await auth.removeUser("alice");
    expect(await opened.db.select({ n: count() }).from(permissions)).toEqual([{ n: 0 }]);
  });
});

describe("users", () => {
  test("add, list, duplicate, bad names, remove (tokens go too), set admin", async () => {
    await auth.addUser({ name: "alice", password: "pw-alice" });
    await auth.addUser({ name: "ci-bot" });
    await expectStatus(auth.addUser({ name: "alice" }), 409);
    for (const bad of ["", "anonymous", "__token__", "a:b", "white space", "x".repeat(65)]) await expectStatus(auth.addUser({ name: bad }), 400);
    await expectStatus(auth.addUser({ name: "carol", password: "" }), 400);
    const list = await auth.listUsers();
    expect(list.map((u) => [u.name, u.hasPassword, u.isAdmin])).toEqual([
      ["alice", true, false],
      ["ci-bot", false, false],
    ]);
    const { token } = await auth.createToken("ci-bot");
    await auth.removeUser("ci-bot");
    await expectStatus(auth.removeUser("ci-bot"), 404);
    await expectStatus(auth.forRepository(repo("x")).authenticate(bearer(token)), 401);
    expect(await auth.listTokens()).toEqual([]);
    await auth.setAdmin("alice", true);
    expect((await auth.getUser("alice"))!.isAdmin).toBe(true);
    expect(await auth.getUser("ghost")).toBeNull();
  });

  test("verifyPassword and principalFor (login flows)", async () => {
    await auth.addUser({ name: "alice", password: "pw-alice" });
    expect(await auth.verifyPassword("alice", "pw-alice")).toMatchObject({ name: "alice", via: "basic" });
    await expectStatus(auth.verifyPassword("alice", "nope"), 401);
    expect(await auth.principalFor("alice")).toMatchObject({ name: "alice" });
    expect(await auth.principalFor("ghost")).toBeNull();
  });
});

describe("login flows through the repository AuthService (contract's optional members)", () => {
  test("npm adduser: verifyPassword → createToken → Bearer; logout revokes only one's own token", async () => {
    await auth.addUser({ name: "alice", password: "pw-alice" });
    await auth.addUser({ name: "bob", password: "pw-bob" });
    const svc = auth.forRepository(repo("npm-local"));
    const alice = await svc.verifyPassword("alice", "pw-alice");
    const t = await svc.createToken(alice, { name: "npm" });
    expect((await svc.authenticate(bearer(t.token))).name).toBe("alice");
    await expectStatus(svc.createToken(ANONYMOUS), 401);
    const bob = await svc.verifyPassword("bob", "pw-bob");
    expect(await svc.revokeToken(bob, t.token)).toBe(false);
    expect(await svc.revokeToken(alice, `vault_${t.id}_${"C".repeat(43)}`)).toBe(false);
    expect(await svc.revokeToken(alice, "garbage")).toBe(false);
    expect((await svc.authenticate(bearer(t.token))).name).toBe("alice");
    expect(await svc.revokeToken(alice, t.token)).toBe(true);
    await expectStatus(svc.authenticate(bearer(t.token)), 401);
    await auth.flush();
    const rows = await opened.db.select().from(auditLog);
    expect(rows.filter((r) => r.action === "token.create" || r.action === "token.revoke").map((r) => r.actor)).toEqual(["alice", "alice"]);
  });

  test("docker/Conan token: authenticate Basic → signToken; the JWT authenticates; S3 lookup via the service", async () => {
    await auth.addUser({ name: "alice", password: "pw-alice" });
    const svc = auth.forRepository(repo("docker"));
    const p = await svc.authenticate(basic("alice", "pw-alice"));
    const jwt = svc.signToken({ sub: p.name, access: [{ type: "repository", name: "docker/app", actions: ["pull"] }] }, 120);
    expect(svc.verifyToken(jwt).access).toEqual([{ type: "repository", name: "docker/app", actions: ["pull"] }]);
    expect((await svc.authenticate(bearer(jwt))).via).toBe("bearer");
    const k = await auth.createAccessKey("alice");
    expect((await svc.lookupAccessKey(k.accessKeyId))!.secret).toBe(k.secretAccessKey);
  });
});

describe("bootstrap", () => {
  test("admin from env, idempotent (no rehash on an unchanged password)", async () => {
    const a = makeAuth(undefined, { VAULT_ADMIN_USER: "boss", VAULT_ADMIN_PASSWORD: "env-password" });
    await a.bootstrap();
    const hash1 = first(await opened.db.select().from(users).where(eq(users.name, "boss")))!.passwordHash;
    await a.bootstrap();
    await makeAuth(undefined, { VAULT_ADMIN_USER: "boss", VAULT_ADMIN_PASSWORD: "env-password" }).bootstrap();
    const rows = await opened.db.select().from(users);
    expect(rows.map((r) => [r.name, r.isAdmin])).toEqual([["boss", true]]);
    expect(rows[0].passwordHash).toBe(hash1);
    expect(await a.forRepository(repo("x")).authenticate(basic("boss", "env-password"))).toMatchObject({ isAdmin: true });
    // default user name is admin
    await opened.close();
    opened = await freshDb();
    await makeAuth(undefined, { VAULT_ADMIN_PASSWORD: "only-password" }).bootstrap();
    expect(await opened.db.select({ n: users.name }).from(users)).toEqual([{ n: "admin" }]);
  });

  test("admin from config wins over env; a changed password, lost admin flag or disabled admin is repaired", async () => {
    const env = { VAULT_ADMIN_USER: "envadmin", VAULT_ADMIN_PASSWORD: "env-password" };
    await makeAuth({ admin: { user: "root", password: "first" } }, env).bootstrap();
    expect(await opened.db.select({ n: users.name }).from(users)).toEqual([{ n: "root" }]);
    await auth.setAdmin("root", false);
    await auth.setDisabled("root", true);
    const b = makeAuth({ admin: { user: "root", password: "second" } }, env);
    await b.bootstrap();
    const svc = b.forRepository(repo("x"));
    expect(await svc.authenticate(basic("root", "second"))).toMatchObject({ isAdmin: true });
    await expectStatus(svc.authenticate(basic("root", "first")), 401);
    await expectStatus(makeAuth({ admin: { user: "root", password: "" } }).bootstrap(), 500);
    // nothing configured: nothing created
    await opened.close();
    opened = await freshDb();
    await makeAuth(undefined, {}).bootstrap();
    expect(await opened.db.select().from(users)).toEqual([]);
  });

  test("two nodes bootstrapping the same admin at once end with one admin and no error", async () => {
    const env = { VAULT_ADMIN_PASSWORD: "race-password" };
    await Promise.all([makeAuth(undefined, env).bootstrap(), makeAuth(undefined, env).bootstrap()]);
    expect(await opened.db.select({ n: users.name, a: users.isAdmin }).from(users)).toEqual([{ n: "admin", a: true }]);
  });

  test("declared S3 access keys are created (with their user) and are idempotent", async () => {
    const cfg: AuthConfig = { accessKeys: [{ id: "AKIAEXAMPLEKEY000001", secret: "declared-secret-1", user: "s3user" }] };
    await makeAuth(cfg).bootstrap();
    await makeAuth(cfg).bootstrap();
    const a = makeAuth(cfg);
    const hit = await a.lookupAccessKey("AKIAEXAMPLEKEY000001");
    expect(hit).toMatchObject({ secret: "declared-secret-1", principal: { name: "s3user", via: "s3" } });
    expect(await opened.db.select().from(apiTokens)).toHaveLength(1);
    await a.flush();
    const auditCount = (await opened.db.select().from(auditLog)).length;
    await makeAuth({ accessKeys: [{ id: "AKIAEXAMPLEKEY000001", secret: "rotated-secret-2", user: "s3user" }] }).bootstrap();
    expect((await a.lookupAccessKey("AKIAEXAMPLEKEY000001"))!.secret).toBe("rotated-secret-2");
    await waitFor(async () => (await opened.db.select().from(auditLog)).length === auditCount + 1);
    await expectStatus(makeAuth({ accessKeys: [{ id: "bad id!", secret: "declared-secret-1", user: "s3user" }] }).bootstrap(), 500);
  });
});

describe("registry tokens (JWT)", () => {
  test("sign → verify round trip; accepted as Bearer by authenticate; claims kept", async () => {
    await auth.addUser({ name: "alice" });
    const access = [{ type: "repository", name: "docker/library/alpine", actions: ["pull"] }];
    const jwt = auth.signToken({ sub: "alice", access }, 300);
    const claims = auth.verifyToken(jwt);
    expect(claims).toMatchObject({ sub: "alice", access, iss: "artifact-vault" });
    expect(claims.exp! - claims.iat!).toBe(300);
    const header = JSON.parse(Buffer.from(jwt.split(".")[0], "base64url").toString());
    expect(header).toMatchObject({ alg: "HS256", typ: "JWT" });
    expect(await auth.forRepository(repo("docker")).authenticate(bearer(jwt))).toMatchObject({ name: "alice", via: "bearer" });
    expect(await auth.forRepository(repo("docker")).authenticate(bearer(auth.signToken({ sub: "" }, 60)))).toEqual(ANONYMOUS);
    await expectStatus(auth.forRepository(repo("docker")).authenticate(bearer(auth.signToken({ sub: "ghost" }, 60))), 401);
  });

  test("expired, tampered, alg=none, foreign-key tokens → 401", async () => {
    const ring = new KeyRing(opened.db);
    await ring.init();
    const now = Date.now();
    const old = signJwt(ring, { sub: "alice" }, 60, now - 61_000);
    expect((() => { try { verifyJwt(ring, old, now); } catch (e) { return (e as VaultError).message; } })()).toBe("token expired");
    expect(verifyJwt(ring, old, now - 30_000).sub).toBe("alice");

    const good = auth.signToken({ sub: "alice" }, 60);
    const [h, p, s] = good.split(".");
    const forgedPayload = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, "base64url").toString()), sub: "root" })).toString("base64url");
    const none = Buffer.from(JSON.stringify({ alg: "none", typ: "JWT", kid: JSON.parse(Buffer.from(h, "base64url").toString()).kid })).toString("base64url");
    const flipped = s.slice(0, -2) + (s.endsWith("AA") ? "BB" : "AA");
    for (const bad of [`${h}.${forgedPayload}.${s}`, `${none}.${p}.`, `${none}.${p}.${s}`, `${h}.${p}.${flipped}`, "a.b", ""]) {
      expect(() => auth.verifyToken(bad)).toThrow(VaultError);
    }
    const foreign = makeAuth({ tokenSecret: "x".repeat(40) }).signToken({ sub: "alice" }, 60);
    const e = (() => { try { auth.verifyToken(foreign); } catch (err) { return err as VaultError; } })();
    expect(e?.status).toBe(401);
    expect(() => auth.signToken({ sub: "alice" }, 0)).toThrow(RangeError);
  });

  test("secret: generated once into the settings table, or derived from auth.tokenSecret (then nothing is stored)", async () => {
    const t1 = auth.signToken({ sub: "a" }, 60);
    expect((await readyAuth()).verifyToken(t1).sub).toBe("a"); // another core (node) over the same db agrees
    const stored = (await opened.db.select().from(settings)).map((r) => r.key);
    expect(stored).toContain("auth.jwt_secret");

    await opened.close();
    opened = await freshDb();
    const withSecret = await readyAuth({ tokenSecret: "a-long-configured-secret-0123456789abcdef" });
    const t2 = withSecret.signToken({ sub: "b" }, 60);
    expect((await readyAuth({ tokenSecret: "a-long-configured-secret-0123456789abcdef" })).verifyToken(t2).sub).toBe("b");
    const k = await withSecret.addUser({ name: "u" }).then(() => withSecret.createAccessKey("u"));
    expect((await withSecret.lookupAccessKey(k.accessKeyId))!.secret).toBe(k.secretAccessKey);
    expect(await opened.db.select().from(settings)).toEqual([]);
  });

  test("tokens signed and keys sealed under the generated keys stay valid after tokenSecret is configured", async () => {
    await auth.addUser({ name: "u" });
    const jwt = auth.signToken({ sub: "u" }, 60);
    const k = await auth.createAccessKey("u");
    const later = await readyAuth({ tokenSecret: "introduced-later-0123456789abcdefghij" });
    expect(later.verifyToken(jwt).sub).toBe("u");
    expect((await later.lookupAccessKey(k.accessKeyId))!.secret).toBe(k.secretAccessKey);
  });
});

describe("S3 access keys", () => {
  test("create → lookup round trip; secret sealed (not plaintext) in the db; listed without secret", async () => {
    await auth.addUser({ name: "alice", grants: [{ repository: "objects", actions: "write" }] });
    const k = await auth.createAccessKey("alice", { name: "laptop" });
    expect(k.accessKeyId).toMatch(/^VK[0-9A-F]{18}$/);
    expect(k.secretAccessKey).toHaveLength(40);
    const hit = (await auth.lookupAccessKey(k.accessKeyId))!;
    expect(hit.secret).toBe(k.secretAccessKey);
    expect(hit.principal).toMatchObject({ name: "alice", via: "s3", isAdmin: false });
    expect(auth.forRepository(repo("objects")).can(hit.principal, "write")).toBe(true);

    const row = first(await opened.db.select().from(apiTokens).where(eq(apiTokens.id, k.accessKeyId)))!;
    expect(row.kind).toBe("s3");
    expect(row.sealedSecret).toMatch(/^v1\.[0-9a-f]{16}\./);
    const raw = JSON.stringify(await opened.db.select().from(apiTokens));
    expect(raw).not.toContain(k.secretAccessKey);
    expect(JSON.stringify(await auth.listTokens({ user: "alice" }))).not.toContain(k.secretAccessKey);
    expect((await auth.listTokens({ kind: "s3" })).map((t) => t.id)).toEqual([k.accessKeyId]);

    // an S3 secret is not an API token, and an API token is not an access key
    await expectStatus(auth.forRepository(repo("objects")).authenticate(basic(k.accessKeyId, k.secretAccessKey)), 401);
    const api = await auth.createToken("alice");
    expect(await auth.lookupAccessKey(api.id)).toBeNull();
    expect(await auth.lookupAccessKey("VKNOSUCHKEY000000000")).toBeNull();
  });

  test("expired, revoked, disabled owner, tampered or moved sealed value → null", async () => {
    await auth.addUser({ name: "alice" });
    const a = await auth.createAccessKey("alice");
    const b = await auth.createAccessKey("alice", { expiresInSeconds: 60 });
    expect(await auth.lookupAccessKey(b.accessKeyId)).not.toBeNull();
    await opened.db.update(apiTokens).set({ expiresAt: Date.now() - 1 }).where(eq(apiTokens.id, b.accessKeyId));
    expect(await auth.lookupAccessKey(b.accessKeyId)).toBeNull();

    await auth.setDisabled("alice", true);
    expect(await auth.lookupAccessKey(a.accessKeyId)).toBeNull();
    await auth.setDisabled("alice", false);

    const c = await auth.createAccessKey("alice");
    const sealedA = first(await opened.db.select().from(apiTokens).where(eq(apiTokens.id, a.accessKeyId)))!.sealedSecret!;
    // the sealed value is bound to its key id: copying it onto another row does not open
    await opened.db.update(apiTokens).set({ sealedSecret: sealedA }).where(eq(apiTokens.id, c.accessKeyId));
    expect(await auth.lookupAccessKey(c.accessKeyId)).toBeNull();
    const bytes = Buffer.from(sealedA.split(".")[2], "base64url");
    bytes[14] ^= 1;
    await opened.db
      .update(apiTokens)
      .set({ sealedSecret: sealedA.split(".").slice(0, 2).join(".") + "." + bytes.toString("base64url") })
      .where(eq(apiTokens.id, a.accessKeyId));
    expect(await auth.lookupAccessKey(a.accessKeyId)).toBeNull();

    await auth.revokeToken(c.accessKeyId);
    expect(await auth.lookupAccessKey(c.accessKeyId)).toBeNull();
  });
});

describe("audit", () => {
  test("repository audit rows carry actor, action, repository, path, detail, remote address and x-request-id", async () => {
    await auth.addUser({ name: "alice", password: "pw-alice", grants: [{ repository: "pypi-local", actions: "write" }] });
    const svc = auth.forRepository(repo("pypi-local"));
    const r = new Request("http://127.0.0.1/pypi-local/", {
      method: "POST",
      headers: { authorization: "Basic " + btoa("alice:pw-alice"), "x-request-id": "req-123" },
    });
    setRemoteAddress(r, "127.0.0.9");
    const p = await svc.require(r, "write");
    svc.audit({ principal: p, action: "upload", path: "packages/demo-1.0.tar.gz", detail: { sizeBytes: 42, password: "leak?" }, req: r });
    svc.audit({ principal: p, action: "delete", path: "packages/old.tar.gz" });
    await auth.flush();
    const rows = await opened.db.select().from(auditLog).where(eq(auditLog.repository, "pypi-local"));
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatchObject({ actor: "alice", action: "upload", path: "packages/demo-1.0.tar.gz", remoteAddr: "127.0.0.9", requestId: "req-123" });
    expect(JSON.parse(rows[0].detail!)).toEqual({ sizeBytes: 42, password: "[redacted]" });
    expect(rows[1]).toMatchObject({ actor: "alice", action: "delete", remoteAddr: null, requestId: null, detail: null });
    expect(rows[0].at).toBeGreaterThan(Date.now() - 60_000);
  });

  test("rows are on disk as soon as audit() returns (SQLite), or once flush() resolves (Postgres); visible from another connection", async () => {
    const svc = auth.forRepository(repo("pypi-local"));
    svc.audit({ principal: ANONYMOUS, action: "upload", path: "x" });
    if (md.driver === "postgres") await auth.flush();
    const other = await md.reopen(opened);
    expect((await other.db.select().from(auditLog)).map((r) => r.action)).toEqual(["upload"]);
    await other.close();
  });

  test("user and token management is audited, without secrets", async () => {
    await auth.addUser({ name: "alice", password: "pw-alice-secret", by: "cli:test" });
    const t = await auth.createToken("alice", { by: "cli:test" });
    const k = await auth.createAccessKey("alice", { by: "cli:test" });
    await auth.setPassword("alice", "pw-alice-secret-2", "cli:test");
    await auth.revokeToken(t.id, "cli:test");
    await auth.flush();
    const rows = await opened.db.select().from(auditLog);
    expect(rows.map((r) => r.action)).toEqual(["user.add", "token.create", "s3key.create", "user.passwd", "token.revoke"]);
    expect(rows.every((r) => r.actor === "cli:test")).toBe(true);
    const all = JSON.stringify(rows);
    // the secret is everything after `vault_<id>_` (base64url: it may itself contain "_")
    const secret = t.token.slice(t.token.indexOf("_", t.token.indexOf("_") + 1) + 1);
    expect(secret.length).toBe(43);
    for (const s of ["pw-alice-secret", t.token, secret, k.secretAccessKey]) expect(all).not.toContain(s);
  });
});

describe("logs", () => {
  test("no secret appears in any log line (debug level, successes and failures)", async () => {
    const secrets: string[] = ["admin-pass-XYZ", "alice-pass-QRS", "wrong-pass-LMN", "new-pass-TUV", "declared-s3-secret-HIJ"];
    const a = makeAuth(
      { accessKeys: [{ id: "AKIADECLARED00000001", secret: "declared-s3-secret-HIJ", user: "s3u" }] },
      { VAULT_ADMIN_PASSWORD: "admin-pass-XYZ" },
    );
    await a.bootstrap();
    await a.addUser({ name: "alice", password: "alice-pass-QRS" });
    const svc = a.forRepository(repo("pypi"));
    await svc.authenticate(basic("alice", "alice-pass-QRS"));
    await expectStatus(svc.authenticate(basic("alice", "wrong-pass-LMN")), 401);
    await a.setPassword("alice", "new-pass-TUV");
    const t = await a.createToken("alice", { expiresInSeconds: 60 });
    secrets.push(t.token, t.token.slice(`vault_${t.id}_`.length));
    await svc.authenticate(bearer(t.token));
    await expectStatus(svc.authenticate(basic("bob", t.token)), 401);
    const forged = `vault_${t.id}_${"B".repeat(43)}`;
    secrets.push(forged);
    await expectStatus(svc.authenticate(bearer(forged)), 401);
    const k = await a.createAccessKey("alice");
    secrets.push(k.secretAccessKey);
    await a.lookupAccessKey(k.accessKeyId);
    const jwt = a.signToken({ sub: "alice" }, 60);
    secrets.push(jwt, jwt.split(".")[2]);
    await svc.authenticate(bearer(jwt));
    await a.revokeToken(t.id);
    await expectStatus(svc.authenticate(bearer(t.token)), 401);

    expect(logLines.length).toBeGreaterThan(5);
    const out = logLines.join("\n");
    for (const s of secrets) expect(out).not.toContain(s);
    // the settings keys never reach the logs either
    for (const r of await opened.db.select().from(settings)) expect(out).not.toContain(r.value);
  });
});
});

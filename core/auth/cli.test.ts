/** `vault user` / `vault token` run as child processes against a temp data dir; results checked through the auth core on the same SQLite file. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { openDb, type OpenDb } from "../db/index.ts";
import { settings } from "../db/schema.ts";
import { silentLogger } from "../log.ts";
import { tmpDataDir } from "../../test/helpers/tmp.ts";
import { createAuthCore, type AuthCore } from "./index.ts";

const ROOT = resolve(import.meta.dir, "../..");
const BIN = join(ROOT, "core/cli/bin.ts");

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI (`bun core/cli/bin.ts <args>`) with optional stdin, bounded to 30 s. */
async function vault(args: string[], o: { stdin?: string; cwd?: string } = {}): Promise<Run> {
  const proc = Bun.spawn([process.execPath, BIN, ...args], {
    cwd: o.cwd ?? ROOT,
    stdin: o.stdin !== undefined ? new TextEncoder().encode(o.stdin) : "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, VAULT_ADMIN_PASSWORD: "", VAULT_ADMIN_USER: "" },
  });
  const timer = setTimeout(() => proc.kill(), 30_000);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

let dataDir: string;
let opened: OpenDb;
let auth: AuthCore;
const basic = (u: string, p: string) => new Request("http://127.0.0.1/", { headers: { authorization: "Basic " + btoa(`${u}:${p}`) } });
const bearer = (t: string) => new Request("http://127.0.0.1/", { headers: { authorization: "Bearer " + t } });
const repo = (name: string) => auth.forRepository({ name, format: "pypi", type: "hosted" });
const d = () => ["--data", dataDir];
/** A repository entry for configs the CLI only reads (nothing is served, so the upstream is never contacted). */
const pypiProxy = (name: string) => ({ name, format: "pypi", type: "proxy", upstream: "http://127.0.0.1:9/simple/" });

beforeAll(async () => {
  expect(existsSync(BIN)).toBe(true);
  dataDir = await tmpDataDir("vault-cli-auth-");
});
afterAll(() => opened?.close());

/** The in-process view of the same database (opened after the first command created it). */
function core(): AuthCore {
  if (!opened) {
    opened = openDb(join(dataDir, "vault.db"));
    auth = createAuthCore({ db: opened.db, log: silentLogger });
  }
  return auth;
}

describe("vault user", () => {
  test("add with --password-stdin and --grant; the password works over Basic and the grant applies", async () => {
    const r = await vault(["user", "add", "alice", "--password-stdin", "--grant", "pypi-local:write", "--grant", "*:read", ...d()], {
      stdin: "alice-pw-1\n",
    });
    expect(r.stderr).toContain("user alice added");
    expect(r.code).toBe(0);
    expect(r.stdout + r.stderr).not.toContain("alice-pw-1");
    core();
    const p = await repo("pypi-local").authenticate(basic("alice", "alice-pw-1"));
    expect(p.name).toBe("alice");
    expect(repo("pypi-local").can(p, "write")).toBe(true);
    expect(repo("pypi-local").can(p, "delete")).toBe(false);
    expect(repo("npm-local").can(p, "read")).toBe(true);
    expect(repo("npm-local").can(p, "write")).toBe(false);
  });

  test("add --admin --password, token-only user; list (table and --json)", async () => {
    expect((await vault(["user", "add", "root", "--admin", "--password", "root-pw-1", ...d()])).code).toBe(0);
    expect((await vault(["user", "add", "ci-bot", ...d()])).code).toBe(0);
    const table = await vault(["user", "list", ...d()]);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^NAME\s+ADMIN\s+PASSWORD/);
    expect(table.stdout).toMatch(/alice\s+no\s+yes\s+no\s+\S+\s+\*:read pypi-local:write/);
    const j = await vault(["user", "list", "--json", ...d()]);
    const list = JSON.parse(j.stdout) as { name: string; isAdmin: boolean; hasPassword: boolean }[];
    expect(list.map((u) => [u.name, u.isAdmin, u.hasPassword])).toEqual([
      ["alice", false, true],
      ["ci-bot", false, false],
      ["root", true, true],
    ]);
    expect(JSON.stringify(list)).not.toContain("argon2");
  });

  test("passwd from stdin replaces the password", async () => {
    const r = await vault(["user", "passwd", "alice", ...d()], { stdin: "alice-pw-2\n" });
    expect(r.code).toBe(0);
    await expect(repo("x").authenticate(basic("alice", "alice-pw-1"))).rejects.toMatchObject({ status: 401 });
    expect((await repo("x").authenticate(basic("alice", "alice-pw-2"))).name).toBe("alice");
  });

  test("grant and revoke", async () => {
    const cfg = join(dataDir, "grant.config.json");
    await Bun.write(cfg, JSON.stringify({ repositories: [pypiProxy("npm-local")] }));
    const c = () => ["--config", cfg, ...d()];
    expect((await vault(["user", "grant", "ci-bot", "npm-local", "delete", ...c()])).stderr).toContain("ci-bot on npm-local: read,write,delete");
    expect((await vault(["user", "revoke", "ci-bot", "npm-local", "write", ...c()])).stderr).toContain("ci-bot on npm-local: read");
    expect((await core().getUser("ci-bot"))!.grants).toEqual([{ repository: "npm-local", actions: ["read"] }]);
    expect((await vault(["user", "revoke", "ci-bot", "npm-local", ...c()])).code).toBe(0);
    expect((await core().getUser("ci-bot"))!.grants).toEqual([]);
  });

  test("grant refuses a repository the config does not define (exit 2, names it and the configured ones); '*' passes", async () => {
    const cfg = join(dataDir, "grant.config.json");
    await Bun.write(cfg, JSON.stringify({ repositories: [pypiProxy("npm-local"), pypiProxy("files")] }));
    const r = await vault(["user", "grant", "ci-bot", "npm-locl", "read", "--config", cfg, ...d()]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown repository "npm-locl"');
    expect(r.stderr).toContain("configured repositories: npm-local, files");
    expect((await core().getUser("ci-bot"))!.grants).toEqual([]);
    const all = await vault(["user", "grant", "ci-bot", "*", "read", "--config", cfg, ...d()]);
    expect(all.code).toBe(0);
    expect(all.stderr).toContain("ci-bot on *: read");
    expect((await vault(["user", "revoke", "ci-bot", "*", ...d()])).code).toBe(0);
    expect((await core().getUser("ci-bot"))!.grants).toEqual([]);
  });

  test("grant resolves seed-style backends: a backend's repository is known, a raw-looking name is not", async () => {
    const cfg = join(dataDir, "seed.config.yml");
    await Bun.write(cfg, "backends:\n  - type: http\n    config:\n      prefix: /apache/\n      base_url: http://127.0.0.1:9/archive\n");
    const ok = await vault(["user", "grant", "ci-bot", "apache", "read", "--config", cfg, ...d()]);
    expect(ok.stderr).toContain("ci-bot on apache: read");
    expect(ok.code).toBe(0);
    const bad = await vault(["user", "grant", "ci-bot", "pypi", "read", "--config", cfg, ...d()]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('unknown repository "pypi"');
    expect(bad.stderr).toContain("configured repositories: apache");
    expect((await core().getUser("ci-bot"))!.grants).toEqual([{ repository: "apache", actions: ["read"] }]);
    expect((await vault(["user", "revoke", "ci-bot", "apache", ...d()])).code).toBe(0);
  });

  test("grant without any config file is refused for a named repository, allowed for '*'", async () => {
    const cwd = await tmpDataDir("vault-cli-noconfig-");
    const r = await vault(["user", "grant", "ci-bot", "files", "read", ...d()], { cwd });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown repository "files": no config file found (use --config FILE)');
    const all = await vault(["user", "grant", "ci-bot", "*", "read", ...d()], { cwd });
    expect(all.code).toBe(0);
    expect((await vault(["user", "revoke", "ci-bot", "*", ...d()], { cwd })).code).toBe(0);
    expect((await core().getUser("ci-bot"))!.grants).toEqual([]);
  });

  test("errors: duplicate (1), unknown user (1), bad name / action / subcommand / option (2)", async () => {
    expect((await vault(["user", "add", "alice", ...d()])).code).toBe(1);
    expect((await vault(["user", "remove", "ghost", ...d()])).code).toBe(1);
    expect((await vault(["user", "add", "bad name", ...d()])).code).toBe(2);
    expect((await vault(["user", "grant", "alice", "x", "fly", ...d()])).code).toBe(2);
    expect((await vault(["user", "frob", ...d()])).code).toBe(2);
    expect((await vault(["user", "list", "--bogus", ...d()])).code).toBe(2);
    const help = await vault(["user", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("vault user add NAME");
  });
});

describe("vault token", () => {
  let tokenId = "";
  let token = "";

  test("create prints the token once; it authenticates as Bearer and Basic __token__", async () => {
    const r = await vault(["token", "create", "--user", "ci-bot", "--name", "ci", "--expires-days", "2", ...d()]);
    expect(r.code).toBe(0);
    token = r.stdout.trim();
    expect(token).toMatch(/^vault_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    tokenId = token.split("_")[1];
    expect(r.stderr).toContain(`token ${tokenId} created for ci-bot, expires `);
    expect(r.stderr).not.toContain(token);
    expect((await repo("x").authenticate(bearer(token))).name).toBe("ci-bot");
    expect((await repo("x").authenticate(basic("__token__", token))).name).toBe("ci-bot");
  });

  test("list shows id, user, name, expiry and no secret; --user filters", async () => {
    const r = await vault(["token", "list", ...d()]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`${tokenId}\\s+api\\s+ci-bot\\s+ci\\s+`));
    expect(r.stdout).not.toContain(token.slice(-43));
    const j = JSON.parse((await vault(["token", "list", "--json", "--user", "alice", ...d()])).stdout);
    expect(j).toEqual([]);
    const all = JSON.parse((await vault(["token", "list", "--json", ...d()])).stdout) as { id: string; expiresAt: number }[];
    expect(all.map((t) => t.id)).toEqual([tokenId]);
    expect(all[0].expiresAt).toBeGreaterThan(Date.now() + 86_400_000);
  });

  test("revoke makes the token fail with 401; revoking again fails", async () => {
    const r = await vault(["token", "revoke", tokenId, ...d()]);
    expect(r.code).toBe(0);
    await expect(repo("x").authenticate(bearer(token))).rejects.toMatchObject({ status: 401 });
    expect((await vault(["token", "revoke", tokenId, ...d()])).code).toBe(1);
  });

  test("create --s3 prints an access key id and secret that lookupAccessKey returns", async () => {
    const r = await vault(["token", "create", "--user", "alice", "--s3", ...d()]);
    expect(r.code).toBe(0);
    const m = /^AWS_ACCESS_KEY_ID=(\S+)\nAWS_SECRET_ACCESS_KEY=(\S+)\n$/.exec(r.stdout);
    expect(m).not.toBeNull();
    const hit = (await core().lookupAccessKey(m![1]))!;
    expect(hit.secret).toBe(m![2]);
    expect(hit.principal.name).toBe("alice");
    const j = JSON.parse((await vault(["token", "create", "--user", "alice", "--s3", "--json", ...d()])).stdout);
    expect((await core().lookupAccessKey(j.accessKeyId))!.secret).toBe(j.secretAccessKey);
  });

  test("errors: unknown user (1), missing --user / bad expiry (2)", async () => {
    expect((await vault(["token", "create", "--user", "ghost", ...d()])).code).toBe(1);
    expect((await vault(["token", "create", ...d()])).code).toBe(2);
    expect((await vault(["token", "create", "--user", "alice", "--expires-days", "-1", ...d()])).code).toBe(2);
  });

  test("user remove takes the user's tokens and keys with it", async () => {
    expect((await vault(["user", "remove", "alice", ...d()])).code).toBe(0);
    expect(await core().listTokens({ user: "alice" })).toEqual([]);
    expect(await core().getUser("alice")).toBeNull();
  });
});

describe("--config", () => {
  test("dataDir from a YAML config (relative to it) and auth.tokenSecret seal the S3 key; nothing secret stored in settings", async () => {
    const dir = await tmpDataDir("vault-cli-config-");
    const secret = "cli-config-secret-0123456789abcdefghijklmn";
    await Bun.write(join(dir, "vault.yaml"), `server:\n  dataDir: ./state\nauth:\n  tokenSecret: ${secret}\n`);
    expect((await vault(["user", "add", "carol", "--config", join(dir, "vault.yaml")])).code).toBe(0);
    const r = await vault(["token", "create", "--user", "carol", "--s3", "--json", "--config", "vault.yaml"], { cwd: dir });
    expect(r.code).toBe(0);
    const k = JSON.parse(r.stdout);
    const db = openDb(join(dir, "state", "vault.db"));
    try {
      const withSecret = createAuthCore({ db: db.db, config: { tokenSecret: secret }, log: silentLogger });
      expect((await withSecret.lookupAccessKey(k.accessKeyId))!.secret).toBe(k.secretAccessKey);
      expect(db.db.select().from(settings).all()).toEqual([]);
      // without the configured secret the sealed value cannot be opened
      expect(await createAuthCore({ db: db.db, log: silentLogger }).lookupAccessKey(k.accessKeyId)).toBeNull();
    } finally {
      db.close();
    }
    // a vault.config.* in the cwd is picked up without --config
    await Bun.write(join(dir, "vault.config.yaml"), `server:\n  dataDir: ./state\n`);
    const list = await vault(["user", "list", "--json"], { cwd: dir });
    expect(JSON.parse(list.stdout).map((u: { name: string }) => u.name)).toEqual(["carol"]);
    // a missing --config file is an error, not silently the defaults
    expect((await vault(["user", "list", "--config", "nope.yaml"], { cwd: dir })).code).toBe(1);
  });
});

describe("with a running vault", () => {
  test("users and tokens made by the CLI authenticate over HTTP; 401 + challenge for anonymous, 403 without the grant", async () => {
    const { startUpstream } = await import("../../test/helpers/upstream.ts");
    const { startVault } = await import("../../test/helpers/vault.ts");
    const dir = await tmpDataDir("vault-cli-e2e-");
    const dd = ["--data", dir];
    expect((await vault(["user", "add", "dora", "--password-stdin", "--grant", "files:read", ...dd], { stdin: "dora-pw\n" })).code).toBe(0);
    expect((await vault(["user", "add", "eve", "--password", "eve-pw", ...dd])).code).toBe(0);
    const tok = (await vault(["token", "create", "--user", "dora", ...dd])).stdout.trim();
    const up = await startUpstream({ handler: () => new Response("hello\n") });
    const v = await startVault({
      dataDir: dir,
      config: { repositories: [{ name: "files", format: "http", type: "proxy", upstream: up.url + "/", anonymousRead: false }] },
    });
    try {
      const get = (authorization?: string) => fetch(`${v.url}/files/a.txt`, { headers: authorization ? { authorization } : {} });
      const anon = await get();
      expect(anon.status).toBe(401);
      expect(anon.headers.get("www-authenticate")).toBe('Basic realm="vault"');
      await anon.text();
      const ok = await get("Basic " + btoa("dora:dora-pw"));
      expect(ok.status).toBe(200);
      expect(await ok.text()).toBe("hello\n");
      const byToken = await get("Bearer " + tok);
      expect(byToken.status).toBe(200);
      await byToken.text();
      const wrong = await get("Basic " + btoa("dora:nope"));
      expect(wrong.status).toBe(401);
      await wrong.text();
      const noGrant = await get("Basic " + btoa("eve:eve-pw"));
      expect(noGrant.status).toBe(403);
      await noGrant.text();
      // revoked while the server runs: refused on the next request
      expect((await vault(["token", "revoke", tok.split("_")[1], ...dd])).code).toBe(0);
      const revoked = await get("Bearer " + tok);
      expect(revoked.status).toBe(401);
      await revoked.text();
    } finally {
      await v.stop();
      await up.stop();
    }
  });
});

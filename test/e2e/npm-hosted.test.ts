/**
 * e2e: the real npm CLI against npm hosted and group repositories (plugins/npm/README.md), on loopback:
 * - `npm login` (legacy, user + password from stdin) → an API token in the user config; `npm whoami`;
 * - `npm publish` of a plain and a scoped package, re-publish refused, `npm view`, `npm dist-tag add/rm/ls`,
 *   `npm deprecate` (a later install prints the warning), `npm unpublish pkg@ver` and of a whole package, installs from
 *   the hosted repository;
 * - a group of the hosted repository and a proxy of a loopback registry built from the real fixtures
 *   (test/helpers/npm-registry.ts): publish through the group (writeTo), install of a hosted package depending on a
 *   proxied one, upstream requests counted;
 * - bad input over raw HTTP: tarball integrity, names, versions, anonymous and read-only writers → npm JSON errors.
 * npm runs with its own user config and cache per user (test/helpers/npm-cli.ts); under CI=true a missing npm fails.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { CHALK_TREE as TREE, npmPublishBody, startNpmRegistry, type TestNpmRegistry } from "../helpers/npm-registry.ts";
import { npmHome, npmTest, runNpm, type NpmHome } from "../helpers/npm-cli.ts";
import { openDb } from "../../core/db/index.ts";
import { createAuthCore } from "../../core/auth/index.ts";
import { silentLogger } from "../../core/log.ts";

const PW = "correct horse battery staple";

let reg: TestNpmRegistry;
let vault: StartedVault;
let local: string;
let group: string;
let readerToken: string;

beforeAll(async () => {
  reg = startNpmRegistry();
  vault = await startVault({
    config: {
      repositories: [
        { name: "npm-local", format: "npm", type: "hosted" },
        { name: "npm-proxy", format: "npm", type: "proxy", upstream: reg.url },
        { name: "npm-all", format: "npm", type: "group", members: ["npm-local", "npm-proxy"], writeTo: "npm-local" },
      ],
    },
  });
  local = `${vault.url}/npm-local/`;
  group = `${vault.url}/npm-all/`;
  const db = openDb(join(vault.dataDir, "vault.db"));
  try {
    const auth = createAuthCore({ db: db.db, log: silentLogger });
    await auth.addUser({ name: "alice", password: PW, grants: [{ repository: "npm-local", actions: "delete" }, { repository: "npm-all", actions: "write" }] });
    await auth.addUser({ name: "bob", password: PW, grants: [{ repository: "*", actions: "read" }] });
    readerToken = (await auth.createToken("bob")).token;
  } finally {
    db.close();
  }
});
afterAll(async () => {
  await vault?.stop();
  await reg?.stop();
});

/** Writes a package directory `<root>/<dir>` with package.json `manifest` and an index.js; returns its path. */
async function writePackage(root: string, manifest: Record<string, unknown>): Promise<string> {
  const dir = join(root, String(manifest.name).replace("/", "__") + "-" + String(manifest.version));
  await mkdir(dir, { recursive: true });
  await Bun.write(join(dir, "package.json"), JSON.stringify(manifest, null, 2));
  await Bun.write(join(dir, "index.js"), `module.exports = ${JSON.stringify(`${manifest.name}@${manifest.version}`)};\n`);
  return dir;
}

/** A fresh project directory with a package.json, for installs. */
async function project(tag: string): Promise<string> {
  const dir = await tmpDataDir(`npm-proj-${tag}-`);
  await Bun.write(join(dir, "package.json"), JSON.stringify({ name: `proj-${tag}`, version: "1.0.0", private: true }));
  return dir;
}

/** `npm login` on `registry` with user + password typed on stdin; asserts success. */
async function login(home: NpmHome, registry: string, user: string): Promise<void> {
  const r = await runNpm(home, ["login", "--registry", registry, "--auth-type", "legacy"], { answers: [["Username:", user], ["Password:", PW]] });
  if (r.code !== 0) console.error(r.out);
  expect(r.code).toBe(0);
  expect(r.out).toContain(`Logged in on ${registry}`);
}

const json = (s: string) => JSON.parse(s) as any;

describe("npm CLI against a hosted repository", () => {
  npmTest(
    "login, whoami, publish (plain + scoped), re-publish refused, view, dist-tags, deprecate, install, unpublish",
    async () => {
      const home = await npmHome(await tmpDataDir("npm-home-alice-"));
      const reg = ["--registry", local];

      // login: a bad password is refused with the vault's message; the right one stores a token in the user config
      const bad = await runNpm(home, ["login", ...reg, "--auth-type", "legacy"], { answers: [["Username:", "alice"], ["Password:", "wrong password"]] });
      expect(bad.code).not.toBe(0);
      expect(bad.out).toContain("bad username or password");
      await login(home, local, "alice");
      const npmrc = await Bun.file(home.userconfig).text();
      expect(npmrc).toMatch(new RegExp(`^//127\\.0\\.0\\.1:${vault.port}/npm-local/:_authToken=vault_`, "m"));
      const who = await runNpm(home, ["whoami", ...reg]);
      expect(who.code).toBe(0);
      expect(who.stdout.trim()).toBe("alice");

      // publish plain and scoped packages
      const src = await tmpDataDir("npm-src-");
      const w100 = await writePackage(src, { name: "acme-widget", version: "1.0.0", description: "a widget", main: "index.js", license: "MIT" });
      const p1 = await runNpm(home, ["publish", ...reg], { cwd: w100 });
      if (p1.code !== 0) console.error(p1.out);
      expect(p1.code).toBe(0);
      const util = await writePackage(src, { name: "@acme/util", version: "0.1.0", main: "index.js" });
      const p2 = await runNpm(home, ["publish", ...reg, "--access", "public"], { cwd: util });
      if (p2.code !== 0) console.error(p2.out);
      expect(p2.code).toBe(0);

      // the same version again: npm itself refuses, from the packument we serve (the server's own 403 is tested below)
      const again = await runNpm(home, ["publish", ...reg], { cwd: w100 });
      expect(again.code).not.toBe(0);
      expect(again.out).toContain("cannot publish over the previously published versions: 1.0.0");

      const w110 = await writePackage(src, { name: "acme-widget", version: "1.1.0", description: "a better widget", main: "index.js", license: "MIT" });
      expect((await runNpm(home, ["publish", ...reg], { cwd: w110 })).code).toBe(0);

      // npm view reads the full packument
      const view = await runNpm(home, ["view", ...reg, "acme-widget", "--json"]);
      expect(view.code).toBe(0);
      const doc = json(view.stdout);
      expect(doc.versions).toEqual(["1.0.0", "1.1.0"]);
      expect(doc["dist-tags"]).toEqual({ latest: "1.1.0" });
      expect(doc.description).toBe("a better widget");
      expect(doc.dist.tarball).toBe(`${local}acme-widget/-/acme-widget-1.1.0.tgz`);
      expect(doc.dist.integrity).toStartWith("sha512-");
      expect(doc._npmUser).toMatch(/^alice/);
      expect(Object.keys(doc.time)).toEqual(expect.arrayContaining(["created", "modified", "1.0.0", "1.1.0"]));

      // dist-tags
      expect((await runNpm(home, ["dist-tag", "add", ...reg, "acme-widget@1.0.0", "stable"])).code).toBe(0);
      let ls = await runNpm(home, ["dist-tag", "ls", ...reg, "acme-widget"]);
      expect(ls.stdout.trim().split("\n").sort()).toEqual(["latest: 1.1.0", "stable: 1.0.0"]);
      expect((await runNpm(home, ["dist-tag", "rm", ...reg, "acme-widget", "stable"])).code).toBe(0);
      ls = await runNpm(home, ["dist-tag", "ls", ...reg, "acme-widget"]);
      expect(ls.stdout.trim()).toBe("latest: 1.1.0");

      // deprecate 1.0.0: installing it prints the message
      const dep = await runNpm(home, ["deprecate", ...reg, "acme-widget@1.0.0", "use 1.1.0 or later"]);
      if (dep.code !== 0) console.error(dep.out);
      expect(dep.code).toBe(0);
      const proj = await project("hosted");
      const inst = await runNpm(home, ["install", ...reg, "acme-widget@1.0.0", "@acme/util"], { cwd: proj });
      if (inst.code !== 0) console.error(inst.out);
      expect(inst.code).toBe(0);
      expect(inst.out).toContain("deprecated acme-widget@1.0.0: use 1.1.0 or later");
      expect((await Bun.file(join(proj, "node_modules", "acme-widget", "package.json")).json()).version).toBe("1.0.0");
      expect(await Bun.file(join(proj, "node_modules", "@acme", "util", "index.js")).text()).toContain("@acme/util@0.1.0");
      const lock = await Bun.file(join(proj, "package-lock.json")).json();
      expect(lock.packages["node_modules/@acme/util"].resolved).toBe(`${local}@acme/util/-/util-0.1.0.tgz`);

      // unpublish one version: latest moves back; the number is never published again
      const un = await runNpm(home, ["unpublish", ...reg, "acme-widget@1.1.0"]);
      if (un.code !== 0) console.error(un.out);
      expect(un.code).toBe(0);
      const after = json((await runNpm(home, ["view", ...reg, "acme-widget", "--json"])).stdout);
      expect(after.versions).toEqual(["1.0.0"]);
      expect(after["dist-tags"].latest).toBe("1.0.0");
      expect((await fetch(`${local}acme-widget/-/acme-widget-1.1.0.tgz`)).status).toBe(404);
      const reuse = await runNpm(home, ["publish", ...reg], { cwd: w110 });
      expect(reuse.code).not.toBe(0);
      expect(reuse.out).toContain("never reused");

      // unpublish the whole scoped package
      const unAll = await runNpm(home, ["unpublish", ...reg, "@acme/util", "--force"]);
      if (unAll.code !== 0) console.error(unAll.out);
      expect(unAll.code).toBe(0);
      const gone = await runNpm(home, ["view", ...reg, "@acme/util"]);
      expect(gone.code).not.toBe(0);
      expect(gone.out).toContain("E404");
    },
    300_000,
  );
});

describe("npm CLI against a group of the hosted repository and a proxy", () => {
  npmTest(
    "publish through the group goes to the hosted member; install mixes the hosted package and its proxied dependency tree",
    async () => {
      const home = await npmHome(await tmpDataDir("npm-home-group-"));
      await login(home, group, "alice");
      const src = await tmpDataDir("npm-src-group-");
      const app = await writePackage(src, { name: "acme-app", version: "2.0.0", main: "index.js", dependencies: { chalk: "4.1.0" } });
      const pub = await runNpm(home, ["publish", "--registry", group], { cwd: app });
      if (pub.code !== 0) console.error(pub.out);
      expect(pub.code).toBe(0);
      // stored in the hosted member
      const hosted = await fetch(`${local}acme-app`);
      expect(hosted.status).toBe(200);
      expect(Object.keys(((await hosted.json()) as any).versions)).toEqual(["2.0.0"]);

      const install = async (tag: string) => {
        const dir = await project(tag);
        const user = await npmHome(await tmpDataDir(`npm-home-${tag}-`));
        const r = await runNpm(user, ["install", "--registry", group, "acme-app"], { cwd: dir });
        if (r.code !== 0) console.error(r.out);
        expect(r.code).toBe(0);
        return dir;
      };
      const a = await install("group-a");
      expect(await Bun.file(join(a, "node_modules", "acme-app", "index.js")).text()).toContain("acme-app@2.0.0");
      expect((await Bun.file(join(a, "node_modules", "chalk", "package.json")).json()).version).toBe("4.1.0");
      const lock = await Bun.file(join(a, "package-lock.json")).json();
      expect(lock.packages["node_modules/acme-app"].resolved).toBe(`${group}acme-app/-/acme-app-2.0.0.tgz`);
      expect(lock.packages["node_modules/chalk"].resolved).toBe(`${group}chalk/-/chalk-4.1.0.tgz`);
      // each proxied tarball reached the upstream once; the hosted package never did
      expect(reg.tarballGets().map((p) => p.split("/").pop()!).sort()).toEqual(TREE);
      expect(reg.hits.some((h) => h.path.includes("acme-app/-/"))).toBe(false);
      const before = reg.hits.length;

      const b = await install("group-b");
      expect((await Bun.file(join(b, "node_modules", "chalk", "package.json")).json()).version).toBe("4.1.0");
      expect(reg.hits.length).toBe(before); // packuments fresh in the proxy, tarballs cached
    },
    300_000,
  );
});

describe("bad input over raw HTTP → npm JSON errors", () => {
  const publishBody = (name: string, version: string, tarball: Uint8Array, dist: Record<string, unknown> = {}) => npmPublishBody(name, version, tarball, { dist });
  const tgz = Bun.gzipSync(new TextEncoder().encode("not really a tar, but gzip"));
  const put = (path: string, body: string, token?: string) =>
    fetch(`${local}${path}`, { method: "PUT", body, headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) } });

  npmTest("integrity mismatch, bad names and versions, anonymous and read-only writers", async () => {
    const home = await npmHome(await tmpDataDir("npm-home-raw-"));
    await login(home, local, "alice");
    const token = /_authToken=(\S+)/.exec(await Bun.file(home.userconfig).text())![1];

    const anon = await put("raw-pkg", publishBody("raw-pkg", "1.0.0", tgz));
    expect(anon.status).toBe(401);
    expect(anon.headers.get("www-authenticate")).toContain("Basic");
    expect(((await anon.json()) as any).error).toBeString();
    const ro = await put("raw-pkg", publishBody("raw-pkg", "1.0.0", tgz), readerToken);
    expect(ro.status).toBe(403);
    expect(await ro.json()).toEqual({ error: "write on npm-local is not allowed" });

    const cases: [string, string, string][] = [
      ["raw-pkg", publishBody("raw-pkg", "1.0.0", tgz, { integrity: "sha512-" + Buffer.alloc(64).toString("base64") }), "dist.integrity does not match the tarball (sha512 differs)"],
      ["raw-pkg", publishBody("raw-pkg", "1.0.0", tgz, { shasum: "0".repeat(40) }), "dist.shasum does not match the tarball"],
      ["raw-pkg", publishBody("raw-pkg", "1.0", tgz), 'invalid version "1.0": not a semver version'],
      ["raw-pkg", publishBody("other-pkg", "1.0.0", tgz), 'the document names package "other-pkg", not raw-pkg'],
      ["raw-pkg", publishBody("raw-pkg", "1.0.0", new TextEncoder().encode("plain text")), "the attachment is not a gzip tarball"],
      ["raw-pkg", "{not json", "the request body is not a package document"],
    ];
    for (const [path, body, message] of cases) {
      const r = await put(path, body, token);
      const got = { status: r.status, type: r.headers.get("content-type"), body: (await r.json()) as { error: string } };
      expect({ path, status: got.status, type: got.type }).toEqual({ path, status: 400, type: "application/json" });
      expect(got.body.error).toContain(message);
    }
    // invalid package names in the path → 400 bad path, same shape
    for (const path of ["Bad%20Name", ".hidden", "@scope%2f..%2fx"]) {
      const r = await put(path, publishBody("x", "1.0.0", tgz), token);
      expect({ path, status: r.status }).toEqual({ path, status: 400 });
      expect(((await r.json()) as any).error).toContain("bad path");
    }
    // nothing was stored by any of these
    expect((await fetch(`${local}raw-pkg`)).status).toBe(404);
    // a good one goes through; the same version again is refused with 403, as the registry does
    expect((await put("raw-pkg", publishBody("raw-pkg", "1.0.0", tgz), token)).status).toBe(201);
    const twice = await put("raw-pkg", publishBody("raw-pkg", "1.0.0", tgz), token);
    expect(twice.status).toBe(403);
    expect(await twice.json()).toEqual({ error: "cannot publish over the previously published version 1.0.0" });
    const tarball = await fetch(`${local}raw-pkg/-/raw-pkg-1.0.0.tgz`);
    expect(new Uint8Array(await tarball.arrayBuffer())).toEqual(tgz);
    const missing = await fetch(`${local}no-such-pkg`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ error: "Not found" });
    // whoami without credentials: 401 with a challenge
    const who = await fetch(`${local}-/whoami`);
    expect(who.status).toBe(401);
    expect(who.headers.get("www-authenticate")).toContain("Basic");
  });
});

/**
 * npm hosted and group repositories over raw HTTP: packuments answered from renderings stored at publish (ETag, 304,
 * per public URL), the document brought back in line with its version records after a concurrent writer dropped a
 * version, group merge order against a proxy of the fixture registry (version and tag from the first member, tarballs
 * from the member whose version won), group merges in the worker pool, writes through a group without `writeTo`,
 * login errors.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { startVault, type StartedVault } from "../../test/helpers/vault.ts";
import { NPM_FIXTURES, npmPublishBody, startNpmRegistry, type TestNpmRegistry } from "../../test/helpers/npm-registry.ts";
import { openDb } from "../../core/db/index.ts";
import { createAuthCore } from "../../core/auth/index.ts";
import { metrics } from "../../core/metrics.ts";
import { silentLogger } from "../../core/log.ts";
import type { VaultConfig } from "../../core/config/types.ts";
import { ABBREVIATED, tagOf } from "./service.ts";

const PW = "correct horse battery staple";
let reg: TestNpmRegistry;
let vault: StartedVault;
let token: string;

/** A publish body for `name@version` whose tarball is a gzip of `text` (default `name@version`). */
function publishBody(name: string, version: string, text = `${name}@${version}`, manifest: Record<string, unknown> = {}): string {
  return npmPublishBody(name, version, Bun.gzipSync(new TextEncoder().encode(text)), { manifest });
}

async function startWith(config: VaultConfig): Promise<StartedVault> {
  const v = await startVault({ config });
  const db = openDb(join(v.dataDir, "vault.db"));
  try {
    const auth = createAuthCore({ db: db.db, log: silentLogger });
    await auth.addUser({ name: "alice", password: PW, grants: [{ repository: "*", actions: "delete" }] });
    token = (await auth.createToken("alice")).token;
  } finally {
    db.close();
  }
  return v;
}

const put = (url: string, body: string) => fetch(url, { method: "PUT", body, headers: { "content-type": "application/json", authorization: `Bearer ${token}` } });

beforeAll(async () => {
  reg = startNpmRegistry();
  vault = await startWith({
    repositories: [
      { name: "local", format: "npm", type: "hosted" },
      { name: "proxy", format: "npm", type: "proxy", upstream: reg.url },
      { name: "all", format: "npm", type: "group", members: ["local", "proxy"], writeTo: "local" },
      { name: "readonly", format: "npm", type: "group", members: ["local"] },
    ],
  });
});
afterAll(async () => {
  await vault?.stop();
  await reg?.stop();
});

describe("hosted packuments", () => {
  test("stored at publish for the publishing URL; ETag + 304; abbreviated by Accept; another public URL gets its own rendering", async () => {
    const base = `${vault.url}/local`;
    expect((await put(`${base}/stored-pkg`, publishBody("stored-pkg", "1.0.0", "x", { scripts: { test: "t" } }))).status).toBe(201);
    const store = vault.vault.repositories.get("local")!.artifacts;
    const full = await store.get(`stored-pkg#full#${tagOf(base)}`);
    const abbrev = await store.get(`stored-pkg#abbrev#${tagOf(base)}`);
    expect(full?.blobDigest).toStartWith("sha256:");
    expect(abbrev?.blobDigest).toStartWith("sha256:");

    const r = await fetch(`${base}/stored-pkg`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("application/json");
    expect(r.headers.get("vary")).toBe("Accept");
    expect(r.headers.get("etag")).toBe(full!.etag);
    const doc = (await r.json()) as any;
    expect(doc.versions["1.0.0"].dist.tarball).toBe(`${base}/stored-pkg/-/stored-pkg-1.0.0.tgz`);
    expect(doc.versions["1.0.0"].scripts).toEqual({ test: "t" });
    expect(typeof doc._rev).toBe("string");
    expect(doc.time["1.0.0"]).toBe(doc.time.created);
    const again = await fetch(`${base}/stored-pkg`, { headers: { "if-none-match": r.headers.get("etag")! } });
    expect(again.status).toBe(304);

    const a = await fetch(`${base}/stored-pkg`, { headers: { accept: `${ABBREVIATED}; q=1.0, application/json; q=0.8, */*` } });
    expect(a.headers.get("content-type")).toBe(ABBREVIATED);
    expect(a.headers.get("etag")).toBe(abbrev!.etag);
    const ad = (await a.json()) as any;
    expect(ad.versions["1.0.0"].scripts).toBeUndefined();
    expect(ad.modified).toBe(doc.time.modified);

    // the same repository reached as localhost: tarball URLs for that URL, stored under its own tag
    const other = `http://localhost:${vault.port}/local`;
    const o = (await (await fetch(`${other}/stored-pkg`)).json()) as any;
    expect(o.versions["1.0.0"].dist.tarball).toBe(`${other}/stored-pkg/-/stored-pkg-1.0.0.tgz`);
    expect((await store.get(`stored-pkg#full#${tagOf(other)}`))?.blobDigest).toStartWith("sha256:");

    // one version and dist-tags
    const v = await fetch(`${base}/stored-pkg/latest`);
    expect(((await v.json()) as any).version).toBe("1.0.0");
    expect(await (await fetch(`${base}/-/package/stored-pkg/dist-tags`)).json()).toEqual({ latest: "1.0.0" });
    expect((await fetch(`${base}/stored-pkg/9.9.9`)).status).toBe(404);
  });

  test("a version a concurrent writer dropped from the document comes back on the next write (version records)", async () => {
    const base = `${vault.url}/local`;
    const store = vault.vault.repositories.get("local")!.artifacts;
    expect((await put(`${base}/raced`, publishBody("raced", "1.0.0"))).status).toBe(201);
    const old = await store.read((await store.get("raced#doc"))!);
    expect((await put(`${base}/raced`, publishBody("raced", "1.1.0"))).status).toBe(201);
    // another process, unaware of 1.1.0, writes its older document
    await store.put("raced#doc", old, { contentType: "application/json", kind: "metadata" });
    expect(Object.keys(((await (await fetch(`${base}/raced`)).json()) as any).versions)).toEqual(["1.0.0"]);
    const tag = await fetch(`${base}/-/package/raced/dist-tags/stable`, { method: "PUT", body: '"1.0.0"', headers: { authorization: `Bearer ${token}`, "content-type": "application/json" } });
    expect(tag.status).toBe(200);
    const doc = (await (await fetch(`${base}/raced`)).json()) as any;
    expect(Object.keys(doc.versions).sort()).toEqual(["1.0.0", "1.1.0"]);
    expect(doc["dist-tags"]).toEqual({ latest: "1.1.0", stable: "1.0.0" });
  });

  test("write errors: bad dist-tag body, unknown package, removing latest", async () => {
    const base = `${vault.url}/local`;
    expect((await put(`${base}/tags-pkg`, publishBody("tags-pkg", "1.0.0"))).status).toBe(201);
    const tagReq = (tag: string, method: string, body?: string) =>
      fetch(`${base}/-/package/tags-pkg/dist-tags/${tag}`, { method, body, headers: { authorization: `Bearer ${token}`, "content-type": "application/json" } });
    const badBody = await tagReq("next", "PUT", "1.0.0");
    expect(badBody.status).toBe(400);
    expect(((await badBody.json()) as any).error).toContain("JSON string");
    expect((await tagReq("next", "PUT", '"2.0.0"')).status).toBe(404);
    expect((await tagReq("1.0", "PUT", '"1.0.0"')).status).toBe(400);
    const latest = await tagReq("latest", "DELETE");
    expect(latest.status).toBe(400);
    expect(((await latest.json()) as any).error).toContain("latest dist-tag cannot be removed");
    const nopkg = await fetch(`${base}/-/package/no-such/dist-tags/next`, { method: "PUT", body: '"1.0.0"', headers: { authorization: `Bearer ${token}` } });
    expect(nopkg.status).toBe(404);
    expect(await nopkg.json()).toEqual({ error: "Not found" });
  });
});

describe("groups", () => {
  test("merge order: hosted first; tarballs from the member whose version won; upstream asked only for its own", async () => {
    const g = `${vault.url}/all`;
    // a hosted `once` with its own version, published through the group (writeTo)
    expect((await put(`${g}/once`, publishBody("once", "9.0.0", "hosted once"))).status).toBe(201);
    const doc = (await (await fetch(`${g}/once`, { headers: { accept: ABBREVIATED } })).json()) as any;
    expect(doc["dist-tags"].latest).toBe("9.0.0");
    expect(doc.versions["9.0.0"].dist.tarball).toBe(`${g}/once/-/once-9.0.0.tgz`);
    expect(doc.versions["1.4.0"].dist.tarball).toBe(`${g}/once/-/once-1.4.0.tgz`);
    const upstreamOnce = await Bun.file(`${NPM_FIXTURES}/packuments/once.abbrev.json`).json();
    expect(doc.versions["1.4.0"].dist.integrity).toBe(upstreamOnce.versions["1.4.0"].dist.integrity);

    const hostedTgz = await fetch(`${g}/once/-/once-9.0.0.tgz`);
    expect(new TextDecoder().decode(Bun.gunzipSync(new Uint8Array(await hostedTgz.arrayBuffer())))).toBe("hosted once");
    expect(reg.tarballGets().some((p) => p.includes("once-9.0.0"))).toBe(false);
    const proxied = await fetch(`${g}/once/-/once-1.4.0.tgz`);
    expect(new Uint8Array(await proxied.arrayBuffer())).toEqual(await Bun.file(`${NPM_FIXTURES}/tarballs/once-1.4.0.tgz`).bytes());
    expect(reg.tarballGets().filter((p) => p === "/once/-/once-1.4.0.tgz").length).toBe(1);
    expect((await fetch(`${g}/once/-/once-0.0.1.tgz`)).status).toBe(404);

    // merged once and stored: a second read is the stored entry (same ETag), members unchanged
    const e1 = (await fetch(`${g}/once`)).headers.get("etag");
    const e2 = (await fetch(`${g}/once`)).headers.get("etag");
    expect(e1).toBe(e2!);
    // a new hosted version changes the merge
    expect((await put(`${g}/once`, publishBody("once", "9.1.0"))).status).toBe(201);
    const after = await fetch(`${g}/once`);
    expect(after.headers.get("etag")).not.toBe(e1!);
    expect(((await after.json()) as any)["dist-tags"].latest).toBe("9.1.0");
    // ?write=true through the group: the writeTo member's own document
    const w = (await (await fetch(`${g}/once?write=true`, { headers: { authorization: `Bearer ${token}` } })).json()) as any;
    expect(Object.keys(w.versions).sort()).toEqual(["9.0.0", "9.1.0"]);
  });

  test("a group without writeTo refuses writes with 405; login and whoami answer on any npm repository", async () => {
    const r = await put(`${vault.url}/readonly/x-pkg`, publishBody("x-pkg", "1.0.0"));
    expect(r.status).toBe(405);
    expect(await r.json()).toEqual({ error: "this group has no writeTo member: publish to a hosted repository" });
    const login = (user: string, password: string) =>
      fetch(`${vault.url}/readonly/-/user/org.couchdb.user:${user}`, { method: "PUT", body: JSON.stringify({ name: user, password }), headers: { "content-type": "application/json" } });
    const bad = await login("alice", "nope");
    expect(bad.status).toBe(401);
    expect(bad.headers.get("www-authenticate")).toBeNull();
    expect(((await bad.json()) as any).error).toContain("bad username or password");
    expect((await login("nobody", "whatever")).status).toBe(401);
    const ok = await login("alice", PW);
    expect(ok.status).toBe(201);
    const t = ((await ok.json()) as any).token as string;
    expect(t).toStartWith("vault_");
    const who = await fetch(`${vault.url}/proxy/-/whoami`, { headers: { authorization: `Bearer ${t}` } });
    expect(await who.json()).toEqual({ username: "alice" });
    const logout = await fetch(`${vault.url}/local/-/user/token/${t}`, { method: "DELETE", headers: { authorization: `Bearer ${t}` } });
    expect(logout.status).toBe(200);
    expect((await fetch(`${vault.url}/local/-/whoami`, { headers: { authorization: `Bearer ${t}` } })).status).toBe(401);
    expect((await fetch(`${vault.url}/local/-/v1/login`, { method: "POST" })).status).toBe(404);
  });

  test("a group merge above the pool threshold runs in the worker pool", async () => {
    const v = await startWith({
      pool: { offloadThresholdBytes: 1024 },
      repositories: [
        { name: "local", format: "npm", type: "hosted" },
        { name: "proxy", format: "npm", type: "proxy", upstream: reg.url },
        { name: "all", format: "npm", type: "group", members: ["local", "proxy"], writeTo: "local" },
      ],
    });
    try {
      const pooled = () => metrics.poolTasks.values.get('{outcome="ok",task="npmPackument"}') ?? 0;
      expect((await put(`${v.url}/all/debug`, publishBody("debug", "99.0.0"))).status).toBe(201);
      const before = pooled();
      const doc = (await (await fetch(`${v.url}/all/debug`, { headers: { accept: ABBREVIATED } })).json()) as any;
      expect(pooled()).toBeGreaterThan(before);
      expect(doc["dist-tags"].latest).toBe("99.0.0");
      expect(doc.versions["4.2.0"].dist.tarball).toBe(`${v.url}/all/debug/-/debug-4.2.0.tgz`);
      expect(Object.keys(doc.versions).length).toBeGreaterThan(20);
    } finally {
      await v.stop();
    }
  });
});

/**
 * The web UI's JSON API (`/-/api/`, docs/api.md) and server-rendered pages against a real vault filled by real
 * requests (test/ui/env.ts), on SQLite and on Postgres: repositories with counts, sizes and downloads; search across
 * formats (name, normalization, format/repository filters, digests, paging); package pages (versions, files with
 * size, sha256, content type, download counts, download URLs that serve those bytes, client set-up, groups);
 * statistics; permissions (a private repository is invisible without a grant); errors in the host's JSON shape; escaped
 * markup from stored names; caching headers of pages and embedded assets.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { metadataDrivers, useMetadata } from "../helpers/metadata.ts";
import { basic, sha256, startUiEnv, XSS_FILE, XSS_PACKAGE, type UiEnv } from "./env.ts";

type Json = any;

async function api(env: UiEnv, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Json; res: Response }> {
  const res = await fetch(`${env.vault.url}/-/api/${path}`, { headers });
  return { status: res.status, body: await res.json(), res };
}

for (const driver of metadataDrivers()) {
  describe(`web UI API (${driver})`, () => {
    let env: UiEnv;
    // registered before useMetadata's: the vault lets go of the database before the test Postgres stops
    afterAll(async () => {
      await env?.stop();
    }, 30_000);
    const md = useMetadata(driver);

    beforeAll(async () => {
      const open = await md.open();
      env = await startUiEnv({ open, config: md.configOf(open) });
    }, 120_000);

    test("repositories: readable ones only, with artifact counts, stored bytes and downloads", async () => {
      const anon = await api(env, "repositories");
      expect(anon.status).toBe(200);
      expect(anon.res.headers.get("content-type")).toBe("application/json; charset=utf-8");
      expect(anon.res.headers.get("cache-control")).toBe("no-store");
      const names = anon.body.repositories.map((r: Json) => r.name);
      expect(names).toEqual(["pypi-local", "pypi-proxy", "python", "files", "objects"]);
      const local = anon.body.repositories.find((r: Json) => r.name === "pypi-local");
      const uploadedBytes = env.uploads.reduce((n, u) => n + u.bytes.byteLength, 0);
      expect(local).toMatchObject({ format: "pypi", type: "hosted", url: `${env.vault.url}/pypi-local`, anonymousRead: true, artifacts: 3, downloads: 2 });
      // the files plus their pages, snapshots and .metadata documents
      expect(local.storedBytes).toBeGreaterThan(uploadedBytes);
      const files = anon.body.repositories.find((r: Json) => r.name === "files");
      expect(files).toMatchObject({ type: "proxy", upstream: `${env.files.url}/`, artifacts: 2, storedBytes: env.toolBytes.byteLength + 65, downloads: 3 });
      expect(anon.body.repositories.find((r: Json) => r.name === "python")).toMatchObject({ type: "group", members: ["pypi-local", "pypi-proxy"], writeTo: "pypi-local", artifacts: 0 });
    });

    test("a private repository is listed for a user with a grant and the admin, never for anonymous or a user without one", async () => {
      const names = async (h: Record<string, string>) => (await api(env, "repositories", h)).body.repositories.map((r: Json) => r.name);
      expect(await names({})).not.toContain("secret");
      expect(await names(basic("bob"))).not.toContain("secret");
      expect(await names(basic("alice"))).toContain("secret");
      expect(await names(basic("admin"))).toContain("secret");
      // the same for search, package pages, repository pages and stats
      expect((await api(env, "search?q=secret-tool")).body.total).toBe(0);
      expect((await api(env, "search?q=secret-tool", basic("bob"))).body.total).toBe(0);
      const found = await api(env, "search?q=secret-tool", basic("alice"));
      expect(found.body.results.map((r: Json) => [r.repository, r.name])).toEqual([["secret", "internal/secret-tool"]]);
      for (const path of ["repositories/secret", "repositories/secret/packages/internal/secret-tool", "search?repository=secret"]) {
        const r = await api(env, path);
        expect([path, r.status, r.body.error?.code]).toEqual([path, 404, "VAULT_NOT_FOUND"]);
        expect((await api(env, path, basic("alice"))).status).toBe(200);
      }
      expect((await api(env, "stats")).body.repositories.map((r: Json) => r.name)).not.toContain("secret");
      expect((await api(env, "stats", basic("alice"))).body.repositories.map((r: Json) => r.name)).toContain("secret");
    });

    test("bad credentials answer 401 with a Basic challenge in the host's JSON error shape", async () => {
      const r = await api(env, "repositories", basic("alice", "wrong-password"));
      expect(r.status).toBe(401);
      expect(r.body).toEqual({ error: { code: "VAULT_UNAUTHORIZED", message: "invalid credentials" } });
      expect(r.res.headers.get("www-authenticate")).toBe('Basic realm="vault"');
    });

    test("search: by part of a name across formats, normalized, grouped by package with versions", async () => {
      const r = await api(env, "search?q=ui-demo");
      expect(r.status).toBe(200);
      expect(r.body.query).toEqual({ q: "ui-demo", limit: 20, offset: 0 });
      expect(r.body.total).toBe(1);
      const sizeBytes = env.uploads.reduce((n, u) => n + u.bytes.byteLength, 0);
      expect(r.body.results[0]).toMatchObject({
        repository: "pypi-local",
        format: "pypi",
        name: "ui-demo",
        versions: ["1.1.0", "1.0.0"],
        versionCount: 2,
        latestVersion: "1.1.0",
        files: 3,
        sizeBytes,
        downloads: 2,
      });
      // case and separators do not matter (PEP 503 normalization); a prefix matches too
      for (const q of ["UI_Demo", "ui.dem", "demo"]) expect((await api(env, `search?q=${encodeURIComponent(q)}`)).body.results.map((x: Json) => x.name)).toEqual(["ui-demo"]);
      // the proxied project is found by its name, in the proxy repository
      const p = await api(env, `search?q=${env.proxied.project}`);
      expect(p.body.results.find((x: Json) => x.name === env.proxied.project)).toMatchObject({ repository: "pypi-proxy", versions: [env.proxied.version], files: 1 });
      // generic files are packages by directory
      const t = await api(env, "search?q=uitool");
      expect(t.body.results.map((x: Json) => [x.repository, x.format, x.name, x.files])).toEqual([["files", "http", "tools/uitool/2.0", 2]]);
    });

    test("search: filters by format and repository, finds files by sha256, pages results", async () => {
      expect((await api(env, "search?q=ui-demo&format=http")).body.total).toBe(0);
      expect((await api(env, "search?q=ui-demo&format=pypi")).body.total).toBe(1);
      expect((await api(env, "search?q=ui-demo&repository=pypi-proxy")).body.total).toBe(0);
      const wheel = env.uploads[1];
      for (const q of [wheel.sha256, `sha256:${wheel.sha256}`]) {
        const d = await api(env, `search?q=${q}`);
        expect(d.body.results.map((x: Json) => [x.repository, x.name, x.files])).toEqual([["pypi-local", "ui-demo", 1]]);
      }
      // every package of a repository, paged
      const all = await api(env, "search?repository=files&limit=1");
      expect(all.body.total).toBe(1);
      const everything = await api(env, "search?limit=100");
      expect(everything.body.total).toBeGreaterThanOrEqual(4);
      const page1 = await api(env, "search?limit=2&offset=0");
      const page2 = await api(env, "search?limit=2&offset=2");
      const key = (x: Json) => `${x.repository}/${x.name}`;
      expect([...page1.body.results, ...page2.body.results].map(key)).toEqual(everything.body.results.slice(0, 4).map(key));
      expect(new Set(everything.body.results.map(key)).size).toBe(everything.body.total);
    });

    test("package page: versions and files with size, sha256, content type, stored time, download counts and working URLs", async () => {
      const r = await api(env, "repositories/pypi-local/packages/ui-demo");
      expect(r.status).toBe(200);
      const d = r.body;
      expect(d).toMatchObject({ repository: "pypi-local", format: "pypi", type: "hosted", name: "ui-demo", repositoryUrl: `${env.vault.url}/pypi-local`, downloads: 2, truncated: false });
      expect(d.versions.map((v: Json) => [v.version, v.files.map((f: Json) => f.file).sort()])).toEqual([
        ["1.1.0", ["ui-demo-1.1.0.tar.gz", "ui_demo-1.1.0-py3-none-any.whl"]],
        ["1.0.0", ["ui_demo-1.0.0-py3-none-any.whl"]],
      ]);
      expect(d.files).toEqual([]);
      for (const u of env.uploads) {
        const f = d.versions.flatMap((v: Json) => v.files).find((x: Json) => x.file === u.filename);
        expect(f).toMatchObject({ version: u.version, digest: `sha256:${u.sha256}`, sizeBytes: u.bytes.byteLength, contentType: "application/octet-stream", kind: "artifact" });
        expect(f.downloads).toBe(u.filename === "ui_demo-1.1.0-py3-none-any.whl" ? 2 : 0);
        expect(Math.abs(f.fetchedAt - Date.now())).toBeLessThan(600_000);
        const got = await fetch(f.url);
        expect(sha256(new Uint8Array(await got.arrayBuffer()))).toBe(u.sha256);
      }
      expect(d.setup.map((s: Json) => s.client)).toEqual(["pip", "pip.conf", "twine"]);
      expect(d.setup[0].code).toBe(`pip install --index-url ${env.vault.url}/pypi-local/simple/ ui-demo==1.1.0`);
      expect(d.setup[2].code).toBe(`twine upload --repository-url ${env.vault.url}/pypi-local/ -u <user> dist/*`);
      expect(d.groups.map((g: Json) => [g.name, g.setup[0].code])).toEqual([["python", `pip install --index-url ${env.vault.url}/python/simple/ ui-demo==1.1.0`]]);
      // any spelling of the name finds the page
      expect((await api(env, "repositories/pypi-local/packages/UI_Demo")).body.name).toBe("ui-demo");
    });

    test("package page of a proxied project: the upstream's sha256 and size", async () => {
      const p = env.proxied;
      const d = (await api(env, `repositories/pypi-proxy/packages/${p.project}`)).body;
      const f = d.versions[0].files[0];
      expect([d.versions[0].version, f.file, f.digest, f.sizeBytes, f.downloads]).toEqual([p.version, p.filename, `sha256:${p.sha256}`, p.sizeBytes, 1]);
      const got = await fetch(f.url);
      expect(got.headers.get("x-vault-cache")).toBe("HIT");
      expect(sha256(new Uint8Array(await got.arrayBuffer()))).toBe(p.sha256);
    });

    test("repository detail: facts and client set-up built from the request's base URL", async () => {
      const r = (await api(env, "repositories/python")).body;
      expect(r).toMatchObject({ name: "python", type: "group", members: ["pypi-local", "pypi-proxy"] });
      expect(r.setup.find((s: Json) => s.client === "pip").code).toBe(`pip install --index-url ${env.vault.url}/python/simple/ <project>`);
      expect(r.setup.find((s: Json) => s.client === "pip.conf").code).toBe(`[global]\nindex-url = ${env.vault.url}/python/simple/`);
      // a public host name over plain HTTP gets --trusted-host
      const viaName = await fetch(`${env.vault.url}/-/api/repositories/pypi-proxy`, { headers: { host: "vault.example:8080" } });
      const pip = (await viaName.json()).setup.find((s: Json) => s.client === "pip").code;
      expect(pip).toBe("pip install --index-url http://vault.example:8080/pypi-proxy/simple/ --trusted-host vault.example:8080 <project>");
      const s3 = (await api(env, "repositories/objects")).body.setup.map((s: Json) => s.client);
      expect(s3).toContain("aws");
    });

    test("stats: cache results of this process, stored bytes per repository, the deduplicated blob store", async () => {
      const s = (await api(env, "stats")).body;
      const files = s.repositories.find((r: Json) => r.name === "files");
      expect(files.cache.results.MISS).toBeGreaterThanOrEqual(2);
      expect(files.cache.results.HIT).toBeGreaterThanOrEqual(1);
      expect(files.cache.results.NEGATIVE ?? files.cache.results.MISS).toBeGreaterThanOrEqual(1);
      expect(files.cache.bytesServed).toBeGreaterThanOrEqual(2 * env.toolBytes.byteLength);
      expect(files.cache.hitRatio).toBeGreaterThan(0);
      expect(files.cache.hitRatio).toBeLessThan(1);
      expect(s.blobStore.blobs).toBeGreaterThanOrEqual(8);
      expect(s.blobStore.sizeBytes).toBeGreaterThan(0);
      expect(s.totals.storedBytes).toBe(s.repositories.reduce((n: number, r: Json) => n + r.storedBytes, 0));
      expect(s.totals.downloads).toBe(s.repositories.reduce((n: number, r: Json) => n + r.downloads, 0));
    });

    test("errors: unknown routes and repositories 404, bad parameters 400, writes 405, all as { error: { code, message } }", async () => {
      const cases: [string, number, string][] = [
        ["nope", 404, "VAULT_NOT_FOUND"],
        ["repositories/none", 404, "VAULT_NOT_FOUND"],
        ["repositories/pypi-local/packages/no-such-project", 404, "VAULT_NOT_FOUND"],
        ["search?limit=0", 400, "VAULT_BAD_REQUEST"],
        ["search?limit=101", 400, "VAULT_BAD_REQUEST"],
        ["search?offset=-1", 400, "VAULT_BAD_REQUEST"],
        [`search?q=${"x".repeat(300)}`, 400, "VAULT_BAD_REQUEST"],
        ["repositories/%E0%A4%A", 400, "VAULT_BAD_PATH"],
      ];
      for (const [path, status, code] of cases) {
        const r = await api(env, path);
        expect([path, r.status, r.body.error.code, typeof r.body.error.message]).toEqual([path, status, code, "string"]);
      }
      const post = await fetch(`${env.vault.url}/-/api/search`, { method: "POST", body: "{}" });
      expect([post.status, post.headers.get("allow"), (await post.json()).error.code]).toEqual([405, "GET, HEAD", "VAULT_METHOD_NOT_ALLOWED"]);
    });

    test("a stored name holding markup comes back verbatim in JSON and escaped in HTML", async () => {
      const j = await api(env, "search?q=script");
      expect(j.body.results.map((r: Json) => r.name)).toEqual([XSS_PACKAGE]);
      const d = await api(env, `repositories/objects/packages/${XSS_PACKAGE.split("/").map(encodeURIComponent).join("/")}`);
      expect(d.body.files.map((f: Json) => f.file)).toEqual([XSS_FILE]);
      for (const page of [`search?q=script`, `repositories/objects`, `repositories/objects/packages/${XSS_PACKAGE.split("/").map(encodeURIComponent).join("/")}`]) {
        const res = await fetch(`${env.vault.url}/-/ui/${page}`);
        expect(res.status).toBe(200);
        const body = await res.text();
        expect(body).not.toContain("<script>window");
        expect(body).not.toContain("<img");
        expect(body).toContain("&lt;script&gt;window.__xss=1&lt;");
        expect(res.headers.get("content-security-policy")).toContain("script-src 'self'");
      }
    });

    test("pages: HTML with no-store; embedded assets immutable under their hash, revalidated under their plain name", async () => {
      const home = await fetch(`${env.vault.url}/-/ui/`);
      expect([home.status, home.headers.get("content-type"), home.headers.get("cache-control"), home.headers.get("x-content-type-options")]).toEqual([
        200,
        "text/html; charset=utf-8",
        "no-store",
        "nosniff",
      ]);
      const html = await home.text();
      expect(html).toContain('<a href="/-/ui/repositories/pypi-local">pypi-local</a>');
      expect(html).not.toContain("/-/ui/repositories/secret");
      const redirect = await fetch(`${env.vault.url}/-/ui`, { redirect: "manual" });
      expect([redirect.status, redirect.headers.get("location")]).toEqual([301, "/-/ui/"]);
      const css = /href="(\/-\/ui\/static\/[0-9a-f]{16}\/ui\.css)"/.exec(html)![1];
      const js = /src="(\/-\/ui\/static\/[0-9a-f]{16}\/ui\.js)"/.exec(html)![1];
      for (const [url, type] of [[css, "text/css; charset=utf-8"], [js, "text/javascript; charset=utf-8"]]) {
        const r = await fetch(env.vault.url + url);
        expect([r.status, r.headers.get("content-type"), r.headers.get("cache-control")]).toEqual([200, type, "public, max-age=31536000, immutable"]);
        expect((await r.text()).length).toBeGreaterThan(100);
        const plain = await fetch(env.vault.url + url.replace(/[0-9a-f]{16}\//, ""), { headers: { "if-none-match": r.headers.get("etag")! } });
        expect([plain.status, plain.headers.get("cache-control")]).toEqual([304, "no-cache"]);
      }
      expect((await fetch(`${env.vault.url}/-/ui/static/0000000000000000/ui.css`)).status).toBe(404);
      const missing = await fetch(`${env.vault.url}/-/ui/repositories/secret`);
      expect([missing.status, missing.headers.get("content-type")]).toEqual([404, "text/html; charset=utf-8"]);
      const login = await fetch(`${env.vault.url}/-/ui/login`, { redirect: "manual" });
      expect([login.status, login.headers.get("www-authenticate")]).toEqual([401, 'Basic realm="vault"']);
      const in_ = await fetch(`${env.vault.url}/-/ui/login`, { redirect: "manual", headers: basic("alice") });
      expect([in_.status, in_.headers.get("location")]).toEqual([303, "/-/ui/"]);
    });
  });
}

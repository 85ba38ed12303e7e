/**
 * pypi hosted and group repositories over raw HTTP (fetch with multipart/form-data bodies as twine builds them): auth
 * (401 with a Basic challenge, 403, user:password and __token__:<API token>), validation (names, versions, file types,
 * digests, wheel METADATA), duplicates, size limits, the stored PEP 691 / PEP 503 pages and `.metadata`, pages never
 * listing a file that cannot be downloaded (also under concurrent uploads and two vault processes on one data
 * directory), big uploads through the worker pool, and groups (merge order, files through the group, stored merged
 * pages, uploads to writeTo, 405s). Real vault (in-process, SQLite + fs store) and a real loopback PEP 503 index.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { strToU8, unzipSync, zipSync } from "fflate";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { buildWheel, startPypiIndex, type TestPypiIndex } from "../helpers/pypi-index.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { twineUploadForm, type TwineUpload } from "../helpers/python.ts";
import { openDb } from "../../core/db/index.ts";
import { createAuthCore } from "../../core/auth/index.ts";
import { silentLogger } from "../../core/log.ts";
import type { VaultConfig } from "../../core/config/types.ts";

const PW = "pw-hosted-1";
const JSON_ACCEPT = "application/vnd.pypi.simple.v1+json";
const TINY_LIMIT = 64 * 1024;
const POOL_THRESHOLD = 256 * 1024;

const sha256 = (b: Uint8Array) => new Bun.CryptoHasher("sha256").update(b).digest("hex");
const basic = (user: string, pass = PW) => ({ authorization: "Basic " + btoa(`${user}:${pass}`) });

/** A wheel like test/helpers/pypi-index.ts buildWheel, optionally padded with a stored (uncompressed) data file of `padBytes`. */
function wheel(dist: string, version: string, o: { requiresPython?: string; padBytes?: number; seed?: number } = {}): Uint8Array {
  if (!o.padBytes && o.seed === undefined) return buildWheel(dist, version, o.requiresPython);
  const di = `${dist}-${version}.dist-info`;
  const pad = new Uint8Array(o.padBytes ?? 16);
  let x = (o.seed ?? 7) >>> 0 || 1;
  for (let i = 0; i < pad.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    pad[i] = x & 0xff;
  }
  return zipSync(
    {
      [`${dist}/data.bin`]: [pad, { level: 0 }],
      [`${di}/METADATA`]: strToU8(`Metadata-Version: 2.1\nName: ${dist}\nVersion: ${version}\n${o.requiresPython ? `Requires-Python: ${o.requiresPython}\n` : ""}`),
      [`${di}/WHEEL`]: strToU8("Wheel-Version: 1.0\nGenerator: vault-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
      [`${di}/RECORD`]: strToU8(""),
    },
    { mtime: new Date("2020-01-01T00:00:00Z") },
  );
}

/** A gzip "sdist" (the vault checks the signature; twine's e2e test uploads real ones). */
const sdist = (text: string) => Bun.gzipSync(strToU8(text));

type UploadOpts = TwineUpload;

/** The multipart form twine posts, with the summary this suite's pages show. */
function uploadForm(o: UploadOpts): FormData {
  return twineUploadForm({ ...o, fields: { summary: "test package", ...o.fields } });
}

/** POSTs an upload; never follows redirects (twine aborts on any 3xx). */
function upload(url: string, o: UploadOpts, headers: Record<string, string> = basic("writer")): Promise<Response> {
  return fetch(url, { method: "POST", body: uploadForm(o), headers, redirect: "manual" });
}

/** Adds a user with grants, as `vault user add` + `vault user grant`; optionally creates an API token for them. */
async function addUser(dataDir: string, name: string, grants: { repository: string; actions: string }[], token = false): Promise<string | undefined> {
  const db = openDb(join(dataDir, "vault.db"));
  try {
    const auth = createAuthCore({ db: db.db, log: silentLogger });
    await auth.addUser({ name, password: PW, grants });
    return token ? (await auth.createToken(name, { name: "twine" })).token : undefined;
  } finally {
    db.close();
  }
}

/** The PEP 691 page of a project, its files with absolute URLs. */
async function page(base: string, path: string): Promise<{ status: number; doc: any; urls: string[]; res: Response }> {
  const url = `${base}${path}`;
  const res = await fetch(url, { headers: { accept: JSON_ACCEPT } });
  if (res.status !== 200) {
    await res.arrayBuffer();
    return { status: res.status, doc: null, urls: [], res };
  }
  const doc = await res.json();
  return { status: 200, doc, urls: (doc.files ?? []).map((f: { url: string }) => new URL(f.url, url).href), res };
}

/** Every file a page lists downloads with the page's sha256 and size, and every advertised .metadata with its sha256. */
async function expectAllDownloadable(base: string, path: string): Promise<number> {
  const p = await page(base, path);
  expect(p.status).toBe(200);
  for (const [i, f] of p.doc.files.entries()) {
    const r = await fetch(p.urls[i]);
    expect(r.status).toBe(200);
    const b = await r.bytes();
    expect(sha256(b)).toBe(f.hashes.sha256);
    if (f.size !== undefined) expect(b.byteLength).toBe(f.size);
    if (f["core-metadata"]) {
      const m = await fetch(p.urls[i] + ".metadata");
      expect(m.status).toBe(200);
      expect(sha256(await m.bytes())).toBe(f["core-metadata"].sha256);
    }
  }
  return p.doc.files.length;
}

let idx: TestPypiIndex;
let vault: StartedVault;
let base: string;
let token: string;
let config: VaultConfig;
const poolCalls: string[] = [];

beforeAll(async () => {
  idx = await startPypiIndex();
  config = {
    auth: { admin: { user: "admin", password: PW } },
    pool: { offloadThresholdBytes: POOL_THRESHOLD },
    repositories: [
      { name: "local", format: "pypi", type: "hosted" },
      { name: "tiny", format: "pypi", type: "hosted", maxUploadBytes: TINY_LIMIT },
      { name: "closed", format: "pypi", type: "hosted", anonymousRead: false },
      { name: "up", format: "pypi", type: "proxy", upstream: idx.indexUrl, fileHosts: [idx.url, idx.files.url] },
      { name: "all", format: "pypi", type: "group", members: ["local", "up"], writeTo: "local" },
      { name: "readonly-group", format: "pypi", type: "group", members: ["local"] },
      { name: "outer", format: "pypi", type: "group", members: ["all"] },
    ],
  } as VaultConfig;
  vault = await startVault({ config });
  base = vault.url;
  token = (await addUser(vault.dataDir, "writer", [
    { repository: "local", actions: "write" },
    { repository: "tiny", actions: "write" },
    { repository: "closed", actions: "write" },
    { repository: "all", actions: "write" },
    { repository: "readonly-group", actions: "write" },
  ], true))!;
  await addUser(vault.dataDir, "reader", [{ repository: "*", actions: "read" }]);
  await addUser(vault.dataDir, "localonly", [{ repository: "local", actions: "write" }]);
  const pool = vault.vault.repositories.get("local")!.pool;
  const run = pool.run.bind(pool);
  pool.run = ((task: string, input: { op?: string }, opts?: unknown) => {
    poolCalls.push(`${task}:${input?.op}`);
    return run(task, input, opts as never);
  }) as typeof pool.run;
}, 60_000);

afterAll(async () => {
  await vault?.stop();
  await idx?.stop();
});

describe("uploads to a hosted repository", () => {
  test("at the mount root, legacy/ and legacy (never a redirect), with user:password and __token__:<API token>; audited", async () => {
    const files = [
      { url: `${base}/local/`, auth: basic("writer"), o: { name: "acme-tools", version: "1.0.0", filename: "acme_tools-1.0.0-py3-none-any.whl", bytes: wheel("acme_tools", "1.0.0", { requiresPython: ">=3.8" }), fields: { requires_python: ">=3.8" } } },
      { url: `${base}/local/legacy/`, auth: basic("__token__", token), o: { name: "acme-tools", version: "1.0.0", filename: "acme_tools-1.0.0.tar.gz", bytes: sdist("acme sdist 1.0.0") } },
      { url: `${base}/local/legacy`, auth: basic("writer", token), o: { name: "Acme.Tools", version: "2.0", filename: "acme_tools-2.0-py3-none-any.whl", bytes: wheel("acme_tools", "2.0") } },
      { url: `${base}/local`, auth: basic("writer"), o: { name: "other", version: "0.1", filename: "other-0.1.zip", bytes: zipSync({ "other-0.1/PKG-INFO": strToU8("Name: other\n") }) } },
    ];
    for (const f of files) {
      const r = await upload(f.url, f.o, f.auth);
      expect(await r.text()).toBe("OK\n");
      expect(r.status).toBe(200);
    }
    const db = new Database(join(vault.dataDir, "vault.db"), { readonly: true });
    try {
      const rows = db.query("SELECT actor, action, repository, path, detail FROM audit_log WHERE action = 'pypi.upload' ORDER BY id").all() as { actor: string; repository: string; path: string; detail: string }[];
      expect(rows.map((r) => [r.actor, r.repository, r.path])).toEqual([
        ["writer", "local", "files/acme-tools/acme_tools-1.0.0-py3-none-any.whl"],
        ["writer", "local", "files/acme-tools/acme_tools-1.0.0.tar.gz"],
        ["writer", "local", "files/acme-tools/acme_tools-2.0-py3-none-any.whl"],
        ["writer", "local", "files/other/other-0.1.zip"],
      ]);
      expect(JSON.parse(rows[0].detail)).toMatchObject({ filename: "acme_tools-1.0.0-py3-none-any.whl", version: "1.0.0", sha256: sha256(files[0].o.bytes) });
    } finally {
      db.close();
    }
  });

  test("no credentials → 401 with a Basic challenge; a wrong password → 401; a read-only user → 403; nothing stored", async () => {
    const o = { name: "denied", version: "1.0", filename: "denied-1.0.tar.gz", bytes: sdist("denied") };
    const none = await upload(`${base}/local/`, o, {});
    expect(none.status).toBe(401);
    expect(none.headers.get("www-authenticate")).toBe('Basic realm="vault"');
    expect(none.headers.get("content-type")).toStartWith("text/plain");
    await none.text();
    expect((await upload(`${base}/local/`, o, basic("writer", "wrong"))).status).toBe(401);
    const ro = await upload(`${base}/local/legacy/`, o, basic("reader"));
    expect(ro.status).toBe(403);
    await ro.text();
    expect((await upload(`${base}/all/`, o, basic("localonly"))).status).toBe(403); // a group needs its own write grant
    expect((await page(base, "/local/simple/denied/")).status).toBe(404);
    expect((await fetch(`${base}/local/files/denied/denied-1.0.tar.gz`)).status).toBe(404);
  });

  test("PEP 691 JSON and PEP 503 HTML pages: hashes, requires-python, core-metadata, size, upload-time, versions; stored bytes with ETag", async () => {
    const p = await page(base, "/local/simple/acme-tools/");
    expect(p.res.headers.get("content-type")).toBe("application/vnd.pypi.simple.v1+json");
    expect(p.res.headers.get("vary")).toBe("Accept");
    const w1 = wheel("acme_tools", "1.0.0", { requiresPython: ">=3.8" });
    const meta = unzipSync(w1)["acme_tools-1.0.0.dist-info/METADATA"];
    expect(p.doc.meta).toEqual({ "api-version": "1.1" });
    expect(p.doc.name).toBe("acme-tools");
    expect(p.doc.versions).toEqual(["1.0.0", "2.0"]);
    expect(p.doc.files.map((f: { filename: string }) => f.filename)).toEqual(["acme_tools-1.0.0-py3-none-any.whl", "acme_tools-1.0.0.tar.gz", "acme_tools-2.0-py3-none-any.whl"]);
    const [f1, f2] = p.doc.files;
    expect(f1).toMatchObject({
      url: "../../files/acme-tools/acme_tools-1.0.0-py3-none-any.whl",
      hashes: { sha256: sha256(w1) },
      "requires-python": ">=3.8",
      "core-metadata": { sha256: sha256(meta) },
      size: w1.byteLength,
      yanked: false,
    });
    expect(f1["upload-time"]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    expect(f1).not.toHaveProperty("dist-info-metadata");
    expect(f2).not.toHaveProperty("core-metadata"); // sdists have no .metadata
    expect(f2).not.toHaveProperty("requires-python");

    const h = await fetch(`${base}/local/simple/acme-tools/`);
    expect(h.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(h.headers.get("vary")).toBe("Accept");
    expect(h.headers.get("cache-control")).toBe("no-cache");
    const etag = h.headers.get("etag")!;
    const html = await h.text();
    expect(html).toContain(`<a href="../../files/acme-tools/acme_tools-1.0.0-py3-none-any.whl#sha256=${sha256(w1)}" data-requires-python="&gt;=3.8" data-core-metadata="sha256=${sha256(meta)}" data-dist-info-metadata="sha256=${sha256(meta)}">acme_tools-1.0.0-py3-none-any.whl</a>`);
    expect(html).toContain('<meta name="pypi:repository-version" content="1.1">');
    const v1html = await fetch(`${base}/local/simple/acme-tools/`, { headers: { accept: "application/vnd.pypi.simple.v1+html" } });
    expect(v1html.headers.get("content-type")).toBe("application/vnd.pypi.simple.v1+html");
    expect(await v1html.text()).toBe(html);
    const again = await fetch(`${base}/local/simple/acme-tools/`, { headers: { "if-none-match": etag } });
    expect(again.status).toBe(304);
    // the stored representation is what is served (rendered once, at upload time)
    const stored = await vault.vault.repositories.get("local")!.artifacts.get("simple/acme-tools/#text-html");
    expect(stored?.etag).toBe(etag);

    const root = await page(base, "/local/simple/");
    expect(root.res.headers.get("content-type")).toBe("application/vnd.pypi.simple.v1+json");
    expect(root.doc.projects).toEqual([{ name: "acme-tools" }, { name: "other" }]);
    const rootHtml = await (await fetch(`${base}/local/simple/`)).text();
    expect(rootHtml).toContain('<a href="acme-tools/">acme-tools</a>');

    for (const [from, to] of [
      ["/local/simple/Acme_Tools/", "/local/simple/acme-tools/"],
      ["/local/simple/acme-tools", "/local/simple/acme-tools/"],
      ["/local/simple", "/local/simple/"],
    ]) {
      const r = await fetch(base + from, { redirect: "manual" });
      expect(r.status).toBe(301);
      expect(r.headers.get("location")).toBe(to);
    }
    const no = await fetch(`${base}/local/simple/acme-tools/`, { headers: { accept: "application/json" } });
    expect(no.status).toBe(406);
    expect(no.headers.get("vary")).toBe("Accept");
    expect((await page(base, "/local/simple/nosuch/")).status).toBe(404);
  });

  test(".metadata is the wheel's METADATA byte for byte; files download with the page's sha256; a file that is not stored is 404", async () => {
    const w1 = wheel("acme_tools", "1.0.0", { requiresPython: ">=3.8" });
    const m = await fetch(`${base}/local/files/acme-tools/acme_tools-1.0.0-py3-none-any.whl.metadata`);
    expect(m.status).toBe(200);
    expect(await m.bytes()).toEqual(unzipSync(w1)["acme_tools-1.0.0.dist-info/METADATA"]);
    expect(await expectAllDownloadable(base, "/local/simple/acme-tools/")).toBe(3);
    expect((await fetch(`${base}/local/files/acme-tools/acme_tools-1.0.0.tar.gz.metadata`)).status).toBe(404);
    expect((await fetch(`${base}/local/files/acme-tools/acme_tools-9.9.tar.gz`)).status).toBe(404);
    expect((await fetch(`${base}/local/info/acme-tools/acme_tools-1.0.0.tar.gz`)).status).toBe(404); // internal rows are not served
    const range = await fetch(`${base}/local/files/acme-tools/acme_tools-1.0.0-py3-none-any.whl`, { headers: { range: "bytes=0-3" } });
    expect(range.status).toBe(206);
    expect(await range.text()).toBe("PK\u0003\u0004");
  });

  test("an identical re-upload is a no-op 200 (as on PyPI); the same name with other bytes → 400 File already exists", async () => {
    const before = await (await fetch(`${base}/local/simple/acme-tools/`)).text();
    const same = await upload(`${base}/local/`, { name: "acme-tools", version: "1.0.0", filename: "acme_tools-1.0.0.tar.gz", bytes: sdist("acme sdist 1.0.0") });
    expect(same.status).toBe(200);
    expect(await same.text()).toContain("identical");
    const other = await upload(`${base}/local/`, { name: "acme-tools", version: "1.0.0", filename: "acme_tools-1.0.0.tar.gz", bytes: sdist("other bytes") });
    expect(other.status).toBe(400);
    expect(await other.text()).toContain("File already exists");
    expect(await (await fetch(`${base}/local/simple/acme-tools/`)).text()).toBe(before);
    const f = await fetch(`${base}/local/files/acme-tools/acme_tools-1.0.0.tar.gz`);
    expect(sha256(await f.bytes())).toBe(sha256(sdist("acme sdist 1.0.0")));
  });

  test("a declared digest the file does not have → 400 and nothing stored; correct md5 and blake2_256 digests are accepted", async () => {
    const bytes = sdist("digest test");
    const wrong: Record<string, string>[] = [{ sha256_digest: "0".repeat(64) }, { md5_digest: "0".repeat(32) }, { blake2_256_digest: "f".repeat(64) }];
    for (const fields of wrong) {
      const r = await upload(`${base}/local/`, { name: "digests", version: "1.0", filename: "digests-1.0.tar.gz", bytes, fields, noDigest: "sha256_digest" in fields });
      expect(r.status).toBe(400);
      expect(await r.text()).toContain("_digest does not match the uploaded file");
    }
    expect((await page(base, "/local/simple/digests/")).status).toBe(404);
    expect((await fetch(`${base}/local/files/digests/digests-1.0.tar.gz`)).status).toBe(404);
    expect(await vault.vault.repositories.get("local")!.artifacts.list("info/digests/")).toEqual([]);
    const bad = await upload(`${base}/local/`, { name: "digests", version: "1.0", filename: "digests-1.0.tar.gz", bytes, fields: { md5_digest: "xyz" } });
    expect(bad.status).toBe(400);
    expect(await bad.text()).toContain("md5_digest is not 32 hex digits");
    const ok = await upload(`${base}/local/`, {
      name: "digests",
      version: "1.0",
      filename: "digests-1.0.tar.gz",
      bytes,
      fields: { md5_digest: new Bun.CryptoHasher("md5").update(bytes).digest("hex"), blake2_256_digest: new Bun.CryptoHasher("blake2b256").update(bytes).digest("hex") },
    });
    expect(ok.status).toBe(200);
    await ok.text();
  });

  test("validation: name, version, filetype, :action, file name, contents — each a 400 saying why, nothing stored", async () => {
    const w = wheel("valid", "1.0");
    const cases: [Partial<UploadOpts>, string][] = [
      [{ name: "other-name" }, "does not belong to project other-name"],
      [{ version: "1.1" }, "does not match version 1.1"],
      [{ version: "not-a-version" }, "invalid version"],
      [{ name: "bad name!" }, "invalid project name"],
      [{ filetype: "sdist" }, "filetype sdist does not match"],
      [{ filetype: "bdist_egg" }, "unsupported filetype"],
      [{ fields: { ":action": "doc_upload" } }, "unsupported :action"],
      [{ fields: { protocol_version: "2" } }, "unsupported protocol_version"],
      [{ filename: "valid-1.0.exe" }, "not a wheel (.whl) or sdist"],
      [{ filename: "valid-1.0-py3-none.whl" }, "wheel file name must be"],
      [{ bytes: strToU8("not a zip") }, "not a valid zip archive"],
      [{ bytes: zipSync({ "valid/__init__.py": strToU8("") }) }, "no .dist-info/METADATA"],
      [{ bytes: wheel("valid", "2.0") }, "METADATA Version"],
      [{ bytes: new Uint8Array(0), noDigest: true }, "the file is empty"],
      [{ filename: "valid-1.0.tar.gz", filetype: "sdist" }, "not a gzip file"],
    ];
    for (const [o, why] of cases) {
      const r = await upload(`${base}/local/`, { name: "valid", version: "1.0", filename: "valid-1.0-py3-none-any.whl", bytes: w, ...o });
      const text = await r.text();
      expect([r.status, text]).toEqual([400, expect.stringContaining(why)]);
    }
    const notForm = await fetch(`${base}/local/`, { method: "POST", body: "x=1", headers: { ...basic("writer"), "content-type": "application/x-www-form-urlencoded" } });
    expect(notForm.status).toBe(400);
    expect(await notForm.text()).toContain("multipart/form-data");
    const noFile = uploadForm({ name: "valid", version: "1.0", filename: "valid-1.0-py3-none-any.whl", bytes: w });
    noFile.delete("content");
    const nf = await fetch(`${base}/local/`, { method: "POST", body: noFile, headers: basic("writer") });
    expect([nf.status, await nf.text()]).toEqual([400, expect.stringContaining("missing content")]);
    expect((await page(base, "/local/simple/valid/")).status).toBe(404);
    expect(await vault.vault.repositories.get("local")!.artifacts.list("files/valid/")).toEqual([]);
  });

  test("maxUploadBytes: a Content-Length over the limit → 413 before the body is read; a larger file → 413; a chunked body → 413", async () => {
    const small = wheel("sized", "1.0", { padBytes: TINY_LIMIT - 2048 });
    const ok = await upload(`${base}/tiny/`, { name: "sized", version: "1.0", filename: "sized-1.0-py3-none-any.whl", bytes: small });
    expect(ok.status).toBe(200);
    await ok.text();
    const over = wheel("sized", "2.0", { padBytes: TINY_LIMIT + 10 });
    const r = await upload(`${base}/tiny/`, { name: "sized", version: "2.0", filename: "sized-2.0-py3-none-any.whl", bytes: over });
    expect(r.status).toBe(413);
    expect(await r.text()).toContain(`limit of ${TINY_LIMIT} bytes`);
    const huge = wheel("sized", "3.0", { padBytes: 6 * 1024 * 1024 });
    const h = await upload(`${base}/tiny/`, { name: "sized", version: "3.0", filename: "sized-3.0-py3-none-any.whl", bytes: huge });
    expect(h.status).toBe(413);
    await h.text();
    // without Content-Length (chunked): refused once the body grows past the limit + the form allowance
    const form = new Response(uploadForm({ name: "sized", version: "3.0", filename: "sized-3.0-py3-none-any.whl", bytes: huge }));
    const ct = form.headers.get("content-type")!;
    const bytes = new Uint8Array(await form.arrayBuffer());
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (let o = 0; o < bytes.length; o += 65536) c.enqueue(bytes.subarray(o, o + 65536));
        c.close();
      },
    });
    const ch = await fetch(`${base}/tiny/`, { method: "POST", body: stream, headers: { ...basic("writer"), "content-type": ct } });
    expect(ch.status).toBe(413);
    await ch.text();
    const p = await page(base, "/tiny/simple/sized/");
    expect(p.doc.files.map((f: { filename: string }) => f.filename)).toEqual(["sized-1.0-py3-none-any.whl"]);
  });

  test("a repository without anonymous read: pages and files need credentials", async () => {
    const o = { name: "secret", version: "1.0", filename: "secret-1.0-py3-none-any.whl", bytes: wheel("secret", "1.0") };
    expect((await upload(`${base}/closed/`, o)).status).toBe(200);
    const anon = await fetch(`${base}/closed/simple/secret/`);
    expect(anon.status).toBe(401);
    expect(anon.headers.get("www-authenticate")).toBe('Basic realm="vault"');
    await anon.text();
    const r = await fetch(`${base}/closed/files/secret/secret-1.0-py3-none-any.whl`, { headers: basic("reader") });
    expect(sha256(await r.bytes())).toBe(sha256(o.bytes));
  });

  test("big uploads are hashed and unzipped in the worker pool; the result is the same", async () => {
    poolCalls.length = 0;
    const big = wheel("bigpkg", "1.0", { padBytes: POOL_THRESHOLD * 2, requiresPython: ">=3.9" });
    const r = await upload(`${base}/local/`, { name: "bigpkg", version: "1.0", filename: "bigpkg-1.0-py3-none-any.whl", bytes: big, fields: { requires_python: ">=3.9" } });
    expect([r.status, await r.text()]).toEqual([200, "OK\n"]);
    expect(poolCalls).toContain("pypiSimple:inspect");
    expect(await expectAllDownloadable(base, "/local/simple/bigpkg/")).toBe(1);
    const m = await fetch(`${base}/local/files/bigpkg/bigpkg-1.0-py3-none-any.whl.metadata`);
    expect(await m.text()).toBe("Metadata-Version: 2.1\nName: bigpkg\nVersion: 1.0\nRequires-Python: >=3.9\n");
    const small = await upload(`${base}/local/`, { name: "bigpkg", version: "1.1", filename: "bigpkg-1.1-py3-none-any.whl", bytes: wheel("bigpkg", "1.1") });
    expect(small.status).toBe(200);
    expect(poolCalls.filter((c) => c === "pypiSimple:inspect").length).toBe(1); // small files stay on the event loop
  });

  test("concurrent uploads to one project: every page seen lists only downloadable files, and the last lists them all", async () => {
    const n = 12;
    const bodies = Array.from({ length: n }, (_, i) => wheel("racer", `1.${i}`, { seed: i + 1 }));
    let polling = true;
    let seen = 0;
    const poller = (async () => {
      while (polling) {
        const p = await page(base, "/local/simple/racer/");
        if (p.status === 200) {
          seen++;
          for (const u of p.urls) expect((await fetch(u, { method: "HEAD" })).status).toBe(200);
        }
      }
    })();
    const results = await Promise.all(bodies.map((bytes, i) => upload(`${base}/local/`, { name: "racer", version: `1.${i}`, filename: `racer-1.${i}-py3-none-any.whl`, bytes })));
    polling = false;
    await poller;
    expect(results.map((r) => r.status)).toEqual(Array(n).fill(200));
    expect(seen).toBeGreaterThan(0);
    expect(await expectAllDownloadable(base, "/local/simple/racer/")).toBe(n);
  });
});

describe("two vault processes on one data directory", () => {
  test("concurrent uploads to one project through both: the page ends up listing every file", async () => {
    const dataDir = await tmpDataDir("pypi-shared-");
    const cfg = { auth: { admin: { user: "admin", password: PW } }, repositories: [{ name: "shared", format: "pypi", type: "hosted" }] } as VaultConfig;
    const a = await startVault({ config: cfg, dataDir });
    const b = await startVault({ config: cfg, dataDir });
    try {
      const n = 10;
      const rs = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          upload(`${(i % 2 ? a : b).url}/shared/`, { name: "twin", version: `2.${i}`, filename: `twin-2.${i}-py3-none-any.whl`, bytes: wheel("twin", `2.${i}`, { seed: 100 + i }) }, basic("admin")),
        ),
      );
      expect(rs.map((r) => r.status)).toEqual(Array(n).fill(200));
      // the other process may serve a page it read up to 5 s ago; the stored page is complete at once
      const rows = await a.vault.repositories.get("shared")!.artifacts.list("simple/twin/", { limit: 1 });
      const snap = JSON.parse(new TextDecoder().decode(await a.vault.repositories.get("shared")!.artifacts.read(rows[0])));
      expect(snap.page.files.length).toBe(n);
      const root = await a.vault.repositories.get("shared")!.artifacts.list("simple/", { limit: 1 });
      expect(JSON.parse(new TextDecoder().decode(await a.vault.repositories.get("shared")!.artifacts.read(root[0]))).list.projects).toEqual(["twin"]);
    } finally {
      await a.stop();
      await b.stop();
    }
  }, 60_000);
});

describe("group repositories", () => {
  test("a project page merges hosted and proxy pages in member order (first member wins by file name); files come through the group", async () => {
    // a hosted file with the name of the proxy's example 21.12, other bytes: the group serves the hosted one
    const mine = wheel("example", "21.12", { seed: 5 });
    const r = await upload(`${base}/local/`, { name: "example", version: "21.12", filename: "example-21.12-py3-none-any.whl", bytes: mine });
    expect(r.status).toBe(200);
    const p = await page(base, "/all/simple/example/");
    expect(p.status).toBe(200);
    expect(p.res.headers.get("vary")).toBe("Accept");
    const byName = Object.fromEntries(p.doc.files.map((f: any, i: number) => [f.filename, { f, url: p.urls[i] }]));
    expect(Object.keys(byName).sort()).toEqual(["example-21.12-py3-none-any.whl", "example-99.0-py3-none-any.whl"]);
    expect(byName["example-21.12-py3-none-any.whl"].f.hashes.sha256).toBe(sha256(mine));
    expect(byName["example-21.12-py3-none-any.whl"].url).toBe(`${base}/all/files/local/example/example-21.12-py3-none-any.whl`);
    expect(byName["example-99.0-py3-none-any.whl"].url.startsWith(`${base}/all/files/up/packages/`)).toBe(true);
    expect(byName["example-99.0-py3-none-any.whl"].f["requires-python"]).toBe("<3");
    expect(p.doc.meta["api-version"]).toBe("1.0"); // the HTML upstream gives no versions/sizes
    expect(await expectAllDownloadable(base, "/all/simple/example/")).toBe(2);
    expect(idx.fileRequests().filter((x) => x.path.endsWith("example-21.12-py3-none-any.whl")).length).toBe(0); // shadowed upstream file never fetched

    // a project only upstream, one only hosted; the nested group too
    expect(await expectAllDownloadable(base, "/all/simple/wheel/")).toBe(1);
    expect(await expectAllDownloadable(base, "/all/simple/acme-tools/")).toBe(3);
    expect(await expectAllDownloadable(base, "/outer/simple/acme-tools/")).toBe(3);
    expect((await page(base, "/outer/simple/acme-tools/")).urls[0]).toBe(`${base}/outer/files/all/local/acme-tools/acme_tools-1.0.0-py3-none-any.whl`);
    expect((await page(base, "/all/simple/nosuch/")).status).toBe(404);
    const wrongMember = await fetch(`${base}/all/files/tiny/sized/sized-1.0-py3-none-any.whl`);
    expect(wrongMember.status).toBe(404);
    await wrongMember.text();
  });

  test("the merged page is stored and reused while the members' pages are unchanged, and merged again after an upload", async () => {
    const group = vault.vault.repositories.get("all")!;
    const first = await fetch(`${base}/all/simple/acme-tools/`, { headers: { accept: JSON_ACCEPT } });
    const etag1 = first.headers.get("etag");
    await first.arrayBuffer();
    const snap1 = await group.artifacts.get("simple/acme-tools/");
    const rep1 = await group.artifacts.get("simple/acme-tools/#json");
    const again = await fetch(`${base}/all/simple/acme-tools/`, { headers: { accept: JSON_ACCEPT, "if-none-match": etag1! } });
    expect(again.status).toBe(304);
    expect(await group.artifacts.get("simple/acme-tools/")).toBe(snap1); // the same entry object: nothing rewritten
    expect(await group.artifacts.get("simple/acme-tools/#json")).toBe(rep1);

    const r = await upload(`${base}/local/`, { name: "acme-tools", version: "3.0", filename: "acme_tools-3.0-py3-none-any.whl", bytes: wheel("acme_tools", "3.0") });
    expect(r.status).toBe(200);
    const p = await page(base, "/all/simple/acme-tools/");
    expect(p.res.headers.get("etag")).not.toBe(etag1);
    expect(p.doc.files.map((f: { filename: string }) => f.filename)).toContain("acme_tools-3.0-py3-none-any.whl");
  });

  test("the root index is the union of the members' indexes", async () => {
    const root = await page(base, "/all/simple/");
    const names = root.doc.projects.map((p: { name: string }) => p.name);
    for (const n of ["acme-tools", "example", "example2", "pip", "wheel", "racer", "bigpkg"]) expect(names).toContain(n);
    expect(names.filter((n: string) => n === "example").length).toBe(1);
  });

  test("uploads through a group land in its writeTo member; a group without writeTo and a proxy answer 405", async () => {
    const o = { name: "via-group", version: "1.0", filename: "via_group-1.0-py3-none-any.whl", bytes: wheel("via_group", "1.0") };
    const r = await upload(`${base}/all/legacy/`, o);
    expect([r.status, await r.text()]).toEqual([200, "OK\n"]);
    expect(await expectAllDownloadable(base, "/local/simple/via-group/")).toBe(1);
    expect(await expectAllDownloadable(base, "/all/simple/via-group/")).toBe(1);
    const db = new Database(join(vault.dataDir, "vault.db"), { readonly: true });
    try {
      const row = db.query("SELECT repository, detail FROM audit_log WHERE path = 'files/via-group/via_group-1.0-py3-none-any.whl'").get() as { repository: string; detail: string };
      expect(row.repository).toBe("local");
      expect(JSON.parse(row.detail).via).toBe("all");
    } finally {
      db.close();
    }
    for (const url of [`${base}/readonly-group/`, `${base}/up/legacy/`]) {
      const n = await upload(url, { ...o, version: "2.0", filename: "via_group-2.0-py3-none-any.whl", bytes: wheel("via_group", "2.0") });
      expect(n.status).toBe(405);
      expect(n.headers.get("allow")).toBe("GET, HEAD");
      await n.text();
    }
    const put = await fetch(`${base}/local/legacy/`, { method: "PUT", body: "x", headers: basic("writer") });
    expect(put.status).toBe(405);
    expect(put.headers.get("allow")).toBe("GET, HEAD, POST");
    await put.text();
  });
});

describe("deleting and yanking hosted files", () => {
  const maint = () => basic("maintainer");
  const del = (path: string, headers: Record<string, string> = maint()) => fetch(`${base}${path}`, { method: "DELETE", headers });
  const auditRows = (action: string) => {
    const db = new Database(join(vault.dataDir, "vault.db"), { readonly: true });
    try {
      return db.query("SELECT actor, repository, path, detail FROM audit_log WHERE action = ? ORDER BY id").all(action) as { actor: string; repository: string; path: string; detail: string }[];
    } finally {
      db.close();
    }
  };

  test("DELETE of one file and of a version: delete permission, pages (JSON, HTML, root index) rewritten, .metadata gone, 404 for unknown; audited", async () => {
    await addUser(vault.dataDir, "maintainer", [
      { repository: "local", actions: "delete" },
      { repository: "all", actions: "delete" },
      { repository: "readonly-group", actions: "delete" },
    ]);
    const ups = [
      { name: "doomed", version: "1.0", filename: "doomed-1.0-py3-none-any.whl", bytes: wheel("doomed", "1.0") },
      { name: "doomed", version: "1.0", filename: "doomed-1.0.tar.gz", bytes: sdist("doomed 1.0") },
      { name: "doomed", version: "2.0", filename: "doomed-2.0-py3-none-any.whl", bytes: wheel("doomed", "2.0") },
      { name: "solo", version: "1.0", filename: "solo-1.0-py3-none-any.whl", bytes: wheel("solo", "1.0") },
    ];
    for (const o of ups) expect((await upload(`${base}/local/`, o)).status).toBe(200);

    const anon = await del("/local/files/doomed/doomed-1.0.tar.gz", {});
    expect(anon.status).toBe(401);
    await anon.text();
    const writer = await del("/local/doomed/1.0/", basic("writer"));
    expect(writer.status).toBe(403);
    await writer.text();
    expect(await expectAllDownloadable(base, "/local/simple/doomed/")).toBe(3);

    const one = await del("/local/files/doomed/doomed-1.0.tar.gz");
    expect([one.status, await one.text()]).toEqual([200, "OK (deleted doomed-1.0.tar.gz)\n"]);
    expect((await fetch(`${base}/local/files/doomed/doomed-1.0.tar.gz`)).status).toBe(404);
    let p = await page(base, "/local/simple/doomed/");
    expect(p.doc.files.map((f: { filename: string }) => f.filename)).toEqual(["doomed-1.0-py3-none-any.whl", "doomed-2.0-py3-none-any.whl"]);
    expect(p.doc.versions).toEqual(["1.0", "2.0"]);

    const ver = await del("/local/doomed/1.0.0"); // PEP 440: 1.0.0 == 1.0; the trailing slash is optional
    expect([ver.status, await ver.text()]).toEqual([200, "OK (deleted doomed-1.0-py3-none-any.whl)\n"]);
    p = await page(base, "/local/simple/doomed/");
    expect(p.doc.files.map((f: { filename: string }) => f.filename)).toEqual(["doomed-2.0-py3-none-any.whl"]);
    expect(p.doc.versions).toEqual(["2.0"]);
    const html = await (await fetch(`${base}/local/simple/doomed/`, { headers: { accept: "text/html" } })).text();
    expect(html).toContain("doomed-2.0-py3-none-any.whl");
    expect(html).not.toContain("doomed-1.0");
    for (const f of ["doomed-1.0-py3-none-any.whl", "doomed-1.0-py3-none-any.whl.metadata"]) expect((await fetch(`${base}/local/files/doomed/${f}`)).status).toBe(404);
    expect(await expectAllDownloadable(base, "/local/simple/doomed/")).toBe(1);

    for (const path of ["/local/doomed/1.0/", "/local/nope/1.0/", "/local/files/doomed/doomed-9.whl"]) {
      const r = await del(path);
      expect(r.status).toBe(404);
      await r.text();
    }

    // through the group's writeTo: the project's last file goes, so do its page and its root index entry
    expect((await page(base, "/local/simple/")).doc.projects.map((x: { name: string }) => x.name)).toContain("solo");
    const viaGroup = await del("/all/solo/1.0/");
    expect(viaGroup.status).toBe(200);
    await viaGroup.text();
    expect((await page(base, "/local/simple/solo/")).status).toBe(404);
    expect((await page(base, "/local/simple/")).doc.projects.map((x: { name: string }) => x.name)).not.toContain("solo");
    expect((await page(base, "/all/simple/solo/")).status).toBe(404);
    const ro = await del("/readonly-group/doomed/2.0/");
    expect(ro.status).toBe(405);
    await ro.text();
    const page405 = await del("/local/simple/doomed/extra/more/"); // not a delete path: as before, 405
    expect(page405.status).toBe(405);
    await page405.text();

    const rows = auditRows("pypi.delete");
    expect(rows.map((r) => [r.actor, r.repository, r.path])).toEqual([
      ["maintainer", "local", "files/doomed/doomed-1.0.tar.gz"],
      ["maintainer", "local", "files/doomed/"],
      ["maintainer", "local", "files/solo/"],
    ]);
    expect(JSON.parse(rows[1].detail)).toMatchObject({ version: "1.0.0", files: ["doomed-1.0-py3-none-any.whl"] });
    expect(JSON.parse(rows[2].detail)).toMatchObject({ via: "all", files: ["solo-1.0-py3-none-any.whl"] });
  });

  test("PEP 592 yank with a reason (JSON or form) or none, and unyank: data-yanked and \"yanked\" on the pages; 404 for an unknown version", async () => {
    const o = { name: "yanky", version: "3.0", filename: "yanky-3.0-py3-none-any.whl", bytes: wheel("yanky", "3.0") };
    expect((await upload(`${base}/local/`, o)).status).toBe(200);
    const post = (path: string, init: RequestInit = {}) => fetch(`${base}${path}`, { method: "POST", ...init, headers: { ...maint(), ...(init.headers as Record<string, string>) } });
    const state = async () => {
      const j = (await page(base, "/local/simple/yanky/")).doc.files[0].yanked;
      const html = await (await fetch(`${base}/local/simple/yanky/`, { headers: { accept: "text/html" } })).text();
      return { j, html };
    };
    expect((await state()).j).toBe(false);

    const forbidden = await fetch(`${base}/local/yanky/3.0/yank`, { method: "POST", headers: basic("writer") });
    expect(forbidden.status).toBe(403);
    await forbidden.text();

    let r = await post("/local/yanky/3.0/yank", { body: JSON.stringify({ reason: "broken <build>" }), headers: { "content-type": "application/json" } });
    expect([r.status, await r.text()]).toEqual([200, "OK (yanked yanky-3.0-py3-none-any.whl)\n"]);
    let s = await state();
    expect(s.j).toBe("broken <build>");
    expect(s.html).toContain('data-yanked="broken &lt;build&gt;"');

    r = await post("/local/yanky/3.0/unyank");
    expect(r.status).toBe(200);
    await r.text();
    s = await state();
    expect(s.j).toBe(false);
    expect(s.html).not.toContain("data-yanked");

    const form = new FormData();
    form.set("reason", "superseded");
    r = await post("/all/yanky/3.0/yank/", { body: form });
    expect(r.status).toBe(200);
    await r.text();
    expect((await state()).j).toBe("superseded");

    r = await post("/local/yanky/3.0/yank");
    expect(r.status).toBe(200);
    await r.text();
    s = await state();
    expect(s.j).toBe(true);
    expect(s.html).toContain('data-yanked=""');
    expect(await expectAllDownloadable(base, "/local/simple/yanky/")).toBe(1);

    r = await post("/local/yanky/9.9/yank");
    expect(r.status).toBe(404);
    await r.text();
    const rows = auditRows("pypi.yank");
    expect(rows.map((x) => JSON.parse(x.detail))).toEqual([
      { version: "3.0", files: ["yanky-3.0-py3-none-any.whl"], reason: "broken <build>" },
      { via: "all", version: "3.0", files: ["yanky-3.0-py3-none-any.whl"], reason: "superseded" },
      { version: "3.0", files: ["yanky-3.0-py3-none-any.whl"] },
    ]);
    expect(auditRows("pypi.unyank").length).toBe(1);
  });
});

/**
 * e2e: the real pip against a pypi proxy repository whose upstream is a loopback PEP 503 index built from real
 * wheels (test/helpers/pypi-index.ts). Covers install + download, a second fresh venv served from the vault's cache,
 * the HTML and JSON simple API, redirects, `.metadata`, the Warehouse JSON API, and the seed-style `backends:` layout.
 *
 * Python: the first of $VAULT_TEST_PYTHON, `python3` on PATH (pyenv here), /usr/bin/python3 (Debian, with
 * python3-venv + python3-pip-whl in CI) whose `-m venv` gives a venv with a working pip. Under CI=true a missing
 * venv/pip fails the tests; elsewhere they are skipped with the reason printed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { startPypiIndex, type TestPypiIndex } from "../helpers/pypi-index.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { installedDists, makeVenv, PYTHON_CANDIDATES, runClient } from "../helpers/python.ts";

const CI = process.env.CI === "true";
/** Per-test bound for tests that create venvs and run pip (milliseconds). */
const PIP_TIMEOUT_MS = 180_000;

const candidates = PYTHON_CANDIDATES;
/** Runs a command with the clean pip environment (test/helpers/python.ts), bounded (default 120 s). */
const run = (cmd: string[], timeoutMs = 120_000) => runClient(cmd, timeoutMs);
const installed = installedDists;
const firstVenvDir = join(await tmpDataDir("pip-venv-a-"), "venv");
const venvA = await makeVenv(firstVenvDir, candidates);
const PY = "error" in venvA ? null : venvA;
if (!PY) console.warn(`pip e2e: ${CI ? "FAILING (CI=true)" : "skipping"}: ${"error" in venvA ? venvA.error : ""}`);
else console.log(`pip e2e: ${PY.python} (pip ${PY.pipVersion})`);
/** Runs pip tests when python+venv+pip exist, and also under CI (where they then fail loudly). */
const pipTest = PY || CI ? test : test.skip;

function requirePy(): NonNullable<typeof PY> {
  if (!PY) throw new Error(`python3 with a working venv + pip is required under CI=true: ${"error" in venvA ? venvA.error : ""}`);
  return PY;
}

describe("pip through a pypi proxy repository (native layout /<repo>/simple/)", () => {
  let idx: TestPypiIndex;
  let vault: StartedVault;
  let indexUrl: string;

  beforeAll(async () => {
    idx = await startPypiIndex();
    vault = await startVault({
      config: { repositories: [{ name: "pypi", format: "pypi", type: "proxy", upstream: idx.indexUrl, fileHosts: [idx.url, idx.files.url] }] },
    });
    indexUrl = `${vault.url}/pypi/simple/`;
  });
  afterAll(async () => {
    await vault?.stop();
    await idx?.stop();
  });

  pipTest("pip install and pip download succeed; yanked and Requires-Python-excluded files are skipped", async () => {
    const py = requirePy();
    const r = await run([py.venvPython, "-m", "pip", "install", "--no-cache-dir", "--index-url", indexUrl, "example", "example2", "wheel"]);
    expect(r.out).toContain("Successfully installed");
    expect(r.code).toBe(0);
    const got = await installed(py.venvPython);
    expect(got.example).toBe("21.12"); // example 99.0 has Requires-Python <3
    expect(got.example2).toBe("1.0.0"); // example2 2.0.0 is yanked
    expect(got.wheel).toBe("0.38.4");

    const dl = join(await tmpDataDir("pip-dl-"), "d");
    const d = await run([py.venvPython, "-m", "pip", "download", "--no-cache-dir", "--no-deps", "--index-url", indexUrl, "-d", dl, "pip==23.0.1", "setuptools==66.1.1"]);
    expect(d.code).toBe(0);
    const files = (await readdir(dl)).sort();
    expect(files).toEqual(["pip-23.0.1-py3-none-any.whl", "setuptools-66.1.1-py3-none-any.whl"]);
    for (const f of files) {
      const sha = new Bun.CryptoHasher("sha256").update(await Bun.file(join(dl, f)).bytes()).digest("hex");
      expect(sha).toBe(idx.byName.get(f)!.sha256);
    }
    // every wheel pip needed came from upstream exactly once; excluded files were never fetched
    const fetched = idx.fileRequests().filter((x) => x.method === "GET" && x.path.endsWith(".whl")).map((x) => x.path.split("/").pop());
    expect(fetched.sort()).toEqual(["example-21.12-py3-none-any.whl", "example2-1.0.0-py3-none-any.whl", "pip-23.0.1-py3-none-any.whl", "setuptools-66.1.1-py3-none-any.whl", "wheel-0.38.4-py3-none-any.whl"]);
    // pip ≥ 23.2 reads PEP 714 `core-metadata` from the JSON page and fetches `.metadata` (through the vault) before the wheel
    const [maj, min] = py.pipVersion.split(".").map(Number);
    if (maj > 23 || (maj === 23 && min >= 2)) {
      expect(r.out).toContain("wheel-0.38.4-py3-none-any.whl.metadata");
      expect(idx.fileRequests().filter((x) => x.path === idx.byName.get("wheel-0.38.4-py3-none-any.whl")!.path + ".metadata").length).toBe(1);
    }
  }, PIP_TIMEOUT_MS);

  pipTest("a second fresh venv with an empty pip cache is served from the vault's cache (no new upstream requests)", async () => {
    const py = requirePy();
    const before = { files: idx.fileRequests().length, index: idx.index.requests.length, filesHost: idx.files.requests.length };
    const venvB = await makeVenv(join(await tmpDataDir("pip-venv-b-"), "venv"), [py.python]);
    if ("error" in venvB) throw new Error(venvB.error);
    const r = await run([venvB.venvPython, "-m", "pip", "install", "--no-cache-dir", "--index-url", indexUrl, "example", "example2", "wheel"]);
    expect(r.code).toBe(0);
    const got = await installed(venvB.venvPython);
    expect([got.example, got.example2, got.wheel]).toEqual(["21.12", "1.0.0", "0.38.4"]);
    expect(idx.fileRequests().length).toBe(before.files);
    expect(idx.files.requests.length).toBe(before.filesHost);
    expect(idx.index.requests.length).toBe(before.index); // pages still fresh; pip's max-age=0 answered without refetching
  }, PIP_TIMEOUT_MS);
});

describe("simple API over HTTP (fetch)", () => {
  let idx: TestPypiIndex;
  let vault: StartedVault;
  const PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";

  beforeAll(async () => {
    idx = await startPypiIndex({ json: true });
    vault = await startVault({
      config: { repositories: [{ name: "py", format: "pypi", type: "proxy", upstream: idx.indexUrl, fileHosts: [idx.url, idx.files.url] }] },
    });
  });
  afterAll(async () => {
    await vault?.stop();
    await idx?.stop();
  });

  test("JSON and HTML from one upstream snapshot; exact content types; Vary: Accept; 406", async () => {
    const j = await fetch(`${vault.url}/py/simple/wheel/`, { headers: { accept: PIP_ACCEPT } });
    expect(j.status).toBe(200);
    expect(j.headers.get("content-type")).toBe("application/vnd.pypi.simple.v1+json");
    expect(j.headers.get("vary")).toBe("Accept");
    const doc = await j.json();
    expect(doc.meta["api-version"]).toBe("1.1"); // upstream JSON gave versions and sizes
    expect(doc.versions).toEqual(["0.38.4"]);
    const f = doc.files[0];
    expect(f.filename).toBe("wheel-0.38.4-py3-none-any.whl");
    expect(f.size).toBe(idx.byName.get(f.filename)!.sizeBytes);
    expect(f.hashes).toEqual({ sha256: idx.byName.get(f.filename)!.sha256 });
    expect(f["core-metadata"]).toEqual({ sha256: idx.byName.get(f.filename)!.metadataSha256 });
    expect(f).not.toHaveProperty("dist-info-metadata");
    expect(f["requires-python"]).toBe(">=3.7");

    const pageRequests = idx.index.count("/simple/wheel/");
    for (const [accept, ct] of [
      ["text/html", "text/html; charset=utf-8"],
      ["application/vnd.pypi.simple.v1+html", "application/vnd.pypi.simple.v1+html"],
      ["application/vnd.pypi.simple.latest+html", "application/vnd.pypi.simple.v1+html"],
      ["", "text/html; charset=utf-8"],
    ]) {
      const h = await fetch(`${vault.url}/py/simple/wheel/`, { headers: accept ? { accept } : {} });
      expect(h.status).toBe(200);
      expect(h.headers.get("content-type")).toBe(ct);
      expect(h.headers.get("vary")).toBe("Accept");
      const html = await h.text();
      expect(html).toContain('data-requires-python="&gt;=3.7"');
      expect(html).toContain(`data-core-metadata="sha256=${idx.byName.get(f.filename)!.metadataSha256}"`);
      expect(html).toContain(`data-dist-info-metadata="sha256=${idx.byName.get(f.filename)!.metadataSha256}"`);
      expect(html).toContain(`#sha256=${idx.byName.get(f.filename)!.sha256}"`);
    }
    expect(idx.index.count("/simple/wheel/")).toBe(pageRequests); // both representations from the one snapshot

    const viaQuery = await fetch(`${vault.url}/py/simple/wheel/?format=application/vnd.pypi.simple.v1%2Bjson`, { headers: { accept: "text/html" } });
    expect(viaQuery.headers.get("content-type")).toBe("application/vnd.pypi.simple.v1+json");
    await viaQuery.arrayBuffer();

    const no = await fetch(`${vault.url}/py/simple/wheel/`, { headers: { accept: "application/json" } });
    expect(no.status).toBe(406);
    expect(no.headers.get("content-type")).toStartWith("text/plain");
    expect(no.headers.get("vary")).toBe("Accept");
    await no.text();
  });

  test("file URLs point at the vault, download verified bytes, .metadata served, conditional GET → 304", async () => {
    const j = await (await fetch(`${vault.url}/py/simple/wheel/`, { headers: { accept: PIP_ACCEPT } })).json();
    const fileUrl = new URL(j.files[0].url, `${vault.url}/py/simple/wheel/`).href;
    expect(fileUrl.startsWith(`${vault.url}/py/files/packages/`)).toBe(true);
    const want = idx.byName.get("wheel-0.38.4-py3-none-any.whl")!;
    const r = await fetch(fileUrl);
    expect(r.status).toBe(200);
    expect(new Bun.CryptoHasher("sha256").update(await r.bytes()).digest("hex")).toBe(want.sha256);
    const m = await fetch(fileUrl + ".metadata");
    expect(m.status).toBe(200);
    const meta = await m.bytes();
    expect(new Bun.CryptoHasher("sha256").update(meta).digest("hex")).toBe(want.metadataSha256!);
    expect(new TextDecoder().decode(meta)).toContain("Name: wheel");
    // a file whose page advertises no metadata has no .metadata
    const ex = await (await fetch(`${vault.url}/py/simple/example2/`, { headers: { accept: PIP_ACCEPT } })).json();
    const exUrl = new URL(ex.files[0].url, `${vault.url}/py/simple/example2/`).href;
    expect((await fetch(exUrl + ".metadata")).status).toBe(404);
    // HEAD and conditional GET on a stored file
    const head = await fetch(fileUrl, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(Number(head.headers.get("content-length"))).toBe(want.sizeBytes);
    const etag = head.headers.get("etag")!;
    const c = await fetch(fileUrl, { headers: { "if-none-match": etag } });
    expect(c.status).toBe(304);
    const page = await fetch(`${vault.url}/py/simple/wheel/`, { headers: { accept: PIP_ACCEPT } });
    const p304 = await fetch(`${vault.url}/py/simple/wheel/`, { headers: { accept: PIP_ACCEPT, "if-none-match": page.headers.get("etag")!, "cache-control": "max-age=0" } });
    await page.arrayBuffer();
    expect(p304.status).toBe(304);
    expect(p304.headers.get("vary")).toBe("Accept");
    // each upstream file fetched once
    expect(idx.fileRequests().filter((x) => x.path === want.path && x.method === "GET").length).toBe(1);
  });

  test("non-normalized names and missing slashes redirect (301); unknown projects 404 as text/plain", async () => {
    for (const [from, to] of [
      ["/py/simple/Example2/", "/py/simple/example2/"],
      ["/py/simple/EXAMPLE2", "/py/simple/example2/"],
      ["/py/simple/example2", "/py/simple/example2/"],
      ["/py/simple/Set_Up.Tools/", "/py/simple/set-up-tools/"],
      ["/py/simple", "/py/simple/"],
    ]) {
      const r = await fetch(vault.url + from, { redirect: "manual" });
      expect(r.status).toBe(301);
      expect(r.headers.get("location")).toBe(to);
    }
    const nf = await fetch(`${vault.url}/py/simple/no-such-project/`);
    expect(nf.status).toBe(404);
    expect(nf.headers.get("content-type")).toStartWith("text/plain");
    await nf.text();
    const notListed = await fetch(`${vault.url}/py/files/packages/aa/bb/nothing-1.0-py3-none-any.whl`);
    expect(notListed.status).toBe(404);
    await notListed.text();
    const root = await fetch(`${vault.url}/py/simple/`, { headers: { accept: "application/vnd.pypi.simple.v1+json" } });
    expect(root.headers.get("content-type")).toBe("application/vnd.pypi.simple.v1+json");
    expect((await root.json()).projects.map((p: { name: string }) => p.name)).toEqual(["example", "example2", "pip", "setuptools", "wheel"]);
  });

  test("Warehouse JSON API passthrough with file URLs rewritten to the vault", async () => {
    const r = await fetch(`${vault.url}/py/pypi/example2/json`);
    expect(r.status).toBe(200);
    const doc = await r.json();
    expect(doc.info.name).toBe("example2");
    const urls: string[] = [...doc.urls.map((u: { url: string }) => u.url), ...Object.values(doc.releases).flat().map((u) => (u as { url: string }).url)];
    expect(urls.length).toBeGreaterThan(1);
    for (const u of urls) expect(u.startsWith(`${vault.url}/py/files/packages/`)).toBe(true);
    const got = await fetch(doc.urls[0].url);
    expect(got.status).toBe(200);
    expect(new Bun.CryptoHasher("sha256").update(await got.bytes()).digest("hex")).toBe(doc.urls[0].digests.sha256);
    const v = await fetch(`${vault.url}/py/pypi/example2/1.0.0/json`);
    expect(v.status).toBe(200);
    expect((await v.json()).urls[0].filename).toBe("example2-1.0.0-py3-none-any.whl");
    const redir = await fetch(`${vault.url}/py/pypi/Example2/json`, { redirect: "manual" });
    expect(redir.status).toBe(301);
    expect(redir.headers.get("location")).toBe("/py/pypi/example2/json");
    const missing = await fetch(`${vault.url}/py/pypi/nothing-here/json`);
    expect(missing.status).toBe(404);
    await missing.text();
  });
});

describe("seed-style config (backends: [{type: pypi, config: {prefix: /pypi/, index_url}}])", () => {
  let idx: TestPypiIndex;
  let vault: StartedVault;

  beforeAll(async () => {
    idx = await startPypiIndex({ json: true });
    vault = await startVault({
      config: { backends: [{ type: "pypi", config: { prefix: "/pypi/", index_url: idx.indexUrl, fileHosts: [idx.url, idx.files.url] } }] },
    });
  });
  afterAll(async () => {
    await vault?.stop();
    await idx?.stop();
  });

  test("GET /pypi/<project>/ is the project page", async () => {
    const r = await fetch(`${vault.url}/pypi/example2/`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("text/html; charset=utf-8");
    const html = await r.text();
    expect(html).toContain("../files/packages/");
    expect(html).toContain('data-yanked="broken build, use 1.0.0"');
    const redirect = await fetch(`${vault.url}/pypi/Example2`, { redirect: "manual" });
    expect(redirect.status).toBe(301);
    expect(redirect.headers.get("location")).toBe("/pypi/example2/");
  });

  pipTest("pip install --index-url <vault>/pypi/", async () => {
    const py = requirePy();
    const venv = await makeVenv(join(await tmpDataDir("pip-venv-seed-"), "venv"), [py.python]);
    if ("error" in venv) throw new Error(venv.error);
    const r = await run([venv.venvPython, "-m", "pip", "install", "--no-cache-dir", "--index-url", `${vault.url}/pypi/`, "example", "example2==1.0.0", "wheel"]);
    expect(r.code).toBe(0);
    const got = await installed(venv.venvPython);
    expect([got.example, got.example2, got.wheel]).toEqual(["21.12", "1.0.0", "0.38.4"]);
    expect(idx.fileRequests().some((x) => x.path.endsWith("example2-1.0.0-py3-none-any.whl"))).toBe(true);
  }, PIP_TIMEOUT_MS);
});

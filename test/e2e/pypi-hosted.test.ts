/**
 * e2e: the real twine uploads wheels and sdists to a pypi hosted repository (at the mount root with user:password, at
 * `legacy/` of a group with `__token__` and an API token); the real pip installs from the hosted simple index and from
 * a group of that hosted repository and a proxy of a loopback PEP 503 index (one package from each member), and
 * `pip download --require-hashes` through the group checks the hashes of both wheels and of the uploaded sdist, whose
 * metadata pip prepares with setuptools fetched through the group.
 *
 * Clients: Debian's /usr/bin/twine (package `twine`); Python as in pip.test.ts (the first of $VAULT_TEST_PYTHON,
 * `python3` on PATH, /usr/bin/python3 whose `-m venv` gives a working pip). Under CI=true a missing twine or
 * venv/pip fails the tests; elsewhere they are skipped with the reason printed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { buildWheel, startPypiIndex, type TestPypiIndex } from "../helpers/pypi-index.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { installedDists, makeVenv, PYTHON_CANDIDATES, runClient } from "../helpers/python.ts";
import { openDb } from "../../core/db/index.ts";
import { createAuthCore } from "../../core/auth/index.ts";
import { silentLogger } from "../../core/log.ts";
import type { VaultConfig } from "../../core/config/types.ts";

const CI = process.env.CI === "true";
/** Per-test bound for tests that create venvs and run pip or twine (milliseconds). */
const CLIENT_TIMEOUT_MS = 180_000;
const PW = "pw-twine-1";

const sha256 = (b: Uint8Array) => new Bun.CryptoHasher("sha256").update(b).digest("hex");

const TWINE = Bun.which("twine");
const candidates = PYTHON_CANDIDATES;
const run = runClient;
const installed = installedDists;
const venvA = await makeVenv(join(await tmpDataDir("twine-venv-a-"), "venv"), candidates);
const PY = "error" in venvA ? null : venvA;
const problems = [...(TWINE ? [] : ["twine not installed (apt-get install twine)"]), ...("error" in venvA ? [venvA.error] : [])];
if (problems.length) console.warn(`twine/pip e2e: ${CI ? "FAILING (CI=true)" : "skipping"}: ${problems.join("; ")}`);
else console.log(`twine/pip e2e: ${TWINE} (${(await run([TWINE!, "--version"])).out.split("\n")[0]}), ${PY!.python} (pip ${PY!.pipVersion})`);
/** Runs the tests when twine, python, venv and pip exist, and always under CI (where they then fail loudly). */
const clientTest = problems.length === 0 || CI ? test : test.skip;

function requireClients(): { twine: string; py: NonNullable<typeof PY> } {
  if (problems.length) throw new Error(`required under CI=true: ${problems.join("; ")}`);
  return { twine: TWINE!, py: PY! };
}

/**
 * A real sdist: `<name>-<version>/` with PKG-INFO (what twine reads), a PEP 621 pyproject.toml built by setuptools, and
 * one module, packed by tar.
 */
async function buildSdist(dir: string, name: string, version: string): Promise<string> {
  const root = join(dir, `${name}-${version}`);
  await mkdir(join(root, name), { recursive: true });
  await writeFile(join(root, "PKG-INFO"), `Metadata-Version: 2.1\nName: ${name}\nVersion: ${version}\nSummary: an sdist uploaded by twine\nRequires-Python: >=3.7\n`);
  await writeFile(
    join(root, "pyproject.toml"),
    `[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n[project]\nname = "${name}"\nversion = "${version}"\nrequires-python = ">=3.7"\n\n[tool.setuptools]\npackages = ["${name}"]\n`,
  );
  await writeFile(join(root, name, "__init__.py"), `VERSION = "${version}"\n`);
  const out = join(dir, `${name}-${version}.tar.gz`);
  const r = await run(["tar", "-czf", out, "-C", dir, `${name}-${version}`]);
  if (r.code !== 0) throw new Error(`tar: ${r.out}`);
  return out;
}

describe("twine uploads, pip installs: hosted and group repositories", () => {
  let idx: TestPypiIndex;
  let vault: StartedVault;
  let token: string;
  let dist: string;
  const files: Record<string, string> = {};

  beforeAll(async () => {
    idx = await startPypiIndex();
    vault = await startVault({
      config: {
        auth: { admin: { user: "admin", password: PW } },
        repositories: [
          { name: "team", format: "pypi", type: "hosted" },
          { name: "pypi", format: "pypi", type: "proxy", upstream: idx.indexUrl, fileHosts: [idx.url, idx.files.url] },
          { name: "python", format: "pypi", type: "group", members: ["team", "pypi"], writeTo: "team" },
        ],
      } as VaultConfig,
    });
    const db = openDb(join(vault.dataDir, "vault.db"));
    try {
      const auth = createAuthCore({ db: db.db, log: silentLogger });
      await auth.addUser({ name: "ci", password: PW, grants: [{ repository: "team", actions: "write" }, { repository: "python", actions: "write" }] });
      await auth.addUser({ name: "dev", password: PW, grants: [{ repository: "*", actions: "read" }] });
      token = (await auth.createToken("ci", { name: "twine" })).token;
    } finally {
      db.close();
    }
    dist = await tmpDataDir("twine-dist-");
    for (const [dname, version, rp] of [
      ["acme_tools", "1.0.0", ">=3.7"],
      ["acme_extra", "0.2", undefined],
    ] as const) {
      const f = join(dist, `${dname}-${version}-py3-none-any.whl`);
      await Bun.write(f, buildWheel(dname, version, rp));
      files[dname] = f;
    }
    files.acme_sdist = await buildSdist(dist, "acme_sdist", "0.1");
  }, 60_000);
  afterAll(async () => {
    await vault?.stop();
    await idx?.stop();
  });

  clientTest("twine uploads a wheel and an sdist to the hosted repository's mount root (user:password)", async () => {
    const { twine } = requireClients();
    const r = await run([twine, "upload", "--repository-url", `${vault.url}/team/`, "-u", "ci", "-p", PW, "--non-interactive", "--disable-progress-bar", files.acme_tools, files.acme_sdist]);
    expect(r.out).toContain("Uploading acme_tools-1.0.0-py3-none-any.whl");
    expect(r.out).toContain("Uploading acme_sdist-0.1.tar.gz");
    expect(r.code).toBe(0);
    const page = await (await fetch(`${vault.url}/team/simple/acme-tools/`, { headers: { accept: "application/vnd.pypi.simple.v1+json" } })).json();
    expect(page.files.map((f: { filename: string }) => f.filename)).toEqual(["acme_tools-1.0.0-py3-none-any.whl"]);
    expect(page.files[0].hashes.sha256).toBe(sha256(await Bun.file(files.acme_tools).bytes()));
    expect(page.files[0]["requires-python"]).toBe(">=3.7"); // twine sends requires_python from METADATA
    const sd = await (await fetch(`${vault.url}/team/simple/acme-sdist/`, { headers: { accept: "application/vnd.pypi.simple.v1+json" } })).json();
    expect(sd.files[0].hashes.sha256).toBe(sha256(await Bun.file(files.acme_sdist).bytes()));
  }, CLIENT_TIMEOUT_MS);

  clientTest("twine with __token__ and an API token uploads through the group's legacy/ URL into writeTo; a read-only user is refused", async () => {
    const { twine } = requireClients();
    const denied = await run([twine, "upload", "--repository-url", `${vault.url}/python/legacy/`, "-u", "dev", "-p", PW, "--non-interactive", "--disable-progress-bar", files.acme_extra]);
    expect(denied.code).not.toBe(0);
    expect(denied.out).toContain("403");
    const r = await run([twine, "upload", "--repository-url", `${vault.url}/python/legacy/`, "-u", "__token__", "-p", token, "--non-interactive", "--disable-progress-bar", files.acme_extra]);
    expect(r.out).toContain("Uploading acme_extra-0.2-py3-none-any.whl");
    expect(r.code).toBe(0);
    const direct = await fetch(`${vault.url}/team/files/acme-extra/acme_extra-0.2-py3-none-any.whl`);
    expect(sha256(await direct.bytes())).toBe(sha256(await Bun.file(files.acme_extra).bytes()));
  }, CLIENT_TIMEOUT_MS);

  clientTest("re-uploading: an identical file succeeds, other bytes under the same name fail with File already exists unless --skip-existing", async () => {
    const { twine } = requireClients();
    const up = (extra: string[], file: string) => run([twine, "upload", "--repository-url", `${vault.url}/team/`, "-u", "ci", "-p", PW, "--non-interactive", "--disable-progress-bar", ...extra, file]);
    const same = await up([], files.acme_tools);
    expect(same.code).toBe(0);
    const otherDir = await tmpDataDir("twine-other-");
    const other = join(otherDir, "acme_tools-1.0.0-py3-none-any.whl");
    await Bun.write(other, buildWheel("acme_tools", "1.0.0", ">=3.8"));
    const clash = await up([], other);
    expect(clash.code).not.toBe(0);
    // Bun sends the standard reason phrase, so twine shows "400 Bad Request" (the body says "File already exists",
    // which is what --skip-existing looks for)
    expect(clash.out).toContain("400 Bad Request");
    const skip = await up(["--skip-existing"], other);
    expect(skip.code).toBe(0);
    expect(skip.out).toMatch(/Skipping acme_tools-1\.0\.0-py3-none-any\.whl because it appears to\s+already exist/);
    const f = await fetch(`${vault.url}/team/files/acme-tools/acme_tools-1.0.0-py3-none-any.whl`);
    expect(sha256(await f.bytes())).toBe(sha256(await Bun.file(files.acme_tools).bytes()));
  }, CLIENT_TIMEOUT_MS);

  clientTest("pip installs the uploaded wheel from the hosted simple index in a fresh venv (PEP 658 metadata first, where pip reads it)", async () => {
    const { py } = requireClients();
    const r = await run([py.venvPython, "-m", "pip", "install", "--no-cache-dir", "--index-url", `${vault.url}/team/simple/`, "acme-tools", "acme-extra"]);
    expect(r.out).toContain("Successfully installed");
    expect(r.code).toBe(0);
    const got = await installed(py.venvPython);
    expect(got["acme-tools"]).toBe("1.0.0");
    expect(got["acme-extra"]).toBe("0.2");
    const imp = await run([py.venvPython, "-c", "import acme_tools; print(acme_tools.VERSION)"]);
    expect(imp.out.trim()).toBe("1.0.0");
    const [maj, min] = py.pipVersion.split(".").map(Number);
    if (maj > 23 || (maj === 23 && min >= 2)) expect(r.out).toContain("acme_tools-1.0.0-py3-none-any.whl.metadata");
  }, CLIENT_TIMEOUT_MS);

  clientTest("pip installs from the group one package of each member (hosted wheel, proxied wheel)", async () => {
    const { py } = requireClients();
    const venv = await makeVenv(join(await tmpDataDir("twine-venv-b-"), "venv"), [py.python]);
    if ("error" in venv) throw new Error(venv.error);
    const r = await run([venv.venvPython, "-m", "pip", "install", "--no-cache-dir", "--index-url", `${vault.url}/python/simple/`, "acme-tools", "example"]);
    expect(r.out).toContain("Successfully installed");
    expect(r.code).toBe(0);
    const got = await installed(venv.venvPython);
    expect(got["acme-tools"]).toBe("1.0.0"); // hosted member
    expect(got.example).toBe("21.12"); // proxy member (99.0 needs Python <3)
    expect(r.out).toContain(`${vault.url}/python/files/team/acme-tools/acme_tools-1.0.0-py3-none-any.whl`);
    expect(r.out).toContain(`${vault.url}/python/files/pypi/packages/`);
    expect(idx.fileRequests().some((x) => x.path.endsWith("/example-21.12-py3-none-any.whl"))).toBe(true);
  }, CLIENT_TIMEOUT_MS);

  clientTest("pip download --require-hashes from the group: the uploaded wheel and sdist (its metadata prepared with setuptools fetched through the group) and a proxied wheel match their hashes; a wrong hash is refused", async () => {
    const { py } = requireClients();
    const dir = await tmpDataDir("twine-dl-");
    const toolsSha = sha256(await Bun.file(files.acme_tools).bytes());
    const sdistSha = sha256(await Bun.file(files.acme_sdist).bytes());
    const exampleSha = idx.byName.get("example-21.12-py3-none-any.whl")!.sha256;
    const req = join(dir, "requirements.txt");
    await writeFile(req, `acme-tools==1.0.0 --hash=sha256:${toolsSha}\nacme-sdist==0.1 --hash=sha256:${sdistSha}\nexample==21.12 --hash=sha256:${exampleSha}\n`);
    const out = join(dir, "d");
    const r = await run([py.venvPython, "-m", "pip", "download", "--no-cache-dir", "--no-deps", "--require-hashes", "--index-url", `${vault.url}/python/simple/`, "-d", out, "-r", req], 170_000);
    expect(r.out).toContain("Preparing metadata (pyproject.toml)");
    expect(r.code).toBe(0);
    const got = (await readdir(out)).sort();
    expect(got).toEqual(["acme_sdist-0.1.tar.gz", "acme_tools-1.0.0-py3-none-any.whl", "example-21.12-py3-none-any.whl"]);
    expect(sha256(await Bun.file(join(out, got[0])).bytes())).toBe(sdistSha);
    expect(sha256(await Bun.file(join(out, got[1])).bytes())).toBe(toolsSha);
    expect(sha256(await Bun.file(join(out, got[2])).bytes())).toBe(exampleSha);
    // the sdist's build requirement (setuptools>=61) came from the proxy member, through the group
    expect(idx.fileRequests().some((x) => x.path.endsWith("/setuptools-66.1.1-py3-none-any.whl"))).toBe(true);

    const bad = join(dir, "bad.txt");
    await writeFile(bad, `acme-tools==1.0.0 --hash=sha256:${"0".repeat(64)}\n`);
    const b = await run([py.venvPython, "-m", "pip", "download", "--no-cache-dir", "--no-deps", "--require-hashes", "--index-url", `${vault.url}/python/simple/`, "-d", join(dir, "e"), "-r", bad]);
    expect(b.code).not.toBe(0);
    expect(b.out).toContain("THESE PACKAGES DO NOT MATCH THE HASHES");
  }, CLIENT_TIMEOUT_MS);

  clientTest("PEP 592: pip skips a yanked version unless pinned with ==, and no longer finds a deleted one (twine uploads, HTTP yank/delete)", async () => {
    const { twine, py } = requireClients();
    const db = openDb(join(vault.dataDir, "vault.db"));
    try {
      await createAuthCore({ db: db.db, log: silentLogger }).addUser({ name: "maint", password: PW, grants: [{ repository: "team", actions: "delete" }] });
    } finally {
      db.close();
    }
    const auth = { authorization: "Basic " + btoa(`maint:${PW}`) };
    const wheels = [];
    for (const v of ["1.0", "1.1", "2.0"]) {
      const f = join(dist, `yank_demo-${v}-py3-none-any.whl`);
      await Bun.write(f, buildWheel("yank_demo", v));
      wheels.push(f);
    }
    const up = await run([twine, "upload", "--repository-url", `${vault.url}/team/`, "-u", "ci", "-p", PW, "--non-interactive", "--disable-progress-bar", ...wheels]);
    expect({ code: up.code, out: up.out }).toMatchObject({ code: 0 });
    const yank = await fetch(`${vault.url}/team/yank_demo/2.0/yank`, { method: "POST", body: JSON.stringify({ reason: "broken build" }), headers: { ...auth, "content-type": "application/json" } });
    expect([yank.status, await yank.text()]).toEqual([200, "OK (yanked yank_demo-2.0-py3-none-any.whl)\n"]);
    const del = await fetch(`${vault.url}/team/yank-demo/1.1/`, { method: "DELETE", headers: auth });
    expect(del.status).toBe(200);
    await del.text();

    const out = await tmpDataDir("pip-yank-");
    const download = (spec: string, dest: string) =>
      run([py.venvPython, "-m", "pip", "download", "--no-cache-dir", "--no-deps", "--index-url", `${vault.url}/team/simple/`, "-d", join(out, dest), spec]);
    const newest = await download("yank-demo", "a");
    expect({ code: newest.code, out: newest.out }).toMatchObject({ code: 0 });
    expect(await readdir(join(out, "a"))).toEqual(["yank_demo-1.0-py3-none-any.whl"]); // 2.0 is yanked, 1.1 deleted
    const pinned = await download("yank-demo==2.0", "b");
    expect({ code: pinned.code, out: pinned.out }).toMatchObject({ code: 0 });
    expect(pinned.out).toContain("broken build"); // pip warns with the yank reason
    expect(await readdir(join(out, "b"))).toEqual(["yank_demo-2.0-py3-none-any.whl"]);
    const gone = await download("yank-demo==1.1", "c");
    expect(gone.code).not.toBe(0);
    expect(gone.out).toContain("No matching distribution found for yank-demo==1.1");

    const unyank = await fetch(`${vault.url}/team/yank-demo/2.0/unyank`, { method: "POST", headers: auth });
    expect(unyank.status).toBe(200);
    await unyank.text();
    const again = await download("yank-demo", "d");
    expect(again.code).toBe(0);
    expect(await readdir(join(out, "d"))).toEqual(["yank_demo-2.0-py3-none-any.whl"]);
  }, CLIENT_TIMEOUT_MS);
});

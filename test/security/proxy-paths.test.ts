/**
 * Security: hostile request targets against an http and a pypi proxy repository (specs/http-caching.md §10.9 plus
 * `%2f`, `%5c`, `%00`, `%252e` double encoding, absolute-form, authority-form and `*` targets), sent raw over a TCP
 * socket so no client normalises them first. Encoded attacks that reach the app answer 400 (text/plain); targets Bun
 * already resolved (`/a/%2e%2e/b` arrives as `/b`) must stay inside the repository. Afterwards the upstream request
 * logs show nothing outside the configured bases, and nothing was written outside the data directory.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { startPypiIndex, type TestPypiIndex } from "../helpers/pypi-index.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

const SECRET = "TOP SECRET outside the base";

/** Sends one raw HTTP/1.1 request line (target verbatim) and returns status, headers and body text. */
function raw(port: number, target: string, method = "GET"): Promise<{ status: number; headers: string; body: string }> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, "127.0.0.1", () => {
      sock.write(`${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`);
    });
    const chunks: Buffer[] = [];
    sock.setTimeout(10_000, () => sock.destroy(new Error(`timeout for ${target}`)));
    sock.on("data", (d: Buffer) => chunks.push(d));
    sock.on("error", reject);
    sock.on("close", () => {
      const text = Buffer.concat(chunks).toString("latin1");
      const i = text.indexOf("\r\n\r\n");
      const head = i === -1 ? text : text.slice(0, i);
      resolve({ status: Number(head.split(" ")[1] ?? 0), headers: head, body: i === -1 ? "" : text.slice(i + 4) });
    });
  });
}

let parent: string;
let dataDir: string;
let up: TestUpstream;
let idx: TestPypiIndex;
let vault: StartedVault;

beforeAll(async () => {
  parent = await tmpDataDir("vault-sec-");
  dataDir = join(parent, "data");
  await mkdir(dataDir);
  const root = await tmpDataDir("sec-upstream-");
  await mkdir(join(root, "dist"));
  await writeFile(join(root, "dist", "ok.txt"), "ok\n");
  await writeFile(join(root, "secret.txt"), SECRET);
  up = await startUpstream({ root });
  idx = await startPypiIndex();
  vault = await startVault({
    dataDir,
    config: {
      repositories: [
        { name: "h", format: "http", type: "proxy", upstream: `${up.url}/dist/` },
        { name: "py", format: "pypi", type: "proxy", upstream: idx.indexUrl, fileHosts: [idx.url, idx.files.url] },
      ],
    },
  });
});

afterAll(async () => {
  await vault?.stop();
  await idx?.stop();
  await up?.stop();
});

/** Targets whose hostile part survives Bun's URL parsing: the vault must answer 400 text/plain. */
const HTTP_400 = [
  "/h/%252e%252e/secret.txt",
  "/h/%252e%252e%252fsecret.txt",
  "/h/..%2fsecret.txt",
  "/h/..%2Fsecret.txt",
  "/h/%2e%2e%2fsecret.txt",
  "/h/a%2Fb",
  "/h/a%5cb",
  "/h/..%5csecret.txt",
  "/h/x%00.tgz",
  "/h/ok.txt%00",
  "/h/x%0d%0aSet-Cookie:%20a=1",
  "/h/%c0%ae%c0%ae/secret.txt",
  "/h//etc/passwd",
  "/h/a//b",
  "/h/%2541",
  "/h/%2",
  "/h/%252f",
  "/h/http:%2f%2f169.254.169.254%2flatest",
];

/** Targets Bun resolves before the app sees them (dot segments, backslashes), absolute-form and other forms. */
const RESOLVED = [
  "/../etc/passwd",
  "/h/../secret.txt",
  "/h/%2e%2e/secret.txt",
  "/h/.%2e/secret.txt",
  "/h/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
  "/h/a/../../secret.txt",
  "/h/..\\secret.txt",
  "/h/..\\..\\secret.txt",
  "//etc/passwd",
  "//169.254.169.254/latest/meta-data/",
  "/h/./ok.txt",
  "/h/%2e/ok.txt",
  "http://169.254.169.254/",
  "http://169.254.169.254/latest/meta-data/",
  "http://169.254.169.254/h/ok.txt",
  `http://127.0.0.1:1/h/ok.txt`,
];

describe("http plugin", () => {
  test.each(HTTP_400)("%s → 400 text/plain", async (target) => {
    const r = await raw(vault.port, target);
    expect(r.status).toBe(400);
    expect(r.headers.toLowerCase()).toContain("content-type: text/plain");
    expect(r.body).not.toContain(SECRET);
  });

  test.each(RESOLVED)("%s (resolved by Bun or absolute-form) stays inside the repository", async (target) => {
    const r = await raw(vault.port, target);
    expect([200, 301, 400, 404]).toContain(r.status);
    expect(r.body).not.toContain(SECRET);
    if (r.status === 200) expect(r.body).toBe("ok\n"); // only the file under the base, whatever the target spelled
  });

  test("authority-form (CONNECT) and asterisk-form targets are refused", async () => {
    for (const [m, t] of [
      ["CONNECT", "169.254.169.254:80"],
      ["CONNECT", `127.0.0.1:${up.port}`],
      ["OPTIONS", "*"],
      ["GET", "*"],
    ]) {
      const r = await raw(vault.port, t, m);
      expect(r.status).toBeGreaterThanOrEqual(400);
      expect(r.body).not.toContain(SECRET);
    }
  });
});

describe("pypi plugin", () => {
  beforeAll(async () => {
    // a listed project, so that file links exist
    const r = await fetch(`${vault.url}/py/simple/wheel/`);
    expect(r.status).toBe(200);
    await r.text();
  });

  test.each([
    "/py/files/..%2f..%2fsecret.txt",
    "/py/files/%252e%252e/x.whl",
    "/py/files/packages/x%00.whl",
    "/py/files/packages/a%5cb.whl",
    "/py/files/packages/a%2fb.whl",
    "/py/files//packages/x.whl",
    "/py/files/http:%2f%2f169.254.169.254%2fx",
    "/py/files/packages/%c0%ae%c0%ae/x.whl",
    "/py/simple/%252e%252e/",
    "/py/simple/a%2fb/",
    "/py/simple/x%0a/",
    "/py/simple/wheel%00/",
    "/py/pypi/..%2f/json",
    "/py/pypi/wheel/%252e%252e/json",
  ])("%s → 400 text/plain", async (target) => {
    const r = await raw(vault.port, target);
    expect(r.status).toBe(400);
    expect(r.headers.toLowerCase()).toContain("content-type: text/plain");
  });

  test.each([
    "/py/files/../../secret.txt",
    "/py/files/%2e%2e/%2e%2e/simple/index.html",
    "/py/simple/../../etc/passwd",
    "/py/simple/%2e%2e/",
    "/py/simple/..\\..\\x/",
    "/py/simple/..foo../",
    "/py/simple/-x-/",
    "http://169.254.169.254/py/simple/%2e%2e/%2e%2e/",
  ])("%s (resolved by Bun, or not a valid name) is not served from upstream", async (target) => {
    const r = await raw(vault.port, target);
    expect([301, 400, 404]).toContain(r.status);
  });

  test("never an open proxy: /files/ paths not listed on a project page are 404 with no upstream file request", async () => {
    const listed = idx.byName.get("wheel-0.38.4-py3-none-any.whl")!;
    const fileRequestsBefore = idx.fileRequests().length + idx.files.requests.length;
    for (const p of [
      "/py/files/simple/index.html",
      "/py/files/simple/wheel/index.html",
      `/py/files${listed.path.replace("wheel-0.38.4", "wheel-9.9.9")}`,
      `/py/files${listed.path}.asc`,
      "/py/files/etc/passwd",
      "/py/files/latest/meta-data/iam",
    ]) {
      const r = await raw(vault.port, p);
      expect(r.status).toBe(404);
    }
    // finding which page lists an unknown file may cost one project-page lookup; never a file request
    expect(idx.fileRequests().length + idx.files.requests.length).toBe(fileRequestsBefore);
    for (const r of idx.index.requests) if (r.path.startsWith("/simple/")) expect(r.path).toMatch(/^\/simple\/([a-z0-9-]+\/)?$/);
  });
});

describe("after every hostile request", () => {
  test("upstreams saw only paths under their bases", async () => {
    await (vault.vault.repositories.get("h")!.cache as unknown as { drain(ms: number): Promise<void> }).drain(10_000);
    for (const r of up.requests) expect(r.path.startsWith("/dist/")).toBe(true);
    expect(up.count("/secret.txt")).toBe(0);
    for (const r of idx.index.requests) expect(r.path).toMatch(/^\/(simple\/([a-z0-9-]+\/)?|packages\/[0-9a-f]{2}\/[0-9a-f]{2}\/[0-9a-f]{60}\/[A-Za-z0-9._-]+)$/);
    for (const r of idx.files.requests) expect(r.path).toMatch(/^\/packages\/[0-9a-f]{2}\/[0-9a-f]{2}\/[0-9a-f]{60}\/[A-Za-z0-9._-]+$/);
  });

  test("nothing was written outside the data directory", async () => {
    expect(await readdir(parent)).toEqual(["data"]);
  });
});

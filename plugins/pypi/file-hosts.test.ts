/**
 * pypi proxy: a change of `fileHosts` takes effect for pages already cached, even when the upstream answers the
 * revalidation with 304 (the stored snapshot records the file hosts it was built with). Real vault (in-process, real
 * SQLite + fs store) restarted on one data directory, loopback index and files servers.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { startUpstream, type TestUpstream } from "../../test/helpers/upstream.ts";
import { startVault } from "../../test/helpers/vault.ts";
import { tmpDataDir } from "../../test/helpers/tmp.ts";
import type { VaultConfig } from "../../core/config/types.ts";

const WHEEL = "demo-1.0-py3-none-any.whl";
const wheelBytes = new TextEncoder().encode("not really a wheel\n");
const wheelSha = new Bun.CryptoHasher("sha256").update(wheelBytes).digest("hex");
const ETAG = '"page-v1"';

let files: TestUpstream;
let index: TestUpstream;

beforeAll(async () => {
  files = await startUpstream({
    handler: (req) => (new URL(req.url).pathname === `/packages/${WHEEL}` ? new Response(wheelBytes) : undefined),
  });
  // A PEP 503 page and a Warehouse JSON document with a strong ETag that never changes: every revalidation is a 304.
  const file = { filename: WHEEL, url: `${files.url}/packages/${WHEEL}`, digests: { sha256: wheelSha }, packagetype: "bdist_wheel" };
  const warehouse = { info: { name: "demo", version: "1.0" }, releases: { "1.0": [file] }, urls: [file] };
  const page = `<!DOCTYPE html><html><body><a href="${files.url}/packages/${WHEEL}#sha256=${wheelSha}">${WHEEL}</a></body></html>`;
  index = await startUpstream({
    handler: (req) => {
      const p = new URL(req.url).pathname;
      if (p !== "/simple/demo/" && p !== "/pypi/demo/json") return undefined;
      if (req.headers.get("if-none-match") === ETAG) return new Response(null, { status: 304, headers: { etag: ETAG } });
      if (p === "/pypi/demo/json") return Response.json(warehouse, { headers: { etag: ETAG } });
      return new Response(page, { headers: { "content-type": "text/html", etag: ETAG } });
    },
  });
});
afterAll(async () => {
  await files?.stop();
  await index?.stop();
});

const config = (fileHosts: string[]): VaultConfig => ({
  repositories: [{ name: "py", format: "pypi", type: "proxy", upstream: `${index.url}/simple/`, fileHosts, cache: { metadataTtlSeconds: 0 } }],
});

const hrefs = (html: string) => [...html.matchAll(/href="([^"#]*)/g)].map((m) => m[1]);

test("adding a file host rewrites links of a page and a JSON API document cached before, although the upstream only answers 304", async () => {
  const dataDir = await tmpDataDir();
  const first = await startVault({ config: config([index.url]), dataDir });
  try {
    const page = await fetch(`${first.url}/py/simple/demo/`);
    expect(page.status).toBe(200);
    expect(hrefs(await page.text())).toEqual([`${files.url}/packages/${WHEEL}`]); // not an allowed host: left pointing upstream
    const doc = (await (await fetch(`${first.url}/py/pypi/demo/json`)).json()) as { urls: { url: string }[] };
    expect(doc.urls[0].url).toBe(`${files.url}/packages/${WHEEL}`);
  } finally {
    await first.stop();
  }

  const second = await startVault({ config: config([index.url, files.url]), dataDir });
  try {
    const before = index.count("/simple/demo/");
    const page = await fetch(`${second.url}/py/simple/demo/`);
    expect(page.status).toBe(200);
    const links = hrefs(await page.text());
    expect(links).toEqual([`../../files/packages/${WHEEL}`]);
    // the old snapshot was dropped: a full GET (no If-None-Match) rebuilt it
    const refetch = index.requests.slice(before).filter((r) => r.path === "/simple/demo/");
    expect(refetch.length).toBeGreaterThanOrEqual(1);
    expect(refetch.some((r) => r.headers.get("if-none-match") === null)).toBe(true);

    const file = await fetch(new URL(links[0], `${second.url}/py/simple/demo/`));
    expect(file.status).toBe(200);
    expect(new Uint8Array(await file.arrayBuffer())).toEqual(wheelBytes);
    expect(files.count(`/packages/${WHEEL}`)).toBe(1);

    const doc = (await (await fetch(`${second.url}/py/pypi/demo/json`)).json()) as { urls: { url: string }[] };
    expect(doc.urls[0].url).toBe(`${second.url}/py/files/packages/${WHEEL}`);

    // later requests revalidate the new snapshot (304) and keep the rewritten link
    const again = await fetch(`${second.url}/py/simple/demo/`);
    expect(hrefs(await again.text())).toEqual([`../../files/packages/${WHEEL}`]);
  } finally {
    await second.stop();
  }
}, 30_000);

test("a page linking files on a host outside fileHosts logs one warning naming the host (the real CLI)", async () => {
  const { spawnVault } = await import("../../test/helpers/vault.ts");
  const s = await spawnVault({ config: config([index.url]) });
  try {
    for (let i = 0; i < 2; i++) expect((await fetch(`${s.url}/py/simple/demo/`)).status).toBe(200);
    // stderr is read asynchronously: wait (bounded) for both access-log lines, which follow any warning
    const accessLines = () => s.output().split("\n").filter((l) => l.includes('"msg":"request"') && l.includes('"path":"/py/simple/demo/"')).length;
    const deadline = Date.now() + 10_000;
    while (accessLines() < 2 && Date.now() < deadline) await Bun.sleep(20);
    expect(accessLines()).toBe(2);
    const warnings = s
      .output()
      .split("\n")
      .filter((l) => l.includes('"level":"warn"') && l.includes("not in fileHosts"));
    expect(warnings.length).toBe(1);
    expect(warnings[0]).toContain(`"fileHost":"${files.url}"`);
    expect(warnings[0]).toContain('"project":"demo"');
  } finally {
    await s.stop();
  }
}, 30_000);

/**
 * The single binary (scripts/build.ts, `npm run build`): built into a temp directory and run from another one, away
 * from the source tree, it checks a config, serves an http and a pypi proxy repository and the embedded web UI, and uses every thread it
 * carries: the config-check thread, the tail-hash thread (forced on) and the piscina pool (offload threshold 0). A
 * third-party plugin file placed beside it (the example plugin, importing `artifact-vault/plugin`) loads and gets the
 * binary's own plugin API.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { copyFile, mkdir, writeFile } from "node:fs/promises";
import { buildBinary } from "../../scripts/build.ts";
import { spawnVault, type SpawnedVault } from "../helpers/vault.ts";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { startPypiIndex, type TestPypiIndex } from "../helpers/pypi-index.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

let binary: string;
let workDir: string;
let files: TestUpstream;
let index: TestPypiIndex;
let vault: SpawnedVault;
const big = new Uint8Array(randomBytes(3 * 1024 * 1024 + 5));
const sha256 = (b: Uint8Array) => new Bun.CryptoHasher("sha256").update(b).digest("hex");

beforeAll(async () => {
  binary = join(await tmpDataDir("vault-bin-"), "vault");
  expect((await buildBinary(binary)).filter((l) => l.startsWith("error"))).toEqual([]);
  workDir = await tmpDataDir("vault-bin-run-");
  const root = await tmpDataDir("vault-bin-up-");
  await writeFile(join(root, "big.bin"), big);
  files = await startUpstream({ root });
  index = await startPypiIndex();
  await mkdir(join(workDir, "ext"));
  await copyFile(join(import.meta.dir, "../fixtures/example-plugin/index.ts"), join(workDir, "ext", "static-plugin.ts"));
  const cfg = [
    "pool: { tailHash: true, offloadThresholdBytes: 0 }",
    "plugins: ['./ext/static-plugin.ts']",
    "repositories:",
    "  - { name: st, format: static, type: hosted }",
    `  - { name: files, format: http, type: proxy, upstream: "${files.url}/" }`,
    `  - { name: py, format: pypi, type: proxy, upstream: "${index.indexUrl}" }`,
  ].join("\n");
  await writeFile(join(workDir, "vault.yml"), cfg + "\n");
  vault = await spawnVault({
    binary,
    cwd: workDir,
    config: join(workDir, "vault.yml"),
    dataDir: join(workDir, "data"),
    env: { VAULT_ADMIN_USER: "admin", VAULT_ADMIN_PASSWORD: "binary-test-pw" },
  });
}, 120_000);

afterAll(async () => {
  await vault?.stop();
  await files?.stop();
  await index?.stop();
});

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn([binary, ...args], { cwd: workDir, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

test("vault config check: ok for the served file; a bad file exits 2 naming the path", async () => {
  const ok = await run(["config", "check", "vault.yml"]);
  expect(ok.code).toBe(0);
  expect(ok.out).toContain("ok");
  await writeFile(join(workDir, "bad.yml"), "repositories:\n  - { name: x, format: http, type: proxy, upstream: 'ftp://x' }\n");
  const bad = await run(["serve", "--config", "bad.yml", "--port", "0"]);
  expect(bad.code).toBe(2);
  expect(bad.err).toContain("repositories[0].upstream: must be an absolute http(s) URL");
});

test("a 3 MiB miss (hashed on the tail-hash thread) is stored; the next request is a HIT with the same bytes", async () => {
  const miss = await fetch(`${vault.url}/files/big.bin`);
  expect(miss.headers.get("x-vault-cache")).toBe("MISS");
  expect(sha256(new Uint8Array(await miss.arrayBuffer()))).toBe(sha256(big));
  const hit = await fetch(`${vault.url}/files/big.bin`);
  expect(hit.headers.get("x-vault-cache")).toBe("HIT");
  expect(sha256(new Uint8Array(await hit.arrayBuffer()))).toBe(sha256(big));
  expect(files.count("/big.bin")).toBe(1);
  const m = await (await fetch(`${vault.url}/-/metrics`)).text();
  expect(m).toContain(`vault_tail_hashed_bytes_total ${big.byteLength}`);
});

test("a pypi simple page is rewritten in the pool and its wheel downloads through the vault", async () => {
  const [name, list] = [...index.projects.entries()][0];
  const page = await fetch(`${vault.url}/py/simple/${name}/`);
  expect(page.status).toBe(200);
  const html = await page.text();
  const href = /href="([^"]+)"/.exec(html)?.[1];
  expect(href).toBeDefined();
  const fileUrl = new URL(href!.replace(/&amp;/g, "&"), `${vault.url}/py/simple/${name}/`);
  expect(fileUrl.origin).toBe(vault.url);
  const wheel = await fetch(fileUrl);
  expect(wheel.status).toBe(200);
  const bytes = new Uint8Array(await wheel.arrayBuffer());
  expect(list.map((f) => f.sha256)).toContain(sha256(bytes));
  expect(fileUrl.hash).toBe(`#sha256=${sha256(bytes)}`);
  const m = await (await fetch(`${vault.url}/-/metrics`)).text();
  expect(m).toMatch(/^vault_pool_tasks_total\{outcome="ok",task="pypiSimple"\} [1-9]/m);
});

test("a third-party plugin file outside the tree loads, stores and serves; its VaultError is the binary's own class", async () => {
  const auth = { authorization: "Basic " + btoa("admin:binary-test-pw") };
  const put = await fetch(`${vault.url}/st/docs/a.txt`, { method: "PUT", headers: auth, body: "plugin bytes" });
  expect(put.status).toBe(201);
  const get = await fetch(`${vault.url}/st/docs/a.txt`);
  expect(get.status).toBe(200);
  expect(await get.text()).toBe("plugin bytes");
  // the plugin throws VaultError(404): rendered by its renderError with that status, not turned into a 500
  const missing = await fetch(`${vault.url}/st/docs/none.txt`);
  expect(missing.status).toBe(404);
  expect(((await missing.json()) as { error: { code: string } }).error.code).toBe("VAULT_NOT_FOUND");
});

test("the web UI is embedded: its pages, its assets, and a search over what the binary stored", async () => {
  const home = await fetch(`${vault.url}/-/ui/`);
  expect([home.status, home.headers.get("content-type")]).toEqual([200, "text/html; charset=utf-8"]);
  const html = await home.text();
  expect(html).toContain('<a href="/-/ui/repositories/files">files</a>');
  for (const [re, type, marker] of [
    [/href="(\/-\/ui\/static\/[0-9a-f]{16}\/ui\.css)"/, "text/css; charset=utf-8", "header.top"],
    [/src="(\/-\/ui\/static\/[0-9a-f]{16}\/ui\.js)"/, "text/javascript; charset=utf-8", "navigator.clipboard"],
  ] as const) {
    const asset = await fetch(vault.url + re.exec(html)![1]);
    expect([asset.status, asset.headers.get("content-type")]).toEqual([200, type]);
    expect(await asset.text()).toContain(marker);
  }
  const found = (await (await fetch(`${vault.url}/-/api/search?q=big.bin`)).json()) as { results: { repository: string; name: string; sizeBytes: number }[] };
  expect(found.results).toMatchObject([{ repository: "files", name: "big.bin", sizeBytes: big.byteLength }]);
});

test("SIGTERM stops the binary cleanly", async () => {
  expect(await vault.stop()).toBe(0);
});

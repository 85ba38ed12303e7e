/**
 * pypi proxy against a real vault (startVault, real SQLite + fs store) and a loopback upstream: large pages go through
 * the worker pool, file downloads are verified against the page's sha256, `/files/…` links are found again after a
 * restart (from stored snapshots), and a file of a project whose page was never requested is located via that page.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startUpstream, type TestUpstream } from "../../test/helpers/upstream.ts";
import { startVault, type StartedVault } from "../../test/helpers/vault.ts";
import { tmpDataDir } from "../../test/helpers/tmp.ts";
import type { VaultConfig } from "../../core/config/types.ts";

const JSON_ACCEPT = "application/vnd.pypi.simple.v1+json";
const BIG_FILES = 9000;

const content = (name: string) => new TextEncoder().encode(`contents of ${name}\n`);
const sha = (b: Uint8Array) => new Bun.CryptoHasher("sha256").update(b).digest("hex");

/** An upstream serving PEP 691 JSON pages generated on the fly, and the files they list (`/packages/<name>`). */
function pages(filesOrigin: string): Map<string, unknown> {
  const m = new Map<string, unknown>();
  const file = (name: string, hash = sha(content(name))) => ({ filename: name, url: `${filesOrigin}/packages/${name}`, hashes: { sha256: hash }, size: content(name).byteLength, yanked: false });
  m.set("big", {
    meta: { "api-version": "1.1" },
    name: "big",
    versions: Array.from({ length: BIG_FILES }, (_, i) => `1.0.${i}`),
    files: Array.from({ length: BIG_FILES }, (_, i) => file(`big-1.0.${i}-py3-none-any.whl`)),
  });
  m.set("small", { meta: { "api-version": "1.1" }, name: "small", versions: ["1.0", "2.0"], files: [file("small-1.0-py3-none-any.whl"), file("small-2.0-py3-none-any.whl")] });
  m.set("other", { meta: { "api-version": "1.1" }, name: "other", versions: ["1.0"], files: [file("other-1.0.tar.gz")] });
  m.set("bad", { meta: { "api-version": "1.1" }, name: "bad", versions: ["1.0"], files: [file("bad-1.0-py3-none-any.whl", "0".repeat(64))] });
  return m;
}

let up: TestUpstream;
let vault: StartedVault;
let dataDir: string;
let config: VaultConfig;
const poolCalls: string[] = [];

/** Counts the real pool's task runs (the plugin calls ctx.pool.run for documents above 1 MiB). */
function countPool(v: StartedVault): void {
  const pool = v.vault.repositories.get("py")!.pool;
  const run = pool.run.bind(pool);
  pool.run = ((task: string, input: unknown, opts?: unknown) => {
    poolCalls.push(task);
    return run(task, input, opts as never);
  }) as typeof pool.run;
}

beforeAll(async () => {
  let docs: Map<string, unknown>;
  up = await startUpstream({
    handler(req) {
      const p = new URL(req.url).pathname;
      const m = /^\/simple\/([a-z0-9-]+)\/$/.exec(p);
      if (m) {
        const d = docs.get(m[1]);
        return d ? new Response(JSON.stringify(d), { headers: { "content-type": JSON_ACCEPT } }) : new Response("no\n", { status: 404 });
      }
      if (p.startsWith("/packages/")) return new Response(content(p.slice("/packages/".length)));
      return new Response("no\n", { status: 404 });
    },
  });
  docs = pages(up.url);
  dataDir = await tmpDataDir("pypi-proxy-");
  config = { repositories: [{ name: "py", format: "pypi", type: "proxy", upstream: `${up.url}/simple/` }] };
  vault = await startVault({ config, dataDir });
  countPool(vault);
});

afterAll(async () => {
  await vault?.stop();
  await up?.stop();
});

async function settled(v: StartedVault): Promise<void> {
  await (v.vault.repositories.get("py")!.cache as unknown as { drain(ms: number): Promise<void> }).drain(10_000);
}

describe("large project pages", () => {
  test("a page above 1 MiB is parsed and rendered in the worker pool; both representations are complete", async () => {
    const j = await fetch(`${vault.url}/py/simple/big/`, { headers: { accept: JSON_ACCEPT } });
    expect(j.status).toBe(200);
    const doc = await j.json();
    expect(doc.files.length).toBe(BIG_FILES);
    expect(doc.versions.length).toBe(BIG_FILES);
    expect(doc.files[1234].url).toBe(`../../files/packages/big-1.0.1234-py3-none-any.whl`);
    expect(poolCalls.filter((t) => t === "pypiSimple").length).toBe(2); // build + render
    const h = await fetch(`${vault.url}/py/simple/big/`, { headers: { accept: "text/html" } });
    const html = await h.text();
    expect(html.match(/<a /g)!.length).toBe(BIG_FILES);
    expect(poolCalls.filter((t) => t === "pypiSimple").length).toBe(3); // + the HTML render, same snapshot
    expect(up.count("/simple/big/")).toBe(1);
    // stored bytes on the next hit: no further pool work
    await (await fetch(`${vault.url}/py/simple/big/`, { headers: { accept: JSON_ACCEPT } })).arrayBuffer();
    expect(poolCalls.filter((t) => t === "pypiSimple").length).toBe(3);
    const f = await fetch(`${vault.url}/py/files/packages/big-1.0.8999-py3-none-any.whl`);
    expect(f.status).toBe(200);
    expect(await f.text()).toBe("contents of big-1.0.8999-py3-none-any.whl\n");
  });
});

describe("verification", () => {
  test("a file whose bytes do not match the page's sha256 is not served as complete and not cached", async () => {
    await (await fetch(`${vault.url}/py/simple/bad/`)).text();
    const attempt = async () => {
      try {
        const r = await fetch(`${vault.url}/py/files/packages/bad-1.0-py3-none-any.whl`);
        if (r.status !== 200) return r.status;
        await r.arrayBuffer();
        return 200;
      } catch {
        return "aborted";
      }
    };
    const first = await attempt();
    expect(first).not.toBe(200);
    await settled(vault);
    const second = await attempt();
    expect(second).not.toBe(200);
    // nothing was cached: the second attempt went upstream again (a client may retry a cut connection once more)
    expect(up.count("/packages/bad-1.0-py3-none-any.whl")).toBeGreaterThanOrEqual(2);
    await settled(vault);
    expect(await vault.vault.repositories.get("py")!.artifacts.get("files/packages/bad-1.0-py3-none-any.whl")).toBeNull();
  });
});

describe("links after a restart", () => {
  test("cached files, uncached files of a cached page, and files of a never-requested page", async () => {
    await (await fetch(`${vault.url}/py/simple/small/`, { headers: { accept: JSON_ACCEPT } })).arrayBuffer();
    const a = await fetch(`${vault.url}/py/files/packages/small-1.0-py3-none-any.whl`);
    expect(await a.text()).toBe("contents of small-1.0-py3-none-any.whl\n");
    await vault.stop();

    vault = await startVault({ config, dataDir });
    countPool(vault);
    const pageRequests = up.count("/simple/small/");
    const hit = await fetch(`${vault.url}/py/files/packages/small-1.0-py3-none-any.whl`);
    expect(hit.status).toBe(200);
    expect(hit.headers.get("x-vault-cache")).toBe("HIT");
    expect(await hit.text()).toBe("contents of small-1.0-py3-none-any.whl\n");
    expect(up.count("/packages/small-1.0-py3-none-any.whl")).toBe(1);

    const b = await fetch(`${vault.url}/py/files/packages/small-2.0-py3-none-any.whl`);
    expect(b.status).toBe(200);
    expect(await b.text()).toBe("contents of small-2.0-py3-none-any.whl\n");
    expect(up.count("/simple/small/")).toBe(pageRequests); // found in the stored snapshot, page still fresh

    const o = await fetch(`${vault.url}/py/files/packages/other-1.0.tar.gz`);
    expect(o.status).toBe(200);
    expect(await o.text()).toBe("contents of other-1.0.tar.gz\n");
    expect(up.count("/simple/other/")).toBe(1); // the page that lists it was fetched to find the upstream URL
  });
});

describe("upstream down", () => {
  test("an expired project page is served stale (X-Vault-Cache: STALE) and its cached files still download", async () => {
    const own = await startUpstream({
      handler(req) {
        const p = new URL(req.url).pathname;
        if (p === "/simple/small/") return new Response(JSON.stringify(pages(`http://${new URL(req.url).host}`).get("small")), { headers: { "content-type": JSON_ACCEPT } });
        if (p.startsWith("/packages/")) return new Response(content(p.slice("/packages/".length)));
        return new Response("no\n", { status: 404 });
      },
    });
    const v = await startVault({ config: { repositories: [{ name: "py", format: "pypi", type: "proxy", upstream: `${own.url}/simple/`, cache: { metadataTtlSeconds: 0 } }] } });
    try {
      const first = await fetch(`${v.url}/py/simple/small/`, { headers: { accept: JSON_ACCEPT } });
      expect(first.status).toBe(200);
      await first.arrayBuffer();
      const f = await fetch(`${v.url}/py/files/packages/small-2.0-py3-none-any.whl`);
      expect(await f.text()).toBe("contents of small-2.0-py3-none-any.whl\n");
      await own.stop();
      const stale = await fetch(`${v.url}/py/simple/small/`, { headers: { accept: JSON_ACCEPT } });
      expect(stale.status).toBe(200);
      expect(stale.headers.get("x-vault-cache")).toBe("STALE");
      expect((await stale.json()).files.length).toBe(2);
      const again = await fetch(`${v.url}/py/files/packages/small-2.0-py3-none-any.whl`);
      expect(again.status).toBe(200);
      expect(await again.text()).toBe("contents of small-2.0-py3-none-any.whl\n");
      const never = await fetch(`${v.url}/py/files/packages/small-1.0-py3-none-any.whl`);
      expect(never.status).toBeGreaterThanOrEqual(500); // listed but never downloaded: upstream unreachable
      await never.text();
    } finally {
      await v.stop();
      await own.stop();
    }
  });
});

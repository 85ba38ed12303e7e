/**
 * The host fast path (core/server.ts, core/http/fast.ts): plain cache hits replayed without Elysia or the plugin.
 * Same answers, counters and access log as the plugin's; anything not plain (Range, conditionals, Authorization,
 * Cache-Control, other methods) and anything changed (invalidated, replaced, deleted, mutable, read-protected) goes
 * through the plugin.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { openDb } from "../../core/db/index.ts";
import { createFsDriver } from "../../core/storage/fs.ts";
import { createBlobStore } from "../../core/storage/blobs.ts";
import { createArtifactStore } from "../../core/artifacts.ts";
import { fastTagOf } from "../../core/http/fast.ts";
import { silentLogger } from "../../core/log.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { join } from "node:path";
import { definePlugin, textError, VaultError, type CacheEngine, type PluginContext } from "../../core/plugin.ts";

/** Counts calls of the repository's cache.serve (the plugin's path); fast-path answers do not call it. */
function countPluginCalls(vault: StartedVault, repo: string): () => number {
  const cache = vault.vault.repositories.get(repo)!.cache as CacheEngine;
  let n = 0;
  const orig = cache.serve.bind(cache);
  cache.serve = (req, spec) => {
    n++;
    return orig(req, spec);
  };
  return () => n;
}

function headersOf(res: Response): Record<string, string> {
  const out: Record<string, string> = {};
  res.headers.forEach((v, k) => {
    if (k !== "date") out[k] = v;
  });
  return out;
}

function metric(text: string, name: string, labels: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
}

describe("host fast path", () => {
  let up: TestUpstream;
  let vault: StartedVault;
  let plugin: () => number;
  const log: string[] = [];
  const bodies = new Map<string, string>();

  beforeAll(async () => {
    up = await startUpstream({
      handler: (req) => {
        const p = new URL(req.url).pathname;
        const b = bodies.get(p);
        return b === undefined ? new Response("nope", { status: 404 }) : new Response(b, { headers: { "content-type": "text/plain" } });
      },
    });
    for (const k of ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "meta/m.txt", "q.txt", "h.txt"]) bodies.set(`/${k}`, `body of ${k}\n`);
    vault = await startVault({
      config: {
        repositories: [
          { name: "files", format: "http", type: "proxy", upstream: up.url + "/", metadataPatterns: ["meta/**"] } as never,
          { name: "closed", format: "http", type: "proxy", upstream: up.url + "/", anonymousRead: false },
        ],
      },
      accessLog: (l) => log.push(l),
    });
    plugin = countPluginCalls(vault, "files");
  });
  afterAll(async () => {
    await vault?.stop();
    await up?.stop();
  });

  /** GET (after the miss) until answered HIT by the plugin: that answer publishes the entry. */
  async function warm(path: string): Promise<Response> {
    const miss = await fetch(vault.url + path);
    await miss.arrayBuffer();
    expect(miss.status).toBe(200);
    const hit = await fetch(vault.url + path);
    expect(hit.headers.get("x-vault-cache")).toBe("HIT");
    return hit;
  }

  test("a published hit is answered without the plugin, with the same status, headers and body", async () => {
    const first = await warm("/files/a.txt");
    const firstBody = await first.text();
    const before = plugin();
    const again = await fetch(vault.url + "/files/a.txt");
    expect(plugin()).toBe(before);
    expect(again.status).toBe(200);
    expect(await again.text()).toBe(firstBody);
    expect(headersOf(again)).toEqual(headersOf(first));
    expect(again.headers.get("x-vault-cache")).toBe("HIT");
    expect(again.headers.get("etag")).toMatch(/^"sha256-[0-9a-f]{32}"$/);
    expect(again.headers.get("content-length")).toBe(String("body of a.txt\n".length));
    expect(again.headers.get("accept-ranges")).toBe("bytes");

    const head = await fetch(vault.url + "/files/a.txt", { method: "HEAD" });
    expect(plugin()).toBe(before);
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe(String("body of a.txt\n".length));
    expect(head.headers.get("etag")).toBe(again.headers.get("etag"));
    expect(await head.text()).toBe("");
  });

  test("Range, conditionals, Cache-Control, Authorization and a different query go through the plugin", async () => {
    const hit = await warm("/files/b.txt");
    const etag = hit.headers.get("etag")!;
    const cases: [RequestInit, number, string][] = [
      [{ headers: { range: "bytes=0-3" } }, 206, "body"],
      [{ headers: { "if-none-match": etag } }, 304, ""],
      [{ headers: { "if-modified-since": hit.headers.get("last-modified")! } }, 304, ""],
      [{ headers: { "if-match": '"other"' } }, 412, ""],
      [{ headers: { "cache-control": "no-cache" } }, 200, "body of b.txt\n"],
      [{ headers: { authorization: "Basic " + btoa("nobody:wrong") } }, 401, ""],
    ];
    for (const [init, status, body] of cases) {
      const before = plugin();
      const res = await fetch(vault.url + "/files/b.txt", init);
      const text = await res.text();
      expect(res.status).toBe(status);
      if (status !== 401) {
        expect(plugin()).toBe(before + 1);
        expect(text).toBe(body);
      }
    }
    const before = plugin();
    const q = await fetch(vault.url + "/files/b.txt?x=1");
    await q.text();
    expect(plugin()).toBe(before + 1);
  });

  test("replays count requests, bytes, cache hits and hit counts, echo x-request-id and write the access-log line", async () => {
    await warm("/files/c.txt");
    const m0 = await (await fetch(vault.url + "/-/metrics")).text();
    const before = plugin();
    for (let i = 0; i < 5; i++) await (await fetch(vault.url + "/files/c.txt")).arrayBuffer();
    const withId = await fetch(vault.url + "/files/c.txt", { headers: { "x-request-id": "fast-req-1" } });
    await withId.arrayBuffer();
    expect(plugin()).toBe(before);
    expect(withId.headers.get("x-request-id")).toBe("fast-req-1");
    const m1 = await (await fetch(vault.url + "/-/metrics")).text();
    const size = "body of c.txt\n".length;
    expect(metric(m1, "vault_http_requests_total", 'repository="files",status="200"') - metric(m0, "vault_http_requests_total", 'repository="files",status="200"')).toBe(6);
    expect(metric(m1, "vault_bytes_served_total", 'repository="files"') - metric(m0, "vault_bytes_served_total", 'repository="files"')).toBe(6 * size);
    expect(metric(m1, "vault_cache_results_total", 'repository="files",result="HIT"') - metric(m0, "vault_cache_results_total", 'repository="files",result="HIT"')).toBe(6);
    const line = log.map((l) => JSON.parse(l)).find((l) => l.reqId === "fast-req-1");
    expect(line).toMatchObject({ msg: "request", method: "GET", path: "/files/c.txt", status: 200, repo: "files", bytes: size });
    // the plugin's own HIT answer (a stored file body) logs its size too
    const plugHit = log.map((l) => JSON.parse(l)).filter((l) => l.path === "/files/c.txt");
    expect(plugHit.every((l) => l.bytes === size)).toBe(true);
    expect(typeof line.durationMs).toBe("number");
    const artifacts = vault.vault.repositories.get("files")!.artifacts;
    (artifacts as unknown as { flush(): void }).flush();
    const [row] = await artifacts.list("c.txt");
    expect(row.path).toBe("c.txt");
    expect(row.hitCount).toBeGreaterThanOrEqual(7);
  });

  test("an invalidated entry is no longer replayed: the next request refetches", async () => {
    await warm("/files/d.txt");
    bodies.set("/d.txt", "new body of d\n");
    await vault.vault.repositories.get("files")!.cache.invalidate("d.txt");
    const before = plugin();
    const res = await fetch(vault.url + "/files/d.txt");
    expect(await res.text()).toBe("new body of d\n");
    expect(res.headers.get("x-vault-cache")).toBe("MISS");
    expect(plugin()).toBe(before + 1);
    bodies.delete("/d.txt");
    await vault.vault.repositories.get("files")!.cache.invalidate("d.txt");
    const gone = await fetch(vault.url + "/files/d.txt");
    expect(gone.status).toBe(404);
  });

  test("a replaced entry is answered with its new bytes", async () => {
    const hit = await warm("/files/e.txt");
    const ctx = vault.vault.repositories.get("files")!;
    await ctx.artifacts.put("e.txt", "replaced bytes\n", { contentType: "text/plain" });
    const res = await fetch(vault.url + "/files/e.txt");
    expect(await res.text()).toBe("replaced bytes\n");
    expect(res.headers.get("etag")).not.toBe(hit.headers.get("etag"));
    // and the new entry is replayed in its turn
    const before = plugin();
    const again = await fetch(vault.url + "/files/e.txt");
    expect(await again.text()).toBe("replaced bytes\n");
    expect(plugin()).toBe(before);
  });

  test("mutable entries (Age per request) are never replayed", async () => {
    await warm("/files/meta/m.txt");
    const before = plugin();
    const res = await fetch(vault.url + "/files/meta/m.txt");
    await res.text();
    expect(res.headers.get("age")).not.toBeNull();
    expect(plugin()).toBe(before + 1);
  });

  test("a repository without anonymous read never replays: every request is authenticated", async () => {
    const res = await fetch(vault.url + "/closed/q.txt");
    expect(res.status).toBe(401);
    const again = await fetch(vault.url + "/closed/q.txt");
    expect(again.status).toBe(401);
  });
});

describe("host fast path and groups", () => {
  /** hosted: GET /<path> answers the stored entry; group: the first member (in order) that has it. */
  const plugin = definePlugin({
    format: "blobs",
    apiVersion: 1,
    types: ["hosted", "group"],
    configSchema: { type: "object", properties: {} },
    routes(app, ctx) {
      app.get("/*", async ({ request }) => {
        const key = new URL(request.url).pathname.slice(ctx.repo.mount.length + 1);
        const stores: PluginContext[] = ctx.repo.type === "group" ? (ctx.config.members ?? []).map((n) => ctx.member(n)!) : [ctx];
        for (const c of stores) {
          const e = await c.artifacts.get(key);
          if (e) return c.artifacts.respond(request, e);
        }
        return textError(new VaultError("VAULT_NOT_FOUND", 404, "not found"));
      });
    },
    renderError: (err) => textError(err),
  });

  test("a hosted repository's hits are replayed; a group's are not (the member that answers may change)", async () => {
    const vault = await startVault({
      plugins: new Map([["blobs", plugin]]),
      config: {
        repositories: [
          { name: "h1", format: "blobs", type: "hosted" },
          { name: "h2", format: "blobs", type: "hosted" },
          { name: "g", format: "blobs", type: "group", members: ["h1", "h2"] },
        ],
      },
    });
    try {
      const h1 = vault.vault.repositories.get("h1")!;
      const h2 = vault.vault.repositories.get("h2")!;
      await h2.artifacts.put("f.txt", "from h2\n", { contentType: "text/plain" });
      let gets = 0;
      const get = h2.artifacts.get.bind(h2.artifacts);
      h2.artifacts.get = (p) => {
        gets++;
        return get(p);
      };
      for (let i = 0; i < 3; i++) expect(await (await fetch(`${vault.url}/h2/f.txt`)).text()).toBe("from h2\n");
      expect(gets).toBe(1); // published after the first answer, replayed twice
      for (let i = 0; i < 2; i++) expect(await (await fetch(`${vault.url}/g/f.txt`)).text()).toBe("from h2\n");
      expect(gets).toBe(3); // the group asked its member each time
      await h1.artifacts.put("f.txt", "from h1\n", { contentType: "text/plain" });
      expect(await (await fetch(`${vault.url}/g/f.txt`)).text()).toBe("from h1\n");
    } finally {
      await vault.stop();
    }
  });
});

describe("artifact store fast-hit tags", () => {
  test("tagged only for the plain full answer of the current entry; live until replaced, deleted or past the hot TTL", async () => {
    const dir = await tmpDataDir("vault-fast-");
    const odb = openDb(":memory:");
    const blobs = createBlobStore(odb.db, createFsDriver({ root: join(dir, "store") }));
    const repo = { name: "r", format: "http", type: "proxy" as const };
    const store = createArtifactStore({ db: odb.db, blobs, repo, log: silentLogger, hotTtlMs: 50 });
    const other = createArtifactStore({ db: odb.db, blobs, repo, log: silentLogger });
    const entry = await store.put("x.bin", "hello", {});
    const url = "http://vault/r/x.bin";
    const res = await store.respond(new Request(url), entry, { "x-vault-cache": "HIT" });
    const tag = fastTagOf(res)!;
    expect(tag).toBeDefined();
    expect(tag.hit.sizeBytes).toBe(5);
    expect(await tag.hit.file.text()).toBe("hello");
    expect(tag.hit.live(Date.now())).toBe(true);

    for (const [init, extra] of [
      [{ method: "HEAD" }, undefined],
      [{ headers: { range: "bytes=0-1" } }, undefined],
      [{ headers: { "if-none-match": '"x"' } }, undefined],
      [{}, { "x-vault-cache": "MISS" }],
      [{}, { age: "3" }],
    ] as [RequestInit, Record<string, string> | undefined][]) {
      expect(fastTagOf(await store.respond(new Request(url, init), entry, extra))).toBeUndefined();
    }

    // past the hot TTL: not live until the row is read again (unchanged → the same record lives again)
    await Bun.sleep(60);
    expect(tag.hit.live(Date.now())).toBe(false);
    expect(tag.hit.gone()).toBe(false);
    await store.get("x.bin");
    expect(tag.hit.live(Date.now())).toBe(true);

    // replaced by another writer: seen at the next read after the TTL, and the old record is gone for good
    await other.put("x.bin", "other bytes", {});
    await Bun.sleep(60);
    const fresh = await store.get("x.bin");
    expect(fresh!.sizeBytes).toBe(11);
    expect(tag.hit.gone()).toBe(true);
    expect(tag.hit.live(Date.now())).toBe(false);

    const tag2 = fastTagOf(await store.respond(new Request(url), fresh!))!;
    expect(tag2.hit.live(Date.now())).toBe(true);
    await store.delete("x.bin");
    expect(tag2.hit.gone()).toBe(true);
    odb.close();
  });
});

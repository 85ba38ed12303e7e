/** respond.ts against a real fs blob store and SQLite, over a real Bun.serve: 200/HEAD/304/412/206/416, If-Range. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openDb } from "../db/index.ts";
import { createFsDriver } from "../storage/fs.ts";
import { createBlobStore } from "../storage/blobs.ts";
import { createArtifactStore, type VaultArtifactStore } from "../artifacts.ts";
import { silentLogger } from "../log.ts";
import { textError, type ArtifactEntry } from "../plugin.ts";
import { toVaultError } from "../errors.ts";
import { parseRange, weakMatch, strongMatch, etagForDigest } from "./respond.ts";
import { tmpDataDir } from "../../test/helpers/tmp.ts";

let server: ReturnType<typeof Bun.serve>;
let base: string;
let store: VaultArtifactStore;
let entry: ArtifactEntry;
let close: () => void;
const body = new Uint8Array(10_000).map((_, i) => (i * 7) % 251);

beforeAll(async () => {
  const dir = await tmpDataDir();
  const odb = openDb(":memory:");
  close = odb.close;
  const blobs = createBlobStore(odb.db, createFsDriver({ root: join(dir, "store") }));
  store = createArtifactStore({ db: odb.db, blobs, repo: { name: "r", format: "http", type: "hosted" }, log: silentLogger });
  entry = await store.put("files/a.bin", body, {
    contentType: "application/x-test",
    headers: { "cache-control": "public, max-age=60", vary: "Accept", "x-extra": "1", "content-length": "5" },
  });
  await store.put("files/empty", new Uint8Array(0));
  server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const path = decodeURIComponent(new URL(req.url).pathname.slice(1));
      try {
        const e = path === "negative" ? { ...entry, path, status: 404, blobDigest: null } : await store.get(path);
        if (!e) return new Response("no", { status: 404 });
        return await store.respond(req, e, { "x-vault-cache": "HIT" });
      } catch (err) {
        return textError(toVaultError(err));
      }
    },
  });
  base = `http://127.0.0.1:${server.port}`;
});
afterAll(async () => {
  await server.stop(true);
  store.close();
  close();
});

const get = (path: string, headers: Record<string, string> = {}, method = "GET") => fetch(base + "/" + path, { method, headers });

describe("respond from an entry", () => {
  test("200 carries length, type, strong ETag, Last-Modified, Accept-Ranges and replayed headers; bytes are exact", async () => {
    const r = await get("files/a.bin");
    expect(r.status).toBe(200);
    expect(r.headers.get("content-length")).toBe("10000");
    expect(r.headers.get("content-type")).toBe("application/x-test");
    expect(r.headers.get("etag")).toBe(etagForDigest(entry.blobDigest!));
    expect(r.headers.get("etag")!.startsWith('"')).toBe(true);
    expect(r.headers.get("accept-ranges")).toBe("bytes");
    expect(Date.parse(r.headers.get("last-modified")!)).toBeGreaterThan(0);
    expect(r.headers.get("cache-control")).toBe("public, max-age=60");
    expect(r.headers.get("x-extra")).toBe("1");
    expect(r.headers.get("x-vault-cache")).toBe("HIT");
    expect(r.headers.get("content-disposition")).toBe("inline");
    expect(new Uint8Array(await r.arrayBuffer())).toEqual(body);
  });

  test("HEAD: same headers, no body", async () => {
    const r = await get("files/a.bin", {}, "HEAD");
    expect(r.status).toBe(200);
    expect(r.headers.get("content-length")).toBe("10000");
    expect(r.headers.get("etag")).toBe(etagForDigest(entry.blobDigest!));
    expect((await r.arrayBuffer()).byteLength).toBe(0);
  });

  test("If-None-Match: weak comparison, lists and * → 304 with the §15.4.5 headers", async () => {
    const etag = etagForDigest(entry.blobDigest!);
    for (const inm of [etag, `W/${etag}`, `"nope", ${etag}`, "*"]) {
      const r = await get("files/a.bin", { "if-none-match": inm });
      expect(r.status).toBe(304);
      expect(r.headers.get("etag")).toBe(etag);
      expect(r.headers.get("cache-control")).toBe("public, max-age=60");
      expect(r.headers.get("vary")).toBe("Accept");
      expect(r.headers.get("x-extra")).toBeNull();
      expect(r.headers.get("x-vault-cache")).toBe("HIT");
      expect((await r.arrayBuffer()).byteLength).toBe(0);
    }
    expect((await get("files/a.bin", { "if-none-match": '"other"' })).status).toBe(200);
    expect((await get("files/a.bin", { "if-none-match": etag }, "HEAD")).status).toBe(304);
  });

  test("If-Modified-Since → 304 unless If-None-Match is present", async () => {
    const lm = (await get("files/a.bin", {}, "HEAD")).headers.get("last-modified")!;
    expect((await get("files/a.bin", { "if-modified-since": lm })).status).toBe(304);
    expect((await get("files/a.bin", { "if-modified-since": new Date(Date.parse(lm) - 5000).toUTCString() })).status).toBe(200);
    // If-None-Match (not matching) wins over a matching If-Modified-Since
    expect((await get("files/a.bin", { "if-modified-since": lm, "if-none-match": '"x"' })).status).toBe(200);
    expect((await get("files/a.bin", { "if-modified-since": "garbage" })).status).toBe(200);
  });

  test("If-Match / If-Unmodified-Since failing → 412", async () => {
    const etag = etagForDigest(entry.blobDigest!);
    expect((await get("files/a.bin", { "if-match": '"x"' })).status).toBe(412);
    expect((await get("files/a.bin", { "if-match": etag })).status).toBe(200);
    expect((await get("files/a.bin", { "if-unmodified-since": new Date(0).toUTCString() })).status).toBe(412);
  });

  test("single Range forms → 206 with Content-Range and the exact slice", async () => {
    const cases: [string, number, number][] = [
      ["bytes=0-99", 0, 99],
      ["bytes=9990-", 9990, 9999],
      ["bytes=-10", 9990, 9999],
      ["bytes=9000-20000", 9000, 9999],
      ["bytes=-20000", 0, 9999],
    ];
    for (const [range, a, b] of cases) {
      const r = await get("files/a.bin", { range });
      expect(r.status).toBe(206);
      expect(r.headers.get("content-range")).toBe(`bytes ${a}-${b}/10000`);
      expect(r.headers.get("content-length")).toBe(String(b - a + 1));
      expect(new Uint8Array(await r.arrayBuffer())).toEqual(body.slice(a, b + 1));
    }
  });

  test("unsatisfiable → 416 with Content-Range: bytes */size; malformed or too many ranges → 200 whole", async () => {
    const r = await get("files/a.bin", { range: "bytes=10000-" });
    expect(r.status).toBe(416);
    expect(r.headers.get("content-range")).toBe("bytes */10000");
    await r.arrayBuffer();
    const z = await get("files/empty", { range: "bytes=0-" });
    expect(z.status).toBe(416);
    expect(z.headers.get("content-range")).toBe("bytes */0");
    await z.arrayBuffer();
    const tooMany = "bytes=" + Array.from({ length: 33 }, (_, i) => `${i * 10}-${i * 10 + 1}`).join(",");
    for (const range of ["bytes=0-1,5-x", "bytes=5-1", "items=0-1", "bytes=x-", tooMany]) {
      const m = await get("files/a.bin", { range });
      expect(m.status).toBe(200);
      expect((await m.arrayBuffer()).byteLength).toBe(10000);
    }
    // Range is ignored on HEAD
    expect((await get("files/a.bin", { range: "bytes=0-1" }, "HEAD")).status).toBe(200);
  });

  test("several ranges → 206 multipart/byteranges: one part per range with its Content-Range, sorted", async () => {
    const r = await get("files/a.bin", { range: "bytes=9990-, 0-1, 100-199" });
    expect(r.status).toBe(206);
    const ct = r.headers.get("content-type")!;
    const boundary = /^multipart\/byteranges; boundary=(\S+)$/.exec(ct)?.[1];
    expect(boundary).toBeDefined();
    const raw = new Uint8Array(await r.arrayBuffer());
    expect(r.headers.get("x-vault-cache")).toBe("HIT");
    // parse it back: parts are sorted by offset
    const text = Buffer.from(raw).toString("latin1");
    const parts = text.split(`--${boundary}`);
    expect(parts[parts.length - 1]).toBe("--\r\n");
    const got = parts.slice(1, -1).map((p) => {
      const [head, ...rest] = p.replace(/^\r\n/, "").split("\r\n\r\n");
      return { head, bytes: Buffer.from(rest.join("\r\n\r\n").replace(/\r\n$/, ""), "latin1") };
    });
    expect(got.map((g) => g.head)).toEqual([
      "content-type: application/x-test\r\ncontent-range: bytes 0-1/10000",
      "content-type: application/x-test\r\ncontent-range: bytes 100-199/10000",
      "content-type: application/x-test\r\ncontent-range: bytes 9990-9999/10000",
    ]);
    expect(new Uint8Array(got[0].bytes)).toEqual(body.slice(0, 2));
    expect(new Uint8Array(got[1].bytes)).toEqual(body.slice(100, 200));
    expect(new Uint8Array(got[2].bytes)).toEqual(body.slice(9990));
  });

  test("several ranges that overlap or touch are merged; unsatisfiable parts dropped; none satisfiable → 416", async () => {
    const merged = await get("files/a.bin", { range: "bytes=0-10,5-20,21-30" });
    expect(merged.status).toBe(206);
    expect(merged.headers.get("content-range")).toBe("bytes 0-30/10000");
    expect(new Uint8Array(await merged.arrayBuffer())).toEqual(body.slice(0, 31));
    const dropped = await get("files/a.bin", { range: "bytes=50000-,3-4" });
    expect(dropped.status).toBe(206);
    expect(dropped.headers.get("content-range")).toBe("bytes 3-4/10000");
    expect(new Uint8Array(await dropped.arrayBuffer())).toEqual(body.slice(3, 5));
    const none = await get("files/a.bin", { range: "bytes=50000-,60000-" });
    expect(none.status).toBe(416);
    await none.arrayBuffer();
  });

  test("If-Range: strong ETag or exact Last-Modified honours Range; weak/other → 200", async () => {
    const head = await get("files/a.bin", {}, "HEAD");
    const etag = head.headers.get("etag")!;
    const lm = head.headers.get("last-modified")!;
    const go = async (ifRange: string) => {
      const r = await get("files/a.bin", { range: "bytes=100-", "if-range": ifRange });
      await r.arrayBuffer();
      return r.status;
    };
    expect(await go(etag)).toBe(206);
    expect(await go(lm)).toBe(206);
    expect(await go(`W/${etag}`)).toBe(200);
    expect(await go('"other"')).toBe(200);
    expect(await go(new Date(Date.parse(lm) - 1000).toUTCString())).toBe(200);
  });

  test("negative entries answer 404 (VaultError VAULT_NOT_FOUND)", async () => {
    const r = await get("negative");
    expect(r.status).toBe(404);
    expect(await r.text()).toContain("not found");
  });

  test("hit counts are batched and flushed", async () => {
    store.flush();
    const before = (await store.list("files/a.bin"))[0].hitCount;
    await (await get("files/a.bin")).arrayBuffer();
    await (await get("files/a.bin")).arrayBuffer();
    expect((await store.list("files/a.bin"))[0].hitCount).toBe(before); // not written synchronously
    store.flush();
    expect((await store.list("files/a.bin"))[0].hitCount).toBe(before + 2);
  });
});

describe("header parsing", () => {
  test("parseRange", () => {
    expect(parseRange("bytes=0-0", 1)).toEqual({ start: 0, end: 0 });
    expect(parseRange("bytes=-0", 10)).toBe("unsatisfiable");
    expect(parseRange("bytes=10-", 10)).toBe("unsatisfiable");
    expect(parseRange("bytes=-", 10)).toBeNull();
    expect(parseRange("bytes=1-2, 4-5", 10)).toBeNull();
  });
  test("entity-tag comparison", () => {
    expect(weakMatch('W/"a"', '"a"')).toBe(true);
    expect(strongMatch('W/"a"', '"a"')).toBe(false);
    expect(strongMatch('"b", "a"', '"a"')).toBe(true);
    expect(weakMatch("*", '"a"')).toBe(true);
  });
});

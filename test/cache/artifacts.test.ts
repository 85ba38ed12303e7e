/**
 * The artifact store over a real metadata database (SQLite and Postgres) and the fs blob store: refcounts, atomic
 * commits, hot map, batched hits, remote-driver answers, and writers of one key on two connections (nodes) racing.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { eq, sql } from "drizzle-orm";
import { tablesOf } from "../../core/db/index.ts";
import { createFsDriver } from "../../core/storage/fs.ts";
import { createBlobStore } from "../../core/storage/blobs.ts";
import { createArtifactStore } from "../../core/artifacts.ts";
import { silentLogger } from "../../core/log.ts";
import { VaultError } from "../../core/errors.ts";
import type { StorageDriver } from "../../core/plugin.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { metadataDrivers, useMetadata, type TestMetadata } from "../helpers/metadata.ts";
import { sha256 } from "./fixture.ts";

async function setup(md: TestMetadata, o: { wrap?: (d: StorageDriver) => StorageDriver; redirect?: boolean; hotTtlMs?: number } = {}) {
  const dir = await tmpDataDir("vault-artifacts-");
  const odb = await md.open();
  const { blobs: blobsTable } = tablesOf(odb.db);
  const fsd = createFsDriver({ root: join(dir, "store") });
  const driver = o.wrap ? o.wrap(fsd) : fsd;
  const blobs = createBlobStore(odb.db, driver);
  const repo = { name: "hosted", format: "http", type: "hosted" as const, redirectDownloads: o.redirect };
  const store = createArtifactStore({ db: odb.db, blobs, repo, log: silentLogger, hotTtlMs: o.hotTtlMs });
  const refCount = async (digest: string) => (await odb.db.select().from(blobsTable).where(eq(blobsTable.digest, digest)))[0]?.refCount ?? null;
  return { dir, odb, driver, blobs, store, repo, refCount };
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

for (const driver of metadataDrivers()) describe(`artifact store (${driver})`, () => {
  const md = useMetadata(driver);

  test("put/get/read; replacing a row releases its old blob; identical content is shared", async () => {
    const { store, refCount } = await setup(md);
    const a = await store.put("x/one.txt", "first", { contentType: "text/plain" });
    expect(a.blobDigest).toBe("sha256:" + sha256(new TextEncoder().encode("first")));
    expect(a.etag).toMatch(/^"sha256-/);
    expect(text(await store.read(a))).toBe("first");
    expect(await refCount(a.blobDigest!)).toBe(1);
    const b = await store.put("x/one.txt", new TextEncoder().encode("second"));
    expect(await refCount(a.blobDigest!)).toBe(0);
    expect(await refCount(b.blobDigest!)).toBe(1);
    expect((await store.get("x/one.txt"))?.blobDigest).toBe(b.blobDigest);
    await store.put("x/two.txt", new Blob(["second"]).stream());
    expect(await refCount(b.blobDigest!)).toBe(2);
    await store.delete("x/one.txt");
    expect(await refCount(b.blobDigest!)).toBe(1);
    expect(await store.get("x/one.txt")).toBeNull();
    await store.delete("x/one.txt"); // missing is fine
  });

  test("expect mismatch → VAULT_DIGEST_MISMATCH and nothing recorded", async () => {
    const { store } = await setup(md);
    const err = await store.put("bad.bin", "abc", { expect: { sha256: "0".repeat(64) } }).catch((e) => e);
    expect(err).toBeInstanceOf(VaultError);
    expect(err.code).toBe("VAULT_DIGEST_MISMATCH");
    expect(await store.get("bad.bin")).toBeNull();
  });

  test("commit: every row appears at once; a failing body means none does", async () => {
    const { store, refCount } = await setup(md);
    const failing = new ReadableStream<Uint8Array>({
      pull(c) {
        c.error(new Error("client went away"));
      },
    });
    await expect(
      store.commit([
        { path: "pkg/1.0/a.tgz", body: "aaa" },
        { path: "pkg/1.0/b.tgz", body: failing },
      ]),
    ).rejects.toThrow("client went away");
    expect(await store.get("pkg/1.0/a.tgz")).toBeNull();
    const out = await store.commit([
      { path: "pkg/1.0/a.tgz", body: "aaa" },
      { path: "pkg/1.0/b.tgz", body: "bbb", opts: { kind: "metadata", headers: { "x-k": "v" } } },
    ]);
    expect(out.map((e) => e.path)).toEqual(["pkg/1.0/a.tgz", "pkg/1.0/b.tgz"]);
    expect(out[1].kind).toBe("metadata");
    expect((await store.get("pkg/1.0/b.tgz"))?.headers).toEqual({ "x-k": "v" });
    expect(await refCount(out[0].blobDigest!)).toBe(1);
  });

  test("list by prefix, ordered, with limit and after", async () => {
    const { store } = await setup(md);
    for (const p of ["b/2", "a/1", "b/1", "b/3", "c/1", "b"]) await store.put(p, p);
    expect((await store.list("b/")).map((e) => e.path)).toEqual(["b/1", "b/2", "b/3"]);
    expect((await store.list("b/", { limit: 2 })).map((e) => e.path)).toEqual(["b/1", "b/2"]);
    expect((await store.list("b/", { after: "b/1" })).map((e) => e.path)).toEqual(["b/2", "b/3"]);
    expect((await store.list("")).length).toBe(6);
  });

  test("hot entries are served without re-reading; writes by another store show up after hotTtlMs", async () => {
    const { store, odb, blobs, repo } = await setup(md, { hotTtlMs: 60_000 });
    await store.put("h.txt", "v1");
    const e1 = await store.get("h.txt");
    expect(await store.get("h.txt")).toBe(e1!); // same object: no SQLite read, no new header precomputation
    const other = createArtifactStore({ db: odb.db, blobs, repo, log: silentLogger });
    await other.put("h.txt", "v2");
    expect((await store.get("h.txt"))!.blobDigest).toBe(e1!.blobDigest); // still trusted
    const fresh = createArtifactStore({ db: odb.db, blobs, repo, log: silentLogger, hotTtlMs: 0 });
    await fresh.get("h.txt");
    await other.delete("h.txt");
    expect(await fresh.get("h.txt")).toBeNull();
  });

  // a child process on its own SQLite file (the timer behaviour does not depend on the dialect)
  if (driver === "sqlite") test("close() flushes hit counts; a pending flush timer does not keep the process alive", async () => {
    const { dir } = await setup(md);
    const script = join(dir, "alive.ts");
    const root = join(import.meta.dir, "../..");
    await Bun.write(
      script,
      `
      import { openDb } from ${JSON.stringify(join(root, "core/db/index.ts"))};
      import { createFsDriver } from ${JSON.stringify(join(root, "core/storage/fs.ts"))};
      import { createBlobStore } from ${JSON.stringify(join(root, "core/storage/blobs.ts"))};
      import { createArtifactStore } from ${JSON.stringify(join(root, "core/artifacts.ts"))};
      import { silentLogger } from ${JSON.stringify(join(root, "core/log.ts"))};
      const odb = openDb(${JSON.stringify(join(dir, "child.db"))});
      const blobs = createBlobStore(odb.db, createFsDriver({ root: ${JSON.stringify(join(dir, "child-store"))} }));
      const store = createArtifactStore({ db: odb.db, blobs, repo: { name: "r", format: "http", type: "hosted" }, log: silentLogger, flushIntervalMs: 3_600_000 });
      const e = await store.put("f", "data");
      await store.respond(new Request("http://x/f"), e);
      await store.respond(new Request("http://x/f"), e);
      store.close();
      console.log(JSON.stringify((await store.list("f"))[0].hitCount));
      // a second store with a pending hit and no close(): its hour-long flush timer must not keep the process alive
      const idle = createArtifactStore({ db: odb.db, blobs, repo: { name: "r2", format: "http", type: "hosted" }, log: silentLogger, flushIntervalMs: 3_600_000 });
      const e2 = await idle.put("g", "data");
      await idle.respond(new Request("http://x/g"), e2);
      `,
    );
    const t0 = Date.now();
    const p = Bun.spawn([process.execPath, script], { stdout: "pipe", stderr: "pipe" });
    const killer = setTimeout(() => p.kill(), 15_000);
    const code = await p.exited;
    clearTimeout(killer);
    const out = await new Response(p.stdout).text();
    expect(code).toBe(0);
    expect(out.trim()).toBe("2");
    expect(Date.now() - t0).toBeLessThan(15_000);
  }, 30_000);

  test("remote drivers: streamed answers with Range; redirectDownloads → 302 to a presigned URL, conditionals still 304", async () => {
    const remote = (d: StorageDriver): StorageDriver => ({
      ...d,
      name: "remote-like",
      localPath: undefined,
      presignGet: async (key, ttl) => `https://signed.invalid/${key}?ttl=${ttl}`,
    });
    const s = await setup(md, { wrap: remote });
    const e = await s.store.put("r.bin", "0123456789");
    const full = await s.store.respond(new Request("http://x/r.bin"), e);
    expect(full.status).toBe(200);
    expect(full.headers.get("content-length")).toBe("10");
    expect(await full.text()).toBe("0123456789");
    const part = await s.store.respond(new Request("http://x/r.bin", { headers: { range: "bytes=2-4" } }), e);
    expect(part.status).toBe(206);
    expect(await part.text()).toBe("234");

    const r = await setup(md, { wrap: remote, redirect: true });
    const e2 = await r.store.put("r.bin", "0123456789");
    const red = await r.store.respond(new Request("http://x/r.bin"), e2);
    expect(red.status).toBe(302);
    expect(red.headers.get("location")).toBe(`https://signed.invalid/blobs/sha256/${e2.blobDigest!.slice(7, 9)}/${e2.blobDigest!.slice(7)}?ttl=300`);
    const nm = await r.store.respond(new Request("http://x/r.bin", { headers: { "if-none-match": e2.etag! } }), e2);
    expect(nm.status).toBe(304);
    const head = await r.store.respond(new Request("http://x/r.bin", { method: "HEAD" }), e2);
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe("10");
  });

  test("hit counts are flushed in one batch; refresh applies a revalidation", async () => {
    const { store } = await setup(md);
    const e = await store.put("hits.txt", "h");
    for (let i = 0; i < 3; i++) await store.respond(new Request("http://x/hits.txt"), e);
    await store.flush();
    expect((await store.list("hits.txt"))[0].hitCount).toBe(3);
    const r = await store.refresh("hits.txt", { expiresAt: 123, fetchedAt: 100, upstreamEtag: '"u1"', headers: { "x-a": "b" } });
    expect(r).toMatchObject({ expiresAt: 123, fetchedAt: 100, upstreamEtag: '"u1"', headers: { "x-a": "b" } });
    expect(await store.refresh("missing", { expiresAt: null, fetchedAt: 1 })).toBeNull();
  });

  test("racing writers of the same keys on two connections (nodes) end with one row per key and exact reference counts", async () => {
    const a = await setup(md);
    const other = await md.reopen(a.odb);
    const b = createArtifactStore({ db: other.db, blobs: createBlobStore(other.db, a.driver), repo: a.repo, log: silentLogger });
    const bodies = ["one", "two", "three"];
    const writes: Promise<unknown>[] = [];
    for (let i = 0; i < 24; i++) {
      const store = i % 2 ? a.store : b;
      const body = bodies[i % bodies.length];
      writes.push(i % 5 === 4 ? store.commit([{ path: "k/x", body }, { path: "k/y", body }]) : store.put(i % 3 ? "k/x" : "k/y", body));
      if (i % 7 === 6) writes.push(store.delete("k/y"));
    }
    await Promise.all(writes);
    const { artifacts, blobs: blobsTable } = tablesOf(a.odb.db);
    const rows = await a.odb.db.select().from(artifacts).where(eq(artifacts.repository, a.repo.name));
    expect(new Set(rows.map((r) => r.path)).size).toBe(rows.length);
    const want = new Map<string, number>();
    for (const r of rows) want.set(r.blobDigest!, (want.get(r.blobDigest!) ?? 0) + 1);
    const counts = await a.odb.db.select({ digest: blobsTable.digest, n: blobsTable.refCount }).from(blobsTable);
    expect(counts.length).toBe(bodies.length); // every body was written at least once
    for (const c of counts) expect({ digest: c.digest, n: c.n }).toEqual({ digest: c.digest, n: want.get(c.digest) ?? 0 });
    expect((await a.odb.db.select({ n: sql<number>`count(*)`.mapWith(Number) }).from(artifacts))[0].n).toBe(rows.length);
  });
});

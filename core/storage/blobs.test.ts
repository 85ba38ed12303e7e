/** Blob store over the real fs driver and a real metadata database (SQLite and Postgres): dedupe, verification, refcounts inside transactions, sweep. */
import { describe, expect, test } from "bun:test";
import { readdir, utimes } from "node:fs/promises";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import { atomic, first, tablesOf } from "../db/index.ts";
import { createBlobStore, TOMBSTONE_STALE_MS } from "./blobs.ts";
import { blobKey, DigestMismatchError } from "./index.ts";
import { createFsDriver } from "./fs.ts";
import { pseudoRandomBytes, streamOf, failingStream } from "../../test/conformance/storage.ts";
import { tmpDataDir } from "../../test/helpers/tmp.ts";
import { metadataDrivers, useMetadata, type TestMetadata } from "../../test/helpers/metadata.ts";

const sha = (b: Uint8Array | string) => new Bun.CryptoHasher("sha256").update(b).digest("hex");

async function setup(md: TestMetadata) {
  const dataDir = await tmpDataDir("vault-blobs-");
  const { db, close } = await md.open();
  const driver = createFsDriver({ root: join(dataDir, "store") });
  const blobs = createBlobStore(db, driver);
  const blobsTable = tablesOf(db).blobs;
  /** `blobs.ref` as a transaction of its own. */
  const ref = (digest: string, sizeBytes: number, delta: number) => atomic(db, (tx) => blobs.ref(tx, digest, sizeBytes, delta));
  return { dataDir, db, close, driver, blobs, blobsTable, ref };
}

async function blobKeys(driver: ReturnType<typeof createFsDriver>): Promise<string[]> {
  const out: string[] = [];
  for await (const o of driver.list("blobs/")) out.push(o.key);
  return out;
}

for (const driver of metadataDrivers()) describe(`blob store (${driver})`, () => {
  const md = useMetadata(driver);

  test("putStream stores content under its digest; identical content is stored once", async () => {
    const { db, close, driver, blobs, blobsTable } = await setup(md);
    try {
      const data = pseudoRandomBytes(3 * 1024 * 1024 + 1, 42);
      const a = await blobs.putStream(streamOf(data));
      const b = await blobs.putStream(streamOf(data, 1000), { sha256: sha(data), sizeBytes: data.byteLength });
      expect(a).toEqual({ digest: `sha256:${sha(data)}`, sizeBytes: data.byteLength });
      expect(b).toEqual(a);
      expect(await blobKeys(driver)).toEqual([blobKey(a.digest)]);
      expect(blobKey(a.digest)).toBe(`blobs/sha256/${sha(data).slice(0, 2)}/${sha(data)}`);
      // the dropped duplicate left no spool file
      expect(await readdir(driver.spoolDir())).toEqual([]);
      expect(await blobs.has(a.digest)).toBe(true);
      expect(await Bun.file(blobs.localPath(a.digest)!).bytes()).toEqual(data);
      const part = new Uint8Array(await new Response(await blobs.open(a.digest, { start: 10, end: 19 })).arrayBuffer());
      expect(part).toEqual(data.subarray(10, 20));
      // the row exists, unreferenced
      expect(await db.select().from(blobsTable)).toMatchObject([{ digest: a.digest, sizeBytes: data.byteLength, refCount: 0 }]);
    } finally {
      close();
    }
  });

  test("concurrent putStreams of the same bytes all succeed and store one blob", async () => {
    const { close, driver, blobs } = await setup(md);
    try {
      const data = pseudoRandomBytes(700_000, 9);
      const rs = await Promise.all(Array.from({ length: 8 }, (_, i) => blobs.putStream(streamOf(data, 4096 + i))));
      expect(new Set(rs.map((r) => r.digest)).size).toBe(1);
      expect(await blobKeys(driver)).toEqual([blobKey(rs[0].digest)]);
      expect(await readdir(driver.spoolDir())).toEqual([]);
    } finally {
      close();
    }
  });

  test("a digest or size mismatch, or a failing body, stores nothing and leaves no spool file", async () => {
    const { db, close, driver, blobs, blobsTable } = await setup(md);
    try {
      await expect(blobs.putStream(streamOf("abc"), { sha256: sha("abd") })).rejects.toBeInstanceOf(DigestMismatchError);
      await expect(blobs.putStream(streamOf("abc"), { sizeBytes: 4 })).rejects.toBeInstanceOf(DigestMismatchError);
      await expect(blobs.putStream(failingStream(1024 * 1024))).rejects.toThrow("mid-way");
      expect(await blobKeys(driver)).toEqual([]);
      expect(await readdir(driver.spoolDir())).toEqual([]);
      expect(await db.select().from(blobsTable)).toEqual([]);
    } finally {
      close();
    }
  });

  test("putFile adopts a spool file, or drops it when the blob exists", async () => {
    const { close, driver, blobs } = await setup(md);
    try {
      const p1 = join(driver.spoolDir(), "one.part-x");
      await Bun.write(p1, "spooled");
      await blobs.putFile(p1, sha("spooled"), 7); // bare hex accepted
      expect(await blobs.has(`sha256:${sha("spooled")}`)).toBe(true);
      const p2 = join(driver.spoolDir(), "two.part-x");
      await Bun.write(p2, "spooled");
      await blobs.putFile(p2, `sha256:${sha("spooled")}`, 7);
      expect(await Bun.file(p2).exists()).toBe(false);
      expect(await blobKeys(driver)).toEqual([blobKey(sha("spooled"))]);
      expect(() => blobs.localPath("sha256:nothex")).toThrow();
    } finally {
      close();
    }
  });

  test("ref maintains ref_count inside transactions (only on a written blob, never below zero, rollback undoes it; the last release renews the lease)", async () => {
    const { db, close, blobs, blobsTable, ref } = await setup(md);
    try {
      const put = await blobs.putStream(streamOf("counted"));
      const digest = put.digest;
      const row = async () => first(await db.select().from(blobsTable).where(eq(blobsTable.digest, digest)));
      await ref(digest, 7, 1);
      expect(await row()).toMatchObject({ digest, sizeBytes: 7, refCount: 1 });
      await atomic(db, function* (tx) {
        yield* blobs.ref(tx, digest, 7, 1);
        yield* blobs.ref(tx, digest, 7, 1);
      });
      expect((await row())!.refCount).toBe(3);
      await expect(
        atomic(db, function* (tx) {
          yield* blobs.ref(tx, digest, 7, 5);
          throw new Error("abort this transaction");
        }),
      ).rejects.toThrow("abort this transaction");
      expect((await row())!.refCount).toBe(3);
      // an old lease is kept while references remain, renewed when the last one goes
      await db.update(blobsTable).set({ createdAt: 1000 }).where(eq(blobsTable.digest, digest));
      await ref(digest, 7, -2);
      expect(await row()).toMatchObject({ refCount: 1, createdAt: 1000 });
      const released = Date.now();
      await ref(digest, 7, -5);
      expect((await row())!.refCount).toBe(0);
      expect((await row())!.createdAt).toBeGreaterThanOrEqual(released);
      // a bare hex digest normalises to sha256:<hex>
      await ref(digest.slice(7), 7, 1);
      expect((await row())!.refCount).toBe(1);
      // a blob never written (or already swept) has no row: referencing it fails and creates nothing
      const never = `sha256:${sha("never written")}`;
      await expect(ref(never, 13, 1)).rejects.toMatchObject({ code: "VAULT_STORAGE", status: 503 });
      expect(await db.select().from(blobsTable).where(eq(blobsTable.digest, never))).toEqual([]);
    } finally {
      close();
    }
  });

  test("sweep removes old unreferenced blobs, keeps referenced and young ones, and removes old stray files", async () => {
    const { db, close, driver, blobs, blobsTable, ref } = await setup(md);
    try {
      const hour = 60 * 60 * 1000;
      const oldTime = Date.now() - 2 * hour;
      const kept = await blobs.putStream(streamOf("referenced"));
      const young = await blobs.putStream(streamOf("young, not referenced yet"));
      const old = await blobs.putStream(streamOf("old and unreferenced"));
      const released = await blobs.putStream(streamOf("referenced once, then released"));
      await ref(kept.digest, kept.sizeBytes, 1);
      await ref(released.digest, released.sizeBytes, 1);
      await ref(released.digest, released.sizeBytes, -1);
      // age every row except the young one (rows carry the write time; age them as an hour-old write would be)
      for (const d of [kept.digest, old.digest, released.digest]) {
        await db.update(blobsTable).set({ createdAt: oldTime }).where(eq(blobsTable.digest, d));
      }
      // a stray blob file with no row, old, and one that is young
      const strayOld = await driver.put(blobKey(sha("stray old")), streamOf("stray old"));
      const strayOldPath = driver.localPath!(strayOld.key)!;
      await utimes(strayOldPath, new Date(oldTime), new Date(oldTime));
      const strayYoung = await driver.put(blobKey(sha("stray young")), streamOf("stray young"));
      // a file under blobs/ that is not a blob name is left alone
      await driver.put("blobs/sha256/zz/not-a-digest", streamOf("?"));

      const r = await blobs.sweep(Date.now() - hour);
      expect(r.removed).toBe(3);
      expect(r.bytes).toBe(old.sizeBytes + released.sizeBytes + strayOld.sizeBytes);
      expect((await blobKeys(driver)).sort()).toEqual(
        [blobKey(kept.digest), blobKey(young.digest), strayYoung.key, "blobs/sha256/zz/not-a-digest"].sort(),
      );
      expect((await db.select({ digest: blobsTable.digest }).from(blobsTable)).map((x) => x.digest).sort()).toEqual([kept.digest, young.digest].sort());

      // a second sweep finds nothing more; a sweep with a cutoff in the future takes the young unreferenced ones too
      expect(await blobs.sweep(Date.now() - hour)).toEqual({ removed: 0, bytes: 0 });
      const all = await blobs.sweep(Date.now() + 1000);
      expect(all.removed).toBe(2); // the young blob and the young stray; never the referenced one
      expect(await blobKeys(driver)).toEqual(["blobs/sha256/zz/not-a-digest", blobKey(kept.digest)].sort());
      await driver.delete("blobs/sha256/zz/not-a-digest");
    } finally {
      close();
    }
  });

  test("writing an existing old unreferenced blob again makes it young, so a sweep cannot take it before it is referenced", async () => {
    const { db, close, blobs, blobsTable, ref } = await setup(md);
    try {
      const firstPut = await blobs.putStream(streamOf("reused bytes"));
      await db.update(blobsTable).set({ createdAt: Date.now() - 10 * 60 * 60 * 1000 }).where(eq(blobsTable.digest, firstPut.digest));
      const again = await blobs.putStream(streamOf("reused bytes")); // dedupe hit
      expect(again.digest).toBe(firstPut.digest);
      expect(await blobs.sweep(Date.now() - 60 * 60 * 1000)).toEqual({ removed: 0, bytes: 0 });
      expect(await blobs.has(firstPut.digest)).toBe(true);
    } finally {
      close();
    }
  });

  test("a writer waits for a sweep's tombstone, then writes the blob afresh; ref refuses a tombstoned row", async () => {
    const { db, close, driver, blobs, blobsTable, ref } = await setup(md);
    try {
      const b = await blobs.putStream(streamOf("contested"));
      // simulate a sweep that has tombstoned the row and is about to delete the file
      await db.update(blobsTable).set({ refCount: -1 }).where(eq(blobsTable.digest, b.digest));
      await expect(ref(b.digest, b.sizeBytes, 1)).rejects.toThrow(/garbage-collected/);
      const writing = blobs.putStream(streamOf("contested"));
      let settled = false;
      writing.finally(() => (settled = true));
      // While the tombstone is held the writer must not finish. There is no event for "still waiting", so this one
      // negative check uses a short bounded delay; the sweep then deletes the file and the row.
      await Bun.sleep(50);
      expect(settled).toBe(false);
      await driver.delete(blobKey(b.digest));
      await db.delete(blobsTable).where(eq(blobsTable.digest, b.digest));
      expect(await writing).toEqual(b);
      expect(await blobs.has(b.digest)).toBe(true);
      await ref(b.digest, b.sizeBytes, 1);
      expect(first(await db.select().from(blobsTable).where(eq(blobsTable.digest, b.digest)))?.refCount).toBe(1);
      expect(await readdir(driver.spoolDir())).toEqual([]);
    } finally {
      close();
    }
  });

  test("a stale tombstone (its sweep died) is taken over by a writer, or finished by the next sweep", async () => {
    const { db, close, driver, blobs, blobsTable, ref } = await setup(md);
    try {
      const stale = Date.now() - TOMBSTONE_STALE_MS - 1000;
      const a = await blobs.putStream(streamOf("left by a dead sweep, rewritten"));
      await db.update(blobsTable).set({ refCount: -1, createdAt: stale }).where(eq(blobsTable.digest, a.digest));
      await driver.delete(blobKey(a.digest)); // the dead sweep got as far as deleting the file
      expect(await blobs.putStream(streamOf("left by a dead sweep, rewritten"))).toEqual(a);
      expect(await blobs.has(a.digest)).toBe(true);
      await ref(a.digest, a.sizeBytes, 1);
      expect(first(await db.select().from(blobsTable).where(eq(blobsTable.digest, a.digest)))?.refCount).toBe(1);

      const b = await blobs.putStream(streamOf("left by a dead sweep, never rewritten"));
      await db.update(blobsTable).set({ refCount: -1, createdAt: stale }).where(eq(blobsTable.digest, b.digest));
      // the cut-off does not matter for a stale tombstone: even a sweep that takes nothing else finishes it
      expect(await blobs.sweep(0)).toEqual({ removed: 1, bytes: b.sizeBytes });
      expect(await blobs.has(b.digest)).toBe(false);
      expect(await db.select().from(blobsTable).where(eq(blobsTable.digest, b.digest))).toEqual([]);
      expect(await blobs.has(a.digest)).toBe(true);
    } finally {
      close();
    }
  });
});

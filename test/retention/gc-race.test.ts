/**
 * gc (BlobStore.sweep) racing writers of the same content, on the real fs driver and a real metadata database (SQLite
 * and Postgres): a blob whose last reference is dropped while another writer is about to reference it is never deleted
 * from under that writer, and no artifact row ever points at a deleted blob.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import { createArtifactStore } from "../../core/artifacts.ts";
import { tablesOf, type OpenDb } from "../../core/db/index.ts";
import { createBlobStore, type BlobStore } from "../../core/storage/blobs.ts";
import { createFsDriver } from "../../core/storage/fs.ts";
import { createLogger } from "../../core/log.ts";
import { VaultError } from "../../core/errors.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { metadataDrivers, useMetadata, type TestMetadata } from "../helpers/metadata.ts";

const CONTENT = "the same bytes, uploaded again and again";
/** Rounds of the randomised race (each: 6 puts, the previous round's deletes, two sweepers). */
const ROUNDS = 25;

async function setup(md: TestMetadata) {
  const dataDir = await tmpDataDir("vault-gc-race-");
  const opened = await md.open();
  const driver = createFsDriver({ root: join(dataDir, "store") });
  const blobs = createBlobStore(opened.db, driver);
  const artifacts = createArtifactStore({ db: opened.db, blobs, repo: { name: "race", format: "http", type: "hosted" }, log: createLogger("error") });
  return { opened, driver, blobs, artifacts };
}

/**
 * The invariants gc must keep: every artifacts row's blob file exists, and every blob row's ref_count equals the number
 * of artifacts rows pointing at it (no tombstone left behind).
 */
async function checkConsistent(opened: OpenDb, blobs: BlobStore): Promise<{ rows: number; blobs: number }> {
  const { artifacts, blobs: blobsTable } = tablesOf(opened.db);
  const rows = await opened.db.select({ path: artifacts.path, digest: artifacts.blobDigest }).from(artifacts);
  const refs = new Map<string, number>();
  for (const r of rows) {
    expect({ path: r.path, stored: await blobs.has(r.digest!) }).toEqual({ path: r.path, stored: true });
    refs.set(r.digest!, (refs.get(r.digest!) ?? 0) + 1);
  }
  const blobRows = await opened.db.select().from(blobsTable);
  for (const b of blobRows) expect({ digest: b.digest, refCount: b.refCount }).toEqual({ digest: b.digest, refCount: refs.get(b.digest) ?? 0 });
  for (const d of refs.keys()) expect(blobRows.some((b) => b.digest === d)).toBe(true);
  return { rows: rows.length, blobs: blobRows.length };
}

/** A write that met gc fails with the retryable VAULT_STORAGE 503, never anything else. */
function isRetryable(e: unknown): boolean {
  return e instanceof VaultError && e.code === "VAULT_STORAGE" && e.status === 503;
}

for (const driver of metadataDrivers()) describe(`gc racing writers (${driver})`, () => {
  const md = useMetadata(driver);

  test("the last reference dropped while another upload of the same bytes is about to reference it: the blob stays", async () => {
    const { opened, blobs, artifacts } = await setup(md);
    const { blobs: blobsTable } = tablesOf(opened.db);
    try {
      const first = await artifacts.put("a/first", CONTENT);
      const digest = first.blobDigest!;
      // an old blob: written long ago, referenced by a/first since
      await opened.db.update(blobsTable).set({ createdAt: Date.now() - 10 * 60 * 60 * 1000 }).where(eq(blobsTable.digest, digest));
      // the second writer has stored (claimed) the same bytes and is about to record its row
      const stored = await blobs.putStream(new Blob([CONTENT]).stream());
      expect(stored.digest).toBe(digest);
      await artifacts.delete("a/first"); // the last reference goes
      // gc with a minimum age of one minute, as `vault gc --min-age-minutes 1` (or the periodic job) would run
      expect(await blobs.sweep(Date.now() - 60_000)).toEqual({ removed: 0, bytes: 0 });
      const second = await artifacts.record([{ path: "b/second", blobDigest: stored.digest, sizeBytes: stored.sizeBytes }]);
      expect(second[0].blobDigest).toBe(digest);
      expect(new TextDecoder().decode(await artifacts.read(second[0]))).toBe(CONTENT);
      expect(await checkConsistent(opened, blobs)).toEqual({ rows: 1, blobs: 1 });
    } finally {
      await artifacts.close();
    }
  });

  test("gc with no minimum age between a writer's store and its reference: the reference fails (retryable), it never dangles", async () => {
    const { opened, blobs, artifacts } = await setup(md);
    try {
      const stored = await blobs.putStream(new Blob([CONTENT]).stream());
      // `vault gc --min-age-minutes 0` runs right now: the claimed but not yet referenced blob is taken
      expect(await blobs.sweep(Date.now() + 1)).toEqual({ removed: 1, bytes: stored.sizeBytes });
      let err: unknown;
      try {
        await artifacts.record([{ path: "late", blobDigest: stored.digest, sizeBytes: stored.sizeBytes }]);
      } catch (e) {
        err = e;
      }
      expect(isRetryable(err)).toBe(true);
      expect(await artifacts.get("late")).toBeNull();
      expect(await checkConsistent(opened, blobs)).toEqual({ rows: 0, blobs: 0 });
      // the client's retry stores it afresh
      expect((await artifacts.put("late", CONTENT)).blobDigest).toBe(stored.digest);
      expect(await checkConsistent(opened, blobs)).toEqual({ rows: 1, blobs: 1 });
    } finally {
      await artifacts.close();
    }
  });

  for (const minAgeMs of [0, 30_000]) {
    test(`puts and deletes of the same bytes race sweeps with minimum age ${minAgeMs} ms: consistent at every step${minAgeMs ? ", no write fails" : ""}`, async () => {
      const { opened, blobs, artifacts } = await setup(md);
      const { blobs: blobsTable } = tablesOf(opened.db);
      let ok = 0;
      let retryable = 0;
      let swept = 0;
      try {
        for (let round = 0; round < ROUNDS; round++) {
          // every blob row looks old, as after a long quiet time (the harshest case for the lease)
          await opened.db.update(blobsTable).set({ createdAt: Date.now() - 60 * 60 * 1000 }).where(eq(blobsTable.refCount, 0));
          const existing = (await artifacts.list("")).map((e) => e.path);
          const work: Promise<unknown>[] = [];
          for (let w = 0; w < 6; w++) {
            work.push(
              artifacts.put(`r${round}/w${w}`, CONTENT).then(
                () => ok++,
                (e) => {
                  if (!isRetryable(e)) throw e;
                  retryable++;
                },
              ),
            );
          }
          for (const p of existing) work.push(artifacts.delete(p));
          // two sweepers run back to back until every put and delete of the round has settled
          let settled = false;
          const sweeper = async () => {
            do swept += (await blobs.sweep(Date.now() - minAgeMs)).removed;
            while (!settled);
          };
          const sweepers = [sweeper(), sweeper()];
          await Promise.all(work).finally(() => (settled = true));
          await Promise.all(sweepers);
          await checkConsistent(opened, blobs);
        }
        // finally everything is released and swept for good
        for (const e of await artifacts.list("")) await artifacts.delete(e.path);
        await opened.db.update(blobsTable).set({ createdAt: 0 }).where(eq(blobsTable.refCount, 0));
        const last = await blobs.sweep(Date.now() - minAgeMs);
        expect(last.removed + swept).toBeGreaterThan(0);
        expect(await checkConsistent(opened, blobs)).toEqual({ rows: 0, blobs: 0 });
      } finally {
        await artifacts.close();
      }
      expect(ok + retryable).toBe(ROUNDS * 6);
      // without a minimum age a write may lose its blob to a sweep between storing and referencing it (and may be retried)
      if (minAgeMs > 0) expect(retryable).toBe(0);
    }, 60_000);
  }
});

/** The content-addressed blob store: sha256-named blobs over any StorageDriver, deduplicated, reference-counted in `blobs`, swept by gc. */
import { mkdir, unlink } from "node:fs/promises";
import { and, eq, lt, sql } from "drizzle-orm";
import { rows, tablesOf, type DbOrTx, type Work } from "../db/index.ts";
import type { Db } from "../plugin.ts";
import { VaultError } from "../errors.ts";
import { BLOB_PREFIX, blobKey, type ByteRange, type PutExpect, type StorageDriver } from "./driver.ts";
import { streamToFile, tempName } from "./fs.ts";

/**
 * Blob keys inside the driver (drawn by {@link blobKey}):
 * ```
 * blobs/
 *   sha256/
 *     ab/
 *       abcdef0123…   the bytes whose sha256 is abcdef0123…; written once, never modified
 * ```
 * Rows of the `blobs` table mirror the files: `ref_count` counts the artifacts rows pointing at a blob.
 * `ref_count = -1` is a short-lived tombstone held by {@link BlobStore.sweep} while it deletes the file;
 * writers seeing it wait until the row is gone, then write the blob again.
 */
export interface BlobStore {
  /** The driver the blobs live in. */
  readonly driver: StorageDriver;
  /**
   * Streams `body` into a blob: spools it locally while hashing (sha256), verifies `expect`, then publishes it under
   * its digest. Identical content is stored once (when the blob exists, the spool file is dropped). The `blobs` row
   * is created (ref_count 0) or refreshed, so a blob just written is young and never swept before it is referenced.
   * @returns `digest` as `sha256:<hex>` and size in bytes
   * @throws DigestMismatchError (nothing stored) when `expect` does not match; the body's own error when it fails
   */
  putStream(body: ReadableStream<Uint8Array>, expect?: PutExpect): Promise<{ digest: string; sizeBytes: number }>;
  /**
   * Adopts a complete local spool file whose sha256 the caller computed (the file is moved, or removed when the
   * blob already exists). `digest` is `sha256:<hex>` or bare hex; `sizeBytes` in bytes.
   * @throws InvalidKeyError on a malformed digest
   */
  putFile(localPath: string, digest: string, sizeBytes: number): Promise<void>;
  /** True when the blob's bytes are stored. */
  has(digest: string): Promise<boolean>;
  /** Local path for `Bun.file` (fs driver), else undefined. Does not check existence. */
  localPath(digest: string): string | undefined;
  /** Opens the blob, optionally one inclusive byte range. Throws NotFoundError. */
  open(digest: string, range?: ByteRange): Promise<ReadableStream<Uint8Array>>;
  /**
   * Adds `delta` to the blob's ref_count (never below 0), inserting the row (createdAt = now) when missing, in ONE
   * statement (an upsert, atomic on both dialects). A step of a unit of work: `yield* blobs.ref(tx, …)` inside
   * `atomic(db, function* (tx) { … })` (core/db/index.ts).
   * @throws VaultError VAULT_STORAGE (500) when the blob is being swept right now (only possible when gc runs with
   *   a minimum age shorter than the time between writing a blob and referencing it)
   */
  ref(tx: DbOrTx, digest: string, sizeBytes: number, delta: number): Work<void>;
  /**
   * Mark & sweep (gc): deletes blobs with ref_count 0 whose row is older than `olderThan` (epoch ms), and blob files
   * without a row last modified before `olderThan`. Safe while the server runs (also from another process sharing
   * the database): each deletion first tombstones the row in one SQL statement, so a concurrent writer never
   * adopts a blob that is being deleted, and young blobs (written but not yet referenced) are never touched.
   * @returns how many blobs were removed and their total size in bytes
   */
  sweep(olderThan: number): Promise<{ removed: number; bytes: number }>;
}

export type { DbOrTx } from "../db/index.ts";

/** `max(0, x)` and `max(a, b)` in SQL both dialects read (SQLite's two-argument `max` is `greatest` on Postgres). */
export function sqlMax(a: unknown, b: unknown) {
  return sql`(CASE WHEN ${a} > ${b} THEN ${a} ELSE ${b} END)`;
}

/** `sha256:<hex>` from a bare or prefixed digest, validated. */
function normDigest(digest: string): string {
  const key = blobKey(digest.toLowerCase());
  return `sha256:${key.slice(key.lastIndexOf("/") + 1)}`;
}

/** How long a writer waits for a sweep holding a tombstone before taking the row over (ms). */
const TOMBSTONE_WAIT_MS = 30_000;

/**
 * Creates the blob store over `driver`, with reference counts in `db` (table `blobs`). DESIGN.md §3 "Blob store".
 * Blobs are spooled in `driver.spoolDir()` while hashing, then published with `driver.putFile`.
 */
export function createBlobStore(db: Db, driver: StorageDriver): BlobStore {
  const { blobs } = tablesOf(db);
  /**
   * Makes the row of `digest` young (created_at = now) or inserts it with ref_count 0, before its file is published.
   * Waits while a sweep holds a tombstone on it. Returns after the row is live.
   */
  async function claim(digest: string, sizeBytes: number): Promise<void> {
    const deadline = Date.now() + TOMBSTONE_WAIT_MS;
    for (let delay = 5; ; delay = Math.min(delay * 2, 200)) {
      const now = Date.now();
      const live = await db
        .insert(blobs)
        .values({ digest, sizeBytes, refCount: 0, createdAt: now })
        .onConflictDoUpdate({
          target: blobs.digest,
          set: { createdAt: sqlMax(blobs.createdAt, now) },
          setWhere: sql`${blobs.refCount} >= 0`,
        })
        .returning({ refCount: blobs.refCount });
      if (live.length > 0) return;
      if (now > deadline) {
        // The sweep that set the tombstone died (or is stuck): take the row over and rewrite the file.
        await db.update(blobs).set({ refCount: 0, createdAt: now }).where(and(eq(blobs.digest, digest), eq(blobs.refCount, -1)));
        return;
      }
      await Bun.sleep(delay); // a sweep is deleting this blob's file right now; it finishes within milliseconds
    }
  }

  /** Publishes a local file as the blob (or drops it when the blob exists), after claiming the row. */
  async function adopt(localPath: string, digest: string, sizeBytes: number): Promise<void> {
    const key = blobKey(digest);
    await claim(digest, sizeBytes);
    if (await driver.exists(key)) {
      await unlink(localPath).catch(() => {});
      return;
    }
    await driver.putFile(key, localPath);
  }

  return {
    driver,

    async putStream(body, expect) {
      const spool = driver.spoolDir();
      await mkdir(spool, { recursive: true });
      const tmp = tempName(spool, "blob");
      const keyForErrors = expect?.sha256 ? blobKey(expect.sha256.toLowerCase()) : `${BLOB_PREFIX}?`;
      const r = await streamToFile(body, tmp, { driver: driver.name, key: keyForErrors, expect });
      const digest = `sha256:${r.sha256}`;
      try {
        await adopt(tmp, digest, r.sizeBytes);
      } catch (err) {
        await unlink(tmp).catch(() => {});
        throw err;
      }
      return { digest, sizeBytes: r.sizeBytes };
    },

    async putFile(localPath, digest, sizeBytes) {
      await adopt(localPath, normDigest(digest), sizeBytes);
    },

    has(digest) {
      return driver.exists(blobKey(digest));
    },

    localPath(digest) {
      return driver.localPath?.(blobKey(digest));
    },

    open(digest, range) {
      return driver.get(blobKey(digest), range);
    },

    *ref(tx, digest, sizeBytes, delta) {
      const d = normDigest(digest);
      const live = yield* rows(
        tx
          .insert(blobs)
          .values({ digest: d, sizeBytes, refCount: Math.max(0, delta), createdAt: Date.now() })
          .onConflictDoUpdate({
            target: blobs.digest,
            set: { refCount: sqlMax(0, sql`${blobs.refCount} + ${delta}`) },
            setWhere: sql`${blobs.refCount} >= 0`,
          })
          .returning({ refCount: blobs.refCount }),
      );
      if (live.length === 0) {
        throw new VaultError("VAULT_STORAGE", 500, `blob ${d} is being garbage-collected; retry the write`, { digest: d });
      }
    },

    async sweep(olderThan) {
      let removed = 0;
      let bytes = 0;

      /** Deletes the file of a tombstoned row, then the row. */
      async function finish(digest: string, sizeBytes: number): Promise<void> {
        await driver.delete(blobKey(digest));
        await db.delete(blobs).where(and(eq(blobs.digest, digest), eq(blobs.refCount, -1)));
        removed++;
        bytes += sizeBytes;
      }

      // 0. tombstones left by a sweep that died half-way
      for (const row of await db.select().from(blobs).where(and(eq(blobs.refCount, -1), lt(blobs.createdAt, olderThan)))) {
        await finish(row.digest, row.sizeBytes);
      }

      // 1. unreferenced rows older than the cutoff: tombstone (one statement, re-checking the condition), delete the file, drop the row
      const candidates = await db
        .select({ digest: blobs.digest })
        .from(blobs)
        .where(and(eq(blobs.refCount, 0), lt(blobs.createdAt, olderThan)));
      for (const { digest } of candidates) {
        const marked = await db
          .update(blobs)
          .set({ refCount: -1 })
          .where(and(eq(blobs.digest, digest), eq(blobs.refCount, 0), lt(blobs.createdAt, olderThan)))
          .returning({ sizeBytes: blobs.sizeBytes });
        if (marked.length === 1) await finish(digest, marked[0].sizeBytes);
      }

      // 2. stray files (no row) last modified before the cutoff
      const strays: { digest: string; sizeBytes: number }[] = [];
      for await (const o of driver.list(BLOB_PREFIX)) {
        if (o.modifiedAt >= olderThan) continue;
        const hex = o.key.slice(o.key.lastIndexOf("/") + 1);
        if (!/^[0-9a-f]{64}$/.test(hex) || o.key !== blobKey(hex)) continue; // not ours: leave it
        strays.push({ digest: `sha256:${hex}`, sizeBytes: o.sizeBytes });
      }
      for (const s of strays) {
        const marked = await db
          .insert(blobs)
          .values({ digest: s.digest, sizeBytes: s.sizeBytes, refCount: -1, createdAt: olderThan - 1 })
          .onConflictDoNothing()
          .returning({ digest: blobs.digest });
        if (marked.length === 1) await finish(s.digest, s.sizeBytes);
      }
      return { removed, bytes };
    },
  };
}

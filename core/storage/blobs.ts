/** The content-addressed blob store: sha256-named blobs over any StorageDriver, deduplicated, reference-counted in `blobs`, swept by gc. */
import { mkdir, unlink } from "node:fs/promises";
import { and, asc, eq, gt, lt, lte, sql } from "drizzle-orm";
import { exec, rows, tablesOf, type DbOrTx, type Work } from "../db/index.ts";
import { metrics } from "../metrics.ts";
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
 * Rows of the `blobs` table mirror the files: `ref_count` counts the artifacts rows pointing at a blob, and
 * `created_at` (epoch ms) is the blob's *lease*: the last time a writer claimed it (wrote or re-wrote its bytes) or its
 * last reference was dropped. gc ({@link BlobStore.sweep}) takes only unreferenced blobs whose lease is older than its
 * cut-off, so a writer that claimed a blob and is about to reference it, and a reader that loaded a row just before it
 * was deleted, keep the file for at least the sweep's minimum age.
 *
 * `ref_count = -1` is a tombstone held by a sweep while it deletes the file; its `created_at` is the time it was set.
 * Writers seeing it wait until the row is gone, then write the blob again; a tombstone older than
 * {@link TOMBSTONE_STALE_MS} belongs to a sweep that died and is taken over (a live sweep gives up its tombstone
 * before that, see {@link BlobStore.sweep}). A reference is only ever added to a live row (`ref_count >= 0`): a blob
 * whose row is gone or tombstoned was (or is being) deleted, and referencing it fails instead of dangling.
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
   * Adds `delta` to the blob's ref_count in ONE statement (atomic on both dialects). A step of a unit of work:
   * `yield* blobs.ref(tx, …)` inside `atomic(db, function* (tx) { … })` (core/db/index.ts).
   * - `delta > 0`: the row must exist and be live (the blob was written through {@link putStream}/{@link putFile},
   *   which claim it); a missing row is never re-created, since its file may be gone.
   * - `delta < 0`: never below 0; the decrement that drops the last reference renews the lease (`created_at = now`),
   *   so the blob stays for at least a sweep's minimum age after its last reference went.
   * @throws VaultError VAULT_STORAGE (503, `Retry-After`) when `delta > 0` and the blob was garbage-collected or is being
   *   swept (only possible when gc runs with a minimum age shorter than the time between writing a blob and
   *   referencing it); the unit of work then rolls back
   */
  ref(tx: DbOrTx, digest: string, sizeBytes: number, delta: number): Work<void>;
  /**
   * Mark & sweep (gc): deletes blobs with ref_count 0 whose lease (`created_at`: last written or last released) is
   * not after `olderThan` (epoch ms), blob files without a row last modified before `olderThan`, and tombstones left
   * by a sweep that died. Safe while servers write (also from another process or node sharing the database): each
   * deletion first tombstones the row in one conditional SQL statement, so a concurrent writer never adopts or
   * references a blob being deleted; a blob claimed or released after the cut-off is never touched. A sweep that took
   * longer than half of {@link TOMBSTONE_STALE_MS} between tombstoning a row and deleting its file gives the row back
   * instead (a writer may be about to take the tombstone over). Rows are visited in pages of 500 digests.
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

/**
 * Age (ms) after which a tombstone counts as left by a sweep that died: writers waiting on it take the row over, and
 * the next sweep finishes it. A live sweep never deletes a file after holding its tombstone for half this long.
 */
export const TOMBSTONE_STALE_MS = 120_000;

/** Digests per page of a sweep's candidate query. */
const SWEEP_PAGE = 500;

/** The error of a write that met gc: the blob it wanted to reference was deleted (or is being deleted). Retryable. */
function sweptError(digest: string): VaultError {
  return new VaultError("VAULT_STORAGE", 503, `blob ${digest} is being garbage-collected; retry the write`, { digest }, { "retry-after": "1" });
}

/**
 * Creates the blob store over `driver`, with reference counts in `db` (table `blobs`). DESIGN.md §3 "Blob store".
 * Blobs are spooled in `driver.spoolDir()` while hashing, then published with `driver.putFile`.
 */
export function createBlobStore(db: Db, driver: StorageDriver): BlobStore {
  const { blobs } = tablesOf(db);

  /**
   * Claims the row of `digest` (lease = now) or inserts it with ref_count 0, before its file is published. Waits while
   * a live sweep holds a tombstone on it; takes over a stale one. Returns once the row is live.
   */
  async function claim(digest: string, sizeBytes: number): Promise<void> {
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
      // Tombstoned: the sweep that set it more than TOMBSTONE_STALE_MS ago died; take the row over and rewrite the file.
      const taken = await db
        .update(blobs)
        .set({ refCount: 0, createdAt: now })
        .where(and(eq(blobs.digest, digest), eq(blobs.refCount, -1), lt(blobs.createdAt, now - TOMBSTONE_STALE_MS)))
        .returning({ refCount: blobs.refCount });
      if (taken.length > 0) return;
      await Bun.sleep(delay); // a sweep is deleting this blob's file right now; it finishes within milliseconds
    }
  }

  /**
   * Renews the lease of a claimed row after its file was published (a publish to a remote driver may take long).
   * @throws VaultError VAULT_STORAGE 503 when a sweep took the row meanwhile (the file may be gone)
   */
  async function renew(digest: string): Promise<void> {
    const now = Date.now();
    const live = await db
      .update(blobs)
      .set({ createdAt: sqlMax(blobs.createdAt, now) })
      .where(and(eq(blobs.digest, digest), sql`${blobs.refCount} >= 0`))
      .returning({ refCount: blobs.refCount });
    if (live.length === 0) throw sweptError(digest);
  }

  /** Publishes a local file as the blob (or drops it when the blob exists), between claiming and renewing the row. */
  async function adopt(localPath: string, digest: string, sizeBytes: number): Promise<void> {
    const key = blobKey(digest);
    await claim(digest, sizeBytes);
    try {
      if (await driver.exists(key)) await unlink(localPath).catch(() => {});
      else await driver.putFile(key, localPath);
    } catch (e) {
      // a sweep that took the row meanwhile may have deleted the file under the publish: that is the retryable case
      await renew(digest);
      throw e;
    }
    await renew(digest);
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

    *ref(tx, digest, _sizeBytes, delta) {
      if (delta === 0) return;
      const d = normDigest(digest);
      const live = eq(blobs.digest, d);
      if (delta > 0) {
        const r = yield* rows(
          tx
            .update(blobs)
            .set({ refCount: sql`${blobs.refCount} + ${delta}` })
            .where(and(live, sql`${blobs.refCount} >= 0`))
            .returning({ refCount: blobs.refCount }),
        );
        if (r.length === 0) throw sweptError(d);
        return;
      }
      const now = Date.now();
      yield* exec(
        tx
          .update(blobs)
          .set({
            refCount: sqlMax(0, sql`${blobs.refCount} + ${delta}`),
            createdAt: sql`(CASE WHEN ${blobs.refCount} + ${delta} <= 0 THEN ${sqlMax(blobs.createdAt, now)} ELSE ${blobs.createdAt} END)`,
          })
          .where(and(live, sql`${blobs.refCount} > 0`)),
      );
    },

    async sweep(olderThan) {
      let removed = 0;
      let bytes = 0;

      /**
       * Deletes the file of a row this sweep tombstoned at `stamp`, then the row. Gives the row back (ref_count 0)
       * instead when the tombstone is already half-way to stale: a writer may be about to take it over.
       */
      async function finish(digest: string, sizeBytes: number, stamp: number): Promise<void> {
        const mine = and(eq(blobs.digest, digest), eq(blobs.refCount, -1), eq(blobs.createdAt, stamp));
        if (Date.now() - stamp > TOMBSTONE_STALE_MS / 2) {
          await db.update(blobs).set({ refCount: 0 }).where(mine);
          return;
        }
        await driver.delete(blobKey(digest));
        await db.delete(blobs).where(mine);
        removed++;
        bytes += sizeBytes;
      }

      /** Tombstones `digest` when `cond` still holds (one statement), then finishes it. */
      async function take(digest: string, cond: ReturnType<typeof and>): Promise<void> {
        const stamp = Date.now();
        const marked = await db
          .update(blobs)
          .set({ refCount: -1, createdAt: stamp })
          .where(and(eq(blobs.digest, digest), cond))
          .returning({ sizeBytes: blobs.sizeBytes });
        if (marked.length === 1) await finish(digest, marked[0].sizeBytes, stamp);
      }

      /** Every digest matching `cond`, in pages (digests are re-checked when taken). */
      async function* pages(cond: ReturnType<typeof and>): AsyncGenerator<string> {
        for (let after = ""; ; ) {
          const page = await db
            .select({ digest: blobs.digest })
            .from(blobs)
            .where(and(cond, gt(blobs.digest, after)))
            .orderBy(asc(blobs.digest))
            .limit(SWEEP_PAGE);
          for (const r of page) yield r.digest;
          if (page.length < SWEEP_PAGE) return;
          after = page[page.length - 1].digest;
        }
      }

      // 0. tombstones left by a sweep that died half-way (set more than TOMBSTONE_STALE_MS ago)
      const stale = () => and(eq(blobs.refCount, -1), lt(blobs.createdAt, Date.now() - TOMBSTONE_STALE_MS));
      for await (const digest of pages(stale())) await take(digest, stale());

      // 1. unreferenced rows whose lease is older than the cut-off: tombstone (re-checking), delete the file, drop the row
      const unreferenced = and(eq(blobs.refCount, 0), lte(blobs.createdAt, olderThan));
      for await (const digest of pages(unreferenced)) await take(digest, unreferenced);

      // 2. stray files (no row) last modified before the cutoff
      const strays: { digest: string; sizeBytes: number }[] = [];
      for await (const o of driver.list(BLOB_PREFIX)) {
        if (o.modifiedAt >= olderThan) continue;
        const hex = o.key.slice(o.key.lastIndexOf("/") + 1);
        if (!/^[0-9a-f]{64}$/.test(hex) || o.key !== blobKey(hex)) continue; // not ours: leave it
        strays.push({ digest: `sha256:${hex}`, sizeBytes: o.sizeBytes });
      }
      for (const s of strays) {
        const stamp = Date.now();
        const marked = await db
          .insert(blobs)
          .values({ digest: s.digest, sizeBytes: s.sizeBytes, refCount: -1, createdAt: stamp })
          .onConflictDoNothing()
          .returning({ digest: blobs.digest });
        if (marked.length === 1) await finish(s.digest, s.sizeBytes, stamp);
      }
      metrics.gcBlobsRemoved.inc({}, removed);
      metrics.gcBytesFreed.inc({}, bytes);
      return { removed, bytes };
    },
  };
}

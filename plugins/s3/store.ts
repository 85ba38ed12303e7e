/** Metadata of the s3 plugin in the vault DB: buckets, multipart uploads and their parts (tables s3_buckets, s3_uploads, s3_parts); objects are artifacts rows at `<bucket>/<key>`. */
import { and, asc, eq, gt, gte, lt, or, sql } from "drizzle-orm";
import type { Db } from "../../core/plugin.ts";
import type { s3Buckets, s3Uploads, s3Parts } from "../../core/db/schema.ts";
import { atomic, exec, first, rows, tablesOf } from "../../core/db/index.ts";

/** An `s3_buckets` row: `owner` (user name), `region` (LocationConstraint, "" = us-east-1), `createdAt` epoch ms. */
export type BucketRow = typeof s3Buckets.$inferSelect;
/** An `s3_uploads` row (multipart upload in progress): object `headers` as JSON text, `initiatedAt` epoch ms. */
export type UploadRow = typeof s3Uploads.$inferSelect;
/** An `s3_parts` row: `storageKey` of the part's bytes, `sizeBytes`, hex `md5` (its ETag), `modifiedAt` epoch ms. */
export type PartRow = typeof s3Parts.$inferSelect;

/** Highest code point: `x + MAX_CHAR` sorts after every key that starts with `x`. */
export const MAX_CHAR = "\u{10ffff}";

/** DB access for one repository's buckets and multipart uploads (either metadata dialect; every call is async). */
export interface S3Meta {
  /** The bucket `name` of this repository, or undefined. */
  bucket(name: string): Promise<BucketRow | undefined>;
  /** Every bucket of this repository, by name. */
  buckets(): Promise<BucketRow[]>;
  /** Inserts a bucket; false when the name is taken. */
  createBucket(name: string, owner: string, region: string): Promise<boolean>;
  /** Removes the bucket row only (objects and uploads are the caller's to remove first). */
  deleteBucket(name: string): Promise<void>;
  /** Records a new multipart upload (CreateMultipartUpload). */
  createUpload(u: Omit<UploadRow, "repository">): Promise<void>;
  /** An upload of this repository, or undefined. */
  upload(uploadId: string): Promise<UploadRow | undefined>;
  /**
   * Uploads of a bucket starting with `prefix`, ordered by key then upload id, after the marker (key > `afterKey`,
   * or key = `afterKey` and upload id > `afterUploadId` when that is given), at most `limit`.
   */
  uploads(bucket: string, o: { prefix: string; afterKey?: string; afterUploadId?: string; limit: number }): Promise<UploadRow[]>;
  /** Removes an upload row; its part rows go with it (FK cascade), their stored bytes do not. */
  deleteUpload(uploadId: string): Promise<void>;
  /** Uploads of this repository initiated before `before` (epoch ms). */
  staleUploads(before: number): Promise<UploadRow[]>;
  /** Whether some part row points at `storageKey`. */
  partKeyKnown(storageKey: string): Promise<boolean>;
  /**
   * Upserts a part; returns the storage key it replaced, if any (the read and the upsert are one transaction, the part's
   * key locked on Postgres, so two racing uploads of one part number each learn what they replaced). Throws when the
   * upload row is gone (FK).
   */
  putPart(p: PartRow): Promise<string | undefined>;
  /** Parts of an upload by ascending part number, after `afterPart` (exclusive, default 0), at most `limit`. */
  parts(uploadId: string, o?: { afterPart?: number; limit?: number }): Promise<PartRow[]>;
}

/** Builds the accessors over `db` for `repository`. */
export function createS3Meta(db: Db, repository: string): S3Meta {
  const { s3Buckets, s3Uploads, s3Parts } = tablesOf(db);
  return {
    bucket: async (name) => first(await db.select().from(s3Buckets).where(and(eq(s3Buckets.repository, repository), eq(s3Buckets.name, name)))),
    buckets: async () => db.select().from(s3Buckets).where(eq(s3Buckets.repository, repository)).orderBy(asc(s3Buckets.name)),
    async createBucket(name, owner, region) {
      const r = await db.insert(s3Buckets).values({ repository, name, owner, region, createdAt: Date.now() }).onConflictDoNothing().returning({ name: s3Buckets.name });
      return r.length > 0;
    },
    async deleteBucket(name) {
      await db.delete(s3Buckets).where(and(eq(s3Buckets.repository, repository), eq(s3Buckets.name, name)));
    },
    async createUpload(u) {
      await db.insert(s3Uploads).values({ ...u, repository });
    },
    upload: async (uploadId) => first(await db.select().from(s3Uploads).where(and(eq(s3Uploads.uploadId, uploadId), eq(s3Uploads.repository, repository)))),
    async uploads(bucket, o) {
      const conds = [eq(s3Uploads.repository, repository), eq(s3Uploads.bucket, bucket)];
      if (o.prefix) conds.push(gte(s3Uploads.key, o.prefix), lt(s3Uploads.key, o.prefix + MAX_CHAR));
      if (o.afterKey !== undefined) {
        if (o.afterUploadId) {
          conds.push(or(gt(s3Uploads.key, o.afterKey), and(eq(s3Uploads.key, o.afterKey), gt(s3Uploads.uploadId, o.afterUploadId)))!);
        } else conds.push(gt(s3Uploads.key, o.afterKey));
      }
      return db
        .select()
        .from(s3Uploads)
        .where(and(...conds))
        .orderBy(asc(s3Uploads.key), asc(s3Uploads.uploadId))
        .limit(o.limit);
    },
    staleUploads: async (before) => db.select().from(s3Uploads).where(and(eq(s3Uploads.repository, repository), lt(s3Uploads.initiatedAt, before))),
    partKeyKnown: async (storageKey) => (await db.select({ k: s3Parts.storageKey }).from(s3Parts).where(eq(s3Parts.storageKey, storageKey)).limit(1)).length > 0,
    async deleteUpload(uploadId) {
      await db.delete(s3Uploads).where(eq(s3Uploads.uploadId, uploadId));
    },
    putPart(p) {
      return atomic(
        db,
        function* (tx) {
          const old = (yield* rows(
            tx
              .select({ k: s3Parts.storageKey })
              .from(s3Parts)
              .where(and(eq(s3Parts.uploadId, p.uploadId), eq(s3Parts.partNumber, p.partNumber))),
          ))[0];
          yield* exec(
            tx
              .insert(s3Parts)
              .values(p)
              .onConflictDoUpdate({
                target: [s3Parts.uploadId, s3Parts.partNumber],
                set: { storageKey: p.storageKey, sizeBytes: p.sizeBytes, md5: p.md5, checksum: p.checksum, modifiedAt: p.modifiedAt },
              }),
          );
          return old?.k;
        },
        { locks: [`s3part:${p.uploadId}:${p.partNumber}`] },
      );
    },
    async parts(uploadId, o) {
      const q = db
        .select()
        .from(s3Parts)
        .where(and(eq(s3Parts.uploadId, uploadId), gt(s3Parts.partNumber, o?.afterPart ?? 0)))
        .orderBy(asc(s3Parts.partNumber));
      return o?.limit ? q.limit(o.limit) : q;
    },
  };
}

/** Number of rows in `s3_uploads` or `s3_parts`, every repository (for tests' orphan checks). */
export async function countRows(db: Db, table: "s3_uploads" | "s3_parts"): Promise<number> {
  const { s3Uploads, s3Parts } = tablesOf(db);
  const t = table === "s3_uploads" ? s3Uploads : s3Parts;
  return first(await db.select({ n: sql<number>`count(*)`.mapWith(Number) }).from(t))?.n ?? 0;
}

/** The S3-compatible storage driver (AWS S3, MinIO, Ceph RGW, the vault's own s3 plugin): objects in one bucket under an optional key prefix, multipart for large streams. */
import { mkdirSync } from "node:fs";
import { opendir, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import {
  S3Client,
  GetObjectCommand,
  HeadObjectCommand,
  DeleteObjectCommand,
  ListObjectsV2Command,
  ListMultipartUploadsCommand,
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  HeadBucketCommand,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import {
  checkKey,
  DigestMismatchError,
  NotFoundError,
  StorageError,
  type ByteRange,
  type ObjectInfo,
  type PutExpect,
  type PutResult,
  type StorageDriver,
  PART_MARKER,
  tempRemovable,
} from "./driver.ts";


/** Options of {@link createS3Driver} (the `storage:` config entry with `driver: "s3"`, plus the local spool dir). */
export interface S3DriverOptions {
  /** Endpoint URL, e.g. `http://127.0.0.1:9000` (MinIO, Ceph RGW). Default: `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, else AWS S3. */
  endpoint?: string;
  /** Region; default `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`. */
  region?: string;
  /** Bucket holding the store. */
  bucket: string;
  /** Path-style addressing (`endpoint/bucket/key`); default true when an endpoint is set (MinIO, Ceph), false on AWS. */
  pathStyle?: boolean;
  /** Static credentials; default: the SDK's chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, profiles, instance roles). */
  accessKeyId?: string;
  secretAccessKey?: string;
  sessionToken?: string;
  /** Key prefix inside the bucket (e.g. `vault/`), so one bucket can hold other data too. */
  prefix?: string;
  /** Local scratch directory for spool files (the host passes `<dataDir>/tmp`). */
  spoolDir: string;
  /** Multipart part size for streamed puts, bytes (default 8 MiB; S3 minimum 5 MiB). */
  partSizeBytes?: number;
  /** Parts uploaded in parallel per put (default 4); memory per put is at most `queueSize × partSize`. */
  queueSize?: number;
  /** Create the bucket when it does not exist (default false). */
  createBucket?: boolean;
}

function isNotFound(e: unknown): boolean {
  const x = e as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } } | null;
  return x?.name === "NoSuchKey" || x?.name === "NotFound" || x?.Code === "NoSuchKey" || x?.$metadata?.httpStatusCode === 404;
}

/**
 * Creates an S3 driver. Keys map to `<prefix><key>` in `bucket`.
 *
 * - `put` streams the body through a sha256 hasher into `@aws-sdk/lib-storage` (one PutObject below the part
 *   size, else a multipart upload whose CompleteMultipartUpload happens only after the last byte was hashed and
 *   `expect` verified), so an object is visible all at once or not at all; a failed put aborts its upload.
 * - `get` with a range sends `Range: bytes=a-b` (an end past the size is clamped by S3).
 * - `presignGet` answers with a SigV4 presigned GET URL (used by `redirectDownloads`).
 * - `cleanTemp(ageMs)` removes local spool files older than `ageMs`, and aborts multipart uploads under the
 *   prefix that were started more than max(ageMs, 1 hour) ago (uploads of crashed puts).
 *
 * Requests use `requestChecksumCalculation: WHEN_REQUIRED` so older S3-compatible services (that predate
 * flexible checksums) work; integrity is ensured by the driver's own sha256.
 * @throws StorageError wrapping service errors; NotFoundError for missing keys; DigestMismatchError on `expect` mismatch
 */
export function createS3Driver(o: S3DriverOptions): StorageDriver {
  const name = "s3";
  const endpoint = o.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL ?? undefined;
  const region = o.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? "us-east-1";
  const prefix = o.prefix ? (o.prefix.endsWith("/") ? o.prefix : o.prefix + "/").replace(/^\/+/, "") : "";
  const bucket = o.bucket;
  const partSize = Math.max(5 * 1024 * 1024, o.partSizeBytes ?? 8 * 1024 * 1024);
  const queueSize = o.queueSize ?? 4;
  const cfg: S3ClientConfig = {
    region,
    endpoint,
    forcePathStyle: o.pathStyle ?? endpoint !== undefined,
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  };
  if (o.accessKeyId && o.secretAccessKey) {
    cfg.credentials = { accessKeyId: o.accessKeyId, secretAccessKey: o.secretAccessKey, sessionToken: o.sessionToken };
  }
  const client = new S3Client(cfg);
  const spool = o.spoolDir;
  let bucketReady: Promise<void> | null = null;

  function full(key: string): string {
    checkKey(name, key);
    return prefix + key;
  }

  function wrap(key: string, e: unknown): Error {
    if (e instanceof StorageError) return e;
    if (isNotFound(e)) return new NotFoundError(name, key);
    const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    return new StorageError(name, key, `s3 ${bucket}: ${msg}`);
  }

  async function ensureBucket(): Promise<void> {
    if (!o.createBucket) return;
    bucketReady ??= (async () => {
      try {
        await client.send(new HeadBucketCommand({ Bucket: bucket }));
      } catch {
        await client.send(new CreateBucketCommand({ Bucket: bucket })).catch((e) => {
          if ((e as { name?: string }).name !== "BucketAlreadyOwnedByYou") throw e;
        });
      }
    })();
    return bucketReady;
  }

  /** Uploads `body` to `k` (lib-storage: PutObject below the part size, else multipart). */
  async function upload(k: string, body: ReadableStream<Uint8Array>): Promise<void> {
    await ensureBucket();
    const up = new Upload({
      client,
      params: { Bucket: bucket, Key: k, Body: body },
      partSize,
      queueSize,
      leavePartsOnError: false,
    });
    await up.done();
  }

  const driver: StorageDriver = {
    name,

    async get(key: string, range?: ByteRange): Promise<ReadableStream<Uint8Array>> {
      const k = full(key);
      try {
        const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: k, Range: range ? `bytes=${range.start}-${range.end}` : undefined }));
        if (!r.Body) return new Response(new Uint8Array(0)).body!;
        return r.Body.transformToWebStream() as ReadableStream<Uint8Array>;
      } catch (e) {
        // A range starting past the end of a zero-length or short object: S3 answers 416 InvalidRange.
        if ((e as { name?: string }).name === "InvalidRange") return new Response(new Uint8Array(0)).body!;
        throw wrap(key, e);
      }
    },

    async stat(key: string): Promise<ObjectInfo> {
      const k = full(key);
      try {
        const r = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: k }));
        return { key, sizeBytes: r.ContentLength ?? 0, modifiedAt: r.LastModified?.getTime() ?? 0 };
      } catch (e) {
        throw wrap(key, e);
      }
    },

    async exists(key: string): Promise<boolean> {
      try {
        await driver.stat(key);
        return true;
      } catch (e) {
        if (e instanceof NotFoundError) return false;
        throw e;
      }
    },

    async put(key: string, body: ReadableStream<Uint8Array>, expect?: PutExpect): Promise<PutResult> {
      let k: string;
      try {
        k = full(key);
      } catch (e) {
        await body.cancel().catch(() => {});
        throw e;
      }
      const hasher = new Bun.CryptoHasher("sha256");
      let size = 0;
      let hex = "";
      const want = expect?.sha256?.toLowerCase().replace(/^sha256:/, "");
      const check = new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, c) {
          size += chunk.byteLength;
          if (expect?.sizeBytes !== undefined && size > expect.sizeBytes) {
            throw new DigestMismatchError(name, key, `${expect.sizeBytes} bytes`, `more than ${expect.sizeBytes} bytes`);
          }
          hasher.update(chunk);
          c.enqueue(chunk);
        },
        flush() {
          hex = hasher.digest("hex");
          if (expect?.sizeBytes !== undefined && size !== expect.sizeBytes) {
            throw new DigestMismatchError(name, key, `${expect.sizeBytes} bytes`, `${size} bytes`);
          }
          if (want && want !== hex) throw new DigestMismatchError(name, key, `sha256:${want}`, `sha256:${hex}`);
        },
      });
      let failure: unknown;
      const piped = body.pipeThrough(check);
      try {
        await upload(k, piped);
      } catch (e) {
        failure = e;
      }
      if (failure !== undefined) {
        // lib-storage reports the body's error; surface our own errors unchanged.
        const cause = (failure as { cause?: unknown }).cause;
        if (failure instanceof StorageError) throw failure;
        if (cause instanceof StorageError) throw cause;
        if (failure instanceof Error && !("$metadata" in failure)) throw failure;
        throw wrap(key, failure);
      }
      return { key, sizeBytes: size, modifiedAt: Date.now(), sha256: hex };
    },

    async putFile(key: string, localPath: string): Promise<ObjectInfo> {
      const k = full(key);
      const f = Bun.file(localPath);
      const sizeBytes = f.size;
      try {
        await upload(k, f.stream());
      } catch (e) {
        throw wrap(key, e);
      }
      await unlink(localPath).catch(() => {});
      return { key, sizeBytes, modifiedAt: Date.now() };
    },

    async delete(key: string): Promise<void> {
      const k = full(key);
      try {
        await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: k }));
      } catch (e) {
        if (isNotFound(e)) return;
        throw wrap(key, e);
      }
    },

    async *list(p: string): AsyncIterable<ObjectInfo> {
      let token: string | undefined;
      do {
        let r;
        try {
          r = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix + p, ContinuationToken: token }));
        } catch (e) {
          if ((e as { name?: string }).name === "NoSuchBucket") return;
          throw wrap(p, e);
        }
        for (const c of r.Contents ?? []) {
          if (!c.Key) continue;
          yield { key: c.Key.slice(prefix.length), sizeBytes: c.Size ?? 0, modifiedAt: c.LastModified?.getTime() ?? 0 };
        }
        token = r.IsTruncated ? r.NextContinuationToken : undefined;
      } while (token);
    },

    spoolDir(): string {
      mkdirSync(spool, { recursive: true });
      return spool;
    },

    async presignGet(key: string, ttlSeconds: number, response?: { contentType?: string; contentDisposition?: string }): Promise<string> {
      const k = full(key);
      return getSignedUrl(
        client,
        new GetObjectCommand({
          Bucket: bucket,
          Key: k,
          ResponseContentType: response?.contentType,
          ResponseContentDisposition: response?.contentDisposition,
        }),
        { expiresIn: Math.max(1, Math.min(604800, Math.floor(ttlSeconds))) },
      );
    },

    async cleanTemp(olderThanMs = 0): Promise<number> {
      let removed = 0;
      const now = Date.now();
      try {
        const d = await opendir(spool);
        for await (const e of d) {
          if (!e.isFile() || !e.name.includes(PART_MARKER)) continue;
          const p = join(spool, e.name);
          const st = await stat(p).catch(() => undefined);
          if (st && tempRemovable(e.name, now - Math.floor(st.mtimeMs), olderThanMs) && (await unlink(p).then(() => true, () => false))) removed++;
        }
      } catch {
        /* no spool dir yet */
      }
      // Multipart uploads left by crashed puts: only those older than an hour, so puts in flight on other nodes survive.
      const mpuCutoff = Date.now() - Math.max(olderThanMs, 60 * 60 * 1000);
      try {
        let keyMarker: string | undefined;
        let idMarker: string | undefined;
        do {
          const r = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: idMarker }));
          for (const u of r.Uploads ?? []) {
            if (u.Key && u.UploadId && (u.Initiated?.getTime() ?? 0) <= mpuCutoff) {
              await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId })).catch(() => {});
            }
          }
          keyMarker = r.IsTruncated ? r.NextKeyMarker : undefined;
          idMarker = r.IsTruncated ? r.NextUploadIdMarker : undefined;
        } while (keyMarker);
      } catch {
        /* listing uploads is best effort (some services do not implement it) */
      }
      return removed;
    },

    async close(): Promise<void> {
      client.destroy();
    },
  };
  return driver;
}

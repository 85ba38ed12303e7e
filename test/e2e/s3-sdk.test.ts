/** s3 plugin with @aws-sdk/client-s3 as the client: every operation of issue 4, aws-chunked uploads with checksum trailers, presigned URLs, permissions. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  S3Client,
  ListBucketsCommand,
  CreateBucketCommand,
  HeadBucketCommand,
  DeleteBucketCommand,
  GetBucketLocationCommand,
  GetBucketVersioningCommand,
  GetBucketAclCommand,
  GetObjectAclCommand,
  PutObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  CopyObjectCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  CreateMultipartUploadCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
  CompleteMultipartUploadCommand,
  AbortMultipartUploadCommand,
  ListPartsCommand,
  ListMultipartUploadsCommand,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { Readable } from "node:stream";
import { startS3Vault, expectNoOrphans, type S3Vault } from "./s3-env.ts";
import { pseudoRandomBytes } from "../conformance/storage.ts";
import s3plugin from "../../plugins/s3/index.ts";

let v: S3Vault;
let s3: S3Client;
/** Request headers the SDK sent, recorded by a finalizeRequest middleware. */
const sent: Record<string, string>[] = [];

beforeAll(async () => {
  v = await startS3Vault({
    maxObjectSizeBytes: 32 * 1024 * 1024,
    abortIncompleteUploadsAfterSeconds: 0,
    buckets: [
      { name: "shared", owner: "root", grants: { alice: "write" } },
      { name: "public", owner: "root", anonymousRead: true },
    ],
  });
  s3 = v.client();
  s3.middlewareStack.add(
    (next) => async (args) => {
      sent.push({ ...((args.request as { headers: Record<string, string> }).headers ?? {}) });
      return next(args);
    },
    { step: "finalizeRequest", name: "recordHeaders" },
  );
});
afterAll(async () => {
  await v?.stop();
});

function md5(b: Uint8Array | string): string {
  return new Bun.CryptoHasher("md5").update(b).digest("hex");
}
async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as { name: string }).name;
  }
  return "no error";
}
async function status(p: Promise<unknown>): Promise<number | undefined> {
  try {
    await p;
  } catch (e) {
    return (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  }
  return 200;
}
/** A stream body (makes the SDK send aws-chunked with a checksum trailer). */
function streamBody(data: Uint8Array, chunk = 100_000): Readable {
  const parts: Buffer[] = [];
  for (let off = 0; off < data.length; off += chunk) parts.push(Buffer.from(data.subarray(off, off + chunk)));
  return Readable.from(parts);
}

describe("buckets", () => {
  test("create, list, head, location, versioning, ACL, already-owned, not-empty, delete", async () => {
    await s3.send(new CreateBucketCommand({ Bucket: "bk1" }));
    expect(await code(s3.send(new CreateBucketCommand({ Bucket: "bk1" })))).toBe("BucketAlreadyOwnedByYou");
    expect(await code(s3.send(new CreateBucketCommand({ Bucket: "Bad_Name" })))).toBe("InvalidBucketName");
    const l = await s3.send(new ListBucketsCommand({}));
    expect(l.Buckets!.map((b) => b.Name)).toEqual(["bk1", "public", "shared"]);
    expect(l.Owner?.DisplayName).toBe("root");
    const h = await s3.send(new HeadBucketCommand({ Bucket: "bk1" }));
    expect(h.BucketRegion).toBe("us-east-1");
    expect(await status(s3.send(new HeadBucketCommand({ Bucket: "nope" })))).toBe(404);
    expect((await s3.send(new GetBucketLocationCommand({ Bucket: "bk1" }))).LocationConstraint ?? "").toBe("");
    expect((await s3.send(new GetBucketVersioningCommand({ Bucket: "bk1" }))).Status).toBeUndefined();
    const acl = await s3.send(new GetBucketAclCommand({ Bucket: "bk1" }));
    expect(acl.Grants![0].Permission).toBe("FULL_CONTROL");
    expect(acl.Owner!.DisplayName).toBe("root");
    await s3.send(new PutObjectCommand({ Bucket: "bk1", Key: "x", Body: "x" }));
    expect(await code(s3.send(new DeleteBucketCommand({ Bucket: "bk1" })))).toBe("BucketNotEmpty");
    expect(await status(s3.send(new DeleteBucketCommand({ Bucket: "bk1" })))).toBe(409);
    await s3.send(new DeleteObjectCommand({ Bucket: "bk1", Key: "x" }));
    await s3.send(new DeleteBucketCommand({ Bucket: "bk1" }));
    expect(await code(s3.send(new HeadBucketCommand({ Bucket: "bk1" })))).toBe("NotFound");
  }, 120_000);
});

describe("objects", () => {
  beforeAll(async () => {
    await s3.send(new CreateBucketCommand({ Bucket: "objs" }));
  });

  test("put with metadata and Content-MD5, get, head: ETag is the MD5, metadata and content headers come back", async () => {
    const body = "hello, s3 world";
    const p = await s3.send(
      new PutObjectCommand({
        Bucket: "objs",
        Key: "dir/hello.txt",
        Body: body,
        ContentType: "text/plain",
        ContentDisposition: 'attachment; filename="h.txt"',
        CacheControl: "max-age=60",
        Metadata: { color: "Blue", "x-y": "z" },
        ContentMD5: Buffer.from(md5(body), "hex").toString("base64"),
      }),
    );
    expect(p.ETag).toBe(`"${md5(body)}"`);
    const g = await s3.send(new GetObjectCommand({ Bucket: "objs", Key: "dir/hello.txt" }));
    expect(await g.Body!.transformToString()).toBe(body);
    expect(g.ETag).toBe(`"${md5(body)}"`);
    expect(g.ContentType).toBe("text/plain");
    expect(g.ContentDisposition).toBe('attachment; filename="h.txt"');
    expect(g.CacheControl).toBe("max-age=60");
    expect(g.Metadata).toEqual({ color: "Blue", "x-y": "z" });
    const h = await s3.send(new HeadObjectCommand({ Bucket: "objs", Key: "dir/hello.txt" }));
    expect(h.ContentLength).toBe(body.length);
    expect(h.LastModified!.getTime()).toBeGreaterThan(Date.now() - 60_000);
    expect(await code(s3.send(new HeadObjectCommand({ Bucket: "objs", Key: "missing" })))).toBe("NotFound");
    expect(await code(s3.send(new GetObjectCommand({ Bucket: "objs", Key: "missing" })))).toBe("NoSuchKey");
    expect(await code(s3.send(new GetObjectCommand({ Bucket: "nobucket", Key: "k" })))).toBe("NoSuchBucket");
    expect(await code(s3.send(new PutObjectCommand({ Bucket: "objs", Key: "bad-md5", Body: "abc", ContentMD5: Buffer.from(md5("abd"), "hex").toString("base64") })))).toBe("BadDigest");
  }, 120_000);

  test("Range, conditionals and response-* overrides", async () => {
    const data = pseudoRandomBytes(10_000, 5);
    await s3.send(new PutObjectCommand({ Bucket: "objs", Key: "ranged.bin", Body: data }));
    const r = await s3.send(new GetObjectCommand({ Bucket: "objs", Key: "ranged.bin", Range: "bytes=100-199" }));
    expect(r.ContentRange).toBe("bytes 100-199/10000");
    expect(Buffer.from(await r.Body!.transformToByteArray()).equals(Buffer.from(data.subarray(100, 200)))).toBe(true);
    const tail = await s3.send(new GetObjectCommand({ Bucket: "objs", Key: "ranged.bin", Range: "bytes=-10" }));
    expect((await tail.Body!.transformToByteArray()).length).toBe(10);
    expect(await code(s3.send(new GetObjectCommand({ Bucket: "objs", Key: "ranged.bin", Range: "bytes=20000-" })))).toBe("InvalidRange");
    const etag = `"${md5(data)}"`;
    const lm = (await s3.send(new HeadObjectCommand({ Bucket: "objs", Key: "ranged.bin" }))).LastModified!;
    expect(await status(s3.send(new GetObjectCommand({ Bucket: "objs", Key: "ranged.bin", IfMatch: '"nope"' })))).toBe(412);
    expect(await status(s3.send(new GetObjectCommand({ Bucket: "objs", Key: "ranged.bin", IfMatch: etag })))).toBe(200);
    expect(await status(s3.send(new GetObjectCommand({ Bucket: "objs", Key: "ranged.bin", IfNoneMatch: etag })))).toBe(304);
    expect(await status(s3.send(new GetObjectCommand({ Bucket: "objs", Key: "ranged.bin", IfModifiedSince: new Date(lm.getTime() + 5000) })))).toBe(304);
    expect(await status(s3.send(new GetObjectCommand({ Bucket: "objs", Key: "ranged.bin", IfUnmodifiedSince: new Date(lm.getTime() - 5000) })))).toBe(412);
    // If-Match true + If-Unmodified-Since false ⇒ 200; If-None-Match false + If-Modified-Since true ⇒ 304
    expect(await status(s3.send(new GetObjectCommand({ Bucket: "objs", Key: "ranged.bin", IfMatch: etag, IfUnmodifiedSince: new Date(lm.getTime() - 5000) })))).toBe(200);
    expect(await status(s3.send(new GetObjectCommand({ Bucket: "objs", Key: "ranged.bin", IfNoneMatch: etag, IfModifiedSince: new Date(lm.getTime() - 5000) })))).toBe(304);
    const o = await s3.send(new GetObjectCommand({ Bucket: "objs", Key: "ranged.bin", ResponseContentType: "application/x-override", ResponseContentDisposition: "inline", ResponseCacheControl: "no-store" }));
    expect(o.ContentType).toBe("application/x-override");
    expect(o.ContentDisposition).toBe("inline");
    expect(o.CacheControl).toBe("no-store");
    await o.Body!.transformToByteArray();
  }, 120_000);

  test("streamed bodies go aws-chunked with checksum trailers (CRC32, CRC32C, SHA256), verified and returned in checksum mode", async () => {
    const data = pseudoRandomBytes(3 * 1024 * 1024 + 17, 8);
    for (const alg of ["CRC32", "CRC32C", "SHA256"] as const) {
      sent.length = 0;
      const p = await s3.send(new PutObjectCommand({ Bucket: "objs", Key: `trailer-${alg}`, Body: streamBody(data), ContentLength: data.length, ChecksumAlgorithm: alg }));
      const put = sent.find((h) => h["x-amz-trailer"] !== undefined)!;
      expect(put["content-encoding"]).toContain("aws-chunked");
      expect(put["x-amz-trailer"]).toBe(`x-amz-checksum-${alg.toLowerCase()}`);
      expect(put["x-amz-content-sha256"]).toBe("STREAMING-UNSIGNED-PAYLOAD-TRAILER");
      expect(p.ETag).toBe(`"${md5(data)}"`);
      const g = await s3.send(new GetObjectCommand({ Bucket: "objs", Key: `trailer-${alg}`, ChecksumMode: "ENABLED" }));
      const back = await g.Body!.transformToByteArray();
      expect(md5(back)).toBe(md5(data));
      const got = (g as unknown as Record<string, string>)[`Checksum${alg}`];
      expect(typeof got).toBe("string");
    }
  }, 120_000);

  test("a wrong checksum header is BadDigest and stores nothing", async () => {
    expect(await code(s3.send(new PutObjectCommand({ Bucket: "objs", Key: "bad-crc", Body: "payload", ChecksumCRC32: "AAAAAA==" })))).toBe("BadDigest");
    expect(await code(s3.send(new HeadObjectCommand({ Bucket: "objs", Key: "bad-crc" })))).toBe("NotFound");
  }, 120_000);

  test("delete is idempotent; DeleteObjects (quiet and verbose, VersionId null)", async () => {
    await s3.send(new DeleteObjectCommand({ Bucket: "objs", Key: "never-existed" }));
    for (const k of ["d/1", "d/2", "d/3"]) await s3.send(new PutObjectCommand({ Bucket: "objs", Key: k, Body: k }));
    const r = await s3.send(new DeleteObjectsCommand({ Bucket: "objs", Delete: { Objects: [{ Key: "d/1" }, { Key: "d/2", VersionId: "null" }, { Key: "d/none" }] } }));
    expect(r.Deleted!.map((d) => d.Key).sort()).toEqual(["d/1", "d/2", "d/none"]);
    const q = await s3.send(new DeleteObjectsCommand({ Bucket: "objs", Delete: { Quiet: true, Objects: [{ Key: "d/3" }] } }));
    expect(q.Deleted ?? []).toEqual([]);
    const l = await s3.send(new ListObjectsV2Command({ Bucket: "objs", Prefix: "d/" }));
    expect(l.KeyCount).toBe(0);
  }, 120_000);

  test("CopyObject: COPY keeps metadata and ETag, REPLACE replaces, self-copy without REPLACE is refused", async () => {
    await s3.send(new PutObjectCommand({ Bucket: "objs", Key: "src key+1", Body: "copy me", ContentType: "text/x-a", Metadata: { a: "1" } }));
    const c = await s3.send(new CopyObjectCommand({ Bucket: "objs", Key: "copied", CopySource: `objs/${encodeURIComponent("src key+1")}` }));
    expect(c.CopyObjectResult!.ETag).toBe(`"${md5("copy me")}"`);
    const h = await s3.send(new HeadObjectCommand({ Bucket: "objs", Key: "copied" }));
    expect(h.ContentType).toBe("text/x-a");
    expect(h.Metadata).toEqual({ a: "1" });
    await s3.send(new CopyObjectCommand({ Bucket: "objs", Key: "copied", CopySource: "objs/copied", MetadataDirective: "REPLACE", ContentType: "text/x-b", Metadata: { b: "2" } }));
    const h2 = await s3.send(new HeadObjectCommand({ Bucket: "objs", Key: "copied" }));
    expect(h2.ContentType).toBe("text/x-b");
    expect(h2.Metadata).toEqual({ b: "2" });
    expect(await code(s3.send(new CopyObjectCommand({ Bucket: "objs", Key: "copied", CopySource: "objs/copied" })))).toBe("InvalidRequest");
    expect(await code(s3.send(new CopyObjectCommand({ Bucket: "objs", Key: "x", CopySource: "objs/missing" })))).toBe("NoSuchKey");
    expect(await status(s3.send(new CopyObjectCommand({ Bucket: "objs", Key: "x", CopySource: "objs/copied", CopySourceIfMatch: '"nope"' })))).toBe(412);
  }, 120_000);
});

describe("listing", () => {
  const keys = ["app/README", "app/v1/a", "app/v1/b", "app/v2/a", "app/x y", "app/foo+1/z", "other", "top"];
  beforeAll(async () => {
    await s3.send(new CreateBucketCommand({ Bucket: "lst" }));
    for (const k of keys) await s3.send(new PutObjectCommand({ Bucket: "lst", Key: k, Body: k }));
  });

  test("v2: prefix + delimiter → CommonPrefixes, KeyCount, max-keys paging with continuation tokens, start-after", async () => {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: "lst", Prefix: "app/", Delimiter: "/" }));
    expect(r.Contents!.map((c) => c.Key)).toEqual(["app/README", "app/x y"]);
    expect(r.CommonPrefixes!.map((p) => p.Prefix)).toEqual(["app/foo+1/", "app/v1/", "app/v2/"]);
    expect(r.KeyCount).toBe(5);
    expect(r.IsTruncated).toBe(false);
    expect(r.NextContinuationToken).toBeUndefined();
    // page through with max-keys 2: every item exactly once
    const seen: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const p = await s3.send(new ListObjectsV2Command({ Bucket: "lst", Prefix: "app/", Delimiter: "/", MaxKeys: 2, ContinuationToken: token }));
      seen.push(...(p.CommonPrefixes ?? []).map((x) => x.Prefix!), ...(p.Contents ?? []).map((x) => x.Key!));
      expect(p.IsTruncated ? p.NextContinuationToken !== undefined : p.NextContinuationToken === undefined).toBe(true);
      token = p.NextContinuationToken;
      pages++;
    } while (token && pages < 10);
    expect(seen.sort()).toEqual(["app/README", "app/foo+1/", "app/v1/", "app/v2/", "app/x y"]);
    expect(pages).toBe(3);
    const sa = await s3.send(new ListObjectsV2Command({ Bucket: "lst", StartAfter: "app/x y" }));
    expect(sa.Contents!.map((c) => c.Key)).toEqual(["other", "top"]);
    const zero = await s3.send(new ListObjectsV2Command({ Bucket: "lst", MaxKeys: 0 }));
    expect(zero.IsTruncated).toBe(false);
    expect(zero.KeyCount).toBe(0);
    const owner = await s3.send(new ListObjectsV2Command({ Bucket: "lst", FetchOwner: true, MaxKeys: 1 }));
    expect(owner.Contents![0].Owner!.DisplayName).toBe("root");
  }, 120_000);

  test("encoding-type=url encodes keys and prefixes", async () => {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: "lst", Prefix: "app/", Delimiter: "/", EncodingType: "url" }));
    // the SDK hands url-encoded fields over as sent
    expect(r.CommonPrefixes!.map((p) => p.Prefix)).toEqual(["app/foo%2B1/", "app/v1/", "app/v2/"]);
    expect(r.Contents!.map((c) => c.Key)).toEqual(["app/README", "app/x%20y"]);
    const url = await getSignedUrl(s3, new ListObjectsV2Command({ Bucket: "lst", Prefix: "app/", Delimiter: "/", EncodingType: "url" }), { expiresIn: 60 });
    const xml = await (await fetch(url)).text();
    expect(xml).toContain("<Prefix>app/foo%2B1/</Prefix>");
    expect(xml).toContain("<Key>app/x%20y</Key>");
    expect(xml).toContain("<EncodingType>url</EncodingType>");
  }, 120_000);

  test("v1: marker, NextMarker only with a delimiter; ListObjectVersions lists version null", async () => {
    const r = await s3.send(new ListObjectsCommand({ Bucket: "lst", MaxKeys: 3 }));
    expect(r.Contents!.map((c) => c.Key)).toEqual(["app/README", "app/foo+1/z", "app/v1/a"]);
    expect(r.IsTruncated).toBe(true);
    expect(r.NextMarker).toBeUndefined();
    const r2 = await s3.send(new ListObjectsCommand({ Bucket: "lst", Marker: "app/v1/a" }));
    expect(r2.Contents!.map((c) => c.Key)).toEqual(["app/v1/b", "app/v2/a", "app/x y", "other", "top"]);
    const d = await s3.send(new ListObjectsCommand({ Bucket: "lst", Delimiter: "/", MaxKeys: 1 }));
    expect(d.CommonPrefixes!.map((p) => p.Prefix)).toEqual(["app/"]);
    expect(d.NextMarker).toBe("app/");
    const d2 = await s3.send(new ListObjectsCommand({ Bucket: "lst", Delimiter: "/", Marker: d.NextMarker }));
    expect(d2.Contents!.map((c) => c.Key)).toEqual(["other", "top"]);
    const vs = await s3.send(new ListObjectVersionsCommand({ Bucket: "lst", MaxKeys: 5 }));
    expect(vs.Versions!.length).toBe(5);
    expect(vs.Versions!.every((x) => x.VersionId === "null" && x.IsLatest)).toBe(true);
    expect(vs.IsTruncated).toBe(true);
    const vs2 = await s3.send(new ListObjectVersionsCommand({ Bucket: "lst", KeyMarker: vs.NextKeyMarker, VersionIdMarker: vs.NextVersionIdMarker }));
    expect(vs2.Versions!.map((x) => x.Key)).toEqual(["app/x y", "other", "top"]);
  }, 120_000);
});

describe("multipart", () => {
  beforeAll(async () => {
    await s3.send(new CreateBucketCommand({ Bucket: "mpu" }));
  });

  test("create, upload parts (one replaced), list parts and uploads, complete → md5-of-md5s-N, bytes intact", async () => {
    const p1 = pseudoRandomBytes(5 * 1024 * 1024, 1);
    const p2 = pseudoRandomBytes(1024 * 1024 + 3, 2);
    const c = await s3.send(new CreateMultipartUploadCommand({ Bucket: "mpu", Key: "big/file.bin", ContentType: "application/x-big", Metadata: { m: "v" } }));
    const id = c.UploadId!;
    await s3.send(new UploadPartCommand({ Bucket: "mpu", Key: "big/file.bin", UploadId: id, PartNumber: 1, Body: pseudoRandomBytes(6 * 1024 * 1024, 9) }));
    const u1 = await s3.send(new UploadPartCommand({ Bucket: "mpu", Key: "big/file.bin", UploadId: id, PartNumber: 1, Body: p1 }));
    const u2 = await s3.send(new UploadPartCommand({ Bucket: "mpu", Key: "big/file.bin", UploadId: id, PartNumber: 2, Body: p2 }));
    expect(u1.ETag).toBe(`"${md5(p1)}"`);
    const lp = await s3.send(new ListPartsCommand({ Bucket: "mpu", Key: "big/file.bin", UploadId: id }));
    expect(lp.Parts!.map((p) => [p.PartNumber, p.Size, p.ETag])).toEqual([
      [1, p1.length, `"${md5(p1)}"`],
      [2, p2.length, `"${md5(p2)}"`],
    ]);
    const lp1 = await s3.send(new ListPartsCommand({ Bucket: "mpu", Key: "big/file.bin", UploadId: id, MaxParts: 1 }));
    expect(lp1.IsTruncated).toBe(true);
    expect(lp1.NextPartNumberMarker).toBe("1");
    const lu = await s3.send(new ListMultipartUploadsCommand({ Bucket: "mpu" }));
    expect(lu.Uploads!.map((u) => [u.Key, u.UploadId])).toEqual([["big/file.bin", id]]);
    const done = await s3.send(
      new CompleteMultipartUploadCommand({
        Bucket: "mpu",
        Key: "big/file.bin",
        UploadId: id,
        MultipartUpload: { Parts: [{ PartNumber: 1, ETag: u1.ETag }, { PartNumber: 2, ETag: u2.ETag }] },
      }),
    );
    const want = new Bun.CryptoHasher("md5").update(Buffer.concat([Buffer.from(md5(p1), "hex"), Buffer.from(md5(p2), "hex")])).digest("hex");
    expect(done.ETag).toBe(`"${want}-2"`);
    const g = await s3.send(new GetObjectCommand({ Bucket: "mpu", Key: "big/file.bin" }));
    expect(g.ContentType).toBe("application/x-big");
    expect(g.Metadata).toEqual({ m: "v" });
    expect(g.ETag).toBe(`"${want}-2"`);
    const back = await g.Body!.transformToByteArray();
    expect(md5(back)).toBe(md5(Buffer.concat([p1, p2])));
    expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: "mpu" }))).Uploads ?? []).toEqual([]);
  }, 120_000);

  test("ListMultipartUploads pages through common prefixes one by one and ends (delimiter, MaxUploads 1)", async () => {
    const keys = ["d/a/1", "d/a/2", "d/b", "d/c/1", "d/e"];
    const ids: string[] = [];
    for (const Key of keys) ids.push((await s3.send(new CreateMultipartUploadCommand({ Bucket: "mpu", Key }))).UploadId!);
    const seen: string[] = [];
    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    for (let page = 0; page < 10; page++) {
      const r = await s3.send(new ListMultipartUploadsCommand({ Bucket: "mpu", Prefix: "d/", Delimiter: "/", MaxUploads: 1, KeyMarker, UploadIdMarker }));
      for (const cp of r.CommonPrefixes ?? []) seen.push(`P:${cp.Prefix}`);
      for (const u of r.Uploads ?? []) seen.push(u.Key!);
      if (!r.IsTruncated) break;
      KeyMarker = r.NextKeyMarker;
      UploadIdMarker = r.NextUploadIdMarker;
    }
    expect(seen).toEqual(["P:d/a/", "d/b", "P:d/c/", "d/e"]);
    for (const [i, Key] of keys.entries()) await s3.send(new AbortMultipartUploadCommand({ Bucket: "mpu", Key, UploadId: ids[i] }));
  });

  test("abort removes the parts; UploadPartCopy copies a range; checksummed multipart (CRC32 composite)", async () => {
    const c = await s3.send(new CreateMultipartUploadCommand({ Bucket: "mpu", Key: "aborted" }));
    await s3.send(new UploadPartCommand({ Bucket: "mpu", Key: "aborted", UploadId: c.UploadId, PartNumber: 1, Body: "abc" }));
    await s3.send(new AbortMultipartUploadCommand({ Bucket: "mpu", Key: "aborted", UploadId: c.UploadId }));
    expect(await code(s3.send(new ListPartsCommand({ Bucket: "mpu", Key: "aborted", UploadId: c.UploadId })))).toBe("NoSuchUpload");

    const src = pseudoRandomBytes(6 * 1024 * 1024, 4);
    await s3.send(new PutObjectCommand({ Bucket: "mpu", Key: "copy-src", Body: src }));
    const m = await s3.send(new CreateMultipartUploadCommand({ Bucket: "mpu", Key: "from-copy", ChecksumAlgorithm: "CRC32" }));
    const pc = await s3.send(new UploadPartCopyCommand({ Bucket: "mpu", Key: "from-copy", UploadId: m.UploadId, PartNumber: 1, CopySource: "mpu/copy-src", CopySourceRange: `bytes=0-${5 * 1024 * 1024 - 1}` }));
    const tail = src.subarray(5 * 1024 * 1024);
    const p2 = await s3.send(new UploadPartCommand({ Bucket: "mpu", Key: "from-copy", UploadId: m.UploadId, PartNumber: 2, Body: tail, ChecksumAlgorithm: "CRC32" }));
    expect(typeof p2.ChecksumCRC32).toBe("string");
    await s3.send(
      new CompleteMultipartUploadCommand({
        Bucket: "mpu",
        Key: "from-copy",
        UploadId: m.UploadId,
        MultipartUpload: { Parts: [{ PartNumber: 1, ETag: pc.CopyPartResult!.ETag }, { PartNumber: 2, ETag: p2.ETag, ChecksumCRC32: p2.ChecksumCRC32 }] },
      }),
    );
    const g = await s3.send(new GetObjectCommand({ Bucket: "mpu", Key: "from-copy" }));
    expect(md5(await g.Body!.transformToByteArray())).toBe(md5(src));
  }, 120_000);

  test("part order, unknown part ETag and small parts are refused; the upload stays usable", async () => {
    const c = await s3.send(new CreateMultipartUploadCommand({ Bucket: "mpu", Key: "rules" }));
    const a = await s3.send(new UploadPartCommand({ Bucket: "mpu", Key: "rules", UploadId: c.UploadId, PartNumber: 1, Body: "small part" }));
    const b = await s3.send(new UploadPartCommand({ Bucket: "mpu", Key: "rules", UploadId: c.UploadId, PartNumber: 2, Body: "last" }));
    const complete = (parts: { PartNumber: number; ETag?: string }[]) =>
      s3.send(new CompleteMultipartUploadCommand({ Bucket: "mpu", Key: "rules", UploadId: c.UploadId, MultipartUpload: { Parts: parts } }));
    expect(await code(complete([{ PartNumber: 2, ETag: b.ETag }, { PartNumber: 1, ETag: a.ETag }]))).toBe("InvalidPartOrder");
    expect(await code(complete([{ PartNumber: 1, ETag: '"0123456789abcdef0123456789abcdef"' }]))).toBe("InvalidPart");
    expect(await code(complete([{ PartNumber: 1, ETag: a.ETag }, { PartNumber: 2, ETag: b.ETag }]))).toBe("EntityTooSmall");
    // a single small part is the last part: allowed
    await complete([{ PartNumber: 1, ETag: a.ETag }]);
    const g = await s3.send(new GetObjectCommand({ Bucket: "mpu", Key: "rules" }));
    expect(await g.Body!.transformToString()).toBe("small part");
  }, 120_000);
});

describe("auth", () => {
  test("presigned GET works; an expired one is AccessDenied; a wrong secret is SignatureDoesNotMatch; unknown key InvalidAccessKeyId", async () => {
    await s3.send(new CreateBucketCommand({ Bucket: "auth" }));
    await s3.send(new PutObjectCommand({ Bucket: "auth", Key: "p.txt", Body: "presigned!" }));
    const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket: "auth", Key: "p.txt" }), { expiresIn: 60 });
    const ok = await fetch(url);
    expect(ok.status).toBe(200);
    expect(await ok.text()).toBe("presigned!");
    const old = await getSignedUrl(s3, new GetObjectCommand({ Bucket: "auth", Key: "p.txt" }), { expiresIn: 60, signingDate: new Date(Date.now() - 3600_000) });
    const ex = await fetch(old);
    expect(ex.status).toBe(403);
    const body = await ex.text();
    expect(body).toContain("<Code>AccessDenied</Code>");
    expect(body).toContain("expired");
    const rid = ex.headers.get("x-amz-request-id")!;
    expect(body).toContain(`<RequestId>${rid}</RequestId>`);
    const bad = new S3Client({ endpoint: v.endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: "VAULTADMINKEY0000001", secretAccessKey: "wrong-secret-000000000000" } });
    expect(await code(bad.send(new ListBucketsCommand({})))).toBe("SignatureDoesNotMatch");
    const unknown = new S3Client({ endpoint: v.endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: "NOSUCHKEY0000", secretAccessKey: "whatever-000000000" } });
    expect(await code(unknown.send(new ListBucketsCommand({})))).toBe("InvalidAccessKeyId");
    bad.destroy();
    unknown.destroy();
  }, 120_000);

  test("a skewed clock is RequestTimeTooSkewed", async () => {
    const skewed = new S3Client({
      endpoint: v.endpoint,
      region: "us-east-1",
      forcePathStyle: true,
      credentials: { accessKeyId: "VAULTADMINKEY0000001", secretAccessKey: "adminSecretKey000000000000000000000000000" },
      systemClockOffset: -3600_000,
      maxAttempts: 1,
    });
    expect(await code(skewed.send(new ListBucketsCommand({})))).toBe("RequestTimeTooSkewed");
    skewed.destroy();
  }, 120_000);

  test("per-bucket permissions: alice writes only where granted; anonymous reads only the public bucket", async () => {
    const alice = v.client("alice");
    expect(await code(alice.send(new CreateBucketCommand({ Bucket: "alices" })))).toBe("AccessDenied");
    expect(await code(alice.send(new PutObjectCommand({ Bucket: "objs", Key: "a", Body: "a" })))).toBe("AccessDenied");
    await alice.send(new PutObjectCommand({ Bucket: "shared", Key: "from-alice", Body: "hi" }));
    expect((await alice.send(new ListBucketsCommand({}))).Buckets!.map((b) => b.Name)).toEqual(["shared"]);
    await s3.send(new PutObjectCommand({ Bucket: "public", Key: "open.txt", Body: "anyone" }));
    const anon = await fetch(`${v.endpoint}/public/open.txt`);
    expect(anon.status).toBe(200);
    expect(await anon.text()).toBe("anyone");
    const denied = await fetch(`${v.endpoint}/shared/from-alice`);
    expect(denied.status).toBe(403);
    const put = await fetch(`${v.endpoint}/public/x`, { method: "PUT", body: "x" });
    expect(put.status).toBe(403);
  }, 120_000);

  test("the repository also answers under /<name>/ on the main listener", async () => {
    const m = v.client("admin", { endpoint: v.mountUrl });
    const r = await m.send(new ListObjectsV2Command({ Bucket: "auth" }));
    expect(r.Contents!.map((c) => c.Key)).toEqual(["p.txt"]);
    await m.send(new PutObjectCommand({ Bucket: "auth", Key: "via/mount", Body: "m" }));
    const g = await s3.send(new GetObjectCommand({ Bucket: "auth", Key: "via/mount" }));
    expect(await g.Body!.transformToString()).toBe("m");
  }, 120_000);
});

test("vault gc aborts stale multipart uploads and removes their parts", async () => {
  const c = await s3.send(new CreateMultipartUploadCommand({ Bucket: "mpu", Key: "stale" }));
  await s3.send(new UploadPartCommand({ Bucket: "mpu", Key: "stale", UploadId: c.UploadId, PartNumber: 1, Body: "abandoned" }));
  const ctx = v.vault.vault.repositories.get("objects")!;
  // uploads younger than the cut-off stay
  await s3plugin.gc!(ctx, { olderThan: Date.now() - 60_000 });
  expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: "mpu" }))).Uploads?.length).toBe(1);
  await s3plugin.gc!(ctx, { olderThan: Date.now() + 1 });
  expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: "mpu" }))).Uploads ?? []).toEqual([]);
  expect(await code(s3.send(new ListPartsCommand({ Bucket: "mpu", Key: "stale", UploadId: c.UploadId })))).toBe("NoSuchUpload");
}, 120_000);

test("object ACLs are read-only FULL_CONTROL; nothing left behind", async () => {
  const acl = await s3.send(new GetObjectAclCommand({ Bucket: "auth", Key: "p.txt" }));
  expect(acl.Grants!.map((g) => g.Permission)).toEqual(["FULL_CONTROL"]);
  const paths = expectNoOrphans(v);
  expect(paths).toContain("mpu/big/file.bin");
}, 120_000);

/**
 * Benchmark: a 1 GiB multipart upload (64 parts of 16 MiB) into the vault's `s3` plugin. Reports the vault's
 * peak RSS growth over the whole upload (target < 128 MiB: parts are streamed to storage, and
 * CompleteMultipartUpload streams the parts into one blob without reading the object into memory) and the time
 * of CompleteMultipartUpload itself.
 *
 *   bun scripts/bench/s3-multipart.ts [--mib 1024] [--part-mib 16]
 */
import { S3Client, CreateBucketCommand, CreateMultipartUploadCommand, UploadPartCommand, CompleteMultipartUploadCommand, HeadObjectCommand } from "@aws-sdk/client-s3";
import { join } from "node:path";
import { spawnVault } from "../../test/helpers/vault.ts";
import { flag, mib, pinPid, pinning, printTable, rssBytes, sampleRss, tempDir } from "./lib.ts";
import { pseudoRandomBytes } from "../../test/conformance/storage.ts";

const TOTAL_MIB = flag("mib", 1024);
const PART_MIB = flag("part-mib", 16);
const KEY = { id: "BENCHKEY00000001", secret: "benchSecretKey0000000000000000000000000000" };

const pin = pinning();
const tmp = await tempDir("vault-s3-mpu-");
const vault = await spawnVault({
  config: {
    auth: { anonymousRead: false, admin: { user: "root", password: "bench-password-1" }, accessKeys: [{ id: KEY.id, secret: KEY.secret, user: "root" }] },
    repositories: [{ name: "objects", format: "s3", type: "hosted", port: 0 }],
  },
  dataDir: join(tmp.dir, "vault"),
});
await pinPid(vault.pid, pin.server);
const own = vault.listeners.find((l) => l.repository === "objects")!;
const s3 = new S3Client({
  endpoint: own.url,
  region: "us-east-1",
  forcePathStyle: true,
  credentials: { accessKeyId: KEY.id, secretAccessKey: KEY.secret },
  requestChecksumCalculation: "WHEN_REQUIRED",
  responseChecksumValidation: "WHEN_REQUIRED",
});

try {
  await s3.send(new CreateBucketCommand({ Bucket: "bench" }));
  const parts = Math.ceil(TOTAL_MIB / PART_MIB);
  const base = pseudoRandomBytes(PART_MIB * 1024 * 1024, 7);
  const idle = await rssBytes(vault.pid);
  const rss = sampleRss(vault.pid, 50);
  const t0 = performance.now();
  const up = await s3.send(new CreateMultipartUploadCommand({ Bucket: "bench", Key: "one-gib.bin" }));
  const etags: { PartNumber: number; ETag: string }[] = [];
  for (let n = 1; n <= parts; n++) {
    base[0] = n & 0xff; // every part differs
    const r = await s3.send(new UploadPartCommand({ Bucket: "bench", Key: "one-gib.bin", UploadId: up.UploadId, PartNumber: n, Body: base }));
    etags.push({ PartNumber: n, ETag: r.ETag! });
  }
  const tUploaded = performance.now();
  await s3.send(new CompleteMultipartUploadCommand({ Bucket: "bench", Key: "one-gib.bin", UploadId: up.UploadId, MultipartUpload: { Parts: etags } }));
  const tDone = performance.now();
  const mem = await rss.stop();
  const head = await s3.send(new HeadObjectCommand({ Bucket: "bench", Key: "one-gib.bin" }));
  if (head.ContentLength !== parts * base.length) throw new Error(`stored ${head.ContentLength} bytes, expected ${parts * base.length}`);
  console.log(`\ns3 multipart upload of ${TOTAL_MIB} MiB (${parts} parts of ${PART_MIB} MiB) into the vault (server core ${pin.server ?? "all"})\n`);
  printTable([
    ["measure", "value"],
    ["vault RSS before", mib(idle)],
    ["vault RSS peak", mib(mem.peakBytes)],
    ["peak RSS growth", mib(mem.peakBytes - idle)],
    ["upload parts", `${((tUploaded - t0) / 1000).toFixed(1)} s (${(TOTAL_MIB / ((tUploaded - t0) / 1000)).toFixed(0)} MiB/s)`],
    ["CompleteMultipartUpload", `${((tDone - tUploaded) / 1000).toFixed(1)} s (${(TOTAL_MIB / ((tDone - tUploaded) / 1000)).toFixed(0)} MiB/s)`],
    ["ETag", head.ETag ?? ""],
  ]);
  console.log(`\n(target: peak RSS growth < 128 MiB; complete streams the parts, it never holds the object in memory)`);
} finally {
  s3.destroy();
  await vault.stop();
  await tmp.remove();
}
process.exit(0);

/** S3 driver: the storage conformance suite against a real S3 engine (Ceph RGW on loopback) and against the vault's own s3 plugin (the two must agree). */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { S3Client, CreateBucketCommand, DeleteBucketCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { createS3Driver } from "./s3.ts";
import { storageDriverSuite, pseudoRandomBytes, streamOf } from "../../test/conformance/storage.ts";
import { startCeph, cephMissing, type CephRgw } from "../../test/helpers/ceph.ts";
import { tmpDataDir } from "../../test/helpers/tmp.ts";
import { startS3Vault, KEYS, type S3Vault } from "../../test/e2e/s3-env.ts";

const missing = cephMissing();
if (missing && process.env.CI === "true") throw new Error(`CI=true and Ceph RGW is missing: ${missing}`);

let ceph: CephRgw | null = null;
async function rgw(): Promise<CephRgw> {
  if (!ceph) throw new Error("Ceph RGW did not start");
  return ceph;
}
// One cluster per test file (about 20 s to start).
beforeAll(async () => {
  if (!missing) ceph = await startCeph();
}, 200_000);
afterAll(async () => {
  await ceph?.stop();
}, 60_000);

function clientFor(c: CephRgw): S3Client {
  return new S3Client({
    endpoint: c.endpoint,
    region: c.region,
    forcePathStyle: true,
    credentials: { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey },
  });
}

let n = 0;
/** A fresh bucket per test (removed afterwards) so every test starts on an empty store. */
async function freshDriver() {
  const c = await rgw();
  const bucket = `vault-conf-${process.pid}-${++n}-${Date.now().toString(36)}`;
  const admin = clientFor(c);
  await admin.send(new CreateBucketCommand({ Bucket: bucket }));
  const spool = await tmpDataDir("vault-s3spool-");
  const driver = createS3Driver({
    endpoint: c.endpoint,
    region: c.region,
    bucket,
    pathStyle: true,
    accessKeyId: c.accessKeyId,
    secretAccessKey: c.secretAccessKey,
    prefix: "store/",
    spoolDir: spool,
  });
  return {
    driver,
    cleanup: async () => {
      const left = await admin.send(new ListObjectsV2Command({ Bucket: bucket }));
      expect(left.KeyCount ?? 0).toBe(0);
      await admin.send(new DeleteBucketCommand({ Bucket: bucket }));
      admin.destroy();
    },
  };
}

if (missing) {
  test.skip(`S3 driver against Ceph RGW: ${missing}`, () => {});
} else {
  storageDriverSuite("s3 (Ceph RGW)", freshDriver);

  describe("s3 driver specifics (Ceph RGW)", () => {
    test("a 20 MiB put goes multipart and reads back; presignGet gives a working URL", async () => {
      const { driver, cleanup } = await freshDriver();
      try {
        const data = pseudoRandomBytes(20 * 1024 * 1024 + 3, 99);
        const hex = new Bun.CryptoHasher("sha256").update(data).digest("hex");
        const r = await driver.put("big/object", streamOf(data, 1024 * 1024), { sha256: hex });
        expect(r.sizeBytes).toBe(data.byteLength);
        const url = await driver.presignGet!("big/object", 60, { contentType: "application/x-test" });
        const res = await fetch(url);
        expect(res.status).toBe(200);
        expect(res.headers.get("content-type")).toBe("application/x-test");
        const back = new Uint8Array(await res.arrayBuffer());
        expect(new Bun.CryptoHasher("sha256").update(back).digest("hex")).toBe(hex);
        await driver.delete("big/object");
      } finally {
        await driver.close?.();
        await cleanup();
      }
    });
  });
}

/* ---------------------------------------------------------------- the vault's own s3 plugin as the server */

let own: S3Vault | null = null;
beforeAll(async () => {
  own = await startS3Vault();
}, 60_000);
afterAll(async () => {
  await own?.stop();
});

let m = 0;
/** A fresh bucket in the vault's s3 repository per test, used through the S3 driver exactly as an external service would be. */
async function freshVaultDriver() {
  if (!own) throw new Error("vault did not start");
  const bucket = `own-conf-${process.pid}-${++m}`;
  const admin = new S3Client({
    endpoint: own.endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: KEYS.admin.id, secretAccessKey: KEYS.admin.secret },
  });
  await admin.send(new CreateBucketCommand({ Bucket: bucket }));
  const driver = createS3Driver({
    endpoint: own.endpoint,
    bucket,
    pathStyle: true,
    accessKeyId: KEYS.admin.id,
    secretAccessKey: KEYS.admin.secret,
    prefix: "store/",
    spoolDir: await tmpDataDir("vault-s3spool-"),
    partSizeBytes: 5 * 1024 * 1024,
  });
  return {
    driver,
    cleanup: async () => {
      const left = await admin.send(new ListObjectsV2Command({ Bucket: bucket }));
      expect(left.KeyCount ?? 0).toBe(0);
      await admin.send(new DeleteBucketCommand({ Bucket: bucket }));
      admin.destroy();
    },
  };
}

storageDriverSuite("s3 (the vault's own s3 plugin)", freshVaultDriver);

test("s3 driver on the vault's s3 plugin: a 20 MiB multipart put and a presigned GET", async () => {
  const { driver, cleanup } = await freshVaultDriver();
  try {
    const data = pseudoRandomBytes(20 * 1024 * 1024 + 3, 98);
    const hex = new Bun.CryptoHasher("sha256").update(data).digest("hex");
    await driver.put("big/object", streamOf(data, 1024 * 1024), { sha256: hex });
    const res = await fetch(await driver.presignGet!("big/object", 60));
    expect(res.status).toBe(200);
    expect(new Bun.CryptoHasher("sha256").update(new Uint8Array(await res.arrayBuffer())).digest("hex")).toBe(hex);
    await driver.delete("big/object");
  } finally {
    await driver.close?.();
    await cleanup();
  }
});

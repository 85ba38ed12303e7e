/** s3 plugin regressions found in review: response headers of GetObject served from the local blob store. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { startS3Vault, type S3Vault } from "./s3-env.ts";

let v: S3Vault;
let s3: S3Client;

beforeAll(async () => {
  v = await startS3Vault();
  s3 = v.client();
  await s3.send(new CreateBucketCommand({ Bucket: "review" }));
  await s3.send(new PutObjectCommand({ Bucket: "review", Key: "plain.txt", Body: "plain body\n" }));
  await s3.send(new PutObjectCommand({ Bucket: "review", Key: "named.txt", Body: "named body\n", ContentDisposition: 'attachment; filename="report.txt"' }));
});
afterAll(async () => {
  await v?.stop();
});

test("GetObject never carries Bun's content-disposition filename=<blob hex> (SDK, presigned URL, Range)", async () => {
  const hexName = /filename="?[0-9a-f]{64}"?/;
  const got = await s3.send(new GetObjectCommand({ Bucket: "review", Key: "plain.txt" }));
  expect(await got.Body!.transformToString()).toBe("plain body\n");
  expect(got.ContentDisposition ?? "").not.toMatch(hexName);

  const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket: "review", Key: "plain.txt" }), { expiresIn: 60 });
  const res = await fetch(url);
  expect(res.status).toBe(200);
  expect(await res.text()).toBe("plain body\n");
  expect(res.headers.get("content-disposition") ?? "").not.toMatch(hexName);

  const part = await s3.send(new GetObjectCommand({ Bucket: "review", Key: "plain.txt", Range: "bytes=0-4" }));
  expect(await part.Body!.transformToString()).toBe("plain");
  expect(part.ContentDisposition ?? "").not.toMatch(hexName);
});

test("a stored Content-Disposition and response-content-disposition still win", async () => {
  const named = await s3.send(new GetObjectCommand({ Bucket: "review", Key: "named.txt" }));
  await named.Body!.transformToString();
  expect(named.ContentDisposition).toBe('attachment; filename="report.txt"');
  const over = await s3.send(new GetObjectCommand({ Bucket: "review", Key: "plain.txt", ResponseContentDisposition: 'attachment; filename="x.txt"' }));
  await over.Body!.transformToString();
  expect(over.ContentDisposition).toBe('attachment; filename="x.txt"');
});

test("an s3 repository inherits auth.anonymousRead (default true): anonymous reads work and the boot log warns; anonymousRead: false is quiet and closed", async () => {
  const { spawnVault } = await import("../helpers/vault.ts");
  const open = await spawnVault({ config: { repositories: [{ name: "objects", format: "s3", type: "hosted" }] } });
  const closed = await spawnVault({ config: { repositories: [{ name: "objects", format: "s3", type: "hosted", anonymousRead: false }] } });
  try {
    const warned = (out: string) => out.split("\n").some((l) => l.includes('"level":"warn"') && l.includes("anonymously readable") && l.includes('"repo":"objects"'));
    expect(warned(open.output())).toBe(true);
    expect((await fetch(`${open.url}/objects/`)).status).toBe(200);
    expect(warned(closed.output())).toBe(false);
    const denied = await fetch(`${closed.url}/objects/`);
    expect(denied.status).toBe(403);
    expect(await denied.text()).toContain("<Code>AccessDenied</Code>");
  } finally {
    await Promise.all([open.stop(), closed.stop()]);
  }
}, 60_000);

/** s3 plugin regressions found in review: GetObject headers from the local blob store, anonymous read inherited from auth, uploads cut by the client. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
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

/** `vault_http_requests_total` of the objects repository by status, from the real metrics endpoint. */
async function requestsByStatus(): Promise<Record<string, number>> {
  const text = await (await fetch(`${v.vault.url}/-/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^vault_http_requests_total\{repository="objects",status="(\d+)"\} (\d+)$/gm)) out[m[1]] = Number(m[2]);
  return out;
}

test("an upload the client cuts off mid-body is IncompleteBody (400), not a 500, and stores nothing", async () => {
  const before = await requestsByStatus();
  const url = new URL(await getSignedUrl(s3, new PutObjectCommand({ Bucket: "review", Key: "cut.bin" }), { expiresIn: 60 }));
  const declared = 8 * 1024 * 1024;
  // Raw socket: headers announcing 8 MiB, 1 MiB of body, then the client goes away.
  const sent = Promise.withResolvers<void>();
  const sock = await Bun.connect({
    hostname: "127.0.0.1",
    port: Number(url.port),
    socket: { data() {}, drain() {}, close() {}, error() {} },
  });
  sock.write(`PUT ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Length: ${declared}\r\n\r\n`);
  sock.write(new Uint8Array(1024 * 1024).fill(1));
  sock.flush();
  setTimeout(() => {
    sock.end();
    sent.resolve();
  }, 200);
  await sent.promise;
  // The vault answers (to nobody) once it notices; wait for that request to be counted, bounded.
  const deadline = Date.now() + 10_000;
  let after = await requestsByStatus();
  const total = (m: Record<string, number>) => Object.values(m).reduce((a, b) => a + b, 0);
  while (total(after) <= total(before) && Date.now() < deadline) {
    await Bun.sleep(50);
    after = await requestsByStatus();
  }
  expect(total(after)).toBe(total(before) + 1);
  expect(after["500"] ?? 0).toBe(before["500"] ?? 0);
  expect(after["400"] ?? 0).toBe((before["400"] ?? 0) + 1);
  const err = await s3.send(new HeadObjectCommand({ Bucket: "review", Key: "cut.bin" })).catch((e: Error) => e);
  expect((err as Error).name).toBe("NotFound");
}, 30_000);

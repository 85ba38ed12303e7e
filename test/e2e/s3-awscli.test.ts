/** s3 plugin with the real awscli (Debian's /usr/bin/aws) against the repository's own listener. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startS3Vault, expectNoOrphans, type S3Vault } from "./s3-env.ts";
import { pseudoRandomBytes } from "../conformance/storage.ts";

/** Debian's awscli; a pyenv shim named `aws` may come first on PATH, so the path is fixed. */
const AWS = "/usr/bin/aws";
const missing = existsSync(AWS) ? null : `${AWS} not installed (apt-get install awscli)`;
if (missing && process.env.CI === "true") throw new Error(`CI=true and ${missing}`);

let v: S3Vault;
let env: Record<string, string>;
let work: string;

beforeAll(async () => {
  if (missing) return;
  v = await startS3Vault();
  env = v.env("admin");
  work = join(v.dataDir, "awscli-work");
  mkdirSync(env.HOME, { recursive: true });
  mkdirSync(work, { recursive: true });
  // A lowered multipart threshold forces multipart for the 20 MiB file (5 MiB parts).
  writeFileSync(env.AWS_CONFIG_FILE, "[default]\nregion = us-east-1\ns3 =\n    multipart_threshold = 5MB\n    multipart_chunksize = 5MB\n");
});
afterAll(async () => {
  await v?.stop();
});

/** Runs `aws --endpoint-url <vault> args…`; returns stdout, throws with stderr on a non-zero exit. */
async function aws(args: string[], o: { ok?: boolean } = {}): Promise<{ out: string; err: string; code: number }> {
  const p = Bun.spawn([AWS, "--endpoint-url", v.endpoint, ...args], { env, cwd: work, stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => p.kill(), 120_000);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  if (o.ok !== false && code !== 0) throw new Error(`aws ${args.join(" ")} exited ${code}: ${err}`);
  return { out, err, code };
}

function sha(b: Uint8Array | string): string {
  return new Bun.CryptoHasher("sha256").update(b).digest("hex");
}

(missing ? describe.skip : describe)(`awscli ${missing ?? ""}`, () => {
  test("mb, cp up and down of 20 MiB (multipart), ls", async () => {
    await aws(["s3", "mb", "s3://cli-bucket"]);
    const data = pseudoRandomBytes(20 * 1024 * 1024 + 11, 42);
    writeFileSync(join(work, "big.bin"), data);
    await aws(["s3", "cp", "big.bin", "s3://cli-bucket/dir/big.bin"]);
    const head = JSON.parse((await aws(["s3api", "head-object", "--bucket", "cli-bucket", "--key", "dir/big.bin"])).out);
    expect(head.ContentLength).toBe(data.length);
    expect(head.ETag).toMatch(/^"[0-9a-f]{32}-5"$/); // 5 MiB parts → 5 parts: multipart was used
    await aws(["s3", "cp", "s3://cli-bucket/dir/big.bin", "down.bin"]);
    expect(sha(await Bun.file(join(work, "down.bin")).bytes())).toBe(sha(data));
    const ls = (await aws(["s3", "ls", "s3://cli-bucket/dir/"])).out;
    expect(ls).toContain("big.bin");
    expect(ls).toContain(String(data.length));
    expect((await aws(["s3", "ls"])).out).toContain("cli-bucket");
  }, 120_000);

  test("sync of a directory tree, then s3api list-objects-v2 with a delimiter", async () => {
    for (const f of ["a.txt", "sub/b.txt", "sub/deeper/c.txt", "sub/space name.txt"]) {
      mkdirSync(join(work, "tree", f, ".."), { recursive: true });
      writeFileSync(join(work, "tree", f), `content of ${f}`);
    }
    await aws(["s3", "sync", "tree", "s3://cli-bucket/tree"]);
    const l = JSON.parse((await aws(["s3api", "list-objects-v2", "--bucket", "cli-bucket", "--prefix", "tree/sub/", "--delimiter", "/"])).out);
    expect(l.Contents.map((c: { Key: string }) => c.Key)).toEqual(["tree/sub/b.txt", "tree/sub/space name.txt"]);
    expect(l.CommonPrefixes.map((c: { Prefix: string }) => c.Prefix)).toEqual(["tree/sub/deeper/"]);
    // a second sync uploads nothing
    expect((await aws(["s3", "sync", "tree", "s3://cli-bucket/tree"])).out.trim()).toBe("");
    await aws(["s3", "sync", "s3://cli-bucket/tree", "tree-back"]);
    expect(await Bun.file(join(work, "tree-back", "sub", "deeper", "c.txt")).text()).toBe("content of sub/deeper/c.txt");
  }, 120_000);

  test("s3api copy-object, delete-objects", async () => {
    const c = JSON.parse((await aws(["s3api", "copy-object", "--bucket", "cli-bucket", "--key", "copy.txt", "--copy-source", "cli-bucket/tree/a.txt"])).out);
    expect(c.CopyObjectResult.ETag).toBe(`"${new Bun.CryptoHasher("md5").update("content of a.txt").digest("hex")}"`);
    const d = JSON.parse(
      (await aws(["s3api", "delete-objects", "--bucket", "cli-bucket", "--delete", JSON.stringify({ Objects: [{ Key: "copy.txt" }, { Key: "tree/a.txt" }] })])).out,
    );
    expect(d.Deleted.map((x: { Key: string }) => x.Key).sort()).toEqual(["copy.txt", "tree/a.txt"]);
  }, 120_000);

  test("s3api create-multipart-upload, upload-part, list-parts, abort-multipart-upload", async () => {
    const u = JSON.parse((await aws(["s3api", "create-multipart-upload", "--bucket", "cli-bucket", "--key", "mpu.bin"])).out);
    writeFileSync(join(work, "part1"), "part one bytes");
    const p = JSON.parse((await aws(["s3api", "upload-part", "--bucket", "cli-bucket", "--key", "mpu.bin", "--upload-id", u.UploadId, "--part-number", "1", "--body", "part1"])).out);
    expect(p.ETag).toBe(`"${new Bun.CryptoHasher("md5").update("part one bytes").digest("hex")}"`);
    const lp = JSON.parse((await aws(["s3api", "list-parts", "--bucket", "cli-bucket", "--key", "mpu.bin", "--upload-id", u.UploadId])).out);
    expect(lp.Parts.map((x: { PartNumber: number; Size: number }) => [x.PartNumber, x.Size])).toEqual([[1, 14]]);
    await aws(["s3api", "abort-multipart-upload", "--bucket", "cli-bucket", "--key", "mpu.bin", "--upload-id", u.UploadId]);
    const gone = await aws(["s3api", "list-parts", "--bucket", "cli-bucket", "--key", "mpu.bin", "--upload-id", u.UploadId], { ok: false });
    expect(gone.code).not.toBe(0);
    expect(gone.err).toContain("NoSuchUpload");
  }, 120_000);

  test("aws s3 presign → curl downloads the object", async () => {
    const url = (await aws(["s3", "presign", "s3://cli-bucket/tree/sub/b.txt", "--expires-in", "120"])).out.trim();
    expect(url).toContain("X-Amz-Signature=");
    const p = Bun.spawn(["curl", "-sS", "-f", url], { stdout: "pipe", stderr: "pipe" });
    const [out, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
    expect(code).toBe(0);
    expect(out).toBe("content of sub/b.txt");
  }, 120_000);

  test("rm --recursive, rb; nothing left behind", async () => {
    await aws(["s3", "rm", "s3://cli-bucket", "--recursive"]);
    await aws(["s3", "rb", "s3://cli-bucket"]);
    expect((await aws(["s3", "ls"])).out).not.toContain("cli-bucket");
    expect(expectNoOrphans(v)).toEqual([]);
  }, 120_000);
});

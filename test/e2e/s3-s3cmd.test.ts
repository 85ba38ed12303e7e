/** s3 plugin with the real s3cmd (Debian's) against the repository's own listener: mb, put, get, ls, del, rb. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startS3Vault, expectNoOrphans, KEYS, type S3Vault } from "./s3-env.ts";
import { pseudoRandomBytes } from "../conformance/storage.ts";

const S3CMD = Bun.which("s3cmd");
const missing = S3CMD ? null : "s3cmd not installed (apt-get install s3cmd)";
if (missing && process.env.CI === "true") throw new Error(`CI=true and ${missing}`);

let v: S3Vault;
let cfgFile: string;
let work: string;

beforeAll(async () => {
  if (missing) return;
  v = await startS3Vault();
  work = join(v.dataDir, "s3cmd-work");
  mkdirSync(work, { recursive: true });
  const hostPort = v.endpoint.replace(/^http:\/\//, "");
  cfgFile = join(work, "s3cfg");
  // host_bucket = host_base selects path-style requests.
  writeFileSync(
    cfgFile,
    [
      "[default]",
      `access_key = ${KEYS.admin.id}`,
      `secret_key = ${KEYS.admin.secret}`,
      `host_base = ${hostPort}`,
      `host_bucket = ${hostPort}`,
      "use_https = False",
      "signature_v2 = False",
      "bucket_location = us-east-1",
      "multipart_chunk_size_mb = 15",
      "",
    ].join("\n"),
  );
});
afterAll(async () => {
  await v?.stop();
});

async function s3cmd(args: string[]): Promise<string> {
  const p = Bun.spawn([S3CMD!, "-c", cfgFile, ...args], { cwd: work, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: work }, stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => p.kill(), 120_000);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  if (code !== 0) throw new Error(`s3cmd ${args.join(" ")} exited ${code}: ${err}${out}`);
  return out;
}

(missing ? describe.skip : describe)(`s3cmd ${missing ?? ""}`, () => {
  test("mb, put (small and 20 MiB multipart), ls, get, del, rb; nothing left behind", async () => {
    await s3cmd(["mb", "s3://s3cmd-bucket"]);
    writeFileSync(join(work, "small.txt"), "hello from s3cmd");
    const big = pseudoRandomBytes(20 * 1024 * 1024 + 5, 77);
    writeFileSync(join(work, "big.bin"), big);
    await s3cmd(["put", "small.txt", "s3://s3cmd-bucket/docs/small.txt"]);
    await s3cmd(["put", "big.bin", "s3://s3cmd-bucket/big.bin"]);
    const ls = await s3cmd(["ls", "s3://s3cmd-bucket/"]);
    expect(ls).toContain("s3://s3cmd-bucket/big.bin");
    expect(ls).toContain("s3://s3cmd-bucket/docs/");
    expect(await s3cmd(["ls"])).toContain("s3://s3cmd-bucket");
    await s3cmd(["get", "s3://s3cmd-bucket/docs/small.txt", "small-back.txt"]);
    expect(await Bun.file(join(work, "small-back.txt")).text()).toBe("hello from s3cmd");
    await s3cmd(["get", "s3://s3cmd-bucket/big.bin", "big-back.bin"]);
    const back = await Bun.file(join(work, "big-back.bin")).bytes();
    expect(new Bun.CryptoHasher("sha256").update(back).digest("hex")).toBe(new Bun.CryptoHasher("sha256").update(big).digest("hex"));
    const info = await s3cmd(["info", "s3://s3cmd-bucket/big.bin"]);
    expect(info).toMatch(/MD5 sum:|ETag/);
    await s3cmd(["del", "s3://s3cmd-bucket/docs/small.txt"]);
    await s3cmd(["del", "s3://s3cmd-bucket/big.bin"]);
    expect((await s3cmd(["ls", "s3://s3cmd-bucket/"])).trim()).toBe("");
    await s3cmd(["rb", "s3://s3cmd-bucket"]);
    expect(await s3cmd(["ls"])).not.toContain("s3cmd-bucket");
    expect(expectNoOrphans(v)).toEqual([]);
  }, 120_000);
});

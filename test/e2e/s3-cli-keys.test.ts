/** s3 plugin end to end with the real CLI: access keys made by `vault token create --user U --s3` against a spawned vault; virtual-hosted-style addressing. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { S3Client, CreateBucketCommand, PutObjectCommand, GetObjectCommand, ListBucketsCommand } from "@aws-sdk/client-s3";
import { spawnVault, REPO_ROOT, type SpawnedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { signRequest, EMPTY_SHA256, sha256Hex } from "../../plugins/s3/sigv4.ts";

let v: SpawnedVault;
let configFile: string;
let dataDir: string;

beforeAll(async () => {
  const dir = await tmpDataDir("vault-s3cli-");
  dataDir = join(dir, "data");
  configFile = join(dir, "vault.config.json");
  await Bun.write(
    configFile,
    JSON.stringify({
      auth: { anonymousRead: false },
      repositories: [{ name: "objects", format: "s3", type: "hosted", port: 0, virtualHostDomain: "s3.vault.test" }],
    }),
  );
  v = await spawnVault({ config: configFile, dataDir });
}, 60_000);
afterAll(async () => {
  await v?.stop();
});

async function cli(args: string[]): Promise<string> {
  const p = Bun.spawn([process.execPath, join(REPO_ROOT, "core/cli/bin.ts"), ...args, "--config", configFile, "--data", dataDir], { cwd: REPO_ROOT, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`vault ${args.join(" ")} exited ${code}: ${err}`);
  return out;
}

test("an access key from `vault token create --user bob --s3` works at once; bob's grant decides what he may do", async () => {
  await cli(["user", "add", "bob", "--grant", "objects:write"]);
  const k = JSON.parse(await cli(["token", "create", "--user", "bob", "--s3", "--json"])) as { accessKeyId: string; secretAccessKey: string };
  expect(k.accessKeyId.length).toBeGreaterThan(8);
  const own = v.listeners.find((l) => l.repository === "objects")!;
  const s3 = new S3Client({ endpoint: own.url, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: k.accessKeyId, secretAccessKey: k.secretAccessKey } });
  await s3.send(new CreateBucketCommand({ Bucket: "bobs" }));
  await s3.send(new PutObjectCommand({ Bucket: "bobs", Key: "hello.txt", Body: "from bob" }));
  const g = await s3.send(new GetObjectCommand({ Bucket: "bobs", Key: "hello.txt" }));
  expect(await g.Body!.transformToString()).toBe("from bob");
  expect((await s3.send(new ListBucketsCommand({}))).Buckets!.map((b) => b.Name)).toEqual(["bobs"]);

  // virtual-hosted style: the bucket comes from the Host header (<bucket>.s3.vault.test)
  const url = new URL(`${own.url}/hello.txt`);
  const host = `bobs.s3.vault.test:${own.port}`;
  const h = new Headers({ host });
  const s = signRequest({ method: "GET", url: new URL(`http://${host}/hello.txt`), headers: h, accessKeyId: k.accessKeyId, secret: k.secretAccessKey, payloadHash: EMPTY_SHA256 });
  h.set("authorization", s.authorization);
  const res = await fetch(url, { headers: h });
  expect(res.status).toBe(200);
  expect(await res.text()).toBe("from bob");
  const put = new Headers({ host });
  const ps = signRequest({ method: "PUT", url: new URL(`http://${host}/vh/key.txt`), headers: put, accessKeyId: k.accessKeyId, secret: k.secretAccessKey, payloadHash: sha256Hex("vhost") });
  put.set("authorization", ps.authorization);
  expect((await fetch(`${own.url}/vh/key.txt`, { method: "PUT", headers: put, body: "vhost" })).status).toBe(200);
  const back = await s3.send(new GetObjectCommand({ Bucket: "bobs", Key: "vh/key.txt" }));
  expect(await back.Body!.transformToString()).toBe("vhost");
  s3.destroy();
}, 120_000);

/**
 * Benchmark: GET of a 1 MiB and a 64 MiB object and PUT of a 64 MiB object through the vault's `s3` plugin vs
 * Ceph RGW on the same machine, with the same load generators (wrk with presigned GET URLs; curl with presigned
 * PUT URLs), servers pinned to the same cores. Prints requests/s, MiB/s and the vault/RGW ratios.
 *
 *   bun scripts/bench/s3-get-put.ts [--seconds 10] [--puts 5]
 */
import { S3Client, CreateBucketCommand, PutObjectCommand, GetObjectCommand } from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { startCeph } from "../../test/helpers/ceph.ts";
import { spawnVault } from "../../test/helpers/vault.ts";
import { flag, mib, pinPid, pinned, pinning, printTable, requireWrk, runWrk, tempDir } from "./lib.ts";
import { pseudoRandomBytes } from "../../test/conformance/storage.ts";

const SECONDS = flag("seconds", 10);
const PUTS = flag("puts", 5);
const KEY = { id: "BENCHKEY00000001", secret: "benchSecretKey0000000000000000000000000000" };

requireWrk();
const pin = pinning();
const tmp = await tempDir("vault-s3-bench-");

interface Target {
  name: string;
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  stop(): Promise<void>;
}

async function startTargets(): Promise<Target[]> {
  const ceph = await startCeph();
  try {
    return await startVaultTarget(ceph);
  } catch (e) {
    await ceph.stop();
    throw e;
  }
}

async function startVaultTarget(ceph: Awaited<ReturnType<typeof startCeph>>): Promise<Target[]> {
  for (const pid of ceph.pids) await pinPid(pid, pin.server);
  const vault = await spawnVault({
    config: {
      auth: { anonymousRead: false, admin: { user: "root", password: "bench-password-1" }, accessKeys: [{ id: KEY.id, secret: KEY.secret, user: "root" }] },
      repositories: [{ name: "objects", format: "s3", type: "hosted", port: 0 }],
    },
    dataDir: join(tmp.dir, "vault"),
  });
  await pinPid(vault.pid, pin.server);
  const own = vault.listeners.find((l) => l.repository === "objects");
  if (!own) throw new Error("no s3 listener");
  return [
    { name: "vault s3 plugin", endpoint: own.url, accessKeyId: KEY.id, secretAccessKey: KEY.secret, stop: async () => void (await vault.stop()) },
    { name: "Ceph RGW", endpoint: ceph.endpoint, accessKeyId: ceph.accessKeyId, secretAccessKey: ceph.secretAccessKey, stop: ceph.stop },
  ];
}

function client(t: Target): S3Client {
  return new S3Client({
    endpoint: t.endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: t.accessKeyId, secretAccessKey: t.secretAccessKey },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
}

/** Uploads `file` to a presigned PUT URL with curl (pinned to the client cores); seconds taken. */
async function curlPut(url: string, file: string): Promise<number> {
  const p = Bun.spawn(pinned(pin.client, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", "-X", "PUT", "-H", "Expect:", "--data-binary", `@${file}`, url]), { stdout: "pipe" });
  const out = (await new Response(p.stdout).text()).trim().split(" ");
  await p.exited;
  if (out[0] !== "200") throw new Error(`PUT answered ${out[0]}`);
  return Number(out[1]);
}

const small = pseudoRandomBytes(1024 * 1024, 1);
const large = pseudoRandomBytes(64 * 1024 * 1024, 2);
const largeFile = join(tmp.dir, "large.bin");
writeFileSync(largeFile, pseudoRandomBytes(64 * 1024 * 1024, 3));

const results: Record<string, { get1: number; get64: number; put64: number }> = {};
const targets = await startTargets();
try {
  for (const t of targets) {
    const c = client(t);
    await c.send(new CreateBucketCommand({ Bucket: "bench" }));
    await c.send(new PutObjectCommand({ Bucket: "bench", Key: "small.bin", Body: small }));
    await c.send(new PutObjectCommand({ Bucket: "bench", Key: "large.bin", Body: large }));
    const u1 = await getSignedUrl(c, new GetObjectCommand({ Bucket: "bench", Key: "small.bin" }), { expiresIn: 3600 });
    const u64 = await getSignedUrl(c, new GetObjectCommand({ Bucket: "bench", Key: "large.bin" }), { expiresIn: 3600 });
    const g1 = await runWrk({ url: u1, connections: 8, seconds: SECONDS, pin });
    const g64 = await runWrk({ url: u64, connections: 2, seconds: SECONDS, pin });
    let putSeconds = 0;
    for (let i = 0; i < PUTS; i++) {
      const url = await getSignedUrl(c, new PutObjectCommand({ Bucket: "bench", Key: `put-${i}.bin` }), { expiresIn: 3600 });
      putSeconds += await curlPut(url, largeFile);
    }
    results[t.name] = { get1: g1.requestsPerSecond, get64: g64.bytesPerSecond, put64: (PUTS * 64 * 1024 * 1024) / putSeconds };
    c.destroy();
  }
} finally {
  for (const t of targets) await t.stop().catch(() => {});
  await tmp.remove();
}

const v = results["vault s3 plugin"];
const r = results["Ceph RGW"];
console.log(`\ns3 GET/PUT, ${SECONDS}s wrk runs (server cores ${pin.server ?? "all"}, client cores ${pin.client ?? "all"}), ${PUTS} curl PUTs of 64 MiB\n`);
printTable([
  ["", "GET 1 MiB (req/s)", "GET 64 MiB (MiB/s)", "PUT 64 MiB (MiB/s)"],
  ["vault s3 plugin", v.get1.toFixed(0), (v.get64 / 1048576).toFixed(0), (v.put64 / 1048576).toFixed(0)],
  ["Ceph RGW", r.get1.toFixed(0), (r.get64 / 1048576).toFixed(0), (r.put64 / 1048576).toFixed(0)],
  ["vault / RGW", (v.get1 / r.get1).toFixed(2) + "×", (v.get64 / r.get64).toFixed(2) + "×", (v.put64 / r.put64).toFixed(2) + "×"],
]);
console.log(`\n(1 MiB = ${mib(small.length)}; target: vault ≥ 1× RGW on GET)`);
process.exit(0);

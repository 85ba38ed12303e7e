/**
 * Several nodes (DESIGN.md §7): two `vault serve` processes with different data directories share one Postgres
 * (metadata) and one Ceph RGW bucket (blobs). Each serves what the other stored (an http proxy cache, a PyPI upload, an
 * OCI push, an S3 multipart upload whose parts went to both nodes); racing misses of one file on both nodes end as one
 * row whose blob has the right reference count, at the cost of at most one upstream request per node (single-flight is
 * per node: docs/metadata-postgres.md); `vault user` and `vault gc` work on the Postgres database.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { S3Client, CreateBucketCommand, CreateMultipartUploadCommand, UploadPartCommand, CompleteMultipartUploadCommand, GetObjectCommand } from "@aws-sdk/client-s3";
import { awaitCachedHit, spawnVault, REPO_ROOT, type SpawnedVault } from "../helpers/vault.ts";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { startPostgres, requirePostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startCeph, cephMissing, type CephRgw } from "../helpers/ceph.ts";
import { buildWheel } from "../helpers/pypi-index.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { twineUploadForm } from "../helpers/python.ts";
import type { VaultConfig } from "../../core/config/types.ts";

const ceph = cephMissing();
if (ceph && process.env.CI === "true") throw new Error(`CI=true and Ceph RGW is missing: ${ceph}`);
if (ceph) console.warn(`skipping the two-node test: ${ceph}`);
const run = !ceph && requirePostgres();

const MIB = 1024 * 1024;
const sha = (b: Uint8Array | string) => new Bun.CryptoHasher("sha256").update(b).digest("hex");
const bytes = (n: number, seed: number) => new Uint8Array(n).map((_, i) => (i * seed + (i >> 9)) & 0xff);
const big = bytes(6 * MIB, 31);
const small = bytes(2 * MIB + 17, 7);
const ADMIN = { user: "root", password: "root-password-123" };
const KEY = { id: "VAULTNODESKEY0000001", secret: "nodesSecretKey00000000000000000000000000", user: "root" };
const basic = { authorization: "Basic " + btoa(`${ADMIN.user}:${ADMIN.password}`) };

describe.if(run)("two vault nodes on one Postgres and one Ceph RGW bucket", () => {
  let pg: TestPostgres;
  let rgw: CephRgw;
  let up: TestUpstream;
  let configFile: string;
  let a: SpawnedVault;
  let b: SpawnedVault;
  let sql: Bun.SQL;

  beforeAll(async () => {
    [pg, rgw, up] = await Promise.all([
      startPostgres(),
      startCeph(),
      startUpstream({
        handler: (req) => {
          const p = new URL(req.url).pathname;
          if (p === "/big.bin") return new Response(big, { headers: { "content-type": "application/octet-stream" } });
          if (p === "/small.bin") return new Response(small, { headers: { "content-type": "application/octet-stream" } });
          return undefined;
        },
      }),
    ]);
    const s3 = new S3Client({ endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey } });
    await s3.send(new CreateBucketCommand({ Bucket: "vault-nodes" }));
    s3.destroy();
    const config: VaultConfig = {
      metadata: { driver: "postgres", url: "${VAULT_PG_URL}" },
      storage: { driver: "s3", endpoint: rgw.endpoint, region: rgw.region, bucket: "vault-nodes", pathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey, prefix: "vault/" },
      auth: { anonymousRead: true, admin: ADMIN, accessKeys: [KEY] },
      repositories: [
        { name: "files", format: "http", type: "proxy", upstream: up.url + "/" },
        { name: "pypi-local", format: "pypi", type: "hosted" },
        { name: "oci-local", format: "oci", type: "hosted" },
        { name: "objects", format: "s3", type: "hosted", buckets: [{ name: "shared", owner: "root" }] },
      ],
    };
    configFile = join(await tmpDataDir("vault-nodes-config-"), "vault.config.json");
    await Bun.write(configFile, JSON.stringify(config, null, 2));
    const env = { VAULT_PG_URL: pg.url };
    // both nodes start at once: migrations, admin bootstrap and configured access keys and buckets race
    [a, b] = await Promise.all([spawnVault({ config: configFile, env }), spawnVault({ config: configFile, env })]);
    sql = new Bun.SQL(pg.url, { max: 2 });
  }, 240_000);

  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await sql?.close();
    await Promise.all([pg?.stop(), rgw?.stop(), up?.stop()]);
  });

  /** The first row of a query. */
  const one = async <T>(q: Promise<unknown>): Promise<T> => ((await q) as T[])[0];

  test("both nodes are ready on the shared database; one admin, one access key, one configured bucket", async () => {
    for (const v of [a, b]) expect((await fetch(`${v.url}/-/ready`)).status).toBe(200);
    expect(a.dataDir).not.toBe(b.dataDir);
    expect(await one(sql`SELECT count(*)::int AS n FROM users WHERE name = ${ADMIN.user}`)).toEqual({ n: 1 });
    expect(await one(sql`SELECT count(*)::int AS n FROM api_tokens WHERE id = ${KEY.id}`)).toEqual({ n: 1 });
    expect(await one(sql`SELECT count(*)::int AS n FROM drizzle.__drizzle_migrations`)).toEqual({ n: 1 });
    const buckets = await fetch(`${b.url}/objects/shared?list-type=2`);
    expect(buckets.status).toBeLessThan(500);
    expect(await one(sql`SELECT count(*)::int AS n FROM s3_buckets WHERE name = 'shared'`)).toEqual({ n: 1 });
  });

  test("a file cached through one node is a HIT on the other (blob in the shared bucket)", async () => {
    const r1 = await fetch(`${a.url}/files/big.bin`);
    expect(r1.headers.get("x-vault-cache")).toBe("MISS");
    expect(sha(new Uint8Array(await r1.arrayBuffer()))).toBe(sha(big));
    const hit = await awaitCachedHit(`${b.url}/files/big.bin`);
    expect(hit?.headers.get("x-vault-cache")).toBe("HIT");
    expect(sha(new Uint8Array(await hit!.arrayBuffer()))).toBe(sha(big));
    expect(up.count("/big.bin")).toBe(1);
  });

  test("racing misses of one file on both nodes: one row, reference count 1, at most one upstream request per node", async () => {
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => fetch(`${(i % 2 ? b : a).url}/files/small.bin`).then(async (r) => sha(new Uint8Array(await r.arrayBuffer())))),
    );
    for (const h of results) expect(h).toBe(sha(small));
    const n = up.count("/small.bin");
    expect(n).toBeGreaterThanOrEqual(1);
    expect(n).toBeLessThanOrEqual(2);
    const digest = `sha256:${sha(small)}`;
    expect(await one(sql`SELECT count(*)::int AS n FROM artifacts WHERE repository = 'files' AND path = 'small.bin'`)).toEqual({ n: 1 });
    expect(await one(sql`SELECT ref_count::int AS r FROM blobs WHERE digest = ${digest}`)).toEqual({ r: 1 });
    // every blob's count equals the rows pointing at it
    const wrong = await sql`SELECT b.digest, b.ref_count, count(a.path)::int AS rows FROM blobs b LEFT JOIN artifacts a ON a.blob_digest = b.digest GROUP BY b.digest, b.ref_count HAVING b.ref_count <> count(a.path)`;
    expect([...wrong]).toEqual([]);
    for (const v of [a, b]) {
      const r = await fetch(`${v.url}/files/small.bin`);
      expect(r.headers.get("x-vault-cache")).toBe("HIT");
      expect(sha(new Uint8Array(await r.arrayBuffer()))).toBe(sha(small));
    }
    expect(up.count("/small.bin")).toBe(n);
  });

  test("a PyPI upload to one node is listed and served by the other", async () => {
    const whl = buildWheel("nodes_demo", "1.0");
    const form = twineUploadForm({ name: "nodes-demo", version: "1.0", filename: "nodes_demo-1.0-py3-none-any.whl", bytes: whl });
    const put = await fetch(`${a.url}/pypi-local/`, { method: "POST", body: form, headers: basic });
    expect(put.status).toBe(200);
    const page = await fetch(`${b.url}/pypi-local/simple/nodes-demo/`, { headers: { accept: "application/vnd.pypi.simple.v1+json" } });
    expect(page.status).toBe(200);
    const doc = (await page.json()) as { files: { filename: string; url: string; hashes: { sha256: string } }[] };
    expect(doc.files.map((f) => f.filename)).toEqual(["nodes_demo-1.0-py3-none-any.whl"]);
    expect(doc.files[0].hashes.sha256).toBe(sha(whl));
    const file = await fetch(new URL(doc.files[0].url, `${b.url}/pypi-local/simple/nodes-demo/`));
    expect(sha(new Uint8Array(await file.arrayBuffer()))).toBe(sha(whl));
  });

  test("an OCI image pushed to one node is pulled from the other", async () => {
    const layer = bytes(300_000, 11);
    const config = new TextEncoder().encode(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } }));
    for (const blob of [layer, config]) {
      const post = await fetch(`${a.url}/v2/oci-local/app/blobs/uploads/`, { method: "POST", headers: basic });
      expect(post.status).toBe(202);
      const loc = new URL(post.headers.get("location")!, a.url);
      loc.searchParams.set("digest", `sha256:${sha(blob)}`);
      const put = await fetch(loc, { method: "PUT", body: blob as BodyInit, headers: { ...basic, "content-type": "application/octet-stream" } });
      expect(put.status).toBe(201);
    }
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: `sha256:${sha(config)}`, size: config.length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: `sha256:${sha(layer)}`, size: layer.length }],
    });
    const mput = await fetch(`${a.url}/v2/oci-local/app/manifests/v1`, { method: "PUT", body: manifest, headers: { ...basic, "content-type": "application/vnd.oci.image.manifest.v1+json" } });
    expect(mput.status).toBe(201);
    const m = await fetch(`${b.url}/v2/oci-local/app/manifests/v1`, { headers: { accept: "application/vnd.oci.image.manifest.v1+json" } });
    expect(m.status).toBe(200);
    expect(m.headers.get("docker-content-digest")).toBe(`sha256:${sha(manifest)}`);
    expect(await m.text()).toBe(manifest);
    const l = await fetch(`${b.url}/v2/oci-local/app/blobs/sha256:${sha(layer)}`);
    expect(l.status).toBe(200);
    expect(sha(new Uint8Array(await l.arrayBuffer()))).toBe(sha(layer));
    const tags = await fetch(`${b.url}/v2/oci-local/app/tags/list`);
    expect(await tags.json()).toEqual({ name: "oci-local/app", tags: ["v1"] });
  });

  test("an S3 multipart upload whose parts go to both nodes completes, and either node serves the object", async () => {
    const client = (v: SpawnedVault) =>
      new S3Client({ endpoint: `${v.url}/objects`, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: KEY.id, secretAccessKey: KEY.secret } });
    const [ca, cb] = [client(a), client(b)];
    try {
      const p1 = bytes(5 * MIB, 3);
      const p2 = bytes(1 * MIB + 5, 5);
      const { UploadId } = await ca.send(new CreateMultipartUploadCommand({ Bucket: "shared", Key: "dir/obj.bin" }));
      const e1 = await cb.send(new UploadPartCommand({ Bucket: "shared", Key: "dir/obj.bin", UploadId, PartNumber: 1, Body: p1 }));
      const e2 = await ca.send(new UploadPartCommand({ Bucket: "shared", Key: "dir/obj.bin", UploadId, PartNumber: 2, Body: p2 }));
      await cb.send(
        new CompleteMultipartUploadCommand({ Bucket: "shared", Key: "dir/obj.bin", UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: e1.ETag }, { PartNumber: 2, ETag: e2.ETag }] } }),
      );
      const whole = new Uint8Array([...p1, ...p2]);
      for (const c of [ca, cb]) {
        const got = await c.send(new GetObjectCommand({ Bucket: "shared", Key: "dir/obj.bin" }));
        expect(sha(await got.Body!.transformToByteArray())).toBe(sha(whole));
      }
      expect(await one(sql`SELECT count(*)::int AS n FROM s3_uploads`)).toEqual({ n: 0 });
      expect(await one(sql`SELECT count(*)::int AS n FROM s3_parts`)).toEqual({ n: 0 });
    } finally {
      ca.destroy();
      cb.destroy();
    }
  });

  test("vault user and vault gc work against the Postgres database", async () => {
    const cli = (args: string[], input?: string) =>
      Bun.spawn([process.execPath, join(REPO_ROOT, "core/cli/bin.ts"), ...args, "--config", configFile], {
        cwd: REPO_ROOT,
        env: { ...process.env, VAULT_PG_URL: pg.url },
        stdin: input === undefined ? "ignore" : new Blob([input]),
        stdout: "pipe",
        stderr: "pipe",
      });
    const add = cli(["user", "add", "nodeuser", "--password-stdin"], "node-user-password\n");
    expect(await add.exited).toBe(0);
    const grant = cli(["user", "grant", "nodeuser", "pypi-local", "write"]);
    expect(await grant.exited).toBe(0);
    // the new user authenticates on both running nodes at once
    for (const v of [a, b]) {
      const r = await fetch(`${v.url}/pypi-local/`, { method: "POST", body: new FormData(), headers: { authorization: "Basic " + btoa("nodeuser:node-user-password") } });
      expect(r.status).toBe(400); // authenticated and allowed; the empty form is refused
    }
    const gc = cli(["gc", "--data", a.dataDir, "--min-age-minutes", "60"]);
    const [out, code] = await Promise.all([new Response(gc.stdout).text(), gc.exited]);
    expect(code).toBe(0);
    expect(out).toContain("removed 0 temp files and 0 blobs");
  });
});

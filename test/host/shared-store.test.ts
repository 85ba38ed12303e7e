/**
 * Two `vault serve` processes sharing one data directory (SQLite in WAL mode, the fs store and its spool): the second
 * one's start-up cleaning leaves the first one's in-flight download alone; each answers what the other stored; racing
 * misses of one file end as one row and one blob with the right reference count. Single-flight is per process, so
 * such a race costs at most one upstream request per process.
 */
import { afterAll, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { awaitCachedHit, spawnVault, type SpawnedVault } from "../helpers/vault.ts";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

const MIB = 1024 * 1024;
const big = new Uint8Array(12 * MIB).map((_, i) => (i * 31 + (i >> 12)) & 0xff);
const small = new Uint8Array(3 * MIB).map((_, i) => (i * 17 + (i >> 10)) & 0xff);
const sha = (b: Uint8Array) => new Bun.CryptoHasher("sha256").update(b).digest("hex");

let up: TestUpstream;
const vaults: SpawnedVault[] = [];
afterAll(async () => {
  for (const v of vaults) await v.stop();
  await up?.stop();
});

test("a second process sharing the store starts without touching the first one's download; both serve every entry", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  up = await startUpstream({
    handler: (req) => {
      const p = new URL(req.url).pathname;
      const headers = { "content-type": "application/octet-stream" };
      if (p === "/big.bin")
        return new Response(
          new ReadableStream({
            async start(c) {
              c.enqueue(big.slice(0, 2 * MIB));
              await gate;
              c.enqueue(big.slice(2 * MIB));
              c.close();
            },
          }),
          { headers: { ...headers, "content-length": String(big.length) } },
        );
      if (p === "/small.bin") return new Response(small, { headers });
      return undefined;
    },
  });
  const dataDir = await tmpDataDir("vault-shared-");
  const config = { repositories: [{ name: "files", format: "http", type: "proxy" as const, upstream: up.url + "/" }] };
  const a = await spawnVault({ config, dataDir });
  vaults.push(a);

  // A starts filling big.bin and has spooled part of it
  const resA = await fetch(`${a.url}/files/big.bin`);
  expect(resA.headers.get("x-vault-cache")).toBe("MISS");
  const reader = resA.body!.getReader();
  const chunks: Uint8Array[] = [];
  let got = 0;
  while (got < MIB) {
    const { value, done } = await reader.read();
    if (done) throw new Error("ended early");
    chunks.push(value);
    got += value.length;
  }
  const spool = join(dataDir, "store", "tmp");
  const inFlight = readdirSync(spool);
  expect(inFlight.length).toBe(1);

  // B starts on the same data dir: its start-up cleaning must keep A's spool file
  const b = await spawnVault({ config, dataDir });
  vaults.push(b);
  expect(readdirSync(spool)).toEqual(inFlight);

  // A's download completes, whole and right, and is stored
  release();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
  }
  const whole = Buffer.concat(chunks);
  expect(whole.length).toBe(big.length);
  expect(sha(whole)).toBe(sha(big));

  // B answers it from the shared store (the row may land just after A's last byte: bounded wait for the HIT)
  const hit = await awaitCachedHit(`${b.url}/files/big.bin`);
  expect(hit?.headers.get("x-vault-cache")).toBe("HIT");
  expect(sha(new Uint8Array(await hit!.arrayBuffer()))).toBe(sha(big));
  expect(up.count("/big.bin")).toBe(1);
});

test("racing misses of one file on both processes: one row, one blob, reference count 1, at most one upstream request each", async () => {
  const [a, b] = vaults;
  const results = await Promise.all(
    Array.from({ length: 6 }, (_, i) => fetch(`${(i % 2 ? b : a).url}/files/small.bin`).then(async (r) => sha(new Uint8Array(await r.arrayBuffer())))),
  );
  for (const h of results) expect(h).toBe(sha(small));
  const n = up.count("/small.bin");
  expect(n).toBeGreaterThanOrEqual(1);
  expect(n).toBeLessThanOrEqual(2);
  const db = new Database(join(a.dataDir, "vault.db"), { readonly: true });
  try {
    const digest = `sha256:${sha(small)}`;
    for (const t0 = Date.now(); !db.query("SELECT 1 FROM artifacts WHERE path = 'small.bin'").get(); await Bun.sleep(20))
      if (Date.now() - t0 > 10_000) throw new Error("small.bin was never recorded");
    expect(db.query("SELECT count(*) AS n FROM artifacts WHERE path = 'small.bin'").get()).toEqual({ n: 1 });
    expect(db.query("SELECT ref_count AS r FROM blobs WHERE digest = ?").get(digest)).toEqual({ r: 1 });
  } finally {
    db.close();
  }
  // both still serve it, from the store
  for (const v of [a, b]) {
    const r = await fetch(`${v.url}/files/small.bin`);
    expect(r.headers.get("x-vault-cache")).toBe("HIT");
    expect(sha(new Uint8Array(await r.arrayBuffer()))).toBe(sha(small));
  }
  expect(up.count("/small.bin")).toBe(n);
});

/** kill -9 of the real `vault serve` in the middle of a large download: after a restart the store is consistent and the file is fetched again, whole. */
import { expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { spawnVault } from "../helpers/vault.ts";
import { startUpstream } from "../helpers/upstream.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

const SIZE = 24 * 1024 * 1024;

/** Deterministic bytes (xorshift), so a wrong or partial file cannot match by accident. */
function payload(size: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  let x = 0x9e3779b9;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Every file under `dir` (relative paths), or [] when it does not exist. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => join(d.parentPath, d.name).slice(dir.length + 1));
}

test("kill -9 mid-download: no visible partial blob, no artifacts row, spool cleaned at restart, refetched whole", async () => {
  const bytes = payload(SIZE);
  const digest = new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
  let release!: () => void;
  const stalled = new Promise<void>((r) => (release = r));
  let firstServed = false;
  const up = await startUpstream({
    handler: (req) => {
      if (new URL(req.url).pathname !== "/dist/big.tar.gz") return undefined;
      const headers = { "content-length": String(SIZE), "content-type": "application/gzip" };
      if (firstServed) return new Response(bytes, { headers });
      firstServed = true;
      // first download: 4 MiB, then stall until the test is done with the crashed vault
      return new Response(
        new ReadableStream({
          async start(c) {
            c.enqueue(bytes.slice(0, 4 * 1024 * 1024));
            await stalled;
            c.error(new Error("upstream gave up"));
          },
        }),
        { headers },
      );
    },
  });
  const dataDir = await tmpDataDir("vault-crash-");
  const config = { repositories: [{ name: "apache", format: "http", type: "proxy" as const, upstream: up.url + "/dist/" }] };
  const store = join(dataDir, "store");
  try {
    // 1. a client starts the download; wait until the vault has spooled part of it
    const v1 = await spawnVault({ config, dataDir });
    const res = await fetch(`${v1.url}/apache/big.tar.gz`);
    expect(res.status).toBe(200);
    expect(res.headers.get("x-vault-cache")).toBe("MISS");
    const reader = res.body!.getReader();
    let received = 0;
    while (received < 1024 * 1024) {
      const { value, done } = await reader.read();
      if (done) throw new Error("body ended early");
      received += value.length;
    }
    expect(filesUnder(join(store, "tmp")).length).toBeGreaterThan(0); // the spool file of the fill

    // 2. crash
    v1.kill9();
    expect(await v1.exited).not.toBe(0);
    await reader.cancel().catch(() => {});

    // 3. the crashed store: nothing visible — no blob, no artifacts row — only the orphan spool file
    expect(filesUnder(join(store, "blobs"))).toEqual([]);
    const db = new Database(join(dataDir, "vault.db"), { readonly: true });
    try {
      expect(db.query("SELECT count(*) AS n FROM artifacts").get()).toEqual({ n: 0 });
      expect(db.query("SELECT count(*) AS n FROM blobs WHERE ref_count > 0").get()).toEqual({ n: 0 });
    } finally {
      db.close();
    }

    // 4. restart on the same data dir: start-up removes the orphan spool files
    const v2 = await spawnVault({ config, dataDir });
    try {
      expect(filesUnder(join(store, "tmp"))).toEqual([]);
      // 5. the file is fetched again, completely and correctly
      const again = await fetch(`${v2.url}/apache/big.tar.gz`);
      expect(again.status).toBe(200);
      const body = new Uint8Array(await again.arrayBuffer());
      expect(body.length).toBe(SIZE);
      expect(new Bun.CryptoHasher("sha256").update(body).digest("hex")).toBe(digest);
      expect(up.count("/dist/big.tar.gz")).toBe(2);
      // and is then a hit, stored once under its digest. The fill commits its row just after the last byte reached
      // the client, so wait for the row (bounded poll of the database) before asking again.
      const check = new Database(join(dataDir, "vault.db"), { readonly: true });
      try {
        for (const t0 = Date.now(); !check.query("SELECT 1 FROM artifacts WHERE path = 'big.tar.gz'").get(); ) {
          if (Date.now() - t0 > 10_000) throw new Error("the refetched file was never recorded");
          await Bun.sleep(20);
        }
      } finally {
        check.close();
      }
      const hit = await fetch(`${v2.url}/apache/big.tar.gz`);
      expect(hit.headers.get("x-vault-cache")).toBe("HIT");
      expect(new Uint8Array(await hit.arrayBuffer()).length).toBe(SIZE);
      expect(up.count("/dist/big.tar.gz")).toBe(2);
      expect(filesUnder(join(store, "blobs"))).toEqual([join("sha256", digest.slice(0, 2), digest)]);
    } finally {
      expect(await v2.stop()).toBe(0);
    }
  } finally {
    release();
    await up.stop();
  }
}, 90_000);

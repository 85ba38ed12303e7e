/**
 * Downloads hashed on the tail-hash thread (core/cache/tail-hash.ts) instead of the event loop: the same guarantees
 * as inline hashing (right digest stored, mismatch or abort never stored, nothing left in the spool), forced on
 * whatever the machine's core count.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { appendFile, mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { cacheFixture, drainBody, gatedBody, sha256, type CacheFixture } from "./fixture.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { tailHash } from "../../core/cache/tail-hash.ts";

let fx: CacheFixture | undefined;
afterEach(async () => {
  await fx?.stop();
  fx = undefined;
});

const MIB = 1024 * 1024;

describe("tailHash()", () => {
  test("hashes a file while it grows, from progress reports, to the same digest as hashing it whole", async () => {
    const dir = await tmpDataDir("vault-tailhash-");
    const path = join(dir, "growing.part");
    await writeFile(path, new Uint8Array(0));
    const parts = Array.from({ length: 9 }, (_, i) => new Uint8Array(randomBytes(300_000 + i * 7919)));
    const h = tailHash(path);
    let size = 0;
    for (const p of parts) {
      await appendFile(path, p);
      size += p.byteLength;
      h.progress(size);
    }
    const all = Buffer.concat(parts);
    expect(await h.end(size)).toBe(sha256(all));
  });

  test("many files at once on the one thread; a job that is aborted answers nothing and disturbs no other", async () => {
    const dir = await tmpDataDir("vault-tailhash-");
    const bodies = Array.from({ length: 12 }, () => new Uint8Array(randomBytes(2 * MIB + 17)));
    await Promise.all(bodies.map((b, i) => writeFile(join(dir, `f${i}`), b)));
    const jobs = bodies.map((_, i) => tailHash(join(dir, `f${i}`)));
    jobs[3].progress(MIB);
    jobs[3].abort();
    for (const [i, j] of jobs.entries()) if (i !== 3) j.progress(MIB);
    const got = await Promise.all(jobs.map((j, i) => (i === 3 ? null : j.end(bodies[i].byteLength))));
    got.forEach((hex, i) => {
      if (i !== 3) expect(hex).toBe(sha256(bodies[i]));
    });
  });

  test("a file shorter than announced, or missing, is an error naming why", async () => {
    const dir = await tmpDataDir("vault-tailhash-");
    await writeFile(join(dir, "short"), new Uint8Array(1000));
    await expect(tailHash(join(dir, "short")).end(5000)).rejects.toThrow(/file ended at 1000 bytes, 5000 were announced/);
    await expect(tailHash(join(dir, "nope")).end(10)).rejects.toThrow(/ENOENT|no such file/i);
  });

  test("the file may be renamed or unlinked after the job opened it", async () => {
    const dir = await tmpDataDir("vault-tailhash-");
    const body = new Uint8Array(randomBytes(3 * MIB));
    await writeFile(join(dir, "a"), body);
    const h = tailHash(join(dir, "a"));
    h.progress(MIB);
    // The open message is handled before anything posted after it: a round trip through another job proves it ran.
    await tailHash(join(dir, "a")).end(0);
    await rm(join(dir, "a"));
    expect(await h.end(body.byteLength)).toBe(sha256(body));
  });
});

describe("cache engine with tailHash: true", () => {
  async function rootWith(files: Record<string, Uint8Array>): Promise<string> {
    const root = await tmpDataDir("vault-upstream-");
    for (const [p, body] of Object.entries(files)) {
      await mkdir(join(root, p, ".."), { recursive: true });
      await writeFile(join(root, p), body);
    }
    return root;
  }

  test("a large miss is stored under its sha256; followers and the next HIT get identical bytes", async () => {
    const body = new Uint8Array(randomBytes(24 * MIB + 123));
    fx = await cacheFixture({ tailHash: true, upstream: { root: await rootWith({ "big.bin": body }) } });
    const results = await Promise.all(Array.from({ length: 5 }, () => fetch(`${fx!.url}/big.bin`).then(drainBody)));
    for (const r of results) expect({ size: r.size, sha256: r.sha256 }).toEqual({ size: body.byteLength, sha256: sha256(body) });
    expect(fx.up.count("/big.bin")).toBe(1);
    const entry = await fx.artifacts.get("big.bin");
    expect(entry?.blobDigest).toBe("sha256:" + sha256(body));
    const hit = await fetch(`${fx.url}/big.bin`);
    expect(hit.headers.get("x-vault-cache")).toBe("HIT");
    expect((await drainBody(hit)).sha256).toBe(sha256(body));
    expect(await fx.spoolFiles()).toEqual([]);
  });

  test("a large file failing its expected digest is cut and never stored", async () => {
    const body = new Uint8Array(randomBytes(4 * MIB));
    fx = await cacheFixture({ tailHash: true, upstream: { root: await rootWith({ "bad.bin": body }) }, spec: () => ({ expect: { sha256: "0".repeat(64) } }) });
    const r = await fetch(`${fx.url}/bad.bin`).catch((e: Error) => e);
    if (r instanceof Response) await expect(drainBody(r)).rejects.toBeDefined();
    await fx.engine.drain(5000);
    expect(await fx.artifacts.get("bad.bin")).toBeNull();
    expect(await fx.spoolFiles()).toEqual([]);
  });

  test("upstream cut mid-body: no entry, no spool file, the next request refetches", async () => {
    const chunks = Array.from({ length: 16 }, () => new Uint8Array(randomBytes(256 * 1024)));
    const g = gatedBody(chunks);
    let calls = 0;
    fx = await cacheFixture({
      tailHash: true,
      upstream: {
        handler: (req) => {
          if (new URL(req.url).pathname !== "/cut.bin") return undefined;
          calls++;
          return new Response(calls === 1 ? g.body : Buffer.concat(chunks), { headers: { "content-length": String(16 * 256 * 1024) } });
        },
      },
    });
    // Cut before the vault announced the response: a clean 503; after: a 200 whose body is cut. Never a clean 200.
    const first = fetch(`${fx.url}/cut.bin`).then(async (r) => (r.status === 200 ? await drainBody(r).catch((e: Error) => e) : r.status), (e: Error) => e);
    g.release(8);
    await g.sent(8);
    g.abort();
    const outcome = await first;
    if (typeof outcome === "number") expect(outcome).toBe(503);
    else expect(outcome).toBeInstanceOf(Error);
    await fx.engine.drain(5000);
    expect(await fx.artifacts.get("cut.bin")).toBeNull();
    expect(await fx.spoolFiles()).toEqual([]);
    const again = await drainBody(await fetch(`${fx.url}/cut.bin`));
    expect(again.sha256).toBe(sha256(Buffer.concat(chunks)));
    expect(calls).toBe(2);
    expect((await fx.artifacts.get("cut.bin"))?.blobDigest).toBe("sha256:" + sha256(Buffer.concat(chunks)));
  });
});

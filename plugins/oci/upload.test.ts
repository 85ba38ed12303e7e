// UploadManager against a real metadata database (SQLite, and Postgres) and real files: two managers on one database and spool directory stand
// for two vault processes (each has its own hashes and request queues, as processes do); a fresh manager stands for a
// restarted process. Covers shared sessions, the writer claim and 416 on conflicts, takeover of a dead writer, the
// digest paths, idle collection and stray files, and the core's temp cleaning leaving session files alone.
import { beforeEach, describe, expect, test } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import { first, tablesOf, type OpenDb, type Tables } from "../../core/db/index.ts";
import { silentLogger } from "../../core/log.ts";
import { TEMP_OWNER, VaultError } from "../../core/plugin.ts";
import { createFsDriver } from "../../core/storage/fs.ts";
import { tmpDataDir } from "../../test/helpers/tmp.ts";
import { metadataDrivers, useMetadata } from "../../test/helpers/metadata.ts";
import { STRAY_MIN_AGE_MS, UPLOAD_DIR, UploadManager, WRITER_LEASE_MS, writerStale } from "./upload.ts";

const HOST = TEMP_OWNER.split("~")[1];
const sha = (b: Uint8Array) => "sha256:" + new Bun.CryptoHasher("sha256").update(b).digest("hex");
const bytes = (n: number, seed: number) => new Uint8Array(n).map((_, i) => (i * seed + (i >> 7)) & 0xff);
const stream = (b: Uint8Array) => new Response(b as BodyInit).body!;

/** The VaultError `fn` rejects with (fails the test when it resolves). */
async function rejection(p: Promise<unknown>): Promise<VaultError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof VaultError) return e;
    throw e;
  }
  throw new Error("expected a rejection");
}

let db: OpenDb;
let ociUploads: Tables["ociUploads"];
let spool: string;
let a: UploadManager;
let b: UploadManager;

const manager = (repository = "hosted") => new UploadManager({ db: db.db, repository, spoolDir: () => spool, log: silentLogger });
const row = async (id: string) => first(await db.db.select().from(ociUploads).where(eq(ociUploads.id, id)));

/** Appends `chunk` through `m` (claim, append, release), with an optional Content-Range start. */
async function append(m: UploadManager, id: string, chunk: Uint8Array, start?: number): Promise<number> {
  const s = await m.get(id, "app");
  const range = start === undefined ? null : { start, end: start + chunk.length - 1 };
  return m.locked(s, (c) => m.append(c, stream(chunk), range, chunk.length));
}

for (const driver of metadataDrivers()) describe(`UploadManager (${driver})`, () => {
  const md = useMetadata(driver);
  beforeEach(async () => {
    const dir = await tmpDataDir("oci-upload-");
    db = await md.open();
    ociUploads = tablesOf(db.db).ociUploads;
    spool = join(dir, "store", "tmp");
    a = manager();
    b = manager();
  });

  test("a session is a row and a file outside the temp marker's reach; every manager on the database sees it", async () => {
    const s = await a.create("app");
    expect(s.path).toBe(join(spool, UPLOAD_DIR, s.id));
    expect(s.path).not.toContain(".part-");
    expect(existsSync(s.path)).toBe(true);
    expect(await row(s.id)).toMatchObject({ repository: "hosted", image: "app", path: `${UPLOAD_DIR}/${s.id}`, sizeBytes: 0, writer: null });
    expect(await b.get(s.id, "app")).toMatchObject({ id: s.id, path: s.path, sizeBytes: 0 });
    // another image or another repository does not see it
    expect((await rejection(b.get(s.id, "other"))).code).toBe("BLOB_UPLOAD_UNKNOWN");
    expect((await rejection(manager("else").get(s.id, "app"))).code).toBe("BLOB_UPLOAD_UNKNOWN");
  });

  test("appends alternate between managers; the digest is right on both (hash of this process, or the file re-read)", async () => {
    const data = bytes(300_000, 7);
    const s = await a.create("app");
    const cuts = [0, 70_000, 150_000, 151_000, 300_000];
    for (let i = 0; i + 1 < cuts.length; i++) {
      const m = i % 2 === 0 ? a : b;
      expect(await append(m, s.id, data.subarray(cuts[i], cuts[i + 1]), cuts[i])).toBe(cuts[i + 1] - cuts[i]);
      expect((await row(s.id))!.sizeBytes).toBe(cuts[i + 1]);
    }
    expect((await row(s.id))!.writer).toBeNull();
    expect(await a.digest(await a.get(s.id, "app"))).toBe(sha(data));
    expect(await b.digest(await b.get(s.id, "app"))).toBe(sha(data));
    expect(new Uint8Array(await Bun.file(s.path).arrayBuffer())).toEqual(data);
  });

  test("the incremental hash is used only while it covers the row's size", async () => {
    const data = bytes(50_000, 3);
    const s = await a.create("app");
    await append(a, s.id, data);
    // same size, other bytes on disk: a (in step) answers from its hash, b (no hash) reads the file
    const tampered = data.slice();
    tampered[10] ^= 0xff;
    await writeFile(s.path, tampered);
    expect(await a.digest(await a.get(s.id, "app"))).toBe(sha(data));
    expect(await b.digest(await b.get(s.id, "app"))).toBe(sha(tampered));
    // once b appended, a's hash is behind the row and no longer used
    await append(b, s.id, data.subarray(0, 10), 50_000);
    const whole = new Uint8Array([...tampered, ...data.subarray(0, 10)]);
    expect(await a.digest(await a.get(s.id, "app"))).toBe(sha(whole));
  });

  test("an append at a stale offset gets 416 with the current Range, and nothing changes", async () => {
    const s = await a.create("app");
    await append(a, s.id, bytes(1000, 5), 0);
    const e = await rejection(append(b, s.id, bytes(1000, 9), 0));
    expect(e.status).toBe(416);
    expect(e.code).toBe("RANGE_INVALID");
    expect(e.headers.range).toBe("0-999");
    expect(e.headers["docker-upload-uuid"]).toBe(s.id);
    expect(await row(s.id)).toMatchObject({ sizeBytes: 1000, writer: null });
    expect((await stat(s.path)).size).toBe(1000);
    expect(await b.digest(await b.get(s.id, "app"))).toBe(sha(bytes(1000, 5)));
  });

  test("while one manager writes a session, another one's append or completion gets 416; the writer then finishes", async () => {
    const s = await a.create("app");
    await append(a, s.id, bytes(100, 1), 0);
    let feed!: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({ start: (c) => void (feed = c) });
    let claimed!: () => void;
    const isClaimed = new Promise<void>((r) => (claimed = r));
    const writing = a.locked(await a.get(s.id, "app"), (c) => {
      claimed();
      return a.append(c, body, null, null);
    });
    await isClaimed;
    feed.enqueue(bytes(500, 2));
    expect((await row(s.id))!.writer).toStartWith(`${HOST}~${process.pid}~`);
    // b: a chunk at the right offset (100) is refused while a holds the session; so is completing it
    const e = await rejection(append(b, s.id, bytes(10, 3), 100));
    expect(e.status).toBe(416);
    expect(e.headers.range).toBe("0-99");
    const f = await rejection(b.locked(await b.get(s.id, "app"), async () => "finished"));
    expect(f.code).toBe("RANGE_INVALID");
    feed.enqueue(bytes(500, 4));
    feed.close();
    expect(await writing).toBe(1000);
    expect(await row(s.id)).toMatchObject({ sizeBytes: 1100, writer: null });
    expect(await append(b, s.id, bytes(10, 3), 1100)).toBe(10);
    const whole = new Uint8Array([...bytes(100, 1), ...bytes(500, 2), ...bytes(500, 4), ...bytes(10, 3)]);
    expect(await a.digest(await a.get(s.id, "app"))).toBe(sha(whole));
  });

  test("requests of one manager on one session queue up instead of conflicting", async () => {
    const s = await a.create("app");
    const [x, y] = await Promise.all([append(a, s.id, bytes(1000, 1)), append(a, s.id, bytes(2000, 2))]);
    expect(x + y).toBe(3000);
    expect((await row(s.id))!.sizeBytes).toBe(3000);
  });

  test("a failed append counts nothing and cuts the file back", async () => {
    const s = await a.create("app");
    await append(a, s.id, bytes(100, 1));
    const short = await rejection(a.locked(await a.get(s.id, "app"), (c) => a.append(c, stream(bytes(50, 2)), null, 80)));
    expect(short.code).toBe("SIZE_INVALID");
    expect(await row(s.id)).toMatchObject({ sizeBytes: 100, writer: null });
    expect((await stat(s.path)).size).toBe(100);
    expect(await a.digest(await a.get(s.id, "app"))).toBe(sha(bytes(100, 1)));
  });

  test("a claim left by a writer that is gone is taken over, and the bytes it left past size_bytes are cut", async () => {
    const s = await a.create("app");
    await append(a, s.id, bytes(100, 1));
    await writeFile(s.path, bytes(40, 9), { flag: "a" }); // a crashed writer's partial chunk
    const dead = Bun.spawn(["true"]);
    await dead.exited;
    for (const writer of [`${HOST}~${dead.pid}~x`, `${HOST}~${process.pid}~before-a-restart`, `elsewhere~1~y`]) {
      const updatedAt = writer.startsWith("elsewhere") ? Date.now() - WRITER_LEASE_MS - 1 : Date.now();
      await db.db.update(ociUploads).set({ writer, updatedAt }).where(eq(ociUploads.id, s.id));
      await append(b, s.id, bytes(10, 2), (await row(s.id))!.sizeBytes);
      expect((await row(s.id))!.writer).toBeNull();
    }
    expect(await b.digest(await b.get(s.id, "app"))).toBe(sha(new Uint8Array([...bytes(100, 1), ...bytes(10, 2), ...bytes(10, 2), ...bytes(10, 2)])));
    // a live claim of another host is respected until its lease runs out
    await db.db.update(ociUploads).set({ writer: "elsewhere~1~z", updatedAt: Date.now() }).where(eq(ociUploads.id, s.id));
    expect((await rejection(append(b, s.id, bytes(10, 2), 130))).status).toBe(416);
  });

  test("writerStale: lease expiry, dead or live pid on this host, this process's own claims", async () => {
    const now = Date.now();
    expect(writerStale(`elsewhere~${process.pid}~x`, now, now)).toBe(false);
    expect(writerStale(`elsewhere~${process.pid}~x`, now - WRITER_LEASE_MS - 1, now)).toBe(true);
    expect(writerStale(`${HOST}~${process.ppid}~x`, now, now)).toBe(false);
    expect(writerStale(`${HOST}~${process.pid}~not-held`, now, now)).toBe(true);
  });

  test("a restarted process (a fresh manager) resumes a session: status, append, digest from the file", async () => {
    const data = bytes(200_000, 11);
    const s = await a.create("app");
    await append(a, s.id, data.subarray(0, 120_000), 0);
    a.close();
    expect(existsSync(s.path)).toBe(true);
    const again = manager();
    expect((await again.get(s.id, "app")).sizeBytes).toBe(120_000);
    await append(again, s.id, data.subarray(120_000), 120_000);
    expect(await again.digest(await again.get(s.id, "app"))).toBe(sha(data));
  });

  test("cancel removes row and file; later requests get BLOB_UPLOAD_UNKNOWN", async () => {
    const s = await a.create("app");
    await append(a, s.id, bytes(10, 1));
    await b.cancel(await b.get(s.id, "app"));
    expect(await row(s.id)).toBeUndefined();
    expect(existsSync(s.path)).toBe(false);
    expect((await rejection(append(a, s.id, bytes(10, 1)))).code).toBe("BLOB_UPLOAD_UNKNOWN");
    expect((await rejection(a.cancel(s))).code).toBe("BLOB_UPLOAD_UNKNOWN");
  });

  test("a session whose file vanished is removed when claimed", async () => {
    const s = await a.create("app");
    await Bun.file(s.path).delete();
    expect((await rejection(append(b, s.id, bytes(10, 1)))).code).toBe("BLOB_UPLOAD_UNKNOWN");
    expect(await row(s.id)).toBeUndefined();
  });

  test("collect: idle sessions (row and file), sessions whose file vanished, old files without a row; keeps the rest", async () => {
    const idle = await a.create("app");
    const fresh = await a.create("app");
    const vanished = await a.create("app");
    const busy = await a.create("app");
    const otherRepo = await manager("else").create("app");
    await Bun.file(vanished.path).delete();
    const now = Date.now();
    await db.db.update(ociUploads).set({ updatedAt: now - 10_000 }).where(eq(ociUploads.id, idle.id));
    await db.db.update(ociUploads).set({ updatedAt: now - 10_000, writer: "elsewhere~1~w" }).where(eq(ociUploads.id, busy.id));
    await db.db.update(ociUploads).set({ updatedAt: now - 10_000 }).where(eq(ociUploads.id, otherRepo.id));
    const dir = join(spool, UPLOAD_DIR);
    const stray = join(dir, crypto.randomUUID());
    const young = join(dir, crypto.randomUUID());
    await writeFile(stray, "left by a crash");
    await writeFile(young, "a session being opened");
    await utimes(stray, new Date(now - 10_000), new Date(now - 10_000));
    const oldStray = join(dir, crypto.randomUUID());
    await writeFile(oldStray, "left by a crash long ago");
    await utimes(oldStray, new Date(now - STRAY_MIN_AGE_MS - 1000), new Date(now - STRAY_MIN_AGE_MS - 1000));

    expect(await b.collect(5_000, now)).toBe(3); // idle, vanished, old stray
    expect(await row(idle.id)).toBeUndefined();
    expect(existsSync(idle.path)).toBe(false);
    expect(await row(vanished.id)).toBeUndefined();
    expect(existsSync(oldStray)).toBe(false);
    expect(existsSync(stray)).toBe(true); // older than the idle time, but a row might still be on its way
    expect(await row(fresh.id)).toBeDefined();
    expect(await row(busy.id)).toBeDefined(); // a live writer holds it
    expect(await row(otherRepo.id)).toBeDefined(); // another repository's (its own collector decides)
    expect(existsSync(otherRepo.path)).toBe(true);
    expect(existsSync(young)).toBe(true);
    expect((await rejection(append(a, idle.id, bytes(1, 1)))).code).toBe("BLOB_UPLOAD_UNKNOWN");
  });

  test("the core's temp cleaning (start-up, vault gc) leaves session files alone", async () => {
    const driver = createFsDriver({ root: join(spool, "..") });
    expect(driver.spoolDir()).toBe(spool);
    const s = await a.create("app");
    await append(a, s.id, bytes(10, 1));
    await writeFile(join(spool, `x.part-cache~${HOST}~999999999`), "a dead process's temp file");
    expect(await driver.cleanTemp(0)).toBe(1);
    expect(readdirSync(join(spool, UPLOAD_DIR))).toEqual([s.id]);
    expect(await a.digest(await a.get(s.id, "app"))).toBe(sha(bytes(10, 1)));
    // the directory may be removed when empty (cleanTemp prunes empty directories): creating a session recreates it
    await a.cancel(await a.get(s.id, "app"));
    await driver.cleanTemp(0);
    expect(existsSync(join(spool, UPLOAD_DIR))).toBe(false);
    const t = await a.create("app");
    expect(existsSync(t.path)).toBe(true);
  });
});

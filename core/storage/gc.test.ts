/** `vault gc` (core/cli/commands/gc.ts) against a real data directory: temp files and unreferenced old blobs go, the rest stays. */
import { describe, expect, test } from "bun:test";
import { readdir, utimes } from "node:fs/promises";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import { run } from "../cli/commands/gc.ts";
import { atomic, openDb } from "../db/index.ts";
import { blobs as blobsTable } from "../db/schema.ts";
import { createBlobStore } from "./blobs.ts";
import { createFsDriver } from "./fs.ts";
import { blobKey } from "./driver.ts";
import { streamOf } from "../../test/conformance/storage.ts";
import { tmpDataDir } from "../../test/helpers/tmp.ts";

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (s: string) => void out.push(s), err: (s: string) => void err.push(s) }, out, err };
}

describe("vault gc", () => {
  test("removes old temp files and old unreferenced blobs; keeps referenced and young ones", async () => {
    const base = await tmpDataDir("vault-gc-");
    await Bun.write(join(base, "vault.config.yaml"), "server:\n  dataDir: ./data\n");
    const dataDir = join(base, "data");
    const driver = createFsDriver({ root: join(dataDir, "store") });
    const { db, close } = openDb(join(dataDir, "vault.db"));
    const store = createBlobStore(db, driver);
    const twoHoursAgo = Date.now() - 2 * 60 * 60 * 1000;
    const kept = await store.putStream(streamOf("referenced"));
    await atomic(db, (tx) => store.ref(tx, kept.digest, kept.sizeBytes, 1));
    const old = await store.putStream(streamOf("unreferenced, old"));
    const young = await store.putStream(streamOf("unreferenced, young"));
    for (const d of [kept.digest, old.digest]) db.update(blobsTable).set({ createdAt: twoHoursAgo }).where(eq(blobsTable.digest, d)).run();
    const oldTemp = join(driver.spoolDir(), "dead.part-123");
    const youngTemp = join(driver.spoolDir(), "live.part-456");
    await Bun.write(oldTemp, "orphan");
    await Bun.write(youngTemp, "in flight");
    await utimes(oldTemp, new Date(twoHoursAgo), new Date(twoHoursAgo));
    close();

    const c = capture();
    expect(await run(["--config", join(base, "vault.config.yaml"), "--min-age-minutes", "60"], c.io)).toBe(0);
    expect(c.err).toEqual([]);
    expect(c.out.join("")).toContain(`removed 1 temp file and 1 blob (${old.sizeBytes} bytes) older than 60 minutes`);
    expect(await readdir(driver.spoolDir())).toEqual(["live.part-456"]);
    expect(await driver.exists(blobKey(old.digest))).toBe(false);
    expect(await driver.exists(blobKey(kept.digest))).toBe(true);
    expect(await driver.exists(blobKey(young.digest))).toBe(true);

    // --data overrides the config's dataDir; a second run finds nothing
    const c2 = capture();
    expect(await run(["--config", join(base, "vault.config.yaml"), "--data", dataDir], c2.io)).toBe(0);
    expect(c2.out.join("")).toContain("removed 0 temp files and 0 blobs (0 bytes)");
  });

  test("refuses to sweep without a metadata database, and rejects bad arguments", async () => {
    const base = await tmpDataDir("vault-gc-");
    await Bun.write(join(base, "vault.config.json"), "{}");
    const driver = createFsDriver({ root: join(base, "data", "store") });
    await driver.put(blobKey("sha256:" + "0".repeat(64)), streamOf("would look unreferenced"));
    const c = capture();
    expect(await run(["--config", join(base, "vault.config.json"), "--min-age-minutes", "0"], c.io)).toBe(1);
    expect(c.err.join("")).toContain("no metadata database");
    expect(await driver.exists(blobKey("sha256:" + "0".repeat(64)))).toBe(true);

    const bad = capture();
    expect(await run(["--min-age-minutes", "-3"], bad.io)).toBe(2);
    expect(await run(["--bogus"], bad.io)).toBe(2);
    expect(bad.err.join("")).toContain("usage: vault gc");
    await driver.delete(blobKey("sha256:" + "0".repeat(64)));
  });
});

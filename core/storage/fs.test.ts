/** fs driver: the conformance suite, plus crash safety (kill -9 mid-write), temp-file hygiene and staying inside the root. */
import { describe, expect, test } from "bun:test";
import { mkdir, readdir, stat, utimes } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import { createFsDriver, FS_TEMP_DIR } from "./fs.ts";
import { FOREIGN_TEMP_MIN_AGE_MS, InvalidKeyError, StorageError, TEMP_OWNER, tempRemovable } from "./driver.ts";
import { createStorage } from "./index.ts";
import { storageDriverSuite, streamOf, failingStream } from "../../test/conformance/storage.ts";
import { removeDir, tmpDataDir } from "../../test/helpers/tmp.ts";

storageDriverSuite("fs", async () => {
  const dir = await tmpDataDir("vault-fs-");
  return { driver: createFsDriver({ root: join(dir, "store") }), cleanup: () => removeDir(dir) };
});

/** Every file (not directory) under `dir`, as paths relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) out.push(relative(dir, join(e.parentPath, e.name)));
  }
  return out.sort();
}

/** A body that delivers `n` chunks, then stalls until `release` is called (error or end). */
function stallingStream(n: number): { body: ReadableStream<Uint8Array>; stalled: Promise<void>; fail(): void } {
  let sent = 0;
  let onStall!: () => void;
  let ctl!: ReadableStreamDefaultController<Uint8Array>;
  const stalled = new Promise<void>((r) => (onStall = r));
  const body = new ReadableStream<Uint8Array>(
    {
      start(c) {
        ctl = c;
      },
      pull(c) {
        if (sent < n) {
          c.enqueue(new Uint8Array(128 * 1024).fill(0x62));
          sent++;
          return;
        }
        onStall();
        return new Promise<void>(() => {}); // never resolves: the writer waits for more bytes
      },
    },
    { highWaterMark: 0 },
  );
  return { body, stalled, fail: () => ctl.error(new Error("upstream went away")) };
}

describe("fs driver specifics", () => {
  test("a put writes only into <root>/tmp until the rename; a failed body removes its temp file", async () => {
    const base = await tmpDataDir();
    const root = join(base, "store");
    const d = createFsDriver({ root });
    const s = stallingStream(8);
    const put = d.put("blobs/x/in-flight", s.body);
    await s.stalled;
    const during = await filesUnder(base);
    expect(during.length).toBe(1);
    expect(during[0]).toMatch(new RegExp(`^store/${FS_TEMP_DIR}/[0-9a-f-]+\\.part-put~[^~]+~${process.pid}$`));
    expect(await d.exists("blobs/x/in-flight")).toBe(false);
    s.fail();
    await expect(put).rejects.toThrow("upstream went away");
    expect(await filesUnder(base)).toEqual([]);
  });

  test("kill -9 of a process in the middle of a put: key absent, orphan temp file, cleanTemp removes it, nothing outside root", async () => {
    const base = await tmpDataDir();
    const root = join(base, "store");
    const cwd = join(base, "cwd");
    await mkdir(cwd);
    const script = `
      const { createFsDriver } = await import(${JSON.stringify(join(import.meta.dir, "fs.ts"))});
      const d = createFsDriver({ root: process.env.VAULT_TEST_ROOT });
      let n = 0;
      const body = new ReadableStream({
        pull(c) {
          if (n === 32) { process.stdout.write("writing\\n"); return new Promise(() => {}); }
          n++;
          c.enqueue(new Uint8Array(256 * 1024).fill(n & 0xff));
        },
      }, { highWaterMark: 0 });
      await d.put("blobs/sha256/ab/crash-victim", body);
      process.stdout.write("finished\\n");
    `;
    const child = Bun.spawn([process.execPath, "-e", script], {
      cwd,
      env: { ...process.env, VAULT_TEST_ROOT: root },
      stdout: "pipe",
      stderr: "pipe",
    });
    try {
      // wait for the child to report it is mid-write (an event, not a sleep)
      const reader = child.stdout.getReader();
      let seen = "";
      while (!seen.includes("writing\n")) {
        const { done, value } = await reader.read();
        if (done) throw new Error(`child exited early: ${await new Response(child.stderr).text()}`);
        seen += new TextDecoder().decode(value);
      }
      reader.releaseLock();
      process.kill(child.pid, "SIGKILL");
      expect(await child.exited).not.toBe(0);
      expect(child.signalCode).toBe("SIGKILL");
    } finally {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, "SIGKILL");
    }

    const d = createFsDriver({ root });
    expect(await d.exists("blobs/sha256/ab/crash-victim")).toBe(false);
    const keys: string[] = [];
    for await (const o of d.list("")) keys.push(o.key);
    expect(keys).toEqual([]);
    const orphans = await filesUnder(join(root, FS_TEMP_DIR));
    expect(orphans.length).toBe(1);
    expect(orphans[0]).toContain(".part-");
    expect((await stat(join(root, FS_TEMP_DIR, orphans[0]))).size).toBeGreaterThan(0);
    // nothing was written outside the root (the child's cwd stays empty)
    for (const f of await filesUnder(base)) expect(f.startsWith(`store${sep}`)).toBe(true);
    expect(await readdir(cwd)).toEqual([]);

    expect(await d.cleanTemp(0)).toBe(1);
    expect(await filesUnder(base)).toEqual([]);
  });

  test("cleanTemp honours the age, walks subdirectories, and ignores files that are not temp files", async () => {
    const base = await tmpDataDir();
    const d = createFsDriver({ root: base });
    const spool = d.spoolDir();
    expect(spool).toBe(join(base, FS_TEMP_DIR));
    await mkdir(join(spool, "engine"), { recursive: true });
    await Bun.write(join(spool, "engine", "a.part-1"), "x");
    await Bun.write(join(spool, "b.part-2"), "y");
    await Bun.write(join(spool, "keep.txt"), "not ours");
    const old = new Date(Date.now() - 2 * 60 * 60 * 1000);
    await utimes(join(spool, "b.part-2"), old, old);
    expect(await d.cleanTemp(60 * 60 * 1000)).toBe(1); // only the 2-hour-old one
    expect(await filesUnder(spool)).toEqual(["engine/a.part-1", "keep.txt"]);
    expect(await d.cleanTemp(0)).toBe(1);
    expect(await filesUnder(spool)).toEqual(["keep.txt"]);
    expect(await readdir(spool)).toEqual(["keep.txt"]); // emptied subdirectory removed
  });

  test("cleanTemp keeps the files of a live process on this host at any age, removes a dead one's at once", async () => {
    const base = await tmpDataDir();
    const d = createFsDriver({ root: base });
    const spool = d.spoolDir();
    const host = TEMP_OWNER.split("~")[1];
    // a process that has exited: its pid is free (until reused, which the kernel delays)
    const gone = Bun.spawn(["true"]);
    await gone.exited;
    const live = join(spool, `a.part-cache${TEMP_OWNER}`);
    const dead = join(spool, `b.part-cache~${host}~${gone.pid}`);
    const foreignOld = join(spool, "c.part-cache~another-host~1");
    const foreignYoung = join(spool, "d.part-cache~another-host~2");
    for (const f of [live, dead, foreignOld, foreignYoung]) await Bun.write(f, "x");
    const old = new Date(Date.now() - 3 * 60 * 60 * 1000);
    await utimes(live, old, old);
    await utimes(foreignOld, old, old);
    expect(await d.cleanTemp(0)).toBe(2);
    expect((await readdir(spool)).sort()).toEqual([`a.part-cache${TEMP_OWNER}`, "d.part-cache~another-host~2"]);
    expect(tempRemovable(`x.part-put${TEMP_OWNER}`, 1e12, 0)).toBe(false);
    expect(tempRemovable("x.part-put", 10, 0)).toBe(true); // no owner: age only
    expect(tempRemovable("x.part-put~h~1", FOREIGN_TEMP_MIN_AGE_MS - 1, 0)).toBe(false);
    expect(tempRemovable("notatemp", 1e12, 0)).toBe(false);
  });

  test("keys under the reserved tmp/ prefix are refused; list never shows temp files", async () => {
    const base = await tmpDataDir();
    const d = createFsDriver({ root: base });
    await expect(d.put("tmp/x", streamOf("x"))).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(d.stat("tmp")).rejects.toBeInstanceOf(InvalidKeyError);
    await Bun.write(join(d.spoolDir(), "z.part-1"), "spooling");
    await d.put("tmpx", streamOf("ok")); // only the exact segment is reserved
    const keys: string[] = [];
    for await (const o of d.list("")) keys.push(o.key);
    expect(keys).toEqual(["tmpx"]);
    const none: string[] = [];
    for await (const o of d.list("tmp/")) none.push(o.key);
    expect(none).toEqual([]);
    await d.delete("tmpx");
  });

  test("delete prunes emptied parent directories but never the root or tmp", async () => {
    const base = await tmpDataDir();
    const root = join(base, "store");
    const d = createFsDriver({ root });
    await d.put("uploads/abc/part-1", streamOf("1"));
    await d.put("uploads/abc/part-2", streamOf("2"));
    await d.delete("uploads/abc/part-1");
    expect(await readdir(join(root, "uploads", "abc"))).toEqual(["part-2"]);
    await d.delete("uploads/abc/part-2");
    expect((await readdir(root)).sort()).toEqual([FS_TEMP_DIR]);
  });

  test("a key that is a directory of other keys cannot be stored as an object", async () => {
    const base = await tmpDataDir();
    const d = createFsDriver({ root: base });
    await d.put("a/b", streamOf("b"));
    await expect(d.put("a", streamOf("a"))).rejects.toBeInstanceOf(StorageError);
    await expect(d.put("a/b/c", streamOf("c"))).rejects.toBeInstanceOf(StorageError);
    expect(await filesUnder(join(base, FS_TEMP_DIR))).toEqual([]);
    await d.delete("a/b");
  });

  test("putFile moves the spool file (same inode, no copy) and fsyncs it", async () => {
    const base = await tmpDataDir();
    const d = createFsDriver({ root: base });
    const spool = join(d.spoolDir(), "x.part-9");
    await Bun.write(spool, "spooled bytes");
    const ino = (await stat(spool)).ino;
    await d.putFile("blobs/moved", spool);
    expect((await stat(d.localPath!("blobs/moved")!)).ino).toBe(ino);
    expect(await Bun.file(spool).exists()).toBe(false);
    await d.delete("blobs/moved");
  });

  test("a failing body leaves no temp file behind", async () => {
    const base = await tmpDataDir();
    const d = createFsDriver({ root: base });
    await expect(d.put("k", failingStream(2 * 1024 * 1024))).rejects.toThrow();
    expect(await filesUnder(base)).toEqual([]);
  });

  test("createStorage: fs under <dataDir>/store by default, s3 when configured", async () => {
    const dataDir = await tmpDataDir();
    const d = createStorage(undefined, dataDir);
    expect(d.name).toBe("fs");
    expect(d.spoolDir()).toBe(join(dataDir, "store", FS_TEMP_DIR));
    expect(createStorage({ driver: "fs", root: "elsewhere" }, dataDir).spoolDir()).toBe(join(dataDir, "elsewhere", FS_TEMP_DIR));
    const s3 = createStorage({ driver: "s3", bucket: "b", endpoint: "http://127.0.0.1:9" }, dataDir);
    expect(s3.name).toBe("s3");
    expect(s3.spoolDir()).toBe(join(dataDir, "tmp"));
    await s3.close?.();
  });
});

/** Worker pool: tasks give the same results in the pool as inline, transfers, abort, stats, and the event loop stays free. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { createPool, shouldOffload, updatePoolMetrics, DEFAULT_OFFLOAD_THRESHOLD_BYTES, type VaultPool } from "./pool.ts";
import { renderMetrics } from "./metrics.ts";
import { tasks } from "../workers/tasks.ts";
import * as entry from "../workers/index.ts";
import type { RewriteResult } from "../workers/document.ts";
import { tmpDataDir } from "../test/helpers/tmp.ts";
import { pooled } from "../workers/transfer.ts";
import { transferableSymbol, valueSymbol } from "piscina";

const enc = new TextEncoder();
const dec = new TextDecoder();
const FILES = "https://files.example.org/";
const VAULT = "http://127.0.0.1:1/pypi/files/";

/** An npm-packument-like document of about `targetBytes`. */
function packument(targetBytes: number): { doc: any; bytes: Uint8Array; versions: number } {
  const versions: Record<string, unknown> = {};
  const readme = "x".repeat(1500);
  let n = 0;
  let approx = 0;
  while (approx < targetBytes) {
    const v = `1.${Math.floor(n / 100)}.${n % 100}`;
    const entry = (versions[v] = {
      name: "big",
      version: v,
      readme,
      dependencies: { a: "^1.0.0", b: "~2.1.0" },
      dist: { tarball: `${FILES}big/-/big-${v}.tgz`, shasum: "0".repeat(40), integrity: "sha512-" + "A".repeat(86) + "==" },
      homepage: "https://example.org/big",
    });
    approx += JSON.stringify(entry).length + v.length + 4;
    n++;
  }
  const doc = { name: "big", "dist-tags": { latest: "1.0.0" }, versions };
  return { doc, bytes: enc.encode(JSON.stringify(doc)), versions: n };
}

let pool: VaultPool;
let dir: string;
let bigFile: string;
let bigContent: Uint8Array;

beforeAll(async () => {
  pool = createPool({ threads: 1 }, { minThreads: 1 });
  dir = await tmpDataDir("vault-pool-");
  bigFile = join(dir, "big.bin");
  bigContent = new Uint8Array(3 * 1024 * 1024 + 17);
  crypto.getRandomValues(bigContent.subarray(0, 65536));
  for (let o = 65536; o < bigContent.length; o += 65536) bigContent.copyWithin(o, 0, Math.min(65536, bigContent.length - o));
  await Bun.write(bigFile, bigContent);
});

afterAll(async () => {
  await pool.close();
});

describe("worker entry", () => {
  test("workers/index.ts exports exactly the tasks of workers/tasks.ts", () => {
    expect(Object.keys(entry).sort()).toEqual(Object.keys(tasks).sort());
  });
});

describe("checksum tasks", () => {
  test("sha256File: pool = inline = node:crypto", async () => {
    const want = createHash("sha256").update(bigContent).digest("hex");
    const inline = await tasks.sha256File({ path: bigFile });
    const pooled = await pool.run<{ path: string }, { hex: string; sizeBytes: number }>("sha256File", { path: bigFile });
    expect(inline).toEqual({ hex: want, sizeBytes: bigContent.length });
    expect(pooled).toEqual(inline);
  });

  test("digests: four algorithms in one pass, pool = inline = node:crypto", async () => {
    const algorithms = ["sha256", "md5", "sha1", "sha512"] as const;
    const want = Object.fromEntries(algorithms.map((a) => [a, createHash(a).update(bigContent).digest("hex")]));
    const inline = await tasks.digests({ path: bigFile, algorithms: [...algorithms] });
    const pooled = await pool.run("digests", { path: bigFile, algorithms });
    expect(inline).toEqual(want as any);
    expect(pooled).toEqual(inline);
  });

  test("a missing file rejects with code ENOENT through the pool; a bad algorithm with RangeError", async () => {
    const missing = join(dir, "missing.bin");
    const e1: any = await pool.run("sha256File", { path: missing }).catch((e) => e);
    expect(e1).toBeInstanceOf(Error);
    expect(e1.code).toBe("ENOENT");
    const e2: any = await pool.run("digests", { path: bigFile, algorithms: ["crc32"] }).catch((e) => e);
    expect(e2).toBeInstanceOf(RangeError);
    expect(e2.message).toContain("crc32");
  });
});

describe("document tasks", () => {
  const html =
    `<!DOCTYPE html><html><body>\n` +
    `<a href="${FILES}packages/aa/bb/demo-1.0-py3-none-any.whl#sha256=00">demo-1.0-py3-none-any.whl</a>\n` +
    `<a href="${FILES}packages/cc/dd/demo-1.0.tar.gz#sha256=11">demo-1.0.tar.gz</a>\n` +
    `<a href="https://files.example.org.evil.test/x">not ours</a>\n</body></html>\n`;

  test("rewriteUrls on a PEP 503 page: pool = inline, prefix-exact", async () => {
    const input = { text: html, from: [FILES], to: VAULT };
    const inline = tasks.rewriteUrls(input);
    const pooled = await pool.run<typeof input, RewriteResult>("rewriteUrls", input);
    expect(pooled.bytes).toBeInstanceOf(Uint8Array);
    expect(dec.decode(pooled.bytes)).toBe(dec.decode(inline.bytes));
    expect(pooled.replacements).toBe(2);
    const out = dec.decode(inline.bytes);
    expect(out).toContain(`href="${VAULT}packages/aa/bb/demo-1.0-py3-none-any.whl#sha256=00"`);
    expect(out).toContain("https://files.example.org.evil.test/x");
  });

  test("rewriteUrls also rewrites JSON-escaped slashes and prefers the longest prefix", () => {
    const text = JSON.stringify({ a: `${FILES}x`, b: "https://files.example.org/special/y" }).replace(/\//g, "\\/");
    const r = tasks.rewriteUrls({ text, from: [FILES, "https://files.example.org/special/"], to: "http://v/s/" });
    expect(JSON.parse(dec.decode(r.bytes))).toEqual({ a: "http://v/s/x", b: "http://v/s/y" });
    expect(r.replacements).toBe(2);
  });

  test("rewriteJson: URL fields, pick and drop on a packument; pool = inline", async () => {
    const { doc } = packument(20_000);
    const bytes = enc.encode(JSON.stringify(doc));
    const rules = {
      pick: ["name", "dist-tags", "versions.*.name", "versions.*.version", "versions.*.dependencies", "versions.*.dist", "versions.*.readme"],
      drop: ["versions.*.readme"],
      urls: { from: [FILES], to: "http://vault/npm/", fields: ["versions.*.dist.tarball"] },
    };
    const inline = tasks.rewriteJson({ bytes, rules });
    const pooled = await pool.run<unknown, RewriteResult>("rewriteJson", { bytes, rules });
    expect(dec.decode(pooled.bytes)).toBe(dec.decode(inline.bytes));
    const out = JSON.parse(dec.decode(inline.bytes));
    const n = Object.keys(doc.versions).length;
    expect(inline.replacements).toBe(n);
    const v = out.versions["1.0.1"];
    expect(v).toEqual({
      name: "big",
      version: "1.0.1",
      dependencies: { a: "^1.0.0", b: "~2.1.0" },
      dist: { tarball: "http://vault/npm/big/-/big-1.0.1.tgz", shasum: "0".repeat(40), integrity: doc.versions["1.0.1"].dist.integrity },
    });
    expect(out["dist-tags"]).toEqual({ latest: "1.0.0" });
  });

  test("rewriteJson without fields rewrites every string starting with a prefix; array paths; literal dotted keys", () => {
    const doc = { files: [{ url: `${FILES}a.whl`, hash: "h" }, { url: `${FILES}b.whl` }], meta: { home: `${FILES}x` }, list: ["keep", `${FILES}l`] };
    const all = tasks.rewriteJson({ text: JSON.stringify(doc), rules: { urls: { from: [FILES], to: "V/" } } });
    expect(JSON.parse(dec.decode(all.bytes))).toEqual({ files: [{ url: "V/a.whl", hash: "h" }, { url: "V/b.whl" }], meta: { home: "V/x" }, list: ["keep", "V/l"] });
    expect(all.replacements).toBe(4);
    const some = tasks.rewriteJson({ text: JSON.stringify(doc), rules: { urls: { from: [FILES], to: "V/", fields: ["files.*.url"] }, drop: ["list.0", ["meta", "home"]] } });
    expect(JSON.parse(dec.decode(some.bytes))).toEqual({ files: [{ url: "V/a.whl", hash: "h" }, { url: "V/b.whl" }], meta: {}, list: [`${FILES}l`] });
    const dotted = tasks.rewriteJson({ text: JSON.stringify({ versions: { "1.0.0": { a: 1, b: 2 } } }), rules: { pick: [["versions", "1.0.0", "a"]], indent: 1 } });
    expect(dec.decode(dotted.bytes)).toBe(JSON.stringify({ versions: { "1.0.0": { a: 1 } } }, null, 1));
  });

  test("rewriteJson rejects non-JSON with SyntaxError through the pool; bad input with TypeError", async () => {
    const e = await pool.run("rewriteJson", { text: "<html>", rules: {} }).catch((x) => x);
    expect(e).toBeInstanceOf(SyntaxError);
    const e2 = await pool.run("rewriteUrls", { from: [], to: "" }).catch((x) => x);
    expect(e2).toBeInstanceOf(TypeError);
  });
});

describe("pool mechanics", () => {
  test("transfer moves the input ArrayBuffer into the worker (detached here) and the result comes back", async () => {
    const bytes = enc.encode(`{"u":"${FILES}z"}`);
    const buf = bytes.buffer as ArrayBuffer;
    const r = await pool.run<unknown, RewriteResult>("rewriteJson", { bytes, rules: { urls: { from: [FILES], to: "V/" } } }, { transfer: [buf] });
    expect(buf.byteLength).toBe(0);
    expect(dec.decode(r.bytes)).toBe('{"u":"V/z"}');
  });

  test("worker glue moves only buffers a result owns whole; slices of bigger buffers are copied", async () => {
    const whole = new Uint8Array(8);
    const moved = (await pooled(() => ({ bytes: whole, n: 1 }))(undefined)) as any;
    expect(moved[transferableSymbol]).toEqual([whole.buffer]);
    expect(moved[valueSymbol]).toEqual({ bytes: whole, n: 1 });
    const big = new Uint8Array(64);
    const slice = big.subarray(8, 16);
    expect(await pooled(() => ({ bytes: slice }))(undefined)).toEqual({ bytes: slice });
    expect(await pooled(() => 42)(undefined)).toBe(42);
  });

  test("runSized runs small inputs inline (nothing detached) and big ones in the pool", async () => {
    expect(shouldOffload(DEFAULT_OFFLOAD_THRESHOLD_BYTES)).toBe(false);
    expect(shouldOffload(DEFAULT_OFFLOAD_THRESHOLD_BYTES + 1)).toBe(true);
    expect(shouldOffload(10, { offloadThresholdBytes: 5 })).toBe(true);
    const small = enc.encode(`{"u":"${FILES}z"}`);
    const r1 = await pool.runSized("rewriteJson", { bytes: small, rules: {} }, small.byteLength, { transfer: [small.buffer as ArrayBuffer] });
    expect(small.byteLength).toBeGreaterThan(0);
    expect(dec.decode(r1.bytes)).toBe('{"u":"https://files.example.org/z"}');
    const big = enc.encode(JSON.stringify({ pad: "p".repeat(DEFAULT_OFFLOAD_THRESHOLD_BYTES), u: `${FILES}z` }));
    const r2 = await pool.runSized("rewriteJson", { bytes: big, rules: { urls: { from: [FILES], to: "V/" } } }, big.byteLength, { transfer: [big.buffer as ArrayBuffer] });
    expect(big.byteLength).toBe(0);
    expect(r2.replacements).toBe(1);
  });

  test("abort: a pre-aborted signal, a queued task and a running task all reject with AbortError; the pool goes on", async () => {
    const { bytes } = packument(20 * 1024 * 1024);
    const pre = new AbortController();
    pre.abort();
    await expect(pool.run("sha256File", { path: bigFile }, { signal: pre.signal })).rejects.toMatchObject({ name: "AbortError" });

    const running = new AbortController();
    const queued = new AbortController();
    const t0 = performance.now();
    const a = pool.run("rewriteJson", { bytes, rules: { urls: { from: [FILES], to: "V/" } } }, { signal: running.signal, transfer: [bytes.buffer as ArrayBuffer] });
    const b = pool.run("sha256File", { path: bigFile }, { signal: queued.signal });
    queued.abort();
    await expect(b).rejects.toMatchObject({ name: "AbortError" });
    setTimeout(() => running.abort(), 20);
    await expect(a).rejects.toMatchObject({ name: "AbortError" });
    // The 20 MiB rewrite takes far longer than this when it runs to completion (its thread was terminated).
    expect(performance.now() - t0).toBeLessThan(5000);
    const after = await pool.run<{ path: string }, { sizeBytes: number }>("sha256File", { path: bigFile });
    expect(after.sizeBytes).toBe(bigContent.length);
  });

  test("stats shape, queueing with one thread, and the metrics gauges", async () => {
    const idle = pool.stats();
    expect(idle).toEqual({ queued: 0, running: 0, utilization: 0, threads: 1 });
    const jobs = [1, 2, 3].map(() => pool.run("digests", { path: bigFile, algorithms: ["sha512", "sha256", "md5"] }));
    const busy = pool.stats();
    expect(busy.threads).toBe(1);
    expect(busy.queued + busy.running).toBe(3);
    expect(busy.queued).toBeGreaterThanOrEqual(2);
    expect(busy.running).toBeLessThanOrEqual(1);
    expect(busy.utilization).toBeGreaterThanOrEqual(0);
    expect(busy.utilization).toBeLessThanOrEqual(1);
    updatePoolMetrics(pool);
    expect(renderMetrics()).toContain(`vault_pool_queue_length ${busy.queued}`);
    await Promise.all(jobs);
    updatePoolMetrics(pool);
    const text = renderMetrics();
    expect(text).toContain("vault_pool_queue_length 0\n");
    expect(text).toContain("vault_pool_utilization 0\n");
  });

  test("unknown task names and a closed pool are refused", async () => {
    await expect(pool.run("nope", {})).rejects.toBeInstanceOf(TypeError);
    const p2 = createPool({ threads: 1 });
    expect(await p2.run<{ path: string }, { sizeBytes: number }>("sha256File", { path: bigFile })).toMatchObject({ sizeBytes: bigContent.length });
    await p2.close();
    await p2.close();
    await expect(p2.run("sha256File", { path: bigFile })).rejects.toThrow("closed");
    expect(() => createPool({ threads: 0 })).toThrow(RangeError);
  });
});

describe("event loop", () => {
  /** Runs `work` while a 5 ms ticker measures the longest gap between ticks (event-loop lag), ms. */
  async function maxLagDuring(work: () => Promise<unknown>): Promise<{ lagMs: number; tookMs: number }> {
    let last = performance.now();
    let lagMs = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      lagMs = Math.max(lagMs, now - last - 5);
      last = now;
    }, 5);
    const t0 = performance.now();
    let tookMs = 0;
    try {
      await work();
      tookMs = performance.now() - t0;
      await Bun.sleep(20); // let the ticker observe a gap that ends after the work
    } finally {
      clearInterval(timer);
    }
    return { lagMs, tookMs };
  }

  test("a 20 MiB JSON rewrite in the pool does not block the event loop", async () => {
    const rules = { drop: ["versions.*.readme"], urls: { from: [FILES], to: VAULT, fields: ["versions.*.dist.tarball"] } };
    const a = packument(20 * 1024 * 1024);
    expect(a.bytes.byteLength).toBeGreaterThan(20 * 1024 * 1024);
    await pool.run("sha256File", { path: bigFile }); // thread warm
    let pooledOut: RewriteResult | undefined;
    const pooled = await maxLagDuring(async () => {
      pooledOut = await pool.run<unknown, RewriteResult>("rewriteJson", { bytes: a.bytes, rules }, { transfer: [a.bytes.buffer as ArrayBuffer] });
    });
    const b = packument(20 * 1024 * 1024);
    let inlineOut: RewriteResult | undefined;
    const inline = await maxLagDuring(async () => {
      await Bun.sleep(10); // let the ticker tick once before blocking
      inlineOut = tasks.rewriteJson({ bytes: b.bytes, rules });
    });
    console.log(
      `20 MiB rewriteJson: pool took ${pooled.tookMs.toFixed(0)} ms with max event-loop lag ${pooled.lagMs.toFixed(1)} ms; ` +
        `inline took ${inline.tookMs.toFixed(0)} ms with max lag ${inline.lagMs.toFixed(1)} ms`,
    );
    expect(pooledOut!.replacements).toBe(a.versions);
    expect(pooledOut!.bytes.byteLength).toBe(inlineOut!.bytes.byteLength);
    expect(pooled.lagMs).toBeLessThan(200);
  });
});

/**
 * npm proxy over raw HTTP against a loopback registry built from the real fixtures (test/helpers/npm-registry.ts):
 * abbreviated/full negotiation with Vary, scoped names in both encodings, tarball URL rewriting, integrity
 * verification (tampered tarball → 502, nothing cached), npm-shaped errors, hostile paths.
 */
import { afterAll, beforeAll, describe, expect, setSystemTime, test } from "bun:test";
import { startVault, type StartedVault } from "../../test/helpers/vault.ts";
import { rawRequest } from "../../test/helpers/raw-http.ts";
import { startNpmRegistry, NPM_FIXTURES, type TestNpmRegistry } from "../../test/helpers/npm-registry.ts";
import { expectedDigests } from "./proxy.ts";
import { ABBREVIATED } from "./service.ts";
import { isValidPackageName, parseNpmPath } from "./names.ts";

let reg: TestNpmRegistry;
let vault: StartedVault;
let base: string;

beforeAll(async () => {
  reg = startNpmRegistry();
  vault = await startVault({ config: { repositories: [{ name: "npm", format: "npm", type: "proxy", upstream: reg.url }] } });
  base = `${vault.url}/npm`;
});
afterAll(async () => {
  await vault?.stop();
  await reg?.stop();
});

describe("names and paths", () => {
  test("package names per npm rules", () => {
    for (const ok of ["chalk", "@babel/core", "JSONStream", "a.b-c_d~e"]) expect(isValidPackageName(ok)).toBe(true);
    for (const bad of ["", ".hidden", "_x", "@/x", "@s/", "a/b", "@s/a/b", "..", "node_modules", "x y", "a".repeat(215)]) expect(isValidPackageName(bad)).toBe(false);
  });
  test("routes", () => {
    expect(parseNpmPath("chalk")).toEqual({ kind: "packument", name: "chalk" });
    expect(parseNpmPath("@babel%2fcore")).toEqual({ kind: "packument", name: "@babel/core" });
    expect(parseNpmPath("@babel%2Fcore")).toEqual({ kind: "packument", name: "@babel/core" });
    expect(parseNpmPath("@babel/core")).toEqual({ kind: "packument", name: "@babel/core" });
    expect(parseNpmPath("@types/ms/-/ms-0.7.34.tgz")).toEqual({ kind: "tarball", name: "@types/ms", file: "ms-0.7.34.tgz" });
    expect(parseNpmPath("-/package/@babel%2fcore/dist-tags")).toEqual({ kind: "dist-tags", name: "@babel/core" });
    expect(parseNpmPath("chalk/-/..%2f..%2fx.tgz")).toBe("bad");
    expect(parseNpmPath("a%2fb")).toBe("bad");
    expect(parseNpmPath("chalk/4.1.0")).toEqual({ kind: "version", name: "chalk", spec: "4.1.0" });
    expect(parseNpmPath("chalk/-/x")).toBe("bad");
    expect(parseNpmPath("chalk/a/b")).toBeUndefined();
  });
  test("integrity strings → hex digests", () => {
    const d = expectedDigests({ integrity: "sha512-" + Buffer.alloc(64, 1).toString("base64"), shasum: "A".repeat(40) });
    expect(d.sha512).toBe("01".repeat(64));
    expect(d.sha1).toBe("a".repeat(40));
    expect(expectedDigests({ integrity: "md5-xx" })).toEqual({});
  });
});

describe("packuments", () => {
  test("abbreviated vs full by Accept, Vary: Accept, separate cache entries, tarballs rewritten, integrity untouched", async () => {
    const a = await fetch(`${base}/chalk`, { headers: { accept: `${ABBREVIATED}; q=1.0, application/json; q=0.8, */*` } });
    expect(a.status).toBe(200);
    expect(a.headers.get("vary")).toBe("Accept");
    expect(a.headers.get("content-type")).toContain(ABBREVIATED);
    const abbrev = (await a.json()) as any;
    expect(abbrev.readme).toBeUndefined();
    expect(abbrev["dist-tags"].latest).toBe("4.1.0");
    const f = await fetch(`${base}/chalk`, { headers: { accept: "application/json" } });
    expect(f.status).toBe(200);
    expect(f.headers.get("vary")).toBe("Accept");
    expect(f.headers.get("content-type")).toContain("application/json");
    const full = (await f.json()) as any;
    expect(typeof full.time).toBe("object");
    const orig = JSON.parse(await Bun.file(`${NPM_FIXTURES}/packuments/chalk.abbrev.json`).text());
    for (const doc of [abbrev, full]) {
      const v = doc.versions["4.1.0"].dist;
      expect(v.tarball).toBe(`${base}/chalk/-/chalk-4.1.0.tgz`);
      expect(v.integrity).toBe(orig.versions["4.1.0"].dist.integrity);
      expect(v.shasum).toBe(orig.versions["4.1.0"].dist.shasum);
      for (const ver of Object.values(doc.versions) as any[]) expect(ver.dist.tarball.startsWith(`${base}/chalk/-/`)).toBe(true);
    }
    // upstream was asked once per variant, with the matching Accept
    const gets = reg.hits.filter((h) => h.path === "/chalk");
    expect(gets.length).toBe(2);
    expect(gets.map((h) => (h.accept ?? "").includes(ABBREVIATED)).sort()).toEqual([false, true]);
    const again = await fetch(`${base}/chalk`, { headers: { accept: ABBREVIATED } });
    expect(again.headers.get("x-vault-cache")).toBe("HIT");
    expect(((await again.json()) as any).readme).toBeUndefined();
    expect(reg.hits.filter((h) => h.path === "/chalk").length).toBe(2);
  });

  test("scoped names in both encodings; upstream asked with %2f", async () => {
    const a = await fetch(`${base}/@babel%2fcore`, { headers: { accept: ABBREVIATED } });
    expect(a.status).toBe(200);
    const doc = (await a.json()) as any;
    expect(doc.name).toBe("@babel/core");
    const v = doc.versions[doc["dist-tags"].latest].dist;
    expect(v.tarball).toBe(`${base}/@babel/core/-/core-${doc["dist-tags"].latest}.tgz`);
    const b = await fetch(`${base}/@babel/core`, { headers: { accept: ABBREVIATED } });
    expect(b.status).toBe(200);
    expect(b.headers.get("x-vault-cache")).toBe("HIT");
    expect(((await b.json()) as any).name).toBe("@babel/core");
    expect(reg.hits.filter((h) => h.path.toLowerCase() === "/@babel%2fcore").length).toBe(1);
  });

  test("dist-tags endpoint from the packument", async () => {
    const r = await fetch(`${base}/-/package/@babel%2fcore/dist-tags`);
    expect(r.status).toBe(200);
    const tags = (await r.json()) as Record<string, string>;
    expect(Object.keys(tags).length).toBe(2);
    expect(tags.latest).toBe("7.12.1");
  });

  test("unknown package → 404 {error: Not found}", async () => {
    const r = await fetch(`${base}/no-such-package-xyz`);
    expect(r.status).toBe(404);
    expect(r.headers.get("content-type")).toContain("application/json");
    expect(await r.json()).toEqual({ error: "Not found" });
  });
});

describe("tarballs", () => {
  test("served byte-identical, verified, then cached (one upstream GET)", async () => {
    const want = await Bun.file(`${NPM_FIXTURES}/tarballs/ms-2.1.2.tgz`).bytes();
    for (let i = 0; i < 2; i++) {
      const r = await fetch(`${base}/ms/-/ms-2.1.2.tgz`);
      expect(r.status).toBe(200);
      expect(new Uint8Array(await r.arrayBuffer())).toEqual(want);
    }
    expect(reg.tarballGets().filter((p) => p === "/ms/-/ms-2.1.2.tgz").length).toBe(1);
  });

  test("tampered tarball → 502 npm error and no cache entry; a retry fetches it again (and fails again)", async () => {
    reg.tamper("wrappy-1.0.2.tgz");
    const r = await fetch(`${base}/wrappy/-/wrappy-1.0.2.tgz`);
    expect(r.status).toBe(502);
    const body = (await r.json()) as { error: string };
    expect(body.error).toContain("integrity");
    const entry = await vault.vault.repositories.get("npm")?.artifacts.get("wrappy/-/wrappy-1.0.2.tgz");
    expect(entry ?? null).toBeNull();
    const again = await fetch(`${base}/wrappy/-/wrappy-1.0.2.tgz`);
    expect(again.status).toBe(502);
    expect(reg.tarballGets().filter((p) => p === "/wrappy/-/wrappy-1.0.2.tgz").length).toBe(2);
  });

  test("first download is streamed while verified: a mismatch found after the answer started cuts it, nothing stored", async () => {
    reg.tamper("debug-4.2.0.tgz");
    const release = reg.hold("debug-4.2.0.tgz");
    const r = await fetch(`${base}/debug/-/debug-4.2.0.tgz`);
    // the vault answered before the upstream finished: the status line is out, the body still streaming
    expect(r.status).toBe(200);
    expect(r.headers.get("x-vault-cache")).toBe("MISS");
    release();
    let failed = false;
    await r.arrayBuffer().catch(() => (failed = true));
    expect(failed).toBe(true);
    expect((await vault.vault.repositories.get("npm")?.artifacts.get("debug/-/debug-4.2.0.tgz")) ?? null).toBeNull();
    expect(reg.tarballGets().filter((p) => p === "/debug/-/debug-4.2.0.tgz").length).toBe(1);
  });

  test("first download of a good tarball is streamed and stored; the next is a HIT", async () => {
    const release = reg.hold("once-1.4.0.tgz");
    const r = await fetch(`${base}/once/-/once-1.4.0.tgz`);
    expect(r.status).toBe(200);
    expect(r.headers.get("x-vault-cache")).toBe("MISS");
    release();
    expect(new Uint8Array(await r.arrayBuffer())).toEqual(await Bun.file(`${NPM_FIXTURES}/tarballs/once-1.4.0.tgz`).bytes());
    const again = await fetch(`${base}/once/-/once-1.4.0.tgz`);
    expect(again.headers.get("x-vault-cache")).toBe("HIT");
    expect((await again.arrayBuffer()).byteLength).toBe((await Bun.file(`${NPM_FIXTURES}/tarballs/once-1.4.0.tgz`).bytes()).byteLength);
  });

  test("a tarball the packument does not list → 404", async () => {
    const r = await fetch(`${base}/ms/-/ms-9.9.9.tgz`);
    expect(r.status).toBe(404);
    expect(await r.json()).toEqual({ error: "Not found" });
    expect(reg.tarballGets().includes("/ms/-/ms-9.9.9.tgz")).toBe(false);
  });

  test("an unlisted tarball makes the vault fetch a packument older than a minute again (then 404)", async () => {
    const packumentGets = () => reg.hits.filter((h) => h.path === "/ms").length;
    const before = packumentGets();
    setSystemTime(new Date(Date.now() + 61_000));
    try {
      const r = await fetch(`${base}/ms/-/ms-9.9.8.tgz`);
      expect(r.status).toBe(404);
      expect(packumentGets()).toBe(before + 1);
    } finally {
      setSystemTime();
    }
    expect(reg.tarballGets().includes("/ms/-/ms-9.9.8.tgz")).toBe(false);
  });
});

describe("errors and hostile paths", () => {
  test("traversal and malformed names → 400 in npm's JSON shape", async () => {
    for (const target of ["/npm/chalk/-/..%2f..%2fetc%2fpasswd.tgz", "/npm/a%2fb", "/npm/.hidden", "/npm/chalk%00", "/npm/@x%2f..%2f..%2fy", "/npm/chalk/-/%252e%252e.tgz"]) {
      const r = await rawRequest(vault.port, target);
      expect({ target, status: r.status }).toEqual({ target, status: 400 });
      expect(JSON.parse(r.body).error).toBeString();
    }
  });
  test("writes → 405; search → upstream passthrough (404 here); ping passes through", async () => {
    const put = await fetch(`${base}/chalk`, { method: "PUT", body: "{}" });
    expect(put.status).toBe(405);
    expect(put.headers.get("allow")).toBe("GET, HEAD");
    expect(((await put.json()) as any).error).toBe("a proxy repository takes no writes: publish to a hosted repository");
    const s = await fetch(`${base}/-/v1/search?text=chalk`);
    expect(s.status).toBe(404);
    expect(await s.json()).toEqual({ error: "Not found" });
    const p = await fetch(`${base}/-/ping`);
    expect(p.status).toBe(200);
    expect(await p.json()).toEqual({});
  });
});

describe("pool rewrite of big packuments", () => {
  test("a packument above pool.offloadThresholdBytes is rewritten in the worker pool", async () => {
    const v = await startVault({ config: { pool: { offloadThresholdBytes: 1024 }, repositories: [{ name: "npm", format: "npm", type: "proxy", upstream: reg.url }] } });
    try {
      const r = await fetch(`${v.url}/npm/@types%2fnode`, { headers: { accept: ABBREVIATED } });
      expect(r.status).toBe(200);
      const doc = (await r.json()) as any;
      expect(Object.keys(doc.versions).length).toBe(931);
      for (const ver of Object.values(doc.versions) as any[]) expect(ver.dist.tarball.startsWith(`${v.url}/npm/@types/node/-/node-`)).toBe(true);
      const tags = (await (await fetch(`${v.url}/npm/-/package/@types/node/dist-tags`)).json()) as Record<string, string>;
      expect(Object.keys(tags).length).toBe(23);
      // a scoped tarball (encoded slash), verified with the pool `digests` task
      const m = await fetch(`${v.url}/npm/@types%2fms/-/ms-0.7.34.tgz`);
      expect(m.status).toBe(200);
      expect(new Uint8Array(await m.arrayBuffer())).toEqual(await Bun.file(`${NPM_FIXTURES}/tarballs/types-ms-0.7.34.tgz`).bytes());
      expect(reg.tarballGets()).toContain("/@types/ms/-/ms-0.7.34.tgz");
    } finally {
      await v.stop();
    }
  });
});

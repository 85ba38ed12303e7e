/**
 * e2e: curl (a real client) and fetch through an http proxy repository configured in the seed's layout
 * (`backends: [{type: http, config: {prefix: /archive.apache.org/, base_url}}]` → `GET /archive.apache.org/<path>`
 * = `base_url + <path>`), plus a native repository with metadata patterns. Under CI=true a missing curl fails.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

const CI = process.env.CI === "true";
const CURL = Bun.which("curl");
if (!CURL) console.warn(`http e2e: curl not found — ${CI ? "FAILING (CI=true)" : "skipping the curl tests"}`);
const curlTest = CURL || CI ? test : test.skip;

const TARBALL = "hadoop/common/hadoop-3.3.6/hadoop-3.3.6.tar.gz";

async function curl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  if (!CURL) throw new Error("curl is required under CI=true");
  const p = Bun.spawn([CURL, "-sS", "--max-time", "60", ...args], { stdout: "pipe", stderr: "pipe", timeout: 90_000, killSignal: "SIGKILL" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

function sha256(b: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(b).digest("hex");
}

/** Parses `curl -D -` header dumps: the last response's status and headers. */
function lastHeaders(dump: string): { status: number; headers: Record<string, string> } {
  const blocks = dump.split(/\r?\n\r?\n/).filter((b) => b.startsWith("HTTP/"));
  const last = blocks[blocks.length - 1] ?? "";
  const [statusLine, ...lines] = last.split(/\r?\n/);
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(":");
    if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  return { status: Number(statusLine.split(" ")[1]), headers };
}

describe("http proxy, seed layout (/archive.apache.org/ → base_url)", () => {
  let up: TestUpstream;
  let vault: StartedVault;
  let body: Uint8Array;
  let base: string;

  beforeAll(async () => {
    const root = await tmpDataDir("http-upstream-");
    body = new Uint8Array(3 * 1024 * 1024 + 17);
    crypto.getRandomValues(body.subarray(0, 65536));
    for (let i = 65536; i < body.length; i++) body[i] = (i * 31) & 0xff;
    await mkdir(join(root, "dist", TARBALL, ".."), { recursive: true });
    await writeFile(join(root, "dist", TARBALL), body);
    await writeFile(join(root, "secret.txt"), "outside the base\n");
    up = await startUpstream({
      root,
      handler(req) {
        const p = new URL(req.url).pathname;
        if (p === "/dist/hadoop/") {
          const etag = '"listing-1"';
          if (req.headers.get("if-none-match") === etag) return new Response(null, { status: 304, headers: { etag } });
          return new Response('<a href="common/">common/</a>\n', { headers: { "content-type": "text/html", etag } });
        }
        return undefined;
      },
    });
    vault = await startVault({ config: { backends: [{ type: "http", config: { prefix: "/archive.apache.org/", base_url: `${up.url}/dist` } }] } });
    base = `${vault.url}/archive.apache.org`;
  });
  afterAll(async () => {
    await vault?.stop();
    await up?.stop();
  });

  curlTest("curl downloads the artifact (MISS), then from the cache (HIT), one upstream request", async () => {
    const dir = await tmpDataDir("curl-out-");
    const a = await curl(["-f", "-D", "-", "-o", join(dir, "a.tgz"), `${base}/${TARBALL}`]);
    expect(a.code).toBe(0);
    expect(lastHeaders(a.out).headers["x-vault-cache"]).toBe("MISS");
    expect(sha256(await Bun.file(join(dir, "a.tgz")).bytes())).toBe(sha256(body));
    const b = await curl(["-f", "-D", "-", "-o", join(dir, "b.tgz"), `${base}/${TARBALL}`]);
    expect(b.code).toBe(0);
    const h = lastHeaders(b.out);
    expect(h.status).toBe(200);
    expect(h.headers["x-vault-cache"]).toBe("HIT");
    expect(Number(h.headers["content-length"])).toBe(body.length);
    expect(sha256(await Bun.file(join(dir, "b.tgz")).bytes())).toBe(sha256(body));
    expect(up.count(`/dist/${TARBALL}`)).toBe(1);
  });

  curlTest("curl: HEAD, Range (206) and resume (-C -) from the cache", async () => {
    const head = await curl(["-f", "-I", `${base}/${TARBALL}`]);
    expect(head.code).toBe(0);
    const hh = lastHeaders(head.out);
    expect(hh.status).toBe(200);
    expect(Number(hh.headers["content-length"])).toBe(body.length);
    expect(hh.headers["accept-ranges"]).toBe("bytes");

    const dir = await tmpDataDir("curl-range-");
    const r = await curl(["-f", "-D", "-", "-r", "1000-1999", "-o", join(dir, "part"), `${base}/${TARBALL}`]);
    expect(r.code).toBe(0);
    const rh = lastHeaders(r.out);
    expect(rh.status).toBe(206);
    expect(rh.headers["content-range"]).toBe(`bytes 1000-1999/${body.length}`);
    expect(sha256(await Bun.file(join(dir, "part")).bytes())).toBe(sha256(body.subarray(1000, 2000)));

    await writeFile(join(dir, "resume"), body.subarray(0, 12345));
    const c = await curl(["-f", "-C", "-", "-o", join(dir, "resume"), `${base}/${TARBALL}`]);
    expect(c.code).toBe(0);
    expect(sha256(await Bun.file(join(dir, "resume")).bytes())).toBe(sha256(body));
    expect(up.count(`/dist/${TARBALL}`)).toBe(1);
  });

  curlTest("curl -r with several ranges gets a 206 multipart/byteranges with each slice", async () => {
    const dir = await tmpDataDir("curl-multi-");
    const r = await curl(["-f", "-D", "-", "-r", "0-99,5000-5099", "-o", join(dir, "multi"), `${base}/${TARBALL}`]);
    expect(r.code).toBe(0);
    const h = lastHeaders(r.out);
    expect(h.status).toBe(206);
    const boundary = /^multipart\/byteranges; boundary=(\S+)$/.exec(h.headers["content-type"])?.[1];
    expect(boundary).toBeDefined();
    const text = Buffer.from(await Bun.file(join(dir, "multi")).bytes()).toString("latin1");
    const parts = text.split(`--${boundary}`).slice(1, -1);
    expect(parts.map((p) => /content-range: (.*)\r\n/.exec(p)?.[1])).toEqual([`bytes 0-99/${body.length}`, `bytes 5000-5099/${body.length}`]);
    const slice = (p: string) => Buffer.from(p.split("\r\n\r\n").slice(1).join("\r\n\r\n").replace(/\r\n$/, ""), "latin1");
    expect(sha256(slice(parts[0]))).toBe(sha256(body.subarray(0, 100)));
    expect(sha256(slice(parts[1]))).toBe(sha256(body.subarray(5000, 5100)));
  });

  curlTest("curl: upstream 404 → 404 text/plain; unsupported method → 405", async () => {
    const nf = await curl(["-D", "-", "-o", "/dev/null", `${base}/hadoop/nothing.tgz`]);
    const h = lastHeaders(nf.out);
    expect(h.status).toBe(404);
    expect(h.headers["content-type"]).toStartWith("text/plain");
    const post = await curl(["-D", "-", "-o", "/dev/null", "-X", "POST", "--data", "x", `${base}/${TARBALL}`]);
    expect(lastHeaders(post.out).status).toBe(405);
  });

  test("fetch: conditional GET → 304; directory listings are mutable metadata; nothing outside the base is requested", async () => {
    const first = await fetch(`${base}/${TARBALL}`, { method: "HEAD" });
    const etag = first.headers.get("etag")!;
    expect(etag).toBeTruthy();
    const c = await fetch(`${base}/${TARBALL}`, { headers: { "if-none-match": etag } });
    expect(c.status).toBe(304);

    const l1 = await fetch(`${base}/hadoop/`);
    expect(l1.status).toBe(200);
    expect(await l1.text()).toContain("common/");
    const l2 = await fetch(`${base}/hadoop/`, { headers: { "cache-control": "max-age=0" } });
    expect(l2.status).toBe(200);
    await l2.arrayBuffer();
    expect(l2.headers.get("x-vault-cache")).toBe("REVALIDATED"); // mutable: client max-age=0 → conditional upstream check
    expect(up.count("/dist/hadoop/")).toBe(2);

    const redirect = await fetch(`${vault.url}/archive.apache.org`, { redirect: "manual" });
    expect(redirect.status).toBe(301);
    expect(redirect.headers.get("location")).toBe("/archive.apache.org/");
    for (const r of up.requests) expect(r.path.startsWith("/dist/")).toBe(true);
    expect(up.count("/secret.txt")).toBe(0);
  });
});

describe("http proxy, native config with metadata patterns", () => {
  let up: TestUpstream;
  let vault: StartedVault;
  let version = 1;

  beforeAll(async () => {
    up = await startUpstream({
      handler(req) {
        const p = new URL(req.url).pathname;
        if (p === "/repo/index.json") {
          const etag = `"v${version}"`;
          if (req.headers.get("if-none-match") === etag) return new Response(null, { status: 304, headers: { etag } });
          return Response.json({ version }, { headers: { etag } });
        }
        if (p === "/repo/pkg-1.0.tgz") return new Response("immutable bytes\n", { headers: { etag: '"pkg"' } });
        return new Response("not found\n", { status: 404 });
      },
    });
    vault = await startVault({
      config: {
        repositories: [
          { name: "files", format: "http", type: "proxy", upstream: `${up.url}/repo/`, metadataPatterns: ["**/*.json"], cache: { metadataTtlSeconds: 0 } },
        ],
      },
    });
  });
  afterAll(async () => {
    await vault?.stop();
    await up?.stop();
  });

  test("a metadata pattern is revalidated after its TTL; other files are immutable", async () => {
    const a = await fetch(`${vault.url}/files/index.json`);
    expect(await a.json()).toEqual({ version: 1 });
    const b = await fetch(`${vault.url}/files/index.json`);
    expect(await b.json()).toEqual({ version: 1 });
    expect(b.headers.get("x-vault-cache")).toBe("REVALIDATED");
    version = 2;
    const c = await fetch(`${vault.url}/files/index.json`);
    expect(await c.json()).toEqual({ version: 2 });
    expect(up.count("/repo/index.json")).toBe(3);

    for (let i = 0; i < 3; i++) {
      const r = await fetch(`${vault.url}/files/pkg-1.0.tgz`, { headers: { "cache-control": "no-cache" } });
      expect(await r.text()).toBe("immutable bytes\n");
      if (i > 0) expect(r.headers.get("x-vault-cache")).toBe("HIT");
      }
    expect(up.count("/repo/pkg-1.0.tgz")).toBe(1);
  });
});

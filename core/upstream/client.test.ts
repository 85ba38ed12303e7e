/** Tests of the upstream client against real loopback servers: raw bodies, credentials, redirects, retries, timeouts, proxy env. */
import { afterEach, describe, expect, test } from "bun:test";
import { causeOf, createUpstreamClient, noProxyMatches, parseNoProxy } from "./client.ts";
import { selfSignedCert, startTlsServer } from "../../test/helpers/tls.ts";
import { renderMetrics } from "../metrics.ts";
import { startUpstream, type TestUpstream } from "../../test/helpers/upstream.ts";
import { silentLogger } from "../log.ts";
import { VaultError } from "../errors.ts";
import type { RepositoryConfig } from "../config/types.ts";

const started: TestUpstream[] = [];
afterEach(async () => {
  while (started.length) await started.pop()!.stop();
});
async function upstream(handler: (req: Request) => Response | undefined | Promise<Response | undefined>) {
  const u = await startUpstream({ handler });
  started.push(u);
  return u;
}
const repo = (upstream: string, extra: Partial<RepositoryConfig> = {}): RepositoryConfig => ({ name: "t", format: "http", type: "proxy", upstream, ...extra });

describe("upstream client", () => {
  test("bodies are byte-for-byte (no auto-gunzip) and identity is requested by default", async () => {
    const gz = Bun.gzipSync(new TextEncoder().encode("hello ".repeat(500)));
    const u = await upstream(() => new Response(gz, { headers: { "content-encoding": "gzip" } }));
    const c = createUpstreamClient({ repo: repo(u.url), log: silentLogger, env: {} });
    const res = await c.fetch(u.url + "/a.gz");
    const got = new Uint8Array(await res.arrayBuffer());
    expect(got).toEqual(gz);
    expect(res.headers.get("content-encoding")).toBe("gzip");
    expect(u.requests[0].headers.get("accept-encoding")).toBe("identity");
    expect(res.url).toBe(u.url + "/a.gz");
  });

  test("credentials go only to the configured upstream origin, also across redirects", async () => {
    const other = await upstream(() => new Response("other"));
    const u = await upstream((req) => {
      const p = new URL(req.url).pathname;
      if (p === "/away") return Response.redirect(other.url + "/file", 302);
      return new Response("here");
    });
    const c = createUpstreamClient({ repo: repo(u.url + "/base/", { upstreamAuth: { username: "bob", password: "s3cret" } }), log: silentLogger, env: {} });
    expect(await (await c.fetch(u.url + "/x")).text()).toBe("here");
    expect(u.requests[0].headers.get("authorization")).toBe("Basic " + btoa("bob:s3cret"));
    const r = await c.fetch(u.url + "/away");
    expect(await r.text()).toBe("other");
    expect(r.url).toBe(other.url + "/file");
    expect(u.requests[1].headers.get("authorization")).toBe("Basic " + btoa("bob:s3cret"));
    expect(other.requests[0].headers.get("authorization")).toBeNull();
    // a direct request to another origin never carries them either
    await (await c.fetch(other.url + "/direct")).text();
    expect(other.requests[1].headers.get("authorization")).toBeNull();

    const bearer = createUpstreamClient({ repo: repo(u.url, { upstreamAuth: { token: "tok" } }), log: silentLogger, env: {} });
    await (await bearer.fetch(u.url + "/y")).text();
    expect(u.requests.at(-1)!.headers.get("authorization")).toBe("Bearer tok");
  });

  test("GET is retried on 503 with backoff, then the final status is returned", async () => {
    let n = 0;
    const u = await upstream(() => (++n < 3 ? new Response("busy", { status: 503 }) : new Response("ok")));
    const c = createUpstreamClient({ repo: repo(u.url), log: silentLogger, env: {} });
    const r = await c.fetch(u.url + "/f");
    expect(r.status).toBe(200);
    expect(await r.text()).toBe("ok");
    expect(u.count("/f")).toBe(3);

    const always = await upstream(() => new Response("down", { status: 502 }));
    const r2 = await c.fetch(always.url + "/g", { retries: 1 });
    expect(r2.status).toBe(502);
    expect(always.count("/g")).toBe(2);

    // POST is never retried
    const r3 = await c.fetch(always.url + "/p", { method: "POST", body: "x" });
    expect(r3.status).toBe(502);
    expect(always.count("/p")).toBe(1);
  });

  test("connection refused → VAULT_UPSTREAM_DOWN with a redacted URL", async () => {
    const u = await upstream(() => new Response("x"));
    const dead = u.url;
    await started.pop()!.stop();
    const c = createUpstreamClient({ repo: repo(dead), log: silentLogger, env: {} });
    const err = await c.fetch(`${dead}/f?token=abc`, { retries: 1 }).catch((e) => e);
    expect(err).toBeInstanceOf(VaultError);
    expect(err.code).toBe("VAULT_UPSTREAM_DOWN");
    expect(String(err.detail.url)).toContain("token=REDACTED");
    expect(String(err.detail.url)).not.toContain("abc");
  });

  test("no headers within connectTimeoutMs → VAULT_UPSTREAM_TIMEOUT", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const u = await upstream(async () => {
      await gate;
      return new Response("late");
    });
    const c = createUpstreamClient({ repo: repo(u.url), log: silentLogger, env: {} });
    const t0 = Date.now();
    const err = await c.fetch(u.url + "/slow", { connectTimeoutMs: 150 }).catch((e) => e);
    release();
    expect(err).toBeInstanceOf(VaultError);
    expect(err.code).toBe("VAULT_UPSTREAM_TIMEOUT");
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  test("a body stall longer than readTimeoutMs errors the stream", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const u = await upstream(
      () =>
        new Response(
          new ReadableStream({
            async start(c) {
              c.enqueue(new Uint8Array(100));
              await gate;
              c.close();
            },
          }),
        ),
    );
    const c = createUpstreamClient({ repo: repo(u.url), log: silentLogger, env: {} });
    const res = await c.fetch(u.url + "/stall", { readTimeoutMs: 150 });
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(first.value?.byteLength).toBe(100);
    const err = await reader.read().catch((e) => e);
    release();
    expect(err).toBeInstanceOf(VaultError);
    expect(err.code).toBe("VAULT_UPSTREAM_TIMEOUT");
  });

  test("HTTP_PROXY is used for http targets; NO_PROXY matches by host suffix", async () => {
    const target = await upstream(() => new Response("direct"));
    const proxy = await upstream((req) => new Response("proxied " + req.url));
    const env = { HTTP_PROXY: proxy.url, NO_PROXY: "localhost,.example.internal" };
    const c = createUpstreamClient({ repo: repo("http://upstream.invalid/"), log: silentLogger, env });
    const r = await c.fetch("http://upstream.invalid/x/y?z=1");
    expect(await r.text()).toBe("proxied http://upstream.invalid/x/y?z=1");
    expect(proxy.count("/x/y")).toBe(1);
    const direct = createUpstreamClient({ repo: repo(target.url), log: silentLogger, env: { HTTP_PROXY: proxy.url, NO_PROXY: "127.0.0.1" } });
    expect(await (await direct.fetch(target.url + "/d")).text()).toBe("direct");
    expect(proxy.count("/d")).toBe(0);
  });

  test("NO_PROXY parsing and matching", () => {
    const e = parseNoProxy("example.com, .corp.internal *.svc host:8080 [::1]");
    expect(noProxyMatches(new URL("https://example.com/"), e)).toBe(true);
    expect(noProxyMatches(new URL("https://a.b.example.com/"), e)).toBe(true);
    expect(noProxyMatches(new URL("https://badexample.com/"), e)).toBe(false);
    expect(noProxyMatches(new URL("http://x.corp.internal/"), e)).toBe(true);
    expect(noProxyMatches(new URL("http://corp.internal/"), e)).toBe(true);
    expect(noProxyMatches(new URL("http://a.svc/"), e)).toBe(true);
    expect(noProxyMatches(new URL("http://host:8080/"), e)).toBe(true);
    expect(noProxyMatches(new URL("http://host:9090/"), e)).toBe(false);
    expect(noProxyMatches(new URL("http://[::1]:5000/"), e)).toBe(true);
    expect(noProxyMatches(new URL("http://any/"), parseNoProxy("*"))).toBe(true);
    expect(noProxyMatches(new URL("http://any/"), parseNoProxy(""))).toBe(false);
  });
});

test("causeOf gives clients a short cause without runtime hints", () => {
  expect(causeOf(Object.assign(new Error("x"), { code: "ECONNREFUSED" }))).toBe("ECONNREFUSED");
  expect(causeOf(new Error("Unable to connect. Is the computer able to access the url? For more information, pass `verbose: true` in the second argument to fetch()"))).toBe(
    "Unable to connect. Is the computer able to access the url?",
  );
});

describe("TLS upstreams", () => {
  test("a certificate the system does not trust is rejected (502 naming the code, not retried); upstreamCaFile makes it trusted", async () => {
    const cert = await selfSignedCert();
    let hits = 0;
    const tls = startTlsServer(cert, () => {
      hits++;
      return new Response("over tls");
    });
    try {
      const strict = createUpstreamClient({ repo: repo(tls.url + "/", { name: "tls-strict" }), log: silentLogger, env: {} });
      const err = (await strict.fetch(tls.url + "/f").catch((e) => e)) as VaultError;
      expect(err).toBeInstanceOf(VaultError);
      expect(err.code).toBe("VAULT_UPSTREAM_ERROR");
      expect(err.status).toBe(502);
      expect(err.message).toContain("DEPTH_ZERO_SELF_SIGNED_CERT");
      expect(err.message).toContain("upstreamCaFile");
      expect(hits).toBe(0);
      expect(renderMetrics()).toContain('vault_upstream_errors_total{kind="tls",repository="tls-strict"} 1');

      const trusting = createUpstreamClient({ repo: repo(tls.url + "/", { upstreamCaFile: cert.certFile }), log: silentLogger, env: {} });
      const res = await trusting.fetch(tls.url + "/f");
      expect(await res.text()).toBe("over tls");
      expect(hits).toBe(1);
    } finally {
      await tls.stop();
    }
  });
});

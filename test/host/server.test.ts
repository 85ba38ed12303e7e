/** The host (core/server.ts): ops endpoints, request ids and access log, plugin contexts and mounts, error rendering, read auth, own-port listeners, hostile paths, graceful shutdown. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { readdirSync } from "node:fs";
import { definePlugin, VaultError, type VaultPlugin } from "../../core/plugin.ts";
import { loadPlugins } from "../../core/loader.ts";
import { startVault, REPO_ROOT, type StartedVault } from "../helpers/vault.ts";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { rawRequest } from "../helpers/raw-http.ts";

const ADMIN = { user: "admin", password: "correct horse battery staple" };
const basic = (u: string, p: string) => "Basic " + Buffer.from(`${u}:${p}`).toString("base64");

/** A plugin that reports what the host handed it. */
const calls = { routes: [] as string[], host: [] as string[][], start: [] as string[], stop: [] as string[] };
const probe: VaultPlugin = definePlugin({
  format: "probe",
  apiVersion: 1,
  types: ["hosted", "group"],
  configSchema: { type: "object", properties: { note: { type: "string" } } },
  routes(app, ctx) {
    calls.routes.push(`${ctx.repo.name}@${ctx.repo.mount}`);
    app.get("/info", ({ request }) =>
      Response.json({
        name: ctx.repo.name,
        type: ctx.repo.type,
        mount: ctx.repo.mount,
        baseUrl: ctx.baseUrl(request),
        note: ctx.config.note ?? null,
        members: (ctx.config.members ?? []).map((n) => ctx.member(n)?.repo.name ?? null),
        other: ctx.member("files")?.repo.name ?? null,
      }),
    );
    app.get("/teapot", () => {
      throw new VaultError("VAULT_TEAPOT", 418, "short and stout");
    });
    app.get("/crash", () => {
      throw new Error("secret internal detail");
    });
  },
  hostRoutes(app, ctxs) {
    calls.host.push(ctxs.map((c) => c.repo.name));
    app.get("/v9/probe", () => new Response(ctxs.map((c) => c.repo.name).join(",")));
  },
  renderError: (err) => Response.json({ probeError: err.code, message: err.message }, { status: err.status, headers: err.headers }),
  async start(ctx) {
    calls.start.push(ctx.repo.name);
  },
  async stop(ctx) {
    calls.stop.push(ctx.repo.name);
  },
});

let plugins: Map<string, VaultPlugin>;
let upstream: TestUpstream;
let v: StartedVault;
const logLines: string[] = [];

beforeAll(async () => {
  plugins = await loadPlugins({ plugins: ["./test/fixtures/example-plugin/index.ts"] }, REPO_ROOT, { extra: [probe] });
  upstream = await startUpstream({ handler: (req) => new Response(`upstream says ${new URL(req.url).pathname}\n`) });
  v = await startVault({
    plugins,
    accessLog: (l) => logLines.push(l),
    config: {
      auth: { admin: ADMIN },
      repositories: [
        { name: "p1", format: "probe", type: "hosted", note: "first" },
        { name: "p2", format: "probe", type: "hosted", port: 0 },
        { name: "g1", format: "probe", type: "group", members: ["p1", "p2"] },
        { name: "files", format: "http", type: "proxy", upstream: upstream.url + "/base/" },
        { name: "notes", format: "static", type: "hosted" },
        { name: "secret", format: "static", type: "hosted", anonymousRead: false },
        { name: "deep", format: "probe", type: "hosted", prefix: "/mirror/deep/" },
      ],
    },
  });
});
afterAll(async () => {
  await v?.stop();
  await upstream?.stop();
});

describe("ops endpoints", () => {
  test("/-/health", async () => {
    const r = await fetch(`${v.url}/-/health`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("application/json");
    expect(await r.json()).toEqual({ status: "ok" });
  });

  test("/-/ready answers 200 once started (the database is queried)", async () => {
    const r = await fetch(`${v.url}/-/ready`);
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ status: "ready" });
  });

  test("/-/metrics: Prometheus text with requests by repository and status, and pool gauges", async () => {
    for (let i = 0; i < 3; i++) await (await fetch(`${v.url}/p1/info`)).arrayBuffer();
    await (await fetch(`${v.url}/p1/teapot`)).arrayBuffer();
    const r = await fetch(`${v.url}/-/metrics`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const text = await r.text();
    expect(text).toContain("# TYPE vault_http_requests_total counter");
    expect(text).toMatch(/^vault_http_requests_total\{repository="p1",status="200"\} [3-9]\d*$/m);
    expect(text).toMatch(/^vault_http_requests_total\{repository="p1",status="418"\} 1$/m);
    expect(text).toMatch(/^vault_pool_queue_length 0$/m);
    expect(text).toMatch(/^vault_pool_utilization [\d.]+$/m);
  });
});

describe("requests", () => {
  test("x-request-id is echoed and logged; one JSON line per request", async () => {
    logLines.length = 0;
    const r = await fetch(`${v.url}/p1/info`, { headers: { "x-request-id": "trace-abc.123" } });
    expect(r.status).toBe(200);
    expect(r.headers.get("x-request-id")).toBe("trace-abc.123");
    await r.arrayBuffer();
    const missing = await fetch(`${v.url}/p1/nothing-here`);
    const generated = missing.headers.get("x-request-id");
    expect(generated).toMatch(/^[0-9a-z]+-[0-9a-z]+$/);
    await missing.arrayBuffer();
    await Bun.sleep(0);
    const recs = logLines.map((l) => JSON.parse(l));
    expect(recs).toHaveLength(2);
    expect(recs[0]).toMatchObject({ level: "info", msg: "request", reqId: "trace-abc.123", method: "GET", path: "/p1/info", status: 200, repo: "p1" });
    expect(typeof recs[0].durationMs).toBe("number");
    expect(typeof recs[0].time).toBe("string");
    expect(recs[1]).toMatchObject({ reqId: generated, path: "/p1/nothing-here", status: 404, repo: "p1" });
  });

  test("errors thrown in a repository's routes are rendered by its plugin", async () => {
    const tea = await fetch(`${v.url}/p1/teapot`);
    expect(tea.status).toBe(418);
    expect(await tea.json()).toEqual({ probeError: "VAULT_TEAPOT", message: "short and stout" });
    const crash = await fetch(`${v.url}/p1/crash`);
    expect(crash.status).toBe(500);
    const body = await crash.text();
    expect(JSON.parse(body)).toEqual({ probeError: "VAULT_INTERNAL", message: "internal error" });
    expect(body).not.toContain("secret internal detail");
  });

  test("an unmatched path inside a mount is a 404 in the plugin's shape; outside every mount a plain 404", async () => {
    const inMount = await fetch(`${v.url}/p1/no/such/route`);
    expect(inMount.status).toBe(404);
    expect((await inMount.json()).probeError).toBe("VAULT_NOT_FOUND");
    const outside = await fetch(`${v.url}/nowhere/at/all`);
    expect(outside.status).toBe(404);
    expect(outside.headers.get("content-type")).toBe("text/plain; charset=utf-8");
    expect(await outside.text()).toBe("404 not found\n");
  });
});

describe("plugin contexts and mounts", () => {
  test("routes get the repository's context: name, mount, config, baseUrl from the Host header, members", async () => {
    expect(await (await fetch(`${v.url}/p1/info`)).json()).toEqual({ name: "p1", type: "hosted", mount: "/p1", baseUrl: `${v.url}/p1`, note: "first", members: [], other: null });
    expect(await (await fetch(`${v.url}/g1/info`)).json()).toMatchObject({ name: "g1", type: "group", members: ["p1", "p2"], other: null });
  });

  test("a custom prefix mounts the repository there", async () => {
    expect(await (await fetch(`${v.url}/mirror/deep/info`)).json()).toMatchObject({ name: "deep", mount: "/mirror/deep", baseUrl: `${v.url}/mirror/deep` });
    expect((await fetch(`${v.url}/deep/info`)).status).toBe(404);
  });

  test("a repository with port: gets its own listener serving it at the root, and stays at /<name>", async () => {
    expect(v.listeners).toHaveLength(2);
    const own = v.listeners[1];
    expect(own.repository).toBe("p2");
    expect(own.port).not.toBe(v.port);
    expect(await (await fetch(`${own.url}/info`)).json()).toMatchObject({ name: "p2", mount: "", baseUrl: own.url });
    expect(await (await fetch(`${v.url}/p2/info`)).json()).toMatchObject({ name: "p2", mount: "/p2" });
    expect((await fetch(`${own.url}/-/health`)).status).toBe(404);
  });

  test("routes() runs once per mount, hostRoutes() once per plugin with all its repositories, start() once per repository", async () => {
    expect(calls.routes.sort()).toEqual(["deep@/mirror/deep", "g1@/g1", "p1@/p1", "p2@", "p2@/p2"]);
    expect(calls.host).toEqual([["p1", "p2", "g1", "deep"]]);
    expect(await (await fetch(`${v.url}/v9/probe`)).text()).toBe("p1,p2,g1,deep");
    expect(calls.start.sort()).toEqual(["deep", "g1", "p1", "p2"]);
  });

  test("publicUrl gives baseUrl", async () => {
    const pv = await startVault({ plugins, config: { server: { publicUrl: "https://vault.example.com/" }, repositories: [{ name: "pp", format: "probe", type: "hosted" }] } });
    try {
      expect((await (await fetch(`${pv.url}/pp/info`)).json()).baseUrl).toBe("https://vault.example.com/pp");
    } finally {
      await pv.stop();
    }
  });
});

describe("read permission before plugin routes", () => {
  test("anonymous read allowed by default; refused on a repository with anonymousRead: false (401 in the plugin's shape)", async () => {
    expect((await fetch(`${v.url}/notes/`)).status).toBe(200);
    const r = await fetch(`${v.url}/secret/`);
    expect(r.status).toBe(401);
    expect(r.headers.get("www-authenticate")).toContain("Basic");
    expect((await r.json()).error.code).toBe("VAULT_UNAUTHORIZED");
    const ok = await fetch(`${v.url}/secret/`, { headers: { authorization: basic(ADMIN.user, ADMIN.password) } });
    expect(ok.status).toBe(200);
    expect((await ok.json()).repository).toBe("secret");
    const bad = await fetch(`${v.url}/notes/`, { headers: { authorization: basic(ADMIN.user, "wrong") } });
    expect(bad.status).toBe(401);
  });

  test("writes go through the plugin's own auth (the example plugin requires write)", async () => {
    const anon = await fetch(`${v.url}/notes/a/hello.txt`, { method: "PUT", body: "hello" });
    expect(anon.status).toBe(401);
    const put = await fetch(`${v.url}/notes/a/hello.txt`, { method: "PUT", body: "hello", headers: { authorization: basic(ADMIN.user, ADMIN.password), "content-type": "text/plain" } });
    expect(put.status).toBe(201);
    expect(put.headers.get("x-request-id")).toMatch(/-/); // generated for writes, so the audit log and the response agree
    const get = await fetch(`${v.url}/notes/a/hello.txt`);
    expect(get.status).toBe(200);
    expect(await get.text()).toBe("hello");
  });
});

describe("hostile paths", () => {
  // specs/http-caching.md §10.9, sent byte for byte. Bun resolves `..`, `%2e%2e` and backslashes itself (the
  // result then lies outside /files or is harmless); what still arrives is refused with 400 by the host.
  const cases: [string, number][] = [
    ["/files/../etc/passwd", 404],
    ["/files/%2e%2e/etc/passwd", 404],
    ["/files/..\\etc\\passwd", 404],
    ["/files/%252e%252e/x", 400],
    ["/files/..%2fx", 400],
    ["/files/a%2Fb", 400],
    ["/files/a%5cb", 400],
    ["/files/x%00.tgz", 400],
    ["/files/a%0ab", 400],
    ["/files//etc/passwd", 400],
    ["//etc/passwd", 400], // no mount matches; the host routes (probe) see the path check first
    ["/files/%zz", 400],
    ["/files/%2e%2e%2fetc%2fpasswd", 400],
    ["http://169.254.169.254/latest/meta-data/", 404],
  ];
  for (const [target, status] of cases) {
    test(`${target} → ${status}, nothing fetched`, async () => {
      const before = upstream.requests.length;
      const r = await rawRequest(v.port, target);
      expect(r.status).toBe(status);
      expect(upstream.requests.length).toBe(before);
    });
  }

  test("the 400 comes in the repository's error format", async () => {
    const r = await rawRequest(v.port, "/notes/a%2fb");
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body)).toEqual({ error: { code: "VAULT_BAD_PATH", message: "bad path: encoded slash" } });
  });

  test("a clean path does reach the upstream", async () => {
    const before = upstream.count("/base/dir/file.txt");
    const r = await fetch(`${v.url}/files/dir/file.txt`);
    expect(await r.text()).toBe("upstream says /base/dir/file.txt\n");
    expect(upstream.count("/base/dir/file.txt")).toBe(before + 1);
  });
});

test("graceful shutdown: /-/ready 503, the in-flight download finishes into the cache, stop hooks run", async () => {
  const size = 1024 * 1024;
  const bytes = new Uint8Array(size).map((_, i) => (i * 31) & 0xff);
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const up = await startUpstream({
    handler: (req) =>
      new URL(req.url).pathname === "/slow.bin"
        ? new Response(
            new ReadableStream({
              async start(c) {
                c.enqueue(bytes.slice(0, 64 * 1024));
                await gate;
                c.enqueue(bytes.slice(64 * 1024));
                c.close();
              },
            }),
            { headers: { "content-length": String(size) } },
          )
        : undefined,
  });
  const sv = await startVault({ plugins, config: { repositories: [{ name: "slow", format: "http", type: "proxy", upstream: up.url + "/" }, { name: "pq", format: "probe", type: "hosted" }] } });
  try {
    const res = await fetch(`${sv.url}/slow/slow.bin`);
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    let got = 0;
    const chunks: Uint8Array[] = [];
    while (got < 1) {
      const { value } = await reader.read();
      chunks.push(value!);
      got += value!.length;
    }
    calls.stop.length = 0;
    const stopping = sv.stop(20);
    const ready = await sv.vault.fetch(new Request(`${sv.url}/-/ready`));
    expect(ready.status).toBe(503);
    expect(await ready.json()).toEqual({ status: "stopping" });
    expect((await sv.vault.fetch(new Request(`${sv.url}/-/health`))).status).toBe(200);
    open();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
      got += value.length;
    }
    expect(got).toBe(size);
    expect(Buffer.concat(chunks).equals(Buffer.from(bytes))).toBe(true);
    await stopping;
    expect(calls.stop).toEqual(["pq"]);
    const db = new Database(join(sv.dataDir, "vault.db"), { readonly: true });
    try {
      expect(db.query("SELECT size_bytes FROM artifacts WHERE repository = 'slow' AND path = 'slow.bin'").get()).toEqual({ size_bytes: size });
    } finally {
      db.close();
    }
    expect(readdirSync(join(sv.dataDir, "store", "tmp")).length).toBe(0);
  } finally {
    open();
    await sv.stop();
    await up.stop();
  }
}, 60_000);

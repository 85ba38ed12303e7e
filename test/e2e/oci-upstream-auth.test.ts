// The proxy's upstream Bearer token dance against a token-protected registry (another vault: hosted, anonymous read
// off, its own token endpoint), with configured credentials and anonymously; tokens cached; a repository on its own
// port; the seed config's `dockerhub` backend layout (/<prefix>/<image>/manifests/<ref>).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { requireTools } from "../helpers/registry.ts";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { ALL_MANIFESTS, BUSYBOX_LAYER, BUSYBOX_LAYOUT, BUSYBOX_MANIFEST, checkDirImage, mustSkopeo, sha256 } from "./oci-env.ts";

const HAVE = requireTools(["skopeo"]);
const PW = "upstream-admin-pw";

describe.skipIf(!HAVE)("oci proxy: upstream token auth", () => {
  let upstream: StartedVault;
  let vault: StartedVault;
  let front: TestUpstream;
  const upstreamLog: { method: string; path: string; status: number }[] = [];
  const tokenRequests = () => upstreamLog.filter((l) => l.path === "/private/token").length;

  beforeAll(async () => {
    upstream = await startVault({
      config: {
        auth: { admin: { user: "admin", password: PW } },
        repositories: [
          { name: "private", format: "oci", type: "hosted", anonymousRead: false },
          { name: "public", format: "oci", type: "hosted", anonymousRead: true },
        ],
      },
      accessLog: (line) => {
        const r = JSON.parse(line);
        upstreamLog.push({ method: r.method, path: r.path, status: r.status });
      },
    });
    await mustSkopeo([
      "copy",
      "--dest-tls-verify=false",
      "--dest-creds",
      `admin:${PW}`,
      "--preserve-digests",
      `oci:${BUSYBOX_LAYOUT}:1.35.0`,
      `docker://127.0.0.1:${upstream.port}/private/busybox:1.35.0`,
    ]);
    await mustSkopeo([
      "copy",
      "--dest-tls-verify=false",
      "--dest-creds",
      `admin:${PW}`,
      "--preserve-digests",
      `oci:${BUSYBOX_LAYOUT}:1.35.0`,
      `docker://127.0.0.1:${upstream.port}/public/busybox:1.35.0`,
    ]);
    // A Docker Hub-like front: the registry API refuses Basic credentials and challenges with a realm on another host
    // (the upstream vault's token endpoint); Bearer requests are forwarded to the upstream vault.
    front = await startUpstream({
      handler: async (req) => {
        const u = new URL(req.url);
        if (!u.pathname.startsWith("/v2/")) return new Response("not found", { status: 404 });
        const auth = req.headers.get("authorization") ?? "";
        if (!auth.startsWith("Bearer "))
          return new Response('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}', {
            status: 401,
            headers: { "www-authenticate": `Bearer realm="${upstream.url}/private/token",service="front.test"`, "content-type": "application/json" },
          });
        const res = await fetch(`${upstream.url}/private${u.pathname}${u.search}`, { method: req.method, headers: { authorization: auth, accept: req.headers.get("accept") ?? "*/*" } });
        return new Response(req.method === "HEAD" ? null : res.body, { status: res.status, headers: res.headers });
      },
    });
    vault = await startVault({
      config: {
        repositories: [
          { name: "mirror", format: "oci", type: "proxy", upstream: front.url, upstreamAuth: { username: "admin", password: PW } },
          { name: "anon", format: "oci", type: "proxy", upstream: front.url },
          { name: "pub", format: "oci", type: "proxy", upstream: `${upstream.url}/public` },
          { name: "basic", format: "oci", type: "proxy", upstream: `${upstream.url}/private`, upstreamAuth: { username: "admin", password: PW } },
          { name: "own", format: "oci", type: "proxy", upstream: `${upstream.url}/private`, upstreamAuth: { username: "admin", password: PW }, port: 0 },
        ],
        backends: [{ type: "dockerhub", config: { prefix: "/dockerhub/", registry_url: `${upstream.url}/private`, username: "admin", password: PW } }],
      },
    });
  }, 120_000);

  afterAll(async () => {
    await vault?.stop();
    await front?.stop();
    await upstream?.stop();
  });

  test("Bearer dance with configured credentials against a registry whose token service is on another host; tokens cached", async () => {
    const before = tokenRequests();
    const out = join(await tmpDataDir("oci-ua-"), "a");
    await mustSkopeo(["copy", "--src-tls-verify=false", `docker://127.0.0.1:${vault.port}/mirror/busybox:1.35.0`, `dir:${out}`]);
    await checkDirImage(out, BUSYBOX_MANIFEST);
    // tag HEAD, manifest GET and two blob GETs upstream, all with one token for repository:busybox:pull
    expect(tokenRequests() - before).toBe(1);
    expect(front.count((r) => r.path === `/v2/busybox/blobs/${BUSYBOX_LAYER}` && r.headers.get("authorization")?.startsWith("Bearer ") === true)).toBe(1);
    const again = await fetch(`${vault.url}/v2/mirror/busybox/blobs/${BUSYBOX_LAYER}`, { method: "HEAD" });
    expect(again.status).toBe(200);
    const tags = await (await fetch(`${vault.url}/v2/mirror/busybox/tags/list`)).json();
    expect(tags.tags).toEqual(["1.35.0"]);
    expect(tokenRequests() - before).toBe(1);
    // the credentials went to the token service only, never to the registry host
    expect(front.count((r) => r.headers.get("authorization")?.startsWith("Basic ") === true && r.path !== "/v2/")).toBe(0);
  });

  test("anonymous Bearer dance (anonymous pull allowed upstream)", async () => {
    const before = upstreamLog.filter((l) => l.path === "/public/token").length;
    const out = join(await tmpDataDir("oci-ua-"), "pub");
    await mustSkopeo(["copy", "--src-tls-verify=false", `docker://127.0.0.1:${vault.port}/pub/busybox:1.35.0`, `dir:${out}`]);
    await checkDirImage(out, BUSYBOX_MANIFEST);
    expect(upstreamLog.filter((l) => l.path === "/public/token").length - before).toBe(1);
  });

  test("anonymous upstream access refused: the proxy answers with OCI error JSON", async () => {
    const res = await fetch(`${vault.url}/v2/anon/busybox/manifests/1.35.0`, { headers: { accept: ALL_MANIFESTS } });
    expect(res.status).toBeGreaterThanOrEqual(500);
    const body = await res.json();
    expect(body.errors[0].code).toBe("UNAVAILABLE");
  });

  test("an upstream that accepts Basic credentials on its API is used with them", async () => {
    const res = await fetch(`${vault.url}/v2/basic/busybox/manifests/1.35.0`, { headers: { accept: ALL_MANIFESTS } });
    expect(res.status).toBe(200);
    expect(sha256(new Uint8Array(await res.arrayBuffer()))).toBe(BUSYBOX_MANIFEST);
  });

  test("a repository on its own port answers /v2/<image>/… at the root", async () => {
    const own = vault.listeners.find((l) => l.repository === "own")!;
    expect(own.port).not.toBe(vault.port);
    const out = join(await tmpDataDir("oci-ua-"), "own");
    await mustSkopeo(["copy", "--src-tls-verify=false", `docker://127.0.0.1:${own.port}/busybox:1.35.0`, `dir:${out}`]);
    await checkDirImage(out, BUSYBOX_MANIFEST);
    const base = await fetch(`${own.url}/v2/`);
    expect(base.headers.get("www-authenticate")).toBe(`Bearer realm="${own.url}/token",service="127.0.0.1:${own.port}"`);
  });

  test("the seed config's dockerhub backend: /<prefix>/<image>/manifests/<ref>", async () => {
    const res = await fetch(`${vault.url}/dockerhub/busybox/manifests/1.35.0`, { headers: { accept: ALL_MANIFESTS } });
    expect(res.status).toBe(200);
    expect(res.headers.get("docker-content-digest")).toBe(BUSYBOX_MANIFEST);
    expect(sha256(new Uint8Array(await res.arrayBuffer()))).toBe(BUSYBOX_MANIFEST);
    const blob = await fetch(`${vault.url}/dockerhub/busybox/blobs/${BUSYBOX_LAYER}`);
    expect(sha256(new Uint8Array(await blob.arrayBuffer()))).toBe(BUSYBOX_LAYER);
  });
});

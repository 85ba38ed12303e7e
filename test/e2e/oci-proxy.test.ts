// OCI pull-through proxy against a real upstream: Debian's docker-registry filled with skopeo from the fixture OCI
// layouts; skopeo (copy by tag, by digest, --all; inspect; list-tags) through the vault; HEAD revalidation of tags;
// Docker Hub's library/ and root/containerd addressing; digest verification; 20 concurrent pulls of one 64 MiB layer;
// the upstream stopped mid-test (stale vs OCI error JSON).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { requireTools, skopeo, startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import {
  ALL_MANIFESTS,
  BUSYBOX_CONFIG,
  BUSYBOX_LAYER,
  BUSYBOX_LAYOUT,
  BUSYBOX_MANIFEST,
  BUSYBOX_V2S2_MANIFEST,
  checkDirImage,
  DOCKER_MANIFEST,
  fillUpstream,
  mustSkopeo,
  OCI_MANIFEST,
  pseudoRandomBytes,
  pushBlob,
  sha256,
  TESTREPO_LAYOUT,
  TESTREPO_V1,
} from "./oci-env.ts";

const HAVE = requireTools(["docker-registry", "skopeo"]);

describe.skipIf(!HAVE)("oci proxy against docker-registry", () => {
  let reg: TestRegistry;
  let vault: StartedVault;
  let host: string;
  let bigDigest: string;
  const BIG = 64 * 1024 * 1024;

  beforeAll(async () => {
    reg = await startRegistry();
    await fillUpstream(reg);
    bigDigest = await pushBlob(reg.url, "big/layer", pseudoRandomBytes(BIG, 7));
    vault = await startVault({
      config: {
        repositories: [
          // tagTtlSeconds 0: every tag request revalidates with HEAD, so the test sees the upstream traffic
          { name: "hub", format: "oci", type: "proxy", upstream: reg.url, libraryPrefix: true, root: true, tagTtlSeconds: 0, namespaces: { "mirror.test": { upstream: reg.url } } },
          { name: "fresh", format: "oci", type: "proxy", upstream: reg.url, libraryPrefix: true, tagTtlSeconds: 3600 },
        ],
      },
    });
    host = `127.0.0.1:${vault.port}`;
  }, 120_000);

  afterAll(async () => {
    await vault?.stop();
    await reg?.stop();
  });

  const manifestGets = (name: string, ref: string) => reg.count((r) => r.method === "GET" && r.uri === `/v2/${name}/manifests/${ref}`);
  const manifestHeads = (name: string, ref: string) => reg.count((r) => r.method === "HEAD" && r.uri === `/v2/${name}/manifests/${ref}`);
  /** Waits until the registry logged `n` requests of `method` for the manifest (its log is read asynchronously). */
  const logged = (method: string, name: string, ref: string, n: number) => reg.waitForCount((r) => r.method === method && r.uri === `/v2/${name}/manifests/${ref}`, n);
  const blobGets = (name: string, digest: string) => reg.count((r) => r.method === "GET" && r.uri === `/v2/${name}/blobs/${digest}`);

  test("skopeo copy by tag through the proxy: byte-identical manifest and blobs; library/ added for one-component names", async () => {
    const out = join(await tmpDataDir("oci-out-"), "busybox");
    await mustSkopeo(["copy", "--src-tls-verify=false", `docker://${host}/hub/busybox:1.35.0`, `dir:${out}`]);
    const blobs = await checkDirImage(out, BUSYBOX_MANIFEST);
    expect(blobs.sort()).toEqual([BUSYBOX_LAYER, BUSYBOX_CONFIG].sort());
    expect(await reg.waitForCount((r) => r.method === "GET" && r.uri === `/v2/library/busybox/blobs/${BUSYBOX_LAYER}`, 1)).toBe(1);
    // the explicit library/ name shares the cached entries
    const res = await fetch(`${vault.url}/v2/hub/library/busybox/blobs/${BUSYBOX_LAYER}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("docker-content-digest")).toBe(BUSYBOX_LAYER);
    expect(sha256(new Uint8Array(await res.arrayBuffer()))).toBe(BUSYBOX_LAYER);
    expect(blobGets("library/busybox", BUSYBOX_LAYER)).toBe(1);
  });

  test("skopeo copy by digest and skopeo inspect", async () => {
    const out = join(await tmpDataDir("oci-out-"), "bydigest");
    await mustSkopeo(["copy", "--src-tls-verify=false", `docker://${host}/hub/busybox@${BUSYBOX_MANIFEST}`, `dir:${out}`]);
    await checkDirImage(out, BUSYBOX_MANIFEST);
    const info = JSON.parse(await mustSkopeo(["inspect", "--tls-verify=false", `docker://${host}/hub/busybox:1.35.0`]));
    expect(info.Digest).toBe(BUSYBOX_MANIFEST);
    expect(info.Architecture).toBe("amd64");
    expect(info.Layers).toEqual([BUSYBOX_LAYER]);
    const raw = await mustSkopeo(["inspect", "--raw", "--tls-verify=false", `docker://${host}/hub/busybox:1.35.0`]);
    expect(sha256(raw)).toBe(BUSYBOX_MANIFEST);
  });

  test("skopeo copy --all of a multi-platform index keeps every digest", async () => {
    const out = join(await tmpDataDir("oci-out-"), "testrepo");
    await mustSkopeo(["copy", "--all", "--preserve-digests", "--src-tls-verify=false", `docker://${host}/hub/regclient/testrepo:v1`, `dir:${out}`]);
    const blobs = new Set(await checkDirImage(out, TESTREPO_V1));
    const index = JSON.parse(await Bun.file(join(out, "manifest.json")).text());
    expect(index.manifests.length).toBe(4);
    const needed = new Set<string>();
    for (const m of index.manifests) {
      const bytes = new Uint8Array(await Bun.file(join(out, `${m.digest.slice(7)}.manifest.json`)).arrayBuffer());
      expect(sha256(bytes)).toBe(m.digest);
      const child = JSON.parse(new TextDecoder().decode(bytes));
      needed.add(child.config.digest);
      for (const l of child.layers) needed.add(l.digest);
    }
    // every blob of every platform came through the vault, each equal to the fixture's bytes
    for (const d of needed) {
      expect(blobs.has(d)).toBe(true);
      expect(sha256(new Uint8Array(await Bun.file(join(TESTREPO_LAYOUT, "blobs", "sha256", d.slice(7))).arrayBuffer()))).toBe(d);
    }
  });

  test("the Docker schema 2 variant is stored and served as is (Content-Type, digest)", async () => {
    const out = join(await tmpDataDir("oci-out-"), "v2s2");
    await mustSkopeo(["copy", "--src-tls-verify=false", "--preserve-digests", `docker://${host}/hub/busybox:v2s2`, `dir:${out}`]);
    await checkDirImage(out, BUSYBOX_V2S2_MANIFEST);
    const res = await fetch(`${vault.url}/v2/hub/busybox/manifests/v2s2`, { headers: { accept: DOCKER_MANIFEST } });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe(DOCKER_MANIFEST);
    expect(res.headers.get("docker-content-digest")).toBe(BUSYBOX_V2S2_MANIFEST);
    expect(res.headers.get("etag")).toBe(`"${BUSYBOX_V2S2_MANIFEST}"`);
    expect(sha256(new Uint8Array(await res.arrayBuffer()))).toBe(BUSYBOX_V2S2_MANIFEST);
  });

  test("Accept negotiation: an OCI manifest is not served to a client accepting only Docker types; 304 on the ETag", async () => {
    const res = await fetch(`${vault.url}/v2/hub/busybox/manifests/1.35.0`, { headers: { accept: DOCKER_MANIFEST } });
    expect(res.status).toBe(404);
    expect((await res.json()).errors[0].code).toBe("MANIFEST_UNKNOWN");
    const ok = await fetch(`${vault.url}/v2/hub/busybox/manifests/${BUSYBOX_MANIFEST}`, { headers: { accept: ALL_MANIFESTS } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("content-type")).toBe(OCI_MANIFEST);
    expect(ok.headers.get("content-length")).toBe("349");
    await ok.arrayBuffer();
    const nm = await fetch(`${vault.url}/v2/hub/busybox/manifests/${BUSYBOX_MANIFEST}`, { headers: { "if-none-match": `"${BUSYBOX_MANIFEST}"` } });
    expect(nm.status).toBe(304);
    const head = await fetch(`${vault.url}/v2/hub/busybox/manifests/${BUSYBOX_MANIFEST}`, { method: "HEAD", headers: { accept: OCI_MANIFEST } });
    expect(head.status).toBe(200);
    expect(head.headers.get("docker-content-digest")).toBe(BUSYBOX_MANIFEST);
    expect(head.headers.get("content-length")).toBe("349");
  });

  test("skopeo list-tags; tags list pagination", async () => {
    const out = JSON.parse(await mustSkopeo(["list-tags", "--tls-verify=false", `docker://${host}/hub/busybox`]));
    expect(out.Tags.sort()).toEqual(["1.35.0", "latest", "v2s2"]);
    const page = await fetch(`${vault.url}/v2/hub/busybox/tags/list?n=2`);
    expect(await page.json()).toEqual({ name: "hub/busybox", tags: ["1.35.0", "latest"] });
    expect(page.headers.get("link")).toBe('</v2/hub/busybox/tags/list?n=2&last=latest>; rel="next"');
    const rest = await fetch(`${vault.url}/v2/hub/busybox/tags/list?n=2&last=latest`);
    expect(await rest.json()).toEqual({ name: "hub/busybox", tags: ["v2s2"] });
    expect(rest.headers.get("link")).toBeNull();
    const unknown = await fetch(`${vault.url}/v2/hub/nosuch/tags/list`);
    expect(unknown.status).toBe(404);
    expect((await unknown.json()).errors[0].code).toBe("NAME_UNKNOWN");
  });

  test("tags are revalidated with HEAD (no GET) and follow an upstream re-tag", async () => {
    await mustSkopeo(["copy", "--dest-tls-verify=false", "--preserve-digests", `oci:${TESTREPO_LAYOUT}:a1`, `docker://${reg.host}/library/busybox:moving`]);
    const get = () => fetch(`${vault.url}/v2/hub/busybox/manifests/moving`, { headers: { accept: ALL_MANIFESTS } });
    const first = await get();
    expect(first.status).toBe(200);
    const a1 = first.headers.get("docker-content-digest")!;
    await first.arrayBuffer();
    const again = await get();
    expect(again.headers.get("docker-content-digest")).toBe(a1);
    expect(again.headers.get("x-vault-cache")).toBe("REVALIDATED");
    await again.arrayBuffer();
    // the first request GETs the tag (one round trip); the revalidation is a HEAD
    expect(await logged("GET", "library/busybox", "moving", 1)).toBe(1);
    expect(await logged("HEAD", "library/busybox", "moving", 1)).toBe(1);
    // re-tag upstream: the next request follows (HEAD sees the new digest, the manifest is fetched by digest)
    await mustSkopeo(["copy", "--dest-tls-verify=false", "--preserve-digests", `oci:${BUSYBOX_LAYOUT}:1.35.0`, `docker://${reg.host}/library/busybox:moving`]);
    const moved = await get();
    expect(moved.headers.get("docker-content-digest")).toBe(BUSYBOX_MANIFEST);
    expect(sha256(new Uint8Array(await moved.arrayBuffer()))).toBe(BUSYBOX_MANIFEST);
    expect(await logged("HEAD", "library/busybox", "moving", 2)).toBe(2);
    expect(manifestGets("library/busybox", "moving")).toBe(1);
    // a fresh tag (long TTL) is served without asking upstream at all
    const upstreamTagRequests = () => manifestHeads("library/busybox", "latest") + manifestGets("library/busybox", "latest");
    const before = upstreamTagRequests();
    for (let i = 0; i < 3; i++) await (await fetch(`${vault.url}/v2/fresh/busybox/manifests/latest`, { headers: { accept: ALL_MANIFESTS } })).arrayBuffer();
    await reg.waitForCount((r) => r.uri === "/v2/library/busybox/manifests/latest", before + 1);
    expect(upstreamTagRequests()).toBe(before + 1);
  });

  test("root addressing (Docker registry-mirrors) and containerd's /<repo>/v2 with ?ns=", async () => {
    const root = await fetch(`${vault.url}/v2/library/busybox/manifests/1.35.0`, { headers: { accept: OCI_MANIFEST } });
    expect(root.status).toBe(200);
    expect(root.headers.get("docker-content-digest")).toBe(BUSYBOX_MANIFEST);
    await root.arrayBuffer();
    const ctrd = await fetch(`${vault.url}/hub/v2/library/busybox/manifests/1.35.0?ns=${reg.host}`, { headers: { accept: OCI_MANIFEST } });
    expect(ctrd.status).toBe(200);
    expect(ctrd.headers.get("oci-namespace")).toBe(reg.host);
    await ctrd.arrayBuffer();
    const other = await fetch(`${vault.url}/hub/v2/library/busybox/manifests/1.35.0?ns=mirror.test`, { headers: { accept: OCI_MANIFEST } });
    expect(other.status).toBe(200);
    expect(other.headers.get("oci-namespace")).toBe("mirror.test");
    await other.arrayBuffer();
    const unknown = await fetch(`${vault.url}/hub/v2/library/busybox/manifests/1.35.0?ns=quay.io`);
    expect(unknown.status).toBe(404);
    expect((await unknown.json()).errors[0].code).toBe("NAME_UNKNOWN");
    // base endpoint of the repository mount challenges with a realm under the mount
    const base = await fetch(`${vault.url}/hub/v2/`);
    expect(base.status).toBe(401);
    expect(base.headers.get("www-authenticate")).toBe(`Bearer realm="${vault.url}/hub/token",service="${host}"`);
  });

  test("Range on a cached blob; unknown blob → BLOB_UNKNOWN", async () => {
    const r = await fetch(`${vault.url}/v2/hub/busybox/blobs/${BUSYBOX_LAYER}`, { headers: { range: "bytes=0-9" } });
    expect(r.status).toBe(206);
    expect(r.headers.get("content-range")).toBe("bytes 0-9/1084037");
    expect((await r.arrayBuffer()).byteLength).toBe(10);
    const missing = await fetch(`${vault.url}/v2/hub/busybox/blobs/sha256:${"0".repeat(64)}`);
    expect(missing.status).toBe(404);
    expect(missing.headers.get("content-type")).toBe("application/json");
    expect((await missing.json()).errors[0].code).toBe("BLOB_UNKNOWN");
  });

  test("a blob whose upstream bytes do not match its digest is cut off and never cached", async () => {
    const bytes = pseudoRandomBytes(512 * 1024, 99);
    const digest = await pushBlob(reg.url, "corrupt/img", bytes);
    const file = join(reg.dataDir, "docker", "registry", "v2", "blobs", "sha256", digest.slice(7, 9), digest.slice(7), "data");
    const evil = pseudoRandomBytes(512 * 1024, 100);
    await writeFile(file, evil);
    for (let i = 0; i < 2; i++) {
      let failed = false;
      try {
        const res = await fetch(`${vault.url}/v2/hub/corrupt/img/blobs/${digest}`);
        if (res.status !== 200) failed = true;
        else {
          const got = new Uint8Array(await res.arrayBuffer());
          failed = sha256(got) !== digest && got.byteLength !== bytes.byteLength;
          if (!failed) throw new Error("corrupt blob delivered as complete");
        }
      } catch (e) {
        if ((e as Error).message === "corrupt blob delivered as complete") throw e;
        failed = true;
      }
      expect(failed).toBe(true);
    }
    const corrupt = (r: { method: string; uri: string }) => r.method === "GET" && r.uri === `/v2/corrupt/img/blobs/${digest}`;
    expect(await reg.waitForCount(corrupt, 2)).toBe(2);
    const head = await fetch(`${vault.url}/v2/hub/corrupt/img/blobs/${digest}`, { method: "HEAD" });
    expect(head.headers.get("x-vault-cache")).not.toBe("HIT");
  });

  test("20 concurrent pulls of one uncached 64 MiB layer make one upstream request", async () => {
    const before = blobGets("big/layer", bigDigest);
    const pulls = Array.from({ length: 20 }, async () => {
      const res = await fetch(`${vault.url}/v2/hub/big/layer/blobs/${bigDigest}`);
      expect(res.status).toBe(200);
      const h = new Bun.CryptoHasher("sha256");
      let n = 0;
      for await (const chunk of res.body!) {
        h.update(chunk);
        n += chunk.byteLength;
      }
      return { n, digest: "sha256:" + h.digest("hex") };
    });
    const results = await Promise.all(pulls);
    for (const r of results) expect(r).toEqual({ n: BIG, digest: bigDigest });
    expect(await reg.waitForCount((r) => r.method === "GET" && r.uri === `/v2/big/layer/blobs/${bigDigest}`, before + 1)).toBe(before + 1);
    // later pulls are answered from the store (the row may be recorded a moment after the last byte was streamed)
    const again = await fetch(`${vault.url}/v2/hub/big/layer/blobs/${bigDigest}`, { method: "HEAD" });
    expect(again.headers.get("content-length")).toBe(String(BIG));
    const body = await fetch(`${vault.url}/v2/hub/big/layer/blobs/${bigDigest}`, { headers: { range: "bytes=0-1023" } });
    expect(body.status).toBe(206);
    expect((await body.arrayBuffer()).byteLength).toBe(1024);
    expect(blobGets("big/layer", bigDigest) - before).toBe(1);
  }, 120_000);

  test("upstream stopped: cached tags and digests are served stale, uncached ones fail with OCI error JSON", async () => {
    // cache a tag in the revalidating repository first
    const warm = await fetch(`${vault.url}/v2/hub/busybox/manifests/latest`, { headers: { accept: ALL_MANIFESTS } });
    expect(warm.status).toBe(200);
    await warm.arrayBuffer();
    await reg.stop();
    const tag = await fetch(`${vault.url}/v2/hub/busybox/manifests/latest`, { headers: { accept: ALL_MANIFESTS } });
    expect(tag.status).toBe(200);
    expect(tag.headers.get("x-vault-cache")).toBe("STALE");
    expect(sha256(new Uint8Array(await tag.arrayBuffer()))).toBe(BUSYBOX_MANIFEST);
    const byDigest = await fetch(`${vault.url}/v2/hub/busybox/manifests/${BUSYBOX_MANIFEST}`, { headers: { accept: ALL_MANIFESTS } });
    expect(byDigest.status).toBe(200);
    await byDigest.arrayBuffer();
    const blob = await fetch(`${vault.url}/v2/hub/busybox/blobs/${BUSYBOX_LAYER}`);
    expect(blob.status).toBe(200);
    expect(sha256(new Uint8Array(await blob.arrayBuffer()))).toBe(BUSYBOX_LAYER);
    // skopeo still pulls the cached image
    const out = join(await tmpDataDir("oci-out-"), "stale");
    const r = await skopeo(["copy", "--src-tls-verify=false", `docker://${host}/hub/busybox:latest`, `dir:${out}`]);
    expect(r.code).toBe(0);
    await checkDirImage(out, BUSYBOX_MANIFEST);
    for (const path of [`/v2/hub/busybox/manifests/never-cached`, `/v2/hub/busybox/blobs/sha256:${"1".repeat(64)}`, `/v2/hub/other/manifests/${"sha256:" + "2".repeat(64)}`]) {
      const res = await fetch(vault.url + path, { headers: { accept: ALL_MANIFESTS } });
      expect(res.status).toBeGreaterThanOrEqual(500);
      expect(res.headers.get("content-type")).toBe("application/json");
      const body = await res.json();
      expect(body.errors[0].code).toBe("UNAVAILABLE");
    }
  });
});

// OCI hosted registry and token flow: skopeo pushes (and pulls back byte for byte) with users of the auth core,
// skopeo login, pushes refused without write permission, raw HTTP for the chunked upload protocol and its error
// cases, manifest validation, referrers, pagination, deletes, cross-repository mounts, group reads/writes, gc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { join } from "node:path";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { requireTools, skopeo, startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import type { PluginContext } from "../../core/plugin.ts";
import {
  addUser,
  ALL_MANIFESTS,
  BUSYBOX_CONFIG,
  BUSYBOX_LAYER,
  BUSYBOX_LAYOUT,
  BUSYBOX_MANIFEST,
  BUSYBOX_V2S2_MANIFEST,
  checkDirImage,
  DOCKER_LIST,
  DOCKER_MANIFEST,
  fillUpstream,
  mustSkopeo,
  OCI_INDEX,
  OCI_MANIFEST,
  pseudoRandomBytes,
  sha256,
  TESTREPO_LAYOUT,
  TESTREPO_V1,
  v2s2Dir,
} from "./oci-env.ts";

const HAVE = requireTools(["docker-registry", "skopeo"]);
const PW = "s3cret-pass-1";
const EMPTY_CONFIG = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/** One raw HTTP/1.1 request (the path is sent exactly as given, no client-side normalisation). */
function rawRequest(port: number, method: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, "127.0.0.1");
    let data = "";
    sock.on("data", (d) => (data += d.toString("latin1")));
    sock.on("error", reject);
    sock.on("end", () => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(data);
      const i = data.indexOf("\r\n\r\n");
      resolve({ status: m ? Number(m[1]) : 0, body: i === -1 ? "" : data.slice(i + 4) });
    });
    sock.write(`${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`);
  });
}

describe.skipIf(!HAVE)("oci hosted registry, token flow, group, gc", () => {
  let reg: TestRegistry;
  let vault: StartedVault;
  let host: string;

  beforeAll(async () => {
    reg = await startRegistry();
    await fillUpstream(reg);
    vault = await startVault({
      config: {
        auth: { admin: { user: "admin", password: PW } },
        repositories: [
          { name: "hosted", format: "oci", type: "hosted", anonymousRead: false },
          { name: "local", format: "oci", type: "hosted", anonymousRead: true, allowDelete: false, maxManifestBytes: 65536, uploadTtlSeconds: 1 },
          { name: "mirror", format: "oci", type: "proxy", upstream: reg.url, libraryPrefix: true },
          { name: "all", format: "oci", type: "group", members: ["local", "mirror"], writeTo: "local" },
        ],
      },
    });
    host = `127.0.0.1:${vault.port}`;
    await addUser(vault.dataDir, "writer", PW, [
      { repository: "hosted", actions: "delete" },
      { repository: "local", actions: "write" },
      { repository: "all", actions: "write" },
    ]);
    await addUser(vault.dataDir, "reader", PW, [{ repository: "hosted", actions: "read" }]);
    await addUser(vault.dataDir, "localonly", PW, [{ repository: "local", actions: "write" }]);
  }, 120_000);

  afterAll(async () => {
    await vault?.stop();
    await reg?.stop();
  });

  /** A registry token of `user` for `scope` from the vault's token endpoint. */
  async function token(user: string | null, ...scopes: string[]): Promise<{ token: string; access: { name: string; actions: string[] }[] }> {
    const q = new URLSearchParams({ service: host });
    for (const s of scopes) q.append("scope", s);
    const headers: Record<string, string> = user ? { authorization: "Basic " + btoa(`${user}:${PW}`) } : {};
    const res = await fetch(`${vault.url}/token?${q}`, { headers });
    expect(res.status).toBe(200);
    const body = await res.json();
    const claims = JSON.parse(Buffer.from(body.token.split(".")[1], "base64url").toString());
    return { token: body.token, access: claims.access ?? [] };
  }
  const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

  test("skopeo push (OCI, Docker schema 2, multi-platform --all) and pull back byte for byte", async () => {
    const dst = (ref: string) => `docker://${host}/hosted/${ref}`;
    const creds = ["--dest-tls-verify=false", "--dest-creds", `writer:${PW}`];
    await mustSkopeo(["copy", ...creds, "--preserve-digests", `oci:${BUSYBOX_LAYOUT}:1.35.0`, dst("busybox:1.35.0")]);
    await mustSkopeo(["copy", ...creds, "--preserve-digests", `dir:${await v2s2Dir()}`, dst("busybox:v2s2")]);
    await mustSkopeo(["copy", ...creds, "--all", "--preserve-digests", `oci:${TESTREPO_LAYOUT}:v1`, dst("testrepo:v1")]);
    const src = ["--src-tls-verify=false", "--src-creds", `reader:${PW}`];
    const out = await tmpDataDir("oci-pull-");
    await mustSkopeo(["copy", ...src, `docker://${host}/hosted/busybox:1.35.0`, `dir:${join(out, "a")}`]);
    expect((await checkDirImage(join(out, "a"), BUSYBOX_MANIFEST)).sort()).toEqual([BUSYBOX_LAYER, BUSYBOX_CONFIG].sort());
    await mustSkopeo(["copy", ...src, "--preserve-digests", `docker://${host}/hosted/busybox:v2s2`, `dir:${join(out, "b")}`]);
    await checkDirImage(join(out, "b"), BUSYBOX_V2S2_MANIFEST);
    await mustSkopeo(["copy", ...src, "--all", "--preserve-digests", `docker://${host}/hosted/testrepo:v1`, `dir:${join(out, "c")}`]);
    await checkDirImage(join(out, "c"), TESTREPO_V1);
    const info = JSON.parse(await mustSkopeo(["inspect", "--tls-verify=false", "--creds", `reader:${PW}`, `docker://${host}/hosted/busybox:1.35.0`]));
    expect(info.Digest).toBe(BUSYBOX_MANIFEST);
    const tags = JSON.parse(await mustSkopeo(["list-tags", "--tls-verify=false", "--creds", `reader:${PW}`, `docker://${host}/hosted/busybox`]));
    expect(tags.Tags).toEqual(["1.35.0", "v2s2"]);
  });

  test("skopeo login against the token flow; a wrong password fails", async () => {
    const authfile = join(await tmpDataDir("oci-auth-"), "auth.json");
    const bad = await skopeo(["login", "--tls-verify=false", "--authfile", authfile, "-u", "reader", "-p", "wrong-password", host]);
    expect(bad.code).not.toBe(0);
    await mustSkopeo(["login", "--tls-verify=false", "--authfile", authfile, "-u", "reader", "-p", PW, host]);
    const info = JSON.parse(await mustSkopeo(["inspect", "--tls-verify=false", "--authfile", authfile, `docker://${host}/hosted/busybox:v2s2`]));
    expect(info.Digest).toBe(BUSYBOX_V2S2_MANIFEST);
  });

  test("push refused without write permission; anonymous pull refused where anonymous read is off", async () => {
    const denied = await skopeo(["copy", "--dest-tls-verify=false", "--dest-creds", `reader:${PW}`, `oci:${BUSYBOX_LAYOUT}:1.35.0`, `docker://${host}/hosted/busybox:stolen`]);
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toMatch(/denied|unauthorized/i);
    const anon = await skopeo(["copy", "--dest-tls-verify=false", `oci:${BUSYBOX_LAYOUT}:1.35.0`, `docker://${host}/hosted/busybox:stolen`]);
    expect(anon.code).not.toBe(0);
    const exists = await fetch(`${vault.url}/v2/hosted/busybox/manifests/stolen`, { headers: { authorization: "Basic " + btoa(`reader:${PW}`) } });
    expect(exists.status).toBe(404);
    // the granted scope is the intersection of requested and allowed
    expect((await token("reader", "repository:hosted/busybox:pull,push")).access).toEqual([{ type: "repository", name: "hosted/busybox", actions: ["pull"] }] as never);
    expect((await token("writer", "repository:hosted/busybox:pull,push,delete")).access[0].actions).toEqual(["pull", "push", "delete"]);
    expect((await token(null, "repository:hosted/busybox:pull")).access).toEqual([]);
    const anonGet = await fetch(`${vault.url}/v2/hosted/busybox/manifests/1.35.0`);
    expect(anonGet.status).toBe(401);
    expect(anonGet.headers.get("www-authenticate")).toBe(`Bearer realm="${vault.url}/token",service="${host}",scope="repository:hosted/busybox:pull"`);
    expect((await anonGet.json()).errors[0].code).toBe("UNAUTHORIZED");
    // a token without push is told which scope it needs
    const t = await token("reader", "repository:hosted/busybox:pull");
    const post = await fetch(`${vault.url}/v2/hosted/busybox/blobs/uploads/`, { method: "POST", headers: bearer(t.token) });
    expect(post.status).toBe(401);
    expect(post.headers.get("www-authenticate")).toContain('scope="repository:hosted/busybox:pull,push",error="insufficient_scope"');
    // Basic credentials without the permission: 403 DENIED
    const basic = await fetch(`${vault.url}/v2/hosted/busybox/blobs/uploads/`, { method: "POST", headers: { authorization: "Basic " + btoa(`reader:${PW}`) } });
    expect(basic.status).toBe(403);
    expect((await basic.json()).errors[0].code).toBe("DENIED");
    // bad credentials at the token endpoint
    const badTok = await fetch(`${vault.url}/token?scope=repository:hosted/busybox:pull`, { headers: { authorization: "Basic " + btoa("reader:nope") } });
    expect(badTok.status).toBe(401);
  });

  test("GET /v2/ challenges; tokens (and Basic) are accepted; rattler-style anonymous /token at the root", async () => {
    const base = await fetch(`${vault.url}/v2/`);
    expect(base.status).toBe(401);
    expect(base.headers.get("docker-distribution-api-version")).toBe("registry/2.0");
    const t = await token("reader");
    const ok = await fetch(`${vault.url}/v2/`, { headers: bearer(t.token) });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({});
    expect((await fetch(`${vault.url}/v2/`, { headers: bearer(t.token + "x") })).status).toBe(401);
    const anon = await token(null, "repository:local/busybox:pull");
    expect(anon.access).toEqual([{ type: "repository", name: "local/busybox", actions: ["pull"] }] as never);
    // OAuth2 form POST (password grant)
    const form = new URLSearchParams({ grant_type: "password", username: "writer", password: PW, scope: "repository:hosted/x:pull,push", service: host, client_id: "test" });
    const post = await fetch(`${vault.url}/token`, { method: "POST", body: form, headers: { "content-type": "application/x-www-form-urlencoded" } });
    expect(post.status).toBe(200);
    const body = await post.json();
    expect(body.expires_in).toBe(300);
    expect(body.access_token).toBe(body.token);
  });

  test("chunked upload protocol (raw HTTP): PATCH with Content-Range, 416, status, final PUT; blob served back", async () => {
    const { token: tk } = await token("writer", "repository:hosted/chunked:pull,push");
    const h = bearer(tk);
    const bytes = pseudoRandomBytes(3 * 1024 * 1024 + 17, 5);
    const digest = sha256(bytes);
    const post = await fetch(`${vault.url}/v2/hosted/chunked/blobs/uploads/`, { method: "POST", headers: h });
    expect(post.status).toBe(202);
    expect(post.headers.get("range")).toBe("0-0");
    const uuid = post.headers.get("docker-upload-uuid")!;
    let loc = post.headers.get("location")!;
    expect(loc).toBe(`/v2/hosted/chunked/blobs/uploads/${uuid}`);
    const chunk = 1024 * 1024;
    const patch = (start: number, end: number, body: Uint8Array) =>
      fetch(new URL(loc, vault.url), { method: "PATCH", body: body as BodyInit, headers: { ...h, "content-range": `${start}-${end}`, "content-type": "application/octet-stream" } });
    let r = await patch(0, chunk - 1, bytes.subarray(0, chunk));
    expect(r.status).toBe(202);
    expect(r.headers.get("range")).toBe(`0-${chunk - 1}`);
    loc = r.headers.get("location")!;
    // out of order: 416 with the current range
    r = await patch(2 * chunk, 3 * chunk - 1, bytes.subarray(2 * chunk, 3 * chunk));
    expect(r.status).toBe(416);
    expect(r.headers.get("range")).toBe(`0-${chunk - 1}`);
    expect((await r.json()).errors[0].code).toBe("RANGE_INVALID");
    // Content-Range length differs from the body: SIZE_INVALID, nothing appended
    r = await patch(chunk, 2 * chunk - 1, bytes.subarray(chunk, chunk + 10));
    expect(r.status).toBe(400);
    expect((await r.json()).errors[0].code).toBe("SIZE_INVALID");
    const status = await fetch(new URL(loc, vault.url), { headers: h });
    expect(status.status).toBe(204);
    expect(status.headers.get("range")).toBe(`0-${chunk - 1}`);
    r = await patch(chunk, 3 * chunk - 1, bytes.subarray(chunk, 3 * chunk));
    expect(r.status).toBe(202);
    expect(r.headers.get("range")).toBe(`0-${3 * chunk - 1}`);
    // wrong digest on close: DIGEST_INVALID, the session stays
    const wrong = await fetch(new URL(`${loc}?digest=sha256:${"f".repeat(64)}`, vault.url), { method: "PUT", headers: h });
    expect(wrong.status).toBe(400);
    expect((await wrong.json()).errors[0].code).toBe("DIGEST_INVALID");
    // close with the last chunk
    const put = await fetch(new URL(`${loc}?digest=${digest}`, vault.url), {
      method: "PUT",
      body: bytes.subarray(3 * chunk) as BodyInit,
      headers: { ...h, "content-range": `${3 * chunk}-${bytes.length - 1}`, "content-type": "application/octet-stream" },
    });
    expect(put.status).toBe(201);
    expect(put.headers.get("location")).toBe(`/v2/hosted/chunked/blobs/${digest}`);
    expect(put.headers.get("docker-content-digest")).toBe(digest);
    const head = await fetch(`${vault.url}/v2/hosted/chunked/blobs/${digest}`, { method: "HEAD", headers: h });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe(String(bytes.length));
    expect(head.headers.get("docker-content-digest")).toBe(digest);
    const get = await fetch(`${vault.url}/v2/hosted/chunked/blobs/${digest}`, { headers: h });
    expect(sha256(new Uint8Array(await get.arrayBuffer()))).toBe(digest);
    // the finished session is gone
    const after = await fetch(new URL(loc, vault.url), { headers: h });
    expect(after.status).toBe(404);
    expect((await after.json()).errors[0].code).toBe("BLOB_UPLOAD_UNKNOWN");
  });

  test("monolithic PUT, single-request POST ?digest=, Docker-style PATCH without Content-Range, cancel, unknown upload", async () => {
    const { token: tk } = await token("writer", "repository:hosted/mono:pull,push");
    const h = bearer(tk);
    const a = pseudoRandomBytes(70_000, 11);
    const post = await fetch(`${vault.url}/v2/hosted/mono/blobs/uploads/`, { method: "POST", headers: h });
    const put = await fetch(new URL(`${post.headers.get("location")}?digest=${sha256(a)}`, vault.url), { method: "PUT", body: a as BodyInit, headers: { ...h, "content-type": "application/octet-stream" } });
    expect(put.status).toBe(201);
    const b = pseudoRandomBytes(50_000, 12);
    const single = await fetch(`${vault.url}/v2/hosted/mono/blobs/uploads/?digest=${sha256(b)}`, { method: "POST", body: b as BodyInit, headers: { ...h, "content-type": "application/octet-stream" } });
    expect(single.status).toBe(201);
    expect(single.headers.get("location")).toBe(`/v2/hosted/mono/blobs/${sha256(b)}`);
    const badSingle = await fetch(`${vault.url}/v2/hosted/mono/blobs/uploads/?digest=${sha256(a)}`, { method: "POST", body: b as BodyInit, headers: h });
    expect(badSingle.status).toBe(400);
    expect((await badSingle.json()).errors[0].code).toBe("DIGEST_INVALID");
    // Docker streams PATCH without Content-Range
    const c = pseudoRandomBytes(40_000, 13);
    const s = await fetch(`${vault.url}/v2/hosted/mono/blobs/uploads/`, { method: "POST", headers: h });
    const p1 = await fetch(new URL(s.headers.get("location")!, vault.url), { method: "PATCH", body: c.subarray(0, 10_000) as BodyInit, headers: h });
    expect(p1.headers.get("range")).toBe("0-9999");
    const p2 = await fetch(new URL(p1.headers.get("location")!, vault.url), { method: "PATCH", body: c.subarray(10_000) as BodyInit, headers: h });
    expect(p2.headers.get("range")).toBe("0-39999");
    const fin = await fetch(new URL(`${p2.headers.get("location")}?digest=${sha256(c)}`, vault.url), { method: "PUT", headers: h });
    expect(fin.status).toBe(201);
    // cancel
    const s2 = await fetch(`${vault.url}/v2/hosted/mono/blobs/uploads/`, { method: "POST", headers: h });
    const loc2 = new URL(s2.headers.get("location")!, vault.url);
    expect((await fetch(loc2, { method: "DELETE", headers: h })).status).toBe(204);
    const gone = await fetch(loc2, { method: "PATCH", body: "x", headers: h });
    expect(gone.status).toBe(404);
    expect((await gone.json()).errors[0].code).toBe("BLOB_UPLOAD_UNKNOWN");
    const unknown = await fetch(`${vault.url}/v2/hosted/mono/blobs/uploads/00000000-0000-0000-0000-000000000000`, { method: "PATCH", body: "x", headers: h });
    expect(unknown.status).toBe(404);
    expect((await unknown.json()).errors[0].code).toBe("BLOB_UPLOAD_UNKNOWN");
    // a session belongs to its image
    const s3 = await fetch(`${vault.url}/v2/hosted/mono/blobs/uploads/`, { method: "POST", headers: h });
    const other = s3.headers.get("location")!.replace("/mono/", "/chunked/");
    const { token: tk2 } = await token("writer", "repository:hosted/chunked:pull,push");
    expect((await fetch(new URL(other, vault.url), { headers: bearer(tk2) })).status).toBe(404);
  });

  test("manifest validation: MANIFEST_BLOB_UNKNOWN, MANIFEST_INVALID, 413, DIGEST_INVALID; subject, OCI-Subject, referrers, ?tag=", async () => {
    const { token: tk } = await token("writer", "repository:local/art:pull,push");
    const h = bearer(tk);
    const up = async (bytes: Uint8Array) => {
      const r = await fetch(`${vault.url}/v2/local/art/blobs/uploads/?digest=${sha256(bytes)}`, { method: "POST", body: bytes as BodyInit, headers: h });
      expect(r.status).toBe(201);
      return { digest: sha256(bytes), size: bytes.byteLength };
    };
    const empty = await up(new TextEncoder().encode("{}"));
    expect(empty.digest).toBe(EMPTY_CONFIG);
    const layer = await up(pseudoRandomBytes(1000, 21));
    const put = (ref: string, doc: unknown, type = OCI_MANIFEST) => fetch(`${vault.url}/v2/local/art/manifests/${ref}`, { method: "PUT", body: typeof doc === "string" ? doc : JSON.stringify(doc), headers: { ...h, "content-type": type } });
    const cfg = { mediaType: "application/vnd.oci.empty.v1+json", digest: empty.digest, size: 2 };
    const image = { schemaVersion: 2, mediaType: OCI_MANIFEST, config: cfg, layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", ...layer }] };
    // a missing blob
    const missing = await put("bad", { ...image, layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: `sha256:${"9".repeat(64)}`, size: 5 }] });
    expect(missing.status).toBe(400);
    const mb = await missing.json();
    expect(mb.errors[0].code).toBe("MANIFEST_BLOB_UNKNOWN");
    expect(mb.errors[0].detail.digests).toEqual([`sha256:${"9".repeat(64)}`]);
    expect((await (await put("bad", "{not json")).json()).errors[0].code).toBe("MANIFEST_INVALID");
    expect((await (await put("bad", { ...image, schemaVersion: 1 })).json()).errors[0].code).toBe("MANIFEST_INVALID");
    // oversize (this repository allows 64 KiB)
    const big = await put("big", { ...image, annotations: { pad: "x".repeat(70_000) } });
    expect(big.status).toBe(413);
    // digest reference must match the body
    const body = JSON.stringify(image);
    const wrong = await put(`sha256:${"a".repeat(64)}`, body);
    expect(wrong.status).toBe(400);
    expect((await wrong.json()).errors[0].code).toBe("DIGEST_INVALID");
    // push by digest with ?tag= (OCI-Tag)
    const d = sha256(body);
    const ok = await fetch(`${vault.url}/v2/local/art/manifests/${d}?tag=one&tag=two`, { method: "PUT", body, headers: { ...h, "content-type": OCI_MANIFEST } });
    expect(ok.status).toBe(201);
    expect(ok.headers.get("docker-content-digest")).toBe(d);
    expect(ok.headers.get("location")).toBe(`/v2/local/art/manifests/${d}`);
    expect(ok.headers.get("oci-tag")).toBe("one, two");
    const tags = await (await fetch(`${vault.url}/v2/local/art/tags/list`)).json();
    expect(tags).toEqual({ name: "local/art", tags: ["one", "two"] });
    // an artifact with a subject (existing) and one whose subject dangles
    const sbom = { schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: "application/vnd.example.sbom", config: cfg, layers: [cfg], subject: { mediaType: OCI_MANIFEST, digest: d, size: body.length }, annotations: { kind: "sbom" } };
    const ref = await put(sha256(JSON.stringify(sbom)), sbom);
    expect(ref.status).toBe(201);
    expect(ref.headers.get("oci-subject")).toBe(d);
    const sig = { ...sbom, artifactType: "application/vnd.example.sig", annotations: undefined };
    expect((await put(sha256(JSON.stringify(sig)), sig)).status).toBe(201);
    const dangling = { ...sbom, subject: { mediaType: OCI_MANIFEST, digest: `sha256:${"7".repeat(64)}`, size: 10 } };
    const dr = await put(sha256(JSON.stringify(dangling)), dangling);
    expect(dr.status).toBe(201);
    expect(dr.headers.get("oci-subject")).toBe(`sha256:${"7".repeat(64)}`);
    const list = await fetch(`${vault.url}/v2/local/art/referrers/${d}`);
    expect(list.status).toBe(200);
    expect(list.headers.get("content-type")).toBe(OCI_INDEX);
    const idx = await list.json();
    expect(idx.manifests.length).toBe(2);
    expect(idx.manifests.map((m: { artifactType: string }) => m.artifactType).sort()).toEqual(["application/vnd.example.sbom", "application/vnd.example.sig"]);
    const sbomDesc = idx.manifests.find((m: { artifactType: string }) => m.artifactType === "application/vnd.example.sbom");
    expect(sbomDesc).toEqual({ mediaType: OCI_MANIFEST, digest: sha256(JSON.stringify(sbom)), size: JSON.stringify(sbom).length, artifactType: "application/vnd.example.sbom", annotations: { kind: "sbom" } });
    const filtered = await fetch(`${vault.url}/v2/local/art/referrers/${d}?artifactType=application/vnd.example.sig`);
    expect(filtered.headers.get("oci-filters-applied")).toBe("artifactType");
    expect((await filtered.json()).manifests.length).toBe(1);
    const none = await fetch(`${vault.url}/v2/local/art/referrers/sha256:${"3".repeat(64)}`);
    expect(none.status).toBe(200);
    expect((await none.json()).manifests).toEqual([]);
    // index whose child is missing
    const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: `sha256:${"5".repeat(64)}`, size: 10 }] };
    const bi = await put("idx", index, OCI_INDEX);
    expect((await bi.json()).errors[0].code).toBe("MANIFEST_BLOB_UNKNOWN");
    const goodIndex = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: d, size: body.length }] };
    expect((await put("idx", goodIndex, OCI_INDEX)).status).toBe(201);
  });

  test("a Docker manifest list asked by tag by a client without list support gets the linux/amd64 child", async () => {
    const auth = { authorization: "Basic " + btoa(`writer:${PW}`) };
    const list = JSON.stringify({
      schemaVersion: 2,
      mediaType: DOCKER_LIST,
      manifests: [{ mediaType: DOCKER_MANIFEST, digest: BUSYBOX_V2S2_MANIFEST, size: 427, platform: { architecture: "amd64", os: "linux" } }],
    });
    const put = await fetch(`${vault.url}/v2/hosted/busybox/manifests/list`, { method: "PUT", body: list, headers: { ...auth, "content-type": DOCKER_LIST } });
    expect(put.status).toBe(201);
    const reader = { authorization: "Basic " + btoa(`reader:${PW}`) };
    const child = await fetch(`${vault.url}/v2/hosted/busybox/manifests/list`, { headers: { ...reader, accept: DOCKER_MANIFEST } });
    expect(child.status).toBe(200);
    expect(child.headers.get("content-type")).toBe(DOCKER_MANIFEST);
    expect(child.headers.get("docker-content-digest")).toBe(BUSYBOX_V2S2_MANIFEST);
    await child.arrayBuffer();
    const whole = await fetch(`${vault.url}/v2/hosted/busybox/manifests/list`, { headers: { ...reader, accept: `${DOCKER_MANIFEST}, ${DOCKER_LIST}` } });
    expect(whole.headers.get("content-type")).toBe(DOCKER_LIST);
    expect(sha256(new Uint8Array(await whole.arrayBuffer()))).toBe(sha256(list));
    // by digest the list itself is served
    const byDigest = await fetch(`${vault.url}/v2/hosted/busybox/manifests/${sha256(list)}`, { headers: { ...reader, accept: DOCKER_MANIFEST } });
    expect(byDigest.headers.get("content-type")).toBe(DOCKER_LIST);
    await byDigest.arrayBuffer();
    expect((await fetch(`${vault.url}/v2/hosted/busybox/manifests/list`, { method: "DELETE", headers: auth })).status).toBe(202);
  });

  test("names, tags and paths: NAME_INVALID, TAG_INVALID, traversal refused", async () => {
    const auth = { authorization: "Basic " + btoa(`admin:${PW}`) };
    const bad = await fetch(`${vault.url}/v2/hosted/Bad/manifests/latest`, { headers: auth });
    expect(bad.status).toBe(400);
    expect((await bad.json()).errors[0].code).toBe("NAME_INVALID");
    const tag = await fetch(`${vault.url}/v2/hosted/busybox/manifests/bad+tag`, { headers: auth });
    expect(tag.status).toBe(400);
    expect((await tag.json()).errors[0].code).toBe("TAG_INVALID");
    const badTagPut = await fetch(`${vault.url}/v2/hosted/busybox/manifests/${BUSYBOX_MANIFEST}?tag=a!b`, { method: "PUT", body: "{}", headers: { ...auth, "content-type": OCI_MANIFEST } });
    expect(badTagPut.status).toBe(400);
    for (const p of [
      "/v2/hosted/%2e%2e/%2e%2e/etc/passwd/manifests/x",
      "/v2/hosted/..%2f..%2fetc/manifests/x",
      "/v2/hosted/%252e%252e/manifests/x",
      "/v2/hosted/x%00/manifests/y",
      "/v2/hosted/x/..%5c../manifests/y",
      "/v2/hosted//etc/manifests/y",
    ]) {
      const r = await rawRequest(vault.port, "GET", p);
      expect([400, 404]).toContain(r.status);
      if (r.status === 400) expect(JSON.parse(r.body).errors[0].code).toBe("NAME_INVALID");
    }
    // dot segments are resolved before routing and can only land on other (validated) names
    const dot = await rawRequest(vault.port, "GET", "/v2/hosted/a/./b/manifests/y");
    expect(dot.status).toBe(401);
    expect(JSON.parse(dot.body).errors[0].code).toBe("UNAUTHORIZED");
    const dots = await rawRequest(vault.port, "GET", "/v2/hosted/busybox/../../../etc/passwd");
    expect(dots.status).toBe(404);
    expect(dots.body).not.toContain("root:");
  });

  test("tags list and _catalog pagination with Link", async () => {
    const auth = { authorization: "Basic " + btoa(`admin:${PW}`) };
    const page1 = await fetch(`${vault.url}/v2/hosted/busybox/tags/list?n=1`, { headers: auth });
    expect(await page1.json()).toEqual({ name: "hosted/busybox", tags: ["1.35.0"] });
    expect(page1.headers.get("link")).toBe('</v2/hosted/busybox/tags/list?n=1&last=1.35.0>; rel="next"');
    const page2 = await fetch(`${vault.url}/v2/hosted/busybox/tags/list?n=1&last=1.35.0`, { headers: auth });
    expect(await page2.json()).toEqual({ name: "hosted/busybox", tags: ["v2s2"] });
    expect(page2.headers.get("link")).toBeNull();
    expect(await (await fetch(`${vault.url}/v2/hosted/busybox/tags/list?n=0`, { headers: auth })).json()).toEqual({ name: "hosted/busybox", tags: [] });
    expect((await (await fetch(`${vault.url}/v2/hosted/busybox/tags/list?n=x`, { headers: auth })).json()).errors[0].code).toBe("PAGINATION_NUMBER_INVALID");
    const all = await (await fetch(`${vault.url}/v2/_catalog`, { headers: auth })).json();
    expect(all.repositories).toContain("hosted/busybox");
    expect(all.repositories).toContain("hosted/testrepo");
    expect(all.repositories).toContain("local/art");
    const c1 = await fetch(`${vault.url}/v2/_catalog?n=2`, { headers: auth });
    const b1 = await c1.json();
    expect(b1.repositories.length).toBe(2);
    expect(c1.headers.get("link")).toBe(`</v2/_catalog?n=2&last=${encodeURIComponent(b1.repositories[1])}>; rel="next"`);
    const c2 = await (await fetch(`${vault.url}/v2/_catalog?n=100&last=${encodeURIComponent(b1.repositories[1])}`, { headers: auth })).json();
    expect([...b1.repositories, ...c2.repositories]).toEqual(all.repositories);
    // with a token: the catalog scope; anonymous sees only anonymously readable repositories
    const t = await token("admin", "registry:catalog:*");
    expect((await (await fetch(`${vault.url}/v2/_catalog`, { headers: bearer(t.token) })).json()).repositories).toEqual(all.repositories);
    const anon = await (await fetch(`${vault.url}/v2/_catalog`)).json();
    expect(anon.repositories.some((r: string) => r.startsWith("hosted/"))).toBe(false);
    expect(anon.repositories).toContain("local/art");
  });

  test("deletes: tag, manifest by digest, blob; refused where disabled", async () => {
    const { token: tk } = await token("writer", "repository:hosted/del:pull,push,delete");
    const h = bearer(tk);
    await mustSkopeo(["copy", "--dest-tls-verify=false", "--dest-creds", `writer:${PW}`, "--preserve-digests", `oci:${BUSYBOX_LAYOUT}:1.35.0`, `docker://${host}/hosted/del:a`]);
    await mustSkopeo(["copy", "--dest-tls-verify=false", "--dest-creds", `writer:${PW}`, "--preserve-digests", `oci:${BUSYBOX_LAYOUT}:1.35.0`, `docker://${host}/hosted/del:b`]);
    expect((await fetch(`${vault.url}/v2/hosted/del/manifests/a`, { method: "DELETE", headers: h })).status).toBe(202);
    expect((await fetch(`${vault.url}/v2/hosted/del/manifests/a`, { headers: h })).status).toBe(404);
    expect((await fetch(`${vault.url}/v2/hosted/del/manifests/b`, { headers: { ...h, accept: ALL_MANIFESTS } })).status).toBe(200);
    expect((await fetch(`${vault.url}/v2/hosted/del/manifests/${BUSYBOX_MANIFEST}`, { method: "DELETE", headers: h })).status).toBe(202);
    expect((await fetch(`${vault.url}/v2/hosted/del/manifests/b`, { headers: h })).status).toBe(404);
    expect((await fetch(`${vault.url}/v2/hosted/del/manifests/${BUSYBOX_MANIFEST}`, { headers: h })).status).toBe(404);
    expect((await fetch(`${vault.url}/v2/hosted/del/blobs/${BUSYBOX_CONFIG}`, { method: "DELETE", headers: h })).status).toBe(202);
    const gone = await fetch(`${vault.url}/v2/hosted/del/blobs/${BUSYBOX_CONFIG}`, { headers: h });
    expect((await gone.json()).errors[0].code).toBe("BLOB_UNKNOWN");
    // the other images keep their blobs
    expect((await fetch(`${vault.url}/v2/hosted/busybox/blobs/${BUSYBOX_CONFIG}`, { method: "HEAD", headers: h })).status).toBe(401);
    expect((await fetch(`${vault.url}/v2/hosted/busybox/blobs/${BUSYBOX_CONFIG}`, { method: "HEAD", headers: { authorization: "Basic " + btoa(`reader:${PW}`) } })).status).toBe(200);
    // local has allowDelete: false
    const { token: lt } = await token("writer", "repository:local/art:pull,push,delete");
    expect((await token("writer", "repository:local/art:delete")).access).toEqual([]);
    const refused = await fetch(`${vault.url}/v2/local/art/manifests/one`, { method: "DELETE", headers: { authorization: "Basic " + btoa(`admin:${PW}`) } });
    expect(refused.status).toBe(405);
    expect((await refused.json()).errors[0].code).toBe("UNSUPPORTED");
    expect(lt).toBeTruthy();
  });

  test("cross-repository mount: 201 when the source is readable, else an upload session", async () => {
    const basic = (u: string) => ({ authorization: "Basic " + btoa(`${u}:${PW}`) });
    const m = await fetch(`${vault.url}/v2/hosted/mounted/blobs/uploads/?mount=${BUSYBOX_LAYER}&from=hosted/busybox`, { method: "POST", headers: basic("writer") });
    expect(m.status).toBe(201);
    expect(m.headers.get("location")).toBe(`/v2/hosted/mounted/blobs/${BUSYBOX_LAYER}`);
    const got = await fetch(`${vault.url}/v2/hosted/mounted/blobs/${BUSYBOX_LAYER}`, { headers: basic("reader") });
    expect(sha256(new Uint8Array(await got.arrayBuffer()))).toBe(BUSYBOX_LAYER);
    // across vault repositories
    const x = await fetch(`${vault.url}/v2/local/copied/blobs/uploads/?mount=${BUSYBOX_LAYER}&from=hosted/busybox`, { method: "POST", headers: basic("writer") });
    expect(x.status).toBe(201);
    // a user who may not read the source gets a session instead
    const s = await fetch(`${vault.url}/v2/local/copied2/blobs/uploads/?mount=${BUSYBOX_LAYER}&from=hosted/busybox`, { method: "POST", headers: basic("localonly") });
    expect(s.status).toBe(202);
    expect(s.headers.get("docker-upload-uuid")).toBeTruthy();
  });

  test("group: reads through members in order (hosted first, then the proxy), pushes land in writeTo", async () => {
    const basic = { authorization: "Basic " + btoa(`writer:${PW}`) };
    // from the proxy member (upstream registry)
    const out = join(await tmpDataDir("oci-group-"), "g");
    await mustSkopeo(["copy", "--src-tls-verify=false", `docker://${host}/all/busybox:1.35.0`, `dir:${out}`]);
    await checkDirImage(out, BUSYBOX_MANIFEST);
    // push through the group
    await mustSkopeo(["copy", "--dest-tls-verify=false", "--dest-creds", `writer:${PW}`, "--preserve-digests", `dir:${await v2s2Dir()}`, `docker://${host}/all/busybox:mine`]);
    const direct = await fetch(`${vault.url}/v2/local/busybox/manifests/mine`, { headers: { accept: ALL_MANIFESTS } });
    expect(direct.status).toBe(200);
    expect(direct.headers.get("docker-content-digest")).toBe(BUSYBOX_V2S2_MANIFEST);
    await direct.arrayBuffer();
    const tags = await (await fetch(`${vault.url}/v2/all/busybox/tags/list`, { headers: basic })).json();
    expect(tags.tags).toEqual(["1.35.0", "latest", "mine", "v2s2"]);
    const info = JSON.parse(await mustSkopeo(["inspect", "--tls-verify=false", `docker://${host}/all/busybox:mine`]));
    expect(info.Digest).toBe(BUSYBOX_V2S2_MANIFEST);
    const none = await fetch(`${vault.url}/v2/all/nosuch/manifests/latest`);
    expect(none.status).toBe(404);
    expect((await none.json()).errors[0].code).toBe("MANIFEST_UNKNOWN");
  });

  test("abandoned upload sessions are collected (uploadTtlSeconds)", async () => {
    const basic = { authorization: "Basic " + btoa(`writer:${PW}`) };
    const s = await fetch(`${vault.url}/v2/local/abandoned/blobs/uploads/`, { method: "POST", headers: basic });
    const loc = new URL(s.headers.get("location")!, vault.url);
    await fetch(loc, { method: "PATCH", body: "partial", headers: basic });
    let status = 204;
    const deadline = Date.now() + 10_000;
    while (status === 204 && Date.now() < deadline) {
      await Bun.sleep(250);
      status = (await fetch(loc, { headers: basic })).status;
    }
    expect(status).toBe(404);
  });

  test("gc removes blob links no manifest references (and keeps young ones and referenced ones)", async () => {
    const basic = { authorization: "Basic " + btoa(`writer:${PW}`) };
    const orphan = pseudoRandomBytes(4096, 77);
    const od = sha256(orphan);
    expect((await fetch(`${vault.url}/v2/hosted/gc/blobs/uploads/?digest=${od}`, { method: "POST", body: orphan as BodyInit, headers: basic })).status).toBe(201);
    await mustSkopeo(["copy", "--dest-tls-verify=false", "--dest-creds", `writer:${PW}`, "--preserve-digests", `oci:${BUSYBOX_LAYOUT}:1.35.0`, `docker://${host}/hosted/gc:keep`]);
    const plugin = vault.vault.plugins.get("oci")!;
    const ctx = vault.vault.repositories.get("hosted") as PluginContext;
    // young links survive
    expect((await plugin.gc!(ctx, { olderThan: Date.now() - 60_000 })).removed).toBe(0);
    const r = await plugin.gc!(ctx, { olderThan: Date.now() + 1000 });
    expect(r.removed).toBeGreaterThanOrEqual(1);
    expect((await fetch(`${vault.url}/v2/hosted/gc/blobs/${od}`, { method: "HEAD", headers: basic })).status).toBe(404);
    // referenced blobs stay; the image still pulls
    const out = join(await tmpDataDir("oci-gc-"), "g");
    await mustSkopeo(["copy", "--src-tls-verify=false", "--src-creds", `reader:${PW}`, `docker://${host}/hosted/gc:keep`, `dir:${out}`]);
    await checkDirImage(out, BUSYBOX_MANIFEST);
    await mustSkopeo(["copy", "--src-tls-verify=false", "--src-creds", `reader:${PW}`, "--all", "--preserve-digests", `docker://${host}/hosted/testrepo:v1`, `dir:${out}-2`]);
  });
});

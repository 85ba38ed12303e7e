/** Shared setup of the OCI end-to-end tests: fixture images pushed into a real docker-registry with skopeo, users, digest checks. */
import { cp, mkdir, readdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { openDb } from "../../core/db/index.ts";
import { createAuthCore } from "../../core/auth/index.ts";
import { silentLogger } from "../../core/log.ts";
import { REPO_ROOT } from "../helpers/vault.ts";
import { skopeo, type TestRegistry } from "../helpers/registry.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

/** The real OCI images of the shared fixtures. */
export const FIX = resolve(REPO_ROOT, "..", "shared", "fixtures", "oci");
export const BUSYBOX_LAYOUT = join(FIX, "busybox-oci-layout");
export const TESTREPO_LAYOUT = join(FIX, "regclient-testrepo-oci-layout");
/** busybox 1.35.0 (OCI image manifest, one 1 MiB layer). */
export const BUSYBOX_MANIFEST = "sha256:15956cdf35461b0a2615ed5e2b23da900c58f069116ab070ba59b3b6416e0260";
export const BUSYBOX_LAYER = "sha256:0734fdc18f22e387e26383143bae84516af697f2049d2bd817e84d543010262e";
export const BUSYBOX_CONFIG = "sha256:1ee55f77c960ff2d1b376641471381370497bd747f2a74de6cbeaeaab8fbc5b6";
/** The Docker schema 2 variant of the same image. */
export const BUSYBOX_V2S2_MANIFEST = "sha256:08fb334958fe372ea30d81ee8312a0981269f7ce201ca8b5c3130b4a928f9316";
/** regclient's multi-platform index tagged v1. */
export const TESTREPO_V1 = "sha256:7ceb9b6bcc274697d0c38be6214b50cec79d601bc61708747d3f6cb772f6c6fa";

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const ALL_MANIFESTS = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");

/** `sha256:<hex>` of bytes. */
export function sha256(bytes: Uint8Array | string): string {
  return "sha256:" + new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
}

/** Throws with skopeo's output unless it succeeded. */
export async function mustSkopeo(args: string[]): Promise<string> {
  const r = await skopeo(args);
  if (r.code !== 0) throw new Error(`skopeo ${args.join(" ")} failed (${r.code}):\n${r.stderr}`);
  return r.stdout;
}

/** The Docker schema-2 busybox as a `dir:` layout (the fixture omits the layer, which is the OCI layout's). */
export async function v2s2Dir(): Promise<string> {
  const d = join(await tmpDataDir("oci-v2s2-"), "img");
  await mkdir(d);
  await cp(join(FIX, "busybox-docker-v2s2-dir"), d, { recursive: true });
  await cp(join(BUSYBOX_LAYOUT, "blobs", "sha256", BUSYBOX_LAYER.slice(7)), join(d, BUSYBOX_LAYER.slice(7)));
  return d;
}

/**
 * Fills a docker-registry with the fixture images (real skopeo pushes):
 * `library/busybox:1.35.0` + `:latest` (OCI), `library/busybox:v2s2` (Docker schema 2), `regclient/testrepo:v1` (multi-platform
 * OCI index, `--all`), `regclient/testrepo:a1`.
 */
export async function fillUpstream(reg: TestRegistry): Promise<void> {
  const dst = (ref: string) => `docker://${reg.host}/${ref}`;
  const tls = "--dest-tls-verify=false";
  await mustSkopeo(["copy", tls, "--preserve-digests", `oci:${BUSYBOX_LAYOUT}:1.35.0`, dst("library/busybox:1.35.0")]);
  await mustSkopeo(["copy", tls, "--preserve-digests", `oci:${BUSYBOX_LAYOUT}:1.35.0`, dst("library/busybox:latest")]);
  await mustSkopeo(["copy", tls, "--preserve-digests", `dir:${await v2s2Dir()}`, dst("library/busybox:v2s2")]);
  await mustSkopeo(["copy", tls, "--all", "--preserve-digests", `oci:${TESTREPO_LAYOUT}:v1`, dst("regclient/testrepo:v1")]);
  await mustSkopeo(["copy", tls, "--preserve-digests", `oci:${TESTREPO_LAYOUT}:a1`, dst("regclient/testrepo:a1")]);
}

/**
 * Checks a `dir:` image written by skopeo: `manifest.json` hashes to `manifestDigest` and every blob file's sha256
 * equals its name. @returns the blob digests found
 */
export async function checkDirImage(dir: string, manifestDigest: string): Promise<string[]> {
  const manifest = await readFile(join(dir, "manifest.json"));
  if (sha256(manifest) !== manifestDigest) throw new Error(`manifest.json of ${dir} is ${sha256(manifest)}, expected ${manifestDigest}`);
  const out: string[] = [];
  for (const f of await readdir(dir)) {
    if (!/^[0-9a-f]{64}$/.test(f)) continue;
    const got = sha256(await readFile(join(dir, f)));
    if (got !== `sha256:${f}`) throw new Error(`blob ${f} of ${dir} hashes to ${got}`);
    out.push(got);
  }
  return out;
}

/** Adds a user with grants to the vault's database (as `vault user add` + `vault user grant` would). */
export async function addUser(dataDir: string, name: string, password: string, grants: { repository: string; actions: string }[]): Promise<void> {
  const db = openDb(join(dataDir, "vault.db"));
  try {
    const auth = createAuthCore({ db: db.db, log: silentLogger });
    await auth.addUser({ name, password, grants });
  } finally {
    db.close();
  }
}

/** Deterministic pseudo-random bytes (xorshift), so big test blobs need no fixture file. */
export function pseudoRandomBytes(size: number, seed = 42): Uint8Array {
  const out = new Uint8Array(size);
  const view = new Uint32Array(out.buffer, 0, Math.floor(size / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < view.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    view[i] = x;
  }
  return out;
}

/** Pushes one blob to a registry with the monolithic POST + PUT flow (plain HTTP, no auth). */
export async function pushBlob(base: string, name: string, bytes: Uint8Array, headers: Record<string, string> = {}): Promise<string> {
  const digest = sha256(bytes);
  const post = await fetch(`${base}/v2/${name}/blobs/uploads/`, { method: "POST", headers });
  if (post.status !== 202) throw new Error(`POST uploads: ${post.status} ${await post.text()}`);
  const loc = new URL(post.headers.get("location")!, base);
  loc.searchParams.set("digest", digest);
  const put = await fetch(loc, { method: "PUT", body: bytes as BodyInit, headers: { ...headers, "content-type": "application/octet-stream" } });
  if (put.status !== 201) throw new Error(`PUT upload: ${put.status} ${await put.text()}`);
  return digest;
}

/** Pushes a manifest (bytes as given) under `ref`. */
export async function pushManifest(base: string, name: string, ref: string, body: Uint8Array | string, mediaType: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${base}/v2/${name}/manifests/${ref}`, { method: "PUT", body: body as BodyInit, headers: { ...headers, "content-type": mediaType } });
}

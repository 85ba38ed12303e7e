/**
 * OCI blob upload sessions are shared by `vault serve` processes on one data directory and survive restarts (raw HTTP,
 * two real CLI processes): chunks alternate between processes and the blob is served by both; an upload resumes after
 * a graceful restart and after a crash mid-chunk; a chunk at a stale offset, or sent while another process writes the
 * session, gets 416 with the current Range; idle sessions and stray files are collected (row and file).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { existsSync, statSync } from "node:fs";
import { utimes, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { spawnVault, type SpawnedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { pseudoRandomBytes, sha256 } from "./oci-env.ts";

const AUTH = "Basic " + btoa("root:root-password-123");
const H = { authorization: AUTH };
const OCTETS = { ...H, "content-type": "application/octet-stream" };
const config = {
  auth: { anonymousRead: false, admin: { user: "root", password: "root-password-123" } },
  repositories: [
    { name: "images", format: "oci", type: "hosted" as const },
    { name: "brief", format: "oci", type: "hosted" as const, uploadTtlSeconds: 1 },
  ],
};

let dataDir: string;
let a: SpawnedVault;
let b: SpawnedVault;
const all: SpawnedVault[] = [];

beforeAll(async () => {
  dataDir = await tmpDataDir("vault-oci-sessions-");
  a = await spawnVault({ config, dataDir });
  all.push(a);
  b = await spawnVault({ config, dataDir });
  all.push(b);
}, 60_000);
afterAll(async () => {
  for (const v of all) await v.stop();
});

const sessionFile = (id: string) => join(dataDir, "store", "tmp", "oci-uploads", id);

/** The session's row as another process sees it (read-only connection to the shared database). */
function row(id: string): { size_bytes: number; writer: string | null } | null {
  const d = new Database(join(dataDir, "vault.db"), { readonly: true });
  try {
    return d.query<{ size_bytes: number; writer: string | null }, [string]>("SELECT size_bytes, writer FROM oci_uploads WHERE id = ?").get(id);
  } finally {
    d.close();
  }
}

/** Opens a session on `v`; returns its path (the `Location`) and id. */
async function open(v: SpawnedVault, repo = "images"): Promise<{ loc: string; id: string }> {
  const r = await fetch(`${v.url}/v2/${repo}/app/blobs/uploads/`, { method: "POST", headers: H });
  expect(r.status).toBe(202);
  return { loc: r.headers.get("location")!, id: r.headers.get("docker-upload-uuid")! };
}

function patch(v: SpawnedVault, loc: string, start: number, body: Uint8Array): Promise<Response> {
  return fetch(new URL(loc, v.url), { method: "PATCH", body: body as BodyInit, headers: { ...OCTETS, "content-range": `${start}-${start + body.length - 1}` } });
}

function close(v: SpawnedVault, loc: string, digest: string, last?: Uint8Array, start?: number): Promise<Response> {
  const headers: Record<string, string> = { ...OCTETS };
  if (last) headers["content-range"] = `${start}-${start! + last.length - 1}`;
  return fetch(new URL(`${loc}?digest=${digest}`, v.url), { method: "PUT", body: last as BodyInit | undefined, headers });
}

/** GETs the blob from `v` and checks its bytes and Docker-Content-Digest. */
async function servedRight(v: SpawnedVault, digest: string, size: number): Promise<void> {
  const r = await fetch(`${v.url}/v2/images/app/blobs/${digest}`, { headers: H });
  expect(r.status).toBe(200);
  expect(r.headers.get("docker-content-digest")).toBe(digest);
  const got = new Uint8Array(await r.arrayBuffer());
  expect(got.length).toBe(size);
  expect(sha256(got)).toBe(digest);
}

/** Waits (bounded) until `cond` holds; for effects of another process that announces nothing. */
async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(25);
  }
}

/**
 * A PATCH declaring `total` body bytes of which only `first` is sent; `rest(bytes)` sends the remainder and resolves
 * with the response status. The connection is plain TCP so the body can stop half way.
 */
function heldPatch(v: SpawnedVault, loc: string, first: Uint8Array, total: number) {
  const sock = connect(v.port, "127.0.0.1");
  let data = "";
  const status = new Promise<number>((resolve) => {
    sock.on("data", (d) => {
      data += d.toString("latin1");
      const m = /^HTTP\/1\.1 (\d{3})/.exec(data);
      if (m && data.includes("\r\n\r\n")) resolve(Number(m[1]));
    });
    sock.on("close", () => resolve(0));
    sock.on("error", () => resolve(0));
  });
  sock.write(`PATCH ${loc} HTTP/1.1\r\nHost: 127.0.0.1:${v.port}\r\nAuthorization: ${AUTH}\r\nContent-Type: application/octet-stream\r\nContent-Length: ${total}\r\nConnection: close\r\n\r\n`);
  sock.write(first);
  return {
    rest(bytes: Uint8Array): Promise<number> {
      sock.write(bytes);
      return status;
    },
    destroy: () => sock.destroy(),
  };
}

describe("oci upload sessions shared by processes and kept across restarts", () => {
  test("PATCHes alternate between two processes; the upload completes on either; both serve the blob", async () => {
    for (const finisher of ["b", "a"] as const) {
      const bytes = pseudoRandomBytes(2 * 1024 * 1024 + 333, finisher === "b" ? 1 : 2);
      const digest = sha256(bytes);
      let { loc } = await open(a);
      const cuts = [0, 400_000, 900_000, 1_500_000, 2_000_000];
      for (let i = 0; i + 1 < cuts.length; i++) {
        const r = await patch(i % 2 === 0 ? b : a, loc, cuts[i], bytes.subarray(cuts[i], cuts[i + 1]));
        expect(r.status).toBe(202);
        expect(r.headers.get("range")).toBe(`0-${cuts[i + 1] - 1}`);
        loc = r.headers.get("location")!;
      }
      // the status is the same on both
      for (const v of [a, b]) {
        const s = await fetch(new URL(loc, v.url), { headers: H });
        expect(s.status).toBe(204);
        expect(s.headers.get("range")).toBe(`0-${cuts.at(-1)! - 1}`);
      }
      const put = await close(finisher === "b" ? b : a, loc, digest, bytes.subarray(2_000_000), 2_000_000);
      expect(put.status).toBe(201);
      expect(put.headers.get("docker-content-digest")).toBe(digest);
      await servedRight(a, digest, bytes.length);
      await servedRight(b, digest, bytes.length);
      // the session is gone everywhere, and so is its file
      expect((await fetch(new URL(loc, a.url), { headers: H })).status).toBe(404);
      expect((await fetch(new URL(loc, b.url), { headers: H })).status).toBe(404);
      expect(existsSync(sessionFile(loc.split("/").at(-1)!))).toBe(false);
    }
  }, 60_000);

  test("an empty blob: session opened on one process, closed without a body on the other", async () => {
    const empty = new Uint8Array(0);
    const { loc } = await open(b);
    const put = await close(a, loc, sha256(empty));
    expect(put.status).toBe(201);
    await servedRight(b, sha256(empty), 0);
  }, 30_000);

  test("a chunk at a stale offset, or sent while another process writes the session, gets 416 with the current Range", async () => {
    const bytes = pseudoRandomBytes(600_000, 3);
    const { loc, id } = await open(a);
    expect((await patch(a, loc, 0, bytes.subarray(0, 100_000))).status).toBe(202);
    // b repeats the first chunk (its client thinks nothing was sent)
    const stale = await patch(b, loc, 0, bytes.subarray(0, 100_000));
    expect(stale.status).toBe(416);
    expect(stale.headers.get("range")).toBe("0-99999");
    expect((await stale.json()).errors[0].code).toBe("RANGE_INVALID");
    // a is receiving the next chunk; b's chunk at the right offset must not be written over it
    const held = heldPatch(a, loc, bytes.subarray(100_000, 200_000), 300_000);
    await until(() => existsSync(sessionFile(id)) && statSync(sessionFile(id)).size > 100_000 && row(id)?.writer !== null, "a to write the held chunk");
    const busy = await patch(b, loc, 100_000, bytes.subarray(100_000, 400_000));
    expect(busy.status).toBe(416);
    expect(busy.headers.get("range")).toBe("0-99999");
    expect(await held.rest(bytes.subarray(200_000, 400_000))).toBe(202);
    expect(row(id)).toEqual({ size_bytes: 400_000, writer: null });
    const put = await close(b, loc, sha256(bytes), bytes.subarray(400_000), 400_000);
    expect(put.status).toBe(201);
    await servedRight(a, sha256(bytes), bytes.length);
  }, 30_000);

  test("idle sessions are collected, row and file, and so are files without a session", async () => {
    const { loc, id } = await open(a, "brief");
    expect((await patch(b, loc, 0, new TextEncoder().encode("partial"))).status).toBe(202);
    expect(row(id)?.size_bytes).toBe(7);
    expect(existsSync(sessionFile(id))).toBe(true);
    const stray = sessionFile(crypto.randomUUID());
    await writeFile(stray, "left by a crash between file and row");
    const old = new Date(Date.now() - 10 * 60_000);
    await utimes(stray, old, old);
    await until(() => row(id) === null && !existsSync(sessionFile(id)) && !existsSync(stray), "the collector");
    for (const v of [a, b]) {
      const s = await fetch(new URL(loc, v.url), { headers: H });
      expect(s.status).toBe(404);
      expect((await s.json()).errors[0].code).toBe("BLOB_UPLOAD_UNKNOWN");
    }
  }, 30_000);

  test("an upload resumes after a restart: status gives the bytes received, the rest completes it", async () => {
    const bytes = pseudoRandomBytes(1_500_000, 4);
    const { loc, id } = await open(a);
    expect((await patch(a, loc, 0, bytes.subarray(0, 1_000_000))).status).toBe(202);
    for (const v of [a, b]) expect(await v.stop()).toBe(0);
    expect(statSync(sessionFile(id)).size).toBe(1_000_000);
    a = await spawnVault({ config, dataDir });
    all.push(a);
    const s = await fetch(new URL(loc, a.url), { headers: H });
    expect(s.status).toBe(204);
    expect(s.headers.get("range")).toBe("0-999999");
    expect(s.headers.get("docker-upload-uuid")).toBe(id);
    expect((await patch(a, loc, 1_000_000, bytes.subarray(1_000_000, 1_200_000))).status).toBe(202);
    const put = await close(a, loc, sha256(bytes), bytes.subarray(1_200_000), 1_200_000);
    expect(put.status).toBe(201);
    await servedRight(a, sha256(bytes), bytes.length);
  }, 60_000);

  test("after a crash mid-chunk the upload resumes from the last complete chunk on a new process", async () => {
    const bytes = pseudoRandomBytes(900_000, 5);
    const { loc, id } = await open(a);
    expect((await patch(a, loc, 0, bytes.subarray(0, 300_000))).status).toBe(202);
    const held = heldPatch(a, loc, bytes.subarray(300_000, 500_000), 600_000);
    await until(() => statSync(sessionFile(id)).size > 300_000 && row(id)?.writer !== null, "a to write the held chunk");
    a.kill9();
    await a.exited;
    held.destroy();
    expect(row(id)?.size_bytes).toBe(300_000);
    b = await spawnVault({ config, dataDir });
    all.push(b);
    const s = await fetch(new URL(loc, b.url), { headers: H });
    expect(s.status).toBe(204);
    expect(s.headers.get("range")).toBe("0-299999");
    // the dead process's claim is taken over and its partial chunk cut off
    expect((await patch(b, loc, 300_000, bytes.subarray(300_000, 700_000))).status).toBe(202);
    expect(row(id)).toEqual({ size_bytes: 700_000, writer: null });
    const put = await close(b, loc, sha256(bytes), bytes.subarray(700_000), 700_000);
    expect(put.status).toBe(201);
    await servedRight(b, sha256(bytes), bytes.length);
  }, 60_000);
});

/** oci plugin regressions found in review: a push whose body the client cuts off is a client error, not a 500. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { startVault, type StartedVault } from "../helpers/vault.ts";

const AUTH = "Basic " + btoa("root:root-password-123");
let v: StartedVault;
const lines: { method: string; path: string; status: number }[] = [];

beforeAll(async () => {
  v = await startVault({
    config: {
      auth: { anonymousRead: false, admin: { user: "root", password: "root-password-123" } },
      repositories: [{ name: "images", format: "oci", type: "hosted" }],
    },
    accessLog: (line) => lines.push(JSON.parse(line)),
  });
});
afterAll(async () => {
  await v?.stop();
});

/** Sends a request declaring `declared` body bytes, writes `sent` of them, then closes the connection. */
async function cutOff(method: string, target: string, declared: number, sent: number): Promise<void> {
  const port = Number(new URL(v.url).port);
  const sock = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {}, drain() {}, close() {}, error() {} } });
  sock.write(`${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: ${AUTH}\r\nContent-Type: application/octet-stream\r\nContent-Length: ${declared}\r\n\r\n`);
  sock.write(new Uint8Array(sent).fill(7));
  sock.flush();
  await Bun.sleep(100);
  sock.end();
}

/** Waits (bounded) for the access-log line of `method path`. */
async function logged(method: string, path: string): Promise<{ status: number }> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const l = lines.find((x) => x.method === method && x.path === path);
    if (l) return l;
    if (Date.now() > deadline) throw new Error(`no access-log line for ${method} ${path}`);
    await Bun.sleep(20);
  }
}

test("a PATCH cut off mid-body is logged as a 400 (not 500), and the session stays usable from its last good offset", async () => {
  const post = await fetch(`${v.url}/v2/images/app/blobs/uploads/`, { method: "POST", headers: { authorization: AUTH } });
  expect(post.status).toBe(202);
  const loc = post.headers.get("location")!;
  const path = new URL(loc, v.url).pathname;

  await cutOff("PATCH", path, 4 * 1024 * 1024, 512 * 1024);
  expect((await logged("PATCH", path)).status).toBe(400);
  expect(lines.some((l) => l.status >= 500)).toBe(false);

  // the session is where it was before the cut request: a complete upload from offset 0 succeeds
  const status = await fetch(new URL(loc, v.url), { headers: { authorization: AUTH } });
  expect(status.status).toBe(204);
  expect(status.headers.get("range")).toBe("0-0");
  const bytes = new TextEncoder().encode("layer bytes\n");
  const digest = "sha256:" + new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
  const put = await fetch(new URL(`${loc}${loc.includes("?") ? "&" : "?"}digest=${digest}`, v.url), {
    method: "PUT",
    body: bytes,
    headers: { authorization: AUTH, "content-type": "application/octet-stream" },
  });
  expect(put.status).toBe(201);
  const blob = await fetch(`${v.url}/v2/images/app/blobs/${digest}`, { headers: { authorization: AUTH } });
  expect(await blob.text()).toBe("layer bytes\n");
}, 30_000);

test("errors of /v2/<repo>/… requests are logged with the repository the name resolved to, not the first oci repository", async () => {
  const { spawnVault } = await import("../helpers/vault.ts");
  const s = await spawnVault({
    config: {
      auth: { anonymousRead: false, admin: { user: "root", password: "root-password-123" } },
      repositories: [
        { name: "first", format: "oci", type: "hosted" },
        { name: "second", format: "oci", type: "hosted" },
      ],
    },
  });
  try {
    const post = await fetch(`${s.url}/v2/second/app/blobs/uploads/`, { method: "POST", headers: { authorization: AUTH } });
    expect(post.status).toBe(202);
    const path = new URL(post.headers.get("location")!, s.url).pathname;
    const sock = await Bun.connect({ hostname: "127.0.0.1", port: s.port, socket: { data() {}, drain() {}, close() {}, error() {} } });
    sock.write(`PATCH ${path} HTTP/1.1\r\nHost: 127.0.0.1:${s.port}\r\nAuthorization: ${AUTH}\r\nContent-Length: 4194304\r\n\r\n`);
    sock.write(new Uint8Array(256 * 1024));
    sock.flush();
    await Bun.sleep(100);
    sock.end();
    const deadline = Date.now() + 10_000;
    const line = () => s.output().split("\n").find((l) => l.includes("registry client disconnected"));
    while (!line() && Date.now() < deadline) await Bun.sleep(20);
    expect(line()).toContain('"repo":"second"');
  } finally {
    await s.stop();
  }
}, 30_000);

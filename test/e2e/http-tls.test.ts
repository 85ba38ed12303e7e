/** A proxy repository in front of an https upstream with a private (self-signed) certificate: refused by default, trusted with upstreamCaFile. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { selfSignedCert, startTlsServer } from "../helpers/tls.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";

let tls: { url: string; stop(): Promise<void> };
let vault: StartedVault;
let upstreamHits = 0;

beforeAll(async () => {
  const cert = await selfSignedCert();
  tls = startTlsServer(cert, (req) => {
    upstreamHits++;
    return new Response(`file ${new URL(req.url).pathname}\n`, { headers: { "content-type": "text/plain" } });
  });
  vault = await startVault({
    config: {
      repositories: [
        { name: "trusted", format: "http", type: "proxy", upstream: tls.url + "/", upstreamCaFile: cert.certFile },
        { name: "strict", format: "http", type: "proxy", upstream: tls.url + "/" },
      ],
    },
  });
});
afterAll(async () => {
  await vault?.stop();
  await tls?.stop();
});

test("with upstreamCaFile the file is fetched over verified TLS and then served from the cache", async () => {
  const miss = await fetch(`${vault.url}/trusted/dist/a.txt`);
  expect(miss.status).toBe(200);
  expect(miss.headers.get("x-vault-cache")).toBe("MISS");
  expect(await miss.text()).toBe("file /dist/a.txt\n");
  const hit = await fetch(`${vault.url}/trusted/dist/a.txt`);
  expect(hit.headers.get("x-vault-cache")).toBe("HIT");
  expect(await hit.text()).toBe("file /dist/a.txt\n");
  expect(upstreamHits).toBe(1);
});

test("without it the certificate is refused: 502 naming the verification code, nothing reaches the upstream, nothing stored", async () => {
  const before = upstreamHits;
  const res = await fetch(`${vault.url}/strict/dist/b.txt`);
  expect(res.status).toBe(502);
  const body = await res.text();
  expect(body).toContain("DEPTH_ZERO_SELF_SIGNED_CERT");
  expect(body).toContain("upstreamCaFile");
  expect(upstreamHits).toBe(before);
  expect(await vault.vault.repositories.get("strict")!.artifacts.get("dist/b.txt")).toBeNull();
});

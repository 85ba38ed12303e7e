/** A self-signed certificate for 127.0.0.1 made with the real `openssl` at test time, and a TLS upstream serving files with it. */
import { join } from "node:path";
import { tmpDataDir } from "./tmp.ts";

/** PEM files of a fresh self-signed certificate whose subjectAltName is IP:127.0.0.1. */
export interface TestCert {
  /** Certificate (also its own CA), PEM. */
  certFile: string;
  /** Private key, PEM. */
  keyFile: string;
}

/**
 * Generates a 2-day RSA-2048 self-signed certificate for 127.0.0.1 with `openssl req -x509`.
 * @throws Error with openssl's output when it fails (openssl missing: install the Debian package `openssl`)
 */
export async function selfSignedCert(): Promise<TestCert> {
  const dir = await tmpDataDir("vault-tls-");
  const certFile = join(dir, "cert.pem");
  const keyFile = join(dir, "key.pem");
  const p = Bun.spawn(
    ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
    { stdout: "pipe", stderr: "pipe" },
  );
  const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`openssl req failed (${code}): ${err}`);
  return { certFile, keyFile };
}

/** An https server on 127.0.0.1 (port 0) answering `handler`, with the given certificate. */
export function startTlsServer(cert: TestCert, handler: (req: Request) => Response | Promise<Response>): { url: string; stop(): Promise<void> } {
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, tls: { cert: Bun.file(cert.certFile), key: Bun.file(cert.keyFile) }, fetch: handler });
  return { url: `https://127.0.0.1:${server.port}`, stop: () => server.stop(true) };
}

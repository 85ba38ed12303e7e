/** rawRequest: sends an HTTP/1.1 request with an exact request-target over TCP (fetch would normalise `..`, `%2e`, `//`). */

/** A parsed raw response. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Sends `METHOD target HTTP/1.1` to 127.0.0.1:`port` with `Connection: close` and reads the whole response.
 * @param target sent byte for byte (e.g. `/files/%252e%252e/x` or `/files/..\\x`)
 * @throws Error when the server closes without a status line or after `timeoutMs` (default 10 000)
 */
export function rawRequest(port: number, target: string, o: { method?: string; headers?: Record<string, string>; timeoutMs?: number } = {}): Promise<RawResponse> {
  const extra = Object.entries(o.headers ?? {})
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join("");
  const request = `${o.method ?? "GET"} ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n${extra}\r\n`;
  return new Promise((resolve, reject) => {
    let buf = "";
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const headEnd = buf.indexOf("\r\n\r\n");
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(buf);
      if (!m || headEnd === -1) return reject(new Error(`no HTTP response for ${JSON.stringify(target)}: ${JSON.stringify(buf.slice(0, 200))}`));
      const headers: Record<string, string> = {};
      for (const line of buf.slice(0, headEnd).split("\r\n").slice(1)) {
        const i = line.indexOf(":");
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      resolve({ status: Number(m[1]), headers, body: buf.slice(headEnd + 4) });
    };
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      reject(new Error(`timeout waiting for ${JSON.stringify(target)}`));
    }, o.timeoutMs ?? 10_000);
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(s) {
          s.write(request);
        },
        data(_s, d) {
          buf += Buffer.from(d).toString("latin1");
        },
        close() {
          finish();
        },
        end(s) {
          s.end();
        },
        error(_s, e) {
          if (!done) {
            done = true;
            clearTimeout(timer);
            reject(e);
          }
        },
      },
    }).catch((e) => {
      if (!done) {
        done = true;
        clearTimeout(timer);
        reject(e);
      }
    });
  });
}

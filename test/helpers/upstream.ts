/** startUpstream: a real loopback HTTP server standing in for an upstream registry in tests; records every request. */
import { stat } from "node:fs/promises";
import { resolve, sep } from "node:path";

/** One request the fake upstream received. */
export interface UpstreamRequest {
  method: string;
  /** Decoded-as-received pathname (no query). */
  path: string;
  /** Full request URL. */
  url: string;
  headers: Headers;
  /** epoch ms when it arrived */
  at: number;
}

/** A running fake upstream. */
export interface TestUpstream {
  /** `http://127.0.0.1:<port>` (no trailing slash). */
  url: string;
  port: number;
  /** Every request received, in arrival order. */
  requests: UpstreamRequest[];
  /** How many requests match a pathname (exact) or a predicate. */
  count(pathOrPredicate: string | ((r: UpstreamRequest) => boolean)): number;
  /** Stops the server, closing open connections. */
  stop(): Promise<void>;
}

/** Options of {@link startUpstream}. */
export interface StartUpstreamOptions {
  /** Directory served as the upstream's document root (GET/HEAD with ETag, Last-Modified, 304, single Range). */
  root?: string;
  /**
   * Custom handler; runs first. Returning `undefined` falls through to `root` (or 404 without a root).
   * Throwing closes the connection without a response.
   */
  handler?: (req: Request) => Response | undefined | Promise<Response | undefined>;
}

/**
 * Starts a fake upstream on 127.0.0.1, port 0 (DESIGN.md testing rules: real servers on loopback).
 *
 * Files under `root` are served with a strong `ETag` (`"<size hex>-<mtime hex>"`), `Last-Modified` (file mtime),
 * `Content-Length`, `Accept-Ranges: bytes`; `If-None-Match` (weak comparison) and `If-Modified-Since` answer 304;
 * a single `Range: bytes=a-b` answers 206. Paths escaping `root` answer 404.
 */
export async function startUpstream(o: StartUpstreamOptions = {}): Promise<TestUpstream> {
  const requests: UpstreamRequest[] = [];
  const root = o.root ? resolve(o.root) : undefined;
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 60,
    async fetch(req) {
      const u = new URL(req.url);
      requests.push({ method: req.method, path: u.pathname, url: req.url, headers: req.headers, at: Date.now() });
      if (o.handler) {
        const r = await o.handler(req);
        if (r) return r;
      }
      if (root) return serveFile(root, req, u);
      return new Response("not found\n", { status: 404 });
    },
  });
  const url = `http://127.0.0.1:${server.port}`;
  return {
    url,
    port: server.port!,
    requests,
    count(p) {
      return requests.filter(typeof p === "string" ? (r) => r.path === p : p).length;
    },
    async stop() {
      await server.stop(true);
    },
  };
}

async function serveFile(root: string, req: Request, u: URL): Promise<Response> {
  if (req.method !== "GET" && req.method !== "HEAD") return new Response("method not allowed\n", { status: 405 });
  let rel: string;
  try {
    rel = decodeURIComponent(u.pathname);
  } catch {
    return new Response("bad path\n", { status: 400 });
  }
  const path = resolve(root, "." + rel);
  if (path !== root && !path.startsWith(root + sep)) return new Response("not found\n", { status: 404 });
  let st;
  try {
    st = await stat(path);
  } catch {
    return new Response("not found\n", { status: 404 });
  }
  if (!st.isFile()) return new Response("not found\n", { status: 404 });
  const etag = `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
  const lastModified = new Date(Math.floor(st.mtimeMs / 1000) * 1000).toUTCString();
  const headers: Record<string, string> = {
    etag,
    "last-modified": lastModified,
    "accept-ranges": "bytes",
    "content-type": "application/octet-stream",
  };
  const inm = req.headers.get("if-none-match");
  if (inm) {
    const strip = (t: string) => t.trim().replace(/^W\//, "");
    if (inm.trim() === "*" || inm.split(",").some((t) => strip(t) === strip(etag))) return new Response(null, { status: 304, headers });
  } else {
    const ims = req.headers.get("if-modified-since");
    if (ims && Date.parse(ims) >= Date.parse(lastModified)) return new Response(null, { status: 304, headers });
  }
  const file = Bun.file(path);
  const range = req.method === "GET" ? /^bytes=(\d+)-(\d*)$/.exec(req.headers.get("range") ?? "") : null;
  if (range) {
    const start = Number(range[1]);
    const end = Math.min(range[2] ? Number(range[2]) : st.size - 1, st.size - 1);
    if (start > end) return new Response(null, { status: 416, headers: { ...headers, "content-range": `bytes */${st.size}` } });
    return new Response(file.slice(start, end + 1), { status: 206, headers: { ...headers, "content-range": `bytes ${start}-${end}/${st.size}` } });
  }
  if (req.method === "HEAD") return new Response(null, { headers: { ...headers, "content-length": String(st.size) } });
  return new Response(file, { headers: { ...headers, "content-disposition": "inline" } });
}

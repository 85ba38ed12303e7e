/** Upstream HTTP client of one repository: timeouts, bounded retries, manual redirects, proxy env, pinned credentials, raw bodies. */
import type { Logger, UpstreamClient, UpstreamInit } from "../plugin.ts";
import type { RepositoryConfig, UpstreamDefaults } from "../config/types.ts";
import { readFileSync } from "node:fs";
import { rootCertificates } from "node:tls";
import { VaultError, redactUrl } from "../errors.ts";
import { metrics } from "../metrics.ts";

/** Proxy-related environment variables (lower-case names win, as curl does). */
export interface ProxyEnv {
  HTTPS_PROXY?: string;
  https_proxy?: string;
  HTTP_PROXY?: string;
  http_proxy?: string;
  ALL_PROXY?: string;
  all_proxy?: string;
  NO_PROXY?: string;
  no_proxy?: string;
}

/** Options of {@link createUpstreamClient}. */
export interface UpstreamClientOptions {
  /** The repository: `upstream` (its origin receives `upstreamAuth`), `name` (metrics label). */
  repo: RepositoryConfig;
  /** Global defaults (`upstream:` in the config): connect/read timeouts in seconds, retries. */
  defaults?: UpstreamDefaults;
  log: Logger;
  /** Environment to read HTTPS_PROXY/HTTP_PROXY/ALL_PROXY/NO_PROXY from; default `process.env` (read once, at creation). */
  env?: ProxyEnv;
}

const REDIRECT = new Set([301, 302, 303, 307, 308]);
const RETRY_STATUS = new Set([502, 503, 504]);
const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);
const MAX_REDIRECTS = 10;

/** Marks a VaultError raised for a connection failure (safe to retry an idempotent request). */
const RETRYABLE = Symbol("retryable");

/**
 * Creates the upstream client of one repository (core/plugin.ts `UpstreamClient`).
 *
 * - Bodies are never decompressed (`decompress: false`); when the caller sets no `Accept-Encoding`,
 *   `Accept-Encoding: identity` is sent so stored bytes equal the origin's file (specs/http-caching.md §6.6).
 * - `connectTimeoutMs` (default `defaults.connectTimeoutSeconds` or 10 s) bounds the time to the final response
 *   headers, redirects included; `readTimeoutMs` (default 30 s) bounds the silence while a body chunk is awaited —
 *   a stall errors the body stream with VAULT_UPSTREAM_TIMEOUT and closes the connection.
 * - GET/HEAD are retried (default 2 times, backoff 100 ms·2ⁿ) on connection errors and 502/503/504; the last
 *   5xx response is returned as is (the caller decides), connection failures throw.
 * - Redirects are followed by hand (≤ 10 hops, http/https only) so credentials never leak: the repository's
 *   `upstreamAuth` (Basic `username:password|token`, or `Bearer token`) is added only when the hop's origin equals the
 *   configured upstream origin and the caller set no `Authorization`; a caller's `Authorization` is dropped on a
 *   hop to another origin. `redirect: "manual"` returns the 3xx itself. `Response.url` is the final URL.
 * - Proxy: HTTPS_PROXY (https targets), HTTP_PROXY (http targets), ALL_PROXY as fallback; NO_PROXY entries
 *   (`*`, `host`, `.suffix`, `host:port`) match by host suffix and connect directly. TLS is always verified.
 * - Connections are reused by Bun's keep-alive pool.
 * - Metrics: `vault_upstream_requests_total{repository,status}`, `vault_upstream_latency_seconds{repository}`,
 *   `vault_upstream_errors_total{repository,kind}` (kind: connect, tls, timeout, read, read_timeout, status).
 * - TLS: certificates are always verified against the system roots plus the repository's `upstreamCaFile`; a rejected
 *   certificate is VAULT_UPSTREAM_ERROR (502) naming the verification code, and is not retried.
 *
 * @throws VaultError VAULT_UPSTREAM_DOWN (503) on connection failure after retries, VAULT_UPSTREAM_TIMEOUT (504)
 *   when no headers arrive in time, VAULT_UPSTREAM_ERROR (502) on a redirect loop or a non-http(s) redirect. URLs in
 *   errors and logs are redacted. An abort by `init.signal` rethrows the signal's reason.
 */
export function createUpstreamClient(o: UpstreamClientOptions): UpstreamClient {
  const repository = o.repo.name;
  const log = o.log;
  const env = o.env ?? (process.env as ProxyEnv);
  const proxies = {
    https: env.https_proxy || env.HTTPS_PROXY || env.all_proxy || env.ALL_PROXY || undefined,
    http: env.http_proxy || env.HTTP_PROXY || env.all_proxy || env.ALL_PROXY || undefined,
  };
  const noProxy = parseNoProxy(env.no_proxy ?? env.NO_PROXY ?? "");
  const defConnectMs = (o.defaults?.connectTimeoutSeconds ?? 10) * 1000;
  const defReadMs = (o.defaults?.readTimeoutSeconds ?? 30) * 1000;
  const defRetries = o.defaults?.retries ?? 2;
  let upstreamOrigin: string | null = null;
  try {
    if (o.repo.upstream) upstreamOrigin = new URL(o.repo.upstream).origin;
  } catch {
    upstreamOrigin = null;
  }
  const authHeader = authorizationFor(o.repo.upstreamAuth);
  // upstreamCaFile adds CAs to the system roots (a redirect to a public CDN still verifies).
  const tls = o.repo.upstreamCaFile ? { ca: [...rootCertificates, readFileSync(o.repo.upstreamCaFile, "utf8")] } : undefined;

  function proxyFor(u: URL): string | false {
    if (noProxyMatches(u, noProxy)) return false;
    return (u.protocol === "https:" ? proxies.https : proxies.http) ?? false;
  }

  /** One logical request (redirects included) bounded by the connect timeout. */
  async function once(start: URL, init: UpstreamInit, method: string): Promise<Response> {
    const connectMs = init.connectTimeoutMs ?? defConnectMs;
    const readMs = init.readTimeoutMs ?? defReadMs;
    const ac = new AbortController();
    const caller = init.signal;
    const onCallerAbort = () => ac.abort(caller!.reason);
    if (caller) {
      if (caller.aborted) throw caller.reason;
      caller.addEventListener("abort", onCallerAbort, { once: true });
    }
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, connectMs);
    const t0 = performance.now();
    let url = start;
    let curMethod = method;
    let body = init.body;
    const startOrigin = start.origin;
    const follow = (init.redirect ?? "follow") === "follow";
    try {
      for (let hop = 0; ; hop++) {
        const headers = new Headers(init.headers);
        if (!headers.has("accept-encoding")) headers.set("accept-encoding", "identity");
        if (url.origin !== startOrigin) headers.delete("authorization");
        else if (authHeader && url.origin === upstreamOrigin && !headers.has("authorization")) headers.set("authorization", authHeader);
        const proxy = proxyFor(url);
        const res = await fetch(url, {
          ...init,
          method: curMethod,
          body,
          headers,
          redirect: "manual",
          signal: ac.signal,
          decompress: false,
          proxy: proxy === false ? false : { url: proxy, respectNoProxy: false },
          ...(tls ? { tls } : {}),
        } as BunFetchRequestInit);
        metrics.upstreamRequests.inc({ repository, status: res.status });
        if (follow && REDIRECT.has(res.status) && res.headers.has("location")) {
          void res.body?.cancel().catch(() => {});
          if (hop >= MAX_REDIRECTS) throw new VaultError("VAULT_UPSTREAM_ERROR", 502, "too many upstream redirects", { url: redactUrl(start.href) });
          const next = new URL(res.headers.get("location")!, url);
          if (next.protocol !== "https:" && next.protocol !== "http:")
            throw new VaultError("VAULT_UPSTREAM_ERROR", 502, "upstream redirected to a non-http URL", { url: redactUrl(start.href) });
          if (res.status === 303 || ((res.status === 301 || res.status === 302) && curMethod === "POST")) {
            if (curMethod !== "HEAD") curMethod = "GET";
            body = undefined;
          }
          url = next;
          continue;
        }
        clearTimeout(timer);
        metrics.upstreamLatency.observe({ repository }, (performance.now() - t0) / 1000);
        return guardBody(res, ac, readMs, url, curMethod, () => caller?.removeEventListener("abort", onCallerAbort));
      }
    } catch (e) {
      clearTimeout(timer);
      caller?.removeEventListener("abort", onCallerAbort);
      if (caller?.aborted) throw caller.reason;
      if (e instanceof VaultError) throw e;
      if (timedOut) {
        metrics.upstreamErrors.inc({ repository, kind: "timeout" });
        throw new VaultError("VAULT_UPSTREAM_TIMEOUT", 504, `upstream did not answer within ${connectMs} ms`, { url: redactUrl(url.href) });
      }
      const cause = causeOf(e);
      if (isTlsRejection(e)) {
        // Not retried: the same certificate is rejected again.
        metrics.upstreamErrors.inc({ repository, kind: "tls" });
        throw new VaultError("VAULT_UPSTREAM_ERROR", 502, `upstream TLS certificate not trusted: ${cause} (trust its CA with the repository's upstreamCaFile)`, {
          url: redactUrl(url.href),
        });
      }
      metrics.upstreamErrors.inc({ repository, kind: "connect" });
      const err = new VaultError("VAULT_UPSTREAM_DOWN", 503, `upstream unreachable: ${cause}`, {
        url: redactUrl(url.href),
      });
      (err as unknown as Record<symbol, boolean>)[RETRYABLE] = true;
      throw err;
    }
  }

  /**
   * Wraps the body so a stall longer than `readMs` errors it (VAULT_UPSTREAM_TIMEOUT) and closes the connection.
   * The same guarded reader is what {@link upstreamBody} hands to the cache engine (no second stream in between).
   */
  function guardBody(res: Response, ac: AbortController, readMs: number, url: URL, method: string, done: () => void): Response {
    const init = { status: res.status, statusText: res.statusText, headers: res.headers };
    let out: Response;
    if (!res.body || method === "HEAD" || NULL_BODY_STATUS.has(res.status)) {
      void res.body?.cancel().catch(() => {});
      done();
      out = new Response(null, init);
    } else {
      const body = new UpstreamBody(res.body.getReader(), ac, readMs, redactUrl(url.href), repository, done);
      out = new Response(
        new ReadableStream<Uint8Array>(
          {
            async pull(ctrl) {
              let chunks: Uint8Array[] | null;
              try {
                chunks = await body.read();
              } catch (e) {
                ctrl.error(e);
                return;
              }
              if (chunks === null) ctrl.close();
              else for (const c of chunks) ctrl.enqueue(c);
            },
            cancel: () => body.cancel(),
          },
          { highWaterMark: 0 },
        ),
        init,
      );
      GUARDED.set(out, body);
    }
    Object.defineProperty(out, "url", { value: url.href });
    return out;
  }

  return {
    async fetch(input: string | URL, init: UpstreamInit = {}): Promise<Response> {
      const url = typeof input === "string" ? new URL(input) : new URL(input.href);
      if (url.protocol !== "https:" && url.protocol !== "http:")
        throw new VaultError("VAULT_UPSTREAM_ERROR", 502, "upstream URL must be http(s)", { url: redactUrl(url.href) });
      const method = (init.method ?? "GET").toUpperCase();
      const idempotent = method === "GET" || method === "HEAD";
      const retries = idempotent ? Math.max(0, init.retries ?? defRetries) : 0;
      for (let attempt = 0; ; attempt++) {
        let res: Response;
        try {
          res = await once(url, init, method);
        } catch (e) {
          if (attempt < retries && (e as Record<symbol, boolean>)?.[RETRYABLE] && !init.signal?.aborted) {
            log.debug("upstream retry", { url: redactUrl(url.href), attempt: attempt + 1, error: (e as Error).message });
            await backoff(attempt, init.signal);
            continue;
          }
          if (e instanceof VaultError) log.warn("upstream failed", { url: e.detail.url, code: e.code, error: e.message });
          throw e;
        }
        if (RETRY_STATUS.has(res.status)) {
          metrics.upstreamErrors.inc({ repository, kind: "status" });
          if (attempt < retries) {
            void res.body?.cancel().catch(() => {});
            log.debug("upstream retry", { url: redactUrl(url.href), attempt: attempt + 1, status: res.status });
            await backoff(attempt, init.signal);
            continue;
          }
        }
        return res;
      }
    },
  };
}

/** Guarded readers of the bodies of responses returned by an upstream client, by response. */
const GUARDED = new WeakMap<Response, UpstreamBody>();

/**
 * The stall-guarded reader behind a response of {@link createUpstreamClient}, for streaming consumers that want the
 * upstream's chunks without a JavaScript stream in between (the cache engine's fill loop). Use either this or
 * `res.body`, never both. Undefined for a response that did not come from an upstream client, or has no body.
 */
export function upstreamBody(res: Response): UpstreamBody | undefined {
  return GUARDED.get(res);
}

/**
 * Reads one upstream body in batches (every chunk the runtime has buffered, one await for all of them), and
 * errors it when a read waits longer than `readMs` for bytes. One timer per `readMs` period checks the read in
 * progress, rather than a timer set and cleared per chunk.
 */
export class UpstreamBody {
  /** `performance.now()` when the read in progress began; 0 when no read is waiting. */
  private waitingSince = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stalled = false;
  private over = false;

  constructor(
    private readonly reader: ReadableStreamDefaultReader<Uint8Array>,
    private readonly ac: AbortController,
    private readonly readMs: number,
    /** Redacted URL, for errors. */
    private readonly url: string,
    private readonly repository: string,
    private readonly done: () => void,
  ) {}

  private finish(): void {
    if (this.over) return;
    this.over = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.done();
  }

  private check = (): void => {
    this.timer = undefined;
    if (this.waitingSince === 0 || this.over) return;
    const waited = performance.now() - this.waitingSince;
    if (waited >= this.readMs) {
      this.stalled = true;
      this.ac.abort();
    } else this.timer = setTimeout(this.check, this.readMs - waited);
  };

  /**
   * The next chunks (at least one, in order), or null at the end of the body.
   * @throws VaultError VAULT_UPSTREAM_TIMEOUT (504) when no byte arrived for `readMs`, VAULT_UPSTREAM_DOWN (503)
   *   when the connection failed (the cause's code or first sentence in the message)
   */
  async read(): Promise<Uint8Array[] | null> {
    for (;;) {
      if (this.over) return null;
      this.waitingSince = performance.now();
      this.timer ??= setTimeout(this.check, this.readMs);
      let r: Bun.ReadableStreamDefaultReadManyResult<Uint8Array>;
      try {
        const p = (this.reader as unknown as { readMany(): Promise<typeof r> | typeof r }).readMany();
        r = p instanceof Promise ? await p : p;
      } catch (e) {
        this.finish();
        if (this.stalled) {
          metrics.upstreamErrors.inc({ repository: this.repository, kind: "read_timeout" });
          throw new VaultError("VAULT_UPSTREAM_TIMEOUT", 504, `upstream body stalled for ${this.readMs} ms`, { url: this.url });
        }
        metrics.upstreamErrors.inc({ repository: this.repository, kind: "read" });
        throw new VaultError("VAULT_UPSTREAM_DOWN", 503, `upstream body failed: ${causeOf(e)}`, { url: this.url });
      } finally {
        this.waitingSince = 0;
      }
      const chunks = r.value.length > 0 ? (r.value as Uint8Array[]).filter((c) => c.byteLength > 0) : [];
      if (r.done) this.finish();
      if (chunks.length > 0) return chunks;
      if (r.done) return null;
    }
  }

  /** Stops reading and closes the connection. */
  async cancel(reason?: unknown): Promise<void> {
    this.finish();
    this.ac.abort();
    await this.reader.cancel(reason).catch(() => {});
  }
}

async function backoff(attempt: number, signal?: AbortSignal): Promise<void> {
  const ms = 100 * 2 ** attempt + Math.floor(Math.random() * 50);
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * A short, client-safe cause of a network error: the error code (`ConnectionRefused`, `ECONNRESET`, …) or the first
 * sentence of the message, without runtime hints such as Bun's "pass `verbose: true`" advice.
 */
export function causeOf(e: unknown): string {
  const code = (e as { code?: unknown })?.code;
  if (typeof code === "string" && code) return code;
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split(/(?<=[.?!])\s+(?:For more information|pass `verbose)/)[0].split("\n")[0].slice(0, 200);
}

/** OpenSSL/BoringSSL verification codes: the upstream's certificate chain, name or dates were rejected. */
const TLS_REJECTIONS = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_UNTRUSTED",
  "CERT_REVOKED",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "HOSTNAME_MISMATCH",
]);

/** Whether a fetch error is a rejected upstream certificate (by its code). */
export function isTlsRejection(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return typeof code === "string" && TLS_REJECTIONS.has(code);
}

/** `Authorization` value for configured upstream credentials: Basic `username:password|token`, or `Bearer token`. */
export function authorizationFor(a: RepositoryConfig["upstreamAuth"]): string | undefined {
  if (!a) return undefined;
  // Empty values (an unset `${VAR:-}`) mean no credentials.
  if (a.username) return "Basic " + Buffer.from(`${a.username}:${a.password ?? a.token ?? ""}`).toString("base64");
  if (a.token) return `Bearer ${a.token}`;
  return undefined;
}

/** One parsed NO_PROXY entry: `host` without leading dots (empty = `*`), optional port. */
interface NoProxyEntry {
  host: string;
  port?: string;
}

/** Parses NO_PROXY (comma or space separated: `*`, `example.com`, `.example.com`, `*.example.com`, `host:8080`, `[::1]`). */
export function parseNoProxy(value: string): NoProxyEntry[] {
  const out: NoProxyEntry[] = [];
  for (let raw of value.split(/[\s,]+/)) {
    raw = raw.trim().toLowerCase();
    if (!raw) continue;
    if (raw === "*") {
      out.push({ host: "" });
      continue;
    }
    let port: string | undefined;
    const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(raw);
    if (m) {
      raw = m[1];
      port = m[2];
    }
    raw = raw.replace(/^\*?\.+/, "").replace(/^\[|\]$/g, "");
    if (raw) out.push({ host: raw, port });
  }
  return out;
}

/** True when `url`'s host equals an entry or ends with `.` + entry (and the port matches when the entry names one). */
export function noProxyMatches(url: URL, entries: NoProxyEntry[]): boolean {
  if (entries.length === 0) return false;
  const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, "");
  const port = url.port || (url.protocol === "https:" ? "443" : "80");
  for (const e of entries) {
    if (e.host === "") return true;
    if (e.port && e.port !== port) continue;
    if (host === e.host || host.endsWith("." + e.host)) return true;
  }
  return false;
}

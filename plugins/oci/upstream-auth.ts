/**
 * Upstream registry authentication for proxies (specs/oci.md §7): discovers the upstream's challenge on `GET /v2/`,
 * then per scope fetches Bearer tokens from its realm (anonymously or with the configured credentials), caches
 * them until shortly before they expire, and coalesces concurrent fetches. Basic-only upstreams get Basic.
 */
import type { Logger, UpstreamClient } from "../../core/plugin.ts";
import { VaultError } from "../../core/plugin.ts";
import { parseChallenges } from "./auth-challenge.ts";

/** Credentials for an upstream registry (its token service or Basic auth). */
export interface UpstreamCredentials {
  /** User for the token service, or Basic auth when the upstream asks for Basic. */
  username?: string;
  /** Password or access token of `username`. */
  password?: string;
  /** A ready Bearer token (sent as is; no token dance). */
  token?: string;
}

/** How an upstream wants to be authenticated, learnt from its `/v2/` answer. */
type Mode = { kind: "none" } | { kind: "basic" } | { kind: "bearer"; realm: string; service: string | undefined };

/** Seconds before a token's expiry at which we stop using it. */
const EXPIRY_MARGIN_SECONDS = 15;
/** Tokens that do not say how long they live are assumed to live this long (token spec default). */
const DEFAULT_TOKEN_SECONDS = 60;
/** How long a discovered mode is trusted before `/v2/` is asked again, ms. */
const MODE_TTL_MS = 3600_000;
/** Most cached tokens (one per scope); the oldest is dropped beyond this. */
const MAX_TOKENS = 5000;

/** Options of {@link UpstreamAuthenticator}. */
export interface UpstreamAuthOptions {
  /** The upstream's HTTP client (timeouts, retries, no decompression). */
  upstream: UpstreamClient;
  /** Registry base URL without trailing slash, e.g. `https://registry-1.docker.io`. */
  base: string;
  /** Configured credentials; anonymous token requests when unset. */
  credentials?: UpstreamCredentials;
  /** Logger of the repository (refused token requests are logged). */
  log: Logger;
}

/**
 * Tokens for one upstream registry. `authorization(scope)` returns the `Authorization` header value to send (or
 * undefined when the upstream needs none); call `reset(scope)` after an upstream 401 to force a new token.
 */
export class UpstreamAuthenticator {
  private mode: { value: Mode; at: number } | null = null;
  private modeFlight: Promise<Mode> | null = null;
  private readonly tokens = new Map<string, { value: string; expiresAt: number }>();
  private readonly flights = new Map<string, Promise<string>>();
  private readonly basic: string | undefined;

  constructor(private readonly o: UpstreamAuthOptions) {
    const c = o.credentials;
    this.basic = c && c.username ? "Basic " + Buffer.from(`${c.username}:${c.password ?? ""}`).toString("base64") : undefined;
  }

  /**
   * The `Authorization` value for requests needing `scope` (e.g. `repository:library/alpine:pull`).
   * @throws VaultError VAULT_UPSTREAM_DOWN/TIMEOUT when the upstream or its token service is unreachable,
   *   VAULT_UPSTREAM_ERROR (502) when the token service refuses (bad credentials) or answers garbage
   */
  async authorization(scope: string): Promise<string | undefined> {
    if (this.o.credentials?.token) return `Bearer ${this.o.credentials.token}`;
    const mode = await this.discover();
    if (mode.kind === "none") return undefined;
    if (mode.kind === "basic") return this.basic;
    const now = Date.now();
    const t = this.tokens.get(scope);
    if (t && t.expiresAt > now) return `Bearer ${t.value}`;
    let f = this.flights.get(scope);
    if (!f) {
      f = this.fetchToken(mode, scope).finally(() => this.flights.delete(scope));
      this.flights.set(scope, f);
    }
    return `Bearer ${await f}`;
  }

  /** Forgets the token of `scope` (and the discovered mode), after the upstream answered 401 with it. */
  reset(scope: string): void {
    this.tokens.delete(scope);
    this.mode = null;
  }

  private async discover(): Promise<Mode> {
    if (this.mode && Date.now() - this.mode.at < MODE_TTL_MS) return this.mode.value;
    if (!this.modeFlight) {
      this.modeFlight = this.probe()
        .then((m) => {
          this.mode = { value: m, at: Date.now() };
          return m;
        })
        .finally(() => {
          this.modeFlight = null;
        });
    }
    return this.modeFlight;
  }

  private async probe(): Promise<Mode> {
    const url = `${this.o.base}/v2/`;
    const res = await this.o.upstream.fetch(url, { method: "GET", headers: { accept: "application/json" } });
    void res.body?.cancel().catch(() => {});
    if (res.status === 200) return { kind: "none" };
    if (res.status === 401) {
      const challenges = parseChallenges(res.headers.get("www-authenticate"));
      const bearer = challenges.find((c) => c.scheme === "bearer" && c.params.realm);
      if (bearer) {
        let realm: URL;
        try {
          realm = new URL(bearer.params.realm, url);
        } catch {
          throw new VaultError("VAULT_UPSTREAM_ERROR", 502, "upstream token realm is not a URL");
        }
        if (realm.protocol !== "https:" && realm.protocol !== "http:") throw new VaultError("VAULT_UPSTREAM_ERROR", 502, "upstream token realm is not http(s)");
        return { kind: "bearer", realm: realm.href, service: bearer.params.service };
      }
      if (challenges.some((c) => c.scheme === "basic")) return { kind: "basic" };
      throw new VaultError("VAULT_UPSTREAM_ERROR", 502, "upstream asks for an unsupported authentication scheme");
    }
    if (res.status === 404) return { kind: "none" }; // registries without the base endpoint: try without auth
    throw new VaultError("VAULT_UPSTREAM_ERROR", 502, `upstream /v2/ answered ${res.status}`, { upstreamStatus: res.status });
  }

  private async fetchToken(mode: Extract<Mode, { kind: "bearer" }>, scope: string): Promise<string> {
    const u = new URL(mode.realm);
    if (mode.service) u.searchParams.set("service", mode.service);
    u.searchParams.append("scope", scope);
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.basic) headers.authorization = this.basic;
    const res = await this.o.upstream.fetch(u, { headers });
    if (res.status !== 200) {
      void res.body?.cancel().catch(() => {});
      this.o.log.warn("upstream token request refused", { status: res.status, realm: `${u.origin}${u.pathname}`, scope });
      throw new VaultError("VAULT_UPSTREAM_ERROR", 502, `upstream token service answered ${res.status}`, { upstreamStatus: res.status });
    }
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    try {
      body = (await res.json()) as typeof body;
    } catch {
      throw new VaultError("VAULT_UPSTREAM_ERROR", 502, "upstream token service answered invalid JSON");
    }
    const token = typeof body.token === "string" && body.token ? body.token : typeof body.access_token === "string" ? body.access_token : "";
    if (!token) throw new VaultError("VAULT_UPSTREAM_ERROR", 502, "upstream token service answered no token");
    const ttl = typeof body.expires_in === "number" && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_SECONDS;
    const issued = typeof body.issued_at === "string" ? Date.parse(body.issued_at) : NaN;
    const start = Number.isNaN(issued) || issued > Date.now() ? Date.now() : issued;
    const expiresAt = start + Math.max(1, ttl - EXPIRY_MARGIN_SECONDS) * 1000;
    if (this.tokens.size >= MAX_TOKENS) {
      const oldest = this.tokens.keys().next().value;
      if (oldest !== undefined) this.tokens.delete(oldest);
    }
    this.tokens.set(scope, { value: token, expiresAt });
    return token;
  }
}

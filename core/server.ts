/** The host: createVault(config) opens metadata, storage, pool and auth, mounts one Elysia app per repository, serves ops endpoints, shuts down gracefully. */
import { Elysia } from "elysia";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Server } from "bun";
import type { VaultConfig } from "./config/types.ts";
import { resolveConfig, mountOf, type ResolvedConfig, type ResolvedRepository } from "./config/schema.ts";
import { loadPlugins, PluginLoadError } from "./loader.ts";
import { errors, toVaultError, VaultError } from "./errors.ts";
import { createLogger } from "./log.ts";
import { metrics, renderMetrics } from "./metrics.ts";
import { textError, type Logger, type PluginApp, type PluginContext, type VaultPlugin } from "./plugin.ts";
import { openMetadata, type OpenDb } from "./db/index.ts";
import { createStorage, createBlobStore, type StorageDriver } from "./storage/index.ts";
import { createPool, updatePoolMetrics, type VaultPool } from "./pool.ts";
import { createAuthCore, setRemoteAddress, type AuthCore, type RepositoryAuth } from "./auth/index.ts";
import { createArtifactStore, type VaultArtifactStore } from "./artifacts.ts";
import { createUpstreamClient } from "./upstream/client.ts";
import { createCacheEngine } from "./cache/engine.ts";
import { startRetentionJob } from "./retention.ts";
import { withQuota } from "./retention-quota.ts";
import { pathOf, pathProblem } from "./http/path.ts";
import { fastTagOf, type FastHit, type FastTag } from "./http/fast.ts";
import { createHostUi } from "./ui/index.ts";

/** A running (or ready to listen) vault. */
export interface Vault {
  /** Answers one request as the main listener would (ops endpoints, repository mounts, plugin host routes). URLs must be `http://`. */
  fetch(req: Request): Promise<Response>;
  /**
   * Starts the main listener (`server.host`:`server.port`, 0 = any free port) and one listener per repository with a
   * `port:` (that repository at the root path). Resolves with every listener, main first.
   * @throws VaultError VAULT_CONFIG when a port cannot be bound (the message names host and port)
   */
  listen(): Promise<Listener[]>;
  /**
   * Graceful shutdown: `/-/ready` answers 503, listeners stop accepting, in-flight downloads finish into the cache
   * (`cache.drain`) for at most `graceSeconds` (default `server.shutdownGraceSeconds`), remaining connections are
   * closed, plugins' `stop` hooks run, batched counters are flushed, pool and database closed. Idempotent.
   */
  stop(graceSeconds?: number): Promise<void>;
  /** The validated configuration with defaults. */
  readonly config: ResolvedConfig;
  readonly plugins: Map<string, VaultPlugin>;
  /** Plugin contexts of every repository (main mount), by name. */
  readonly repositories: Map<string, PluginContext>;
}

/** One bound listener. */
export interface Listener {
  /** `http://host:port` (no trailing slash); a wildcard bind address is shown as the loopback address. */
  url: string;
  port: number;
  /** Set for a repository's own listener (`port:`). */
  repository?: string;
}

/** Options of {@link createVault}. */
export interface CreateVaultOptions {
  /** Directory relative paths in the config are resolved against (`plugins:`, `server.dataDir`). */
  configDir: string;
  /** Plugins already loaded (else {@link loadPlugins} runs with the config's `plugins:` and the built-ins it needs). */
  plugins?: Map<string, VaultPlugin>;
  /** Application logger (default: JSON lines on stderr at `server.logLevel`). */
  log?: Logger;
  /** Receives one JSON line per request (default: stderr, batched per event-loop turn; off when `server.logLevel` is above info). */
  accessLog?: ((line: string) => void) | false;
  /**
   * The config already validated and resolved from `rawConfig` (by core/config/check-thread.ts, with `plugins` loaded
   * without their schema check): it is used as is, and ajv is not loaded in this thread.
   */
  resolved?: ResolvedConfig;
}

/** Per-mount state on the hot path. */
interface Mount {
  name: string;
  mount: string;
  plugin: VaultPlugin;
  ctx: PluginContext;
  /** The compiled Elysia handler of this mount. */
  handle: (req: Request) => Response | Promise<Response>;
  auth: RepositoryAuth;
  /** Host checks read permission before the plugin's routes (GET/HEAD) unless the plugin handles auth. */
  checkRead: boolean;
  allowEncodedSlash: boolean;
  /** The plugin validates its own paths (VaultPlugin.ownsPaths): no host path check. */
  ownsPaths: boolean;
  /** status → requests since the last scrape (folded into vault_http_requests_total on /-/metrics). */
  counts: Record<number, number>;
  /**
   * Plain hits replayed without Elysia or the plugin, by request-target (path and query), on the listener this mount
   * belongs to; undefined when the host checks no read permission itself or anonymous read is off.
   */
  fast: Map<string, FastRoute> | undefined;
}

/** A published plain hit (core/http/fast.ts): what the host answers for a plain GET/HEAD of the same request-target. */
interface FastRoute {
  m: Mount;
  hit: FastHit;
  extra: (() => void) | undefined;
  /** Response headers of the GET answer, exactly as the plugin's answer had them (a Headers object: Bun copies one faster than a plain object). */
  headers: Headers;
  /** The same plus Content-Length, for HEAD. */
  headHeaders: Headers;
  /** `"bytes"` of the GET access-log line (the Content-Length header of the answer, usually absent: null). */
  getBytes: number | null;
  /** JSON of the logged path, and the `,"repo":…}` tail of the access-log line. */
  logPath: string;
  logTail: string;
}

/** Most published plain hits per listener (oldest dropped first). */
const FAST_MAX = 10_000;
/** Request headers after which a request is not plain: it goes through the plugin. */
const FAST_BLOCKERS = ["authorization", "range", "if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range", "cache-control", "pragma"];

type BunServer = Server<unknown>;

const NO_ROUTE = "x-vault-no-route";
const OPS_JSON = { "content-type": "application/json" };

/** Request ids: `<process prefix>-<counter>` unless the client sent a sane `x-request-id`. */
const ID_PREFIX = Math.floor(Math.random() * 0xffffff)
  .toString(36)
  .padStart(5, "0");
let idCounter = 0;
const SANE_ID = /^[\x21-\x7e]{1,128}$/;

/** `http://host:port/p?q` → `/p?q`, the request-target (no URL object). */
function targetOf(url: string): string {
  const i = url.indexOf("/", url.indexOf("//") + 2);
  return i === -1 ? "/" : url.slice(i);
}

/** `http://host:port/path` → `http://host:port` (no URL object). */
function originOf(url: string): string {
  const i = url.indexOf("/", url.indexOf("//") + 2);
  return i === -1 ? url : url.slice(0, i);
}

function displayHost(host: string): string {
  if (host === "0.0.0.0" || host === "") return "127.0.0.1";
  if (host === "::" || host === "[::]") return "[::1]";
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}

/** The plain 404 of paths no repository or plugin claims. */
function notFound(): Response {
  return new Response("404 not found\n", { status: 404, headers: { "content-type": "text/plain; charset=utf-8" } });
}

/** Renders with the plugin's renderError, falling back to plain text if that throws. */
function render(plugin: VaultPlugin | undefined, err: VaultError, req: Request): Response {
  if (plugin) {
    try {
      return plugin.renderError(err, req);
    } catch {
      // fall through
    }
  }
  return textError(err);
}

/**
 * Creates a vault from a config object (native keys and/or the seed's `backends:`): validates it against the one
 * schema (core + plugins), opens the metadata DB (`<dataDir>/vault.db` or `metadata.path`), the storage driver
 * (orphan temp files removed: `cleanTemp(0)`), the blob store, the worker pool and the auth core (bootstrap), builds
 * every repository's PluginContext and mounts its routes (`/<name>` or `prefix`), then runs plugins' `start` hooks.
 * Does not listen: call {@link Vault.listen}, or use {@link Vault.fetch} in-process.
 *
 * @throws ConfigError every config error (`repositories[2].upstream: must be an absolute http(s) URL`)
 * @throws PluginLoadError a plugin failed to load, or its `routes`/`hostRoutes`/`start` threw (names plugin and repository)
 */
export async function createVault(rawConfig: VaultConfig, o: CreateVaultOptions): Promise<Vault> {
  const plugins = o.plugins ?? (await loadPlugins(rawConfig, o.configDir, { builtins: "needed" }));
  const config = o.resolved ?? resolveConfig(rawConfig, plugins, { configDir: o.configDir });
  const log = o.log ?? createLogger(config.server.logLevel);
  const dataDir = config.server.dataDir;
  mkdirSync(dataDir, { recursive: true });

  const closers: (() => unknown)[] = [];
  const cleanup = async () => {
    for (const c of closers.reverse()) {
      try {
        await c();
      } catch (e) {
        log.warn("cleanup failed", { error: e instanceof Error ? e.message : String(e) });
      }
    }
    closers.length = 0;
  };

  let opened: OpenDb;
  let storage: StorageDriver;
  let pool: VaultPool;
  let authCore: AuthCore;
  const artifactsByRepo: VaultArtifactStore[] = [];
  const caches: { name: string; drain(timeoutMs: number): Promise<void> }[] = [];
  const contexts = new Map<string, PluginContext>();
  const mounts: Mount[] = [];
  const hostApps: HostApp[] = [];
  const started: { plugin: VaultPlugin; ctx: PluginContext }[] = [];

  try {
    opened = await openMetadata(config.metadata, dataDir);
    closers.push(() => opened.close());
    storage = createStorage(config.storage, dataDir);
    closers.push(() => storage.close?.());
    const removed = await storage.cleanTemp(0);
    if (removed > 0) log.info("removed orphan temp files", { count: removed });
    const blobs = createBlobStore(opened.db, storage);
    pool = createPool(config.pool);
    closers.push(() => pool.close());
    authCore = createAuthCore({ db: opened.db, config: config.auth, log });
    closers.push(() => authCore.flush());
    await authCore.bootstrap();

    // 1. one context per repository (main mount)
    for (const repo of config.repositories) {
      const plugin = plugins.get(repo.format)!;
      const rlog = log.child({ repo: repo.name });
      const artifacts = withQuota(createArtifactStore({ db: opened.db, blobs, repo, log: rlog }), opened.db, repo);
      artifactsByRepo.push(artifacts);
      closers.push(() => artifacts.close());
      const upstream = createUpstreamClient({ repo, defaults: config.upstream, log: rlog });
      const cache = createCacheEngine({ repo, artifacts, blobs, upstream, log: rlog, tailHash: config.pool?.tailHash });
      caches.push({ name: repo.name, drain: (ms) => cache.drain(ms) });
      const mount = mountOf(repo);
      const publicBase = config.server.publicUrl ? config.server.publicUrl + mount : undefined;
      const ctx: PluginContext = {
        repo: { name: repo.name, type: repo.type, mount },
        config: repo,
        baseUrl: publicBase ? () => publicBase : (req) => originOf(req.url) + mount,
        configPath: (path) => resolve(o.configDir, path),
        storage,
        metadata: opened.db,
        artifacts,
        cache,
        upstream,
        auth: authCore.forRepository(repo),
        pool,
        log: rlog,
        member: (name) => {
          const c = contexts.get(name);
          return c && c.config.format === repo.format ? c : undefined;
        },
      };
      contexts.set(repo.name, ctx);
    }

    // 2. mount routes: the main mount, plus the repository at "/" on its own listener when it has a port
    const buildMount = (repo: ResolvedRepository, ctx: PluginContext): Mount => {
      const plugin = plugins.get(repo.format)!;
      const elysia = new Elysia({ prefix: ctx.repo.mount, handler: { standardHostname: false } });
      const app = elysia as unknown as PluginApp;
      elysia.onError(({ code, error, request }) => {
        let err: VaultError;
        if (code === "NOT_FOUND") err = errors.notFound(pathOf(request.url));
        else if (code === "PARSE" || code === "VALIDATION") err = new VaultError("VAULT_BAD_REQUEST", 400, error instanceof Error ? error.message : "bad request");
        else err = toVaultError(error);
        if (err.status >= 500) ctx.log.error("request failed", { code: err.code, error: err.message, detail: err.detail, path: pathOf(request.url) });
        return render(plugin, err, request);
      });
      try {
        plugin.routes(app, ctx);
      } catch (e) {
        throw new PluginLoadError([`plugin "${plugin.format}" failed in routes() for repository "${repo.name}": ${e instanceof Error ? e.message : String(e)}`]);
      }
      const auth = ctx.auth as RepositoryAuth;
      return {
        name: repo.name,
        mount: ctx.repo.mount,
        plugin,
        ctx,
        handle: elysia.fetch,
        auth,
        checkRead: !plugin.handlesAuth,
        allowEncodedSlash: plugin.allowEncodedSlash === true,
        ownsPaths: plugin.ownsPaths === true,
        counts: {},
        fast: undefined,
      };
    };
    const portMounts: { repo: ResolvedRepository; m: Mount }[] = [];
    for (const repo of config.repositories) {
      const ctx = contexts.get(repo.name)!;
      mounts.push(buildMount(repo, ctx));
      if (repo.port !== undefined) {
        const rootCtx: PluginContext = { ...ctx, repo: { ...ctx.repo, mount: "" }, baseUrl: (req) => originOf(req.url) };
        const m = buildMount(repo, rootCtx);
        m.counts = mounts[mounts.length - 1].counts;
        portMounts.push({ repo, m });
      }
    }
    for (const plugin of plugins.values()) {
      if (!plugin.hostRoutes) continue;
      const ctxs = config.repositories.filter((r) => r.format === plugin.format).map((r) => contexts.get(r.name)!);
      if (ctxs.length === 0) continue;
      const elysia = new Elysia({ handler: { standardHostname: false } });
      const app = elysia as unknown as PluginApp;
      elysia.onError(({ code, error, request }) => {
        if (code === "NOT_FOUND") return new Response(null, { status: 404, headers: { [NO_ROUTE]: "1" } });
        const err = toVaultError(error);
        if (err.status >= 500) log.error("request failed", { plugin: plugin.format, code: err.code, error: err.message, detail: err.detail, path: pathOf(request.url) });
        return render(plugin, err, request);
      });
      try {
        plugin.hostRoutes(app, ctxs);
      } catch (e) {
        throw new PluginLoadError([`plugin "${plugin.format}" failed in hostRoutes(): ${e instanceof Error ? e.message : String(e)}`]);
      }
      hostApps.push({ plugin, handle: elysia.fetch, ctxs });
    }

    // 3. start hooks
    for (const repo of config.repositories) {
      const plugin = plugins.get(repo.format)!;
      const ctx = contexts.get(repo.name)!;
      if (!plugin.start) continue;
      try {
        await plugin.start(ctx);
      } catch (e) {
        throw new PluginLoadError([`plugin "${plugin.format}" failed in start() for repository "${repo.name}": ${e instanceof Error ? e.message : String(e)}`]);
      }
      started.push({ plugin, ctx });
    }

    // 4. the periodic retention job (core/retention.ts; off unless a repository has a policy or the config sets one)
    const retention = startRetentionJob({
      config,
      targets: config.repositories.map((r) => ({ ctx: contexts.get(r.name)!, plugin: plugins.get(r.format)! })),
      db: opened.db,
      blobs,
      log,
    });
    closers.push(() => retention.stop());

    return makeVault({
      config,
      plugins,
      log,
      accessLog: o.accessLog,
      contexts,
      mounts,
      portMounts,
      hostApps,
      started,
      caches,
      artifacts: artifactsByRepo,
      opened,
      pool,
      authCore,
      cleanup,
    });
  } catch (e) {
    for (const s of started.reverse()) await s.plugin.stop?.(s.ctx).catch(() => {});
    await cleanup();
    throw e;
  }
}

interface VaultParts {
  config: ResolvedConfig;
  plugins: Map<string, VaultPlugin>;
  log: Logger;
  accessLog: CreateVaultOptions["accessLog"];
  contexts: Map<string, PluginContext>;
  mounts: Mount[];
  portMounts: { repo: ResolvedRepository; m: Mount }[];
  hostApps: HostApp[];
  started: { plugin: VaultPlugin; ctx: PluginContext }[];
  caches: { name: string; drain(timeoutMs: number): Promise<void> }[];
  artifacts: VaultArtifactStore[];
  opened: OpenDb;
  pool: VaultPool;
  authCore: AuthCore;
  cleanup: () => Promise<void>;
}

/** A plugin's host routes (`hostRoutes`): its Elysia handler and the contexts of its repositories. */
interface HostApp {
  plugin: VaultPlugin;
  handle: (req: Request) => Response | Promise<Response>;
  ctxs: PluginContext[];
}

function makeVault(p: VaultParts): Vault {
  const { config, log, mounts, hostApps, opened, pool } = p;
  // the web UI and its JSON API (/-/ui/, /-/api/; docs/api.md)
  const web = createHostUi({
    db: opened.db,
    contexts: p.contexts,
    plugins: p.plugins,
    artifacts: p.artifacts,
    authenticate: (req) => p.authCore.authenticate(req),
    publicUrl: config.server.publicUrl,
    log,
  });
  let state: "ready" | "stopping" | "stopped" = "ready";
  let stopping: Promise<void> | undefined;
  const servers: BunServer[] = [];
  const otherCounts: Record<number, number> = {};
  const mountByName = new Map(mounts.map((m) => [m.name, m]));

  // mount lookup: single-segment mounts by map, deeper prefixes by scan (longest first)
  const bySegment = new Map<string, Mount>();
  const deep: Mount[] = [];
  for (const m of mounts) {
    if (m.mount.indexOf("/", 1) === -1) bySegment.set(m.mount, m);
    else deep.push(m);
  }
  deep.sort((a, b) => b.mount.length - a.mount.length);

  // host fast path (core/http/fast.ts): one map of published plain hits per listener
  const mainFast = new Map<string, FastRoute>();
  for (const m of mounts) if (m.checkRead && m.auth.anonymousRead) m.fast = mainFast;
  for (const { m } of p.portMounts) if (m.checkRead && m.auth.anonymousRead) m.fast = new Map();
  const findMount = (path: string): Mount | undefined => {
    const end = path.indexOf("/", 1);
    const hit = bySegment.get(end === -1 ? path : path.slice(0, end));
    if (hit) return hit;
    for (const m of deep) if (path === m.mount || path.startsWith(m.mount + "/")) return m;
    return undefined;
  };

  // access log: one JSON line per request, batched into one write per event-loop turn
  const logRequests = p.accessLog !== false && (config.server.logLevel === "debug" || config.server.logLevel === "info");
  let sink: (line: string) => void;
  let pending: string[] = [];
  let scheduled = false;
  const flushAccess = () => {
    scheduled = false;
    if (pending.length === 0) return;
    const out = pending.join("\n") + "\n";
    pending = [];
    process.stderr.write(out);
  };
  if (typeof p.accessLog === "function") sink = p.accessLog;
  else
    sink = (line) => {
      pending.push(line);
      if (!scheduled) {
        scheduled = true;
        setImmediate(flushAccess);
      }
    };

  /** ISO time string, rebuilt at most once per millisecond. */
  let lastMs = 0;
  let lastIso = "";
  const isoNow = () => {
    const ms = Date.now();
    if (ms !== lastMs) {
      lastMs = ms;
      lastIso = new Date(ms).toISOString();
    }
    return lastIso;
  };
  const newId = () => `${ID_PREFIX}-${(++idCounter).toString(36)}`;

  /**
   * Counts the request, echoes the client's `x-request-id` (or, on errors, a generated one) and writes the access-log
   * line. Successful responses without a client id carry no header: setting one costs more than the rest of a hit.
   */
  const finish = (req: Request, res: Response, m: Mount | undefined, t0: number, path: string, host = false): Response => {
    const status = res.status;
    if (status === 200 && m !== undefined && m.fast !== undefined && !host) {
      const tag = fastTagOf(res);
      if (tag !== undefined) publish(m, m.fast, req, res, tag, path);
    }
    const counts = m ? m.counts : otherCounts;
    counts[status] = (counts[status] ?? 0) + 1;
    let id = req.headers.get("x-request-id");
    if (id !== null && !SANE_ID.test(id)) id = null;
    if (id !== null || status >= 400) {
      id ??= newId();
      try {
        res.headers.set("x-request-id", id);
      } catch {
        res = new Response(res.body, res);
        res.headers.set("x-request-id", id);
      }
    }
    if (logRequests) {
      const bytes = res.headers.get("content-length");
      sink(
        `{"time":"${isoNow()}","level":"info","msg":"request","reqId":"${id ?? newId()}","method":"${req.method}","path":${JSON.stringify(path)},"status":${status},"bytes":${bytes === null ? null : Number(bytes)},"durationMs":${Math.round((performance.now() - t0) * 1000) / 1000}${m === undefined ? "" : `,"repo":"${m.name}"`}}`,
      );
    }
    return res;
  };

  /**
   * Publishes a tagged plain hit for its request-target: the answer's headers as the plugin left them (a plugin may add
   * its own), unless they vary per request (`Vary`, `Set-Cookie`). Not for group repositories.
   */
  const publish = (m: Mount, map: Map<string, FastRoute>, req: Request, res: Response, tag: FastTag, path: string): void => {
    // a group answers from the first member that has the path; that may change without the entry changing
    if (req.method !== "GET" || m.ctx.repo.type === "group") return;
    const target = targetOf(req.url);
    const cur = map.get(target);
    if (cur !== undefined && cur.hit === tag.hit && cur.extra === tag.extra && cur.m === m) return;
    const headers: Record<string, string> = {};
    res.headers.forEach((v, k) => {
      headers[k] = v;
    });
    if (headers.vary !== undefined || headers["set-cookie"] !== undefined || headers["content-range"] !== undefined) return;
    delete headers["x-request-id"]; // per request: replay echoes the client's own
    const cl = headers["content-length"];
    if (cl !== undefined && cl !== String(tag.hit.sizeBytes)) return;
    if (cur === undefined && map.size >= FAST_MAX) {
      const oldest = map.keys().next().value;
      if (oldest !== undefined) map.delete(oldest);
    }
    map.set(target, {
      m,
      hit: tag.hit,
      extra: tag.extra,
      headers: new Headers(headers),
      headHeaders: new Headers({ ...headers, "content-length": String(tag.hit.sizeBytes) }),
      getBytes: cl === undefined ? null : Number(cl),
      logPath: JSON.stringify(path),
      logTail: `,"repo":"${m.name}"}`,
    });
  };

  /**
   * Answers a plain GET/HEAD from a published hit: no Authorization, Range, conditional or Cache-Control/Pragma
   * request header, entry still current. Same response headers, counters (hit count, bytes, cache result, requests
   * by status) and access-log line as the plugin's answer. Returns undefined to take the normal path.
   */
  const replay = (fr: FastRoute, req: Request, t0: number, map: Map<string, FastRoute>, target: string): Response | undefined => {
    const method = req.method;
    const get = method === "GET";
    if (!get && method !== "HEAD") return undefined;
    const hit = fr.hit;
    if (!hit.live(Date.now())) {
      if (hit.gone()) map.delete(target);
      return undefined;
    }
    const h = req.headers;
    for (let i = 0; i < FAST_BLOCKERS.length; i++) if (h.has(FAST_BLOCKERS[i])) return undefined;
    hit.hit(get);
    if (fr.extra !== undefined) fr.extra();
    const counts = fr.m.counts;
    counts[200] = (counts[200] ?? 0) + 1;
    let id = h.get("x-request-id");
    if (id !== null && !SANE_ID.test(id)) id = null;
    let headers = get ? fr.headers : fr.headHeaders;
    if (id !== null) {
      headers = new Headers(headers);
      headers.set("x-request-id", id);
    }
    const res = new Response(get ? hit.file : null, { headers });
    if (logRequests)
      sink(
        `{"time":"${isoNow()}","level":"info","msg":"request","reqId":"${id ?? newId()}","method":"${method}","path":${fr.logPath},"status":200,"bytes":${get ? fr.getBytes : hit.sizeBytes},"durationMs":${Math.round((performance.now() - t0) * 1000) / 1000}${fr.logTail}`,
      );
    return res;
  };

  /** Renders an error escaping from a handler (logged when 5xx). */
  const fail = (e: unknown, m: Mount | undefined, req: Request, path: string): Response => {
    const err = toVaultError(e);
    if (err.status >= 500) log.error("request failed", { repo: m?.name, code: err.code, error: err.message, detail: err.detail, path });
    return render(m?.plugin, err, req);
  };

  /** Path check, peer address for the audit log, read permission, then the mount's Elysia handler. Sync unless auth is checked. */
  const serveMount = (m: Mount, req: Request, path: string, server: BunServer | undefined): Response | Promise<Response> => {
    if (!m.ownsPaths) {
      const why = pathProblem(path, m.allowEncodedSlash ? { allowEncodedSlash: true } : undefined);
      if (why) return render(m.plugin, errors.badPath(path, why), req);
    }
    const method = req.method;
    const read = method === "GET" || method === "HEAD";
    const hasAuth = req.headers.has("authorization");
    if (!read || hasAuth) {
      if (server) setRemoteAddress(req, server.requestIP(req)?.address);
      if (!read && !req.headers.has("x-request-id")) req.headers.set("x-request-id", newId());
    }
    if (read && m.checkRead && (hasAuth || !m.auth.anonymousRead)) {
      return m.auth.require(req, "read").then(
        () => m.handle(req),
        (e) => render(m.plugin, toVaultError(e), req),
      );
    }
    return m.handle(req);
  };

  const ops = (path: string, req: Request): Response | Promise<Response> => {
    if (path === "/-/health") return new Response('{"status":"ok"}', { headers: OPS_JSON });
    if (path === "/-/ready") {
      if (state !== "ready") return new Response(`{"status":"${state}"}`, { status: 503, headers: OPS_JSON });
      return opened.ping().then(
        () => new Response('{"status":"ready"}', { headers: OPS_JSON }),
        (e) => new Response(JSON.stringify({ status: "database unavailable", error: e instanceof Error ? e.message : String(e) }), { status: 503, headers: OPS_JSON }),
      );
    }
    if (path === "/-/metrics") {
      foldCounts();
      updatePoolMetrics(pool);
      return new Response(renderMetrics(), { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } });
    }
    if (web.owns(path)) return web.handle(req, path);
    return notFound();
  };

  const foldCounts = () => {
    const fold = (repository: string, counts: Record<number, number>) => {
      for (const k in counts) {
        metrics.requests.inc({ repository, status: k }, counts[k]);
        delete counts[k];
      }
    };
    for (const m of mounts) fold(m.name, m.counts);
    fold("-", otherCounts);
  };

  /**
   * The mount of the repository a host-route request addresses, by the answering plugin's `repositoryOf` (only one of
   * that plugin's repositories); undefined (counted under `-`) when it has no such hook, names none, or throws.
   */
  const hostMount = (h: HostApp, req: Request): Mount | undefined => {
    if (typeof h.plugin.repositoryOf !== "function") return undefined;
    let name: string | undefined;
    try {
      name = h.plugin.repositoryOf(req, h.ctxs);
    } catch (e) {
      log.debug("repositoryOf failed", { plugin: h.plugin.format, error: e instanceof Error ? e.message : String(e) });
      return undefined;
    }
    if (typeof name !== "string") return undefined;
    const m = mountByName.get(name);
    return m !== undefined && m.plugin === h.plugin ? m : undefined;
  };

  /** Plugins' host routes (outside every mount): path check, then each plugin until one has the route; counted and logged under the repository it addresses. */
  const serveHost = async (req: Request, path: string, t0: number): Promise<Response> => {
    if (hostApps.length === 0) return finish(req, notFound(), undefined, t0, path);
    const why = pathProblem(path, hostApps.every((h) => h.plugin.allowEncodedSlash) ? { allowEncodedSlash: true } : undefined);
    if (why) return finish(req, render(hostApps.length === 1 ? hostApps[0].plugin : undefined, errors.badPath(path, why), req), undefined, t0, path);
    for (const h of hostApps) {
      let res: Response;
      try {
        res = await h.handle(req);
      } catch (e) {
        return finish(req, fail(e, undefined, req, path), undefined, t0, path);
      }
      if (res.headers.get(NO_ROUTE) === null) return finish(req, res, hostMount(h, req), t0, path, true);
    }
    return finish(req, notFound(), undefined, t0, path);
  };

  /** Finishes a sync or async result: no promise is created on the sync path. */
  const complete = (r: Response | Promise<Response>, req: Request, m: Mount | undefined, t0: number, path: string): Response | Promise<Response> => {
    if (r instanceof Promise)
      return r.then(
        (res) => finish(req, res, m, t0, path),
        (e) => finish(req, fail(e, m, req, path), m, t0, path),
      );
    return finish(req, r, m, t0, path);
  };

  /** The main listener: ops endpoints, repository mounts, plugins' host routes, else a plain 404. */
  const handle = (req: Request, server: BunServer | undefined): Response | Promise<Response> => {
    const t0 = logRequests ? performance.now() : 0;
    const url = req.url;
    if (mainFast.size !== 0) {
      const target = targetOf(url);
      const fr = mainFast.get(target);
      if (fr !== undefined) {
        const r = replay(fr, req, t0, mainFast, target);
        if (r !== undefined) return r;
      }
    }
    const path = pathOf(url);
    let m: Mount | undefined;
    let r: Response | Promise<Response>;
    try {
      if (path.startsWith("/-/")) r = ops(path, req);
      else if ((m = findMount(path))) r = serveMount(m, req, path, server);
      else return serveHost(req, path, t0);
    } catch (e) {
      r = fail(e, m, req, path);
    }
    return complete(r, req, m, t0, path);
  };

  /** A repository's own listener (`port:`): that repository at the root. */
  const handlePort =
    (m: Mount) =>
    (req: Request, server: BunServer): Response | Promise<Response> => {
      const t0 = logRequests ? performance.now() : 0;
      const url = req.url;
      const fast = m.fast;
      if (fast !== undefined && fast.size !== 0) {
        const target = targetOf(url);
        const fr = fast.get(target);
        if (fr !== undefined) {
          const r = replay(fr, req, t0, fast, target);
          if (r !== undefined) return r;
        }
      }
      const path = pathOf(url);
      let r: Response | Promise<Response>;
      try {
        r = serveMount(m, req, path, server);
      } catch (e) {
        r = fail(e, m, req, path);
      }
      return complete(r, req, m, t0, path);
    };

  const serveOptions = {
    hostname: config.server.host,
    // long downloads from slow upstreams must not be cut by Bun's 10 s default; uploads can be large (plugins bound them)
    idleTimeout: 255,
    maxRequestBodySize: Number.MAX_SAFE_INTEGER,
    development: false,
  };
  const bind = (port: number, fetch: (req: Request, server: BunServer) => Response | Promise<Response>): BunServer => {
    try {
      return Bun.serve({ ...serveOptions, port, fetch }) as BunServer;
    } catch (e) {
      throw new VaultError("VAULT_CONFIG", 500, `cannot listen on ${config.server.host}:${port}: ${e instanceof Error ? e.message : String(e)}`);
    }
  };

  return {
    config,
    plugins: p.plugins,
    repositories: p.contexts,
    fetch: async (req) => handle(req, undefined),
    async listen() {
      if (state !== "ready") throw new VaultError("VAULT_INTERNAL", 500, "vault is stopped");
      if (servers.length > 0) throw new VaultError("VAULT_INTERNAL", 500, "vault is already listening");
      const out: Listener[] = [];
      try {
        const main = bind(config.server.port, handle);
        servers.push(main);
        out.push({ url: `http://${displayHost(config.server.host)}:${main.port}`, port: main.port! });
        for (const { repo, m } of p.portMounts) {
          const s = bind(repo.port!, handlePort(m));
          servers.push(s);
          out.push({ url: `http://${displayHost(config.server.host)}:${s.port}`, port: s.port!, repository: repo.name });
        }
      } catch (e) {
        for (const s of servers.splice(0)) s.stop(true);
        throw e;
      }
      return out;
    },
    stop(graceSeconds) {
      return (stopping ??= (async () => {
        state = "stopping";
        const graceMs = Math.max(0, (graceSeconds ?? config.server.shutdownGraceSeconds) * 1000);
        const deadline = Date.now() + graceMs;
        const left = () => Math.max(0, deadline - Date.now());
        // stop accepting; in-flight requests continue
        const closing = servers.map((s) => s.stop(false));
        await Promise.all(p.caches.map((c) => c.drain(left()).catch((e) => log.warn("drain failed", { repo: c.name, error: String(e) }))));
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([Promise.allSettled(closing), new Promise<void>((r) => (timer = setTimeout(r, left())))]);
        clearTimeout(timer);
        for (const s of servers) s.stop(true);
        for (const s of p.started.reverse()) {
          try {
            await s.plugin.stop?.(s.ctx);
          } catch (e) {
            log.warn("plugin stop failed", { plugin: s.plugin.format, repo: s.ctx.repo.name, error: e instanceof Error ? e.message : String(e) });
          }
        }
        flushAccess();
        await p.cleanup();
        state = "stopped";
      })());
    },
  };
}

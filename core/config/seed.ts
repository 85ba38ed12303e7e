/** Maps the seed read-through cache's `config.yml` (`http_host`, `cache_dir`, `backends: [{type, config}]`) onto vault repositories. */
import type { RepositoryConfig, VaultConfig } from "./types.ts";

/**
 * Where a mapped repository came from, so validation errors name the key the user wrote
 * (`backends[1].config.base_url`, not `repositories[4].upstream`).
 */
export interface SeedOrigin {
  /** Path of the backend entry, e.g. `backends[1]`. */
  base: string;
  /** The seed `type` (`http`, `pypi`, `dockerhub`, `apt`, …). */
  seedType: string;
  /** Repository key → path below `base` that produced it (e.g. `upstream` → `config.base_url`). */
  keys: Record<string, string>;
  /** Plugin keys the mapping sets to keep the seed's URL layout (e.g. `simplePrefix` for pypi). */
  extras: string[];
}

/** Result of {@link mapSeedConfig}. */
export interface SeedMapping {
  /** Repositories made from `backends`, in order. */
  repositories: RepositoryConfig[];
  /** `origins[i]` describes `repositories[i]`. */
  origins: SeedOrigin[];
  /** Server settings taken from `http_host`, `http_port`, `cache_dir`, `log_level` (only those present). */
  server: NonNullable<VaultConfig["server"]>;
  /** Non-fatal notes (seed keys accepted but without effect). */
  warnings: string[];
}

/** How each seed backend type maps onto a format; `urlKey` names the upstream key, `defaultUpstream` applies when it is missing. */
export const SEED_BACKENDS: Record<string, { format: string; urlKey: string; defaultUpstream?: string; extra: Record<string, unknown>; keys: string[] }> = {
  // GET <prefix><path> → base_url + path
  http: { format: "http", urlKey: "base_url", extra: {}, keys: ["base_url", "username", "password"] },
  // GET <prefix><project>/ is the project page: the simple index sits at the mount root (simplePrefix "").
  pypi: { format: "pypi", urlKey: "index_url", defaultUpstream: "https://pypi.org/simple/", extra: { simplePrefix: "" }, keys: ["index_url", "username", "password"] },
  // GET <prefix><image>/manifests/<ref>: the registry API sits at the mount root (apiPrefix "" instead of "v2/").
  dockerhub: { format: "oci", urlKey: "registry_url", defaultUpstream: "https://registry-1.docker.io", extra: { apiPrefix: "" }, keys: ["registry_url", "auth_url", "username", "password"] },
  // GET <prefix>dists/…, <prefix>pool/…
  apt: { format: "apt", urlKey: "mirror_url", extra: {}, keys: ["mirror_url", "user_agent", "timeout", "username", "password"] },
};

/** Seed keys accepted and ignored, with the reason given in a warning. */
const IGNORED_KEYS: Record<string, string> = {
  auth_url: "the registry's token service is discovered from its WWW-Authenticate challenge",
  user_agent: "the vault sends its own User-Agent",
  timeout: "use the top-level upstream.connectTimeoutSeconds / readTimeoutSeconds",
};

/** Seed log levels (Python logging names) → vault levels. */
const SEED_LOG_LEVELS: Record<string, "debug" | "info" | "warn" | "error"> = {
  debug: "debug",
  info: "info",
  warning: "warn",
  warn: "warn",
  error: "error",
  critical: "error",
};

/** Repository name derived from a seed prefix: `/pypi/` → `pypi`, `/a/b/` → `a-b`, `/Archive.Apache.org/` → `archive.apache.org`. */
export function nameFromPrefix(prefix: string): string {
  const n = prefix
    .toLowerCase()
    .split("/")
    .filter(Boolean)
    .join("-")
    .replace(/[^a-z0-9._-]+/g, "-")
    .replace(/^[._-]+/, "");
  return n || "root";
}

/** `"/pypi/"` → `"/pypi"`; `"pypi"` → `"/pypi"`. Returns the prefix as a mount (leading slash, no trailing slash). */
export function prefixToMount(prefix: string): string {
  let p = prefix.trim();
  if (!p.startsWith("/")) p = "/" + p;
  while (p.length > 1 && p.endsWith("/")) p = p.slice(0, -1);
  return p;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Maps the seed format found on `raw` (a parsed config object) to repositories and server settings.
 * Malformed entries (no `type`, no `config`, no `prefix`) are skipped here: the schema reports them.
 * A backend type that is not one of {@link SEED_BACKENDS} maps to the format of the same name (so a third-party
 * plugin can accept seed backends); `base_url`, `index_url`, `registry_url`, `mirror_url` or `url` gives its upstream.
 *
 * @param raw the parsed config (not modified)
 * @param takenNames repository names already used by `repositories:` (mapped names avoid them with a `-2` suffix)
 */
export function mapSeedConfig(raw: Record<string, unknown>, takenNames: Set<string>): SeedMapping {
  const out: SeedMapping = { repositories: [], origins: [], server: {}, warnings: [] };
  if (raw.http_host !== undefined) out.server.host = raw.http_host as string;
  if (raw.http_port !== undefined) out.server.port = raw.http_port as number;
  if (raw.cache_dir !== undefined) out.server.dataDir = raw.cache_dir as string;
  if (typeof raw.log_level === "string") out.server.logLevel = SEED_LOG_LEVELS[raw.log_level.toLowerCase()] ?? (raw.log_level as never);
  const backends = raw.backends;
  if (!Array.isArray(backends)) return out;
  const names = new Set(takenNames);
  backends.forEach((b, i) => {
    if (!isObject(b) || typeof b.type !== "string" || !isObject(b.config) || typeof b.config.prefix !== "string") return;
    const base = `backends[${i}]`;
    const cfg = b.config;
    const known = SEED_BACKENDS[b.type];
    const urlKey = known?.urlKey ?? ["base_url", "index_url", "registry_url", "mirror_url", "url"].find((k) => cfg[k] !== undefined) ?? "base_url";
    const mount = prefixToMount(cfg.prefix as string);
    let name = nameFromPrefix(cfg.prefix as string);
    for (let n = 2; names.has(name); n++) name = `${nameFromPrefix(cfg.prefix as string)}-${n}`;
    names.add(name);
    const repo: RepositoryConfig = { name, format: known?.format ?? b.type, type: "proxy", prefix: mount, ...(known?.extra ?? {}) };
    const keys: Record<string, string> = { name: "config.prefix", prefix: "config.prefix", format: "type", type: "type" };
    let upstream = cfg[urlKey] ?? known?.defaultUpstream;
    if (typeof upstream === "string" && (repo.format === "http" || repo.format === "pypi" || repo.format === "apt") && !upstream.endsWith("/")) {
      // the seed joins base_url and the request path with a slash; our plugins append the path to the upstream
      upstream += "/";
    }
    keys.upstream = `config.${urlKey}`;
    if (upstream !== undefined) repo.upstream = upstream as string;
    // `username: "${DOCKER_USERNAME:-}"` with the variable unset means anonymous access, not empty credentials.
    const username = cfg.username === "" ? undefined : cfg.username;
    const password = cfg.password === "" ? undefined : cfg.password;
    if (username !== undefined || password !== undefined) {
      repo.upstreamAuth = {};
      if (username !== undefined) repo.upstreamAuth.username = username as string;
      if (password !== undefined) repo.upstreamAuth.password = password as string;
      keys["upstreamAuth.username"] = "config.username";
      keys["upstreamAuth.password"] = "config.password";
      keys.upstreamAuth = "config";
    }
    const allowed = new Set(["prefix", ...(known?.keys ?? [urlKey, "username", "password"])]);
    for (const k of Object.keys(cfg)) {
      if (!allowed.has(k)) {
        // Unknown key: carried onto the repository so the schema names it (as backends[i].config.<k>).
        repo[k] = cfg[k];
        keys[k] = `config.${k}`;
      } else if (IGNORED_KEYS[k]) {
        out.warnings.push(`${base}.config.${k}: accepted but has no effect (${IGNORED_KEYS[k]})`);
      }
    }
    out.repositories.push(repo);
    out.origins.push({ base, seedType: b.type, keys, extras: Object.keys(known?.extra ?? {}) });
  });
  return out;
}

/**
 * Rewrites an error path `repositories[i].<rest>` of a mapped repository to the seed key the user wrote.
 * @param index index of the repository among the mapped ones
 * @param rest path below the repository, e.g. `upstream` or `upstreamAuth.username` (may be empty)
 */
export function seedPath(origin: SeedOrigin, rest: string): string {
  if (!rest) return origin.base;
  if (origin.keys[rest]) return `${origin.base}.${origin.keys[rest]}`;
  const head = rest.split(/[.[]/)[0];
  if (origin.keys[head]) return `${origin.base}.${origin.keys[head]}${rest.slice(head.length)}`;
  return `${origin.base}.config`;
}

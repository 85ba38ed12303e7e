/** The one configuration JSON Schema (core + every loaded plugin's configSchema), checked with ajv, plus cross-entry checks and defaults. */
import type { default as Ajv, ErrorObject } from "ajv";
import { isAbsolute, resolve } from "node:path";
import { readFileSync } from "node:fs";
import { VaultError } from "../errors.ts";
import type { VaultPlugin } from "../plugin.ts";
import type { AuthConfig, MetadataConfig, RepositoryConfig, ServerConfig, StorageConfig, VaultConfig } from "./types.ts";
import { mapSeedConfig, prefixToMount, SEED_BACKENDS, seedPath, type SeedOrigin } from "./seed.ts";

/** Repository names: lower-case letters, digits, `.`, `_`, `-`, starting with a letter or digit. */
export const NAME_PATTERN = "^[a-z0-9][a-z0-9._-]*$";
/** A mount prefix: one or more path segments of URL-safe characters, leading/trailing slash optional (`/apache/`, `archive.apache.org`). */
export const PREFIX_PATTERN = "^/?[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*/?$";
/** ajv format name for absolute http(s) URLs; plugin schemas may use `format: "http-url"` too. */
export const HTTP_URL_FORMAT = "http-url";

/** Core defaults (docs/configuration.md). */
export const CONFIG_DEFAULTS = {
  host: "127.0.0.1",
  port: 8080,
  dataDir: "./data",
  logLevel: "info",
  shutdownGraceSeconds: 30,
  anonymousRead: true,
} as const;

/** A repository after defaults: `upstream` filled from the plugin's default, `anonymousRead` from `auth.anonymousRead`. */
export type ResolvedRepository = RepositoryConfig & { anonymousRead: boolean };

/** The configuration after validation and defaults; the seed keys (`backends`, `http_port`, …) are folded in. */
export interface ResolvedConfig extends VaultConfig {
  server: ServerConfig & Required<Pick<ServerConfig, "host" | "port" | "dataDir" | "logLevel" | "shutdownGraceSeconds">>;
  storage: StorageConfig;
  metadata: MetadataConfig;
  auth: AuthConfig & { anonymousRead: boolean };
  plugins: string[];
  repositories: ResolvedRepository[];
  backends?: undefined;
}

/** Result of {@link checkConfig}. `config` is set only when `errors` is empty. */
export interface ConfigCheck {
  config?: ResolvedConfig;
  /** Every error, each `<path>: <what was expected>`, e.g. `repositories[2].upstream: must be an absolute http(s) URL`. */
  errors: string[];
  /** Non-fatal notes, e.g. seed keys without effect. */
  warnings: string[];
}

/** The configuration is invalid; `errors` lists every problem (one line each). Code VAULT_CONFIG. */
export class ConfigError extends VaultError {
  constructor(readonly errors: string[], readonly source?: string) {
    super("VAULT_CONFIG", 500, `invalid configuration${source ? ` (${source})` : ""}:\n  ${errors.join("\n  ")}`, { errors });
    this.name = "ConfigError";
  }
}

/** True for an absolute `http://` or `https://` URL with a host and no fragment. */
export function isHttpUrl(s: string): boolean {
  if (!/^https?:\/\/[^/?#\s]/i.test(s)) return false;
  try {
    const u = new URL(s);
    return (u.protocol === "http:" || u.protocol === "https:") && u.hostname !== "" && u.hash === "";
  } catch {
    return false;
  }
}

/**
 * A fresh ajv instance as the vault uses it: allErrors, strict off (plugin schemas may use annotations), type
 * coercion (`"8080"` from an env var becomes 8080), schema defaults applied, formats `http-url` and `uri`.
 * The annotation keyword `x-message: { <keyword>: "<message>" }` replaces the message of that keyword's errors.
 */
export function createAjv(): Ajv {
  // Loaded on first use: `vault serve` checks its config on a short-lived thread (core/config/check-thread.ts), so
  // the serving thread never holds ajv or its compiled validators (about 10 MiB).
  const AjvClass = (require("ajv") as { default: typeof Ajv }).default;
  const ajv = new AjvClass({ allErrors: true, strict: false, coerceTypes: true, useDefaults: true, allowUnionTypes: true, verbose: true, logger: false });
  ajv.addFormat(HTTP_URL_FORMAT, { type: "string", validate: isHttpUrl });
  ajv.addFormat("uri", {
    type: "string",
    validate: (s: string) => {
      try {
        new URL(s);
        return true;
      } catch {
        return false;
      }
    },
  });
  ajv.addKeyword({ keyword: "x-message", schemaType: "object" });
  return ajv;
}

/**
 * Compiles a plugin's `configSchema` on its own.
 * @returns undefined when it compiles, else the reason (ajv's message)
 */
export function checkPluginSchema(schema: unknown): string | undefined {
  if (typeof schema !== "object" || schema === null || (schema as { type?: unknown }).type !== "object" || typeof (schema as { properties?: unknown }).properties !== "object") {
    return 'must be a JSON Schema object { type: "object", properties: {...} }';
  }
  try {
    createAjv().compile(schema as object);
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

const str = { type: "string", minLength: 1 };
const seconds = { type: "number", minimum: 0 };

/** Core keys of a repository entry (types in core/config/types.ts RepositoryConfig). */
const REPOSITORY_PROPERTIES: Record<string, object> = {
  name: { type: "string", pattern: NAME_PATTERN, "x-message": { pattern: `must match ${NAME_PATTERN} (lower-case letters, digits, ".", "_", "-")` } },
  format: str,
  type: { enum: ["proxy", "hosted", "group"] },
  upstream: { type: "string", format: HTTP_URL_FORMAT },
  upstreamAuth: {
    type: "object",
    additionalProperties: false,
    properties: { username: { type: "string" }, password: { type: "string" }, token: { type: "string" } },
  },
  upstreamCaFile: str,
  members: { type: "array", minItems: 1, items: str },
  writeTo: str,
  prefix: { type: "string", pattern: PREFIX_PATTERN, "x-message": { pattern: "must be a URL path such as /apache (letters, digits, . _ ~ -)" } },
  port: { type: "integer", minimum: 0, maximum: 65535 },
  anonymousRead: { type: "boolean" },
  cache: {
    type: "object",
    additionalProperties: false,
    properties: { metadataTtlSeconds: seconds, negativeTtlSeconds: seconds, maxStaleSeconds: seconds, lockTimeoutSeconds: seconds, staleWhileRevalidateSeconds: seconds },
  },
  redirectDownloads: { type: "boolean" },
  retention: {
    type: "object",
    additionalProperties: false,
    properties: {
      maxAgeDays: { type: "number", exclusiveMinimum: 0, description: "Remove files stored more than this many days ago." },
      unusedForDays: { type: "number", exclusiveMinimum: 0, description: "Remove files not downloaded for this many days." },
      keepVersions: { type: "integer", minimum: 1, description: "Keep the newest N versions of each package." },
      maxBytes: { type: "integer", minimum: 1, description: "Quota, bytes: proxies evict least-recently-used files, hosted repositories refuse uploads over it." },
    },
  },
};

/**
 * Builds the one JSON Schema for a whole config: the core keys, the seed keys, and for every loaded plugin an
 * `if: { format: const } then: { core keys + the plugin's properties, additionalProperties: false }` branch on
 * `repositories[]` items, so a repository may carry exactly the core keys and its plugin's keys.
 * @param plugins loaded plugins by format
 */
export function buildConfigSchema(plugins: Map<string, VaultPlugin>): object {
  const coreKeys = Object.fromEntries(Object.keys(REPOSITORY_PROPERTIES).map((k) => [k, true]));
  const repository = {
    type: "object",
    required: ["name", "format", "type"],
    properties: REPOSITORY_PROPERTIES,
    allOf: [...plugins.values()].map((p) => ({
      if: { properties: { format: { const: p.format } }, required: ["format"] },
      then: {
        ...p.configSchema,
        type: "object",
        properties: { ...coreKeys, ...p.configSchema.properties },
        additionalProperties: false,
      },
    })),
  };
  const logLevel = { enum: ["debug", "info", "warn", "error"] };
  return {
    type: "object",
    additionalProperties: false,
    properties: {
      server: {
        type: "object",
        additionalProperties: false,
        properties: {
          host: str,
          port: { type: "integer", minimum: 0, maximum: 65535 },
          dataDir: str,
          publicUrl: { type: "string", format: HTTP_URL_FORMAT },
          logLevel,
          shutdownGraceSeconds: seconds,
        },
      },
      storage: {
        type: "object",
        required: ["driver"],
        properties: { driver: { enum: ["fs", "s3"] } },
        allOf: [
          { if: { properties: { driver: { const: "fs" } } }, then: { additionalProperties: false, properties: { driver: true, root: str } } },
          {
            if: { properties: { driver: { const: "s3" } } },
            then: {
              additionalProperties: false,
              required: ["bucket"],
              properties: {
                driver: true,
                endpoint: { type: "string", format: HTTP_URL_FORMAT },
                region: str,
                bucket: str,
                pathStyle: { type: "boolean" },
                accessKeyId: str,
                secretAccessKey: str,
                prefix: { type: "string" },
                redirectDownloads: { type: "boolean" },
              },
            },
          },
        ],
      },
      metadata: {
        type: "object",
        required: ["driver"],
        properties: { driver: { enum: ["sqlite", "postgres"] } },
        allOf: [
          { if: { properties: { driver: { const: "sqlite" } } }, then: { additionalProperties: false, properties: { driver: true, path: str } } },
          { if: { properties: { driver: { const: "postgres" } } }, then: { additionalProperties: false, required: ["url"], properties: { driver: true, url: str } } },
        ],
      },
      auth: {
        type: "object",
        additionalProperties: false,
        properties: {
          anonymousRead: { type: "boolean" },
          admin: { type: "object", additionalProperties: false, required: ["user", "password"], properties: { user: str, password: str } },
          accessKeys: {
            type: "array",
            items: { type: "object", additionalProperties: false, required: ["id", "secret", "user"], properties: { id: str, secret: str, user: str } },
          },
          tokenSecret: str,
        },
      },
      upstream: {
        type: "object",
        additionalProperties: false,
        properties: {
          connectTimeoutSeconds: { type: "number", exclusiveMinimum: 0 },
          readTimeoutSeconds: { type: "number", exclusiveMinimum: 0 },
          retries: { type: "integer", minimum: 0 },
        },
      },
      pool: {
        type: "object",
        additionalProperties: false,
        properties: { threads: { type: "integer", minimum: 1 }, offloadThresholdBytes: { type: "integer", minimum: 0 }, tailHash: { type: "boolean" } },
      },
      plugins: { type: "array", items: str },
      retention: {
        type: "object",
        additionalProperties: false,
        properties: { intervalMinutes: { type: "number", minimum: 0 }, gcMinAgeMinutes: { type: "number", minimum: 0 } },
      },
      repositories: { type: "array", items: repository },
      // The seed read-through cache's keys (core/config/seed.ts).
      backends: {
        type: "array",
        items: {
          type: "object",
          additionalProperties: false,
          required: ["type", "config"],
          properties: {
            type: str,
            config: {
              type: "object",
              required: ["prefix"],
              properties: { prefix: { type: "string", pattern: PREFIX_PATTERN, "x-message": { pattern: "must be a URL path such as /apache/ (letters, digits, . _ ~ -)" } } },
            },
          },
        },
      },
      http_host: str,
      http_port: { type: "integer", minimum: 0, maximum: 65535 },
      cache_dir: str,
      log_level: {
        type: "string",
        pattern: "^([Dd][Ee][Bb][Uu][Gg]|[Ii][Nn][Ff][Oo]|[Ww][Aa][Rr][Nn]([Ii][Nn][Gg])?|[Ee][Rr][Rr][Oo][Rr]|[Cc][Rr][Ii][Tt][Ii][Cc][Aa][Ll])$",
        "x-message": { pattern: "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL" },
      },
    },
  };
}

/** The mount of a repository: its `prefix` (normalised, no trailing slash) or `/<name>`. */
export function mountOf(repo: { name: string; prefix?: string }): string {
  return repo.prefix !== undefined ? prefixToMount(repo.prefix) : `/${repo.name}`;
}

/** Plain-object deep copy (class instances and functions are kept by reference). */
function clone<T>(v: T): T {
  if (Array.isArray(v)) return v.map(clone) as T;
  if (v && typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) o[k] = clone(x);
    return o as T;
  }
  return v;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** `["repositories", 2, "upstream"]` → `repositories[2].upstream`. */
export function formatPath(parts: (string | number)[]): string {
  let s = "";
  for (const p of parts) {
    if (typeof p === "number") s += `[${p}]`;
    else if (/^[A-Za-z_$][\w$-]*$/.test(p)) s += s ? `.${p}` : p;
    else s += `[${JSON.stringify(p)}]`;
  }
  return s;
}

function pointerParts(pointer: string): (string | number)[] {
  if (!pointer) return [];
  return pointer
    .slice(1)
    .split("/")
    .map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"))
    .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
}

function distance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length];
}

function article(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

/** Renders one ajv error as `[path, message]`; undefined for errors that only summarise others (`if`). */
function renderAjvError(e: ErrorObject): [(string | number)[], string] | undefined {
  const parts = pointerParts(e.instancePath);
  const custom = (e.parentSchema as Record<string, unknown> | undefined)?.["x-message"] as Record<string, string> | undefined;
  switch (e.keyword) {
    case "if":
      return undefined;
    case "required":
      return [[...parts, (e.params as { missingProperty: string }).missingProperty], "is required"];
    case "additionalProperties": {
      const key = (e.params as { additionalProperty: string }).additionalProperty;
      const known = Object.keys(((e.parentSchema as { properties?: object } | undefined)?.properties ?? {}) as object);
      const near = known.filter((k) => distance(k.toLowerCase(), key.toLowerCase()) <= 2).sort((a, b) => distance(a, key) - distance(b, key))[0];
      return [[...parts, key], near ? `unknown key (did you mean "${near}"?)` : "unknown key"];
    }
  }
  if (custom?.[e.keyword]) return [parts, custom[e.keyword]];
  switch (e.keyword) {
    case "type": {
      const t = (e.params as { type: string | string[] }).type;
      return [parts, `must be ${(Array.isArray(t) ? t : String(t).split(",")).map(article).join(" or ")}`];
    }
    case "enum":
      return [parts, `must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(", ")}`];
    case "minLength":
      if ((e.params as { limit: number }).limit === 1) return [parts, "must not be empty"];
      break;
    case "const":
      return [parts, `must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`];
    case "format": {
      const f = (e.params as { format: string }).format;
      return [parts, f === HTTP_URL_FORMAT ? "must be an absolute http(s) URL" : `must be a valid ${f}`];
    }
  }
  return [parts, e.message ?? `fails ${e.keyword}`];
}

/**
 * Validates a whole config (as loaded: native keys and/or the seed's `backends:` keys) against the schema built from
 * `plugins`, then checks what a schema cannot: unique names, known formats and supported types, group members
 * (exist, same format, no cycles, `writeTo` is a hosted member), proxy upstreams present, mount and port collisions.
 * Seed backends are mapped onto proxy repositories first; their errors name the seed keys (`backends[1].config.base_url`).
 * On success the result carries the resolved config with defaults applied; relative paths (`server.dataDir`,
 * `storage.root`, `metadata.path`) are resolved against `configDir`.
 *
 * @param raw the parsed config (not modified)
 * @param plugins loaded plugins by format
 * @param o.configDir directory relative paths are resolved against (default: the cwd)
 */
export function checkConfig(raw: unknown, plugins: Map<string, VaultPlugin>, o: { configDir?: string } = {}): ConfigCheck {
  const warnings: string[] = [];
  if (!isObject(raw)) return { errors: ["config: must be an object (export default defineConfig({ ... }))"], warnings };
  const doc = clone(raw) as Record<string, unknown>;

  // Fold the seed format in: backends → repositories (appended), http_host/http_port/cache_dir/log_level → server.
  const native = Array.isArray(doc.repositories) ? (doc.repositories as unknown[]) : undefined;
  const nativeCount = native?.length ?? 0;
  const taken = new Set((native ?? []).filter(isObject).map((r) => r.name).filter((n): n is string => typeof n === "string"));
  const seed = mapSeedConfig(doc, taken);
  warnings.push(...seed.warnings);
  if (seed.repositories.length > 0 && (native || doc.repositories === undefined)) doc.repositories = [...(native ?? []), ...seed.repositories];
  const origins: (SeedOrigin | undefined)[] = [];
  for (let i = 0; i < nativeCount; i++) origins.push(undefined);
  origins.push(...seed.origins);

  const errors: string[] = [];
  // A mapped backend keeps the seed's URL layout through plugin keys (simplePrefix, apiPrefix): the plugin must know them.
  seed.origins.forEach((origin, j) => {
    const repo = seed.repositories[j];
    const plugin = plugins.get(repo.format);
    for (const k of origin.extras) {
      if (plugin && !(k in (plugin.configSchema.properties ?? {}))) {
        errors.push(`${origin.base}.type: the "${repo.format}" plugin has no "${k}" setting, which keeps the seed's URL layout under ${repo.prefix}/ (${k}: ${JSON.stringify(repo[k])})`);
        delete repo[k];
      }
    }
  });
  const seen = new Set<string>(errors);
  const add = (parts: (string | number)[], msg: string) => {
    let path = formatPath(parts);
    if (parts[0] === "repositories" && typeof parts[1] === "number" && origins[parts[1]]) {
      path = seedPath(origins[parts[1]]!, formatPath(parts.slice(2)).replace(/^\./, ""));
    }
    const line = `${path || "config"}: ${msg}`;
    if (!seen.has(line)) {
      seen.add(line);
      errors.push(line);
    }
  };
  const repoPath = (i: number, key: string) => ["repositories", i, key];

  const ajv = createAjv();
  let validate;
  try {
    validate = ajv.compile(buildConfigSchema(plugins));
  } catch (e) {
    return { errors: [`config schema: does not compile (${e instanceof Error ? e.message : String(e)})`], warnings };
  }
  if (!validate(doc)) {
    for (const e of validate.errors ?? []) {
      const r = renderAjvError(e);
      if (!r) continue;
      const [parts] = r;
      // a mapped backend's prefix is checked (and reported) by the backends schema already
      if (parts[0] === "repositories" && typeof parts[1] === "number" && origins[parts[1]] && (parts[2] === "prefix" || parts[2] === "name")) continue;
      add(r[0], r[1]);
    }
  }

  // --- checks across entries
  const repos = (Array.isArray(doc.repositories) ? doc.repositories : []) as unknown[];
  const byName = new Map<string, { i: number; repo: RepositoryConfig }>();
  const loaded = [...plugins.keys()].sort().join(", ") || "none";
  repos.forEach((r, i) => {
    if (!isObject(r) || typeof r.name !== "string") return;
    const repo = r as RepositoryConfig;
    const prev = byName.get(repo.name);
    if (prev) add(repoPath(i, "name"), `duplicate name "${repo.name}" (also repositories[${prev.i}])`);
    else byName.set(repo.name, { i, repo });
  });
  repos.forEach((r, i) => {
    if (!isObject(r)) return;
    const repo = r as RepositoryConfig;
    if (typeof repo.format === "string" && repo.format) {
      const plugin = plugins.get(repo.format);
      const origin = origins[i];
      if (!plugin) {
        if (origin) {
          const known = SEED_BACKENDS[origin.seedType];
          errors.push(
            known
              ? `${origin.base}.type: "${origin.seedType}" backends are served by the "${known.format}" plugin, which is not loaded (loaded: ${loaded})`
              : `${origin.base}.type: unknown backend type "${origin.seedType}" (seed types: ${Object.keys(SEED_BACKENDS).join(", ")}; or a loaded format: ${loaded})`,
          );
        } else add(repoPath(i, "format"), `unknown format "${repo.format}" (loaded: ${loaded})`);
      } else if (typeof repo.type === "string" && ["proxy", "hosted", "group"].includes(repo.type)) {
        if (!plugin.types.includes(repo.type)) add(repoPath(i, "type"), `format "${repo.format}" does not support type "${repo.type}" (supported: ${plugin.types.join(", ")})`);
        if (repo.type === "proxy" && repo.upstream === undefined && !plugin.defaultUpstream) {
          add(repoPath(i, "upstream"), `is required for a proxy repository (format "${repo.format}" has no default upstream)`);
        }
      }
    }
    const knownType = repo.type === "proxy" || repo.type === "hosted" || repo.type === "group";
    if (knownType && repo.type !== "proxy" && repo.upstream !== undefined) add(repoPath(i, "upstream"), "only proxy repositories have an upstream");
    if (repo.type === "group") {
      if (repo.members === undefined) add(repoPath(i, "members"), "is required for a group repository");
      const members = Array.isArray(repo.members) ? repo.members : [];
      members.forEach((m, j) => {
        if (typeof m !== "string") return;
        const target = byName.get(m);
        if (m === repo.name) add(["repositories", i, "members", j], "a group cannot contain itself");
        else if (!target) add(["repositories", i, "members", j], `no repository named "${m}"`);
        else if (target.repo.format !== repo.format) add(["repositories", i, "members", j], `"${m}" is a ${target.repo.format} repository, not ${repo.format}`);
      });
      if (typeof repo.writeTo === "string") {
        const target = byName.get(repo.writeTo);
        if (!members.includes(repo.writeTo)) add(repoPath(i, "writeTo"), `"${repo.writeTo}" is not a member of this group`);
        else if (target && target.repo.type !== "hosted") add(repoPath(i, "writeTo"), `"${repo.writeTo}" is a ${target.repo.type} repository; writes go to a hosted member`);
      }
    } else if (knownType) {
      if (repo.members !== undefined) add(repoPath(i, "members"), "only group repositories have members");
      if (repo.writeTo !== undefined) add(repoPath(i, "writeTo"), "only group repositories have writeTo");
    }
  });
  // group cycles (a group may contain another group of the same format)
  for (const { i, repo } of byName.values()) {
    if (repo.type !== "group") continue;
    const path = [repo.name];
    const visit = (name: string, visited: Set<string>): boolean => {
      const g = byName.get(name)?.repo;
      if (!g || g.type !== "group" || !Array.isArray(g.members)) return false;
      for (const m of g.members) {
        if (m === name) continue; // reported above
        if (m === repo.name) {
          path.push(m);
          return true;
        }
        if (visited.has(m)) continue;
        visited.add(m);
        path.push(m);
        if (visit(m, visited)) return true;
        path.pop();
      }
      return false;
    };
    if (visit(repo.name, new Set([repo.name]))) add(repoPath(i, "members"), `group cycle ${path.join(" → ")}`);
  }

  // upstreamCaFile: a readable PEM file (relative to the config file)
  repos.forEach((r, i) => {
    if (!isObject(r) || typeof r.upstreamCaFile !== "string" || r.upstreamCaFile === "") return;
    const file = isAbsolute(r.upstreamCaFile) ? r.upstreamCaFile : resolve(o.configDir ?? process.cwd(), r.upstreamCaFile);
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      add(repoPath(i, "upstreamCaFile"), `cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      return;
    }
    if (!text.includes("-----BEGIN CERTIFICATE-----")) add(repoPath(i, "upstreamCaFile"), `${file} holds no PEM certificate`);
  });

  // mounts: unique, not nested, not the ops namespace /-/
  const mounts: { mount: string; i: number; key: string }[] = [];
  repos.forEach((r, i) => {
    if (!isObject(r) || typeof r.name !== "string") return;
    if (r.prefix !== undefined && (typeof r.prefix !== "string" || !new RegExp(PREFIX_PATTERN).test(r.prefix))) return;
    const key = r.prefix !== undefined ? "prefix" : "name";
    const mount = mountOf(r as RepositoryConfig);
    if (mount === "/-" || mount.startsWith("/-/")) {
      add(repoPath(i, key), `mount "${mount}" is reserved for the vault's own endpoints (/-/health, /-/ready, /-/metrics)`);
      return;
    }
    for (const m of mounts) {
      if (m.mount === mount) add(repoPath(i, key), `mount "${mount}" is already used by repositories[${m.i}]`);
      else if (mount.startsWith(m.mount + "/")) add(repoPath(i, key), `mount "${mount}" lies inside the mount "${m.mount}" of repositories[${m.i}]`);
      else if (m.mount.startsWith(mount + "/")) add(repoPath(i, key), `mount "${mount}" contains the mount "${m.mount}" of repositories[${m.i}]`);
    }
    mounts.push({ mount, i, key });
  });

  // ports: a repository listener may not reuse the main port or another repository's (0 = any free port)
  const server = isObject(doc.server) ? doc.server : {};
  const mainPort = typeof server.port === "number" ? server.port : typeof seed.server.port === "number" ? seed.server.port : CONFIG_DEFAULTS.port;
  const ports = new Map<number, string>();
  if (mainPort !== 0) ports.set(mainPort, server.port !== undefined ? "server.port" : seed.server.port !== undefined ? "http_port" : "server.port (default)");
  repos.forEach((r, i) => {
    if (!isObject(r) || typeof r.port !== "number" || !Number.isInteger(r.port) || r.port === 0) return;
    const used = ports.get(r.port);
    if (used) add(repoPath(i, "port"), `port ${r.port} is already used by ${used}`);
    else ports.set(r.port, `repositories[${i}]`);
  });

  // retention: groups hold no files; keepVersions needs the format's version order; hosted deletions need deleteVersion
  repos.forEach((r, i) => {
    if (!isObject(r) || !isObject(r.retention)) return;
    const repo = r as RepositoryConfig;
    const plugin = typeof repo.format === "string" ? plugins.get(repo.format) : undefined;
    const where = (k: string) => ["repositories", i, "retention", k];
    const policy = r.retention as Record<string, unknown>;
    if (repo.type === "group") {
      add(["repositories", i, "retention"], "group repositories hold no files of their own; set retention on their members");
      return;
    }
    if (!plugin) return;
    if (policy.keepVersions !== undefined && typeof plugin.compareVersions !== "function")
      add(where("keepVersions"), `format "${repo.format}" does not order package versions (its plugin has no compareVersions)`);
    if (repo.type === "hosted" && typeof plugin.deleteVersion !== "function") {
      for (const k of ["maxAgeDays", "unusedForDays", "keepVersions"])
        if (policy[k] !== undefined) add(where(k), `hosted ${repo.format} repositories accept only retention.maxBytes (the ${repo.format} plugin cannot delete versions)`);
    }
  });

  if (isObject(doc.metadata) && doc.metadata.driver === "postgres" && typeof doc.metadata.url === "string" && !/^postgres(ql)?:\/\/./.test(doc.metadata.url))
    add(["metadata", "url"], "must be a postgres:// or postgresql:// URL");

  if (errors.length > 0) return { errors, warnings };

  // --- defaults
  const base = o.configDir ?? process.cwd();
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const s = { ...seed.server, ...(server as ServerConfig) };
  const auth = { ...((doc.auth as AuthConfig | undefined) ?? {}) };
  const anonymousRead = auth.anonymousRead ?? CONFIG_DEFAULTS.anonymousRead;
  const storage = (doc.storage as StorageConfig | undefined) ?? { driver: "fs" };
  if (storage.driver === "fs" && storage.root) storage.root = abs(storage.root);
  const metadata = (doc.metadata as MetadataConfig | undefined) ?? { driver: "sqlite" };
  if (metadata.driver === "sqlite" && metadata.path && metadata.path !== ":memory:") metadata.path = abs(metadata.path);
  const { backends: _seedBackends, ...rest } = doc as VaultConfig;
  const config: ResolvedConfig = {
    ...rest,
    server: {
      ...s,
      host: s.host ?? CONFIG_DEFAULTS.host,
      port: s.port ?? CONFIG_DEFAULTS.port,
      dataDir: abs(s.dataDir ?? CONFIG_DEFAULTS.dataDir),
      logLevel: s.logLevel ?? CONFIG_DEFAULTS.logLevel,
      shutdownGraceSeconds: s.shutdownGraceSeconds ?? CONFIG_DEFAULTS.shutdownGraceSeconds,
      ...(s.publicUrl ? { publicUrl: s.publicUrl.replace(/\/+$/, "") } : {}),
    },
    storage,
    metadata,
    auth: { ...auth, anonymousRead },
    plugins: (doc.plugins as string[] | undefined) ?? [],
    repositories: repos.map((r) => {
      const repo = r as RepositoryConfig;
      const plugin = plugins.get(repo.format)!;
      const out: ResolvedRepository = { ...repo, anonymousRead: repo.anonymousRead ?? anonymousRead };
      if (repo.upstreamCaFile) out.upstreamCaFile = abs(repo.upstreamCaFile);
      // storage.redirectDownloads is every repository's default
      if (out.redirectDownloads === undefined && storage.driver === "s3" && storage.redirectDownloads !== undefined) out.redirectDownloads = storage.redirectDownloads;
      if (repo.type === "proxy" && out.upstream === undefined) out.upstream = plugin.defaultUpstream;
      return out;
    }),
  };
  for (const k of ["backends", "http_host", "http_port", "cache_dir", "log_level"]) delete (config as unknown as Record<string, unknown>)[k];
  return { config, errors, warnings };
}

/**
 * Validates a config against the core schema and the loaded plugins' schemas.
 * @returns every error as `<path>: <message>` (empty when valid), e.g. `repositories[2].upstream: must be an absolute http(s) URL`
 */
export function validateConfig(raw: unknown, plugins: Map<string, VaultPlugin>): string[] {
  return checkConfig(raw, plugins).errors;
}

/**
 * {@link checkConfig} that throws.
 * @throws ConfigError listing every error
 */
export function resolveConfig(raw: unknown, plugins: Map<string, VaultPlugin>, o: { configDir?: string; source?: string } = {}): ResolvedConfig {
  const r = checkConfig(raw, plugins, o);
  if (!r.config) throw new ConfigError(r.errors, o.source);
  return r.config;
}

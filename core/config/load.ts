/** Loads the config file (vault.config.ts by dynamic import, or YAML/JSON), substitutes `${ENV_VAR}`s and applies CLI overrides. */
import { existsSync } from "node:fs";
import { dirname, extname, isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { LineCounter, parseDocument } from "yaml";
import { ConfigError, formatPath } from "./schema.ts";
import type { VaultConfig } from "./types.ts";

/** Files looked for in the working directory when no `--config` is given, in this order. */
export const DEFAULT_CONFIG_FILES = ["vault.config.ts", "vault.config.yaml", "vault.config.yml", "vault.config.json"];

/** A loaded (not yet validated) config. */
export interface LoadedConfig {
  config: VaultConfig;
  /** Directory of the config file: relative `plugins:` paths and `server.dataDir` are resolved against it. */
  configDir: string;
  /** Absolute path of the file read. */
  file: string;
}

/**
 * Replaces `${VAR}` in every string of `value` (objects and arrays walked recursively; keys untouched).
 * `${VAR:-default}` uses `default` when VAR is unset or empty, `${VAR-default}` only when unset; `$${` is a literal `${`.
 * A missing variable without default is an error naming the path, e.g. `auth.admin.password: environment variable
 * VAULT_ADMIN_PASSWORD is not set`.
 *
 * @param env the environment (default `process.env`)
 * @param errors receives one message per problem
 * @returns a substituted copy (plain objects and arrays are copied, other values kept)
 */
export function substituteEnv(value: unknown, env: Record<string, string | undefined> = process.env, errors: string[] = [], path: (string | number)[] = []): unknown {
  if (typeof value === "string") {
    if (!value.includes("${")) return value;
    return value.replace(/\$\$\{|\$\{([^}]*)\}|\$\{/g, (m, inner: string | undefined) => {
      if (m === "$${") return "${";
      const where = formatPath(path) || "config";
      if (inner === undefined) {
        errors.push(`${where}: unterminated "\${" (write "$\${" for a literal "\${")`);
        return m;
      }
      const ref = /^([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([\s\S]*))?$/.exec(inner);
      if (!ref) {
        errors.push(`${where}: "\${${inner}}" is not a variable reference (\${NAME}, \${NAME:-default}; "$\${" for a literal "\${")`);
        return m;
      }
      const [, name, op, fallback] = ref;
      const v = env[name];
      if (op === ":-" && (v === undefined || v === "")) return fallback;
      if (op === "-" && v === undefined) return fallback;
      if (v === undefined) {
        errors.push(`${where}: environment variable ${name} is not set`);
        return "";
      }
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, env, errors, [...path, i]));
  if (value && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = substituteEnv(v, env, errors, [...path, k]);
    return out;
  }
  return value;
}

/**
 * Parses YAML (or JSON, a subset of YAML 1.2) config text.
 * @throws ConfigError with one `file:line:col: message` per syntax error
 */
export function parseYamlConfig(text: string, file = "config"): unknown {
  const lines = new LineCounter();
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true, lineCounter: lines });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => {
        const pos = e.pos ? lines.linePos(e.pos[0]) : undefined;
        return `${file}${pos ? `:${pos.line}:${pos.col}` : ""}: ${e.message.split("\n")[0]}`;
      }),
      file,
    );
  }
  return doc.toJS() ?? {};
}

/**
 * Finds the config file: `file` when given (relative to `cwd`), else the first of {@link DEFAULT_CONFIG_FILES} in `cwd`.
 * @throws ConfigError when there is none
 */
export function findConfigFile(file?: string, cwd = process.cwd()): string {
  if (file) {
    const abs = isAbsolute(file) ? file : resolve(cwd, file);
    if (!existsSync(abs)) throw new ConfigError([`${file}: no such file`], file);
    return abs;
  }
  for (const f of DEFAULT_CONFIG_FILES) {
    const abs = resolve(cwd, f);
    if (existsSync(abs)) return abs;
  }
  throw new ConfigError([`no config file: looked for ${DEFAULT_CONFIG_FILES.join(", ")} in ${cwd} (use --config FILE)`]);
}

/**
 * Loads a config file: `.ts`/`.js`/`.mjs` by dynamic import (`export default defineConfig({...})`, or a function
 * returning the config), `.yml`/`.yaml`/`.json` with the `yaml` package; then substitutes `${ENV_VAR}`s.
 * The result is not validated yet (that needs the plugins: see core/config/schema.ts checkConfig).
 *
 * @param file path (relative to the cwd); default: the first of {@link DEFAULT_CONFIG_FILES} that exists
 * @throws ConfigError (missing file, syntax errors, no default export, missing environment variables)
 */
export async function loadConfig(file?: string, o: { env?: Record<string, string | undefined>; cwd?: string } = {}): Promise<LoadedConfig> {
  const abs = findConfigFile(file, o.cwd);
  const shown = file ?? abs;
  const ext = extname(abs).toLowerCase();
  let raw: unknown;
  if ([".ts", ".mts", ".js", ".mjs"].includes(ext)) {
    let mod: Record<string, unknown>;
    try {
      mod = await import(pathToFileURL(abs).href);
    } catch (e) {
      throw new ConfigError([`${shown}: ${e instanceof Error ? e.message : String(e)}`], shown);
    }
    raw = mod.default;
    if (typeof raw === "function") raw = await (raw as () => unknown)();
    if (raw === undefined) throw new ConfigError([`${shown}: no default export (write export default defineConfig({ ... }))`], shown);
  } else if ([".yml", ".yaml", ".json"].includes(ext)) {
    raw = parseYamlConfig(await Bun.file(abs).text(), shown);
  } else {
    throw new ConfigError([`${shown}: unsupported config file type "${ext}" (use .ts, .yml, .yaml or .json)`], shown);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new ConfigError([`${shown}: the config must be an object`], shown);
  const errors: string[] = [];
  const config = substituteEnv(raw, o.env ?? process.env, errors) as VaultConfig;
  if (errors.length > 0) throw new ConfigError(errors, shown);
  return { config, configDir: dirname(abs), file: abs };
}

/** Command-line settings that override the file (`--port`, `--host`, `--data`, `--log-level`). */
export interface ConfigOverrides {
  port?: number;
  host?: string;
  /** Made absolute against the cwd by the CLI. */
  dataDir?: string;
  logLevel?: "debug" | "info" | "warn" | "error";
}

/** Returns a copy of `config` with `server.*` replaced by the given overrides (undefined ones are ignored). */
export function applyOverrides(config: VaultConfig, ov: ConfigOverrides): VaultConfig {
  const server = { ...(config.server ?? {}) };
  if (ov.port !== undefined) server.port = ov.port;
  if (ov.host !== undefined) server.host = ov.host;
  if (ov.dataDir !== undefined) server.dataDir = ov.dataDir;
  if (ov.logLevel !== undefined) server.logLevel = ov.logLevel;
  return { ...config, server };
}

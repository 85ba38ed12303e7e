/** Shared plumbing of the `vault user` and `vault token` commands: open the auth core from --config/--data, read secrets, print tables. */
import { userInfo } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { openMetadata } from "../db/index.ts";
import { loadConfig, findConfigFile } from "../config/load.ts";
import type { VaultConfig } from "../config/types.ts";
import { resolveConfig } from "../config/schema.ts";
import { loadPlugins } from "../loader.ts";
import { createLogger } from "../log.ts";
import { VaultError } from "../errors.ts";
import { createAuthCore, type AuthCore } from "./index.ts";

/** parseArgs options every auth command accepts. */
export const COMMON_OPTIONS = {
  config: { type: "string" },
  data: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/** An opened auth core for one CLI invocation. */
export interface CliAuth {
  auth: AuthCore;
  /** Absolute path of the SQLite file; for Postgres, `postgres` (the URL holds credentials). */
  dbPath: string;
  /** The loaded config as written (not validated; `{}` when no config file was found). */
  config: VaultConfig;
  /** Directory of the config file (the cwd when there is none). */
  configDir: string;
  /** Absolute path of the config file read; undefined when none was found. */
  configFile?: string;
  /** Writes pending audit rows and closes the database. */
  close(): Promise<void>;
}

/**
 * Opens the metadata database and the auth core the way `vault serve` does: the config from `--config FILE`
 * (else `vault.config.*` in the cwd when present; none is fine), `server.dataDir` resolved against the config's
 * directory, `--data DIR` (against the cwd) overriding it; the SQLite file is `metadata.path` or `<dataDir>/vault.db`,
 * or the Postgres database at `metadata.url`. The config's `auth` section matters: with `auth.tokenSecret` set, S3
 * secrets are sealed under a key derived from it.
 * @throws ConfigError (bad or missing config file, unset `${VAR}`); the driver's error when Postgres is unreachable
 */
export async function openCliAuth(o: { config?: string; data?: string }, cwd = process.cwd()): Promise<CliAuth> {
  let config: VaultConfig = {};
  let configDir = cwd;
  let file = o.config;
  let configFile: string | undefined;
  if (file === undefined) {
    try {
      file = findConfigFile(undefined, cwd);
    } catch {
      file = undefined; // no config file in the cwd: defaults
    }
  }
  if (file !== undefined) {
    const loaded = await loadConfig(file, { cwd });
    config = loaded.config;
    configDir = loaded.configDir;
    configFile = loaded.file;
  }
  const dataDir = o.data !== undefined ? resolve(cwd, o.data) : resolve(configDir, config.server?.dataDir ?? "./data");
  const md = config.metadata ?? { driver: "sqlite" };
  const sqlitePath = md.driver === "sqlite" ? (md.path ? (isAbsolute(md.path) ? md.path : resolve(configDir, md.path)) : join(dataDir, "vault.db")) : undefined;
  const dbPath = sqlitePath ?? "postgres";
  const opened = await openMetadata(sqlitePath !== undefined ? { driver: "sqlite", path: sqlitePath } : md, dataDir);
  const auth = createAuthCore({ db: opened.db, config: config.auth, log: createLogger("warn") });
  return {
    auth,
    dbPath,
    config,
    configDir,
    configFile,
    async close() {
      await auth.flush();
      await opened.close();
    },
  };
}

/**
 * Names of the repositories the CLI's config defines after resolution (seed `backends:` entries become repositories
 * too), in config order. Loads the plugins the config needs (core/loader.ts loadPlugins) to validate it.
 * @returns `[]` when no config file was found
 * @throws ConfigError (invalid config), PluginLoadError (a plugin fails to load)
 */
export async function configuredRepositories(cli: Pick<CliAuth, "config" | "configDir" | "configFile">): Promise<string[]> {
  if (cli.configFile === undefined) return [];
  const plugins = await loadPlugins(cli.config, cli.configDir, { builtins: "needed" });
  return resolveConfig(cli.config, plugins, { configDir: cli.configDir, source: cli.configFile }).repositories.map((r) => r.name);
}

/**
 * Refuses a grant on a repository the config does not define; `*` (every repository) always passes.
 * @throws VaultError VAULT_BAD_REQUEST (400, exit 2) naming the repository and listing the configured ones;
 *   ConfigError / PluginLoadError as {@link configuredRepositories}
 */
export async function requireConfiguredRepository(cli: Pick<CliAuth, "config" | "configDir" | "configFile">, repository: string): Promise<void> {
  if (repository === "*") return;
  const names = await configuredRepositories(cli);
  if (names.includes(repository)) return;
  const msg =
    cli.configFile === undefined
      ? `unknown repository "${repository}": no config file found (use --config FILE); only '*' (every repository) can be granted`
      : `unknown repository "${repository}" in ${cli.configFile}; configured repositories: ${names.join(", ") || "none"} (or '*' for every repository)`;
  throw new VaultError("VAULT_BAD_REQUEST", 400, msg);
}

/** The actor written to the audit log for CLI changes: `cli:<os user>`. */
export function cliActor(): string {
  try {
    return `cli:${userInfo().username}`;
  } catch {
    return "cli";
  }
}

/**
 * Gets a password: `--password P`; the first line of stdin with `--password-stdin` or when stdin is not a
 * terminal; otherwise prompts twice on the terminal without echo.
 * @throws VaultError VAULT_BAD_REQUEST (400) when stdin has no line or the two prompted entries differ
 */
export async function readPassword(o: { password?: string; stdin?: boolean; prompt: string }): Promise<string> {
  if (o.password !== undefined) return o.password;
  if (o.stdin || !process.stdin.isTTY) {
    const text = await Bun.stdin.text();
    const line = text.split(/\r?\n/, 1)[0] ?? "";
    if (line === "") throw new VaultError("VAULT_BAD_REQUEST", 400, "no password on stdin");
    return line;
  }
  const a = await promptHidden(`${o.prompt}: `);
  const b = await promptHidden(`${o.prompt} (again): `);
  if (a !== b) throw new VaultError("VAULT_BAD_REQUEST", 400, "passwords do not match");
  return a;
}

/** Reads one line from the terminal without echoing it (raw mode). */
function promptHidden(question: string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const stdin = process.stdin;
    process.stderr.write(question);
    let buf = "";
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding("utf8");
    const done = (err?: Error) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off("data", onData);
      process.stderr.write("\n");
      if (err) reject(err);
      else resolvePromise(buf);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === "\r" || ch === "\n" || ch === "\u0004") return done();
        if (ch === "\u0003") return done(new VaultError("VAULT_BAD_REQUEST", 400, "interrupted"));
        if (ch === "\u007f" || ch === "\b") buf = buf.slice(0, -1);
        else buf += ch;
      }
    };
    stdin.on("data", onData);
  });
}

/** Formats epoch ms as an ISO date-time (seconds precision), or `-`. */
export function formatTime(ms: number | null | undefined): string {
  return ms === null || ms === undefined ? "-" : new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** Renders rows as left-aligned columns separated by two spaces (first row = header). */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ")).join("\n") + "\n";
}

/** Prints an error of command `cmd` to stderr and returns the exit code (2 usage, 1 otherwise). */
export function reportError(cmd: string, e: unknown): number {
  if (e instanceof VaultError) {
    process.stderr.write(`vault ${cmd}: ${e.message}\n`);
    return e.status === 400 ? 2 : 1;
  }
  if (e instanceof Error && (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
    process.stderr.write(`vault ${cmd}: ${e.message}\n`);
    return 2;
  }
  const msg = e instanceof Error ? e.message : String(e);
  const errs = (e as { errors?: unknown }).errors;
  process.stderr.write(`vault ${cmd}: ${Array.isArray(errs) && errs.length ? errs.join("\n  ") : msg}\n`);
  return 1;
}

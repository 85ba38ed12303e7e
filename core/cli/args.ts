/** Shared command-line options of vault commands (--config --port --host --data --log-level) and loading the config with them. */
import { resolve } from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { applyOverrides, loadConfig, type ConfigOverrides, type LoadedConfig } from "../config/load.ts";
import type { VaultConfig } from "../config/types.ts";

/** parseArgs options every server-side command accepts. */
export const COMMON_OPTIONS = {
  config: { type: "string", short: "c" },
  port: { type: "string", short: "p" },
  host: { type: "string" },
  data: { type: "string" },
  "log-level": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsConfig["options"];

/** Help text of the common options. */
export const COMMON_HELP = `  --config FILE      config file (default: vault.config.ts, .yaml, .yml or .json in the current directory)
  --port N           main listener port (default 8080; 0 = any free port)
  --host ADDR        address to bind (default 127.0.0.1)
  --data DIR         data directory: SQLite file, blob store, spool (default ./data)
  --log-level L      debug, info, warn or error (default info)`;

/** A bad command line; the message says what was wrong. Commands print it with their usage and exit 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

const LEVELS = new Set(["debug", "info", "warn", "error"]);

/** Values of the common options as parseArgs returns them. */
export interface CommonValues {
  config?: string;
  port?: string;
  host?: string;
  data?: string;
  "log-level"?: string;
  help?: boolean;
}

/**
 * Parses `args` with the common options plus `extra`.
 * @throws UsageError on unknown options or missing values
 */
export function parseCommandArgs<E extends NonNullable<ParseArgsConfig["options"]>>(args: string[], extra?: E, allowPositionals = true) {
  try {
    return parseArgs({ args, options: { ...COMMON_OPTIONS, ...(extra ?? ({} as E)) }, allowPositionals, strict: true });
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
}

/**
 * The server overrides given on the command line. `--data` is resolved against `cwd`.
 * @throws UsageError for a port that is not an integer 0..65535 or an unknown log level
 */
export function overridesFrom(v: CommonValues, cwd = process.cwd()): ConfigOverrides {
  const o: ConfigOverrides = {};
  if (v.port !== undefined) {
    if (!/^\d+$/.test(v.port) || Number(v.port) > 65535) throw new UsageError(`--port: must be an integer 0..65535 (got ${JSON.stringify(v.port)})`);
    o.port = Number(v.port);
  }
  if (v.host !== undefined) {
    if (v.host === "") throw new UsageError("--host: must not be empty");
    o.host = v.host;
  }
  if (v.data !== undefined) o.dataDir = resolve(cwd, v.data);
  if (v["log-level"] !== undefined) {
    const l = v["log-level"].toLowerCase();
    if (!LEVELS.has(l)) throw new UsageError(`--log-level: must be debug, info, warn or error (got ${JSON.stringify(v["log-level"])})`);
    o.logLevel = l as ConfigOverrides["logLevel"];
  }
  return o;
}

/**
 * Loads the config named by `--config` (or the default file) and applies the command-line overrides.
 * @throws ConfigError (file, syntax, environment variables), UsageError (bad option values)
 */
export async function loadCliConfig(v: CommonValues, cwd = process.cwd()): Promise<LoadedConfig & { config: VaultConfig }> {
  const overrides = overridesFrom(v, cwd);
  const loaded = await loadConfig(v.config, { cwd });
  return { ...loaded, config: applyOverrides(loaded.config, overrides) };
}

/** Where a command prints: stdout/stderr, or a capture in tests. */
export interface CommandIo {
  out(s: string): void;
  err(s: string): void;
}

/** The process's stdout and stderr. */
export const STDIO: CommandIo = { out: (s) => void process.stdout.write(s), err: (s) => void process.stderr.write(s) };

/** Options of the commands that work on a vault's data outside the server (gc, cleanup, export, import). */
const DATA_COMMAND_OPTIONS = {
  config: { type: "string", short: "c" },
  data: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsConfig["options"];

/**
 * Parses the arguments of a data command (`--config`, `--data`, `--help` plus `options`): a bad command line prints
 * the error and `usage` (exit code 2), `--help` prints `usage` (exit code 0).
 * @returns the parsed values and positionals, or the exit code the command returns
 */
export function parseDataCommandArgs<O extends NonNullable<ParseArgsConfig["options"]>>(args: string[], options: O, usage: string, io: CommandIo, allowPositionals: boolean) {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...DATA_COMMAND_OPTIONS, ...options }, strict: true, allowPositionals });
  } catch (e) {
    io.err(`${(e as Error).message}\n${usage}`);
    return 2;
  }
  if ((parsed.values as { help?: boolean }).help) {
    io.out(usage);
    return 0;
  }
  return parsed;
}

/**
 * The config check of `vault serve`, run on a short-lived worker thread: the file is loaded, the plugins are
 * imported and their schemas compiled, and the whole config is validated there, and only the resolved config comes
 * back. ajv and its compiled validators (about 10 MiB) live and die with that thread, so the serving process never
 * holds them; its plugins are then imported again without the schema check ({@link loadPlugins} `checkSchemas: false`).
 *
 * This module is both the caller's side ({@link checkConfigInThread}) and the thread's entry (when loaded as a
 * worker with `workerData.kind === "vault-config-check"`). A `bun build --compile` binary lists it among its
 * entrypoints.
 */
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { ConfigError, checkConfig, type ResolvedConfig } from "./schema.ts";
import { loadPlugins, PluginLoadError } from "../loader.ts";
import { loadCliConfig, UsageError, type CommonValues } from "../cli/args.ts";
import { VaultError } from "../errors.ts";
import { threadEntry } from "../threads.ts";

/** What {@link checkConfigInThread} resolves with. */
export interface CheckedConfig {
  /** The validated config with defaults applied (structured-cloned from the thread). */
  config: ResolvedConfig;
  /** Non-fatal notes (seed keys without effect, …). */
  warnings: string[];
  /** The config file read. */
  file: string;
  /** Its directory (relative plugin paths and data paths resolve against it). */
  configDir: string;
}

type Answer =
  | { ok: true; checked: CheckedConfig }
  | { ok: false; kind: "config"; errors: string[]; source?: string }
  | { ok: false; kind: "plugins"; errors: string[] }
  | { ok: false; kind: "usage"; message: string }
  | { ok: false; kind: "other"; message: string; vaultCode?: string };

const KIND = "vault-config-check";
const ENTRY: URL = threadEntry("core/config/check-thread.ts");

/** The thread's work: load, import plugins, validate. Never throws: failures become an answer. */
async function check(values: CommonValues, cwd: string): Promise<Answer> {
  let file: string | undefined;
  try {
    const loaded = await loadCliConfig(values, cwd);
    file = values.config ?? loaded.file;
    const plugins = await loadPlugins(loaded.config, loaded.configDir, { builtins: "needed" });
    const r = checkConfig(loaded.config, plugins, { configDir: loaded.configDir });
    if (!r.config) return { ok: false, kind: "config", errors: r.errors, source: file };
    return { ok: true, checked: { config: r.config, warnings: r.warnings, file: loaded.file, configDir: loaded.configDir } };
  } catch (e) {
    if (e instanceof ConfigError) return { ok: false, kind: "config", errors: e.errors, source: e.source ?? file };
    if (e instanceof PluginLoadError) return { ok: false, kind: "plugins", errors: e.errors };
    if (e instanceof UsageError) return { ok: false, kind: "usage", message: e.message };
    return { ok: false, kind: "other", message: e instanceof Error ? e.message : String(e), vaultCode: e instanceof VaultError ? e.code : undefined };
  }
}

/**
 * Loads and validates the config named by the command-line `values` on a worker thread, which then exits.
 * @param values `--config`, `--port`, `--host`, `--data`, `--log-level` as parsed by the CLI
 * @param cwd directory the config file and `--data` are resolved against
 * @throws ConfigError (every error, with the file), PluginLoadError, UsageError — the same errors as loading and
 *   checking in this thread would throw; Error when the thread itself fails
 */
export async function checkConfigInThread(values: CommonValues, cwd = process.cwd()): Promise<CheckedConfig> {
  const w = new Worker(ENTRY, { workerData: { kind: KIND, values, cwd } });
  let a: Answer;
  try {
    a = await new Promise<Answer>((resolve, reject) => {
      w.once("message", resolve);
      w.once("error", reject);
      w.once("exit", (code) => reject(new Error(`config check thread exited (code ${code}) without an answer`)));
    });
  } finally {
    void w.terminate();
  }
  if (a.ok) return a.checked;
  if (a.kind === "config") throw new ConfigError(a.errors, a.source);
  if (a.kind === "plugins") throw new PluginLoadError(a.errors);
  if (a.kind === "usage") throw new UsageError(a.message);
  if (a.vaultCode === "VAULT_CONFIG") throw new VaultError("VAULT_CONFIG", 500, a.message);
  throw new Error(a.message);
}

if (!isMainThread && (workerData as { kind?: string } | null)?.kind === KIND) {
  const { values, cwd } = workerData as { values: CommonValues; cwd: string };
  parentPort!.postMessage(await check(values, cwd));
}

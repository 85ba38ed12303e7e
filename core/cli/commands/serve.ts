/** `vault serve`: validates the config, boots the vault, listens, logs one `listening` line per listener, shuts down gracefully on SIGTERM/SIGINT. */
import { ConfigError } from "../../config/schema.ts";
import { checkConfigInThread } from "../../config/check-thread.ts";
import { loadPlugins, PluginLoadError } from "../../loader.ts";
import { createLogger } from "../../log.ts";
import { createVault, type Vault } from "../../server.ts";
import { VaultError } from "../../errors.ts";
import { COMMON_HELP, parseCommandArgs, UsageError } from "../args.ts";

const USAGE = `usage: vault serve [--config FILE] [--port N] [--host ADDR] [--data DIR] [--log-level L]

Serves every configured repository on one port (plus repositories with their own port:).
${COMMON_HELP}

Logs are JSON lines on stderr; each listener logs {"msg":"listening","url":...,"port":...}.
SIGTERM/SIGINT: stop accepting, let in-flight downloads finish (server.shutdownGraceSeconds), exit 0.
Exit status: 2 on an invalid config or a plugin that does not load (every error is printed), 1 on other failures.
`;

/** Prints a boot error: every config or plugin error on its own line. Returns the exit code (2 config/plugins, 1 other). */
export function reportBootError(cmd: string, e: unknown, source?: string): number {
  if (e instanceof ConfigError) {
    const where = source ?? e.source;
    process.stderr.write(`vault ${cmd}: invalid configuration${where ? ` (${where})` : ""}:\n  ${e.errors.join("\n  ")}\n`);
    return 2;
  }
  if (e instanceof PluginLoadError) {
    process.stderr.write(`vault ${cmd}: plugin errors:\n  ${e.errors.join("\n  ")}\n`);
    return 2;
  }
  if (e instanceof UsageError) {
    process.stderr.write(`vault ${cmd}: ${e.message}\n${USAGE}`);
    return 2;
  }
  process.stderr.write(`vault ${cmd}: ${e instanceof Error ? e.message : String(e)}\n`);
  return e instanceof VaultError && e.code === "VAULT_CONFIG" ? 2 : 1;
}

/**
 * Runs `vault serve`. Resolves when the vault has stopped after a signal.
 * @param args the arguments after `serve`
 * @returns exit code: 0 after a graceful shutdown, 2 invalid config / plugin errors / usage, 1 other failures
 */
export async function run(args: string[]): Promise<number> {
  let vault: Vault;
  let file: string | undefined;
  try {
    const { values, positionals } = parseCommandArgs(args, {}, true);
    if (values.help) {
      process.stdout.write(USAGE);
      return 0;
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
    file = values.config;
    // Validated on a short-lived thread (ajv never loads here); the plugins are then imported here without the check.
    const check = await checkConfigInThread(values);
    file = check.file;
    const plugins = await loadPlugins(check.config, check.configDir, { builtins: "needed", checkSchemas: false });
    const log = createLogger(check.config.server.logLevel);
    for (const w of check.warnings) log.warn("config", { note: w });
    vault = await createVault(check.config, { configDir: check.configDir, plugins, log, resolved: check.config });
    let listeners;
    try {
      listeners = await vault.listen();
    } catch (e) {
      await vault.stop(0);
      throw e;
    }
    // lifecycle lines are written whatever the log level: tools (spawnVault, supervisors) wait for "listening"
    const lifecycle = createLogger("info");
    for (const l of listeners) lifecycle.info("listening", l.repository ? { url: l.url, port: l.port, repository: l.repository } : { url: l.url, port: l.port });
    lifecycle.info("started", { repositories: vault.repositories.size, dataDir: check.config.server.dataDir, config: check.file });

    return await new Promise<number>((resolveExit) => {
      let signals = 0;
      const onSignal = (signal: NodeJS.Signals) => {
        signals++;
        if (signals > 1) {
          log.warn("second signal: exiting now", { signal });
          process.exit(130);
        }
        lifecycle.info("shutting down", { signal, graceSeconds: check.config!.server.shutdownGraceSeconds });
        vault.stop().then(
          () => {
            lifecycle.info("stopped");
            resolveExit(0);
          },
          (e) => {
            log.error("shutdown failed", { error: e instanceof Error ? e.message : String(e) });
            resolveExit(1);
          },
        );
      };
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
    });
  } catch (e) {
    return reportBootError("serve", e, file);
  }
}

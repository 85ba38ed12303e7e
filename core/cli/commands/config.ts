/** `vault config check [FILE]` (every error, or `ok` and the resolved repositories) and `vault config schema` (the assembled JSON Schema). */
import { buildConfigSchema, checkConfig, ConfigError, mountOf } from "../../config/schema.ts";
import { loadPlugins } from "../../loader.ts";
import { COMMON_HELP, loadCliConfig, parseCommandArgs, UsageError } from "../args.ts";
import { reportBootError } from "./serve.ts";

const USAGE = `usage:
  vault config check [FILE] [--port N] [--host ADDR] [--data DIR]
      loads FILE (default: --config, else vault.config.* in the current directory) with the plugins it names,
      validates it and prints every error (exit 2), or "ok" and the resolved repositories (exit 0)
  vault config schema [--config FILE]
      prints the JSON Schema assembled from the core and every loaded plugin (for editors)
options:
${COMMON_HELP}
`;

/** Renders rows as left-aligned columns (first row = header). */
function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ")).join("\n") + "\n";
}

/**
 * Runs `vault config …`.
 * @param args the arguments after `config`
 * @returns exit code: 0 valid, 2 invalid config / plugin errors / usage, 1 other failures
 */
export async function run(args: string[]): Promise<number> {
  let file: string | undefined;
  try {
    const { values, positionals } = parseCommandArgs(args, {}, true);
    const [sub, target, ...rest] = positionals;
    if (values.help || sub === undefined) {
      (values.help ? process.stdout : process.stderr).write(USAGE);
      return values.help ? 0 : 2;
    }
    if (sub !== "check" && sub !== "schema") throw new UsageError(`unknown subcommand ${JSON.stringify(sub)}`);
    if (rest.length > 0 || (sub === "schema" && target !== undefined)) throw new UsageError(`unexpected argument ${JSON.stringify(rest[0] ?? target)}`);
    if (target !== undefined && values.config !== undefined && target !== values.config) throw new UsageError("give the config file once (FILE or --config)");
    file = target ?? values.config;
    const loaded = await loadCliConfig({ ...values, config: file });
    const plugins = await loadPlugins(loaded.config, loaded.configDir);
    if (sub === "schema") {
      process.stdout.write(JSON.stringify(buildConfigSchema(plugins), null, 2) + "\n");
      return 0;
    }
    const r = checkConfig(loaded.config, plugins, { configDir: loaded.configDir });
    for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
    if (!r.config) throw new ConfigError(r.errors, file ?? loaded.file);
    const c = r.config;
    const rows = [["NAME", "FORMAT", "TYPE", "MOUNT", "UPSTREAM"]];
    for (const repo of c.repositories) {
      const mount = mountOf(repo) + "/" + (repo.port !== undefined ? ` (+ port ${repo.port})` : "");
      const upstream = repo.type === "group" ? `members: ${(repo.members ?? []).join(", ")}` : (repo.upstream ?? "-");
      rows.push([repo.name, repo.format, repo.type, mount, upstream]);
    }
    process.stdout.write(`ok\n${table(rows)}`);
    process.stdout.write(`listening on ${c.server.host}:${c.server.port}, data in ${c.server.dataDir}\n`);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`vault config: ${e.message}\n${USAGE}`);
      return 2;
    }
    return reportBootError("config", e, file);
  }
}

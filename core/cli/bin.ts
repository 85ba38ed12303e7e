#!/usr/bin/env bun
/** The `vault` command line: dispatches `vault <command> ...` to core/cli/commands/<command>.ts (`run(args): Promise<exit code>`). */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

/** Commands, in the order `vault --help` lists them. A command file dropped into commands/ also runs (found on disk). */
export const COMMANDS: Record<string, string> = {
  serve: "serve every configured repository (vault serve --help)",
  config: "check a config file, or print the assembled JSON Schema",
  user: "manage users and their per-repository grants",
  token: "create, list and revoke API tokens and S3 access keys",
  prefetch: "warm the cache of a running vault from a list of paths or URLs",
  gc: "remove unreferenced blobs and orphan temp files",
  cleanup: "apply the repositories' retention policies now (--dry-run shows what would go)",
  export: "write stored files (repositories, packages) as one archive with a manifest of digests",
  import: "read an archive written by vault export into this vault (air-gap transfer)",
  conda: "conda → OCI mirror: mirror, pull-cache, push-cache (vault conda --help)",
};

/** Commands imported through static specifiers (so `bun build --compile` embeds them); others are found on disk. */
const BUILTIN: Record<string, () => Promise<{ run?: (args: string[]) => Promise<number> }>> = {
  serve: () => import("./commands/serve.ts"),
  config: () => import("./commands/config.ts"),
  user: () => import("./commands/user.ts"),
  token: () => import("./commands/token.ts"),
  prefetch: () => import("./commands/prefetch.ts"),
  gc: () => import("./commands/gc.ts"),
  cleanup: () => import("./commands/cleanup.ts"),
  export: () => import("./commands/export.ts"),
  import: () => import("./commands/import.ts"),
  conda: () => import("../../plugins/conda/mirror/cli.ts"),
};

const USAGE = `usage: vault <command> [options]

commands:
${Object.entries(COMMANDS)
  .map(([k, v]) => `  ${k.padEnd(10)}${v}`)
  .join("\n")}

Every command accepts --config FILE and --data DIR; "vault <command> --help" describes the rest.
`;

/**
 * Runs the CLI with `argv` (the arguments after the program name).
 * @returns exit code (0 ok, 1 failure, 2 usage or invalid config)
 */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === "help" || cmd === "--help" || cmd === "-h") {
    (cmd === undefined ? process.stderr : process.stdout).write(USAGE);
    return cmd === undefined ? 2 : 0;
  }
  if (cmd === "--version" || cmd === "-v") {
    const pkg = (await import("../../package.json")) as { default?: { version?: string }; version?: string };
    process.stdout.write(`vault ${pkg.default?.version ?? pkg.version ?? "?"} (bun ${Bun.version})\n`);
    return 0;
  }
  if (!/^[a-z][a-z0-9-]*$/.test(cmd)) {
    process.stderr.write(`vault: unknown command ${JSON.stringify(cmd)}\n${USAGE}`);
    return 2;
  }
  const file = join(import.meta.dir, "commands", `${cmd}.ts`);
  if (!BUILTIN[cmd] && !existsSync(file)) {
    process.stderr.write(
      `vault: unknown command ${JSON.stringify(cmd)}\n${USAGE}`,
    );
    return 2;
  }
  const mod = BUILTIN[cmd] ? await BUILTIN[cmd]() : ((await import(pathToFileURL(file).href)) as { run?: (args: string[]) => Promise<number> });
  if (typeof mod.run !== "function") {
    process.stderr.write(`vault: core/cli/commands/${cmd}.ts does not export run(args)\n`);
    return 1;
  }
  return mod.run(rest);
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  process.exit(code);
}

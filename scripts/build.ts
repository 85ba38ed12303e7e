#!/usr/bin/env bun
/**
 * Builds the single `vault` binary (`bun build --compile`): `npm run build` → `dist/vault`.
 *   bun scripts/build.ts [--outfile dist/vault] [--target bun-linux-x64]
 *
 * Everything the vault runs is inside: the CLI and its commands, the built-in plugins (static imports in
 * core/plugins-builtin.ts), the database migrations (text imports, core/db/migrations.ts), and the entries of every
 * thread it starts — piscina's bootstrap and the pool tasks (workers/index.ts, patched by core/pool.ts's
 * bunCompilePlugin), the tail-hash thread (workers/tail-hash.ts) and the config-check thread
 * (core/config/check-thread.ts). Third-party plugins and a `vault.config.ts` stay outside and are loaded at run time
 * (a YAML or JSON config needs nothing else; a `.ts` config may import only what sits beside it).
 * Exits 1 with the bundler's messages when the build fails.
 */
import { mkdir } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import { bunCompilePlugin } from "../core/pool.ts";

const ROOT = resolve(import.meta.dir, "..");

/** The entrypoints, the CLI first (the binary's main); the others are thread entries looked up beside it at run time. */
export const ENTRYPOINTS = [
  "core/cli/bin.ts",
  "workers/index.ts",
  "workers/tail-hash.ts",
  "core/config/check-thread.ts",
  "node_modules/piscina/dist/worker.js",
].map((p) => resolve(ROOT, p));

/**
 * Compiles the binary.
 * @param outfile path of the executable to write (its directory is created)
 * @param target a `bun build --target` such as `bun-linux-x64`, `bun-linux-arm64`; default: this machine
 * @returns the bundler's error and warning lines (empty on a clean build)
 * @throws Error listing the bundler's errors when the build fails
 */
export async function buildBinary(outfile: string, target?: string): Promise<string[]> {
  await mkdir(dirname(outfile), { recursive: true });
  const built = await Bun.build({
    entrypoints: ENTRYPOINTS,
    root: ROOT,
    // piscina's optional native helper for thread priorities; not installed, not needed
    external: ["@napi-rs/nice"],
    minify: true,
    compile: target ? { outfile, target: target as Bun.Build.CompileTarget } : { outfile },
    plugins: [bunCompilePlugin()],
  });
  const lines = built.logs.map((l) => `${l.level}: ${l.message}${l.position ? ` (${l.position.file}:${l.position.line})` : ""}`);
  if (!built.success) throw new Error(`build failed:\n  ${lines.join("\n  ")}`);
  return lines;
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { outfile: { type: "string" }, target: { type: "string" } } });
  const outfile = resolve(values.outfile ?? resolve(ROOT, "dist/vault"));
  try {
    const t0 = performance.now();
    for (const l of await buildBinary(outfile, values.target)) process.stderr.write(l + "\n");
    const size = Bun.file(outfile).size;
    process.stdout.write(`built ${outfile} (${(size / 1024 / 1024).toFixed(1)} MiB) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  }
}

/** Plugin loader: built-in plugins (plugins/<format>/index.ts) and third-party ones from `plugins:` (path or npm name), checked at boot. */
import { existsSync, readdirSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { VaultError } from "./errors.ts";
import * as pluginApi from "./plugin.ts";
import { PLUGIN_API_VERSION, type VaultPlugin } from "./plugin.ts";
import { checkPluginSchema } from "./config/schema.ts";
import type { VaultConfig } from "./config/types.ts";
import { BUILTIN_PLUGINS } from "./plugins-builtin.ts";
import { SEED_BACKENDS } from "./config/seed.ts";

/** Directory of the built-in plugins (from source; absent inside a compiled binary, where BUILTIN_PLUGINS is used). */
export const BUILTIN_PLUGIN_DIR = join(import.meta.dir, "..", "plugins");

/** One or more plugins could not be loaded; `errors` has one line per problem, each naming the plugin. Code VAULT_PLUGIN. */
export class PluginLoadError extends VaultError {
  constructor(readonly errors: string[]) {
    super("VAULT_PLUGIN", 500, `plugin errors:\n  ${errors.join("\n  ")}`, { errors });
    this.name = "PluginLoadError";
  }
}

const TYPES = new Set(["proxy", "hosted", "group"]);
const FORMAT_RE = /^[a-z0-9][a-z0-9_-]*$/;

/**
 * Checks a module's default export against the plugin contract (core/plugin.ts VaultPlugin).
 * @param source how the plugin is named in messages (`plugins/http/index.ts`, `./x.ts`, `vault-plugin-helm`)
 * @returns the problems found (empty when the plugin is usable)
 */
export function checkPlugin(p: unknown, source: string, o: { schema?: boolean } = {}): string[] {
  if (typeof p !== "object" || p === null) return [`plugin ${source}: no default export (expected export default definePlugin({ format, apiVersion, ... }))`];
  const plugin = p as Partial<VaultPlugin> & Record<string, unknown>;
  const id = typeof plugin.format === "string" && plugin.format ? `plugin "${plugin.format}" (${source})` : `plugin ${source}`;
  const out: string[] = [];
  if (typeof plugin.format !== "string" || !FORMAT_RE.test(plugin.format)) out.push(`${id}: "format" must be a lower-case id such as "helm" (got ${JSON.stringify(plugin.format)})`);
  if (plugin.apiVersion !== PLUGIN_API_VERSION) {
    out.push(`${id}: plugin API version ${JSON.stringify(plugin.apiVersion)} is not supported; this vault implements plugin API version ${PLUGIN_API_VERSION}`);
  }
  if (!Array.isArray(plugin.types) || plugin.types.length === 0 || !plugin.types.every((t) => TYPES.has(t))) {
    out.push(`${id}: "types" must list one or more of "proxy", "hosted", "group"`);
  }
  const schemaProblem = o.schema === false ? undefined : checkPluginSchema(plugin.configSchema);
  if (schemaProblem) out.push(`${id}: configSchema does not compile: ${schemaProblem}`);
  if (typeof plugin.routes !== "function") out.push(`${id}: "routes" must be a function (app, ctx) => void`);
  if (typeof plugin.renderError !== "function") out.push(`${id}: "renderError" must be a function (err, req) => Response`);
  for (const k of ["hostRoutes", "start", "stop", "classify", "gc"] as const) {
    if (plugin[k] !== undefined && typeof plugin[k] !== "function") out.push(`${id}: "${k}" must be a function when given`);
  }
  if (plugin.defaultUpstream !== undefined && typeof plugin.defaultUpstream !== "string") out.push(`${id}: "defaultUpstream" must be a URL string`);
  return out;
}

/** Whether a `plugins:` entry is a file path (else it is an npm package name). */
function isPathEntry(entry: string): boolean {
  return entry.startsWith("./") || entry.startsWith("../") || entry === "." || entry === ".." || isAbsolute(entry) || /\.(m?[jt]s)$/.test(entry);
}

/** The module specifier third-party plugins import the plugin API from (docs/plugins.md "Loading a plugin"). */
export const PLUGIN_API_SPECIFIER = "artifact-vault/plugin";

let apiRegistered = false;

/**
 * Makes `import ... from "artifact-vault/plugin"` resolve, in every module loaded afterwards in this thread, to the
 * host's own core/plugin.ts module: a plugin file anywhere on disk (also next to the single binary, where no source
 * tree exists) gets the same `VaultError` class, helpers and constants the host uses, so `instanceof` checks hold.
 * Idempotent; the loader calls it before importing `plugins:` entries.
 */
export function registerPluginApi(): void {
  if (apiRegistered) return;
  apiRegistered = true;
  Bun.plugin({
    name: "artifact-vault-plugin-api",
    setup(build) {
      build.module(PLUGIN_API_SPECIFIER, () => ({ exports: pluginApi as unknown as Record<string, unknown>, loader: "object" }));
    },
  });
}

async function importEntry(entry: string, configDir: string): Promise<{ mod?: Record<string, unknown>; error?: string }> {
  registerPluginApi();
  let specifier: string;
  if (isPathEntry(entry)) {
    const abs = resolve(configDir, entry);
    if (!existsSync(abs)) return { error: `plugin ${entry}: no such file (resolved to ${abs}; relative paths are resolved against the config file's directory)` };
    try {
      specifier = Bun.resolveSync(abs, configDir);
    } catch {
      specifier = abs;
    }
  } else {
    try {
      specifier = Bun.resolveSync(entry, configDir);
    } catch {
      return { error: `plugin ${entry}: cannot find package "${entry}" from ${configDir} (install it with npm, or give a path starting with ./)` };
    }
  }
  try {
    return { mod: await import(isAbsolute(specifier) ? pathToFileURL(specifier).href : specifier) };
  } catch (e) {
    return { error: `plugin ${entry}: failed to load: ${e instanceof Error ? e.message : String(e)}` };
  }
}

/** Names of plugins/<dir>/index.ts found on disk that BUILTIN_PLUGINS does not list (none inside a compiled binary). */
function unlistedBuiltinDirs(): string[] {
  const listed = new Set(Object.keys(BUILTIN_PLUGINS));
  try {
    return readdirSync(BUILTIN_PLUGIN_DIR, { withFileTypes: true })
      .filter((d) => d.isDirectory() && !listed.has(d.name) && existsSync(join(BUILTIN_PLUGIN_DIR, d.name, "index.ts")))
      .map((d) => d.name)
      .sort();
  } catch {
    // no plugins directory (compiled binary): BUILTIN_PLUGINS is all there is
    return [];
  }
}

/**
 * The built-in plugin modules: BUILTIN_PLUGINS plus any plugins/<dir>/index.ts found on disk that it does not list.
 * @param only when given, just the built-ins whose name (= directory = format) it accepts
 */
async function builtinModules(only?: (name: string) => boolean): Promise<{ source: string; mod?: Record<string, unknown>; error?: string }[]> {
  const out: { source: string; mod?: Record<string, unknown>; error?: string }[] = [];
  for (const [name, load] of Object.entries(BUILTIN_PLUGINS)) {
    if (only && !only(name)) continue;
    const source = `plugins/${name}/index.ts`;
    try {
      out.push({ source, mod: (await load()) as Record<string, unknown> });
    } catch (e) {
      out.push({ source, error: `plugin ${source}: failed to load: ${e instanceof Error ? e.message : String(e)}` });
    }
  }
  for (const name of unlistedBuiltinDirs()) {
    if (only && !only(name)) continue;
    const source = `plugins/${name}/index.ts`;
    try {
      out.push({ source, mod: await import(pathToFileURL(join(BUILTIN_PLUGIN_DIR, name, "index.ts")).href) });
    } catch (e) {
      out.push({ source, error: `plugin ${source}: failed to load: ${e instanceof Error ? e.message : String(e)}` });
    }
  }
  return out;
}

/** Formats a config asks for: its repositories' `format`s and the formats of its seed `backends:`. */
function neededFormats(config: { repositories?: unknown; backends?: unknown }): Set<string> {
  const out = new Set<string>();
  if (Array.isArray(config.repositories))
    for (const r of config.repositories) if (r && typeof r === "object" && typeof (r as { format?: unknown }).format === "string") out.add((r as { format: string }).format);
  if (Array.isArray(config.backends))
    for (const b of config.backends) {
      const t = b && typeof b === "object" ? (b as { type?: unknown }).type : undefined;
      if (typeof t === "string") out.add(SEED_BACKENDS[t]?.format ?? t);
    }
  return out;
}

/**
 * Loads the built-in plugins and the config's `plugins:` entries (file paths relative to `configDir`, or npm
 * package names resolved from `configDir`), and checks each: a default export, `apiVersion === PLUGIN_API_VERSION`,
 * a `configSchema` that compiles, `routes`/`renderError` functions, a format no other plugin has.
 *
 * @param o.builtins `true` (default): every built-in plugin; `false`: none; `"needed"`: only the built-ins whose format
 *   the config uses (its repositories and seed backends) or a `plugins:` entry also provides — a vault serving only
 *   http repositories does not load the oci or s3 plugins and their SDKs (memory). When the config names a format that
 *   is neither a built-in nor provided by a `plugins:` entry (or no format at all), every built-in is loaded, so errors
 *   list them all as usual.
 * @param o.extra plugin objects to add as if loaded (tests)
 * @param o.checkSchemas `false` skips compiling each `configSchema` (the config was already checked with these same
 *   plugins on another thread, core/config/check-thread.ts); default true
 * @returns plugins by format
 * @throws PluginLoadError listing every problem (each line names the plugin)
 */
export async function loadPlugins(
  config: Pick<VaultConfig, "plugins"> & { repositories?: unknown; backends?: unknown },
  configDir: string,
  o: { builtins?: boolean | "needed"; extra?: VaultPlugin[]; checkSchemas?: boolean } = {},
): Promise<Map<string, VaultPlugin>> {
  const errors: string[] = [];
  const plugins = new Map<string, VaultPlugin>();
  const sources = new Map<string, string>();
  const add = (p: unknown, source: string) => {
    const problems = checkPlugin(p, source, { schema: o.checkSchemas });
    if (problems.length > 0) {
      errors.push(...problems);
      return;
    }
    const plugin = p as VaultPlugin;
    const other = sources.get(plugin.format);
    if (other) {
      errors.push(`plugin "${plugin.format}" (${source}): format "${plugin.format}" is already provided by ${other}`);
      return;
    }
    plugins.set(plugin.format, plugin);
    sources.set(plugin.format, source);
  };
  // third-party modules are imported first (added after the built-ins, as always): their formats decide which
  // built-ins "needed" loads
  const entries: { entry: unknown; r?: { mod?: Record<string, unknown>; error?: string } }[] = [];
  for (const entry of config.plugins ?? []) {
    if (typeof entry !== "string" || entry === "") entries.push({ entry });
    else entries.push({ entry, r: await importEntry(entry, configDir) });
  }
  if (o.builtins !== false) {
    let only: ((name: string) => boolean) | undefined;
    if (o.builtins === "needed") {
      const needed = neededFormats(config);
      const provided = new Set<string>();
      for (const e of entries) {
        const f = (e.r?.mod?.default as { format?: unknown } | undefined)?.format;
        if (typeof f === "string") provided.add(f);
      }
      for (const f of o.extra ?? []) if (typeof f?.format === "string") provided.add(f.format);
      const builtinNames = new Set([...Object.keys(BUILTIN_PLUGINS), ...unlistedBuiltinDirs()]);
      if (needed.size > 0 && [...needed].every((f) => builtinNames.has(f) || provided.has(f))) {
        for (const f of provided) needed.add(f); // a clash with a built-in is still reported
        only = (name) => needed.has(name);
      }
    }
    for (const b of await builtinModules(only)) {
      if (b.error) errors.push(b.error);
      else add(b.mod!.default, b.source);
    }
  }
  for (const { entry, r } of entries) {
    if (!r) {
      errors.push(`plugins: entries must be file paths or npm package names (got ${JSON.stringify(entry)})`);
      continue;
    }
    if (r.error) errors.push(r.error);
    else add(r.mod!.default, entry as string);
  }
  for (const p of o.extra ?? []) add(p, "(given in code)");
  if (errors.length > 0) throw new PluginLoadError(errors);
  return plugins;
}

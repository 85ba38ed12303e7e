/** Plugin loader: built-in plugins (plugins/<format>/index.ts) and third-party ones from `plugins:` (path or npm name), checked at boot. */
import { existsSync, readdirSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { VaultError } from "./errors.ts";
import { PLUGIN_API_VERSION, type VaultPlugin } from "./plugin.ts";
import { checkPluginSchema } from "./config/schema.ts";
import type { VaultConfig } from "./config/types.ts";
import { BUILTIN_PLUGINS } from "./plugins-builtin.ts";

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
export function checkPlugin(p: unknown, source: string): string[] {
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
  const schemaProblem = checkPluginSchema(plugin.configSchema);
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

async function importEntry(entry: string, configDir: string): Promise<{ mod?: Record<string, unknown>; error?: string }> {
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

/** The built-in plugin modules: BUILTIN_PLUGINS plus any plugins/<dir>/index.ts found on disk that it does not list. */
async function builtinModules(): Promise<{ source: string; mod?: Record<string, unknown>; error?: string }[]> {
  const out: { source: string; mod?: Record<string, unknown>; error?: string }[] = [];
  const listed = new Set(Object.keys(BUILTIN_PLUGINS));
  for (const [name, load] of Object.entries(BUILTIN_PLUGINS)) {
    const source = `plugins/${name}/index.ts`;
    try {
      out.push({ source, mod: (await load()) as Record<string, unknown> });
    } catch (e) {
      out.push({ source, error: `plugin ${source}: failed to load: ${e instanceof Error ? e.message : String(e)}` });
    }
  }
  let dirs: string[] = [];
  try {
    dirs = readdirSync(BUILTIN_PLUGIN_DIR, { withFileTypes: true })
      .filter((d) => d.isDirectory() && !listed.has(d.name) && existsSync(join(BUILTIN_PLUGIN_DIR, d.name, "index.ts")))
      .map((d) => d.name)
      .sort();
  } catch {
    // no plugins directory (compiled binary): BUILTIN_PLUGINS is all there is
  }
  for (const name of dirs) {
    const source = `plugins/${name}/index.ts`;
    try {
      out.push({ source, mod: await import(pathToFileURL(join(BUILTIN_PLUGIN_DIR, name, "index.ts")).href) });
    } catch (e) {
      out.push({ source, error: `plugin ${source}: failed to load: ${e instanceof Error ? e.message : String(e)}` });
    }
  }
  return out;
}

/**
 * Loads every built-in plugin and the config's `plugins:` entries (file paths relative to `configDir`, or npm
 * package names resolved from `configDir`), and checks each: a default export, `apiVersion === PLUGIN_API_VERSION`,
 * a `configSchema` that compiles, `routes`/`renderError` functions, a format no other plugin has.
 *
 * @param o.builtins load the built-in plugins (default true)
 * @param o.extra plugin objects to add as if loaded (tests)
 * @returns plugins by format
 * @throws PluginLoadError listing every problem (each line names the plugin)
 */
export async function loadPlugins(
  config: Pick<VaultConfig, "plugins">,
  configDir: string,
  o: { builtins?: boolean; extra?: VaultPlugin[] } = {},
): Promise<Map<string, VaultPlugin>> {
  const errors: string[] = [];
  const plugins = new Map<string, VaultPlugin>();
  const sources = new Map<string, string>();
  const add = (p: unknown, source: string) => {
    const problems = checkPlugin(p, source);
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
  if (o.builtins !== false) {
    for (const b of await builtinModules()) {
      if (b.error) errors.push(b.error);
      else add(b.mod!.default, b.source);
    }
  }
  for (const entry of config.plugins ?? []) {
    if (typeof entry !== "string" || entry === "") {
      errors.push(`plugins: entries must be file paths or npm package names (got ${JSON.stringify(entry)})`);
      continue;
    }
    const r = await importEntry(entry, configDir);
    if (r.error) errors.push(r.error);
    else add(r.mod!.default, entry);
  }
  for (const p of o.extra ?? []) add(p, "(given in code)");
  if (errors.length > 0) throw new PluginLoadError(errors);
  return plugins;
}

/**
 * The `http` plugin: a generic read-through cache of one HTTP(S) base URL (the seed's `http` backend layout):
 * `GET|HEAD /<mount>/<path>` → `upstream + <path>` through the cache engine. Reference plugin: uses only core/plugin.ts.
 */
import { definePlugin, directoryPackageOf, textError, VaultError, type ClientSetup, type PluginContext } from "../../core/plugin.ts";
import { makeClassifier, type HttpRepoConfig } from "./classify.ts";
import { resolveUpstream } from "./path.ts";

export type { HttpRepoConfig } from "./classify.ts";

/** JSON Schema of the http-specific repository keys (merged into the config schema for `format: http`). */
export const httpConfigSchema = {
  type: "object" as const,
  properties: {
    metadataPatterns: {
      type: "array",
      items: { type: "string", minLength: 1 },
      description: "Globs of mutable paths (revalidated after cache.metadataTtlSeconds); replaces the defaults.",
    },
    immutablePatterns: { type: "array", items: { type: "string", minLength: 1 }, description: "Globs of paths always cached forever (checked first)." },
    defaultClass: { type: "string", enum: ["immutable", "mutable"], description: "Class of paths no pattern matches (default immutable)." },
  },
};

/**
 * Creates the request handler of one http proxy repository.
 * @throws VaultError VAULT_CONFIG at boot when the repository has no upstream
 */
export function createHttpProxy(ctx: PluginContext<HttpRepoConfig>): (req: Request) => Promise<Response> {
  const up = ctx.config.upstream;
  if (!up) throw new VaultError("VAULT_CONFIG", 500, `repository ${ctx.repo.name}: an http repository needs an upstream URL`);
  const base = new URL(up.endsWith("/") ? up : up + "/").href;
  const classify = makeClassifier(ctx.config);
  const mount = ctx.repo.mount;
  return async (req) => {
    if (req.method !== "GET" && req.method !== "HEAD")
      throw new VaultError("VAULT_METHOD_NOT_ALLOWED", 405, `method ${req.method} not allowed`, {}, { allow: "GET, HEAD" });
    const url = new URL(req.url);
    const p = url.pathname;
    if (p === mount) return new Response(null, { status: 301, headers: { location: mount + "/", "content-length": "0" } });
    if (!p.startsWith(mount + "/")) throw new VaultError("VAULT_NOT_FOUND", 404, "not found");
    const { key, url: upstreamUrl } = resolveUpstream(base, p.slice(mount.length + 1));
    return ctx.cache.serve(req, { key, upstreamUrl, class: classify(key), contentType: "application/octet-stream" });
  };
}

/** curl and wget downloads below the repository URL (in a package's directory when a page shows one). */
function httpClientSetup(ctx: PluginContext<HttpRepoConfig>, o: { req: Request; package?: { name: string } }): ClientSetup[] {
  const dir = o.package ? `${o.package.name.split("/").map(encodeURIComponent).join("/")}/` : "";
  const url = `${ctx.baseUrl(o.req)}/${dir}<file>`;
  return [
    { client: "curl", title: `Download through the cache (instead of ${ctx.config.upstream ?? "the upstream"})`, code: `curl -fLO ${url}` },
    { client: "wget", title: "Download with wget", code: `wget ${url}` },
  ];
}

export default definePlugin<HttpRepoConfig>({
  format: "http",
  apiVersion: 1,
  types: ["proxy"],
  configSchema: httpConfigSchema,
  classify(path) {
    return path.endsWith("/") ? "metadata" : "artifact";
  },
  routes(app, ctx) {
    const handle = createHttpProxy(ctx);
    const run = async (request: Request): Promise<Response> => {
      try {
        return await handle(request);
      } catch (e) {
        if (e instanceof VaultError) return textError(e);
        throw e;
      }
    };
    app.all("/", ({ request }) => run(request));
    app.all("/*", ({ request }) => run(request));
  },
  renderError: (err) => textError(err),
  // files grouped by directory (a release's files together); listings (paths ending in /) are no package files
  packageOf: (path) => directoryPackageOf(path),
  clientSetup: httpClientSetup,
});

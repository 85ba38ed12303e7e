/** The `npm` plugin: npm registry repositories — proxy today (hosted and group later; specs/npm.md). */
import { definePlugin, type PluginContext, type VaultError } from "../../core/plugin.ts";
import { createNpmProxy, type NpmProxy, type NpmRepoConfig } from "./proxy.ts";

export type { NpmRepoConfig } from "./proxy.ts";

/** Handlers by repository config object (one per repository, shared by its mounts). */
const services = new WeakMap<object, NpmProxy>();

function serviceOf(ctx: PluginContext<NpmRepoConfig>): NpmProxy {
  let s = services.get(ctx.config);
  if (!s) services.set(ctx.config, (s = createNpmProxy(ctx)));
  return s;
}

/**
 * An error in npm's shape: `{"error":"<message>"}` with the error's status and headers; 404s answer
 * `{"error":"Not found"}` as the registry does.
 */
export function npmError(err: VaultError): Response {
  const error = err.status === 404 ? "Not found" : err.message;
  return Response.json({ error }, { status: err.status, headers: { ...err.headers, "content-type": "application/json" } });
}

export default definePlugin<NpmRepoConfig>({
  format: "npm",
  apiVersion: 1,
  types: ["proxy"],
  configSchema: { type: "object", properties: {} },
  // no defaultUpstream: an npm proxy must name its upstream
  allowEncodedSlash: true,
  classify(path) {
    return path.endsWith(".tgz") ? "artifact" : "metadata";
  },
  routes(app, ctx) {
    const svc = serviceOf(ctx);
    const mount = ctx.repo.mount;
    app.all("/*", ({ request }) => svc.handle(request, mount), { parse: "none" });
  },
  renderError: (err) => npmError(err),
});

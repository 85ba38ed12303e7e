/** The `pypi` plugin: Python package index repositories (proxy today; hosted and group plug into the same routes). */
import { definePlugin, textError, VaultError } from "../../core/plugin.ts";
import { createPypiProxy, PYPI_DEFAULT_UPSTREAM, type PypiRepoConfig } from "./proxy.ts";

export type { PypiRepoConfig } from "./proxy.ts";

/** JSON Schema of the pypi-specific repository keys (merged into the config schema for `format: pypi`). */
export const pypiConfigSchema = {
  type: "object" as const,
  properties: {
    simplePrefix: {
      type: "string",
      pattern: "^([A-Za-z0-9][A-Za-z0-9._-]*/)*$",
      description: 'Path of the simple index below the mount: "simple/" (default) or "" (seed layout, /<prefix>/<project>/).',
    },
    fileHosts: {
      type: "array",
      items: { type: "string", pattern: "^https?://[^/?#@]+/?$" },
      description: "Origins whose file links are rewritten and fetched through the vault (default: the upstream's origin; for pypi.org also https://files.pythonhosted.org).",
    },
    jsonApiUrl: {
      type: "string",
      pattern: "^https?://",
      description: "Base URL of the Warehouse JSON API (/pypi/<project>/json); default derived from an upstream ending in /simple/.",
    },
    indexTtlSeconds: { type: "integer", minimum: 0, description: "Freshness of the root project list, seconds (default 86400)." },
  },
};

export default definePlugin<PypiRepoConfig>({
  format: "pypi",
  apiVersion: 1,
  types: ["proxy"],
  configSchema: pypiConfigSchema,
  defaultUpstream: PYPI_DEFAULT_UPSTREAM,
  classify(path) {
    return path.startsWith("files/") ? "artifact" : "metadata";
  },
  routes(app, ctx) {
    const proxy = createPypiProxy(ctx);
    const handle = async (request: Request): Promise<Response> => {
      try {
        return await proxy.handle(request);
      } catch (e) {
        if (e instanceof VaultError) return textError(e);
        throw e;
      }
    };
    app.all("/", ({ request }) => handle(request));
    app.all("/*", ({ request }) => handle(request));
  },
  renderError: (err) => textError(err),
});

/**
 * The `conda` plugin: conda channels — proxy (an upstream channel, conda-forge by default), hosted (package uploads)
 * and group (merged channel). Protocol notes: shared/specs/conda.md; behaviour: plugins/conda/README.md.
 * The conda→OCI mirror CLI (`vault conda mirror|pull-cache|push-cache`) lives in plugins/conda/mirror/.
 */
import { definePlugin, serviceRegistry, VaultError, type PluginContext } from "../../core/plugin.ts";
import { CONDA_DEFAULT_UPSTREAM, createCondaProxy } from "./proxy.ts";
import { createCondaHosted } from "./hosted.ts";
import { createCondaGroup } from "./group.ts";
import { parseCondaPath } from "./paths.ts";
import { renderCondaError, type CondaRepoConfig, type CondaService } from "./service.ts";
import { condaClientSetup, condaPackageOf } from "./ui.ts";
import { compareVersions } from "./version.ts";

export type { CondaRepoConfig } from "./service.ts";

/** JSON Schema of the conda-specific repository keys (merged into the config schema for `format: conda`). */
export const condaConfigSchema = {
  type: "object" as const,
  properties: {
    repodataTtlSeconds: {
      type: "integer",
      minimum: 0,
      description: "proxy: freshness of repodata.json, shard indexes and channeldata.json, seconds (default cache.metadataTtlSeconds, else 600).",
    },
    shards: {
      type: "string",
      enum: ["auto", "upstream", "derive", "off"],
      description:
        "proxy: CEP-16 sharded repodata — auto (default: upstream's when it has them, else derived from repodata.json), upstream, derive (always from repodata.json), off (404).",
    },
    maxUploadBytes: { type: "integer", minimum: 1, description: "hosted: largest package file an upload may carry, bytes (default 2 GiB); larger uploads answer 413." },
  },
};

/** The service of a conda repository (one per repository, made on first use): proxy, hosted or group by `ctx.repo.type`. */
export const serviceOf = serviceRegistry<CondaService, CondaRepoConfig>({
  proxy: createCondaProxy,
  hosted: createCondaHosted,
  group: (c, serviceOf) => createCondaGroup(c, { serviceOf }),
});

export default definePlugin<CondaRepoConfig>({
  format: "conda",
  apiVersion: 1,
  types: ["proxy", "hosted", "group"],
  configSchema: condaConfigSchema,
  defaultUpstream: CONDA_DEFAULT_UPSTREAM,
  classify(path) {
    const p = parseCondaPath(path);
    return p?.kind === "package" || p?.kind === "shard" ? "artifact" : "metadata";
  },
  routes(app, ctx) {
    const svc = serviceOf(ctx);
    const mount = ctx.repo.mount;
    const handle = async (request: Request): Promise<Response> => {
      try {
        return await svc.handle(request, mount);
      } catch (e) {
        if (e instanceof VaultError) return renderCondaError(e, request);
        throw e;
      }
    };
    // upload bodies are streamed by the handler itself, never parsed by Elysia
    const opts = { parse: "none" as const };
    app.all("/", ({ request }) => handle(request), opts);
    app.all("/*", ({ request }) => handle(request), opts);
  },
  renderError: (err, req) => renderCondaError(err, req),
  packageOf: (path) => condaPackageOf(path),
  clientSetup: condaClientSetup,
  compareVersions,
  deleteVersion: async (ctx, v) => (await serviceOf(ctx).removeVersion?.(v.name, v.version)) ?? { paths: [], bytes: 0 },
  async start(ctx) {
    await serviceOf(ctx).start?.();
  },
});

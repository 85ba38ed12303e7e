/** The `pypi` plugin: Python package index repositories — proxy, hosted (twine uploads) and group (merged index). */
import { definePlugin, serviceRegistry, insecureHostOf, textError, VaultError, type ClientSetup, type PackageRef, type PluginContext } from "../../core/plugin.ts";
import { createPypiProxy, PYPI_DEFAULT_UPSTREAM, resolvePypiConfig, type PypiRepoConfig } from "./proxy.ts";
import { parseDistFilename } from "./dist.ts";
import { normalizeName } from "./names.ts";
import { createPypiHosted } from "./hosted.ts";
import { createPypiGroup } from "./group.ts";
import type { PypiService } from "./site.ts";
import { comparePep440 } from "./version-order.ts";

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
    maxUploadBytes: {
      type: "integer",
      minimum: 1,
      description: "hosted: largest distribution file an upload may carry, bytes (default 104857600 = 100 MiB); larger uploads answer 413.",
    },
  },
};

/** The service of a pypi repository (one per repository, made on first use): proxy, hosted or group by `ctx.repo.type`. */
export const serviceOf = serviceRegistry<PypiService, PypiRepoConfig>({
  proxy: createPypiProxy,
  hosted: createPypiHosted,
  group: (c, serviceOf) => createPypiGroup(c, { serviceOf }),
});

/**
 * The project and version of a stored distribution (`files/…/<wheel or sdist>`; hosted: `files/<project>/<file>`, whose
 * project segment settles legacy sdist names such as `foo-bar-1.0.tar.gz`); null for pages, snapshots, `.metadata`.
 */
function pypiPackageOf(path: string): PackageRef | null {
  if (!path.startsWith("files/")) return null;
  const segs = path.split("/");
  const file = segs[segs.length - 1];
  const d = parseDistFilename(file);
  if (typeof d === "string") return null;
  if (d.kind === "sdist" && segs.length === 3 && normalizeName(segs[1]) !== d.project) {
    const stem = file.slice(0, -d.extension.length);
    for (let i = stem.indexOf("-"); i !== -1; i = stem.indexOf("-", i + 1))
      if (normalizeName(stem.slice(0, i)) === segs[1]) return { name: segs[1], version: stem.slice(i + 1) };
  }
  return { name: d.project, version: d.version };
}

/**
 * The project (and version) of a row `pypiPackageOf` leaves out, for `vault export --package`: project pages and their
 * snapshot (`simple/<project>/`, `#json`, `#html`, …), a distribution's `.metadata` and `.asc`, hosted `info/` rows and
 * project markers, the proxy's Warehouse JSON API documents.
 */
function pypiOwnerOf(path: string): PackageRef | null {
  const segs = path.split("/");
  const name = segs[1] ?? "";
  if (name === "") return null;
  if (segs[0] === "simple" && segs.length === 3 && (segs[2] === "" || segs[2].startsWith("#"))) return { name };
  if (segs[0] === "files") {
    const ext = path.endsWith(".metadata") ? ".metadata" : path.endsWith(".asc") ? ".asc" : undefined;
    return ext ? pypiPackageOf(path.slice(0, -ext.length)) : null;
  }
  if (segs[0] === "info" && segs.length === 3) return pypiPackageOf(`files/${name}/${segs[2]}`);
  if (segs[0] === "projects" && segs.length === 2) return { name };
  if (segs[0] === "pypi" && segs.length === 3 && segs[2].startsWith("json")) return { name };
  if (segs[0] === "pypi" && segs.length === 4 && segs[3].startsWith("json")) return { name, version: segs[2] };
  return null;
}

/** pip (command and pip.conf) against the index URL; twine where uploads are taken (hosted, group with `writeTo`). */
function pypiClientSetup(ctx: PluginContext<PypiRepoConfig>, o: { req: Request; package?: { name: string; version?: string } }): ClientSetup[] {
  const base = ctx.baseUrl(o.req);
  const index = `${base}/${resolvePypiConfig(ctx.config).simplePrefix}`;
  const trusted = insecureHostOf(base);
  const spec = o.package ? (o.package.version ? `${o.package.name}==${o.package.version}` : o.package.name) : "<project>";
  const out: ClientSetup[] = [
    { client: "pip", title: "Install with pip", code: `pip install --index-url ${index}${trusted ? ` --trusted-host ${trusted}` : ""} ${spec}` },
    { client: "pip.conf", title: "Use this index for every pip install (~/.config/pip/pip.conf)", code: `[global]\nindex-url = ${index}${trusted ? `\ntrusted-host = ${trusted}` : ""}` },
  ];
  if (ctx.repo.type === "hosted" || (ctx.repo.type === "group" && ctx.config.writeTo))
    out.push({ client: "twine", title: "Upload with twine", code: `twine upload --repository-url ${base}/ -u <user> dist/*` });
  return out;
}

export default definePlugin<PypiRepoConfig>({
  format: "pypi",
  apiVersion: 1,
  types: ["proxy", "hosted", "group"],
  configSchema: pypiConfigSchema,
  defaultUpstream: PYPI_DEFAULT_UPSTREAM,
  classify(path) {
    return path.startsWith("files/") ? "artifact" : "metadata";
  },
  routes(app, ctx) {
    const svc = serviceOf(ctx);
    const mount = ctx.repo.mount;
    const handle = async (request: Request): Promise<Response> => {
      try {
        return await svc.handle(request, mount);
      } catch (e) {
        if (e instanceof VaultError) return textError(e);
        throw e;
      }
    };
    // bodies (uploads) are read by the handler itself, within the size limit, never parsed by Elysia
    const opts = { parse: "none" as const };
    app.all("/", ({ request }) => handle(request), opts);
    app.all("/*", ({ request }) => handle(request), opts);
  },
  renderError: (err) => textError(err),
  packageOf: (path) => pypiPackageOf(path),
  ownerOf: (path) => pypiOwnerOf(path),
  async afterImport(ctx, o) {
    await serviceOf(ctx).afterImport?.(o.paths);
  },
  compareVersions: comparePep440,
  async deleteVersion(ctx, v) {
    const r = await serviceOf(ctx).removeVersion?.(v.name, v.version);
    return r ? { paths: r.paths, bytes: r.bytes } : { paths: [], bytes: 0 };
  },
  clientSetup: pypiClientSetup,
  async start(ctx) {
    await serviceOf(ctx).start?.();
  },
});

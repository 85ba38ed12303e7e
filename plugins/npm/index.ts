/** The `npm` plugin: npm registry repositories — proxy, hosted (publish, login, dist-tags) and group (merged packuments). */
import { definePlugin, serviceRegistry, type ClientSetup, type PackageRef, type PluginContext } from "../../core/plugin.ts";
import { createNpmProxy } from "./proxy.ts";
import { createNpmHosted } from "./hosted.ts";
import { createNpmGroup } from "./group.ts";
import { npmError } from "./errors.ts";
import { routeNpm, type NpmRepoConfig, type NpmService } from "./service.ts";
import semver from "semver";

export type { NpmRepoConfig } from "./service.ts";
export { npmError } from "./errors.ts";

/** JSON Schema of the npm-specific repository keys (merged into the config schema for `format: npm`). */
export const npmConfigSchema = {
  type: "object" as const,
  properties: {
    maxUploadBytes: {
      type: "integer",
      minimum: 1,
      description: "hosted: largest tarball a publish may carry, bytes (default 104857600 = 100 MiB); larger publishes answer 413.",
    },
    loginTokenTtlSeconds: {
      type: "integer",
      minimum: 1,
      description: "Lifetime of the API tokens `npm login` creates, seconds (default: they do not expire).",
    },
  },
};

/** The service of an npm repository (one per repository, made on first use): proxy, hosted or group by `ctx.repo.type`. */
export const serviceOf = serviceRegistry<NpmService, NpmRepoConfig>({
  proxy: createNpmProxy,
  hosted: createNpmHosted,
  group: (c, serviceOf) => createNpmGroup(c, { serviceOf }),
});

/** Stored tarballs: `<name>/-/<bare name>-<version>.tgz` (scoped `@scope/name/-/…`). */
const TARBALL_PATH = /^((?:@[^/#]+\/)?[^/#@][^/#]*)\/-\/([^/#]+)\.tgz$/;

/** The package and version of a stored tarball; null for documents (`<name>#doc`, renderings, version records). */
function npmPackageOf(path: string): PackageRef | null {
  const m = TARBALL_PATH.exec(path);
  if (!m) return null;
  const bare = m[1].slice(m[1].lastIndexOf("/") + 1);
  const version = m[2].startsWith(bare + "-") ? m[2].slice(bare.length + 1) : undefined;
  return { name: m[1], version, file: `${m[2]}.tgz`, url: path };
}

/**
 * The package (and version) of a document row, for `vault export --package`: `<name>#doc` and the renderings
 * `<name>#full#<tag>` / `<name>#abbrev#<tag>` belong to the package, a hosted version record `<name>#v#<version>` to
 * that version.
 */
function npmOwnerOf(path: string): PackageRef | null {
  const h = path.indexOf("#");
  if (h <= 0) return null;
  const name = path.slice(0, h);
  const rest = path.slice(h + 1);
  if (rest.startsWith("v#") && rest.length > 2) return { name, version: rest.slice(2) };
  if (rest === "doc" || rest.startsWith("full#") || rest.startsWith("abbrev#")) return { name };
  return null;
}

/** The package names imported `paths` touch (tarballs and documents). */
function importedNames(paths: string[]): string[] {
  const names = new Set<string>();
  for (const p of paths) {
    const name = TARBALL_PATH.exec(p)?.[1] ?? npmOwnerOf(p)?.name;
    if (name) names.add(name);
  }
  return [...names];
}

/**
 * Orders two versions of one package by semver precedence (`1.0.0-rc.1 < 1.0.0 < 1.0.1`; build metadata ignored),
 * for retention's `keepVersions`. A version that is not semver sorts before every valid one; two such compare as 0.
 */
export function compareSemver(a: string, b: string): number {
  const va = semver.valid(a) !== null;
  const vb = semver.valid(b) !== null;
  if (va && vb) return semver.compare(a, b);
  return va === vb ? 0 : va ? 1 : -1;
}

/** npm install against the registry URL, the .npmrc line (per scope for scoped packages), login + publish where publishes are taken. */
function npmClientSetup(ctx: PluginContext<NpmRepoConfig>, o: { req: Request; package?: { name: string; version?: string } }): ClientSetup[] {
  const registry = `${ctx.baseUrl(o.req)}/`;
  const name = o.package?.name;
  const spec = name ? (o.package?.version ? `${name}@${o.package.version}` : name) : "<package>";
  const scope = name?.startsWith("@") ? name.slice(0, name.indexOf("/")) : undefined;
  const out: ClientSetup[] = [
    { client: "npm", title: "Install with npm", code: `npm install --registry ${registry} ${spec}` },
    { client: ".npmrc", title: scope ? `Use this registry for ${scope} packages (.npmrc)` : "Use this registry for every install (.npmrc)", code: `${scope ? `${scope}:` : ""}registry=${registry}` },
  ];
  if (ctx.repo.type === "hosted" || (ctx.repo.type === "group" && ctx.config.writeTo))
    out.push({ client: "npm publish", title: "Log in and publish", code: `npm login --registry ${registry}\nnpm publish --registry ${registry}` });
  return out;
}

export default definePlugin<NpmRepoConfig>({
  format: "npm",
  apiVersion: 1,
  types: ["proxy", "hosted", "group"],
  configSchema: npmConfigSchema,
  // no defaultUpstream: an npm proxy must name its upstream
  allowEncodedSlash: true,
  classify(path) {
    return path.endsWith(".tgz") ? "artifact" : "metadata";
  },
  routes(app, ctx) {
    const svc = serviceOf(ctx);
    const mount = ctx.repo.mount;
    // bodies (publishes, logins) are read by the handlers themselves, within their size limits, never parsed by Elysia
    app.all("/*", ({ request }) => routeNpm(request, mount, svc), { parse: "none" });
  },
  renderError: (err) => npmError(err),
  packageOf: (path) => npmPackageOf(path),
  ownerOf: (path) => npmOwnerOf(path),
  afterImport: async (ctx, o) => serviceOf(ctx).afterImport?.(importedNames(o.paths)),
  compareVersions: compareSemver,
  deleteVersion: async (ctx, v) => (await serviceOf(ctx).removeVersion?.(v.name, v.version)) ?? { paths: [], bytes: 0 },
  clientSetup: npmClientSetup,
});

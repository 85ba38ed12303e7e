/** The `oci` plugin: OCI / Docker registry v2 repositories — pull-through proxy, hosted registry, group — with the vault as its own token server. */
import { definePlugin, serviceRegistry, insecureHostOf, type ClientSetup, type PackageRef, type PluginApp, type PluginContext } from "../../core/plugin.ts";
import { renderOciError } from "./errors.ts";
import { createHosted } from "./hosted.ts";
import { createProxy, DOCKER_HUB_REGISTRY } from "./proxy.ts";
import { createGroup } from "./group.ts";
import { handleApi, handleToken, hostAddressing, hostRepositoryOf, repoAddressing, splitUrl, type Addressing } from "./routes.ts";
import { ociGc } from "./gc.ts";
import type { OciRepoConfig, RegistryService } from "./types.ts";
import semver from "semver";

export type { OciRepoConfig, OciNamespaceConfig } from "./types.ts";
export { ociGc } from "./gc.ts";

/** JSON Schema of the oci-specific repository keys (merged into the config schema for `format: oci`). */
export const ociConfigSchema = {
  type: "object" as const,
  properties: {
    root: { type: "boolean", description: "Also answer bare /v2/<image>/… at the root (Docker registry-mirrors). At most one repository." },
    apiPrefix: {
      type: "string",
      pattern: "^([a-z0-9]+/)?$",
      description: 'Path of the registry API below the mount: "v2/" (default) or "" (seed layout /<prefix>/<image>/manifests/<ref>).',
    },
    libraryPrefix: { type: "boolean", description: "proxy: add library/ to one-component names (default: true for Docker Hub)." },
    tagTtlSeconds: { type: "number", minimum: 0, description: "proxy: seconds a cached tag is trusted before a HEAD revalidation (default cache.metadataTtlSeconds, else 300)." },
    namespaces: {
      type: "object",
      description: "proxy: further upstreams chosen by containerd's ?ns=<host>, keyed by that host.",
      additionalProperties: {
        type: "object",
        additionalProperties: false,
        required: ["upstream"],
        properties: {
          upstream: { type: "string", format: "http-url" },
          username: { type: "string" },
          password: { type: "string" },
          libraryPrefix: { type: "boolean" },
        },
      },
    },
    allowDelete: { type: "boolean", description: "hosted: allow DELETE of manifests, tags and blobs (default true)." },
    maxManifestBytes: { type: "integer", minimum: 1024, description: "hosted: largest manifest accepted, bytes (default 4 MiB)." },
    maxBlobBytes: { type: "integer", minimum: 1, description: "hosted: largest blob accepted, bytes (default unlimited)." },
    uploadTtlSeconds: { type: "number", minimum: 1, description: "hosted: idle seconds after which an upload session is collected (default 86400)." },
  },
};

/** The registry service of a repository (one per repository per vault, made on first use, shared by its mounts and listeners). */
export const serviceOf = serviceRegistry<RegistryService, OciRepoConfig>({
  proxy: createProxy,
  hosted: (c, serviceOf) => createHosted(c, { serviceOf }),
  group: (c, serviceOf) => createGroup(c, { serviceOf }),
});

/** The host addressing built by `hostRoutes`, by the contexts array it was given (several vaults may share this module). */
const hostAddressings = new WeakMap<object, Addressing>();

/** Registers the host's API (`/v2`, `/v2/*`) and token (`/token`) routes (bodies are streamed, never parsed). */
function mountHost(app: PluginApp, a: Addressing, log: PluginContext["log"]): void {
  const handler = (request: Request) => {
    const { path, query } = splitUrl(request.url);
    if (path === "/token") return handleToken(request, a, log);
    return handleApi(request, path.length <= 4 ? "" : path.slice(4), query, a, log);
  };
  const opts = { parse: "none" as const };
  app.all("/token", (c) => handler(c.request), opts);
  app.all("/v2", (c) => handler(c.request), opts);
  app.all("/v2/*", (c) => handler(c.request), opts);
}

/** Rows of an image's content (./layout.ts): `<image>/_tags/<tag>`, `<image>/_manifests/<digest>`, `<image>/_blobs/<digest>`. */
const IMAGE_ROW = /^(.+?)\/_(tags|manifests|blobs)\/([^/]+)$/;

/** The image of a tag (version = the tag), manifest or blob row; null for tag lists, referrers and catalog markers. */
/**
 * Orders two tags of one image for retention's `keepVersions`: by semver precedence when both are semver versions (a
 * leading `v` allowed: `v1.2.3`), else 0, so the tag pushed (or fetched) last counts as newer.
 */
export function compareTags(a: string, b: string): number {
  const va = semver.valid(a.replace(/^v/, ""));
  const vb = semver.valid(b.replace(/^v/, ""));
  return va !== null && vb !== null ? semver.compare(va, vb) : 0;
}

function ociPackageOf(path: string): PackageRef | null {
  const m = IMAGE_ROW.exec(path);
  if (!m) return null;
  if (m[2] === "tags") return { name: m[1], version: m[3], file: `manifest (tag ${m[3]})`, url: null };
  return { name: m[1], file: m[2] === "manifests" ? "manifest" : "blob", url: null };
}

/**
 * docker / podman pull (and login + push for hosted repositories, a group's `writeTo`) with the image reference
 * clients use: `<host>/<repository>/<image>`, or `<host>:<port>/<image>` on the repository's own listener.
 */
function ociClientSetup(ctx: PluginContext<OciRepoConfig>, o: { req: Request; package?: { name: string; version?: string } }): ClientSetup[] {
  const base = new URL(ctx.baseUrl(o.req));
  const own = typeof ctx.config.port === "number" && ctx.config.port > 0;
  const registry = own ? `${base.hostname}:${ctx.config.port}` : base.host;
  const prefix = own ? registry : `${registry}/${ctx.repo.name}`;
  const image = o.package?.name ?? "<image>";
  const ref = `${prefix}/${image}${o.package?.version ? `:${o.package.version}` : ""}`;
  const insecure = insecureHostOf(`${base.protocol}//${registry}/`);
  const out: ClientSetup[] = [
    { client: "docker", title: "Pull with docker", code: `docker pull ${ref}` },
    { client: "podman", title: "Pull with podman", code: `podman pull${insecure ? " --tls-verify=false" : ""} ${ref}` },
  ];
  if (insecure) out.push({ client: "daemon.json", title: "Let docker use this plain-HTTP registry (/etc/docker/daemon.json)", code: `{ "insecure-registries": ["${insecure}"] }` });
  if (ctx.config.root === true && !own)
    out.push({ client: "docker", title: "Pull without the repository name (this repository answers bare /v2/ names)", code: `docker pull ${registry}/${image}` });
  if (ctx.repo.type === "hosted" || (ctx.repo.type === "group" && ctx.config.writeTo))
    out.push({ client: "docker push", title: "Log in and push", code: `docker login ${registry}\ndocker tag <local image> ${prefix}/${image}:<tag>\ndocker push ${prefix}/${image}:<tag>` });
  return out;
}

/**
 * The `oci` plugin (specs/oci.md): each repository answers at `<mount>/v2/` (or `<mount>/<apiPrefix>`) with its own
 * `<mount>/token`; `hostRoutes` adds the host-wide `/v2/<repo>/<image>/…` API and `/token` (`repositoryOf` names the
 * repository such a request addresses). Manifest and blob rows are artifacts, everything else (tags, tag lists,
 * referrers, catalog markers) metadata.
 */
export default definePlugin<OciRepoConfig>({
  format: "oci",
  apiVersion: 1,
  types: ["proxy", "hosted", "group"],
  configSchema: ociConfigSchema,
  defaultUpstream: DOCKER_HUB_REGISTRY,
  handlesAuth: true,
  classify(path) {
    return path.includes("/_blobs/") || path.includes("/_manifests/") ? "artifact" : "metadata";
  },
  routes(app, ctx) {
    const prefix = ctx.config.apiPrefix ?? "v2/";
    const sub = prefix.replace(/\/$/, "");
    const mount = ctx.repo.mount;
    const api = sub ? `${mount}/${sub}` : mount;
    const a = repoAddressing(ctx, api, serviceOf);
    const handler = (request: Request) => {
      const { path, query } = splitUrl(request.url);
      if (path === `${mount}/token`) return handleToken(request, a, ctx.log);
      const rest = path.length <= api.length + 1 ? "" : path.slice(api.length + 1);
      return handleApi(request, rest, query, a, ctx.log);
    };
    const opts = { parse: "none" as const };
    app.all("/token", (c) => handler(c.request), opts);
    if (sub) {
      app.all(`/${sub}`, (c) => handler(c.request), opts);
      app.all(`/${sub}/*`, (c) => handler(c.request), opts);
    } else {
      app.all("/", (c) => handler(c.request), opts);
      app.all("/*", (c) => handler(c.request), opts);
    }
  },
  hostRoutes(app, ctxs) {
    const roots = ctxs.filter((c) => c.config.root === true);
    if (roots.length > 1) throw new Error(`at most one oci repository may set root: true (found ${roots.map((r) => r.repo.name).join(", ")})`);
    const first = ctxs[0];
    const origin = (req: Request) => {
      const b = first.baseUrl(req);
      const m = first.repo.mount;
      return m && b.endsWith(m) ? b.slice(0, b.length - m.length) : b;
    };
    const a = hostAddressing(ctxs, origin, serviceOf);
    hostAddressings.set(ctxs, a);
    mountHost(app, a, first.log);
  },
  repositoryOf(req, ctxs) {
    let a = hostAddressings.get(ctxs);
    if (!a) hostAddressings.set(ctxs, (a = hostAddressing(ctxs, () => "", serviceOf)));
    return hostRepositoryOf(req, a);
  },
  renderError: (err, req) => renderOciError(err, req),
  packageOf: (path) => ociPackageOf(path),
  compareVersions: compareTags,
  deleteVersion: async (ctx, v) => (await serviceOf(ctx).removeTag?.(v.name, v.version)) ?? { paths: [], bytes: 0 },
  clientSetup: ociClientSetup,
  async start(ctx) {
    serviceOf(ctx).start?.();
  },
  async stop(ctx) {
    await serviceOf(ctx).stop?.();
  },
  gc: (ctx, o) => ociGc(ctx as PluginContext<OciRepoConfig>, o),
});

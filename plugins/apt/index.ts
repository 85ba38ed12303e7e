/**
 * The `apt` plugin: Debian/Ubuntu archive repositories (specs/apt.md) — proxy (an upstream archive root cached with
 * per-suite consistent generations), hosted (.deb uploads, indexes signed with gpg) and group (the members' suites
 * merged, signed with the group's key). The archive root is the repository's mount:
 * `deb [signed-by=…] http://host:port/<name> <suite> <component>`.
 */
import { definePlugin, serviceRegistry, textError, type PluginContext } from "../../core/plugin.ts";
import { createAptProxy } from "./proxy.ts";
import { createAptHosted } from "./hosted.ts";
import { createAptGroup } from "./group.ts";
import type { AptRepoConfig, AptService } from "./service.ts";
import { aptClientSetup, aptPackageOf } from "./ui.ts";
import { compareVersions } from "./version.ts";

export type { AptRepoConfig, SigningConfig } from "./service.ts";

/** JSON Schema of the apt-specific repository keys (merged into the config schema for `format: apt`). */
export const aptConfigSchema = {
  type: "object" as const,
  properties: {
    releaseTtlSeconds: { type: "integer", minimum: 0, description: "proxy: freshness of InRelease/Release/Release.gpg and of files no Release lists, seconds (default 60)." },
    upstreamKeyring: {
      type: "string",
      minLength: 1,
      description: "proxy: keyring (binary or armored) the upstream's InRelease / Release.gpg must be signed by, checked with gpgv before a new generation is stored; absolute or relative to the config file's directory.",
    },
    validForSeconds: {
      type: "integer",
      minimum: 2,
      description: "hosted, group: Valid-Until of the Release files, seconds after their Date; signed again past half of it (default: no Valid-Until).",
    },
    signing: {
      type: "object",
      additionalProperties: false,
      properties: {
        keyFile: { type: "string", minLength: 1, description: "Secret key file (armored or binary); absolute or relative to the config file's directory." },
        key: { type: "string", minLength: 1, description: "The armored secret key itself, e.g. ${VAULT_APT_SIGNING_KEY}." },
        passphrase: { type: "string", description: "Passphrase of the key, e.g. ${VAULT_APT_SIGNING_PASSPHRASE}." },
        keyId: { type: "string", pattern: "^(0x)?[0-9A-Fa-f]{8,40}$", description: "Fingerprint or key id to sign with (default: the first secret key)." },
      },
      description: "hosted, group: the OpenPGP key that signs InRelease and Release.gpg (with gpg). Without it only an unsigned Release is published.",
    },
    architectures: {
      type: "array",
      items: { type: "string", pattern: "^[a-z0-9][a-z0-9-]*$" },
      description: 'hosted: architectures every suite lists (default ["amd64", "arm64"]); uploads add theirs.',
    },
    defaultDistribution: { type: "string", pattern: "^[A-Za-z0-9][A-Za-z0-9._-]*$", description: "hosted: suite of uploads that name none (default stable)." },
    defaultComponent: { type: "string", pattern: "^[a-z0-9][a-z0-9._-]*$", description: "hosted: component of uploads that name none (default main)." },
    origin: { type: "string", pattern: "^[^\\n]+$", description: "hosted, group: Origin of the Release files (default: the repository name)." },
    label: { type: "string", pattern: "^[^\\n]+$", description: "hosted, group: Label of the Release files (default: the repository name)." },
    keepGenerations: { type: "integer", minimum: 0, description: "hosted, group: earlier generations of by-hash index files kept published (default 3)." },
    maxUploadBytes: { type: "integer", minimum: 1, description: "hosted: largest accepted .deb, bytes (default 1073741824)." },
  },
};

/** The service of an apt repository (one per repository, made on first use): proxy, hosted or group by `ctx.repo.type`. */
const serviceOf = serviceRegistry<AptService, AptRepoConfig>({
  proxy: createAptProxy,
  hosted: createAptHosted,
  group: (c, serviceOf) => createAptGroup(c, { serviceOf }),
});

export default definePlugin<AptRepoConfig>({
  format: "apt",
  apiVersion: 1,
  types: ["proxy", "hosted", "group"],
  configSchema: aptConfigSchema,
  // no defaultUpstream: a proxy names its archive root
  classify(path) {
    return path.startsWith("pool/") || path.includes("/by-hash/") ? "artifact" : "metadata";
  },
  routes(app, ctx) {
    const svc = serviceOf(ctx);
    const mount = ctx.repo.mount;
    // uploads are streamed by the handler itself, never parsed by Elysia; errors thrown are rendered by renderError
    app.all("/", ({ request }) => svc.handle(request, mount), { parse: "none" });
    app.all("/*", ({ request }) => svc.handle(request, mount), { parse: "none" });
  },
  renderError: (err) => textError(err),
  packageOf: (path) => aptPackageOf(path),
  clientSetup: aptClientSetup,
  compareVersions,
  deleteVersion: async (ctx, v) => (await serviceOf(ctx).removeVersion?.(v.name, v.version)) ?? { paths: [], bytes: 0 },
  async start(ctx) {
    await serviceOf(ctx).start?.();
  },
  async stop(ctx) {
    await serviceOf(ctx).stop?.();
  },
});

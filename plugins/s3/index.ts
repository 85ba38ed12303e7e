/** The `s3` plugin: an S3-compatible API (awscli, s3cmd, AWS SDKs) over the vault's blob store, on the repository's own listener or under `/<name>/`. */
import { definePlugin, directoryPackageOf, type ClientSetup, type PluginContext, type RepositoryConfig, type VaultError } from "../../core/plugin.ts";
import { createS3Service, gcS3 } from "./service.ts";
import { newRequestId, renderS3Error, toS3Error } from "./errors.ts";

export type { S3RepoConfig } from "./service.ts";

const ACTIONS = ["read", "write", "delete", "admin"];

/**
 * awscli (and s3cmd on the repository's own listener) with the endpoint clients use: `<scheme>://<host>:<port>` of
 * the own listener when `port:` is set (a fixed one), else the repository URL (clients that accept an endpoint path).
 * A page's package is `<bucket>/<directory>` (files grouped by directory).
 */
function s3ClientSetup(ctx: PluginContext, o: { req: Request; package?: { name: string } }): ClientSetup[] {
  const base = new URL(ctx.baseUrl(o.req));
  const port = ctx.config.port;
  const own = typeof port === "number" && port > 0;
  const endpoint = own ? `${base.protocol}//${base.hostname}:${port}` : base.href.replace(/\/$/, "");
  const where = o.package ? `s3://${o.package.name}/` : "s3://<bucket>/";
  const out: ClientSetup[] = [
    { client: "aws", title: "List and download with awscli", code: `aws --endpoint-url ${endpoint} s3 ls ${where}\naws --endpoint-url ${endpoint} s3 cp ${where}<key> .` },
    { client: "aws", title: "Upload with awscli", code: `aws --endpoint-url ${endpoint} s3 cp ./<file> ${where}` },
  ];
  if (own) {
    const host = `${base.hostname}:${port}`;
    out.push({ client: "s3cmd", title: "s3cmd configuration (~/.s3cfg, path style)", code: `[default]\nhost_base = ${host}\nhost_bucket = ${host}\nuse_https = ${base.protocol === "https:" ? "True" : "False"}` });
  }
  return out;
}

/**
 * S3 repositories are `hosted`. Buckets sit at the root of the repository's own listener (`port:`), path style;
 * `/<name>/<bucket>/<key>` also works for clients that accept an endpoint path; `<bucket>.<virtualHostDomain>`
 * hosts select virtual-hosted style. See plugins/s3/README.md.
 */
export default definePlugin<RepositoryConfig>({
  format: "s3",
  apiVersion: 1,
  types: ["hosted"],
  handlesAuth: true,
  ownsPaths: true,
  configSchema: {
    type: "object",
    properties: {
      region: { type: "string", minLength: 1, description: "region reported to clients (default us-east-1)" },
      virtualHostDomain: { type: "string", pattern: "^[a-z0-9.-]+$", description: "base domain for <bucket>.<domain> requests" },
      maxObjectSizeBytes: { type: "integer", minimum: 1, description: "largest PutObject/UploadPart body, bytes (default 5 GiB)" },
      minPartSizeBytes: { type: "integer", minimum: 1, description: "smallest non-final multipart part, bytes (default 5 MiB)" },
      presignTtlSeconds: { type: "integer", minimum: 1, maximum: 604800, description: "lifetime of the presigned URLs GetObject redirects to when redirectDownloads is set, seconds (default 300)" },
      abortIncompleteUploadsAfterSeconds: { type: "integer", minimum: 0, description: "vault gc aborts older multipart uploads (default 86400)" },
      buckets: {
        type: "array",
        items: {
          type: "object",
          required: ["name"],
          additionalProperties: false,
          properties: {
            name: { type: "string", pattern: "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$" },
            owner: { type: "string" },
            anonymousRead: { type: "boolean" },
            grants: { type: "object", additionalProperties: { type: "string", enum: ACTIONS } },
          },
        },
      },
    },
  },
  classify: () => "artifact",
  // objects grouped by bucket and directory (`<bucket>/<dir>`); keys may hold `#`
  packageOf: (path) => directoryPackageOf(path, { opaqueKeys: true }),
  clientSetup: s3ClientSetup,
  routes(app, ctx: PluginContext) {
    const svc = createS3Service(ctx);
    svc.ensureConfiguredBuckets();
    // `parse: "none"`: bodies are streamed by the service, never parsed by Elysia.
    app.all("/", (c) => svc.handle(c.request), { parse: "none" as const });
    app.all("/*", (c) => svc.handle(c.request), { parse: "none" as const });
  },
  /**
   * Warns at boot when the repository is anonymously readable: `anonymousRead` is inherited from
   * `auth.anonymousRead` (default true), so without `anonymousRead: false` on the repository anyone may list and read
   * every bucket.
   */
  async start(ctx: PluginContext) {
    if (ctx.config.anonymousRead === true)
      ctx.log.warn("s3 repository is anonymously readable: every bucket can be listed and read without credentials (set anonymousRead: false on the repository to require them)");
  },
  gc: gcS3,
  renderError(err: VaultError, req: Request): Response {
    const e = toS3Error(err);
    return renderS3Error(e, { requestId: newRequestId(), resource: new URL(req.url).pathname, head: req.method === "HEAD" });
  },
});

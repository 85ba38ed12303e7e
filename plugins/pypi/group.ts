/**
 * PyPI group repository: one simple index over its members (hosted and/or proxy pypi repositories, or other groups) in
 * read order; uploads go to the `writeTo` member.
 *
 * - A project page merges the members' pages for that project: files by file name, the first member listing a name
 *   wins (merge.ts). Its links point at `files/<member>/<path in that member>` of the group, answered by that member
 *   (a proxy member through its cache engine, with its own rules: only files its pages list).
 * - The merged page is stored as the group's own snapshot (`simple/<project>/`), tagged with the members' snapshot
 *   digests (`x-vault-sources`); each representation is rendered from it once and stored (`simple/<project>/#json`, …,
 *   tagged `x-vault-snapshot`). A request re-reads only the members' snapshot entries (proxies revalidate theirs when
 *   stale); merging and rendering happen again only when one of them changed.
 * - The root index is the union of the members' root indexes, stored the same way (`simple/`).
 * - A member that fails (upstream down without a stale copy) is left out of the page when another member has the
 *   project (logged); when none has it, its error is the answer.
 */
import { createHash } from "node:crypto";
import { VaultError, errors, type ArtifactEntry, type PluginContext } from "../../core/plugin.ts";
import { CONTENT_TYPES, type Representation } from "./negotiate.ts";
import { SNAPSHOT_CONTENT_TYPE } from "./simple.ts";
import { uploadsNotAllowed } from "./errors.ts";
import type { PypiRepoConfig } from "./proxy.ts";
import { indexRootHref, projectRootHref, respondPage, routeSite, runTask, simplePrefixOf, type PypiService, type Site } from "./site.ts";

/** Options of {@link createPypiGroup}. */
export interface GroupOptions {
  /** The service of a member repository. */
  serviceOf(ctx: PluginContext): PypiService;
}

/** Header of the group's merged snapshot: a digest of the members' snapshot digests it was merged from. */
const SOURCES_HEADER = "x-vault-sources";
/** Header of a stored representation: the digest of the merged snapshot it was rendered from. */
const SNAPSHOT_HEADER = "x-vault-snapshot";

/**
 * Creates the service of one pypi group. Members are looked up lazily (`ctx.member`), in the validated config's order.
 */
export function createPypiGroup(ctx: PluginContext<PypiRepoConfig>, o: GroupOptions): PypiService {
  const sp = simplePrefixOf(ctx.config);
  const memberNames = ctx.config.members ?? [];

  function members(): { name: string; svc: PypiService }[] {
    const out: { name: string; svc: PypiService }[] = [];
    for (const name of memberNames) {
      const m = ctx.member(name);
      if (m) out.push({ name, svc: o.serviceOf(m) });
    }
    return out;
  }

  /**
   * The group's merged snapshot at `key`, merged again only when a member's snapshot changed.
   * @returns null when no member has the page
   * @throws the first member failure when no member has the page and one failed
   */
  async function merged(
    key: string,
    kind: "project" | "index",
    get: (svc: PypiService) => Promise<ArtifactEntry | null>,
    project?: string,
    signal?: AbortSignal,
  ): Promise<ArtifactEntry | null> {
    const ms = members();
    const results = await Promise.allSettled(ms.map((m) => get(m.svc)));
    const parts: string[] = [];
    const found: { name: string; svc: PypiService; entry: ArtifactEntry }[] = [];
    let failure: unknown;
    results.forEach((r, i) => {
      const { name, svc } = ms[i];
      if (r.status === "fulfilled") {
        parts.push(`${name}=${r.value?.blobDigest ?? "-"}`);
        if (r.value) found.push({ name, svc, entry: r.value });
      } else if (r.reason instanceof VaultError && r.reason.status === 404) {
        parts.push(`${name}=-`);
      } else {
        parts.push(`${name}=!`);
        failure ??= r.reason;
        ctx.log.warn("group member failed; its files are left out of the merged page", {
          member: name,
          key,
          error: r.reason instanceof Error ? r.reason.message : String(r.reason),
        });
      }
    });
    if (found.length === 0) {
      if (failure !== undefined) throw failure;
      return null;
    }
    const tag = createHash("sha256").update(`${kind}\n${parts.join("\n")}`).digest("hex");
    const cur = await ctx.artifacts.get(key);
    if (cur && cur.status === 200 && cur.blobDigest && cur.headers[SOURCES_HEADER] === tag) return cur;
    const snaps = await Promise.all(found.map((f) => f.svc.ctx.artifacts.read(f.entry)));
    const size = snaps.reduce((n, s) => n + s.byteLength, 0);
    const out = await runTask(
      ctx,
      { op: "merge", kind, project, sources: found.map((f, i) => ({ snapshot: snaps[i], filesPrefix: `files/${f.name}/` })) },
      size,
      { signal },
    );
    return ctx.artifacts.put(key, out.body!, { contentType: SNAPSHOT_CONTENT_TYPE, kind: "metadata", headers: { [SOURCES_HEADER]: tag } });
  }

  /** Answers one representation of a merged page: stored bytes when rendered from the current merge, else rendered once and stored. */
  async function serve(req: Request, snap: ArtifactEntry, rep: Representation, rootHref: string): Promise<Response> {
    const vkey = `${snap.path}#${rep}`;
    let v = await ctx.artifacts.get(vkey);
    if (!v || v.status !== 200 || v.headers[SNAPSHOT_HEADER] !== snap.blobDigest) {
      const bytes = await ctx.artifacts.read(snap);
      const out = await runTask(ctx, { op: "render", snapshot: bytes, representation: rep, rootHref }, bytes.byteLength, { signal: req.signal });
      v = await ctx.artifacts.put(vkey, out.body!, {
        contentType: CONTENT_TYPES[rep],
        kind: "metadata",
        headers: { vary: "Accept", [SNAPSHOT_HEADER]: snap.blobDigest! },
      });
    }
    return respondPage(ctx, req, v, rep);
  }

  const projectSnapshot = (project: string, signal?: AbortSignal) =>
    merged(`simple/${project}/`, "project", (svc) => svc.projectSnapshot(project, signal), project, signal);
  const indexSnapshot = (signal?: AbortSignal) => merged("simple/", "index", (svc) => svc.indexSnapshot(signal), undefined, signal);

  /** `files/<member>/<rest>` → the member's `files/<rest>`. */
  async function serveFile(req: Request, rel: string): Promise<Response> {
    const segs = rel.split("/");
    const name = segs[1];
    if (segs.length < 3 || !memberNames.includes(name)) throw new VaultError("VAULT_NOT_FOUND", 404, "file not listed on any project page", { path: rel });
    const m = ctx.member(name);
    if (!m) throw errors.notFound("file");
    return o.serviceOf(m).serveFile(req, "files/" + segs.slice(2).join("/"));
  }

  const site: Site = {
    simplePrefix: sp,
    async rootIndex(req, rep) {
      const snap = await indexSnapshot(req.signal);
      if (!snap) throw errors.notFound("simple index");
      return serve(req, snap, rep, indexRootHref(sp));
    },
    async projectPage(req, project, rep) {
      const snap = await projectSnapshot(project, req.signal);
      if (!snap) throw errors.notFound(`project ${project}`);
      return serve(req, snap, rep, projectRootHref(sp));
    },
    serveFile,
    async upload(req) {
      const w = ctx.config.writeTo ? ctx.member(ctx.config.writeTo) : undefined;
      const svc = w ? o.serviceOf(w) : undefined;
      if (!svc?.upload) throw uploadsNotAllowed("this group has no writeTo member: upload to a hosted repository, or set writeTo");
      const principal = await ctx.auth.require(req, "write");
      return svc.upload(req, principal, ctx.repo.name);
    },
    async manage(req, op) {
      const w = ctx.config.writeTo ? ctx.member(ctx.config.writeTo) : undefined;
      const svc = w ? o.serviceOf(w) : undefined;
      if (!svc?.manage) throw uploadsNotAllowed("this group has no writeTo member: delete or yank in a hosted repository, or set writeTo");
      const principal = await ctx.auth.require(req, "delete");
      return svc.manage(req, principal, op, ctx.repo.name);
    },
  };

  return { ctx, handle: (req, mount) => routeSite(req, mount, site), projectSnapshot, indexSnapshot, serveFile };
}

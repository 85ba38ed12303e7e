/**
 * npm group repository: one registry over its members (hosted and/or proxy npm repositories, or other groups) in read
 * order; writes (publish, dist-tags, deprecate, unpublish, `?write=true` reads) go to the `writeTo` member.
 *
 * - A packument merges the members' packuments of that package, variant by variant (documents.ts `mergePackuments`):
 *   each version from the first member that has it, each dist-tag from the first member that has the tag; tarball URLs
 *   under a member's public URL are moved under the group's.
 * - The merged packument is stored (`<name>#<variant>#<tag>`, tag of the group's public URL) with a digest of the
 *   members' entries it was merged from (`x-vault-sources`): a request re-reads only the members' entries (proxies
 *   revalidate theirs when stale) and merges again only when one of them changed. Merges of documents above the pool
 *   threshold run in the worker pool.
 * - A tarball is answered by the first member that lists it (a hosted member: it stores it; a proxy: its packument
 *   lists it), which is the member whose version won the merge.
 * - A member that fails (upstream down without a stale copy) is left out when another member has the package
 *   (logged); when none has it, its error is the answer.
 */
import { createHash } from "node:crypto";
import { VaultError, type ArtifactEntry, type PluginContext } from "../../core/plugin.ts";
import type { Variant } from "./documents.ts";
import { VARIANT_CONTENT_TYPE, respondPackument, runTask, tagOf, type NpmRepoConfig, type NpmService } from "./service.ts";

/** Options of {@link createNpmGroup}. */
export interface NpmGroupOptions {
  /** The service of a member repository. */
  serviceOf(ctx: PluginContext): NpmService;
}

/** Header of a stored merged packument: a digest of the members' entries it was merged from. */
const SOURCES_HEADER = "x-vault-sources";

/** Creates the service of one npm group. Members are looked up lazily (`ctx.member`), in the validated config's order. */
export function createNpmGroup(ctx: PluginContext<NpmRepoConfig>, o: NpmGroupOptions): NpmService {
  const memberNames = ctx.config.members ?? [];

  function members(): { name: string; svc: NpmService }[] {
    const out: { name: string; svc: NpmService }[] = [];
    for (const name of memberNames) {
      const m = ctx.member(name);
      if (m) out.push({ name, svc: o.serviceOf(m) });
    }
    return out;
  }

  function warnMember(name: string, what: string, e: unknown): void {
    ctx.log.warn("group member failed; it is left out", { member: name, what, error: e instanceof Error ? e.message : String(e) });
  }

  /**
   * The group's merged packument variant, merged again only when a member's entry changed.
   * @returns null when no member has the package
   * @throws the first member failure when no member has the package and one failed
   */
  async function packument(req: Request, name: string, variant: Variant): Promise<ArtifactEntry | null> {
    const ms = members();
    const results = await Promise.allSettled(ms.map((m) => m.svc.packument(req, name, variant)));
    const parts: string[] = [];
    const found: { svc: NpmService; entry: ArtifactEntry }[] = [];
    let failure: unknown;
    results.forEach((r, i) => {
      const { name: member, svc } = ms[i];
      if (r.status === "fulfilled") {
        parts.push(`${member}=${r.value?.blobDigest ?? "-"}`);
        if (r.value) found.push({ svc, entry: r.value });
      } else if (r.reason instanceof VaultError && r.reason.status === 404) {
        parts.push(`${member}=-`);
      } else {
        parts.push(`${member}=!`);
        failure ??= r.reason;
        warnMember(member, `packument ${name}`, r.reason);
      }
    });
    if (found.length === 0) {
      if (failure !== undefined) throw failure;
      return null;
    }
    const base = ctx.baseUrl(req);
    const key = `${name}#${variant}#${tagOf(base)}`;
    const tag = createHash("sha256").update(`${variant}\n${base}\n${parts.join("\n")}`).digest("hex");
    const cur = await ctx.artifacts.get(key);
    if (cur && cur.status === 200 && cur.blobDigest && cur.headers[SOURCES_HEADER] === tag) return cur;
    const bodies = await Promise.all(found.map((f) => f.svc.ctx.artifacts.read(f.entry)));
    const size = bodies.reduce((n, b) => n + b.byteLength, 0);
    const sources = found.map((f, i) => ({ body: bodies[i], base: f.svc.ctx.baseUrl(req) }));
    const out = await runTask(ctx, { op: "merge", sources, base, variant }, size, { signal: req.signal });
    return ctx.artifacts.put(key, out.body!, { contentType: VARIANT_CONTENT_TYPE[variant], kind: "metadata", headers: { [SOURCES_HEADER]: tag } });
  }

  /** The first member that lists the tarball answers it; a failing member is skipped (its error thrown when none has it). */
  async function tarball(req: Request, name: string, file: string): Promise<Response | null> {
    let failure: unknown;
    for (const m of members()) {
      try {
        const res = await m.svc.tarball(req, name, file);
        if (res) return res;
      } catch (e) {
        if (e instanceof VaultError && e.status === 404) continue;
        failure ??= e;
        warnMember(m.name, `tarball ${file}`, e);
      }
    }
    if (failure !== undefined) throw failure;
    return null;
  }

  return {
    ctx,
    servePackument: async (req, name, variant) => respondPackument(ctx, req, name, variant, await packument(req, name, variant)),
    packument,
    tarball,
    writes() {
      const w = ctx.config.writeTo ? ctx.member(ctx.config.writeTo) : undefined;
      return w ? o.serviceOf(w).writes?.() : undefined;
    },
  };
}

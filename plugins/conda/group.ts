/**
 * Conda group channel: one channel over its members (hosted and/or proxy conda repositories, or other groups) in read
 * order; uploads and deletions go to the `writeTo` member.
 *
 * - A subdir's repodata.json merges the members' snapshots: per file name the first member listing it wins
 *   (repodata.ts `mergeRepodata`). It is stored at `<subdir>/repodata.json` tagged with the members' snapshot digests
 *   (`x-vault-sources`) and merged again only when one of them changed; `.zst`, `current_repodata.json` and the shards
 *   are derived from it (service.ts `Variants`).
 * - A package file is answered by the first member whose repodata lists it.
 * - channeldata.json merges the members' (first member's entry per package, subdirs united), stored the same way.
 * - A member that fails (upstream down without a stored copy) is left out when another member answers (logged); when
 *   none does, its error is the answer.
 */
import { createHash } from "node:crypto";
import { VaultError, type ArtifactEntry, type PluginContext } from "../../core/plugin.ts";
import type { PackageFile } from "./paths.ts";
import type { FileDigests } from "./repodata.ts";
import {
  CONTENT_TYPE,
  Variants,
  condaErrors,
  derivedPaths,
  relativePath,
  runTask,
  usable,
  uploadTarget,
  deleteTarget,
  serveStoredChannel,
  type CondaRepoConfig,
  type CondaService,
} from "./service.ts";

/** Header of a merged document: a digest of the members' document digests it was merged from. */
const SOURCES_HEADER = "x-vault-sources";

/** Options of {@link createCondaGroup}. */
export interface GroupOptions {
  /** The service of a member repository. */
  serviceOf(ctx: PluginContext): CondaService;
}

/** Creates the service of one conda group (file header). Members are looked up lazily, in config order. */
export function createCondaGroup(ctx: PluginContext<CondaRepoConfig>, o: GroupOptions): CondaService {
  const memberNames = ctx.config.members ?? [];
  const variants = new Variants(ctx, true);

  function members(): { name: string; svc: CondaService }[] {
    const out: { name: string; svc: CondaService }[] = [];
    for (const name of memberNames) {
      const m = ctx.member(name);
      if (m) out.push({ name, svc: o.serviceOf(m) });
    }
    return out;
  }

  /**
   * The merged document at `key` from the members' entries (`get`), merged again only when one of them changed.
   * @returns null when no member has one
   * @throws the first member failure when no member has one and one failed
   */
  async function merged(key: string, get: (svc: CondaService) => Promise<ArtifactEntry | null>, merge: (sources: Uint8Array[], size: number) => Promise<Uint8Array>): Promise<ArtifactEntry | null> {
    const ms = members();
    const results = await Promise.allSettled(ms.map((m) => get(m.svc)));
    const parts: string[] = [];
    const found: { svc: CondaService; entry: ArtifactEntry }[] = [];
    let failure: unknown;
    results.forEach((r, i) => {
      const { name, svc } = ms[i];
      if (r.status === "fulfilled") {
        parts.push(`${name}=${r.value?.blobDigest ?? "-"}`);
        if (r.value) found.push({ svc, entry: r.value });
      } else if (r.reason instanceof VaultError && r.reason.status === 404) parts.push(`${name}=-`);
      else {
        parts.push(`${name}=!`);
        failure ??= r.reason;
        ctx.log.warn("group member failed; it is left out of the merged document", { member: name, key, error: r.reason instanceof Error ? r.reason.message : String(r.reason) });
      }
    });
    if (found.length === 0) {
      if (failure !== undefined) throw failure;
      return null;
    }
    const tag = createHash("sha256").update(`${key}\n${parts.join("\n")}`).digest("hex");
    const cur = usable(await ctx.artifacts.get(key));
    if (cur && cur.headers[SOURCES_HEADER] === tag) return cur;
    const sources = await Promise.all(found.map((f) => f.svc.ctx.artifacts.read(f.entry)));
    const body = await merge(sources, sources.reduce((n, s) => n + s.byteLength, 0));
    return ctx.artifacts.put(key, body, { contentType: CONTENT_TYPE.json, kind: "metadata", headers: { [SOURCES_HEADER]: tag } });
  }

  const snapshot = (prefix: string, subdir: string, signal?: AbortSignal) =>
    merged(
      derivedPaths(prefix, subdir).snapshot,
      (svc) => svc.snapshot(prefix, subdir, signal),
      async (sources, size) => (await runTask(ctx, { op: "merge", sources, subdir }, size, signal)).body!,
    );

  const channeldata = (prefix: string, signal?: AbortSignal) =>
    merged(
      prefix + "channeldata.json",
      (svc) => svc.channeldata(prefix, signal),
      async (sources, size) => (await runTask(ctx, { op: "merge-channeldata", sources }, size, signal)).body!,
    );

  /** The first member listing the file, with its digests. */
  async function owner(prefix: string, subdir: string, filename: string, signal?: AbortSignal): Promise<{ svc: CondaService; digests: FileDigests } | null> {
    for (const m of members()) {
      try {
        const d = await m.svc.lookup(prefix, subdir, filename, signal);
        if (d) return { svc: m.svc, digests: d };
      } catch (e) {
        ctx.log.warn("group member failed to look a file up; trying the next", { member: m.name, filename, error: (e as Error).message });
      }
    }
    return null;
  }

  async function servePackage(req: Request, prefix: string, subdir: string, file: PackageFile): Promise<Response> {
    const o = await owner(prefix, subdir, file.filename, req.signal);
    if (!o) throw condaErrors.notFound(`${prefix}${subdir}/${file.filename}`);
    return o.svc.servePackage(req, prefix, subdir, file);
  }

  const svc: CondaService = {
    ctx,
    async handle(req, mount) {
      const { rel } = relativePath(req, mount);
      if (req.method === "PUT" || req.method === "POST" || req.method === "DELETE") {
        const w = ctx.config.writeTo ? ctx.member(ctx.config.writeTo) : undefined;
        const writer = w ? o.serviceOf(w) : undefined;
        if (req.method === "DELETE") {
          const target = deleteTarget(rel);
          if (!writer?.remove) throw condaErrors.method(req.method, "GET, HEAD", "this group has no writeTo member: delete from a hosted conda repository, or set writeTo");
          return writer.remove(req, await ctx.auth.require(req, "delete"), target, ctx.repo.name);
        }
        const target = uploadTarget(req, rel);
        if (!writer?.upload) throw condaErrors.method(req.method, "GET, HEAD", "this group has no writeTo member: upload to a hosted conda repository, or set writeTo");
        return writer.upload(req, await ctx.auth.require(req, "write"), target, ctx.repo.name);
      }
      return serveStoredChannel(req, rel, svc, variants, false);
    },
    snapshot,
    async lookup(prefix, subdir, filename, signal) {
      return (await owner(prefix, subdir, filename, signal))?.digests ?? null;
    },
    servePackage,
    channeldata,
  };
  return svc;
}

/**
 * Garbage collection of hosted OCI repositories (mark and sweep over the metadata DB): blob links that no manifest of
 * their image references, and that are older than the cut-off, are removed; `vault gc`'s blob sweep then deletes
 * blobs no row references any more.
 *
 * Safety against concurrent pushes: (1) a link younger than `olderThan` is never removed, so blobs uploaded for a
 * manifest not yet pushed survive; (2) just before removing, the image's manifest rows are read again with a
 * synchronous query; if one appeared since the mark phase the image is left for the next run, else the removals start
 * at once without yielding to other requests of this process; (3) a manifest PUT re-checks its blob links after its commit and undoes the push if one vanished
 * meanwhile (plugins/oci/hosted.ts), so a push never ends with a dangling manifest.
 */
import { and, eq, gte, lt } from "drizzle-orm";
import type { ArtifactEntry, GcContext } from "../../core/plugin.ts";
import { dialectOf, tablesOf } from "../../core/db/index.ts";
import { parseManifest, referencedBlobs } from "./manifest.ts";
import { blobPrefix, CATALOG_PREFIX, manifestPrefix } from "./layout.ts";
import type { OciRepoConfig } from "./types.ts";

/** What one gc run of a repository did. */
export interface OciGcResult {
  /** Artifact rows (blob links) removed. */
  removed: number;
  /** Images looked at. */
  images: number;
}

/**
 * Adds the digests a manifest row references as blobs to `into`. An unreadable manifest is logged and rethrown: the
 * caller then leaves the whole image unswept.
 */
async function blobsOf(ctx: GcContext<OciRepoConfig>, row: ArtifactEntry, into: Set<string>): Promise<void> {
  try {
    const m = parseManifest(await ctx.artifacts.read(row), row.contentType);
    for (const d of referencedBlobs(m)) into.add(d.digest);
    // layers with external urls are not required, but keep them when present
    for (const l of m.layers) into.add(l.digest);
  } catch (e) {
    ctx.log.warn("gc: unreadable manifest, its blobs are kept", { path: row.path, error: (e as Error).message });
    throw e;
  }
}

/**
 * Mark and sweep for one repository (the `gc` hook of the oci plugin). Only hosted repositories hold pushed content;
 * proxies' cached blobs are cache entries (retention is a separate policy) and groups own nothing.
 * @param o.olderThan epoch ms; links recorded after it are kept
 * @returns rows removed and images visited
 */
export async function ociGc(ctx: GcContext<OciRepoConfig>, o: { olderThan: number }): Promise<OciGcResult> {
  if (ctx.repo.type !== "hosted") return { removed: 0, images: 0 };
  const images = (await ctx.artifacts.list(CATALOG_PREFIX)).map((r) => r.path.slice(CATALOG_PREFIX.length));
  // images whose manifests were all deleted lost their catalog marker; their links are found by listing every link
  const linked = new Set<string>();
  for (const r of await ctx.artifacts.list("")) {
    const i = r.path.indexOf("/_blobs/");
    if (i > 0) linked.add(r.path.slice(0, i));
  }
  for (const img of images) linked.add(img);
  let removed = 0;
  for (const image of linked) {
    const marked = new Set<string>();
    const seen = new Set<string>();
    let readable = true;
    for (const m of await ctx.artifacts.list(manifestPrefix(image))) {
      seen.add(m.path);
      try {
        await blobsOf(ctx, m, marked);
      } catch {
        readable = false;
      }
    }
    if (!readable) continue; // never sweep an image whose references we could not read completely
    const candidates = (await ctx.artifacts.list(blobPrefix(image))).filter((r) => {
      const digest = r.path.slice(blobPrefix(image).length);
      return !marked.has(digest) && r.fetchedAt < o.olderThan;
    });
    if (candidates.length === 0) continue;
    // Manifests pushed while we were marking. On SQLite the query is synchronous and the removals below start
    // synchronously right after it, so no request of this process commits in between. Another process (or, on
    // Postgres, another node) can still push in the few milliseconds between the check and the removals, as before.
    // If the image changed, it waits for the next run.
    const prefix = manifestPrefix(image);
    const { artifacts } = tablesOf(ctx.metadata);
    const q = ctx.metadata
      .select({ path: artifacts.path })
      .from(artifacts)
      .where(and(eq(artifacts.repository, ctx.repo.name), gte(artifacts.path, prefix), lt(artifacts.path, prefix + "\u{10ffff}")));
    const now = dialectOf(ctx.metadata) === "sqlite" ? q.all() : await q;
    if (now.some((r) => !seen.has(r.path))) continue;
    const doomed = candidates;
    await Promise.all(doomed.map((r) => ctx.artifacts.delete(r.path)));
    removed += doomed.length;
    if (doomed.length) ctx.log.info("gc: unreferenced blob links removed", { image, count: doomed.length });
  }
  return { removed, images: linked.size };
}

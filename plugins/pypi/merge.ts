/**
 * Group repositories: merging the members' stored snapshots (simple.ts {@link Snapshot}) into one. Pure functions on
 * bytes (no core imports), so the worker pool can run them for big pages.
 */
import { normalizeName } from "./names.ts";
import { readSnapshot, type ProjectPage, type SimpleFile, type Snapshot } from "./simple.ts";

/** One member's snapshot and where its files live in the group. */
export interface MergeSource {
  /** The member's stored snapshot bytes. */
  snapshot: Uint8Array;
  /**
   * Replaces the leading `files/` of the member's file paths: `files/<member>/`, so `files/<member>/<rest>` of the group
   * is `files/<rest>` of the member.
   */
  filesPrefix: string;
}

/** Input of {@link mergeSnapshots}; structured-cloneable. */
export interface MergeInput {
  /** Members in read order (first wins). */
  sources: MergeSource[];
  kind: "project" | "index";
  /** Normalized project name (project pages). */
  project?: string;
}

const encoder = new TextEncoder();

/**
 * Merges member snapshots of one page in member order.
 * - project pages: files by file name, the first member listing a name wins (its hashes, metadata, yanked flag);
 *   vault paths are re-rooted under each member's `filesPrefix`, links left pointing elsewhere stay as they are;
 *   `versions` is the union when every member gave them (else absent, so the page is api-version 1.0); `name` is the
 *   normalized project name (PEP 691).
 * - the root index: the union of project names, first spelling of each normalized name wins, sorted by normalized name.
 * @returns the JSON-encoded merged {@link Snapshot}
 * @throws SimpleParseError when a source is not a snapshot, Error when a source's kind differs from `kind`
 */
export function mergeSnapshots(i: MergeInput): Uint8Array {
  const snaps = i.sources.map((s) => ({ snap: readSnapshot(s.snapshot), prefix: s.filesPrefix }));
  for (const s of snaps) if (s.snap.kind !== i.kind) throw new Error(`cannot merge a ${s.snap.kind} snapshot into a ${i.kind} page`);
  let out: Snapshot;
  if (i.kind === "index") {
    const seen = new Map<string, string>();
    for (const { snap } of snaps) if (snap.kind === "index") for (const p of snap.list.projects) if (!seen.has(normalizeName(p))) seen.set(normalizeName(p), p);
    out = { v: 1, kind: "index", list: { projects: [...seen].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([, p]) => p) } };
  } else {
    const files: SimpleFile[] = [];
    const names = new Set<string>();
    let versions: string[] | undefined = [];
    for (const { snap, prefix } of snaps) {
      if (snap.kind !== "project") continue;
      if (snap.page.versions === undefined) versions = undefined;
      else if (versions) for (const v of snap.page.versions) if (!versions.includes(v)) versions.push(v);
      for (const f of snap.page.files) {
        if (names.has(f.filename)) continue;
        // every vault path is `files/…` (proxy: files/<upstream path>, hosted: files/<project>/<file>, group: files/<member>/…)
        if (f.path !== undefined && !f.path.startsWith("files/")) continue;
        names.add(f.filename);
        const copy: SimpleFile = { ...f };
        if (f.path !== undefined) copy.path = prefix + f.path.slice("files/".length);
        files.push(copy);
      }
    }
    const page: ProjectPage = { name: i.project ?? (snaps[0]?.snap.kind === "project" ? snaps[0].snap.page.name : ""), files };
    if (versions !== undefined && snaps.length > 0) page.versions = versions;
    out = { v: 1, kind: "project", page };
  }
  return encoder.encode(JSON.stringify(out));
}

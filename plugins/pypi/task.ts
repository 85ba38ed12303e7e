/**
 * The pypi plugin's one worker-pool task, `pypiSimple`: builds snapshots, renders representations, lists a
 * snapshot's links, rewrites Warehouse JSON, merges group members' snapshots, inspects uploaded files. Pure and
 * structured-cloneable, so the same function runs inline for small inputs and in the pool (workers/index.ts) above the
 * offload threshold.
 */
import { buildSnapshot, linksOf, readSnapshot, renderSnapshot, type BuildSnapshotInput, type FileLink, type RenderInput } from "./simple.ts";
import { rewriteJsonApi, type JsonApiInput } from "./jsonapi.ts";
import { mergeSnapshots, type MergeInput } from "./merge.ts";
import { inspectDistribution, type InspectInput, type InspectOutput } from "./dist.ts";

/** Input of {@link pypiSimple}: one operation. */
export type PypiTaskInput =
  | ({ op: "build" } & BuildSnapshotInput)
  | ({ op: "render" } & RenderInput)
  | { op: "links"; snapshot: Uint8Array }
  | ({ op: "jsonapi" } & JsonApiInput)
  | ({ op: "merge" } & MergeInput)
  | ({ op: "inspect" } & InspectInput);

/** Output of {@link pypiSimple}: `body` (build → snapshot, render → page bytes, jsonapi → document) and the file links it holds. */
export interface PypiTaskOutput {
  body?: Uint8Array;
  links: [string, FileLink][];
  /** build: origins (`http://host:port`) of file links left pointing upstream because they are not in `fileOrigins`. */
  foreignOrigins?: string[];
  /** inspect: digests, the wheel's METADATA, problems (the file itself comes back in `body`). */
  inspect?: Omit<InspectOutput, "bytes">;
}

/**
 * Runs one pypi document operation.
 * - `build`: upstream page → snapshot bytes, plus the origins of file links not rewritten (throws SimpleParseError on
 *   unusable upstream documents)
 * - `render`: snapshot → JSON/HTML bytes, plus the snapshot's links
 * - `links`: snapshot → its links only
 * - `jsonapi`: Warehouse JSON → rewritten JSON + links (throws SyntaxError on bad JSON)
 * - `merge`: members' snapshots → the group's merged snapshot (plugins/pypi/merge.ts)
 * - `inspect`: an uploaded file → digests, a wheel's METADATA, what is wrong with it (plugins/pypi/dist.ts); the
 *   file's bytes come back as `body` (moved back from the pool, not copied)
 */
export function pypiSimple(i: PypiTaskInput): PypiTaskOutput {
  switch (i.op) {
    case "build": {
      const body = buildSnapshot(i);
      const s = i.kind === "project" ? readSnapshot(body) : null;
      return { body, links: [], foreignOrigins: s?.kind === "project" ? foreignOriginsOf(s.page.files) : [] };
    }
    case "render": {
      const s = readSnapshot(i.snapshot);
      return { body: renderSnapshot(i, s), links: s.kind === "project" ? linksOf(s.page) : [] };
    }
    case "links": {
      const s = readSnapshot(i.snapshot);
      return { links: s.kind === "project" ? linksOf(s.page) : [] };
    }
    case "jsonapi":
      return rewriteJsonApi(i);
    case "merge":
      return { body: mergeSnapshots(i), links: [] };
    case "inspect": {
      const { bytes, ...inspect } = inspectDistribution(i);
      return { body: bytes, links: [], inspect };
    }
  }
}

/** Distinct origins of the http(s) file URLs that were not mapped to a vault path (`path` unset), sorted. */
function foreignOriginsOf(files: { url: string; path?: string }[]): string[] {
  const out = new Set<string>();
  for (const f of files) {
    if (f.path !== undefined) continue;
    try {
      const u = new URL(f.url);
      if (u.protocol === "http:" || u.protocol === "https:") out.add(u.origin);
    } catch {
      // not a URL: nothing to report
    }
  }
  return [...out].sort();
}

/**
 * The npm plugin's worker-pool task, `npmPackument`: every packument operation of the plugin — proxy (rewrite tarball
 * URLs to the vault, look up one tarball's `dist`, dist-tags), hosted (check a publish body, edit the package document,
 * render it full or abbreviated: publish.ts, documents.ts), group (merge members' packuments) and one version's
 * document. Pure and structured-cloneable (imports no core/), so the same function runs inline for small documents and
 * in the pool (workers/index.ts) above the offload threshold.
 */
import { mergePackuments, parseDoc, renderHosted, versionDocument, distTagsOf, versionsMap, type Json, type MergeSource, type TarballDist, type Variant } from "./documents.ts";
import { editDoc, inspectPublish, type DocEdit, type EditResult, type InspectedPublish, type WriteProblem } from "./publish.ts";

export { PackumentParseError, type TarballDist } from "./documents.ts";

/** Input of {@link npmPackument}. */
export type NpmTaskInput =
  | {
      op: "rewrite";
      /** The packument as the upstream sent it (UTF-8 JSON). */
      body: Uint8Array;
      /** Upstream registry base URL with trailing slash; only tarball URLs `<upstreamBase><name>/-/<file>` are rewritten. */
      upstreamBase: string;
      /** Public repository URL without trailing slash; tarballs become `<vaultBase>/<name>/-/<file>`. */
      vaultBase: string;
    }
  | {
      op: "lookup";
      /** A stored (rewritten) packument. */
      body: Uint8Array;
      /** Tarball file name to find (`chalk-4.1.0.tgz`). */
      file: string;
      /** Vault tarball URL to match exactly: `<vaultBase>/<name>/-/<file>`. */
      url: string;
    }
  | {
      op: "dist-tags";
      /** A stored packument. */
      body: Uint8Array;
    }
  | {
      op: "render";
      /** A hosted package document (publish.ts). */
      body: Uint8Array;
      /** Public repository URL without trailing slash. */
      base: string;
      variant: Variant;
    }
  | {
      op: "merge";
      /** Members' packuments in read order (documents.ts `mergePackuments`). */
      sources: MergeSource[];
      /** The group's public URL without trailing slash. */
      base: string;
      variant: Variant;
    }
  | {
      op: "version";
      /** A full packument. */
      body: Uint8Array;
      /** A version or a dist-tag. */
      spec: string;
    }
  | {
      op: "inspect";
      /** The body of `PUT /<name>` (JSON with `_attachments`). */
      body: Uint8Array;
      /** The package name of the URL. */
      name: string;
    }
  | {
      op: "edit";
      name: string;
      /** The current package document; absent for a new package. */
      doc?: Uint8Array;
      /** epoch ms */
      now: number;
      edit: DocEdit;
    };

/**
 * Output of {@link npmPackument}: rewrite → `body` + `rewritten` count; lookup → `found` + `dist`; dist-tags →
 * `distTags`; render, merge → `body`; version → `body` + `found`; inspect → `inspected` or `problem`; edit → `edit`.
 */
export interface NpmTaskOutput {
  /** inspect: the checked publish (its `tarball` is also moved back as `body`). */
  inspected?: Omit<InspectedPublish, "tarball">;
  /** inspect: the body has no attachment, it is a document update (deprecate, unpublish a version). */
  update?: boolean;
  /** inspect: why the publish is refused. */
  problem?: WriteProblem;
  /** edit: the result (its document is also moved back as `body`). */
  edit?: Omit<EditResult, "body">;
  body?: Uint8Array;
  /** rewrite: number of tarball URLs rewritten. */
  rewritten?: number;
  /** dist-tags: the document's `dist-tags` (string values only). */
  distTags?: Record<string, string>;
  /** lookup: the tarball's dist, or undefined when no version lists that URL. */
  dist?: TarballDist;
  /** lookup: whether a version lists the URL. */
  found?: boolean;
}

/**
 * Runs one packument operation.
 * - `rewrite`: every `versions.*.dist.tarball` equal to `<upstreamBase><name>/-/<file>` (name plain, or scoped with
 *   `/` or `%2f`) becomes `<vaultBase>/<name>/-/<file>`; `integrity`/`shasum` and every other field are kept; other
 *   URLs are left as they are. Output is compact JSON.
 * - `lookup`: the `dist.integrity`/`dist.shasum` of the version whose tarball URL is `url`.
 * - `dist-tags`: the document's `dist-tags` map (tag → version), `{}` when absent.
 * - `render`: a hosted document → full or abbreviated packument for `base` (documents.ts `renderHosted`).
 * - `merge`: group members' packuments → the group's (documents.ts `mergePackuments`).
 * - `version`: one version's document, `found: false` when the packument has no such version or tag.
 * - `inspect`: a publish body checked (publish.ts `inspectPublish`): `inspected` + the tarball as `body`, `problem`, or
 *   `update` when the body carries no attachment.
 * - `edit`: a package document changed (publish.ts `editDoc`): `edit` + the new document as `body` when it changed.
 * @throws PackumentParseError when a body is not a JSON object
 */
export function npmPackument(i: NpmTaskInput): NpmTaskOutput {
  switch (i.op) {
    case "render":
      return { body: renderHosted(i.body, i.base, i.variant) };
    case "merge":
      return { body: mergePackuments(i.sources, i.base, i.variant) };
    case "version": {
      const body = versionDocument(i.body, i.spec);
      return body ? { body, found: true } : { found: false };
    }
    case "inspect": {
      const r = inspectPublish(i.body, i.name);
      if (r === null) return { update: true };
      if ("status" in r) return { problem: r };
      const { tarball, ...inspected } = r;
      return { inspected, body: tarball };
    }
    case "edit": {
      const { body, ...edit } = editDoc(i.name, i.doc, i.now, i.edit);
      return body ? { edit, body } : { edit };
    }
  }
  const doc = parseDoc(i.body);
  if (i.op === "lookup") {
    for (const v of Object.values(versionsMap(doc))) {
      const d = v.dist as Json | undefined;
      if (!d || d.tarball !== i.url) continue;
      const dist: TarballDist = {};
      if (typeof d.integrity === "string") dist.integrity = d.integrity;
      if (typeof d.shasum === "string") dist.shasum = d.shasum;
      return { found: true, dist };
    }
    return { found: false };
  }
  if (i.op === "dist-tags") return { distTags: distTagsOf(doc) };
  let rewritten = 0;
  for (const v of Object.values(versionsMap(doc))) {
    const d = v.dist as Json | undefined;
    if (!d || typeof d.tarball !== "string" || !d.tarball.startsWith(i.upstreamBase)) continue;
    const rest = d.tarball.slice(i.upstreamBase.length).replace(/%2f/gi, "/");
    const m = /^((?:@[^/?#]+\/)?[^/?#@][^/?#]*)\/-\/([^/?#]+\.tgz)$/.exec(rest);
    if (!m) continue;
    d.tarball = `${i.vaultBase}/${m[1]}/-/${m[2]}`;
    rewritten++;
  }
  return { body: new TextEncoder().encode(JSON.stringify(doc)), rewritten };
}

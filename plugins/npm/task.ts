/**
 * The npm plugin's worker-pool task, `npmPackument`: rewrites a packument's tarball URLs to the vault, or looks up
 * the `dist` of one tarball in a stored packument. Pure and structured-cloneable (imports no core/), so the same
 * function runs inline for small documents and in the pool (workers/index.ts) above the offload threshold.
 */

/** The `dist` fields the vault verifies a tarball against (specs/npm.md: integrity). */
export interface TarballDist {
  /** Subresource Integrity string, e.g. `sha512-<base64>` (may list several, space-separated). */
  integrity?: string;
  /** Hex sha1 of the tarball (legacy). */
  shasum?: string;
}

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
    };

/** Output of {@link npmPackument}: rewrite → `body` + `rewritten` count; lookup → `found` + `dist`; dist-tags → `distTags`. */
export interface NpmTaskOutput {
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

/** Thrown for upstream documents that are not a packument (not JSON, not an object). */
export class PackumentParseError extends Error {
  override name = "PackumentParseError";
}

type Json = Record<string, unknown>;

function parse(body: Uint8Array): Json {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder().decode(body));
  } catch (e) {
    throw new PackumentParseError(`packument is not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new PackumentParseError("packument is not a JSON object");
  return doc as Json;
}

function versionsOf(doc: Json): Json[] {
  const v = doc.versions;
  if (typeof v !== "object" || v === null) return [];
  return Object.values(v as Json).filter((x): x is Json => typeof x === "object" && x !== null);
}

/**
 * Runs one packument operation.
 * - `rewrite`: every `versions.*.dist.tarball` equal to `<upstreamBase><name>/-/<file>` (name plain, or scoped with
 *   `/` or `%2f`) becomes `<vaultBase>/<name>/-/<file>`; `integrity`/`shasum` and every other field are kept; other
 *   URLs are left as they are. Output is compact JSON.
 * - `lookup`: the `dist.integrity`/`dist.shasum` of the version whose tarball URL is `url`.
 * - `dist-tags`: the document's `dist-tags` map (tag → version), `{}` when absent.
 * @throws PackumentParseError when the body is not a JSON object
 */
export function npmPackument(i: NpmTaskInput): NpmTaskOutput {
  const doc = parse(i.body);
  if (i.op === "lookup") {
    for (const v of versionsOf(doc)) {
      const d = v.dist as Json | undefined;
      if (!d || d.tarball !== i.url) continue;
      const dist: TarballDist = {};
      if (typeof d.integrity === "string") dist.integrity = d.integrity;
      if (typeof d.shasum === "string") dist.shasum = d.shasum;
      return { found: true, dist };
    }
    return { found: false };
  }
  if (i.op === "dist-tags") {
    const tags = doc["dist-tags"];
    const distTags: Record<string, string> = {};
    if (typeof tags === "object" && tags !== null) for (const [k, v] of Object.entries(tags)) if (typeof v === "string") distTags[k] = v;
    return { distTags };
  }
  let rewritten = 0;
  for (const v of versionsOf(doc)) {
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

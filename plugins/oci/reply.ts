/** Building registry responses: manifests with their digest headers, blobs, JSON bodies, `n`/`last`/`Link` pagination, referrers indexes. */
import type { ArtifactEntry, PluginContext } from "../../core/plugin.ts";
import { API_VERSION, API_VERSION_HEADER, ociError } from "./errors.ts";
import { OCI_INDEX, acceptedTypes, amd64Child, bareMediaType, negotiate, parseManifest, type Descriptor } from "./manifest.ts";

/** A JSON response with the registry headers. HEAD gets the headers only. */
export function jsonReply(req: Request, body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  const text = JSON.stringify(body);
  return new Response(req.method === "HEAD" ? null : text, {
    status,
    headers: {
      "content-type": "application/json",
      "content-length": String(Buffer.byteLength(text)),
      [API_VERSION_HEADER]: API_VERSION,
      ...headers,
    },
  });
}

/** True when an `If-None-Match` list matches `etag` (weak comparison, `*`). */
function noneMatch(list: string, etag: string): boolean {
  for (const raw of list.split(",")) {
    const t = raw.trim();
    if (t === "*" || t === etag || t === `W/${etag}`) return true;
  }
  return false;
}

/**
 * Answers GET/HEAD for a stored manifest row: its exact bytes (sendfile on local disks), `Content-Type` = its media
 * type, `Content-Length`, `Docker-Content-Digest`, `ETag: "<digest>"` (specs/oci.md §3); `If-None-Match` with that
 * ETag → 304. `extra` headers are added (`X-Vault-Cache`, `OCI-Namespace`).
 */
export async function manifestReply(req: Request, ctx: PluginContext, entry: ArtifactEntry, extra?: Record<string, string>): Promise<Response> {
  const digest = entry.blobDigest!;
  const etag = `"${digest}"`;
  const headers: Record<string, string> = { "docker-content-digest": digest, etag, [API_VERSION_HEADER]: API_VERSION, ...extra };
  const inm = req.headers.get("if-none-match");
  if (inm !== null && (noneMatch(inm, etag) || (entry.etag !== null && noneMatch(inm, entry.etag)))) return new Response(null, { status: 304, headers });
  const plain = new Request(req.url, { method: req.method === "HEAD" ? "HEAD" : "GET" });
  const res = await ctx.artifacts.respond(plain, entry, headers);
  return res;
}

/** Extra headers of a proxy cache hit (one shared object: no per-request allocation). */
export const HIT_HEADERS: Readonly<Record<string, string>> = Object.freeze({ "x-vault-cache": "HIT" });

/**
 * Answers GET/HEAD (with Range) for a stored blob row. Rows written by this plugin carry `Docker-Content-Digest` and
 * the API version header among their replayed headers, so a hit adds nothing per request beyond `fixed`.
 * @param fixed constant extra headers (e.g. {@link HIT_HEADERS}); `extra` per-request ones (`OCI-Namespace`)
 */
export function blobReply(req: Request, ctx: PluginContext, entry: ArtifactEntry, digest: string, fixed?: Readonly<Record<string, string>>, extra?: Record<string, string>): Promise<Response> {
  const h = entry.headers;
  if (!extra && h["docker-content-digest"] === digest && h[API_VERSION_HEADER] !== undefined) return ctx.artifacts.respond(req, entry, fixed as Record<string, string> | undefined);
  const headers: Record<string, string> = { ...fixed, [API_VERSION_HEADER]: API_VERSION, "docker-content-digest": digest, ...extra };
  return ctx.artifacts.respond(req, entry, headers);
}

/** Headers stored with every blob row (replayed by the artifact store on each answer). */
export function blobRowHeaders(digest: string): Record<string, string> {
  return { "docker-content-digest": digest, [API_VERSION_HEADER]: API_VERSION };
}

/** Parsed `n`/`last` of a listing request. `n` undefined = no limit asked. */
export interface Page {
  /** Page size (`n`), capped at {@link MAX_PAGE}. */
  n: number | undefined;
  /** Exclusive lower bound (`last`); undefined when absent or empty. */
  last: string | undefined;
}

/** Largest page we hand out, whatever `n` asks. */
export const MAX_PAGE = 10_000;

/**
 * Reads `n` and `last` (distribution-spec "Listing Tags", distribution's catalog pagination).
 * @throws VaultError PAGINATION_NUMBER_INVALID (400) when `n` is not a non-negative integer
 */
export function parsePage(url: URL): Page {
  const ns = url.searchParams.get("n");
  let n: number | undefined;
  if (ns !== null && ns !== "") {
    if (!/^\d{1,9}$/.test(ns)) throw ociError("PAGINATION_NUMBER_INVALID", "n must be a non-negative integer", { n: ns.slice(0, 20) });
    n = Math.min(Number(ns), MAX_PAGE);
  }
  const last = url.searchParams.get("last") ?? undefined;
  return { n, last: last === "" ? undefined : last };
}

/**
 * One page of a sorted list: entries strictly after `last`, at most `n`; `next` is the `last` value of the following
 * page when more remain (then a `Link` header is due). `n = 0` → empty page, no next.
 */
export function paginate(sorted: string[], page: Page): { items: string[]; next: string | undefined } {
  let start = 0;
  if (page.last !== undefined) {
    // first index with item > last (binary search; `sorted` is in code-unit order)
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid] <= page.last) lo = mid + 1;
      else hi = mid;
    }
    start = lo;
  }
  if (page.n === undefined) return { items: sorted.slice(start), next: undefined };
  if (page.n === 0) return { items: [], next: undefined };
  const items = sorted.slice(start, start + page.n);
  const more = start + page.n < sorted.length;
  return { items, next: more ? items[items.length - 1] : undefined };
}

/** `Link: <path?n=N&last=L>; rel="next"` for the next page of a listing at `path`. */
export function linkHeader(path: string, n: number, last: string): string {
  return `<${path}?n=${n}&last=${encodeURIComponent(last)}>; rel="next"`;
}

/** Sorts in code-unit order (what `last` comparisons and SQLite's BINARY collation use) and drops duplicates. */
export function sortUnique(items: Iterable<string>): string[] {
  const out = [...new Set(items)];
  out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return out;
}

/**
 * The referrers answer (distribution-spec "Listing Referrers"): an OCI image index of `descriptors`, filtered by
 * `artifactType` when given (then `OCI-Filters-Applied: artifactType`). Never 404.
 */
export function referrersReply(req: Request, descriptors: Descriptor[], artifactType: string | null, extra?: Record<string, string>): Response {
  const list = artifactType ? descriptors.filter((d) => d.artifactType === artifactType) : descriptors;
  const headers: Record<string, string> = { ...extra };
  if (artifactType) headers["oci-filters-applied"] = "artifactType";
  const res = jsonReply(req, { schemaVersion: 2, mediaType: OCI_INDEX, manifests: list }, 200, headers);
  res.headers.set("content-type", OCI_INDEX);
  return res;
}

/**
 * Answers a manifest request with Accept negotiation (specs/oci.md §3, {@link negotiate}): serves the stored bytes,
 * or 404 MANIFEST_UNKNOWN for an OCI type the client does not accept, or — for a Docker manifest list asked by tag by
 * a client without list support — the linux/amd64 child found through `child(digest)`.
 * @throws VaultError MANIFEST_UNKNOWN (404)
 */
export async function negotiatedManifestReply(
  req: Request,
  ctx: PluginContext,
  entry: ArtifactEntry,
  byTag: boolean,
  child: (digest: string) => Promise<ArtifactEntry | null>,
  extra?: Record<string, string>,
): Promise<Response> {
  const stored = bareMediaType(entry.contentType);
  const verdict = negotiate(stored, acceptedTypes(req.headers.get("accept")), byTag);
  if (verdict === "serve") return manifestReply(req, ctx, entry, extra);
  if (verdict === "fallback-amd64") {
    const m = parseManifest(await ctx.artifacts.read(entry), stored);
    const d = amd64Child(m);
    const e = d ? await child(d.digest) : null;
    if (e && e.blobDigest) return manifestReply(req, ctx, e, extra);
  }
  throw ociError("MANIFEST_UNKNOWN", `manifest of type ${stored} is not in the accepted media types`, { mediaType: stored });
}

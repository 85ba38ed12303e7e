/** Answers GET/HEAD from a stored entry: 200/206/304/412/416 with ETag, Last-Modified, Range, If-* (RFC 9110 §13–§15), Bun.file on local disks. */
import type { ArtifactEntry } from "../plugin.ts";
import type { BlobStore } from "../storage/blobs.ts";
import { VaultError, errors } from "../errors.ts";

/** Response headers we compute ourselves; an entry's replayed headers never override them. */
const OWN_HEADERS = new Set([
  "content-length",
  "content-type",
  "content-range",
  "etag",
  "last-modified",
  "accept-ranges",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "date",
  "age",
  "warning",
  "x-vault-cache",
  "set-cookie",
]);
/** Headers a 304 carries when the 200 would (RFC 9110 §15.4.5), besides ETag and Date. */
const NOT_MODIFIED_HEADERS = ["cache-control", "content-location", "expires", "vary"];

/** Everything about an entry that does not depend on the request, computed once per entry object. */
export interface PreparedEntry {
  /** Total size in bytes. */
  size: number;
  /** Strong ETag, quoted. */
  etag: string;
  /** `Last-Modified` value (HTTP-date). */
  lastModified: string;
  /** `lastModified` as epoch ms (second precision). */
  lastModifiedMs: number;
  /** Representation headers, without Content-Length (206 and HEAD answers add their own). */
  headers: Record<string, string>;
  /** Headers of a full 200: {@link headers} plus Content-Length (`size`). */
  fullHeaders: Record<string, string>;
  /** Headers of a 304 (RFC 9110 §15.4.5). */
  notModified: Record<string, string>;
  /** The blob as a Bun.file on local drivers (sendfile), else undefined. */
  file: ReturnType<typeof Bun.file> | undefined;
}

const prepared = new WeakMap<ArtifactEntry, PreparedEntry>();

/** The strong ETag we serve for a blob digest (`sha256:<hex>` → `"sha256-<first 32 hex>"`). */
export function etagForDigest(digest: string): string {
  const hex = digest.startsWith("sha256:") ? digest.slice(7) : digest;
  return `"sha256-${hex.slice(0, 32)}"`;
}

/** HTTP-date of an epoch-ms time (IMF-fixdate). */
export function httpDate(ms: number): string {
  return new Date(ms).toUTCString();
}

/**
 * Precomputes (and memoises per entry object) the request-independent parts of a response: header values,
 * parsed Last-Modified, the Bun.file handle. Entries kept in the artifact store's hot map therefore cost no
 * header building per hit.
 */
export function prepareEntry(entry: ArtifactEntry, blobs: BlobStore): PreparedEntry {
  let p = prepared.get(entry);
  if (p) return p;
  const etag = entry.etag ?? (entry.blobDigest ? etagForDigest(entry.blobDigest) : '"empty"');
  let lastModifiedMs = entry.upstreamLastModified ? Date.parse(entry.upstreamLastModified) : NaN;
  if (Number.isNaN(lastModifiedMs)) lastModifiedMs = Math.floor(entry.fetchedAt / 1000) * 1000;
  const lastModified = httpDate(lastModifiedMs);
  const headers: Record<string, string> = {
    "content-type": entry.contentType ?? "application/octet-stream",
    etag,
    "last-modified": lastModified,
    "accept-ranges": "bytes",
    // Bun.file bodies otherwise get `content-disposition: filename="<blob hex>"`, which pip would use as the file name.
    "content-disposition": "inline",
  };
  const notModified: Record<string, string> = { etag };
  for (const [k, v] of Object.entries(entry.headers ?? {})) {
    const name = k.toLowerCase();
    if (OWN_HEADERS.has(name)) continue;
    headers[name] = v;
  }
  for (const k of NOT_MODIFIED_HEADERS) if (headers[k] !== undefined) notModified[k] = headers[k];
  const path = entry.blobDigest ? blobs.localPath(entry.blobDigest) : undefined;
  const fullHeaders = { ...headers, "content-length": String(entry.sizeBytes) };
  p = { size: entry.sizeBytes, etag, lastModified, lastModifiedMs, headers, fullHeaders, notModified, file: path ? Bun.file(path) : undefined };
  prepared.set(entry, p);
  return p;
}

/** Result of parsing a `Range` header against a representation of `size` bytes. */
export type RangeResult = { start: number; end: number } | "unsatisfiable" | null;

/**
 * Parses a single-range `Range` header (RFC 9110 §14.1.2): `bytes=a-b`, `bytes=a-`, `bytes=-n`; the end is clipped
 * to `size - 1`. Returns `null` when the header is to be ignored (not `bytes`, malformed, or several ranges — answered
 * with the whole body, which §14.2 allows), `"unsatisfiable"` when no byte of it exists (→ 416).
 * @returns inclusive byte offsets
 */
export function parseRange(value: string, size: number): RangeResult {
  if (!value.startsWith("bytes=")) return null;
  const spec = value.slice(6).trim();
  if (spec.includes(",")) return null;
  const dash = spec.indexOf("-");
  if (dash < 0) return null;
  const a = spec.slice(0, dash).trim();
  const b = spec.slice(dash + 1).trim();
  if ((a !== "" && !/^\d+$/.test(a)) || (b !== "" && !/^\d+$/.test(b))) return null;
  if (a === "") {
    if (b === "") return null;
    const n = Number(b);
    if (n === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  if (b !== "" && Number(b) < start) return null;
  if (start >= size) return "unsatisfiable";
  return { start, end: b === "" ? size - 1 : Math.min(Number(b), size - 1) };
}

/** Most ranges a multi-range request may name before the header is ignored (answered 200 whole): a DoS guard. */
export const MAX_RANGES = 32;

/**
 * Parses a `Range` header of one or more ranges (RFC 9110 §14.1.2) against `size` bytes, for a multipart/byteranges
 * answer (§14.6). Unsatisfiable parts are dropped; overlapping or adjacent ranges are merged and the result is sorted
 * (§14.2 lets a server coalesce). Returns `null` when the header is to be ignored (not `bytes`, any part malformed,
 * more than {@link MAX_RANGES} parts), `"unsatisfiable"` when no part has a byte (→ 416).
 * @returns inclusive byte offsets, ascending, disjoint
 */
export function parseRanges(value: string, size: number): { start: number; end: number }[] | "unsatisfiable" | null {
  if (!value.startsWith("bytes=")) return null;
  const parts = value.slice(6).split(",");
  if (parts.length > MAX_RANGES) return null;
  const out: { start: number; end: number }[] = [];
  for (const part of parts) {
    const r = parseRange(`bytes=${part.trim()}`, size);
    if (r === null) return null;
    if (r !== "unsatisfiable") out.push(r);
  }
  if (out.length === 0) return "unsatisfiable";
  out.sort((x, y) => x.start - y.start);
  const merged = [out[0]];
  for (const r of out.slice(1)) {
    const last = merged[merged.length - 1];
    if (r.start <= last.end + 1) last.end = Math.max(last.end, r.end);
    else merged.push({ ...r });
  }
  return merged;
}

/** Splits an entity-tag list (`"a", W/"b"`) into tags; `*` yields `["*"]`. */
function tags(list: string): string[] {
  return list.split(",").map((t) => t.trim()).filter(Boolean);
}
/** Weak comparison (RFC 9110 §8.8.3.2): opaque tags equal ignoring `W/`. */
export function weakMatch(list: string, etag: string): boolean {
  const bare = etag.startsWith("W/") ? etag.slice(2) : etag;
  for (const t of tags(list)) {
    if (t === "*") return true;
    if ((t.startsWith("W/") ? t.slice(2) : t) === bare) return true;
  }
  return false;
}
/** Strong comparison: neither tag weak, and equal. */
export function strongMatch(list: string, etag: string): boolean {
  if (etag.startsWith("W/")) return false;
  for (const t of tags(list)) if (t === "*" || t === etag) return true;
  return false;
}

/** Options of {@link respondEntry}. */
export interface RespondOptions {
  /** Headers added to every response of this call (`X-Vault-Cache`, `Age`, …); they win over stored ones. */
  extraHeaders?: Record<string, string>;
}

/**
 * Answers `req` (GET or HEAD) from `entry` (RFC 9110 §13.2.2 order: If-Match → If-Unmodified-Since →
 * If-None-Match → If-Modified-Since → Range/If-Range):
 * - 200 with Content-Type, ETag (strong), Last-Modified, Accept-Ranges, the entry's replayed headers; HEAD: same, no body;
 * - 304 (If-None-Match weak match / `*`; If-Modified-Since only without If-None-Match) with ETag, Cache-Control,
 *   Content-Location, Expires, Vary;
 * - 412 when If-Match (strong) / If-Unmodified-Since fails;
 * - 206 + Content-Range for one satisfiable range (If-Range: strong ETag or exact Last-Modified date, else 200);
 *   several ranges → 206 multipart/byteranges (§14.6; merged and sorted, at most {@link MAX_RANGES} parts, else 200
 *   with the whole body).
 * The body is `Bun.file(path)` / `.slice(a, b + 1)` on local drivers (sendfile), else the driver's stream.
 * @throws VaultError VAULT_NOT_FOUND (404) for negative entries (status ≥ 400 or no blob),
 *   VAULT_RANGE_NOT_SATISFIABLE (416, header `Content-Range: bytes * /size`), VAULT_METHOD_NOT_ALLOWED (405).
 */
export function respondEntry(req: Request, entry: ArtifactEntry, blobs: BlobStore, opts?: RespondOptions): Response | Promise<Response> {
  if (entry.status >= 400 || !entry.blobDigest) throw errors.notFound(entry.path);
  const method = req.method;
  const head = method === "HEAD";
  if (!head && method !== "GET") throw new VaultError("VAULT_METHOD_NOT_ALLOWED", 405, `${method} not allowed`, {}, { allow: "GET, HEAD" });
  const p = prepareEntry(entry, blobs);
  const extra = opts?.extraHeaders;
  const h = req.headers;

  const ifMatch = h.get("if-match");
  if (ifMatch !== null) {
    if (!strongMatch(ifMatch, p.etag)) return new Response(null, { status: 412, headers: extra });
  } else {
    const ius = h.get("if-unmodified-since");
    if (ius !== null) {
      const t = Date.parse(ius);
      if (!Number.isNaN(t) && p.lastModifiedMs > t) return new Response(null, { status: 412, headers: extra });
    }
  }
  const inm = h.get("if-none-match");
  if (inm !== null) {
    if (weakMatch(inm, p.etag)) return new Response(null, { status: 304, headers: extra ? { ...p.notModified, ...extra } : p.notModified });
  } else {
    const ims = h.get("if-modified-since");
    if (ims !== null) {
      const t = Date.parse(ims);
      if (!Number.isNaN(t) && p.lastModifiedMs <= t)
        return new Response(null, { status: 304, headers: extra ? { ...p.notModified, ...extra } : p.notModified });
    }
  }

  if (!head) {
    const rangeHeader = h.get("range");
    if (rangeHeader !== null && rangeHeader.includes(",")) {
      const rs = parseRanges(rangeHeader, p.size);
      if (rs !== null && ifRangeHolds(h.get("if-range"), p)) {
        if (rs === "unsatisfiable")
          throw new VaultError("VAULT_RANGE_NOT_SATISFIABLE", 416, "range not satisfiable", { size: p.size }, { "content-range": `bytes */${p.size}` });
        if (rs.length > 1) return multipartRanges(entry.blobDigest, p, rs, blobs, extra);
        const r = rs[0];
        const headers: Record<string, string> = { ...p.headers, "content-range": `bytes ${r.start}-${r.end}/${p.size}`, "content-length": String(r.end - r.start + 1) };
        if (extra) Object.assign(headers, extra);
        if (p.file) return new Response(p.file.slice(r.start, r.end + 1), { status: 206, headers });
        return blobs.open(entry.blobDigest, r).then((body) => new Response(body, { status: 206, headers }));
      }
    } else if (rangeHeader !== null) {
      const r = parseRange(rangeHeader, p.size);
      if (r !== null && ifRangeHolds(h.get("if-range"), p)) {
        if (r === "unsatisfiable")
          throw new VaultError("VAULT_RANGE_NOT_SATISFIABLE", 416, "range not satisfiable", { size: p.size }, { "content-range": `bytes */${p.size}` });
        const headers: Record<string, string> = { ...p.headers, "content-range": `bytes ${r.start}-${r.end}/${p.size}` };
        if (extra) Object.assign(headers, extra);
        if (p.file) return new Response(p.file.slice(r.start, r.end + 1), { status: 206, headers });
        headers["content-length"] = String(r.end - r.start + 1);
        return blobs.open(entry.blobDigest, r).then((body) => new Response(body, { status: 206, headers }));
      }
    }
  }

  if (head) {
    const headers = { ...p.headers, "content-length": String(p.size) };
    if (extra) Object.assign(headers, extra);
    return new Response(null, { status: 200, headers });
  }
  // Content-Length is given even for a file body (Bun would add it), so the access log and metrics know the size.
  const headers = extra ? { ...p.fullHeaders, ...extra } : p.fullHeaders;
  if (p.file) return new Response(p.file, { status: 200, headers });
  const digest = entry.blobDigest;
  return blobs.open(digest).then((body) => new Response(body, { status: 200, headers: { ...headers, "content-length": String(p.size) } }));
}

/**
 * A `206` with `Content-Type: multipart/byteranges` (RFC 9110 §14.6): one part per range, each with the
 * representation's Content-Type and its Content-Range. Parts are streamed one after the other (file slices on local
 * drivers, the driver's ranged stream otherwise), with chunked transfer coding (Bun.serve sends no Content-Length for a
 * stream body; the multipart body delimits itself). Several ranges are rare, so this path is a JS stream, not sendfile.
 */
function multipartRanges(digest: string, p: PreparedEntry, ranges: { start: number; end: number }[], blobs: BlobStore, extra?: Record<string, string>): Response {
  const boundary = `vault-${digest.slice(7, 23)}`;
  const type = p.headers["content-type"];
  const enc = new TextEncoder();
  const heads = ranges.map((r, i) => enc.encode(`${i === 0 ? "" : "\r\n"}--${boundary}\r\ncontent-type: ${type}\r\ncontent-range: bytes ${r.start}-${r.end}/${p.size}\r\n\r\n`));
  const tail = enc.encode(`\r\n--${boundary}--\r\n`);
  const headers: Record<string, string> = { ...p.headers, "content-type": `multipart/byteranges; boundary=${boundary}` };
  if (extra) Object.assign(headers, extra);
  let i = 0;
  let part: ReadableStreamDefaultReader<Uint8Array> | undefined;
  const body = new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      for (;;) {
        if (part) {
          const { done, value } = await part.read();
          if (!done) return ctrl.enqueue(value);
          part = undefined;
          i++;
          continue;
        }
        if (i >= ranges.length) {
          ctrl.enqueue(tail);
          return ctrl.close();
        }
        const r = ranges[i];
        part = (p.file ? p.file.slice(r.start, r.end + 1).stream() : await blobs.open(digest, r)).getReader();
        return ctrl.enqueue(heads[i]);
      }
    },
    cancel: () => part?.cancel(),
  });
  return new Response(body, { status: 206, headers });
}

/** If-Range (RFC 9110 §13.1.5): absent → true; an ETag matches only strongly; a date only when equal to Last-Modified. */
function ifRangeHolds(v: string | null, p: PreparedEntry): boolean {
  if (v === null) return true;
  const s = v.trim();
  if (s.startsWith('"')) return s === p.etag;
  if (s.startsWith("W/")) return false;
  const t = Date.parse(s);
  return !Number.isNaN(t) && t === p.lastModifiedMs;
}

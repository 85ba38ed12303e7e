/** The S3 API of one `s3` repository (specs/s3.md): addressing, SigV4 auth and permissions, and every bucket, object, listing and multipart operation. */
import { createHash } from "node:crypto";
import { blobKey, type ArtifactEntry, type Action, type GcContext, type PluginContext, type Principal } from "../../core/plugin.ts";
import { S3Error, newRequestId, renderS3Error, toS3Error, xmlEscape } from "./errors.ts";
import { parseQuery, parseSignature, verifySignature, pctDecode, uriEncode, type VerifiedSignature } from "./sigv4.ts";
import { MAX_XML_BYTES, S3_NS, listOf, parseXml, textOf, xmlResponse, type XmlObject } from "./xml.ts";
import { intakeBody, type IntakeResult } from "./body.ts";
import { compositeChecksum, multipartEtag, CHECKSUM_ALGORITHMS, type ChecksumAlgorithm } from "./checksums.ts";
import { createS3Meta, MAX_CHAR, type BucketRow, type UploadRow } from "./store.ts";

/** Plugin keys of an `s3` repository entry. */
export interface S3RepoConfig {
  /** Region reported in `x-amz-bucket-region` / GetBucketLocation (default `us-east-1`). Requests signed for any region are accepted. */
  region?: string;
  /** Base domain for virtual-hosted-style requests (`<bucket>.<domain>`); path style is always accepted. */
  virtualHostDomain?: string;
  /** Largest object accepted by one PutObject / UploadPart, bytes (default 5 GiB). */
  maxObjectSizeBytes?: number;
  /** Smallest size of every part but the last at CompleteMultipartUpload, bytes (default 5 MiB, as S3). */
  minPartSizeBytes?: number;
  /**
   * Per-bucket settings; listed buckets are created at start-up when missing, owned by `owner` (default `admin`).
   * `anonymousRead` opens that bucket to anonymous reads; `grants` maps user names to an action
   * (`read` < `write` < `delete` < `admin`).
   */
  buckets?: { name: string; anonymousRead?: boolean; grants?: Record<string, Action>; owner?: string }[];
  /** Lifetime of presigned redirect URLs when `redirectDownloads` is set on a remote storage driver, seconds (default 300). */
  presignTtlSeconds?: number;
  /** `vault gc` aborts multipart uploads older than this, seconds (default 86400, like an S3 lifecycle rule). */
  abortIncompleteUploadsAfterSeconds?: number;
}

const GiB = 1024 * 1024 * 1024;
const MiB = 1024 * 1024;
const LEVEL: Record<Action, number> = { read: 1, write: 2, delete: 3, admin: 4 };
const ANONYMOUS: Principal = { userId: null, name: "anonymous", isAdmin: false, via: "anonymous" };
const STORED_HEADERS = ["content-disposition", "content-encoding", "cache-control", "expires", "content-language"];
const RESPONSE_OVERRIDES: [string, string][] = [
  ["response-content-type", "content-type"],
  ["response-content-language", "content-language"],
  ["response-expires", "expires"],
  ["response-cache-control", "cache-control"],
  ["response-content-disposition", "content-disposition"],
  ["response-content-encoding", "content-encoding"],
];
/** Header names inside artifacts.headers that are ours, not replayed to clients. */
const INTERNAL = "x-vault-s3-";

/** One request being served. */
interface Call {
  req: Request;
  method: string;
  /** Raw path as received (for the signature). */
  rawPath: string;
  query: Map<string, string>;
  pairs: [string, string][];
  requestId: string;
  principal: Principal;
  sig: VerifiedSignature | null;
  /** Authenticated by a presigned URL (browsers, curl: they follow redirects). */
  presigned: boolean;
  bucket?: string;
  key?: string;
  head: boolean;
}

/** S3 canonical user id for a vault user name. */
function ownerId(name: string): string {
  return createHash("sha256").update(`vault-user:${name}`).digest("hex");
}

function owner(name: string): XmlObject {
  return { ID: ownerId(name), DisplayName: name };
}

/** S3 timestamp (`2025-03-01T10:20:30.000Z`). */
function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function quote(etag: string): string {
  return etag.startsWith('"') ? etag : `"${etag}"`;
}

function unquote(etag: string): string {
  return etag.trim().replace(/^W\//, "").replace(/^"|"$/g, "");
}

/** Whether an If-Match / If-None-Match list matches `etag` (`*` matches anything). */
function etagMatches(list: string, etag: string): boolean {
  const want = unquote(etag);
  return list.split(",").some((t) => t.trim() === "*" || unquote(t) === want);
}

/** AWS bucket naming rules: 3–63 chars of lower-case letters, digits, dots, hyphens; no `..`, `.-`, `-.`; not an IPv4 address. */
export function validBucketName(name: string): boolean {
  return /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(name) && !/\.\./.test(name) && !/^\d+\.\d+\.\d+\.\d+$/.test(name) && !name.includes(".-") && !name.includes("-.");
}

/** Object key rules: 1–1024 UTF-8 bytes, no `.`/`..` segment (they would be resolved away by URL handling), no NUL. */
function checkObjectKey(key: string): void {
  if (key.length === 0) throw new S3Error("InvalidArgument", "Object key must not be empty");
  if (Buffer.byteLength(key) > 1024) throw new S3Error("KeyTooLongError", undefined, { MaxSizeAllowed: "1024", Size: String(Buffer.byteLength(key)) });
  if (key.includes("\0")) throw new S3Error("InvalidArgument", "Object key must not contain NUL");
  for (const seg of key.split("/")) if (seg === "." || seg === "..") throw new S3Error("InvalidArgument", "Object key must not contain '.' or '..' path segments");
}

function intParam(v: string | undefined, name: string, dflt: number, max?: number): number {
  if (v === undefined || v === "") return dflt;
  if (!/^\d+$/.test(v)) throw new S3Error("InvalidArgument", `${name} must be a non-negative integer`, { ArgumentName: name, ArgumentValue: v });
  const n = Number(v);
  return max !== undefined ? Math.min(n, max) : n;
}

/** Reads a small XML request body (≤ MAX_XML_BYTES), checking Content-MD5 when sent. */
async function readXmlBody(req: Request): Promise<string> {
  const len = Number(req.headers.get("content-length") ?? "0");
  if (len > MAX_XML_BYTES) throw new S3Error("MalformedXML", "XML body too large");
  const buf = new Uint8Array(await req.arrayBuffer());
  if (buf.byteLength > MAX_XML_BYTES) throw new S3Error("MalformedXML", "XML body too large");
  const md5 = req.headers.get("content-md5");
  if (md5 !== null) {
    const want = Buffer.from(md5, "base64");
    if (want.length !== 16) throw new S3Error("InvalidDigest");
    if (!createHash("md5").update(buf).digest().equals(want)) throw new S3Error("BadDigest");
  }
  return new TextDecoder().decode(buf);
}

/** Parses `Range: bytes=a-b | a- | -n` against `size`; null = whole object (absent or multi-range). Throws InvalidRange (416). */
function parseRange(h: string | null, size: number): { start: number; end: number } | null {
  if (!h) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(h.trim());
  if (!m || (m[1] === "" && m[2] === "")) return null;
  let start: number;
  let end: number;
  if (m[1] === "") {
    const n = Number(m[2]);
    if (n === 0) throw new S3Error("InvalidRange", undefined, { RangeRequested: h, ActualObjectSize: String(size) });
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== "" && Number(m[2]) < start) return null;
  }
  if (start >= size) {
    const e = new S3Error("InvalidRange", undefined, { RangeRequested: h, ActualObjectSize: String(size) }, { "content-range": `bytes */${size}` });
    throw e;
  }
  return { start, end };
}

/** Object view of an artifacts row. */
interface S3Object {
  entry: ArtifactEntry;
  etag: string;
  lastModified: number;
  size: number;
  owner: string;
}

function toObject(e: ArtifactEntry): S3Object {
  return {
    entry: e,
    etag: e.headers.etag ?? `"${(e.blobDigest ?? "").slice(7, 39)}"`,
    lastModified: e.fetchedAt,
    size: e.sizeBytes,
    owner: e.headers[`${INTERNAL}owner`] ?? "vault",
  };
}

/**
 * Creates the request handler of one `s3` repository (specs/s3.md §1–§8). `handle(req)` answers any S3 request for
 * this mount (the mount prefix is stripped from the path) and never throws: errors become S3 XML error answers
 * (§7); every answer carries `x-amz-request-id`. `ensureConfiguredBuckets()` creates the `buckets` of the config.
 */
export function createS3Service(ctx: PluginContext) {
  const cfg = ctx.config as unknown as S3RepoConfig & { anonymousRead?: boolean; redirectDownloads?: boolean };
  const region = cfg.region ?? "us-east-1";
  const maxObject = cfg.maxObjectSizeBytes ?? 5 * GiB;
  const minPart = cfg.minPartSizeBytes ?? 5 * MiB;
  const meta = createS3Meta(ctx.metadata, ctx.repo.name);
  /** Creation of the configured buckets (ensureConfiguredBuckets), awaited by requests. */
  let configured: Promise<void> | undefined;
  const bucketCfg = new Map((cfg.buckets ?? []).map((b) => [b.name, b]));
  const vhost = cfg.virtualHostDomain?.toLowerCase();
  const completing = new Set<string>();

  const objPath = (bucket: string, key: string) => `${bucket}/${key}`;

  /* ------------------------------------------------------------ auth */

  /**
   * SigV4 (header or presigned) → `c.principal`, `c.sig`; unsigned requests stay anonymous.
   * @throws S3Error InvalidAccessKeyId (403), and those of parseSignature / verifySignature
   */
  async function authenticate(c: Call): Promise<void> {
    const sig = parseSignature(c.req.headers, c.pairs);
    if (!sig) return;
    const found = (await ctx.auth.lookupAccessKey?.(sig.credential.accessKeyId)) ?? null;
    if (!found) throw new S3Error("InvalidAccessKeyId", undefined, { AWSAccessKeyId: sig.credential.accessKeyId });
    c.sig = verifySignature(sig, { method: c.method, rawPath: c.rawPath, query: c.pairs, headers: c.req.headers }, found.secret, Date.now());
    c.principal = found.principal;
    c.presigned = sig.kind === "presigned";
  }

  /** May the caller do `action` on `bucket` (or the service when undefined)? Repository grants, bucket grants, bucket ownership, configured anonymous read. */
  function allowed(p: Principal, action: Action, bucket?: BucketRow): boolean {
    if (p.isAdmin) return true;
    const bc = bucket ? bucketCfg.get(bucket.name) : undefined;
    if (p.userId === null) {
      if (action !== "read") return false;
      return cfg.anonymousRead === true || bc?.anonymousRead === true;
    }
    if (ctx.auth.can(p, action)) return true;
    if (bucket && bucket.owner === p.name) return true;
    const g = bc?.grants?.[p.name];
    return g !== undefined && LEVEL[g] >= LEVEL[action];
  }

  function require(c: Call, action: Action, bucket?: BucketRow): void {
    if (!allowed(c.principal, action, bucket)) throw new S3Error("AccessDenied");
  }

  async function needBucket(c: Call): Promise<BucketRow> {
    const b = await meta.bucket(c.bucket!);
    if (!b) throw new S3Error("NoSuchBucket", undefined, { BucketName: c.bucket! });
    return b;
  }

  function audit(c: Call, action: string, path?: string, detail?: Record<string, unknown>) {
    ctx.auth.audit({ principal: c.principal, action, path, detail, req: c.req });
  }

  /* ------------------------------------------------------------ dispatch */

  /** Entry point: addressing, authentication, routing; any error rendered as S3 XML with the request id. */
  async function handle(req: Request): Promise<Response> {
    if (configured) await configured.catch(() => ensureConfiguredBuckets());
    const requestId = newRequestId();
    const url = req.url;
    const qi = url.indexOf("?");
    const pathStart = url.indexOf("/", url.indexOf("//") + 2);
    const rawPath = pathStart < 0 ? "/" : url.slice(pathStart, qi < 0 ? undefined : qi);
    const pairs = qi < 0 ? [] : safePairs(url.slice(qi + 1));
    const c: Call = {
      req,
      method: req.method,
      rawPath,
      query: new Map(pairs.map(([k, v]) => [k, v] as [string, string]).reverse()),
      pairs,
      requestId,
      principal: ANONYMOUS,
      sig: null,
      presigned: false,
      head: req.method === "HEAD",
    };
    let res: Response;
    try {
      addressing(c);
      await authenticate(c);
      res = await route(c);
    } catch (e) {
      let err = toS3Error(e);
      if (err.code === "InternalError" && req.signal.aborted) {
        // The client went away (e.g. an upload cancelled mid-body): not a server fault. Nothing was stored (the blob
        // store discards the unfinished spool file); answer as S3 does for a short body, for the access log and metrics.
        ctx.log.info("s3 client disconnected", { requestId, path: rawPath, method: c.method });
        err = new S3Error("IncompleteBody", "the client closed the connection before the body ended");
      } else if (err.code === "InternalError") ctx.log.error("s3 request failed", { error: e instanceof Error ? e.message : String(e), requestId, path: rawPath });
      res = renderS3Error(err, { requestId, resource: rawPath, head: c.head });
      // Drain nothing: Bun discards an unread request body (and never sends 100 Continue for it).
    }
    res.headers.set("x-amz-request-id", requestId);
    if (!res.headers.has("x-amz-id-2")) res.headers.set("x-amz-id-2", ctx.repo.name);
    return res;
  }

  function safePairs(q: string): [string, string][] {
    try {
      return parseQuery(q);
    } catch {
      return [];
    }
  }

  /** Splits the path after the mount into bucket and key (path style), or takes the bucket from the Host (virtual-hosted style). */
  function addressing(c: Call): void {
    let rel = c.rawPath;
    const mount = ctx.repo.mount;
    if (mount && (rel === mount || rel.startsWith(mount + "/"))) rel = rel.slice(mount.length);
    if (rel === "") rel = "/";
    if (vhost) {
      const host = (c.req.headers.get("host") ?? "").toLowerCase().replace(/:\d+$/, "");
      if (host.endsWith("." + vhost)) {
        c.bucket = host.slice(0, -(vhost.length + 1));
        const k = pctDecode(rel.slice(1));
        if (k !== "") c.key = k;
        return;
      }
    }
    const parts = rel.slice(1);
    if (parts === "") return;
    const i = parts.indexOf("/");
    c.bucket = pctDecode(i < 0 ? parts : parts.slice(0, i));
    if (i >= 0 && i < parts.length - 1) c.key = pctDecode(parts.slice(i + 1));
  }

  /** Maps method + bucket/key + sub-resource query (`?uploads`, `?acl`, …) to the S3 operation (specs/s3.md §2). */
  async function route(c: Call): Promise<Response> {
    const q = c.query;
    const m = c.method;
    if (c.bucket === undefined) {
      if (m === "GET" || m === "HEAD") return listBuckets(c);
      throw new S3Error("MethodNotAllowed");
    }
    if (c.key === undefined) {
      // bucket sub-resources
      if (m === "PUT") {
        if (q.has("acl")) return putAclStub(c);
        for (const sub of ["versioning", "policy", "lifecycle", "cors", "tagging", "encryption", "website", "logging", "notification", "replication"]) {
          if (q.has(sub)) throw new S3Error("NotImplemented", `PUT ?${sub} is not implemented`);
        }
        return createBucket(c);
      }
      if (m === "DELETE") {
        for (const [sub, code] of [["policy", "NoSuchBucketPolicy"], ["lifecycle", "NoSuchLifecycleConfiguration"], ["cors", "NoSuchCORSConfiguration"], ["tagging", "NoSuchTagSet"]] as const) {
          if (q.has(sub)) {
            require(c, "admin", await needBucket(c));
            return new Response(null, { status: 204 });
          }
        }
        return deleteBucket(c);
      }
      if (m === "HEAD") return headBucket(c);
      if (m === "POST") {
        if (q.has("delete")) return deleteObjects(c);
        throw new S3Error("MethodNotAllowed");
      }
      if (m === "GET") {
        if (q.has("location")) return getLocation(c);
        if (q.has("versioning")) return getVersioning(c);
        if (q.has("acl")) return getAcl(c);
        if (q.has("uploads")) return listUploads(c);
        if (q.has("versions")) return listVersions(c);
        for (const [sub, code] of [
          ["policy", "NoSuchBucketPolicy"],
          ["lifecycle", "NoSuchLifecycleConfiguration"],
          ["cors", "NoSuchCORSConfiguration"],
          ["tagging", "NoSuchTagSet"],
          ["encryption", "ServerSideEncryptionConfigurationNotFoundError"],
        ] as const) {
          if (q.has(sub)) {
            require(c, "read", await needBucket(c));
            throw new S3Error(code, undefined, { BucketName: c.bucket });
          }
        }
        if (q.has("logging")) {
          require(c, "read", await needBucket(c));
          return xmlResponse("BucketLoggingStatus", {});
        }
        for (const sub of ["website", "notification", "replication", "object-lock", "ownershipControls", "publicAccessBlock", "requestPayment", "accelerate", "analytics", "metrics", "inventory", "intelligent-tiering", "policyStatus"]) {
          if (q.has(sub)) throw new S3Error("NotImplemented", `GET ?${sub} is not implemented`);
        }
        return q.get("list-type") === "2" ? listObjects(c, 2) : listObjects(c, 1);
      }
      throw new S3Error("MethodNotAllowed");
    }
    // object resources
    checkObjectKey(c.key);
    if (m === "PUT") {
      if (q.has("acl")) return putAclStub(c);
      if (q.has("tagging") || q.has("retention") || q.has("legal-hold")) throw new S3Error("NotImplemented");
      if (q.has("uploadId")) return uploadPart(c);
      if (c.req.headers.has("x-amz-copy-source")) return copyObject(c);
      return putObject(c);
    }
    if (m === "GET" || m === "HEAD") {
      if (q.has("acl")) return getAcl(c);
      if (q.has("uploadId")) return listParts(c);
      if (q.has("tagging")) {
        require(c, "read", await needBucket(c));
        await needObject(c);
        return xmlResponse("Tagging", { TagSet: {} });
      }
      if (q.has("retention") || q.has("legal-hold") || q.has("attributes") || q.has("torrent")) throw new S3Error("NotImplemented");
      return getObject(c);
    }
    if (m === "DELETE") {
      if (q.has("uploadId")) return abortUpload(c);
      if (q.has("tagging")) {
        require(c, "write", await needBucket(c));
        return new Response(null, { status: 204 });
      }
      return deleteObject(c);
    }
    if (m === "POST") {
      if (q.has("uploads")) return createUpload(c);
      if (q.has("uploadId")) return completeUpload(c);
      throw new S3Error("MethodNotAllowed");
    }
    throw new S3Error("MethodNotAllowed");
  }

  /* ------------------------------------------------------------ service and buckets */

  async function listBuckets(c: Call): Promise<Response> {
    if (c.principal.userId === null && !c.principal.isAdmin && cfg.anonymousRead !== true) throw new S3Error("AccessDenied");
    const rows = (await meta.buckets()).filter((b) => allowed(c.principal, "read", b));
    return xmlResponse("ListAllMyBucketsResult", {
      Owner: owner(c.principal.name),
      Buckets: { Bucket: rows.map((b) => ({ Name: b.name, CreationDate: iso(b.createdAt) })) },
    });
  }

  async function createBucket(c: Call): Promise<Response> {
    const name = c.bucket!;
    require(c, "write");
    if (!validBucketName(name)) throw new S3Error("InvalidBucketName", undefined, { BucketName: name });
    let loc = "";
    const body = await readXmlBody(c.req);
    if (body.trim() !== "") {
      const doc = parseXml(body, "CreateBucketConfiguration");
      loc = textOf(doc.LocationConstraint as never) ?? "";
    }
    if (!(await meta.createBucket(name, c.principal.name, loc))) {
      const b = (await meta.bucket(name))!;
      if (b.owner === c.principal.name) throw new S3Error("BucketAlreadyOwnedByYou", undefined, { BucketName: name });
      throw new S3Error("BucketAlreadyExists", undefined, { BucketName: name });
    }
    audit(c, "s3.bucket.create", name);
    return new Response(null, { status: 200, headers: { location: `/${name}` } });
  }

  async function deleteBucket(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "delete", b);
    const any = await ctx.artifacts.list(`${b.name}/`, { limit: 1 });
    if (any.length > 0) throw new S3Error("BucketNotEmpty", undefined, { BucketName: b.name });
    // In-progress multipart uploads are aborted with the bucket.
    for (const u of await meta.uploads(b.name, { prefix: "", limit: 100000 })) await dropUpload(u.uploadId);
    await meta.deleteBucket(b.name);
    audit(c, "s3.bucket.delete", b.name);
    return new Response(null, { status: 204 });
  }

  async function headBucket(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "read", b);
    return new Response(null, { status: 200, headers: { "x-amz-bucket-region": region } });
  }

  async function getLocation(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "read", b);
    const loc = b.region === "us-east-1" ? "" : b.region;
    return new Response(`<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="${S3_NS}">${xmlEscape(loc)}</LocationConstraint>`, {
      headers: { "content-type": "application/xml" },
    });
  }

  async function getVersioning(c: Call): Promise<Response> {
    require(c, "read", await needBucket(c));
    return xmlResponse("VersioningConfiguration", {});
  }

  async function getAcl(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "read", b);
    let who = b.owner;
    if (c.key !== undefined) who = (await needObject(c)).owner;
    const id = ownerId(who);
    const x =
      `<?xml version="1.0" encoding="UTF-8"?>\n<AccessControlPolicy xmlns="${S3_NS}"><Owner><ID>${id}</ID><DisplayName>${xmlEscape(who)}</DisplayName></Owner>` +
      `<AccessControlList><Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser"><ID>${id}</ID><DisplayName>${xmlEscape(who)}</DisplayName></Grantee>` +
      `<Permission>FULL_CONTROL</Permission></Grant></AccessControlList></AccessControlPolicy>`;
    return new Response(c.head ? null : x, { headers: { "content-type": "application/xml" } });
  }

  /** ACLs are read-only: setting `private` (what tools send by default) is accepted, anything else is NotImplemented. */
  async function putAclStub(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "write", b);
    if (c.key !== undefined) await needObject(c);
    const canned = c.req.headers.get("x-amz-acl");
    if (canned && canned !== "private") throw new S3Error("NotImplemented", "ACLs are read-only: only the owner's FULL_CONTROL (private) is supported");
    if (!canned) {
      const body = await readXmlBody(c.req);
      if (body.trim() !== "") {
        parseXml(body, "AccessControlPolicy");
        throw new S3Error("NotImplemented", "ACLs are read-only: only the owner's FULL_CONTROL (private) is supported");
      }
    }
    return new Response(null, { status: 200 });
  }

  /* ------------------------------------------------------------ objects */

  async function needObject(c: Call): Promise<S3Object> {
    const e = await ctx.artifacts.get(objPath(c.bucket!, c.key!));
    if (!e || e.status !== 200 || !e.blobDigest) throw new S3Error("NoSuchKey", undefined, { Key: c.key! });
    return toObject(e);
  }

  /** Object headers given by the client (content-*, x-amz-meta-*), lower-case names. */
  function objectHeaders(h: Headers): Record<string, string> {
    const out: Record<string, string> = {};
    let metaBytes = 0;
    for (const [k, v] of h) {
      if (k.startsWith("x-amz-meta-")) {
        out[k] = v;
        metaBytes += k.length - 11 + Buffer.byteLength(v);
      } else if (STORED_HEADERS.includes(k)) {
        if (k === "content-encoding") {
          const rest = v
            .split(",")
            .map((s) => s.trim())
            .filter((s) => s && s !== "aws-chunked")
            .join(", ");
          if (rest) out[k] = rest;
        } else out[k] = v;
      }
    }
    if (metaBytes > 2048) throw new S3Error("InvalidArgument", "Your metadata headers exceed the maximum allowed metadata size (2 KB).");
    return out;
  }

  function checksumHeaders(r: IntakeResult | undefined, stored?: Record<string, string>): Record<string, string> {
    const out: Record<string, string> = {};
    if (r?.checksum) out[`x-amz-checksum-${r.checksum.algorithm}`] = r.checksum.value;
    if (stored) for (const [k, v] of Object.entries(stored)) if (k.startsWith("x-amz-checksum-")) out[k] = v;
    return out;
  }

  /** PutObject (specs/s3.md §4–§5): streams the verified body into the blob store; `If-None-Match: *` honoured. */
  async function putObject(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "write", b);
    const path = objPath(b.name, c.key!);
    const h = c.req.headers;
    if (h.get("if-none-match") === "*" && (await ctx.artifacts.get(path))) throw new S3Error("PreconditionFailed", undefined, { Condition: "If-None-Match" });
    // The ETag and checksum are known only when the body has been read: they are filled into `headers` by the
    // intake's onDone, which runs before the stream ends, i.e. before the artifact row is recorded.
    const headers: Record<string, string> = { ...objectHeaders(h), [`${INTERNAL}owner`]: c.principal.name };
    const intake = intakeBody(c.req, {
      sig: c.sig,
      maxBytes: maxObject,
      onDone(r) {
        headers.etag = `"${r.md5}"`;
        Object.assign(headers, checksumHeaders(r));
        if (r.checksum) headers["x-amz-checksum-type"] = "FULL_OBJECT";
      },
    });
    let entry: ArtifactEntry;
    try {
      entry = await ctx.artifacts.put(path, intake.stream, {
        contentType: h.get("content-type") ?? "binary/octet-stream",
        headers,
        expect: intake.sha256 ? { sha256: intake.sha256 } : undefined,
      });
    } catch (e) {
      throw sha256Mismatch(e, intake.sha256);
    }
    const r = intake.result();
    if (entry.headers.etag !== headers.etag) entry = await rewriteHeaders(path, entry, headers);
    audit(c, "s3.put", path, { sizeBytes: r.sizeBytes });
    return new Response(null, { status: 200, headers: { etag: `"${r.md5}"`, ...checksumHeaders(r) } });
  }

  /** The blob store's digest mismatch on a declared `x-amz-content-sha256` → XAmzContentSHA256Mismatch. */
  function sha256Mismatch(e: unknown, declared?: string): unknown {
    const code = (e as { code?: string }).code;
    if (declared && (code === "VAULT_DIGEST_MISMATCH" || (e as Error)?.name === "DigestMismatchError")) {
      return new S3Error("XAmzContentSHA256Mismatch", undefined, { ClientComputedContentSHA256: declared });
    }
    return e;
  }

  /**
   * Sets the S3 headers of a freshly written row. ArtifactStore has no "update headers" call, so the row is
   * re-put from its own blob (the blob store dedupes identical content: no new bytes are stored).
   */
  async function rewriteHeaders(path: string, entry: ArtifactEntry, extra: Record<string, string>): Promise<ArtifactEntry> {
    const body = await ctx.storage.get(blobKey(entry.blobDigest!));
    return ctx.artifacts.put(path, body, {
      contentType: entry.contentType ?? undefined,
      headers: { ...entry.headers, ...extra },
      expect: { sha256: entry.blobDigest!.slice(7), sizeBytes: entry.sizeBytes },
    });
  }

  /** GetObject/HeadObject (specs/s3.md §4): conditionals, Range, `response-*` overrides, checksums on request, presigned redirect. */
  async function getObject(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "read", b);
    const o = await needObject(c);
    const h = c.req.headers;
    const base: Record<string, string> = {
      etag: o.etag,
      "last-modified": new Date(o.lastModified).toUTCString(),
      "accept-ranges": "bytes",
    };
    // Conditionals (RFC 9110 §13.2.2 order, as S3 applies them).
    const lmSec = Math.floor(o.lastModified / 1000);
    const ifMatch = h.get("if-match");
    const ifNone = h.get("if-none-match");
    const ims = h.get("if-modified-since");
    const ius = h.get("if-unmodified-since");
    if (ifMatch !== null) {
      if (!etagMatches(ifMatch, o.etag)) throw new S3Error("PreconditionFailed", undefined, { Condition: "If-Match" });
    } else if (ius !== null) {
      const t = Date.parse(ius);
      if (!Number.isNaN(t) && lmSec > Math.floor(t / 1000)) throw new S3Error("PreconditionFailed", undefined, { Condition: "If-Unmodified-Since" });
    }
    if (ifNone !== null) {
      if (etagMatches(ifNone, o.etag)) return new Response(null, { status: 304, headers: base });
    } else if (ims !== null) {
      const t = Date.parse(ims);
      if (!Number.isNaN(t) && lmSec <= Math.floor(t / 1000)) return new Response(null, { status: 304, headers: base });
    }
    const headers: Record<string, string> = { ...base, "content-type": o.entry.contentType ?? "binary/octet-stream" };
    const checksumMode = (h.get("x-amz-checksum-mode") ?? "").toUpperCase() === "ENABLED";
    for (const [k, v] of Object.entries(o.entry.headers)) {
      if (k === "etag" || k.startsWith(INTERNAL)) continue;
      if (k.startsWith("x-amz-checksum-") && !checksumMode) continue;
      headers[k] = v;
    }
    const parts = o.entry.headers[`${INTERNAL}parts`];
    if (parts && c.query.has("partNumber")) headers["x-amz-mp-parts-count"] = parts;
    for (const [qk, hk] of RESPONSE_OVERRIDES) {
      const v = c.query.get(qk);
      if (v !== undefined) headers[hk] = v;
    }
    const range = parseRange(h.get("range"), o.size);
    if (range) {
      // A checksum of the whole object does not describe a range.
      for (const k of Object.keys(headers)) if (k.startsWith("x-amz-checksum-")) delete headers[k];
    }
    const status = range ? 206 : 200;
    const len = range ? range.end - range.start + 1 : o.size;
    if (range) headers["content-range"] = `bytes ${range.start}-${range.end}/${o.size}`;
    headers["content-length"] = String(len);
    if (c.head) return new Response(null, { status, headers });
    const key = blobKey(o.entry.blobDigest!);
    // Redirect only clients that follow redirects (presigned URLs, anonymous): SDKs do not for GetObject.
    if (cfg.redirectDownloads && ctx.storage.presignGet && (c.sig === null || c.presigned) && !range) {
      const url = await ctx.storage.presignGet(key, cfg.presignTtlSeconds ?? 300, {
        contentType: headers["content-type"],
        contentDisposition: headers["content-disposition"],
      });
      return new Response(null, { status: 302, headers: { location: url, etag: o.etag } });
    }
    const local = ctx.storage.localPath?.(key);
    if (local) {
      const f = Bun.file(local);
      delete headers["content-length"]; // Bun sets it from the file (sendfile)
      // Bun adds `content-disposition: filename="<blob hex>"` to a Bun.file body sent with headers (it cannot be
      // deleted afterwards); an object stored without a Content-Disposition must not get the blob's name.
      headers["content-disposition"] ??= "inline";
      return new Response(range ? f.slice(range.start, range.end + 1) : f, { status, headers });
    }
    const body = await ctx.storage.get(key, range ?? undefined);
    return new Response(body, { status, headers });
  }

  async function deleteObject(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "delete", b);
    const path = objPath(b.name, c.key!);
    await ctx.artifacts.delete(path);
    audit(c, "s3.delete", path);
    return new Response(null, { status: 204 });
  }

  /** DeleteObjects (specs/s3.md §4): up to 1000 keys; per-key failures are listed in the body, not thrown. */
  async function deleteObjects(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "delete", b);
    const doc = parseXml(await readXmlBody(c.req), "Delete");
    const quiet = textOf(doc.Quiet as never) === "true";
    const objs = listOf(doc.Object);
    if (objs.length > 1000) throw new S3Error("MalformedXML", "at most 1000 keys per DeleteObjects request");
    const deleted: XmlObject[] = [];
    const failed: XmlObject[] = [];
    for (const o of objs) {
      const key = textOf(o.Key as never);
      const vid = textOf(o.VersionId as never);
      if (key === undefined) throw new S3Error("MalformedXML", "every <Object> needs a <Key>");
      try {
        checkObjectKey(key);
        if (vid !== undefined && vid !== "null") throw new S3Error("InvalidArgument", "Invalid version id specified");
        await ctx.artifacts.delete(objPath(b.name, key));
        audit(c, "s3.delete", objPath(b.name, key));
        if (!quiet) deleted.push({ Key: key, VersionId: vid });
      } catch (e) {
        const err = toS3Error(e);
        failed.push({ Key: key, VersionId: vid, Code: err.code as string, Message: err.message });
      }
    }
    return xmlResponse("DeleteResult", { Deleted: deleted, Error: failed });
  }

  /** Parses `x-amz-copy-source` (`[/]bucket/key[?versionId=…]`, URL-encoded). */
  function copySource(c: Call): { bucket: string; key: string } {
    let src = c.req.headers.get("x-amz-copy-source")!;
    const qi = src.indexOf("?");
    if (qi >= 0) {
      const v = new URLSearchParams(src.slice(qi + 1)).get("versionId");
      if (v !== null && v !== "null") throw new S3Error("InvalidArgument", "Invalid version id specified");
      src = src.slice(0, qi);
    }
    src = pctDecode(src).replace(/^\//, "");
    const i = src.indexOf("/");
    if (i <= 0 || i === src.length - 1) throw new S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey", { ArgumentName: "x-amz-copy-source" });
    const key = src.slice(i + 1);
    checkObjectKey(key);
    return { bucket: src.slice(0, i), key };
  }

  /** Loads the copy source, checking permission and the `x-amz-copy-source-if-*` conditions. */
  async function copySourceObject(c: Call): Promise<{ bucket: string; key: string; obj: S3Object }> {
    const src = copySource(c);
    const sb = await meta.bucket(src.bucket);
    if (!sb) throw new S3Error("NoSuchBucket", undefined, { BucketName: src.bucket });
    require(c, "read", sb);
    const e = await ctx.artifacts.get(objPath(src.bucket, src.key));
    if (!e || !e.blobDigest) throw new S3Error("NoSuchKey", undefined, { Key: src.key });
    const obj = toObject(e);
    const h = c.req.headers;
    const lmSec = Math.floor(obj.lastModified / 1000);
    const im = h.get("x-amz-copy-source-if-match");
    const inm = h.get("x-amz-copy-source-if-none-match");
    const ims = h.get("x-amz-copy-source-if-modified-since");
    const ius = h.get("x-amz-copy-source-if-unmodified-since");
    if (im !== null && !etagMatches(im, obj.etag)) throw new S3Error("PreconditionFailed", undefined, { Condition: "x-amz-copy-source-If-Match" });
    if (inm !== null && etagMatches(inm, obj.etag)) throw new S3Error("PreconditionFailed", undefined, { Condition: "x-amz-copy-source-If-None-Match" });
    if (im === null && ius !== null && lmSec > Math.floor(Date.parse(ius) / 1000)) throw new S3Error("PreconditionFailed", undefined, { Condition: "x-amz-copy-source-If-Unmodified-Since" });
    if (inm === null && ims !== null && lmSec <= Math.floor(Date.parse(ims) / 1000)) throw new S3Error("PreconditionFailed", undefined, { Condition: "x-amz-copy-source-If-Modified-Since" });
    return { ...src, obj };
  }

  /** A stream of a stored blob that also computes the md5 of what passes. */
  async function blobWithMd5(digest: string, range?: { start: number; end: number }, onDone?: (md5: string) => void) {
    const md5 = createHash("md5");
    let hex = "";
    const s = await ctx.storage.get(blobKey(digest), range);
    const stream = s.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(ch, ctl) {
          md5.update(ch);
          ctl.enqueue(ch);
        },
        flush() {
          hex = md5.digest("hex");
          onDone?.(hex);
        },
      }),
    );
    return { stream, md5: () => hex };
  }

  /** CopyObject (specs/s3.md §4, §5): COPY/REPLACE metadata; the copy's ETag is the MD5 of its bytes. */
  async function copyObject(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "write", b);
    const src = await copySourceObject(c);
    const directive = (c.req.headers.get("x-amz-metadata-directive") ?? "COPY").toUpperCase();
    if (directive !== "COPY" && directive !== "REPLACE") throw new S3Error("InvalidArgument", "Unknown metadata directive.");
    if (src.bucket === b.name && src.key === c.key && directive !== "REPLACE") {
      throw new S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.");
    }
    const se = src.obj.entry;
    const isMultipart = /-\d+"?$/.test(src.obj.etag);
    let headers: Record<string, string>;
    let contentType: string;
    if (directive === "REPLACE") {
      headers = objectHeaders(c.req.headers);
      contentType = c.req.headers.get("content-type") ?? "binary/octet-stream";
    } else {
      headers = Object.fromEntries(Object.entries(se.headers).filter(([k]) => !k.startsWith(INTERNAL) && k !== "etag" && !k.startsWith("x-amz-checksum-")));
      contentType = se.contentType ?? "binary/octet-stream";
    }
    headers[`${INTERNAL}owner`] = c.principal.name;
    if (!isMultipart) headers.etag = src.obj.etag;
    const body = await blobWithMd5(se.blobDigest!, undefined, (md5) => {
      if (isMultipart) headers.etag = `"${md5}"`;
    });
    const path = objPath(b.name, c.key!);
    let entry = await ctx.artifacts.put(path, body.stream, { contentType, headers, expect: { sha256: se.blobDigest!.slice(7), sizeBytes: se.sizeBytes } });
    const etag = headers.etag;
    if (entry.headers.etag !== etag) entry = await rewriteHeaders(path, entry, headers);
    audit(c, "s3.copy", path, { from: objPath(src.bucket, src.key) });
    return xmlResponse("CopyObjectResult", { LastModified: iso(entry.fetchedAt), ETag: etag });
  }

  /* ------------------------------------------------------------ listing */

  /** Walks keys of a bucket in order: contents and common prefixes, `limit` items, resuming after `marker`. */
  async function walk(bucket: string, o: { prefix: string; delimiter: string; marker: string; limit: number }) {
    const contents: S3Object[] = [];
    const prefixes: string[] = [];
    let after = o.marker;
    // Resuming after a common prefix skips every key inside it.
    if (o.delimiter && after.startsWith(o.prefix)) {
      const j = after.indexOf(o.delimiter, o.prefix.length);
      if (j >= 0) after = after.slice(0, j + o.delimiter.length) + MAX_CHAR;
    }
    let last = "";
    let truncated = false;
    if (o.limit === 0) return { contents, prefixes, truncated: false, last };
    const base = `${bucket}/`;
    outer: for (;;) {
      const rows = await ctx.artifacts.list(base + o.prefix, { after: after ? base + after : undefined, limit: Math.min(1000, o.limit - contents.length - prefixes.length + 1) });
      if (rows.length === 0) break;
      for (const r of rows) {
        const key = r.path.slice(base.length);
        if (r.status !== 200 || !r.blobDigest) {
          after = key;
          continue;
        }
        if (contents.length + prefixes.length >= o.limit) {
          truncated = true;
          break outer;
        }
        if (o.delimiter) {
          const j = key.indexOf(o.delimiter, o.prefix.length);
          if (j >= 0) {
            const cp = key.slice(0, j + o.delimiter.length);
            prefixes.push(cp);
            last = cp;
            after = cp + MAX_CHAR;
            continue outer; // re-query past the common prefix
          }
        }
        contents.push(toObject(r));
        last = key;
        after = key;
      }
    }
    return { contents, prefixes, truncated, last };
  }

  /** ListObjects v1 / ListObjectsV2 (specs/s3.md §3); the v2 continuation token is base64 of the last key or prefix. */
  async function listObjects(c: Call, version: 1 | 2): Promise<Response> {
    const b = await needBucket(c);
    require(c, "read", b);
    const q = c.query;
    const prefix = q.get("prefix") ?? "";
    const delimiter = q.get("delimiter") ?? "";
    const maxKeys = intParam(q.get("max-keys"), "max-keys", 1000, 1000);
    const enc = q.get("encoding-type");
    if (enc !== undefined && enc !== "url") throw new S3Error("InvalidArgument", "Invalid Encoding Method specified in Request", { ArgumentName: "encoding-type" });
    const e = (s: string | undefined) => (s === undefined ? undefined : enc === "url" ? uriEncode(s, false) : s);
    let marker: string;
    let token: string | undefined;
    if (version === 2) {
      token = q.get("continuation-token");
      if (token !== undefined) {
        marker = Buffer.from(token, "base64").toString("utf8");
        if (token === "" || Buffer.from(marker, "utf8").toString("base64") !== token) throw new S3Error("InvalidArgument", "The continuation token provided is incorrect", { ArgumentName: "continuation-token" });
      } else marker = q.get("start-after") ?? "";
    } else marker = q.get("marker") ?? "";
    const w = await walk(b.name, { prefix, delimiter, marker, limit: maxKeys });
    const withOwner = version === 1 || q.get("fetch-owner") === "true";
    const contents = w.contents.map((o) => ({
      Key: e(o.entry.path.slice(b.name.length + 1)),
      LastModified: iso(o.lastModified),
      ETag: o.etag,
      Size: o.size,
      Owner: withOwner ? owner(o.owner) : undefined,
      StorageClass: "STANDARD",
    }));
    const cps = w.prefixes.map((p) => ({ Prefix: e(p) }));
    const body: XmlObject =
      version === 2
        ? {
            Name: b.name,
            Prefix: e(prefix),
            Delimiter: delimiter ? e(delimiter) : undefined,
            MaxKeys: maxKeys,
            EncodingType: enc,
            KeyCount: contents.length + cps.length,
            IsTruncated: w.truncated,
            ContinuationToken: token,
            NextContinuationToken: w.truncated ? Buffer.from(w.last, "utf8").toString("base64") : undefined,
            StartAfter: token === undefined ? e(q.get("start-after")) : undefined,
            Contents: contents,
            CommonPrefixes: cps,
          }
        : {
            Name: b.name,
            Prefix: e(prefix),
            Marker: e(marker),
            Delimiter: delimiter ? e(delimiter) : undefined,
            MaxKeys: maxKeys,
            EncodingType: enc,
            IsTruncated: w.truncated,
            NextMarker: w.truncated && delimiter ? e(w.last) : undefined,
            Contents: contents,
            CommonPrefixes: cps,
          };
    return xmlResponse("ListBucketResult", body);
  }

  /** ListObjectVersions: every object as its only version, `VersionId` `null` (what s3-tests' cleanup needs). */
  async function listVersions(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "read", b);
    const q = c.query;
    const prefix = q.get("prefix") ?? "";
    const delimiter = q.get("delimiter") ?? "";
    const maxKeys = intParam(q.get("max-keys"), "max-keys", 1000, 1000);
    const enc = q.get("encoding-type");
    const e = (s: string | undefined) => (s === undefined ? undefined : enc === "url" ? uriEncode(s, false) : s);
    const keyMarker = q.get("key-marker") ?? "";
    const w = await walk(b.name, { prefix, delimiter, marker: keyMarker, limit: maxKeys });
    return xmlResponse("ListVersionsResult", {
      Name: b.name,
      Prefix: e(prefix),
      KeyMarker: e(keyMarker),
      VersionIdMarker: q.get("version-id-marker") ?? "",
      NextKeyMarker: w.truncated ? e(w.last) : undefined,
      NextVersionIdMarker: w.truncated ? "null" : undefined,
      MaxKeys: maxKeys,
      Delimiter: delimiter ? e(delimiter) : undefined,
      EncodingType: enc,
      IsTruncated: w.truncated,
      Version: w.contents.map((o) => ({
        Key: e(o.entry.path.slice(b.name.length + 1)),
        VersionId: "null",
        IsLatest: true,
        LastModified: iso(o.lastModified),
        ETag: o.etag,
        Size: o.size,
        Owner: owner(o.owner),
        StorageClass: "STANDARD",
      })),
      CommonPrefixes: w.prefixes.map((p) => ({ Prefix: e(p) })),
    });
  }

  /* ------------------------------------------------------------ multipart */

  async function needUpload(c: Call): Promise<UploadRow> {
    const id = c.query.get("uploadId") ?? "";
    const u = await meta.upload(id);
    if (!u || u.bucket !== c.bucket || u.key !== c.key) throw new S3Error("NoSuchUpload", undefined, { UploadId: id });
    return u;
  }

  /** CreateMultipartUpload: records the upload with its object headers; only COMPOSITE checksums. */
  async function createUpload(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "write", b);
    const h = c.req.headers;
    const algRaw = h.get("x-amz-checksum-algorithm")?.toLowerCase() ?? null;
    if (algRaw && !(CHECKSUM_ALGORITHMS as string[]).includes(algRaw)) throw new S3Error("InvalidRequest", `Checksum algorithm ${algRaw.toUpperCase()} is not supported`);
    const ctype = (h.get("x-amz-checksum-type") ?? "COMPOSITE").toUpperCase();
    if (algRaw && ctype === "FULL_OBJECT") throw new S3Error("InvalidRequest", "Only COMPOSITE multipart checksums are supported");
    const uploadId = Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString("base64url");
    await meta.createUpload({
      uploadId,
      bucket: b.name,
      key: c.key!,
      owner: c.principal.name,
      contentType: h.get("content-type") ?? "binary/octet-stream",
      headers: JSON.stringify(objectHeaders(h)),
      checksumAlgorithm: algRaw,
      initiatedAt: Date.now(),
    });
    const headers: Record<string, string> = {};
    if (algRaw) {
      headers["x-amz-checksum-algorithm"] = algRaw.toUpperCase();
      headers["x-amz-checksum-type"] = "COMPOSITE";
    }
    return xmlResponse("InitiateMultipartUploadResult", { Bucket: b.name, Key: c.key!, UploadId: uploadId }, headers);
  }

  function partNumberOf(c: Call): number {
    const v = c.query.get("partNumber") ?? "";
    const n = /^\d+$/.test(v) ? Number(v) : NaN;
    if (!(n >= 1 && n <= 10000)) throw new S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive", { ArgumentName: "partNumber", ArgumentValue: v });
    return n;
  }

  /** UploadPart / UploadPartCopy (specs/s3.md §6): stores the part under `uploads/s3/<uploadId>/`, replacing an earlier part N. */
  async function uploadPart(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "write", b);
    const u = await needUpload(c);
    const n = partNumberOf(c);
    const storageKey = `uploads/s3/${u.uploadId}/${n}-${crypto.randomUUID()}`;
    let md5: string;
    let size: number;
    let checksum: IntakeResult["checksum"];
    let copyResult: XmlObject | undefined;
    if (c.req.headers.has("x-amz-copy-source")) {
      // UploadPartCopy
      const src = await copySourceObject(c);
      const rh = c.req.headers.get("x-amz-copy-source-range");
      let range: { start: number; end: number } | undefined;
      if (rh) {
        const m = /^bytes=(\d+)-(\d+)$/.exec(rh);
        if (!m || Number(m[2]) < Number(m[1]) || Number(m[2]) >= src.obj.size) throw new S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy", { ArgumentName: "x-amz-copy-source-range" });
        range = { start: Number(m[1]), end: Number(m[2]) };
      }
      const body = await blobWithMd5(src.obj.entry.blobDigest!, range);
      const r = await ctx.storage.put(storageKey, body.stream);
      md5 = body.md5();
      size = r.sizeBytes;
      copyResult = { ETag: `"${md5}"`, LastModified: iso(Date.now()) };
    } else {
      const intake = intakeBody(c.req, { sig: c.sig, maxBytes: Math.min(maxObject, 5 * GiB), checksumAlgorithm: u.checksumAlgorithm as ChecksumAlgorithm | null });
      try {
        await ctx.storage.put(storageKey, intake.stream, intake.sha256 ? { sha256: intake.sha256 } : undefined);
      } catch (e) {
        throw sha256Mismatch(e, intake.sha256);
      }
      const r = intake.result();
      md5 = r.md5;
      size = r.sizeBytes;
      checksum = r.checksum;
      if (u.checksumAlgorithm && checksum && checksum.algorithm !== u.checksumAlgorithm) {
        await ctx.storage.delete(storageKey);
        throw new S3Error("InvalidRequest", `Checksum type mismatch: the upload uses ${u.checksumAlgorithm.toUpperCase()}`);
      }
    }
    let replaced: string | undefined;
    try {
      replaced = await meta.putPart({ uploadId: u.uploadId, partNumber: n, storageKey, sizeBytes: size, md5, checksum: checksum?.value ?? null, modifiedAt: Date.now() });
    } catch {
      await ctx.storage.delete(storageKey); // the upload was aborted or completed meanwhile
      throw new S3Error("NoSuchUpload", undefined, { UploadId: u.uploadId });
    }
    if (replaced) await ctx.storage.delete(replaced);
    const headers: Record<string, string> = { etag: `"${md5}"` };
    if (checksum) headers[`x-amz-checksum-${checksum.algorithm}`] = checksum.value;
    if (copyResult) return xmlResponse("CopyPartResult", copyResult, headers);
    return new Response(null, { status: 200, headers });
  }

  /** Deletes an upload's parts (storage and rows) and the upload row. */
  async function dropUpload(uploadId: string): Promise<void> {
    const parts = await meta.parts(uploadId);
    await meta.deleteUpload(uploadId); // cascades to s3_parts; a racing UploadPart then fails its FK and cleans up itself
    for (const p of parts) await ctx.storage.delete(p.storageKey).catch(() => {});
  }

  async function abortUpload(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "delete", b);
    const u = await needUpload(c);
    if (completing.has(u.uploadId)) throw new S3Error("NoSuchUpload", "The upload is being completed", { UploadId: u.uploadId });
    await dropUpload(u.uploadId);
    audit(c, "s3.multipart.abort", objPath(b.name, c.key!), { uploadId: u.uploadId });
    return new Response(null, { status: 204 });
  }

  /** Streams the stored parts one after the other (each read from storage; never the whole object in memory). */
  function concatParts(keys: string[]): ReadableStream<Uint8Array> {
    let i = 0;
    let reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
    return new ReadableStream<Uint8Array>({
      async pull(ctl) {
        for (;;) {
          if (!reader) {
            if (i >= keys.length) return ctl.close();
            reader = (await ctx.storage.get(keys[i++])).getReader();
          }
          const r = await reader.read();
          if (r.done) {
            reader = null;
            continue;
          }
          ctl.enqueue(r.value);
          return;
        }
      },
      async cancel(reason) {
        await reader?.cancel(reason);
      },
    });
  }

  /**
   * CompleteMultipartUpload (specs/s3.md §6): checks order, ETags, per-part checksums and the minimum part size, then
   * streams the chosen parts into one blob and drops the upload (unlisted parts are discarded).
   */
  async function completeUpload(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "write", b);
    const u = await needUpload(c);
    const doc = parseXml(await readXmlBody(c.req), "CompleteMultipartUpload");
    const want = listOf(doc.Part);
    if (want.length === 0) throw new S3Error("MalformedXML", "You must specify at least one part");
    if (completing.has(u.uploadId)) throw new S3Error("NoSuchUpload", "The upload is already being completed", { UploadId: u.uploadId });
    const stored = new Map((await meta.parts(u.uploadId)).map((p) => [p.partNumber, p]));
    const chosen = [];
    let prev = 0;
    for (const p of want) {
      const n = Number(textOf(p.PartNumber as never));
      const etag = unquote(textOf(p.ETag as never) ?? "");
      if (!Number.isInteger(n) || n < 1 || n > 10000) throw new S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive");
      if (n <= prev) throw new S3Error("InvalidPartOrder", undefined, { UploadId: u.uploadId });
      prev = n;
      const s = stored.get(n);
      if (!s || s.md5 !== etag) throw new S3Error("InvalidPart", undefined, { UploadId: u.uploadId, PartNumber: String(n), ETag: etag });
      if (u.checksumAlgorithm) {
        const tag = `Checksum${u.checksumAlgorithm.toUpperCase()}`;
        const given = textOf(p[tag] as never);
        if (given !== undefined && given !== s.checksum) throw new S3Error("InvalidPart", `The ${tag} of part ${n} does not match`, { UploadId: u.uploadId, PartNumber: String(n) });
      }
      chosen.push(s);
    }
    for (let i = 0; i < chosen.length - 1; i++) {
      if (chosen[i].sizeBytes < minPart) {
        throw new S3Error("EntityTooSmall", undefined, {
          UploadId: u.uploadId,
          PartNumber: String(chosen[i].partNumber),
          ProposedSize: String(chosen[i].sizeBytes),
          MinSizeAllowed: String(minPart),
        });
      }
    }
    const total = chosen.reduce((a, p) => a + p.sizeBytes, 0);
    if (total > maxObject * 10000) throw new S3Error("EntityTooLarge");
    completing.add(u.uploadId);
    try {
      const etag = `"${multipartEtag(chosen.map((p) => p.md5))}"`;
      const headers: Record<string, string> = {
        ...(JSON.parse(u.headers) as Record<string, string>),
        etag,
        [`${INTERNAL}owner`]: u.owner,
        [`${INTERNAL}parts`]: String(chosen.length),
      };
      const respHeaders: Record<string, string> = {};
      if (u.checksumAlgorithm && chosen.every((p) => p.checksum)) {
        const v = compositeChecksum(u.checksumAlgorithm as ChecksumAlgorithm, chosen.map((p) => p.checksum!));
        headers[`x-amz-checksum-${u.checksumAlgorithm}`] = v;
        headers["x-amz-checksum-type"] = "COMPOSITE";
        respHeaders[`x-amz-checksum-${u.checksumAlgorithm}`] = v;
      }
      const path = objPath(b.name, u.key);
      await ctx.artifacts.put(path, concatParts(chosen.map((p) => p.storageKey)), {
        contentType: u.contentType ?? "binary/octet-stream",
        headers,
        expect: { sizeBytes: total },
      });
      await dropUpload(u.uploadId);
      audit(c, "s3.multipart.complete", path, { uploadId: u.uploadId, parts: chosen.length, sizeBytes: total });
      const location = `${ctx.baseUrl(c.req)}/${b.name}/${u.key.split("/").map((s) => uriEncode(s)).join("/")}`;
      const body: XmlObject = { Location: location, Bucket: b.name, Key: u.key, ETag: etag };
      if (u.checksumAlgorithm && respHeaders[`x-amz-checksum-${u.checksumAlgorithm}`]) {
        body[`Checksum${u.checksumAlgorithm.toUpperCase()}`] = respHeaders[`x-amz-checksum-${u.checksumAlgorithm}`];
        body.ChecksumType = "COMPOSITE";
      }
      return xmlResponse("CompleteMultipartUploadResult", body, respHeaders);
    } finally {
      completing.delete(u.uploadId);
    }
  }

  /** ListParts: `max-parts` (≤ 1000) after `part-number-marker`. */
  async function listParts(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "read", b);
    const u = await needUpload(c);
    const maxParts = intParam(c.query.get("max-parts"), "max-parts", 1000, 1000);
    const marker = intParam(c.query.get("part-number-marker"), "part-number-marker", 0);
    const rows = await meta.parts(u.uploadId, { afterPart: marker, limit: maxParts + 1 });
    const truncated = rows.length > maxParts;
    const shown = rows.slice(0, maxParts);
    const tag = u.checksumAlgorithm ? `Checksum${u.checksumAlgorithm.toUpperCase()}` : undefined;
    return xmlResponse("ListPartsResult", {
      Bucket: b.name,
      Key: u.key,
      UploadId: u.uploadId,
      Initiator: owner(u.owner),
      Owner: owner(u.owner),
      StorageClass: "STANDARD",
      PartNumberMarker: marker,
      NextPartNumberMarker: shown.length ? shown[shown.length - 1].partNumber : marker,
      MaxParts: maxParts,
      IsTruncated: truncated,
      ChecksumAlgorithm: u.checksumAlgorithm?.toUpperCase(),
      Part: shown.map((p) => {
        const x: XmlObject = { PartNumber: p.partNumber, LastModified: iso(p.modifiedAt), ETag: `"${p.md5}"`, Size: p.sizeBytes };
        if (tag && p.checksum) x[tag] = p.checksum;
        return x;
      }),
    });
  }

  /** ListMultipartUploads: prefix, delimiter (common prefixes), `key-marker`/`upload-id-marker`, `max-uploads` ≤ 1000. */
  async function listUploads(c: Call): Promise<Response> {
    const b = await needBucket(c);
    require(c, "read", b);
    const q = c.query;
    const prefix = q.get("prefix") ?? "";
    const delimiter = q.get("delimiter") ?? "";
    const max = intParam(q.get("max-uploads"), "max-uploads", 1000, 1000);
    const keyMarker = q.get("key-marker") ?? "";
    const idMarker = q.get("upload-id-marker") ?? "";
    const enc = q.get("encoding-type");
    const e = (s: string | undefined) => (s === undefined ? undefined : enc === "url" ? uriEncode(s, false) : s);
    let afterKey = keyMarker || undefined;
    let afterUploadId = keyMarker ? idMarker : undefined;
    // Resuming after a common prefix skips every upload inside it (as walk() does for ListObjects); otherwise a page
    // ending on a common prefix would return that prefix again, forever.
    if (delimiter && keyMarker.startsWith(prefix)) {
      const j = keyMarker.indexOf(delimiter, prefix.length);
      if (j >= 0) {
        afterKey = keyMarker.slice(0, j + delimiter.length) + MAX_CHAR;
        afterUploadId = undefined;
      }
    }
    const rows = await meta.uploads(b.name, { prefix, afterKey, afterUploadId, limit: 100000 });
    const uploads: UploadRow[] = [];
    const prefixes: string[] = [];
    let truncated = false;
    let nextKey = "";
    let nextId = "";
    for (const r of rows) {
      if (delimiter) {
        const j = r.key.indexOf(delimiter, prefix.length);
        if (j >= 0) {
          const cp = r.key.slice(0, j + delimiter.length);
          if (prefixes[prefixes.length - 1] === cp) continue;
          if (uploads.length + prefixes.length >= max) {
            truncated = true;
            break;
          }
          prefixes.push(cp);
          nextKey = cp;
          nextId = "";
          continue;
        }
      }
      if (uploads.length + prefixes.length >= max) {
        truncated = true;
        break;
      }
      uploads.push(r);
      nextKey = r.key;
      nextId = r.uploadId;
    }
    return xmlResponse("ListMultipartUploadsResult", {
      Bucket: b.name,
      KeyMarker: e(keyMarker),
      UploadIdMarker: idMarker,
      NextKeyMarker: truncated ? e(nextKey) : undefined,
      NextUploadIdMarker: truncated ? nextId : undefined,
      Prefix: e(prefix),
      Delimiter: delimiter ? e(delimiter) : undefined,
      MaxUploads: max,
      EncodingType: enc,
      IsTruncated: truncated,
      Upload: uploads.map((u) => ({
        Key: e(u.key),
        UploadId: u.uploadId,
        Initiator: owner(u.owner),
        Owner: owner(u.owner),
        StorageClass: "STANDARD",
        Initiated: iso(u.initiatedAt),
        ChecksumAlgorithm: u.checksumAlgorithm?.toUpperCase(),
      })),
      CommonPrefixes: prefixes.map((p) => ({ Prefix: e(p) })),
    });
  }

  /**
   * Starts creating the buckets named in the config (owned by their `owner`, default `admin`) when missing; requests
   * wait for it (a failure answers them with a 500 and is retried by the next request).
   */
  function ensureConfiguredBuckets(): void {
    configured = (async () => {
      for (const bc of cfg.buckets ?? []) {
        if (validBucketName(bc.name)) await meta.createBucket(bc.name, bc.owner ?? "admin", "");
      }
    })();
    configured.catch(() => {}); // reported by the requests that wait for it
  }

  return { handle, ensureConfiguredBuckets };
}

/**
 * `vault gc` for an s3 repository: aborts multipart uploads initiated before `olderThan` (epoch ms) and more than
 * `abortIncompleteUploadsAfterSeconds` ago (their parts' bytes and rows are removed), and deletes part files under `uploads/s3/` that no part row references (left by a
 * crash between storing a part and recording it) when they are older than `olderThan`.
 * @returns `removed`: artifact rows removed (always 0: objects are only removed by clients); counts are logged
 */
export async function gcS3(ctx: GcContext, o: { olderThan: number }): Promise<{ removed: number }> {
  const meta = createS3Meta(ctx.metadata, ctx.repo.name);
  let uploads = 0;
  let files = 0;
  const maxAgeMs = ((ctx.config as S3RepoConfig).abortIncompleteUploadsAfterSeconds ?? 86400) * 1000;
  for (const u of await meta.staleUploads(Math.min(o.olderThan, Date.now() - maxAgeMs))) {
    const parts = await meta.parts(u.uploadId);
    await meta.deleteUpload(u.uploadId);
    for (const p of parts) await ctx.storage.delete(p.storageKey).catch(() => {});
    uploads++;
  }
  for await (const f of ctx.storage.list("uploads/s3/")) {
    if (f.modifiedAt < o.olderThan && !(await meta.partKeyKnown(f.key))) {
      await ctx.storage.delete(f.key).catch(() => {});
      files++;
    }
  }
  if (uploads || files) ctx.log.info("s3 gc", { abortedUploads: uploads, orphanPartFiles: files });
  return { removed: 0 };
}

/** AWS Signature Version 4 for S3 (specs/s3.md §8): Authorization header and presigned-URL verification, canonical requests, signing keys, chunk/trailer signatures. */
import { createHmac, createHash, timingSafeEqual } from "node:crypto";
import { S3Error } from "./errors.ts";

/** Hex sha256 of the empty string. */
export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/** `x-amz-content-sha256` of a plain body that is not hashed (always the payload hash of presigned requests). */
export const UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD";
/** `x-amz-content-sha256` of an aws-chunked body with signed chunks (AWS "sigv4-streaming"; specs/s3.md §8). */
export const STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/** Signed chunks plus a signed trailer (AWS "sigv4-streaming-trailers"). */
export const STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
/** Unsigned aws-chunked body with a trailer (the SDKs' default for streamed uploads). */
export const STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
const ALGORITHM = "AWS4-HMAC-SHA256";

/** Largest clock difference accepted for header-signed requests, ms (15 minutes, as S3). */
export const MAX_SKEW_MS = 15 * 60 * 1000;
/** Longest presigned-URL validity, seconds (7 days, as S3). */
export const MAX_PRESIGN_EXPIRES_SECONDS = 604800;

/** HMAC-SHA256 of `data` under `key` (32 raw bytes). */
export function hmac(key: Uint8Array | string, data: string): Buffer {
  return createHmac("sha256", key).update(data).digest();
}

/** Lower-case hex sha256 of a string or bytes. */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

const keyCache = new Map<string, Buffer>();

/**
 * The SigV4 signing key (specs/s3.md §8 step 3): HMAC chain `"AWS4"+secret` → date (yyyymmdd) → region → service →
 * `aws4_request`; 32 raw bytes. Cached per (secret, date, region, service); the cache is bounded (1000 entries).
 */
export function signingKey(secret: string, date: string, region: string, service = "s3"): Buffer {
  const id = `${secret}\n${date}\n${region}\n${service}`;
  let k = keyCache.get(id);
  if (!k) {
    k = hmac(hmac(hmac(hmac(`AWS4${secret}`, date), region), service), "aws4_request");
    if (keyCache.size > 1000) keyCache.clear();
    keyCache.set(id, k);
  }
  return k;
}

/** RFC 3986 encoding as SigV4 wants it: unreserved `A-Za-z0-9-._~` kept, everything else `%XX` (upper case); `/` kept unless `encodeSlash`. */
export function uriEncode(s: string, encodeSlash = true): string {
  let out = encodeURIComponent(s).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
  if (!encodeSlash) out = out.replace(/%2F/g, "/");
  return out;
}

/** Percent-decodes without treating `+` as a space. @throws S3Error InvalidArgument (400) on a malformed escape */
export function pctDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new S3Error("InvalidArgument", "Invalid percent-encoding in request URI");
  }
}

/**
 * Canonical URI of an S3 request from the raw path as received (specs/s3.md §8 step 1): each `/`-separated segment
 * decoded once and re-encoded with {@link uriEncode} (S3 does not normalise `.`/`//` and does not double-encode).
 * @throws S3Error InvalidArgument (400) on a malformed percent-escape
 */
export function canonicalUri(rawPath: string): string {
  if (rawPath === "") return "/";
  return rawPath
    .split("/")
    .map((seg) => uriEncode(pctDecode(seg)))
    .join("/");
}

/**
 * Splits a raw query string (leading `?` optional) into decoded [name, value] pairs in request order (valueless
 * parameters get ""). `+` stays literal. @throws S3Error InvalidArgument (400) on a malformed percent-escape
 */
export function parseQuery(rawQuery: string): [string, string][] {
  const q = rawQuery.startsWith("?") ? rawQuery.slice(1) : rawQuery;
  if (q === "") return [];
  const out: [string, string][] = [];
  for (const part of q.split("&")) {
    if (part === "") continue;
    const i = part.indexOf("=");
    out.push(i < 0 ? [pctDecode(part), ""] : [pctDecode(part.slice(0, i)), pctDecode(part.slice(i + 1))]);
  }
  return out;
}

/**
 * Canonical query string (specs/s3.md §8 step 1): names and values uriEncoded, sorted by name then value,
 * `name=value` joined by `&`. `exclude` drops one parameter (`X-Amz-Signature` of presigned URLs).
 */
export function canonicalQuery(pairs: [string, string][], exclude?: string): string {
  return pairs
    .filter(([k]) => k !== exclude)
    .map(([k, v]) => [uriEncode(k), uriEncode(v)] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
}

/**
 * Canonical headers block (`name:value\n` for each signed header, in `signed` order, values trimmed and inner
 * spaces collapsed; an absent header gives `name:\n`). `signed` holds lower-case names.
 */
export function canonicalHeaders(headers: Headers, signed: string[]): string {
  let s = "";
  for (const name of signed) {
    const v = headers.get(name);
    s += `${name}:${(v ?? "").trim().replace(/\s+/g, " ")}\n`;
  }
  return s;
}

/**
 * The whole canonical request (specs/s3.md §8 step 1): method, canonical URI, query, headers, signed header list,
 * payload hash, joined by `\n`.
 * @param o.payloadHash the declared `x-amz-content-sha256` (64 hex, `UNSIGNED-PAYLOAD` or `STREAMING-…`)
 * @param o.excludeQuery a query parameter left out (`X-Amz-Signature` for presigned URLs)
 * @throws S3Error InvalidArgument (400) on a malformed percent-escape in the path
 */
export function canonicalRequest(o: {
  method: string;
  rawPath: string;
  query: [string, string][];
  headers: Headers;
  signedHeaders: string[];
  payloadHash: string;
  excludeQuery?: string;
}): string {
  return [
    o.method,
    canonicalUri(o.rawPath),
    canonicalQuery(o.query, o.excludeQuery),
    canonicalHeaders(o.headers, o.signedHeaders),
    o.signedHeaders.join(";"),
    o.payloadHash,
  ].join("\n");
}

/** String to sign (specs/s3.md §8 step 2). `amzDate` is `yyyymmddThhmmssZ`; `scope` is `<date>/<region>/<service>/aws4_request`. */
export function stringToSign(amzDate: string, scope: string, canonical: string): string {
  return `${ALGORITHM}\n${amzDate}\n${scope}\n${sha256Hex(canonical)}`;
}

/**
 * Signature of one aws-chunked chunk (AWS "sigv4-streaming", specs/s3.md §8), lower-case hex.
 * @param key the request's signing key; `previous` the previous signature in the chain (first: the header signature)
 * @param chunkHash hex sha256 of the chunk data ({@link EMPTY_SHA256} for the final zero-length chunk)
 */
export function chunkSignature(key: Uint8Array, amzDate: string, scope: string, previous: string, chunkHash: string): string {
  return hmac(key, `AWS4-HMAC-SHA256-PAYLOAD\n${amzDate}\n${scope}\n${previous}\n${EMPTY_SHA256}\n${chunkHash}`).toString("hex");
}

/**
 * Signature of the trailing headers of an aws-chunked body (AWS "sigv4-streaming-trailers"), lower-case hex.
 * `previous` is the final chunk's signature; `canonicalTrailers` the `name:value\n` lines as received.
 */
export function trailerSignature(key: Uint8Array, amzDate: string, scope: string, previous: string, canonicalTrailers: string): string {
  return hmac(key, `AWS4-HMAC-SHA256-TRAILER\n${amzDate}\n${scope}\n${previous}\n${sha256Hex(canonicalTrailers)}`).toString("hex");
}

/** Constant-time comparison of two hex signatures; false when lengths differ or both are empty. */
export function sameSignature(a: string, b: string): boolean {
  if (a.length !== b.length || a.length === 0) return false;
  return timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

/** The credential scope of a signed request. */
export interface Credential {
  /** The signer's access key id. */
  accessKeyId: string;
  /** yyyymmdd */
  date: string;
  /** Region the client signed for (any region is accepted). */
  region: string;
  /** Always `s3` (parseSignature refuses other services). */
  service: string;
  /** `<date>/<region>/<service>/aws4_request` */
  scope: string;
}

/** What a request says about its signature, before verification. */
export interface ParsedSignature {
  /** `Authorization` header, or presigned `X-Amz-*` query parameters (AWS "sigv4-query-string-auth"). */
  kind: "header" | "presigned";
  credential: Credential;
  /** Lower-case header names, in the order the client listed them. */
  signedHeaders: string[];
  /** Hex signature as sent (compared case-insensitively). */
  signature: string;
  /** ISO 8601 basic, e.g. `20130524T000000Z`; from `x-amz-date`, else the `Date` header (header kind). */
  amzDate: string;
  /** Presigned only: validity in seconds. */
  expiresSeconds?: number;
  /** `x-amz-content-sha256` (header) or `UNSIGNED-PAYLOAD` (presigned). */
  payloadHash: string;
}

function parseCredential(v: string, err: "AuthorizationHeaderMalformed" | "AuthorizationQueryParametersError"): Credential {
  const parts = v.split("/");
  if (parts.length !== 5 || parts[4] !== "aws4_request" || !/^\d{8}$/.test(parts[1]) || parts[0] === "") {
    throw new S3Error(err, `the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".`);
  }
  if (parts[3] !== "s3") throw new S3Error(err, `the credential scope names service '${parts[3]}', expected 's3'`);
  return { accessKeyId: parts[0], date: parts[1], region: parts[2], service: parts[3], scope: parts.slice(1).join("/") };
}

/** Parses an amz date (`yyyymmddThhmmssZ`) into epoch ms; NaN when malformed. */
export function parseAmzDate(s: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) return NaN;
  return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
}

/** Formats epoch ms as an amz date (`yyyymmddThhmmssZ`). */
export function formatAmzDate(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

/**
 * Reads the signature of a request (specs/s3.md §8): `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
 * Signature=…` or presigned `X-Amz-*` query parameters (`X-Amz-Expires` ≤ 604800 s). Nothing is verified yet.
 * @returns null for an unsigned (anonymous) request
 * @throws S3Error AuthorizationHeaderMalformed / AuthorizationQueryParametersError (400; malformed or non-`s3` scope),
 *   InvalidRequest (400; SigV2, missing `x-amz-content-sha256`), AccessDenied (403; neither `x-amz-date` nor `Date`)
 */
export function parseSignature(headers: Headers, query: [string, string][]): ParsedSignature | null {
  const auth = headers.get("authorization");
  if (auth) {
    if (auth.startsWith("AWS ")) throw new S3Error("InvalidRequest", "Signature Version 2 is not supported; please use AWS4-HMAC-SHA256.");
    if (!auth.startsWith(`${ALGORITHM} `)) throw new S3Error("AuthorizationHeaderMalformed", "Unsupported authorization type.");
    const fields: Record<string, string> = {};
    for (const kv of auth.slice(ALGORITHM.length + 1).split(",")) {
      const t = kv.trim();
      const i = t.indexOf("=");
      if (i > 0) fields[t.slice(0, i)] = t.slice(i + 1);
    }
    if (!fields.Credential || !fields.SignedHeaders || !fields.Signature) {
      throw new S3Error("AuthorizationHeaderMalformed", "The authorization header is malformed; it needs Credential, SignedHeaders and Signature.");
    }
    const amzDate = headers.get("x-amz-date") ?? "";
    let date = amzDate;
    if (!date) {
      const d = headers.get("date");
      const ms = d ? Date.parse(d) : NaN;
      if (Number.isNaN(ms)) throw new S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header");
      date = formatAmzDate(ms);
    }
    const payloadHash = headers.get("x-amz-content-sha256");
    if (!payloadHash) throw new S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256");
    return {
      kind: "header",
      credential: parseCredential(fields.Credential, "AuthorizationHeaderMalformed"),
      signedHeaders: fields.SignedHeaders.split(";"),
      signature: fields.Signature,
      amzDate: date,
      payloadHash,
    };
  }
  const q = new Map(query);
  if (!q.has("X-Amz-Algorithm") && !q.has("X-Amz-Signature")) {
    if (q.has("AWSAccessKeyId") && q.has("Signature")) throw new S3Error("InvalidRequest", "Signature Version 2 is not supported; please use AWS4-HMAC-SHA256.");
    return null;
  }
  if (q.get("X-Amz-Algorithm") !== ALGORITHM) throw new S3Error("AuthorizationQueryParametersError", "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"");
  for (const p of ["X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Expires"]) {
    if (!q.get(p)) throw new S3Error("AuthorizationQueryParametersError", `Query-string authentication version 4 requires the ${p} parameter.`);
  }
  const expires = Number(q.get("X-Amz-Expires"));
  if (!Number.isInteger(expires) || expires < 0) throw new S3Error("AuthorizationQueryParametersError", "X-Amz-Expires should be a number");
  if (expires > MAX_PRESIGN_EXPIRES_SECONDS) {
    throw new S3Error("AuthorizationQueryParametersError", "X-Amz-Expires must be less than a week (in seconds) that is 604800");
  }
  return {
    kind: "presigned",
    credential: parseCredential(q.get("X-Amz-Credential")!, "AuthorizationQueryParametersError"),
    signedHeaders: q.get("X-Amz-SignedHeaders")!.split(";"),
    signature: q.get("X-Amz-Signature")!,
    amzDate: q.get("X-Amz-Date")!,
    expiresSeconds: expires,
    payloadHash: UNSIGNED_PAYLOAD,
  };
}

/** A verified signature: who signed, and what the body decoder needs to check chunk signatures. */
export interface VerifiedSignature {
  /** The signer's access key id. */
  accessKeyId: string;
  /** Payload hash the request declared (`x-amz-content-sha256`), e.g. 64 hex or `STREAMING-…`. */
  payloadHash: string;
  /** Signing key (for chunk and trailer signatures). */
  key: Buffer;
  /** Header signature = seed of the chunk-signature chain. */
  seedSignature: string;
  /** Request time, `yyyymmddThhmmssZ` (input of the chunk signatures). */
  amzDate: string;
  /** `<date>/<region>/s3/aws4_request`. */
  scope: string;
  /** Region the client signed for. */
  region: string;
}

/**
 * Verifies a parsed signature against the request (specs/s3.md §8 steps 1–3; presigned: AWS "sigv4-query-string-auth").
 * @param req `rawPath` as received (still percent-encoded), `query` as {@link parseQuery} returns it
 * @param secret the secret access key of `sig.credential.accessKeyId`
 * @param nowMs current time, epoch ms
 * @throws S3Error RequestTimeTooSkewed (403; header, skew > 15 min), AccessDenied (403; presigned expired or more than
 *   15 min ahead, malformed header date), SignatureDoesNotMatch (403), AuthorizationHeaderMalformed /
 *   AuthorizationQueryParametersError (400; host not signed, credential date ≠ request date, malformed presigned date)
 */
export function verifySignature(
  sig: ParsedSignature,
  req: { method: string; rawPath: string; query: [string, string][]; headers: Headers },
  secret: string,
  nowMs: number,
): VerifiedSignature {
  const t = parseAmzDate(sig.amzDate);
  if (Number.isNaN(t)) throw new S3Error(sig.kind === "header" ? "AccessDenied" : "AuthorizationQueryParametersError", "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"");
  if (sig.kind === "header") {
    if (Math.abs(nowMs - t) > MAX_SKEW_MS) {
      throw new S3Error("RequestTimeTooSkewed", undefined, {
        RequestTime: sig.amzDate,
        ServerTime: new Date(nowMs).toISOString(),
        MaxAllowedSkewMilliseconds: String(MAX_SKEW_MS),
      });
    }
  } else {
    if (t - nowMs > MAX_SKEW_MS) throw new S3Error("AccessDenied", "Request is not valid yet");
    if (nowMs > t + (sig.expiresSeconds ?? 0) * 1000) {
      throw new S3Error("AccessDenied", "Request has expired", {
        Expires: new Date(t + (sig.expiresSeconds ?? 0) * 1000).toISOString(),
        ServerTime: new Date(nowMs).toISOString(),
      });
    }
  }
  if (sig.amzDate.slice(0, 8) !== sig.credential.date) {
    throw new S3Error(sig.kind === "header" ? "AuthorizationHeaderMalformed" : "AuthorizationQueryParametersError", `Invalid credential date "${sig.credential.date}". This date is not the same as X-Amz-Date: "${sig.amzDate.slice(0, 8)}".`);
  }
  if (!sig.signedHeaders.includes("host")) {
    throw new S3Error("AuthorizationHeaderMalformed", "The host header must be signed");
  }
  const canonical = canonicalRequest({
    method: req.method,
    rawPath: req.rawPath,
    query: req.query,
    headers: req.headers,
    signedHeaders: sig.signedHeaders,
    payloadHash: sig.payloadHash,
    excludeQuery: sig.kind === "presigned" ? "X-Amz-Signature" : undefined,
  });
  const key = signingKey(secret, sig.credential.date, sig.credential.region, sig.credential.service);
  const sts = stringToSign(sig.amzDate, sig.credential.scope, canonical);
  const expected = hmac(key, sts).toString("hex");
  if (!sameSignature(expected, sig.signature.toLowerCase())) {
    throw new S3Error("SignatureDoesNotMatch", undefined, {
      AWSAccessKeyId: sig.credential.accessKeyId,
      StringToSign: sts,
      CanonicalRequest: canonical,
    });
  }
  return {
    accessKeyId: sig.credential.accessKeyId,
    payloadHash: sig.payloadHash,
    key,
    seedSignature: expected,
    amzDate: sig.amzDate,
    scope: sig.credential.scope,
    region: sig.credential.region,
  };
}

/**
 * Signs a request the way an SDK would (used by tests and benchmarks). Sets `x-amz-date` and `x-amz-content-sha256`
 * on `o.headers` (which must already hold `host`), signs `host`, `content-md5`, `content-type` and every `x-amz-*`
 * header present, and returns the `Authorization` value to add plus what an aws-chunked encoder needs.
 * @param o.region default `us-east-1`; `o.nowMs` epoch ms, default now
 */
export function signRequest(o: {
  method: string;
  url: URL;
  headers: Headers;
  accessKeyId: string;
  secret: string;
  region?: string;
  payloadHash: string;
  nowMs?: number;
}): { authorization: string; amzDate: string; signature: string; key: Buffer; scope: string } {
  const amzDate = formatAmzDate(o.nowMs ?? Date.now());
  const region = o.region ?? "us-east-1";
  const scope = `${amzDate.slice(0, 8)}/${region}/s3/aws4_request`;
  o.headers.set("x-amz-date", amzDate);
  o.headers.set("x-amz-content-sha256", o.payloadHash);
  const signed = [...new Set(["host", ...[...o.headers.keys()].filter((h) => h === "host" || h.startsWith("x-amz-") || h === "content-md5" || h === "content-type")])].sort();
  const canonical = canonicalRequest({
    method: o.method,
    rawPath: o.url.pathname,
    query: parseQuery(o.url.search),
    headers: o.headers,
    signedHeaders: signed,
    payloadHash: o.payloadHash,
  });
  const key = signingKey(o.secret, amzDate.slice(0, 8), region);
  const signature = hmac(key, stringToSign(amzDate, scope, canonical)).toString("hex");
  return {
    authorization: `${ALGORITHM} Credential=${o.accessKeyId}/${scope}, SignedHeaders=${signed.join(";")}, Signature=${signature}`,
    amzDate,
    signature,
    key,
    scope,
  };
}

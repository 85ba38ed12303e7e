/** S3 error catalogue and the S3 XML error body (specs/s3.md §7): every error answer carries a RequestId equal to `x-amz-request-id`. */
import { VaultError } from "../../core/plugin.ts";

/**
 * Every S3 error code this plugin answers with: HTTP status and the default `Message`.
 * @see https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html
 */
export const S3_ERRORS = {
  AccessDenied: [403, "Access Denied"],
  AuthorizationHeaderMalformed: [400, "The authorization header is malformed."],
  AuthorizationQueryParametersError: [400, "Error parsing the X-Amz-Credential parameter."],
  BadDigest: [400, "The Content-MD5 or checksum you specified did not match what we received."],
  BucketAlreadyExists: [409, "The requested bucket name is not available."],
  BucketAlreadyOwnedByYou: [409, "Your previous request to create the named bucket succeeded and you already own it."],
  BucketNotEmpty: [409, "The bucket you tried to delete is not empty."],
  EntityTooLarge: [400, "Your proposed upload exceeds the maximum allowed object size."],
  EntityTooSmall: [400, "Your proposed upload is smaller than the minimum allowed object size."],
  IncompleteBody: [400, "You did not provide the number of bytes specified by the Content-Length HTTP header."],
  InternalError: [500, "We encountered an internal error. Please try again."],
  InvalidAccessKeyId: [403, "The AWS access key Id you provided does not exist in our records."],
  InvalidArgument: [400, "Invalid Argument"],
  InvalidBucketName: [400, "The specified bucket is not valid."],
  InvalidDigest: [400, "The Content-MD5 or checksum you specified is not valid."],
  InvalidPart: [400, "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag."],
  InvalidPartOrder: [400, "The list of parts was not in ascending order. Parts must be ordered by part number."],
  InvalidRange: [416, "The requested range is not satisfiable"],
  InvalidRequest: [400, "Invalid Request"],
  KeyTooLongError: [400, "Your key is too long"],
  MalformedXML: [400, "The XML you provided was not well-formed or did not validate against our published schema."],
  MethodNotAllowed: [405, "The specified method is not allowed against this resource."],
  MissingContentLength: [411, "You must provide the Content-Length HTTP header."],
  MissingSecurityHeader: [400, "Your request is missing a required header."],
  NoSuchBucket: [404, "The specified bucket does not exist."],
  NoSuchBucketPolicy: [404, "The bucket policy does not exist"],
  NoSuchCORSConfiguration: [404, "The CORS configuration does not exist"],
  NoSuchKey: [404, "The specified key does not exist."],
  NoSuchLifecycleConfiguration: [404, "The lifecycle configuration does not exist"],
  NoSuchTagSet: [404, "The TagSet does not exist"],
  NoSuchUpload: [404, "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."],
  NotImplemented: [501, "A header you provided implies functionality that is not implemented."],
  PreconditionFailed: [412, "At least one of the preconditions you specified did not hold."],
  RequestTimeTooSkewed: [403, "The difference between the request time and the current time is too large."],
  ServerSideEncryptionConfigurationNotFoundError: [404, "The server side encryption configuration was not found"],
  SignatureDoesNotMatch: [403, "The request signature we calculated does not match the signature you provided. Check your key and signing method."],
  SlowDown: [503, "Please reduce your request rate."],
  XAmzContentSHA256Mismatch: [400, "The provided 'x-amz-content-sha256' header does not match what was computed."],
} as const satisfies Record<string, readonly [number, string]>;

/** One S3 error code. */
export type S3ErrorCode = keyof typeof S3_ERRORS;

/**
 * An S3 protocol error. A VaultError whose `code` is the S3 code (e.g. `NoSuchKey`) and whose `detail`
 * holds the extra XML elements of the error body (`Key`, `BucketName`, `UploadId`, …; string values only).
 */
export class S3Error extends VaultError {
  /**
   * @param message defaults to the catalogue's `Message` for `code`
   * @param fields extra elements of the XML body (`Key`, `BucketName`, `UploadId`, …)
   * @param headers sent with the error answer (e.g. `content-range` on 416 InvalidRange)
   */
  constructor(code: S3ErrorCode, message?: string, fields: Record<string, string> = {}, headers: Record<string, string> = {}) {
    const [status, dflt] = S3_ERRORS[code];
    super(code, status, message ?? dflt, fields, headers);
    this.name = "S3Error";
  }
}

/** Shorthand: `throw s3err("NoSuchKey", undefined, { Key })`. */
export function s3err(code: S3ErrorCode, message?: string, fields?: Record<string, string>): S3Error {
  return new S3Error(code, message, fields);
}

/** A fresh request id: 16 upper-case hex characters, as S3 sends in `x-amz-request-id`. */
export function newRequestId(): string {
  const b = crypto.getRandomValues(new Uint8Array(8));
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s.toUpperCase();
}

/** Escapes text for an XML element body or attribute. */
export function xmlEscape(s: string): string {
  return s.replace(/[&<>"']/g, (c) => (c === "&" ? "&amp;" : c === "<" ? "&lt;" : c === ">" ? "&gt;" : c === '"' ? "&quot;" : "&apos;"));
}

/**
 * Maps anything thrown while serving an S3 request onto an S3Error: S3Errors pass through, core VaultErrors
 * map by meaning (401/403 → AccessDenied, 404 → NoSuchKey, 413 → EntityTooLarge, 416 → InvalidRange,
 * digest mismatch → BadDigest), anything else is InternalError (details logged, never sent).
 */
export function toS3Error(e: unknown): S3Error {
  if (e instanceof S3Error) return e;
  if (e instanceof VaultError) {
    if ((S3_ERRORS as Record<string, unknown>)[e.code]) return new S3Error(e.code as S3ErrorCode, e.message, stringFields(e.detail), e.headers);
    switch (e.status) {
      case 401:
      case 403:
        return new S3Error("AccessDenied", e.message);
      case 404:
        return new S3Error("NoSuchKey", e.message);
      case 405:
        return new S3Error("MethodNotAllowed", e.message);
      case 411:
        return new S3Error("MissingContentLength", e.message);
      case 413:
        return new S3Error("EntityTooLarge", e.message);
      case 416:
        return new S3Error("InvalidRange", e.message);
      case 503:
        return new S3Error("SlowDown", e.message);
    }
    if (e.code === "VAULT_DIGEST_MISMATCH" || e.code === "VAULT_SIZE_MISMATCH") return new S3Error("BadDigest", e.message);
    if (e.status === 400) return new S3Error("InvalidRequest", e.message);
  }
  const name = (e as { name?: string } | null)?.name;
  if (name === "DigestMismatchError") return new S3Error("BadDigest");
  if (name === "InvalidKeyError") return new S3Error("InvalidArgument", "Invalid key");
  return new S3Error("InternalError");
}

function stringFields(d: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(d)) if (typeof v === "string" && /^[A-Z]/.test(k)) out[k] = v;
  return out;
}

/**
 * Renders an S3 error response: `application/xml` body
 * `<Error><Code/><Message/>…fields…<Resource/><RequestId/><HostId/></Error>`, status from the catalogue,
 * `x-amz-request-id` equal to `RequestId`. HEAD answers carry no body (S3 sends none).
 * @param resource the request path, echoed as `Resource`
 */
export function renderS3Error(err: S3Error, o: { requestId: string; hostId?: string; resource?: string; head?: boolean }): Response {
  const headers: Record<string, string> = {
    "x-amz-request-id": o.requestId,
    "x-amz-id-2": o.hostId ?? "vault",
    ...err.headers,
  };
  if (o.head) return new Response(null, { status: err.status, headers });
  let x = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${err.code}</Code><Message>${xmlEscape(err.message || String(err.code))}</Message>`;
  for (const [k, v] of Object.entries(err.detail)) if (typeof v === "string") x += `<${k}>${xmlEscape(v)}</${k}>`;
  if (o.resource !== undefined) x += `<Resource>${xmlEscape(o.resource)}</Resource>`;
  x += `<RequestId>${o.requestId}</RequestId><HostId>${xmlEscape(o.hostId ?? "vault")}</HostId></Error>`;
  headers["content-type"] = "application/xml";
  return new Response(x, { status: err.status, headers });
}

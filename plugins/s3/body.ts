/** Request-body intake for PutObject/UploadPart: aws-chunked decoding, size limits, Content-MD5, flexible checksums (header or trailer) and the MD5 ETag, all verified before the stream ends. */
import { createHash } from "node:crypto";
import { S3Error } from "./errors.ts";
import { awsChunkedDecoder } from "./aws-chunked.ts";
import { CHECKSUM_ALGORITHMS, checkChecksumValue, createChecksum, type Checksum, type ChecksumAlgorithm } from "./checksums.ts";
import {
  STREAMING_SIGNED,
  STREAMING_SIGNED_TRAILER,
  STREAMING_UNSIGNED_TRAILER,
  UNSIGNED_PAYLOAD,
  type VerifiedSignature,
} from "./sigv4.ts";

/** What the intake learnt once the stream ended without error. */
export interface IntakeResult {
  /** Decoded object size, bytes. */
  sizeBytes: number;
  /** Hex md5 of the decoded bytes (the single-part ETag). */
  md5: string;
  /** Flexible checksum computed over the bytes (when the client sent or asked for one); `value` is base64. */
  checksum?: { algorithm: ChecksumAlgorithm; value: string };
}

/** A decoded, verifying body stream and its result (valid only after the stream was read to the end). */
export interface Intake {
  /** The decoded object bytes; errors with an S3Error before its end when a check fails. */
  stream: ReadableStream<Uint8Array>;
  /** Hex sha256 the client declared in `x-amz-content-sha256`, for the blob store to verify. */
  sha256?: string;
  /** Declared decoded size, bytes. */
  declaredBytes: number;
  /** What was learnt. @throws S3Error IncompleteBody when `stream` has not been read to its end without error */
  result(): IntakeResult;
}

/**
 * Wraps a request body for storing (PutObject, UploadPart; specs/s3.md §4, §5, §8).
 * - `aws-chunked` (`Content-Encoding` or a `STREAMING-*` payload hash) is decoded, chunk signatures verified when signed.
 * - Size: `x-amz-decoded-content-length` or `Content-Length` is required (411 MissingContentLength); larger than
 *   `maxBytes` → EntityTooLarge before reading; a body shorter/longer than declared → IncompleteBody.
 * - `Content-MD5` malformed → InvalidDigest, mismatch → BadDigest; `x-amz-checksum-<alg>` (header or trailer
 *   announced by `x-amz-trailer`) malformed → InvalidDigest, mismatch → BadDigest. Errors surface as the stream
 *   erroring before its end, so the blob store never commits a bad body.
 * @param o.maxBytes largest decoded body, bytes
 * @param o.checksumAlgorithm compute this checksum even when no value was sent (multipart uploads created with one)
 * @throws S3Error at once, before any byte is read: MissingContentLength (411), EntityTooLarge (400), InvalidDigest
 *   (400), InvalidArgument (400; unknown `STREAMING-…` value, bad length), InvalidRequest (400; CRC64NVME, bad
 *   trailer), AccessDenied (403; signed streaming payload on an unsigned request)
 */
export function intakeBody(
  req: Request,
  o: {
    sig: VerifiedSignature | null;
    maxBytes: number;
    checksumAlgorithm?: ChecksumAlgorithm | null;
    /** Called with the result once every check passed, just before the stream ends (so a consumer storing the stream sees its effects). */
    onDone?: (r: IntakeResult) => void;
  },
): Intake {
  const h = req.headers;
  const payloadHash = o.sig?.payloadHash ?? h.get("x-amz-content-sha256") ?? UNSIGNED_PAYLOAD;
  const streaming = payloadHash.startsWith("STREAMING-");
  const chunked = streaming || (h.get("content-encoding") ?? "").split(",").some((e) => e.trim() === "aws-chunked");
  if (streaming && ![STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER].includes(payloadHash)) {
    throw new S3Error("InvalidArgument", `x-amz-content-sha256 ${payloadHash} is not supported`);
  }
  if (payloadHash.startsWith("STREAMING-AWS4-HMAC-SHA256") && !o.sig) throw new S3Error("AccessDenied", "signed streaming payload without a signature");
  const decodedHeader = h.get("x-amz-decoded-content-length");
  const lengthHeader = chunked ? decodedHeader : h.get("content-length");
  if (lengthHeader === null) {
    if (chunked) throw new S3Error("MissingContentLength", "aws-chunked uploads need x-amz-decoded-content-length");
    if (h.get("transfer-encoding") === null) {
      // no body at all: an empty object
    } else throw new S3Error("MissingContentLength");
  }
  const declared = lengthHeader === null ? 0 : Number(lengthHeader);
  if (!Number.isSafeInteger(declared) || declared < 0) throw new S3Error("InvalidArgument", "invalid content length");
  if (declared > o.maxBytes) {
    throw new S3Error("EntityTooLarge", undefined, { ProposedSize: String(declared), MaxSizeAllowed: String(o.maxBytes) });
  }

  // Integrity declared by the client.
  const md5Header = h.get("content-md5");
  let md5Want: string | undefined;
  if (md5Header !== null) {
    const b = Buffer.from(md5Header, "base64");
    if (b.length !== 16 || !/^[A-Za-z0-9+/]+={0,2}$/.test(md5Header)) throw new S3Error("InvalidDigest");
    md5Want = b.toString("hex");
  }
  let alg: ChecksumAlgorithm | undefined;
  let checksumWant: string | undefined;
  let fromTrailer = false;
  for (const a of CHECKSUM_ALGORITHMS) {
    const v = h.get(`x-amz-checksum-${a}`);
    if (v !== null) {
      checkChecksumValue(a, v);
      alg = a;
      checksumWant = v;
    }
  }
  if (h.get("x-amz-checksum-crc64nvme") !== null) throw new S3Error("InvalidRequest", "Checksum algorithm CRC64NVME is not supported by this server");
  const trailer = h.get("x-amz-trailer");
  if (trailer) {
    const t = trailer.trim().toLowerCase();
    const m = /^x-amz-checksum-(crc32|crc32c|sha1|sha256)$/.exec(t);
    if (!m) throw new S3Error("InvalidRequest", `unsupported trailer ${trailer}`);
    if (!chunked) throw new S3Error("InvalidRequest", "x-amz-trailer needs an aws-chunked body");
    alg = m[1] as ChecksumAlgorithm;
    fromTrailer = true;
  }
  const sdkAlg = h.get("x-amz-sdk-checksum-algorithm")?.toLowerCase();
  if (!alg && sdkAlg && (CHECKSUM_ALGORITHMS as string[]).includes(sdkAlg)) alg = sdkAlg as ChecksumAlgorithm;
  if (!alg && o.checksumAlgorithm) alg = o.checksumAlgorithm;
  const sha256 = /^[0-9a-f]{64}$/.test(payloadHash) ? payloadHash : undefined;

  const md5 = createHash("md5");
  const sum: Checksum | undefined = alg ? createChecksum(alg) : undefined;
  let size = 0;
  let trailers: Record<string, string> = {};
  let done: IntakeResult | undefined;

  const measure = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, c) {
      size += chunk.byteLength;
      if (size > o.maxBytes) throw new S3Error("EntityTooLarge", undefined, { MaxSizeAllowed: String(o.maxBytes) });
      if (size > declared) throw new S3Error("IncompleteBody", "the body is longer than the declared length");
      md5.update(chunk);
      sum?.update(chunk);
      c.enqueue(chunk);
    },
    flush() {
      if (size !== declared) throw new S3Error("IncompleteBody", `received ${size} of ${declared} bytes`);
      const md5hex = md5.digest("hex");
      if (md5Want !== undefined && md5Want !== md5hex) throw new S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.");
      let value: string | undefined;
      if (sum && alg) {
        value = sum.digestBase64();
        const want = fromTrailer ? trailers[`x-amz-checksum-${alg}`] : checksumWant;
        if (fromTrailer && want === undefined) throw new S3Error("InvalidRequest", `the trailer x-amz-checksum-${alg} was announced but not sent`);
        if (want !== undefined) {
          checkChecksumValue(alg, want);
          if (want !== value) throw new S3Error("BadDigest", `The ${alg.toUpperCase()} you specified did not match the calculated checksum.`);
        }
      }
      done = { sizeBytes: size, md5: md5hex, checksum: alg && value ? { algorithm: alg, value } : undefined };
      o.onDone?.(done);
    },
  });

  let src: ReadableStream<Uint8Array> = req.body ?? new Response(new Uint8Array(0)).body!;
  if (chunked) {
    const signed = payloadHash === STREAMING_SIGNED || payloadHash === STREAMING_SIGNED_TRAILER;
    src = src.pipeThrough(
      awsChunkedDecoder({
        signing: signed && o.sig ? { key: o.sig.key, amzDate: o.sig.amzDate, scope: o.sig.scope, seedSignature: o.sig.seedSignature } : undefined,
        signedTrailer: payloadHash === STREAMING_SIGNED_TRAILER,
        decodedLength: declared,
        onTrailers: (t) => void (trailers = t),
      }),
    );
  }
  return {
    stream: src.pipeThrough(measure),
    sha256,
    declaredBytes: declared,
    result() {
      if (!done) throw new S3Error("IncompleteBody");
      return done;
    },
  };
}

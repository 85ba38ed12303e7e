/** Decoder of `Content-Encoding: aws-chunked` request bodies (specs/s3.md §8): signed and unsigned chunks, trailers, chunk and trailer signature verification. */
import { createHash } from "node:crypto";
import { S3Error } from "./errors.ts";
import { chunkSignature, trailerSignature, sameSignature, EMPTY_SHA256 } from "./sigv4.ts";

/** Chain state for signed chunks (from the verified header signature). */
export interface ChunkSigning {
  /** The request's SigV4 signing key (sigv4.ts signingKey). */
  key: Uint8Array;
  /** The request's `x-amz-date`, `yyyymmddThhmmssZ`. */
  amzDate: string;
  /** `<date>/<region>/s3/aws4_request`. */
  scope: string;
  /** The header signature: the first "previous signature" of the chain. */
  seedSignature: string;
}

/** Options of {@link awsChunkedDecoder}. */
export interface AwsChunkedOptions {
  /** Verify `chunk-signature=` of every chunk (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]). Unsigned variants when absent. */
  signing?: ChunkSigning;
  /** The trailer carries `x-amz-trailer-signature` that must verify (STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER). */
  signedTrailer?: boolean;
  /** `x-amz-decoded-content-length`, bytes; the decoded total must equal it when given. */
  decodedLength?: number;
  /**
   * Called once with the trailing headers (lower-case names, without `x-amz-trailer-signature`) after the last
   * chunk, before the decoded stream ends. Throwing errors the stream (the upload is then not committed).
   */
  onTrailers?: (trailers: Record<string, string>) => void;
}

const MAX_LINE = 8192;
const CRLF = new Uint8Array([13, 10]);

type State = "size" | "data" | "data-crlf" | "trailer" | "done";

/**
 * A TransformStream from the aws-chunked wire format to the object bytes (AWS "sigv4-streaming" and
 * "sigv4-streaming-trailers", specs/s3.md §8).
 *
 * Wire format: `<hex size>[;chunk-signature=<64 hex>]\r\n<data>\r\n` … `0[;chunk-signature=…]\r\n`
 * `[name:value\r\n…]` `\r\n`. Data is passed through as views of the input (no copies). Errors are S3Errors:
 * IncompleteBody (truncated, wrong decoded length), SignatureDoesNotMatch (chunk or trailer), InvalidRequest (bad framing).
 */
export function awsChunkedDecoder(o: AwsChunkedOptions = {}): TransformStream<Uint8Array, Uint8Array> {
  let state: State = "size";
  let line: number[] = []; // bytes of the current framing line
  let remaining = 0;
  let crlfSeen = 0;
  let total = 0;
  let prevSig = o.signing?.seedSignature ?? "";
  let chunkSig = "";
  let hasher: ReturnType<typeof createHash> | null = null;
  const trailers: Record<string, string> = {};
  let trailerSig = "";
  let trailerCanonical = "";

  function bad(msg: string): never {
    throw new S3Error("IncompleteBody", msg);
  }

  function onSizeLine(text: string): void {
    const semi = text.indexOf(";");
    const hex = (semi < 0 ? text : text.slice(0, semi)).trim();
    if (!/^[0-9a-fA-F]{1,16}$/.test(hex)) throw new S3Error("InvalidRequest", "malformed aws-chunked chunk header");
    const size = parseInt(hex, 16);
    chunkSig = "";
    if (semi >= 0) {
      for (const ext of text.slice(semi + 1).split(";")) {
        const [k, v] = ext.split("=");
        if (k.trim() === "chunk-signature") chunkSig = (v ?? "").trim();
      }
    }
    if (o.signing && !chunkSig) throw new S3Error("SignatureDoesNotMatch", "missing chunk-signature in a signed aws-chunked body");
    if (size === 0) {
      verifyChunk(EMPTY_SHA256);
      state = "trailer";
      return;
    }
    remaining = size;
    if (o.signing) hasher = createHash("sha256");
    state = "data";
  }

  function verifyChunk(hashHex: string): void {
    if (!o.signing) return;
    const expected = chunkSignature(o.signing.key, o.signing.amzDate, o.signing.scope, prevSig, hashHex);
    if (!sameSignature(expected, chunkSig.toLowerCase())) throw new S3Error("SignatureDoesNotMatch", "The chunk signature does not match.");
    prevSig = expected;
  }

  function onTrailerLine(text: string): boolean {
    if (text === "") return true; // end of trailers
    const i = text.indexOf(":");
    if (i <= 0) throw new S3Error("InvalidRequest", "malformed aws-chunked trailer");
    const name = text.slice(0, i).trim().toLowerCase();
    const value = text.slice(i + 1).trim();
    if (name === "x-amz-trailer-signature") trailerSig = value;
    else {
      trailers[name] = value;
      trailerCanonical += `${name}:${value}\n`;
    }
    return false;
  }

  function finish(): void {
    if (o.signedTrailer && o.signing) {
      if (!trailerSig) throw new S3Error("SignatureDoesNotMatch", "missing x-amz-trailer-signature");
      const expected = trailerSignature(o.signing.key, o.signing.amzDate, o.signing.scope, prevSig, trailerCanonical);
      if (!sameSignature(expected, trailerSig.toLowerCase())) throw new S3Error("SignatureDoesNotMatch", "The trailer signature does not match.");
    }
    if (o.decodedLength !== undefined && total !== o.decodedLength) {
      bad(`decoded ${total} bytes, x-amz-decoded-content-length says ${o.decodedLength}`);
    }
    o.onTrailers?.(trailers);
    state = "done";
  }

  return new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      let i = 0;
      const n = chunk.length;
      while (i < n) {
        if (state === "data") {
          const take = Math.min(remaining, n - i);
          const view = chunk.subarray(i, i + take);
          hasher?.update(view);
          controller.enqueue(view);
          total += take;
          if (o.decodedLength !== undefined && total > o.decodedLength) bad("body longer than x-amz-decoded-content-length");
          remaining -= take;
          i += take;
          if (remaining === 0) {
            state = "data-crlf";
            crlfSeen = 0;
          }
        } else if (state === "data-crlf") {
          if (chunk[i] !== CRLF[crlfSeen]) throw new S3Error("InvalidRequest", "aws-chunked chunk is not followed by CRLF");
          crlfSeen++;
          i++;
          if (crlfSeen === 2) {
            if (hasher) {
              verifyChunk(hasher.digest("hex"));
              hasher = null;
            }
            state = "size";
          }
        } else if (state === "done") {
          i = n; // ignore anything after the final CRLF
        } else {
          // framing line: size line or trailer line, terminated by CRLF
          const b = chunk[i++];
          if (b === 10 && line.length > 0 && line[line.length - 1] === 13) {
            line.pop();
            const text = Buffer.from(line).toString("latin1");
            line = [];
            if (state === "size") onSizeLine(text);
            else if (onTrailerLine(text)) finish();
          } else {
            if (line.length >= MAX_LINE) throw new S3Error("InvalidRequest", "aws-chunked framing line too long");
            line.push(b);
          }
        }
      }
    },
    flush() {
      if (state === "trailer" && line.length === 0) {
        // Some clients end the body right after the last trailer line without the empty line.
        finish();
        return;
      }
      if (state !== "done") bad("the aws-chunked body ended early");
    },
  });
}

/**
 * Encodes bytes as an aws-chunked body (for tests and benchmarks). Signed when `signing` is given; appends
 * `trailers` (and their signature when signed). `chunkSize` in bytes (default 64 KiB).
 */
export function encodeAwsChunked(data: Uint8Array, o: { chunkSize?: number; signing?: ChunkSigning; trailers?: Record<string, string> } = {}): Uint8Array {
  const size = o.chunkSize ?? 65536;
  const parts: Uint8Array[] = [];
  let prev = o.signing?.seedSignature ?? "";
  const enc = new TextEncoder();
  const push = (s: string) => parts.push(enc.encode(s));
  for (let off = 0; off <= data.length; off += size) {
    const piece = data.subarray(off, Math.min(off + size, data.length));
    let ext = "";
    if (o.signing) {
      prev = chunkSignature(o.signing.key, o.signing.amzDate, o.signing.scope, prev, createHash("sha256").update(piece).digest("hex"));
      ext = `;chunk-signature=${prev}`;
    }
    push(`${piece.length.toString(16)}${ext}\r\n`);
    if (piece.length === 0) break;
    parts.push(piece);
    push("\r\n");
    if (off + size >= data.length && piece.length > 0) {
      // final zero chunk
      let zext = "";
      if (o.signing) {
        prev = chunkSignature(o.signing.key, o.signing.amzDate, o.signing.scope, prev, EMPTY_SHA256);
        zext = `;chunk-signature=${prev}`;
      }
      push(`0${zext}\r\n`);
      break;
    }
  }
  if (o.trailers) {
    let canonical = "";
    for (const [k, v] of Object.entries(o.trailers)) {
      push(`${k}:${v}\r\n`);
      canonical += `${k}:${v}\n`;
    }
    if (o.signing) push(`x-amz-trailer-signature:${trailerSignature(o.signing.key, o.signing.amzDate, o.signing.scope, prev, canonical)}\r\n`);
  }
  push("\r\n");
  return Buffer.concat(parts);
}

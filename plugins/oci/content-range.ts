/** Chunked-upload ranges (specs/oci.md §4): the request `Content-Range: <start>-<end>` and the `Range: 0-<last>` reply. */
import { ociError } from "./errors.ts";

/** An inclusive byte range of an upload chunk, offsets in bytes. */
export interface ChunkRange {
  /** Offset of the first byte. */
  start: number;
  /** Offset of the last byte (inclusive), ≥ `start`. */
  end: number;
}

const RANGE_RE = /^(?:bytes[ =])?(\d{1,15})-(\d{1,15})(?:\/(?:\d{1,15}|\*))?$/;

/**
 * Parses a chunk's `Content-Range`. The OCI form is `<start>-<end>` (inclusive, no unit); `bytes=`/`bytes ` prefixes
 * and a `/<total>` suffix are tolerated because some clients send the RFC 9110 form.
 * @returns the range in bytes
 * @throws VaultError BLOB_UPLOAD_INVALID (400) when malformed or `end < start`
 */
export function parseContentRange(value: string): ChunkRange {
  const m = RANGE_RE.exec(value.trim());
  if (!m) throw ociError("BLOB_UPLOAD_INVALID", "malformed Content-Range (expected <start>-<end>)", { contentRange: value.slice(0, 100) });
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start) throw ociError("BLOB_UPLOAD_INVALID", "Content-Range end is before its start", { contentRange: value.slice(0, 100) });
  return { start, end };
}

/**
 * The `Range` header of an upload session holding `sizeBytes` bytes: `0-<last byte offset>`, and `0-0` for an empty
 * session (as distribution answers; clients read it as "nothing yet" only together with the upload's state).
 */
export function uploadRangeHeader(sizeBytes: number): string {
  return `0-${sizeBytes > 0 ? sizeBytes - 1 : 0}`;
}

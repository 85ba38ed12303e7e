/** Flexible checksums (specs/s3.md §5): CRC32, CRC32C, SHA-1, SHA-256 and MD5 as incremental hashers with base64 big-endian digests, and the multipart ETag. */
import { crc32 } from "node:zlib";
import { createHash } from "node:crypto";
import { Crc32c } from "@aws-crypto/crc32c";
import { S3Error } from "./errors.ts";

/** Checksum algorithms S3 clients send (`x-amz-checksum-<alg>`), lower case. */
export type ChecksumAlgorithm = "crc32" | "crc32c" | "sha1" | "sha256";
/** Every supported algorithm (`crc64nvme` is refused with InvalidRequest); request headers are checked in this order. */
export const CHECKSUM_ALGORITHMS: ChecksumAlgorithm[] = ["crc32", "crc32c", "sha1", "sha256"];

/** An incremental hasher whose result is base64 of the big-endian digest (the `x-amz-checksum-*` encoding). */
export interface Checksum {
  /** Feeds the next bytes. */
  update(data: Uint8Array): void;
  /** base64 of the digest bytes. */
  digestBase64(): string;
  /** the digest bytes (for composite multipart checksums). */
  digestBytes(): Uint8Array;
}

function u32be(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0);
  return b;
}

/** A new hasher for `alg`. Throws S3Error InvalidRequest for an algorithm we do not support (e.g. crc64nvme). */
export function createChecksum(alg: string): Checksum {
  switch (alg) {
    case "crc32": {
      let v = 0;
      return {
        update: (d) => void (v = crc32(d, v)),
        digestBytes: () => u32be(v),
        digestBase64: () => Buffer.from(u32be(v)).toString("base64"),
      };
    }
    case "crc32c": {
      const c = new Crc32c();
      return {
        update: (d) => void c.update(d),
        digestBytes: () => u32be(c.digest()),
        digestBase64: () => Buffer.from(u32be(c.digest())).toString("base64"),
      };
    }
    case "sha1":
    case "sha256": {
      const h = createHash(alg);
      let out: Buffer | null = null;
      const done = () => (out ??= h.digest());
      return {
        update: (d) => void h.update(d),
        digestBytes: () => done(),
        digestBase64: () => done().toString("base64"),
      };
    }
  }
  throw new S3Error("InvalidRequest", `Checksum algorithm ${alg.toUpperCase()} is not supported`);
}

/**
 * Checks the form of a client-sent checksum: base64 of a digest of `alg`'s size (4 bytes for CRC32/CRC32C, 20 for
 * SHA-1, 32 for SHA-256). Does not compare it with the body.
 * @throws S3Error InvalidDigest (400)
 */
export function checkChecksumValue(alg: ChecksumAlgorithm, value: string): void {
  const want = alg === "crc32" || alg === "crc32c" ? 4 : alg === "sha1" ? 20 : 32;
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(value) || Buffer.from(value, "base64").length !== want) {
    throw new S3Error("InvalidDigest", `Value for x-amz-checksum-${alg} header is invalid.`);
  }
}

/**
 * The composite checksum of a multipart object (specs/s3.md §5): `alg` over the concatenated binary part digests,
 * base64, with `-N` appended (N = number of parts).
 * @param partDigestsBase64 the parts' base64 checksums, in part-number order
 */
export function compositeChecksum(alg: ChecksumAlgorithm, partDigestsBase64: string[]): string {
  const c = createChecksum(alg);
  for (const p of partDigestsBase64) c.update(Buffer.from(p, "base64"));
  return `${c.digestBase64()}-${partDigestsBase64.length}`;
}

/** Multipart ETag (unquoted, specs/s3.md §5): hex md5 of the concatenated binary part md5s (given as hex, in order), then `-N`. */
export function multipartEtag(partMd5Hex: string[]): string {
  const h = createHash("md5");
  for (const p of partMd5Hex) h.update(Buffer.from(p, "hex"));
  return `${h.digest("hex")}-${partMd5Hex.length}`;
}

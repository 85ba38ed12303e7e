/** OCI digests (`algorithm:encoded`, OCI image-spec "Digests"): grammar, the algorithms we verify, hashing helpers. */
import { ociError } from "./errors.ts";

/** OCI digest grammar: `algorithm ":" encoded`, algorithm components joined by `+._-`. */
const DIGEST_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const SHA256_RE = /^sha256:[a-f0-9]{64}$/;
const SHA512_RE = /^sha512:[a-f0-9]{128}$/;

/** A parsed digest. Only `sha256` content is stored; `sha512` is recognised (and refused with DIGEST_INVALID). */
export interface Digest {
  /** Always `sha256` (parseDigest refuses the others). */
  algorithm: string;
  /** lower-case hex */
  hex: string;
  /** `algorithm:hex` */
  value: string;
}

/** True when `s` matches the OCI digest grammar (any algorithm). Cheap; used to tell digests from tags. */
export function looksLikeDigest(s: string): boolean {
  return s.includes(":") && DIGEST_RE.test(s);
}

/** True for a well-formed `sha256:<64 lower-case hex>`. */
export function isSha256(s: string): boolean {
  return SHA256_RE.test(s);
}

/**
 * Parses a digest this registry can verify (`sha256:<64 hex>`).
 * @throws VaultError DIGEST_INVALID (400) when malformed, of another length, or of an unsupported algorithm
 */
export function parseDigest(s: string | null | undefined): Digest {
  if (typeof s !== "string" || !DIGEST_RE.test(s)) throw ociError("DIGEST_INVALID", "invalid digest", { digest: s ?? null });
  if (SHA256_RE.test(s)) return { algorithm: "sha256", hex: s.slice(7), value: s };
  if (SHA512_RE.test(s)) throw ociError("DIGEST_INVALID", "sha512 digests are not supported by this registry", { digest: s });
  if (s.startsWith("sha256:")) throw ociError("DIGEST_INVALID", "sha256 digest must be 64 lower-case hex characters", { digest: s });
  throw ociError("DIGEST_INVALID", `unsupported digest algorithm ${s.slice(0, s.indexOf(":"))}`, { digest: s });
}

/** `sha256:<hex>` of `bytes`. */
export function sha256Digest(bytes: Uint8Array | string): string {
  return "sha256:" + new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
}

/** Registry tokens: compact HS256 JWTs (RFC 7519 / RFC 7515) over node:crypto HMAC, signed with the auth key ring. */
import crypto from "node:crypto";
import { VaultError } from "../errors.ts";
import type { RegistryTokenClaims } from "../plugin.ts";
import { bytesEqual, type KeyRing } from "./secrets.ts";

/** One granted scope of an OCI registry token (distribution token spec: `access` claim). */
export type RegistryAccess = NonNullable<RegistryTokenClaims["access"]>[number];

/** Claims of a registry token (see core/plugin.ts RegistryTokenClaims). */
export type RegistryClaims = RegistryTokenClaims;

/** Issuer written into every token we sign. */
export const TOKEN_ISSUER = "artifact-vault";

/** Allowed clock skew when checking `nbf`/`iat`, seconds. */
const LEEWAY_SECONDS = 30;

const HEADER_FIELDS = (kid: string) => ({ alg: "HS256", typ: "JWT", kid });

function b64json(v: unknown): string {
  return Buffer.from(JSON.stringify(v), "utf8").toString("base64url");
}

function hmac(key: Buffer, data: string): Buffer {
  return crypto.createHmac("sha256", key).update(data).digest();
}

function invalid(message: string): VaultError {
  return new VaultError("VAULT_UNAUTHORIZED", 401, message, {}, { "www-authenticate": 'Bearer realm="vault",error="invalid_token"' });
}

/**
 * Signs `claims` as an HS256 JWT valid for `ttlSeconds` from `nowMs`.
 * Sets `iat`, `nbf`, `exp` (epoch seconds), `iss` (when absent) and a random `jti`; the header carries the key id.
 * @param ttlSeconds lifetime in seconds, > 0
 * @throws RangeError when `ttlSeconds` is not a positive finite number
 */
export function signJwt(ring: KeyRing, claims: RegistryClaims, ttlSeconds: number, nowMs = Date.now()): string {
  if (!(ttlSeconds > 0) || !Number.isFinite(ttlSeconds)) throw new RangeError("ttlSeconds must be a positive number");
  const key = ring.jwt();
  const iat = Math.floor(nowMs / 1000);
  const body: RegistryClaims = {
    iss: TOKEN_ISSUER,
    ...claims,
    iat,
    nbf: iat,
    exp: iat + Math.ceil(ttlSeconds),
    jti: crypto.randomBytes(12).toString("base64url"),
  };
  const input = `${b64json(HEADER_FIELDS(key.id))}.${b64json(body)}`;
  return `${input}.${hmac(key.bytes, input).toString("base64url")}`;
}

/** Whether `s` has the shape of a compact JWS (three base64url parts). Cheap, no verification. */
export function looksLikeJwt(s: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(s);
}

/**
 * Verifies an HS256 JWT made by {@link signJwt}: header `alg` must be exactly `HS256` (no `none`, no key
 * confusion), the signature is compared in constant time, `exp` must be in the future, `nbf`/`iat` not in the
 * future (30 s leeway), `iss` must be ours.
 * @returns the claims
 * @throws VaultError VAULT_UNAUTHORIZED (401) "invalid token" / "token expired"
 */
export function verifyJwt(ring: KeyRing, jwt: string, nowMs = Date.now()): RegistryClaims {
  if (!looksLikeJwt(jwt)) throw invalid("invalid token");
  const [h, p, s] = jwt.split(".");
  let header: { alg?: unknown; kid?: unknown; typ?: unknown };
  let claims: RegistryClaims;
  try {
    header = JSON.parse(Buffer.from(h, "base64url").toString("utf8"));
    claims = JSON.parse(Buffer.from(p, "base64url").toString("utf8"));
  } catch {
    throw invalid("invalid token");
  }
  if (!header || header.alg !== "HS256" || typeof header.kid !== "string") throw invalid("invalid token");
  const key = ring.byKeyId("jwt", header.kid);
  if (!key) throw invalid("invalid token");
  if (!bytesEqual(hmac(key.bytes, `${h}.${p}`), Buffer.from(s, "base64url"))) throw invalid("invalid token");
  if (!claims || typeof claims !== "object" || typeof claims.sub !== "string") throw invalid("invalid token");
  if (claims.iss !== TOKEN_ISSUER) throw invalid("invalid token");
  const now = nowMs / 1000;
  if (typeof claims.exp !== "number" || claims.exp <= now) throw invalid("token expired");
  if (typeof claims.nbf === "number" && claims.nbf > now + LEEWAY_SECONDS) throw invalid("invalid token");
  if (typeof claims.iat === "number" && claims.iat > now + LEEWAY_SECONDS) throw invalid("invalid token");
  return claims;
}

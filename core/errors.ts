/** VaultError and the catalogue of every error code the core raises (documented in docs/errors.md). */

/**
 * Every error code the core and built-in plugins raise, with its default HTTP status.
 * docs/errors.md lists the same codes; test/errors.test.ts keeps the two in step.
 */
export const ERROR_CODES = {
  VAULT_BAD_REQUEST: 400,
  VAULT_BAD_PATH: 400,
  VAULT_UNAUTHORIZED: 401,
  VAULT_FORBIDDEN: 403,
  VAULT_NOT_FOUND: 404,
  VAULT_METHOD_NOT_ALLOWED: 405,
  VAULT_NOT_ACCEPTABLE: 406,
  VAULT_CONFLICT: 409,
  VAULT_TOO_LARGE: 413,
  VAULT_RANGE_NOT_SATISFIABLE: 416,
  VAULT_INTERNAL: 500,
  VAULT_UPSTREAM_ERROR: 502,
  VAULT_DIGEST_MISMATCH: 502,
  VAULT_SIZE_MISMATCH: 502,
  VAULT_UPSTREAM_DOWN: 503,
  VAULT_UPSTREAM_TIMEOUT: 504,
  VAULT_NOT_CACHED: 504,
  VAULT_STORAGE: 500,
  VAULT_CONFIG: 500,
  VAULT_PLUGIN: 500,
} as const;

/** One of the codes in {@link ERROR_CODES}. Plugins may add their own codes (e.g. OCI's `MANIFEST_UNKNOWN`) as plain strings. */
export type VaultErrorCode = keyof typeof ERROR_CODES | (string & {});

/**
 * The one error type that crosses layers. A plugin's `renderError` turns it into the
 * ecosystem's own error body (OCI JSON, npm JSON, S3 XML, plain text for pip/apt).
 *
 * @example throw new VaultError("VAULT_DIGEST_MISMATCH", 502, "upstream bytes do not match", { expected, actual, url })
 */
export class VaultError extends Error {
  /** Machine-readable code, e.g. `VAULT_NOT_FOUND`. */
  readonly code: VaultErrorCode;
  /** HTTP status to answer with. */
  readonly status: number;
  /** Structured detail for logs and ecosystem error bodies; never contains secrets. */
  readonly detail: Record<string, unknown>;
  /** Extra response headers (e.g. `WWW-Authenticate`, `Content-Range` for 416). */
  readonly headers: Record<string, string>;

  constructor(
    code: VaultErrorCode,
    status: number = (ERROR_CODES as Record<string, number>)[code] ?? 500,
    message: string = code,
    detail: Record<string, unknown> = {},
    headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "VaultError";
    this.code = code;
    this.status = status;
    this.detail = detail;
    this.headers = headers;
  }
}

/** Shorthand constructors for the common cases. Each returns (does not throw) a VaultError. */
export const errors = {
  badPath: (path: string, why: string) => new VaultError("VAULT_BAD_PATH", 400, `bad path: ${why}`, { path }),
  notFound: (what: string) => new VaultError("VAULT_NOT_FOUND", 404, `${what} not found`),
  unauthorized: (challenge = 'Basic realm="vault"') =>
    new VaultError("VAULT_UNAUTHORIZED", 401, "authentication required", {}, { "www-authenticate": challenge }),
  forbidden: (action: string, repository: string) =>
    new VaultError("VAULT_FORBIDDEN", 403, `${action} on ${repository} is not allowed`, { action, repository }),
  upstream: (status: number, url: string) =>
    new VaultError("VAULT_UPSTREAM_ERROR", 502, `upstream answered ${status}`, { upstreamStatus: status, url: redactUrl(url) }),
  upstreamDown: (url: string, cause: string) =>
    new VaultError("VAULT_UPSTREAM_DOWN", 503, `upstream unreachable: ${cause}`, { url: redactUrl(url) }),
};

/** Removes userinfo and credential-looking query parameters from a URL before it is logged or shown. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = "";
    u.password = "";
    for (const k of [...u.searchParams.keys()]) {
      if (/sig|token|secret|key|credential|password/i.test(k)) u.searchParams.set(k, "REDACTED");
    }
    return u.toString();
  } catch {
    return "<invalid url>";
  }
}

/** Normalises anything thrown into a VaultError (unknown errors become VAULT_INTERNAL 500 without leaking internals). */
export function toVaultError(e: unknown): VaultError {
  if (e instanceof VaultError) return e;
  return new VaultError("VAULT_INTERNAL", 500, "internal error", { cause: e instanceof Error ? e.message : String(e) });
}

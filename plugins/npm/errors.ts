/**
 * Errors of the npm plugin (codes from core/errors.ts) and their rendering in npm's shape (specs/npm.md §2):
 * `{"error": "<message>"}` with the status, so the npm CLI prints `<status> <reason> - <METHOD> <url> - <message>`.
 */
import { VaultError } from "../../core/plugin.ts";

/**
 * Renders an error as npm expects: JSON `{"error": …}` with the error's status and headers (a 401 keeps its
 * `WWW-Authenticate`); 404s answer `{"error":"Not found"}` as the registry does.
 */
export function npmError(err: VaultError): Response {
  const error = err.status === 404 ? "Not found" : err.message;
  return Response.json({ error }, { status: err.status, headers: { ...err.headers, "content-type": "application/json" } });
}

/** The plugin's errors (each returns, does not throw, a VaultError). */
export const npmErrors = {
  /** 502: an upstream packument the vault cannot use (not JSON, not an object). */
  badUpstream: (url: string, why: string) => new VaultError("VAULT_UPSTREAM_ERROR", 502, `upstream packument unusable: ${why}`, { url }),
  /** 502: a proxied tarball whose bytes differ from its packument's `dist.integrity`/`shasum`; nothing was stored. */
  integrity: (file: string, why: string) => new VaultError("VAULT_DIGEST_MISMATCH", 502, `tarball ${file} failed integrity check: ${why}`, { file }),
  /** 404: a tarball no version of the packument lists. */
  notListed: (file: string) => new VaultError("VAULT_NOT_FOUND", 404, `tarball ${file} not found`),
  /** 405 with `Allow`. */
  method: (m: string, allow: string, why = `method ${m} not allowed here`) => new VaultError("VAULT_METHOD_NOT_ALLOWED", 405, why, { method: m }, { allow }),
  /** 400: the client's document or body is malformed or inconsistent; the message says why. */
  badRequest: (message: string) => new VaultError("VAULT_BAD_REQUEST", 400, message),
  /** A refused write with the status publish.ts chose (400, 403 existing version, 404, 409). */
  refused: (status: number, message: string) => {
    const code = status === 403 ? "VAULT_FORBIDDEN" : status === 404 ? "VAULT_NOT_FOUND" : status === 409 ? "VAULT_CONFLICT" : "VAULT_BAD_REQUEST";
    return new VaultError(code, status, message);
  },
  /** 413: a publish body over the repository's limit. */
  tooLarge: (limitBytes: number) =>
    new VaultError("VAULT_TOO_LARGE", 413, `request body exceeds ${limitBytes} bytes (maxUploadBytes allows tarballs up to that size in base64)`, { limit: limitBytes }),
  /** 401 for `npm login` with a bad user name or password; no `WWW-Authenticate`, so npm prints the message. */
  badLogin: () =>
    new VaultError("VAULT_UNAUTHORIZED", 401, "bad username or password (accounts are created by an administrator with `vault user add`; npm adduser cannot create them)"),
  /** 401 for `npm whoami` without credentials. */
  notLoggedIn: () => new VaultError("VAULT_UNAUTHORIZED", 401, "not logged in: run npm login", {}, { "www-authenticate": 'Basic realm="vault"' }),
  /** 405 for writes to a repository that takes none (a proxy, a group without `writeTo`). */
  readOnly: (m: string, why: string) => new VaultError("VAULT_METHOD_NOT_ALLOWED", 405, why, { method: m }, { allow: "GET, HEAD" }),
};

/** Errors the pypi plugin raises (codes from core/errors.ts; rendered as status + short text/plain by renderError). */
import { VaultError } from "../../core/plugin.ts";

/** 406: no simple-API content type acceptable to the client (PEP 691 recommends 406 over 300). */
export function notAcceptable(): VaultError {
  return new VaultError(
    "VAULT_NOT_ACCEPTABLE",
    406,
    "none of application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html, text/html is acceptable",
    {},
    { vary: "Accept" },
  );
}

/** 405 for methods a proxy repository does not take. */
export function methodNotAllowed(method: string): VaultError {
  return new VaultError("VAULT_METHOD_NOT_ALLOWED", 405, `method ${method} not allowed`, { method }, { allow: "GET, HEAD" });
}

/** 404 for a `files/…` path that no cached project page links to (the vault is never an open proxy). */
export function fileNotListed(path: string): VaultError {
  return new VaultError("VAULT_NOT_FOUND", 404, "file not listed on any project page", { path });
}

/** 404 for paths outside the simple API, files and JSON API layout. */
export function noRoute(path: string): VaultError {
  return new VaultError("VAULT_NOT_FOUND", 404, "not found", { path });
}

/** 502 for an upstream page the vault cannot use (malformed JSON, unsupported api-version). */
export function badUpstreamPage(url: string, why: string): VaultError {
  return new VaultError("VAULT_UPSTREAM_ERROR", 502, `upstream page unusable: ${why}`, { url });
}

/** 400 for an upload the vault refuses (bad form, file name, metadata, or file contents); the message says why. */
export function badUpload(message: string, detail: Record<string, unknown> = {}): VaultError {
  return new VaultError("VAULT_BAD_REQUEST", 400, message, detail);
}

/**
 * 400 for an upload whose file name exists with other contents. PyPI answers 400 (not 409) with this text; twine's
 * `--skip-existing` recognises it by "already exist".
 */
export function fileExists(filename: string): VaultError {
  return new VaultError("VAULT_CONFLICT", 400, `File already exists ('${filename}'): files are immutable; upload a new version`, { filename });
}

/** 400 for a declared upload digest (`<algorithm>_digest`) that the received file does not have; nothing is stored. */
export function uploadDigestMismatch(algorithm: string, expected: string, actual: string): VaultError {
  return new VaultError("VAULT_DIGEST_MISMATCH", 400, `${algorithm}_digest does not match the uploaded file`, { algorithm, expected, actual });
}

/** 413 for an upload over `maxUploadBytes`. */
export function uploadTooLarge(limitBytes: number): VaultError {
  return new VaultError("VAULT_TOO_LARGE", 413, `upload exceeds the limit of ${limitBytes} bytes (maxUploadBytes)`, { limit: limitBytes });
}

/** 405 for an upload to a repository that takes none (a proxy, a group without `writeTo`). */
export function uploadsNotAllowed(why: string): VaultError {
  return new VaultError("VAULT_METHOD_NOT_ALLOWED", 405, why, { method: "POST" }, { allow: "GET, HEAD" });
}

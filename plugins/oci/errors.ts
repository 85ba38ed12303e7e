/** OCI distribution error codes and the `{"errors":[{code,message,detail}]}` body (specs/oci.md §6). */
import { VaultError } from "../../core/plugin.ts";

/**
 * Every OCI error code this plugin answers with, and its HTTP status (distribution's `registry/api/errcode`
 * register, OCI distribution-spec v1.1 "Error Codes"). `RANGE_INVALID` is distribution's non-OCI 416 code.
 */
export const OCI_ERROR_STATUS = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  TAG_INVALID: 400,
  PAGINATION_NUMBER_INVALID: 400,
  RANGE_INVALID: 416,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  UNKNOWN: 500,
  UNAVAILABLE: 503,
} as const;

/** One OCI error code. */
export type OciErrorCode = keyof typeof OCI_ERROR_STATUS;

/** Header every registry response carries (docker checks it on `GET /v2/`). */
export const API_VERSION_HEADER = "docker-distribution-api-version";
/** Value of {@link API_VERSION_HEADER}. */
export const API_VERSION = "registry/2.0";

/**
 * Builds (does not throw) a VaultError carrying an OCI code. `status` defaults to the code's status in
 * {@link OCI_ERROR_STATUS}; `headers` are sent with the error response (e.g. `Range` on 416, `WWW-Authenticate` on 401).
 */
export function ociError(
  code: OciErrorCode,
  message: string,
  detail: Record<string, unknown> = {},
  headers: Record<string, string> = {},
  status: number = OCI_ERROR_STATUS[code],
): VaultError {
  return new VaultError(code, status, message, detail, headers);
}

/** Core error codes (core/errors.ts) → the OCI code clients understand. Unlisted core codes become UNKNOWN. */
const CORE_TO_OCI: Record<string, OciErrorCode> = {
  VAULT_BAD_REQUEST: "UNSUPPORTED",
  VAULT_BAD_PATH: "NAME_INVALID",
  VAULT_UNAUTHORIZED: "UNAUTHORIZED",
  VAULT_FORBIDDEN: "DENIED",
  VAULT_NOT_FOUND: "NAME_UNKNOWN",
  VAULT_METHOD_NOT_ALLOWED: "UNSUPPORTED",
  VAULT_NOT_ACCEPTABLE: "MANIFEST_UNKNOWN",
  VAULT_TOO_LARGE: "SIZE_INVALID",
  VAULT_RANGE_NOT_SATISFIABLE: "RANGE_INVALID",
  VAULT_DIGEST_MISMATCH: "DIGEST_INVALID",
  VAULT_SIZE_MISMATCH: "SIZE_INVALID",
  VAULT_UPSTREAM_ERROR: "UNAVAILABLE",
  VAULT_UPSTREAM_DOWN: "UNAVAILABLE",
  VAULT_UPSTREAM_TIMEOUT: "UNAVAILABLE",
  VAULT_NOT_CACHED: "UNAVAILABLE",
};

/** The OCI code of any VaultError: its own code when it is an OCI code, else the mapped core code. */
export function ociCodeOf(err: VaultError): OciErrorCode {
  if (err.code in OCI_ERROR_STATUS) return err.code as OciErrorCode;
  return CORE_TO_OCI[err.code] ?? (err.status === 401 ? "UNAUTHORIZED" : err.status === 403 ? "DENIED" : err.status === 404 ? "NAME_UNKNOWN" : "UNKNOWN");
}

/** Detail keys never shown to clients (upstream URLs may name private hosts; causes may leak internals). */
const HIDDEN_DETAIL = new Set(["url", "cause", "upstreamUrl"]);

/**
 * Renders an error as the OCI JSON body (specs/oci.md §6): `Content-Type: application/json`, the error's status and
 * headers, `Docker-Distribution-API-Version`. Core 401s get `challenge` (a Bearer challenge pointing at our token
 * endpoint) instead of the core's Basic one when given. HEAD requests get no body.
 */
export function renderOciError(err: VaultError, req?: Request, challenge?: string): Response {
  const code = ociCodeOf(err);
  const detail: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(err.detail ?? {})) if (!HIDDEN_DETAIL.has(k)) detail[k] = v;
  const headers: Record<string, string> = { ...err.headers, "content-type": "application/json", [API_VERSION_HEADER]: API_VERSION };
  if (err.status === 401 && challenge && !/^bearer /i.test(headers["www-authenticate"] ?? "")) headers["www-authenticate"] = challenge;
  const status = err.status >= 400 && err.status <= 599 ? err.status : 500;
  const message = status >= 500 && code === "UNKNOWN" ? "internal error" : err.message;
  const body = req?.method === "HEAD" ? null : JSON.stringify({ errors: [{ code, message, detail }] });
  return new Response(body, { status, headers });
}

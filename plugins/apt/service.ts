/** What the apt repository types share: the repository config keys, the service interface, request routing helpers and errors. */
import { VaultError, type RepositoryConfig } from "../../core/plugin.ts";

/** `signing:` of a hosted repository: the OpenPGP key that signs its Release files (with the real `gpg`). */
export interface SigningConfig {
  /** Path of an armored or binary secret key file (absolute, or relative to the working directory). */
  keyFile?: string;
  /** The armored secret key itself (typically `${VAULT_APT_SIGNING_KEY}`). */
  key?: string;
  /** Passphrase of the key, when it has one (typically `${VAULT_APT_SIGNING_PASSPHRASE}`). */
  passphrase?: string;
  /** Fingerprint or key id to sign with when the key file holds several (default: the first secret key). */
  keyId?: string;
}

/** Keys an apt repository entry may carry besides the core ones (validated by the plugin's configSchema). */
export interface AptRepoConfig extends RepositoryConfig {
  /** proxy: freshness of `InRelease`/`Release`/`Release.gpg` and of files no Release lists, seconds (default 60). */
  releaseTtlSeconds?: number;
  /** hosted: the signing key; without one the repository publishes an unsigned `Release` only. */
  signing?: SigningConfig;
  /** hosted: architectures every suite lists (default `["amd64", "arm64"]`); uploads of other architectures add theirs. */
  architectures?: string[];
  /** hosted: suite of uploads that name none (default `stable`). */
  defaultDistribution?: string;
  /** hosted: component of uploads that name none (default `main`). */
  defaultComponent?: string;
  /** hosted: `Origin:` and `Label:` of the Release files (default: the repository name). */
  origin?: string;
  label?: string;
  /** hosted: how many earlier generations of each suite's by-hash files stay published (default 3). */
  keepGenerations?: number;
  /** hosted: largest accepted upload, bytes (default 1 GiB). */
  maxUploadBytes?: number;
}

/** One apt repository, whatever its type. Created once per repository, shared by its mounts. */
export interface AptService {
  /** Answers a request under `mount`. Throws VaultError (rendered as text by the plugin). */
  handle(req: Request, mount: string): Promise<Response>;
  start?(): Promise<void>;
  stop?(): Promise<void>;
}

/** 405 with `Allow: GET, HEAD` (plus PUT, POST for hosted repositories). */
export function methodNotAllowed(method: string, why?: string, allow = "GET, HEAD"): VaultError {
  return new VaultError("VAULT_METHOD_NOT_ALLOWED", 405, why ?? `method ${method} not allowed`, {}, { allow });
}

/**
 * The path below the mount, without the leading slash (raw, still percent-encoded).
 * @throws VaultError 404 when the request is not below the mount
 */
export function routeRest(req: Request, mount: string): string {
  const url = new URL(req.url);
  const p = url.pathname;
  if (!p.startsWith(mount + "/")) throw new VaultError("VAULT_NOT_FOUND", 404, "not found");
  return p.slice(mount.length + 1);
}

/** What the apt repository types share: the repository config keys, the service interface, request routing helpers and errors. */
import { VaultError, type ArtifactEntry, type PluginContext, type Principal, type RepositoryConfig } from "../../core/plugin.ts";
import { parseRelease, type ParsedRelease, type ReleaseFile } from "./release.ts";

/** `signing:` of a hosted or group repository: the OpenPGP key that signs its Release files (with the real `gpg`). */
export interface SigningConfig {
  /** Path of an armored or binary secret key file (absolute, or relative to the config file's directory). */
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
  /**
   * proxy: keyring file (binary, or armored `.asc`) that upstream `InRelease` / `Release` + `Release.gpg` must be signed
   * by, checked with `gpgv` before a new generation is stored (absolute, or relative to the config file's directory).
   */
  upstreamKeyring?: string;
  /** hosted, group: the signing key; without one the repository publishes an unsigned `Release` only. */
  signing?: SigningConfig;
  /**
   * hosted, group: `Valid-Until` of the Release files, seconds after their `Date`. A Release requested past half its
   * validity is signed again in the background; one requested at its expiry is signed again before the answer.
   */
  validForSeconds?: number;
  /** hosted: architectures every suite lists (default `["amd64", "arm64"]`); uploads of other architectures add theirs. */
  architectures?: string[];
  /** hosted: suite of uploads that name none (default `stable`). */
  defaultDistribution?: string;
  /** hosted: component of uploads that name none (default `main`). */
  defaultComponent?: string;
  /** hosted, group: `Origin:` and `Label:` of the Release files (default: the repository name). */
  origin?: string;
  label?: string;
  /** hosted, group: how many earlier generations of each suite's by-hash files stay published (default 3). */
  keepGenerations?: number;
  /** hosted: largest accepted upload, bytes (default 1 GiB). */
  maxUploadBytes?: number;
}

/** What a group reads from each of its members: one suite's current generation. */
export interface AptMember {
  /**
   * The current Release of the release directory `dir` (`dists/<suite>/`), or null when the member has no such suite.
   * A proxy revalidates it as `req`'s `Cache-Control` asks; when that fails (upstream down, a bad signature) the
   * stored one is the answer, so a group never loses a member's packages to a transient upstream problem.
   * @throws VaultError when nothing is stored and the upstream fails
   */
  release(dir: string, req: Request): Promise<ParsedRelease | null>;
  /**
   * The bytes of an index of that generation (`path` relative to the archive root), size and SHA256 as `file` says.
   * @param byHash whether the Release says `Acquire-By-Hash: yes` (a proxy then asks its upstream by hash first)
   * @throws VaultError 404 when it is not there, 502 when upstream bytes do not match
   */
  index(path: string, file: ReleaseFile, byHash: boolean): Promise<Uint8Array>;
}

/** One apt repository, whatever its type. Created once per repository, shared by its mounts and the groups reading it. */
export interface AptService {
  /** The repository's context (a group reads its members' through it). */
  ctx: PluginContext<AptRepoConfig>;
  /** Answers a request under `mount`. Throws VaultError (rendered as text by the plugin). */
  handle(req: Request, mount: string): Promise<Response>;
  /** The view a group has of this repository. */
  member: AptMember;
  /**
   * hosted: an upload (PUT/POST) or a pool file deletion (DELETE) forwarded by a group whose `writeTo` this is, by
   * `principal` (already authorised on the group). `rest` is the path below the mount; `via` the group's name (audited).
   */
  write?(req: Request, rest: string, principal: Principal, via: string): Promise<Response>;
  /**
   * hosted, for retention (the plugin's `deleteVersion`): removes every pool file of one binary package version (`name`
   * = `Package:`, `version` matched without its epoch) and its stanzas, the suites concerned regenerated in one commit.
   * No audit record (the retention job writes it). A version already gone removes nothing.
   * @returns the repository-relative paths removed (stanza records and pool files) and their total size, bytes
   */
  removeVersion?(name: string, version: string): Promise<{ paths: string[]; bytes: number }>;
  start?(): Promise<void>;
  stop?(): Promise<void>;
}

/** 405 with `Allow: GET, HEAD` (plus PUT, POST, DELETE for hosted repositories and groups with `writeTo`). */
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

/** Parsed Releases kept in memory per repository (by blob digest). */
const PARSED_RELEASES = 32;

/** Stored Release/InRelease files parsed once each (by blob digest), the last {@link PARSED_RELEASES} kept. */
export class ParsedReleases {
  private parsed = new Map<string, ParsedRelease>();

  constructor(private ctx: PluginContext) {}

  /** The parsed Release of a stored entry; null (logged) when it does not parse. */
  async of(entry: ArtifactEntry): Promise<ParsedRelease | null> {
    const d = entry.blobDigest!;
    let r = this.parsed.get(d);
    if (!r) {
      try {
        r = parseRelease(new TextDecoder().decode(await this.ctx.artifacts.read(entry)));
      } catch (e) {
        this.ctx.log.warn("stored Release does not parse", { key: entry.path, error: (e as Error).message });
        return null;
      }
      this.parsed.set(d, r);
      if (this.parsed.size > PARSED_RELEASES) this.parsed.delete(this.parsed.keys().next().value!);
    }
    return r;
  }
}

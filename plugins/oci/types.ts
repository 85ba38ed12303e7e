/** Shared types of the oci plugin: its repository config keys and the service each repository type implements. */
import type { ArtifactEntry, PluginContext, RepositoryConfig } from "../../core/plugin.ts";
import type { Reference } from "./name.ts";
import type { Descriptor } from "./manifest.ts";
import type { Caller, ResolvedName } from "./token.ts";

/** One extra upstream of a proxy, chosen by containerd's `?ns=<host>` (specs/oci.md §8 "How clients address a mirror"). */
export interface OciNamespaceConfig {
  /** Registry base URL, e.g. `https://quay.io`. */
  upstream: string;
  /** User for the upstream's token service (or Basic auth); anonymous when unset. */
  username?: string;
  /** Password or access token of `username`. */
  password?: string;
  /** Add `library/` to one-component names (default: true for Docker Hub hosts). */
  libraryPrefix?: boolean;
}

/** Repository keys of `format: oci` (beside the core ones in RepositoryConfig). */
export interface OciRepoConfig extends RepositoryConfig {
  /** Also answer bare `/v2/<image>/…` at the root (Docker `registry-mirrors`). At most one repository. */
  root?: boolean;
  /** Path of the registry API below the mount: `"v2/"` (default) or `""` (the seed's `/<prefix>/<image>/manifests/<ref>` layout). */
  apiPrefix?: string;
  /** proxy: add Docker Hub's implicit `library/` to one-component names (default: true when the upstream is Docker Hub). */
  libraryPrefix?: boolean;
  /** proxy: seconds a cached tag is trusted before it is revalidated with HEAD (default `cache.metadataTtlSeconds`, else 300). */
  tagTtlSeconds?: number;
  /** proxy: further upstreams selected by `?ns=<host>` (containerd mirrors), keyed by that host. */
  namespaces?: Record<string, OciNamespaceConfig>;
  /** hosted: allow DELETE of manifests, tags and blobs (default true). */
  allowDelete?: boolean;
  /** hosted: largest manifest accepted, bytes (default 4 MiB; larger → 413). */
  maxManifestBytes?: number;
  /** hosted: largest blob accepted, bytes (default unlimited). */
  maxBlobBytes?: number;
  /** hosted: seconds an upload session may stay idle before it is collected (default 86400). */
  uploadTtlSeconds?: number;
}

/** An image as one request addresses it. */
export interface ImageRef {
  /** The repository name as the client wrote it (tokens' scopes, Location headers, tag list `name`). */
  name: string;
  /** The image inside the vault repository. */
  image: string;
  /** URL path of the API root the client used, without trailing slash (`/v2`, `/docker/v2`, `/dockerhub`). */
  api: string;
  /** containerd's `?ns=` value, when sent. */
  ns: string | null;
}

/** What a cross-repository mount request asks for (`?mount=<digest>&from=<name>`). */
export interface MountRequest {
  /** The blob to mount (`?mount=`), as sent; the service validates it. */
  digest: string;
  /** The source, resolved in the same addressing context; null when `from` is missing or unknown. */
  from: ResolvedName | null;
  /** Whether the caller may pull from the source. */
  allowed: boolean;
}

/**
 * One repository's registry behaviour (proxy, hosted or group). Methods answer a request or throw a VaultError with
 * an OCI code; listing helpers return raw data that the router paginates.
 */
export interface RegistryService {
  readonly ctx: PluginContext<OciRepoConfig>;
  /** GET/HEAD a manifest by tag or digest, with Accept negotiation (specs/oci.md §3). @throws MANIFEST_UNKNOWN (404) */
  getManifest(req: Request, t: ImageRef, ref: Reference): Promise<Response>;
  /**
   * PUT a manifest (specs/oci.md §3): 201 with `Location`, `Docker-Content-Digest` (and `OCI-Subject`, `OCI-Tag`).
   * @throws UNSUPPORTED (405) where pushes are not possible, MANIFEST_INVALID (400; 413 when too large),
   *   MANIFEST_BLOB_UNKNOWN (400), DIGEST_INVALID (400), TAG_INVALID (400)
   */
  putManifest(req: Request, t: ImageRef, ref: Reference, caller: Caller): Promise<Response>;
  /**
   * DELETE a manifest (with its tags) or one tag: 202.
   * @throws UNSUPPORTED (405) when deletes are off or impossible, MANIFEST_UNKNOWN (404)
   */
  deleteManifest(req: Request, t: ImageRef, ref: Reference, caller: Caller): Promise<Response>;
  /** GET/HEAD a blob (Range supported; specs/oci.md §4). @throws BLOB_UNKNOWN (404), DIGEST_INVALID (400) */
  getBlob(req: Request, t: ImageRef, digest: string): Promise<Response>;
  /** DELETE a blob link of the image (the bytes go at the next gc): 202. @throws UNSUPPORTED (405), BLOB_UNKNOWN (404) */
  deleteBlob(req: Request, t: ImageRef, digest: string, caller: Caller): Promise<Response>;
  /**
   * POST …/blobs/uploads/ (specs/oci.md §4): a session (202 + `Location`), a single-request push with `?digest=`
   * (201), or a mount (201; 202 session when not mountable). @throws UNSUPPORTED (405) on proxies, DIGEST_INVALID (400)
   */
  startUpload(req: Request, t: ImageRef, caller: Caller, mount: MountRequest | null): Promise<Response>;
  /**
   * PATCH (append, 202) / PUT (close, 201) / GET (status, 204) / DELETE (cancel, 204) on an upload session (specs/oci.md §4).
   * @throws BLOB_UPLOAD_UNKNOWN (404), RANGE_INVALID (416), DIGEST_INVALID / SIZE_INVALID /
   *   BLOB_UPLOAD_INVALID (400; 413 over `maxBlobBytes`), UNSUPPORTED (405) for other methods
   */
  upload(req: Request, t: ImageRef, id: string, caller: Caller): Promise<Response>;
  /** The image's tags, sorted; null when the image is unknown here. */
  tags(t: ImageRef): Promise<string[] | null>;
  /** Descriptors of the manifests whose subject is `digest`; null when unknown/unsupported here (→ 404). */
  referrers(t: ImageRef, digest: string): Promise<Descriptor[] | null>;
  /** Images this repository holds (for `_catalog`), sorted. */
  images(): Promise<string[]>;
  /** The stored row of a blob of `image`, for cross-repository mounts (no upstream fetch). */
  blobEntry(image: string, digest: string): Promise<ArtifactEntry | null>;
  /** The stored row of a blob, fetched into the cache first when this is a proxy; null when unknown here. */
  ensureBlob(t: ImageRef, digest: string): Promise<ArtifactEntry | null>;
  /** hosted: links a blob stored under another row (`src`) into `image` (verified copy through the blob store). */
  linkBlob?(image: string, src: ArtifactEntry, digest: string): Promise<void>;
  /**
   * hosted, for retention (the plugin's `deleteVersion`): removes a tag, and the manifest it points at when no other tag
   * does (its blob links go at the next `gc`). @returns the paths removed and their bytes (none when the tag is unknown)
   */
  removeTag?(image: string, tag: string): Promise<{ paths: string[]; bytes: number }>;
  /** Called at boot (hosted: starts collecting idle upload sessions). */
  start?(): void;
  /** Called at shutdown (hosted: stops the collector; upload sessions stay, resumable by any process or after a restart). */
  stop?(): Promise<void>;
}

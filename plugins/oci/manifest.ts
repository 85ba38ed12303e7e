/** Manifests (specs/oci.md §3): media types, validation of pushed manifests, the blobs they reference, Accept negotiation, referrer descriptors. */
import { ociError } from "./errors.ts";
import { isSha256 } from "./digest.ts";

/** OCI image manifest (image-spec manifest.md): `config`, `layers`, optional `subject`/`artifactType`. */
export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
/** OCI image index (image-spec image-index.md): `manifests` (multi-platform). */
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
/** Docker image manifest, schema 2. */
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
/** Docker manifest list (multi-platform), schema 2. */
export const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
/** Docker schema 1 manifest: refused on push, never proxied (specs/oci.md §3). */
export const DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json";
/** Signed Docker schema 1 manifest: refused like {@link DOCKER_SCHEMA1}. */
export const DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/** Manifest media types we store and serve (the four a proxy asks upstream for, in one Accept header). */
export const MANIFEST_TYPES = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST] as const;
/** `Accept` sent upstream by the proxy: every manifest type, so one cached document per digest serves every client. */
export const UPSTREAM_MANIFEST_ACCEPT = MANIFEST_TYPES.join(", ");

const IMAGE_TYPES = new Set<string>([OCI_MANIFEST, DOCKER_MANIFEST]);
const INDEX_TYPES = new Set<string>([OCI_INDEX, DOCKER_LIST]);

/** True for the image manifest types (config + layers). */
export function isImageManifestType(t: string): boolean {
  return IMAGE_TYPES.has(t);
}
/** True for the index / manifest list types. */
export function isIndexType(t: string): boolean {
  return INDEX_TYPES.has(t);
}

/** An OCI content descriptor (image-spec descriptor.md), as far as the registry uses it. */
export interface Descriptor {
  /** Media type of the referenced content. */
  mediaType: string;
  /** `sha256:<hex>` of the referenced content. */
  digest: string;
  /** bytes */
  size: number;
  /** Type of an artifact manifest (referrers). */
  artifactType?: string;
  annotations?: Record<string, string>;
  /** Index children: the platform an image is for (`os`/`architecture` pick the linux/amd64 fallback). */
  platform?: { architecture?: string; os?: string; variant?: string; [k: string]: unknown };
  /** Alternative download URLs (foreign layers); such layers need not exist in the repository. */
  urls?: string[];
}

/** A validated manifest. */
export interface ParsedManifest {
  /** The manifest's own media type (body `mediaType`, else the request's Content-Type). */
  mediaType: string;
  /** image manifest or index */
  kind: "image" | "index";
  /** config (image manifests) */
  config?: Descriptor;
  /** layers (image manifests) */
  layers: Descriptor[];
  /** children (indexes) */
  manifests: Descriptor[];
  /** The manifest this one refers to (referrers API); it need not exist yet. */
  subject?: Descriptor;
  /** Artifact type, listed in the referrers index. */
  artifactType?: string;
  /** Annotations, listed in the referrers index. */
  annotations?: Record<string, string>;
}

/** Strips parameters and case from a media type (`application/json; charset=utf-8` → `application/json`). */
export function bareMediaType(v: string | null | undefined): string {
  if (!v) return "";
  const i = v.indexOf(";");
  return (i === -1 ? v : v.slice(0, i)).trim().toLowerCase();
}

function invalid(message: string, detail: Record<string, unknown> = {}) {
  return ociError("MANIFEST_INVALID", message, detail);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function stringMap(v: unknown, where: string): Record<string, string> | undefined {
  if (v === undefined) return undefined;
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === "string")) throw invalid(`${where} must map strings to strings`);
  return v as Record<string, string>;
}

/**
 * Validates one descriptor: `mediaType` string, `digest` a sha256 digest, `size` a non-negative integer.
 * @throws VaultError MANIFEST_INVALID (400) naming `where`
 */
export function checkDescriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw invalid(`${where} must be a descriptor object`);
  const { mediaType, digest, size } = v;
  if (typeof mediaType !== "string" || mediaType === "") throw invalid(`${where}.mediaType must be a non-empty string`);
  if (typeof digest !== "string" || !isSha256(digest)) throw invalid(`${where}.digest must be a sha256 digest`, { digest: typeof digest === "string" ? digest.slice(0, 200) : null });
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) throw invalid(`${where}.size must be a non-negative integer`);
  if (v.artifactType !== undefined && typeof v.artifactType !== "string") throw invalid(`${where}.artifactType must be a string`);
  if (v.urls !== undefined && (!Array.isArray(v.urls) || !v.urls.every((u) => typeof u === "string"))) throw invalid(`${where}.urls must be an array of strings`);
  if (v.platform !== undefined && !isObject(v.platform)) throw invalid(`${where}.platform must be an object`);
  stringMap(v.annotations, `${where}.annotations`);
  return v as unknown as Descriptor;
}

/**
 * Parses and validates a manifest body as pushed (`PUT …/manifests/<ref>`) or fetched. The body is never modified
 * (the caller stores the exact bytes). Rules:
 * - JSON object with `schemaVersion: 2` (schema 1 is refused);
 * - media type = body `mediaType`, else `contentType`; when both are present they must agree; must be one of the
 *   four manifest types;
 * - image manifests: `config` descriptor and `layers` array of descriptors; indexes: `manifests` array of descriptors;
 * - optional `subject` descriptor, `artifactType` string, `annotations` string map.
 *
 * @param contentType the request's Content-Type (parameters ignored), or null
 * @throws VaultError MANIFEST_INVALID (400)
 */
export function parseManifest(body: Uint8Array, contentType: string | null): ParsedManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    throw invalid("manifest is not valid UTF-8 JSON");
  }
  if (!isObject(doc)) throw invalid("manifest must be a JSON object");
  const ct = bareMediaType(contentType);
  if (ct === DOCKER_SCHEMA1 || ct === DOCKER_SCHEMA1_SIGNED || doc.schemaVersion === 1)
    throw invalid("Docker schema 1 manifests are not supported; push schema 2 or OCI");
  if (doc.schemaVersion !== 2) throw invalid("schemaVersion must be 2");
  let mediaType: string;
  if (doc.mediaType !== undefined) {
    if (typeof doc.mediaType !== "string") throw invalid("mediaType must be a string");
    mediaType = doc.mediaType;
    if (ct && ct !== "application/json" && ct !== "application/octet-stream" && ct !== mediaType)
      throw invalid("Content-Type does not match the manifest's mediaType", { contentType: ct, mediaType });
  } else {
    mediaType = ct;
    if (!mediaType) {
      // OCI allows omitting mediaType; tell image manifests from indexes by shape
      mediaType = Array.isArray(doc.manifests) ? OCI_INDEX : OCI_MANIFEST;
    }
  }
  const annotations = stringMap(doc.annotations, "annotations");
  if (doc.artifactType !== undefined && typeof doc.artifactType !== "string") throw invalid("artifactType must be a string");
  const subject = doc.subject === undefined ? undefined : checkDescriptor(doc.subject, "subject");
  const base = { mediaType, subject, artifactType: doc.artifactType as string | undefined, annotations };
  if (IMAGE_TYPES.has(mediaType)) {
    if (doc.manifests !== undefined) throw invalid("an image manifest has no manifests array");
    const config = checkDescriptor(doc.config, "config");
    if (!Array.isArray(doc.layers)) throw invalid("layers must be an array");
    const layers = doc.layers.map((l, i) => checkDescriptor(l, `layers[${i}]`));
    return { ...base, kind: "image", config, layers, manifests: [] };
  }
  if (INDEX_TYPES.has(mediaType)) {
    if (!Array.isArray(doc.manifests)) throw invalid("manifests must be an array");
    const manifests = doc.manifests.map((m, i) => checkDescriptor(m, `manifests[${i}]`));
    return { ...base, kind: "index", layers: [], manifests };
  }
  throw invalid(`unsupported manifest media type ${JSON.stringify(mediaType.slice(0, 200))}`, { mediaType: mediaType.slice(0, 200) });
}

/** Blobs a manifest references that must exist in the repository (config + layers without external `urls`). */
export function referencedBlobs(m: ParsedManifest): Descriptor[] {
  if (m.kind !== "image") return [];
  const out: Descriptor[] = [];
  if (m.config) out.push(m.config);
  for (const l of m.layers) if (!l.urls || l.urls.length === 0) out.push(l);
  return out;
}

/**
 * The descriptor listed for a referrer in the referrers index (distribution-spec "Listing Referrers"): media type,
 * digest, size of the referrer manifest, its `artifactType` (falling back to the config's media type) and annotations.
 */
export function referrerDescriptor(m: ParsedManifest, digest: string, sizeBytes: number): Descriptor {
  const d: Descriptor = { mediaType: m.mediaType, digest, size: sizeBytes };
  const at = m.artifactType ?? m.config?.mediaType;
  if (at) d.artifactType = at;
  if (m.annotations && Object.keys(m.annotations).length) d.annotations = m.annotations;
  return d;
}

/** The media types a client accepts: every `Accept` value split on `,`, parameters (`q=`) dropped, lower-cased. */
export function acceptedTypes(accept: string | null): Set<string> {
  const out = new Set<string>();
  if (!accept) return out;
  for (const part of accept.split(",")) {
    const t = bareMediaType(part);
    if (t) out.add(t);
  }
  return out;
}

/** How to answer a manifest request given what is stored and what the client accepts (distribution's rules). */
export type Negotiation = "serve" | "not-acceptable" | "fallback-amd64";

/**
 * Distribution's manifest negotiation (specs/oci.md §3):
 * - no `Accept` at all, or a wildcard (`*\/*`, `application/*`), or the stored type listed → serve as stored;
 * - a stored OCI manifest/index whose type is not accepted → 404 MANIFEST_UNKNOWN;
 * - a Docker manifest list asked by tag by a client without list support → the linux/amd64 child;
 * - anything else (e.g. a schema-2 manifest to a schema-1-only client): served as stored (we never convert).
 */
export function negotiate(stored: string, accepted: Set<string>, byTag: boolean): Negotiation {
  if (accepted.size === 0 || accepted.has(stored) || accepted.has("*/*") || accepted.has("application/*")) return "serve";
  if (stored === OCI_MANIFEST || stored === OCI_INDEX) return "not-acceptable";
  if (stored === DOCKER_LIST && byTag) return "fallback-amd64";
  return "serve";
}

/** The linux/amd64 child of an index, if any. */
export function amd64Child(m: ParsedManifest): Descriptor | undefined {
  return m.manifests.find((d) => d.platform?.os === "linux" && d.platform?.architecture === "amd64");
}

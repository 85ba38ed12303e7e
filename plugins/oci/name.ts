/** Repository names, tags and references (specs/oci.md §1) and parsing of `/v2/…` API paths (routing on the last `/manifests/`, `/blobs/`, …). */
import { ociError } from "./errors.ts";
import { looksLikeDigest, parseDigest } from "./digest.ts";

/** OCI distribution-spec `<name>`: path components of `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by `/`. */
const COMPONENT = "[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*";
/** A whole repository name (`<name>` grammar, specs/oci.md §1); the 255-character bound is checked by {@link isValidName}. */
export const NAME_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
/** OCI tag grammar. */
export const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** Longest name we accept (the spec bounds host + `/` + name by 255). */
export const MAX_NAME_LENGTH = 255;
/** Upload session ids we hand out are UUIDs; anything else is unknown. */
const UPLOAD_ID_RE = /^[A-Za-z0-9_.=-]{1,128}$/;

/** True when `name` is a valid repository name (grammar and length). */
export function isValidName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LENGTH && NAME_RE.test(name);
}

/**
 * Validates a repository name.
 * @returns `name` unchanged
 * @throws VaultError NAME_INVALID (400)
 */
export function checkName(name: string): string {
  if (!isValidName(name)) throw ociError("NAME_INVALID", "invalid repository name", { name: name.slice(0, 300) });
  return name;
}

/** True when `tag` is a valid tag. */
export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

/** A manifest reference: a tag or a digest. */
export type Reference = { kind: "tag"; tag: string } | { kind: "digest"; digest: string };

/**
 * Parses a manifest reference: contains `:` → digest (must be a verifiable sha256), else a tag.
 * @throws VaultError TAG_INVALID (400) bad tag, DIGEST_INVALID (400) bad digest
 */
export function parseReference(ref: string): Reference {
  if (ref.includes(":")) {
    if (!looksLikeDigest(ref)) throw ociError("DIGEST_INVALID", "invalid digest reference", { reference: ref.slice(0, 200) });
    return { kind: "digest", digest: parseDigest(ref).value };
  }
  if (!TAG_RE.test(ref)) throw ociError("TAG_INVALID", "invalid tag", { tag: ref.slice(0, 200) });
  return { kind: "tag", tag: ref };
}

/** One OCI API route, parsed from the path below `/v2/`. Names are validated; references and digests are still raw. */
export type ApiRoute =
  | { kind: "base" }
  | { kind: "catalog" }
  | { kind: "manifest"; name: string; reference: string }
  | { kind: "blob"; name: string; digest: string }
  | { kind: "uploads"; name: string; id: string | null }
  | { kind: "tags"; name: string }
  | { kind: "referrers"; name: string; digest: string };

const MANIFEST_PATH = /^(.+)\/manifests\/([^/]+)$/;
const UPLOAD_PATH = /^(.+)\/blobs\/uploads\/([^/]*)$/;
const BLOB_PATH = /^(.+)\/blobs\/([^/]+)$/;
const TAGS_PATH = /^(.+)\/tags\/list$/;
const REFERRERS_PATH = /^(.+)\/referrers\/([^/]+)$/;

/**
 * Parses the part of an API path after `/v2/` (still percent-encoded as received). `%3A` is decoded to `:` (some
 * clients encode the digest's colon); any other escape, and any name outside the grammar, is refused.
 * Routes on the *last* `/manifests/`, `/blobs/`, `/tags/list`, `/referrers/` since names may contain those words.
 *
 * @param rest e.g. `team/app/manifests/v1`; `""` is the base endpoint, `_catalog` the catalog
 * @returns the route, or null when the path is no OCI endpoint
 * @throws VaultError NAME_INVALID (400) for a malformed name or encoding, BLOB_UPLOAD_UNKNOWN (404) for a malformed upload id
 */
export function parseApiPath(rest: string): ApiRoute | null {
  if (rest === "") return { kind: "base" };
  if (rest === "_catalog") return { kind: "catalog" };
  if (rest.includes("%")) {
    rest = rest.replace(/%3a/gi, ":");
    if (rest.includes("%")) throw ociError("NAME_INVALID", "percent-encoded characters are not allowed in names or references");
  }
  let m: RegExpExecArray | null;
  if ((m = UPLOAD_PATH.exec(rest))) {
    const id = m[2] === "" ? null : m[2];
    checkName(m[1]);
    if (id !== null && !UPLOAD_ID_RE.test(id)) throw ociError("BLOB_UPLOAD_UNKNOWN", "blob upload unknown", { id: id.slice(0, 130) });
    return { kind: "uploads", name: m[1], id };
  }
  if ((m = MANIFEST_PATH.exec(rest))) return { kind: "manifest", name: checkName(m[1]), reference: m[2] };
  if ((m = BLOB_PATH.exec(rest))) return { kind: "blob", name: checkName(m[1]), digest: m[2] };
  if ((m = TAGS_PATH.exec(rest))) return { kind: "tags", name: checkName(m[1]) };
  if ((m = REFERRERS_PATH.exec(rest))) return { kind: "referrers", name: checkName(m[1]), digest: m[2] };
  return null;
}

/**
 * The name to ask a Docker Hub-style upstream for: one-component names get the implicit `library/` (`nginx` →
 * `library/nginx`) when `libraryPrefix` is on.
 */
export function upstreamName(name: string, libraryPrefix: boolean): string {
  return libraryPrefix && !name.includes("/") ? `library/${name}` : name;
}

/** Splits `repo/image…` into the first component and the rest (`null` rest when the name has one component). */
export function splitFirst(name: string): { first: string; rest: string | null } {
  const i = name.indexOf("/");
  return i === -1 ? { first: name, rest: null } : { first: name.slice(0, i), rest: name.slice(i + 1) };
}

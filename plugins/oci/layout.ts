/**
 * Where OCI content sits in a repository's `artifacts` rows (paths are repository-relative; bytes live once in the
 * content-addressed blob store). `_`-prefixed segments cannot collide with image names, whose components start with
 * `[a-z0-9]`:
 *
 * ```
 * <image>/
 *   _manifests/sha256:<hex>                    a manifest's exact bytes (content type = its media type)
 *   _tags/<tag>                                the bytes of the manifest the tag points at (same blob)
 *   _blobs/sha256:<hex>                        a layer/config blob linked into the image (pushed, mounted or cached)
 *   _referrers/sha256:<subject>/sha256:<hex>   a manifest whose `subject` is <subject> (same blob as its manifest row)
 *   _taglist                                   proxy: the upstream tag list, cached
 * _catalog/<image>                             marker: the image has manifests (for /v2/_catalog)
 * @<ns>/<image>/…                               proxy: the same layout for a non-default upstream chosen by `?ns=`
 * ```
 */

/** Row path of a manifest by digest. */
export const manifestPath = (image: string, digest: string) => `${image}/_manifests/${digest}`;
/** Row path of a tag. */
export const tagPath = (image: string, tag: string) => `${image}/_tags/${tag}`;
/** Prefix of every tag row of an image. */
export const tagPrefix = (image: string) => `${image}/_tags/`;
/** Prefix of every manifest row of an image. */
export const manifestPrefix = (image: string) => `${image}/_manifests/`;
/** Row path of a blob link. */
export const blobPath = (image: string, digest: string) => `${image}/_blobs/${digest}`;
/** Prefix of every blob link of an image. */
export const blobPrefix = (image: string) => `${image}/_blobs/`;
/** Row path of a referrer of `subject`. */
export const referrerPath = (image: string, subject: string, digest: string) => `${image}/_referrers/${subject}/${digest}`;
/** Prefix of the referrers of `subject`. */
export const referrerPrefix = (image: string, subject: string) => `${image}/_referrers/${subject}/`;
/** Row path of a proxy's cached tag list. */
export const tagListPath = (image: string) => `${image}/_taglist`;
/** Catalog marker rows. */
export const CATALOG_PREFIX = "_catalog/";
/** Row path of an image's catalog marker (empty body). */
export const catalogPath = (image: string) => `${CATALOG_PREFIX}${image}`;
/** Key prefix of a non-default proxy namespace (`?ns=`). */
export const nsPrefix = (ns: string | null) => (ns ? `@${ns}/` : "");

/** Which upstream paths of a generic http repository are immutable artifacts and which are mutable metadata. */
import type { CacheClass, RepositoryConfig } from "../../core/plugin.ts";

/** Keys an http repository entry may carry besides the core ones. */
export interface HttpRepoConfig extends RepositoryConfig {
  /** Globs (Bun.Glob, matched against the path below the mount) of mutable files, revalidated after `cache.metadataTtlSeconds`. Replaces the defaults. */
  metadataPatterns?: string[];
  /** Globs of files that are immutable even when a metadata pattern also matches (checked first). */
  immutablePatterns?: string[];
  /** Class of paths no pattern matches (default `immutable`). Directory listings (paths ending in `/`) are always mutable unless an immutable pattern matches. */
  defaultClass?: CacheClass;
}

/** Default metadata patterns: Maven metadata and `latest` pointers, the usual mutable files on artifact mirrors. */
export const DEFAULT_METADATA_PATTERNS = ["**/maven-metadata.xml*", "**/latest", "**/latest/**"];

/**
 * Builds the classifier of one repository (DESIGN.md §4): immutable patterns → immutable; metadata patterns →
 * mutable; directory listings (`/` or `…/`) → mutable; else `defaultClass` (immutable).
 * @returns a function of the cache key (canonical path below the mount, `/` for the root)
 */
export function makeClassifier(c: HttpRepoConfig): (key: string) => CacheClass {
  const imm = (c.immutablePatterns ?? []).map((p) => new Bun.Glob(p));
  const meta = (c.metadataPatterns ?? DEFAULT_METADATA_PATTERNS).map((p) => new Bun.Glob(p));
  const dflt: CacheClass = c.defaultClass ?? "immutable";
  return (key) => {
    if (imm.some((g) => g.match(key))) return "immutable";
    if (meta.some((g) => g.match(key))) return "mutable";
    if (key.endsWith("/")) return "mutable";
    return dflt;
  };
}

/**
 * PyPI's (Warehouse) JSON API documents, `/pypi/<project>/json` and `/pypi/<project>/<version>/json`
 * (specs/pypi.md §8): file URLs in `urls[]` and `releases{}` rewritten to the vault. Pure; pool-safe.
 */
import { filesPathOf, type FileLink } from "./simple.ts";

/** Input of {@link rewriteJsonApi}; structured-cloneable. */
export interface JsonApiInput {
  body: Uint8Array;
  /** URL the document was fetched from (base for relative file URLs). */
  pageUrl: string;
  /** Origins whose file URLs are rewritten. */
  fileOrigins: string[];
  /** Absolute public URL of the repository root with trailing slash (`https://vault.example/pypi/`). */
  repoUrl: string;
}

/** Output of {@link rewriteJsonApi}: the rewritten document and the links it now points at. */
export interface JsonApiOutput {
  body: Uint8Array;
  links: [string, FileLink][];
}

/**
 * Rewrites every file `url` of a Warehouse JSON document to `<repoUrl>files/<upstream path>` (allowed origins
 * only; other keys untouched, digests kept verbatim).
 * @throws SyntaxError when the body is not JSON
 */
export function rewriteJsonApi(i: JsonApiInput): JsonApiOutput {
  const doc = JSON.parse(new TextDecoder().decode(i.body)) as Record<string, unknown>;
  const origins = new Set(i.fileOrigins.map((o) => new URL(o).origin));
  const links: [string, FileLink][] = [];
  const fix = (f: unknown) => {
    if (!f || typeof f !== "object") return;
    const o = f as Record<string, unknown>;
    if (typeof o.url !== "string") return;
    let abs: URL;
    try {
      abs = new URL(o.url, i.pageUrl);
    } catch {
      return;
    }
    abs.hash = "";
    const rel = filesPathOf(abs.href, origins);
    if (rel === undefined) return;
    const link: FileLink = { url: abs.href };
    const d = o.digests as Record<string, unknown> | undefined;
    if (d && typeof d.sha256 === "string") link.sha256 = d.sha256.toLowerCase();
    if (typeof o.size === "number") link.sizeBytes = o.size;
    const cm = o["core-metadata"] ?? o["data-dist-info-metadata"];
    if (cm === true) link.coreMetadata = true;
    else if (cm && typeof cm === "object" && typeof (cm as { sha256?: unknown }).sha256 === "string")
      link.coreMetadata = { sha256: (cm as { sha256: string }).sha256.toLowerCase() };
    links.push([rel, link]);
    o.url = i.repoUrl + rel;
  };
  if (Array.isArray(doc.urls)) doc.urls.forEach(fix);
  if (doc.releases && typeof doc.releases === "object") {
    for (const files of Object.values(doc.releases as Record<string, unknown>)) if (Array.isArray(files)) files.forEach(fix);
  }
  return { body: new TextEncoder().encode(JSON.stringify(doc)), links };
}

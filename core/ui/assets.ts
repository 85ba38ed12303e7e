/**
 * The web UI's static files, embedded as text imports (so `bun build --compile` carries them, as it does the
 * migrations) and served at `/-/ui/static/<hash>/<file>` (immutable, cached for a year) or `/-/ui/static/<file>`
 * (revalidated with the ETag).
 */
import css from "./static/ui.css" with { type: "text" };
import js from "./static/ui.js" with { type: "text" };

/** One embedded file. */
export interface Asset {
  body: string;
  contentType: string;
  /** Strong ETag (quoted), from the content's sha256. */
  etag: string;
}

function asset(body: string, contentType: string): Asset {
  const hex = new Bun.CryptoHasher("sha256").update(body).digest("hex");
  return { body, contentType, etag: `"${hex.slice(0, 32)}"` };
}

/** The embedded files by name. */
export const ASSETS: ReadonlyMap<string, Asset> = new Map([
  ["ui.css", asset(css, "text/css; charset=utf-8")],
  ["ui.js", asset(js, "text/javascript; charset=utf-8")],
]);

/** Version segment of the asset URLs: a hash over every embedded file, so a new build gets new URLs. */
export const ASSET_VERSION: string = new Bun.CryptoHasher("sha256")
  .update([...ASSETS.values()].map((a) => a.etag).join(","))
  .digest("hex")
  .slice(0, 16);

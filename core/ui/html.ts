/**
 * HTML for the web UI's server-rendered pages: the `html` tagged template escapes every interpolated value (text and
 * attribute values alike) unless it is already {@link Html}, so a package name, path or version never becomes markup.
 * Formatting helpers for sizes and times.
 */

/** A piece of markup that is safe to insert as is (made by {@link html} or {@link rawHtml}). */
export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

/** Anything `html` accepts in a `${}`: text (escaped), numbers, markup, lists of those; null/undefined/false print nothing. */
export type HtmlValue = Html | string | number | boolean | null | undefined | HtmlValue[];

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** `s` with `& < > " '` replaced by entities: safe as element text and inside a quoted attribute value. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

function render(v: HtmlValue): string {
  if (v instanceof Html) return v.value;
  if (Array.isArray(v)) return v.map(render).join("");
  if (v === null || v === undefined || v === false) return "";
  return escapeHtml(String(v));
}

/**
 * Markup from a template: literal parts are kept, every `${value}` is escaped ({@link escapeHtml}) unless it is
 * {@link Html}. Attribute values must be written quoted (`href="${url}"`).
 * @example html`<a href="${url}">${name}</a>`
 */
export function html(strings: TemplateStringsArray, ...values: HtmlValue[]): Html {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) out += render(values[i]) + strings[i + 1];
  return new Html(out);
}

/** Marks trusted markup (never built from request or stored data) as safe. */
export function rawHtml(s: string): Html {
  return new Html(s);
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** A size for people: `0 B`, `512 B`, `1.5 KiB`, `23.4 MiB` (binary units). */
export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${UNITS[u]}`;
}

/** An epoch-ms time for people, UTC: `2025-03-01 14:05 UTC`; `—` for null. */
export function formatTime(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return "—";
  return new Date(ms).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

/** A count for people with thousands separators: `12,345`. */
export function formatCount(n: number): string {
  return n.toLocaleString("en-US");
}

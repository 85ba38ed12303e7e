/**
 * Pool tasks that rewrite large metadata documents once per upstream fetch (never per hit): replace upstream
 * file-host URL prefixes by the vault's own URL in HTML/JSON text (PyPI simple pages, npm packuments, conda
 * channeldata), or parse JSON, keep/drop fields and rewrite URL fields, and re-serialise.
 * Pure functions: callers run small documents inline with the same function (see `shouldOffload` in core/pool.ts).
 */

/** A document given as text or as UTF-8 bytes (bytes are cheaper to hand to the pool: transfer their buffer). */
export interface DocumentInput {
  text?: string;
  bytes?: Uint8Array;
}

/** Output of a rewrite: the new document as UTF-8 bytes (moved back from the pool, not copied). */
export interface RewriteResult {
  bytes: Uint8Array;
  /** How many URL occurrences (rewriteUrls) or string values (rewriteJson) were rewritten. */
  replacements: number;
}

/**
 * A path pattern into a JSON document: dot-separated keys, `*` matching any one key or array index,
 * e.g. `versions.*.dist.tarball` (npm), `files.*.url` (PEP 691). Give an array of segments when a key itself
 * contains a dot: `["versions", "1.0.0", "dist"]`.
 */
export type JsonPath = string | readonly string[];

/** Replace URL prefixes: any string starting with one of `from` gets that prefix replaced by `to`. */
export interface UrlPrefixRule {
  /** Upstream prefixes, e.g. `["https://files.pythonhosted.org/"]`. Include the trailing slash, so that a longer host does not match. */
  from: string[];
  /** The vault's replacement prefix, e.g. `"http://vault:8080/pypi/files/"`. Inserted literally (no `$` patterns). */
  to: string;
  /**
   * Only string values at (or anywhere below) these paths are rewritten; default: every string value in the document.
   * A matched object or array has all the strings inside it rewritten.
   */
  fields?: JsonPath[];
}

/** What `rewriteJson` does, in this order: pick, drop, urls. */
export interface JsonRewriteRules {
  /** Keep only these paths (and what lies below them), e.g. npm's abbreviated metadata. Default: keep everything. */
  pick?: JsonPath[];
  /** Delete these paths, e.g. `versions.*.readme`. Missing paths are fine. */
  drop?: JsonPath[];
  /** URL prefix rewriting of string values. */
  urls?: UrlPrefixRule;
  /** `JSON.stringify` indentation (spaces); default compact. */
  indent?: number;
}

/** Input of {@link rewriteJson}: the JSON document (text or bytes) and the rules. */
export interface RewriteJsonInput extends DocumentInput {
  rules: JsonRewriteRules;
}

/** Input of {@link rewriteUrls}: the document (any text format: HTML, JSON, XML) and the prefixes. */
export interface RewriteUrlsInput extends DocumentInput {
  from: string[];
  to: string;
}

const encoder = new TextEncoder();

/** Text of a DocumentInput (UTF-8 decoding, BOM dropped). Throws TypeError when neither or both are given. */
export function documentText(i: DocumentInput): string {
  if ((i.text === undefined) === (i.bytes === undefined)) throw new TypeError("give exactly one of `text` or `bytes`");
  return i.text ?? new TextDecoder().decode(i.bytes);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Replaces every occurrence of each `from` prefix by `to` anywhere in the text (HTML `href`s of a PEP 503 page,
 * URLs inside JSON or XML). Also rewrites the JSON-escaped spelling (`https:\/\/host\/`) of each prefix, giving the
 * replacement the same escaping. Longer prefixes win over shorter ones.
 * @returns the rewritten document as UTF-8 bytes and the number of occurrences replaced
 * @throws TypeError when neither or both of `text`/`bytes` are given
 */
export function rewriteUrls(i: RewriteUrlsInput): RewriteResult {
  const text = documentText(i);
  const map = new Map<string, string>();
  for (const f of i.from) {
    if (!f) continue;
    map.set(f, i.to);
    if (f.includes("/")) map.set(f.replaceAll("/", "\\/"), i.to.replaceAll("/", "\\/"));
  }
  if (map.size === 0) return { bytes: encoder.encode(text), replacements: 0 };
  const re = new RegExp([...map.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp).join("|"), "g");
  let replacements = 0;
  const out = text.replace(re, (m) => {
    replacements++;
    return map.get(m)!;
  });
  return { bytes: encoder.encode(out), replacements };
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Pattern = readonly string[];

function compile(paths: readonly JsonPath[] | undefined): Pattern[] {
  return (paths ?? []).map((p) => (typeof p === "string" ? (p === "" ? [] : p.split(".")) : p));
}

function isContainer(v: Json | undefined): v is Json[] | { [k: string]: Json } {
  return typeof v === "object" && v !== null;
}

function matches(seg: string, key: string | number): boolean {
  return seg === "*" || seg === String(key);
}

/** Keeps only what lies on or below the patterns; undefined when nothing matched. */
function pickTree(node: Json, pats: Pattern[]): Json | undefined {
  if (pats.some((p) => p.length === 0)) return node;
  if (!isContainer(node)) return undefined;
  const childPats = (key: string | number) => pats.filter((p) => matches(p[0], key)).map((p) => p.slice(1));
  if (Array.isArray(node)) {
    const out: Json[] = [];
    node.forEach((v, n) => {
      const cp = childPats(n);
      if (cp.length === 0) return;
      const r = pickTree(v, cp);
      if (r !== undefined) out.push(r);
    });
    return out;
  }
  const out: { [k: string]: Json } = {};
  let any = false;
  for (const [k, v] of Object.entries(node)) {
    const cp = childPats(k);
    if (cp.length === 0) continue;
    const r = pickTree(v, cp);
    if (r !== undefined) {
      out[k] = r;
      any = true;
    }
  }
  return any ? out : undefined;
}

/** Deletes what the patterns name, in place. */
function dropTree(node: Json, pats: Pattern[]): void {
  if (!isContainer(node)) return;
  const keys: (string | number)[] = Array.isArray(node) ? node.map((_, n) => n) : Object.keys(node);
  const removeIdx: number[] = [];
  for (const key of keys) {
    const here = pats.filter((p) => p.length > 0 && matches(p[0], key));
    if (here.length === 0) continue;
    if (here.some((p) => p.length === 1)) {
      if (Array.isArray(node)) removeIdx.push(key as number);
      else delete (node as { [k: string]: Json })[key as string];
      continue;
    }
    dropTree((node as any)[key], here.map((p) => p.slice(1)));
  }
  for (let n = removeIdx.length - 1; n >= 0; n--) (node as Json[]).splice(removeIdx[n], 1);
}

/**
 * Parses a JSON document, applies `rules` (pick → drop → URL prefix rewriting), and re-serialises it.
 * Typical uses: npm packument `versions.*.dist.tarball` → vault URLs (plus `pick` for abbreviated metadata);
 * PEP 691 project JSON `files.*.url`; dropping bulky fields (`versions.*.readme`).
 * @returns the new document as UTF-8 bytes and the number of string values rewritten
 * @throws SyntaxError when the document is not JSON; TypeError when neither or both of `text`/`bytes` are given
 */
export function rewriteJson(i: RewriteJsonInput): RewriteResult {
  let doc = JSON.parse(documentText(i)) as Json;
  const r = i.rules ?? {};
  if (r.pick) doc = pickTree(doc, compile(r.pick)) ?? (Array.isArray(doc) ? [] : {});
  if (r.drop) dropTree(doc, compile(r.drop));
  let replacements = 0;
  if (r.urls && r.urls.from.length > 0) {
    const from = r.urls.from.filter(Boolean).sort((a, b) => b.length - a.length);
    const to = r.urls.to;
    const rewrite = (s: string): string => {
      for (const f of from)
        if (s.startsWith(f)) {
          replacements++;
          return to + s.slice(f.length);
        }
      return s;
    };
    /** Rewrites every string in the subtree; returns the (possibly new) value. */
    const all = (v: Json): Json => {
      if (typeof v === "string") return rewrite(v);
      if (Array.isArray(v)) for (let n = 0; n < v.length; n++) v[n] = all(v[n]);
      else if (isContainer(v)) for (const k of Object.keys(v)) v[k] = all(v[k]);
      return v;
    };
    const along = (v: Json, pats: Pattern[]): Json => {
      if (pats.some((p) => p.length === 0)) return all(v);
      if (!isContainer(v)) return v;
      const keys: (string | number)[] = Array.isArray(v) ? v.map((_, n) => n) : Object.keys(v);
      for (const key of keys) {
        const cp = pats.filter((p) => matches(p[0], key)).map((p) => p.slice(1));
        if (cp.length) (v as any)[key] = along((v as any)[key], cp);
      }
      return v;
    };
    doc = r.urls.fields ? along(doc, compile(r.urls.fields)) : all(doc);
  }
  return { bytes: encoder.encode(JSON.stringify(doc, null, r.indent)), replacements };
}

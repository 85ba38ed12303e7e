/**
 * Simple repository API documents (PEP 503/592/629/658/691/700/714): parse an upstream page (JSON or HTML) into one
 * snapshot with file URLs mapped to vault paths, and render that snapshot as PEP 691 JSON or PEP 503 HTML.
 * Pure functions on bytes (no core imports), so the worker pool can run them for large documents.
 */
import { Parser } from "htmlparser2";
import { isValidName, normalizeName } from "./names.ts";
import { pathProblem } from "./paths.ts";
import type { Representation } from "./negotiate.ts";

/** One distribution file of a project page, as the vault keeps it. */
export interface SimpleFile {
  /** The file name (anchor text / JSON `filename`). */
  filename: string;
  /** Absolute upstream URL, fragment removed (query kept). */
  url: string;
  /** Vault path `files/<upstream URL path>` when the URL's origin is an allowed file host; absent ⇒ the link is passed through unchanged. */
  path?: string;
  /** Hash name → lowercase hex digest (`#sha256=` fragment / JSON `hashes`); may be empty. */
  hashes: Record<string, string>;
  /** Requires-Python specifier, unescaped (`>=3.9`). */
  requiresPython?: string;
  /** PEP 592: false, true, or the reason text. */
  yanked: boolean | string;
  /** PEP 658/714: metadata file at `<url>.metadata`: true, or its hashes. Absent ⇒ not advertised. */
  coreMetadata?: true | Record<string, string>;
  /** PEP 503: a signature exists at `<url>.asc`. */
  gpgSig?: boolean;
  /** PEP 700 size in bytes (JSON upstreams only). */
  sizeBytes?: number;
  /** PEP 700 upload time, `yyyy-mm-ddThh:mm:ss[.ffffff]Z`. */
  uploadTime?: string;
  /** PEP 740 provenance URL, passed through. */
  provenance?: string;
  /** Other `data-*` attributes of an HTML upstream, passed through in HTML. */
  extraData?: Record<string, string>;
}

/** A project page (`/simple/<project>/`). */
export interface ProjectPage {
  /** Project name (upstream JSON `name`, else the normalized name requested). */
  name: string;
  /** PEP 700 versions, when the upstream gave them. */
  versions?: string[];
  files: SimpleFile[];
}

/** The root page (`/simple/`): every project name as upstream spells it. */
export interface ProjectList {
  projects: string[];
}

/** What the cache stores for one upstream simple page: the parsed, rewritten document (JSON-encoded). */
export type Snapshot = { v: 1; kind: "project"; page: ProjectPage } | { v: 1; kind: "index"; list: ProjectList };

/** Content-Type of stored snapshots (internal, never sent to clients). */
export const SNAPSHOT_CONTENT_TYPE = "application/vnd.vault.pypi-snapshot+json";

/** Accept header the vault sends upstream: JSON preferred, HTML accepted (PEP 691). */
export const UPSTREAM_ACCEPT =
  "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1";

/** Input of {@link buildSnapshot}; structured-cloneable. */
export interface BuildSnapshotInput {
  /** Upstream response body. */
  body: Uint8Array;
  /** Upstream Content-Type (decides JSON or HTML; sniffed when missing). */
  contentType: string | null;
  /** URL the page was fetched from (after redirects): base for relative links. */
  pageUrl: string;
  kind: "project" | "index";
  /** Normalized project name requested (project pages). */
  project?: string;
  /** Origins (`https://files.example`) whose links are rewritten to vault paths; others pass through. */
  fileOrigins: string[];
}

/** Thrown for upstream documents the vault cannot use (bad JSON, unsupported major api-version). */
export class SimpleParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SimpleParseError";
  }
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/**
 * Parses an upstream simple page (JSON v1 or HTML) into a snapshot and maps allowed file URLs to vault paths
 * (`files/<path of the upstream URL>`, specs/pypi.md §7). Relative links are resolved against `<base href>` or the page URL.
 * @returns the JSON-encoded {@link Snapshot}
 * @throws SimpleParseError on undecodable JSON or an api-version whose major is not 1
 */
export function buildSnapshot(i: BuildSnapshotInput): Uint8Array {
  const text = decoder.decode(i.body);
  const ct = (i.contentType ?? "").toLowerCase();
  const isJson = ct.includes("json") || (!ct.includes("html") && /^\s*\{/.test(text));
  let snap: Snapshot;
  if (i.kind === "index") {
    snap = { v: 1, kind: "index", list: isJson ? parseIndexJson(text) : parseIndexHtml(text) };
  } else {
    const page = isJson ? parseProjectJson(text, i.pageUrl) : parseProjectHtml(text, i.pageUrl, i.project ?? "");
    if (!page.name) page.name = i.project ?? "";
    const origins = new Set(i.fileOrigins.map((o) => new URL(o).origin));
    for (const f of page.files) {
      const rel = filesPathOf(f.url, origins);
      if (rel !== undefined) f.path = rel;
    }
    snap = { v: 1, kind: "project", page };
  }
  return encoder.encode(JSON.stringify(snap));
}

/**
 * The vault path of an upstream file URL: `files/<URL path without leading slash>` when the URL's origin is in
 * `origins` and the path passes the request-path checks (so the vault can serve it back), else undefined.
 */
export function filesPathOf(url: string, origins: Set<string>): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  if (!origins.has(u.origin)) return undefined;
  const rel = "files/" + u.pathname.replace(/^\/+/, "");
  return rel !== "files/" && pathProblem(rel) === null ? rel : undefined;
}

/** Where a vault file path leads upstream, with what the page said about it (recorded per rewritten link). */
export interface FileLink {
  /** Absolute upstream URL of the file (fragment removed). */
  url: string;
  /** Lowercase hex sha256 from the page, when given. */
  sha256?: string;
  /** Size in bytes from the page, when given. */
  sizeBytes?: number;
  /** Whether/what `<url>.metadata` was advertised (PEP 658). */
  coreMetadata?: true | Record<string, string>;
  /** Whether `<url>.asc` was advertised. */
  gpgSig?: boolean;
}

/** The rewritten links of a project page: vault path (`files/…`) → {@link FileLink}. */
export function linksOf(page: ProjectPage): [string, FileLink][] {
  const out: [string, FileLink][] = [];
  for (const f of page.files) {
    if (f.path === undefined) continue;
    const l: FileLink = { url: f.url };
    if (f.hashes.sha256) l.sha256 = f.hashes.sha256;
    if (f.sizeBytes !== undefined) l.sizeBytes = f.sizeBytes;
    if (f.coreMetadata !== undefined) l.coreMetadata = f.coreMetadata;
    if (f.gpgSig) l.gpgSig = true;
    out.push([f.path, l]);
  }
  return out;
}

/** Decodes a stored snapshot. Throws SimpleParseError when it is not one. */
export function readSnapshot(bytes: Uint8Array): Snapshot {
  const s = JSON.parse(decoder.decode(bytes)) as Snapshot;
  if (!s || s.v !== 1 || (s.kind !== "project" && s.kind !== "index")) throw new SimpleParseError("not a pypi snapshot");
  return s;
}

/** Input of {@link renderSnapshot}; structured-cloneable. */
export interface RenderInput {
  snapshot: Uint8Array;
  representation: Representation;
  /** Relative reference from the page URL to the repository root, e.g. `../../` for `/<repo>/simple/<p>/`. */
  rootHref: string;
}

/** Renders a stored snapshot (`parsed` when the caller already decoded it) as the bytes of one representation (JSON for `json`, HTML otherwise). */
export function renderSnapshot(i: RenderInput, parsed?: Snapshot): Uint8Array {
  const s = parsed ?? readSnapshot(i.snapshot);
  const json = i.representation === "json";
  let out: string;
  if (s.kind === "index") out = json ? renderIndexJson(s.list) : renderIndexHtml(s.list);
  else out = json ? renderProjectJson(s.page, i.rootHref) : renderProjectHtml(s.page, i.rootHref);
  return encoder.encode(out);
}

/* ------------------------------------------------------------------ parsing */

/** Hash names pip knows (hashlib's guaranteed algorithms). */
const HASH_NAME = /^(md5|sha1|sha224|sha256|sha384|sha512|sha3_224|sha3_256|sha3_384|sha3_512|blake2b|blake2s)$/;

function parseHashPair(s: string): Record<string, string> | null {
  const m = /^([a-z0-9_]+)=([0-9a-fA-F]+)$/.exec(s.trim());
  return m && HASH_NAME.test(m[1]) ? { [m[1]]: m[2].toLowerCase() } : null;
}

/** Parses a `data-core-metadata` / `data-dist-info-metadata` value: `true` or `<hash>=<hex>`. */
function parseMetadataAttr(v: string | undefined): true | Record<string, string> | undefined {
  if (v === undefined) return undefined;
  if (v.trim().toLowerCase() === "true") return true;
  return parseHashPair(v) ?? undefined;
}

/** Resolves a link and splits off the `#<hash>=<hex>` fragment. Returns null for non-http(s) or unparseable links. */
function resolveLink(href: string, base: string): { url: string; hashes: Record<string, string> } | null {
  let u: URL;
  try {
    u = new URL(href.trim(), base);
  } catch {
    return null;
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") return null;
  const frag = u.hash.slice(1);
  u.hash = "";
  return { url: u.href, hashes: (frag && parseHashPair(frag)) || {} };
}

function lastSegment(url: string): string {
  const p = new URL(url).pathname;
  try {
    return decodeURIComponent(p.slice(p.lastIndexOf("/") + 1));
  } catch {
    return p.slice(p.lastIndexOf("/") + 1);
  }
}

const KNOWN_DATA = new Set(["data-requires-python", "data-yanked", "data-core-metadata", "data-dist-info-metadata", "data-gpg-sig", "data-provenance"]);

/** Parses a PEP 503 HTML project page (attributes entity-decoded). */
export function parseProjectHtml(html: string, pageUrl: string, project: string): ProjectPage {
  let base = pageUrl;
  const anchors: { attrs: Record<string, string>; text: string }[] = [];
  let cur: { attrs: Record<string, string>; text: string } | null = null;
  const parser = new Parser(
    {
      onopentag(name, attrs) {
        if (name === "base" && attrs.href && anchors.length === 0) {
          try {
            base = new URL(attrs.href, pageUrl).href;
          } catch {
            /* keep the page URL */
          }
        } else if (name === "a") {
          cur = { attrs, text: "" };
          anchors.push(cur);
        }
      },
      ontext(t) {
        if (cur) cur.text += t;
      },
      onclosetag(name) {
        if (name === "a") cur = null;
      },
    },
    { decodeEntities: true, lowerCaseAttributeNames: true, lowerCaseTags: true },
  );
  parser.write(html);
  parser.end();
  const files: SimpleFile[] = [];
  for (const a of anchors) {
    if (a.attrs.href === undefined) continue;
    const link = resolveLink(a.attrs.href, base);
    if (!link) continue;
    const f: SimpleFile = { filename: a.text.trim() || lastSegment(link.url), url: link.url, hashes: link.hashes, yanked: false };
    const at = a.attrs;
    if (at["data-requires-python"] !== undefined && at["data-requires-python"].trim() !== "") f.requiresPython = at["data-requires-python"];
    if (at["data-yanked"] !== undefined) f.yanked = at["data-yanked"] === "" ? true : at["data-yanked"];
    const cm = parseMetadataAttr(at["data-core-metadata"] ?? at["data-dist-info-metadata"]);
    if (cm) f.coreMetadata = cm;
    if (at["data-gpg-sig"] !== undefined) f.gpgSig = at["data-gpg-sig"].toLowerCase() === "true";
    if (at["data-provenance"]) f.provenance = at["data-provenance"];
    for (const [k, v] of Object.entries(at)) {
      if (k.startsWith("data-") && !KNOWN_DATA.has(k) && /^data-[a-z0-9-]+$/.test(k)) (f.extraData ??= {})[k] = v;
    }
    files.push(f);
  }
  return { name: project, files };
}

function checkApiVersion(meta: unknown): void {
  const v = (meta as { "api-version"?: unknown } | undefined)?.["api-version"];
  if (typeof v === "string" && !/^1(\.|$)/.test(v)) throw new SimpleParseError(`unsupported api-version ${v}`);
}

function parseJson(text: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new SimpleParseError("upstream page is not valid JSON");
  }
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) throw new SimpleParseError("upstream page is not a JSON object");
  return doc as Record<string, unknown>;
}

function metadataValue(v: unknown): true | Record<string, string> | undefined {
  if (v === true) return true;
  if (v && typeof v === "object" && !Array.isArray(v)) {
    const h: Record<string, string> = {};
    for (const [k, x] of Object.entries(v)) if (typeof x === "string" && HASH_NAME.test(k)) h[k] = x.toLowerCase();
    return h;
  }
  return undefined;
}

/** Parses a PEP 691 JSON project page (v1.x). Legacy `dist-info-metadata` is read as `core-metadata`. */
export function parseProjectJson(text: string, pageUrl: string): ProjectPage {
  const doc = parseJson(text);
  checkApiVersion(doc.meta);
  const files: SimpleFile[] = [];
  for (const raw of Array.isArray(doc.files) ? doc.files : []) {
    if (!raw || typeof raw !== "object") continue;
    const r = raw as Record<string, unknown>;
    if (typeof r.url !== "string" || typeof r.filename !== "string") continue;
    const link = resolveLink(r.url, pageUrl);
    if (!link) continue;
    const hashes: Record<string, string> = {};
    if (r.hashes && typeof r.hashes === "object") {
      for (const [k, v] of Object.entries(r.hashes as Record<string, unknown>)) if (typeof v === "string" && HASH_NAME.test(k)) hashes[k] = v.toLowerCase();
    }
    const f: SimpleFile = { filename: r.filename, url: link.url, hashes: Object.keys(hashes).length ? hashes : link.hashes, yanked: false };
    if (typeof r["requires-python"] === "string" && r["requires-python"] !== "") f.requiresPython = r["requires-python"];
    if (r.yanked === true) f.yanked = true;
    else if (typeof r.yanked === "string") f.yanked = r.yanked === "" ? true : r.yanked;
    const cm = metadataValue(r["core-metadata"] ?? r["dist-info-metadata"]);
    if (cm) f.coreMetadata = cm;
    if (typeof r["gpg-sig"] === "boolean") f.gpgSig = r["gpg-sig"];
    if (typeof r.size === "number" && Number.isSafeInteger(r.size) && r.size >= 0) f.sizeBytes = r.size;
    if (typeof r["upload-time"] === "string") f.uploadTime = r["upload-time"];
    if (typeof r.provenance === "string") f.provenance = r.provenance;
    files.push(f);
  }
  const page: ProjectPage = { name: typeof doc.name === "string" ? doc.name : "", files };
  if (Array.isArray(doc.versions)) page.versions = doc.versions.filter((v): v is string => typeof v === "string");
  return page;
}

/** Parses a PEP 503 HTML root page: the anchor texts are the project names. */
export function parseIndexHtml(html: string): ProjectList {
  const projects: string[] = [];
  let inA = false;
  let text = "";
  const parser = new Parser(
    {
      onopentag(name) {
        if (name === "a") {
          inA = true;
          text = "";
        }
      },
      ontext(t) {
        if (inA) text += t;
      },
      onclosetag(name) {
        if (name === "a" && inA) {
          inA = false;
          const n = text.trim();
          if (isValidName(n)) projects.push(n);
        }
      },
    },
    { decodeEntities: true },
  );
  parser.write(html);
  parser.end();
  return { projects };
}

/** Parses a PEP 691 JSON root page. */
export function parseIndexJson(text: string): ProjectList {
  const doc = parseJson(text);
  checkApiVersion(doc.meta);
  const projects: string[] = [];
  for (const p of Array.isArray(doc.projects) ? doc.projects : []) {
    const n = p && typeof p === "object" ? (p as { name?: unknown }).name : undefined;
    if (typeof n === "string" && isValidName(n)) projects.push(n);
  }
  return { projects };
}

/* ------------------------------------------------------------------ rendering */

/** Escapes text for HTML content and double-quoted attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => (c === "&" ? "&amp;" : c === "<" ? "&lt;" : c === ">" ? "&gt;" : c === '"' ? "&quot;" : "&#39;"));
}

/** PEP 700: `1.1` only when every field 1.1 makes mandatory (versions, each file's size) is known, else `1.0`. */
export function apiVersionOf(page: ProjectPage): "1.0" | "1.1" {
  return page.versions !== undefined && page.files.every((f) => f.sizeBytes !== undefined) ? "1.1" : "1.0";
}

/** The href/url clients get for a file: vault-relative when rewritten, else the upstream URL unchanged. */
function fileHref(f: SimpleFile, rootHref: string): string {
  return f.path !== undefined ? rootHref + f.path : f.url;
}

/** The preferred hash fragment: sha256 when known, else the first hash given. */
function hashFragment(h: Record<string, string>): string {
  if (h.sha256) return `#sha256=${h.sha256}`;
  const k = Object.keys(h)[0];
  return k ? `#${k}=${h[k]}` : "";
}

function metadataAttr(cm: true | Record<string, string>): string {
  if (cm === true) return "true";
  const k = cm.sha256 ? "sha256" : Object.keys(cm)[0];
  return k ? `${k}=${cm[k]}` : "true";
}

/**
 * PEP 503 HTML project page. Keeps `#<hash>=` fragments, `data-requires-python`, `data-yanked`, `data-gpg-sig`,
 * and emits `data-core-metadata` plus the legacy `data-dist-info-metadata` (HTML only, same value) for pip < 23.2.
 */
export function renderProjectHtml(page: ProjectPage, rootHref: string): string {
  const name = escapeHtml(page.name);
  const parts = [
    `<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" content="${apiVersionOf(page)}">\n    <title>Links for ${name}</title>\n  </head>\n  <body>\n    <h1>Links for ${name}</h1>\n`,
  ];
  for (const f of page.files) {
    let a = `    <a href="${escapeHtml(fileHref(f, rootHref) + hashFragment(f.hashes))}"`;
    if (f.requiresPython !== undefined) a += ` data-requires-python="${escapeHtml(f.requiresPython)}"`;
    if (f.coreMetadata !== undefined) {
      const v = escapeHtml(metadataAttr(f.coreMetadata));
      a += ` data-core-metadata="${v}" data-dist-info-metadata="${v}"`;
    }
    if (f.gpgSig !== undefined) a += ` data-gpg-sig="${f.gpgSig}"`;
    if (f.yanked !== false) a += ` data-yanked="${f.yanked === true ? "" : escapeHtml(f.yanked)}"`;
    if (f.provenance !== undefined) a += ` data-provenance="${escapeHtml(f.provenance)}"`;
    for (const [k, v] of Object.entries(f.extraData ?? {})) a += ` ${k}="${escapeHtml(v)}"`;
    parts.push(`${a}>${escapeHtml(f.filename)}</a><br />\n`);
  }
  parts.push("  </body>\n</html>\n");
  return parts.join("");
}

/**
 * PEP 691 JSON project page (v1.0, or v1.1 with `versions` and `size` when known). Never emits the legacy
 * `dist-info-metadata` key (pip 22.3–23.1 crash on it, PEP 714).
 */
export function renderProjectJson(page: ProjectPage, rootHref: string): string {
  const v = apiVersionOf(page);
  const files = page.files.map((f) => {
    const o: Record<string, unknown> = { filename: f.filename, url: fileHref(f, rootHref), hashes: f.hashes };
    if (f.requiresPython !== undefined) o["requires-python"] = f.requiresPython;
    if (f.coreMetadata !== undefined) o["core-metadata"] = f.coreMetadata;
    if (f.gpgSig !== undefined) o["gpg-sig"] = f.gpgSig;
    if (f.sizeBytes !== undefined) o.size = f.sizeBytes;
    if (f.uploadTime !== undefined) o["upload-time"] = f.uploadTime;
    o.yanked = f.yanked;
    if (f.provenance !== undefined) o.provenance = f.provenance;
    return o;
  });
  const doc: Record<string, unknown> = { meta: { "api-version": v }, name: page.name };
  if (v === "1.1") doc.versions = page.versions;
  doc.files = files;
  return JSON.stringify(doc);
}

/** PEP 503 HTML root page: one `<a href="<normalized>/">Name</a>` per project (relative to `/simple/`). */
export function renderIndexHtml(list: ProjectList): string {
  const parts = ['<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" content="1.0">\n    <title>Simple index</title>\n  </head>\n  <body>\n'];
  for (const n of list.projects) parts.push(`    <a href="${escapeHtml(normalizeName(n))}/">${escapeHtml(n)}</a><br />\n`);
  parts.push("  </body>\n</html>\n");
  return parts.join("");
}

/** PEP 691 JSON root page. */
export function renderIndexJson(list: ProjectList): string {
  return JSON.stringify({ meta: { "api-version": "1.0" }, projects: list.projects.map((name) => ({ name })) });
}

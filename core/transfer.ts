/**
 * Air-gap transfer (docs/export-import.md, ROADMAP "Air-gap export/import"): the archive a `vault export` writes and a
 * `vault import` reads, its manifest, and which stored rows an export selects.
 *
 * The archive is one POSIX tar (tar-stream; sizes above 8 GiB in GNU base-256 notation):
 * ```
 * manifest.json              first: format, source vault, selection, repositories, one entry per exported row
 * blobs/sha256/<hex>         then each blob once (content-addressed: a file reached through two repositories is stored once)
 * ```
 * Entries name their blob by sha256; the import verifies every blob against the manifest while streaming it.
 */
import { hostname } from "node:os";
import { once } from "node:events";
import { pipeline } from "node:stream/promises";
import { pack as tarPack } from "tar-stream";
import type { ArtifactEntry, PackageRef, PluginContext, VaultPlugin } from "./plugin.ts";
import { directoryPackageOf } from "./plugin.ts";
import type { BlobStore } from "./storage/blobs.ts";
import type { VaultArtifactStore } from "./artifacts.ts";
import { normalizePackageName } from "./search.ts";
import { etagForDigest } from "./http/respond.ts";

/** `format` of every manifest. */
export const ARCHIVE_FORMAT = "artifact-vault-export";
/** The manifest version this code writes and reads. */
export const ARCHIVE_VERSION = 1;
/** Name of the first tar entry. */
export const MANIFEST_NAME = "manifest.json";
/** Largest manifest an import reads, bytes (about a million entries). */
export const MAX_MANIFEST_BYTES = 512 * 1024 * 1024;
/** Rows read per page while selecting. */
const PAGE = 1000;

/** The tar entry name of a blob: `blobs/sha256/<hex>`. */
export function blobEntryName(hex: string): string {
  return `blobs/sha256/${hex}`;
}

/** A bad selection, archive or target; the message says what and where (the CLI prints it and exits 1). */
export class TransferError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TransferError";
  }
}

/** One source repository as the manifest describes it. */
export interface ManifestRepository {
  name: string;
  format: string;
  type: "proxy" | "hosted";
  /** Upstream URL of a proxy (the import warns when the target's differs: documents may name it). */
  upstream?: string;
}

/** One exported row of one repository. */
export interface ManifestEntry {
  repository: string;
  format: string;
  type: "proxy" | "hosted";
  /** Repository-relative path, as stored (variant suffixes included, e.g. `simple/foo/#json`). */
  path: string;
  /** bytes */
  size: number;
  /** lowercase hex sha256 of the bytes (the blob's name in the archive) */
  sha256: string;
  contentType: string | null;
  /** `artifact` (a file) or `metadata` (a document). */
  kind: "artifact" | "metadata";
  /** The package and version the plugin's `packageOf` (else `ownerOf`) gives; absent for rows of no package. */
  package?: { name: string; version?: string };
  /** Validators of a cached entry, sent upstream when the target revalidates it. */
  upstreamEtag?: string;
  upstreamLastModified?: string;
  /** The ETag the source served (quoted), when not the one derived from the digest. */
  etag?: string;
  /** Headers replayed with the file (lower-case names). */
  headers?: Record<string, string>;
  /** Upstream Cache-Control flags that bind a cached entry (`must-revalidate`, `no-cache`). */
  cacheFlags?: string[];
  /** epoch ms the row was stored (uploaded, fetched or last revalidated) */
  fetchedAt: number;
  /** A cached document that expires (revalidated upstream); absent for immutable files and hosted rows. */
  mutable?: true;
}

/** What `vault export` selected (recorded in the manifest for people reading it). */
export interface ManifestSelection {
  repositories: string[];
  packages: string[];
  /** ISO 8601 */
  since?: string;
}

/** `manifest.json`. */
export interface ExportManifest {
  format: typeof ARCHIVE_FORMAT;
  version: typeof ARCHIVE_VERSION;
  /** ISO 8601 */
  createdAt: string;
  source: { vault: string; host: string; publicUrl?: string; config?: string };
  selection: ManifestSelection;
  repositories: ManifestRepository[];
  entries: ManifestEntry[];
  /** Distinct blobs and their total size in bytes (what follows the manifest). */
  blobs: { count: number; bytes: number };
}

/** JSON Schema of `manifest.json` (checked with ajv by {@link parseManifest}). */
export const MANIFEST_SCHEMA = {
  type: "object",
  required: ["format", "version", "createdAt", "source", "repositories", "entries", "blobs"],
  properties: {
    format: { const: ARCHIVE_FORMAT },
    version: { const: ARCHIVE_VERSION },
    createdAt: { type: "string" },
    source: { type: "object", required: ["vault", "host"], properties: { vault: { type: "string" }, host: { type: "string" }, publicUrl: { type: "string" }, config: { type: "string" } } },
    selection: { type: "object" },
    repositories: {
      type: "array",
      items: {
        type: "object",
        required: ["name", "format", "type"],
        properties: { name: { type: "string", minLength: 1 }, format: { type: "string", minLength: 1 }, type: { enum: ["proxy", "hosted"] }, upstream: { type: "string" } },
      },
    },
    entries: {
      type: "array",
      items: {
        type: "object",
        required: ["repository", "format", "type", "path", "size", "sha256", "kind", "fetchedAt"],
        properties: {
          repository: { type: "string", minLength: 1 },
          format: { type: "string", minLength: 1 },
          type: { enum: ["proxy", "hosted"] },
          path: { type: "string", minLength: 1, pattern: "^[^\\u0000]*$" },
          size: { type: "integer", minimum: 0 },
          sha256: { type: "string", pattern: "^[0-9a-f]{64}$" },
          contentType: { type: ["string", "null"] },
          kind: { enum: ["artifact", "metadata"] },
          package: { type: "object", required: ["name"], properties: { name: { type: "string" }, version: { type: "string" } } },
          upstreamEtag: { type: "string" },
          upstreamLastModified: { type: "string" },
          etag: { type: "string" },
          headers: { type: "object", additionalProperties: { type: "string" } },
          cacheFlags: { type: "array", items: { type: "string" } },
          fetchedAt: { type: "integer", minimum: 0 },
          mutable: { const: true },
        },
      },
    },
    blobs: { type: "object", required: ["count", "bytes"], properties: { count: { type: "integer", minimum: 0 }, bytes: { type: "integer", minimum: 0 } } },
  },
} as const;

let validateManifest: ((v: unknown) => boolean) & { errors?: { instancePath: string; message?: string }[] | null } | undefined;

/**
 * Parses and checks `manifest.json`: the JSON Schema ({@link MANIFEST_SCHEMA}), every entry's repository listed under
 * `repositories` with the same format and type, one (repository, path) per entry, one size per sha256.
 * @throws TransferError naming the first problem (`manifest.json: /entries/3/sha256 must match pattern …`)
 */
export function parseManifest(bytes: Uint8Array): ExportManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new TransferError(`${MANIFEST_NAME} is not JSON: ${(e as Error).message}`);
  }
  const f = (doc as { format?: unknown } | null)?.format;
  if (f !== ARCHIVE_FORMAT) throw new TransferError(`${MANIFEST_NAME}: not a vault export (format ${JSON.stringify(f)}, expected ${JSON.stringify(ARCHIVE_FORMAT)})`);
  const v = (doc as { version?: unknown }).version;
  if (v !== ARCHIVE_VERSION) throw new TransferError(`${MANIFEST_NAME}: archive version ${JSON.stringify(v)} is not supported (this vault reads version ${ARCHIVE_VERSION})`);
  if (!validateManifest) {
    const Ajv = (require("ajv") as { default: new (o: object) => { compile(s: object): typeof validateManifest } }).default;
    validateManifest = new Ajv({ allErrors: false, strict: false }).compile(MANIFEST_SCHEMA);
  }
  if (!validateManifest!(doc)) {
    const e = validateManifest!.errors?.[0];
    throw new TransferError(`${MANIFEST_NAME}: ${e?.instancePath || "/"} ${e?.message ?? "is invalid"}`);
  }
  const m = doc as ExportManifest;
  const repos = new Map(m.repositories.map((r) => [r.name, r]));
  const seen = new Set<string>();
  const sizes = new Map<string, number>();
  m.entries.forEach((e, i) => {
    const r = repos.get(e.repository);
    if (!r || r.format !== e.format || r.type !== e.type) throw new TransferError(`${MANIFEST_NAME}: /entries/${i} names repository ${e.repository} (${e.format} ${e.type}), which the repositories list does not describe so`);
    const key = `${e.repository}\n${e.path}`;
    if (seen.has(key)) throw new TransferError(`${MANIFEST_NAME}: /entries/${i} repeats ${e.repository}:${e.path}`);
    seen.add(key);
    const s = sizes.get(e.sha256);
    if (s !== undefined && s !== e.size) throw new TransferError(`${MANIFEST_NAME}: /entries/${i} gives blob ${e.sha256} ${e.size} bytes, another entry ${s}`);
    sizes.set(e.sha256, e.size);
  });
  return m;
}

/* ------------------------------------------------------------------ selection */

/** One `--package NAME[@VERSION]` (npm scopes keep their leading `@`). */
export interface PackageSelector {
  name: string;
  version?: string;
  /** The text as given, for messages. */
  text: string;
}

/**
 * Parses `NAME[@VERSION]`: the version follows the last `@` after the first character (`@scope/pkg@1.0.0` → name
 * `@scope/pkg`, version `1.0.0`).
 * @throws TransferError when the name or the version is empty
 */
export function parseSelector(text: string): PackageSelector {
  const s = text.trim();
  const at = s.lastIndexOf("@");
  const cut = at > 0 ? at : -1;
  const name = cut === -1 ? s : s.slice(0, cut);
  const version = cut === -1 ? undefined : s.slice(cut + 1);
  if (name === "" || name === "@" || version === "") throw new TransferError(`package selector ${JSON.stringify(text)}: expected NAME or NAME@VERSION`);
  return version === undefined ? { name, text: s } : { name, version, text: s };
}

/** Selectors of a `--list` file: one `NAME[@VERSION]` per line; blank lines and `#` comments ignored. */
export function parseSelectorList(text: string): PackageSelector[] {
  const out: PackageSelector[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/(^|\s)#.*$/, "").trim();
    if (line !== "") out.push(parseSelector(line));
  }
  return out;
}

/** A repository of the vault as export and import use it: its context and its plugin. */
export interface TransferRepository {
  ctx: PluginContext;
  plugin: VaultPlugin;
}

/** What `vault export` selects. */
export interface ExportSelection {
  /** Repository names (a group stands for its members); empty: every proxy and hosted repository. */
  repositories: string[];
  /** Empty: every stored file of the repositories. */
  packages: PackageSelector[];
  /** Only rows stored at or after this time, epoch ms. */
  since?: number;
}

/** Result of {@link planExport}. */
export interface ExportPlan {
  manifest: ExportManifest;
  /** Package selectors that matched no stored file (the CLI refuses to write a partial set). */
  unmatched: string[];
}

/** The plugin's `packageOf` (else the directory default), null when it throws. */
function packageRefOf(t: TransferRepository, path: string): PackageRef | null {
  try {
    return t.plugin.packageOf ? t.plugin.packageOf(path, t.ctx) : directoryPackageOf(path);
  } catch {
    return null;
  }
}

/** The plugin's `ownerOf`, null without it or when it throws. */
function ownerRefOf(t: TransferRepository, path: string): PackageRef | null {
  try {
    return t.plugin.ownerOf?.(path, t.ctx) ?? null;
  } catch {
    return null;
  }
}

/** Whether `ref` is selected by `s`: same name (PEP 503-style comparison), and the version when both give one. */
function matches(ref: PackageRef, s: PackageSelector & { norm: string }): boolean {
  if (normalizePackageName(ref.name) !== s.norm) return false;
  return s.version === undefined || ref.version === undefined || ref.version === s.version;
}

/**
 * Expands repository names to the proxy and hosted repositories to export, in order and without duplicates (a group
 * stands for its members, recursively).
 * @throws TransferError for a name that is not configured
 */
export function expandRepositories(all: Map<string, TransferRepository>, names: string[]): TransferRepository[] {
  const out = new Map<string, TransferRepository>();
  const visit = (name: string, via?: string) => {
    const t = all.get(name);
    if (!t) throw new TransferError(via ? `group ${via} names member ${JSON.stringify(name)}, which is not configured` : `no repository named ${JSON.stringify(name)}`);
    if (t.ctx.repo.type === "group") {
      for (const m of t.ctx.config.members ?? []) if (!out.has(m)) visit(m, name);
    } else out.set(name, t);
  };
  if (names.length === 0) for (const [n, t] of all) if (t.ctx.repo.type !== "group") out.set(n, t);
  for (const n of names) visit(n);
  return [...out.values()];
}

/**
 * Selects the rows to export and builds the manifest (DESIGN.md §1 `vault export`): every stored file (status 200, a
 * blob) of the repositories, narrowed to rows stored since `since` and to the packages asked for. A package selects
 * every row whose `packageOf` or `ownerOf` names it: its files, their companions and its documents (a proxy's simple
 * page or packument, so another vault serves the files offline as cache hits). Rows are read in pages of 1000 and
 * ordered by repository, then path; blobs are counted once.
 * @param repos the repositories to export ({@link expandRepositories})
 * @param source describes the exporting vault
 */
export async function planExport(repos: TransferRepository[], sel: ExportSelection, source: ExportManifest["source"]): Promise<ExportPlan> {
  const selectors = sel.packages.map((s) => ({ ...s, norm: normalizePackageName(s.name) }));
  const hit = new Set<number>();
  const entries: ManifestEntry[] = [];
  const repositories: ManifestRepository[] = [];
  const sizes = new Map<string, number>();
  for (const t of repos) {
    const type = t.ctx.repo.type as "proxy" | "hosted";
    const r: ManifestRepository = { name: t.ctx.repo.name, format: t.ctx.config.format, type };
    if (type === "proxy" && t.ctx.config.upstream) r.upstream = t.ctx.config.upstream;
    let any = false;
    let after: string | undefined;
    for (;;) {
      const page: ArtifactEntry[] = await t.ctx.artifacts.list("", { limit: PAGE, after });
      if (page.length === 0) break;
      after = page[page.length - 1].path;
      for (const e of page) {
        if (e.status !== 200 || !e.blobDigest) continue;
        if (sel.since !== undefined && e.fetchedAt < sel.since) continue;
        const ref = packageRefOf(t, e.path);
        let own: PackageRef | null | undefined;
        const owner = () => (own === undefined ? (own = ownerRefOf(t, e.path)) : own);
        if (selectors.length > 0) {
          let selected = false;
          selectors.forEach((s, i) => {
            if (ref && matches(ref, s)) {
              selected = true;
              hit.add(i);
            } else if (owner() && matches(owner()!, s)) selected = true;
          });
          if (!selected) continue;
        }
        entries.push(toManifestEntry(t, type, e, ref ?? owner()));
        sizes.set(e.blobDigest, e.sizeBytes);
        any = true;
      }
      if (page.length < PAGE) break;
    }
    if (any || sel.packages.length === 0) repositories.push(r);
  }
  const unmatched = selectors.filter((_, i) => !hit.has(i)).map((s) => s.text);
  let bytes = 0;
  for (const n of sizes.values()) bytes += n;
  const manifest: ExportManifest = {
    format: ARCHIVE_FORMAT,
    version: ARCHIVE_VERSION,
    createdAt: new Date().toISOString(),
    source,
    selection: {
      repositories: repos.map((t) => t.ctx.repo.name),
      packages: sel.packages.map((s) => s.text),
      ...(sel.since !== undefined ? { since: new Date(sel.since).toISOString() } : {}),
    },
    repositories,
    entries,
    blobs: { count: sizes.size, bytes },
  };
  return { manifest, unmatched };
}

/** A stored row → its manifest entry. */
function toManifestEntry(t: TransferRepository, type: "proxy" | "hosted", e: ArtifactEntry, ref: PackageRef | null): ManifestEntry {
  const hex = e.blobDigest!.slice("sha256:".length);
  const m: ManifestEntry = {
    repository: t.ctx.repo.name,
    format: t.ctx.config.format,
    type,
    path: e.path,
    size: e.sizeBytes,
    sha256: hex,
    contentType: e.contentType,
    kind: e.kind,
    fetchedAt: e.fetchedAt,
  };
  if (ref) m.package = ref.version !== undefined ? { name: ref.name, version: ref.version } : { name: ref.name };
  if (e.upstreamEtag) m.upstreamEtag = e.upstreamEtag;
  if (e.upstreamLastModified) m.upstreamLastModified = e.upstreamLastModified;
  if (e.etag && e.etag !== etagForDigest(hex)) m.etag = e.etag;
  if (Object.keys(e.headers).length > 0) m.headers = e.headers;
  if (e.cacheFlags.length > 0) m.cacheFlags = e.cacheFlags;
  if (type === "proxy" && e.expiresAt !== null) m.mutable = true;
  return m;
}

/** Describes this vault for a manifest's `source`. */
export function sourceOf(o: { version: string; publicUrl?: string; config?: string }): ExportManifest["source"] {
  return { vault: `artifact-vault ${o.version}`, host: hostname(), ...(o.publicUrl ? { publicUrl: o.publicUrl } : {}), ...(o.config ? { config: o.config } : {}) };
}

/* ------------------------------------------------------------------ writing */

/**
 * Streams the archive of `manifest` to `out`: `manifest.json`, then each blob once in the order of first use, read
 * from the blob store and hashed on the way (constant memory whatever the sizes: one chunk at a time, with the
 * writer's backpressure). A blob whose stored bytes do not match its digest and size stops the export.
 * @param onBytes called with the byte count of each blob chunk written
 * @throws TransferError naming the row of a missing or damaged blob; the stream's own errors
 */
export async function writeArchive(manifest: ExportManifest, blobs: BlobStore, out: NodeJS.WritableStream, onBytes?: (n: number) => void): Promise<void> {
  const p = tarPack();
  const mtime = new Date(manifest.createdAt);
  const piped = (pipeline as unknown as (streams: unknown[]) => Promise<void>)([p, out]);
  // A failing writer destroys the pack; an entry waiting for room must not wait forever.
  piped.catch(() => {});
  const entry = (name: string, size: number, body?: Uint8Array) => {
    let settle!: (e?: Error | null) => void;
    const done = new Promise<void>((resolve, reject) => (settle = (e) => (e ? reject(e) : resolve())));
    const header = { name, size, mode: 0o644, mtime, uid: 0, gid: 0, uname: "root", gname: "root" };
    const sink = body ? p.entry(header, Buffer.from(body.buffer, body.byteOffset, body.byteLength), settle) : p.entry(header, settle);
    return { sink, done };
  };
  try {
    const json = new TextEncoder().encode(JSON.stringify(manifest, null, 1) + "\n");
    await entry(MANIFEST_NAME, json.byteLength, json).done;
    const seen = new Set<string>();
    for (const e of manifest.entries) {
      if (seen.has(e.sha256)) continue;
      seen.add(e.sha256);
      const where = `${e.repository}:${e.path}`;
      let body: ReadableStream<Uint8Array>;
      try {
        body = await blobs.open(`sha256:${e.sha256}`);
      } catch (err) {
        throw new TransferError(`blob sha256:${e.sha256} of ${where} is missing from the blob store: ${(err as Error).message}`);
      }
      const { sink, done } = entry(blobEntryName(e.sha256), e.size);
      const hasher = new Bun.CryptoHasher("sha256");
      let n = 0;
      for await (const chunk of body) {
        n += chunk.byteLength;
        if (n > e.size) break;
        hasher.update(chunk);
        if (!sink.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))) await once(sink as unknown as NodeJS.EventEmitter, "drain");
        onBytes?.(chunk.byteLength);
      }
      const hex = n === e.size ? hasher.digest("hex") : "";
      if (hex !== e.sha256) {
        const err = new TransferError(`blob sha256:${e.sha256} of ${where} is damaged in the blob store (${n === e.size ? `its bytes hash to ${hex}` : `${n > e.size ? "more" : "fewer"} than ${e.size} bytes`}); run the export again after repairing or removing it`);
        p.destroy(err);
        throw err;
      }
      sink.end(undefined);
      await done;
    }
    p.finalize();
    await piped;
  } catch (e) {
    p.destroy(e as Error);
    if (e instanceof TransferError) throw e;
    // an entry fails with a generic message when the writer broke the pipe: the writer's error says why
    throw (await piped.then(() => undefined, (w: unknown) => w)) ?? e;
  }
}

/** The artifact store behind a context (the host's, with `record` and `blobs`), or a TransferError. */
export function storeOf(ctx: PluginContext): VaultArtifactStore {
  const s = ctx.artifacts as Partial<VaultArtifactStore>;
  if (typeof s.record !== "function" || !s.blobs) throw new TransferError(`repository ${ctx.repo.name}: its artifact store is not the host's (cannot record rows)`);
  return s as VaultArtifactStore;
}

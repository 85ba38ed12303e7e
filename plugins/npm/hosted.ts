/**
 * npm hosted repository (specs/npm.md §5): `npm publish`, `npm deprecate`, `npm dist-tag`, `npm unpublish`, and reads of
 * packuments (full and abbreviated) and tarballs answered from stored bytes.
 *
 * Artifact paths (repository-relative):
 * ```
 * <name>/-/<file>.tgz                      a tarball (scoped: @scope/pkg/-/pkg-<version>.tgz)        (served)
 * <name>#doc                               the package document (publish.ts: relative tarball paths)
 * <name>#v#<version>                       one published version's record (publish.ts VersionRecord)
 * <name>#full#<tag>, <name>#abbrev#<tag>   the document rendered for one public URL (tag: service.ts tagOf) (served)
 * ```
 * A publish stores the tarball, the version record, the document and both renderings for the publishing request's
 * public URL in ONE `artifacts.commit` (one transaction): a packument never lists a tarball that is not stored. A
 * rendering carries the digest of the document it was made from (`x-vault-doc`); a read whose rendering is missing or
 * older than the document renders it once and stores it. Writes to one package are serialised per process; several
 * processes sharing the data directory may still race on the document, so after each write the document is brought in
 * line with the version records (versions without a record removed, records missing from it added back). Unpublishing a
 * version removes its record first, then writes the document, then deletes the tarball; `time` keeps the version, so its
 * number is never published again.
 */
import { errors, KeyedLock, readBodyLimited, type ArtifactEntry, type ArtifactPut, type PluginContext } from "../../core/plugin.ts";
import type { Variant } from "./documents.ts";
import { npmErrors } from "./errors.ts";
import { bareName, tarballPath, type DocEdit, type EditResult, type InspectedPublish, type VersionRecord } from "./publish.ts";
import {
  DEFAULT_MAX_UPLOAD_BYTES,
  VARIANT_CONTENT_TYPE,
  freshEntry,
  respondPackument,
  runTask,
  tagOf,
  type Actor,
  type NpmRepoConfig,
  type NpmService,
  type NpmWrites,
} from "./service.ts";

/** Header of a stored rendering: the blob digest of the package document it was rendered from. */
const DOC_HEADER = "x-vault-doc";
/** How many times a write re-applies version records that another process's write dropped before giving up (logged). */
const MAX_RECONCILE = 20;
/** JSON bodies that are not publishes (dist-tag values), bytes. */
const MAX_SMALL_BODY = 64 * 1024;
/** Room for the JSON around a publish's base64 tarball, bytes. */
const PUBLISH_JSON_OVERHEAD = 8 * 1024 * 1024;

const decoder = new TextDecoder();

/** One file of an `artifacts.commit`. */
type CommitFile = { path: string; body: Uint8Array | string; opts?: ArtifactPut };

const docPath = (name: string) => `${name}#doc`;
const recordPrefix = (name: string) => `${name}#v#`;
const renderPath = (name: string, variant: Variant, base: string) => `${name}#${variant}#${tagOf(base)}`;

function sha256Digest(b: Uint8Array): string {
  return `sha256:${new Bun.CryptoHasher("sha256").update(b).digest("hex")}`;
}

/**
 * Creates the service of one hosted npm repository (layout in this file's header). Configuration: `maxUploadBytes`
 * (largest tarball, default {@link DEFAULT_MAX_UPLOAD_BYTES}; the request body may be 4/3 of that plus
 * {@link PUBLISH_JSON_OVERHEAD}), `loginTokenTtlSeconds` (service.ts).
 */
export function createNpmHosted(ctx: PluginContext<NpmRepoConfig>): NpmService {
  const maxUpload = ctx.config.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const maxBody = Math.ceil((maxUpload * 4) / 3) + PUBLISH_JSON_OVERHEAD;
  const locks = new KeyedLock();

  /** The rendering of `doc` for `base`: stored bytes when made from this document, else rendered once and stored. */
  async function rendered(name: string, variant: Variant, base: string, doc: ArtifactEntry, signal?: AbortSignal): Promise<ArtifactEntry> {
    const key = renderPath(name, variant, base);
    const cur = await ctx.artifacts.get(key);
    if (cur && cur.status === 200 && cur.blobDigest && cur.headers[DOC_HEADER] === doc.blobDigest) return cur;
    const bytes = await ctx.artifacts.read(doc);
    const out = await runTask(ctx, { op: "render", body: bytes, base, variant }, bytes.byteLength, { signal });
    return ctx.artifacts.put(key, out.body!, { contentType: VARIANT_CONTENT_TYPE[variant], kind: "metadata", headers: { [DOC_HEADER]: doc.blobDigest! } });
  }

  async function packument(req: Request, name: string, variant: Variant): Promise<ArtifactEntry | null> {
    const doc = await ctx.artifacts.get(docPath(name));
    if (!doc || doc.status !== 200 || !doc.blobDigest) return null;
    return rendered(name, variant, ctx.baseUrl(req), doc, req.signal);
  }

  /**
   * Commits `extra` files, the document and both its renderings for the request's public URL, in one transaction.
   * Without a request (retention) only the document: renderings are made again on their next read.
   */
  async function commitDoc(req: Request | undefined, name: string, doc: Uint8Array, extra: CommitFile[]): Promise<void> {
    const digest = sha256Digest(doc);
    const files: CommitFile[] = [...extra, { path: docPath(name), body: doc, opts: { contentType: "application/json", kind: "metadata" } }];
    if (req === undefined) return void (await ctx.artifacts.commit(files));
    const base = ctx.baseUrl(req);
    for (const variant of ["full", "abbrev"] as const) {
      const out = await runTask(ctx, { op: "render", body: doc, base, variant }, doc.byteLength);
      files.push({ path: renderPath(name, variant, base), body: out.body!, opts: { contentType: VARIANT_CONTENT_TYPE[variant], kind: "metadata", headers: { [DOC_HEADER]: digest } } });
    }
    await ctx.artifacts.commit(files);
  }

  /** Runs one edit on the current document (read from the database). Throws the edit's problem as a VaultError. */
  async function applyEdit(name: string, edit: DocEdit, doc: ArtifactEntry | null): Promise<EditResult & { body?: Uint8Array }> {
    const bytes = doc ? await ctx.artifacts.read(doc) : undefined;
    const out = await runTask(ctx, { op: "edit", name, doc: bytes, now: Date.now(), edit }, (bytes?.byteLength ?? 0) + (edit.kind === "update" ? edit.body.byteLength : 0));
    const r = out.edit!;
    if (r.problem) throw npmErrors.refused(r.problem.status, r.problem.message);
    return { ...r, body: out.body };
  }

  /** Removes every row of a package: document first (reads answer 404 at once), then records, renderings, tarballs. */
  async function removePackage(name: string): Promise<void> {
    await ctx.artifacts.delete(docPath(name));
    for (const r of await ctx.artifacts.list(`${name}#`)) await ctx.artifacts.delete(r.path);
    for (const r of await ctx.artifacts.list(`${name}/-/`)) await ctx.artifacts.delete(r.path);
  }

  /**
   * Writes an edited document; versions it removed lose their record before and their tarball after the write. A
   * document left without versions removes the whole package.
   */
  async function store(req: Request | undefined, name: string, r: EditResult & { body?: Uint8Array }, extra: CommitFile[] = []): Promise<void> {
    if (!r.body) return;
    if (r.remaining.length === 0) return removePackage(name);
    for (const v of r.removed) await ctx.artifacts.delete(recordPrefix(name) + v);
    await commitDoc(req, name, r.body, extra);
    for (const v of r.removed) await ctx.artifacts.delete(tarballPath(name, v));
  }

  /** Brings the document in line with the version records (see the file header). */
  async function reconcile(req: Request | undefined, name: string): Promise<void> {
    const prefix = recordPrefix(name);
    for (let i = 0; i < MAX_RECONCILE; i++) {
      const doc = await freshEntry(ctx, docPath(name));
      if (!doc) return;
      const rows = (await ctx.artifacts.list(prefix)).filter((e) => e.blobDigest);
      const have = rows.map((e) => e.path.slice(prefix.length));
      const first = await applyEdit(name, { kind: "reconcile", have, restore: [] }, doc);
      const listed = new Set(first.remaining);
      const missing = rows.filter((e) => !listed.has(e.path.slice(prefix.length)));
      if (missing.length === 0 && !first.body) return;
      const restore = await Promise.all(missing.map(async (e) => JSON.parse(decoder.decode(await ctx.artifacts.read(e))) as VersionRecord));
      const r = missing.length === 0 ? first : await applyEdit(name, { kind: "reconcile", have, restore }, doc);
      ctx.log.info("package document reconciled with its version records", { name, removed: r.removed, restored: missing.length });
      await store(req, name, r);
    }
    ctx.log.warn("package document still differs from its version records after repeated rewrites (concurrent writes from other processes?)", { name });
  }

  /** Runs `fn` under the package's lock, then reconciles the document. */
  async function locked<T>(req: Request | undefined, name: string, fn: () => Promise<T>): Promise<T> {
    return locks.run(name, async () => {
      const out = await fn();
      await reconcile(req, name);
      return out;
    });
  }

  /** Reads the current document or throws 404. */
  async function requireDoc(name: string): Promise<ArtifactEntry> {
    const doc = await freshEntry(ctx, docPath(name));
    if (!doc) throw errors.notFound(`package ${name}`);
    return doc;
  }

  /** A new version: tarball, record, document and renderings in one commit. @throws 403 when the version was ever published */
  async function publish(req: Request, actor: Actor, name: string, body: Uint8Array, inspected: Omit<InspectedPublish, "tarball">, tarball: Uint8Array): Promise<Response> {
    if (tarball.byteLength > maxUpload) throw npmErrors.tooLarge(maxUpload);
    const record: VersionRecord = {
      version: inspected.version,
      manifest: { ...inspected.manifest, _npmUser: { name: actor.principal.name } },
      time: new Date().toISOString(),
      tags: inspected.tags,
    };
    const r = await locked(req, name, async () => {
      const r = await applyEdit(name, { kind: "add", record, user: actor.principal.name }, await freshEntry(ctx, docPath(name)));
      await store(req, name, r, [
        { path: `${name}/-/${inspected.file}`, body: tarball, opts: { contentType: "application/octet-stream", kind: "artifact" } },
        { path: recordPrefix(name) + record.version, body: JSON.stringify(record), opts: { contentType: "application/json", kind: "metadata" } },
      ]);
      return r;
    });
    const detail: Record<string, unknown> = { version: record.version, tags: record.tags, sizeBytes: tarball.byteLength, requestBytes: body.byteLength };
    if (actor.via) detail.via = actor.via;
    ctx.auth.audit({ principal: actor.principal, action: "npm.publish", path: `${name}/-/${inspected.file}`, detail, req });
    return Response.json({ ok: true, id: name, rev: r.rev }, { status: 201 });
  }

  /** A document sent back by npm (deprecate, unpublish one version); removals need delete permission. */
  async function update(req: Request, actor: Actor, name: string, body: Uint8Array): Promise<Response> {
    const r = await locked(req, name, async () => {
      const r = await applyEdit(name, { kind: "update", body }, await requireDoc(name));
      if (r.removed.length > 0) actor.need("delete");
      await store(req, name, r);
      return r;
    });
    if (r.body) ctx.auth.audit({ principal: actor.principal, action: "npm.update", path: docPath(name), detail: { removed: r.removed, via: actor.via }, req });
    return Response.json({ ok: true, id: name, rev: r.rev });
  }

  const writes: NpmWrites = {
    async writeDoc(req, name) {
      const doc = await requireDoc(name);
      const bytes = await ctx.artifacts.read(doc);
      const out = await runTask(ctx, { op: "render", body: bytes, base: ctx.baseUrl(req), variant: "full" }, bytes.byteLength, { signal: req.signal });
      return new Response(req.method === "HEAD" ? null : (out.body as Uint8Array<ArrayBuffer>), { headers: { "content-type": "application/json", "cache-control": "no-store" } });
    },

    async put(req, actor, name) {
      actor.need("write");
      const body = await readBodyLimited(req, maxBody, () => npmErrors.tooLarge(maxBody));
      let out;
      try {
        out = await runTask(ctx, { op: "inspect", body, name }, body.byteLength, { signal: req.signal });
      } catch (e) {
        if (e instanceof Error && e.name === "PackumentParseError") throw npmErrors.badRequest(`the request body is not a package document: ${e.message}`);
        throw e;
      }
      if (out.problem) throw npmErrors.refused(out.problem.status, out.problem.message);
      if (out.update) return update(req, actor, name, body);
      return publish(req, actor, name, body, out.inspected!, out.body!);
    },

    async unpublish(req, actor, name) {
      actor.need("delete");
      await locks.run(name, async () => {
        await requireDoc(name);
        await removePackage(name);
      });
      ctx.auth.audit({ principal: actor.principal, action: "npm.unpublish", path: docPath(name), detail: { via: actor.via }, req });
      return Response.json({ ok: true, id: name });
    },

    async deleteTarball(req, actor, name, file) {
      actor.need("delete");
      const bare = bareName(name);
      const version = file.startsWith(`${bare}-`) ? file.slice(bare.length + 1, -".tgz".length) : "";
      await locked(req, name, async () => {
        const doc = await freshEntry(ctx, docPath(name));
        if (doc) await store(req, name, await applyEdit(name, { kind: "remove", versions: [version] }, doc));
        await ctx.artifacts.delete(`${name}/-/${file}`);
      });
      ctx.auth.audit({ principal: actor.principal, action: "npm.unpublish", path: `${name}/-/${file}`, detail: { via: actor.via }, req });
      return Response.json({ ok: true });
    },

    async setTag(req, actor, name, tag) {
      actor.need("write");
      const raw = await readBodyLimited(req, MAX_SMALL_BODY, () => npmErrors.tooLarge(MAX_SMALL_BODY));
      let version: unknown;
      try {
        version = JSON.parse(decoder.decode(raw));
      } catch {
        version = undefined;
      }
      if (typeof version !== "string") throw npmErrors.badRequest('the body must be the version as a JSON string, e.g. "1.2.0"');
      const r = await locked(req, name, async () => {
        const r = await applyEdit(name, { kind: "tag", tag, version }, await requireDoc(name));
        await store(req, name, r);
        return r;
      });
      ctx.auth.audit({ principal: actor.principal, action: "npm.dist-tag", path: docPath(name), detail: { tag, version, via: actor.via }, req });
      return Response.json({ ok: true, id: name, rev: r.rev, "dist-tags": r.distTags });
    },

    async removeTag(req, actor, name, tag) {
      actor.need("write");
      const r = await locked(req, name, async () => {
        const r = await applyEdit(name, { kind: "untag", tag }, await requireDoc(name));
        await store(req, name, r);
        return r;
      });
      ctx.auth.audit({ principal: actor.principal, action: "npm.dist-tag", path: docPath(name), detail: { tag, removed: true, via: actor.via }, req });
      return Response.json({ ok: true, id: name, rev: r.rev, "dist-tags": r.distTags });
    },
  };

  /**
   * Retention (the plugin's `deleteVersion`): unpublishes one version as `npm unpublish <name>@<version>` does — record,
   * document entry, tarball — without a request; the last version removes the whole package.
   * @returns the paths removed and their total size in bytes (none when the version is not stored)
   */
  async function removeVersion(name: string, version: string): Promise<{ paths: string[]; bytes: number }> {
    return locked(undefined, name, async () => {
      const doc = await freshEntry(ctx, docPath(name));
      if (!doc) return { paths: [], bytes: 0 };
      const r = await applyEdit(name, { kind: "remove", versions: [version] }, doc);
      if (!r.body) return { paths: [], bytes: 0 };
      const gone = r.remaining.length === 0 ? await ctx.artifacts.list(name) : [];
      const files = gone.length ? gone.filter((e) => e.path.startsWith(`${name}#`) || e.path.startsWith(`${name}/-/`)) : [];
      for (const p of [recordPrefix(name) + version, tarballPath(name, version)]) {
        const e = r.remaining.length === 0 ? undefined : await ctx.artifacts.get(p);
        if (e) files.push(e);
      }
      await store(undefined, name, r);
      return { paths: files.map((e) => e.path), bytes: files.reduce((n, e) => n + e.sizeBytes, 0) };
    });
  }

  /**
   * After an import (the plugin's `afterImport`): each package's document reconciled with its version records — made
   * from them when the archive brought records but no document — so it lists exactly the stored versions; renderings
   * follow on their next read.
   */
  async function afterImport(names: string[]): Promise<void> {
    for (const name of names)
      await locked(undefined, name, async () => {
        if (await freshEntry(ctx, docPath(name))) return;
        const rows = (await ctx.artifacts.list(recordPrefix(name))).filter((e) => e.blobDigest);
        if (rows.length === 0) return;
        const restore = await Promise.all(rows.map(async (e) => JSON.parse(decoder.decode(await ctx.artifacts.read(e))) as VersionRecord));
        await store(undefined, name, await applyEdit(name, { kind: "reconcile", have: restore.map((r) => r.version), restore }, null));
      });
  }

  return {
    ctx,
    removeVersion,
    afterImport,
    servePackument: async (req, name, variant) => respondPackument(ctx, req, name, variant, await packument(req, name, variant)),
    packument,
    async tarball(req, name, file) {
      const e = await ctx.artifacts.get(`${name}/-/${file}`);
      if (!e || e.status !== 200 || !e.blobDigest) return null;
      return ctx.artifacts.respond(req, e);
    },
    writes: () => writes,
  };
}

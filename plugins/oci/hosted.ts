/**
 * The hosted registry (specs/oci.md §2–§5): the full push API — upload sessions (monolithic, chunked, single-request,
 * cross-repository mount), manifest PUT with validation of referenced blobs, tags, referrers, deletes.
 */
import type { ArtifactEntry, PluginContext } from "../../core/plugin.ts";
import { blobKey, readBodyLimited } from "../../core/plugin.ts";
import { API_VERSION, API_VERSION_HEADER, ociError } from "./errors.ts";
import { parseDigest, sha256Digest } from "./digest.ts";
import { parseContentRange, uploadRangeHeader } from "./content-range.ts";
import { isValidTag } from "./name.ts";
import { parseManifest, referencedBlobs, referrerDescriptor, type Descriptor, type ParsedManifest } from "./manifest.ts";
import { blobReply, blobRowHeaders, negotiatedManifestReply } from "./reply.ts";
import {
  blobPath,
  CATALOG_PREFIX,
  catalogPath,
  manifestPath,
  manifestPrefix,
  referrerPath,
  referrerPrefix,
  tagPath,
  tagPrefix,
} from "./layout.ts";
import { UploadManager, type ClaimedSession, type UploadSession } from "./upload.ts";
import type { ImageRef, MountRequest, OciRepoConfig, RegistryService } from "./types.ts";
import type { Caller } from "./token.ts";

/** Default largest manifest, bytes (the spec asks registries to accept at least 4 MiB). */
export const DEFAULT_MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** Default idle time after which an upload session is collected, seconds. */
export const DEFAULT_UPLOAD_TTL_SECONDS = 86_400;

const BLOB_TYPE = "application/octet-stream";

/** Options of {@link createHosted}. */
export interface HostedOptions {
  /** Finds the service of another repository (source of a cross-repository mount). */
  serviceOf(ctx: PluginContext): RegistryService;
}

function emptyReply(status: number, headers: Record<string, string>): Response {
  return new Response(null, { status, headers: { "content-length": "0", [API_VERSION_HEADER]: API_VERSION, ...headers } });
}

function contentLength(req: Request): number | null {
  const v = req.headers.get("content-length");
  return v !== null && /^\d{1,15}$/.test(v) ? Number(v) : null;
}

/** True when the request carries a body (a non-zero Content-Length, or chunked transfer). */
function hasBody(req: Request): boolean {
  const cl = contentLength(req);
  if (cl !== null) return cl > 0;
  return req.headers.has("transfer-encoding");
}

/** Reads a request body of at most `max` bytes. @throws VaultError MANIFEST_INVALID (413) when larger */
export function readLimited(req: Request, max: number): Promise<Uint8Array> {
  return readBodyLimited(req, max, () => ociError("MANIFEST_INVALID", `manifest exceeds the limit of ${max} bytes`, { limit: max }, {}, 413));
}

/**
 * Creates the hosted registry service of one repository. Upload sessions are `oci_uploads` rows with a file in
 * `ctx.storage.spoolDir()/oci-uploads/` (upload.ts), shared by every process on the database and kept across
 * restarts; they are collected after `uploadTtlSeconds` of idleness (timer started by `start()`).
 */
export function createHosted(ctx: PluginContext<OciRepoConfig>, o: HostedOptions): RegistryService {
  const cfg = ctx.config;
  const allowDelete = cfg.allowDelete !== false;
  const maxManifest = cfg.maxManifestBytes ?? DEFAULT_MAX_MANIFEST_BYTES;
  const uploadTtlMs = (cfg.uploadTtlSeconds ?? DEFAULT_UPLOAD_TTL_SECONDS) * 1000;
  const uploads = new UploadManager({
    db: ctx.metadata,
    repository: ctx.repo.name,
    spoolDir: () => ctx.storage.spoolDir(),
    log: ctx.log,
    maxBlobBytes: cfg.maxBlobBytes,
  });
  let timer: ReturnType<typeof setInterval> | undefined;

  const live = (e: ArtifactEntry | null): ArtifactEntry | null => (e && e.status === 200 && e.blobDigest ? e : null);
  const manifestRow = async (image: string, digest: string) => live(await ctx.artifacts.get(manifestPath(image, digest)));
  const blobRow = async (image: string, digest: string) => live(await ctx.artifacts.get(blobPath(image, digest)));

  function sessionHeaders(t: ImageRef, s: UploadSession): Record<string, string> {
    return {
      location: `${t.api}/${t.name}/blobs/uploads/${s.id}`,
      range: uploadRangeHeader(s.sizeBytes),
      "docker-upload-uuid": s.id,
    };
  }

  function blobCreated(t: ImageRef, digest: string): Response {
    return emptyReply(201, { location: `${t.api}/${t.name}/blobs/${digest}`, "docker-content-digest": digest });
  }

  /** Moves a finished upload (claimed by the caller) into the blob store and links it into the image. */
  async function finish(t: ImageRef, s: ClaimedSession, digest: string, caller: Caller): Promise<Response> {
    const d = parseDigest(digest);
    const actual = await uploads.digest(s);
    if (actual !== d.value) throw ociError("DIGEST_INVALID", "uploaded content does not match the digest", { expected: d.value, actual });
    await ctx.artifacts.put(blobPath(t.image, d.value), Bun.file(s.path).slice(0, s.sizeBytes).stream(), {
      contentType: BLOB_TYPE,
      headers: blobRowHeaders(d.value),
      expect: { sha256: d.hex, sizeBytes: s.sizeBytes },
    });
    await uploads.remove(s);
    ctx.auth.audit({ principal: caller.principal, action: "oci.blob.push", path: `${t.image}@${d.value}`, detail: { sizeBytes: s.sizeBytes } });
    return blobCreated(t, d.value);
  }

  /** Links a blob stored elsewhere (mount source) into `image`, streaming it through digest verification. */
  async function link(image: string, src: ArtifactEntry, digest: string): Promise<void> {
    const d = parseDigest(digest);
    const body = await ctx.storage.get(blobKey(d.value));
    await ctx.artifacts.put(blobPath(image, d.value), body, {
      contentType: BLOB_TYPE,
      headers: blobRowHeaders(d.value),
      expect: { sha256: d.hex, sizeBytes: src.sizeBytes },
    });
  }

  /** Every missing reference of a manifest: blobs of an image manifest, children of an index. */
  async function missingReferences(image: string, m: ParsedManifest): Promise<Descriptor[]> {
    const missing: Descriptor[] = [];
    for (const b of referencedBlobs(m)) {
      const row = await blobRow(image, b.digest);
      if (!row) missing.push(b);
    }
    for (const c of m.manifests) if (!(await manifestRow(image, c.digest))) missing.push(c);
    return missing;
  }

  async function removeManifest(image: string, digest: string, entry: ArtifactEntry): Promise<void> {
    let subject: string | undefined;
    try {
      subject = parseManifest(await ctx.artifacts.read(entry), entry.contentType).subject?.digest;
    } catch {
      subject = undefined;
    }
    for (const tag of await ctx.artifacts.list(tagPrefix(image))) if (tag.blobDigest === digest) await ctx.artifacts.delete(tag.path);
    if (subject) await ctx.artifacts.delete(referrerPath(image, subject, digest));
    await ctx.artifacts.delete(manifestPath(image, digest));
    if ((await ctx.artifacts.list(manifestPrefix(image), { limit: 1 })).length === 0) await ctx.artifacts.delete(catalogPath(image));
  }

  const service: RegistryService = {
    ctx,

    async getManifest(req, t, ref) {
      const row = live(await ctx.artifacts.get(ref.kind === "tag" ? tagPath(t.image, ref.tag) : manifestPath(t.image, ref.digest)));
      if (!row) throw ociError("MANIFEST_UNKNOWN", "manifest unknown", ref.kind === "tag" ? { tag: ref.tag } : { digest: ref.digest });
      return negotiatedManifestReply(req, ctx, row, ref.kind === "tag", (d) => manifestRow(t.image, d));
    },

    async putManifest(req, t, ref, caller) {
      const body = await readLimited(req, maxManifest);
      const digest = sha256Digest(body);
      if (ref.kind === "digest" && ref.digest !== digest) throw ociError("DIGEST_INVALID", "manifest content does not match the digest in the URL", { expected: ref.digest, actual: digest });
      const m = parseManifest(body, req.headers.get("content-type"));
      const missing = await missingReferences(t.image, m);
      if (missing.length) throw ociError("MANIFEST_BLOB_UNKNOWN", "manifest references unknown blobs or manifests", { digests: missing.map((d) => d.digest) });
      const tags: string[] = [];
      if (ref.kind === "tag") tags.push(ref.tag);
      else
        for (const tg of new URL(req.url).searchParams.getAll("tag")) {
          if (!isValidTag(tg)) throw ociError("TAG_INVALID", "invalid tag", { tag: tg.slice(0, 200) });
          if (!tags.includes(tg)) tags.push(tg);
        }
      const files: Parameters<typeof ctx.artifacts.commit>[0] = [{ path: manifestPath(t.image, digest), body, opts: { contentType: m.mediaType } }];
      for (const tg of tags) files.push({ path: tagPath(t.image, tg), body, opts: { contentType: m.mediaType, kind: "metadata" } });
      if (m.subject) files.push({ path: referrerPath(t.image, m.subject.digest, digest), body, opts: { contentType: m.mediaType, kind: "metadata" } });
      if (!(await ctx.artifacts.get(catalogPath(t.image)))) files.push({ path: catalogPath(t.image), body: "", opts: { kind: "metadata" } });
      await ctx.artifacts.commit(files);
      // gc runs mark & sweep concurrently: if it unlinked a blob between our check and our commit, undo the push
      const gone = await missingReferences(t.image, m);
      if (gone.length) {
        for (const f of files) if (f.path !== catalogPath(t.image)) await ctx.artifacts.delete(f.path);
        throw ociError("MANIFEST_BLOB_UNKNOWN", "manifest references blobs removed meanwhile", { digests: gone.map((d) => d.digest) });
      }
      ctx.auth.audit({ principal: caller.principal, action: "oci.manifest.push", path: `${t.image}@${digest}`, detail: { tags, mediaType: m.mediaType }, req });
      const headers: Record<string, string> = { location: `${t.api}/${t.name}/manifests/${digest}`, "docker-content-digest": digest };
      if (m.subject) headers["oci-subject"] = m.subject.digest;
      const res = emptyReply(201, headers);
      if (ref.kind === "digest") for (const tg of tags) res.headers.append("oci-tag", tg);
      return res;
    },

    async deleteManifest(req, t, ref, caller) {
      if (!allowDelete) throw ociError("UNSUPPORTED", "deletes are disabled in this repository");
      if (ref.kind === "tag") {
        const row = live(await ctx.artifacts.get(tagPath(t.image, ref.tag)));
        if (!row) throw ociError("MANIFEST_UNKNOWN", "tag unknown", { tag: ref.tag });
        await ctx.artifacts.delete(tagPath(t.image, ref.tag));
      } else {
        const row = await manifestRow(t.image, ref.digest);
        if (!row) throw ociError("MANIFEST_UNKNOWN", "manifest unknown", { digest: ref.digest });
        await removeManifest(t.image, ref.digest, row);
      }
      ctx.auth.audit({ principal: caller.principal, action: "oci.manifest.delete", path: `${t.image}${ref.kind === "tag" ? ":" + ref.tag : "@" + ref.digest}`, req });
      return emptyReply(202, {});
    },

    async getBlob(req, t, digest) {
      const d = parseDigest(digest);
      const row = await blobRow(t.image, d.value);
      if (!row) throw ociError("BLOB_UNKNOWN", "blob unknown", { digest: d.value });
      return blobReply(req, ctx, row, d.value);
    },

    async deleteBlob(req, t, digest, caller) {
      if (!allowDelete) throw ociError("UNSUPPORTED", "deletes are disabled in this repository");
      const d = parseDigest(digest);
      if (!(await blobRow(t.image, d.value))) throw ociError("BLOB_UNKNOWN", "blob unknown", { digest: d.value });
      await ctx.artifacts.delete(blobPath(t.image, d.value));
      ctx.auth.audit({ principal: caller.principal, action: "oci.blob.delete", path: `${t.image}@${d.value}`, req });
      return emptyReply(202, {});
    },

    async startUpload(req, t, caller, mount) {
      const url = new URL(req.url);
      if (mount) {
        const d = parseDigest(mount.digest);
        if (await blobRow(t.image, d.value)) return blobCreated(t, d.value);
        if (mount.from && mount.allowed) {
          const src = await o.serviceOf(mount.from.ctx).blobEntry(mount.from.image, d.value);
          if (src) {
            await link(t.image, src, d.value);
            ctx.auth.audit({ principal: caller.principal, action: "oci.blob.mount", path: `${t.image}@${d.value}`, detail: { from: `${mount.from.ctx.repo.name}/${mount.from.image}` }, req });
            return blobCreated(t, d.value);
          }
        }
        // not mountable: an ordinary session (the client then uploads)
      }
      const digest = url.searchParams.get("digest");
      if (digest !== null && !mount) {
        const d = parseDigest(digest);
        if (hasBody(req)) {
          const s = await uploads.create(t.image);
          try {
            return await uploads.locked(s, async (c) => {
              await uploads.append(c, req.body, null, contentLength(req));
              return finish(t, c, d.value, caller);
            });
          } finally {
            await uploads.remove(s);
          }
        }
      }
      const s = await uploads.create(t.image);
      return emptyReply(202, sessionHeaders(t, s));
    },

    async upload(req, t, id, caller) {
      const s = await uploads.get(id, t.image);
      switch (req.method) {
        case "GET":
        case "HEAD":
          return emptyReply(204, sessionHeaders(t, s));
        case "DELETE":
          await uploads.cancel(s);
          return emptyReply(204, {});
        case "PATCH":
          return uploads.locked(s, async (c) => {
            const cr = req.headers.get("content-range");
            await uploads.append(c, req.body, cr ? parseContentRange(cr) : null, contentLength(req));
            return emptyReply(202, sessionHeaders(t, c));
          });
        case "PUT": {
          const digest = new URL(req.url).searchParams.get("digest");
          parseDigest(digest);
          return uploads.locked(s, async (c) => {
            if (hasBody(req)) {
              const cr = req.headers.get("content-range");
              await uploads.append(c, req.body, cr ? parseContentRange(cr) : null, contentLength(req));
            }
            return finish(t, c, digest!, caller);
          });
        }
        default:
          throw ociError("UNSUPPORTED", `${req.method} not allowed on an upload`, {}, { allow: "GET, PATCH, PUT, DELETE" });
      }
    },

    async tags(t) {
      const prefix = tagPrefix(t.image);
      const rows = await ctx.artifacts.list(prefix);
      if (rows.length === 0 && !(await ctx.artifacts.get(catalogPath(t.image)))) return null;
      return rows.map((r) => r.path.slice(prefix.length));
    },

    async referrers(t, digest) {
      const d = parseDigest(digest);
      const out: Descriptor[] = [];
      for (const row of await ctx.artifacts.list(referrerPrefix(t.image, d.value))) {
        if (!row.blobDigest) continue;
        try {
          const m = parseManifest(await ctx.artifacts.read(row), row.contentType);
          out.push(referrerDescriptor(m, row.blobDigest, row.sizeBytes));
        } catch (e) {
          ctx.log.warn("unreadable referrer", { path: row.path, error: (e as Error).message });
        }
      }
      return out;
    },

    async images() {
      const rows = await ctx.artifacts.list(CATALOG_PREFIX);
      return rows.map((r) => r.path.slice(CATALOG_PREFIX.length)).filter((n) => !n.startsWith("@"));
    },

    blobEntry: (image, digest) => blobRow(image, digest),
    ensureBlob: (t, digest) => blobRow(t.image, digest),
    linkBlob: (image, src, digest) => link(image, src, digest),

    async removeTag(image, tag) {
      const row = live(await ctx.artifacts.get(tagPath(image, tag)));
      if (!row) return { paths: [], bytes: 0 };
      await ctx.artifacts.delete(row.path);
      const out = { paths: [row.path], bytes: row.sizeBytes };
      const digest = row.blobDigest!;
      if ((await ctx.artifacts.list(tagPrefix(image))).some((t) => t.blobDigest === digest)) return out;
      const m = await manifestRow(image, digest);
      if (m) {
        await removeManifest(image, digest, m);
        out.paths.push(m.path);
        out.bytes += m.sizeBytes;
      }
      return out;
    },

    start() {
      if (timer) return;
      const every = Math.max(1000, Math.min(uploadTtlMs, 600_000));
      timer = setInterval(
        () => void uploads.collect(uploadTtlMs).catch((e) => ctx.log.warn("upload collection failed", { error: (e as Error).message })),
        every,
      );
      timer.unref?.();
    },

    async stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      // sessions stay (rows and files): other processes keep serving them, and this one resumes them after a restart
      uploads.close();
    },
  };
  return service;
}

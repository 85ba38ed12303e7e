/**
 * The group registry: reads go through the member repositories in order (first hit wins; tags, referrers and the
 * catalog are merged), pushes and deletes go to the designated hosted member (`writeTo`). A manifest pushed through
 * the group may reference blobs the client found (HEAD) in another member and therefore did not upload: those are
 * copied into the writer first.
 */
import type { PluginContext } from "../../core/plugin.ts";
import { VaultError } from "../../core/plugin.ts";
import { ociError } from "./errors.ts";
import { sortUnique } from "./reply.ts";
import { parseManifest, referencedBlobs, type Descriptor } from "./manifest.ts";
import { DEFAULT_MAX_MANIFEST_BYTES, readLimited } from "./hosted.ts";
import type { ImageRef, OciRepoConfig, RegistryService } from "./types.ts";

/** Options of {@link createGroup}. */
export interface GroupOptions {
  /** The registry service of a member repository. */
  serviceOf(ctx: PluginContext): RegistryService;
}

/**
 * Creates the group service of one repository. Members are looked up lazily (`ctx.member`), so their order and
 * existence follow the validated config.
 */
export function createGroup(ctx: PluginContext<OciRepoConfig>, o: GroupOptions): RegistryService {
  const memberNames = ctx.config.members ?? [];
  const members = (): RegistryService[] => {
    const out: RegistryService[] = [];
    for (const n of memberNames) {
      const m = ctx.member(n);
      if (m) out.push(o.serviceOf(m));
    }
    return out;
  };
  const writer = (): RegistryService => {
    const name = ctx.config.writeTo;
    const m = name ? ctx.member(name) : undefined;
    if (!m) throw ociError("UNSUPPORTED", "this group has no hosted member to write to (set writeTo)");
    return o.serviceOf(m);
  };

  /** First member whose answer is not a 404; a member failing otherwise is skipped (its error is kept for the end). */
  async function firstHit(fn: (m: RegistryService) => Promise<Response>, notFound: () => VaultError): Promise<Response> {
    let failure: unknown;
    for (const m of members()) {
      try {
        return await fn(m);
      } catch (e) {
        if (e instanceof VaultError && e.status === 404) continue;
        failure ??= e;
      }
    }
    throw failure ?? notFound();
  }

  /** Merged results of every member that knows the image (null when none does). */
  async function merged<T>(fn: (m: RegistryService) => Promise<T[] | null>): Promise<T[] | null> {
    let any = false;
    let failure: unknown;
    const out: T[] = [];
    for (const m of members()) {
      try {
        const r = await fn(m);
        if (r) {
          any = true;
          out.push(...r);
        }
      } catch (e) {
        if (e instanceof VaultError && e.status === 404) continue;
        failure ??= e;
      }
    }
    if (!any && failure) throw failure;
    return any ? out : null;
  }

  const service: RegistryService = {
    ctx,
    getManifest: (req, t, ref) =>
      firstHit(
        (m) => m.getManifest(req, t, ref),
        () => ociError("MANIFEST_UNKNOWN", "manifest unknown", ref.kind === "tag" ? { tag: ref.tag } : { digest: ref.digest }),
      ),
    getBlob: (req, t, digest) =>
      firstHit(
        (m) => m.getBlob(req, t, digest),
        () => ociError("BLOB_UNKNOWN", "blob unknown", { digest }),
      ),
    async putManifest(req, t, ref, caller) {
      // Clients skip uploading blobs a HEAD through the group found in another member; copy those into the writer.
      const w = writer();
      const body = await readLimited(req, w.ctx.config.maxManifestBytes ?? DEFAULT_MAX_MANIFEST_BYTES);
      let blobs: Descriptor[] = [];
      try {
        blobs = referencedBlobs(parseManifest(body, req.headers.get("content-type")));
      } catch {
        // the writer reports the invalid manifest
      }
      for (const b of blobs) {
        if (!w.linkBlob || (await w.blobEntry(t.image, b.digest))) continue;
        for (const m of members()) {
          if (m === w) continue;
          const e = await m.ensureBlob(t, b.digest).catch(() => null);
          if (e) {
            await w.linkBlob(t.image, e, b.digest);
            break;
          }
        }
      }
      return w.putManifest(new Request(req.url, { method: "PUT", headers: req.headers, body: body as BodyInit }), t, ref, caller);
    },
    deleteManifest: (req, t, ref, caller) => writer().deleteManifest(req, t, ref, caller),
    deleteBlob: (req, t, digest, caller) => writer().deleteBlob(req, t, digest, caller),
    startUpload: (req, t, caller, mount) => writer().startUpload(req, t, caller, mount),
    upload: (req, t, id, caller) => writer().upload(req, t, id, caller),
    async tags(t: ImageRef) {
      const r = await merged((m) => m.tags(t));
      return r ? sortUnique(r) : null;
    },
    async referrers(t, digest) {
      const r = await merged<Descriptor>((m) => m.referrers(t, digest));
      if (!r) return null;
      const seen = new Set<string>();
      return r.filter((d) => (seen.has(d.digest) ? false : (seen.add(d.digest), true)));
    },
    async images() {
      const all: string[] = [];
      for (const m of members()) all.push(...(await m.images()));
      return sortUnique(all);
    },
    async ensureBlob(t, digest) {
      for (const m of members()) {
        const e = await m.ensureBlob(t, digest).catch(() => null);
        if (e) return e;
      }
      return null;
    },
    async blobEntry(image, digest) {
      for (const m of members()) {
        const e = await m.blobEntry(image, digest);
        if (e) return e;
      }
      return null;
    },
  };
  return service;
}

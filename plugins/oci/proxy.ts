/**
 * The pull-through cache of an OCI/Docker v2 registry (specs/oci.md §8): digests are immutable (cached forever,
 * verified while streaming, single-flight through the cache engine); tags are revalidated with `HEAD` (no Docker Hub
 * pull quota spent) after `tagTtlSeconds` and served stale when the upstream fails; manifests are stored byte for
 * byte per digest, fetched with every manifest media type in `Accept`; upstream Bearer tokens are fetched and cached
 * by {@link UpstreamAuthenticator}; Docker Hub's implicit `library/`; several upstreams selectable by `?ns=`.
 */
import type { ArtifactEntry, PluginContext } from "../../core/plugin.ts";
import { VaultError } from "../../core/plugin.ts";
import { API_VERSION, API_VERSION_HEADER, ociError } from "./errors.ts";
import { isSha256, parseDigest, sha256Digest } from "./digest.ts";
import { upstreamName, isValidName } from "./name.ts";
import {
  bareMediaType,
  checkDescriptor,
  MANIFEST_TYPES,
  OCI_INDEX,
  parseManifest,
  UPSTREAM_MANIFEST_ACCEPT,
  type Descriptor,
} from "./manifest.ts";
import { blobReply, HIT_HEADERS, negotiatedManifestReply, sortUnique } from "./reply.ts";
import { blobPath, CATALOG_PREFIX, catalogPath, manifestPath, nsPrefix, tagListPath, tagPath } from "./layout.ts";
import { UpstreamAuthenticator, type UpstreamCredentials } from "./upstream-auth.ts";
import type { ImageRef, OciRepoConfig, RegistryService } from "./types.ts";

/** Docker Hub's registry host (the default upstream of `format: oci` proxies). */
export const DOCKER_HUB_REGISTRY = "https://registry-1.docker.io";
/** Default freshness of a cached tag and tag list, seconds. */
export const DEFAULT_TAG_TTL_SECONDS = 300;
/** Upstream tag list pages followed at most. */
const MAX_TAG_PAGES = 100;
/** Largest manifest read from upstream when it has to be fetched by tag, bytes. */
const MAX_UPSTREAM_MANIFEST = 8 * 1024 * 1024;
/** Default longest staleness served when upstream fails, seconds (core default). */
const DEFAULT_MAX_STALE_SECONDS = 7 * 86_400;

const BLOB_TYPE = "application/octet-stream";

/** One upstream registry of a proxy. */
interface Upstream {
  /** Artifact-path prefix of its cached content (`""` for the default upstream, `@<ns>/` otherwise). */
  key: string;
  /** Base URL, no trailing slash. */
  base: string;
  auth: UpstreamAuthenticator;
  /** Add `library/` to one-component names. */
  library: boolean;
}

/** True for Docker Hub's registry hosts. */
export function isDockerHub(url: string): boolean {
  try {
    const h = new URL(url).hostname;
    return h === "docker.io" || h.endsWith(".docker.io");
  } catch {
    return false;
  }
}

/** containerd `ns` values that name Docker Hub. */
const DOCKER_HUB_NAMESPACES = new Set(["docker.io", "registry-1.docker.io", "index.docker.io"]);

/** Upstream failures after which a stored tag is served stale (an answer such as 404 is not one of them). */
function isOutage(e: unknown): boolean {
  if (!(e instanceof VaultError)) return false;
  return (
    e.code === "VAULT_UPSTREAM_DOWN" ||
    e.code === "VAULT_UPSTREAM_TIMEOUT" ||
    e.code === "VAULT_UPSTREAM_ERROR" ||
    e.code === "VAULT_NOT_CACHED" ||
    e.code === "VAULT_DIGEST_MISMATCH" ||
    e.code === "VAULT_SIZE_MISMATCH" ||
    e.code === "UNAVAILABLE"
  );
}

function upstreamStatusOf(e: unknown): number | undefined {
  return e instanceof VaultError && typeof e.detail.upstreamStatus === "number" ? e.detail.upstreamStatus : undefined;
}

/** Parses `Link: <url>; rel="next"` and returns the next URL, resolved against `base`. */
function nextLink(link: string | null, base: string): URL | null {
  if (!link) return null;
  for (const part of link.split(",")) {
    const m = /<([^>]*)>\s*;\s*rel="?next"?/i.exec(part);
    if (m) {
      try {
        return new URL(m[1], base);
      } catch {
        return null;
      }
    }
  }
  return null;
}

/**
 * Creates the proxy service of one repository. The default upstream is `ctx.config.upstream` (Docker Hub when the
 * config names none) with `upstreamAuth`; `namespaces` adds upstreams chosen by `?ns=`.
 */
export function createProxy(ctx: PluginContext<OciRepoConfig>): RegistryService {
  const cfg = ctx.config;
  const tagTtlMs = (cfg.tagTtlSeconds ?? cfg.cache?.metadataTtlSeconds ?? DEFAULT_TAG_TTL_SECONDS) * 1000;
  const maxStaleMs = (cfg.cache?.maxStaleSeconds ?? DEFAULT_MAX_STALE_SECONDS) * 1000;

  const makeUpstream = (url: string, creds: UpstreamCredentials | undefined, library: boolean | undefined, key: string): Upstream => {
    const base = url.replace(/\/+$/, "").replace(/\/v2$/, "");
    return {
      key,
      base,
      auth: new UpstreamAuthenticator({ upstream: ctx.upstream, base, credentials: creds, log: ctx.log }),
      library: library ?? isDockerHub(base),
    };
  };
  const defaultUp = makeUpstream(cfg.upstream ?? DOCKER_HUB_REGISTRY, cfg.upstreamAuth, cfg.libraryPrefix, "");
  const defaultHost = new URL(defaultUp.base).host;
  const namespaces = new Map<string, Upstream>();
  for (const [ns, n] of Object.entries(cfg.namespaces ?? {}))
    namespaces.set(ns, makeUpstream(n.upstream, n.username !== undefined ? { username: n.username, password: n.password } : undefined, n.libraryPrefix, nsPrefix(ns)));

  /** The upstream of a request: `?ns=` picks a configured namespace; the default upstream answers its own host. */
  function select(ns: string | null): Upstream {
    if (ns === null) return defaultUp;
    const u = namespaces.get(ns);
    if (u) return u;
    if (ns === defaultHost || (isDockerHub(defaultUp.base) && DOCKER_HUB_NAMESPACES.has(ns))) return defaultUp;
    throw ociError("NAME_UNKNOWN", `no upstream configured for namespace ${ns}`, { ns });
  }

  const scopeOf = (name: string) => `repository:${name}:pull`;

  /** Runs an upstream call with the upstream's credentials; after a 401 the token is renewed once. */
  async function withAuth<T>(up: Upstream, name: string, fn: (headers: Record<string, string>) => Promise<T>): Promise<T> {
    const scope = scopeOf(name);
    for (let attempt = 0; ; attempt++) {
      const a = await up.auth.authorization(scope);
      const headers: Record<string, string> = a ? { authorization: a } : {};
      try {
        return await fn(headers);
      } catch (e) {
        if (attempt === 0 && upstreamStatusOf(e) === 401) {
          up.auth.reset(scope);
          continue;
        }
        throw e;
      }
    }
  }

  /** A direct upstream request (tags, HEAD); a 401 is turned into an error carrying the status, for {@link withAuth}. */
  async function upstreamFetch(up: Upstream, name: string, url: string, init: { method: "GET" | "HEAD"; accept: string }): Promise<Response> {
    return withAuth(up, name, async (h) => {
      const res = await ctx.upstream.fetch(url, { method: init.method, headers: { ...h, accept: init.accept } });
      if (res.status === 401) {
        void res.body?.cancel().catch(() => {});
        throw new VaultError("VAULT_UPSTREAM_ERROR", 502, "upstream refused our credentials", { upstreamStatus: 401, url });
      }
      return res;
    });
  }

  const seen = new Set<string>();
  /** Records the image for `_catalog` (default upstream only). */
  async function markCatalog(up: Upstream, name: string): Promise<void> {
    if (up.key !== "" || seen.has(name)) return;
    if (!(await ctx.artifacts.get(catalogPath(name)))) await ctx.artifacts.put(catalogPath(name), "", { kind: "metadata" });
    seen.add(name);
    if (seen.size > 100_000) seen.clear();
  }

  /** The cached manifest of `digest`, fetched (once, coalesced, verified) when missing. */
  async function manifestByDigest(up: Upstream, name: string, digest: string): Promise<ArtifactEntry> {
    const d = parseDigest(digest);
    const key = up.key + manifestPath(name, d.value);
    let entry: ArtifactEntry;
    try {
      entry = await withAuth(up, name, async (h) => {
        const r = await ctx.cache.fetch({
          key,
          upstreamUrl: `${up.base}/v2/${name}/manifests/${d.value}`,
          class: "immutable",
          expect: { sha256: d.hex },
          upstreamHeaders: { ...h, accept: UPSTREAM_MANIFEST_ACCEPT },
        });
        return r.entry;
      });
    } catch (e) {
      if (e instanceof VaultError && e.code === "VAULT_NOT_FOUND") throw ociError("MANIFEST_UNKNOWN", "manifest unknown", { digest: d.value });
      throw e;
    }
    if (!(MANIFEST_TYPES as readonly string[]).includes(bareMediaType(entry.contentType))) {
      // the upstream sent a generic Content-Type: record the manifest's own media type (bytes unchanged)
      const bytes = await ctx.artifacts.read(entry);
      const m = parseManifest(bytes, null);
      entry = await ctx.artifacts.put(key, bytes, { contentType: m.mediaType });
    }
    await markCatalog(up, name);
    return entry;
  }

  /**
   * GET by tag (a tag never seen, or an upstream HEAD without digest): one upstream round trip; the bytes are hashed,
   * checked against `Docker-Content-Digest`, and the manifest row and the tag row are committed together.
   * @returns the tag row
   */
  async function manifestByTagGet(up: Upstream, name: string, tag: string, tagKey: string): Promise<ArtifactEntry> {
    const url = `${up.base}/v2/${name}/manifests/${tag}`;
    const res = await upstreamFetch(up, name, url, { method: "GET", accept: UPSTREAM_MANIFEST_ACCEPT });
    if (res.status === 404) {
      void res.body?.cancel().catch(() => {});
      throw ociError("MANIFEST_UNKNOWN", "manifest unknown", { tag });
    }
    if (res.status !== 200) {
      void res.body?.cancel().catch(() => {});
      throw new VaultError("VAULT_UPSTREAM_ERROR", 502, `upstream answered ${res.status}`, { upstreamStatus: res.status });
    }
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (bytes.byteLength > MAX_UPSTREAM_MANIFEST) throw new VaultError("VAULT_UPSTREAM_ERROR", 502, "upstream manifest too large");
    const digest = sha256Digest(bytes);
    const claimed = res.headers.get("docker-content-digest");
    if (claimed && isSha256(claimed) && claimed !== digest)
      throw new VaultError("VAULT_DIGEST_MISMATCH", 502, "upstream manifest does not match its Docker-Content-Digest", { expected: claimed, actual: digest });
    let type = bareMediaType(res.headers.get("content-type"));
    if (!(MANIFEST_TYPES as readonly string[]).includes(type)) type = parseManifest(bytes, null).mediaType;
    const [, tagEntry] = await ctx.artifacts.commit([
      { path: up.key + manifestPath(name, digest), body: bytes, opts: { contentType: type } },
      { path: tagKey, body: bytes, opts: { contentType: type, kind: "metadata" } },
    ]);
    await markCatalog(up, name);
    return tagEntry;
  }

  const tagFlights = new Map<string, Promise<{ entry: ArtifactEntry; status: string }>>();

  /**
   * The tag row of `name:tag`: fresh → HIT; never seen → one GET by tag (MISS); stale → one coalesced `HEAD`
   * upstream (no Docker Hub pull quota): same digest → REVALIDATED (row refreshed), new digest → manifest fetched by
   * digest, tag row rewritten (MISS); upstream 404 → row dropped, MANIFEST_UNKNOWN; upstream failure → STALE (within
   * `cache.maxStaleSeconds`), else the error.
   */
  async function tagEntry(up: Upstream, name: string, tag: string): Promise<{ entry: ArtifactEntry; status: string }> {
    const key = up.key + tagPath(name, tag);
    const cur = await ctx.artifacts.get(key);
    const now = Date.now();
    if (cur && cur.blobDigest && now - cur.fetchedAt < tagTtlMs) return { entry: cur, status: "HIT" };
    let f = tagFlights.get(key);
    if (!f) {
      f = revalidateTag(up, name, tag, key, cur).finally(() => tagFlights.delete(key));
      tagFlights.set(key, f);
    }
    return f;
  }

  /** The work of {@link tagEntry} for a missing or stale tag row (one flight per tag). */
  async function revalidateTag(up: Upstream, name: string, tag: string, key: string, cur: ArtifactEntry | null): Promise<{ entry: ArtifactEntry; status: string }> {
    try {
      // never seen: one GET by tag (a HEAD first would cost a round trip and no pull quota is saved)
      if (!cur || !cur.blobDigest) return { entry: await manifestByTagGet(up, name, tag, key), status: "MISS" };
      const url = `${up.base}/v2/${name}/manifests/${tag}`;
      const head = await upstreamFetch(up, name, url, { method: "HEAD", accept: UPSTREAM_MANIFEST_ACCEPT });
      if (head.status === 404) {
        if (cur) await ctx.artifacts.delete(key);
        throw ociError("MANIFEST_UNKNOWN", "manifest unknown", { tag });
      }
      if (head.status !== 200) throw new VaultError("VAULT_UPSTREAM_ERROR", 502, `upstream answered ${head.status}`, { upstreamStatus: head.status });
      const digest = head.headers.get("docker-content-digest");
      if (!digest || !isSha256(digest)) return { entry: await manifestByTagGet(up, name, tag, key), status: "MISS" };
      const status = cur.blobDigest === digest ? "REVALIDATED" : "MISS";
      const manifest = await manifestByDigest(up, name, digest);
      const bytes = await ctx.artifacts.read(manifest);
      const entry = await ctx.artifacts.put(key, bytes, { contentType: manifest.contentType ?? undefined, kind: "metadata" });
      return { entry, status };
    } catch (e) {
      if (cur && cur.blobDigest && isOutage(e) && Date.now() - cur.fetchedAt - tagTtlMs <= maxStaleMs) {
        ctx.log.info("serving stale tag", { key, error: (e as Error).message });
        return { entry: cur, status: "STALE" };
      }
      throw e;
    }
  }

  const listFlights = new Map<string, Promise<string[] | null>>();

  /** The upstream's full tag list (all pages), cached for `tagTtlSeconds`, stale on failure; null on upstream 404. */
  async function upstreamTags(up: Upstream, name: string): Promise<string[] | null> {
    const key = up.key + tagListPath(name);
    const cur = await ctx.artifacts.get(key);
    if (cur && cur.blobDigest && Date.now() - cur.fetchedAt < tagTtlMs) return JSON.parse(new TextDecoder().decode(await ctx.artifacts.read(cur))) as string[];
    let f = listFlights.get(key);
    if (!f) {
      f = (async () => {
        try {
          const tags: string[] = [];
          let url: URL | null = new URL(`${up.base}/v2/${name}/tags/list?n=1000`);
          for (let page = 0; url && page < MAX_TAG_PAGES; page++) {
            const res = await upstreamFetch(up, name, url.href, { method: "GET", accept: "application/json" });
            if (res.status === 404) {
              void res.body?.cancel().catch(() => {});
              if (cur) await ctx.artifacts.delete(key);
              return null;
            }
            if (res.status !== 200) {
              void res.body?.cancel().catch(() => {});
              throw new VaultError("VAULT_UPSTREAM_ERROR", 502, `upstream answered ${res.status}`, { upstreamStatus: res.status });
            }
            const body = (await res.json()) as { tags?: unknown };
            if (Array.isArray(body.tags)) for (const t of body.tags) if (typeof t === "string") tags.push(t);
            const next = nextLink(res.headers.get("link"), up.base);
            url = next && next.origin === new URL(up.base).origin ? next : null;
          }
          const sorted = sortUnique(tags);
          await ctx.artifacts.put(key, JSON.stringify(sorted), { contentType: "application/json", kind: "metadata" });
          return sorted;
        } catch (e) {
          if (cur && cur.blobDigest && isOutage(e)) return JSON.parse(new TextDecoder().decode(await ctx.artifacts.read(cur))) as string[];
          throw e;
        }
      })().finally(() => listFlights.delete(key));
      listFlights.set(key, f);
    }
    return f;
  }

  const readOnly = () => ociError("UNSUPPORTED", "proxy repositories are read-only");
  const nsHeaders = (t: ImageRef, status?: string): Record<string, string> => {
    const h: Record<string, string> = {};
    if (t.ns) h["oci-namespace"] = t.ns;
    if (status) h["x-vault-cache"] = status;
    return h;
  };

  return {
    ctx,

    async getManifest(req, t, ref) {
      const up = select(t.ns);
      const name = upstreamName(t.image, up.library);
      const child = (d: string) => manifestByDigest(up, name, d);
      if (ref.kind === "digest") {
        const entry = await manifestByDigest(up, name, ref.digest);
        return negotiatedManifestReply(req, ctx, entry, false, child, nsHeaders(t));
      }
      const { entry, status } = await tagEntry(up, name, ref.tag);
      return negotiatedManifestReply(req, ctx, entry, true, child, nsHeaders(t, status));
    },

    async putManifest() {
      throw readOnly();
    },
    async deleteManifest() {
      throw readOnly();
    },
    async deleteBlob() {
      throw readOnly();
    },
    async startUpload() {
      throw readOnly();
    },
    async upload() {
      throw readOnly();
    },

    async getBlob(req, t, digest) {
      const up = select(t.ns);
      const name = upstreamName(t.image, up.library);
      const d = parseDigest(digest);
      const key = up.key + blobPath(name, d.value);
      const hit = await ctx.artifacts.get(key);
      if (hit && hit.status === 200 && hit.blobDigest) return blobReply(req, ctx, hit, d.value, HIT_HEADERS, t.ns ? nsHeaders(t) : undefined);
      let res: Response;
      try {
        res = await withAuth(up, name, (h) =>
          ctx.cache.serve(req, {
            key,
            upstreamUrl: `${up.base}/v2/${name}/blobs/${d.value}`,
            class: "immutable",
            expect: { sha256: d.hex },
            upstreamHeaders: h,
            contentType: BLOB_TYPE,
            keepHeaders: ["docker-content-digest", "docker-distribution-api-version"],
          }),
        );
      } catch (e) {
        if (e instanceof VaultError && e.code === "VAULT_NOT_FOUND") throw ociError("BLOB_UNKNOWN", "blob unknown", { digest: d.value });
        throw e;
      }
      try {
        res.headers.set("docker-content-digest", d.value);
        res.headers.set(API_VERSION_HEADER, API_VERSION);
        if (t.ns) res.headers.set("oci-namespace", t.ns);
      } catch {
        res = new Response(res.body, res);
        res.headers.set("docker-content-digest", d.value);
      }
      return res;
    },

    async tags(t) {
      const up = select(t.ns);
      return upstreamTags(up, upstreamName(t.image, up.library));
    },

    async referrers(t, digest) {
      const up = select(t.ns);
      const name = upstreamName(t.image, up.library);
      const d = parseDigest(digest);
      let entry: ArtifactEntry;
      try {
        entry = await withAuth(up, name, async (h) => {
          const r = await ctx.cache.fetch({
            key: `${up.key}${name}/_refindex/${d.value}`,
            upstreamUrl: `${up.base}/v2/${name}/referrers/${d.value}`,
            class: "mutable",
            ttlSeconds: tagTtlMs / 1000,
            upstreamHeaders: { ...h, accept: OCI_INDEX },
          });
          return r.entry;
        });
      } catch (e) {
        if (e instanceof VaultError && (e.code === "VAULT_NOT_FOUND" || upstreamStatusOf(e) === 400)) return null;
        throw e;
      }
      let doc: { manifests?: unknown };
      try {
        doc = JSON.parse(new TextDecoder().decode(await ctx.artifacts.read(entry)));
      } catch {
        throw new VaultError("VAULT_UPSTREAM_ERROR", 502, "upstream referrers answer is not JSON");
      }
      const out: Descriptor[] = [];
      if (Array.isArray(doc.manifests))
        for (const m of doc.manifests) {
          try {
            out.push(checkDescriptor(m, "manifests[]"));
          } catch {
            // skip malformed entries from upstream
          }
        }
      return out;
    },

    async images() {
      const rows = await ctx.artifacts.list(CATALOG_PREFIX);
      return rows.map((r) => r.path.slice(CATALOG_PREFIX.length)).filter((n) => !n.startsWith("@") && isValidName(n));
    },

    async ensureBlob(t, digest) {
      const up = select(t.ns);
      const name = upstreamName(t.image, up.library);
      const d = parseDigest(digest);
      const key = up.key + blobPath(name, d.value);
      const hit = await ctx.artifacts.get(key);
      if (hit && hit.status === 200 && hit.blobDigest) return hit;
      try {
        return await withAuth(up, name, async (h) => {
          const r = await ctx.cache.fetch({
            key,
            upstreamUrl: `${up.base}/v2/${name}/blobs/${d.value}`,
            class: "immutable",
            expect: { sha256: d.hex },
            upstreamHeaders: h,
            contentType: BLOB_TYPE,
            keepHeaders: ["docker-content-digest", "docker-distribution-api-version"],
          });
          return r.entry;
        });
      } catch (e) {
        if (e instanceof VaultError && e.code === "VAULT_NOT_FOUND") return null;
        throw e;
      }
    },

    async blobEntry(image, digest) {
      const e = await ctx.artifacts.get(blobPath(upstreamName(image, defaultUp.library), digest));
      return e && e.status === 200 && e.blobDigest ? e : null;
    },
  };
}

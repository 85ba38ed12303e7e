/**
 * A small OCI distribution client for the conda mirror CLI (specs/oci.md §2–§4, §7): blobs (HEAD, monolithic
 * POST-then-PUT upload, GET verified by digest), manifests (PUT by tag, GET), tag lists, with the registry token flow:
 * a `401` with `WWW-Authenticate: Bearer realm=…,service=…,scope=…` is answered by `GET <realm>?service=&scope=`
 * (Basic credentials when given, else anonymous), the token is cached per scope and the request retried once; a
 * `Basic` challenge is answered with the credentials directly. Works against the vault's own OCI repositories and any
 * OCI registry (`http://` registries are used as given: "insecure").
 */

/** A registry location: `http(s)://host[:port][/namespace]` (no scheme ⇒ https), e.g. `http://127.0.0.1:5000/dinosaur`. */
export interface RegistryRef {
  /** `http(s)://host:port` */
  origin: string;
  /** Path prefix of every repository name, without slashes (may be empty). */
  namespace: string;
}

/** Parses `--registry`. @throws Error for an unusable value */
export function parseRegistry(s: string): RegistryRef {
  const u = new URL(/^[a-z]+:\/\//i.test(s) ? s : `https://${s}`);
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error(`registry must be http(s): ${s}`);
  return { origin: u.origin, namespace: u.pathname.replace(/^\/+|\/+$/g, "") };
}

/** An OCI descriptor. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** An OCI image manifest (the fields the mirror uses). */
export interface ImageManifest {
  schemaVersion: 2;
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

/** A registry answered something the client cannot use; `status` is the HTTP status (0 when none). */
export class RegistryError extends Error {
  override name = "RegistryError";
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";

/** `sha256:<hex>` of bytes. */
export function digestOf(b: Uint8Array): string {
  return "sha256:" + new Bun.CryptoHasher("sha256").update(b).digest("hex");
}

/** Parses a `WWW-Authenticate` challenge: scheme and its parameters. */
export function parseChallenge(h: string): { scheme: string; params: Record<string, string> } {
  const m = /^\s*(\w+)\s*(.*)$/.exec(h);
  const params: Record<string, string> = {};
  if (!m) return { scheme: "", params };
  const re = /(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  for (let p; (p = re.exec(m[2])); ) params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, "$1") : p[3];
  return { scheme: m[1].toLowerCase(), params };
}

/** Options of {@link OciClient}. */
export interface OciClientOptions {
  /** Basic credentials sent to the token realm (and to registries asking Basic). */
  username?: string;
  password?: string;
  /** Milliseconds a request may take (default 120 000). */
  timeoutMs?: number;
}

/** The OCI client (see the file header). Repository names are full names below the registry origin. */
export class OciClient {
  private tokens = new Map<string, string>();
  private basic?: string;

  constructor(
    readonly registry: RegistryRef,
    private o: OciClientOptions = {},
  ) {
    if (o.username !== undefined) this.basic = "Basic " + btoa(`${o.username}:${o.password ?? ""}`);
  }

  /** The full repository name of `path` below the registry's namespace. */
  repo(path: string): string {
    return this.registry.namespace ? `${this.registry.namespace}/${path}` : path;
  }

  private async token(challenge: Record<string, string>, scope: string): Promise<string> {
    const realm = challenge.realm;
    if (!realm) throw new RegistryError("Bearer challenge without a realm", 401);
    const u = new URL(realm, this.registry.origin);
    if (challenge.service) u.searchParams.set("service", challenge.service);
    u.searchParams.set("scope", challenge.scope && !scope ? challenge.scope : scope);
    const res = await fetch(u, { headers: this.basic ? { authorization: this.basic } : {}, signal: AbortSignal.timeout(this.o.timeoutMs ?? 120_000) });
    if (!res.ok) throw new RegistryError(`token request to ${u.origin}${u.pathname} answered ${res.status}: ${(await res.text()).slice(0, 200)}`, res.status);
    const body = (await res.json()) as { token?: string; access_token?: string };
    const t = body.token ?? body.access_token;
    if (!t) throw new RegistryError("token response without a token", 502);
    return t;
  }

  /**
   * One request with the token flow (at most one retry after a challenge).
   * @param scope the scope the request needs, e.g. `repository:conda-forge/linux-64/zlib:pull,push`
   */
  async request(method: string, path: string, scope: string, init: { body?: BodyInit; headers?: Record<string, string> } = {}): Promise<Response> {
    const url = new URL(path, this.registry.origin);
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { ...init.headers };
      const t = this.tokens.get(scope);
      if (t) headers.authorization = `Bearer ${t}`;
      else if (this.basic && attempt > 0) headers.authorization = this.basic;
      const res = await fetch(url, { method, body: init.body, headers, redirect: "follow", signal: AbortSignal.timeout(this.o.timeoutMs ?? 120_000) });
      if (res.status !== 401 || attempt > 0) return res;
      const ch = parseChallenge(res.headers.get("www-authenticate") ?? "");
      await res.body?.cancel();
      if (ch.scheme === "bearer") this.tokens.set(scope, await this.token(ch.params, scope));
      else if (ch.scheme !== "basic" || !this.basic) return new Response(null, { status: 401 });
    }
  }

  private static async fail(res: Response, what: string): Promise<never> {
    const text = await res.text().catch(() => "");
    throw new RegistryError(`${what}: ${res.status} ${text.slice(0, 300)}`.trim(), res.status);
  }

  /** Whether the repository holds a blob. */
  async hasBlob(repo: string, digest: string): Promise<boolean> {
    const res = await this.request("HEAD", `/v2/${repo}/blobs/${digest}`, `repository:${repo}:pull,push`);
    await res.body?.cancel();
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    return OciClient.fail(res, `HEAD blob ${digest} in ${repo}`);
  }

  /** Uploads a blob (POST a session, PUT the bytes with `?digest=`) unless it is already there. @returns its descriptor fields */
  async pushBlob(repo: string, bytes: Uint8Array): Promise<{ digest: string; size: number }> {
    const digest = digestOf(bytes);
    if (await this.hasBlob(repo, digest)) return { digest, size: bytes.byteLength };
    const scope = `repository:${repo}:pull,push`;
    const start = await this.request("POST", `/v2/${repo}/blobs/uploads/`, scope, { headers: { "content-length": "0" } });
    if (start.status !== 202) return OciClient.fail(start, `starting a blob upload to ${repo}`);
    await start.body?.cancel();
    const loc = new URL(start.headers.get("location") ?? "", this.registry.origin);
    loc.searchParams.set("digest", digest);
    const put = await this.request("PUT", loc.pathname + loc.search, scope, { body: bytes as BodyInit, headers: { "content-type": "application/octet-stream" } });
    if (put.status !== 201) return OciClient.fail(put, `uploading blob ${digest} to ${repo}`);
    await put.body?.cancel();
    return { digest, size: bytes.byteLength };
  }

  /** Pushes a manifest under `tag`. @returns its digest */
  async pushManifest(repo: string, tag: string, manifest: ImageManifest): Promise<string> {
    const bytes = new TextEncoder().encode(JSON.stringify(manifest));
    const res = await this.request("PUT", `/v2/${repo}/manifests/${tag}`, `repository:${repo}:pull,push`, { body: bytes as BodyInit, headers: { "content-type": manifest.mediaType } });
    if (res.status !== 201) return OciClient.fail(res, `pushing ${repo}:${tag}`);
    await res.body?.cancel();
    return digestOf(bytes);
  }

  /** The manifest of `repo:ref`; null when there is none (404). */
  async getManifest(repo: string, ref: string): Promise<ImageManifest | null> {
    const res = await this.request("GET", `/v2/${repo}/manifests/${ref}`, `repository:${repo}:pull`, { headers: { accept: OCI_MANIFEST } });
    if (res.status === 404) {
      await res.body?.cancel();
      return null;
    }
    if (res.status !== 200) return OciClient.fail(res, `getting ${repo}:${ref}`);
    return (await res.json()) as ImageManifest;
  }

  /** A blob's bytes, verified against its digest. @throws RegistryError on a mismatch */
  async getBlob(repo: string, digest: string): Promise<Uint8Array> {
    const res = await this.request("GET", `/v2/${repo}/blobs/${digest}`, `repository:${repo}:pull`);
    if (res.status !== 200) return OciClient.fail(res, `getting blob ${digest} of ${repo}`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (digestOf(bytes) !== digest) throw new RegistryError(`blob ${digest} of ${repo}: the bytes do not match the digest`, 502);
    return bytes;
  }

  /** The repository's tags (all pages); empty when the repository does not exist. */
  async tags(repo: string): Promise<string[]> {
    const out: string[] = [];
    let path: string | null = `/v2/${repo}/tags/list?n=10000`;
    while (path) {
      const res = await this.request("GET", path, `repository:${repo}:pull`);
      if (res.status === 404) {
        await res.body?.cancel();
        return out;
      }
      if (res.status !== 200) return OciClient.fail(res, `listing the tags of ${repo}`);
      out.push(...(((await res.json()) as { tags?: string[] | null }).tags ?? []));
      const link = res.headers.get("link");
      const m = link ? /<([^>]+)>\s*;\s*rel="?next"?/.exec(link) : null;
      path = m ? m[1] : null;
    }
    return out;
  }
}

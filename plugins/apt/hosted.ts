/**
 * APT hosted repository (specs/apt.md §6): `.deb` uploads (curl `--upload-file`, raw POST bodies), a pool in Debian's
 * layout, and per-suite indexes regenerated and signed with the real `gpg` on every upload.
 *
 * Uploads (`write` permission; the body is the .deb itself):
 * ```
 * PUT  /<name>/<file>.deb                        → suite `defaultDistribution`, component `defaultComponent`
 * PUT  /<name>/upload/<suite>/<component>/<file>.deb
 * POST /<name>/   POST /<name>/upload/<suite>/<component>
 * ```
 * `?distribution=<suite>&component=<comp>` override the defaults on any of them. Answers 201 (published), 200 (the
 * same file was already published there), 400 (not a valid .deb, bad suite/component), 401/403, 409 (the pool file
 * name exists with other bytes), 413.
 *
 * Artifact paths (repository-relative):
 * ```
 * pool/<comp>/<p>/<source>/<pkg>_<version without epoch>_<arch>.deb       the package (immutable)
 * dists/<suite>/InRelease, Release, Release.gpg                            signed Release (Release only without a key)
 * dists/<suite>/<comp>/binary-<arch>/Packages, Packages.gz, Packages.xz    one per architecture; `all` packages in each
 * dists/<suite>/<comp>/binary-<arch>/by-hash/SHA256/<hex>                  copies; the last `keepGenerations` kept
 * -/records/<suite>/<comp>/<pool file name>                                the package's Packages stanza
 * -/generations/<suite>                                                    by-hash paths of the published generations (JSON)
 * ```
 * A generation — the new package, its stanza, every index, its by-hash copies, Release and both signatures — is one
 * `artifacts.commit` (one transaction): a Release never lists a file that is not visible. Uploads are serialised per
 * process; several processes sharing the data directory may race, so each Release records a digest of the stanzas it
 * was built from (`x-vault-records`) and an upload regenerates until the Release matches every stored stanza.
 * Release files and indexes by name are read from the database (not the store's in-memory entries) and answered with
 * `Cache-Control: no-cache`. `GET /<name>/public.key` (armored) and `/<name>/public.gpg` (keyring for `signed-by=`)
 * give the signing key.
 */
import { mkdir, rm } from "node:fs/promises";
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { VaultError, errors, type ArtifactEntry, type ArtifactPut, type PluginContext, PART_MARKER, TEMP_OWNER } from "../../core/plugin.ts";
import { gzipDeterministic, xzCompress } from "./compress.ts";
import { DebError, readDeb } from "./deb.ts";
import { fieldValue, parseDeb822, renderParagraph, type Paragraph } from "./deb822.ts";
import { Signer } from "./gpg.ts";
import { parseAptPath } from "./paths.ts";
import { renderRelease, type ReleaseEntry } from "./release.ts";
import { ARCHITECTURE, compareVersions, poolPrefix, withoutEpoch } from "./version.ts";
import { methodNotAllowed, routeRest, type AptRepoConfig, type AptService } from "./service.ts";

/** Default `maxUploadBytes`: 1 GiB. */
export const DEFAULT_MAX_UPLOAD_BYTES = 1024 * 1024 * 1024;
/** Default `keepGenerations`. */
export const DEFAULT_KEEP_GENERATIONS = 3;
/** Suite names accepted in uploads (one path segment). */
export const SUITE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
/** Component names accepted in uploads. */
export const COMPONENT_NAME = /^[a-z0-9][a-z0-9._-]{0,99}$/;

const RECORDS = "-/records/";
const GENERATIONS = "-/generations/";
const RECORDS_HEADER = "x-vault-records";
/** How often one upload regenerates a suite that another process's write left incomplete. */
const MAX_RECONCILE = 20;

type CommitFile = { path: string; body: ReadableStream<Uint8Array> | Uint8Array | string; opts?: ArtifactPut };

/** One stored stanza, as generation needs it. */
interface StoredStanza {
  path: string;
  component: string;
  package: string;
  version: string;
  architecture: string;
  stanza: string;
  digest: string;
}

const badUpload = (msg: string) => new VaultError("VAULT_BAD_REQUEST", 400, msg);
const enc = new TextEncoder();
const dec = new TextDecoder();

function hex(alg: "md5" | "sha1" | "sha256", b: Uint8Array): string {
  return new Bun.CryptoHasher(alg).update(b).digest("hex");
}

/** Serialises async work within this process (one publish at a time per repository). */
class Queue {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => {});
    return next;
  }
}

/**
 * The Packages stanza of an uploaded package: its control fields in their order (Description last), then the
 * repository's `Filename`, `Size`, `MD5sum`, `SHA1`, `SHA256` before the Description.
 */
export function packageStanza(control: Paragraph, file: { filename: string; size: number; md5: string; sha1: string; sha256: string }): string {
  const desc = control.filter((f) => f.name.toLowerCase() === "description");
  const p: Paragraph = control.filter((f) => f.name.toLowerCase() !== "description");
  p.push(
    { name: "Filename", value: file.filename },
    { name: "Size", value: String(file.size) },
    { name: "MD5sum", value: file.md5 },
    { name: "SHA1", value: file.sha1 },
    { name: "SHA256", value: file.sha256 },
    ...desc,
  );
  return renderParagraph(p);
}

/**
 * Creates the service of one hosted apt repository (layout above).
 */
export function createAptHosted(ctx: PluginContext<AptRepoConfig>): AptService {
  const c = ctx.config;
  const maxUpload = c.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const keep = c.keepGenerations ?? DEFAULT_KEEP_GENERATIONS;
  const defaultSuite = c.defaultDistribution ?? "stable";
  const defaultComponent = c.defaultComponent ?? "main";
  const baseArchs = c.architectures ?? ["amd64", "arm64"];
  const queue = new Queue();
  let signer: Signer | undefined;
  const publicKeys = new Map<boolean, Uint8Array>();

  /** The row at exactly `path`, read from the database (another process may have written it). */
  async function fresh(path: string): Promise<ArtifactEntry | null> {
    const [e] = await ctx.artifacts.list(path, { limit: 1 });
    return e && e.path === path && e.status === 200 && e.blobDigest ? e : null;
  }

  async function records(suite: string): Promise<StoredStanza[]> {
    const rows = (await ctx.artifacts.list(`${RECORDS}${suite}/`)).filter((r) => r.blobDigest && r.status === 200);
    return Promise.all(
      rows.map(async (r) => {
        const stanza = dec.decode(await ctx.artifacts.read(r));
        const [p] = parseDeb822(stanza);
        const component = r.path.slice(RECORDS.length + suite.length + 1).split("/")[0];
        return { path: r.path, component, package: fieldValue(p, "Package")!, version: fieldValue(p, "Version")!, architecture: fieldValue(p, "Architecture")!, stanza, digest: r.blobDigest! };
      }),
    );
  }

  function fingerprint(recs: { path: string; digest: string }[]): string {
    const lines = recs.map((r) => `${r.path}=${r.digest}`).sort();
    return new Bun.CryptoHasher("sha256").update(lines.join("\n")).digest("hex");
  }

  /** Every file of one generation of `suite` built from `recs` (indexes, by-hash copies, Release, signatures). */
  async function generation(suite: string, recs: StoredStanza[]): Promise<{ files: CommitFile[]; byHash: string[] }> {
    const archs = [...new Set([...baseArchs, ...recs.map((r) => r.architecture).filter((a) => a !== "all")])].sort();
    const comps = [...new Set([defaultComponent, ...recs.map((r) => r.component)])].sort();
    const files: CommitFile[] = [];
    const byHash: string[] = [];
    const entries: ReleaseEntry[] = [];
    const meta = (contentType: string): ArtifactPut => ({ contentType, kind: "metadata" });
    for (const comp of comps) {
      for (const arch of archs) {
        const list = recs
          .filter((r) => r.component === comp && (r.architecture === arch || r.architecture === "all"))
          .sort((a, b) => (a.package < b.package ? -1 : a.package > b.package ? 1 : compareVersions(a.version, b.version) || (a.architecture < b.architecture ? -1 : 1)));
        const plain = enc.encode(list.map((r) => r.stanza).join("\n"));
        const [gz, xz] = await Promise.all([gzipDeterministic(plain), xzCompress(plain)]);
        const dir = `${comp}/binary-${arch}/`;
        for (const [name, bytes, type] of [
          ["Packages", plain, "text/plain; charset=utf-8"],
          ["Packages.gz", gz, "application/gzip"],
          ["Packages.xz", xz, "application/x-xz"],
        ] as const) {
          const e: ReleaseEntry = { path: dir + name, size: bytes.byteLength, md5: hex("md5", bytes), sha1: hex("sha1", bytes), sha256: hex("sha256", bytes) };
          entries.push(e);
          const bh = `dists/${suite}/${dir}by-hash/SHA256/${e.sha256}`;
          files.push({ path: `dists/${suite}/${dir}${name}`, body: bytes, opts: meta(type) }, { path: bh, body: bytes, opts: meta(type) });
          byHash.push(bh);
        }
      }
    }
    entries.sort((a, b) => (a.path < b.path ? -1 : 1));
    const release = renderRelease({
      origin: c.origin ?? ctx.repo.name,
      label: c.label ?? ctx.repo.name,
      suite,
      codename: suite,
      date: Date.now(),
      architectures: archs,
      components: comps,
      entries,
    });
    const headers = { [RECORDS_HEADER]: fingerprint(recs) };
    const text = "text/plain; charset=utf-8";
    files.push({ path: `dists/${suite}/Release`, body: release, opts: { contentType: text, kind: "metadata", headers } });
    if (signer) {
      const [inRelease, detached] = await Promise.all([signer.clearsign(release), signer.detachSign(release)]);
      files.push(
        { path: `dists/${suite}/InRelease`, body: inRelease, opts: { contentType: text, kind: "metadata", headers } },
        { path: `dists/${suite}/Release.gpg`, body: detached, opts: { contentType: "application/pgp-signature", kind: "metadata", headers } },
      );
    }
    return { files, byHash };
  }

  /** Drops by-hash files no longer in the last `keep` + 1 generations. */
  async function prune(suite: string, byHash: string[]): Promise<void> {
    const path = GENERATIONS + suite;
    const e = await fresh(path);
    const gens: string[][] = e ? (JSON.parse(dec.decode(await ctx.artifacts.read(e))) as { generations: string[][] }).generations : [];
    gens.push(byHash);
    const dropped = gens.splice(0, Math.max(0, gens.length - (keep + 1)));
    await ctx.artifacts.put(path, JSON.stringify({ generations: gens }), { contentType: "application/json", kind: "metadata" });
    const live = new Set(gens.flat());
    for (const p of new Set(dropped.flat())) if (!live.has(p)) await ctx.artifacts.delete(p);
  }

  /**
   * Publishes `suite` with `extra` files (an upload's package and stanza) in the same commit, then regenerates until
   * the Release matches every stored stanza (see the file header).
   */
  async function publish(suite: string, extra: CommitFile[], extraRecord?: StoredStanza): Promise<void> {
    for (let i = 0; i < MAX_RECONCILE; i++) {
      let recs = await records(suite);
      const add = extraRecord;
      if (add) recs = [...recs.filter((r) => r.path !== add.path), add];
      const cur = await fresh(`dists/${suite}/Release`);
      if (!extraRecord && cur && cur.headers[RECORDS_HEADER] === fingerprint(recs)) return;
      const g = await generation(suite, recs);
      await ctx.artifacts.commit([...extra, ...g.files]);
      await prune(suite, g.byHash);
      extra = [];
      extraRecord = undefined;
    }
    ctx.log.warn("suite still misses uploaded packages after repeated regenerations (concurrent uploads from other processes?)", { suite });
  }

  /** Streams a request body to a spool file with md5/sha1/sha256, refusing more than `maxUpload` bytes. */
  async function spool(req: Request): Promise<{ path: string; size: number; md5: string; sha1: string; sha256: string }> {
    const cl = req.headers.get("content-length");
    if (cl !== null && /^\d+$/.test(cl) && Number(cl) > maxUpload) throw new VaultError("VAULT_TOO_LARGE", 413, `upload larger than ${maxUpload} bytes`);
    const dir = ctx.storage.spoolDir();
    await mkdir(dir, { recursive: true });
    const path = `${dir}/${crypto.randomUUID()}${PART_MARKER}apt-upload${TEMP_OWNER}`;
    const w = Bun.file(path).writer();
    const h = { md5: new Bun.CryptoHasher("md5"), sha1: new Bun.CryptoHasher("sha1"), sha256: new Bun.CryptoHasher("sha256") };
    let size = 0;
    try {
      if (req.body)
        for await (const chunk of req.body) {
          size += chunk.byteLength;
          if (size > maxUpload) throw new VaultError("VAULT_TOO_LARGE", 413, `upload larger than ${maxUpload} bytes`);
          h.md5.update(chunk);
          h.sha1.update(chunk);
          h.sha256.update(chunk);
          w.write(chunk);
        }
      await w.end();
    } catch (e) {
      await Promise.resolve(w.end()).catch(() => {});
      await rm(path, { force: true });
      throw e;
    }
    if (size === 0) {
      await rm(path, { force: true });
      throw badUpload("empty upload: send the .deb as the request body (curl --upload-file pkg.deb)");
    }
    return { path, size, md5: h.md5.digest("hex"), sha1: h.sha1.digest("hex"), sha256: h.sha256.digest("hex") };
  }

  /** Suite and component of an upload from its path and query (see the file header). */
  function target(req: Request, rest: string): { suite: string; component: string } {
    const url = new URL(req.url);
    const segs = rest.split("/");
    let suite = defaultSuite;
    let component = defaultComponent;
    if (segs[0] === "upload") {
      if (segs.length < 3 || segs.length > 4 || (req.method === "POST" && segs.length === 4 && segs[3] !== "")) throw badUpload("upload path is upload/<suite>/<component>/[<file>.deb]");
      suite = decodeURIComponent(segs[1]);
      component = decodeURIComponent(segs[2]);
    } else if (req.method === "PUT" ? !/^([^/]+\/)*[^/]+\.deb$/.test(rest) : rest !== "") {
      throw new VaultError("VAULT_NOT_FOUND", 404, `uploads go to /<repository>/<file>.deb or /<repository>/upload/<suite>/<component>/`);
    }
    suite = url.searchParams.get("distribution") ?? suite;
    component = url.searchParams.get("component") ?? component;
    if (!SUITE_NAME.test(suite)) throw badUpload(`invalid distribution ${JSON.stringify(suite.slice(0, 100))}`);
    if (!COMPONENT_NAME.test(component)) throw badUpload(`invalid component ${JSON.stringify(component.slice(0, 100))}`);
    return { suite, component };
  }

  async function upload(req: Request, rest: string): Promise<Response> {
    const principal = await ctx.auth.require(req, "write");
    const { suite, component } = target(req, rest);
    const up = await spool(req);
    try {
      let info;
      try {
        info = await readDeb(up.path, up.size);
      } catch (e) {
        if (e instanceof DebError) throw badUpload(`not a valid Debian package: ${e.message}`);
        throw e;
      }
      if (!ARCHITECTURE.test(info.architecture)) throw badUpload(`invalid architecture ${info.architecture}`);
      const name = `${info.package}_${withoutEpoch(info.version)}_${info.architecture}.deb`;
      const poolPath = `pool/${component}/${poolPrefix(info.source)}/${info.source}/${name}`;
      const recordPath = `${RECORDS}${suite}/${component}/${name}`;
      const stanza = packageStanza(info.control, { filename: poolPath, size: up.size, md5: up.md5, sha1: up.sha1, sha256: up.sha256 });
      const outcome = await queue.run(async () => {
        const existing = await fresh(poolPath);
        if (existing && existing.blobDigest !== `sha256:${up.sha256}`)
          throw new VaultError("VAULT_CONFLICT", 409, `${poolPath} already exists with different contents (publish a new version instead)`);
        const rec = await fresh(recordPath);
        if (existing && rec && dec.decode(await ctx.artifacts.read(rec)) === stanza) {
          await publish(suite, []);
          return "identical" as const;
        }
        const extra: CommitFile[] = [];
        if (!existing)
          extra.push({ path: poolPath, body: Bun.file(up.path).stream(), opts: { contentType: "application/vnd.debian.binary-package", kind: "artifact", expect: { sha256: up.sha256, sizeBytes: up.size } } });
        extra.push({ path: recordPath, body: stanza, opts: { contentType: "text/plain; charset=utf-8", kind: "metadata" } });
        const record: StoredStanza = { path: recordPath, component, package: info.package, version: info.version, architecture: info.architecture, stanza, digest: `sha256:${hex("sha256", enc.encode(stanza))}` };
        await publish(suite, extra, record);
        return "published" as const;
      });
      ctx.auth.audit({ principal, action: "apt.upload", path: poolPath, detail: { suite, component, package: info.package, version: info.version, architecture: info.architecture, sha256: up.sha256, sizeBytes: up.size, identical: outcome === "identical" }, req });
      const msg = outcome === "identical" ? `${poolPath} was already published in ${suite}/${component}\n` : `published ${poolPath} in ${suite}/${component}\n`;
      return new Response(msg, { status: outcome === "identical" ? 200 : 201, headers: { "content-type": "text/plain; charset=utf-8", location: `${ctx.repo.mount}/${poolPath}` } });
    } finally {
      await rm(up.path, { force: true });
    }
  }

  async function publicKey(req: Request, armor: boolean): Promise<Response> {
    if (!signer) throw errors.notFound("signing key (this repository is unsigned)");
    let k = publicKeys.get(armor);
    if (!k) publicKeys.set(armor, (k = await signer.publicKey(armor)));
    const headers = { "content-type": armor ? "application/pgp-keys" : "application/octet-stream", "content-length": String(k.byteLength) };
    return new Response(req.method === "HEAD" ? null : (k as Uint8Array<ArrayBuffer>), { headers });
  }

  async function loadKey(): Promise<Uint8Array | undefined> {
    const s = c.signing;
    if (!s) return undefined;
    if (s.key) return enc.encode(s.key);
    if (s.keyFile) return new Uint8Array(await readFile(resolve(s.keyFile)));
    return undefined;
  }

  return {
    async handle(req, mount) {
      const rest = routeRest(req, mount);
      if (req.method === "PUT" || req.method === "POST") return upload(req, rest);
      if (req.method !== "GET" && req.method !== "HEAD") throw methodNotAllowed(req.method, undefined, "GET, HEAD, PUT, POST");
      if (rest === "public.key" || rest === "public.gpg") return publicKey(req, rest === "public.key");
      const p = parseAptPath(rest);
      if (p.kind === "release" || p.kind === "index") {
        // Mutable files: read from the database (another process sharing the data directory may have published a newer
        // generation), and marked for revalidation so that neither the host's hit replay nor a downstream cache keeps them.
        const e = await fresh(p.key);
        if (!e) throw errors.notFound(p.key);
        return ctx.artifacts.respond(req, e, { "cache-control": "no-cache" });
      }
      const e = await ctx.artifacts.get(p.key);
      if (!e || e.status !== 200 || !e.blobDigest) throw errors.notFound(p.key);
      return ctx.artifacts.respond(req, e);
    },
    async start() {
      const key = await loadKey();
      if (key) signer = await Signer.create({ key, passphrase: c.signing?.passphrase, keyId: c.signing?.keyId });
      else ctx.log.warn("hosted apt repository without a signing key: APT accepts it only with [trusted=yes]");
    },
    async stop() {
      await signer?.close();
      signer = undefined;
    },
  };
}

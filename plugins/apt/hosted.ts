/**
 * APT hosted repository (specs/apt.md §6): `.deb` uploads (curl `--upload-file`, raw POST bodies), a pool in Debian's
 * layout, and per-suite indexes regenerated and signed with the real `gpg` on every upload and deletion.
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
 * `DELETE /<name>/pool/…` (`delete` permission) removes a pool file and its stanza from every suite listing it; those
 * suites are regenerated in one commit. 200, or 404 when neither the file nor a stanza naming it exists. Retention
 * removes whole versions the same way (`removeVersion`: every architecture's file of one package version).
 *
 * Artifact paths (repository-relative):
 * ```
 * pool/<comp>/<p>/<source>/<pkg>_<version without epoch>_<arch>.deb       the package (immutable)
 * dists/<suite>/InRelease, Release, Release.gpg                            signed Release (Release only without a key)
 * dists/<suite>/<comp>/binary-<arch>/Packages, Packages.gz                 one per architecture; `all` packages in each
 * dists/<suite>/<comp>/binary-<arch>/by-hash/SHA256/<hex>                  copies; the last `keepGenerations` kept
 * -/records/<suite>/<comp>/<pool file name>                                the package's Packages stanza
 * -/generations/<suite>                                                    by-hash paths of the published generations (JSON)
 * ```
 * A generation — the new package, its stanza, every index, its by-hash copies, Release and both signatures — is one
 * `artifacts.commit` (one transaction; suite.ts): a Release never lists a file that is not visible. Uploads and
 * deletions are serialised per process; several processes sharing the data directory may race, so each Release
 * records a digest of the stanzas it was built from (`x-vault-records`) and a write regenerates until the Release
 * matches every stored stanza. Release files and indexes by name are read from the database (not the store's
 * in-memory entries) and answered with `Cache-Control: no-cache`; with `validForSeconds` they carry `Valid-Until` and
 * are regenerated before they expire (suite.ts `respondSuiteFile`). `GET /<name>/public.key` (armored) and
 * `/<name>/public.gpg` (keyring for `signed-by=`) give the signing key.
 */
import { rm } from "node:fs/promises";
import { KeyedLock, VaultError, errors, type ArtifactEntry, type PluginContext, type Principal, spoolBody } from "../../core/plugin.ts";
import { DebError, readDeb } from "./deb.ts";
import { fieldValue, parseDeb822, renderParagraph, type Paragraph } from "./deb822.ts";
import type { Signer } from "./gpg.ts";
import { parseAptPath } from "./paths.ts";
import { ARCHITECTURE, compareVersions, poolPrefix, withoutEpoch } from "./version.ts";
import { aptPackageOf } from "./ui.ts";
import { ParsedReleases, methodNotAllowed, routeRest, type AptRepoConfig, type AptService } from "./service.ts";
import {
  DEFAULT_KEEP_GENERATIONS,
  PublicKeys,
  SuiteRefresh,
  buildGeneration,
  digestsOf,
  dropUnlistedIndexes,
  freshEntry,
  packagesFiles,
  pruneGenerations,
  publishedIndex,
  respondSuiteFile,
  signerOf,
  type CommitFile,
  type IndexFile,
} from "./suite.ts";

/** Default `maxUploadBytes`: 1 GiB. */
export const DEFAULT_MAX_UPLOAD_BYTES = 1024 * 1024 * 1024;
/** Suite names accepted in uploads (one path segment). */
export const SUITE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
/** Component names accepted in uploads. */
export const COMPONENT_NAME = /^[a-z0-9][a-z0-9._-]{0,99}$/;
/** Methods of a hosted repository. */
const ALLOW = "GET, HEAD, PUT, POST, DELETE";

const RECORDS = "-/records/";
const GENERATIONS = "-/generations/";
const RECORDS_HEADER = "x-vault-records";
/** How often one write regenerates a suite that another process's write left incomplete. */
const MAX_RECONCILE = 20;
/** The one key of the publish lock: writes of one repository are serialised within the process. */
const PUBLISH = "publish";

/** One stored stanza, as generation needs it. */
interface StoredStanza {
  /** `-/records/<suite>/<comp>/<name>` */
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
  const lock = new KeyedLock();
  let signer: Signer | undefined;
  const publicKeys = new PublicKeys();
  const releases = new ParsedReleases(ctx);
  // signing again before Valid-Until: a regeneration from the stored stanzas, serialised with the writes
  const refresh = new SuiteRefresh((suite) => lock.run(PUBLISH, () => publish([suite], [], undefined, true)), ctx.log);

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

  /** Every file of one generation of `suite` built from `recs` (suite.ts buildGeneration); `previous`: its Release now. */
  async function generation(suite: string, recs: StoredStanza[], previous: ArtifactEntry | null): Promise<{ files: CommitFile[]; byHash: string[] }> {
    const archs = [...new Set([...baseArchs, ...recs.map((r) => r.architecture).filter((a) => a !== "all")])].sort();
    const comps = [...new Set([defaultComponent, ...recs.map((r) => r.component)])].sort();
    const indexes: IndexFile[] = [];
    for (const comp of comps) {
      for (const arch of archs) {
        const list = recs
          .filter((r) => r.component === comp && (r.architecture === arch || r.architecture === "all"))
          .sort((a, b) => (a.package < b.package ? -1 : a.package > b.package ? 1 : compareVersions(a.version, b.version) || (a.architecture < b.architecture ? -1 : 1)));
        indexes.push(...(await packagesFiles(`${comp}/binary-${arch}/`, enc.encode(list.map((r) => r.stanza).join("\n")))));
      }
    }
    return buildGeneration({
      identity: { origin: c.origin ?? ctx.repo.name, label: c.label ?? ctx.repo.name, suite, architectures: archs, components: comps },
      indexes,
      signer,
      validForSeconds: c.validForSeconds,
      headers: { [RECORDS_HEADER]: fingerprint(recs) },
      previous,
    });
  }

  /**
   * Publishes `suites` in one commit together with `extra` files (an upload's package and stanza), then regenerates
   * each until its Release matches every stored stanza (see the file header). A suite whose Release already matches is
   * left alone unless `force` (signing again) or `add` (an upload's stanza) concerns it.
   */
  async function publish(suites: string[], extra: CommitFile[] = [], add?: StoredStanza, force = false): Promise<void> {
    let todo = suites;
    for (let i = 0; i < MAX_RECONCILE && todo.length; i++) {
      const gens: { suite: string; files: CommitFile[]; byHash: string[]; previous: ArtifactEntry | null }[] = [];
      for (const suite of todo) {
        let recs = await records(suite);
        const mine = add && add.path.startsWith(`${RECORDS}${suite}/`) ? add : undefined;
        if (mine) recs = [...recs.filter((r) => r.path !== mine.path), mine];
        const cur = await freshEntry(ctx, `dists/${suite}/Release`);
        if (!force && !mine && cur && cur.headers[RECORDS_HEADER] === fingerprint(recs)) continue;
        gens.push({ suite, previous: cur, ...(await generation(suite, recs, cur)) });
      }
      if (gens.length === 0 && extra.length === 0) return;
      await ctx.artifacts.commit([...extra, ...gens.flatMap((g) => g.files)]);
      for (const g of gens) {
        await dropUnlistedIndexes(ctx, g.suite, g.previous, g.files);
        await pruneGenerations(ctx, g.suite, g.byHash, keep);
      }
      todo = gens.map((g) => g.suite);
      extra = [];
      add = undefined;
      force = false;
    }
    if (todo.length) ctx.log.warn("suite still misses written packages after repeated regenerations (concurrent writes from other processes?)", { suites: todo });
  }

  /** Streams a request body to a spool file with md5/sha1/sha256 (core `spoolBody`), refusing more than `maxUpload` bytes. */
  async function spool(req: Request): Promise<{ path: string; size: number; md5: string; sha1: string; sha256: string }> {
    const cl = req.headers.get("content-length");
    const { path, size, digests } = await spoolBody(ctx.storage, req.body, {
      maxBytes: maxUpload,
      tooLarge: () => new VaultError("VAULT_TOO_LARGE", 413, `upload larger than ${maxUpload} bytes`),
      truncated: (got, declared) => badUpload(`body has ${got} bytes, Content-Length said ${declared}`),
      algorithms: ["md5", "sha1", "sha256"],
      tag: "apt-upload",
      declaredBytes: cl !== null && /^\d+$/.test(cl) ? Number(cl) : undefined,
    });
    if (size === 0) {
      await rm(path, { force: true });
      throw badUpload("empty upload: send the .deb as the request body (curl --upload-file pkg.deb)");
    }
    return { path, size, md5: digests.md5, sha1: digests.sha1, sha256: digests.sha256 };
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

  /** Publishes an uploaded .deb (see the file header); `via`: the group it came through. */
  async function upload(req: Request, rest: string, principal: Principal, via?: string): Promise<Response> {
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
      const outcome = await lock.run(PUBLISH, async () => {
        const existing = await freshEntry(ctx, poolPath);
        if (existing && existing.blobDigest !== `sha256:${up.sha256}`)
          throw new VaultError("VAULT_CONFLICT", 409, `${poolPath} already exists with different contents (publish a new version instead)`);
        const rec = await freshEntry(ctx, recordPath);
        if (existing && rec && dec.decode(await ctx.artifacts.read(rec)) === stanza) {
          await publish([suite]);
          return "identical" as const;
        }
        const extra: CommitFile[] = [];
        if (!existing)
          extra.push({ path: poolPath, body: Bun.file(up.path).stream(), opts: { contentType: "application/vnd.debian.binary-package", kind: "artifact", expect: { sha256: up.sha256, sizeBytes: up.size } } });
        extra.push({ path: recordPath, body: stanza, opts: { contentType: "text/plain; charset=utf-8", kind: "metadata" } });
        const record: StoredStanza = { path: recordPath, component, package: info.package, version: info.version, architecture: info.architecture, stanza, digest: `sha256:${digestsOf(enc.encode(stanza)).sha256}` };
        await publish([suite], extra, record);
        return "published" as const;
      });
      ctx.auth.audit({ principal, action: "apt.upload", path: poolPath, detail: { suite, component, package: info.package, version: info.version, architecture: info.architecture, sha256: up.sha256, sizeBytes: up.size, identical: outcome === "identical", ...(via ? { via } : {}) }, req });
      const msg = outcome === "identical" ? `${poolPath} was already published in ${suite}/${component}\n` : `published ${poolPath} in ${suite}/${component}\n`;
      return new Response(msg, { status: outcome === "identical" ? 200 : 201, headers: { "content-type": "text/plain; charset=utf-8", location: `${ctx.repo.mount}/${poolPath}` } });
    } finally {
      await rm(up.path, { force: true });
    }
  }

  /** One stored stanza naming a pool file: its record row, suite and fields. */
  interface Listing {
    row: ArtifactEntry;
    suite: string;
    stanza: Paragraph;
  }

  /** The stanzas of record rows (`-/records/…`) that satisfy `keep`. */
  async function listings(rows: ArtifactEntry[], keep: (stanza: Paragraph) => boolean): Promise<Listing[]> {
    const out: Listing[] = [];
    for (const r of rows) {
      if (!r.blobDigest || r.status !== 200) continue;
      const [stanza] = parseDeb822(dec.decode(await ctx.artifacts.read(r)));
      if (stanza && keep(stanza)) out.push({ row: r, suite: r.path.slice(RECORDS.length).split("/")[0], stanza });
    }
    return out;
  }

  /**
   * Removes `hits` from their suites and the pool `files` (call under the publish lock): records first, so a crash
   * before the commit leaves a Release that still lists a file that is still there (reconciled by the next write); then
   * every suite concerned is published in one commit; the files last.
   * @returns the suites regenerated, sorted
   */
  async function unpublish(hits: Listing[], files: ArtifactEntry[]): Promise<string[]> {
    for (const h of hits) await ctx.artifacts.delete(h.row.path);
    const suites = [...new Set(hits.map((h) => h.suite))].sort();
    await publish(suites);
    for (const f of files) await ctx.artifacts.delete(f.path);
    return suites;
  }

  /** `DELETE pool/…`: removes the file and the stanzas naming it from every suite ({@link unpublish}). */
  async function remove(req: Request, rest: string, principal: Principal, via?: string): Promise<Response> {
    const p = parseAptPath(rest);
    if (p.kind !== "pool" || p.segs[0] !== "pool" || p.segs.length < 3) throw methodNotAllowed("DELETE", "only pool files can be deleted (the indexes follow)", ALLOW);
    const name = p.segs[p.segs.length - 1];
    const suffix = `/${p.segs[1]}/${name}`;
    const removed = await lock.run(PUBLISH, async () => {
      const rows = (await ctx.artifacts.list(RECORDS)).filter((r) => r.path.endsWith(suffix));
      const hits = await listings(rows, (s) => fieldValue(s, "Filename") === p.key);
      const file = await freshEntry(ctx, p.key);
      if (hits.length === 0 && !file) throw errors.notFound(p.key);
      const suites = await unpublish(hits, file ? [file] : []);
      return { suites, stanza: hits[0]?.stanza, sha256: file?.blobDigest?.slice(7) };
    });
    const f = (n: string) => (removed.stanza ? fieldValue(removed.stanza, n) : undefined);
    ctx.auth.audit({ principal, action: "apt.delete", path: p.key, detail: { suites: removed.suites, package: f("Package"), version: f("Version"), architecture: f("Architecture"), sha256: removed.sha256, ...(via ? { via } : {}) }, req });
    const where = removed.suites.length ? ` from ${removed.suites.map((s) => `${s}/${p.segs[1]}`).join(", ")}` : "";
    return new Response(`deleted ${p.key}${where}\n`, { headers: { "content-type": "text/plain; charset=utf-8" } });
  }

  /**
   * Retention (the plugin's `deleteVersion`): removes every pool file of binary package `name` at `version` (each
   * architecture, each component) and its stanzas from every suite, as DELETE of each file would, with one commit for
   * all the suites concerned. `version` is matched without its epoch, as pool file names carry it.
   */
  async function removeVersion(name: string, version: string): Promise<{ paths: string[]; bytes: number }> {
    const v = withoutEpoch(version);
    const prefix = `${name}_${v}_`;
    const named = (path: string) => path.slice(path.lastIndexOf("/") + 1).startsWith(prefix);
    return lock.run(PUBLISH, async () => {
      const rows = (await ctx.artifacts.list(RECORDS)).filter((r) => named(r.path));
      const hits = await listings(rows, (s) => fieldValue(s, "Package") === name && withoutEpoch(fieldValue(s, "Version") ?? "") === v);
      const keys = new Set(hits.map((h) => fieldValue(h.stanza, "Filename")).filter((k): k is string => k !== undefined && k.startsWith("pool/")));
      const files: ArtifactEntry[] = [];
      for (const k of keys) {
        const e = await freshEntry(ctx, k);
        if (e) files.push(e);
      }
      // files left behind by a deletion cut short after its commit: no stanza names them any more
      if (hits.length === 0) files.push(...(await ctx.artifacts.list("pool/")).filter((r) => named(r.path) && r.status === 200 && aptPackageOf(r.path)?.name === name));
      if (hits.length === 0 && files.length === 0) return { paths: [], bytes: 0 };
      await unpublish(hits, files);
      const gone = [...hits.map((h) => h.row), ...files];
      return { paths: gone.map((r) => r.path), bytes: gone.reduce((n, r) => n + r.sizeBytes, 0) };
    });
  }

  /** Writes: PUT/POST upload, DELETE of a pool file. */
  function write(req: Request, rest: string, principal: Principal, via?: string): Promise<Response> {
    return req.method === "DELETE" ? remove(req, rest, principal, via) : upload(req, rest, principal, via);
  }

  return {
    ctx,
    async handle(req, mount) {
      const rest = routeRest(req, mount);
      const m = req.method;
      if (m === "PUT" || m === "POST" || m === "DELETE") return write(req, rest, await ctx.auth.require(req, m === "DELETE" ? "delete" : "write"));
      if (m !== "GET" && m !== "HEAD") throw methodNotAllowed(m, undefined, ALLOW);
      if (rest === "public.key" || rest === "public.gpg") return publicKeys.respond(req, signer, rest === "public.key");
      const p = parseAptPath(rest);
      // Mutable files: read from the database (another process sharing the data directory may have published a newer
      // generation), and marked for revalidation so that neither the host's hit replay nor a downstream cache keeps them.
      if (p.kind === "release") return respondSuiteFile(ctx, req, p.key, p.segs.length === 3 && p.segs[0] === "dists" ? { suite: p.segs[1], refresh } : undefined);
      if (p.kind === "index") return respondSuiteFile(ctx, req, p.key);
      const e = await ctx.artifacts.get(p.key);
      if (!e || e.status !== 200 || !e.blobDigest) throw errors.notFound(p.key);
      return ctx.artifacts.respond(req, e);
    },
    member: {
      async release(dir) {
        const e = await freshEntry(ctx, dir + "Release");
        return e && releases.of(e);
      },
      index: (path, file) => publishedIndex(ctx, path, file),
    },
    write,
    removeVersion,
    async start() {
      signer = await signerOf(ctx);
    },
    async stop() {
      await signer?.close();
      signer = undefined;
    },
  };
}

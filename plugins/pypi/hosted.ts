/**
 * PyPI hosted repository: wheels and sdists uploaded with the legacy API (twine), served through a simple index whose
 * pages are rendered when a file is uploaded and stored, so every page request is answered from stored bytes.
 *
 * Artifact paths (repository-relative):
 * ```
 * files/<project>/<filename>             the file                                    (served)
 * files/<project>/<filename>.metadata    a wheel's METADATA (PEP 658/714)             (served)
 * simple/<project>/                      the project's snapshot (simple.ts Snapshot)   (read by groups)
 * simple/<project>/#json|#html|#text-html  the rendered page representations        (served)
 * simple/  simple/#json|#html|#text-html   the root index, likewise
 * info/<project>/<filename>              what the page says about one file (JSON {@link FileInfo})
 * projects/<project>                     marker of a project (body: the name as first uploaded)
 * ```
 * A file, its `.metadata`, its `info/` row and the project's snapshot and pages are written in ONE `artifacts.commit`
 * (one transaction): a page never lists a file that is not stored. Uploads to one project are serialised per process;
 * several processes sharing the data directory may still race on a page, so after its commit each upload compares the
 * page with the project's `info/` rows (read from the database) and rewrites the page until it lists every one of them.
 * The root index is brought up to date the same way from the `projects/` markers (after a new project's first upload,
 * and at start). Deletes (a version or one file; retention's `deleteVersion`) and PEP 592 yanks take the same lock; a
 * delete removes the `info/` rows first, commits the rewritten page, then removes the files (README "Delete and yank").
 */
import { errors, KeyedLock, type ArtifactPut, type PluginContext, type Principal } from "../../core/plugin.ts";
import { CONTENT_TYPES } from "./negotiate.ts";
import { normalizeName } from "./names.ts";
import { readSnapshot, SNAPSHOT_CONTENT_TYPE, renderIndexHtml, renderIndexJson, type ProjectList, type ProjectPage, type SimpleFile, type Snapshot } from "./simple.ts";
import type { UploadDigest } from "./dist.ts";
import { DEFAULT_MAX_UPLOAD_BYTES, readUploadForm, type UploadForm } from "./upload.ts";
import { badUpload, fileExists, uploadDigestMismatch } from "./errors.ts";
import { samePep440 } from "./version-order.ts";
import type { PypiRepoConfig } from "./proxy.ts";
import {
  freshEntry,
  projectRootHref,
  REPRESENTATIONS,
  respondPage,
  routeSite,
  runTask,
  simplePrefixOf,
  type ManageOp,
  type PypiService,
  type Site,
} from "./site.ts";

/** What a project page records about one uploaded file (the body of its `info/` row). */
export interface FileInfo {
  /** The page entry: path `files/<project>/<filename>`, sha256, requires-python, core-metadata, size, upload time. */
  file: SimpleFile;
  /** The upload's `version` field. */
  version: string;
  /** The upload's `name` field (display spelling). */
  name: string;
}

/** How many times an upload rewrites a page that another process's write made incomplete before giving up (logged). */
const MAX_RECONCILE = 20;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const snapshotPath = (project: string) => `simple/${project}/`;
const filePath = (project: string, filename: string) => `files/${project}/${filename}`;
const infoPrefix = (project: string) => `info/${project}/`;
const MARKERS = "projects/";
const INDEX = "simple/";

/** PEP 700 `upload-time`: `yyyy-mm-ddThh:mm:ss.ffffffZ`. */
function uploadTime(ms: number): string {
  return new Date(ms).toISOString().replace(/Z$/, "000Z");
}

function sha256Hex(b: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(b).digest("hex");
}

/** Adds (or replaces, by file name) files on a page; files end up sorted by name, `versions` gains new versions. */
function addFiles(page: ProjectPage, infos: FileInfo[]): void {
  const byName = new Map(page.files.map((f) => [f.filename, f]));
  const versions = page.versions ?? [];
  for (const i of infos) {
    byName.set(i.file.filename, i.file);
    if (!versions.includes(i.version)) versions.push(i.version);
  }
  page.files = [...byName.values()].sort((a, b) => (a.filename < b.filename ? -1 : a.filename > b.filename ? 1 : 0));
  page.versions = versions;
}

/** One file of an `artifacts.commit`. */
type CommitFile = { path: string; body: Uint8Array | string; opts?: ArtifactPut };

/** What a removal took away: the repository-relative paths, their total size in bytes, the distribution file names. */
export interface Removed {
  paths: string[];
  bytes: number;
  files: string[];
}

/** The result of publishing one upload. */
type Published = { identical: true } | { identical: false; newProject: boolean };

/**
 * Creates the service of one hosted pypi repository (site.ts layout; uploads at the mount and `legacy/`).
 * Configuration: `maxUploadBytes` (default {@link DEFAULT_MAX_UPLOAD_BYTES}), `simplePrefix`.
 */
export function createPypiHosted(ctx: PluginContext<PypiRepoConfig>): PypiService {
  const sp = simplePrefixOf(ctx.config);
  const maxUpload = ctx.config.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const locks = new KeyedLock();

  /** Snapshot + every representation of a project page, as commit entries. */
  async function projectPages(page: ProjectPage): Promise<CommitFile[]> {
    const key = snapshotPath(page.name);
    const snap = encoder.encode(JSON.stringify({ v: 1, kind: "project", page } satisfies Snapshot));
    const out: CommitFile[] = [{ path: key, body: snap, opts: { contentType: SNAPSHOT_CONTENT_TYPE, kind: "metadata" } }];
    const rendered = new Map<string, Uint8Array>();
    for (const rep of REPRESENTATIONS) {
      // text/html and v1+html are the same bytes under two content types
      const as = rep === "json" ? "json" : "html";
      let body = rendered.get(as);
      if (!body) {
        body = (await runTask(ctx, { op: "render", snapshot: snap, representation: as, rootHref: projectRootHref(sp) }, snap.byteLength)).body!;
        rendered.set(as, body);
      }
      out.push({ path: `${key}#${rep}`, body, opts: { contentType: CONTENT_TYPES[rep], kind: "metadata", headers: { vary: "Accept" } } });
    }
    return out;
  }

  /** Snapshot + representations of the root index. */
  function indexPages(list: ProjectList): CommitFile[] {
    const snap = encoder.encode(JSON.stringify({ v: 1, kind: "index", list } satisfies Snapshot));
    const html = renderIndexHtml(list);
    const json = renderIndexJson(list);
    const out: CommitFile[] = [{ path: INDEX, body: snap, opts: { contentType: SNAPSHOT_CONTENT_TYPE, kind: "metadata" } }];
    for (const rep of REPRESENTATIONS)
      out.push({ path: `${INDEX}#${rep}`, body: rep === "json" ? json : html, opts: { contentType: CONTENT_TYPES[rep], kind: "metadata", headers: { vary: "Accept" } } });
    return out;
  }

  /** The project's current page, read from the database (empty when there is none yet). */
  async function currentPage(project: string): Promise<ProjectPage> {
    const e = await freshEntry(ctx, snapshotPath(project));
    if (!e) return { name: project, versions: [], files: [] };
    const s = readSnapshot(await ctx.artifacts.read(e));
    if (s.kind !== "project") throw new Error(`${e.path} is not a project snapshot`);
    return s.page;
  }

  /** Rewrites the project page until it lists every `info/` row of the project (see the file header). */
  async function reconcileProject(project: string): Promise<void> {
    const prefix = infoPrefix(project);
    for (let i = 0; i < MAX_RECONCILE; i++) {
      const rows = await ctx.artifacts.list(prefix);
      const page = await currentPage(project);
      const listed = new Set(page.files.map((f) => f.filename));
      const missing = rows.filter((r) => r.blobDigest && !listed.has(r.path.slice(prefix.length)));
      if (missing.length === 0) return;
      const infos = await Promise.all(missing.map(async (r) => JSON.parse(decoder.decode(await ctx.artifacts.read(r))) as FileInfo));
      addFiles(page, infos);
      await ctx.artifacts.commit(await projectPages(page));
    }
    ctx.log.warn("project page still misses uploaded files after repeated rewrites (concurrent uploads from other processes?)", { project });
  }

  /** Rewrites the root index until it lists every project marker; writes an empty index when there is none. */
  async function reconcileIndex(): Promise<void> {
    for (let i = 0; i < MAX_RECONCILE; i++) {
      const markers = await ctx.artifacts.list(MARKERS);
      const root = await freshEntry(ctx, INDEX);
      let list: ProjectList = { projects: [] };
      if (root) {
        const s = readSnapshot(await ctx.artifacts.read(root));
        if (s.kind === "index") list = s.list;
      }
      const have = new Set(list.projects.map(normalizeName));
      const missing = markers.filter((m) => m.blobDigest && !have.has(m.path.slice(MARKERS.length)));
      if (missing.length === 0 && root) return;
      for (const m of missing) {
        const name = decoder.decode(await ctx.artifacts.read(m)).trim();
        list.projects.push(name || m.path.slice(MARKERS.length));
      }
      list.projects.sort((a, b) => {
        const x = normalizeName(a);
        const y = normalizeName(b);
        return x < y ? -1 : x > y ? 1 : 0;
      });
      await ctx.artifacts.commit(indexPages(list));
    }
    ctx.log.warn("root index still misses projects after repeated rewrites (concurrent uploads from other processes?)");
  }

  /**
   * After an import (the plugin's `afterImport`): the project's page lists exactly the files that have an `info/` row
   * and a stored file — imported pages may list files of the exporting vault that were not exported, or miss this
   * repository's own — keeping the page's order; rewritten only when it changes.
   */
  async function rebuildProject(project: string): Promise<void> {
    const rows = (await ctx.artifacts.list(infoPrefix(project))).filter((r) => r.blobDigest);
    const infos: FileInfo[] = [];
    for (const r of rows) {
      const info = JSON.parse(decoder.decode(await ctx.artifacts.read(r))) as FileInfo;
      if (await freshEntry(ctx, filePath(project, info.file.filename))) infos.push(info);
    }
    const page = await currentPage(project);
    const before = JSON.stringify(page);
    const listed = new Set(infos.map((i) => i.file.filename));
    page.files = page.files.filter((f) => listed.has(f.filename));
    page.versions = (page.versions ?? []).filter((v) => infos.some((i) => i.version === v));
    addFiles(page, infos);
    if (JSON.stringify(page) !== before || !(await freshEntry(ctx, `${snapshotPath(project)}#json`))) await ctx.artifacts.commit(await projectPages(page));
  }

  /** The plugin's `afterImport`: the pages of every project the imported paths touch, then the root index. */
  async function afterImport(paths: string[]): Promise<void> {
    const projects = new Set<string>();
    for (const p of paths) {
      const segs = p.split("/");
      if (segs.length >= 2 && segs[1] !== "" && (segs[0] === "files" || segs[0] === "info" || segs[0] === "projects" || segs[0] === "simple")) projects.add(segs[1]);
    }
    for (const p of projects) await locks.run(`project:${p}`, () => rebuildProject(p));
    await locks.run("index", reconcileIndex);
  }

  /**
   * Stores one checked upload with its page (one commit), under the project's lock. An identical file already stored
   * (same name, same sha256) is a no-op, as on PyPI (twine retries after a 5xx are then harmless).
   * @throws VaultError 400 File already exists when the name is taken by other contents
   */
  async function publish(form: UploadForm, body: Uint8Array, sha256: string, metadata: Uint8Array | undefined): Promise<Published> {
    const p = form.project;
    const path = filePath(p, form.filename);
    const existing = await freshEntry(ctx, path);
    if (existing) {
      if (existing.blobDigest === `sha256:${sha256}`) return { identical: true };
      throw fileExists(form.filename);
    }
    const file: SimpleFile = { filename: form.filename, url: path, path, hashes: { sha256 }, yanked: false, sizeBytes: body.byteLength, uploadTime: uploadTime(Date.now()) };
    if (form.requiresPython !== undefined) file.requiresPython = form.requiresPython;
    if (metadata) file.coreMetadata = { sha256: sha256Hex(metadata) };
    const info: FileInfo = { file, version: form.version, name: form.name };
    const page = await currentPage(p);
    addFiles(page, [info]);
    const files: CommitFile[] = [{ path, body, opts: { contentType: "application/octet-stream", expect: { sha256, sizeBytes: body.byteLength } } }];
    if (metadata) files.push({ path: `${path}.metadata`, body: metadata, opts: { contentType: "text/plain; charset=utf-8", kind: "metadata" } });
    files.push({ path: `${infoPrefix(p)}${form.filename}`, body: JSON.stringify(info), opts: { contentType: "application/json", kind: "metadata" } });
    files.push(...(await projectPages(page)));
    const newProject = !(await freshEntry(ctx, MARKERS + p));
    if (newProject) files.push({ path: MARKERS + p, body: form.name, opts: { contentType: "text/plain; charset=utf-8", kind: "metadata" } });
    await ctx.artifacts.commit(files);
    await reconcileProject(p);
    return { identical: false, newProject };
  }

  /** The project's `info/` rows with what they say (stored rows only). */
  async function projectInfos(project: string): Promise<{ path: string; info: FileInfo }[]> {
    const rows = (await ctx.artifacts.list(infoPrefix(project))).filter((r) => r.blobDigest && r.status === 200);
    return Promise.all(rows.map(async (r) => ({ path: r.path, info: JSON.parse(decoder.decode(await ctx.artifacts.read(r))) as FileInfo })));
  }

  /**
   * Removes the files of a project that `pick` selects (call under the project's lock): their `info/` rows first (so no
   * reconciliation lists them again), then the rewritten page (one commit), then each file and its PEP 658 `.metadata`.
   * A project left without files loses its page, snapshot and marker, and the root index drops it.
   * @returns what was removed (nothing when `pick` selects no file)
   */
  async function removeFiles(project: string, pick: (i: FileInfo) => boolean): Promise<Removed> {
    const infos = await projectInfos(project);
    const gone = infos.filter((x) => pick(x.info));
    if (gone.length === 0) return { paths: [], bytes: 0, files: [] };
    const keep = infos.filter((x) => !gone.includes(x));
    const names = new Set(gone.map((x) => x.info.file.filename));
    const victims = [];
    for (const x of gone) {
      const f = filePath(project, x.info.file.filename);
      for (const path of [x.path, f, `${f}.metadata`]) {
        const e = await freshEntry(ctx, path);
        if (e) victims.push(e);
      }
    }
    for (const x of gone) await ctx.artifacts.delete(x.path);
    if (keep.length > 0) {
      const page = await currentPage(project);
      page.files = page.files.filter((f) => !names.has(f.filename));
      page.versions = (page.versions ?? []).filter((v) => keep.some((k) => k.info.version === v));
      await ctx.artifacts.commit(await projectPages(page));
    } else {
      for (const path of [snapshotPath(project), ...REPRESENTATIONS.map((r) => `${snapshotPath(project)}#${r}`), MARKERS + project]) {
        const e = await freshEntry(ctx, path);
        if (e) victims.push(e);
      }
    }
    for (const e of victims) if (!e.path.startsWith(infoPrefix(project))) await ctx.artifacts.delete(e.path);
    return { paths: victims.map((e) => e.path), bytes: victims.reduce((n, e) => n + e.sizeBytes, 0), files: [...names].sort() };
  }

  /** Drops a project that lost its last file from the root index (under the index lock). */
  async function dropFromIndex(project: string): Promise<void> {
    await locks.run("index", async () => {
      const root = await freshEntry(ctx, INDEX);
      if (!root) return;
      const s = readSnapshot(await ctx.artifacts.read(root));
      if (s.kind !== "index") return;
      const projects = s.list.projects.filter((p) => normalizeName(p) !== project);
      if (projects.length !== s.list.projects.length) await ctx.artifacts.commit(indexPages({ ...s.list, projects }));
    });
  }

  /**
   * Removes one version (every file whose upload named it, PEP 440 equality) or one file of a project, with its
   * `.metadata`, and updates the pages. The retention hook and the DELETE routes both come here.
   */
  async function remove(project: string, target: { version: string } | { filename: string }): Promise<Removed> {
    const pick = "version" in target ? (i: FileInfo) => samePep440(i.version, target.version) : (i: FileInfo) => i.file.filename === target.filename;
    const r = await locks.run(`project:${project}`, () => removeFiles(project, pick));
    if (r.paths.includes(MARKERS + project)) await dropFromIndex(project);
    return r;
  }

  /**
   * PEP 592: marks every file of a version yanked (`reason`, or true without one) or not (`yanked` false); the `info/`
   * rows and the page change in one commit.
   * @returns the file names changed; empty when the project has no such version
   */
  async function setYanked(project: string, version: string, yanked: boolean | string): Promise<string[]> {
    return locks.run(`project:${project}`, async () => {
      const hit = (await projectInfos(project)).filter((x) => samePep440(x.info.version, version));
      if (hit.length === 0) return [];
      for (const x of hit) x.info.file.yanked = yanked;
      const page = await currentPage(project);
      addFiles(page, hit.map((x) => x.info));
      const files: CommitFile[] = hit.map((x) => ({ path: x.path, body: JSON.stringify(x.info), opts: { contentType: "application/json", kind: "metadata" } }));
      await ctx.artifacts.commit([...files, ...(await projectPages(page))]);
      return hit.map((x) => x.info.file.filename).sort();
    });
  }

  /** The yank reason of a POST body: form field `reason` or JSON `{ "reason": ... }`; undefined when none is given. */
  async function yankReason(req: Request): Promise<string | undefined> {
    const type = (req.headers.get("content-type") ?? "").toLowerCase();
    let reason: unknown;
    try {
      if (type.includes("json")) {
        const text = await req.text();
        reason = text.trim() ? (JSON.parse(text) as { reason?: unknown })?.reason : undefined;
      } else if (type.includes("form")) reason = (await req.formData()).get("reason");
    } catch {
      throw badUpload("the yank request body is not valid JSON or form data");
    }
    if (reason !== undefined && reason !== null && typeof reason !== "string") throw badUpload("reason must be a string");
    return typeof reason === "string" && reason.trim() !== "" ? reason.trim() : undefined;
  }

  /**
   * Deletes or (un)yanks for a principal whose `delete` permission was already checked; audited as `pypi.delete`,
   * `pypi.yank`, `pypi.unyank` (`via`: the group it came through).
   * @throws VaultError 404 when the project has no such version or file
   */
  async function manage(req: Request, principal: Principal, op: ManageOp, via?: string): Promise<Response> {
    const detail: Record<string, unknown> = {};
    if (via) detail.via = via;
    const ok = (text: string) => new Response(text, { status: 200, headers: { "content-type": "text/plain; charset=utf-8" } });
    if (op.kind === "delete") {
      const r = await remove(op.project, op.filename !== undefined ? { filename: op.filename } : { version: op.version! });
      if (r.files.length === 0) throw errors.notFound(op.filename !== undefined ? `file ${op.filename}` : `version ${op.version} of project ${op.project}`);
      const path = op.filename !== undefined ? filePath(op.project, op.filename) : `files/${op.project}/`;
      ctx.auth.audit({ principal, action: "pypi.delete", path, detail: { ...detail, ...(op.version !== undefined ? { version: op.version } : {}), files: r.files, bytes: r.bytes }, req });
      return ok(`OK (deleted ${r.files.join(", ")})\n`);
    }
    const reason = op.kind === "yank" ? await yankReason(req) : undefined;
    const files = await setYanked(op.project, op.version, op.kind === "yank" ? (reason ?? true) : false);
    if (files.length === 0) throw errors.notFound(`version ${op.version} of project ${op.project}`);
    ctx.auth.audit({ principal, action: `pypi.${op.kind}`, path: `files/${op.project}/`, detail: { ...detail, version: op.version, files, ...(reason ? { reason } : {}) }, req });
    return ok(`OK (${op.kind === "yank" ? "yanked" : "unyanked"} ${files.join(", ")})\n`);
  }

  async function upload(req: Request, principal: Principal, via?: string): Promise<Response> {
    const form = await readUploadForm(req, maxUpload);
    const bytes = new Uint8Array(await form.file.arrayBuffer());
    const algorithms = Object.keys(form.digests) as UploadDigest[];
    const size = bytes.byteLength;
    const out = await runTask(ctx, { op: "inspect", bytes, dist: form.dist, algorithms }, size, ctx.pool.offloads(size) ? { transfer: [bytes.buffer as ArrayBuffer] } : {});
    const body = out.body!;
    const got = out.inspect!;
    for (const alg of algorithms) if (got.digests[alg] !== form.digests[alg]) throw uploadDigestMismatch(alg, form.digests[alg]!, got.digests[alg] ?? "");
    if (got.problem) throw badUpload(`invalid ${form.dist.kind === "wheel" ? "wheel" : "sdist"} ${form.filename}: ${got.problem}`);
    const r = await locks.run(`project:${form.project}`, () => publish(form, body, got.digests.sha256, got.metadata));
    if (!r.identical && r.newProject) await locks.run("index", reconcileIndex);
    const detail: Record<string, unknown> = { filename: form.filename, version: form.version, sizeBytes: body.byteLength, sha256: got.digests.sha256 };
    if (via) detail.via = via;
    if (r.identical) detail.identical = true;
    ctx.auth.audit({ principal, action: "pypi.upload", path: filePath(form.project, form.filename), detail, req });
    return new Response(r.identical ? "OK (identical file already stored)\n" : "OK\n", { status: 200, headers: { "content-type": "text/plain; charset=utf-8" } });
  }

  const site: Site = {
    simplePrefix: sp,
    async rootIndex(req, rep) {
      let v = await ctx.artifacts.get(`${INDEX}#${rep}`);
      if (!v) {
        await locks.run("index", reconcileIndex);
        v = await ctx.artifacts.get(`${INDEX}#${rep}`);
      }
      if (!v) throw errors.notFound("simple index");
      return respondPage(ctx, req, v, rep);
    },
    async projectPage(req, project, rep) {
      const v = await ctx.artifacts.get(`${snapshotPath(project)}#${rep}`);
      if (!v || v.status !== 200) throw errors.notFound(`project ${project}`);
      return respondPage(ctx, req, v, rep);
    },
    serveFile,
    async upload(req) {
      const principal = await ctx.auth.require(req, "write");
      return upload(req, principal);
    },
    async manage(req, op) {
      const principal = await ctx.auth.require(req, "delete");
      return manage(req, principal, op);
    },
  };

  /** `files/<project>/<filename>[.metadata]` → the stored file (404 for anything else). */
  async function serveFile(req: Request, rel: string): Promise<Response> {
    const segs = rel.split("/");
    const notFound = () => errors.notFound("file");
    if (segs.length !== 3) throw notFound();
    let path: string;
    try {
      path = `files/${decodeURIComponent(segs[1])}/${decodeURIComponent(segs[2])}`;
    } catch {
      throw notFound();
    }
    const e = await ctx.artifacts.get(path);
    if (!e || e.status !== 200 || !e.blobDigest) throw notFound();
    return ctx.artifacts.respond(req, e);
  }

  return {
    ctx,
    handle: (req, mount) => routeSite(req, mount, site),
    projectSnapshot: async (project) => {
      const e = await ctx.artifacts.get(snapshotPath(project));
      return e && e.status === 200 && e.blobDigest ? e : null;
    },
    indexSnapshot: async () => {
      let e = await ctx.artifacts.get(INDEX);
      if (!e) {
        await locks.run("index", reconcileIndex);
        e = await ctx.artifacts.get(INDEX);
      }
      return e && e.status === 200 && e.blobDigest ? e : null;
    },
    serveFile,
    upload,
    manage,
    removeVersion: (project, version) => remove(project, { version }),
    start: () => locks.run("index", reconcileIndex),
    afterImport,
  };
}

/**
 * What the pypi repository types share: the service interface a group reads its members through, the URL layout of
 * hosted and group repositories (simple index, files, upload), answers of stored pages, and small helpers (pool
 * dispatch, per-key locks, reads that bypass the artifact store's in-memory entries).
 *
 * Layout under the mount (`simplePrefix` = `simple/` by default):
 * ```
 * <simplePrefix>               root index             GET/HEAD  (PEP 503 HTML / PEP 691 JSON, negotiated)
 * <simplePrefix><project>/     project page           GET/HEAD  (non-normalized name or missing slash → 301)
 * files/<…>                    files and .metadata    GET/HEAD
 * "" (the mount), legacy/      upload (twine)         POST      (also without the trailing slash; never redirected)
 * <project>/<version>/         delete a version       DELETE    (hosted, and groups with writeTo; `delete` permission)
 * files/<project>/<filename>   delete one file        DELETE    (with its PEP 658 .metadata)
 * <project>/<version>/yank     yank (PEP 592)         POST      (optional reason: form field or JSON `reason`)
 * <project>/<version>/unyank   undo a yank            POST
 * ```
 */
import { errors, type ArtifactEntry, type PluginContext, type Principal } from "../../core/plugin.ts";
import { isNormalized, isValidName, normalizeName } from "./names.ts";
import { CONTENT_TYPES, negotiate, type Representation } from "./negotiate.ts";
import { pathProblem } from "./paths.ts";
import { pypiSimple, type PypiTaskInput, type PypiTaskOutput } from "./task.ts";
import { methodNotAllowed, noRoute, notAcceptable } from "./errors.ts";
import type { PypiRepoConfig } from "./proxy.ts";

/** Every representation a page is stored in. */
export const REPRESENTATIONS: readonly Representation[] = ["json", "html", "text-html"];

/**
 * One pypi repository as the plugin (and a group reading its members) sees it, whatever its type. Created once per
 * repository (index.ts `serviceOf`), shared by its mounts.
 */
export interface PypiService {
  readonly ctx: PluginContext<PypiRepoConfig>;
  /**
   * Answers a request under the mount it arrived at (`mount`: `/<name>`, the `prefix`, or `""` on the repository's own
   * listener). Throws VaultError (rendered by the plugin's renderError).
   */
  handle(req: Request, mount: string): Promise<Response>;
  /**
   * The stored snapshot (simple.ts `Snapshot`, kind `project`) of a project page: its bytes are what a group merges,
   * its `blobDigest` changes whenever the page does. Proxies fetch or revalidate it through the cache engine.
   * @param project normalized name
   * @returns null when the repository has no such project
   * @throws VaultError for upstream failures without a stale copy (502/503/504)
   */
  projectSnapshot(project: string, signal?: AbortSignal): Promise<ArtifactEntry | null>;
  /** The stored snapshot of the root index (kind `index`); null when there is none. Throws as {@link projectSnapshot}. */
  indexSnapshot(signal?: AbortSignal): Promise<ArtifactEntry | null>;
  /**
   * Answers GET/HEAD of a repository-relative `files/…` path (still percent-encoded), as the repository's own route
   * would: only files its pages list. Throws VaultError 404 otherwise.
   */
  serveFile(req: Request, rel: string): Promise<Response>;
  /**
   * Takes an upload whose `write` permission was already checked (`principal`), for a group writing through to this
   * repository (`via` names the group for the audit log). Absent on repositories that take no uploads.
   */
  upload?(req: Request, principal: Principal, via?: string): Promise<Response>;
  /**
   * Deletes or (un)yanks ({@link ManageOp}) for a principal whose `delete` permission was already checked, for a group
   * forwarding to this repository (`via`: the group, for the audit log). Absent on repositories that take no uploads.
   * @throws VaultError 404 when the project has no such version or file
   */
  manage?(req: Request, principal: Principal, op: ManageOp, via?: string): Promise<Response>;
  /**
   * Hosted: removes every file of a version with its pages updated (the plugin's `deleteVersion`, retention).
   * @param project normalized name
   * @returns the paths removed, their total size in bytes and the distribution file names (none when not stored)
   */
  removeVersion?(project: string, version: string): Promise<{ paths: string[]; bytes: number; files: string[] }>;
  /** Called by the plugin's `start` hook. */
  start?(): Promise<void>;
  /** Hosted: brings the pages of the projects of imported `paths` (and the root index) in line with the stored files (the plugin's `afterImport`). */
  afterImport?(paths: string[]): Promise<void>;
}

/**
 * A maintainer's change to hosted files: delete a version (every file uploaded with it) or one file, yank or unyank a
 * version (PEP 592). `project` is the normalized name; versions compare by PEP 440 equality.
 */
export type ManageOp =
  | { kind: "delete"; project: string; version: string; filename?: undefined }
  | { kind: "delete"; project: string; filename: string; version?: undefined }
  | { kind: "yank" | "unyank"; project: string; version: string };

/** What a hosted or group repository answers; {@link routeSite} maps requests onto it. */
export interface Site {
  /** `simple/` or `""` (always ends with `/` when non-empty). */
  simplePrefix: string;
  rootIndex(req: Request, rep: Representation): Promise<Response>;
  /** @param project normalized, valid name */
  projectPage(req: Request, project: string, rep: Representation): Promise<Response>;
  serveFile(req: Request, rel: string): Promise<Response>;
  /** The legacy upload API (POST). Throws 405 where there is none. */
  upload(req: Request): Promise<Response>;
  /** Deletes, yanks, unyanks ({@link ManageOp}), checking `delete` permission. Throws 405 where files cannot be changed. */
  manage(req: Request, op: ManageOp): Promise<Response>;
}

/** 301 to `location` (a path), empty body. */
export function redirect(location: string): Response {
  return new Response(null, { status: 301, headers: { location, "content-length": "0" } });
}

/** Normalises `simplePrefix` (see {@link Site}). */
export function simplePrefixOf(c: PypiRepoConfig): string {
  let sp = (c.simplePrefix ?? "simple/").replace(/^\/+/, "");
  if (sp !== "" && !sp.endsWith("/")) sp += "/";
  return sp;
}

/** Relative reference from a project page (`<mount>/<simplePrefix><project>/`) to the repository root: `../../` for `simple/`. */
export function projectRootHref(simplePrefix: string): string {
  return "../".repeat((simplePrefix === "" ? 0 : simplePrefix.split("/").length - 1) + 1);
}

/** Relative reference from the root index (`<mount>/<simplePrefix>`) to the repository root. */
export function indexRootHref(simplePrefix: string): string {
  return "../".repeat(simplePrefix === "" ? 0 : simplePrefix.split("/").length - 1) || "./";
}

/** The representation of a page `req` asks for (Accept, `?format=`); throws 406 when none is acceptable. */
export function chooseRepresentation(req: Request, url: URL): Representation {
  const rep = negotiate(req.headers.get("accept"), url.searchParams.get("format"));
  if (!rep) throw notAcceptable();
  return rep;
}

/** The paths a twine upload may be POSTed to: the mount itself and `legacy/`, each with or without the trailing slash. */
function isUploadPath(rest: string): boolean {
  return rest === "" || rest === "/" || rest === "/legacy" || rest === "/legacy/";
}

/**
 * The {@link ManageOp} of a DELETE or POST path below the mount (`rest` starts with `/`, still percent-encoded): DELETE
 * `/<project>/<version>/` (slash optional) or `/files/<project>/<filename>`; POST `/<project>/<version>/yank|unyank`.
 * Null when the path is none of these or names an invalid project.
 */
function manageOpOf(method: "DELETE" | "POST", rest: string): ManageOp | null {
  let segs: string[];
  try {
    segs = rest.slice(1).split("/").map(decodeURIComponent);
  } catch {
    return null;
  }
  if (!rest.startsWith("/") || segs.some((s, i) => s === "" && i !== segs.length - 1) || segs.some((s) => s === "." || s === ".." || s.includes("/"))) return null;
  if (segs[segs.length - 1] === "") segs.pop();
  if (method === "DELETE" && segs.length === 3 && segs[0] === "files") {
    if (!isValidName(segs[1]) || segs[2].endsWith(".metadata")) return null;
    return { kind: "delete", project: normalizeName(segs[1]), filename: segs[2] };
  }
  if (!isValidName(segs[0] ?? "")) return null;
  const project = normalizeName(segs[0]);
  if (method === "DELETE" && segs.length === 2) return { kind: "delete", project, version: segs[1] };
  if (method === "POST" && segs.length === 3 && (segs[2] === "yank" || segs[2] === "unyank")) return { kind: segs[2], project, version: segs[1] };
  return null;
}

/**
 * Routes one request of a hosted or group repository (layout in this file's header): POST to the upload paths, GET/HEAD
 * to pages and files, DELETE and POST yank/unyank to {@link Site.manage}; other methods 405. Throws VaultError: 400 bad
 * path, 404, 405, 406.
 */
export async function routeSite(req: Request, mount: string, site: Site): Promise<Response> {
  const url = new URL(req.url);
  const pathname = url.pathname;
  if (!pathname.startsWith(mount)) throw noRoute(pathname);
  const rest = pathname.slice(mount.length);
  if (req.method === "POST") {
    if (isUploadPath(rest)) return site.upload(req);
    const op = manageOpOf("POST", rest);
    if (op) return site.manage(req, op);
    throw methodNotAllowed(req.method);
  }
  if (req.method === "DELETE") {
    const op = manageOpOf("DELETE", rest);
    if (op) return site.manage(req, op);
    throw methodNotAllowed(req.method);
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    const e = methodNotAllowed(req.method);
    if (isUploadPath(rest)) e.headers.allow = "GET, HEAD, POST";
    throw e;
  }
  if (rest === "") return redirect(`${mount}/${url.search}`);
  if (!rest.startsWith("/")) throw noRoute(pathname);
  const rel = rest.slice(1);
  if (rel !== "") {
    const why = pathProblem(rel, true);
    if (why) throw errors.badPath(pathname, why);
  }
  const sp = site.simplePrefix;
  if (rel === sp) return site.rootIndex(req, chooseRepresentation(req, url));
  if (sp !== "" && rel === sp.slice(0, -1)) return redirect(`${mount}/${sp}${url.search}`);
  const segs = rel.split("/");
  if (segs[0] === "files" && segs.length >= 2 && segs[segs.length - 1] !== "") return site.serveFile(req, rel);
  if (rel.startsWith(sp)) {
    const p = rel.slice(sp.length).split("/");
    if ((p.length === 2 && p[1] === "") || p.length === 1) {
      if (!isValidName(p[0])) throw errors.notFound("project");
      const name = normalizeName(p[0]);
      if (p.length === 1 || !isNormalized(p[0])) return redirect(`${mount}/${sp}${name}/${url.search}`);
      return site.projectPage(req, name, chooseRepresentation(req, url));
    }
  }
  throw noRoute(pathname);
}

/**
 * Answers a stored page representation: the entry's bytes with the exact Content-Type of `rep`, `Vary: Accept`,
 * `Cache-Control: no-cache` (clients revalidate with the strong ETag and get 304s), Range and conditionals as
 * `ArtifactStore.respond` does them.
 */
export function respondPage(ctx: PluginContext, req: Request, entry: ArtifactEntry, rep: Representation): Promise<Response> {
  return ctx.artifacts.respond(req, entry, { "content-type": CONTENT_TYPES[rep], vary: "Accept", "cache-control": "no-cache" });
}

/** Runs a pypi task inline, or in the worker pool when `sizeBytes` is over the offload threshold. */
export function runTask(ctx: PluginContext, input: PypiTaskInput, sizeBytes: number, o: { signal?: AbortSignal; transfer?: ArrayBuffer[] } = {}): Promise<PypiTaskOutput> {
  if (ctx.pool.offloads(sizeBytes)) return ctx.pool.run<PypiTaskInput, PypiTaskOutput>("pypiSimple", input, o);
  return Promise.resolve(pypiSimple(input));
}

/**
 * The row at exactly `path`, read from the database (not from the store's in-memory entries, which may be up to a few
 * seconds behind writes of another process sharing the data directory). Null when absent or not a stored file.
 */
export async function freshEntry(ctx: PluginContext, path: string): Promise<ArtifactEntry | null> {
  const [e] = await ctx.artifacts.list(path, { limit: 1 });
  return e && e.path === path && e.status === 200 && e.blobDigest ? e : null;
}

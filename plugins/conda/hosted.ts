/**
 * Conda hosted channel: packages uploaded by users, served with a repodata.json (+ variants) and channeldata.json that
 * the vault regenerates on every publish, deterministically, as conda-index would (specs/conda.md §4, without patch
 * instructions).
 *
 * Uploads (write permission; Basic `user:password`/`user:token` or `Bearer <token>`):
 * - `PUT /<name>/<subdir>/<file>` with the package as the body (rattler-build's and Artifactory's layout);
 * - `POST /<name>/` (or `/<name>/upload`, quetz's `/<name>/api/channels/<channel>/files/`) as `multipart/form-data`
 *   with one or more parts named `files` or `file`; the subdir comes from each package's `info/index.json`.
 * Each upload is spooled to disk while md5/sha256/size are computed, read (`info/index.json`, `about.json`,
 * `run_exports.json`; the whole archive is walked) in the pool when big, checked (file name = `<name>-<version>-<build>`,
 * subdir = the package's), then the file, its info row, the subdir's repodata.json and every derived variant, and
 * channeldata.json are written in ONE `artifacts.commit`. The same file name with the same bytes is a no-op (200); with
 * other bytes 409.
 *
 * Deletion (delete permission): `DELETE /<name>/<subdir>/<file>` removes one package file; retention removes every file
 * of one version (`removeVersion`). The info rows go first, then the repodata of every subdir concerned (with its
 * variants) and channeldata.json are written in ONE commit, the package files last; audited as `conda.delete` (HTTP)
 * or by the retention job. 200 `{"ok":true,"removed":[path]}`, 404 when the file is not there.
 *
 * Artifact paths: `<subdir>/<file>` (packages), `<subdir>/repodata.json` + the derived files of service.ts,
 * `channeldata.json`, `info/<subdir>/<file>` (JSON {@link ChannelFileInfo}: the record, about, run_exports).
 *
 * Several processes may share the data directory: writes to one subdir are serialised per process, and after its
 * commit each write compares the subdir's repodata with the `info/` rows and rewrites it until it lists exactly them.
 */
import { rm } from "node:fs/promises";
import { KeyedLock, spoolBody, type ArtifactEntry, type PluginContext, type Principal } from "../../core/plugin.ts";
import { SUBDIR, parsePackageFile, type PackageFile } from "./paths.ts";
import { parseRepodata, type ChannelFileInfo, type FileDigests } from "./repodata.ts";
import { recordOf } from "./package.ts";
import {
  CONTENT_TYPE,
  DEFAULT_MAX_UPLOAD_BYTES,
  Variants,
  condaErrors,
  derivedPaths,
  freshEntry,
  relativePath,
  runTask,
  usable,
  uploadTarget,
  deleteTarget,
  serveStoredChannel,
  type CommitFile,
  type CondaRepoConfig,
  type CondaService,
} from "./service.ts";

/** How many times an upload rewrites a subdir's repodata that another process's write left incomplete. */
const MAX_RECONCILE = 20;

const decoder = new TextDecoder();
const infoPrefix = (subdir: string) => `info/${subdir}/`;

/** A package spooled to disk with its digests. */
interface Spooled {
  path: string;
  size: number;
  md5: string;
  sha256: string;
}

/** The outcome of one publish. */
type Published = { identical: boolean; path: string; sha256: string; size: number; subdir: string };

/**
 * Creates the service of one hosted conda repository (file header).
 */
export function createCondaHosted(ctx: PluginContext<CondaRepoConfig>): CondaService {
  const maxUpload = ctx.config.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const variants = new Variants(ctx, true);
  const locks = new KeyedLock();

  /** Streams `body` into a spool file with md5/sha256 (core `spoolBody`); refuses more than `maxUpload` bytes. */
  async function spool(body: ReadableStream<Uint8Array> | null, declared: number | undefined): Promise<Spooled> {
    const { path, size, digests } = await spoolBody(ctx.storage, body, {
      maxBytes: maxUpload,
      tooLarge: () => condaErrors.tooLarge(maxUpload),
      truncated: (got, want) => condaErrors.badRequest(`body has ${got} bytes, Content-Length said ${want}`),
      algorithms: ["md5", "sha256"],
      tag: "conda-upload",
      declaredBytes: declared,
    });
    return { path, size, md5: digests.md5, sha256: digests.sha256 };
  }

  /** The stored repodata.json of a subdir, read from the database (undefined when none yet). */
  async function currentRepodata(subdir: string): Promise<Uint8Array | undefined> {
    const e = await freshEntry(ctx, derivedPaths("", subdir).snapshot);
    return e ? ctx.artifacts.read(e) : undefined;
  }

  /** Commit entries of a subdir's new repodata.json (with `add`, without the files named in `remove`) and every variant derived from it. */
  async function subdirFiles(subdir: string, add: { filename: string; record: ChannelFileInfo["record"] }[], remove: string[] = []): Promise<CommitFile[]> {
    const cur = await currentRepodata(subdir);
    const body = (await runTask(ctx, { op: "add", current: cur, subdir, add, remove }, cur?.byteLength ?? 0)).body!;
    const digest = "sha256:" + new Bun.CryptoHasher("sha256").update(body).digest("hex");
    const d = derivedPaths("", subdir);
    return [{ path: d.snapshot, body, opts: { contentType: CONTENT_TYPE.json, kind: "metadata" } }, ...(await variants.files(body, digest, "", subdir))];
  }

  /** channeldata.json with the entries of `names` recomputed from every info row of those names (all subdirs); a name without rows is dropped. */
  async function channeldataFile(names: Set<string>, extraSubdir: string, extra: ChannelFileInfo[] = []): Promise<CommitFile> {
    const cur = await freshEntry(ctx, "channeldata.json");
    const curBytes = cur ? await ctx.artifacts.read(cur) : undefined;
    const subdirs = new Set<string>([extraSubdir]);
    if (curBytes) for (const s of (JSON.parse(decoder.decode(curBytes)) as { subdirs?: string[] }).subdirs ?? []) subdirs.add(s);
    const files: ChannelFileInfo[] = [...extra];
    const seen = new Set(extra.map((f) => `${f.subdir}/${f.record.name}-${f.record.version}-${f.record.build}`));
    for (const s of subdirs)
      for (const name of names)
        for (const row of await ctx.artifacts.list(`${infoPrefix(s)}${name}-`)) {
          if (!usable(row) || parsePackageFile(row.path.slice(infoPrefix(s).length))?.name !== name) continue;
          const f = JSON.parse(decoder.decode(await ctx.artifacts.read(row))) as ChannelFileInfo;
          if (!seen.has(`${f.subdir}/${f.record.name}-${f.record.version}-${f.record.build}`)) files.push(f);
        }
    const body = (await runTask(ctx, { op: "channeldata", current: curBytes, files, subdirs: [...subdirs], recomputed: [...names] }, curBytes?.byteLength ?? 0)).body!;
    return { path: "channeldata.json", body, opts: { contentType: CONTENT_TYPE.json, kind: "metadata" } };
  }

  /**
   * Rewrites the subdir's repodata until it lists exactly the `info/` rows of the subdir (file header): files uploaded
   * by another process are added, files whose info row a deletion removed are dropped.
   */
  async function reconcile(subdir: string): Promise<void> {
    const prefix = infoPrefix(subdir);
    for (let i = 0; i < MAX_RECONCILE; i++) {
      const rows = (await ctx.artifacts.list(prefix)).filter((r) => usable(r));
      const cur = await currentRepodata(subdir);
      const doc = cur ? parseRepodata(cur) : {};
      const listed = (fn: string) => (fn.endsWith(".conda") ? fn in (doc["packages.conda"] ?? {}) : fn in (doc.packages ?? {}));
      const missing = rows.filter((r) => !listed(r.path.slice(prefix.length)));
      const have = new Set(rows.map((r) => r.path.slice(prefix.length)));
      const gone = [...Object.keys(doc.packages ?? {}), ...Object.keys(doc["packages.conda"] ?? {})].filter((fn) => !have.has(fn));
      if (missing.length === 0 && gone.length === 0) return;
      const infos = await Promise.all(missing.map(async (r) => JSON.parse(decoder.decode(await ctx.artifacts.read(r))) as ChannelFileInfo));
      const files = await subdirFiles(
        subdir,
        infos.map((f, k) => ({ filename: missing[k].path.slice(prefix.length), record: f.record })),
        gone,
      );
      const names = new Set([...infos.map((f) => f.record.name), ...gone.map((fn) => parsePackageFile(fn)?.name).filter((n): n is string => n !== undefined)]);
      files.push(await channeldataFile(names, subdir));
      await ctx.artifacts.commit(files);
    }
    ctx.log.warn("subdir repodata still differs from the uploaded files after repeated rewrites (concurrent writes from other processes?)", { subdir });
  }

  /**
   * Checks and publishes one spooled package (one commit). `target` is what the URL named (PUT), if anything.
   * @throws VaultError 400 CONDA_INVALID_PACKAGE, 409 CONDA_FILE_EXISTS
   */
  async function publish(s: Spooled, filename: string, target: { subdir?: string }): Promise<Published> {
    const file = parsePackageFile(filename);
    if (!file) throw condaErrors.badPackage(filename, "not a conda package file name (<name>-<version>-<build>.conda or .tar.bz2, CEP-26)");
    if (target.subdir !== undefined) {
      // a retry of the same upload answers at once; other bytes under a taken name are refused before any reading
      const existing = await freshEntry(ctx, `${target.subdir}/${filename}`);
      if (existing?.blobDigest === `sha256:${s.sha256}`) return { identical: true, path: existing.path, sha256: s.sha256, size: s.size, subdir: target.subdir };
      if (existing) throw condaErrors.exists(existing.path, existing.blobDigest!.slice(7));
    }
    const out = await runTask(ctx, { op: "inspect", path: s.path, format: file.format }, s.size);
    if (out.problem) throw condaErrors.badPackage(filename, out.problem);
    const info = out.inspect!;
    let record;
    try {
      record = recordOf(info.index, { md5: s.md5, sha256: s.sha256, size: s.size });
    } catch (e) {
      throw condaErrors.badPackage(filename, (e as Error).message);
    }
    const expected = `${record.name}-${record.version}-${record.build}`;
    if (`${file.name}-${file.version}-${file.build}` !== expected)
      throw condaErrors.badPackage(filename, `the file name does not match info/index.json (${expected}.${file.format})`);
    const subdir = typeof record.subdir === "string" ? record.subdir : record.noarch ? "noarch" : undefined;
    if (!subdir || !SUBDIR.test(subdir)) throw condaErrors.badPackage(filename, `info/index.json names no valid subdir (${JSON.stringify(record.subdir)})`);
    if (target.subdir !== undefined && target.subdir !== subdir) throw condaErrors.badPackage(filename, `the package is for subdir ${subdir}, not ${target.subdir}`);
    const path = `${subdir}/${filename}`;
    const cf: ChannelFileInfo = { subdir, record };
    if (info.about) cf.about = info.about;
    if (info.runExports !== undefined) cf.run_exports = info.runExports;
    return locks.run(`subdir:${subdir}`, async () => {
      const existing = await freshEntry(ctx, path);
      if (existing) {
        if (existing.blobDigest === `sha256:${s.sha256}`) return { identical: true, path, sha256: s.sha256, size: s.size, subdir };
        throw condaErrors.exists(path, existing.blobDigest!.slice(7));
      }
      const files: CommitFile[] = [
        { path, body: Bun.file(s.path).stream(), opts: { contentType: CONTENT_TYPE.package, expect: { sha256: s.sha256, sizeBytes: s.size } } },
        { path: infoPrefix(subdir) + filename, body: JSON.stringify(cf), opts: { contentType: CONTENT_TYPE.json, kind: "metadata" } },
        ...(await subdirFiles(subdir, [{ filename, record }])),
        await channeldataFile(new Set([record.name]), subdir, [cf]),
      ];
      await ctx.artifacts.commit(files);
      await reconcile(subdir);
      return { identical: false, path, sha256: s.sha256, size: s.size, subdir };
    });
  }

  /** Spools, publishes and audits one package; the spool file is always removed. */
  async function take(req: Request, principal: Principal, body: ReadableStream<Uint8Array> | null, declared: number | undefined, filename: string, target: { subdir?: string }, via?: string): Promise<Published> {
    const s = await spool(body, declared);
    try {
      const r = await publish(s, filename, target);
      const detail: Record<string, unknown> = { sha256: r.sha256, sizeBytes: r.size };
      if (r.identical) detail.identical = true;
      if (via) detail.via = via;
      ctx.auth.audit({ principal, action: "conda.upload", path: r.path, detail, req });
      return r;
    } finally {
      await rm(s.path, { force: true });
    }
  }

  async function upload(req: Request, principal: Principal, target: { subdir?: string; filename?: string }, via?: string): Promise<Response> {
    const cl = req.headers.get("content-length");
    const declared = cl !== null && /^\d+$/.test(cl) ? Number(cl) : undefined;
    const results: Published[] = [];
    if (target.filename !== undefined) {
      results.push(await take(req, principal, req.body, declared, target.filename, target, via));
    } else {
      const ct = req.headers.get("content-type") ?? "";
      if (!/^multipart\/form-data/i.test(ct)) throw condaErrors.badRequest("POST takes multipart/form-data with the packages in parts named files (or file); or PUT /<name>/<subdir>/<file> with the package as the body");
      if (declared !== undefined && declared > maxUpload) throw condaErrors.tooLarge(maxUpload);
      let form: FormData;
      try {
        form = await req.formData();
      } catch (e) {
        throw condaErrors.badRequest(`malformed multipart body: ${(e as Error).message}`);
      }
      const parts = [...form.getAll("files"), ...form.getAll("file")].filter((p): p is File => typeof p !== "string");
      if (parts.length === 0) throw condaErrors.badRequest("no package in the form (parts named files or file)");
      for (const f of parts) results.push(await take(req, principal, f.stream(), f.size, f.name.slice(f.name.lastIndexOf("/") + 1), target, via));
    }
    const status = results.some((r) => !r.identical) ? 201 : 200;
    return Response.json(
      { ok: true, files: results.map((r) => ({ path: r.path, subdir: r.subdir, sha256: r.sha256, size: r.size, ...(r.identical ? { identical: true } : {}) })) },
      { status },
    );
  }

  /**
   * Removes package files (DELETE, retention): under the locks of their subdirs (taken in sorted order), the info rows
   * first, then every subdir's repodata.json with its variants and channeldata.json in ONE commit, the package files
   * last — so a crash in between leaves at most a listing of a file that is still there, which the next reconcile
   * drops. Files already gone remove nothing.
   * @returns the rows removed (info rows and package files)
   */
  async function unpublish(targets: { subdir: string; filename: string }[]): Promise<ArtifactEntry[]> {
    const bySubdir = new Map<string, Set<string>>();
    for (const t of targets) bySubdir.set(t.subdir, (bySubdir.get(t.subdir) ?? new Set()).add(t.filename));
    const subdirs = [...bySubdir.keys()].sort();
    const work = async (): Promise<ArtifactEntry[]> => {
      const infos: ArtifactEntry[] = [];
      const packages: ArtifactEntry[] = [];
      for (const [subdir, names] of bySubdir)
        for (const fn of names) {
          const info = await freshEntry(ctx, infoPrefix(subdir) + fn);
          if (info) infos.push(info);
          const pkg = await freshEntry(ctx, `${subdir}/${fn}`);
          if (pkg) packages.push(pkg);
        }
      if (infos.length === 0 && packages.length === 0) return [];
      for (const e of infos) await ctx.artifacts.delete(e.path);
      const files: CommitFile[] = [];
      for (const subdir of subdirs) files.push(...(await subdirFiles(subdir, [], [...bySubdir.get(subdir)!])));
      const names = new Set(targets.map((t) => parsePackageFile(t.filename)?.name).filter((n): n is string => n !== undefined));
      files.push(await channeldataFile(names, subdirs[0]));
      await ctx.artifacts.commit(files);
      for (const e of packages) await ctx.artifacts.delete(e.path);
      for (const subdir of subdirs) await reconcile(subdir);
      return [...infos, ...packages];
    };
    const locked = (i: number): Promise<ArtifactEntry[]> => (i < subdirs.length ? locks.run(`subdir:${subdirs[i]}`, () => locked(i + 1)) : work());
    return locked(0);
  }

  /** `DELETE /<name>/<subdir>/<file>` (delete permission checked): removes one package file ({@link unpublish}), audited as `conda.delete`. */
  async function remove(req: Request, principal: Principal, target: { subdir: string; filename: string }, via?: string): Promise<Response> {
    const removed = await unpublish([target]);
    const path = `${target.subdir}/${target.filename}`;
    const pkg = removed.find((e) => e.path === path);
    if (removed.length === 0) throw condaErrors.notFound(path);
    ctx.auth.audit({ principal, action: "conda.delete", path, detail: { sha256: pkg?.blobDigest?.slice(7), sizeBytes: pkg?.sizeBytes, ...(via ? { via } : {}) }, req });
    return Response.json({ ok: true, removed: [path] });
  }

  /**
   * Retention (the plugin's `deleteVersion`): removes every package file of `name` at exactly `version` (each build,
   * both formats, every subdir the channel has) in one {@link unpublish}. No audit record (the retention job writes it).
   * @returns the rows removed (package files and their info rows) and their total size, bytes
   */
  async function removeVersion(name: string, version: string): Promise<{ paths: string[]; bytes: number }> {
    const cd = await freshEntry(ctx, "channeldata.json");
    const subdirs = cd ? ((JSON.parse(decoder.decode(await ctx.artifacts.read(cd))) as { subdirs?: unknown[] }).subdirs ?? []) : [];
    const targets = new Map<string, { subdir: string; filename: string }>();
    for (const subdir of subdirs) {
      if (typeof subdir !== "string" || !SUBDIR.test(subdir)) continue;
      for (const row of [...(await ctx.artifacts.list(`${infoPrefix(subdir)}${name}-`)), ...(await ctx.artifacts.list(`${subdir}/${name}-`))]) {
        const filename = row.path.slice(row.path.lastIndexOf("/") + 1);
        const f = parsePackageFile(filename);
        if (f?.name === name && f.version === version) targets.set(`${subdir}/${filename}`, { subdir, filename });
      }
    }
    if (targets.size === 0) return { paths: [], bytes: 0 };
    const removed = await unpublish([...targets.values()]);
    return { paths: removed.map((e) => e.path), bytes: removed.reduce((n, e) => n + e.sizeBytes, 0) };
  }

  async function snapshot(prefix: string, subdir: string): Promise<ArtifactEntry | null> {
    if (prefix !== "") return null;
    return usable(await ctx.artifacts.get(derivedPaths("", subdir).snapshot));
  }

  async function lookup(prefix: string, subdir: string, filename: string, signal?: AbortSignal): Promise<FileDigests | null> {
    const snap = await snapshot(prefix, subdir);
    return snap ? variants.lookup(snap, prefix, subdir, filename, signal) : null;
  }

  async function servePackage(req: Request, prefix: string, subdir: string, file: PackageFile): Promise<Response> {
    const e = prefix === "" ? usable(await ctx.artifacts.get(`${subdir}/${file.filename}`)) : null;
    if (!e) throw condaErrors.notFound(`${prefix}${subdir}/${file.filename}`);
    return ctx.artifacts.respond(req, e, { "content-type": CONTENT_TYPE.package });
  }

  const svc: CondaService = {
    ctx,
    async handle(req, mount) {
      const { rel } = relativePath(req, mount);
      if (req.method === "PUT" || req.method === "POST") {
        const target = uploadTarget(req, rel);
        return upload(req, await ctx.auth.require(req, "write"), target);
      }
      if (req.method === "DELETE") return remove(req, await ctx.auth.require(req, "delete"), deleteTarget(rel));
      return serveStoredChannel(req, rel, svc, variants, true);
    },
    snapshot,
    lookup,
    servePackage,
    async channeldata(prefix) {
      return prefix === "" ? usable(await ctx.artifacts.get("channeldata.json")) : null;
    },
    upload,
    remove,
    removeVersion,
  };
  return svc;
}

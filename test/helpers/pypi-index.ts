/**
 * startPypiIndex: a real upstream PEP 503 index on loopback built from real wheels (shared fixtures + Debian's
 * /usr/share/python-wheels), with a separate "files host", for pypi plugin tests.
 *
 * Layout written to a temp directory and served by two `startUpstream` servers on 127.0.0.1:
 * ```
 * <root>/simple/index.html                         root page (index server)
 * <root>/simple/<project>/index.html               project pages (index server)
 * <root>/packages/<aa>/<bb>/<sha256>/<filename>    files, PyPI-like paths (served by both servers)
 * <root>/packages/…/<filename>.metadata            PEP 658 metadata of the `wheel` wheel
 * /pypi/<project>/json, /pypi/<project>/<version>/json   Warehouse-style JSON API (index server, generated)
 * ```
 * Project `example` links its files relatively (`../../packages/…`, resolved against the index server); the other
 * projects link absolutely to the files server. Extra synthetic wheels (built with fflate) test pip's filters:
 * `example2-2.0.0` is yanked (PEP 592) and `example-99.0` has `data-requires-python="<3"`; a correct vault keeps
 * both attributes, so pip must still pick example2 1.0.0 and example 21.12.
 */
import { readdirSync, existsSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { unzipSync, zipSync, strToU8 } from "fflate";
import { startUpstream, type TestUpstream } from "./upstream.ts";
import { tmpDataDir } from "./tmp.ts";

/** Wheels of the shared fixtures (`../shared/fixtures/pypi` beside the repository). */
export const FIXTURE_WHEEL_DIR = join(import.meta.dir, "..", "..", "..", "shared", "fixtures", "pypi");
/** Debian's wheel directory (python3-pip-whl, python3-setuptools-whl), used when present. */
export const DEBIAN_WHEEL_DIR = "/usr/share/python-wheels";

/** One file listed on the upstream index. */
export interface IndexFile {
  filename: string;
  project: string;
  version: string;
  /** lowercase hex */
  sha256: string;
  sizeBytes: number;
  /** URL path on the upstream servers (`/packages/…/<filename>`). */
  path: string;
  /** Absolute URL the project page links to. */
  url: string;
  yanked?: string | true;
  requiresPython?: string;
  /** sha256 of `<file>.metadata` when served and advertised (PEP 658). */
  metadataSha256?: string;
  /** false for the synthetic wheels pip must skip. */
  installable: boolean;
}

/** A running upstream index. */
export interface TestPypiIndex {
  /** Origin of the index server (`http://127.0.0.1:<port>`). */
  url: string;
  /** The simple index URL (`<url>/simple/`). */
  indexUrl: string;
  /** The separate files host. */
  files: TestUpstream;
  /** The index server (project pages and the relatively linked files). */
  index: TestUpstream;
  /** Every listed file, by filename. */
  byName: Map<string, IndexFile>;
  /** Project names (normalized) → their files. */
  projects: Map<string, IndexFile[]>;
  /** Both servers' requests to paths under `/packages/` (file and .metadata downloads). */
  fileRequests(): { server: "index" | "files"; method: string; path: string }[];
  /** Directory holding the generated index. */
  root: string;
  stop(): Promise<void>;
}

/** Options of {@link startPypiIndex}. */
export interface PypiIndexOptions {
  /**
   * Also answer PEP 691 JSON (api-version 1.1 with versions, sizes and upload-time) when the Accept header prefers
   * `application/vnd.pypi.simple.v1+json`. Default false (HTML only, like a static directory index).
   */
  json?: boolean;
  /** Extra wheel directories to include. */
  wheelDirs?: string[];
}

function sha256Hex(b: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(b).digest("hex");
}

function b64urlNoPad(hex: string): string {
  return Buffer.from(hex, "hex").toString("base64").replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** A minimal valid pure-Python wheel (module, METADATA, WHEEL, RECORD with sha256 lines). */
export function buildWheel(dist: string, version: string, requiresPython?: string): Uint8Array {
  const di = `${dist}-${version}.dist-info`;
  const files: Record<string, Uint8Array> = {
    [`${dist}/__init__.py`]: strToU8(`VERSION = "${version}"\n`),
    [`${di}/METADATA`]: strToU8(`Metadata-Version: 2.1\nName: ${dist}\nVersion: ${version}\n${requiresPython ? `Requires-Python: ${requiresPython}\n` : ""}`),
    [`${di}/WHEEL`]: strToU8("Wheel-Version: 1.0\nGenerator: vault-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
  };
  const record = Object.entries(files)
    .map(([p, b]) => `${p},sha256=${b64urlNoPad(sha256Hex(b))},${b.byteLength}`)
    .concat(`${di}/RECORD,,`)
    .join("\n");
  files[`${di}/RECORD`] = strToU8(record + "\n");
  return zipSync(files, { level: 6, mtime: new Date("2020-01-01T00:00:00Z") });
}

/** `name-version-…whl` → normalized project and version. */
function parseWheelName(filename: string): { project: string; version: string } {
  const [dist, version] = filename.split("-");
  return { project: dist.toLowerCase().replace(/[-_.]+/g, "-"), version };
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/**
 * Builds the index from the real wheels and starts the index and files servers (127.0.0.1, port 0).
 * @throws Error when no fixture wheels are found
 */
export async function startPypiIndex(o: PypiIndexOptions = {}): Promise<TestPypiIndex> {
  const root = await tmpDataDir("pypi-index-");
  const wheels = new Map<string, Uint8Array>();
  for (const dir of [FIXTURE_WHEEL_DIR, DEBIAN_WHEEL_DIR, ...(o.wheelDirs ?? [])]) {
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir).sort()) if (f.endsWith(".whl") && !wheels.has(f)) wheels.set(f, new Uint8Array(readFileSync(join(dir, f))));
  }
  if (wheels.size === 0) throw new Error(`no wheels in ${FIXTURE_WHEEL_DIR}`);
  const synthetic = new Map<string, { bytes: Uint8Array; yanked?: string; requiresPython?: string }>([
    ["example2-2.0.0-py3-none-any.whl", { bytes: buildWheel("example2", "2.0.0"), yanked: "broken build, use 1.0.0" }],
    ["example-99.0-py3-none-any.whl", { bytes: buildWheel("example", "99.0", "<3"), requiresPython: "<3" }],
  ]);

  // Servers first (their ports go into absolute links); pages are generated into `root` before any request.
  const pages = new Map<string, { html: string; json: string }>();
  /** Warehouse-style JSON API documents (`/pypi/<project>/json`), by project. */
  const jsonApi = new Map<string, Record<string, unknown>>();
  const filesSrv = await startUpstream({ root });
  const indexSrv = await startUpstream({
    root,
    handler(req) {
      const p = new URL(req.url).pathname;
      const api = /^\/pypi\/([^/]+)\/(?:([^/]+)\/)?json$/.exec(p);
      if (api) {
        const doc = jsonApi.get(api[1]);
        if (!doc) return new Response("404 Not Found\n", { status: 404, headers: { "content-type": "text/plain" } });
        if (api[2] === undefined) return Response.json(doc);
        const files = (doc.releases as Record<string, unknown[]>)[api[2]];
        if (!files) return new Response("404 Not Found\n", { status: 404, headers: { "content-type": "text/plain" } });
        return Response.json({ info: { ...(doc.info as object), version: api[2] }, urls: files, vulnerabilities: [] });
      }
      if (!p.startsWith("/simple/")) return undefined;
      const page = pages.get(p);
      if (!page) return new Response("404 Not Found\n", { status: 404, headers: { "content-type": "text/plain" } });
      const accept = req.headers.get("accept") ?? "";
      const wantJson = o.json === true && /application\/vnd\.pypi\.simple\.(v1|latest)\+json/.test(accept);
      return wantJson
        ? new Response(page.json, { headers: { "content-type": "application/vnd.pypi.simple.v1+json", vary: "Accept" } })
        : new Response(page.html, { headers: { "content-type": "text/html; charset=utf-8", vary: "Accept" } });
    },
  });

  const byName = new Map<string, IndexFile>();
  const projects = new Map<string, IndexFile[]>();
  const all: [string, { bytes: Uint8Array; yanked?: string; requiresPython?: string; installable: boolean }][] = [
    ...[...wheels].map(([f, bytes]) => [f, { bytes, installable: true }] as [string, { bytes: Uint8Array; installable: boolean }]),
    ...[...synthetic].map(([f, s]) => [f, { ...s, installable: false }] as [string, { bytes: Uint8Array; yanked?: string; requiresPython?: string; installable: boolean }]),
  ];
  for (const [filename, w] of all) {
    const { project, version } = parseWheelName(filename);
    const sha = sha256Hex(w.bytes);
    const path = `/packages/${sha.slice(0, 2)}/${sha.slice(2, 4)}/${sha.slice(4)}/${filename}`;
    await mkdir(join(root, path, ".."), { recursive: true });
    await writeFile(join(root, path), w.bytes);
    const relative = project === "example";
    const f: IndexFile = {
      filename,
      project,
      version,
      sha256: sha,
      sizeBytes: w.bytes.byteLength,
      path,
      url: (relative ? indexSrv.url : filesSrv.url) + path,
      installable: w.installable,
    };
    if (w.yanked) f.yanked = w.yanked;
    if (w.requiresPython) f.requiresPython = w.requiresPython;
    else if (["pip", "setuptools", "wheel"].includes(project)) f.requiresPython = ">=3.7";
    if (project === "wheel") {
      const entries = unzipSync(w.bytes, { filter: (e) => e.name === `wheel-${version}.dist-info/METADATA` });
      const meta = entries[`wheel-${version}.dist-info/METADATA`];
      if (meta) {
        await writeFile(join(root, path + ".metadata"), meta);
        f.metadataSha256 = sha256Hex(meta);
      }
    }
    byName.set(filename, f);
    if (!projects.has(project)) projects.set(project, []);
    projects.get(project)!.push(f);
  }

  for (const [project, files] of projects) {
    const links = files.map((f) => {
      const href = project === "example" ? `../..${f.path}` : f.url;
      let a = `<a href="${escapeHtml(href)}#sha256=${f.sha256}"`;
      if (f.requiresPython) a += ` data-requires-python="${escapeHtml(f.requiresPython)}"`;
      if (f.metadataSha256) a += ` data-core-metadata="sha256=${f.metadataSha256}" data-dist-info-metadata="sha256=${f.metadataSha256}"`;
      if (f.yanked !== undefined) a += ` data-yanked="${f.yanked === true ? "" : escapeHtml(f.yanked)}"`;
      return `    ${a}>${escapeHtml(f.filename)}</a><br/>`;
    });
    const html = `<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" content="1.0">\n    <title>Links for ${project}</title>\n  </head>\n  <body>\n    <h1>Links for ${project}</h1>\n${links.join("\n")}\n  </body>\n</html>\n`;
    const json = JSON.stringify({
      meta: { "api-version": "1.1" },
      name: project,
      versions: [...new Set(files.map((f) => f.version))],
      files: files.map((f) => ({
        filename: f.filename,
        url: project === "example" ? `../..${f.path}` : f.url,
        hashes: { sha256: f.sha256 },
        ...(f.requiresPython ? { "requires-python": f.requiresPython } : {}),
        ...(f.metadataSha256 ? { "core-metadata": { sha256: f.metadataSha256 } } : {}),
        size: f.sizeBytes,
        "upload-time": "2024-01-02T03:04:05.000000Z",
        yanked: f.yanked ?? false,
      })),
    });
    pages.set(`/simple/${project}/`, { html, json });
    const fileObj = (f: IndexFile) => ({
      filename: f.filename,
      url: f.url,
      digests: { sha256: f.sha256 },
      size: f.sizeBytes,
      packagetype: "bdist_wheel",
      python_version: "py3",
      requires_python: f.requiresPython ?? null,
      yanked: f.yanked !== undefined,
      yanked_reason: typeof f.yanked === "string" ? f.yanked : null,
    });
    const installable = files.filter((f) => f.installable);
    const latest = installable[installable.length - 1] ?? files[0];
    const releases: Record<string, unknown[]> = {};
    for (const f of files) (releases[f.version] ??= []).push(fileObj(f));
    jsonApi.set(project, {
      info: { name: project, version: latest.version, summary: `${project} test package`, requires_python: latest.requiresPython ?? null },
      last_serial: 1,
      releases,
      urls: files.filter((f) => f.version === latest.version).map(fileObj),
      vulnerabilities: [],
    });
    await mkdir(join(root, "simple", project), { recursive: true });
    await writeFile(join(root, "simple", project, "index.html"), html);
  }
  const names = [...projects.keys()].sort();
  const rootHtml = `<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0"><title>Simple index</title></head><body>\n${names.map((n) => `<a href="/simple/${n}/">${n}</a><br/>`).join("\n")}\n</body></html>\n`;
  pages.set("/simple/", { html: rootHtml, json: JSON.stringify({ meta: { "api-version": "1.0" }, projects: names.map((name) => ({ name })) }) });
  await writeFile(join(root, "simple", "index.html"), rootHtml);

  return {
    url: indexSrv.url,
    indexUrl: `${indexSrv.url}/simple/`,
    files: filesSrv,
    index: indexSrv,
    byName,
    projects,
    root,
    fileRequests() {
      const out: { server: "index" | "files"; method: string; path: string }[] = [];
      for (const r of indexSrv.requests) if (r.path.startsWith("/packages/")) out.push({ server: "index", method: r.method, path: r.path });
      for (const r of filesSrv.requests) if (r.path.startsWith("/packages/")) out.push({ server: "files", method: r.method, path: r.path });
      return out;
    },
    async stop() {
      await Promise.all([indexSrv.stop(), filesSrv.stop()]);
    },
  };
}

/** The file name of a URL path (`/packages/…/x.whl` → `x.whl`). */
export function fileNameOf(path: string): string {
  return basename(path);
}

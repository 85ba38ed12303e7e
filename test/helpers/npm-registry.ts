/**
 * A loopback npm registry for tests, built from the real fixtures in ../shared/fixtures/npm: packuments
 * (`packuments/<name>.full.json` / `.abbrev.json`, chosen by `Accept`, else `live/<name>.json`, with `https://npm.upstream.invalid` rewritten to this
 * server's URL) and tarballs (`<name>/-/<file>.tgz`, also scoped). Records every request; `tamper(file)` makes a
 * tarball's bytes differ from its integrity.
 */
import { createHash } from "node:crypto";
import { join, resolve } from "node:path";
import { existsSync } from "node:fs";

/** Fixture root (`<shared>/fixtures/npm`). */
export const NPM_FIXTURES = resolve(import.meta.dir, "..", "..", "..", "shared", "fixtures", "npm");
/** The tarball file names `npm install chalk@4.1.0` fetches (its whole dependency tree), sorted. */
export const CHALK_TREE = ["ansi-styles-4.3.0.tgz", "chalk-4.1.0.tgz", "color-convert-2.0.1.tgz", "color-name-1.1.4.tgz", "has-flag-4.0.0.tgz", "supports-color-7.2.0.tgz"];

/** The placeholder registry origin in the fixtures. */
const PLACEHOLDER = "https://npm.upstream.invalid";

/** One recorded request to the test registry. */
export interface RegistryHit {
  method: string;
  /** Raw path (still percent-encoded). */
  path: string;
  accept: string | null;
}

/** A running test registry. */
export interface TestNpmRegistry {
  /** `http://127.0.0.1:<port>/` (with trailing slash). */
  url: string;
  hits: RegistryHit[];
  /** GET requests whose path ends in `.tgz`, by raw path. */
  tarballGets(): string[];
  /** Serves `file` (a tarball file name) with one byte changed from now on. */
  tamper(file: string): void;
  /**
   * Makes the next responses for `file` send its first half at once and the rest only after the returned `release()`
   * is called (a slow upstream: lets a test see the vault's streamed answer start before the download ends).
   */
  hold(file: string): () => void;
  stop(): Promise<void>;
}

/** Starts the registry on 127.0.0.1, port 0. */
export function startNpmRegistry(): TestNpmRegistry {
  const hits: RegistryHit[] = [];
  const tampered = new Set<string>();
  const held = new Map<string, Promise<void>>();
  let base = "";
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const u = new URL(req.url);
      const raw = u.pathname;
      hits.push({ method: req.method, path: raw, accept: req.headers.get("accept") });
      const path = decodeURIComponent(raw.slice(1));
      if (path === "-/ping") return Response.json({});
      const t = /^((?:@[^/]+\/)?[^/@]+)\/-\/([^/]+\.tgz)$/.exec(path);
      if (t) {
        const scoped = t[1].startsWith("@") ? t[1].slice(1).split("/")[0] + "-" : "";
        const f = join(NPM_FIXTURES, "tarballs", scoped + t[2]);
        if (!existsSync(f)) return Response.json({ error: "Not found" }, { status: 404 });
        const bytes = await Bun.file(f).bytes();
        if (tampered.has(t[2])) bytes[bytes.length - 1] ^= 0xff;
        const gate = held.get(t[2]);
        if (gate) {
          const half = bytes.byteLength >> 1;
          const body = new ReadableStream<Uint8Array>({
            async start(ctl) {
              ctl.enqueue(bytes.subarray(0, half));
              await gate;
              ctl.enqueue(bytes.subarray(half));
              ctl.close();
            },
          });
          return new Response(body, { headers: { "content-type": "application/octet-stream" } });
        }
        return new Response(bytes, { headers: { "content-type": "application/octet-stream" } });
      }
      if (!/^(@[a-z0-9._-]+\/)?[a-z0-9._-]+$/.test(path)) return Response.json({ error: "Not found" }, { status: 404 });
      const abbrev = (req.headers.get("accept") ?? "").includes("application/vnd.npm.install-v1+json");
      const stem = path.replace("/", "__");
      let f = join(NPM_FIXTURES, "packuments", `${stem}.${abbrev ? "abbrev" : "full"}.json`);
      // fixtures/npm/live/<stem>.json: recent packuments (one document for both variants)
      if (!existsSync(f)) f = join(NPM_FIXTURES, "live", `${stem}.json`);
      if (!existsSync(f)) return Response.json({ error: "Not found" }, { status: 404 });
      const text = (await Bun.file(f).text()).replaceAll(PLACEHOLDER + "/", base);
      return new Response(text, { headers: { "content-type": abbrev ? "application/vnd.npm.install-v1+json" : "application/json" } });
    },
  });
  base = `http://127.0.0.1:${server.port}/`;
  return {
    url: base,
    hits,
    tarballGets: () => hits.filter((h) => h.method === "GET" && h.path.endsWith(".tgz")).map((h) => h.path),
    tamper: (file) => void tampered.add(file),
    hold: (file) => {
      let release!: () => void;
      held.set(file, new Promise<void>((r) => (release = r)));
      return release;
    },
    stop: async () => {
      await server.stop(true);
    },
  };
}

/**
 * The body `npm publish` sends for `name@version` (specs/npm.md §5): one version whose `dist` carries the tarball's
 * sha512 `integrity` and sha1 `shasum` (override with `o.dist`), extra manifest fields `o.manifest`, and the tarball as
 * the one base64 attachment.
 */
export function npmPublishBody(name: string, version: string, tarball: Uint8Array, o: { dist?: Record<string, unknown>; manifest?: Record<string, unknown> } = {}): string {
  const integrity = "sha512-" + createHash("sha512").update(tarball).digest("base64");
  const shasum = createHash("sha1").update(tarball).digest("hex");
  return JSON.stringify({
    _id: name,
    name,
    "dist-tags": { latest: version },
    versions: { [version]: { name, version, ...o.manifest, dist: { integrity, shasum, tarball: `http://x/${name}/-/${name}-${version}.tgz`, ...o.dist } } },
    _attachments: { [`${name}-${version}.tgz`]: { content_type: "application/octet-stream", data: Buffer.from(tarball).toString("base64"), length: tarball.byteLength } },
  });
}

/**
 * The conda → OCI mirror (specs/conda.md §6; the layout of channel-mirrors/conda-oci-mirror, so its consumers — rattler's
 * `oci://` channels — read what this pushes):
 *
 * - `mirror`: packages of a channel's subdirs (filtered by name patterns) are downloaded, verified against the
 *   channel's repodata (sha256, md5, size), and pushed as OCI artifacts: repository `<registry>/<channel>/<subdir>/<name>`
 *   (`_x` → `zzz_x`), tag `<version>-<build>` (`+` → `__p__`, `!` → `__e__`, `=` → `__eq__`), an empty config, and three
 *   layers — the archive itself (`application/vnd.conda.package.v1` for `.tar.bz2`, `v2` for `.conda`, titled with the
 *   file name, annotated `org.conda.md5`), the `info/` directory as `info.tar.gz` and `info/index.json`. Files already
 *   tagged in the registry are skipped. Then the subdir's repodata.json is pushed to `<channel>/<subdir>/repodata.json`
 *   as tags `latest` and `YYYY.MM.DD.HH.MM` (layers: the JSON and a zstd level-15 copy, both titled `repodata.json`).
 *   The package set comes from `repodata_from_packages.json` when the channel has one (it includes removed files), the
 *   pushed repodata is the channel's patched `repodata.json`. Downloads are kept in the cache directory.
 * - `pull-cache`: `repodata.json:latest` of each subdir, then the newest `<version>-<build>` of each package, into
 *   `<cache>/<channel>/<subdir>/`, verified; packages the repodata lists but the registry does not hold (a mirror of
 *   selected packages) are skipped.
 * - `push-cache`: the package files in `<cache>/<channel>/<subdir>/` that the registry's repodata does not list (all of
 *   them with `pushAll`) are read, pushed, and the registry's repodata is extended with their records and pushed.
 *
 * Progress goes to a stream: a redrawn bar (cli-progress) on a TTY, one line per package otherwise.
 */
import { mkdir, readdir } from "node:fs/promises";
import { join } from "node:path";
import { SingleBar } from "cli-progress";
import { OciClient, type Descriptor, type ImageManifest, OCI_MANIFEST, RegistryError, digestOf } from "./oci-client.ts";
import { parsePackageFile, SUBDIR, type PackageFile } from "../paths.ts";
import { addRecords, parseRepodata, type PackageRecord, type Repodata } from "../repodata.ts";
import { inspectPackage, infoTarGz, recordOf, PackageError } from "../package.ts";
import { compareRecords } from "../version.ts";

/** Media types of the mirror's layers. */
export const MEDIA = {
  config: "application/vnd.unknown.config.v1+json",
  packageV1: "application/vnd.conda.package.v1",
  packageV2: "application/vnd.conda.package.v2",
  infoTarGz: "application/vnd.conda.info.v1.tar+gzip",
  indexJson: "application/vnd.conda.info.index.v1+json",
  repodata: "application/vnd.conda.repodata.v1+json",
  repodataZst: "application/vnd.conda.repodata.v1+json+zst",
} as const;

const TITLE = "org.opencontainers.image.title";

/** The OCI path of a package's repository: `<channel>/<subdir>/<name>`, names starting with `_` get `zzz`. */
export function packageRepoPath(channel: string, subdir: string, name: string): string {
  return `${channel}/${subdir}/${name.startsWith("_") ? "zzz" + name : name}`;
}

/** The tag of `<version>-<build>`: `+` → `__p__`, `!` → `__e__`, `=` → `__eq__`. */
export function packageTag(version: string, build: string): string {
  return `${version}-${build}`.replaceAll("+", "__p__").replaceAll("!", "__e__").replaceAll("=", "__eq__");
}

/** The reverse of {@link packageTag} (same order). */
export function untag(tag: string): string {
  return tag.replaceAll("__p__", "+").replaceAll("__e__", "!").replaceAll("__eq__", "=");
}

/** Where progress and messages go (stderr, or a stand-in in tests). */
export interface Out {
  write(s: string): unknown;
  isTTY?: boolean;
}

/** Options shared by the three commands. */
export interface MirrorOptions {
  /** Channel URL with a trailing slash, e.g. `https://conda.anaconda.org/conda-forge/`. */
  channelUrl: string;
  /** Channel name used in OCI paths and the cache (`conda-forge`). */
  channel: string;
  subdirs: string[];
  /** fnmatch-style name patterns; empty (or `all`) = every package. */
  packages: string[];
  client: OciClient;
  /** Local cache directory; files go to `<cacheDir>/<channel>/<subdir>/`. */
  cacheDir: string;
  dryRun?: boolean;
  /** Packages handled at once (default 4). */
  workers?: number;
  /** push-cache: push every local file, not only those missing from the registry's repodata. */
  pushAll?: boolean;
  out?: Out;
  /** Clock for the timestamp tag (tests). */
  now?: () => Date;
}

/** Outcome counts of a command. */
export interface MirrorSummary {
  pushed: string[];
  skipped: string[];
  pulled: string[];
  failed: { file: string; error: string }[];
  /** Repodata documents pushed (`<channel>/<subdir>/repodata.json:<tag>`). */
  repodata: string[];
}

function matcher(patterns: string[]): (name: string) => boolean {
  const ps = patterns.filter((p) => p !== "all");
  if (ps.length === 0) return () => true;
  const globs = ps.map((p) => new Bun.Glob(p));
  return (name) => globs.some((g) => g.match(name));
}

/** `YYYY.MM.DD.HH.MM` (UTC). */
export function timestampTag(d: Date): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getUTCFullYear()}.${p(d.getUTCMonth() + 1)}.${p(d.getUTCDate())}.${p(d.getUTCHours())}.${p(d.getUTCMinutes())}`;
}

/** Runs `fn` over `items` with at most `n` at once. */
async function pool<T>(items: T[], n: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(Math.max(1, n), items.length) }, async () => {
      while (next < items.length) await fn(items[next++]);
    }),
  );
}

/** A progress display: a bar on a TTY, lines otherwise. */
function progress(out: Out, title: string, total: number) {
  const bar = out.isTTY
    ? new SingleBar({ stream: out as NodeJS.WritableStream, format: `${title} [{bar}] {value}/{total} {file}`, barsize: 24, hideCursor: true, clearOnComplete: false })
    : undefined;
  bar?.start(total, 0, { file: "" });
  let done = 0;
  return {
    tick(file: string, what: string) {
      done++;
      if (bar) bar.update(done, { file });
      else out.write(`[${done}/${total}] ${what} ${file}\n`);
    },
    stop() {
      bar?.stop();
    },
  };
}

async function fetchJson(url: string): Promise<Repodata | null> {
  const res = await fetch(url, { signal: AbortSignal.timeout(300_000) });
  if (res.status === 404) {
    await res.body?.cancel();
    return null;
  }
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
  return parseRepodata(new Uint8Array(await res.arrayBuffer()));
}

function entries(doc: Repodata): [string, PackageRecord][] {
  return [...Object.entries(doc.packages ?? {}), ...Object.entries(doc["packages.conda"] ?? {})];
}

/** Builds and pushes one package's artifact (see the file header). @returns the pushed tag */
async function pushPackage(o: MirrorOptions, subdir: string, file: PackageFile, bytes: Uint8Array, md5: string, path: string): Promise<string> {
  const info = await inspectPackage(path, file.format, true);
  const repo = o.client.repo(packageRepoPath(o.channel, subdir, file.name));
  const tag = packageTag(file.version, file.build);
  const created = (o.now ?? (() => new Date()))().toISOString();
  const stem = `${file.name}-${file.version}-${file.build}`;
  const indexJson = new TextEncoder().encode(JSON.stringify(info.index));
  const infoTar = await infoTarGz(info.infoFiles ?? []);
  const config = await o.client.pushBlob(repo, new Uint8Array(0));
  const layers: Descriptor[] = [];
  const add = async (b: Uint8Array, mediaType: string, annotations: Record<string, string>) => {
    const d = await o.client.pushBlob(repo, b);
    layers.push({ mediaType, digest: d.digest, size: d.size, annotations });
  };
  await add(bytes, file.format === "conda" ? MEDIA.packageV2 : MEDIA.packageV1, { [TITLE]: file.filename, "org.conda.md5": md5, creationTime: created });
  await add(infoTar, MEDIA.infoTarGz, { [TITLE]: `${stem}/info.tar.gz`, creationTime: created });
  await add(indexJson, MEDIA.indexJson, { [TITLE]: `${stem}/info/index.json`, creationTime: created });
  const manifest: ImageManifest = { schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: MEDIA.config, digest: config.digest, size: 0 }, layers };
  await o.client.pushManifest(repo, tag, manifest);
  return `${repo}:${tag}`;
}

/** Pushes a subdir's repodata.json as `latest` and a timestamp tag. @returns the pushed references */
async function pushRepodata(o: MirrorOptions, subdir: string, json: Uint8Array): Promise<string[]> {
  const repo = o.client.repo(`${o.channel}/${subdir}/repodata.json`);
  const config = await o.client.pushBlob(repo, new Uint8Array(0));
  const a = await o.client.pushBlob(repo, json);
  const z = await o.client.pushBlob(repo, Bun.zstdCompressSync(json, { level: 15 }));
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: MEDIA.config, digest: config.digest, size: 0 },
    layers: [
      { mediaType: MEDIA.repodata, digest: a.digest, size: a.size, annotations: { [TITLE]: "repodata.json" } },
      { mediaType: MEDIA.repodataZst, digest: z.digest, size: z.size, annotations: { [TITLE]: "repodata.json" } },
    ],
  };
  const tags = ["latest", timestampTag((o.now ?? (() => new Date()))())];
  for (const t of tags) await o.client.pushManifest(repo, t, manifest);
  return tags.map((t) => `${repo}:${t}`);
}

function cacheDirOf(o: MirrorOptions, subdir: string): string {
  return join(o.cacheDir, o.channel, subdir);
}

function summary(): MirrorSummary {
  return { pushed: [], skipped: [], pulled: [], failed: [], repodata: [] };
}

/**
 * `mirror`: channel → registry (file header).
 * @returns what was pushed, skipped (already tagged) and what failed; never throws for one package
 */
export async function mirror(o: MirrorOptions): Promise<MirrorSummary> {
  const out = o.out ?? process.stderr;
  const s = summary();
  const wanted = matcher(o.packages);
  for (const subdir of o.subdirs) {
    if (!SUBDIR.test(subdir)) throw new Error(`not a subdir: ${subdir}`);
    const base = new URL(`${subdir}/`, o.channelUrl).href;
    const patched = await fetchJson(base + "repodata.json");
    if (!patched) {
      out.write(`${o.channel}/${subdir}: the channel has no repodata.json, skipped\n`);
      continue;
    }
    const all = (await fetchJson(base + "repodata_from_packages.json")) ?? patched;
    // one artifact per <version>-<build>: the .conda when both formats exist
    const byTag = new Map<string, [string, PackageRecord]>();
    for (const [fn, r] of entries(all)) {
      const f = parsePackageFile(fn);
      if (!f || !wanted(f.name)) continue;
      const key = `${f.name}\0${packageTag(f.version, f.build)}`;
      if (!byTag.has(key) || f.format === "conda") byTag.set(key, [fn, r]);
    }
    const dir = cacheDirOf(o, subdir);
    await mkdir(dir, { recursive: true });
    const items = [...byTag.values()];
    const tagsByRepo = new Map<string, Promise<Set<string>>>();
    const bar = progress(out, `mirror ${o.channel}/${subdir}`, items.length);
    await pool(items, o.workers ?? 4, async ([fn, rec]) => {
      const f = parsePackageFile(fn)!;
      try {
        const repo = o.client.repo(packageRepoPath(o.channel, subdir, f.name));
        let tags = tagsByRepo.get(repo);
        if (!tags) tagsByRepo.set(repo, (tags = o.client.tags(repo).then((t) => new Set(t))));
        if ((await tags).has(packageTag(f.version, f.build))) {
          s.skipped.push(fn);
          bar.tick(fn, "exists ");
          return;
        }
        const res = await fetch(base + encodeURIComponent(fn), { signal: AbortSignal.timeout(600_000) });
        if (!res.ok) throw new Error(`download answered ${res.status}`);
        const bytes = new Uint8Array(await res.arrayBuffer());
        const sha = digestOf(bytes).slice(7);
        const md5 = new Bun.CryptoHasher("md5").update(bytes).digest("hex");
        if (rec.sha256 && rec.sha256 !== sha) throw new Error(`sha256 ${sha} differs from the repodata's ${rec.sha256}`);
        if (rec.md5 && rec.md5 !== md5) throw new Error(`md5 ${md5} differs from the repodata's ${rec.md5}`);
        if (rec.size !== undefined && rec.size !== bytes.byteLength) throw new Error(`size ${bytes.byteLength} differs from the repodata's ${rec.size}`);
        const path = join(dir, fn);
        await Bun.write(path, bytes);
        if (o.dryRun) {
          s.skipped.push(fn);
          bar.tick(fn, "would push (dry run)");
          return;
        }
        await pushPackage(o, subdir, f, bytes, md5, path);
        s.pushed.push(fn);
        bar.tick(fn, "pushed ");
      } catch (e) {
        s.failed.push({ file: `${subdir}/${fn}`, error: e instanceof Error ? e.message : String(e) });
        bar.tick(fn, "FAILED ");
      }
    });
    bar.stop();
    const json = new TextEncoder().encode(JSON.stringify(patched));
    await Bun.write(join(dir, "repodata.json"), json);
    if (!o.dryRun) s.repodata.push(...(await pushRepodata(o, subdir, json)));
  }
  for (const f of s.failed) out.write(`  FAIL ${f.file}: ${f.error}\n`);
  out.write(`mirror: ${s.pushed.length} pushed, ${s.skipped.length} skipped, ${s.failed.length} failed${o.dryRun ? " (dry run)" : ""}\n`);
  return s;
}

/** The registry's repodata.json of a subdir (`repodata.json:latest`); null when it has none. */
async function registryRepodata(o: MirrorOptions, subdir: string): Promise<Uint8Array | null> {
  const repo = o.client.repo(`${o.channel}/${subdir}/repodata.json`);
  const m = await o.client.getManifest(repo, "latest");
  if (!m) return null;
  const layer = m.layers.find((l) => l.mediaType === MEDIA.repodata);
  if (layer) return o.client.getBlob(repo, layer.digest);
  const z = m.layers.find((l) => l.mediaType === MEDIA.repodataZst);
  if (z) return Bun.zstdDecompressSync(await o.client.getBlob(repo, z.digest));
  throw new RegistryError(`${repo}:latest has no repodata layer`, 502);
}

/**
 * `pull-cache`: registry → local cache (file header).
 * @returns the files pulled (or, in a dry run, that would be) and what failed
 */
export async function pullCache(o: MirrorOptions): Promise<MirrorSummary> {
  const out = o.out ?? process.stderr;
  const s = summary();
  const wanted = matcher(o.packages);
  for (const subdir of o.subdirs) {
    const json = await registryRepodata(o, subdir);
    if (!json) {
      out.write(`${o.channel}/${subdir}: the registry has no repodata.json:latest, skipped\n`);
      continue;
    }
    const dir = cacheDirOf(o, subdir);
    await mkdir(dir, { recursive: true });
    await Bun.write(join(dir, "repodata.json"), json);
    const newest = new Map<string, [string, PackageRecord]>();
    for (const [fn, r] of entries(parseRepodata(json))) {
      const f = parsePackageFile(fn);
      if (!f || !wanted(f.name)) continue;
      const cur = newest.get(f.name);
      if (!cur || compareRecords(r, cur[1]) > 0 || (compareRecords(r, cur[1]) === 0 && f.format === "conda")) newest.set(f.name, [fn, r]);
    }
    const items = [...newest.values()];
    const bar = progress(out, `pull-cache ${o.channel}/${subdir}`, items.length);
    await pool(items, o.workers ?? 4, async ([fn, rec]) => {
      const f = parsePackageFile(fn)!;
      try {
        if (o.dryRun) {
          s.pulled.push(fn);
          bar.tick(fn, "would pull (dry run)");
          return;
        }
        const repo = o.client.repo(packageRepoPath(o.channel, subdir, f.name));
        const m = await o.client.getManifest(repo, packageTag(f.version, f.build));
        if (!m) {
          // the repodata lists the whole channel; a mirror of selected packages holds only those
          s.skipped.push(fn);
          bar.tick(fn, "not in the registry");
          return;
        }
        const layer = m.layers.find((l) => l.mediaType === MEDIA.packageV2) ?? m.layers.find((l) => l.mediaType === MEDIA.packageV1);
        if (!layer) throw new Error("the manifest has no conda package layer");
        const bytes = await o.client.getBlob(repo, layer.digest);
        const name = layer.annotations?.[TITLE] ?? fn;
        const pf = parsePackageFile(name);
        if (!pf || pf.name !== f.name) throw new Error(`the package layer is titled ${JSON.stringify(name)}`);
        // the layer may be the other format of the same build: check against that file's record when listed
        const listed = entries(parseRepodata(json)).find(([k]) => k === name)?.[1] ?? (name === fn ? rec : undefined);
        if (listed?.sha256 && `sha256:${listed.sha256}` !== layer.digest) throw new Error(`sha256 of ${name} differs from the repodata`);
        await Bun.write(join(dir, name), bytes);
        s.pulled.push(name);
        bar.tick(name, "pulled ");
      } catch (e) {
        s.failed.push({ file: `${subdir}/${fn}`, error: e instanceof Error ? e.message : String(e) });
        bar.tick(fn, "FAILED ");
      }
    });
    bar.stop();
  }
  for (const f of s.failed) out.write(`  FAIL ${f.file}: ${f.error}\n`);
  out.write(`pull-cache: ${s.pulled.length} ${o.dryRun ? "would be pulled (dry run)" : "pulled"}, ${s.skipped.length} not in the registry, ${s.failed.length} failed\n`);
  return s;
}

/**
 * `push-cache`: local cache → registry (file header).
 * @returns the files pushed, skipped (already in the registry's repodata) and what failed
 */
export async function pushCache(o: MirrorOptions): Promise<MirrorSummary> {
  const out = o.out ?? process.stderr;
  const s = summary();
  const wanted = matcher(o.packages);
  for (const subdir of o.subdirs) {
    const dir = cacheDirOf(o, subdir);
    let names: string[];
    try {
      names = (await readdir(dir)).sort();
    } catch {
      out.write(`${dir}: no such cache directory, skipped\n`);
      continue;
    }
    const current = await registryRepodata(o, subdir);
    const known = new Set(current ? entries(parseRepodata(current)).map(([k]) => k) : []);
    const files = names.map((n) => parsePackageFile(n)).filter((f): f is PackageFile => !!f && wanted(f.name));
    const bar = progress(out, `push-cache ${o.channel}/${subdir}`, files.length);
    const added: { filename: string; record: PackageRecord }[] = [];
    await pool(files, o.workers ?? 4, async (f) => {
      try {
        if (!o.pushAll && known.has(f.filename)) {
          s.skipped.push(f.filename);
          bar.tick(f.filename, "known  ");
          return;
        }
        const path = join(dir, f.filename);
        const bytes = await Bun.file(path).bytes();
        const md5 = new Bun.CryptoHasher("md5").update(bytes).digest("hex");
        const info = await inspectPackage(path, f.format);
        const record = recordOf(info.index, { md5, sha256: digestOf(bytes).slice(7), size: bytes.byteLength });
        if (`${record.name}-${record.version}-${record.build}` !== `${f.name}-${f.version}-${f.build}`) throw new PackageError("the file name does not match info/index.json");
        if (o.dryRun) {
          s.skipped.push(f.filename);
          bar.tick(f.filename, "would push (dry run)");
          return;
        }
        await pushPackage(o, subdir, f, bytes, md5, path);
        added.push({ filename: f.filename, record });
        s.pushed.push(f.filename);
        bar.tick(f.filename, "pushed ");
      } catch (e) {
        s.failed.push({ file: `${subdir}/${f.filename}`, error: e instanceof Error ? e.message : String(e) });
        bar.tick(f.filename, "FAILED ");
      }
    });
    bar.stop();
    if (!o.dryRun && added.length) {
      const json = addRecords(current ?? undefined, subdir, added);
      await Bun.write(join(dir, "repodata.json"), json);
      s.repodata.push(...(await pushRepodata(o, subdir, json)));
    }
  }
  for (const f of s.failed) out.write(`  FAIL ${f.file}: ${f.error}\n`);
  out.write(`push-cache: ${s.pushed.length} pushed, ${s.skipped.length} skipped, ${s.failed.length} failed${o.dryRun ? " (dry run)" : ""}\n`);
  return s;
}

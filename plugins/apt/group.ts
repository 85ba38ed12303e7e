/**
 * APT group repository: one archive over its members (hosted and/or proxy apt repositories, or other groups) in read
 * order, signed with the group's own key (`signing`, as a hosted repository's); writes go to the `writeTo` member.
 *
 * - A suite `dists/<suite>/` merges the members' suites of that name: for every component, the `Packages` stanzas of
 *   every member's `binary-<arch>` indexes (`binary-all` skipped: its packages are in the per-architecture indexes),
 *   the first member listing a package, version and architecture winning (task.ts `merge-packages`, in the worker pool
 *   when big). Sources, Translation and Contents indexes are not merged (the group's Release does not list them).
 * - A generation — every `Packages`/`.gz`, their by-hash copies, `Release` (`Suite`/`Codename`: the suite's name;
 *   `Origin`/`Label`: `origin`/`label` or the group's name; `Valid-Until` with `validForSeconds`), `InRelease`,
 *   `Release.gpg` and the pool map — is one `artifacts.commit` (suite.ts). Its Release records a digest of what it was
 *   merged from (`x-vault-sources`: each member's `Packages` SHA256s, the signing key, origin and label).
 * - A request for `InRelease`/`Release` asks every member for its current Release of the suite (a proxy member
 *   revalidates its upstream's as the client's `Cache-Control` asks: APT sends `max-age=0`); when the digest differs
 *   from the stored one the suite is merged again before the answer, so a hosted upload or an upstream change shows
 *   after the next `apt-get update`. Indexes by name, by hash and `Release.gpg` are answered from the stored generation
 *   only, so they always match the Release the client holds. When merging fails (a member's index cannot be fetched)
 *   the previous generation stays and is answered.
 * - `pool/…` is answered by the member whose stanza won for that `Filename` (the pool map of the suites,
 *   `-/pool-map/<suite>`: `<Filename>\t<member>` lines), through that member's own rules (a proxy verifies against its
 *   upstream's index); a file no suite of the group lists is 404.
 * - A member that fails while another has the suite is left out (logged), which changes the digest: its packages come
 *   back with its next good answer. A proxy member whose upstream is down answers its stored Release.
 */
import { createHash } from "node:crypto";
import { KeyedLock, VaultError, errors, type ArtifactEntry, type PluginContext } from "../../core/plugin.ts";
import { compressionOf } from "./compress.ts";
import type { Signer } from "./gpg.ts";
import { parseAptPath } from "./paths.ts";
import type { ParsedRelease, ReleaseFile } from "./release.ts";
import { ParsedReleases, methodNotAllowed, routeRest, type AptRepoConfig, type AptService } from "./service.ts";
import {
  DEFAULT_KEEP_GENERATIONS,
  PublicKeys,
  SuiteRefresh,
  buildGeneration,
  dropUnlistedIndexes,
  freshEntry,
  pruneGenerations,
  publishedIndex,
  respondSuiteFile,
  signerOf,
  type IndexFile,
} from "./suite.ts";
import { aptIndex, type MergePackagesInput, type MergePackagesOutput } from "./task.ts";

/** Options of {@link createAptGroup}. */
export interface AptGroupOptions {
  /** The service of a member repository. */
  serviceOf(ctx: PluginContext): AptService;
}

/** Header of the group's Release files: a digest of the member indexes (and key) the generation was merged from. */
const SOURCES_HEADER = "x-vault-sources";
/** Prefix of the stored pool maps, one per suite. */
const POOL_MAP = "-/pool-map/";
/** Pool maps kept parsed in memory (by blob digest). */
const POOL_MAPS = 16;
/** `<comp>/binary-<arch>/Packages[.xz|.gz]` in a Release. */
const PACKAGES = /^([^/]+)\/binary-([^/]+)\/Packages(\.xz|\.gz)?$/;
/** Variants of an index tried in this order (a Release lists uncompressed files a mirror may not publish). */
const PREFERENCE = [".xz", ".gz", ""];
const ALLOW = "GET, HEAD, PUT, POST, DELETE";

/** One member's index of one component and architecture: its variants, best first. */
interface Source {
  member: number;
  arch: string;
  variants: { path: string; file: ReleaseFile }[];
}

/** What a generation of a suite is merged from. */
interface Plan {
  members: { name: string; svc: AptService; release: ParsedRelease }[];
  /** Sources by component. */
  components: Map<string, Source[]>;
  architectures: string[];
  tag: string;
}

/** Creates the service of one apt group. Members are looked up lazily (`ctx.member`), in the validated config's order. */
export function createAptGroup(ctx: PluginContext<AptRepoConfig>, o: AptGroupOptions): AptService {
  const c = ctx.config;
  const memberNames = c.members ?? [];
  const keep = c.keepGenerations ?? DEFAULT_KEEP_GENERATIONS;
  const lock = new KeyedLock();
  let signer: Signer | undefined;
  const publicKeys = new PublicKeys();
  const releases = new ParsedReleases(ctx);
  const poolMaps = new Map<string, Map<string, string>>();
  // signing again before Valid-Until: merged again from the members' stored Releases
  const refresh = new SuiteRefresh((suite) => lock.run(suite, async () => {
    const p = await plan(suite, new Request("http://group.invalid/"));
    if (p) await build(suite, p);
  }), ctx.log);

  function members(): { name: string; svc: AptService }[] {
    const out: { name: string; svc: AptService }[] = [];
    for (const name of memberNames) {
      const m = ctx.member(name);
      if (m) out.push({ name, svc: o.serviceOf(m) });
    }
    return out;
  }

  /**
   * The members' current Releases of `suite` and the indexes a generation would be merged from.
   * @returns null when no member has the suite
   * @throws the first member failure when no member has the suite and one failed
   */
  async function plan(suite: string, req: Request): Promise<Plan | null> {
    const dir = `dists/${suite}/`;
    const ms = members();
    const results = await Promise.allSettled(ms.map((m) => m.svc.member.release(dir, req)));
    const found: Plan["members"] = [];
    const parts: string[] = [`key=${signer?.fingerprint ?? "-"} origin=${c.origin ?? ""} label=${c.label ?? ""}`];
    let failure: unknown;
    results.forEach((r, i) => {
      const { name, svc } = ms[i];
      if (r.status === "fulfilled") {
        if (r.value) found.push({ name, svc, release: r.value });
        else parts.push(`${name}=-`);
      } else if (r.reason instanceof VaultError && r.reason.status === 404) {
        parts.push(`${name}=-`);
      } else {
        parts.push(`${name}=!`);
        failure ??= r.reason;
        ctx.log.warn("group member failed; its packages are left out of the suite", { member: name, suite, error: r.reason instanceof Error ? r.reason.message : String(r.reason) });
      }
    });
    if (found.length === 0) {
      if (failure !== undefined) throw failure;
      return null;
    }
    const components = new Map<string, Source[]>();
    const archs = new Set<string>();
    found.forEach((m, member) => {
      const bySlot = new Map<string, Source>();
      for (const [path, file] of m.release.files) {
        const x = PACKAGES.exec(path);
        if (!x || x[2] === "all") continue;
        const slot = `${x[1]}/${x[2]}`;
        let s = bySlot.get(slot);
        if (!s) {
          bySlot.set(slot, (s = { member, arch: x[2], variants: [] }));
          let list = components.get(x[1]);
          if (!list) components.set(x[1], (list = []));
          list.push(s);
          archs.add(x[2]);
        }
        s.variants.push({ path, file });
      }
      for (const s of bySlot.values()) {
        s.variants.sort((a, b) => PREFERENCE.indexOf(suffixOf(a.path)) - PREFERENCE.indexOf(suffixOf(b.path)));
        parts.push(`${m.name} ${s.variants.map((v) => `${v.path}=${v.file.hashes.SHA256}`).join(" ")}`);
      }
      parts.push(`${m.name}=${bySlot.size}`);
    });
    const tag = createHash("sha256").update(parts.join("\n")).digest("hex");
    return { members: found, components, architectures: [...archs].sort(), tag };
  }

  /** Merges, signs and commits one generation of `suite` (see the file header). @throws when an index cannot be had */
  async function build(suite: string, p: Plan): Promise<void> {
    const previous = await freshEntry(ctx, `dists/${suite}/Release`);
    const dir = `dists/${suite}/`;
    const indexes: IndexFile[] = [];
    let pool = "";
    for (const [comp, sources] of [...p.components].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const input: MergePackagesInput = { op: "merge-packages", archs: p.architectures, sources: [] };
      for (const s of sources) {
        const m = p.members[s.member];
        let data: Uint8Array | undefined;
        let failure: unknown;
        for (const v of s.variants) {
          try {
            data = await m.svc.member.index(dir + v.path, v.file, m.release.acquireByHash);
            input.sources.push({ member: s.member, arch: s.arch, data, compression: compressionOf(v.path)! });
            break;
          } catch (e) {
            failure ??= e;
          }
        }
        if (!data) throw failure;
      }
      const size = input.sources.reduce((n, s) => n + s.data.byteLength, 0);
      const out = ctx.pool.offloads(size) ? await ctx.pool.run<MergePackagesInput, MergePackagesOutput>("aptIndex", input) : await aptIndex(input);
      for (const f of out.files)
        indexes.push({
          path: `${comp}/binary-${f.arch}/${f.name}`,
          bytes: out.data.subarray(f.offset, f.offset + f.size),
          contentType: f.name === "Packages" ? "text/plain; charset=utf-8" : "application/gzip",
          md5: f.md5,
          sha1: f.sha1,
          sha256: f.sha256,
        });
      for (const line of out.pool.split("\n")) {
        const tab = line.indexOf("\t");
        if (tab > 0) pool += `${line.slice(0, tab)}\t${p.members[Number(line.slice(tab + 1))].name}\n`;
      }
    }
    const g = await buildGeneration({
      identity: { origin: c.origin ?? ctx.repo.name, label: c.label ?? ctx.repo.name, suite, architectures: p.architectures, components: [...p.components.keys()].sort() },
      indexes,
      signer,
      validForSeconds: c.validForSeconds,
      headers: { [SOURCES_HEADER]: p.tag },
      previous,
    });
    await ctx.artifacts.commit([...g.files, { path: POOL_MAP + suite, body: pool, opts: { contentType: "text/tab-separated-values", kind: "metadata" } }]);
    await dropUnlistedIndexes(ctx, suite, previous, g.files);
    await pruneGenerations(ctx, suite, g.byHash, keep);
  }

  /**
   * The group's Release of `suite` after merging again when a member's indexes changed (one merge at a time per suite).
   * When merging fails the previous generation is the answer (logged).
   * @returns null when no member has the suite
   */
  async function current(suite: string, req: Request): Promise<ArtifactEntry | null> {
    const p = await plan(suite, req);
    if (!p) return null;
    const path = `dists/${suite}/Release`;
    const cur = await freshEntry(ctx, path);
    if (cur?.headers[SOURCES_HEADER] === p.tag) return cur;
    return lock.run(suite, async () => {
      const now = await freshEntry(ctx, path);
      if (now?.headers[SOURCES_HEADER] === p.tag) return now;
      try {
        await build(suite, p);
      } catch (e) {
        if (!now) throw e;
        ctx.log.warn("cannot merge the suite again; the previous generation stays", { suite, error: (e as Error).message });
        return now;
      }
      return freshEntry(ctx, path);
    });
  }

  /** The member a pool file is answered by, from the suites' pool maps (null when none lists it). */
  async function poolMember(path: string): Promise<string | null> {
    for (const row of await ctx.artifacts.list(POOL_MAP)) {
      if (row.status !== 200 || !row.blobDigest) continue;
      let map = poolMaps.get(row.blobDigest);
      if (!map) {
        map = new Map();
        for (const line of new TextDecoder().decode(await ctx.artifacts.read(row)).split("\n")) {
          const tab = line.indexOf("\t");
          if (tab > 0) map.set(line.slice(0, tab), line.slice(tab + 1));
        }
        poolMaps.set(row.blobDigest, map);
        if (poolMaps.size > POOL_MAPS) poolMaps.delete(poolMaps.keys().next().value!);
      }
      const m = map.get(path);
      if (m !== undefined) return m;
    }
    return null;
  }

  /** Answers a request with a member's service, at the same path below the member's mount. */
  function forward(req: Request, name: string, rest: string): Promise<Response> {
    const m = ctx.member(name);
    if (!m) throw errors.notFound(rest);
    const url = new URL(req.url);
    url.pathname = `${m.repo.mount}/${rest}`;
    return o.serviceOf(m).handle(new Request(url, { method: req.method, headers: req.headers, signal: req.signal }), m.repo.mount);
  }

  return {
    ctx,
    async handle(req, mount) {
      const rest = routeRest(req, mount);
      const method = req.method;
      if (method === "PUT" || method === "POST" || method === "DELETE") {
        const w = c.writeTo ? ctx.member(c.writeTo) : undefined;
        const svc = w ? o.serviceOf(w) : undefined;
        if (!svc?.write) throw methodNotAllowed(method, "this group has no writeTo member: write to a hosted apt repository, or set writeTo", "GET, HEAD");
        const principal = await ctx.auth.require(req, method === "DELETE" ? "delete" : "write");
        return svc.write(req, rest, principal, ctx.repo.name);
      }
      if (method !== "GET" && method !== "HEAD") throw methodNotAllowed(method, undefined, c.writeTo ? ALLOW : "GET, HEAD");
      if (rest === "public.key" || rest === "public.gpg") return publicKeys.respond(req, signer, rest === "public.key");
      const p = parseAptPath(rest);
      if (p.kind === "pool") {
        const name = await poolMember(p.key);
        if (name === null) throw new VaultError("VAULT_NOT_FOUND", 404, `${p.key} is not listed by any suite of this group`);
        return forward(req, name, rest);
      }
      if (p.segs[0] !== "dists" || p.segs.length < 3) throw errors.notFound(`${p.key} (a group serves dists/<suite>/ and pool/)`);
      const suite = p.segs[1];
      if (p.kind === "release" && p.segs.length === 3) {
        if (p.file !== "Release.gpg" && !(await current(suite, req))) throw errors.notFound(`suite ${suite} (no member has it)`);
        return respondSuiteFile(ctx, req, p.key, { suite, refresh });
      }
      if (p.kind === "index") return respondSuiteFile(ctx, req, p.key);
      const e = p.kind === "by-hash" && p.field === "SHA256" ? await ctx.artifacts.get(p.key) : null;
      if (!e || e.status !== 200 || !e.blobDigest) throw errors.notFound(p.key);
      return ctx.artifacts.respond(req, e);
    },
    member: {
      async release(dir, req) {
        const m = /^dists\/([^/]+)\/$/.exec(dir);
        const e = m && (await current(m[1], req));
        return e && releases.of(e);
      },
      index: (path, file) => publishedIndex(ctx, path, file),
    },
    async start() {
      signer = await signerOf(ctx);
    },
    async stop() {
      await signer?.close();
      signer = undefined;
    },
  };
}

/** `.xz`, `.gz` or `""` of an index path. */
function suffixOf(path: string): string {
  return path.endsWith(".xz") ? ".xz" : path.endsWith(".gz") ? ".gz" : "";
}

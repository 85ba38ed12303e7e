/**
 * What the web UI shows, as plain objects: the JSON bodies of `/-/api/` (docs/api.md) and the data the HTML pages
 * render, built once here from the catalog (core/search.ts), the repositories' configs and the plugins' `clientSetup`
 * hooks, for the repositories the caller may read.
 */
import { VaultError, redactUrl } from "../errors.ts";
import type { Catalog, CatalogRepository, PackageDetail, PackageFile, RepositoryContent, SearchQuery, SearchResult, BlobStoreStats, CacheCounters } from "../search.ts";
import type { ClientSetup, Principal } from "../plugin.ts";
import { ANONYMOUS } from "../auth/index.ts";

/** One repository as listed. Sizes in bytes, times epoch ms. */
export interface RepositoryView extends RepositoryContent {
  name: string;
  format: string;
  type: "proxy" | "hosted" | "group";
  /** The URL clients are given for it (`server.publicUrl` or the request's origin, plus the mount). */
  url: string;
  /** Whether anonymous principals may read it. */
  anonymousRead: boolean;
  /** Proxy: the upstream URL (credentials and secret-looking query parameters removed). */
  upstream?: string;
  /** Group: its members the caller may read, in read order. */
  members?: string[];
  /** Group: the hosted member uploads go to, when the caller may read it. */
  writeTo?: string;
}

/** A repository with its client set-up snippets (`GET /-/api/repositories/<name>`). */
export interface RepositoryDetailView extends RepositoryView {
  setup: ClientSetup[];
}

/** A package file as the API shows it: `url` absolute. */
export type PackageFileView = PackageFile;

/** A package page (`GET /-/api/repositories/<repo>/packages/<name>`). */
export interface PackageView extends PackageDetail {
  type: "proxy" | "hosted" | "group";
  /** Base URL of the repository. */
  repositoryUrl: string;
  /** How to install it from this repository (the newest version). */
  setup: ClientSetup[];
  /** Readable groups that serve this repository's content, with how to install through each. */
  groups: { name: string; url: string; setup: ClientSetup[] }[];
}

/** `GET /-/api/stats`: per repository content and this process's cache counters, and the blob store. */
export interface StatsView {
  repositories: (RepositoryView & { cache: CacheCounters & { hitRatio: number | null } })[];
  blobStore: BlobStoreStats;
  totals: { artifacts: number; storedBytes: number; downloads: number; cacheHits: number; cacheMisses: number; bytesServed: number };
}

/** Search answer (`GET /-/api/search`): the query as understood, then the catalog's result. */
export interface SearchView extends SearchResult {
  query: SearchQuery;
}

const EMPTY: RepositoryContent = { artifacts: 0, metadataFiles: 0, storedBytes: 0, downloads: 0, lastAccessAt: null };

/** Cache results counted as hits / misses in ratios and totals. */
const HITS = ["HIT", "REVALIDATED", "STALE"];
const MISSES = ["MISS"];

/** Builds the views for one caller. */
export class Views {
  constructor(
    private readonly catalog: Catalog,
    private readonly repositories: Map<string, CatalogRepository>,
  ) {}

  /** Names of the repositories `principal` may read, in config order. */
  readable(principal: Principal): string[] {
    const out: string[] = [];
    for (const [name, r] of this.repositories) if (r.ctx.auth.can(principal, "read")) out.push(name);
    return out;
  }

  /**
   * The repository `name` when `principal` may read it.
   * @throws VaultError VAULT_NOT_FOUND (404) when there is none or it is not readable (existence is not revealed)
   */
  repository(principal: Principal, name: string): CatalogRepository {
    const r = this.repositories.get(name);
    if (!r || !r.ctx.auth.can(principal, "read")) throw new VaultError("VAULT_NOT_FOUND", 404, `repository ${name} not found`);
    return r;
  }

  private view(r: CatalogRepository, content: RepositoryContent | undefined, req: Request, readable: Set<string>): RepositoryView {
    const c = r.ctx.config;
    const v: RepositoryView = {
      name: r.ctx.repo.name,
      format: c.format,
      type: r.ctx.repo.type,
      url: r.ctx.baseUrl(req),
      anonymousRead: r.ctx.auth.can(ANONYMOUS, "read"),
      ...(content ?? EMPTY),
    };
    if (r.ctx.repo.type === "proxy" && c.upstream) v.upstream = redactUrl(c.upstream);
    if (r.ctx.repo.type === "group") {
      v.members = (c.members ?? []).filter((m) => readable.has(m));
      if (c.writeTo && readable.has(c.writeTo)) v.writeTo = c.writeTo;
    }
    return v;
  }

  /** Every readable repository with its stored content (`GET /-/api/repositories`). */
  async repositoryList(principal: Principal, req: Request): Promise<RepositoryView[]> {
    const names = this.readable(principal);
    const content = await this.catalog.content(names);
    const readable = new Set(names);
    return names.map((n) => this.view(this.repositories.get(n)!, content.get(n), req, readable));
  }

  /** One repository with its set-up snippets. @throws VaultError 404 as {@link repository} */
  async repositoryDetail(principal: Principal, req: Request, name: string): Promise<RepositoryDetailView> {
    const r = this.repository(principal, name);
    const content = await this.catalog.content([name]);
    return { ...this.view(r, content.get(name), req, new Set(this.readable(principal))), setup: this.setup(r, req) };
  }

  /** Search over the readable repositories. @throws VaultError 404 when `query.repository` is not readable */
  async search(principal: Principal, query: SearchQuery): Promise<SearchView> {
    if (query.repository !== undefined) this.repository(principal, query.repository);
    return { query, ...(await this.catalog.search(query, this.readable(principal))) };
  }

  /**
   * A package page: versions and files (download URLs absolute), set-up snippets for its newest version, and the
   * readable groups serving it.
   * @throws VaultError VAULT_NOT_FOUND (404) unknown or unreadable repository, or no stored file of that package
   */
  async packageDetail(principal: Principal, req: Request, repository: string, name: string): Promise<PackageView> {
    const r = this.repository(principal, repository);
    const d = await this.catalog.package(repository, name);
    if (!d) throw new VaultError("VAULT_NOT_FOUND", 404, `package ${name} not found in ${repository}`);
    const base = r.ctx.baseUrl(req);
    const abs = (f: PackageFile): PackageFileView => ({ ...f, url: f.url === null ? null : `${base}/${f.url}` });
    const pkg = { name: d.name, version: d.versions[0]?.version };
    const groups: PackageView["groups"] = [];
    for (const g of this.groupsServing(repository, principal)) groups.push({ name: g.ctx.repo.name, url: g.ctx.baseUrl(req), setup: this.setup(g, req, pkg) });
    return {
      ...d,
      type: r.ctx.repo.type,
      repositoryUrl: base,
      versions: d.versions.map((v) => ({ ...v, files: v.files.map(abs) })),
      files: d.files.map(abs),
      setup: this.setup(r, req, pkg, d),
      groups,
    };
  }

  /** Content and cache counters of every readable repository, and the blob store (`GET /-/api/stats`). */
  async stats(principal: Principal, req: Request): Promise<StatsView> {
    const list = await this.repositoryList(principal, req);
    const totals = { artifacts: 0, storedBytes: 0, downloads: 0, cacheHits: 0, cacheMisses: 0, bytesServed: 0 };
    const repositories = list.map((v) => {
      const c = this.catalog.cacheCounters(v.name);
      const hits = HITS.reduce((n, k) => n + (c.results[k] ?? 0), 0);
      const misses = MISSES.reduce((n, k) => n + (c.results[k] ?? 0), 0);
      totals.artifacts += v.artifacts;
      totals.storedBytes += v.storedBytes;
      totals.downloads += v.downloads;
      totals.cacheHits += hits;
      totals.cacheMisses += misses;
      totals.bytesServed += c.bytesServed;
      return { ...v, cache: { ...c, hitRatio: hits + misses > 0 ? hits / (hits + misses) : null } };
    });
    return { repositories, blobStore: await this.catalog.blobStore(), totals };
  }

  /** Readable groups whose members include `repository`, directly or through another group (config order). */
  private groupsServing(repository: string, principal: Principal): CatalogRepository[] {
    const out: CatalogRepository[] = [];
    const serves = (g: CatalogRepository, seen: Set<string>): boolean => {
      for (const m of g.ctx.config.members ?? []) {
        if (m === repository) return true;
        const mr = this.repositories.get(m);
        if (mr && mr.ctx.repo.type === "group" && !seen.has(m) && serves(mr, seen.add(m))) return true;
      }
      return false;
    };
    for (const r of this.repositories.values())
      if (r.ctx.repo.type === "group" && r.ctx.auth.can(principal, "read") && serves(r, new Set([r.ctx.repo.name]))) out.push(r);
    return out;
  }

  /**
   * The plugin's `clientSetup` snippets; without the hook (or when it throws or gives none), a `curl` download of the
   * package's newest file, or of `<path>` below the repository URL.
   */
  setup(r: CatalogRepository, req: Request, pkg?: { name: string; version?: string }, detail?: PackageDetail): ClientSetup[] {
    const hook = r.plugin.clientSetup;
    if (typeof hook === "function") {
      try {
        const s = hook.call(r.plugin, r.ctx, { req, package: pkg });
        if (Array.isArray(s) && s.length > 0) return s;
      } catch {
        // fall back to the generic snippet
      }
    }
    const base = r.ctx.baseUrl(req);
    const file = detail && [...(detail.versions[0]?.files ?? []), ...detail.files].find((f) => f.url !== null);
    return [{ client: "curl", title: "Download a file", code: `curl -fLO ${base}/${file?.url ?? "<path>"}` }];
  }
}

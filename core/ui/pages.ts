/**
 * The web UI's HTML pages, rendered on the server from the views of ./views.ts (the same objects `/-/api/` answers
 * with). Every value from the store or the request goes through the escaping `html` template (./html.ts); the page
 * loads only the embedded stylesheet and script (./assets.ts), and the Content-Security-Policy forbids anything else.
 */
import { html, rawHtml, formatBytes, formatCount, formatTime, type Html, type HtmlValue } from "./html.ts";
import type { PackageView, RepositoryDetailView, RepositoryView, SearchView, StatsView, PackageFileView } from "./views.ts";
import type { ClientSetup, Principal } from "../plugin.ts";

/** Where the UI and its assets sit, as the browser sees them. */
export interface PageContext {
  /** Path prefix of the UI, without trailing slash (`/-/ui`, or `<publicUrl path>/-/ui`). */
  ui: string;
  /** Path prefix of the JSON API (`/-/api`). */
  api: string;
  /** Asset URLs (content-hashed). */
  css: string;
  js: string;
  principal: Principal;
  /** The search box's current text. */
  q?: string;
}

/** `/-/ui/repositories/<repo>` */
export function repositoryHref(p: PageContext, repo: string): string {
  return `${p.ui}/repositories/${encodeURIComponent(repo)}`;
}

/** `/-/ui/repositories/<repo>/packages/<name>`, each `/`-separated part of the name percent-encoded. */
export function packageHref(p: PageContext, repo: string, name: string): string {
  return `${repositoryHref(p, repo)}/packages/${name.split("/").map(encodeURIComponent).join("/")}`;
}

/** A query string from the defined values (`?a=1&b=x`), or "". */
function query(params: Record<string, string | number | undefined>): string {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") s.set(k, String(v));
  const t = s.toString();
  return t ? `?${t}` : "";
}

/** The whole document around a page's body. */
export function layout(p: PageContext, title: string, body: HtmlValue): Html {
  const who =
    p.principal.userId === null
      ? html`<a href="${p.ui}/login">Sign in</a>`
      : html`<span title="signed in">${p.principal.name}</span>`;
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · Artifact Vault</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${p.css}">
<script type="module" src="${p.js}"></script>
</head>
<body>
<header class="top">
<a class="brand" href="${p.ui}/">Artifact Vault</a>
<nav><a href="${p.ui}/">Repositories</a> <a href="${p.ui}/stats">Statistics</a></nav>
<form class="search" action="${p.ui}/search" method="get" role="search">
<input type="search" name="q" value="${p.q ?? ""}" placeholder="Search packages in every format" aria-label="Search packages">
<button type="submit">Search</button>
</form>
<span class="who">${who}</span>
</header>
<main>
${body}
</main>
<footer>JSON API: <a href="${p.api}/repositories">${p.api}/</a></footer>
</body>
</html>
`;
}

/** An error page body (404, 400, …). */
export function errorPage(p: PageContext, status: number, message: string): Html {
  return layout(p, `${status}`, html`<h1>${status}</h1><p class="error">${message}</p><p><a href="${p.ui}/">All repositories</a></p>`);
}

/** A size cell: human units, exact bytes in the title. */
function size(n: number): Html {
  return html`<span class="size" title="${formatCount(n)} bytes">${formatBytes(n)}</span>`;
}

function time(ms: number | null): Html {
  return ms === null ? html`—` : html`<time datetime="${new Date(ms).toISOString()}">${formatTime(ms)}</time>`;
}

/** The "how to configure your client" snippets. */
function setupSection(title: string, setup: ClientSetup[]): Html {
  return html`<section class="setup"><h2>${title}</h2>
${setup.map((s) => html`<div class="snippet" data-client="${s.client}"><h3>${s.title} <span class="client">${s.client}</span></h3><pre><code>${s.code}</code></pre></div>`)}
</section>`;
}

/** The repositories page (`/-/ui/`). */
export function homePage(p: PageContext, list: RepositoryView[]): Html {
  const rows = list.map(
    (r) => html`<tr data-repository="${r.name}">
<td><a href="${repositoryHref(p, r.name)}">${r.name}</a>${r.anonymousRead ? "" : html` <span class="badge" title="needs credentials">private</span>`}</td>
<td>${r.format}</td><td>${r.type}</td>
<td class="num">${formatCount(r.artifacts)}</td><td class="num">${size(r.storedBytes)}</td><td class="num">${formatCount(r.downloads)}</td>
<td>${time(r.lastAccessAt)}</td></tr>`,
  );
  return layout(
    p,
    "Repositories",
    html`<h1>Repositories</h1>
${list.length === 0 ? html`<p>No repository you may read.${p.principal.userId === null ? html` <a href="${p.ui}/login">Sign in</a> to see more.` : ""}</p>` : ""}
<table class="repositories">
<thead><tr><th>Name</th><th>Format</th><th>Type</th><th class="num">Artifacts</th><th class="num">Stored</th><th class="num">Downloads</th><th>Last access</th></tr></thead>
<tbody>${rows}</tbody>
</table>`,
  );
}

/** Rows of search results. */
function resultsTable(p: PageContext, v: SearchView, showRepository: boolean): Html {
  if (v.results.length === 0) return html`<p class="empty">No package matches.</p>`;
  return html`<table class="results">
<thead><tr><th>Package</th>${showRepository ? html`<th>Repository</th><th>Format</th>` : ""}<th>Latest</th><th class="num">Versions</th><th class="num">Files</th><th class="num">Size</th><th class="num">Downloads</th><th>Stored</th></tr></thead>
<tbody>${v.results.map(
    (r) => html`<tr class="result" data-repository="${r.repository}" data-name="${r.name}">
<td><a class="package" href="${packageHref(p, r.repository, r.name)}">${r.name}</a></td>
${showRepository ? html`<td><a href="${repositoryHref(p, r.repository)}">${r.repository}</a></td><td>${r.format}</td>` : ""}
<td>${r.latestVersion ?? "—"}</td><td class="num">${formatCount(r.versionCount)}</td><td class="num">${formatCount(r.files)}</td>
<td class="num">${size(r.sizeBytes)}</td><td class="num">${formatCount(r.downloads)}</td><td>${time(r.lastFetchedAt)}</td></tr>`,
  )}</tbody></table>`;
}

/** Previous / next links and the range shown. */
function pager(href: (offset: number) => string, v: SearchView): Html {
  const { offset, limit } = v.query;
  const from = v.total === 0 ? 0 : offset + 1;
  const to = Math.min(offset + limit, v.total);
  return html`<p class="pager">${formatCount(from)}–${formatCount(to)} of ${formatCount(v.total)}${v.truncated ? html` <span class="badge" title="more stored files than one query reads; narrow the search">partial</span>` : ""}
${offset > 0 ? html` <a rel="prev" href="${href(Math.max(0, offset - limit))}">Previous</a>` : ""}
${to < v.total ? html` <a rel="next" href="${href(offset + limit)}">Next</a>` : ""}</p>`;
}

/** The search page (`/-/ui/search`): filters by format and repository, results across formats. */
export function searchPage(p: PageContext, v: SearchView, formats: string[], repositories: string[]): Html {
  const q = v.query;
  const href = (offset: number) => `${p.ui}/search${query({ q: q.q, format: q.format, repository: q.repository, offset })}`;
  return layout(
    { ...p, q: q.q },
    q.q ? `Search: ${q.q}` : "Search",
    html`<h1>Search</h1>
<form class="filters" action="${p.ui}/search" method="get">
<input type="search" name="q" value="${q.q}" aria-label="Package name">
<label>Format <select name="format"><option value="">any</option>${formats.map((f) => html`<option${f === q.format ? rawHtml(" selected") : ""}>${f}</option>`)}</select></label>
<label>Repository <select name="repository"><option value="">any</option>${repositories.map((r) => html`<option${r === q.repository ? rawHtml(" selected") : ""}>${r}</option>`)}</select></label>
<button type="submit">Search</button>
</form>
${pager(href, v)}
${resultsTable(p, v, true)}`,
  );
}

/** A repository's page: what it is, how to point clients at it, and the packages it stores (filtered, paged). */
export function repositoryPage(p: PageContext, r: RepositoryDetailView, packages: SearchView): Html {
  const href = (offset: number) => `${repositoryHref(p, r.name)}${query({ q: packages.query.q, offset })}`;
  return layout(
    p,
    r.name,
    html`<h1>${r.name} <span class="format">${r.format} ${r.type}</span></h1>
<dl class="facts">
<dt>URL</dt><dd><code>${r.url}/</code></dd>
${r.upstream ? html`<dt>Upstream</dt><dd><code>${r.upstream}</code></dd>` : ""}
${r.members ? html`<dt>Members</dt><dd>${r.members.map((m, i) => html`${i > 0 ? ", " : ""}<a href="${repositoryHref(p, m)}">${m}</a>`)}</dd>` : ""}
${r.writeTo ? html`<dt>Uploads go to</dt><dd><a href="${repositoryHref(p, r.writeTo)}">${r.writeTo}</a></dd>` : ""}
<dt>Access</dt><dd>${r.anonymousRead ? "anyone may read" : "credentials needed to read"}</dd>
<dt>Artifacts</dt><dd>${formatCount(r.artifacts)} (${formatCount(r.metadataFiles)} metadata files)</dd>
<dt>Stored</dt><dd>${size(r.storedBytes)}</dd>
<dt>Downloads</dt><dd>${formatCount(r.downloads)}</dd>
<dt>Last access</dt><dd>${time(r.lastAccessAt)}</dd>
</dl>
${setupSection("How to configure your client", r.setup)}
${
  r.type === "group"
    ? html`<p>A group stores no packages of its own: browse its members.</p>`
    : html`<section class="packages"><h2>Packages</h2>
<form class="filters" action="${repositoryHref(p, r.name)}" method="get"><input type="search" name="q" value="${packages.query.q}" aria-label="Filter packages"><button type="submit">Filter</button></form>
${pager(href, packages)}
${resultsTable(p, packages, false)}</section>`
}`,
  );
}

/** A table of package files. */
function filesTable(files: PackageFileView[]): Html {
  return html`<table class="files">
<thead><tr><th>File</th><th class="num">Size</th><th>SHA-256</th><th>Content type</th><th>Stored</th><th class="num">Downloads</th></tr></thead>
<tbody>${files.map(
    (f) => html`<tr class="file" data-path="${f.path}">
<td>${f.url === null ? html`<span class="name">${f.file}</span>` : html`<a class="name" href="${f.url}">${f.file}</a>`}</td>
<td class="num">${size(f.sizeBytes)}</td>
<td><code class="sha256">${f.digest.replace(/^sha256:/, "")}</code></td>
<td>${f.contentType ?? "—"}</td><td>${time(f.fetchedAt)}</td><td class="num downloads">${formatCount(f.downloads)}</td></tr>`,
  )}</tbody></table>`;
}

/** A package's page: set-up for its newest version, then every version with its files. */
export function packagePage(p: PageContext, v: PackageView): Html {
  const latest = v.versions[0]?.version;
  return layout(
    p,
    `${v.name} · ${v.repository}`,
    html`<h1><span class="package-name">${v.name}</span>${latest ? html` <span class="version">${latest}</span>` : ""}</h1>
<p class="where">in <a href="${repositoryHref(p, v.repository)}">${v.repository}</a> <span class="format">${v.format} ${v.type}</span> ·
${formatCount(v.versions.length)} versions · ${size(v.sizeBytes)} · ${formatCount(v.downloads)} downloads${v.truncated ? html` <span class="badge">partial</span>` : ""}</p>
${setupSection("How to configure your client", v.setup)}
${v.groups.map((g) => setupSection(`Through the group ${g.name}`, g.setup.slice(0, 1)))}
<section class="versions"><h2>Versions</h2>
${v.versions.map(
  (ver) => html`<section class="version" data-version="${ver.version}"><h3>${ver.version} <span class="meta">${size(ver.sizeBytes)} · ${formatCount(ver.downloads)} downloads · ${time(ver.fetchedAt)}</span></h3>
${filesTable(ver.files)}</section>`,
)}
${v.versions.length === 0 ? html`<p>No versioned files.</p>` : ""}
</section>
${v.files.length > 0 ? html`<section class="other-files"><h2>Other files</h2>${filesTable(v.files)}</section>` : ""}`,
  );
}

/** Cache statistics (`/-/ui/stats`). */
export function statsPage(p: PageContext, s: StatsView): Html {
  const ratio = (r: number | null) => (r === null ? "—" : `${(r * 100).toFixed(1)} %`);
  const results = ["HIT", "MISS", "REVALIDATED", "STALE", "NEGATIVE"];
  const t = s.totals;
  return layout(
    p,
    "Statistics",
    html`<h1>Statistics</h1>
<dl class="facts">
<dt>Artifacts</dt><dd>${formatCount(t.artifacts)}</dd>
<dt>Stored (per repository, summed)</dt><dd>${size(t.storedBytes)}</dd>
<dt>Blob store (deduplicated)</dt><dd>${size(s.blobStore.sizeBytes)} in ${formatCount(s.blobStore.blobs)} blobs</dd>
<dt>Downloads from the store</dt><dd>${formatCount(t.downloads)}</dd>
<dt>Cache hits / misses (this process)</dt><dd>${formatCount(t.cacheHits)} / ${formatCount(t.cacheMisses)}</dd>
<dt>Served (this process)</dt><dd>${size(t.bytesServed)}</dd>
</dl>
<table class="stats">
<thead><tr><th>Repository</th><th>Format</th><th>Type</th><th class="num">Artifacts</th><th class="num">Stored</th><th class="num">Downloads</th>${results.map((r) => html`<th class="num">${r}</th>`)}<th class="num">Hit ratio</th><th class="num">Served</th></tr></thead>
<tbody>${s.repositories.map(
      (r) => html`<tr data-repository="${r.name}"><td><a href="${repositoryHref(p, r.name)}">${r.name}</a></td><td>${r.format}</td><td>${r.type}</td>
<td class="num">${formatCount(r.artifacts)}</td><td class="num">${size(r.storedBytes)}</td><td class="num">${formatCount(r.downloads)}</td>
${results.map((k) => html`<td class="num" data-result="${k}">${formatCount(r.cache.results[k] ?? 0)}</td>`)}
<td class="num">${ratio(r.cache.hitRatio)}</td><td class="num">${size(r.cache.bytesServed)}</td></tr>`,
    )}</tbody></table>
<p class="note">Downloads are counted by every node in the database; cache results and bytes served are this process's since it started (the same counters as <code>/-/metrics</code>).</p>`,
  );
}

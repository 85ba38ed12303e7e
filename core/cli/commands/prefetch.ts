/** `vault prefetch`: warms the cache of a running vault from a list of URLs or repository paths, with a progress bar. */
import { parseArgs } from "node:util";
import { SingleBar } from "cli-progress";
import type { VaultConfig } from "../../config/types.ts";
import { mapSeedConfig } from "../../config/seed.ts";
import { pypiPathOf, resolvePypiConfig, type PypiRepoConfig, type ResolvedPypiConfig } from "../../../plugins/pypi/proxy.ts";

const USAGE = `usage: vault prefetch [--config FILE] [--data DIR] [--url BASE] [--concurrency N] [--timeout SECONDS] LISTFILE|-

Requests every entry of LISTFILE (or standard input for "-") through a running vault, reading each body to the
end so that the vault caches it. One entry per line; blank lines and "#" comments are ignored. An entry is
  - a repository path, e.g. "pypi/packages/aa/bb/demo-1.0.tar.gz" or "/apache/hadoop/common/x.tar.gz",
  - a URL on the vault itself (starting with --url), or
  - an upstream URL, mapped onto the proxy repository whose configured upstream it starts with, or for pypi
    repositories onto the vault path of an index page or of a file on one of their file hosts (fileHosts), e.g.
    "https://files.pythonhosted.org/packages/..." (needs the config: --config, or vault.config.* in the cwd).

  --url BASE          the vault's base URL (default: from the config's server host/port, else http://127.0.0.1:8080)
  --concurrency N     requests in flight at once (default 4)
  --timeout SECONDS   give up on an entry after this long without receiving bytes (default 120)
  --config FILE       config file, for mapping upstream URLs and the default --url
  --data DIR          accepted like every command; prefetch itself goes through the running vault
Environment: VAULT_TOKEN is sent as "Authorization: Bearer <token>" when set.
Exit status: 0 when every entry was fetched, 1 when any failed, 2 on a usage error.`;

/** One entry of the list, resolved to the URL requested. */
export interface PrefetchItem {
  /** The line as written. */
  entry: string;
  /** Absolute URL requested on the vault; undefined when the entry could not be mapped (it then fails). */
  url?: string;
  /** Why the entry could not be mapped. */
  error?: string;
}

/** Outcome of one entry. */
export interface PrefetchResult extends PrefetchItem {
  ok: boolean;
  /** HTTP status, 0 when no response. */
  status: number;
  /** Value of the vault's X-Vault-Cache header (HIT, MISS, REVALIDATED, STALE, ...), if any. */
  cache?: string;
  /** Body bytes read. */
  sizeBytes: number;
  /** Seconds from request to end of body. */
  seconds: number;
}

/** Where progress goes: stderr, or a stand-in in tests. A TTY gets a redrawn bar, anything else one line per entry. */
export interface ProgressStream {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** Options of {@link prefetch}. */
export interface PrefetchOptions {
  /** The vault's base URL, e.g. `http://127.0.0.1:8080` (a trailing slash is ignored). */
  url: string;
  /** Entries (lines of the list file, comments and blanks already allowed). */
  lines: string[];
  /** Config used to map upstream URLs onto proxy repositories. */
  config?: VaultConfig;
  /** Requests in flight at once (default 4). */
  concurrency?: number;
  /** Seconds without a byte before an entry is abandoned (default 120). */
  timeoutSeconds?: number;
  /** Extra request headers (Authorization). */
  headers?: Record<string, string>;
  /** Progress and summary output (default process.stderr). */
  out?: ProgressStream;
}

/** Summary of a run. */
export interface PrefetchSummary {
  results: PrefetchResult[];
  ok: number;
  failed: number;
  hits: number;
  sizeBytes: number;
  seconds: number;
}

/** Human-readable byte count (binary units): `1.5 MiB`. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

/** Entries of a list file: trimmed, without blank lines and `#` comments (whole-line or trailing after a space). */
export function parseList(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((l) => l.replace(/(^|\s)#.*$/, "").trim())
    .filter(Boolean);
}

const slash = (s: string) => (s.endsWith("/") ? s : s + "/");
/** A repository's mount as a path with leading and trailing slash (`/<name>/`, or its `prefix`). */
const mountPath = (r: { name: string; prefix?: string }) => {
  const m = typeof r.prefix === "string" ? r.prefix : `/${r.name}`;
  return slash(m.startsWith("/") ? m : "/" + m);
};

/**
 * Mount prefixes of proxy repositories by upstream URL (each upstream with a trailing slash), longest first. pypi
 * repositories are left to {@link pypiMounts}: their vault paths are not `<mount>/<rest of the upstream URL>`.
 */
function upstreamMounts(config?: VaultConfig): { upstream: string; mount: string }[] {
  const out: { upstream: string; mount: string }[] = [];
  for (const r of config?.repositories ?? []) {
    if (r.type !== "proxy" || typeof r.upstream !== "string" || r.format === "pypi") continue;
    out.push({ upstream: slash(r.upstream), mount: mountPath(r) });
  }
  // The seed read-through cache's `backends:` (prefix + base_url / index_url / registry_url).
  for (const b of config?.backends ?? []) {
    const c = b.config ?? {};
    const up = [c.base_url, c.index_url, c.registry_url].find((v): v is string => typeof v === "string");
    if (typeof c.prefix !== "string" || !up || b.type === "pypi") continue;
    out.push({ upstream: slash(up), mount: slash(c.prefix.startsWith("/") ? c.prefix : "/" + c.prefix) });
  }
  return out.sort((a, b) => b.upstream.length - a.upstream.length);
}

/**
 * pypi proxy repositories (`repositories:` and seed `backends:` of type pypi, mapped as the config loader maps them),
 * in config order, with their mount and effective settings (upstream, simple prefix, file hosts: plugins/pypi/proxy.ts
 * resolvePypiConfig). Entries whose URLs do not parse are left out (the vault refuses such a config anyway).
 */
function pypiMounts(config?: VaultConfig): { mount: string; pypi: ResolvedPypiConfig }[] {
  const repos = [...(config?.repositories ?? [])];
  if (config?.backends?.length) repos.push(...mapSeedConfig(config as Record<string, unknown>, new Set(repos.map((r) => r.name))).repositories);
  const out: { mount: string; pypi: ResolvedPypiConfig }[] = [];
  for (const r of repos) {
    if (r.format !== "pypi" || r.type !== "proxy") continue;
    try {
      out.push({ mount: mountPath(r), pypi: resolvePypiConfig(r as PypiRepoConfig) });
    } catch {
      continue;
    }
  }
  return out;
}

/**
 * Resolves list entries to vault URLs (see the command's usage text). An upstream URL goes to the non-pypi proxy
 * with the longest matching upstream, else to the first pypi proxy that serves it (plugins/pypi/proxy.ts pypiPathOf:
 * index pages, JSON API, files on its `fileHosts`). Duplicates are kept once.
 * @param base the vault's base URL
 */
export function resolveItems(lines: string[], base: string, config?: VaultConfig): PrefetchItem[] {
  const root = base.replace(/\/+$/, "");
  const mounts = upstreamMounts(config);
  const pypi = pypiMounts(config);
  const seen = new Set<string>();
  const items: PrefetchItem[] = [];
  for (const entry of lines) {
    let item: PrefetchItem;
    if (/^https?:\/\//i.test(entry)) {
      if (entry === root || entry.startsWith(root + "/")) item = { entry, url: entry };
      else {
        const m = mounts.find((x) => entry.startsWith(x.upstream));
        let url = m ? root + m.mount + entry.slice(m.upstream.length) : undefined;
        for (let i = 0; url === undefined && i < pypi.length; i++) {
          const rel = pypiPathOf(pypi[i].pypi, entry);
          if (rel !== undefined) url = root + pypi[i].mount + rel;
        }
        item = url !== undefined ? { entry, url } : { entry, error: "no proxy repository has this upstream (pass --config, or list repository paths)" };
      }
    } else item = { entry, url: root + "/" + entry.replace(/^\/+/, "") };
    const key = item.url ?? "\0" + entry;
    if (seen.has(key)) continue;
    seen.add(key);
    items.push(item);
  }
  return items;
}

/** Fetches one item and reads its body to the end (so the vault's tee completes), with an idle timeout. */
async function fetchOne(item: PrefetchItem, timeoutSeconds: number, headers: Record<string, string>, onBytes: (n: number) => void): Promise<PrefetchResult> {
  const t0 = performance.now();
  const done = (r: Partial<PrefetchResult>): PrefetchResult => ({ ok: false, status: 0, sizeBytes: 0, ...item, ...r, seconds: (performance.now() - t0) / 1000 });
  if (!item.url) return done({});
  const ac = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => ac.abort(new Error(`no data for ${timeoutSeconds} s`)), timeoutSeconds * 1000);
  };
  let sizeBytes = 0;
  let status = 0;
  let cache: string | undefined;
  try {
    arm();
    const res = await fetch(item.url, { headers, signal: ac.signal, redirect: "follow", decompress: false } as RequestInit);
    status = res.status;
    cache = res.headers.get("x-vault-cache") ?? undefined;
    if (res.body)
      for await (const chunk of res.body) {
        sizeBytes += chunk.byteLength;
        onBytes(chunk.byteLength);
        arm();
      }
    if (!res.ok) return done({ status, cache, sizeBytes, error: `${res.status} ${res.statusText}`.trim() });
    return done({ ok: true, status, cache, sizeBytes });
  } catch (e) {
    const reason = ac.signal.aborted && ac.signal.reason instanceof Error ? ac.signal.reason.message : e instanceof Error ? e.message : String(e);
    return done({ status, cache, sizeBytes, error: reason });
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs a prefetch: requests every entry through the vault with at most `concurrency` in flight, draws progress
 * on `out` (TTY: one redrawn line with count, bytes and rate; otherwise one line per entry), then a summary line
 * and the failures.
 * @returns per-entry results and totals (bytes, seconds); never throws for a failed entry
 */
export async function prefetch(o: PrefetchOptions): Promise<PrefetchSummary> {
  const out: ProgressStream = o.out ?? process.stderr;
  const items = resolveItems(o.lines, o.url, o.config);
  const concurrency = Math.max(1, o.concurrency ?? 4);
  const timeoutSeconds = o.timeoutSeconds ?? 120;
  const headers = { "user-agent": "vault-prefetch", ...o.headers };
  const t0 = performance.now();
  let bytes = 0;
  let finished = 0;
  let failed = 0;
  const rate = () => `${formatBytes(bytes / Math.max((performance.now() - t0) / 1000, 0.001))}/s`;
  const tty = out.isTTY === true;
  const bar = tty
    ? new SingleBar({
        stream: out as NodeJS.WritableStream,
        format: "prefetch [{bar}] {value}/{total} | {bytes} | {rate} | {failed} failed",
        barsize: 24,
        hideCursor: true,
        clearOnComplete: false,
        gracefulExit: true,
        etaBuffer: 20,
      })
    : undefined;
  const payload = () => ({ bytes: formatBytes(bytes), rate: rate(), failed });
  bar?.start(items.length, 0, payload());
  const width = String(items.length).length;

  const results: PrefetchResult[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      const r = await fetchOne(items[i], timeoutSeconds, headers, (n) => {
        bytes += n;
        bar?.update(finished, payload());
      });
      results[i] = r;
      finished++;
      if (!r.ok) failed++;
      if (bar) bar.update(finished, payload());
      else
        out.write(
          `[${String(finished).padStart(width)}/${items.length}] ${r.ok ? "ok  " : "FAIL"} ${String(r.status || "-").padStart(3)} ` +
            `${(r.cache ?? "-").padEnd(11)} ${formatBytes(r.sizeBytes).padStart(10)} ${r.seconds.toFixed(2)}s ${r.entry}` +
            (r.ok ? "" : `: ${r.error}`) +
            "\n",
        );
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  bar?.update(finished, payload());
  bar?.stop();

  const seconds = (performance.now() - t0) / 1000;
  const ok = results.filter((r) => r.ok).length;
  const hits = results.filter((r) => r.ok && r.cache === "HIT").length;
  out.write(
    `prefetched ${ok}/${items.length} entries (${hits} already cached), ${formatBytes(bytes)} in ${seconds.toFixed(1)} s (${rate()})` +
      (failed ? `; ${failed} failed` : "") +
      "\n",
  );
  if (tty) for (const r of results) if (!r.ok) out.write(`  FAIL ${r.entry}: ${r.error}\n`);
  return { results, ok, failed, hits, sizeBytes: bytes, seconds };
}

/** Reads the list: a file path, or standard input for "-". */
async function readList(arg: string): Promise<string> {
  if (arg === "-") return await new Response(Bun.stdin.stream()).text();
  return await Bun.file(arg).text();
}

/** Default base URL from the config's server section (0.0.0.0 / :: → loopback). */
function defaultUrl(config?: VaultConfig): string {
  const s = config?.server;
  if (s?.publicUrl) return s.publicUrl;
  let host = s?.host ?? "127.0.0.1";
  if (host === "0.0.0.0" || host === "::" || host === "") host = "127.0.0.1";
  if (host.includes(":")) host = `[${host}]`;
  return `http://${host}:${s?.port ?? 8080}`;
}

/**
 * CLI entry: `vault prefetch [--config FILE] [--data DIR] [--url BASE] [--concurrency N] [--timeout SECONDS] LISTFILE|-`.
 * @returns exit code: 0 all fetched, 1 some failed, 2 usage error (bad option, unreadable list, bad config)
 */
export async function run(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        config: { type: "string", short: "c" },
        data: { type: "string" },
        url: { type: "string" },
        concurrency: { type: "string", short: "j" },
        timeout: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    process.stderr.write(`vault prefetch: ${e instanceof Error ? e.message : String(e)}\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(USAGE + "\n");
    return 0;
  }
  if (positionals.length !== 1) {
    process.stderr.write(`vault prefetch: give exactly one LISTFILE (or - for standard input)\n${USAGE}\n`);
    return 2;
  }
  const concurrency = values.concurrency === undefined ? 4 : Number(values.concurrency);
  const timeoutSeconds = values.timeout === undefined ? 120 : Number(values.timeout);
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    process.stderr.write(`vault prefetch: --concurrency must be a positive integer\n`);
    return 2;
  }
  if (!(timeoutSeconds > 0)) {
    process.stderr.write(`vault prefetch: --timeout must be a positive number of seconds\n`);
    return 2;
  }

  let config: VaultConfig | undefined;
  try {
    const { loadConfig } = await import("../../config/load.ts");
    config = (await loadConfig(values.config)).config;
  } catch (e) {
    // An explicit --config must load; without one a missing default file just means no upstream-URL mapping.
    if (values.config) {
      process.stderr.write(`vault prefetch: ${e instanceof Error ? e.message : String(e)}\n`);
      return 2;
    }
  }

  let text: string;
  try {
    text = await readList(positionals[0]);
  } catch (e) {
    process.stderr.write(`vault prefetch: cannot read ${positionals[0]}: ${e instanceof Error ? e.message : String(e)}\n`);
    return 2;
  }
  const headers: Record<string, string> = {};
  if (process.env.VAULT_TOKEN) headers.authorization = `Bearer ${process.env.VAULT_TOKEN}`;
  const summary = await prefetch({ url: values.url ?? defaultUrl(config), lines: parseList(text), config, concurrency, timeoutSeconds, headers });
  return summary.failed > 0 ? 1 : 0;
}

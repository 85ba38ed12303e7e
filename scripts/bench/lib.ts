/** Shared helpers of the benchmarks in scripts/bench/: wrk runs, CPU pinning, RSS sampling, child servers, tables. */
import { cpus } from "node:os";
import { join, resolve } from "node:path";
import type { VaultConfig } from "../../core/config/types.ts";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";

/** Exits with instructions when a required tool is missing. */
export function requireTool(name: string, install: string): string {
  const p = Bun.which(name);
  if (!p) {
    process.stderr.write(`${name} not found on PATH. Install it with: ${install}\n`);
    process.exit(2);
  }
  return p;
}

/** `wrk` (the HTTP load generator) or exit with how to install it. */
export function requireWrk(): string {
  return requireTool("wrk", "apt-get install -y wrk   (Debian/Ubuntu; or build from https://github.com/wg/wrk)");
}

/** CPU sets for the server and the load generator, so they do not fight over cores (taskset when available). */
export interface Pinning {
  /** `taskset -c` list for the server (e.g. "0"), undefined when not pinning. */
  server?: string;
  /** `taskset -c` list for the client (wrk, curl). */
  client?: string;
  /** Cores the client may use (wrk threads). */
  clientCores: number;
}

/** Splits the cores: the first half to the server, the rest to the client (1 + 1 on a 2-core machine). */
export function pinning(): Pinning {
  const n = cpus().length;
  if (!Bun.which("taskset") || n < 2) return { clientCores: Math.max(1, Math.floor(n / 2)) };
  const half = Math.floor(n / 2);
  const list = (a: number, b: number) => (a === b ? String(a) : `${a}-${b}`);
  return { server: list(0, half - 1), client: list(half, n - 1), clientCores: n - half };
}

/** Pins every thread of a running process to `cpus` (no-op when undefined). */
export async function pinPid(pid: number, cpus: string | undefined): Promise<void> {
  if (!cpus) return;
  const p = Bun.spawn(["taskset", "-a", "-cp", cpus, String(pid)], { stdout: "ignore", stderr: "pipe" });
  if ((await p.exited) !== 0) throw new Error(`taskset failed: ${await new Response(p.stderr).text()}`);
}

/** Prefix of a command pinned to `cpus`. */
export function pinned(cpus: string | undefined, cmd: string[]): string[] {
  return cpus ? ["taskset", "-c", cpus, ...cmd] : cmd;
}

/** Result of one wrk run. */
export interface WrkResult {
  requestsPerSecond: number;
  /** Latency percentiles, milliseconds. */
  p50Ms: number;
  p99Ms: number;
  /** Bytes per second transferred (wrk's Transfer/sec). */
  bytesPerSecond: number;
  requests: number;
  /** Socket errors + non-2xx/3xx responses. */
  errors: number;
}

function toMs(v: string, unit: string): number {
  const n = Number(v);
  return unit === "us" ? n / 1000 : unit === "ms" ? n : unit === "s" ? n * 1000 : unit === "m" ? n * 60000 : NaN;
}

function toBytes(v: string, unit: string): number {
  const mult: Record<string, number> = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 };
  return Number(v) * (mult[unit] ?? NaN);
}

/** Parses `wrk --latency` output. Throws when the numbers are missing. */
export function parseWrk(text: string): WrkResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(text);
  const tr = /Transfer\/sec:\s+([\d.]+)([KMG]?B)/.exec(text);
  const p50 = /^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$/m.exec(text);
  const p99 = /^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$/m.exec(text);
  const total = /(\d+) requests in/.exec(text);
  if (!rps || !p99 || !p50 || !total) throw new Error(`cannot parse wrk output:\n${text}`);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  const errors = (sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + (non2xx ? Number(non2xx[1]) : 0);
  return {
    requestsPerSecond: Number(rps[1]),
    p50Ms: toMs(p50[1], p50[2]),
    p99Ms: toMs(p99[1], p99[2]),
    bytesPerSecond: tr ? toBytes(tr[1], tr[2]) : NaN,
    requests: Number(total[1]),
    errors,
  };
}

/** Runs wrk against `url` (pinned to the client cores) and parses its report. */
export async function runWrk(o: { url: string; connections: number; seconds: number; pin: Pinning }): Promise<WrkResult> {
  const threads = Math.max(1, Math.min(o.pin.clientCores, o.connections));
  const cmd = pinned(o.pin.client, ["wrk", `-t${threads}`, `-c${o.connections}`, `-d${o.seconds}s`, "--timeout", "10s", "--latency", o.url]);
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`wrk exited ${code}: ${err}`);
  return parseWrk(out);
}

/** Resident set size of a process, bytes (VmRSS of /proc/<pid>/status); NaN when unreadable. */
export async function rssBytes(pid: number): Promise<number> {
  try {
    const s = await Bun.file(`/proc/${pid}/status`).text();
    const m = /^VmRSS:\s+(\d+) kB/m.exec(s);
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Samples a process's RSS every `everyMs` until stopped; returns the first, peak and last samples (bytes). */
export function sampleRss(pid: number, everyMs = 100): { stop(): Promise<{ startBytes: number; peakBytes: number; lastBytes: number }> } {
  let peak = 0;
  let first = NaN;
  let last = NaN;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const v = await rssBytes(pid);
      if (Number.isNaN(first)) first = v;
      if (!Number.isNaN(v)) {
        last = v;
        peak = Math.max(peak, v);
      }
      await Bun.sleep(everyMs);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return { startBytes: first, peakBytes: peak, lastBytes: last };
    },
  };
}

/** A child process running scripts/bench/file-server.ts. */
export interface FileServer {
  url: string;
  pid: number;
  /** Requests per path so far. */
  counts(): Promise<Record<string, number>>;
  stop(): Promise<void>;
}

const children = new Set<{ kill(signal?: number | NodeJS.Signals): void }>();
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

/** Starts scripts/bench/file-server.ts on `root` (optionally pinned and rate-limited) and waits for its port. */
export async function startFileServer(root: string, o: { cpus?: string; rateBytesPerSecond?: number } = {}): Promise<FileServer> {
  const cmd = [process.execPath, join(import.meta.dir, "file-server.ts"), root];
  if (o.rateBytesPerSecond) cmd.push("--rate", String(o.rateBytesPerSecond));
  const p = Bun.spawn(pinned(o.cpus, cmd), { stdout: "pipe", stderr: "inherit" });
  children.add(p);
  const reader = p.stdout.getReader();
  let buf = "";
  while (!buf.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("file server exited before listening");
    buf += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  const { port } = JSON.parse(buf.split("\n")[0]) as { port: number };
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    pid: p.pid,
    counts: async () => (await (await fetch(`${url}/__stats`)).json()) as Record<string, number>,
    async stop() {
      p.kill();
      await p.exited;
      children.delete(p);
    },
  };
}

/** Writes a file of `sizeBytes` pseudo-random bytes (a random 1 MiB block repeated with a counter). */
export async function makeFile(path: string, sizeBytes: number): Promise<void> {
  const block = new Uint8Array(1024 * 1024);
  crypto.getRandomValues(block.subarray(0, 65536));
  for (let o = 65536; o < block.length; o += 65536) block.set(block.subarray(0, 65536), o);
  const w = Bun.file(path).writer();
  let left = sizeBytes;
  let n = 0;
  while (left > 0) {
    const chunk = block.slice(0, Math.min(block.length, left));
    new DataView(chunk.buffer).setUint32(0, n++);
    w.write(chunk);
    left -= chunk.length;
    if (n % 64 === 0) await w.flush();
  }
  await w.end();
}

/** A temporary directory, removed by the returned function. */
export async function tempDir(prefix: string): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** Prints rows as an aligned text table (first row = header). */
export function printTable(rows: (string | number)[][]): void {
  const cells = rows.map((r) => r.map(String));
  const widths = cells[0].map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  console.log(line(cells[0]));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of cells.slice(1)) console.log(line(r));
}

/** `12.3 MiB` style. */
export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** Reads a numeric `--name value` flag from argv. */
export function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v) || v <= 0) {
    process.stderr.write(`--${name} needs a positive number\n`);
    process.exit(2);
  }
  return v;
}

/** Downloads `url` with curl (pinned) to /dev/null; returns bytes and seconds. Falls back to fetch without curl. */
export async function download(url: string, cpus?: string): Promise<{ sizeBytes: number; seconds: number; status: number; cache?: string }> {
  if (Bun.which("curl")) {
    const p = Bun.spawn(pinned(cpus, ["curl", "-s", "-o", "/dev/null", "-D", "-", "-w", "\n%{http_code} %{size_download} %{time_total}\n", url]), { stdout: "pipe" });
    const out = await new Response(p.stdout).text();
    await p.exited;
    const last = out.trim().split("\n").pop()!.split(" ");
    const cache = /^x-vault-cache:\s*(\S+)/im.exec(out)?.[1];
    return { status: Number(last[0]), sizeBytes: Number(last[1]), seconds: Number(last[2]), cache };
  }
  const t0 = performance.now();
  const res = await fetch(url);
  let sizeBytes = 0;
  for await (const c of res.body!) sizeBytes += c.byteLength;
  return { status: res.status, sizeBytes, seconds: (performance.now() - t0) / 1000, cache: res.headers.get("x-vault-cache") ?? undefined };
}

/** A vault started from the real CLI by {@link startVaultCli}. */
export interface BenchVault {
  url: string;
  pid: number;
  dataDir: string;
  /** The vault's stderr (JSON logs and access log) goes here, not through a pipe into this process. */
  logFile: string;
  /** SIGTERM, then wait for exit (SIGKILL after 15 s). */
  stop(): Promise<void>;
}

/**
 * Runs `bun core/cli/bin.ts serve --config <json>` (or the binary named by `VAULT_BENCH_BINARY`, with runtime flags from
 * `VAULT_BENCH_BUN_FLAGS` otherwise): `serve --config <json> --port 0 --host 127.0.0.1 --data <dir>` with stderr written to a
 * file, so the benchmark process does not spend CPU reading the vault's access log (spawnVault pipes it), and
 * waits for the `{"msg":"listening"}` line. The default log level (info, with the access log) is kept: that is how
 * the vault runs by default.
 * @throws Error with the log when the vault exits or does not listen within 30 s
 */
export async function startVaultCli(config: VaultConfig, dir: string): Promise<BenchVault> {
  const repo = resolve(import.meta.dir, "../..");
  const cfgFile = join(dir, "vault.config.json");
  const dataDir = join(dir, "data");
  const logFile = join(dir, "vault.log");
  await Bun.write(cfgFile, JSON.stringify(config));
  const bunFlags = (process.env.VAULT_BENCH_BUN_FLAGS ?? "").split(/\s+/).filter(Boolean);
  // VAULT_BENCH_BINARY=dist/vault measures the compiled binary (npm run build) instead of the sources.
  const bin = process.env.VAULT_BENCH_BINARY;
  const cmd = bin ? [resolve(bin)] : [process.execPath, ...bunFlags, join(repo, "core/cli/bin.ts")];
  const p = Bun.spawn([...cmd, "serve", "--config", cfgFile, "--port", "0", "--host", "127.0.0.1", "--data", dataDir], {
    cwd: repo,
    stdin: "ignore",
    stdout: "ignore",
    stderr: Bun.file(logFile),
  });
  children.add(p);
  const t0 = performance.now();
  for (;;) {
    const text = await Bun.file(logFile).text().catch(() => "");
    const m = /^\{.*"msg":"listening".*$/m.exec(text);
    if (m) {
      const { url } = JSON.parse(m[0]) as { url: string };
      return {
        url,
        pid: p.pid,
        dataDir,
        logFile,
        async stop() {
          p.kill("SIGTERM");
          const t = setTimeout(() => p.kill("SIGKILL"), 15_000);
          await p.exited;
          clearTimeout(t);
          children.delete(p);
        },
      };
    }
    if (p.exitCode !== null || performance.now() - t0 > 30_000) {
      p.kill("SIGKILL");
      throw new Error(`vault did not start (exit ${p.exitCode}); log:\n${text}`);
    }
    await Bun.sleep(50);
  }
}

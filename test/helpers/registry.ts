/**
 * startRegistry: Debian's `docker-registry` (CNCF distribution 2.8) on a free loopback port, with a generated config
 * in a temp dir, optionally as a pull-through proxy; its JSON request log is parsed so tests can count upstream
 * requests. Also `skopeo` helpers and the CI rule for missing clients.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { tmpDataDir } from "./tmp.ts";

/** One request the registry completed (from its `response completed` log lines). */
export interface RegistryRequest {
  method: string;
  /** Request URI as logged (path and query). */
  uri: string;
  status: number;
}

/** A running docker-registry. */
export interface TestRegistry {
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** `127.0.0.1:<port>` (the registry host part of image references). */
  host: string;
  port: number;
  pid: number;
  /** Storage root of the registry. */
  dataDir: string;
  /** Requests completed so far (parsed from the log). */
  requests(): RegistryRequest[];
  /** How many completed requests match. */
  count(pred: (r: RegistryRequest) => boolean): number;
  /**
   * Resolves with the count once at least `n` completed requests match (the log is read asynchronously, so a request
   * the client saw finish may be logged a moment later). Rejects after `timeoutMs` (default 5000) with the count.
   */
  waitForCount(pred: (r: RegistryRequest) => boolean, n: number, timeoutMs?: number): Promise<number>;
  /** Stops the process (SIGTERM, then SIGKILL after 5 s) and waits for it. Idempotent. */
  stop(): Promise<void>;
}

/** Options of {@link startRegistry}. */
export interface StartRegistryOptions {
  /** Run as a pull-through cache of `remoteurl` (distribution `proxy:` section). */
  proxy?: { remoteurl: string; username?: string; password?: string };
  /** Storage directory (default: a fresh temp dir). */
  dataDir?: string;
  /** Fixed port (default: a free one). */
  port?: number;
}

/** Path of the docker-registry binary, or null. */
export function registryBinary(): string | null {
  return Bun.which("docker-registry");
}

/**
 * Whether the named tools are installed. Under `CI=true` a missing tool throws (the run must fail, not skip).
 * @returns true when all are present
 */
export function requireTools(names: string[]): boolean {
  const missing = names.filter((n) => !Bun.which(n));
  if (missing.length === 0) return true;
  // the Debian packages are named like the tools (docker-registry, skopeo, podman)
  if (process.env.CI === "true") throw new Error(`required test tools missing under CI=true: ${missing.join(", ")} (apt-get install ${missing.join(" ")})`);
  console.warn(`skipping: ${missing.join(", ")} not installed (apt-get install ${missing.join(" ")})`);
  return false;
}

/** A port free on 127.0.0.1 right now (bound and released). */
export async function freePort(): Promise<number> {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const p = s.port;
  s.stop(true);
  return p;
}

async function readLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
  const dec = new TextDecoder();
  let buf = "";
  for await (const chunk of stream) {
    buf += dec.decode(chunk, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n")) !== -1) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  }
  if (buf) onLine(buf);
}

/**
 * Starts docker-registry on 127.0.0.1 with a generated config (filesystem storage, deletes enabled, JSON logs, no
 * upload purging, optional proxy), and resolves once it logs that it listens. Retries on another port if the chosen
 * one was taken meanwhile.
 * @throws Error when the binary is missing or the registry does not come up within 20 s
 */
export async function startRegistry(o: StartRegistryOptions = {}): Promise<TestRegistry> {
  const bin = registryBinary();
  if (!bin) throw new Error("docker-registry is not installed");
  const dir = await tmpDataDir("registry-");
  const dataDir = o.dataDir ?? join(dir, "storage");
  await mkdir(dataDir, { recursive: true });
  let lastErr: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = o.port ?? (await freePort());
    const lines = [
      "version: 0.1",
      "log:",
      "  level: info",
      "  formatter: json",
      "  accesslog:",
      "    disabled: true",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${JSON.stringify(dataDir)}`,
      "  delete:",
      "    enabled: true",
      "  maintenance:",
      "    uploadpurging:",
      "      enabled: false",
      "http:",
      `  addr: 127.0.0.1:${port}`,
      `  secret: ${crypto.randomUUID()}`,
      "health:",
      "  storagedriver:",
      "    enabled: false",
    ];
    if (o.proxy) {
      lines.push("proxy:", `  remoteurl: ${JSON.stringify(o.proxy.remoteurl)}`);
      if (o.proxy.username !== undefined) lines.push(`  username: ${JSON.stringify(o.proxy.username)}`, `  password: ${JSON.stringify(o.proxy.password ?? "")}`);
    }
    const cfg = join(dir, `config-${attempt}.yml`);
    await writeFile(cfg, lines.join("\n") + "\n");
    const proc: Subprocess<"ignore", "pipe", "pipe"> = Bun.spawn([bin, "serve", cfg], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    const requests: RegistryRequest[] = [];
    const waiters = new Set<() => void>();
    const log: string[] = [];
    let resolveUp!: () => void;
    let rejectUp!: (e: Error) => void;
    const up = new Promise<void>((a, b) => {
      resolveUp = a;
      rejectUp = b;
    });
    const onLine = (line: string) => {
      if (log.length < 200) log.push(line);
      if (!line.startsWith("{")) return;
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line);
      } catch {
        return;
      }
      const msg = String(rec.msg ?? "");
      if (msg.startsWith("listening on")) resolveUp();
      if (msg === "response completed") {
        requests.push({ method: String(rec["http.request.method"]), uri: String(rec["http.request.uri"]), status: Number(rec["http.response.status"]) });
        for (const w of [...waiters]) w();
      }
    };
    void readLines(proc.stderr, onLine).catch(() => {});
    void readLines(proc.stdout, onLine).catch(() => {});
    void proc.exited.then((code) => rejectUp(new Error(`docker-registry exited with ${code}:\n${log.slice(-20).join("\n")}`)));
    const timer = setTimeout(() => rejectUp(new Error(`docker-registry did not start within 20 s:\n${log.slice(-20).join("\n")}`)), 20_000);
    try {
      await up;
    } catch (e) {
      lastErr = e;
      clearTimeout(timer);
      proc.kill("SIGKILL");
      await proc.exited;
      continue;
    } finally {
      clearTimeout(timer);
    }
    let stopped: Promise<void> | undefined;
    return {
      url: `http://127.0.0.1:${port}`,
      host: `127.0.0.1:${port}`,
      port,
      pid: proc.pid,
      dataDir,
      requests: () => requests.slice(),
      count: (pred) => requests.filter(pred).length,
      waitForCount(pred, n, timeoutMs = 5000) {
        return new Promise<number>((resolve, reject) => {
          const check = () => {
            const c = requests.filter(pred).length;
            if (c < n) return;
            waiters.delete(check);
            clearTimeout(timer);
            resolve(c);
          };
          const timer = setTimeout(() => {
            waiters.delete(check);
            reject(new Error(`only ${requests.filter(pred).length} of ${n} expected registry requests after ${timeoutMs} ms`));
          }, timeoutMs);
          waiters.add(check);
          check();
        });
      },
      stop() {
        return (stopped ??= (async () => {
          if (proc.exitCode !== null || proc.signalCode !== null) return;
          process.kill(proc.pid, "SIGTERM");
          const t = setTimeout(() => {
            try {
              process.kill(proc.pid, "SIGKILL");
            } catch {
              // already gone
            }
          }, 5000);
          await proc.exited;
          clearTimeout(t);
        })());
      },
    };
  }
  throw lastErr instanceof Error ? lastErr : new Error(String(lastErr));
}

/** Result of a finished command. */
export interface CmdResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `skopeo` with `args` (TLS verification off for our plain-http loopback registries, no user policy needed:
 * a permissive policy file is written once per process). Bounded by `timeoutMs` (default 120 s).
 */
export async function skopeo(args: string[], timeoutMs = 120_000): Promise<CmdResult> {
  const policy = await policyFile();
  const proc = Bun.spawn(["skopeo", "--policy", policy, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, HOME: await homeDir() } });
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

let policyPath: Promise<string> | undefined;
function policyFile(): Promise<string> {
  return (policyPath ??= (async () => {
    const d = await tmpDataDir("skopeo-policy-");
    const p = join(d, "policy.json");
    await writeFile(p, JSON.stringify({ default: [{ type: "insecureAcceptAnything" }] }));
    return p;
  })());
}

let home: Promise<string> | undefined;
/** A private HOME for skopeo (its auth file `~/.config/containers/auth.json` and caches stay out of the real home). */
function homeDir(): Promise<string> {
  return (home ??= tmpDataDir("skopeo-home-"));
}

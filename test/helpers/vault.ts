/** startVault (in-process) and spawnVault (the real CLI as a child process) for tests and benchmarks; both on 127.0.0.1, port 0, a temp data dir. */
import { isAbsolute, join, resolve } from "node:path";
import type { Subprocess } from "bun";
import type { VaultConfig } from "../../core/config/types.ts";
import { createLogger, silentLogger, type LogLevel } from "../../core/log.ts";
import type { Logger, VaultPlugin } from "../../core/plugin.ts";
import { createVault, type Listener, type Vault } from "../../core/server.ts";
import { tmpDataDir } from "./tmp.ts";

/** The repository root: relative `plugins:` paths in test configs are resolved against it. */
export const REPO_ROOT = resolve(import.meta.dir, "..", "..");

/** Logger for vaults under test: silent unless `VAULT_TEST_LOG=debug|info|warn|error`. */
function testLogger(): Logger {
  const l = process.env.VAULT_TEST_LOG;
  return l ? createLogger(l as LogLevel) : silentLogger;
}

/** Options of {@link startVault}. */
export interface StartVaultOptions {
  config: VaultConfig;
  /** Data directory (default: a fresh temp dir). Reuse one to test restarts. */
  dataDir?: string;
  /** Directory relative config paths resolve against (default: the repository root). */
  configDir?: string;
  /** Plugins to use instead of loading them (built-ins + `config.plugins`). */
  plugins?: Map<string, VaultPlugin>;
  /** Receives access-log lines (default: none). */
  accessLog?: (line: string) => void;
}

/** A vault running in this process. */
export interface StartedVault {
  /** `http://127.0.0.1:<port>` (no trailing slash). */
  url: string;
  port: number;
  dataDir: string;
  /** Every listener (main first, then repositories with `port:`). */
  listeners: Listener[];
  vault: Vault;
  /** Graceful stop (grace 5 s unless given). */
  stop(graceSeconds?: number): Promise<void>;
}

/**
 * Starts a vault in-process: `createVault` + `listen` on 127.0.0.1 with port 0, in a temp data dir.
 * Repository `port:` values in `config` should be 0 too.
 * @throws whatever createVault throws (ConfigError, PluginLoadError)
 */
export async function startVault(o: StartVaultOptions): Promise<StartedVault> {
  const dataDir = o.dataDir ?? (await tmpDataDir("vault-data-"));
  const config: VaultConfig = { ...o.config, server: { ...o.config.server, host: "127.0.0.1", port: 0, dataDir } };
  const vault = await createVault(config, { configDir: o.configDir ?? REPO_ROOT, plugins: o.plugins, log: testLogger(), accessLog: o.accessLog ?? false });
  let listeners: Listener[];
  try {
    listeners = await vault.listen();
  } catch (e) {
    await vault.stop(0);
    throw e;
  }
  return { url: listeners[0].url, port: listeners[0].port, dataDir, listeners, vault, stop: (g = 5) => vault.stop(g) };
}

/** Options of {@link spawnVault}. */
export interface SpawnVaultOptions {
  /** A config object (written to a temp JSON file; relative `plugins:` paths made absolute against the repo root) or a config file path. */
  config: VaultConfig | string;
  /** Data directory (default: a fresh temp dir). Reuse one to test restarts. */
  dataDir?: string;
  /** Extra environment for the child. */
  env?: Record<string, string>;
  /** Extra CLI arguments after `serve`. */
  args?: string[];
  /** Milliseconds to wait for the listening line (default 30 000). */
  startTimeoutMs?: number;
  /** A compiled `vault` binary to run instead of `bun core/cli/bin.ts` (scripts/build.ts). */
  binary?: string;
  /** Working directory of the child (default: the repository root). */
  cwd?: string;
}

/** A vault running as a child process of the real CLI. */
export interface SpawnedVault {
  url: string;
  port: number;
  pid: number;
  dataDir: string;
  /** Every listener logged (main first). */
  listeners: { url: string; port: number; repository?: string }[];
  /** Everything the child wrote to stderr and stdout so far. */
  output(): string;
  /** Resolves with the exit code when the child exits (signal deaths give a non-zero code). */
  exited: Promise<number>;
  /** SIGTERM (graceful shutdown) and wait for exit; SIGKILL after `timeoutMs` (default 15 000). Resolves with the exit code. */
  stop(timeoutMs?: number): Promise<number>;
  /** SIGKILL by PID, at once (a crash). Await `exited` to know it is gone. */
  kill9(): void;
}

const children = new Set<Subprocess>();
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

/**
 * Runs `bun core/cli/bin.ts serve --config <file> --port 0 --host 127.0.0.1 --data <dataDir>` (or `<binary> serve …`) and waits for its
 * `{"msg":"listening",...}` line(s) on stderr (one per listener: main plus each repository `port:`).
 * @throws Error with the child's output when it exits or times out before listening
 */
export async function spawnVault(o: SpawnVaultOptions): Promise<SpawnedVault> {
  const dataDir = o.dataDir ?? (await tmpDataDir("vault-data-"));
  let file: string;
  let expected = 1;
  if (typeof o.config === "string") {
    file = isAbsolute(o.config) ? o.config : resolve(REPO_ROOT, o.config);
  } else {
    const cfg = { ...o.config };
    if (cfg.plugins) cfg.plugins = cfg.plugins.map((p) => (p.startsWith("./") || p.startsWith("../") ? resolve(REPO_ROOT, p) : p));
    expected += (cfg.repositories ?? []).filter((r) => r.port !== undefined).length;
    file = join(await tmpDataDir("vault-config-"), "vault.config.json");
    await Bun.write(file, JSON.stringify(cfg, null, 2));
  }
  const cmd = o.binary ? [o.binary] : [process.execPath, join(REPO_ROOT, "core/cli/bin.ts")];
  const child = Bun.spawn([...cmd, "serve", "--config", file, "--port", "0", "--host", "127.0.0.1", "--data", dataDir, ...(o.args ?? [])], {
    cwd: o.cwd ?? REPO_ROOT,
    env: { ...process.env, ...o.env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  children.add(child);
  const exited = child.exited.then((code) => {
    children.delete(child);
    return code;
  });
  let out = "";
  const listeners: SpawnedVault["listeners"] = [];
  let onLine: (() => void) | undefined;
  const pump = async (stream: ReadableStream<Uint8Array>, parse: boolean) => {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of stream) {
      const text = dec.decode(chunk, { stream: true });
      out += text;
      if (!parse) continue;
      buf += text;
      let nl: number;
      while ((nl = buf.indexOf("\n")) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.startsWith("{")) continue;
        try {
          const rec = JSON.parse(line) as { msg?: string; url?: string; port?: number; repository?: string };
          if (rec.msg === "listening" && rec.url && typeof rec.port === "number") {
            listeners.push({ url: rec.url, port: rec.port, ...(rec.repository ? { repository: rec.repository } : {}) });
            onLine?.();
          }
        } catch {
          // not a log line
        }
      }
    }
  };
  void pump(child.stderr as ReadableStream<Uint8Array>, true);
  void pump(child.stdout as ReadableStream<Uint8Array>, false);

  const timeoutMs = o.startTimeoutMs ?? 30_000;
  await new Promise<void>((resolveStart, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`vault did not log "listening" within ${timeoutMs} ms; output:\n${out}`));
    }, timeoutMs);
    onLine = () => {
      if (listeners.length >= expected) {
        clearTimeout(timer);
        resolveStart();
      }
    };
    void exited.then((code) => {
      clearTimeout(timer);
      // let the pumps drain what is left
      setTimeout(() => reject(new Error(`vault exited with code ${code} before listening; output:\n${out}`)), 50);
    });
  });
  onLine = undefined;
  const main = listeners.find((l) => !l.repository) ?? listeners[0];
  return {
    url: main.url,
    port: main.port,
    pid: child.pid,
    dataDir,
    listeners,
    output: () => out,
    exited,
    async stop(timeoutMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    kill9() {
      process.kill(child.pid, "SIGKILL");
    },
  };
}

/**
 * Waits until `url` is answered from the cache (`Cache-Control: only-if-cached` gets a 200), for a file another vault
 * process just stored: its row lands as that download ends, so a request right after may still be a miss here.
 * @param timeoutMs how long to keep asking (default 10 s), every 20 ms
 * @returns the 200 response (body unread), or undefined when the time ran out
 */
export async function awaitCachedHit(url: string, timeoutMs = 10_000): Promise<Response | undefined> {
  for (const t0 = Date.now(); Date.now() - t0 < timeoutMs; await Bun.sleep(20)) {
    const r = await fetch(url, { headers: { "cache-control": "only-if-cached" } });
    if (r.status === 200) return r;
    await r.arrayBuffer();
  }
  return undefined;
}

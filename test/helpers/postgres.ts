/**
 * startPostgres: a real PostgreSQL server for tests — Debian's `postgresql` binaries (`/usr/lib/postgresql/<ver>/bin`),
 * `initdb` into a temp dir, `postgres` on a free loopback port with its unix socket in that dir, stopped by its PID.
 * PostgreSQL refuses to run as root: as root the cluster directory is chowned to the `postgres` user and `initdb` and the
 * server run under `setpriv --reuid postgres` (util-linux; it execs, so the PID we hold is the server's own).
 */
import { chmod, chown, mkdir, writeFile } from "node:fs/promises";
import { existsSync, readdirSync } from "node:fs";
import { userInfo } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { tmpDataDir } from "./tmp.ts";
import { freePort } from "./registry.ts";

/** A running PostgreSQL cluster. */
export interface TestPostgres {
  /** `postgres://vault@127.0.0.1:<port>/vault` (trust authentication on loopback, no password). */
  url: string;
  port: number;
  pid: number;
  /** A URL to a fresh, empty database of its own (`CREATE DATABASE`), for a test that needs a clean schema. */
  freshDatabase(name?: string): Promise<string>;
  /** Stops the server (SIGTERM = smart shutdown, then SIGQUIT after 10 s) and waits for it. Idempotent. */
  stop(): Promise<void>;
}

/** The directory of Debian's PostgreSQL server binaries (highest version), or null. */
export function postgresBinDir(): string | null {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return null;
  let best: { v: number; dir: string } | null = null;
  for (const v of readdirSync(root)) {
    const dir = join(root, v, "bin");
    if (/^\d+$/.test(v) && existsSync(join(dir, "postgres")) && existsSync(join(dir, "initdb")) && (!best || Number(v) > best.v)) best = { v: Number(v), dir };
  }
  return best?.dir ?? null;
}

/**
 * Whether a PostgreSQL server can be started here. Under `CI=true` a missing server throws (the run must fail, not
 * skip); outside CI it prints why and returns false.
 */
export function requirePostgres(): boolean {
  if (postgresBinDir()) return true;
  const why = "PostgreSQL server binaries not found under /usr/lib/postgresql/<version>/bin (apt-get install postgresql)";
  if (process.env.CI === "true") throw new Error(`required test tools missing under CI=true: ${why}`);
  console.warn(`skipping: ${why}`);
  return false;
}

/** PIDs of servers this process started and has not stopped; killed at exit so a failed run leaves no daemon. */
const running = new Set<number>();
process.on("exit", () => {
  for (const pid of running) {
    try {
      process.kill(pid, "SIGQUIT");
    } catch {
      /* already gone */
    }
  }
});

/** `cmd` run as the `postgres` user (when we are root) through setpriv, which execs it. */
function asPostgres(cmd: string[], root: boolean): string[] {
  return root ? ["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups", "--", ...cmd] : cmd;
}

/** Runs `cmd` (as `postgres` when we are root) and throws with its output on a non-zero exit. */
async function run(cmd: string[], root: boolean): Promise<void> {
  const argv = asPostgres(cmd, root);
  const p = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe", env: { ...process.env, LC_ALL: "C" } });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`${cmd[0]} exited ${code}: ${err.slice(-2000)} ${out.slice(-1000)}`);
}

/**
 * Starts a cluster: `initdb` (trust auth, UTF8, C locale, no fsync), then `postgres -k <dir> -h 127.0.0.1 -p <free>`,
 * waits until it accepts connections (it prints "ready to accept connections"; polled with a connect, at most 60 s),
 * and creates the role and database `vault`. About 2 s.
 * @throws Error when the binaries are missing or start-up fails (with the server log's tail)
 */
export async function startPostgres(): Promise<TestPostgres> {
  const bin = postgresBinDir();
  if (!bin) throw new Error("PostgreSQL unavailable: apt-get install postgresql");
  const root = process.getuid?.() === 0 || userInfo().uid === 0;
  const base = await tmpDataDir("vault-pg-");
  const data = join(base, "data");
  const sock = join(base, "sock");
  await mkdir(sock);
  const log = join(base, "postgres.log");
  await writeFile(log, "");
  if (root) {
    const u = await idOf("postgres");
    await chmod(base, 0o755);
    for (const p of [base, sock, log]) await chown(p, u.uid, u.gid);
  }
  await run([join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"], root);

  let lastErr = "";
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const args = [join(bin, "postgres"), "-D", data, "-k", sock, "-h", "127.0.0.1", "-p", String(port), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "log_min_messages=warning"];
    const proc: Subprocess = Bun.spawn(asPostgres(args, root), { stdout: "ignore", stderr: Bun.file(log) });
    running.add(proc.pid);
    const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
    const ok = await waitReady(url, proc, 60_000);
    if (!ok) {
      proc.kill("SIGQUIT");
      await proc.exited;
      running.delete(proc.pid);
      lastErr = await Bun.file(log).text().catch(() => "");
      continue;
    }
    const admin = new Bun.SQL(url, { max: 1 });
    await admin.unsafe("CREATE ROLE vault LOGIN SUPERUSER");
    await admin.unsafe("CREATE DATABASE vault OWNER vault");
    await admin.close();
    let stopped: Promise<void> | undefined;
    let n = 0;
    return {
      url: `postgres://vault@127.0.0.1:${port}/vault`,
      port,
      pid: proc.pid,
      async freshDatabase(name) {
        const db = name ?? `t${process.pid}_${Date.now()}_${n++}`;
        const c = new Bun.SQL(url, { max: 1 });
        try {
          await c.unsafe(`CREATE DATABASE "${db}" OWNER vault`);
        } finally {
          await c.close();
        }
        return `postgres://vault@127.0.0.1:${port}/${db}`;
      },
      stop() {
        stopped ??= (async () => {
          proc.kill("SIGTERM");
          const t = setTimeout(() => proc.kill("SIGQUIT"), 10_000);
          await proc.exited;
          clearTimeout(t);
          running.delete(proc.pid);
        })();
        return stopped;
      },
    };
  }
  throw new Error(`postgres did not start: ${lastErr.slice(-2000)}`);
}

/** uid/gid of a system user (from /etc/passwd). */
async function idOf(user: string): Promise<{ uid: number; gid: number }> {
  const line = (await Bun.file("/etc/passwd").text()).split("\n").find((l) => l.startsWith(user + ":"));
  if (!line) throw new Error(`no ${user} user (apt-get install postgresql creates it)`);
  const f = line.split(":");
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

/** Polls a connection until the server answers, the process exits, or `ms` pass. */
async function waitReady(url: string, proc: Subprocess, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  let exited = false;
  proc.exited.then(() => (exited = true));
  for (let delay = 20; Date.now() < deadline && !exited; delay = Math.min(delay * 2, 250)) {
    const c = new Bun.SQL(url, { max: 1, connectionTimeout: 2 });
    try {
      await c.unsafe("SELECT 1");
      return true;
    } catch {
      await Bun.sleep(delay);
    } finally {
      await c.close().catch(() => {});
    }
  }
  return false;
}

/** startCeph: a real S3 engine for tests and benchmarks — a one-node Ceph cluster with the RADOS Gateway on loopback, via ../shared/tools/ceph-rgw.sh. */
import { createServer } from "node:net";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { S3Client, CreateBucketCommand, DeleteBucketCommand } from "@aws-sdk/client-s3";
import { tmpDataDir } from "./tmp.ts";

/** A running Ceph RGW. */
export interface CephRgw {
  /** `http://127.0.0.1:<port>` */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Always `us-east-1` (the default zonegroup refuses other location constraints). */
  region: string;
  /** PIDs of the monitor, OSD and gateway (for benchmarks that pin or measure them). */
  pids: number[];
  /** Stops the monitor, OSD and gateway this helper started (by their PIDs, via `ceph-rgw.sh down`). */
  stop(): Promise<void>;
}

/** Path of the start script (`../shared/tools/ceph-rgw.sh` next to the repository). */
export function cephScript(): string {
  return resolve(import.meta.dir, "../../../shared/tools/ceph-rgw.sh");
}

/** Why Ceph RGW cannot run here, or null when the packages and the script are present. */
export function cephMissing(): string | null {
  for (const bin of ["radosgw", "ceph-mon", "ceph-osd", "monmaptool", "radosgw-admin"]) {
    if (!Bun.which(bin)) return `${bin} not installed (apt-get install --no-install-recommends radosgw ceph-mon ceph-osd)`;
  }
  if (!existsSync(cephScript())) return `${cephScript()} not found`;
  return null;
}

/** PIDs of every cluster this process started and has not stopped; killed at exit so a failed run leaves no daemons. */
const running = new Set<number>();
process.on("exit", () => {
  for (const pid of running) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
});

function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createServer();
    s.once("error", () => res(false));
    s.listen(port, "127.0.0.1", () => s.close(() => res(true)));
  });
}

/** A base port P such that P..P+29 are all free on 127.0.0.1 (the script uses P, P+10..P+29). */
async function freePortRange(): Promise<number> {
  for (let attempt = 0; attempt < 40; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 1200) * 30;
    let ok = true;
    for (let p = base; p < base + 30 && ok; p++) ok = await portFree(p);
    if (ok) return base;
  }
  throw new Error("no free range of 30 ports on 127.0.0.1");
}

/**
 * Starts a one-node Ceph cluster + RGW in a temp dir on a free port range (about 20 s). Retries once on a
 * port race. Throws when the packages are missing (see {@link cephMissing}) or start-up fails (with the log tail).
 */
export async function startCeph(): Promise<CephRgw> {
  const missing = cephMissing();
  if (missing) throw new Error(`Ceph RGW unavailable: ${missing}`);
  let lastErr = "";
  for (let attempt = 0; attempt < 2; attempt++) {
    const dir = join(await tmpDataDir("vault-ceph-"), "c");
    const base = await freePortRange();
    const p = Bun.spawn(["bash", cephScript(), "up", dir, String(base)], { stdout: "pipe", stderr: "pipe" });
    const timer = setTimeout(() => p.kill(), 180_000);
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    clearTimeout(timer);
    const vars: Record<string, string> = {};
    for (const line of out.split("\n")) {
      const m = /^(S3_[A-Z_]+)=(.*)$/.exec(line.trim());
      if (m) vars[m[1]] = m[2];
    }
    const pids: number[] = [];
    for (const n of ["mon", "osd", "rgw"]) {
      const t = await Bun.file(join(dir, "run", `${n}.pid`)).text().catch(() => "");
      if (/^\d+$/.test(t.trim())) pids.push(Number(t.trim()));
    }
    for (const pid of pids) running.add(pid);
    const stop = async () => {
      const d = Bun.spawn(["bash", cephScript(), "down", dir], { stdout: "ignore", stderr: "ignore" });
      await d.exited;
      for (const pid of pids) running.delete(pid);
    };
    if (code === 0 && vars.S3_ENDPOINT && vars.S3_ACCESS_KEY && vars.S3_SECRET_KEY) {
      // The first bucket creation makes RGW create its data pools (several seconds): do it here, once.
      const c = new S3Client({
        endpoint: vars.S3_ENDPOINT,
        region: vars.S3_REGION || "us-east-1",
        forcePathStyle: true,
        credentials: { accessKeyId: vars.S3_ACCESS_KEY, secretAccessKey: vars.S3_SECRET_KEY },
      });
      try {
        await c.send(new CreateBucketCommand({ Bucket: "vault-warmup" }));
        await c.send(new DeleteBucketCommand({ Bucket: "vault-warmup" }));
      } catch (e) {
        await stop();
        throw e;
      } finally {
        c.destroy();
      }
      return {
        pids,
        endpoint: vars.S3_ENDPOINT,
        accessKeyId: vars.S3_ACCESS_KEY,
        secretAccessKey: vars.S3_SECRET_KEY,
        region: vars.S3_REGION || "us-east-1",
        stop,
      };
    }
    await stop();
    const log = await Bun.file(join(dir, "log", "rgw.out")).text().catch(() => "");
    lastErr = `ceph-rgw.sh up exited ${code}: ${err.slice(-2000)} ${log.slice(-1000)}`;
  }
  throw new Error(lastErr);
}

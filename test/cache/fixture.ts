/** Wires a real cache stack for tests: SQLite, fs driver in a temp dir, blob store, artifact store, upstream client, engine, Bun.serve. */
import { join } from "node:path";
import { readdir } from "node:fs/promises";
import { openDb } from "../../core/db/index.ts";
import { createFsDriver } from "../../core/storage/fs.ts";
import { createBlobStore, type BlobStore } from "../../core/storage/blobs.ts";
import { createArtifactStore, type VaultArtifactStore } from "../../core/artifacts.ts";
import { createUpstreamClient } from "../../core/upstream/client.ts";
import { createCacheEngine, type VaultCacheEngine } from "../../core/cache/engine.ts";
import { silentLogger } from "../../core/log.ts";
import { toVaultError } from "../../core/errors.ts";
import { textError, type CacheRequest, type StorageDriver } from "../../core/plugin.ts";
import type { RepositoryConfig, UpstreamDefaults } from "../../core/config/types.ts";
import { startUpstream, type StartUpstreamOptions, type TestUpstream } from "../helpers/upstream.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

/** A running cache stack behind `url`; requests for `/<key>` are served by `engine.serve`. */
export interface CacheFixture {
  url: string;
  up: TestUpstream;
  engine: VaultCacheEngine;
  artifacts: VaultArtifactStore;
  blobs: BlobStore;
  driver: StorageDriver;
  repo: RepositoryConfig;
  dataDir: string;
  /** Files currently in the spool directory. */
  spoolFiles(): Promise<string[]>;
  stop(): Promise<void>;
}

/** Options of {@link cacheFixture}. */
export interface CacheFixtureOptions {
  upstream?: StartUpstreamOptions;
  /** Extra repository config (e.g. `cache: { negativeTtlSeconds: 1 }`). */
  repo?: Partial<RepositoryConfig>;
  /** Overrides of the CacheRequest built for a key (default: `.json` and `meta/…` are mutable, the rest immutable). */
  spec?: (key: string, req: Request) => Partial<CacheRequest>;
  upstreamDefaults?: UpstreamDefaults;
  /** The engine's `tailHash` option (default: the engine's own default for this machine). */
  tailHash?: boolean;
}

/** Starts the stack. Stop it with `stop()` (also stops the fake upstream). */
export async function cacheFixture(o: CacheFixtureOptions = {}): Promise<CacheFixture> {
  const dataDir = await tmpDataDir("vault-cache-");
  const odb = openDb(":memory:");
  const driver = createFsDriver({ root: join(dataDir, "store") });
  const blobs = createBlobStore(odb.db, driver);
  const up = await startUpstream(o.upstream ?? {});
  const repo: RepositoryConfig = { name: "cached", format: "http", type: "proxy", upstream: up.url + "/", ...o.repo };
  const artifacts = createArtifactStore({ db: odb.db, blobs, repo, log: silentLogger });
  const upstream = createUpstreamClient({ repo, defaults: o.upstreamDefaults, log: silentLogger, env: {} });
  const engine = createCacheEngine({ repo, artifacts, blobs, upstream, log: silentLogger, tailHash: o.tailHash });
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 60,
    async fetch(req) {
      const key = decodeURIComponent(new URL(req.url).pathname.slice(1));
      const spec: CacheRequest = {
        key,
        upstreamUrl: `${up.url}/${key}`,
        class: key.endsWith(".json") || key.startsWith("meta/") ? "mutable" : "immutable",
        ...o.spec?.(key, req),
      };
      try {
        return await engine.serve(req, spec);
      } catch (e) {
        return textError(toVaultError(e));
      }
    },
  });
  return {
    url: `http://127.0.0.1:${server.port}`,
    up,
    engine,
    artifacts,
    blobs,
    driver,
    repo,
    dataDir,
    async spoolFiles() {
      return (await readdir(driver.spoolDir())).filter((f) => f.includes(".part-"));
    },
    async stop() {
      await engine.drain(2000);
      await server.stop(true);
      await up.stop();
      artifacts.close();
      odb.close();
    },
  };
}

/** sha256 hex of bytes. */
export function sha256(b: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(b).digest("hex");
}

/** Reads a response body fully while hashing; returns digest, size and when the first byte arrived (epoch ms). */
export async function drainBody(res: Response): Promise<{ sha256: string; size: number; firstByteAt: number }> {
  const h = new Bun.CryptoHasher("sha256");
  let size = 0;
  let firstByteAt = 0;
  const reader = res.body!.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (value.byteLength && !firstByteAt) firstByteAt = Date.now();
    size += value.byteLength;
    h.update(value);
  }
  return { sha256: h.digest("hex"), size, firstByteAt };
}

/** A body whose chunks are sent only when released by the test: no timing guesses. */
export function gatedBody(chunks: Uint8Array[]): {
  body: ReadableStream<Uint8Array>;
  /** Allows `n` more chunks to be sent. */
  release(n?: number): void;
  /** Resolves once `n` chunks have been handed to the server. */
  sent(n: number): Promise<void>;
  /** Makes the body error (the connection is cut mid-body). */
  abort(): void;
} {
  let allowed = 0;
  let i = 0;
  let wake: (() => void) | null = null;
  let failed = false;
  const waiters: { n: number; resolve: () => void }[] = [];
  const notify = () => {
    for (const w of [...waiters]) if (i >= w.n) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  };
  const body = new ReadableStream<Uint8Array>(
    {
      async pull(c) {
        while (i >= allowed && !failed && i < chunks.length) await new Promise<void>((r) => (wake = r));
        if (failed) {
          c.error(undefined); // cuts the connection (a reason would only be printed by Bun.serve)
          return;
        }
        if (i >= chunks.length) {
          c.close();
          return;
        }
        c.enqueue(chunks[i++]);
        notify();
      },
    },
    { highWaterMark: 0 },
  );
  return {
    body,
    release(n = 1) {
      allowed += n;
      const w = wake;
      wake = null;
      w?.();
    },
    sent(n) {
      return i >= n ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ n, resolve }));
    },
    abort() {
      failed = true;
      const w = wake;
      wake = null;
      w?.();
    },
  };
}

/**
 * A node:http upstream that streams `chunks` with a `Content-Length` header (Bun.serve drops Content-Length on
 * stream bodies, node:http keeps it), awaiting `gap()` between chunks and honouring socket backpressure.
 * `onDone` fires after the last byte was handed to the socket.
 */
export async function startLengthUpstream(
  chunks: Uint8Array[],
  gap: () => Promise<void>,
  onDone?: () => void,
): Promise<{ url: string; requests: string[]; stop(): Promise<void> }> {
  const { createServer } = await import("node:http");
  const total = chunks.reduce((n, c) => n + c.byteLength, 0);
  const requests: string[] = [];
  const srv = createServer(async (req, res) => {
    requests.push(req.url ?? "");
    res.writeHead(200, { "content-length": String(total), "content-type": "application/x-tar" });
    for (let i = 0; i < chunks.length; i++) {
      if (i > 0) await gap();
      if (!res.write(chunks[i])) await new Promise<void>((r) => res.once("drain", () => r()));
    }
    res.end(() => onDone?.());
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  const port = (srv.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    stop: () =>
      new Promise<void>((r) => {
        srv.closeAllConnections?.();
        srv.close(() => r());
      }),
  };
}

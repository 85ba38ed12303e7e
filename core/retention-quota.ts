/**
 * The quota of hosted repositories (`retention.maxBytes`, docs/retention.md): uploads that would take the repository's
 * stored bytes over it are refused with VAULT_TOO_LARGE (413), which each plugin renders in its ecosystem's error shape
 * (twine's text, npm's JSON, OCI's error list, S3's XML). Proxy repositories evict instead (core/retention.ts).
 */
import { eq, sum } from "drizzle-orm";
import type { VaultArtifactStore } from "./artifacts.ts";
import type { RepositoryConfig } from "./config/types.ts";
import { tablesOf } from "./db/index.ts";
import { VaultError } from "./errors.ts";
import type { ArtifactPut, Db } from "./plugin.ts";
import { formatBytes } from "./ui/html.ts";

/** One file a write would store. */
type Incoming = { path: string; body: ReadableStream<Uint8Array> | Uint8Array | string; opts?: ArtifactPut };

/** Size of a body when known before reading it: bytes of a buffer or string, else `opts.expect.sizeBytes`. */
function knownSize(f: Incoming): number | undefined {
  if (typeof f.body === "string") return Buffer.byteLength(f.body);
  if (f.body instanceof Uint8Array) return f.body.byteLength;
  return f.opts?.expect?.sizeBytes;
}

/** Total size of a repository's stored rows, bytes. */
export async function storedBytes(db: Db, repository: string): Promise<number> {
  const { artifacts } = tablesOf(db);
  const r = await db
    .select({ n: sum(artifacts.sizeBytes).mapWith(Number) })
    .from(artifacts)
    .where(eq(artifacts.repository, repository));
  return r[0]?.n ?? 0;
}

/** The error of an upload over the quota (413, rendered by the plugin in its own shape). */
export function quotaExceeded(repository: string, maxBytes: number, usedBytes: number, incomingBytes: number | undefined): VaultError {
  const need = incomingBytes === undefined ? "" : `; this upload needs ${formatBytes(incomingBytes)}`;
  return new VaultError(
    "VAULT_TOO_LARGE",
    413,
    `quota exceeded: repository ${repository} holds ${formatBytes(usedBytes)} of its ${formatBytes(maxBytes)} quota (retention.maxBytes)${need}`,
    { reason: "quota", repository, usedBytes, maxBytes, ...(incomingBytes === undefined ? {} : { incomingBytes }) },
  );
}

/**
 * Wraps the artifact store of a hosted repository whose `retention.maxBytes` is set, so `put` and `commit` check the
 * quota before storing anything: the bytes they add (known sizes of buffers and strings, `expect.sizeBytes` of streams,
 * minus the sizes of the rows they replace) must fit under `maxBytes` with the repository's stored bytes; a write of
 * unknown size is refused once the repository is at or over the quota; a write that adds nothing (documents rewritten
 * smaller, deletions) always passes. Under concurrent uploads the limit is soft by at most the uploads in flight.
 * Other repositories' stores are returned unchanged.
 * @throws (from put/commit) VaultError VAULT_TOO_LARGE 413 with `detail.reason = "quota"`
 */
export function withQuota(store: VaultArtifactStore, db: Db, repo: RepositoryConfig): VaultArtifactStore {
  const quota = repo.retention?.maxBytes;
  if (repo.type !== "hosted" || quota === undefined) return store;
  const maxBytes: number = quota;
  const repository = repo.name;

  async function check(files: Incoming[]): Promise<void> {
    let adds = 0;
    let unknown = false;
    for (const f of files) {
      const n = knownSize(f);
      if (n === undefined) unknown = true;
      else adds += n;
      const old = await store.get(f.path);
      if (old) adds -= old.sizeBytes;
    }
    if (adds <= 0 && !unknown) return;
    const used = await storedBytes(db, repository);
    if (used + Math.max(adds, 0) > maxBytes || (unknown && used >= maxBytes)) throw quotaExceeded(repository, maxBytes, used, unknown ? undefined : adds);
  }

  return Object.assign(Object.create(store) as VaultArtifactStore, {
    async put(path: string, body: Incoming["body"], opts?: ArtifactPut) {
      await check([{ path, body, opts }]);
      return store.put(path, body, opts);
    },
    async commit(files: Incoming[]) {
      await check(files);
      return store.commit(files);
    },
  });
}

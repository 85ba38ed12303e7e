/** The audit log (DESIGN.md §6): one `audit_log` row per write, delete and auth change, written synchronously before the response. */
import type { Db, Logger } from "../plugin.ts";
import type { auditLog } from "../db/schema.ts";
import { atomic, dialectOf, exec, tablesOf } from "../db/index.ts";

const remoteAddresses = new WeakMap<Request, string>();

/**
 * Records the peer address of `req` for the audit log. The host calls it with `server.requestIP(req)?.address`
 * when a request arrives (a `Request` carries no peer address of its own; forwarded headers are not trusted).
 */
export function setRemoteAddress(req: Request, address: string | undefined | null): void {
  if (address) remoteAddresses.set(req, address);
}

/** The address recorded by {@link setRemoteAddress}, if any. */
export function remoteAddressOf(req: Request): string | undefined {
  return remoteAddresses.get(req);
}

/** One audit record as the auth core writes it. Times are epoch ms. */
export interface AuditRecord {
  actor: string;
  action: string;
  repository?: string | null;
  path?: string | null;
  detail?: Record<string, unknown>;
  req?: Request;
}

/** Detail keys never written, whatever a caller passes (defence in depth: callers must not pass secrets). */
const SECRET_KEY = /^(authorization|cookie|token|secret)$|pass(word)?|secret_?access|private/i;

function scrub(detail: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(detail)) out[k] = SECRET_KEY.test(k) ? "[redacted]" : v;
  return out;
}

/**
 * Writes audit rows. On SQLite `write` inserts synchronously (bun:sqlite; one small row in WAL mode), so a record is
 * on disk before the response that reported the action; a crash of the request after the call loses nothing. On
 * Postgres `write` starts the insert at once and returns (rows written meanwhile go in the next batch, one batch at a
 * time): a record is normally stored while the response is still being sent, and `flush()` awaits every pending row
 * (the host calls it at shutdown). If an insert fails (e.g. the database stays locked past busy_timeout, or is
 * unreachable) the rows are kept in memory, logged, and retried on the next write or on `flush()`.
 */
export class AuditWriter {
  private pending: (typeof auditLog.$inferInsert)[] = [];
  private readonly sync: boolean;
  /** Postgres: the batch being written (batches never overlap). */
  private chain: Promise<number> = Promise.resolve(0);

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
  ) {
    this.sync = dialectOf(db) === "sqlite";
  }

  /** Appends one record (actor, action, repository, path, detail JSON, remote address, `x-request-id`). */
  write(r: AuditRecord): void {
    const row: typeof auditLog.$inferInsert = {
      at: Date.now(),
      actor: r.actor,
      action: r.action,
      repository: r.repository ?? null,
      path: r.path ?? null,
      detail: r.detail && Object.keys(r.detail).length > 0 ? JSON.stringify(scrub(r.detail)) : null,
      remoteAddr: r.req ? (remoteAddresses.get(r.req) ?? null) : null,
      requestId: r.req?.headers.get("x-request-id")?.slice(0, 128) ?? null,
    };
    this.pending.push(row);
    void this.flush();
  }

  /**
   * Inserts every pending row (in one transaction). On SQLite the insert is done when this returns. Resolves with how
   * many rows are still pending (0 when all were written); never rejects.
   */
  flush(): Promise<number> {
    if (this.sync) return this.writeBatch();
    return (this.chain = this.chain.then(() => this.writeBatch()));
  }

  private async writeBatch(): Promise<number> {
    if (this.pending.length === 0) return 0;
    const rows = this.pending;
    this.pending = [];
    const { auditLog } = tablesOf(this.db);
    try {
      await atomic(this.db, function* (tx) {
        for (const row of rows) yield* exec(tx.insert(auditLog).values(row));
      });
    } catch (e) {
      this.pending = rows.concat(this.pending);
      this.log.error("audit log write failed; will retry", { error: e instanceof Error ? e.message : String(e), pending: this.pending.length });
    }
    return this.pending.length;
  }
}

/** The audit log (DESIGN.md §6): one `audit_log` row per write, delete and auth change, written synchronously before the response. */
import type { Db, Logger } from "../plugin.ts";
import { auditLog } from "../db/schema.ts";

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
 * Writes audit rows. `write` inserts synchronously (bun:sqlite; one small row in WAL mode), so a record is on
 * disk before the response that reported the action; a crash of the request after the call loses nothing.
 * If an insert fails (e.g. the database stays locked past busy_timeout) the row is kept in memory, logged, and
 * retried on the next write or on `flush()`.
 */
export class AuditWriter {
  private pending: (typeof auditLog.$inferInsert)[] = [];

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
  ) {}

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
    this.flush();
  }

  /** Inserts every pending row (in one transaction). Returns how many are still pending (0 when all written). */
  flush(): number {
    if (this.pending.length === 0) return 0;
    const rows = this.pending;
    try {
      this.db.transaction((tx) => {
        for (const row of rows) tx.insert(auditLog).values(row).run();
      });
      this.pending = [];
    } catch (e) {
      this.log.error("audit log write failed; will retry", { error: e instanceof Error ? e.message : String(e), pending: rows.length });
    }
    return this.pending.length;
  }
}

/** Password hashing (Bun.password, argon2id) and a short-lived in-memory cache of verifications keyed by an HMAC, never the plaintext. */
import crypto from "node:crypto";
import { VaultError } from "../errors.ts";

/** Hashes a password with argon2id (Bun.password's PHC string, salt included). */
export function hashPassword(password: string): Promise<string> {
  checkPassword(password);
  return Bun.password.hash(password, { algorithm: "argon2id" });
}

/**
 * Rejects unusable passwords: empty, longer than 1024 bytes (argon2 DoS), or containing NUL/newlines.
 * @throws VaultError VAULT_BAD_REQUEST (400)
 */
export function checkPassword(password: string): void {
  if (password.length === 0) throw new VaultError("VAULT_BAD_REQUEST", 400, "password must not be empty");
  if (Buffer.byteLength(password) > 1024) throw new VaultError("VAULT_BAD_REQUEST", 400, "password longer than 1024 bytes");
  if (/[\0\r\n]/.test(password)) throw new VaultError("VAULT_BAD_REQUEST", 400, "password contains NUL or a line break");
}

interface Entry {
  /** The stored hash the result was computed against: a changed password (any node, the CLI) misses. */
  hash: string;
  ok: boolean;
  /** epoch ms */
  expiresAt: number;
}

/** Options of {@link PasswordVerifier}. */
export interface PasswordVerifierOptions {
  /** How long a successful verification is reused, ms. Default 60 000. */
  okTtlMs?: number;
  /** How long a failed one is reused (repeated wrong passwords cost no argon2), ms. Default 5 000. */
  failTtlMs?: number;
  /** Most entries kept (oldest dropped first). Default 10 000. */
  maxEntries?: number;
  /** argon2 verifications run at once (each takes ~64 MiB); further ones queue. Default 4. */
  maxConcurrent?: number;
  /** Verifications allowed to wait; beyond this they fail at once (a flood of guesses must not exhaust memory). Default 1 000. */
  maxQueued?: number;
}

/**
 * Verifies passwords against argon2id hashes, caching results for a short time so that HTTP Basic on every
 * request does not run argon2 each time (slow, and a DoS vector). Cache keys are HMAC-SHA256 of
 * `user \0 password` under a random per-process key; a cached result is used only while the user's stored hash
 * is unchanged. Concurrent verifications of the same credentials share one argon2 run. Unknown users are
 * verified against a dummy hash so that timing does not reveal which names exist.
 */
export class PasswordVerifier {
  private readonly hmacKey = crypto.randomBytes(32);
  private readonly entries = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<boolean>>();
  private dummyHash?: Promise<string>;
  private readonly okTtlMs: number;
  private readonly failTtlMs: number;
  private readonly maxEntries: number;
  private readonly maxConcurrent: number;
  private readonly maxQueued: number;
  private running = 0;
  private readonly queue: (() => void)[] = [];
  /** Number of argon2 verifications actually run (for tests and metrics). */
  argonRuns = 0;
  /** Most argon2 verifications seen running at once. */
  peakRunning = 0;

  constructor(o: PasswordVerifierOptions = {}) {
    this.okTtlMs = o.okTtlMs ?? 60_000;
    this.failTtlMs = o.failTtlMs ?? 5_000;
    this.maxEntries = o.maxEntries ?? 10_000;
    this.maxConcurrent = o.maxConcurrent ?? 4;
    this.maxQueued = o.maxQueued ?? 1_000;
  }

  /**
   * Whether `password` matches `storedHash` for `user`.
   * @param storedHash the user's argon2 PHC string, or null when the user is unknown or has no password
   */
  async verify(user: string, password: string, storedHash: string | null): Promise<boolean> {
    if (Buffer.byteLength(password) > 1024) return false;
    const hash = storedHash ?? "";
    const k = crypto.createHmac("sha256", this.hmacKey).update(user).update("\0").update(password).digest("base64url");
    const now = Date.now();
    const e = this.entries.get(k);
    if (e && e.hash === hash && e.expiresAt > now) return e.ok;
    const running = this.inflight.get(k);
    if (running) return running;
    const p = this.run(password, storedHash)
      .then((ok) => {
        if (ok === null) return false;
        this.entries.delete(k);
        if (this.entries.size >= this.maxEntries) {
          const oldest = this.entries.keys().next();
          if (!oldest.done) this.entries.delete(oldest.value);
        }
        this.entries.set(k, { hash, ok, expiresAt: Date.now() + (ok ? this.okTtlMs : this.failTtlMs) });
        return ok;
      })
      .finally(() => this.inflight.delete(k));
    this.inflight.set(k, p);
    return p;
  }

  /** Forgets every cached result (after a password change, user removal or disable). */
  clear(): void {
    this.entries.clear();
  }

  /** Runs one argon2 check within the concurrency limit; null when the queue is full (overloaded, not cached). */
  private async run(password: string, storedHash: string | null): Promise<boolean | null> {
    if (this.running >= this.maxConcurrent) {
      if (this.queue.length >= this.maxQueued) return null;
      await new Promise<void>((resolve) => this.queue.push(resolve)); // the finishing run hands its slot over
    } else {
      this.running++;
    }
    try {
      return await this.argon(password, storedHash);
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.running--;
    }
  }

  private async argon(password: string, storedHash: string | null): Promise<boolean> {
    this.argonRuns++;
    this.peakRunning = Math.max(this.peakRunning, this.running);
    if (storedHash === null) {
      this.dummyHash ??= Bun.password.hash(crypto.randomBytes(16).toString("hex"), { algorithm: "argon2id" });
      await Bun.password.verify(password, await this.dummyHash).catch(() => false);
      return false;
    }
    try {
      return await Bun.password.verify(password, storedHash);
    } catch {
      return false;
    }
  }
}

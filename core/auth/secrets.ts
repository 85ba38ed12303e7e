/** Secret handling for the auth core: API token format, hashing + constant-time comparison, keys (settings table or `auth.tokenSecret`), AES-256-GCM sealing. */
import crypto from "node:crypto";
import { eq } from "drizzle-orm";
import type { Db } from "../plugin.ts";
import { dialectOf, tablesOf } from "../db/index.ts";

/* ------------------------------------------------------------------ API tokens */

/** Prefix of every API token the vault issues: `vault_<id>_<secret>`. */
export const TOKEN_PREFIX = "vault_";

/** `vault_` + 16 lower-case hex (token id) + `_` + 43 base64url chars (32 random bytes). */
const TOKEN_RE = /^vault_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

/** A freshly minted API token: the id (stored, shown in lists) and the plaintext (shown once). */
export interface MintedToken {
  /** 16 lower-case hex chars (8 random bytes); primary key of `api_tokens`. */
  id: string;
  /** The secret part: base64url of 32 random bytes. Never stored, never logged. */
  secret: string;
  /** The full token the user keeps: `vault_<id>_<secret>`. */
  token: string;
}

/** Mints a new API token (random id, 32-byte random secret, base64url). */
export function mintToken(): MintedToken {
  const id = crypto.randomBytes(8).toString("hex");
  const secret = crypto.randomBytes(32).toString("base64url");
  return { id, secret, token: `${TOKEN_PREFIX}${id}_${secret}` };
}

/**
 * Splits `vault_<id>_<secret>` into its parts.
 * @returns null when `s` does not have exactly that shape (the secret may itself contain `_`; the id never does)
 */
export function parseToken(s: string): { id: string; secret: string } | null {
  const m = TOKEN_RE.exec(s);
  return m ? { id: m[1], secret: m[2] } : null;
}

/** Lower-case hex sha256 of a UTF-8 string (Bun.CryptoHasher). */
export function sha256Hex(s: string): string {
  return new Bun.CryptoHasher("sha256").update(s).digest("hex");
}

/**
 * Whether `secret` hashes to `storedHashHex` (sha256, hex). Both sides are reduced to 32-byte digests and
 * compared with `crypto.timingSafeEqual`, so the time taken does not depend on where they differ
 * (DESIGN.md §8 "constant-time token comparison"). Token secrets are 256-bit random, so an unsalted fast
 * hash is enough: nothing to brute-force.
 */
export function secretMatches(secret: string, storedHashHex: string): boolean {
  const actual = new Bun.CryptoHasher("sha256").update(secret).digest();
  const expected = Buffer.from(storedHashHex, "hex");
  if (expected.length !== actual.length) return false;
  return crypto.timingSafeEqual(actual, expected);
}

/** Constant-time equality of two byte strings of possibly different lengths (lengths are not secret). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  return crypto.timingSafeEqual(a, b);
}

/* ------------------------------------------------------------------ S3 access keys */

/** A new S3 access key id: `VK` + 18 upper-case hex chars (20 chars, the shape AWS clients expect). */
export function newAccessKeyId(): string {
  return "VK" + crypto.randomBytes(9).toString("hex").toUpperCase();
}

/** A new S3 secret access key: 40 base64url chars (30 random bytes). */
export function newSecretAccessKey(): string {
  return crypto.randomBytes(30).toString("base64url");
}

/* ------------------------------------------------------------------ keys */

/** A symmetric key and its id (first 16 hex of sha256("vault-kid:" + key); reveals nothing about the key). */
export interface Key {
  id: string;
  bytes: Buffer;
}

function keyOf(bytes: Buffer): Key {
  const id = new Bun.CryptoHasher("sha256").update("vault-kid:").update(bytes).digest("hex").slice(0, 16);
  return { id, bytes };
}

/** Settings keys under which generated keys are stored (base64url of 32 random bytes). */
export const SETTING_JWT_SECRET = "auth.jwt_secret";
export const SETTING_SEAL_KEY = "auth.seal_key";

/**
 * The two keys of the auth core: `jwt` signs registry tokens (HS256), `seal` encrypts S3 secret keys.
 *
 * - With `auth.tokenSecret` configured, both are derived from it with HKDF-SHA256 (distinct `info` labels), so
 *   nothing secret needs to be in the database; every node given the same secret agrees.
 * - Otherwise each is generated once (32 random bytes) and kept in the `settings` table, so nodes sharing one
 *   database agree too. `INSERT … ON CONFLICT DO NOTHING` then re-read makes concurrent first starts converge.
 *
 * Keys are looked up by id as well, so tokens signed and secrets sealed under the generated keys stay readable
 * after `tokenSecret` is introduced (the database keys are then only read, never created).
 *
 * SQLite: keys are read (and created) lazily, synchronously. Postgres: {@link KeyRing.init} reads or creates them once
 * (the auth core's `bootstrap` and `authenticate` call it); before that, using a key throws.
 */
export class KeyRing {
  private current: { jwt?: Key; seal?: Key } = {};
  private byId = new Map<string, Key>();
  /** Postgres: the settings rows read by init, by name (undefined = not stored). */
  private stored?: Map<string, Key | undefined>;
  private initDone?: Promise<void>;
  private readonly sync: boolean;

  constructor(
    private readonly db: Db,
    private readonly tokenSecret?: string,
  ) {
    this.sync = dialectOf(db) === "sqlite";
  }

  /**
   * Reads both keys (creating the generated ones when missing, as on first use) so that the synchronous accessors work
   * on Postgres. Idempotent; a failed attempt is retried by the next call. No-op work on SQLite.
   * @throws the driver's error
   */
  init(): Promise<void> {
    if (this.sync) return Promise.resolve();
    return (this.initDone ??= this.loadAll().catch((e) => {
      this.initDone = undefined;
      throw e;
    }));
  }

  /** Whether the keys can be used synchronously now (always on SQLite; after {@link init} on Postgres). */
  ready(): boolean {
    return this.sync || this.stored !== undefined;
  }

  private async loadAll(): Promise<void> {
    const { settings } = tablesOf(this.db);
    const names = [SETTING_JWT_SECRET, SETTING_SEAL_KEY];
    if (!this.tokenSecret) {
      for (const name of names) {
        await this.db
          .insert(settings)
          .values({ key: name, value: crypto.randomBytes(32).toString("base64url"), createdAt: Date.now() })
          .onConflictDoNothing();
      }
    }
    const stored = new Map<string, Key | undefined>();
    for (const name of names) {
      const row = (await this.db.select({ value: settings.value }).from(settings).where(eq(settings.key, name)))[0];
      stored.set(name, row ? settingKey(name, row.value) : undefined);
    }
    this.stored = stored;
  }

  /** The key registry tokens are signed with. */
  jwt(): Key {
    return (this.current.jwt ??= this.load("jwt"));
  }

  /** The key S3 secrets are sealed with. */
  seal(): Key {
    return (this.current.seal ??= this.load("seal"));
  }

  /** A key by id (current or one kept in the settings table), or undefined. */
  byKeyId(purpose: "jwt" | "seal", id: string): Key | undefined {
    const cur = purpose === "jwt" ? this.jwt() : this.seal();
    if (cur.id === id) return cur;
    const cached = this.byId.get(purpose + ":" + id);
    if (cached) return cached;
    const stored = this.readSetting(purpose === "jwt" ? SETTING_JWT_SECRET : SETTING_SEAL_KEY);
    if (stored && stored.id === id) {
      this.byId.set(purpose + ":" + id, stored);
      return stored;
    }
    return undefined;
  }

  private load(purpose: "jwt" | "seal"): Key {
    if (this.tokenSecret) {
      const info = purpose === "jwt" ? "artifact-vault registry token v1" : "artifact-vault seal v1";
      const bytes = Buffer.from(crypto.hkdfSync("sha256", Buffer.from(this.tokenSecret, "utf8"), Buffer.alloc(0), info, 32));
      return keyOf(bytes);
    }
    const name = purpose === "jwt" ? SETTING_JWT_SECRET : SETTING_SEAL_KEY;
    if (this.sync) {
      const { settings } = tablesOf(this.db);
      this.db
        .insert(settings)
        .values({ key: name, value: crypto.randomBytes(32).toString("base64url"), createdAt: Date.now() })
        .onConflictDoNothing()
        .run();
    }
    const k = this.readSetting(name);
    if (!k) throw new Error(`settings row ${name} missing after insert`);
    return k;
  }

  private readSetting(name: string): Key | undefined {
    if (!this.sync) {
      if (!this.stored) throw new Error("auth keys are not loaded yet (KeyRing.init)");
      return this.stored.get(name);
    }
    const { settings } = tablesOf(this.db);
    const row = this.db.select({ value: settings.value }).from(settings).where(eq(settings.key, name)).get();
    return row ? settingKey(name, row.value) : undefined;
  }
}

/** The key a settings row holds. @throws Error when it is not a 32-byte base64url value */
function settingKey(name: string, value: string): Key {
  const bytes = Buffer.from(value, "base64url");
  if (bytes.length !== 32) throw new Error(`settings row ${name} is not a 32-byte base64url key`);
  return keyOf(bytes);
}

/* ------------------------------------------------------------------ sealing */

/**
 * Seals `plaintext` with AES-256-GCM under the ring's seal key. `aad` (e.g. the access key id) is bound as
 * associated data, so a sealed value copied onto another row does not open.
 * @returns `v1.<keyId>.<base64url(iv[12] | ciphertext | tag[16])>`
 */
export function seal(ring: KeyRing, plaintext: string, aad: string): string {
  const key = ring.seal();
  const iv = crypto.randomBytes(12);
  const c = crypto.createCipheriv("aes-256-gcm", key.bytes, iv);
  c.setAAD(Buffer.from(aad, "utf8"));
  const ct = Buffer.concat([c.update(plaintext, "utf8"), c.final()]);
  return `v1.${key.id}.${Buffer.concat([iv, ct, c.getAuthTag()]).toString("base64url")}`;
}

/**
 * Opens a value made by {@link seal}.
 * @throws Error when the format is unknown, the key is not available (sealed under another `tokenSecret`),
 *   or authentication fails (tampered value, wrong `aad`)
 */
export function unseal(ring: KeyRing, sealed: string, aad: string): string {
  const parts = sealed.split(".");
  if (parts.length !== 3 || parts[0] !== "v1") throw new Error("unknown sealed format");
  const key = ring.byKeyId("seal", parts[1]);
  if (!key) throw new Error(`sealed under unknown key ${parts[1]} (was auth.tokenSecret changed?)`);
  const raw = Buffer.from(parts[2], "base64url");
  if (raw.length < 12 + 16) throw new Error("sealed value too short");
  const d = crypto.createDecipheriv("aes-256-gcm", key.bytes, raw.subarray(0, 12));
  d.setAAD(Buffer.from(aad, "utf8"));
  d.setAuthTag(raw.subarray(raw.length - 16));
  return Buffer.concat([d.update(raw.subarray(12, raw.length - 16)), d.final()]).toString("utf8");
}

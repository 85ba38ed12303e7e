/** Shared set-up of the s3 e2e tests: a vault with one `s3` repository on its own listener, access keys, SDK clients and the orphan check. */
import { Database } from "bun:sqlite";
import { readdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import { S3Client } from "@aws-sdk/client-s3";
import { expect } from "bun:test";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import type { RepositoryConfig, VaultConfig } from "../../core/config/types.ts";

/** Access keys declared in the test config: `admin` (an admin user) and `alice` (no repository grant). */
export const KEYS = {
  admin: { id: "VAULTADMINKEY0000001", secret: "adminSecretKey000000000000000000000000000", user: "root" },
  alice: { id: "VAULTALICEKEY0000001", secret: "aliceSecretKey000000000000000000000000000", user: "alice" },
};

/** A running vault with an `s3` repository named `objects`. */
export interface S3Vault {
  vault: StartedVault;
  /** The repository's own listener: buckets at the root (`http://127.0.0.1:<port>`). */
  endpoint: string;
  /** The main listener's mount for clients that accept an endpoint path (`http://127.0.0.1:<port>/objects`). */
  mountUrl: string;
  dataDir: string;
  /** An SDK client on `endpoint` for `who` (path style, us-east-1). */
  client(who?: keyof typeof KEYS, o?: { endpoint?: string; checksums?: boolean }): S3Client;
  /** Environment for awscli / s3cmd child processes with `who`'s keys and no user config. */
  env(who?: keyof typeof KEYS): Record<string, string>;
  stop(): Promise<void>;
}

/**
 * Starts a vault with the `objects` s3 repository (own port, path style) and the two access keys.
 * @param repo extra keys for the repository entry (e.g. `maxObjectSizeBytes`, `buckets`)
 */
export async function startS3Vault(repo: Partial<RepositoryConfig> = {}, extra: Partial<VaultConfig> = {}): Promise<S3Vault> {
  const config: VaultConfig = {
    auth: {
      anonymousRead: false,
      admin: { user: "root", password: "root-password-123" },
      accessKeys: [
        { id: KEYS.admin.id, secret: KEYS.admin.secret, user: KEYS.admin.user },
        { id: KEYS.alice.id, secret: KEYS.alice.secret, user: KEYS.alice.user },
      ],
    },
    repositories: [{ name: "objects", format: "s3", type: "hosted", port: 0, ...repo }],
    ...extra,
  };
  const vault = await startVault({ config });
  const own = vault.listeners.find((l) => l.repository === "objects");
  if (!own) throw new Error("the objects repository has no listener of its own");
  const endpoint = own.url;
  const clients: S3Client[] = [];
  return {
    vault,
    endpoint,
    mountUrl: `${vault.url}/objects`,
    dataDir: vault.dataDir,
    client(who = "admin", o = {}) {
      const k = KEYS[who];
      const c = new S3Client({
        endpoint: o.endpoint ?? endpoint,
        region: "us-east-1",
        forcePathStyle: true,
        credentials: { accessKeyId: k.id, secretAccessKey: k.secret },
        requestChecksumCalculation: o.checksums === false ? "WHEN_REQUIRED" : "WHEN_SUPPORTED",
        responseChecksumValidation: o.checksums === false ? "WHEN_REQUIRED" : "WHEN_SUPPORTED",
      });
      clients.push(c);
      return c;
    },
    env(who = "admin") {
      const k = KEYS[who];
      const home = join(vault.dataDir, `home-${who}`);
      return {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: home,
        AWS_ACCESS_KEY_ID: k.id,
        AWS_SECRET_ACCESS_KEY: k.secret,
        AWS_DEFAULT_REGION: "us-east-1",
        AWS_CONFIG_FILE: join(home, "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE: join(home, "aws-credentials"),
        AWS_EC2_METADATA_DISABLED: "true",
        AWS_PAGER: "",
      };
    },
    async stop() {
      for (const c of clients) c.destroy();
      await vault.stop(1);
    },
  };
}

/** Every file under `dir` (relative paths), or [] when it does not exist. */
export function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

/**
 * The orphan check: no multipart upload rows or part files, no temp files in the store, and every blob file on disk
 * is referenced by at least one artifacts row (so rejected uploads stored nothing). Returns the s3 object paths
 * (`<bucket>/<key>`) recorded for the repository.
 */
export function expectNoOrphans(v: S3Vault): string[] {
  const store = join(v.dataDir, "store");
  const db = new Database(join(v.dataDir, "vault.db"), { readonly: true });
  try {
    expect(db.query("SELECT count(*) AS n FROM s3_uploads").get()).toEqual({ n: 0 });
    expect(db.query("SELECT count(*) AS n FROM s3_parts").get()).toEqual({ n: 0 });
    expect(filesUnder(join(store, "uploads"))).toEqual([]);
    expect(filesUnder(join(store, "tmp")).filter((f) => f.includes(".part-"))).toEqual([]);
    const referenced = new Set(
      (db.query("SELECT DISTINCT blob_digest AS d FROM artifacts WHERE blob_digest IS NOT NULL").all() as { d: string }[]).map((r) => r.d.slice(7)),
    );
    const zero = new Set((db.query("SELECT digest AS d FROM blobs WHERE ref_count = 0").all() as { d: string }[]).map((r) => r.d.slice(7)));
    for (const f of filesUnder(join(store, "blobs"))) {
      const hex = f.split("/").pop()!;
      // a blob is either referenced, or released by a delete and waiting for gc (ref_count 0 row)
      expect(referenced.has(hex) || zero.has(hex)).toBe(true);
    }
    return (db.query("SELECT path FROM artifacts WHERE repository = 'objects' ORDER BY path").all() as { path: string }[]).map((r) => r.path);
  } finally {
    db.close();
  }
}

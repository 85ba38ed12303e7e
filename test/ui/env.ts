/**
 * Shared set-up of the web UI tests: a real vault (in-process, fs store, SQLite or Postgres metadata) with stored data
 * put there by real requests — twine-style uploads to a hosted pypi repository, a pip-style fill of a pypi proxy from a
 * loopback PEP 503 index, downloads through http proxies of a loopback upstream (one of them private), an object with
 * markup in its key uploaded with the AWS SDK — and the users the permission tests need.
 */
import { join } from "node:path";
import { mkdir, writeFile } from "node:fs/promises";
import { S3Client, CreateBucketCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { buildWheel, startPypiIndex, type IndexFile, type TestPypiIndex } from "../helpers/pypi-index.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { twineUploadForm } from "../helpers/python.ts";
import { createAuthCore } from "../../core/auth/index.ts";
import { silentLogger } from "../../core/log.ts";
import type { OpenDb } from "../../core/db/index.ts";
import type { VaultConfig } from "../../core/config/types.ts";

export const PW = "ui-test-password-1";
/** HTTP Basic credentials of a test user. */
export const basic = (user: string, pass = PW) => ({ authorization: "Basic " + btoa(`${user}:${pass}`) });
export const sha256 = (b: Uint8Array | string) => new Bun.CryptoHasher("sha256").update(b).digest("hex");

/** The S3 access key of the admin (declared in the config). */
const S3_KEY = { id: "VAULTUITESTKEY000001", secret: "uiTestSecretKey0000000000000000000000000" };
/** Bucket and key of the object whose name is markup (the XSS tests). */
export const XSS_BUCKET = "xss";
export const XSS_KEY = `<script>window.__xss=1</script><img src=x onerror="window.__xss=2">.txt`;
/** The package name the UI shows for that object: `<bucket>/<directory of the key>` (the key's `/` is in `</script>`). */
export const XSS_PACKAGE = `${XSS_BUCKET}/<script>window.__xss=1<`;
/** The file name shown: the rest of the key. */
export const XSS_FILE = `script><img src=x onerror="window.__xss=2">.txt`;

/** A file uploaded to `pypi-local`. */
export interface Uploaded {
  filename: string;
  version: string;
  bytes: Uint8Array;
  sha256: string;
}

/** The running vault and what was stored in it. */
export interface UiEnv {
  vault: StartedVault;
  index: TestPypiIndex;
  files: TestUpstream;
  /** Uploaded to `pypi-local` (project `ui-demo`): 1.0.0 wheel, 1.1.0 wheel, 1.1.0 sdist. */
  uploads: Uploaded[];
  /** The upstream file fetched through `pypi-proxy`. */
  proxied: IndexFile;
  /** Bytes of `tools/uitool/2.0/uitool-2.0.tar.gz` on the http upstream. */
  toolBytes: Uint8Array;
  stop(): Promise<void>;
}

async function ok(r: Response | Promise<Response>, what: string): Promise<Uint8Array> {
  const res = await r;
  const body = new Uint8Array(await res.arrayBuffer());
  if (res.status !== 200) throw new Error(`${what}: ${res.status} ${new TextDecoder().decode(body).slice(0, 300)}`);
  return body;
}

/**
 * Starts the vault and fills it.
 * @param db a fresh metadata database (test/helpers/metadata.ts) to run on, or undefined for the default SQLite file
 */
export async function startUiEnv(db?: { open: OpenDb; config: VaultConfig["metadata"] }): Promise<UiEnv> {
  const index = await startPypiIndex();
  const root = await tmpDataDir("vault-ui-up-");
  const toolBytes = new TextEncoder().encode("uitool 2.0 release tarball\n".repeat(100));
  await mkdir(join(root, "tools", "uitool", "2.0"), { recursive: true });
  await writeFile(join(root, "tools", "uitool", "2.0", "uitool-2.0.tar.gz"), toolBytes);
  await writeFile(join(root, "tools", "uitool", "2.0", "uitool-2.0.tar.gz.sha256"), sha256(toolBytes) + "\n");
  await mkdir(join(root, "internal", "secret-tool"), { recursive: true });
  await writeFile(join(root, "internal", "secret-tool", "secret-tool-1.0.bin"), "private bytes");
  const files = await startUpstream({ root });

  const dataDir = await tmpDataDir("vault-ui-data-");
  // users before the vault starts: alice may read `secret`, bob has no grant
  const { openDb } = await import("../../core/db/index.ts");
  const opened = db?.open ?? openDb(join(dataDir, "vault.db"));
  const auth = createAuthCore({ db: opened.db, log: silentLogger });
  await auth.addUser({ name: "alice", password: PW, grants: [{ repository: "secret", actions: "read" }] });
  await auth.addUser({ name: "bob", password: PW });
  if (!db) opened.close();

  const config: VaultConfig = {
    ...(db ? { metadata: db.config } : {}),
    auth: {
      anonymousRead: true,
      admin: { user: "admin", password: PW },
      accessKeys: [{ id: S3_KEY.id, secret: S3_KEY.secret, user: "admin" }],
    },
    repositories: [
      { name: "pypi-local", format: "pypi", type: "hosted" },
      { name: "pypi-proxy", format: "pypi", type: "proxy", upstream: index.indexUrl },
      { name: "python", format: "pypi", type: "group", members: ["pypi-local", "pypi-proxy"], writeTo: "pypi-local" },
      { name: "files", format: "http", type: "proxy", upstream: `${files.url}/` },
      { name: "secret", format: "http", type: "proxy", upstream: `${files.url}/`, anonymousRead: false },
      { name: "objects", format: "s3", type: "hosted" },
    ],
  };
  const vault = await startVault({ config, dataDir });
  try {
    // pypi-local: three uploads as twine makes them
    const uploads: Uploaded[] = [];
    const add = async (version: string, filename: string, bytes: Uint8Array) => {
      const res = await fetch(`${vault.url}/pypi-local/`, { method: "POST", body: twineUploadForm({ name: "ui-demo", version, filename, bytes }), headers: basic("admin") });
      if (res.status !== 200) throw new Error(`upload ${filename}: ${res.status} ${await res.text()}`);
      uploads.push({ filename, version, bytes, sha256: sha256(bytes) });
    };
    await add("1.0.0", "ui_demo-1.0.0-py3-none-any.whl", buildWheel("ui_demo", "1.0.0"));
    await add("1.1.0", "ui_demo-1.1.0-py3-none-any.whl", buildWheel("ui_demo", "1.1.0"));
    await add("1.1.0", "ui-demo-1.1.0.tar.gz", Bun.gzipSync(new TextEncoder().encode("ui-demo sdist")));
    // two downloads of the 1.1.0 wheel
    for (let i = 0; i < 2; i++) await ok(fetch(`${vault.url}/pypi-local/files/ui-demo/ui_demo-1.1.0-py3-none-any.whl`), "wheel download");

    // pypi-proxy: a project page and one of its files, as pip fetches them
    const [project, list] = [...index.projects.entries()].find(([, l]) => l.some((f) => f.installable))!;
    const proxied = list.find((f) => f.installable)!;
    const pageUrl = `${vault.url}/pypi-proxy/simple/${project}/`;
    const page = new TextDecoder().decode(await ok(fetch(pageUrl), "project page"));
    const href = [...page.matchAll(/href="([^"]+)"/g)].map((m) => m[1].replace(/&amp;/g, "&")).find((h) => h.includes(proxied.filename));
    if (!href) throw new Error(`no link to ${proxied.filename} on ${pageUrl}`);
    await ok(fetch(new URL(href, pageUrl)), "proxied file");

    // http proxies: a miss, a hit, a remembered 404; the private repository with credentials
    for (let i = 0; i < 2; i++) await ok(fetch(`${vault.url}/files/tools/uitool/2.0/uitool-2.0.tar.gz`), "http file");
    await ok(fetch(`${vault.url}/files/tools/uitool/2.0/uitool-2.0.tar.gz.sha256`), "http checksum file");
    await (await fetch(`${vault.url}/files/tools/uitool/9.9/missing.tar.gz`)).arrayBuffer();
    await ok(fetch(`${vault.url}/secret/internal/secret-tool/secret-tool-1.0.bin`, { headers: basic("alice") }), "private file");

    // s3: an object whose key is markup
    const s3 = new S3Client({
      endpoint: `${vault.url}/objects`,
      region: "us-east-1",
      forcePathStyle: true,
      credentials: { accessKeyId: S3_KEY.id, secretAccessKey: S3_KEY.secret },
    });
    await s3.send(new CreateBucketCommand({ Bucket: XSS_BUCKET }));
    await s3.send(new PutObjectCommand({ Bucket: XSS_BUCKET, Key: XSS_KEY, Body: "markup in a key" }));
    s3.destroy();

    return {
      vault,
      index,
      files,
      uploads,
      proxied,
      toolBytes,
      async stop() {
        await vault.stop(1);
        await index.stop();
        await files.stop();
      },
    };
  } catch (e) {
    await vault.stop();
    await index.stop();
    await files.stop();
    throw e;
  }
}

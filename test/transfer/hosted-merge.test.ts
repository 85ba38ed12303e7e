/**
 * Import of one version into hosted repositories that already hold other versions of the same package, while the
 * target vault runs: the archive brings the exporter's page/document (listing versions it does not carry), and the
 * plugins' `afterImport` leaves the pypi project page and the npm packument listing exactly the stored versions —
 * the imported one and the target's own.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { buildWheel } from "../helpers/pypi-index.ts";
import { npmPublishBody } from "../helpers/npm-registry.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { twineUploadForm } from "../helpers/python.ts";
import type { VaultConfig } from "../../core/config/types.ts";
import { readArchive, sha256, vaultCli, writeConfig } from "./env.ts";

const PW = "pw-xfer-merge";
const ADMIN = { authorization: `Basic ${btoa(`admin:${PW}`)}` };
const config: VaultConfig = {
  auth: { admin: { user: "admin", password: PW } },
  repositories: [
    { name: "pypi-local", format: "pypi", type: "hosted" },
    { name: "npm-local", format: "npm", type: "hosted" },
  ],
};

async function uploadWheel(base: string, version: string): Promise<Uint8Array> {
  const bytes = buildWheel("demo", version);
  const r = await fetch(`${base}/pypi-local/`, { method: "POST", body: twineUploadForm({ name: "demo", version, filename: `demo-${version}-py3-none-any.whl`, bytes }), headers: ADMIN });
  expect(r.status).toBe(200);
  return bytes;
}

async function publish(base: string, version: string): Promise<Uint8Array> {
  const tgz = Bun.gzipSync(new TextEncoder().encode(`acme-x@${version}`));
  const r = await fetch(`${base}/npm-local/acme-x`, { method: "PUT", body: npmPublishBody("acme-x", version, tgz), headers: { ...ADMIN, "content-type": "application/json" } });
  expect(r.status).toBe(201);
  return tgz;
}

describe("import of one version into hosted repositories holding others", () => {
  let A: StartedVault;
  let B: StartedVault;
  beforeAll(async () => {
    A = await startVault({ config });
    B = await startVault({ config });
  });
  afterAll(async () => {
    await A?.stop(1);
    await B?.stop(1);
  });

  test("pypi page and npm packument list the imported version and the target's own, not the exporter's others", async () => {
    const demo1 = await uploadWheel(A.url, "1.0");
    await uploadWheel(A.url, "2.0");
    const x1 = await publish(A.url, "1.0.0");
    await publish(A.url, "2.0.0");
    const demo3 = await uploadWheel(B.url, "3.0");
    await publish(B.url, "3.0.0");

    const archive = join(await tmpDataDir("xfer-merge-"), "one.tar");
    const ex = await vaultCli(["export", "--config", await writeConfig(config), "--data", A.dataDir, "--out", archive, "--package", "demo@1.0", "--package", "acme-x@1.0.0"]);
    expect(ex.code).toBe(0);
    const paths = (await readArchive(archive)).manifest.entries.map((e) => `${e.repository}:${e.path}`);
    // the version's files and records, and the package's documents (which list 2.0 too)
    expect(paths).toContain("pypi-local:files/demo/demo-1.0-py3-none-any.whl");
    expect(paths).toContain("pypi-local:info/demo/demo-1.0-py3-none-any.whl");
    expect(paths).toContain("pypi-local:simple/demo/");
    expect(paths).toContain("npm-local:acme-x/-/acme-x-1.0.0.tgz");
    expect(paths).toContain("npm-local:acme-x#v#1.0.0");
    expect(paths).toContain("npm-local:acme-x#doc");
    expect(paths.some((p) => p.includes("2.0"))).toBe(false);

    const im = await vaultCli(["import", "--config", await writeConfig(config), "--data", B.dataDir, archive]);
    expect(im.code).toBe(0);
    expect(im.out).toContain("pypi-local (pypi hosted): recorded");
    expect(im.out).toContain("indexes regenerated");

    // B's process trusts entries it wrote itself for up to 5 s (core/artifacts.ts hotTtlMs) before it sees another process's writes
    type Page = { files: { filename: string; hashes: { sha256: string } }[]; versions: string[] };
    const pageOf = async () => (await (await fetch(`${B.url}/pypi-local/simple/demo/`, { headers: { accept: "application/vnd.pypi.simple.v1+json" } })).json()) as Page;
    let page = await pageOf();
    for (const t0 = Date.now(); page.files.length < 2 && Date.now() - t0 < 10_000; page = await pageOf()) await Bun.sleep(200);
    expect(page.files.map((f) => [f.filename, f.hashes.sha256])).toEqual([
      ["demo-1.0-py3-none-any.whl", sha256(demo1)],
      ["demo-3.0-py3-none-any.whl", sha256(demo3)],
    ]);
    expect([...page.versions].sort()).toEqual(["1.0", "3.0"]);
    const root = await (await fetch(`${B.url}/pypi-local/simple/`)).text();
    expect(root).toContain("demo");

    const doc = (await (await fetch(`${B.url}/npm-local/acme-x`)).json()) as { versions: Record<string, { dist: { tarball: string } }>; "dist-tags": Record<string, string> };
    expect(Object.keys(doc.versions).sort()).toEqual(["1.0.0", "3.0.0"]);
    expect(doc["dist-tags"].latest).toBe("3.0.0");
    expect(doc.versions["1.0.0"].dist.tarball).toBe(`${B.url}/npm-local/acme-x/-/acme-x-1.0.0.tgz`);
    expect(sha256(await (await fetch(doc.versions["1.0.0"].dist.tarball)).bytes())).toBe(sha256(x1));

    // again: nothing recorded, the same page and packument
    const again = await vaultCli(["import", "--config", await writeConfig(config), "--data", B.dataDir, archive]);
    expect(again.code).toBe(0);
    expect(again.out).not.toMatch(/recorded [1-9]/);
    const doc2 = (await (await fetch(`${B.url}/npm-local/acme-x`)).json()) as { versions: Record<string, unknown> };
    expect(Object.keys(doc2.versions).sort()).toEqual(["1.0.0", "3.0.0"]);
  }, 120_000);
});

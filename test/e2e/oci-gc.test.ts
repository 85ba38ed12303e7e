// `vault gc` on a hosted OCI repository: blobs no manifest references are removed (links by the oci plugin's gc hook,
// files by the blob sweep); referenced blobs and young uploads stay, and the image still pulls afterwards.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { run } from "../../core/cli/commands/gc.ts";
import { startVault } from "../helpers/vault.ts";
import { requireTools } from "../helpers/registry.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import type { VaultConfig } from "../../core/config/types.ts";
import { BUSYBOX_LAYOUT, BUSYBOX_MANIFEST, checkDirImage, mustSkopeo, pseudoRandomBytes, sha256 } from "./oci-env.ts";

const HAVE = requireTools(["skopeo"]);
const PW = "gc-admin-password";

function blobFile(dataDir: string, digest: string): string {
  const hex = digest.slice(7);
  return join(dataDir, "store", "blobs", "sha256", hex.slice(0, 2), hex);
}

describe.skipIf(!HAVE)("vault gc with oci repositories", () => {
  test("unreferenced blobs go, referenced and young ones stay", async () => {
    const base = await tmpDataDir("oci-gc-");
    const dataDir = join(base, "data");
    const config: VaultConfig = {
      server: { dataDir },
      auth: { admin: { user: "admin", password: PW } },
      repositories: [{ name: "hosted", format: "oci", type: "hosted" }],
    };
    const configFile = join(base, "vault.config.json");
    await Bun.write(configFile, JSON.stringify(config));
    const basic = { authorization: "Basic " + btoa(`admin:${PW}`) };

    let vault = await startVault({ config, dataDir });
    const host = `127.0.0.1:${vault.port}`;
    await mustSkopeo(["copy", "--dest-tls-verify=false", "--dest-creds", `admin:${PW}`, "--preserve-digests", `oci:${BUSYBOX_LAYOUT}:1.35.0`, `docker://${host}/hosted/busybox:keep`]);
    const orphan = pseudoRandomBytes(8192, 3);
    const orphanDigest = sha256(orphan);
    expect((await fetch(`${vault.url}/v2/hosted/junk/blobs/uploads/?digest=${orphanDigest}`, { method: "POST", body: orphan as BodyInit, headers: basic })).status).toBe(201);
    // an image pushed, then its manifest deleted: its config blob is unreferenced too
    const cfg = new TextEncoder().encode('{"architecture":"amd64","os":"linux"}');
    const cfgDigest = sha256(cfg);
    expect((await fetch(`${vault.url}/v2/hosted/gone/blobs/uploads/?digest=${cfgDigest}`, { method: "POST", body: cfg as BodyInit, headers: basic })).status).toBe(201);
    const manifest = JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: cfgDigest, size: cfg.byteLength }, layers: [] });
    const put = await fetch(`${vault.url}/v2/hosted/gone/manifests/v1`, { method: "PUT", body: manifest, headers: { ...basic, "content-type": "application/vnd.oci.image.manifest.v1+json" } });
    expect(put.status).toBe(201);
    expect((await fetch(`${vault.url}/v2/hosted/gone/manifests/${sha256(manifest)}`, { method: "DELETE", headers: basic })).status).toBe(202);
    await vault.stop();
    expect(await Bun.file(blobFile(dataDir, orphanDigest)).exists()).toBe(true);

    // young rows are kept with the default minimum age
    const out: string[] = [];
    const io = { out: (s: string) => void out.push(s), err: (s: string) => void out.push(s) };
    expect(await run(["--config", configFile], io)).toBe(0);
    expect(await Bun.file(blobFile(dataDir, orphanDigest)).exists()).toBe(true);

    expect(await run(["--config", configFile, "--min-age-minutes", "0"], io)).toBe(0);
    expect(out.join("")).toContain("plugins removed 2 unreferenced rows in 1 repository");
    expect(await Bun.file(blobFile(dataDir, orphanDigest)).exists()).toBe(false);
    expect(await Bun.file(blobFile(dataDir, cfgDigest)).exists()).toBe(false);

    vault = await startVault({ config, dataDir });
    try {
      const gone = await fetch(`${vault.url}/v2/hosted/junk/blobs/${orphanDigest}`, { method: "HEAD", headers: basic });
      expect(gone.status).toBe(404);
      const dir = join(await tmpDataDir("oci-gc-pull-"), "img");
      await mustSkopeo(["copy", "--src-tls-verify=false", "--src-creds", `admin:${PW}`, `docker://127.0.0.1:${vault.port}/hosted/busybox:keep`, `dir:${dir}`]);
      await checkDirImage(dir, BUSYBOX_MANIFEST);
    } finally {
      await vault.stop();
    }
  }, 120_000);
});

/**
 * e2e: `vault conda mirror|pull-cache|push-cache` (the real CLI as a child process) between a conda channel — the
 * vault's own conda proxy of a loopback copy of the fixture channel — and the vault's own hosted OCI repository (private:
 * the CLI must go through the registry token flow with ORAS_USER/ORAS_PASS). Round trip: mirror → pull-cache gives files
 * with the fixture's sha256; push-cache pushes only what the registry's repodata lacks.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { CONDA_FIXTURES, ZLIB_CHANNEL, sha256Hex, startCondaChannel, type TestCondaChannel } from "../helpers/conda.ts";
import { REPO_ROOT, startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

const T = 120_000;
const PW = "mirror-pass-1";

/** Runs `vault conda <args>` (bun core/cli/bin.ts) and collects its output; bounded to 90 s. */
async function vaultConda(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string }> {
  const p = Bun.spawn([process.execPath, join(REPO_ROOT, "core/cli/bin.ts"), "conda", ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ORAS_USER: "", ORAS_PASS: "", ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = setTimeout(() => p.kill("SIGKILL"), 90_000);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  return { code, out: out + err };
}

describe("vault conda mirror / pull-cache / push-cache against the vault's OCI registry", () => {
  let ch: TestCondaChannel;
  let vault: StartedVault;
  let registry: string;
  let channel: string;
  const creds = { ORAS_USER: "admin", ORAS_PASS: PW };
  const auth = { authorization: "Basic " + btoa(`admin:${PW}`) };

  beforeAll(async () => {
    ch = await startCondaChannel({ shards: false });
    vault = await startVault({
      config: {
        auth: { anonymousRead: true, admin: { user: "admin", password: PW } },
        repositories: [
          { name: "conda", format: "conda", type: "proxy", upstream: ch.url },
          { name: "containers", format: "oci", type: "hosted", anonymousRead: false },
        ],
      },
    });
    registry = `${vault.url}/containers`;
    channel = `${vault.url}/conda/`;
  });
  afterAll(async () => {
    await vault?.stop();
    await ch?.stop();
  });

  test("mirror pushes packages with the conda-oci-mirror layout; pull-cache brings back identical files", async () => {
    const cache = await tmpDataDir("conda-mirror-cache-");
    const dry = await vaultConda(["mirror", "--channel", channel, "-s", "linux-64", "-p", "zlib", "--registry", registry, "--cache-dir", cache, "--dry-run"], creds);
    expect(dry.code).toBe(0);
    expect(dry.out).toContain("would push (dry run)");
    expect((await fetch(`${vault.url}/v2/containers/conda/linux-64/zlib/tags/list`, { headers: auth })).status).toBe(404);

    const anon = await vaultConda(["mirror", "--channel", channel, "-s", "linux-64", "-p", "zlib", "--registry", registry, "--cache-dir", cache]);
    expect(anon.code).toBe(1); // no credentials: the private registry refuses the push
    expect(anon.out).toContain("FAIL");

    const m = await vaultConda(["mirror", "--channel", channel, "-s", "linux-64", "-s", "osx-64", "-p", "zlib", "--registry", registry, "--cache-dir", cache], creds);
    expect(m.code).toBe(0);
    expect(m.out).toContain("mirror: 2 pushed");

    // the layout: tag <version>-<build>, the .conda as the v2 package layer whose digest is the repodata sha256
    const tags = await (await fetch(`${vault.url}/v2/containers/conda/linux-64/zlib/tags/list`, { headers: auth })).json();
    expect(tags.tags).toEqual(["1.2.11-h7b6447c_3"]);
    const man = await (await fetch(`${vault.url}/v2/containers/conda/linux-64/zlib/manifests/1.2.11-h7b6447c_3`, { headers: { ...auth, accept: "application/vnd.oci.image.manifest.v1+json" } })).json();
    expect(man.config).toEqual({ mediaType: "application/vnd.unknown.config.v1+json", digest: "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", size: 0 });
    expect(man.layers.map((l: { mediaType: string }) => l.mediaType)).toEqual(["application/vnd.conda.package.v2", "application/vnd.conda.info.v1.tar+gzip", "application/vnd.conda.info.index.v1+json"]);
    expect(man.layers[0].digest).toBe("sha256:f33afff2144e1d6c4cf2e3e184937db8bf825b4537df74662aea5ee207b6a31b");
    expect(man.layers[0].annotations["org.opencontainers.image.title"]).toBe("zlib-1.2.11-h7b6447c_3.conda");
    expect(man.layers[0].annotations["org.conda.md5"]).toBe("cb23839f06da92ec92c6d2d2d5e0cb4a");
    expect(man.layers[2].annotations["org.opencontainers.image.title"]).toBe("zlib-1.2.11-h7b6447c_3/info/index.json");
    const rtags = await (await fetch(`${vault.url}/v2/containers/conda/linux-64/repodata.json/tags/list`, { headers: auth })).json();
    expect(rtags.tags).toContain("latest");
    expect(rtags.tags.some((t: string) => /^\d{4}\.\d\d\.\d\d\.\d\d\.\d\d$/.test(t))).toBe(true);

    // a second mirror finds the tags and pushes nothing
    const again = await vaultConda(["mirror", "--channel", channel, "-s", "linux-64", "-p", "zlib", "--registry", registry, "--cache-dir", cache], creds);
    expect(again.code).toBe(0);
    expect(again.out).toContain("mirror: 0 pushed, 1 skipped");

    const pulled = await tmpDataDir("conda-pull-cache-");
    const p = await vaultConda(["pull-cache", "--channel-name", "conda", "-s", "linux-64", "-s", "osx-64", "-p", "zlib", "--registry", registry, "--cache-dir", pulled], creds);
    expect(p.code).toBe(0);
    for (const [sub, fn] of [["linux-64", "zlib-1.2.11-h7b6447c_3.conda"], ["osx-64", "zlib-1.2.11-h1de35cc_3.conda"]]) {
      const got = await Bun.file(join(pulled, "conda", sub, fn)).bytes();
      expect(sha256Hex(got)).toBe(sha256Hex(await Bun.file(join(ZLIB_CHANNEL, sub, fn)).bytes()));
    }
    const repodata = JSON.parse(await Bun.file(join(pulled, "conda/linux-64/repodata.json")).text());
    expect(repodata["packages.conda"]["zlib-1.2.11-h7b6447c_3.conda"].sha256).toBe("f33afff2144e1d6c4cf2e3e184937db8bf825b4537df74662aea5ee207b6a31b");
  }, T);

  test("push-cache pushes only local packages the registry's repodata lacks (--all: every one)", async () => {
    const cache = await tmpDataDir("conda-push-cache-");
    const dir = join(cache, "conda", "linux-64");
    await Bun.write(join(dir, "conda-index-pkg-a-1.0-py27h5e241af_0.conda"), Bun.file(join(CONDA_FIXTURES, "packages/conda-index-pkg-a-1.0-py27h5e241af_0.conda")));
    await Bun.write(join(dir, "zlib-1.2.11-h7b6447c_3.conda"), Bun.file(join(ZLIB_CHANNEL, "linux-64/zlib-1.2.11-h7b6447c_3.conda")));
    // the registry's linux-64 repodata comes from the mirror run of the test above when run together; make sure it exists
    await vaultConda(["mirror", "--channel", channel, "-s", "linux-64", "-p", "zlib", "--registry", registry, "--cache-dir", await tmpDataDir("conda-mc-")], creds);

    const r = await vaultConda(["push-cache", "--channel-name", "conda", "-s", "linux-64", "--registry", registry, "--cache-dir", cache], creds);
    expect(r.code).toBe(0);
    expect(r.out).toContain("push-cache: 1 pushed, 1 skipped");
    const tags = await (await fetch(`${vault.url}/v2/containers/conda/linux-64/conda-index-pkg-a/tags/list`, { headers: auth })).json();
    expect(tags.tags).toEqual(["1.0-py27h5e241af_0"]);
    // the registry's repodata now lists both; pull-cache of the new package gives the same bytes
    const pulled = await tmpDataDir("conda-pull2-");
    const p = await vaultConda(["pull-cache", "--channel-name", "conda", "-s", "linux-64", "--registry", registry, "--cache-dir", pulled], creds);
    expect(p.code).toBe(0);
    expect((await readdir(join(pulled, "conda/linux-64"))).sort()).toEqual(["conda-index-pkg-a-1.0-py27h5e241af_0.conda", "repodata.json", "zlib-1.2.11-h7b6447c_3.conda"]);
    expect(sha256Hex(await Bun.file(join(pulled, "conda/linux-64/conda-index-pkg-a-1.0-py27h5e241af_0.conda")).bytes())).toBe(
      "67b07b644105439515cc5c8c22c86939514cacf30c8c574cd70f5f1267a40f19",
    );
    const all = await vaultConda(["push-cache", "--channel-name", "conda", "-s", "linux-64", "--registry", registry, "--cache-dir", cache, "--all"], creds);
    expect(all.code).toBe(0);
    expect(all.out).toContain("push-cache: 2 pushed, 0 skipped");
  }, T);
});

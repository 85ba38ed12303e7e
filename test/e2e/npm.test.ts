/**
 * e2e: the real npm CLI against an npm proxy repository whose upstream is a loopback registry built from the real
 * fixtures (test/helpers/npm-registry.ts). `npm install chalk@4.1.0` pulls the tarball tree (chalk, ansi-styles,
 * supports-color, has-flag, color-convert, color-name); a second install in a fresh project with a fresh npm cache is
 * served from the vault's cache. npm runs with `--userconfig` on an empty file and its own `--cache`
 * (test/helpers/npm-cli.ts; under CI=true a missing npm fails the test).
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { CHALK_TREE as TREE, startNpmRegistry, type TestNpmRegistry } from "../helpers/npm-registry.ts";
import { npmHome, npmTest, runNpm } from "../helpers/npm-cli.ts";


async function installedVersions(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const n of await readdir(join(dir, "node_modules"))) {
    if (n.startsWith(".")) continue;
    out[n] = (await Bun.file(join(dir, "node_modules", n, "package.json")).json()).version;
  }
  return out;
}

describe("npm install through an npm proxy repository", () => {
  let reg: TestNpmRegistry;
  let vault: StartedVault;

  beforeAll(async () => {
    reg = startNpmRegistry();
    vault = await startVault({ config: { repositories: [{ name: "npm-proxy", format: "npm", type: "proxy", upstream: reg.url }] } });
  });
  afterAll(async () => {
    await vault?.stop();
    await reg?.stop();
  });

  /** `npm install chalk@4.1.0` in a new project dir with a new, empty npm cache; asserts success; returns the dir. */
  async function freshInstall(tag: string, registry: string): Promise<string> {
    const dir = await tmpDataDir(`npm-proj-${tag}-`);
    await Bun.write(join(dir, "package.json"), JSON.stringify({ name: `proj-${tag}`, version: "1.0.0", private: true }));
    const r = await runNpm(await npmHome(dir), ["install", "--registry", registry, "chalk@4.1.0"]);
    if (r.code !== 0) console.error(r.out);
    expect(r.code).toBe(0);
    return dir;
  }

  npmTest(
    "install chalk@4.1.0 with its tree; a second fresh install is served from the vault's cache",
    async () => {
      const registry = `${vault.url}/npm-proxy/`;
      const expected = { "ansi-styles": "4.3.0", chalk: "4.1.0", "color-convert": "2.0.1", "color-name": "1.1.4", "has-flag": "4.0.0", "supports-color": "7.2.0" };

      const a = await freshInstall("a", registry);
      expect(await installedVersions(a)).toEqual(expected);
      // the lockfile records vault URLs and the upstream's integrity
      const lock = await Bun.file(join(a, "package-lock.json")).json();
      expect(lock.packages["node_modules/chalk"].resolved).toBe(`${registry}chalk/-/chalk-4.1.0.tgz`);
      expect(lock.packages["node_modules/chalk"].integrity).toStartWith("sha512-");
      // npm asked for abbreviated packuments; each tarball reached the upstream once
      expect(reg.hits.some((h) => h.path === "/chalk" && (h.accept ?? "").includes("application/vnd.npm.install-v1+json"))).toBe(true);
      const firstGets = reg.tarballGets().map((p) => p.split("/").pop()!).sort();
      expect(firstGets).toEqual(TREE);
      const hitsBefore = reg.hits.length;

      const b = await freshInstall("b", registry);
      expect(await installedVersions(b)).toEqual(expected);
      expect(reg.tarballGets().length).toBe(TREE.length);
      expect(reg.hits.length).toBe(hitsBefore); // packuments still fresh in the vault, tarballs cached
      expect(await Bun.file(join(b, "node_modules", "chalk", "package.json")).json()).toMatchObject({ name: "chalk", version: "4.1.0" });
    },
    300_000,
  );
});

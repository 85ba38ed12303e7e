/**
 * e2e: the real npm CLI against an npm proxy repository whose upstream is a loopback registry built from the real
 * fixtures (test/helpers/npm-registry.ts). `npm install chalk@4.1.0` pulls the tarball tree (chalk, ansi-styles,
 * supports-color, has-flag, color-convert, color-name); a second install in a fresh project with a fresh npm cache is
 * served from the vault's cache. npm runs with `--userconfig` on an empty file and its own `--cache`.
 *
 * npm: `npm` on PATH (it comes with node). Under CI=true a missing npm fails the tests; elsewhere they are skipped
 * with the reason printed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { startNpmRegistry, type TestNpmRegistry } from "../helpers/npm-registry.ts";

const CI = process.env.CI === "true";
const NPM = Bun.which("npm");
if (!NPM) console.warn(`npm e2e: ${CI ? "FAILING (CI=true)" : "skipping"}: npm not found on PATH`);
/** Runs npm tests when npm exists, and also under CI (where they then fail loudly). */
const npmTest = NPM || CI ? test : test.skip;
/** The tarballs `chalk@4.1.0` needs, as the upstream sees them. */
const TREE = ["ansi-styles-4.3.0.tgz", "chalk-4.1.0.tgz", "color-convert-2.0.1.tgz", "color-name-1.1.4.tgz", "has-flag-4.0.0.tgz", "supports-color-7.2.0.tgz"];

/** Runs npm in `cwd` with a clean environment (no user/global npmrc), bounded in time. */
async function npm(cwd: string, args: string[], cache: string, timeoutMs = 120_000): Promise<{ code: number; out: string }> {
  if (!NPM) throw new Error("npm is required under CI=true (it comes with node)");
  const userconfig = join(cwd, ".empty-npmrc");
  const globalconfig = join(cwd, ".empty-global-npmrc");
  await Bun.write(userconfig, "");
  await Bun.write(globalconfig, "");
  const env: Record<string, string> = { PATH: process.env.PATH ?? "", HOME: cwd, npm_config_userconfig: userconfig, npm_config_globalconfig: globalconfig, npm_config_update_notifier: "false" };
  const p = Bun.spawn([NPM, ...args, "--userconfig", userconfig, "--cache", cache, "--no-audit", "--no-fund", "--loglevel", "warn"], { cwd, env, stdout: "pipe", stderr: "pipe", timeout: timeoutMs, killSignal: "SIGKILL" });
  const [o, e] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code: await p.exited, out: o + e };
}

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
    const r = await npm(dir, ["install", "--registry", registry, "chalk@4.1.0"], await tmpDataDir(`npm-cache-${tag}-`));
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

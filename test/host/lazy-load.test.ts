/**
 * Memory: a vault loads only what its config uses. Built-in plugins no repository uses, the S3 SDK (fs driver) and
 * piscina (nothing offloaded yet) stay unloaded; errors and checks are unchanged.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { loadPlugins, PluginLoadError } from "../../core/loader.ts";
import { BUILTIN_PLUGINS } from "../../core/plugins-builtin.ts";
import { REPO_ROOT } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

describe('loadPlugins({ builtins: "needed" })', () => {
  test("loads the built-ins the repositories and seed backends use", async () => {
    const plugins = await loadPlugins({ repositories: [{ name: "f", format: "http", type: "proxy" }] }, REPO_ROOT, { builtins: "needed" });
    expect([...plugins.keys()]).toEqual(["http"]);
    const seed = await loadPlugins({ backends: [{ type: "pypi", config: { prefix: "/pypi/" } }] } as never, REPO_ROOT, { builtins: "needed" });
    expect([...seed.keys()]).toEqual(["pypi"]);
  });

  test("an unknown format, or none at all, loads every built-in (so errors list them as usual)", async () => {
    const all = await loadPlugins({}, REPO_ROOT);
    const unknown = await loadPlugins({ repositories: [{ name: "x", format: "nope", type: "proxy" }] }, REPO_ROOT, { builtins: "needed" });
    expect([...unknown.keys()].sort()).toEqual([...all.keys()].sort());
    for (const f of Object.keys(BUILTIN_PLUGINS)) expect(unknown.has(f)).toBe(true);
    const none = await loadPlugins({ repositories: [] }, REPO_ROOT, { builtins: "needed" });
    expect([...none.keys()].sort()).toEqual([...all.keys()].sort());
  });

  test("a plugins: entry clashing with an unused built-in format is still refused", async () => {
    const dir = await tmpDataDir();
    await Bun.write(
      join(dir, "p.ts"),
      `export default { format: "pypi", apiVersion: 1, types: ["proxy"], configSchema: { type: "object", properties: {} }, routes() {}, renderError: () => new Response("x") };\n`,
    );
    let err: unknown;
    try {
      await loadPlugins({ plugins: ["./p.ts"], repositories: [{ name: "f", format: "http", type: "proxy" }] }, dir, { builtins: "needed" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PluginLoadError);
    expect((err as PluginLoadError).errors).toEqual(['plugin "pypi" (./p.ts): format "pypi" is already provided by plugins/pypi/index.ts']);
  });
});

test("an http-only vault on the fs driver loads neither other plugins, the S3 SDK nor piscina until something is offloaded", async () => {
  const dir = await tmpDataDir();
  const script = join(dir, "probe.ts");
  await Bun.write(
    script,
    `import { createVault } from ${JSON.stringify(join(REPO_ROOT, "core/server.ts"))};
const v = await createVault({ server: { dataDir: ${JSON.stringify(join(dir, "data"))}, logLevel: "error" }, repositories: [{ name: "files", format: "http", type: "proxy", upstream: "http://127.0.0.1:9/" }] }, { configDir: ${JSON.stringify(REPO_ROOT)} });
const loaded = (re) => Object.keys(require.cache).some((k) => re.test(k));
const before = { plugins: [...v.plugins.keys()], s3sdk: loaded(/@aws-sdk/), piscina: loaded(/node_modules[\\\\/]piscina[\\\\/]/) };
const ctx = v.repositories.get("files");
const big = ${JSON.stringify(join(dir, "big.bin"))};
await Bun.write(big, new Uint8Array(2 * 1024 * 1024 + 1));
const out = await ctx.pool.runSized("sha256File", { path: big }, 2 * 1024 * 1024 + 1).catch((e) => ({ error: String(e) }));
const after = { piscina: loaded(/node_modules[\\\\/]piscina[\\\\/]/), ran: out.sizeBytes === 2 * 1024 * 1024 + 1 };
console.log(JSON.stringify({ before, after }));
await v.stop(0);
`,
  );
  const p = Bun.spawn([process.execPath, script], { cwd: REPO_ROOT, stdout: "pipe", stderr: "pipe", timeout: 60_000 });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  expect(err).toBe("");
  expect(code).toBe(0);
  const r = JSON.parse(out.trim().split("\n").pop()!);
  expect(r.before).toEqual({ plugins: ["http"], s3sdk: false, piscina: false });
  expect(r.after).toEqual({ piscina: true, ran: true });
}, 60_000);

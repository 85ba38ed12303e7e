/** Plugin loading (core/loader.ts): the example third-party plugin by path and by npm name; bad plugins stop the boot with a clear message (createVault and the CLI). */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { mkdir } from "node:fs/promises";
import { loadPlugins, PluginLoadError } from "../../core/loader.ts";
import { createVault } from "../../core/server.ts";
import { loadConfig } from "../../core/config/load.ts";
import { silentLogger } from "../../core/log.ts";
import { startVault, REPO_ROOT } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

const PLUGIN_TS = JSON.stringify(join(REPO_ROOT, "core/plugin.ts"));
const EXAMPLE = join(REPO_ROOT, "test/fixtures/example-plugin/index.ts");

/** A plugin module's source: `format` plus overrides of the good defaults (as code). */
function pluginSource(format: string, over: Record<string, string> = {}): string {
  const fields: Record<string, string> = {
    format: JSON.stringify(format),
    apiVersion: "1",
    types: '["hosted"]',
    configSchema: '{ type: "object", properties: {} }',
    routes: '(app) => { app.get("/", () => new Response("hi from ' + format + '")); }',
    renderError: "(e) => textError(e)",
    ...over,
  };
  return `import { definePlugin, textError } from ${PLUGIN_TS};
export default definePlugin({ ${Object.entries(fields)
    .map(([k, v]) => `${k}: ${v}`)
    .join(", ")} } as any);
`;
}

async function pluginErrors(p: Promise<unknown>): Promise<string[]> {
  try {
    await p;
  } catch (e) {
    if (e instanceof PluginLoadError) return e.errors;
    throw e;
  }
  throw new Error("expected a PluginLoadError");
}

describe("third-party plugins", () => {
  test("the example plugin loads from a config plugins: path and answers requests", async () => {
    const v = await startVault({
      config: {
        plugins: ["./test/fixtures/example-plugin/index.ts"],
        auth: { admin: { user: "admin", password: "pw-for-tests-1" } },
        repositories: [{ name: "files", format: "static", type: "hosted", maxUploadBytes: 1000 }],
      },
    });
    try {
      const auth = { authorization: "Basic " + btoa("admin:pw-for-tests-1") };
      const put = await fetch(`${v.url}/files/docs/readme.txt`, { method: "PUT", body: "read me", headers: auth });
      expect(put.status).toBe(201);
      const stored = await put.json();
      expect(stored).toMatchObject({ path: "docs/readme.txt", sizeBytes: 7 });
      expect(stored.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
      const get = await fetch(`${v.url}/files/docs/readme.txt`);
      expect(get.status).toBe(200);
      expect(await get.text()).toBe("read me");
      const list = await (await fetch(`${v.url}/files/`)).json();
      expect(list).toEqual({ repository: "files", type: "hosted", files: [{ path: "docs/readme.txt", url: `${v.url}/files/docs/readme.txt`, sizeBytes: 7, digest: stored.digest }] });
      const big = await fetch(`${v.url}/files/big.bin`, { method: "PUT", body: new Uint8Array(2000), headers: auth });
      expect(big.status).toBe(413);
      expect((await big.json()).error.code).toBe("VAULT_TOO_LARGE");
      expect((await fetch(`${v.url}/files/docs/readme.txt`, { method: "DELETE", headers: auth })).status).toBe(204);
      expect((await fetch(`${v.url}/files/docs/readme.txt`)).status).toBe(404);
    } finally {
      await v.stop();
    }
  });

  test("relative plugin paths resolve against the config file's directory", async () => {
    const dir = await tmpDataDir();
    await Bun.write(join(dir, "my-plugin.ts"), `export { default } from ${JSON.stringify(EXAMPLE)};\n`);
    await Bun.write(join(dir, "vault.yml"), "plugins: [./my-plugin.ts]\nrepositories:\n  - { name: s, format: static, type: hosted }\n");
    const { config, configDir } = await loadConfig(join(dir, "vault.yml"));
    const plugins = await loadPlugins(config, configDir);
    expect(plugins.get("static")?.format).toBe("static");
    expect(plugins.has("http")).toBe(true); // built-ins are still there
  });

  test("an npm package name resolves from the config's directory (node_modules)", async () => {
    const dir = await tmpDataDir();
    const pkg = join(dir, "node_modules", "vault-plugin-echo");
    await mkdir(pkg, { recursive: true });
    await Bun.write(join(pkg, "package.json"), JSON.stringify({ name: "vault-plugin-echo", version: "1.0.0", type: "module", main: "index.ts" }));
    await Bun.write(
      join(pkg, "index.ts"),
      pluginSource("echo", { routes: '(app, ctx) => { app.get("/*", ({ request }) => new Response(ctx.repo.name + " echoes " + new URL(request.url).pathname)); }' }),
    );
    const plugins = await loadPlugins({ plugins: ["vault-plugin-echo"] }, dir);
    const v = await startVault({ plugins, config: { repositories: [{ name: "e", format: "echo", type: "hosted" }] } });
    try {
      expect(await (await fetch(`${v.url}/e/some/path`)).text()).toBe("e echoes /e/some/path");
    } finally {
      await v.stop();
    }
  });
});

describe("bad plugins stop the boot with a message naming the plugin", () => {
  const cases: [string, string, string[]][] = [
    [
      "wrong apiVersion",
      pluginSource("future", { apiVersion: "2" }),
      ['plugin "future" (./p.ts): plugin API version 2 is not supported; this vault implements plugin API version 1'],
    ],
    ["schema that does not compile", pluginSource("badschema", { configSchema: '{ type: "object", properties: { x: { type: "strnig" } } }' }), []],
    ["no default export", "export const plugin = {};\n", ["plugin ./p.ts: no default export (expected export default definePlugin({ format, apiVersion, ... }))"]],
    ["routes not a function", pluginSource("noroutes", { routes: "42" }), ['plugin "noroutes" (./p.ts): "routes" must be a function (app, ctx) => void']],
    ["bad types", pluginSource("notypes", { types: '["mirror"]' }), ['plugin "notypes" (./p.ts): "types" must list one or more of "proxy", "hosted", "group"']],
    ["duplicate format", pluginSource("http"), ['plugin "http" (./p.ts): format "http" is already provided by plugins/http/index.ts']],
    ["throws at import", 'throw new Error("cannot start: no licence key");\n', ["plugin ./p.ts: failed to load: cannot start: no licence key"]],
  ];
  for (const [what, source, expected] of cases) {
    test(what, async () => {
      const dir = await tmpDataDir();
      await Bun.write(join(dir, "p.ts"), source);
      const errors = await pluginErrors(loadPlugins({ plugins: ["./p.ts"] }, dir));
      if (what === "schema that does not compile") {
        expect(errors).toHaveLength(1);
        expect(errors[0]).toStartWith('plugin "badschema" (./p.ts): configSchema does not compile: schema is invalid: data/properties/x/type must be equal to one of the allowed values');
      } else expect(errors).toEqual(expected);
    });
  }

  test("a missing file and a missing package", async () => {
    const dir = await tmpDataDir();
    expect(await pluginErrors(loadPlugins({ plugins: ["./nope.ts", "vault-plugin-nonexistent-xyz"] }, dir, { builtins: false }))).toEqual([
      `plugin ./nope.ts: no such file (resolved to ${join(dir, "nope.ts")}; relative paths are resolved against the config file's directory)`,
      `plugin vault-plugin-nonexistent-xyz: cannot find package "vault-plugin-nonexistent-xyz" from ${dir} (install it with npm, or give a path starting with ./)`,
    ]);
  });

  test("routes() throwing stops createVault, naming plugin and repository; nothing stays open", async () => {
    const dir = await tmpDataDir();
    await Bun.write(join(dir, "boom.ts"), pluginSource("boom", { routes: '() => { throw new Error("kaboom"); }' }));
    const plugins = await loadPlugins({ plugins: ["./boom.ts"] }, dir, { builtins: false });
    const dataDir = await tmpDataDir();
    const errors = await pluginErrors(
      createVault({ server: { dataDir }, repositories: [{ name: "ok", format: "boom", type: "hosted" }] }, { configDir: dir, plugins, log: silentLogger }),
    );
    expect(errors).toEqual(['plugin "boom" failed in routes() for repository "ok": kaboom']);
    // the database was closed: it can be opened exclusively again
    const { Database } = await import("bun:sqlite");
    const db = new Database(join(dataDir, "vault.db"));
    db.exec("BEGIN EXCLUSIVE; COMMIT;");
    db.close();
  });

  test("start() throwing stops createVault", async () => {
    const dir = await tmpDataDir();
    await Bun.write(join(dir, "s.ts"), pluginSource("starter", { start: 'async (ctx) => { throw new Error("upstream key missing for " + ctx.repo.name); }' }));
    const plugins = await loadPlugins({ plugins: ["./s.ts"] }, dir, { builtins: false });
    expect(
      await pluginErrors(createVault({ server: { dataDir: await tmpDataDir() }, repositories: [{ name: "st", format: "starter", type: "hosted" }] }, { configDir: dir, plugins, log: silentLogger })),
    ).toEqual(['plugin "starter" failed in start() for repository "st": upstream key missing for st']);
  });

  test("the CLI exits 2 and prints the plugin error", async () => {
    const dir = await tmpDataDir();
    await Bun.write(join(dir, "p.ts"), pluginSource("future", { apiVersion: "7" }));
    await Bun.write(join(dir, "boom.ts"), pluginSource("boom", { routes: '() => { throw new Error("kaboom"); }' }));
    await Bun.write(join(dir, "a.yml"), "plugins: [./p.ts]\nrepositories: []\n");
    await Bun.write(join(dir, "b.yml"), "plugins: [./boom.ts]\nrepositories:\n  - { name: r1, format: boom, type: hosted }\n");
    for (const [file, message] of [
      ["a.yml", 'plugin "future" (./p.ts): plugin API version 7 is not supported; this vault implements plugin API version 1'],
      ["b.yml", 'plugin "boom" failed in routes() for repository "r1": kaboom'],
    ]) {
      const p = Bun.spawn([process.execPath, join(REPO_ROOT, "core/cli/bin.ts"), "serve", "--config", join(dir, file), "--port", "0", "--data", join(dir, "data")], {
        cwd: dir,
        stdout: "pipe",
        stderr: "pipe",
      });
      const timer = setTimeout(() => p.kill("SIGKILL"), 20_000);
      const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
      clearTimeout(timer);
      expect(code).toBe(2);
      expect(err).toBe(`vault serve: plugin errors:\n  ${message}\n`);
    }
  }, 60_000);
});

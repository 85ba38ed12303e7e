/** Loading config files: vault.config.ts by dynamic import, YAML/JSON, `${ENV}` substitution, CLI overrides. */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { tmpDataDir } from "../../test/helpers/tmp.ts";
import { applyOverrides, loadConfig, substituteEnv } from "./load.ts";
import { ConfigError } from "./schema.ts";

async function loadError(p: Promise<unknown>): Promise<string[]> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ConfigError) return e.errors;
    throw e;
  }
  throw new Error("expected a ConfigError");
}

describe("${ENV_VAR} substitution", () => {
  const env = { HOST: "mirror.example", EMPTY: "", PW: "s3cret" };
  test("replaces variables, defaults and escapes", () => {
    const errors: string[] = [];
    const out = substituteEnv(
      {
        a: "https://${HOST}/simple/",
        b: "${NOPE:-fallback}",
        c: "${EMPTY:-used-when-empty}",
        d: "${EMPTY-kept-empty}",
        e: "literal $${HOST} and $${",
        n: 5,
        list: ["${PW}", true],
      },
      env,
      errors,
    );
    expect(errors).toEqual([]);
    expect(out).toEqual({ a: "https://mirror.example/simple/", b: "fallback", c: "used-when-empty", d: "", e: "literal ${HOST} and ${", n: 5, list: ["s3cret", true] });
  });

  test("a missing variable is an error naming the path", () => {
    const errors: string[] = [];
    substituteEnv({ auth: { admin: { user: "admin", password: "${VAULT_TEST_MISSING}" } }, repositories: [{ upstream: "${ALSO_MISSING}/x" }] }, env, errors);
    expect(errors).toEqual([
      "auth.admin.password: environment variable VAULT_TEST_MISSING is not set",
      "repositories[0].upstream: environment variable ALSO_MISSING is not set",
    ]);
  });

  test("malformed references are errors", () => {
    const errors: string[] = [];
    substituteEnv({ a: "${1BAD}", b: "${UNCLOSED" }, env, errors);
    expect(errors).toEqual([
      'a: "${1BAD}" is not a variable reference (${NAME}, ${NAME:-default}; "$${" for a literal "${")',
      'b: unterminated "${" (write "$${" for a literal "${")',
    ]);
  });
});

describe("loadConfig", () => {
  test("vault.config.ts by dynamic import, with env substitution", async () => {
    const dir = await tmpDataDir();
    const types = join(import.meta.dir, "types.ts");
    await Bun.write(
      join(dir, "vault.config.ts"),
      `import { defineConfig } from ${JSON.stringify(types)};
export default defineConfig({
  server: { port: 9999 },
  repositories: [{ name: "files", format: "http", type: "proxy", upstream: "https://\${TEST_UPSTREAM_HOST}/dist/" }],
});
`,
    );
    const r = await loadConfig(undefined, { cwd: dir, env: { TEST_UPSTREAM_HOST: "files.example" } });
    expect(r.configDir).toBe(dir);
    expect(r.file).toBe(join(dir, "vault.config.ts"));
    expect(r.config.repositories![0].upstream).toBe("https://files.example/dist/");
    expect(r.config.server!.port).toBe(9999);
  });

  test("YAML with env substitution", async () => {
    const dir = await tmpDataDir();
    await Bun.write(join(dir, "c.yml"), "server:\n  port: ${PORT:-8090}\nrepositories:\n  - { name: a, format: http, type: proxy, upstream: 'https://${H}/' }\n");
    const r = await loadConfig(join(dir, "c.yml"), { env: { H: "h.example" } });
    expect(r.config).toEqual({ server: { port: "8090" as never }, repositories: [{ name: "a", format: "http", type: "proxy", upstream: "https://h.example/" }] });
  });

  test("JSON", async () => {
    const dir = await tmpDataDir();
    await Bun.write(join(dir, "c.json"), JSON.stringify({ server: { port: 1234 } }));
    expect((await loadConfig(join(dir, "c.json"))).config).toEqual({ server: { port: 1234 } });
  });

  test("bad YAML names file, line and column", async () => {
    const dir = await tmpDataDir();
    const f = join(dir, "bad.yaml");
    await Bun.write(f, "server:\n  port: 8080\n  host: [unclosed\nrepositories: []\n");
    const errors = await loadError(loadConfig(f));
    expect(errors.length).toBeGreaterThan(0);
    expect(errors[0]).toMatch(new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}:\\d+:\\d+: `));
  });

  test("duplicate YAML keys are an error", async () => {
    const dir = await tmpDataDir();
    const f = join(dir, "dup.yml");
    await Bun.write(f, "server:\n  port: 1\n  port: 2\n");
    expect((await loadError(loadConfig(f)))[0]).toContain("Map keys must be unique");
  });

  test("a missing env var stops loading, naming the path", async () => {
    const dir = await tmpDataDir();
    const f = join(dir, "c.yml");
    await Bun.write(f, "auth:\n  admin: { user: admin, password: '${VAULT_TEST_UNSET_PW}' }\n");
    expect(await loadError(loadConfig(f, { env: {} }))).toEqual(["auth.admin.password: environment variable VAULT_TEST_UNSET_PW is not set"]);
  });

  test("missing file, no default export, unsupported type, syntax error", async () => {
    const dir = await tmpDataDir();
    expect(await loadError(loadConfig(join(dir, "nope.yml")))).toEqual([`${join(dir, "nope.yml")}: no such file`]);
    expect((await loadError(loadConfig(undefined, { cwd: dir })))[0]).toStartWith("no config file: looked for vault.config.ts, vault.config.yaml, vault.config.yml, vault.config.json in ");
    await Bun.write(join(dir, "nodefault.ts"), "export const x = 1;\n");
    expect(await loadError(loadConfig(join(dir, "nodefault.ts")))).toEqual([`${join(dir, "nodefault.ts")}: no default export (write export default defineConfig({ ... }))`]);
    await Bun.write(join(dir, "c.toml"), "a = 1\n");
    expect(await loadError(loadConfig(join(dir, "c.toml")))).toEqual([`${join(dir, "c.toml")}: unsupported config file type ".toml" (use .ts, .yml, .yaml or .json)`]);
    await Bun.write(join(dir, "broken.ts"), "export default { repositories: [ ;\n");
    expect((await loadError(loadConfig(join(dir, "broken.ts"))))[0]).toStartWith(`${join(dir, "broken.ts")}: `);
  });
});

test("CLI overrides replace server settings", () => {
  const c = applyOverrides({ server: { port: 1, host: "0.0.0.0", publicUrl: "https://v.example" } }, { port: 0, dataDir: "/tmp/x", logLevel: "debug" });
  expect(c.server).toEqual({ port: 0, host: "0.0.0.0", publicUrl: "https://v.example", dataDir: "/tmp/x", logLevel: "debug" });
});

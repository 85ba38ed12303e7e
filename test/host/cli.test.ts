/** The `vault` CLI (core/cli/bin.ts): help, dispatch, `config check`/`schema`, `serve` flags, exit codes, listening lines, graceful SIGTERM. */
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT, spawnVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

/** Runs the CLI to completion (bounded) and returns its exit code and output. */
async function cli(args: string[], o: { cwd?: string; env?: Record<string, string> } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = Bun.spawn([process.execPath, join(REPO_ROOT, "core/cli/bin.ts"), ...args], {
    cwd: o.cwd ?? REPO_ROOT,
    env: { ...process.env, ...o.env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    timeout: 30_000,
    killSignal: "SIGKILL",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr };
}

const GOOD = `server:
  port: 8081
repositories:
  - { name: apache, format: http, type: proxy, upstream: "http://127.0.0.1:9/dist/" }
  - { name: pypi, format: pypi, type: proxy }
backends:
  - type: http
    config: { prefix: /mirror/, base_url: "http://127.0.0.1:9/mirror" }
`;
const BAD = `repositories:
  - { name: apache, format: http, type: proxy, upstream: "ftp://127.0.0.1/dist/" }
  - { name: apache, format: xyz, type: proxy, colour: red }
  - { name: grp, format: http, type: group, members: [missing] }
server: { port: 99999 }
`;

describe("vault", () => {
  test("--help lists the commands; no command is a usage error", async () => {
    const help = await cli(["--help"]);
    expect(help.code).toBe(0);
    for (const c of ["serve", "config", "user", "token", "prefetch", "gc"]) expect(help.stdout).toMatch(new RegExp(`^  ${c}\\s+\\S`, "m"));
    const none = await cli([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toStartWith("usage: vault <command>");
  }, 60_000);

  test("unknown commands", async () => {
    const unknown = await cli(["frobnicate"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toStartWith('vault: unknown command "frobnicate"');
    const bad = await cli(["../serve"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toStartWith('vault: unknown command "../serve"');
    const serveHelp = await cli(["serve", "--help"]);
    expect(serveHelp.code).toBe(0);
    expect(serveHelp.stdout).toStartWith("usage: vault serve [--config FILE] [--port N] [--host ADDR] [--data DIR] [--log-level L]");
  }, 60_000);
});

describe("vault config", () => {
  test("check prints ok and the resolved repositories", async () => {
    const dir = await tmpDataDir();
    await Bun.write(join(dir, "vault.yml"), GOOD);
    const r = await cli(["config", "check", join(dir, "vault.yml")]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines[0]).toBe("ok");
    expect(lines[1]).toMatch(/^NAME\s+FORMAT\s+TYPE\s+MOUNT\s+UPSTREAM$/);
    expect(lines[2]).toMatch(/^apache\s+http\s+proxy\s+\/apache\/\s+http:\/\/127\.0\.0\.1:9\/dist\/$/);
    expect(lines[3]).toMatch(/^pypi\s+pypi\s+proxy\s+\/pypi\/\s+https:\/\/pypi\.org\/simple\/$/);
    expect(lines[4]).toMatch(/^mirror\s+http\s+proxy\s+\/mirror\/\s+http:\/\/127\.0\.0\.1:9\/mirror\/$/);
    expect(lines[5]).toBe(`listening on 127.0.0.1:8081, data in ${join(dir, "data")}`);
  }, 60_000);

  test("check prints every error and exits 2", async () => {
    const dir = await tmpDataDir();
    const file = join(dir, "bad.yml");
    await Bun.write(file, BAD);
    const r = await cli(["config", "check", file]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines[0]).toBe(`vault config: invalid configuration (${file}):`);
    expect(lines.slice(1)).toEqual([
      "  server.port: must be <= 65535",
      "  repositories[0].upstream: must be an absolute http(s) URL",
      '  repositories[1].name: duplicate name "apache" (also repositories[0])',
      expect.stringMatching(/^  repositories\[1\]\.format: unknown format "xyz" \(loaded: [a-z0-9, ]*http[a-z0-9, ]*\)$/),
      '  repositories[2].type: format "http" does not support type "group" (supported: proxy)',
      '  repositories[2].members[0]: no repository named "missing"',
      '  repositories[1].name: mount "/apache" is already used by repositories[0]',
    ]);
  }, 60_000);

  test("schema prints the assembled JSON Schema", async () => {
    const dir = await tmpDataDir();
    await Bun.write(join(dir, "vault.yml"), GOOD);
    const r = await cli(["config", "schema", "--config", join(dir, "vault.yml")]);
    expect(r.code).toBe(0);
    const schema = JSON.parse(r.stdout);
    expect(schema.properties.repositories.items.required).toEqual(["name", "format", "type"]);
    expect(schema.properties.repositories.items.allOf.map((b: { if: { properties: { format: { const: string } } } }) => b.if.properties.format.const)).toContain("pypi");
  }, 60_000);
});

describe("vault serve", () => {
  test("refuses an invalid config: exit 2, every error printed", async () => {
    const dir = await tmpDataDir();
    const file = join(dir, "bad.yml");
    await Bun.write(file, BAD);
    const r = await cli(["serve", "--config", file, "--port", "0", "--data", join(dir, "data")]);
    expect(r.code).toBe(2);
    expect(r.stderr.split("\n")[0]).toBe(`vault serve: invalid configuration (${file}):`);
    expect(r.stderr.trimEnd().split("\n")).toHaveLength(7); // the 7 errors of "config check" but server.port: --port 0 overrides it
    expect(existsSync(join(dir, "data", "vault.db"))).toBe(false); // nothing was opened
  }, 60_000);

  test("a missing environment variable and bad flags are errors", async () => {
    const dir = await tmpDataDir();
    await Bun.write(join(dir, "env.yml"), "auth:\n  admin: { user: admin, password: '${VAULT_TEST_NOT_SET_PASSWORD}' }\n");
    const env = await cli(["serve", "--config", join(dir, "env.yml"), "--port", "0", "--data", join(dir, "data")], { env: { VAULT_TEST_NOT_SET_PASSWORD: "" } });
    // an empty value is set (only ${X:-d} treats empty as missing); so unset it for real:
    const unset = Bun.spawn([process.execPath, join(REPO_ROOT, "core/cli/bin.ts"), "serve", "--config", join(dir, "env.yml"), "--port", "0", "--data", join(dir, "data")], {
      env: Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== "VAULT_TEST_NOT_SET_PASSWORD")) as Record<string, string>,
      stdout: "pipe",
      stderr: "pipe",
      timeout: 30_000,
    });
    const [stderr, code] = await Promise.all([new Response(unset.stderr).text(), unset.exited]);
    expect(code).toBe(2);
    expect(stderr).toBe(`vault serve: invalid configuration (${join(dir, "env.yml")}):\n  auth.admin.password: environment variable VAULT_TEST_NOT_SET_PASSWORD is not set\n`);
    // set but empty: the schema refuses an empty admin password
    expect(env.code).toBe(2);
    expect(env.stderr).toContain("auth.admin.password: must not be empty");
    const port = await cli(["serve", "--config", join(dir, "env.yml"), "--port", "http"]);
    expect(port.code).toBe(2);
    expect(port.stderr).toStartWith('vault serve: --port: must be an integer 0..65535 (got "http")');
    const level = await cli(["serve", "--log-level", "loud"]);
    expect(level.code).toBe(2);
    expect(level.stderr).toStartWith('vault serve: --log-level: must be debug, info, warn or error (got "loud")');
  }, 60_000);

  test("logs one listening line per listener, honours --data/--log-level, and exits 0 on SIGTERM", async () => {
    const v = await spawnVault({
      config: { repositories: [{ name: "files", format: "http", type: "proxy", upstream: "http://127.0.0.1:9/" }, { name: "own", format: "http", type: "proxy", upstream: "http://127.0.0.1:9/", port: 0 }] },
      args: ["--log-level", "warn"],
    });
    expect(v.listeners).toHaveLength(2);
    expect(v.listeners[0]).toEqual({ url: `http://127.0.0.1:${v.port}`, port: v.port });
    expect(v.listeners[1].repository).toBe("own");
    const lines = v
      .output()
      .split("\n")
      .filter((l) => l.includes('"msg":"listening"'))
      .map((l) => JSON.parse(l));
    expect(lines[0]).toMatchObject({ level: "info", msg: "listening", url: v.url, port: v.port });
    expect((await fetch(`${v.url}/-/health`)).status).toBe(200);
    expect(existsSync(join(v.dataDir, "vault.db"))).toBe(true);
    expect(await v.stop()).toBe(0);
    const out = v.output();
    expect(out).toContain('"msg":"shutting down","signal":"SIGTERM"');
    expect(out).toContain('"msg":"stopped"');
    expect(out).not.toContain('"msg":"request"'); // --log-level warn: no access log
  }, 60_000);
});

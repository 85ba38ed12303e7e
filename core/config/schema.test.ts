/** Config validation: a table of bad configs → exact error paths and messages; seed `backends:` mapping; defaults. */
import { describe, expect, test } from "bun:test";
import { authorizationFor } from "../upstream/client.ts";
import { definePlugin, textError, type VaultPlugin } from "../plugin.ts";
import { checkConfig, validateConfig, buildConfigSchema, createAjv, checkPluginSchema } from "./schema.ts";
import { parseYamlConfig } from "./load.ts";
import { join } from "node:path";
import { tmpDataDir } from "../../test/helpers/tmp.ts";

function fake(format: string, types: VaultPlugin["types"], properties: Record<string, unknown> = {}, defaultUpstream?: string): VaultPlugin {
  return definePlugin({ format, apiVersion: 1, types, configSchema: { type: "object", properties }, defaultUpstream, routes() {}, renderError: textError });
}

const plugins = new Map<string, VaultPlugin>(
  [
    fake("http", ["proxy", "hosted"]),
    fake("pypi", ["proxy", "hosted", "group"], { simplePrefix: { type: "string" }, maxUploadBytes: { type: "integer", minimum: 1 } }, "https://pypi.org/simple/"),
    fake("apt", ["proxy"]),
    fake("oci", ["proxy", "hosted", "group"], { apiPrefix: { type: "string" }, root: { type: "boolean" } }, "https://registry-1.docker.io"),
  ].map((p) => [p.format, p]),
);
const noOci = new Map([...plugins].filter(([k]) => k !== "oci"));

const http = (name: string, extra: Record<string, unknown> = {}) => ({ name, format: "http", type: "proxy", upstream: "https://example.org/", ...extra });

describe("bad configs are refused with the exact path and message", () => {
  const cases: [string, unknown, string[]][] = [
    ["bad upstream URL", { repositories: [http("a"), http("b"), http("c", { upstream: "ftp://example.org/" })] }, ["repositories[2].upstream: must be an absolute http(s) URL"]],
    ["relative upstream", { repositories: [http("a", { upstream: "example.org/x" })] }, ["repositories[0].upstream: must be an absolute http(s) URL"]],
    ["unknown format", { repositories: [http("a"), { name: "b", format: "xyz", type: "proxy" }] }, ['repositories[1].format: unknown format "xyz" (loaded: apt, http, oci, pypi)']],
    ["duplicate names", { repositories: [http("a"), http("a")] }, ['repositories[1].name: duplicate name "a" (also repositories[0])', 'repositories[1].name: mount "/a" is already used by repositories[0]']],
    [
      "missing group members",
      { repositories: [{ name: "p", format: "pypi", type: "proxy" }, { name: "g", format: "pypi", type: "group", members: ["p", "nope"] }] },
      ['repositories[1].members[1]: no repository named "nope"'],
    ],
    [
      "member of another format",
      { repositories: [http("files"), { name: "g", format: "pypi", type: "group", members: ["files"] }] },
      ['repositories[1].members[0]: "files" is a http repository, not pypi'],
    ],
    ["group without members", { repositories: [{ name: "g", format: "pypi", type: "group" }] }, ["repositories[0].members: is required for a group repository"]],
    [
      "writeTo a proxy member",
      { repositories: [{ name: "p", format: "pypi", type: "proxy" }, { name: "g", format: "pypi", type: "group", members: ["p"], writeTo: "p" }] },
      ['repositories[1].writeTo: "p" is a proxy repository; writes go to a hosted member'],
    ],
    [
      "group cycle",
      {
        repositories: [
          { name: "g1", format: "pypi", type: "group", members: ["g2"] },
          { name: "g2", format: "pypi", type: "group", members: ["g1"] },
        ],
      },
      ["repositories[0].members: group cycle g1 → g2 → g1", "repositories[1].members: group cycle g2 → g1 → g2"],
    ],
    ["bad type", { repositories: [http("a", { type: "mirror" })] }, ['repositories[0].type: must be one of "proxy", "hosted", "group"']],
    ["type the plugin lacks", { repositories: [{ name: "a", format: "apt", type: "hosted" }] }, ['repositories[0].type: format "apt" does not support type "hosted" (supported: proxy)']],
    ["unknown repository key", { repositories: [http("a", { upstrem: "https://x.org/" })] }, ['repositories[0].upstrem: unknown key (did you mean "upstream"?)']],
    ["unknown plugin key", { repositories: [{ name: "p", format: "pypi", type: "proxy", colour: "red" }] }, ["repositories[0].colour: unknown key"]],
    ["bad plugin key value", { repositories: [{ name: "p", format: "pypi", type: "hosted", maxUploadBytes: 0 }] }, ["repositories[0].maxUploadBytes: must be >= 1"]],
    ["unknown top-level key", { sever: { port: 1 } }, ['sever: unknown key (did you mean "server"?)']],
    ["unknown server key", { server: { prot: 1 } }, ['server.prot: unknown key (did you mean "port"?)']],
    ["bad port type", { server: { port: "eighty" } }, ["server.port: must be an integer"]],
    ["port out of range", { server: { port: 70000 } }, ["server.port: must be <= 65535"]],
    ["bad name", { repositories: [http("Py_PI")] }, ['repositories[0].name: must match ^[a-z0-9][a-z0-9._-]*$ (lower-case letters, digits, ".", "_", "-")']],
    ["missing name", { repositories: [{ format: "http", type: "proxy", upstream: "https://x.org/" }] }, ["repositories[0].name: is required"]],
    ["proxy without upstream", { repositories: [{ name: "a", format: "http", type: "proxy" }] }, ['repositories[0].upstream: is required for a proxy repository (format "http" has no default upstream)']],
    ["upstream on hosted", { repositories: [http("a", { type: "hosted" })] }, ["repositories[0].upstream: only proxy repositories have an upstream"]],
    ["port collision with server", { server: { port: 9000 }, repositories: [http("a", { port: 9000 })] }, ["repositories[0].port: port 9000 is already used by server.port"]],
    ["port collision between repositories", { repositories: [http("a", { port: 9001 }), http("b", { port: 9001 })] }, ["repositories[1].port: port 9001 is already used by repositories[0]"]],
    ["default port collision", { repositories: [http("a", { port: 8080 })] }, ["repositories[0].port: port 8080 is already used by server.port (default)"]],
    ["prefix collision", { repositories: [http("a", { prefix: "/files/" }), http("files")] }, ['repositories[1].name: mount "/files" is already used by repositories[0]']],
    ["nested mount", { repositories: [http("a", { prefix: "/x" }), http("b", { prefix: "/x/y" })] }, ['repositories[1].prefix: mount "/x/y" lies inside the mount "/x" of repositories[0]']],
    ["reserved mount", { repositories: [http("a", { prefix: "/-/" })] }, ['repositories[0].prefix: mount "/-" is reserved for the vault\'s own endpoints (/-/health, /-/ready, /-/metrics)']],
    ["bad publicUrl", { server: { publicUrl: "vault.example.com" } }, ["server.publicUrl: must be an absolute http(s) URL"]],
    ["bad storage driver", { storage: { driver: "ftp" } }, ['storage.driver: must be one of "fs", "s3"']],
    ["s3 storage without bucket", { storage: { driver: "s3" } }, ["storage.bucket: is required"]],
    ["plugins not a list", { plugins: "./x.ts" }, ["plugins: must be an array"]],
    ["empty plugin entry", { plugins: [""] }, ["plugins[0]: must not be empty"]],
    ["config not an object", [1, 2], ["config: must be an object (export default defineConfig({ ... }))"]],
    [
      "every error at once",
      { server: { port: -1 }, repositories: [http("a", { upstream: "nope" }), { name: "b", format: "xyz", type: "proxy" }] },
      ["server.port: must be >= 0", "repositories[0].upstream: must be an absolute http(s) URL", 'repositories[1].format: unknown format "xyz" (loaded: apt, http, oci, pypi)'],
    ],
  ];
  for (const [what, cfg, expected] of cases) {
    test(what, () => {
      expect(validateConfig(cfg, plugins)).toEqual(expected);
    });
  }

  test("a valid config has no errors and gets defaults", () => {
    const r = checkConfig(
      {
        repositories: [
          { name: "pypi", format: "pypi", type: "proxy" },
          { name: "pypi-local", format: "pypi", type: "hosted", anonymousRead: false },
          { name: "python", format: "pypi", type: "group", members: ["pypi-local", "pypi"], writeTo: "pypi-local" },
          http("files", { port: 0 }),
        ],
      },
      plugins,
      { configDir: "/srv/vault" },
    );
    expect(r.errors).toEqual([]);
    const c = r.config!;
    expect(c.server).toEqual({ host: "127.0.0.1", port: 8080, dataDir: "/srv/vault/data", logLevel: "info", shutdownGraceSeconds: 30 });
    expect(c.storage).toEqual({ driver: "fs" });
    expect(c.metadata).toEqual({ driver: "sqlite" });
    expect(c.auth.anonymousRead).toBe(true);
    expect(c.repositories[0].upstream).toBe("https://pypi.org/simple/"); // the plugin's default upstream
    expect(c.repositories.map((r) => r.anonymousRead)).toEqual([true, false, true, true]);
  });

  test("upstreamCaFile: resolved against the config directory; a missing or non-PEM file is refused", async () => {
    const dir = await tmpDataDir("vault-ca-");
    await Bun.write(join(dir, "ca.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    await Bun.write(join(dir, "junk.pem"), "not a certificate\n");
    const ok = checkConfig({ repositories: [http("a", { upstreamCaFile: "ca.pem" })] }, plugins, { configDir: dir });
    expect(ok.errors).toEqual([]);
    expect(ok.config!.repositories[0].upstreamCaFile).toBe(join(dir, "ca.pem"));
    const bad = checkConfig({ repositories: [http("a", { upstreamCaFile: "nope.pem" }), http("b", { upstreamCaFile: "junk.pem" })] }, plugins, { configDir: dir });
    expect(bad.errors).toEqual([`repositories[0].upstreamCaFile: cannot read ${join(dir, "nope.pem")} (ENOENT)`, `repositories[1].upstreamCaFile: ${join(dir, "junk.pem")} holds no PEM certificate`]);
  });

  test("storage.redirectDownloads is the default of each repository's redirectDownloads (s3 driver only)", () => {
    const storage = { driver: "s3", bucket: "b", endpoint: "http://127.0.0.1:9000", redirectDownloads: true };
    const r = checkConfig({ storage, repositories: [http("a"), http("b", { redirectDownloads: false })] }, plugins);
    expect(r.errors).toEqual([]);
    expect(r.config!.repositories.map((x) => x.redirectDownloads)).toEqual([true, false]);
    const fs = checkConfig({ repositories: [http("a")] }, plugins);
    expect(fs.config!.repositories[0].redirectDownloads).toBeUndefined();
  });

  test("env-var strings for numbers are coerced (\"8080\" → 8080)", () => {
    const r = checkConfig({ server: { port: "8081" } }, plugins);
    expect(r.errors).toEqual([]);
    expect(r.config!.server.port).toBe(8081);
  });
});

describe("the seed's backends: YAML", () => {
  // The seed read-through cache's config-sample.yml shape (upstream hosts are placeholders here).
  const seedYaml = `
http_host: localhost
http_port: 8080
cache_dir: /tmp/artifact_cache
log_level: INFO
backends:
  - type: pypi
    config:
      prefix: /pypi/
      index_url: https://pypi.org/simple
  - type: dockerhub
    config:
      prefix: /dockerhub/
      registry_url: https://registry.hub.docker.com
      auth_url: https://auth.docker.io
  - type: apt
    config:
      prefix: /ubuntu/
      mirror_url: http://apt-mirror.example/ubuntu/
  - type: http
    config:
      prefix: /apache/
      base_url: https://archive.apache.org
`;

  test("maps onto proxy repositories at the seed's prefixes", () => {
    const r = checkConfig(parseYamlConfig(seedYaml), plugins, { configDir: "/etc/vault" });
    expect(r.errors).toEqual([]);
    const c = r.config!;
    expect(c.server).toMatchObject({ host: "localhost", port: 8080, dataDir: "/tmp/artifact_cache", logLevel: "info" });
    expect(c.repositories.map(({ name, format, type, prefix, upstream }) => ({ name, format, type, prefix, upstream }))).toEqual([
      { name: "pypi", format: "pypi", type: "proxy", prefix: "/pypi", upstream: "https://pypi.org/simple/" },
      { name: "dockerhub", format: "oci", type: "proxy", prefix: "/dockerhub", upstream: "https://registry.hub.docker.com" },
      { name: "ubuntu", format: "apt", type: "proxy", prefix: "/ubuntu", upstream: "http://apt-mirror.example/ubuntu/" },
      { name: "apache", format: "http", type: "proxy", prefix: "/apache", upstream: "https://archive.apache.org/" },
    ]);
    // pip's index URL is http://host:port/pypi/ (project pages at /pypi/<project>/), the registry API at /dockerhub/<image>/…
    expect(c.repositories[0].simplePrefix).toBe("");
    expect(c.repositories[1].apiPrefix).toBe("");
    expect(r.warnings).toEqual(["backends[1].config.auth_url: accepted but has no effect (the registry's token service is discovered from its WWW-Authenticate challenge)"]);
    expect((c as unknown as Record<string, unknown>).backends).toBeUndefined();
  });

  test("empty seed credentials (an unset ${VAR:-}) mean anonymous upstream access", () => {
    const yaml = `backends:\n  - type: dockerhub\n    config:\n      prefix: /dockerhub/\n      username: ""\n      password: ""\n  - type: http\n    config:\n      prefix: /files/\n      base_url: https://files.example/\n      username: bob\n      password: ""\n`;
    const r = checkConfig(parseYamlConfig(yaml), plugins, { configDir: "/etc/vault" });
    expect(r.errors).toEqual([]);
    expect(r.config!.repositories[0].upstreamAuth).toBeUndefined();
    expect(r.config!.repositories[1].upstreamAuth).toEqual({ username: "bob" });
    expect(authorizationFor({ username: "", password: "" })).toBeUndefined();
    expect(authorizationFor({ username: "bob" })).toBe("Basic " + Buffer.from("bob:").toString("base64"));
  });

  test("a missing plugin is named (dockerhub needs oci)", () => {
    expect(validateConfig(parseYamlConfig(seedYaml), noOci)).toEqual([
      'backends[1].type: "dockerhub" backends are served by the "oci" plugin, which is not loaded (loaded: apt, http, pypi)',
    ]);
  });

  test("errors name the seed keys", () => {
    const bad = {
      backends: [
        { type: "http", config: { prefix: "/apache/", base_url: "ftp://archive.example/" } },
        { type: "http", config: { prefix: "/x/" } },
        { type: "pypi", config: { prefix: "/pypi/", colour: "red" } },
        { type: "huggingface", config: { prefix: "/hf/" } },
        { type: "http" },
        { type: "http", config: { prefix: "/a b/", base_url: "https://example.org" } },
      ],
      log_level: "LOUD",
    };
    expect(validateConfig(bad, plugins)).toEqual([
      "backends[0].config.base_url: must be an absolute http(s) URL",
      "backends[2].config.colour: unknown key",
      "backends[4].config: is required",
      "backends[5].config.prefix: must be a URL path such as /apache/ (letters, digits, . _ ~ -)",
      "log_level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
      'backends[1].config.base_url: is required for a proxy repository (format "http" has no default upstream)',
      'backends[3].type: unknown backend type "huggingface" (seed types: http, pypi, dockerhub, apt; or a loaded format: apt, http, oci, pypi)',
    ]);
  });

  test("seed backends and native repositories together; names do not clash", () => {
    const r = checkConfig({ repositories: [http("apache")], backends: [{ type: "http", config: { prefix: "/mirror/apache/", base_url: "https://archive.apache.org/dist" } }] }, plugins);
    expect(r.errors).toEqual([]);
    expect(r.config!.repositories.map((x) => [x.name, x.prefix ?? null])).toEqual([
      ["apache", null],
      ["mirror-apache", "/mirror/apache"],
    ]);
  });

  test("a plugin without the layout key is refused with a reason", () => {
    const bare = new Map(plugins);
    bare.set("pypi", fake("pypi", ["proxy"], {}, "https://pypi.org/simple/"));
    expect(validateConfig({ backends: [{ type: "pypi", config: { prefix: "/pypi/" } }] }, bare)).toEqual([
      'backends[0].type: the "pypi" plugin has no "simplePrefix" setting, which keeps the seed\'s URL layout under /pypi/ (simplePrefix: "")',
    ]);
  });
});

describe("schema assembly", () => {
  test("one schema compiles with every plugin's part", () => {
    const validate = createAjv().compile(buildConfigSchema(plugins));
    expect(validate({ repositories: [{ name: "d", format: "oci", type: "proxy", root: true }] })).toBe(true);
    expect(validate({ repositories: [{ name: "d", format: "oci", type: "proxy", root: "yes" }] })).toBe(false);
  });

  test("a plugin schema that does not compile is reported", () => {
    expect(checkPluginSchema({ type: "object", properties: { x: { type: "strnig" } } })).toContain("schema is invalid");
    expect(checkPluginSchema({ properties: {} })).toBe('must be a JSON Schema object { type: "object", properties: {...} }');
    expect(checkPluginSchema({ type: "object", properties: { u: { type: "string", format: "http-url" } } })).toBeUndefined();
  });
});

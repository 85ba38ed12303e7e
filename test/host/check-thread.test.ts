/** `vault serve`'s config check on a short-lived thread (core/config/check-thread.ts): same results and errors as in-thread. */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { checkConfigInThread } from "../../core/config/check-thread.ts";
import { ConfigError } from "../../core/config/schema.ts";
import { PluginLoadError } from "../../core/loader.ts";
import { UsageError } from "../../core/cli/args.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

test("a valid file comes back resolved: defaults, CLI overrides, plugin default upstream, seed backends folded in", async () => {
  const dir = await tmpDataDir("vault-check-thread-");
  const file = join(dir, "v.yml");
  await Bun.write(file, "backends:\n  - type: pypi\n    config: { prefix: /pypi/ }\nrepositories:\n  - { name: files, format: http, type: proxy, upstream: 'http://127.0.0.1:9/' }\n");
  const r = await checkConfigInThread({ config: file, port: "0", data: "d" }, dir);
  expect(r.file).toBe(file);
  expect(r.configDir).toBe(dir);
  expect(r.config.server).toMatchObject({ port: 0, host: "127.0.0.1", dataDir: join(dir, "d") });
  const names = r.config.repositories.map((x) => `${x.name}:${x.format}:${x.upstream}`);
  expect(names).toContain("files:http:http://127.0.0.1:9/");
  expect(r.config.repositories.find((x) => x.format === "pypi")?.upstream).toMatch(/^https:\/\//);
});

test("errors cross the thread as the same classes with the same lines", async () => {
  const dir = await tmpDataDir("vault-check-thread-");
  const bad = join(dir, "bad.yml");
  await Bun.write(bad, "repositories:\n  - { name: x, format: http, type: proxy, upstream: 'ftp://nope' }\n");
  const e1 = await checkConfigInThread({ config: bad }, dir).catch((e) => e);
  expect(e1).toBeInstanceOf(ConfigError);
  expect((e1 as ConfigError).errors).toEqual(["repositories[0].upstream: must be an absolute http(s) URL"]);
  expect((e1 as ConfigError).source).toBe(bad);

  const plug = join(dir, "plug.yml");
  await Bun.write(plug, "plugins: ['./missing-plugin.ts']\nrepositories: []\n");
  const e2 = await checkConfigInThread({ config: plug }, dir).catch((e) => e);
  expect(e2).toBeInstanceOf(PluginLoadError);
  expect((e2 as PluginLoadError).errors.join("\n")).toContain("missing-plugin.ts");

  const e3 = await checkConfigInThread({ config: bad, port: "99999" }, dir).catch((e) => e);
  expect(e3).toBeInstanceOf(UsageError);
  expect((e3 as Error).message).toContain("--port");
});

/** The retention keys of the config: shapes, and what each repository type and format accepts (core/config/schema.ts). */
import { describe, expect, test } from "bun:test";
import { checkConfig } from "../../core/config/schema.ts";
import { loadPlugins } from "../../core/loader.ts";
import { REPO_ROOT } from "../helpers/vault.ts";
import { retentionIntervalMinutes } from "../../core/retention.ts";
import type { RepositoryConfig, VaultConfig } from "../../core/config/types.ts";

const plugins = await loadPlugins({}, REPO_ROOT);
const repo = (r: Partial<RepositoryConfig> & Pick<RepositoryConfig, "name" | "format" | "type">): RepositoryConfig =>
  r.type === "proxy" && r.format !== "pypi" && r.format !== "oci" ? { upstream: "https://example.org/", ...r } : r;

describe("retention config", () => {
  test("policies each type and format supports are accepted, with the job's settings", () => {
    const config: VaultConfig = {
      retention: { intervalMinutes: 30, gcMinAgeMinutes: 10 },
      repositories: [
        repo({ name: "pypi", format: "pypi", type: "proxy", retention: { maxAgeDays: 365, unusedForDays: 30.5, keepVersions: 3, maxBytes: 1e9 } }),
        repo({ name: "files", format: "http", type: "proxy", retention: { unusedForDays: 7, maxBytes: 1024 } }),
        repo({ name: "npm-local", format: "npm", type: "hosted", retention: { keepVersions: 10, maxAgeDays: 720, maxBytes: 1e9 } }),
        repo({ name: "images", format: "oci", type: "hosted", retention: { keepVersions: 5 } }),
        repo({ name: "team", format: "pypi", type: "hosted", retention: { maxBytes: 5e8 } }),
        repo({ name: "objects", format: "s3", type: "hosted", retention: { maxBytes: 5e8 } }),
      ],
    };
    const r = checkConfig(config, plugins);
    expect(r.errors).toEqual([]);
    expect(retentionIntervalMinutes(r.config!)).toBe(30);
    // default: 60 minutes when a repository has a policy, off otherwise; 0 turns it off
    expect(retentionIntervalMinutes(checkConfig({ repositories: config.repositories }, plugins).config!)).toBe(60);
    expect(retentionIntervalMinutes(checkConfig({ repositories: [repo({ name: "p", format: "pypi", type: "proxy" })] }, plugins).config!)).toBe(0);
    expect(retentionIntervalMinutes(checkConfig({ retention: { intervalMinutes: 0 }, repositories: config.repositories }, plugins).config!)).toBe(0);
  });

  test("what a type or format cannot do is an error naming the key", () => {
    const r = checkConfig(
      {
        retention: { intervalMinutes: -1, everyDay: true },
        repositories: [
          repo({ name: "pypi", format: "pypi", type: "proxy" }),
          repo({ name: "python", format: "pypi", type: "group", members: ["pypi"], retention: { maxBytes: 10 } }),
          repo({ name: "files", format: "http", type: "proxy", retention: { keepVersions: 2 } }),
          repo({ name: "team", format: "pypi", type: "hosted", retention: { keepVersions: 2, unusedForDays: 30, maxBytes: 100 } }),
          repo({ name: "bad", format: "npm", type: "hosted", retention: { keepVersions: 0, maxBytes: 1.5, maxAgeDays: 0, keepAll: true } as never }),
        ],
      },
      plugins,
    );
    expect(r.errors.sort()).toEqual(
      [
        "retention.intervalMinutes: must be >= 0",
        'retention.everyDay: unknown key',
        "repositories[1].retention: group repositories hold no files of their own; set retention on their members",
        'repositories[2].retention.keepVersions: format "http" does not order package versions (its plugin has no compareVersions)',
        // repositories[3]: hosted pypi takes every policy (its plugin deletes versions)
        "repositories[4].retention.keepVersions: must be >= 1",
        "repositories[4].retention.maxBytes: must be an integer",
        "repositories[4].retention.maxAgeDays: must be > 0",
        'repositories[4].retention.keepAll: unknown key',
      ].sort(),
    );
  });
});

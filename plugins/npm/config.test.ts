/** The npm plugin's config rules: a proxy must name its upstream (no built-in default); hosted and group keys. */
import { describe, expect, test } from "bun:test";
import { validateConfig } from "../../core/config/schema.ts";
import type { VaultPlugin } from "../../core/plugin.ts";
import npm from "./index.ts";

const plugins = new Map<string, VaultPlugin>([["npm", npm as unknown as VaultPlugin]]);

describe("npm repository config", () => {
  test("upstream is required for a proxy", () => {
    expect(npm.defaultUpstream).toBeUndefined();
    const errs = validateConfig({ repositories: [{ name: "npm", format: "npm", type: "proxy" }] }, plugins);
    expect(errs).toEqual(['repositories[0].upstream: is required for a proxy repository (format "npm" has no default upstream)']);
    expect(validateConfig({ repositories: [{ name: "npm", format: "npm", type: "proxy", upstream: "http://127.0.0.1:1/" }] }, plugins)).toEqual([]);
  });
  test("hosted (maxUploadBytes, loginTokenTtlSeconds) and group (members, writeTo) are accepted; bad values are not", () => {
    const ok = validateConfig(
      {
        repositories: [
          { name: "npm-local", format: "npm", type: "hosted", maxUploadBytes: 1024, loginTokenTtlSeconds: 3600 },
          { name: "npm-all", format: "npm", type: "group", members: ["npm-local"], writeTo: "npm-local" },
        ],
      },
      plugins,
    );
    expect(ok).toEqual([]);
    const errs = validateConfig({ repositories: [{ name: "npm-local", format: "npm", type: "hosted", maxUploadBytes: 0 }] }, plugins);
    expect(errs.length).toBe(1);
    expect(errs[0]).toContain("maxUploadBytes");
  });
});

/** The npm plugin's config rules: a proxy must name its upstream (no built-in default); only proxy repositories exist yet. */
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
  test("hosted and group are not supported yet", () => {
    const errs = validateConfig({ repositories: [{ name: "npm", format: "npm", type: "hosted" }] }, plugins);
    expect(errs.length).toBe(1);
    expect(errs[0]).toContain('does not support type "hosted"');
  });
});

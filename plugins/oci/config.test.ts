// The oci plugin's configuration: its keys validated by the one config schema (errors name the path), one root repository at most.
import { describe, expect, test } from "bun:test";
import { checkConfig } from "../../core/config/schema.ts";
import type { VaultPlugin } from "../../core/plugin.ts";
import oci from "./index.ts";
import { startVault } from "../../test/helpers/vault.ts";

const plugins = new Map<string, VaultPlugin>([["oci", oci as unknown as VaultPlugin]]);

describe("oci config", () => {
  test("valid keys pass; defaults fill the Docker Hub upstream", () => {
    const r = checkConfig(
      {
        repositories: [
          { name: "hub", format: "oci", type: "proxy", root: true, tagTtlSeconds: 60, namespaces: { "quay.io": { upstream: "https://quay.io" } } },
          { name: "images", format: "oci", type: "hosted", allowDelete: false, maxManifestBytes: 8388608, uploadTtlSeconds: 3600 },
          { name: "all", format: "oci", type: "group", members: ["images", "hub"], writeTo: "images" },
        ],
      },
      plugins,
    );
    expect(r.errors).toEqual([]);
    expect(r.config!.repositories[0].upstream).toBe("https://registry-1.docker.io");
  });
  test("bad values are reported with their path", () => {
    const r = checkConfig(
      {
        repositories: [
          { name: "hub", format: "oci", type: "proxy", apiPrefix: "../", tagTtlSeconds: -1, namespaces: { "quay.io": { upstream: "ftp://x" } }, bogus: 1 },
        ],
      },
      plugins,
    );
    const text = r.errors.join("\n");
    expect(text).toContain("repositories[0].apiPrefix");
    expect(text).toContain("repositories[0].tagTtlSeconds");
    expect(text).toContain("repositories[0].namespaces");
    expect(text).toContain("bogus");
  });
  test("two root repositories stop the boot", async () => {
    const boot = startVault({
      config: {
        repositories: [
          { name: "a", format: "oci", type: "proxy", upstream: "http://127.0.0.1:9/", root: true },
          { name: "b", format: "oci", type: "proxy", upstream: "http://127.0.0.1:9/", root: true },
        ],
      },
      plugins,
    });
    await expect(boot).rejects.toThrow(/root: true/);
  });
});

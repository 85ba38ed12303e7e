/**
 * The pure parts of export/import: package selectors and list files, `--since`, manifest checks (format, version,
 * schema, repeated entries, one size per blob), the pypi and npm `ownerOf` hooks on the paths their layouts write, and
 * the byte progress bar drawn on a TTY.
 */
import { describe, expect, test } from "bun:test";
import pypi from "../../plugins/pypi/index.ts";
import npm from "../../plugins/npm/index.ts";
import type { PluginContext } from "../../core/plugin.ts";
import { parseManifest, parseSelector, parseSelectorList, TransferError, type ExportManifest, type ManifestEntry } from "../../core/transfer.ts";
import { byteProgress, parseSince } from "../../core/cli/commands/export.ts";

const HEX = "a".repeat(64);
const HEX2 = "b".repeat(64);

function manifest(entries: Partial<ManifestEntry>[], patch: Record<string, unknown> = {}): Uint8Array {
  const m: ExportManifest = {
    format: "artifact-vault-export",
    version: 1,
    createdAt: "2025-01-01T00:00:00.000Z",
    source: { vault: "artifact-vault 0.1.0", host: "h" },
    selection: { repositories: [], packages: [] },
    repositories: [{ name: "pypi", format: "pypi", type: "proxy" }],
    entries: entries.map((e) => ({ repository: "pypi", format: "pypi", type: "proxy", path: "files/x.whl", size: 3, sha256: HEX, contentType: null, kind: "artifact", fetchedAt: 1, ...e }) as ManifestEntry),
    blobs: { count: 1, bytes: 3 },
  };
  return new TextEncoder().encode(JSON.stringify({ ...m, ...patch }));
}

const bad = (bytes: Uint8Array) => {
  try {
    parseManifest(bytes);
  } catch (e) {
    expect(e).toBeInstanceOf(TransferError);
    return (e as Error).message;
  }
  throw new Error("parseManifest accepted it");
};

describe("selectors", () => {
  test("NAME[@VERSION], npm scopes keep their @", () => {
    expect(parseSelector("requests")).toEqual({ name: "requests", text: "requests" });
    expect(parseSelector("requests@2.31.0")).toEqual({ name: "requests", version: "2.31.0", text: "requests@2.31.0" });
    expect(parseSelector("@acme/util")).toEqual({ name: "@acme/util", text: "@acme/util" });
    expect(parseSelector(" @acme/util@0.1.0 ")).toEqual({ name: "@acme/util", version: "0.1.0", text: "@acme/util@0.1.0" });
    for (const s of ["", "x@", "@"]) expect(() => parseSelector(s)).toThrow("expected NAME or NAME@VERSION");
  });

  test("list files: one per line, comments and blank lines ignored", () => {
    expect(parseSelectorList("# wanted\nchalk@4.1.0\n\n  example  # the pypi one\r\n@acme/util@0.1.0\n").map((s) => s.text)).toEqual(["chalk@4.1.0", "example", "@acme/util@0.1.0"]);
  });

  test("--since: a date (UTC midnight) or an ISO 8601 time", () => {
    expect(parseSince("2025-03-01")).toBe(Date.UTC(2025, 2, 1));
    expect(parseSince("2025-03-01T12:30:00Z")).toBe(Date.UTC(2025, 2, 1, 12, 30));
    for (const s of ["yesterday", "1700000000", "2025-13-45"]) expect(() => parseSince(s)).toThrow("--since: expected a date");
  });
});

describe("parseManifest", () => {
  test("a valid manifest is returned as is", () => {
    const m = parseManifest(manifest([{ package: { name: "x", version: "1" } }]));
    expect(m.entries[0]).toMatchObject({ path: "files/x.whl", sha256: HEX, package: { name: "x", version: "1" } });
  });

  test("not JSON, another format or version, schema errors name the place", () => {
    expect(bad(new TextEncoder().encode("{"))).toStartWith("manifest.json is not JSON");
    expect(bad(manifest([], { format: "zip" }))).toBe('manifest.json: not a vault export (format "zip", expected "artifact-vault-export")');
    expect(bad(manifest([], { version: 2 }))).toBe("manifest.json: archive version 2 is not supported (this vault reads version 1)");
    expect(bad(manifest([{ sha256: "XYZ" }]))).toBe('manifest.json: /entries/0/sha256 must match pattern "^[0-9a-f]{64}$"');
    expect(bad(manifest([{ size: -1 }]))).toBe("manifest.json: /entries/0/size must be >= 0");
    expect(bad(manifest([{ type: "group" as "proxy" }]))).toStartWith("manifest.json: /entries/0/type must be equal to one of the allowed values");
  });

  test("entries must match their repository, appear once, and give one size per blob", () => {
    expect(bad(manifest([{ repository: "other" }]))).toContain("/entries/0 names repository other (pypi proxy), which the repositories list does not describe so");
    expect(bad(manifest([{ format: "npm" }]))).toContain("/entries/0 names repository pypi (npm proxy)");
    expect(bad(manifest([{}, { sha256: HEX2 }]))).toBe("manifest.json: /entries/1 repeats pypi:files/x.whl");
    expect(bad(manifest([{}, { path: "files/y.whl", size: 4 }]))).toBe(`manifest.json: /entries/1 gives blob ${HEX} 4 bytes, another entry 3`);
  });
});

describe("ownerOf: rows that go with a package's files", () => {
  const ctx = { repo: { name: "r", type: "proxy", mount: "/r" }, config: { name: "r", format: "x", type: "proxy" } } as unknown as PluginContext;
  const own = (p: typeof pypi | typeof npm, path: string) => p.ownerOf!(path, ctx as never);

  test("pypi: project pages and snapshots, .metadata/.asc, hosted info rows and markers, JSON API documents", () => {
    expect(own(pypi, "simple/example/")).toEqual({ name: "example" });
    expect(own(pypi, "simple/example/#json")).toEqual({ name: "example" });
    expect(own(pypi, "files/packages/ab/cd/ef/wheel-0.38.4-py3-none-any.whl.metadata")).toEqual({ name: "wheel", version: "0.38.4" });
    expect(own(pypi, "files/acme-tools/acme_tools-1.0.0-py3-none-any.whl.asc")).toEqual({ name: "acme-tools", version: "1.0.0" });
    expect(own(pypi, "info/acme-tools/acme_tools-1.0.0-py3-none-any.whl")).toEqual({ name: "acme-tools", version: "1.0.0" });
    expect(own(pypi, "projects/acme-tools")).toEqual({ name: "acme-tools" });
    expect(own(pypi, "pypi/example/json#0123456789ab")).toEqual({ name: "example" });
    expect(own(pypi, "pypi/example/21.12/json#0123456789ab")).toEqual({ name: "example", version: "21.12" });
    for (const p of ["simple/", "simple/#json", "files/packages/x/example-21.12-py3-none-any.whl", "projects/"]) expect([p, own(pypi, p)]).toEqual([p, null]);
  });

  test("npm: the document, its renderings and version records", () => {
    expect(own(npm, "chalk#doc")).toEqual({ name: "chalk" });
    expect(own(npm, "chalk#abbrev#0123456789ab")).toEqual({ name: "chalk" });
    expect(own(npm, "@acme/util#full#0123456789ab")).toEqual({ name: "@acme/util" });
    expect(own(npm, "@acme/util#v#0.1.0")).toEqual({ name: "@acme/util", version: "0.1.0" });
    for (const p of ["chalk/-/chalk-4.1.0.tgz", "#doc", "chalk#other"]) expect([p, own(npm, p)]).toEqual([p, null]);
  });
});

describe("progress", () => {
  test("a TTY gets a redrawn byte bar; anything else gets nothing", () => {
    const sink = { isTTY: true, columns: 120, text: "", write(s: string) { this.text += s; return true; } };
    const bar = byteProgress(sink, "export");
    bar.start(2048);
    bar.add(1024);
    bar.add(1024);
    bar.stop();
    expect(sink.text).toContain("export [");
    expect(sink.text).toContain("100% | 2.0 KiB/2.0 KiB");
    const plain = { isTTY: false, text: "", write(s: string) { this.text += s; return true; } };
    const quiet = byteProgress(plain, "import");
    quiet.start(10);
    quiet.add(10);
    quiet.stop();
    expect(plain.text).toBe("");
  });
});

/** Unit tests: merging group members' snapshots (file-name precedence, re-rooted paths, versions, root index union). */
import { expect, test } from "bun:test";
import { mergeSnapshots } from "./merge.ts";
import { readSnapshot, renderProjectJson, type ProjectPage, type SimpleFile, type Snapshot } from "./simple.ts";

const enc = (s: Snapshot) => new TextEncoder().encode(JSON.stringify(s));
const file = (filename: string, path: string | undefined, sha: string, extra: Partial<SimpleFile> = {}): SimpleFile => ({
  filename,
  url: path ?? `https://elsewhere.example/${filename}`,
  ...(path ? { path } : {}),
  hashes: { sha256: sha },
  yanked: false,
  ...extra,
});
const project = (page: ProjectPage): Snapshot => ({ v: 1, kind: "project", page });

test("project pages: first member wins by file name; paths re-rooted under files/<member>/; foreign links kept", () => {
  const hosted = project({ name: "acme", versions: ["1.0"], files: [file("acme-1.0-py3-none-any.whl", "files/acme/acme-1.0-py3-none-any.whl", "a".repeat(64), { requiresPython: ">=3.8", coreMetadata: { sha256: "c".repeat(64) } })] });
  const proxy = project({
    name: "Acme",
    versions: ["1.0", "2.0"],
    files: [
      file("acme-1.0-py3-none-any.whl", "files/packages/aa/acme-1.0-py3-none-any.whl", "b".repeat(64)),
      file("acme-2.0.tar.gz", "files/packages/bb/acme-2.0.tar.gz", "d".repeat(64), { yanked: "broken" }),
      file("acme-3.0.tar.gz", undefined, "e".repeat(64)),
    ],
  });
  const out = readSnapshot(
    mergeSnapshots({
      kind: "project",
      project: "acme",
      sources: [
        { snapshot: enc(hosted), filesPrefix: "files/local/" },
        { snapshot: enc(proxy), filesPrefix: "files/pypi/" },
      ],
    }),
  );
  expect(out.kind).toBe("project");
  if (out.kind !== "project") return;
  expect(out.page.name).toBe("acme");
  expect(out.page.versions).toEqual(["1.0", "2.0"]);
  expect(out.page.files.map((f) => [f.filename, f.path, f.hashes.sha256[0]])).toEqual([
    ["acme-1.0-py3-none-any.whl", "files/local/acme/acme-1.0-py3-none-any.whl", "a"],
    ["acme-2.0.tar.gz", "files/pypi/packages/bb/acme-2.0.tar.gz", "d"],
    ["acme-3.0.tar.gz", undefined, "e"],
  ]);
  expect(out.page.files[0]).toMatchObject({ requiresPython: ">=3.8", coreMetadata: { sha256: "c".repeat(64) } });
  expect(out.page.files[1].yanked).toBe("broken");
  // rendered from the group's page, links are relative to the group and the foreign one stays absolute
  const json = JSON.parse(renderProjectJson(out.page, "../../"));
  expect(json.files.map((f: { url: string }) => f.url)).toEqual([
    "../../files/local/acme/acme-1.0-py3-none-any.whl",
    "../../files/pypi/packages/bb/acme-2.0.tar.gz",
    "https://elsewhere.example/acme-3.0.tar.gz",
  ]);
});

test("versions are left out when a member gave none (the merged page is then api-version 1.0)", () => {
  const a = project({ name: "x", versions: ["1"], files: [file("x-1.tar.gz", "files/x/x-1.tar.gz", "a".repeat(64), { sizeBytes: 3 })] });
  const b = project({ name: "x", files: [file("x-2.tar.gz", "files/p/x-2.tar.gz", "b".repeat(64))] });
  const out = readSnapshot(mergeSnapshots({ kind: "project", project: "x", sources: [{ snapshot: enc(a), filesPrefix: "files/a/" }, { snapshot: enc(b), filesPrefix: "files/b/" }] }));
  expect(out.kind === "project" && out.page.versions).toBeUndefined();
  expect(JSON.parse(renderProjectJson((out as { page: ProjectPage }).page, "../../")).meta["api-version"]).toBe("1.0");
});

test("root index: union, first spelling of a normalized name wins, sorted by normalized name", () => {
  const a: Snapshot = { v: 1, kind: "index", list: { projects: ["Zeta", "acme_tools"] } };
  const b: Snapshot = { v: 1, kind: "index", list: { projects: ["Acme.Tools", "beta", "zeta"] } };
  const out = readSnapshot(mergeSnapshots({ kind: "index", sources: [{ snapshot: enc(a), filesPrefix: "files/a/" }, { snapshot: enc(b), filesPrefix: "files/b/" }] }));
  expect(out).toEqual({ v: 1, kind: "index", list: { projects: ["acme_tools", "beta", "Zeta"] } });
});

test("a snapshot of the other kind is refused", () => {
  const a: Snapshot = { v: 1, kind: "index", list: { projects: [] } };
  expect(() => mergeSnapshots({ kind: "project", project: "x", sources: [{ snapshot: enc(a), filesPrefix: "files/a/" }] })).toThrow("cannot merge");
});

/** npmPackument (plugins/npm/task.ts): proxy ops on the real fixtures (rewrite, lookup, dist-tags, unusable documents), group merges, hosted publish checks, document edits and renderings. */
import { describe, expect, test } from "bun:test";
import { npmPackument, PackumentParseError } from "./task.ts";
import type { DocEdit } from "./publish.ts";
import { NPM_FIXTURES } from "../../test/helpers/npm-registry.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const UP = "https://npm.upstream.invalid/";

describe("npmPackument", () => {
  test("rewrite: every tarball URL of the upstream (plain and scoped) → vault; other fields byte-equal after parse", async () => {
    for (const stem of ["chalk.full", "@babel__core.abbrev"]) {
      const body = await Bun.file(`${NPM_FIXTURES}/packuments/${stem}.json`).bytes();
      const orig = JSON.parse(new TextDecoder().decode(body));
      const out = npmPackument({ op: "rewrite", body, upstreamBase: UP, vaultBase: "http://v.test/npm" });
      const doc = JSON.parse(new TextDecoder().decode(out.body!));
      expect(out.rewritten).toBe(Object.keys(orig.versions).length);
      for (const [ver, v] of Object.entries(doc.versions) as [string, any][]) {
        const o = orig.versions[ver].dist;
        expect(v.dist.tarball).toBe(o.tarball.replace(UP, "http://v.test/npm/"));
        expect(v.dist.integrity).toBe(o.integrity);
        expect(v.dist.shasum).toBe(o.shasum);
        v.dist.tarball = o.tarball;
      }
      expect(doc).toEqual(orig);
    }
  });
  test("rewrite leaves foreign hosts and odd paths alone; accepts %2f scoped URLs", () => {
    const body = enc(JSON.stringify({ name: "@s/p", versions: { "1": { dist: { tarball: "https://other.invalid/@s/p/-/p-1.tgz" } }, "2": { dist: { tarball: `${UP}@s%2fp/-/p-2.tgz` } }, "3": { dist: { tarball: `${UP}x/y/z.tgz` } } } }));
    const out = npmPackument({ op: "rewrite", body, upstreamBase: UP, vaultBase: "http://v" });
    const doc = JSON.parse(new TextDecoder().decode(out.body!));
    expect(out.rewritten).toBe(1);
    expect(doc.versions["1"].dist.tarball).toBe("https://other.invalid/@s/p/-/p-1.tgz");
    expect(doc.versions["2"].dist.tarball).toBe("http://v/@s/p/-/p-2.tgz");
    expect(doc.versions["3"].dist.tarball).toBe(`${UP}x/y/z.tgz`);
  });
  test("lookup and dist-tags", () => {
    const body = enc(JSON.stringify({ "dist-tags": { latest: "1.0.0", n: 3 }, versions: { "1.0.0": { dist: { tarball: "http://v/a/-/a-1.0.0.tgz", integrity: "sha512-x", shasum: "ab" } } } }));
    expect(npmPackument({ op: "lookup", body, file: "a-1.0.0.tgz", url: "http://v/a/-/a-1.0.0.tgz" })).toEqual({ found: true, dist: { integrity: "sha512-x", shasum: "ab" } });
    expect(npmPackument({ op: "lookup", body, file: "a-2.tgz", url: "http://v/a/-/a-2.tgz" })).toEqual({ found: false });
    expect(npmPackument({ op: "dist-tags", body })).toEqual({ distTags: { latest: "1.0.0" } });
  });
  test("not JSON / not an object → PackumentParseError", () => {
    expect(() => npmPackument({ op: "dist-tags", body: enc("<html>") })).toThrow(PackumentParseError);
    expect(() => npmPackument({ op: "dist-tags", body: enc("[1]") })).toThrow(PackumentParseError);
  });
});

const dec = (b: Uint8Array | undefined) => JSON.parse(new TextDecoder().decode(b!));

describe("merge (groups)", () => {
  const a = enc(
    JSON.stringify({
      name: "p",
      description: "from a",
      _rev: "3-x",
      "dist-tags": { latest: "1.0.0", beta: "2.0.0-b" },
      versions: { "1.0.0": { name: "p", version: "1.0.0", dist: { tarball: "http://v/a/p/-/p-1.0.0.tgz", integrity: "sha512-A" } }, "2.0.0-b": { name: "p", version: "2.0.0-b", dist: { tarball: "http://v/a/p/-/p-2.0.0-b.tgz" } } },
      time: { created: "2020-01-02T00:00:00.000Z", modified: "2021-01-01T00:00:00.000Z", "1.0.0": "2020-01-02T00:00:00.000Z" },
    }),
  );
  const b = enc(
    JSON.stringify({
      name: "p",
      description: "from b",
      "dist-tags": { latest: "1.5.0", next: "1.5.0", beta: "1.5.0" },
      versions: {
        "1.0.0": { name: "p", version: "1.0.0", dist: { tarball: "http://v/b/p/-/p-1.0.0.tgz", integrity: "sha512-B" } },
        "1.5.0": { name: "p", version: "1.5.0", dist: { tarball: "http://v/b/p/-/p-1.5.0.tgz" } },
        "0.9.0": { name: "p", version: "0.9.0", dist: { tarball: "https://elsewhere.invalid/p-0.9.0.tgz" } },
      },
      time: { created: "2019-01-01T00:00:00.000Z", modified: "2022-01-01T00:00:00.000Z", "1.5.0": "2022-01-01T00:00:00.000Z" },
    }),
  );
  const sources = [
    { body: a, base: "http://v/a" },
    { body: b, base: "http://v/b" },
  ];

  test("full: first member wins per version and per tag; URLs moved under the group; time merged; _rev dropped", () => {
    const doc = dec(npmPackument({ op: "merge", sources, base: "http://v/g", variant: "full" }).body);
    expect(doc.description).toBe("from a");
    expect(doc._rev).toBeUndefined();
    expect(Object.keys(doc.versions).sort()).toEqual(["0.9.0", "1.0.0", "1.5.0", "2.0.0-b"]);
    expect(doc.versions["1.0.0"].dist).toEqual({ tarball: "http://v/g/p/-/p-1.0.0.tgz", integrity: "sha512-A" });
    expect(doc.versions["1.5.0"].dist.tarball).toBe("http://v/g/p/-/p-1.5.0.tgz");
    expect(doc.versions["0.9.0"].dist.tarball).toBe("https://elsewhere.invalid/p-0.9.0.tgz");
    expect(doc["dist-tags"]).toEqual({ latest: "1.0.0", beta: "2.0.0-b", next: "1.5.0" });
    expect(doc.time.created).toBe("2019-01-01T00:00:00.000Z");
    expect(doc.time.modified).toBe("2022-01-01T00:00:00.000Z");
    expect(doc.time["1.5.0"]).toBe("2022-01-01T00:00:00.000Z");
    expect(doc.modified).toBe("2022-01-01T00:00:00.000Z");
  });

  test("abbrev: only the install fields, modified at the top", () => {
    const doc = dec(npmPackument({ op: "merge", sources, base: "http://v/g", variant: "abbrev" }).body);
    expect(Object.keys(doc).sort()).toEqual(["dist-tags", "modified", "name", "versions"]);
    expect(doc.versions["1.0.0"]).toEqual({ name: "p", version: "1.0.0", dist: { tarball: "http://v/g/p/-/p-1.0.0.tgz", integrity: "sha512-A" } });
  });

  test("version documents by version or tag", () => {
    const full = npmPackument({ op: "merge", sources, base: "http://v/g", variant: "full" }).body!;
    expect(dec(npmPackument({ op: "version", body: full, spec: "next" }).body).version).toBe("1.5.0");
    expect(dec(npmPackument({ op: "version", body: full, spec: "0.9.0" }).body).version).toBe("0.9.0");
    expect(npmPackument({ op: "version", body: full, spec: "constructor" })).toEqual({ found: false });
  });
});

describe("hosted documents: publish checks and edits", () => {
  const tgz = Bun.gzipSync(enc("tarball bytes"));
  const sri = "sha512-" + new Bun.CryptoHasher("sha512").update(tgz).digest("base64");
  const sha1 = new Bun.CryptoHasher("sha1").update(tgz).digest("hex");
  const publishBody = (name: string, version: string, o: { tags?: Record<string, string>; scripts?: Record<string, string> } = {}) =>
    enc(
      JSON.stringify({
        _id: name,
        name,
        "dist-tags": o.tags ?? { latest: version },
        versions: { [version]: { name, version, scripts: o.scripts, dist: { integrity: sri, shasum: sha1, tarball: "http://ignored/x.tgz" } } },
        _attachments: { [`${name}-${version}.tgz`]: { data: Buffer.from(tgz).toString("base64"), length: tgz.byteLength } },
      }),
    );

  test("inspect: our dist (relative tarball path, sha512, sha1), install scripts flagged, scoped file name; update bodies recognised", () => {
    const out = npmPackument({ op: "inspect", body: publishBody("@s/p", "1.0.0", { scripts: { postinstall: "node x" } }), name: "@s/p" });
    expect(out.problem).toBeUndefined();
    expect(out.inspected!.file).toBe("p-1.0.0.tgz");
    expect(out.inspected!.tags).toEqual(["latest"]);
    expect(out.inspected!.manifest.dist).toEqual({ shasum: sha1, integrity: sri, tarball: "@s/p/-/p-1.0.0.tgz" });
    expect(out.inspected!.manifest.hasInstallScript).toBe(true);
    expect(out.inspected!.manifest._id).toBe("@s/p@1.0.0");
    expect(out.body).toEqual(tgz);
    expect(npmPackument({ op: "inspect", body: enc(JSON.stringify({ name: "p", versions: {} })), name: "p" })).toEqual({ update: true });
  });

  test("inspect: tags must be tag names pointing at the version", () => {
    expect(npmPackument({ op: "inspect", body: publishBody("p", "1.0.0", { tags: { "1.0": "1.0.0" } }), name: "p" }).problem?.message).toContain("invalid dist-tag");
    expect(npmPackument({ op: "inspect", body: publishBody("p", "1.0.0", { tags: { next: "2.0.0" } }), name: "p" }).problem?.message).toContain("must point at");
  });

  /** Runs one edit; returns the result and the new document. */
  const edit = (doc: Uint8Array | undefined, e: DocEdit, now = Date.UTC(2024, 0, 1)) => {
    const out = npmPackument({ op: "edit", name: "p", doc, now, edit: e });
    return { r: out.edit!, body: out.body, doc: out.body ? dec(out.body) : undefined };
  };
  const record = (version: string, tags = ["latest"]) => ({ version, manifest: { name: "p", version, description: `v${version}`, dist: { tarball: `p/-/p-${version}.tgz` } }, time: "2024-01-01T00:00:00.000Z", tags });

  test("add, tag, untag, deprecate (update), remove; latest follows; numbers never reused; _rev counts", () => {
    let s = edit(undefined, { kind: "add", record: record("1.0.0"), user: "alice" });
    expect(s.doc!["dist-tags"]).toEqual({ latest: "1.0.0" });
    expect(s.doc!.maintainers).toEqual([{ name: "alice" }]);
    expect(s.doc!.description).toBe("v1.0.0");
    expect(s.doc!._rev).toMatch(/^1-[0-9a-f]{32}$/);
    s = edit(s.body, { kind: "add", record: record("2.0.0-rc.1", ["next"]), user: "bob" });
    expect(s.doc!["dist-tags"]).toEqual({ latest: "1.0.0", next: "2.0.0-rc.1" });
    expect(s.doc!._rev).toMatch(/^2-/);
    expect(edit(s.body, { kind: "add", record: record("1.0.0"), user: "alice" }).r.problem).toEqual({ status: 403, message: "cannot publish over the previously published version 1.0.0" });
    expect(edit(s.body, { kind: "tag", tag: "x", version: "9.9.9" }).r.problem?.status).toBe(404);
    expect(edit(s.body, { kind: "untag", tag: "latest" }).r.problem?.status).toBe(400);
    s = edit(s.body, { kind: "tag", tag: "stable", version: "1.0.0" });
    expect(s.r.distTags).toEqual({ latest: "1.0.0", next: "2.0.0-rc.1", stable: "1.0.0" });
    // deprecate through a whole document, as npm sends it back
    const back = { ...s.doc!, versions: { ...s.doc!.versions, "1.0.0": { ...s.doc!.versions["1.0.0"], deprecated: "old" } } };
    s = edit(s.body, { kind: "update", body: enc(JSON.stringify(back)) });
    expect(s.doc!.versions["1.0.0"].deprecated).toBe("old");
    expect(s.r.removed).toEqual([]);
    // an identical document changes nothing
    expect(edit(s.body, { kind: "update", body: s.body! }).body).toBeUndefined();
    // unknown versions are refused; removing 1.0.0 moves latest to the highest remaining (a prerelease here)
    expect(edit(s.body, { kind: "update", body: enc(JSON.stringify({ name: "p", versions: { "3.0.0": {} } })) }).r.problem?.status).toBe(400);
    s = edit(s.body, { kind: "remove", versions: ["1.0.0"] });
    expect(s.r.removed).toEqual(["1.0.0"]);
    expect(s.doc!["dist-tags"]).toEqual({ latest: "2.0.0-rc.1", next: "2.0.0-rc.1" });
    expect(s.doc!.time["1.0.0"]).toBe("2024-01-01T00:00:00.000Z");
    expect(edit(s.body, { kind: "add", record: record("1.0.0"), user: "alice" }).r.problem?.message).toContain("never reused");
  });

  test("reconcile: versions without a record are dropped, records missing from the document come back", () => {
    let s = edit(undefined, { kind: "add", record: record("1.0.0"), user: "alice" });
    s = edit(s.body, { kind: "add", record: record("1.1.0"), user: "alice" });
    const r = edit(s.body, { kind: "reconcile", have: ["1.1.0", "1.2.0"], restore: [record("1.2.0")] });
    expect(r.r.removed).toEqual(["1.0.0"]);
    expect(Object.keys(r.doc!.versions).sort()).toEqual(["1.1.0", "1.2.0"]);
    expect(r.doc!["dist-tags"].latest).toBe("1.1.0");
    expect(edit(s.body, { kind: "reconcile", have: ["1.0.0", "1.1.0"], restore: [] }).body).toBeUndefined();
  });

  test("render: relative tarball paths made absolute; abbreviated keeps install fields only", () => {
    const s = edit(undefined, { kind: "add", record: { ...record("1.0.0"), manifest: { ...record("1.0.0").manifest, scripts: { test: "x" }, readme: "r" } }, user: "alice" });
    const full = dec(npmPackument({ op: "render", body: s.body!, base: "http://h/r", variant: "full" }).body);
    expect(full.versions["1.0.0"].dist.tarball).toBe("http://h/r/p/-/p-1.0.0.tgz");
    expect(full.versions["1.0.0"].scripts).toEqual({ test: "x" });
    expect(full.modified).toBe(full.time.modified);
    const abbrev = dec(npmPackument({ op: "render", body: s.body!, base: "http://h/r", variant: "abbrev" }).body);
    expect(abbrev.versions["1.0.0"]).toEqual({ name: "p", version: "1.0.0", dist: { tarball: "http://h/r/p/-/p-1.0.0.tgz" } });
    expect(abbrev.modified).toBe(full.time.modified);
  });
});

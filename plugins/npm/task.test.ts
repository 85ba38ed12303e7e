/** npmPackument (plugins/npm/task.ts) on the real fixtures: rewrite, lookup, dist-tags, unusable documents. */
import { describe, expect, test } from "bun:test";
import { npmPackument, PackumentParseError } from "./task.ts";
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

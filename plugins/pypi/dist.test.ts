/** Unit tests: PEP 440 canonical versions, wheel/sdist file names, core metadata headers, inspection of uploaded files. */
import { describe, expect, test } from "bun:test";
import { strToU8, zipSync } from "fflate";
import { canonicalVersion, inspectDistribution, parseDistFilename, parseMetadataHeaders, type DistFilename } from "./dist.ts";
import { buildWheel } from "../../test/helpers/pypi-index.ts";

describe("canonicalVersion (PEP 440)", () => {
  test.each([
    ["1.0", "1"],
    ["1.0.0", "1"],
    ["1.2.0", "1.2"],
    ["01.002", "1.2"],
    ["v2.0RC1", "2rc1"],
    ["1.0alpha2", "1a2"],
    ["1.0-beta", "1b0"],
    ["1.0pre3", "1rc3"],
    ["1.0c1", "1rc1"],
    ["1.0-1", "1.post1"],
    ["1.0.post", "1.post0"],
    ["1.0-r4", "1.post4"],
    ["1.0.dev", "1.dev0"],
    ["1.0_DEV-7", "1.dev7"],
    ["0!1.0", "1"],
    ["2!1.0", "2!1"],
    ["1.0+Ubuntu-1_2", "1+ubuntu.1.2"],
    ["1.0a1.post2.dev3+x", "1a1.post2.dev3+x"],
  ])("%s → %s", (v, want) => expect(canonicalVersion(v)).toBe(want));
  test.each(["", "abc", "1.0-", "1..0", "1.0+", "1.0+a..b", "1.0 beta", "1.0/2"])("not PEP 440: %j", (v) => expect(canonicalVersion(v)).toBeNull());
});

describe("parseDistFilename", () => {
  test("wheels: name, version, optional build tag, three tags", () => {
    expect(parseDistFilename("acme_tools-1.0.0-py3-none-any.whl")).toEqual({ kind: "wheel", project: "acme-tools", version: "1.0.0", extension: ".whl" });
    expect(parseDistFilename("Foo.Bar-2.0-1-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")).toMatchObject({ project: "foo-bar", version: "2.0" });
    expect(parseDistFilename("pkg-1.0+local.1-py3-none-any.whl")).toMatchObject({ version: "1.0+local.1" });
  });
  test("sdists: .tar.gz and .zip; a legacy name with dashes is split where name and version match", () => {
    expect(parseDistFilename("acme_tools-1.0.tar.gz")).toEqual({ kind: "sdist", project: "acme-tools", version: "1.0", extension: ".tar.gz" });
    expect(parseDistFilename("Acme-1.0.zip")).toEqual({ kind: "sdist", project: "acme", version: "1.0", extension: ".zip" });
    expect(parseDistFilename("foo-bar-1.0.tar.gz", { name: "foo-bar", version: "1.0" })).toMatchObject({ project: "foo-bar", version: "1.0" });
    expect(parseDistFilename("foo-bar-1.0.tar.gz", { name: "foo", version: "bar-1.0" })).toMatchObject({ project: "foo-bar", version: "1.0" });
  });
  test.each([
    ["acme-1.0.exe", "not a wheel"],
    ["acme-1.0-py3-any.whl", "wheel file name must be"],
    ["acme-1.0-x-py3-none-any.whl", "invalid build tag"],
    ["../acme-1.0.tar.gz", "characters"],
    ["acme 1.0.tar.gz", "characters"],
    ["acme.tar.gz", "sdist file name"],
    ["-1.0.tar.gz", "characters"],
    [`${"a".repeat(250)}-1.0.tar.gz`, "too long"],
  ])("refused: %s", (f, why) => {
    const r = parseDistFilename(f);
    expect(typeof r).toBe("string");
    expect(r as string).toContain(why);
  });
});

test("parseMetadataHeaders: fields until the first empty line, repeated fields, continuation lines", () => {
  const h = parseMetadataHeaders("Metadata-Version: 2.1\nName: acme\nClassifier: A\nClassifier: B\nDescription: one\n        two\n\nName: body\n");
  expect(h.get("name")).toEqual(["acme"]);
  expect(h.get("classifier")).toEqual(["A", "B"]);
  expect(h.get("description")).toEqual(["one\ntwo"]);
});

describe("inspectDistribution", () => {
  const wheelName: DistFilename = { kind: "wheel", project: "acme-tools", version: "1.0.0", extension: ".whl" };
  const hex = (alg: "sha256" | "md5" | "blake2b256", b: Uint8Array) => new Bun.CryptoHasher(alg).update(b).digest("hex");

  test("a wheel: digests asked for, and its METADATA", () => {
    const bytes = buildWheel("acme_tools", "1.0.0", ">=3.8");
    const r = inspectDistribution({ bytes, dist: wheelName, algorithms: ["md5", "blake2_256"] });
    expect(r.problem).toBeUndefined();
    expect(r.digests).toEqual({ sha256: hex("sha256", bytes), md5: hex("md5", bytes), blake2_256: hex("blake2b256", bytes) });
    expect(new TextDecoder().decode(r.metadata!)).toBe("Metadata-Version: 2.1\nName: acme_tools\nVersion: 1.0.0\nRequires-Python: >=3.8\n");
    expect(r.bytes).toBe(bytes);
  });

  test("blake2_256 is BLAKE2b with a 32-byte digest (Python's hashlib.blake2b(digest_size=32), as twine sends it)", () => {
    const r = inspectDistribution({ bytes: strToU8("abc"), dist: { ...wheelName, kind: "sdist", extension: ".tar.gz" }, algorithms: ["blake2_256"] });
    expect(r.digests.blake2_256).toBe("bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
  });

  test("wheels that are not zips, lack METADATA, or whose METADATA names another project or version are refused", () => {
    expect(inspectDistribution({ bytes: strToU8("not a zip at all"), dist: wheelName, algorithms: [] }).problem).toContain("not a valid zip");
    const noMeta = zipSync({ "acme_tools/__init__.py": strToU8("") });
    expect(inspectDistribution({ bytes: noMeta, dist: wheelName, algorithms: [] }).problem).toBe("wheel contains no .dist-info/METADATA");
    expect(inspectDistribution({ bytes: buildWheel("other", "1.0.0"), dist: wheelName, algorithms: [] }).problem).toContain("METADATA Name");
    expect(inspectDistribution({ bytes: buildWheel("acme_tools", "1.0.1"), dist: wheelName, algorithms: [] }).problem).toContain("METADATA Version");
    // "1.0" and "1.0.0" are one version
    expect(inspectDistribution({ bytes: buildWheel("acme_tools", "1.0"), dist: wheelName, algorithms: [] }).problem).toBeUndefined();
  });

  test("several .dist-info directories: the one named after the file wins, else refused", () => {
    const meta = (n: string, v: string) => strToU8(`Metadata-Version: 2.1\nName: ${n}\nVersion: ${v}\n`);
    const two = zipSync({ "acme_tools-1.0.0.dist-info/METADATA": meta("acme_tools", "1.0.0"), "vendored-2.0.dist-info/METADATA": meta("vendored", "2.0") });
    expect(new TextDecoder().decode(inspectDistribution({ bytes: two, dist: wheelName, algorithms: [] }).metadata!)).toContain("Name: acme_tools");
    const neither = zipSync({ "a-1.dist-info/METADATA": meta("a", "1"), "b-1.dist-info/METADATA": meta("b", "1") });
    expect(inspectDistribution({ bytes: neither, dist: wheelName, algorithms: [] }).problem).toContain("several .dist-info");
  });

  test("sdists: the archive signature must match the extension", () => {
    const gz = Bun.gzipSync(strToU8("tar bytes"));
    expect(inspectDistribution({ bytes: gz, dist: { kind: "sdist", project: "a", version: "1", extension: ".tar.gz" }, algorithms: [] }).problem).toBeUndefined();
    expect(inspectDistribution({ bytes: gz, dist: { kind: "sdist", project: "a", version: "1", extension: ".zip" }, algorithms: [] }).problem).toBe("not a zip file");
    expect(inspectDistribution({ bytes: strToU8("plain"), dist: { kind: "sdist", project: "a", version: "1", extension: ".tar.gz" }, algorithms: [] }).problem).toBe("not a gzip file");
  });
});

/** Unit tests: project-name validation/normalization and file-name → project candidates. */
import { describe, expect, test } from "bun:test";
import { isNormalized, isValidName, isValidVersion, normalizeName, projectCandidates } from "./names.ts";

describe("normalizeName (PEP 503)", () => {
  test.each([
    ["Foo.Bar_baz", "foo-bar-baz"],
    ["Django", "django"],
    ["zope.interface", "zope-interface"],
    ["A__B--C..D", "a-b-c-d"],
    ["a-_.b", "a-b"],
    ["pip", "pip"],
  ])("%s → %s", (input, out) => {
    expect(normalizeName(input)).toBe(out);
    expect(isNormalized(out)).toBe(true);
  });
  test("non-normalized spellings are detected", () => {
    expect(isNormalized("Foo")).toBe(false);
    expect(isNormalized("foo_bar")).toBe(false);
    expect(isNormalized("foo.bar")).toBe(false);
  });
});

describe("isValidName", () => {
  test.each(["a", "A1", "foo-bar", "foo.bar_baz", "9x"])("valid %s", (n) => expect(isValidName(n)).toBe(true));
  test.each(["", "-foo", "foo-", "fo o", "..", "a/b", "a%2fb", "é", "x".repeat(201), "foo\u0000"])("invalid %j", (n) =>
    expect(isValidName(n)).toBe(false),
  );
});

test("isValidVersion", () => {
  for (const v of ["1.0", "21.12", "1.0.post1", "2!1.0+local.1", "1.0rc1"]) expect(isValidVersion(v)).toBe(true);
  for (const v of ["", "..", "1.0/x", "1 0", "%2e"]) expect(isValidVersion(v)).toBe(false);
});

describe("projectCandidates", () => {
  test("wheel: the distribution part", () => {
    expect(projectCandidates("example2-1.0.0-py3-none-any.whl")[0]).toBe("example2");
    expect(projectCandidates("zope.interface-6.0-cp311-cp311-manylinux_2_17_x86_64.whl")[0]).toBe("zope-interface");
    expect(projectCandidates("Foo_Bar-1.0-py3-none-any.whl")[0]).toBe("foo-bar");
  });
  test("legacy sdist: prefix before the first part starting with a digit first", () => {
    expect(projectCandidates("python-dateutil-2.8.2.tar.gz")[0]).toBe("python-dateutil");
    expect(projectCandidates("foo-1.0.zip")).toEqual(["foo"]);
    expect(projectCandidates("pip-23.0.1.tar.gz")).toEqual(["pip"]);
  });
  test("nonsense gives nothing or few", () => {
    expect(projectCandidates("")).toEqual([]);
    expect(projectCandidates("-.tar.gz")).toEqual([]);
  });
});

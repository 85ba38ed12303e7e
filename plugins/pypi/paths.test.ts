/** Unit tests: request-path segment checks of the pypi plugin (specs/http-caching.md §10). */
import { expect, test } from "bun:test";
import { pathProblem, segmentProblem } from "./paths.ts";

test.each([
  ["files/packages/3f/a1/x.whl", null],
  ["files/packages/x-1.0%2Blocal-py3-none-any.whl", null],
  ["simple/foo/", "empty segment"],
  ["files//x.whl", "empty segment"],
  ["files/../x", "dot segment"],
  ["files/%2e%2e/x", "dot segment"],
  ["files/.%2e/x", "dot segment"],
  ["files/%2E/x", "dot segment"],
  ["files/..%2fx", "encoded slash or backslash"],
  ["files/a%2Fb", "encoded slash or backslash"],
  ["files/a%5cb", "encoded slash or backslash"],
  ["files/a\\b", "forbidden character"],
  ["files/x%00.whl", "control character"],
  ["files/x%0a.whl", "control character"],
  ["files/%252e%252e/x", "double percent-encoding"],
  ["files/%zz", "malformed percent-encoding"],
  ["files/%e2%82", "malformed percent-encoding"],
  ["files/a b", "forbidden character"],
  ["files/a?b", "forbidden character"],
])("%j → %j", (p, want) => {
  expect(pathProblem(p)).toBe(want);
});

test("trailing slash only when allowed; length limits", () => {
  expect(pathProblem("simple/foo/", true)).toBeNull();
  expect(pathProblem("simple//", true)).toBe("empty segment");
  expect(segmentProblem("x".repeat(256))).toBe("segment too long");
  expect(pathProblem("a/".repeat(1100) + "a")).toBe("path too long");
});

/** The shared request-path check (specs/http-caching.md §10): what passes, what is refused and why. */
import { expect, test } from "bun:test";
import { VaultError } from "../errors.ts";
import { checkPathComponent, checkRequestPath, pathOf, pathProblem } from "./path.ts";

test("ordinary paths pass", () => {
  for (const p of [
    "/",
    "/pypi/simple/requests/",
    "/files/hadoop-3.3.6.tar.gz",
    "/pypi/files/ab/cd/requests-2.31.0-py3-none-any.whl",
    "/files/a%20b/c%2Bd",
    "/npm/@scope/name",
    "/files/.hidden/..dots..",
    "/oci/v2/library/alpine/manifests/sha256:abc",
  ])
    expect([p, pathProblem(p)]).toEqual([p, null]);
});

test("hostile paths are refused with a reason", () => {
  const cases: [string, string][] = [
    ["/files/..%2fetc", "encoded slash"],
    ["/files/a%2Fb", "encoded slash"],
    ["/files/a%5cb", "encoded backslash"],
    ["/files/a%5Cb", "encoded backslash"],
    ["/files/x%00.tgz", "encoded control character"],
    ["/files/a%0d%0aSet-Cookie:x", "encoded control character"],
    ["/files/a%7f", "encoded control character"],
    ["/files/%252e%252e/x", "double percent-encoding"],
    ["/files/%252f", "double percent-encoding"],
    ["/files//etc/passwd", "empty segment"],
    ["//etc/passwd", "empty segment"],
    ["/files/../x", "dot segment"],
    ["/files/./x", "dot segment"],
    ["/files/%2e%2e/x", "dot segment"],
    ["/files/.%2E/x", "dot segment"],
    ["/files/%2e", "dot segment"],
    ["/files/a\\b", "backslash"],
    ["/files/a\x01b", "control character"],
    ["/files/%zz", "malformed percent-encoding"],
    ["/files/%4", "malformed percent-encoding"],
  ];
  for (const [p, why] of cases) expect([p, pathProblem(p)]).toEqual([p, why]);
});

test("%2F can be allowed (npm scoped names), nothing else", () => {
  expect(pathProblem("/npm/@scope%2fname", { allowEncodedSlash: true })).toBeNull();
  expect(pathProblem("/npm/@scope%2fname")).toBe("encoded slash");
  expect(pathProblem("/npm/%2e%2e%2fx", { allowEncodedSlash: true })).toBe("dot segment"); // the parts an allowed %2F separates are checked too
  expect(pathProblem("/npm/a%2f%2fb", { allowEncodedSlash: true })).toBe("empty segment");
  expect(pathProblem("/npm/a%5c", { allowEncodedSlash: true })).toBe("encoded backslash");
});

test("checkRequestPath throws VAULT_BAD_PATH 400", () => {
  expect(checkRequestPath("/ok/path")).toBe("/ok/path");
  try {
    checkRequestPath("/a/%00");
    throw new Error("not thrown");
  } catch (e) {
    expect(e).toBeInstanceOf(VaultError);
    expect([(e as VaultError).code, (e as VaultError).status, (e as VaultError).message]).toEqual(["VAULT_BAD_PATH", 400, "bad path: encoded control character"]);
  }
});

test("checkPathComponent checks one decoded component", () => {
  expect(checkPathComponent("requests-2.31.0.tar.gz")).toBe("requests-2.31.0.tar.gz");
  for (const c of ["", ".", "..", "a/b", "a\\b", "a\x00b", "a\nb"]) expect(() => checkPathComponent(c)).toThrow(VaultError);
});

test("pathOf takes the path of an absolute URL without the query", () => {
  expect(pathOf("http://127.0.0.1:8080/pypi/simple/x/?a=1")).toBe("/pypi/simple/x/");
  expect(pathOf("http://h/")).toBe("/");
  expect(pathOf("http://h")).toBe("/");
  expect(pathOf("https://vault.example.com/a%2fb?x=/../y")).toBe("/a%2fb");
});

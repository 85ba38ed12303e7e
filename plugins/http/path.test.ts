/** Unit tests: request path → upstream URL of the http plugin, and what it refuses (specs/http-caching.md §10). */
import { describe, expect, test } from "bun:test";
import { VaultError } from "../../core/plugin.ts";
import { canonicalSegment, resolveUpstream } from "./path.ts";
import { makeClassifier } from "./classify.ts";

const BASE = "https://archive.example/dist/";

describe("resolveUpstream", () => {
  test.each([
    ["hadoop/common/hadoop-3.3.6.tar.gz", "hadoop/common/hadoop-3.3.6.tar.gz"],
    ["dir/", "dir/"],
    ["", "/"],
    ["a%2bb/c+d", "a%2Bb/c+d"],
    ["x%20y.txt", "x%20y.txt"],
    ["caf%C3%A9", "caf%C3%A9"],
    ["a:b@c=d,e;f!g'h(i)j*k$l&m~n", "a:b@c=d,e;f!g'h(i)j*k$l&m~n"],
    ["a[1]{2}|^`", "a%5B1%5D%7B2%7D%7C%5E%60"],
  ])("%j → key %j under the base", (rel, key) => {
    const r = resolveUpstream(BASE, rel);
    expect(r.key).toBe(key);
    expect(r.url).toBe(key === "/" ? BASE : BASE + key);
    expect(r.url.startsWith(BASE)).toBe(true);
  });

  test.each([
    "../etc/passwd",
    "a/../../etc/passwd",
    "%2e%2e/x",
    ".%2e/x",
    "%2E/x",
    "%252e%252e/x",
    "..%2fx",
    "a%2Fb",
    "a%5cb",
    "..\\x",
    "a\\b",
    "x%00.tgz",
    "x%0d%0aSet-Cookie:1",
    "x\u0001",
    "//etc/passwd",
    "a//b",
    "%zz",
    "%",
    "%c3",
    "x".repeat(1025),
  ])("refuses %j with 400", (rel) => {
    let err: unknown;
    try {
      resolveUpstream(BASE, rel);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VaultError);
    expect((err as VaultError).status).toBe(400);
    expect((err as VaultError).code).toBe("VAULT_BAD_PATH");
  });

  test("absolute URLs and scheme-like segments stay paths under the base", () => {
    for (const rel of ["http://169.254.169.254/latest", "http:%2f%2fevil/x", "//evil.example/x", "C:/Windows"]) {
      let r;
      try {
        r = resolveUpstream(BASE, rel);
      } catch (e) {
        expect((e as VaultError).status).toBe(400);
        continue;
      }
      expect(new URL(r.url).origin).toBe("https://archive.example");
      expect(new URL(r.url).pathname.startsWith("/dist/")).toBe(true);
    }
  });

  test("canonicalSegment upper-cases escapes and encodes non-pchar", () => {
    expect(canonicalSegment("a%2fb")).toBe("a%2Fb");
    expect(canonicalSegment("a b")).toBe("a%20b");
    expect(canonicalSegment("é")).toBe("%C3%A9");
  });
});

describe("classification", () => {
  test("defaults: files immutable, listings and maven/latest metadata mutable", () => {
    const c = makeClassifier({ name: "h", format: "http", type: "proxy" });
    expect(c("a/b.tar.gz")).toBe("immutable");
    expect(c("/")).toBe("mutable");
    expect(c("a/b/")).toBe("mutable");
    expect(c("org/x/maven-metadata.xml")).toBe("mutable");
    expect(c("org/x/maven-metadata.xml.sha1")).toBe("mutable");
    expect(c("latest")).toBe("mutable");
    expect(c("rel/latest/x.tgz")).toBe("mutable");
  });
  test("configured patterns; immutable wins; defaultClass", () => {
    const c = makeClassifier({ name: "h", format: "http", type: "proxy", metadataPatterns: ["**/*.json", "index/**"], immutablePatterns: ["index/pinned-*.json"] });
    expect(c("a/x.json")).toBe("mutable");
    expect(c("index/pinned-1.json")).toBe("immutable");
    expect(c("index/other")).toBe("mutable");
    expect(c("latest")).toBe("immutable"); // defaults replaced
    const m = makeClassifier({ name: "h", format: "http", type: "proxy", defaultClass: "mutable", immutablePatterns: ["**/*.tar.gz"] });
    expect(m("a.txt")).toBe("mutable");
    expect(m("a/b.tar.gz")).toBe("immutable");
  });
});

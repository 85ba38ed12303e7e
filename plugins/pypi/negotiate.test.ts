/** Unit tests: PEP 691 content negotiation (Accept q-values, aliases, ?format=, 406). */
import { expect, test } from "bun:test";
import { CONTENT_TYPES, negotiate } from "./negotiate.ts";

const PIP = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";

test.each([
  // [Accept, expected representation or null (406)]
  [PIP, "json"],
  [null, "text-html"],
  ["", "text-html"],
  ["*/*", "text-html"],
  ["text/html", "text-html"],
  ["text/*", "text-html"],
  ["application/vnd.pypi.simple.v1+json", "json"],
  ["application/vnd.pypi.simple.v1+html", "html"],
  ["application/vnd.pypi.simple.latest+json", "json"],
  ["application/vnd.pypi.simple.latest+html", "html"],
  ["application/*", "html"],
  ["application/vnd.pypi.simple.v1+html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.6", "json"],
  ["application/vnd.pypi.simple.v1+json;q=0.2, text/html;q=0.3", "text-html"],
  ["text/html;q=0, */*", "html"],
  ["*/*;q=0.1, application/vnd.pypi.simple.v1+json", "json"],
  ["application/vnd.pypi.simple.v1+json, */*;q=0", "json"],
  ["APPLICATION/VND.PYPI.SIMPLE.V1+JSON", "json"],
  ["application/json", null],
  ["application/octet-stream", null],
  ["image/png, text/plain", null],
  ["application/vnd.pypi.simple.v2+json", null],
  ["text/html;q=0", null],
  ["*/*;q=0", null],
  ["application/vnd.pypi.simple.v1+json;q=bogus", null],
  ["garbage", null],
] as [string | null, string | null][])("Accept %j → %j", (accept, want) => {
  expect(negotiate(accept)).toBe(want as never);
});

test("?format= overrides Accept", () => {
  expect(negotiate("text/html", "application/vnd.pypi.simple.v1+json")).toBe("json");
  expect(negotiate(PIP, "text/html")).toBe("text-html");
  expect(negotiate(PIP, "application/vnd.pypi.simple.latest+html")).toBe("html");
  expect(negotiate(PIP, "application/json")).toBeNull();
  expect(negotiate(PIP, "")).toBe("json");
});

test("content types are exactly the ones pip accepts", () => {
  expect(CONTENT_TYPES.json).toBe("application/vnd.pypi.simple.v1+json");
  expect(CONTENT_TYPES.html).toBe("application/vnd.pypi.simple.v1+html");
  expect(CONTENT_TYPES["text-html"].startsWith("text/html")).toBe(true);
});

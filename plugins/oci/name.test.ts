// Unit tests: OCI name/tag/reference grammar, digest parsing, API path routing, Content-Range parsing.
import { describe, expect, test } from "bun:test";
import { checkName, isValidName, isValidTag, parseApiPath, parseReference, splitFirst, upstreamName } from "./name.ts";
import { isSha256, looksLikeDigest, parseDigest, sha256Digest } from "./digest.ts";
import { parseContentRange, uploadRangeHeader } from "./content-range.ts";
import { VaultError } from "../../core/plugin.ts";

const D = "sha256:" + "a".repeat(64);

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof VaultError ? String(e.code) : "not-a-vault-error";
  }
  return undefined;
}

describe("repository names", () => {
  test.each(["a", "library/busybox", "team/app", "a.b_c__d-e---f/g0", "x/y/z/w", "0abc"])("valid: %s", (n) => expect(isValidName(n)).toBe(true));
  test.each(["", "A", "a/", "/a", "a//b", "a/../b", "..", "a/.b", "a._b", "a___b", "-a", "a-", "a b", "a%2fb", "a\\b", "a:b", "a/B"])(
    "invalid: %j",
    (n) => expect(isValidName(n)).toBe(false),
  );
  test("longer than 255 characters is refused", () => {
    expect(isValidName("a".repeat(255))).toBe(true);
    expect(isValidName("a".repeat(256))).toBe(false);
    expect(code(() => checkName("a".repeat(256)))).toBe("NAME_INVALID");
  });
  test("library/ prefix and first component", () => {
    expect(upstreamName("nginx", true)).toBe("library/nginx");
    expect(upstreamName("nginx", false)).toBe("nginx");
    expect(upstreamName("bitnami/nginx", true)).toBe("bitnami/nginx");
    expect(splitFirst("hub/library/nginx")).toEqual({ first: "hub", rest: "library/nginx" });
    expect(splitFirst("hub")).toEqual({ first: "hub", rest: null });
  });
});

describe("tags and references", () => {
  test.each(["latest", "v1.2.3", "_x", "A-b.c_d", "a".repeat(128)])("valid tag %s", (t) => expect(isValidTag(t)).toBe(true));
  test.each(["", ".x", "-x", "a+b", "a!b", "a=b", "a/b", "a".repeat(129)])("invalid tag %j", (t) => expect(isValidTag(t)).toBe(false));
  test("reference: tag or digest", () => {
    expect(parseReference("latest")).toEqual({ kind: "tag", tag: "latest" });
    expect(parseReference(D)).toEqual({ kind: "digest", digest: D });
    expect(code(() => parseReference("a+b"))).toBe("TAG_INVALID");
    expect(code(() => parseReference("sha256:xyz"))).toBe("DIGEST_INVALID");
    expect(code(() => parseReference("sha256:" + "A".repeat(64)))).toBe("DIGEST_INVALID");
  });
});

describe("digests", () => {
  test("sha256 parsed, others refused", () => {
    expect(parseDigest(D)).toEqual({ algorithm: "sha256", hex: "a".repeat(64), value: D });
    expect(isSha256(D)).toBe(true);
    expect(looksLikeDigest("sha512:" + "b".repeat(128))).toBe(true);
    expect(code(() => parseDigest("sha512:" + "b".repeat(128)))).toBe("DIGEST_INVALID");
    expect(code(() => parseDigest("sha256:" + "a".repeat(63)))).toBe("DIGEST_INVALID");
    expect(code(() => parseDigest("md5:abc"))).toBe("DIGEST_INVALID");
    expect(code(() => parseDigest(null))).toBe("DIGEST_INVALID");
    expect(code(() => parseDigest("nocolon"))).toBe("DIGEST_INVALID");
  });
  test("sha256Digest of bytes", () => {
    expect(sha256Digest("")).toBe("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    expect(sha256Digest(new TextEncoder().encode("{}"))).toBe("sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
  });
});

describe("API paths", () => {
  test("base, catalog, manifests, blobs, uploads, tags, referrers", () => {
    expect(parseApiPath("")).toEqual({ kind: "base" });
    expect(parseApiPath("_catalog")).toEqual({ kind: "catalog" });
    expect(parseApiPath("team/app/manifests/v1")).toEqual({ kind: "manifest", name: "team/app", reference: "v1" });
    expect(parseApiPath(`team/app/blobs/${D}`)).toEqual({ kind: "blob", name: "team/app", digest: D });
    expect(parseApiPath("team/app/blobs/uploads/")).toEqual({ kind: "uploads", name: "team/app", id: null });
    expect(parseApiPath("team/app/blobs/uploads/7f3c-aa")).toEqual({ kind: "uploads", name: "team/app", id: "7f3c-aa" });
    expect(parseApiPath("team/app/tags/list")).toEqual({ kind: "tags", name: "team/app" });
    expect(parseApiPath(`team/app/referrers/${D}`)).toEqual({ kind: "referrers", name: "team/app", digest: D });
  });
  test("routes on the last keyword: names may contain manifests/blobs/tags", () => {
    expect(parseApiPath("a/manifests/manifests/latest")).toEqual({ kind: "manifest", name: "a/manifests", reference: "latest" });
    expect(parseApiPath("a/blobs/blobs/uploads/")).toEqual({ kind: "uploads", name: "a/blobs", id: null });
    expect(parseApiPath(`x/blobs/uploads/blobs/${D}`)).toEqual({ kind: "blob", name: "x/blobs/uploads", digest: D });
    expect(parseApiPath("tags/tags/list")).toEqual({ kind: "tags", name: "tags" });
  });
  test("%3A in a digest is decoded; other escapes and bad names refused", () => {
    expect(parseApiPath(`a/blobs/sha256%3A${"a".repeat(64)}`)).toEqual({ kind: "blob", name: "a", digest: D });
    expect(code(() => parseApiPath("a%2fb/manifests/x"))).toBe("NAME_INVALID");
    expect(code(() => parseApiPath("%2e%2e/manifests/x"))).toBe("NAME_INVALID");
    expect(code(() => parseApiPath("../etc/manifests/x"))).toBe("NAME_INVALID");
    expect(code(() => parseApiPath("Team/manifests/x"))).toBe("NAME_INVALID");
    expect(code(() => parseApiPath("a/blobs/uploads/bad%20id"))).toBe("NAME_INVALID");
    expect(code(() => parseApiPath("a/blobs/uploads/bad id"))).toBe("BLOB_UPLOAD_UNKNOWN");
  });
  test("not an endpoint", () => {
    expect(parseApiPath("team/app")).toBeNull();
    expect(parseApiPath("team/app/manifests/")).toBeNull();
  });
});

describe("Content-Range of upload chunks", () => {
  test("OCI form and tolerated variants", () => {
    expect(parseContentRange("0-1048575")).toEqual({ start: 0, end: 1048575 });
    expect(parseContentRange("bytes=10-19")).toEqual({ start: 10, end: 19 });
    expect(parseContentRange("bytes 10-19/100")).toEqual({ start: 10, end: 19 });
    expect(parseContentRange(" 5-5 ")).toEqual({ start: 5, end: 5 });
  });
  test.each(["", "5", "-5", "a-b", "10-5", "1-2-3", "bytes=1-", "0x1-2"])("malformed %j → BLOB_UPLOAD_INVALID", (v) => {
    expect(code(() => parseContentRange(v))).toBe("BLOB_UPLOAD_INVALID");
  });
  test("Range reply", () => {
    expect(uploadRangeHeader(0)).toBe("0-0");
    expect(uploadRangeHeader(1)).toBe("0-0");
    expect(uploadRangeHeader(1048576)).toBe("0-1048575");
  });
});

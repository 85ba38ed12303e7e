// Unit tests: token scope grammar and intersection, token grants, WWW-Authenticate challenges, listing pagination.
import { describe, expect, test } from "bun:test";
import { intersectActions, parseScope, parseScopes, tokenGrants } from "./token.ts";
import { bearerChallenge, parseChallenges } from "./auth-challenge.ts";
import { linkHeader, paginate, parsePage, sortUnique } from "./reply.ts";
import { renderOciError, ociError } from "./errors.ts";
import { VaultError } from "../../core/plugin.ts";

describe("scopes", () => {
  test("type:name:actions, the name may hold host:port", () => {
    expect(parseScope("repository:team/app:pull,push")).toEqual({ type: "repository", name: "team/app", actions: ["pull", "push"] });
    expect(parseScope("repository:localhost:5000/app:pull")).toEqual({ type: "repository", name: "localhost:5000/app", actions: ["pull"] });
    expect(parseScope("registry:catalog:*")).toEqual({ type: "registry", name: "catalog", actions: ["*"] });
    expect(parseScope("repository:app:")).toEqual({ type: "repository", name: "app", actions: [] });
    expect(parseScope("repository")).toBeNull();
    expect(parseScope("repository:pull")).toBeNull();
    expect(parseScope(":a:pull")).toBeNull();
  });
  test("repeated and space-separated scopes", () => {
    expect(parseScopes(["repository:a:pull repository:b:push", "registry:catalog:*"]).map((s) => s.name)).toEqual(["a", "b", "catalog"]);
  });
  test("intersection of requested and allowed", () => {
    const readOnly = (a: string) => a === "pull";
    const all = () => true;
    expect(intersectActions(["pull", "push"], readOnly)).toEqual(["pull"]);
    expect(intersectActions(["push"], readOnly)).toEqual([]);
    expect(intersectActions(["*"], all)).toEqual(["pull", "push", "delete"]);
    expect(intersectActions(["*"], readOnly)).toEqual(["pull"]);
    expect(intersectActions(["push", "pull", "bogus"], all)).toEqual(["pull", "push"]);
  });
  test("token grants", () => {
    const claims = { sub: "u", access: [{ type: "repository", name: "hosted/app", actions: ["pull", "push"] }, { type: "registry", name: "catalog", actions: ["*"] }] };
    expect(tokenGrants(claims, "repository", "hosted/app", "push")).toBe(true);
    expect(tokenGrants(claims, "repository", "hosted/app", "delete")).toBe(false);
    expect(tokenGrants(claims, "repository", "hosted/other", "pull")).toBe(false);
    expect(tokenGrants(claims, "registry", "catalog", "*")).toBe(true);
    expect(tokenGrants({ sub: "x" }, "repository", "hosted/app", "pull")).toBe(false);
  });
});

describe("challenges", () => {
  test("ours", () => {
    expect(bearerChallenge("http://127.0.0.1:1/token", "127.0.0.1:1", "repository:a/b:pull", "insufficient_scope")).toBe(
      'Bearer realm="http://127.0.0.1:1/token",service="127.0.0.1:1",scope="repository:a/b:pull",error="insufficient_scope"',
    );
  });
  test("Docker Hub's and others' parsed", () => {
    const c = parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"');
    expect(c).toEqual([{ scheme: "bearer", params: { realm: "https://auth.docker.io/token", service: "registry.docker.io", scope: "repository:library/alpine:pull" } }]);
    expect(parseChallenges('Basic realm="Registry Realm"')).toEqual([{ scheme: "basic", params: { realm: "Registry Realm" } }]);
    const two = parseChallenges('Basic realm="x", Bearer realm="https://a/t",service=s');
    expect(two.map((x) => x.scheme)).toEqual(["basic", "bearer"]);
    expect(two[1].params).toEqual({ realm: "https://a/t", service: "s" });
    expect(parseChallenges('Bearer realm="a\\"b"')[0].params.realm).toBe('a"b');
    expect(parseChallenges(null)).toEqual([]);
  });
});

describe("pagination", () => {
  const tags = sortUnique(["v2", "v10", "latest", "v1", "v1", "A"]);
  test("sorted in code-unit order, unique", () => expect(tags).toEqual(["A", "latest", "v1", "v10", "v2"]));
  test("n and last", () => {
    expect(paginate(tags, { n: undefined, last: undefined })).toEqual({ items: tags, next: undefined });
    expect(paginate(tags, { n: 2, last: undefined })).toEqual({ items: ["A", "latest"], next: "latest" });
    expect(paginate(tags, { n: 2, last: "latest" })).toEqual({ items: ["v1", "v10"], next: "v10" });
    expect(paginate(tags, { n: 2, last: "v10" })).toEqual({ items: ["v2"], next: undefined });
    expect(paginate(tags, { n: 0, last: undefined })).toEqual({ items: [], next: undefined });
    expect(paginate(tags, { n: 5, last: undefined })).toEqual({ items: tags, next: undefined });
    expect(paginate(tags, { n: 3, last: "b" })).toEqual({ items: ["latest", "v1", "v10"], next: "v10" });
  });
  test("parsePage and Link", () => {
    expect(parsePage(new URL("http://x/?n=50&last=v1.9"))).toEqual({ n: 50, last: "v1.9" });
    expect(parsePage(new URL("http://x/"))).toEqual({ n: undefined, last: undefined });
    expect(() => parsePage(new URL("http://x/?n=-1"))).toThrow(VaultError);
    expect(() => parsePage(new URL("http://x/?n=abc"))).toThrow(VaultError);
    expect(linkHeader("/v2/team/app/tags/list", 50, "v1.9")).toBe('</v2/team/app/tags/list?n=50&last=v1.9>; rel="next"');
  });
});

describe("error bodies", () => {
  test("OCI JSON with the code and the API version header", async () => {
    const res = renderOciError(ociError("BLOB_UNKNOWN", "blob unknown", { digest: "sha256:x" }));
    expect(res.status).toBe(404);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.headers.get("docker-distribution-api-version")).toBe("registry/2.0");
    expect(await res.json()).toEqual({ errors: [{ code: "BLOB_UNKNOWN", message: "blob unknown", detail: { digest: "sha256:x" } }] });
  });
  test("core errors map to OCI codes; URLs are not shown", async () => {
    const res = renderOciError(new VaultError("VAULT_UPSTREAM_DOWN", 503, "upstream unreachable", { url: "http://secret.invalid/" }));
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ errors: [{ code: "UNAVAILABLE", message: "upstream unreachable", detail: {} }] });
    const bad = renderOciError(new VaultError("VAULT_BAD_PATH", 400, "bad path: encoded slash"));
    expect((await bad.json()).errors[0].code).toBe("NAME_INVALID");
  });
});

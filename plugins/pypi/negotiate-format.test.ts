/** PEP 691 `?format=` written unencoded: `+` arrives decoded to a space and must still select the representation. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { negotiate } from "./negotiate.ts";
import { startUpstream, type TestUpstream } from "../../test/helpers/upstream.ts";
import { startVault, type StartedVault } from "../../test/helpers/vault.ts";

test("format values whose + became a space", () => {
  expect(negotiate(null, "application/vnd.pypi.simple.v1 json")).toBe("json");
  expect(negotiate(null, "application/vnd.pypi.simple.v1 html")).toBe("html");
  expect(negotiate(null, "application/vnd.pypi.simple.latest json")).toBe("json");
  expect(negotiate(null, "application/vnd.pypi.simple.v1+json")).toBe("json");
  expect(negotiate(null, "text/plain")).toBeNull();
});

let up: TestUpstream;
let v: StartedVault;
beforeAll(async () => {
  up = await startUpstream({
    handler: (req) =>
      new URL(req.url).pathname === "/simple/demo/"
        ? new Response('<a href="/packages/demo-1.0-py3-none-any.whl">demo-1.0-py3-none-any.whl</a>', { headers: { "content-type": "text/html" } })
        : undefined,
  });
  v = await startVault({ config: { repositories: [{ name: "py", format: "pypi", type: "proxy", upstream: `${up.url}/simple/` }] } });
});
afterAll(async () => {
  await v?.stop();
  await up?.stop();
});

test("GET /simple/<p>/?format=application/vnd.pypi.simple.v1+json (unencoded) answers JSON through a real vault", async () => {
  const res = await fetch(`${v.url}/py/simple/demo/?format=application/vnd.pypi.simple.v1+json`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe("application/vnd.pypi.simple.v1+json");
  expect(((await res.json()) as { name: string }).name).toBe("demo");
});

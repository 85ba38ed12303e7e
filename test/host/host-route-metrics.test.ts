/**
 * Requests to plugins' host routes (core/server.ts serveHost) are counted in `vault_http_requests_total` and logged
 * under the repository they address (VaultPlugin.repositoryOf): OCI `/v2/<repo>/…` by the name's first component or
 * the `root: true` repository, `/token` by its `scope=repository:<name>:…`; requests naming none stay under `-`.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { definePlugin, type VaultPlugin } from "../../core/plugin.ts";
import { loadPlugins } from "../../core/loader.ts";
import { startVault, REPO_ROOT, type StartedVault } from "../helpers/vault.ts";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { rawRequest } from "../helpers/raw-http.ts";

const ZERO_DIGEST = "sha256:" + "0".repeat(64);

/** `vault_http_requests_total` by `repository|status`, from the vault's own /-/metrics. */
async function requestCounts(v: StartedVault): Promise<Map<string, number>> {
  const text = await (await fetch(`${v.url}/-/metrics`)).text();
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^vault_http_requests_total\{repository="([^"]*)",status="(\d+)"\} (\d+)$/gm)) out.set(`${m[1]}|${m[2]}`, Number(m[3]));
  return out;
}

/** Per `repository|status`, how much the counter grew between two snapshots (zero deltas left out). */
function delta(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, n] of after) if (n - (before.get(k) ?? 0) !== 0) out[k] = n - (before.get(k) ?? 0);
  return out;
}

describe("host-route requests are attributed to the repository they address", () => {
  let up: TestUpstream;
  let v: StartedVault;
  const logLines: string[] = [];

  beforeAll(async () => {
    // a registry that knows nothing: the proxy's manifest request ends in 404 from upstream
    up = await startUpstream({
      handler: () => Response.json({ errors: [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown", detail: {} }] }, { status: 404 }),
    });
    v = await startVault({
      accessLog: (l) => logLines.push(l),
      config: {
        repositories: [
          { name: "hrm-local", format: "oci", type: "hosted" },
          { name: "hrm-hub", format: "oci", type: "proxy", upstream: up.url, root: true },
        ],
      },
    });
  }, 30_000);
  afterAll(async () => {
    await v?.stop();
    await up?.stop();
  });

  test("/v2/<repo>/…, root-repository names and /token scopes count under their repository; /v2/, _catalog and scopeless /token under -", async () => {
    const before = await requestCounts(v);
    logLines.length = 0;
    const get = async (target: string, method = "GET") => (await rawRequest(v.port, target, { method })).status;

    const blob = await get(`/v2/hrm-local/app/blobs/${ZERO_DIGEST}`); // hosted: blob unknown
    const tags = await get("/v2/hrm-local/app/tags/list");
    const upload = await get("/v2/hrm-local/app/blobs/uploads/", "POST"); // anonymous push: challenged
    const rootManifest = await get("/v2/library/busybox/manifests/latest"); // no such repository: the root one (proxy)
    const tokLocal = await get("/token?service=vault&scope=repository:hrm-local/app:pull");
    const tokRoot = await get("/token?service=vault&scope=repository:library/busybox:pull");
    const base = await get("/v2/");
    const catalog = await get("/v2/_catalog");
    const tokNone = await get("/token?service=vault");
    expect([blob, tags, upload]).toEqual([404, 404, 401]);
    expect(rootManifest).toBe(404);
    expect(up.count("/v2/library/busybox/manifests/latest")).toBeGreaterThanOrEqual(1);
    expect([tokLocal, tokRoot, tokNone]).toEqual([200, 200, 200]);

    const d = delta(before, await requestCounts(v));
    const expected: Record<string, number> = {};
    const add = (repo: string, status: number) => (expected[`${repo}|${status}`] = (expected[`${repo}|${status}`] ?? 0) + 1);
    add("hrm-local", blob);
    add("hrm-local", tags);
    add("hrm-local", upload);
    add("hrm-local", tokLocal);
    add("hrm-hub", rootManifest);
    add("hrm-hub", tokRoot);
    add("-", base);
    add("-", catalog);
    add("-", tokNone);
    add("-", 200); // the first /-/metrics scrape, counted after it rendered
    expect(d).toEqual(expected);

    // the access log (written before each response is returned) names the same repository, none for requests naming none
    const repoOf = (path: string) => {
      const line = logLines.map((l) => JSON.parse(l) as { path: string; repo?: string }).find((l) => l.path === path);
      expect(line).toBeDefined();
      return line!.repo ?? null;
    };
    expect(repoOf(`/v2/hrm-local/app/blobs/${ZERO_DIGEST}`)).toBe("hrm-local");
    expect(repoOf("/v2/library/busybox/manifests/latest")).toBe("hrm-hub");
    expect(repoOf("/token")).toBe("hrm-local"); // first /token line: the hrm-local scope
    expect(repoOf("/v2/")).toBeNull();
  });
});

describe("repositoryOf of another plugin", () => {
  /** Host routes at /hrm-probe; repositoryOf returns the `repo` query parameter as is, or throws on `throw`. */
  const probe: VaultPlugin = definePlugin({
    format: "hrmprobe",
    apiVersion: 1,
    types: ["hosted"],
    configSchema: { type: "object", properties: {} },
    routes() {},
    hostRoutes(app) {
      app.get("/hrm-probe", () => new Response("probe\n"));
    },
    repositoryOf(req) {
      const r = new URL(req.url).searchParams.get("repo");
      if (r === "throw") throw new Error("boom");
      return r ?? undefined;
    },
    renderError: (err) => new Response(err.message, { status: err.status }),
  });
  let v: StartedVault;

  beforeAll(async () => {
    const plugins = await loadPlugins({}, REPO_ROOT, { builtins: false, extra: [probe] });
    plugins.set("oci", (await loadPlugins({ repositories: [{ format: "oci" }] }, REPO_ROOT, { builtins: "needed" })).get("oci")!);
    v = await startVault({
      plugins,
      config: {
        repositories: [
          { name: "hrm-p1", format: "hrmprobe", type: "hosted" },
          { name: "hrm-oci", format: "oci", type: "hosted" },
        ],
      },
    });
  }, 30_000);
  afterAll(async () => {
    await v?.stop();
  });

  test("counts under its own repository; a name of another plugin's repository, an unknown one or a throw count under -", async () => {
    const before = await requestCounts(v);
    for (const q of ["?repo=hrm-p1", "?repo=hrm-oci", "?repo=nope", "?repo=throw", ""]) {
      const r = await fetch(`${v.url}/hrm-probe${q}`);
      expect(r.status).toBe(200);
      expect(await r.text()).toBe("probe\n");
    }
    // 4 probes under "-", plus the first /-/metrics scrape (counted after it rendered)
    expect(delta(before, await requestCounts(v))).toEqual({ "hrm-p1|200": 1, "-|200": 5 });
  });
});

/** The seed read-through cache's `config.yml` (`http_host`, `cache_dir`, `backends:`) served as is by the real CLI, with the seed's URL layout. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { spawnVault, type SpawnedVault } from "../helpers/vault.ts";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { startPypiIndex, type TestPypiIndex } from "../helpers/pypi-index.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

let files: TestUpstream;
let registry: TestUpstream;
let index: TestPypiIndex;
let v: SpawnedVault;

beforeAll(async () => {
  files = await startUpstream({ handler: (req) => new Response(`file ${new URL(req.url).pathname}\n`) });
  registry = await startUpstream({
    handler: () => Response.json({ errors: [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown", detail: {} }] }, { status: 404 }),
  });
  index = await startPypiIndex();
  const dir = await tmpDataDir("vault-seed-");
  const file = join(dir, "config.yml");
  // The seed's config-sample.yml shape: top-level http_* keys, cache_dir, log_level, and backends with prefix + URL.
  await Bun.write(
    file,
    `http_host: localhost
http_port: 8080
cache_dir: ${join(dir, "cache")}
log_level: INFO
backends:
  - type: pypi
    config:
      prefix: /pypi/
      index_url: ${index.indexUrl.replace(/\/$/, "")}
  - type: dockerhub
    config:
      prefix: /dockerhub/
      registry_url: ${registry.url}
  - type: http
    config:
      prefix: /apache/
      base_url: ${files.url}/archive
`,
  );
  v = await spawnVault({ config: file }); // the CLI's --port 0 --host 127.0.0.1 --data override http_port, http_host, cache_dir
}, 60_000);
afterAll(async () => {
  await v?.stop();
  await Promise.all([files?.stop(), registry?.stop(), index?.stop()]);
});

test("http backend: GET <prefix><path> = base_url + path", async () => {
  const r = await fetch(`${v.url}/apache/hadoop/common/hadoop-3.3.6/hadoop-3.3.6.tar.gz.asc`);
  expect(r.status).toBe(200);
  expect(await r.text()).toBe("file /archive/hadoop/common/hadoop-3.3.6/hadoop-3.3.6.tar.gz.asc\n");
  expect(files.count("/archive/hadoop/common/hadoop-3.3.6/hadoop-3.3.6.tar.gz.asc")).toBe(1);
});

test("pypi backend: the index URL is <prefix>, project pages at <prefix><project>/", async () => {
  const [project, list] = [...index.projects.entries()][0];
  const r = await fetch(`${v.url}/pypi/${project}/`);
  expect(r.status).toBe(200);
  expect(r.headers.get("content-type")).toContain("html");
  const html = await r.text();
  for (const f of list) expect(html).toContain(f.filename);
  const root = await fetch(`${v.url}/pypi/`);
  expect(root.status).toBe(200);
  expect(await root.text()).toContain(project);
});

test("dockerhub backend: served by the oci plugin at the seed's /dockerhub/<image>/manifests/<ref>", async () => {
  const r = await fetch(`${v.url}/dockerhub/library/ubuntu/manifests/latest`, { headers: { accept: "application/vnd.oci.image.manifest.v1+json" } });
  expect(r.status).toBe(404);
  const body = (await r.json()) as { errors: { code: string }[] };
  expect(body.errors[0].code).toBe("MANIFEST_UNKNOWN");
  expect(registry.count((q) => q.path.endsWith("/manifests/latest"))).toBeGreaterThan(0);
});

test("unknown seed paths are a plain 404", async () => {
  const r = await fetch(`${v.url}/archive.apache.org/x`);
  expect(r.status).toBe(404);
  expect(await r.text()).toBe("404 not found\n");
});

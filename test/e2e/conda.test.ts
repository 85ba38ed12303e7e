/**
 * e2e: conda channels through the vault with the real conda-ecosystem clients — rattler's JS bindings (`simpleSolve`,
 * pixi's engine: fetches repodata the way rattler does, shards first) solving against proxy, hosted and group channels,
 * package downloads verified by sha256 and extracted by Debian's `cph`. Upstreams are loopback channels built from the
 * real fixture channel (test/helpers/conda.ts) and count their requests.
 *
 * Under CI=true a missing client (cph, @conda-org/rattler) fails the tests; elsewhere they are skipped with the reason.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { decode } from "@msgpack/msgpack";
import { CONDA_FIXTURES, ZLIB_CHANNEL, checkPackage, rattlerSolve, requireCondaClients, sha256Hex, startCondaChannel, type TestCondaChannel } from "../helpers/conda.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

const CLIENTS = await requireCondaClients();
const clientTest = CLIENTS ? test : test.skip;
const T = 120_000;

/** The fixture channel's records by file name (linux-64). */
const fixtureRepodata = JSON.parse(await Bun.file(join(ZLIB_CHANNEL, "linux-64/repodata.json")).text());
const record = (fn: string) => fixtureRepodata[fn.endsWith(".conda") ? "packages.conda" : "packages"][fn];

/** Downloads `url`, checks its sha256, and that cph and conda-package-streaming read it with zlib's library inside. */
async function downloadAndExtract(url: string, sha256: string): Promise<void> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  const bytes = new Uint8Array(await res.arrayBuffer());
  expect(sha256Hex(bytes)).toBe(sha256);
  const file = join(await tmpDataDir("conda-dl-"), url.slice(url.lastIndexOf("/") + 1));
  await Bun.write(file, bytes);
  const x = await checkPackage(file);
  expect(x.code).toBe(0);
  expect(JSON.parse(await Bun.file(join(x.dir, "info/index.json")).text()).name).toBe("zlib");
  expect(x.members).toContain("lib/libz.so.1.2.11");
}

describe("conda proxy channel", () => {
  let ch: TestCondaChannel;
  let vault: StartedVault;
  let chan: string;

  beforeAll(async () => {
    ch = await startCondaChannel({ shards: false });
    vault = await startVault({ config: { repositories: [{ name: "conda", format: "conda", type: "proxy", upstream: ch.url }] } });
    chan = `${vault.url}/conda/`;
  });
  afterAll(async () => {
    await vault?.stop();
    await ch?.stop();
  });

  clientTest("rattler solves zlib through the proxy; the package downloads verified and cph extracts it; a second solve hits the cache", async () => {
    const solved = await rattlerSolve(["zlib"], [chan], ["linux-64", "noarch"]);
    const zlib = solved.find((p) => p.name === "zlib")!;
    expect(zlib.version).toBe("1.2.11");
    expect(zlib.url).toBe(`${chan}linux-64/zlib-1.2.11-h7b6447c_3.conda`);
    expect(zlib.sha256).toBe(record("zlib-1.2.11-h7b6447c_3.conda").sha256);
    expect(solved.map((p) => p.name).sort()).toEqual(["libgcc-ng", "zlib"]);
    // upstream had no shards and no .zst: the vault fetched each subdir's repodata.json once and derived the rest
    expect(ch.count("/linux-64/repodata.json", "GET")).toBe(1);
    expect(ch.count("/noarch/repodata.json", "GET")).toBe(1);
    expect(ch.count("repodata_shards.msgpack.zst")).toBe(1 * 2); // probed once per subdir, absence remembered

    await downloadAndExtract(zlib.url, zlib.sha256!);
    const tbz = `${chan}linux-64/zlib-1.2.11-h7b6447c_3.tar.bz2`;
    await downloadAndExtract(tbz, record("zlib-1.2.11-h7b6447c_3.tar.bz2").sha256);
    // a record whose file upstream does not have: a real 404
    const gone = await fetch(solved.find((p) => p.name === "libgcc-ng")!.url);
    expect(gone.status).toBe(404);
    await gone.text();

    const before = ch.upstream.requests.length;
    const again = await rattlerSolve(["zlib"], [chan], ["linux-64", "noarch"]);
    expect(again.find((p) => p.name === "zlib")!.sha256).toBe(zlib.sha256);
    const hit = await fetch(zlib.url);
    expect(hit.headers.get("x-vault-cache")).toBe("HIT");
    expect(sha256Hex(new Uint8Array(await hit.arrayBuffer()))).toBe(zlib.sha256!);
    expect(ch.upstream.requests.length).toBe(before); // repodata still fresh, package cached
  }, T);

  clientTest("stale repodata is revalidated with conditional requests (304), packages are not fetched again", async () => {
    const up = await startCondaChannel({ shards: false });
    const v = await startVault({ config: { repositories: [{ name: "c", format: "conda", type: "proxy", upstream: up.url, repodataTtlSeconds: 0 }] } });
    try {
      const first = await rattlerSolve(["zlib"], [`${v.url}/c/`], ["linux-64", "noarch"]);
      const z = first.find((p) => p.name === "zlib")!;
      await (await fetch(z.url)).arrayBuffer();
      const n = up.upstream.requests.length;
      const again = await rattlerSolve(["zlib"], [`${v.url}/c/`], ["linux-64", "noarch"]);
      expect(again.find((p) => p.name === "zlib")!.sha256).toBe(z.sha256);
      expect((await fetch(z.url)).headers.get("x-vault-cache")).toBe("HIT");
      const later = up.upstream.requests.slice(n);
      const repodata = later.filter((r) => r.path.endsWith("/repodata.json"));
      expect(repodata.length).toBeGreaterThan(0);
      for (const r of repodata) expect(r.headers.get("if-none-match") ?? r.headers.get("if-modified-since")).toBeTruthy();
      expect(later.filter((r) => r.path.endsWith(".conda") || r.path.endsWith(".tar.bz2"))).toEqual([]);
    } finally {
      await v.stop();
      await up.stop();
    }
  }, T);

  clientTest("shards: derive serves shards rattler can read for an upstream whose own shards store digests as hex strings", async () => {
    const up = await startCondaChannel({ shards: true });
    const v = await startVault({ config: { repositories: [{ name: "c", format: "conda", type: "proxy", upstream: up.url, shards: "derive" }] } });
    try {
      const solved = await rattlerSolve(["zlib"], [`${v.url}/c/`], ["linux-64", "noarch"]);
      expect(solved.find((p) => p.name === "zlib")!.sha256).toBe(record("zlib-1.2.11-h7b6447c_3.conda").sha256);
      expect(up.count("repodata_shards.msgpack.zst")).toBe(0); // upstream's shards were never used
    } finally {
      await v.stop();
      await up.stop();
    }
  }, T);

  test("every variant comes from one snapshot: .zst decompresses to repodata.json, current_repodata, shards, 404 for .bz2/.jlap", async () => {
    const json = new Uint8Array(await (await fetch(`${chan}linux-64/repodata.json`)).arrayBuffer());
    expect(sha256Hex(json)).toBe(sha256Hex(await Bun.file(join(ZLIB_CHANNEL, "linux-64/repodata.json")).bytes())); // stored as upstream sent it
    const z = await fetch(`${chan}linux-64/repodata.json.zst`);
    expect(z.status).toBe(200);
    expect(z.headers.get("etag")).toBeTruthy();
    expect(sha256Hex(Bun.zstdDecompressSync(new Uint8Array(await z.arrayBuffer())))).toBe(sha256Hex(json));
    const cur = await (await fetch(`${chan}linux-64/current_repodata.json`)).json();
    expect(Object.keys(cur["packages.conda"])).toEqual(["zlib-1.2.11-h7b6447c_3.conda"]);
    const idxRes = await fetch(`${chan}linux-64/repodata_shards.msgpack.zst`);
    const idx = decode(Bun.zstdDecompressSync(new Uint8Array(await idxRes.arrayBuffer()))) as { info: Record<string, string>; shards: Record<string, Uint8Array> };
    expect(idx.info).toEqual({ base_url: "", shards_base_url: "./shards/", subdir: "linux-64" });
    const hex = Buffer.from(idx.shards.zlib).toString("hex");
    const shardRes = await fetch(`${chan}linux-64/shards/${hex}.msgpack.zst`);
    expect(shardRes.headers.get("cache-control")).toContain("immutable");
    const shardBytes = new Uint8Array(await shardRes.arrayBuffer());
    expect(sha256Hex(shardBytes)).toBe(hex);
    const shard = decode(Bun.zstdDecompressSync(shardBytes)) as { "packages.conda": Record<string, { sha256: Uint8Array }> };
    expect(Buffer.from(shard["packages.conda"]["zlib-1.2.11-h7b6447c_3.conda"].sha256).toString("hex")).toBe(record("zlib-1.2.11-h7b6447c_3.conda").sha256);
    for (const p of ["linux-64/repodata.json.bz2", "linux-64/repodata.jlap"]) {
      const r = await fetch(chan + p, { method: "HEAD" });
      expect(r.status).toBe(404);
    }
    // conditional requests on the derived variant
    const etag = z.headers.get("etag")!;
    const nm = await fetch(`${chan}linux-64/repodata.json.zst`, { headers: { "if-none-match": etag } });
    expect(nm.status).toBe(304);
  }, T);

  test("a package whose upstream bytes differ from the repodata sha256 is refused and never cached", async () => {
    const bad = await startCondaChannel({
      shards: false,
      handler: (req) => {
        if (new URL(req.url).pathname === "/osx-64/zlib-1.2.11-h1de35cc_3.conda") {
          const b = new Uint8Array(require("node:fs").readFileSync(join(ZLIB_CHANNEL, "osx-64/zlib-1.2.11-h1de35cc_3.conda")));
          b[b.length - 100] ^= 0xff; // same size, other bytes
          return new Response(b);
        }
        return undefined;
      },
    });
    const v = await startVault({ config: { repositories: [{ name: "c", format: "conda", type: "proxy", upstream: bad.url }] } });
    try {
      const url = `${v.url}/c/osx-64/zlib-1.2.11-h1de35cc_3.conda`;
      for (let i = 0; i < 2; i++) {
        let failed = false;
        try {
          const r = await fetch(url);
          if (r.status !== 200) failed = true;
          else await r.arrayBuffer();
        } catch {
          failed = true; // cut connection: the mismatch was found after the status line
        }
        expect(failed).toBe(true);
      }
      expect(await v.vault.repositories.get("c")!.artifacts.get("osx-64/zlib-1.2.11-h1de35cc_3.conda")).toBeNull();
      expect(bad.count("/osx-64/zlib-1.2.11-h1de35cc_3.conda", "GET")).toBe(2); // asked again: nothing was cached
      // the untampered .tar.bz2 of the same subdir passes
      const ok = await fetch(`${v.url}/c/osx-64/zlib-1.2.11-h1de35cc_3.tar.bz2`);
      expect(sha256Hex(new Uint8Array(await ok.arrayBuffer()))).toBe("9b73eb4e3197eccb485250709c6f4782a83a8688d5b8251a212251c451d9b9ad");
    } finally {
      await v.stop();
      await bad.stop();
    }
  }, T);

  test("upstream CEP-16 shards (auto) are passed through byte for byte; .zst upstream is the snapshot source", async () => {
    const up = await startCondaChannel({ shards: true, zst: true });
    const v = await startVault({ config: { repositories: [{ name: "c", format: "conda", type: "proxy", upstream: up.url }] } });
    try {
      const idx = new Uint8Array(await (await fetch(`${v.url}/c/linux-64/repodata_shards.msgpack.zst`)).arrayBuffer());
      expect(sha256Hex(idx)).toBe("11c520edb78a453ac57373230566b91a166fcb0ad78c6f183f5bd0f8af3bbd54");
      for (const hex of ["56a0c19b47ba1a2d0f1390eda489b1c49a00d35814571057e6d81e0c93dfd157", "2dcdacf7009b4f1c21f452c5079384340257e0e1cbecb8ec484984d1fa85b115"]) {
        const s = new Uint8Array(await (await fetch(`${v.url}/c/linux-64/${hex}.msgpack.zst`)).arrayBuffer());
        expect(sha256Hex(s)).toBe(hex);
      }
      const j = await fetch(`${v.url}/c/linux-64/repodata.json`);
      expect((await j.json()).packages["zlib-1.2.11-h7b6447c_3.tar.bz2"].sha256).toBe(record("zlib-1.2.11-h7b6447c_3.tar.bz2").sha256);
      expect(up.count("/linux-64/repodata.json.zst", "GET")).toBe(1);
      expect(up.count("/linux-64/repodata.json", "GET")).toBe(0);
    } finally {
      await v.stop();
      await up.stop();
    }
  }, T);

  test("CEP-15 base_url: clients get repodata without it and download through the vault, which fetches from the base", async () => {
    const repodata = JSON.parse(await Bun.file(join(ZLIB_CHANNEL, "linux-64/repodata.json")).text());
    repodata.info.base_url = "../../pool/linux-64/";
    repodata.repodata_version = 2;
    const up = await startCondaChannel({
      shards: false,
      handler: (req) => {
        const p = new URL(req.url).pathname;
        if (p === "/linux-64/repodata.json") return Response.json(repodata);
        if (p.startsWith("/pool/linux-64/")) return new Response(Bun.file(join(ZLIB_CHANNEL, "linux-64", p.slice(15))));
        if (p.startsWith("/linux-64/zlib")) return new Response("not here", { status: 404 });
        return undefined;
      },
    });
    const v = await startVault({ config: { repositories: [{ name: "c", format: "conda", type: "proxy", upstream: up.url }] } });
    try {
      const served = await (await fetch(`${v.url}/c/linux-64/repodata.json`)).json();
      expect(served.info).toEqual({ subdir: "linux-64" });
      expect(served.repodata_version).toBe(1);
      const r = await fetch(`${v.url}/c/linux-64/zlib-1.2.11-h7b6447c_3.conda`);
      expect(sha256Hex(new Uint8Array(await r.arrayBuffer()))).toBe(record("zlib-1.2.11-h7b6447c_3.conda").sha256);
      expect(up.count("/pool/linux-64/zlib-1.2.11-h7b6447c_3.conda", "GET")).toBe(1);
    } finally {
      await v.stop();
      await up.stop();
    }
  }, T);

  clientTest("the pytorch repodata (1.2 MB) is parsed and derived in the worker pool; rattler solves against it", async () => {
    const up = await startCondaChannel({ pytorch: true });
    const v = await startVault({ config: { repositories: [{ name: "pt", format: "conda", type: "proxy", upstream: up.url }] } });
    const poolRuns = async () => {
      const m = await (await fetch(`${v.url}/-/metrics`)).text();
      const line = m.split("\n").find((l) => l.startsWith("vault_pool_tasks_total{") && l.includes('task="condaRepodata"') && l.includes('outcome="ok"'));
      return line ? Number(line.split(" ").pop()) : 0;
    };
    try {
      const before = await poolRuns();
      const solved = await rattlerSolve(["magma-cuda100"], [`${v.url}/pt/`], ["linux-64", "noarch"]);
      expect(solved.find((p) => p.name === "magma-cuda100")!.version).toBe("2.5.2");
      expect(await poolRuns()).toBeGreaterThanOrEqual(before + 2); // normalize + derive ran in the pool
      const raw = await Bun.file(join(CONDA_FIXTURES, "repodata/pytorch-linux-64-repodata.json")).bytes();
      const z = new Uint8Array(await (await fetch(`${v.url}/pt/linux-64/repodata.json.zst`)).arrayBuffer());
      expect(sha256Hex(Bun.zstdDecompressSync(z))).toBe(sha256Hex(raw));
    } finally {
      await v.stop();
      await up.stop();
    }
  }, T);
});

/** Uploads a fixture file with PUT (Basic auth). */
async function put(base: string, subdir: string, file: string, body: Uint8Array, auth?: string): Promise<Response> {
  return fetch(`${base}/${subdir}/${file}`, { method: "PUT", body: body as BodyInit, headers: auth ? { authorization: auth } : {} });
}

describe("conda hosted and group channels", () => {
  let ch: TestCondaChannel;
  let vault: StartedVault;
  const admin = "Basic " + btoa("admin:s3cret-pass");
  const PKGS = [
    ["linux-64", "zlib-1.2.11-h7b6447c_3.conda"],
    ["linux-64", "zlib-1.2.11-h7b6447c_3.tar.bz2"],
    ["osx-64", "zlib-1.2.11-h1de35cc_3.conda"],
  ] as const;

  beforeAll(async () => {
    ch = await startCondaChannel({ shards: false });
    vault = await startVault({
      config: {
        auth: { anonymousRead: true, admin: { user: "admin", password: "s3cret-pass" } },
        repositories: [
          { name: "conda-local", format: "conda", type: "hosted" },
          { name: "conda-up", format: "conda", type: "proxy", upstream: ch.url },
          { name: "conda-all", format: "conda", type: "group", members: ["conda-local", "conda-up"], writeTo: "conda-local" },
        ],
      },
    });
  });
  afterAll(async () => {
    await vault?.stop();
    await ch?.stop();
  });

  test("uploads with PUT (curl) and multipart POST regenerate repodata with the fixture's exact records", async () => {
    const base = `${vault.url}/conda-local`;
    // curl, as rattler-build/Artifactory users upload
    const [sub0, f0] = PKGS[0];
    const c = Bun.spawn(["curl", "-sS", "-u", "admin:s3cret-pass", "-T", join(ZLIB_CHANNEL, sub0, f0), "-w", "%{http_code}", "-o", "/dev/null", `${base}/${sub0}/${f0}`], { stdout: "pipe" });
    expect(await new Response(c.stdout).text()).toBe("201");
    expect(await c.exited).toBe(0);
    const [sub1, f1] = PKGS[1];
    const r1 = await put(base, sub1, f1, await Bun.file(join(ZLIB_CHANNEL, sub1, f1)).bytes(), admin);
    expect(r1.status).toBe(201);
    expect((await r1.json()).files[0]).toMatchObject({ path: `${sub1}/${f1}`, sha256: record(f1).sha256 });
    const form = new FormData();
    form.append("files", new File([await Bun.file(join(ZLIB_CHANNEL, PKGS[2][0], PKGS[2][1])).bytes()], PKGS[2][1]));
    const r2 = await fetch(`${base}/`, { method: "POST", body: form, headers: { authorization: admin } });
    expect(r2.status).toBe(201);
    expect((await r2.json()).files[0].subdir).toBe("osx-64");

    const repo = await (await fetch(`${base}/linux-64/repodata.json`)).json();
    for (const fn of [f0, f1]) {
      const want = record(fn);
      const got = repo[fn.endsWith(".conda") ? "packages.conda" : "packages"][fn];
      for (const k of ["name", "version", "build", "build_number", "depends", "license", "md5", "sha256", "size", "subdir", "timestamp"]) expect(got[k]).toEqual(want[k]);
    }
    expect(repo.info).toEqual({ subdir: "linux-64" });
    const cd = await (await fetch(`${base}/channeldata.json`)).json();
    expect(cd.packages.zlib.subdirs).toEqual(["linux-64", "osx-64"]);
    expect(cd.packages.zlib.version).toBe("1.2.11");
    expect(cd.subdirs).toEqual(["linux-64", "osx-64"]);
    const noarch = await fetch(`${base}/noarch/repodata.json`);
    expect(noarch.status).toBe(200); // an empty subdir still makes the URL a channel
    // the same file again: identical → 200, nothing changes
    const again = await put(base, sub1, f1, await Bun.file(join(ZLIB_CHANNEL, sub1, f1)).bytes(), admin);
    expect(again.status).toBe(200);
    expect((await again.json()).files[0].identical).toBe(true);
  }, T);

  clientTest("rattler solves against the hosted channel and the group; packages download verified and extract with cph", async () => {
    // zlib from the hosted channel (first channel wins); its dependency libgcc-ng only exists in the proxy's channel
    const hosted = await rattlerSolve(["zlib"], [`${vault.url}/conda-local/`, `${vault.url}/conda-up/`], ["linux-64", "noarch"]);
    const hz = hosted.find((p) => p.name === "zlib")!;
    expect(hz.url).toBe(`${vault.url}/conda-local/linux-64/zlib-1.2.11-h7b6447c_3.conda`);
    expect(hosted.find((p) => p.name === "libgcc-ng")!.url).toStartWith(`${vault.url}/conda-up/`);
    await downloadAndExtract(hz.url, hz.sha256!);

    const grp = await rattlerSolve(["zlib"], [`${vault.url}/conda-all/`], ["linux-64", "noarch"]);
    const z = grp.find((p) => p.name === "zlib")!;
    expect(z.url).toBe(`${vault.url}/conda-all/linux-64/zlib-1.2.11-h7b6447c_3.conda`);
    expect(grp.map((p) => p.name).sort()).toEqual(["libgcc-ng", "zlib"]); // libgcc-ng only in the proxy member
    const upstreamBefore = ch.count("zlib-1.2.11-h7b6447c_3.conda", "GET");
    await downloadAndExtract(z.url, z.sha256!);
    expect(ch.count("zlib-1.2.11-h7b6447c_3.conda", "GET")).toBe(upstreamBefore); // served by the hosted member, first in order
    const merged = await (await fetch(`${vault.url}/conda-all/linux-64/repodata.json`)).json();
    expect(Object.keys(merged.packages).sort()).toEqual(["libgcc-ng-8.2.0-hdf63c60_1.tar.bz2", "zlib-1.2.11-h7b6447c_3.tar.bz2"]);
    // win-64 only exists in the proxy member: served from it through the group
    const w = await fetch(`${vault.url}/conda-all/win-64/zlib-1.2.11-h62dcd97_3.tar.bz2`);
    expect(sha256Hex(new Uint8Array(await w.arrayBuffer()))).toBe("10363f6c023d7fb3d11fdb4cc8de59b5ad5c6affdf960210dd95a252a3fced2b");
  }, T);

  test("uploads through the group land in writeTo", async () => {
    const f = "zlib-1.2.11-h62dcd97_3.conda";
    const r = await put(`${vault.url}/conda-all`, "win-32", f, await Bun.file(join(ZLIB_CHANNEL, "win-32", f)).bytes(), admin);
    expect(r.status).toBe(201);
    const repo = await (await fetch(`${vault.url}/conda-local/win-32/repodata.json`)).json();
    expect(repo["packages.conda"][f].sha256).toBe("1f3fe788d266c16e35d1e737fd9b7c82dd1f1ba4d3973f0907c8a7634c5d484b");
  }, T);

  test("bad uploads get clear JSON errors and change nothing", async () => {
    const base = `${vault.url}/conda-local`;
    const zlib = await Bun.file(join(ZLIB_CHANNEL, "osx-64/zlib-1.2.11-h1de35cc_3.tar.bz2")).bytes();
    const before = await (await fetch(`${base}/linux-64/repodata.json`)).text();
    const cases: [string, Response | Promise<Response>, number, string][] = [
      ["anonymous", put(base, "osx-64", "zlib-1.2.11-h1de35cc_3.tar.bz2", zlib), 401, "VAULT_UNAUTHORIZED"],
      ["wrong subdir", put(base, "linux-64", "zlib-1.2.11-h1de35cc_3.tar.bz2", zlib, admin), 400, "CONDA_INVALID_PACKAGE"],
      ["name differs from index.json", put(base, "osx-64", "zlib-1.2.12-h1de35cc_3.tar.bz2", zlib, admin), 400, "CONDA_INVALID_PACKAGE"],
      ["not an archive", put(base, "linux-64", "junk-1.0-0.conda", new TextEncoder().encode("<html>not a package</html>"), admin), 400, "CONDA_INVALID_PACKAGE"],
      ["truncated .tar.bz2", put(base, "osx-64", "zlib-1.2.11-h1de35cc_3.tar.bz2", zlib.slice(0, 50_000), admin), 400, "CONDA_INVALID_PACKAGE"],
      ["not a package name", fetch(`${base}/linux-64/README.txt`, { method: "PUT", body: "x", headers: { authorization: admin } }), 405, "VAULT_METHOD_NOT_ALLOWED"],
      ["same name, other bytes", put(base, "linux-64", "zlib-1.2.11-h7b6447c_3.conda", await tamperedConda(), admin), 409, "CONDA_FILE_EXISTS"],
    ];
    for (const [what, p, status, code] of cases) {
      const r = await p;
      const body = await r.json();
      expect({ what, status: r.status, code: body.error?.code }).toEqual({ what, status, code });
      expect(typeof body.error.message).toBe("string");
    }
    expect(await (await fetch(`${base}/linux-64/repodata.json`)).text()).toBe(before);
    expect((await fetch(`${base}/osx-64/zlib-1.2.11-h1de35cc_3.tar.bz2`)).status).toBe(404);
  }, T);
});

/** The linux-64 zlib .conda with one byte of its pkg member changed: still a readable package, other bytes. */
async function tamperedConda(): Promise<Uint8Array> {
  const b = await Bun.file(join(ZLIB_CHANNEL, "linux-64/zlib-1.2.11-h7b6447c_3.conda")).bytes();
  const copy = new Uint8Array(b);
  copy[copy.length >> 1] ^= 0x01;
  return copy;
}

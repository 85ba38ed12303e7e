/**
 * Unit tests of the conda plugin's pure modules: CEP-26 paths, conda version order (checked against rattler's own
 * `Version.compare`), repodata variants and shards, group merges, channeldata, and reading real packages.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { decode } from "@msgpack/msgpack";
import { parseCondaPath, parsePackageFile } from "./paths.ts";
import { compareVersions } from "./version.ts";
import { deriveVariants, mergeRepodata, normalizeSnapshot, parseRecordLines, renderChanneldata, RepodataError, addRecords } from "./repodata.ts";
import { inspectPackage, recordOf } from "./package.ts";
import { packageRepoPath, packageTag, untag, timestampTag } from "./mirror/mirror.ts";
import { parseChallenge, parseRegistry } from "./mirror/oci-client.ts";

const FIX = join(import.meta.dir, "../../../shared/fixtures/conda");
const CHANNEL = join(FIX, "channels/anaconda-zlib-channel");
const enc = new TextEncoder();

describe("paths (CEP-26)", () => {
  test("package file names split with rsplit('-', 2) and checked", () => {
    expect(parsePackageFile("zlib-1.2.11-h7b6447c_3.conda")).toEqual({ filename: "zlib-1.2.11-h7b6447c_3.conda", name: "zlib", version: "1.2.11", build: "h7b6447c_3", format: "conda" });
    expect(parsePackageFile("_r-mutex-1.0.1-anacondar_1.tar.bz2")?.name).toBe("_r-mutex");
    expect(parsePackageFile("python-3.12.0-h1!2_0.conda")).toBeNull(); // "!" is not a build character
    for (const bad of ["zlib.conda", "zlib-1.2.conda", "Zlib-1-0.conda", "__glibc-2.17-0.conda", "zlib-1.2-0.zip", "a-1-0.tar.gz"]) expect(parsePackageFile(bad)).toBeNull();
  });
  test("request paths: documents, shards, packages, labels", () => {
    expect(parseCondaPath("linux-64/repodata.json")).toEqual({ kind: "document", prefix: "", subdir: "linux-64", doc: "repodata.json" });
    expect(parseCondaPath("label/dev/noarch/repodata.json.zst")).toMatchObject({ prefix: "label/dev/", subdir: "noarch", doc: "repodata.json.zst" });
    const hex = "a".repeat(64);
    expect(parseCondaPath(`linux-64/shards/${hex}.msgpack.zst`)).toEqual({ kind: "shard", prefix: "", subdir: "linux-64", hex });
    expect(parseCondaPath(`linux-64/${hex}.msgpack.zst`)?.kind).toBe("shard");
    expect(parseCondaPath("channeldata.json")?.kind).toBe("channeldata");
    for (const bad of ["Linux-64/repodata.json", "linux-64/x/y", "linux-64/README", "linux_64/repodata.json"]) expect(parseCondaPath(bad)).toBeNull();
  });
});

describe("version order", () => {
  // conda's documented order, plus cases with epochs, local versions, post/dev releases
  const ordered = ["0.4", "0.4.1.rc", "0.4.1", "0.5a1", "0.5b3", "0.5", "0.9.6", "0.960923", "1.0", "1.1dev1", "1.1a1", "1.1.0rc1", "1.1.0", "1.1.0post1", "1.1post1", "1996.07.12", "1!0.4.1", "1!3.1.1.6", "2!0.4.1"];
  test("conda's documented order", () => {
    for (let i = 0; i + 1 < ordered.length; i++) expect([ordered[i], ordered[i + 1], Math.sign(compareVersions(ordered[i], ordered[i + 1]))]).toEqual([ordered[i], ordered[i + 1], -1]);
    expect(compareVersions("1.1", "1.1.0")).toBe(0);
    expect(compareVersions("1.0+local.2", "1.0+local.10")).toBeLessThan(0);
  });
  test("agrees with rattler's Version.compare on real versions", async () => {
    const { Version } = await import("@conda-org/rattler");
    const doc = JSON.parse(await Bun.file(join(FIX, "repodata/pytorch-linux-64-repodata.json")).text());
    const versions = [...new Set(Object.values(doc.packages as Record<string, { version: string }>).map((r) => r.version)), ...ordered].slice(0, 400);
    let checked = 0;
    for (let i = 0; i < versions.length; i += 3)
      for (let j = i + 1; j < versions.length; j += 7) {
        const want = Math.sign(new Version(versions[i]).compare(new Version(versions[j])));
        expect([versions[i], versions[j], Math.sign(compareVersions(versions[i], versions[j]))]).toEqual([versions[i], versions[j], want]);
        checked++;
      }
    expect(checked).toBeGreaterThan(1000);
  });
});

describe("repodata", () => {
  test("derived variants of the fixture: .zst, current, lookup lines, CEP-16 shards with raw-byte digests", async () => {
    const snapshot = await Bun.file(join(CHANNEL, "linux-64/repodata.json")).bytes();
    const out = deriveVariants({ snapshot, subdir: "linux-64", shards: true });
    expect(new Uint8Array(Bun.zstdDecompressSync(out.zst))).toEqual(new Uint8Array(snapshot));
    expect(out.count).toBe(3);
    const lookup = parseRecordLines(out.records);
    expect(lookup.get("zlib-1.2.11-h7b6447c_3.conda")).toEqual({ sha256: "f33afff2144e1d6c4cf2e3e184937db8bf825b4537df74662aea5ee207b6a31b", size: 105917, md5: "cb23839f06da92ec92c6d2d2d5e0cb4a" });
    const idx = decode(Bun.zstdDecompressSync(out.shardIndex!)) as { shards: Record<string, Uint8Array> };
    expect(Object.keys(idx.shards).sort()).toEqual(["libgcc-ng", "zlib"]);
    for (const [hex, bytes] of out.shards!) expect(new Bun.CryptoHasher("sha256").update(bytes).digest("hex")).toBe(hex);
    const zhex = Buffer.from(idx.shards.zlib).toString("hex");
    const shard = decode(Bun.zstdDecompressSync(out.shards!.find(([h]) => h === zhex)![1])) as Record<string, Record<string, { md5: Uint8Array }>>;
    expect(Buffer.from(shard.packages["zlib-1.2.11-h7b6447c_3.tar.bz2"].md5).toString("hex")).toBe("2e5b81671cc2b53177b94b258b1658b2");
    // deterministic
    expect(deriveVariants({ snapshot, subdir: "linux-64", shards: true }).shardIndex).toEqual(out.shardIndex);
  });
  test("current_repodata keeps only the newest version of each name", () => {
    const r = (v: string, b: number) => ({ name: "x", version: v, build: `${b}`, build_number: b });
    const snapshot = enc.encode(JSON.stringify({ packages: { "x-1.9-0.tar.bz2": r("1.9", 0), "x-1.10-0.tar.bz2": r("1.10", 0), "x-1.10-1.tar.bz2": r("1.10", 1) } }));
    const cur = JSON.parse(new TextDecoder().decode(deriveVariants({ snapshot, subdir: "noarch", shards: false }).current));
    expect(Object.keys(cur.packages)).toEqual(["x-1.10-0.tar.bz2", "x-1.10-1.tar.bz2"]);
  });
  test("CEP-15 base_url is removed and returned; zstd input is checked", () => {
    const doc = { info: { subdir: "noarch", base_url: "https://files.example/pkgs/noarch" }, packages: {}, repodata_version: 2 };
    const out = normalizeSnapshot({ body: enc.encode(JSON.stringify(doc)), compression: "none", url: "https://ch.example/c/noarch/repodata.json" });
    expect(out.baseUrl).toBe("https://files.example/pkgs/noarch/");
    expect(JSON.parse(new TextDecoder().decode(out.body))).toEqual({ info: { subdir: "noarch" }, packages: {}, repodata_version: 1 });
    const rel = normalizeSnapshot({ body: enc.encode(JSON.stringify({ info: { base_url: "../../mirror/" } })), compression: "none", url: "https://ch.example/c/noarch/repodata.json" });
    expect(rel.baseUrl).toBe("https://ch.example/mirror/");
    expect(() => normalizeSnapshot({ body: enc.encode("<html>"), compression: "zst", url: "x:" })).toThrow(RepodataError);
    expect(() => normalizeSnapshot({ body: enc.encode("<html>"), compression: "none", url: "x:" })).toThrow(RepodataError);
  });
  test("group merge: first member wins per file name; removed minus listed", () => {
    const a = enc.encode(JSON.stringify({ packages: { "x-1-0.tar.bz2": { name: "x", version: "1", build: "0", build_number: 0, sha256: "a" } }, removed: ["y-1-0.tar.bz2"] }));
    const b = enc.encode(JSON.stringify({ packages: { "x-1-0.tar.bz2": { name: "x", version: "1", build: "0", build_number: 0, sha256: "b" }, "y-1-0.tar.bz2": { name: "y", version: "1", build: "0", build_number: 0 } } }));
    const m = JSON.parse(new TextDecoder().decode(mergeRepodata([a, b], "noarch")));
    expect(m.packages["x-1-0.tar.bz2"].sha256).toBe("a");
    expect(Object.keys(m.packages)).toEqual(["x-1-0.tar.bz2", "y-1-0.tar.bz2"]);
    expect(m.removed).toEqual([]);
    expect(m.info).toEqual({ subdir: "noarch" });
  });
});

describe("packages", () => {
  test("both formats of one package give the same record fields but their own digests", async () => {
    const c = await inspectPackage(join(FIX, "packages/conda-index-pkg-a-1.0-py27h5e241af_0.conda"), "conda");
    const t = await inspectPackage(join(FIX, "packages/conda-index-pkg-a-1.0-py27h5e241af_0.tar.bz2"), "tar.bz2");
    expect(c.index).toEqual(t.index);
    const r = recordOf(c.index, { md5: "m", sha256: "s", size: 1 });
    expect(r).toMatchObject({ name: "conda-index-pkg-a", version: "1.0", build: "py27h5e241af_0", md5: "m", sha256: "s", size: 1 });
    expect(r).not.toHaveProperty("arch");
    expect(r).not.toHaveProperty("platform");
  });
  test("the re-zipped .conda with members under a directory is still read (rattler keeps it as a real edge case)", async () => {
    const i = await inspectPackage(join(FIX, "packages/edge-cases/ca-certificates-2024.7.4-hbcca054_0.conda"), "conda");
    expect(i.index.name).toBe("ca-certificates");
  });
  test("hosted repodata and channeldata render deterministically", () => {
    const rec = { name: "x", version: "2.0", build: "0", build_number: 0, subdir: "noarch", timestamp: 5 };
    const one = addRecords(undefined, "noarch", [{ filename: "x-2.0-0.tar.bz2", record: rec }]);
    expect(addRecords(undefined, "noarch", [{ filename: "x-2.0-0.tar.bz2", record: rec }])).toEqual(one);
    const cd = JSON.parse(
      new TextDecoder().decode(
        renderChanneldata(undefined, [{ subdir: "noarch", record: rec, about: { summary: "S", home: "H" }, run_exports: ["x >=2"] }, { subdir: "linux-64", record: { ...rec, version: "1.0", subdir: "linux-64" } }], []),
      ),
    );
    expect(cd.packages.x).toEqual({ home: "H", run_exports: { "2.0": { weak: ["x >=2"] } }, subdirs: ["linux-64", "noarch"], summary: "S", timestamp: 5, version: "2.0" });
  });
});

describe("mirror layout and OCI client helpers", () => {
  test("repository names and tags as conda-oci-mirror writes them", () => {
    expect(packageRepoPath("conda-forge", "linux-64", "_openmp_mutex")).toBe("conda-forge/linux-64/zzz_openmp_mutex");
    expect(packageTag("1.0+cu11!2", "py_0=x")).toBe("1.0__p__cu11__e__2-py_0__eq__x");
    expect(untag(packageTag("1.0+cu11!2", "py_0=x"))).toBe("1.0+cu11!2-py_0=x");
    expect(timestampTag(new Date(Date.UTC(2026, 0, 2, 3, 4)))).toBe("2026.01.02.03.04");
  });
  test("registry references and challenges", () => {
    expect(parseRegistry("http://127.0.0.1:5000/dinosaur")).toEqual({ origin: "http://127.0.0.1:5000", namespace: "dinosaur" });
    expect(parseRegistry("ghcr.io/channel-mirrors")).toEqual({ origin: "https://ghcr.io", namespace: "channel-mirrors" });
    expect(parseChallenge('Bearer realm="http://h/token",service="h",scope="repository:a/b:pull,push"')).toEqual({
      scheme: "bearer",
      params: { realm: "http://h/token", service: "h", scope: "repository:a/b:pull,push" },
    });
  });
});

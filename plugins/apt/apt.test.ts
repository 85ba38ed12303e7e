/**
 * Unit tests of the apt plugin's pure parts on the real files of ../shared/fixtures/apt: deb822, dpkg version order,
 * Release/InRelease parsing and rendering, .deb reading, the pool-hash task, request paths.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { fieldValue, parseDeb822, renderParagraph } from "./deb822.ts";
import { compareVersions, isValidVersion, poolPrefix, withoutEpoch } from "./version.ts";
import { parseRelease, renderRelease, signedText } from "./release.ts";
import { DebError, readDeb } from "./deb.ts";
import { aptIndex } from "./task.ts";
import { decompress } from "./compress.ts";
import { VALID_UNTIL_HEADER, releaseState } from "./suite.ts";
import type { ArtifactEntry } from "../../core/plugin.ts";
import { parseAptPath, upstreamUrl } from "./paths.ts";
import { packageStanza } from "./hosted.ts";
import { VaultError } from "../../core/plugin.ts";
import { requireTools } from "../../test/helpers/registry.ts";

const FIX = join(import.meta.dir, "..", "..", "..", "shared", "fixtures", "apt");
const DEBS: Record<string, [string, string, string, string]> = {
  "pool/main/h/hello/hello_2.10-3_amd64.deb": ["hello", "2.10-3", "amd64", "hello"],
  "pool/main/s/sl/sl_5.02-1+b1_amd64.deb": ["sl", "5.02-1+b1", "amd64", "sl"],
  "pool/main/t/tree/tree_2.1.0-1_amd64.deb": ["tree", "2.1.0-1", "amd64", "tree"],
  "pool/main/c/cowsay/cowsay_3.03+dfsg2-8_all.deb": ["cowsay", "3.03+dfsg2-8", "all", "cowsay"],
  "pool/main/f/fortune-mod/fortunes-min_1.99.1-7.3_all.deb": ["fortunes-min", "1:1.99.1-7.3", "all", "fortune-mod"],
};

describe("deb822", () => {
  test("paragraphs, continuation lines, comments, CRLF; render round-trips", () => {
    const text = "Package: a\r\nDescription: short\n long line\n .\n more\n\n# comment\nPackage: b\nSHA256:\n 00 1 x\n";
    const ps = parseDeb822(text);
    expect(ps.length).toBe(2);
    expect(fieldValue(ps[0], "description")).toBe("short\n long line\n .\n more");
    expect(fieldValue(ps[1], "SHA256")).toBe("\n 00 1 x");
    expect(renderParagraph(ps[0])).toBe("Package: a\nDescription: short\n long line\n .\n more\n");
    expect(renderParagraph(ps[1])).toBe("Package: b\nSHA256:\n 00 1 x\n");
    expect(() => parseDeb822(" leading continuation\n")).toThrow(/continuation/);
    expect(() => parseDeb822("no colon here\n")).toThrow(/Name: value/);
  });
});

describe("versions", () => {
  test("dpkg order: epochs, ~, letters before other characters, numeric parts", () => {
    // the order `dpkg --compare-versions` gives
    const sorted = ["1.0~rc1", "1.0", "1.0-1", "1.0a", "1.0+b1", "1.1", "1.10", "2:0.1"];
    for (let i = 0; i + 1 < sorted.length; i++) expect(compareVersions(sorted[i], sorted[i + 1])).toBeLessThan(0);
    expect(compareVersions("2.10-3", "2.10-3")).toBe(0);
    expect(compareVersions("1:1.99.1-7.3", "1.99.1-7.3")).toBeGreaterThan(0);
    expect(compareVersions("1.0-1~bpo1", "1.0-1")).toBeLessThan(0);
  });
  test.skipIf(!requireTools(["dpkg"]))("the same order as dpkg --compare-versions on every version of the fixture indexes (Version: fields and dependency bounds)", async () => {
    const indexes = ["bookworm/main/binary-amd64/Packages-subset.xz", "bookworm-updates/main/binary-amd64/Packages.xz"];
    const text = (await Promise.all(indexes.map(async (f) => new TextDecoder().decode(await decompress(readFileSync(join(FIX, "dists", f)), "xz"))))).join("\n");
    const versions = new Set<string>(["1.0", "1.0-0", "0:1.0", "1.0~", "1.0~~", "1.0~~a", "1.0a", "1.0+", "1.0.", "1.0-1~", "1:0", "10:0.1", "1.0-a", "1.0-+", "1.00", "1.0-01"]);
    for (const m of text.matchAll(/^Version: (\S+)$/gm)) versions.add(m[1]);
    for (const m of text.matchAll(/\((?:>=|<=|=|>>|<<) ([^)\s]+)\)/g)) versions.add(m[1]);
    const list = [...versions].filter(isValidVersion);
    expect(list.length).toBeGreaterThan(2000);
    // the whole list in our order, each neighbour checked with dpkg (a total order: that is every pair), plus random pairs
    const sorted = [...list].sort(compareVersions);
    const pairs: [string, string][] = sorted.slice(1).map((v, i) => [sorted[i], v]);
    let seed = 7;
    const pick = () => list[(seed = (seed * 1103515245 + 12345) % 2147483648) % list.length];
    for (let i = 0; i < 300; i++) pairs.push([pick(), pick()]);
    const script = 'while read a b; do if dpkg --compare-versions "$a" lt "$b"; then echo -1; elif dpkg --compare-versions "$a" eq "$b"; then echo 0; else echo 1; fi; done';
    const r = Bun.spawnSync(["sh", "-c", script], { stdin: new TextEncoder().encode(pairs.map((p) => p.join(" ")).join("\n") + "\n"), timeout: 120_000 });
    expect(r.exitCode).toBe(0);
    const dpkg = r.stdout.toString().trim().split("\n").map(Number);
    expect(dpkg.length).toBe(pairs.length);
    const differ = pairs.map((p, i) => [...p, Math.sign(compareVersions(p[0], p[1])), dpkg[i]]).filter((x) => x[2] !== x[3]);
    expect(differ).toEqual([]);
  }, 120_000);

  test("never NaN or a throw: a malformed epoch counts as 0", () => {
    expect(compareVersions("x:1.0", "1.0")).toBe(0);
    expect(compareVersions("", "1.0")).toBeLessThan(0);
  });

  test("validity, epochs, pool prefixes", () => {
    for (const v of ["2.10-3", "1:1.99.1-7.3", "5.02-1+b1", "3.03+dfsg2-8", "0~git20240101"]) expect(isValidVersion(v)).toBe(true);
    for (const v of ["", "a1", "1.0-", "x:1", "1:", "1.0 1", "1/2"]) expect(isValidVersion(v)).toBe(false);
    expect(withoutEpoch("1:1.99.1-7.3")).toBe("1.99.1-7.3");
    expect(poolPrefix("libxml2")).toBe("libx");
    expect(poolPrefix("hello")).toBe("h");
  });
});

describe("Release files", () => {
  test("the real bookworm-updates InRelease: signed body equals the Release; files with sizes and SHA256; by-hash lookup", async () => {
    const inRelease = await Bun.file(join(FIX, "dists/bookworm-updates/InRelease")).text();
    const release = await Bun.file(join(FIX, "dists/bookworm-updates/Release")).text();
    expect(signedText(inRelease)).toBe(release);
    const r = parseRelease(inRelease);
    expect(r.acquireByHash).toBe(true);
    expect(fieldValue(r.fields, "Suite")).toBe("oldstable-updates");
    const xz = r.files.get("main/binary-amd64/Packages.xz")!;
    expect(xz.size).toBe(6924);
    expect(xz.hashes.SHA256).toBe("87e7e94047fb7fb6f4ceecc7022d4bee55b66031cc2a7666d3196f3e0aabb846");
    expect(r.byDigest.get(`SHA256/${xz.hashes.SHA256}`)).toBe("main/binary-amd64/Packages.xz");
    expect(r.files.get("main/binary-amd64/Packages")!.size).toBe(32757);
    const big = parseRelease(await Bun.file(join(FIX, "dists/bookworm/InRelease")).text());
    expect(big.files.get("main/binary-amd64/Packages")!.hashes.SHA256).toStartWith("515e692f");
  });
  test("rendered Release parses back; a clearsigned message without signature is refused", () => {
    const text = renderRelease({
      origin: "o",
      label: "l",
      suite: "stable",
      codename: "stable",
      date: Date.UTC(2024, 5, 1, 8),
      architectures: ["amd64"],
      components: ["main"],
      entries: [{ path: "main/binary-amd64/Packages", size: 12, md5: "a".repeat(32), sha1: "b".repeat(40), sha256: "c".repeat(64) }],
    });
    expect(text).toContain("Date: Sat, 01 Jun 2024 08:00:00 UTC\n");
    const r = parseRelease(text);
    expect(r.files.get("main/binary-amd64/Packages")).toEqual({ size: 12, hashes: { MD5Sum: "a".repeat(32), SHA1: "b".repeat(40), SHA256: "c".repeat(64) } });
    expect(() => signedText("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nSuite: x\n")).toThrow(/signature/);
  });
  test("Valid-Until follows Date, in the same format", () => {
    const text = renderRelease({ origin: "o", label: "l", suite: "s", date: Date.UTC(2024, 5, 1, 8), validUntil: Date.UTC(2024, 5, 8, 8), architectures: ["amd64"], components: ["main"], entries: [] });
    expect(text).toContain("Date: Sat, 01 Jun 2024 08:00:00 UTC\nValid-Until: Sat, 08 Jun 2024 08:00:00 UTC\nArchitectures: amd64\n");
  });
});

describe("signing again (suite.ts releaseState)", () => {
  const release = (validUntil?: number) => ({ headers: validUntil === undefined ? {} : { [VALID_UNTIL_HEADER]: String(validUntil) } }) as unknown as ArtifactEntry;
  test("current before half the validity, refresh after it, expired at Valid-Until less a margin", () => {
    const t0 = 1_000_000_000_000;
    const day = 86_400;
    const r = release(t0 + day * 1000);
    expect(releaseState(r, day, t0)).toBe("current");
    expect(releaseState(r, day, t0 + (day / 2) * 1000 - 1)).toBe("current");
    expect(releaseState(r, day, t0 + (day / 2) * 1000)).toBe("refresh");
    expect(releaseState(r, day, t0 + day * 1000 - 60_001)).toBe("refresh");
    expect(releaseState(r, day, t0 + day * 1000 - 60_000)).toBe("expired");
    // a short validity: a quarter of it as the margin
    expect(releaseState(release(t0 + 4000), 4, t0 + 2999)).toBe("refresh");
    expect(releaseState(release(t0 + 4000), 4, t0 + 3000)).toBe("expired");
  });
  test("validForSeconds set or removed after the Release was made", () => {
    expect(releaseState(release(), 3600, 0)).toBe("refresh");
    expect(releaseState(release(), undefined, 0)).toBe("current");
    expect(releaseState(release(10_000), undefined, 0)).toBe("refresh");
    expect(releaseState(release(10_000), undefined, 10_000)).toBe("expired");
  });
});

describe(".deb files", () => {
  test("the fixture .debs: control fields, source names (Source: with a version), stanza fields added by the repository", async () => {
    for (const [path, [pkg, version, arch, source]] of Object.entries(DEBS)) {
      const f = join(FIX, path);
      const info = await readDeb(f, Bun.file(f).size);
      expect([info.package, info.version, info.architecture, info.source]).toEqual([pkg, version, arch, source]);
    }
    const f = join(FIX, "pool/main/h/hello/hello_2.10-3_amd64.deb");
    const info = await readDeb(f, Bun.file(f).size);
    const stanza = packageStanza(info.control, { filename: "pool/main/h/hello/x.deb", size: 1, md5: "m", sha1: "s", sha256: "h" });
    const [p] = parseDeb822(stanza);
    expect(p[p.length - 1].name).toBe("Description");
    expect(fieldValue(p, "SHA256")).toBe("h");
    expect(fieldValue(p, "Filename")).toBe("pool/main/h/hello/x.deb");
  });
  test("malformed packages are refused with a reason", async () => {
    const dir = tmpdir();
    const cases: [Uint8Array, RegExp][] = [
      [new TextEncoder().encode("hello world, not ar"), /ar magic/],
      [new TextEncoder().encode("!<arch>\ndebian-binary   0           0     0     100644  4         `\n2.0\n"), /control\.tar/],
    ];
    const hello = await Bun.file(join(FIX, "pool/main/h/hello/hello_2.10-3_amd64.deb")).bytes();
    cases.push([hello.slice(0, 200), /truncated/]);
    const v3 = hello.slice();
    v3.set(new TextEncoder().encode("3.0"), 8 + 60);
    cases.push([v3, /format/]);
    for (const [i, [bytes, why]] of cases.entries()) {
      const f = join(dir, `apt-unit-${process.pid}-${i}.deb`);
      await writeFile(f, bytes);
      const e = await readDeb(f, bytes.byteLength).catch((x) => x);
      expect(e).toBeInstanceOf(DebError);
      expect((e as Error).message).toMatch(why);
    }
  });
});

describe("aptIndex task", () => {
  test("Packages-subset.xz lists the five fixture .debs with their SHA256 and size", async () => {
    const data = await Bun.file(join(FIX, "dists/bookworm/main/binary-amd64/Packages-subset.xz")).bytes();
    const out = await aptIndex({ op: "pool-hashes", data, compression: "xz", kind: "packages" });
    expect(out.count).toBe(2005);
    const lines = new Map(out.tsv.trimEnd().split("\n").map((l) => [l.split("\t")[0], l.split("\t").slice(1)]));
    for (const path of Object.keys(DEBS)) {
      const bytes = await Bun.file(join(FIX, path)).bytes();
      expect(lines.get(path)).toEqual([new Bun.CryptoHasher("sha256").update(bytes).digest("hex"), String(bytes.byteLength)]);
    }
  });
  test("Sources stanzas: Directory + Checksums-Sha256", async () => {
    const text = `Package: hello\nDirectory: pool/main/h/hello\nChecksums-Sha256:\n ${"a".repeat(64)} 10 hello_2.10-3.dsc\n ${"b".repeat(64)} 20 hello_2.10.orig.tar.gz\nFormat: 3.0 (quilt)\n`;
    const out = await aptIndex({ op: "pool-hashes", data: new TextEncoder().encode(text), compression: "none", kind: "sources" });
    expect(out.tsv).toBe(`pool/main/h/hello/hello_2.10-3.dsc\t${"a".repeat(64)}\t10\npool/main/h/hello/hello_2.10.orig.tar.gz\t${"b".repeat(64)}\t20\n`);
  });
});

describe("aptIndex merge-packages (groups)", () => {
  test("first member wins per package, version and architecture; all packages in every architecture; pool map; digests", async () => {
    const subset = await Bun.file(join(FIX, "dists/bookworm/main/binary-amd64/Packages-subset.xz")).bytes();
    const mine = `Package: hello\nVersion: 2.10-3\nArchitecture: amd64\nX-Member: first\nFilename: pool/main/h/hello/hello_2.10-3_amd64.deb\nDescription: ours\n\nPackage: zz-local\nVersion: 1.0\nArchitecture: arm64\nFilename: pool/main/z/zz-local/zz-local_1.0_arm64.deb\n`;
    const out = await aptIndex({
      op: "merge-packages",
      archs: ["amd64", "arm64"],
      sources: [
        { member: 1, arch: "amd64", data: subset, compression: "xz" },
        { member: 0, arch: "amd64", data: new TextEncoder().encode(mine), compression: "none" },
      ],
    });
    const text = (arch: string, name: string) => {
      const f = out.files.find((x) => x.arch === arch && x.name === name)!;
      const bytes = out.data.subarray(f.offset, f.offset + f.size);
      expect(new Bun.CryptoHasher("sha256").update(bytes).digest("hex")).toBe(f.sha256);
      return bytes;
    };
    const amd64 = new TextDecoder().decode(text("amd64", "Packages"));
    expect(new TextDecoder().decode(await decompress(text("amd64", "Packages.gz"), "gz"))).toBe(amd64);
    expect(out.files.map((f) => `${f.arch}/${f.name}`)).toEqual(["amd64/Packages", "amd64/Packages.gz", "arm64/Packages", "arm64/Packages.gz"]);
    const stanzas = parseDeb822(amd64);
    const hello = stanzas.filter((p) => fieldValue(p, "Package") === "hello");
    expect(hello.length).toBe(1);
    expect(fieldValue(hello[0], "X-Member")).toBe("first");
    expect(stanzas.length).toBe(2005);
    const names = stanzas.map((p) => fieldValue(p, "Package")!);
    expect(names).toEqual([...names].sort());
    // arm64: the subset's Architecture: all packages, and the first member's arm64 one
    const arm64 = parseDeb822(new TextDecoder().decode(text("arm64", "Packages")));
    expect(arm64.every((p) => ["all", "arm64"].includes(fieldValue(p, "Architecture")!))).toBe(true);
    expect(arm64.some((p) => fieldValue(p, "Package") === "zz-local")).toBe(true);
    expect(arm64.some((p) => fieldValue(p, "Package") === "cowsay")).toBe(true);
    const pool = new Map(out.pool.trimEnd().split("\n").map((l) => l.split("\t") as [string, string]));
    expect(pool.get("pool/main/h/hello/hello_2.10-3_amd64.deb")).toBe("0");
    expect(pool.get("pool/main/c/cowsay/cowsay_3.03+dfsg2-8_all.deb")).toBe("1");
    expect(pool.get("pool/main/z/zz-local/zz-local_1.0_arm64.deb")).toBe("0");
  });
});

describe("request paths", () => {
  test("kinds, keys and upstream URLs; bad paths are 400", () => {
    expect(parseAptPath("dists/bookworm/InRelease")).toMatchObject({ kind: "release", dir: "dists/bookworm/", file: "InRelease" });
    expect(parseAptPath("dists/stretch/updates/Release.gpg")).toMatchObject({ kind: "release", dir: "dists/stretch/updates/" });
    expect(parseAptPath(`dists/b/main/binary-amd64/by-hash/SHA256/${"AB".repeat(32)}`)).toMatchObject({ kind: "by-hash", dir: "dists/b/main/binary-amd64/", hex: "ab".repeat(32), key: `dists/b/main/binary-amd64/by-hash/SHA256/${"ab".repeat(32)}` });
    expect(parseAptPath("pool/main/g/gcc/g%2B%2B_12_amd64.deb")).toMatchObject({ kind: "pool", key: "pool/main/g/gcc/g++_12_amd64.deb" });
    expect(parseAptPath("debs/hello_1_all.deb").kind).toBe("pool");
    expect(parseAptPath("dists/b/main/i18n/Translation-en_GB").kind).toBe("index");
    expect(upstreamUrl("http://u/debian/", "pool/main/g/gcc/g++_1:2~3_amd64.deb")).toBe("http://u/debian/pool/main/g/gcc/g%2B%2B_1%3A2~3_amd64.deb");
    expect(() => parseAptPath("")).toThrow(/not found/);
    for (const bad of ["dists/", "dists/a b/InRelease", "pool/x/%zz", "dists/b/by-hash/SHA256/123", "-/pool-hashes/x", "pool/.x"]) {
      const e = (() => {
        try {
          parseAptPath(bad);
        } catch (x) {
          return x;
        }
      })();
      expect(e).toBeInstanceOf(VaultError);
      expect((e as VaultError).status).toBe(400);
    }
  });
});

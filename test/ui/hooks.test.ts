/**
 * The web UI's pure parts: each built-in plugin's `packageOf` on the paths its own layout code writes and its
 * `clientSetup` snippets; the host's default grouping, name matching (LIKE pattern, normalization, version order) and
 * HTML escaping.
 */
import { describe, expect, test } from "bun:test";
import pypi from "../../plugins/pypi/index.ts";
import npm from "../../plugins/npm/index.ts";
import oci from "../../plugins/oci/index.ts";
import http from "../../plugins/http/index.ts";
import s3 from "../../plugins/s3/index.ts";
import apt from "../../plugins/apt/index.ts";
import conda from "../../plugins/conda/index.ts";
import { blobPath, catalogPath, manifestPath, referrerPath, tagListPath, tagPath } from "../../plugins/oci/layout.ts";
import { directoryPackageOf, insecureHostOf, type PluginContext, type VaultPlugin } from "../../core/plugin.ts";
import { compareVersions, createCatalog, likePattern, normalizePackageName } from "../../core/search.ts";
import { openDb, tablesOf } from "../../core/db/index.ts";
import { escapeHtml, formatBytes, html, rawHtml } from "../../core/ui/html.ts";

/** A context as the hooks read it: repository, config, base URL. */
function ctx(name: string, format: string, type: "proxy" | "hosted" | "group", extra: Record<string, unknown> = {}, base = `http://127.0.0.1:8080/${name}`): PluginContext {
  return { repo: { name, type, mount: `/${name}` }, config: { name, format, type, ...extra }, baseUrl: () => base } as unknown as PluginContext;
}
const req = new Request("http://127.0.0.1:8080/-/ui/");
const of = (p: VaultPlugin<any>, path: string) => p.packageOf!(path, ctx("r", p.format, "proxy"));
const setup = (p: VaultPlugin<any>, c: PluginContext, pkg?: { name: string; version?: string }) => p.clientSetup!(c, { req, package: pkg });

describe("packageOf of the built-in plugins", () => {
  test("pypi: wheels and sdists, hosted and proxied; pages, snapshots and .metadata are no package files", () => {
    expect(of(pypi, "files/ui-demo/ui_demo-1.1.0-py3-none-any.whl")).toEqual({ name: "ui-demo", version: "1.1.0" });
    expect(of(pypi, "files/packages/ab/cd/0123/Foo.Bar-2.0rc1.tar.gz")).toEqual({ name: "foo-bar", version: "2.0rc1" });
    // a hosted sdist whose version holds a `-` (a post release): the project segment settles where the name ends
    expect(of(pypi, "files/foo/foo-1.0-1.tar.gz")).toEqual({ name: "foo", version: "1.0-1" });
    expect(of(pypi, "files/foo-bar/foo-bar-1.0.tar.gz")).toEqual({ name: "foo-bar", version: "1.0" });
    for (const p of ["simple/ui-demo/", "simple/ui-demo/#json", "files/ui-demo/ui_demo-1.1.0-py3-none-any.whl.metadata", "info/ui-demo/x.whl", "projects/ui-demo", "pypi/x/json"])
      expect([p, of(pypi, p)]).toEqual([p, null]);
  });

  test("npm: tarballs (scoped too); documents are none", () => {
    expect(of(npm, "chalk/-/chalk-5.3.0.tgz")).toEqual({ name: "chalk", version: "5.3.0", file: "chalk-5.3.0.tgz", url: "chalk/-/chalk-5.3.0.tgz" });
    expect(of(npm, "@types/node/-/node-20.1.0-beta.1.tgz")).toMatchObject({ name: "@types/node", version: "20.1.0-beta.1" });
    for (const p of ["chalk#doc", "chalk#full#ab12", "chalk#v#5.3.0", "@s/p#abbrev#x"]) expect([p, of(npm, p)]).toEqual([p, null]);
  });

  test("oci: tags are versions, manifests and blobs belong to the image, the rest is none", () => {
    const d = `sha256:${"a".repeat(64)}`;
    expect(of(oci, tagPath("library/alpine", "3.19"))).toEqual({ name: "library/alpine", version: "3.19", file: "manifest (tag 3.19)", url: null });
    expect(of(oci, manifestPath("library/alpine", d))).toEqual({ name: "library/alpine", file: "manifest", url: null });
    expect(of(oci, blobPath("team/app", d))).toEqual({ name: "team/app", file: "blob", url: null });
    for (const p of [tagListPath("library/alpine"), catalogPath("library/alpine"), referrerPath("a", d, d)]) expect([p, of(oci, p)]).toEqual([p, null]);
  });

  test("apt: binary package files by Package and version (as the pool names them), source files by source; indexes, by-hash, records and other files are none", () => {
    expect(of(apt, "pool/main/h/hello/hello_2.10-3_amd64.deb")).toEqual({ name: "hello", version: "2.10-3" });
    // pool file names leave the epoch out (1:1.99.1-7.3); a name that holds it (%3a, stored decoded) keeps it
    expect(of(apt, "pool/main/f/fortune-mod/fortunes-min_1.99.1-7.3_all.deb")).toEqual({ name: "fortunes-min", version: "1.99.1-7.3" });
    expect(of(apt, "pool/main/x/xterm/xterm_1:2.0-1_arm64.deb")).toEqual({ name: "xterm", version: "1:2.0-1" });
    expect(of(apt, "pool/main/libx/libxml2/libxml2-utils_2.9.14+dfsg-1.3~deb12u1_amd64.deb")).toEqual({ name: "libxml2-utils", version: "2.9.14+dfsg-1.3~deb12u1" });
    expect(of(apt, "pool/main/d/debian-installer/netcfg_1.187_amd64.udeb")).toEqual({ name: "netcfg", version: "1.187" });
    expect(of(apt, "debs/tool_1.0_all.deb")).toEqual({ name: "tool", version: "1.0" }); // a flat repository
    expect(of(apt, "pool/main/h/hello/hello_2.10-3.dsc")).toEqual({ name: "hello", version: "2.10-3" });
    expect(of(apt, "pool/main/h/hello/hello_2.10-3.debian.tar.xz")).toEqual({ name: "hello", version: "2.10-3" });
    expect(of(apt, "pool/main/h/hello/hello_2.10.orig.tar.gz")).toEqual({ name: "hello" }); // shared by every revision of 2.10
    expect(of(apt, "pool/main/h/hello/hello_2.10.orig.tar.gz.asc")).toEqual({ name: "hello" });
    expect(of(apt, "pool/main/d/dpkg/dpkg_1.21.22.tar.xz")).toEqual({ name: "dpkg", version: "1.21.22" }); // native
    const hex = "a".repeat(64);
    for (const p of [
      "dists/bookworm/InRelease",
      "dists/bookworm/Release",
      `dists/bookworm/Release.gpg#sha256:${hex}`,
      "dists/bookworm/main/binary-amd64/Packages.gz",
      `dists/bookworm/main/binary-amd64/by-hash/SHA256/${hex}`,
      "dists/bookworm/main/i18n/Translation-en",
      "-/records/stable/main/hello_2.10-3_amd64.deb",
      "-/generations/stable",
      `-/pool-hashes/${hex}`,
      "-/pool-map/stable",
      "pool/main/h/hello/hello_2.10-3_amd64.buildinfo",
      "pool/main/h/hello/Hello_2.10-3_amd64.deb",
      "pool/main/h/hello/hello_x2.10_amd64.deb",
      "public.gpg",
    ])
      expect([p, of(apt, p)]).toEqual([p, null]);
  });

  test("conda: package files by name and version (every build, both formats, labels); repodata and its variants, shards, channeldata and info rows are none", () => {
    expect(of(conda, "linux-64/zlib-1.2.11-h7b6447c_3.conda")).toEqual({ name: "zlib", version: "1.2.11", file: "linux-64/zlib-1.2.11-h7b6447c_3.conda" });
    expect(of(conda, "linux-64/zlib-1.2.11-h7b6447c_3.tar.bz2")).toEqual({ name: "zlib", version: "1.2.11", file: "linux-64/zlib-1.2.11-h7b6447c_3.tar.bz2" });
    expect(of(conda, "noarch/_r-mutex-1.0.1-anacondar_1.tar.bz2")).toEqual({ name: "_r-mutex", version: "1.0.1", file: "noarch/_r-mutex-1.0.1-anacondar_1.tar.bz2" });
    expect(of(conda, "label/dev/osx-arm64/python-dateutil-2.9.0.post0-pyhd8ed1ab_0.conda")).toEqual({
      name: "python-dateutil",
      version: "2.9.0.post0",
      file: "label/dev/osx-arm64/python-dateutil-2.9.0.post0-pyhd8ed1ab_0.conda",
    });
    expect(of(conda, "linux-64/pkg-1!2.0+local-0.conda")).toMatchObject({ name: "pkg", version: "1!2.0+local" });
    const hex = "b".repeat(64);
    for (const p of [
      "linux-64/repodata.json",
      "linux-64/repodata.json.zst",
      "linux-64/current_repodata.json",
      "linux-64/repodata.json#records",
      "linux-64/repodata_shards.msgpack.zst",
      "linux-64/repodata_shards.msgpack.zst#derived",
      `linux-64/shards/${hex}.msgpack.zst`,
      `linux-64/${hex}.msgpack.zst`,
      "linux-64/run_exports.json",
      "channeldata.json",
      "label/dev/channeldata.json",
      "info/linux-64/zlib-1.2.11-h7b6447c_3.conda",
      "linux-64/README.txt",
    ])
      expect([p, of(conda, p)]).toEqual([p, null]);
  });

  test("http and s3 group by directory; s3 keys may hold #", () => {
    expect(of(http, "hadoop/common/hadoop-3.3.6/hadoop-3.3.6.tar.gz")).toEqual({ name: "hadoop/common/hadoop-3.3.6", file: "hadoop-3.3.6.tar.gz" });
    expect(of(http, "README")).toEqual({ name: "README" });
    expect(of(http, "hadoop/common/")).toBeNull();
    expect(of(s3, "builds/app/1.0/a#1.tar.gz")).toEqual({ name: "builds/app/1.0", file: "a#1.tar.gz" });
    expect(directoryPackageOf("builds/app/1.0/a#1.tar.gz")).toBeNull();
  });
});

describe("clientSetup of the built-in plugins", () => {
  test("pypi: pip with --trusted-host only for plain HTTP to a non-loopback host; twine for hosted and groups with writeTo", () => {
    const local = setup(pypi, ctx("pypi-local", "pypi", "hosted"), { name: "ui-demo", version: "1.1.0" });
    expect(local.map((s) => s.code)).toEqual([
      "pip install --index-url http://127.0.0.1:8080/pypi-local/simple/ ui-demo==1.1.0",
      "[global]\nindex-url = http://127.0.0.1:8080/pypi-local/simple/",
      "twine upload --repository-url http://127.0.0.1:8080/pypi-local/ -u <user> dist/*",
    ]);
    const seed = setup(pypi, ctx("pypi", "pypi", "proxy", { simplePrefix: "" }, "http://vault.lan:8080/pypi"));
    expect(seed.map((s) => s.client)).toEqual(["pip", "pip.conf"]);
    expect(seed[0].code).toBe("pip install --index-url http://vault.lan:8080/pypi/ --trusted-host vault.lan:8080 <project>");
    expect(setup(pypi, ctx("g", "pypi", "group", {}, "https://vault.example.com/g")).map((s) => s.client)).toEqual(["pip", "pip.conf"]);
  });

  test("npm: install, .npmrc per scope, publish for hosted", () => {
    const s = setup(npm, ctx("npm-local", "npm", "hosted"), { name: "@acme/lib", version: "2.0.0" });
    expect(s.map((x) => x.code)).toEqual([
      "npm install --registry http://127.0.0.1:8080/npm-local/ @acme/lib@2.0.0",
      "@acme:registry=http://127.0.0.1:8080/npm-local/",
      "npm login --registry http://127.0.0.1:8080/npm-local/\nnpm publish --registry http://127.0.0.1:8080/npm-local/",
    ]);
    expect(setup(npm, ctx("npm", "npm", "proxy"))[1].code).toBe("registry=http://127.0.0.1:8080/npm/");
  });

  test("oci: image references by repository name, own listener, root names, insecure registries", () => {
    const proxy = setup(oci, ctx("docker", "oci", "proxy", { root: true }, "http://vault.lan:8080/docker"), { name: "library/alpine", version: "3.19" });
    expect(proxy.map((x) => x.code)).toEqual([
      "docker pull vault.lan:8080/docker/library/alpine:3.19",
      "podman pull --tls-verify=false vault.lan:8080/docker/library/alpine:3.19",
      '{ "insecure-registries": ["vault.lan:8080"] }',
      "docker pull vault.lan:8080/library/alpine",
    ]);
    const own = setup(oci, ctx("team", "oci", "hosted", { port: 5000 }), { name: "app" });
    expect(own[0].code).toBe("docker pull 127.0.0.1:5000/app");
    expect(own.at(-1)!.code).toBe("docker login 127.0.0.1:5000\ndocker tag <local image> 127.0.0.1:5000/app:<tag>\ndocker push 127.0.0.1:5000/app:<tag>");
  });

  test("apt: hosted and group with their key from public.gpg (sources.list and deb822), unsigned with trusted=yes, proxies with the upstream's keyring", () => {
    const hosted = setup(apt, ctx("apt-local", "apt", "hosted", { signing: { key: "k" }, defaultDistribution: "bookworm" }), { name: "hello", version: "2.10-3" });
    expect(hosted.map((s) => s.client)).toEqual(["apt", "deb822", "apt-get", "curl"]);
    expect(hosted.map((s) => s.code)).toEqual([
      "sudo install -d -m 0755 /etc/apt/keyrings\nsudo curl -fsSL http://127.0.0.1:8080/apt-local/public.gpg -o /etc/apt/keyrings/apt-local.gpg\n" +
        'echo "deb [signed-by=/etc/apt/keyrings/apt-local.gpg] http://127.0.0.1:8080/apt-local bookworm main" | sudo tee /etc/apt/sources.list.d/apt-local.list\nsudo apt-get update',
      "Types: deb\nURIs: http://127.0.0.1:8080/apt-local\nSuites: bookworm\nComponents: main\nSigned-By: /etc/apt/keyrings/apt-local.gpg",
      "sudo apt-get update\nsudo apt-get install hello",
      "curl -u <user> --upload-file <package>.deb http://127.0.0.1:8080/apt-local/upload/bookworm/main/",
    ]);
    const unsigned = setup(apt, ctx("plain", "apt", "hosted"));
    expect(unsigned[0].code).toBe('echo "deb [trusted=yes] http://127.0.0.1:8080/plain stable main" | sudo tee /etc/apt/sources.list.d/plain.list\nsudo apt-get update');
    expect(unsigned[1].code).toEndWith("\nTrusted: yes");
    // a group: its own key, the suite of its hosted member, uploads through writeTo
    const member = ctx("apt-local", "apt", "hosted", { defaultDistribution: "trixie", defaultComponent: "contrib" });
    const group = { ...ctx("apt-all", "apt", "group", { signing: { key: "k" }, members: ["apt-local", "debian"], writeTo: "apt-local" }), member: (n: string) => (n === "apt-local" ? member : undefined) } as PluginContext;
    const g = setup(apt, group);
    expect(g.map((s) => s.client)).toEqual(["apt", "deb822", "curl"]);
    expect(g[0].code).toContain('echo "deb [signed-by=/etc/apt/keyrings/apt-all.gpg] http://127.0.0.1:8080/apt-all trixie contrib"');
    expect(g[0].code).toStartWith("sudo install -d -m 0755 /etc/apt/keyrings\nsudo curl -fsSL http://127.0.0.1:8080/apt-all/public.gpg -o /etc/apt/keyrings/apt-all.gpg\n");
    // proxies: the upstream's keyring, a system one used where it is, another one copied to /etc/apt/keyrings
    const system = setup(apt, ctx("debian", "apt", "proxy", { upstreamKeyring: "/usr/share/keyrings/debian-archive-keyring.gpg" }));
    expect(system.map((s) => s.client)).toEqual(["apt", "deb822"]);
    expect(system[0].code).toBe('echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://127.0.0.1:8080/debian <suite> main" | sudo tee /etc/apt/sources.list.d/debian.list\nsudo apt-get update');
    expect(system[1].code).toBe("Types: deb\nURIs: http://127.0.0.1:8080/debian\nSuites: <suite>\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg");
    const copied = setup(apt, ctx("vendor", "apt", "proxy", { upstreamKeyring: "keys/vendor.asc" }), { name: "tool" });
    expect(copied[0].code).toContain("sudo install -D -m 0644 vendor.asc /etc/apt/keyrings/vendor.asc\n");
    expect(copied[0].code).toContain("[signed-by=/etc/apt/keyrings/vendor.asc]");
    expect(setup(apt, ctx("any", "apt", "proxy"))[1].code).toEndWith("Signed-By: /etc/apt/keyrings/upstream-archive-keyring.gpg");
  });

  test("conda: conda install/config, .condarc, mamba, pixi; --override-channels for proxies and groups; uploads for hosted", () => {
    const hosted = setup(conda, ctx("conda-local", "conda", "hosted"), { name: "zlib", version: "1.2.11" });
    expect(hosted.map((s) => [s.client, s.code])).toEqual([
      ["conda", "conda install -c http://127.0.0.1:8080/conda-local/ zlib==1.2.11"],
      ["conda config", "conda config --add channels http://127.0.0.1:8080/conda-local/"],
      [".condarc", "channels:\n  - http://127.0.0.1:8080/conda-local/"],
      ["mamba", "mamba install -c http://127.0.0.1:8080/conda-local/ zlib==1.2.11"],
      ["pixi", "pixi workspace channel add http://127.0.0.1:8080/conda-local/\npixi add zlib==1.2.11"],
      ["pixi.toml", '[workspace]\nchannels = ["http://127.0.0.1:8080/conda-local/"]'],
      ["curl", "curl -u <user> -T <file>.conda http://127.0.0.1:8080/conda-local/<subdir>/<file>.conda"],
    ]);
    const proxy = setup(conda, ctx("conda-forge", "conda", "proxy", {}, "https://vault.example.com/conda-forge"), { name: "pkg", version: "1!2.0" });
    expect(proxy.map((s) => s.client)).toEqual(["conda", "conda config", ".condarc", "mamba", "pixi", "pixi.toml"]);
    expect(proxy[0].code).toBe("conda install --override-channels -c https://vault.example.com/conda-forge/ 'pkg==1!2.0'"); // ! quoted for bash
    expect(setup(conda, ctx("conda", "conda", "group", { writeTo: "conda-local" })).at(-1)!.client).toBe("curl");
    expect(setup(conda, ctx("conda", "conda", "group"))[0].code).toBe("conda install --override-channels -c http://127.0.0.1:8080/conda/ <package>");
  });

  test("http and s3", () => {
    expect(setup(http, ctx("files", "http", "proxy", { upstream: "https://archive.apache.org/dist/" }), { name: "hadoop/common" })[0]).toEqual({
      client: "curl",
      title: "Download through the cache (instead of https://archive.apache.org/dist/)",
      code: "curl -fLO http://127.0.0.1:8080/files/hadoop/common/<file>",
    });
    const own = setup(s3, ctx("objects", "s3", "hosted", { port: 9000 }), { name: "builds/app" });
    expect(own.map((x) => x.client)).toEqual(["aws", "aws", "s3cmd"]);
    expect(own[0].code).toBe("aws --endpoint-url http://127.0.0.1:9000 s3 ls s3://builds/app/\naws --endpoint-url http://127.0.0.1:9000 s3 cp s3://builds/app/<key> .");
    expect(setup(s3, ctx("objects", "s3", "hosted"))[0].code).toContain("aws --endpoint-url http://127.0.0.1:8080/objects s3 ls s3://<bucket>/");
  });
});

describe("host helpers", () => {
  test("likePattern: separators are wildcards, LIKE metacharacters escaped", () => {
    expect(likePattern("Foo.Bar_baz")).toBe("%foo%bar%baz%");
    expect(likePattern("a%b\\c")).toBe("%a\\%b\\\\c%");
    expect(likePattern("--")).toBe("%");
    expect(normalizePackageName("Foo.._Bar")).toBe("foo-bar");
  });

  test("versions in natural order", () => {
    expect(["1.10.0", "1.2.0", "1.9.1", "0.9"].sort(compareVersions)).toEqual(["0.9", "1.2.0", "1.9.1", "1.10.0"]);
  });

  test("html escapes every interpolation unless it is markup already", () => {
    const name = `<script>alert("x")</script>&'`;
    expect(html`<a title="${name}">${name}</a>`.value).toBe(`<a title="${escapeHtml(name)}">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;</a>`);
    expect(html`<p>${[html`<b>${"<i>"}</b>`, rawHtml("<br>"), null, false, 3]}</p>`.value).toBe("<p><b>&lt;i&gt;</b><br>3</p>");
    expect([formatBytes(0), formatBytes(1536), formatBytes(25 * 1024 * 1024)]).toEqual(["0 B", "1.5 KiB", "25 MiB"]);
  });

  test("insecureHostOf: plain HTTP to a non-loopback host only", () => {
    expect([insecureHostOf("http://vault:8080/x"), insecureHostOf("http://127.0.0.2/"), insecureHostOf("http://localhost:1/"), insecureHostOf("http://[::1]:3/"), insecureHostOf("https://v/")]).toEqual([
      "vault:8080",
      undefined,
      undefined,
      undefined,
      undefined,
    ]);
  });
});

describe("catalog", () => {
  test("versions in the format's order (PEP 440 for pypi: a release candidate is older than its release), natural order without the hook", async () => {
    const { db, close } = openDb(":memory:");
    try {
      const { artifacts } = tablesOf(db);
      const now = Date.now();
      const row = (repository: string, path: string, i: number) => ({ repository, path, blobDigest: `sha256:${String(i).padStart(64, "0")}`, sizeBytes: 10, fetchedAt: now, lastAccessAt: now });
      await db.insert(artifacts).values([
        row("py", "files/demo/demo-1.0.0rc1-py3-none-any.whl", 1),
        row("py", "files/demo/demo-1.0.0-py3-none-any.whl", 2),
        row("py", "files/demo/demo-0.9-py3-none-any.whl", 3),
        row("plain", "demo/1.0.0rc1/a.bin", 4),
      ]);
      const repositories = new Map([
        ["py", { ctx: ctx("py", "pypi", "hosted"), plugin: pypi as VaultPlugin }],
        ["plain", { ctx: ctx("plain", "static", "hosted"), plugin: { ...http, compareVersions: undefined } as VaultPlugin }],
      ]);
      const catalog = createCatalog({ db, repositories });
      expect((await catalog.package("py", "demo"))!.versions.map((v) => v.version)).toEqual(["1.0.0", "1.0.0rc1", "0.9"]);
      // apt: dpkg order (a ~ pre-release before its release); conda: conda's VersionOrder (rc before the release)
      await db.insert(artifacts).values([
        row("deb", "pool/main/d/demo/demo_2.9-1_amd64.deb", 5),
        row("deb", "pool/main/d/demo/demo_2.10~rc1-1_amd64.deb", 6),
        row("deb", "pool/main/d/demo/demo_2.10-1_amd64.deb", 7),
        row("deb", "pool/main/d/demo/demo_2.10-1_arm64.deb", 8),
        row("deb", "dists/stable/main/binary-amd64/Packages", 9),
        row("cnd", "noarch/demo-1.0rc1-0.tar.bz2", 10),
        row("cnd", "linux-64/demo-1.0-h1_0.conda", 11),
        row("cnd", "noarch/demo-1.0-0.tar.bz2", 12),
        row("cnd", "noarch/repodata.json", 13),
      ]);
      repositories.set("deb", { ctx: ctx("deb", "apt", "hosted"), plugin: apt as VaultPlugin });
      repositories.set("cnd", { ctx: ctx("cnd", "conda", "hosted"), plugin: conda as VaultPlugin });
      const deb = (await catalog.package("deb", "demo"))!;
      expect(deb.versions.map((v) => [v.version, v.files.length])).toEqual([
        ["2.10-1", 2],
        ["2.10~rc1-1", 1],
        ["2.9-1", 1],
      ]);
      expect((await catalog.package("cnd", "demo"))!.versions.map((v) => [v.version, v.files.length])).toEqual([
        ["1.0", 2],
        ["1.0rc1", 1],
      ]);
      const found = await catalog.search({ q: "demo", limit: 10, offset: 0 }, ["py", "plain"]);
      expect(found.results.map((r) => [r.repository, r.name, r.latestVersion])).toEqual([
        ["py", "demo", "1.0.0"],
        ["plain", "demo/1.0.0rc1", null],
      ]);
    } finally {
      close();
    }
  });
});

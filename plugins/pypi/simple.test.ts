/** Unit tests: parsing upstream simple pages (HTML and JSON) into snapshots and rendering PEP 503 HTML / PEP 691 JSON. */
import { describe, expect, test } from "bun:test";
import { Parser } from "htmlparser2";
import { buildSnapshot, filesPathOf, linksOf, readSnapshot, renderSnapshot, type ProjectPage } from "./simple.ts";
import { rewriteJsonApi } from "./jsonapi.ts";
import { pypiSimple } from "./task.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const SHA = "a".repeat(64);
const MSHA = "b".repeat(64);

const PYPI_HTML = `<!DOCTYPE html>
<html><head><meta name="pypi:repository-version" content="1.1"><title>Links for demo-pkg</title></head>
<body>
<a href="https://files.pythonhosted.org/packages/3f/a1/9c/demo_pkg-1.0-py3-none-any.whl#sha256=${SHA}"
   data-requires-python="&gt;=3.9,&lt;4" data-core-metadata="sha256=${MSHA}"
   data-dist-info-metadata="sha256=${MSHA}">demo_pkg-1.0-py3-none-any.whl</a><br/>
<a href="https://files.pythonhosted.org/packages/0b/44/e1/demo_pkg-0.9.tar.gz#md5=0123456789abcdef0123456789abcdef"
   data-yanked="broken &quot;build&quot;">demo_pkg-0.9.tar.gz</a><br/>
<a href="https://evil.example/demo_pkg-0.8.tar.gz" data-yanked="">demo_pkg-0.8.tar.gz</a>
<a href="javascript:alert(1)">x</a>
</body></html>`;

function build(body: string, ct: string | null, pageUrl = "https://pypi.org/simple/demo-pkg/", origins = ["https://files.pythonhosted.org"]) {
  return buildSnapshot({ body: enc(body), contentType: ct, pageUrl, kind: "project", project: "demo-pkg", fileOrigins: origins });
}

function page(snapshot: Uint8Array): ProjectPage {
  const s = readSnapshot(snapshot);
  if (s.kind !== "project") throw new Error("not a project snapshot");
  return s.page;
}

/** Anchors of rendered HTML, attributes entity-decoded. */
function anchors(html: string): { attrs: Record<string, string>; text: string }[] {
  const out: { attrs: Record<string, string>; text: string }[] = [];
  let cur: { attrs: Record<string, string>; text: string } | null = null;
  const p = new Parser({
    onopentag(n, a) {
      if (n === "a") out.push((cur = { attrs: a, text: "" }));
    },
    ontext(t) {
      if (cur) cur.text += t;
    },
    onclosetag(n) {
      if (n === "a") cur = null;
    },
  });
  p.write(html);
  p.end();
  return out;
}

describe("HTML upstream → snapshot", () => {
  const p = page(build(PYPI_HTML, "text/html"));
  test("files, hashes, data-* attributes decoded", () => {
    expect(p.name).toBe("demo-pkg");
    expect(p.files.length).toBe(3); // javascript: link dropped
    const [whl, sdist, foreign] = p.files;
    expect(whl.filename).toBe("demo_pkg-1.0-py3-none-any.whl");
    expect(whl.url).toBe("https://files.pythonhosted.org/packages/3f/a1/9c/demo_pkg-1.0-py3-none-any.whl");
    expect(whl.path).toBe("files/packages/3f/a1/9c/demo_pkg-1.0-py3-none-any.whl");
    expect(whl.hashes).toEqual({ sha256: SHA });
    expect(whl.requiresPython).toBe(">=3.9,<4");
    expect(whl.coreMetadata).toEqual({ sha256: MSHA });
    expect(whl.yanked).toBe(false);
    expect(sdist.hashes).toEqual({ md5: "0123456789abcdef0123456789abcdef" });
    expect(sdist.yanked).toBe('broken "build"');
    expect(foreign.path).toBeUndefined(); // origin not allowed: passed through unchanged
    expect(foreign.yanked).toBe(true);
  });
  test("relative links resolve against the page URL and <base href>", () => {
    const rel = page(build(`<a href="../../files/x/demo_pkg-1.0.tar.gz#sha256=${SHA}">demo_pkg-1.0.tar.gz</a>`, "text/html", "http://127.0.0.1:9/idx/demo-pkg/", ["http://127.0.0.1:9"]));
    expect(rel.files[0].url).toBe("http://127.0.0.1:9/files/x/demo_pkg-1.0.tar.gz");
    expect(rel.files[0].path).toBe("files/files/x/demo_pkg-1.0.tar.gz");
    const abs = page(build(`<a href="/pkgs/demo_pkg-1.0.tar.gz">demo_pkg-1.0.tar.gz</a>`, null, "http://127.0.0.1:9/prefix/simple/demo-pkg/", ["http://127.0.0.1:9"]));
    expect(abs.files[0].url).toBe("http://127.0.0.1:9/pkgs/demo_pkg-1.0.tar.gz");
    expect(abs.files[0].hashes).toEqual({});
    const based = page(build(`<html><head><base href="http://127.0.0.1:9/b/"></head><a href="f.whl">f.whl</a>`, "text/html", "http://127.0.0.1:9/simple/f/", ["http://127.0.0.1:9"]));
    expect(based.files[0].url).toBe("http://127.0.0.1:9/b/f.whl");
  });
  test("data-dist-info-metadata alone counts as core metadata; data-core-metadata=true", () => {
    const p2 = page(build(`<a href="https://files.pythonhosted.org/a.whl" data-dist-info-metadata="true">a.whl</a><a href="https://files.pythonhosted.org/b.whl" data-core-metadata="sha256=${MSHA}" data-dist-info-metadata="true">b.whl</a>`, "text/html"));
    expect(p2.files[0].coreMetadata).toBe(true);
    expect(p2.files[1].coreMetadata).toEqual({ sha256: MSHA });
  });
  test("paths that the vault could not serve back are not rewritten", () => {
    const p3 = page(build(`<a href="https://files.pythonhosted.org/a%2fb/x.whl">x.whl</a><a href="https://files.pythonhosted.org/a//x.whl">x.whl</a>`, "text/html"));
    expect(p3.files.map((f) => f.path)).toEqual([undefined, undefined]);
  });
});

describe("rendering", () => {
  const snap = build(PYPI_HTML, "text/html");
  test("HTML keeps fragments and data-* attributes, hrefs relative to the vault", () => {
    const html = dec(renderSnapshot({ snapshot: snap, representation: "html", rootHref: "../../" }));
    expect(html).toContain('<meta name="pypi:repository-version" content="1.0">');
    const a = anchors(html);
    expect(a.length).toBe(3);
    expect(a[0].attrs.href).toBe(`../../files/packages/3f/a1/9c/demo_pkg-1.0-py3-none-any.whl#sha256=${SHA}`);
    expect(a[0].text).toBe("demo_pkg-1.0-py3-none-any.whl");
    expect(a[0].attrs["data-requires-python"]).toBe(">=3.9,<4");
    expect(html).toContain('data-requires-python="&gt;=3.9,&lt;4"');
    expect(a[0].attrs["data-core-metadata"]).toBe(`sha256=${MSHA}`);
    expect(a[0].attrs["data-dist-info-metadata"]).toBe(`sha256=${MSHA}`);
    expect(a[0].attrs["data-yanked"]).toBeUndefined();
    expect(a[1].attrs.href).toBe("../../files/packages/0b/44/e1/demo_pkg-0.9.tar.gz#md5=0123456789abcdef0123456789abcdef");
    expect(a[1].attrs["data-yanked"]).toBe('broken "build"');
    expect(a[2].attrs.href).toBe("https://evil.example/demo_pkg-0.8.tar.gz");
    expect(a[2].attrs["data-yanked"]).toBe("");
  });
  test("JSON from an HTML upstream: api-version 1.0, hashes always present, never dist-info-metadata", () => {
    const doc = JSON.parse(dec(renderSnapshot({ snapshot: snap, representation: "json", rootHref: "../" })));
    expect(doc.meta).toEqual({ "api-version": "1.0" });
    expect(doc.name).toBe("demo-pkg");
    expect(doc.versions).toBeUndefined();
    expect(doc.files[0]).toEqual({
      filename: "demo_pkg-1.0-py3-none-any.whl",
      url: "../files/packages/3f/a1/9c/demo_pkg-1.0-py3-none-any.whl",
      hashes: { sha256: SHA },
      "requires-python": ">=3.9,<4",
      "core-metadata": { sha256: MSHA },
      yanked: false,
    });
    expect(doc.files[1].yanked).toBe('broken "build"');
    expect(doc.files[2].yanked).toBe(true);
    expect(doc.files[2].hashes).toEqual({});
    for (const f of doc.files) expect(Object.keys(f)).not.toContain("dist-info-metadata");
  });

  const UP_JSON = JSON.stringify({
    meta: { "api-version": "1.1", "_last-serial": 7 },
    name: "Demo-Pkg",
    versions: ["0.9", "1.0"],
    files: [
      {
        filename: "demo_pkg-1.0-py3-none-any.whl",
        url: "https://files.pythonhosted.org/packages/3f/a1/9c/demo_pkg-1.0-py3-none-any.whl",
        hashes: { sha256: SHA },
        "requires-python": ">=3.9",
        "core-metadata": { sha256: MSHA },
        "dist-info-metadata": { sha256: MSHA },
        size: 20431,
        "upload-time": "2024-03-20T13:00:33.355932Z",
        yanked: false,
      },
      { filename: "demo_pkg-0.9.tar.gz", url: "/packages/demo_pkg-0.9.tar.gz", hashes: {}, size: 18211, yanked: "broken build" },
    ],
  });
  test("JSON upstream → JSON 1.1 with versions, size, upload-time; legacy key dropped", () => {
    const s = buildSnapshot({ body: enc(UP_JSON), contentType: "application/vnd.pypi.simple.v1+json", pageUrl: "https://pypi.org/simple/demo-pkg/", kind: "project", project: "demo-pkg", fileOrigins: ["https://files.pythonhosted.org", "https://pypi.org"] });
    const doc = JSON.parse(dec(renderSnapshot({ snapshot: s, representation: "json", rootHref: "../../" })));
    expect(doc.meta["api-version"]).toBe("1.1");
    expect(doc.name).toBe("Demo-Pkg");
    expect(doc.versions).toEqual(["0.9", "1.0"]);
    expect(doc.files[0].size).toBe(20431);
    expect(doc.files[0]["upload-time"]).toBe("2024-03-20T13:00:33.355932Z");
    expect(doc.files[0]["core-metadata"]).toEqual({ sha256: MSHA });
    expect(doc.files[0]).not.toHaveProperty("dist-info-metadata");
    expect(doc.files[1].url).toBe("../../files/packages/demo_pkg-0.9.tar.gz");
    expect(doc.files[1].yanked).toBe("broken build");
    const html = dec(renderSnapshot({ snapshot: s, representation: "text-html", rootHref: "../../" }));
    expect(html).toContain('content="1.1"');
    expect(anchors(html)[0].attrs["data-requires-python"]).toBe(">=3.9");
  });
  test("links of a snapshot: vault path → upstream URL with sha256, size, metadata", () => {
    const s = buildSnapshot({ body: enc(UP_JSON), contentType: "application/vnd.pypi.simple.v1+json", pageUrl: "https://pypi.org/simple/demo-pkg/", kind: "project", project: "demo-pkg", fileOrigins: ["https://files.pythonhosted.org"] });
    const links = linksOf(page(s));
    expect(links).toEqual([
      ["files/packages/3f/a1/9c/demo_pkg-1.0-py3-none-any.whl", { url: "https://files.pythonhosted.org/packages/3f/a1/9c/demo_pkg-1.0-py3-none-any.whl", sha256: SHA, sizeBytes: 20431, coreMetadata: { sha256: MSHA } }],
    ]);
    expect(pypiSimple({ op: "links", snapshot: s }).links).toEqual(links);
  });
  test("unsupported major api-version and bad JSON are refused", () => {
    expect(() => build(JSON.stringify({ meta: { "api-version": "2.0" }, files: [] }), "application/vnd.pypi.simple.v1+json")).toThrow(/api-version/);
    expect(() => build("{nope", "application/vnd.pypi.simple.v1+json")).toThrow(/JSON/);
  });
});

describe("root index", () => {
  test("HTML and JSON upstream lists render both ways", () => {
    const fromHtml = buildSnapshot({ body: enc('<a href="/simple/foo-bar/">Foo.Bar</a><a href="/simple/x/">x</a><a href="/simple/bad/">-bad-</a>'), contentType: "text/html", pageUrl: "https://pypi.org/simple/", kind: "index", fileOrigins: [] });
    const fromJson = buildSnapshot({ body: enc(JSON.stringify({ meta: { "api-version": "1.1" }, projects: [{ name: "Foo.Bar" }, { name: "x" }] })), contentType: "application/vnd.pypi.simple.v1+json", pageUrl: "https://pypi.org/simple/", kind: "index", fileOrigins: [] });
    for (const s of [fromHtml, fromJson]) {
      const json = JSON.parse(dec(renderSnapshot({ snapshot: s, representation: "json", rootHref: "../" })));
      expect(json).toEqual({ meta: { "api-version": "1.0" }, projects: [{ name: "Foo.Bar" }, { name: "x" }] });
      const a = anchors(dec(renderSnapshot({ snapshot: s, representation: "html", rootHref: "../" })));
      expect(a.map((x) => [x.attrs.href, x.text])).toEqual([["foo-bar/", "Foo.Bar"], ["x/", "x"]]);
    }
  });
});

test("filesPathOf keeps only allowed origins and servable paths", () => {
  const o = new Set(["https://files.pythonhosted.org"]);
  expect(filesPathOf("https://files.pythonhosted.org/packages/a/b.whl", o)).toBe("files/packages/a/b.whl");
  expect(filesPathOf("https://files.pythonhosted.org:8443/packages/a/b.whl", o)).toBeUndefined();
  expect(filesPathOf("http://files.pythonhosted.org/packages/a/b.whl", o)).toBeUndefined();
  expect(filesPathOf("https://files.pythonhosted.org/", o)).toBeUndefined();
  expect(filesPathOf("https://files.pythonhosted.org/a%00b.whl", o)).toBeUndefined();
});

test("Warehouse JSON API: urls and releases rewritten to the vault, digests kept", () => {
  const doc = {
    info: { name: "demo-pkg", version: "1.0" },
    releases: { "1.0": [{ filename: "demo_pkg-1.0.tar.gz", url: "https://files.pythonhosted.org/packages/aa/demo_pkg-1.0.tar.gz", digests: { sha256: SHA }, size: 10 }] },
    urls: [{ filename: "demo_pkg-1.0.tar.gz", url: "https://files.pythonhosted.org/packages/aa/demo_pkg-1.0.tar.gz", digests: { sha256: SHA }, size: 10 }, { url: "https://elsewhere.example/x.tar.gz" }],
  };
  const out = rewriteJsonApi({ body: enc(JSON.stringify(doc)), pageUrl: "https://pypi.org/pypi/demo-pkg/json", fileOrigins: ["https://files.pythonhosted.org"], repoUrl: "http://vault:1/py/" });
  const r = JSON.parse(dec(out.body));
  expect(r.urls[0].url).toBe("http://vault:1/py/files/packages/aa/demo_pkg-1.0.tar.gz");
  expect(r.urls[0].digests.sha256).toBe(SHA);
  expect(r.urls[1].url).toBe("https://elsewhere.example/x.tar.gz");
  expect(r.releases["1.0"][0].url).toBe("http://vault:1/py/files/packages/aa/demo_pkg-1.0.tar.gz");
  expect(r.info).toEqual(doc.info);
  expect(out.links[0]).toEqual(["files/packages/aa/demo_pkg-1.0.tar.gz", { url: "https://files.pythonhosted.org/packages/aa/demo_pkg-1.0.tar.gz", sha256: SHA, sizeBytes: 10 }]);
});

/** `vault prefetch`: list parsing, URL mapping, bounded concurrency, progress output, exit codes (against a loopback server). */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join, resolve } from "node:path";
import { parseList, prefetch, resolveItems, type ProgressStream } from "./prefetch.ts";
import { tmpDataDir } from "../../../test/helpers/tmp.ts";
import { startUpstream } from "../../../test/helpers/upstream.ts";
import { startVault } from "../../../test/helpers/vault.ts";
import { startPypiIndex } from "../../../test/helpers/pypi-index.ts";

const ROOT = resolve(import.meta.dir, "../../..");
const BIG = new Uint8Array(1024 * 1024 + 3).fill(7);

/** A loopback stand-in for a vault: /repo/big (1 MiB, MISS), /repo/small (HIT), /repo/slow/* (gated), 404 otherwise. */
let server: ReturnType<typeof Bun.serve>;
let base: string;
const paths: string[] = [];
let active = 0;
let maxActive = 0;
let gateWidth = 2;
let waiting: (() => void)[] = [];

beforeAll(() => {
  server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(req) {
      const path = new URL(req.url).pathname;
      paths.push(path);
      if (path === "/repo/big") return new Response(BIG, { headers: { "x-vault-cache": "MISS" } });
      if (path === "/repo/small") return new Response("small", { headers: { "x-vault-cache": "HIT" } });
      if (path === "/repo/auth") return new Response(req.headers.get("authorization") ?? "none");
      if (path === "/repo/stall")
        return new Response(new ReadableStream({ start(c) { c.enqueue(new Uint8Array(10)); } }), { headers: { "x-vault-cache": "MISS" } });
      if (path.startsWith("/repo/slow/")) {
        // Hold each request until `gateWidth` are in flight together (or 3 s pass), then answer them all.
        active++;
        maxActive = Math.max(maxActive, active);
        await new Promise<void>((r) => {
          waiting.push(r);
          if (waiting.length >= gateWidth) {
            for (const w of waiting) w();
            waiting = [];
          } else setTimeout(r, 3000);
        });
        active--;
        return new Response("ok");
      }
      return new Response("not found", { status: 404, statusText: "Not Found" });
    },
  });
  base = `http://127.0.0.1:${server.port}`;
});

afterAll(() => server.stop(true));

/** A progress stream that records what is written. */
function sink(isTTY: boolean): ProgressStream & { text: string } {
  return { isTTY, columns: 120, text: "", write(s: string) { this.text += s; return true; } };
}

describe("list and mapping", () => {
  test("parseList drops blanks and comments but keeps URL fragments", () => {
    const text = "# warm these\n\n  pypi/a.whl  \nhttps://h/x.whl#sha256=00  # trailing comment\n\t# indented comment\n";
    expect(parseList(text)).toEqual(["pypi/a.whl", "https://h/x.whl#sha256=00"]);
  });

  test("resolveItems maps paths, vault URLs and upstream URLs (repositories and seed backends); dedupes", () => {
    const config = {
      repositories: [
        { name: "pypi", format: "pypi", type: "proxy" as const, upstream: "https://files.example.org" },
        { name: "apache", format: "http", type: "proxy" as const, upstream: "https://archive.example.org/dist/", prefix: "/apache" },
        { name: "local", format: "http", type: "hosted" as const },
      ],
      backends: [{ type: "http", config: { prefix: "/seed/", base_url: "https://seed.example.org/" } }],
    };
    const items = resolveItems(
      [
        "pypi/packages/a.whl",
        "/pypi/packages/a.whl",
        `${base}/pypi/packages/b.whl`,
        "https://files.example.org/packages/c.whl",
        "https://archive.example.org/dist/hadoop/x.tar.gz",
        "https://seed.example.org/y.bin",
        "https://elsewhere.example.org/z",
      ],
      base + "/",
      config,
    );
    expect(items.map((i) => i.url ?? i.error)).toEqual([
      `${base}/pypi/packages/a.whl`,
      `${base}/pypi/packages/b.whl`,
      `${base}/pypi/files/packages/c.whl`, // a pypi repository serves its upstream's files under files/
      `${base}/apache/hadoop/x.tar.gz`,
      `${base}/seed/y.bin`,
      "no proxy repository has this upstream (pass --config, or list repository paths)",
    ]);
  });

  test("resolveItems maps pypi upstream URLs as the pypi plugin serves them: pages, JSON API, files on its file hosts", () => {
    const config = {
      repositories: [
        { name: "pypi", format: "pypi", type: "proxy" as const }, // default upstream: pypi.org, files on files.pythonhosted.org
        { name: "corp", format: "pypi", type: "proxy" as const, upstream: "https://idx.example.org/simple/", fileHosts: ["https://cdn.example.org"] },
      ],
      backends: [{ type: "pypi", config: { prefix: "/seedpy/", index_url: "https://seed-idx.example.org/root", fileHosts: ["https://seed-files.example.org/"] } }],
    };
    const items = resolveItems(
      [
        "https://files.pythonhosted.org/packages/aa/bb/cc/demo-1.0-py3-none-any.whl#sha256=00",
        "https://files.pythonhosted.org/packages/aa/bb/cc/demo-1.0-py3-none-any.whl.metadata",
        "https://pypi.org/simple/requests/",
        "https://pypi.org/pypi/requests/2.0/json",
        "https://cdn.example.org/p/demo-2.0.tar.gz",
        "https://idx.example.org/simple/demo/",
        "https://idx.example.org/packages/demo-2.0.tar.gz", // fileHosts given without the index's origin
        "https://seed-idx.example.org/root/demo/",
        "https://seed-files.example.org/f/demo-1.0.whl",
      ],
      base,
      config,
    );
    expect(items.map((i) => i.url ?? i.error)).toEqual([
      `${base}/pypi/files/packages/aa/bb/cc/demo-1.0-py3-none-any.whl`,
      `${base}/pypi/files/packages/aa/bb/cc/demo-1.0-py3-none-any.whl.metadata`,
      `${base}/pypi/simple/requests/`,
      `${base}/pypi/pypi/requests/2.0/json`,
      `${base}/corp/files/p/demo-2.0.tar.gz`,
      `${base}/corp/simple/demo/`,
      "no proxy repository has this upstream (pass --config, or list repository paths)",
      `${base}/seedpy/demo/`,
      `${base}/seedpy/files/f/demo-1.0.whl`,
    ]);
  });
});

describe("prefetch against a loopback server", () => {
  test("non-TTY: one line per entry, summary, failures counted, bodies read to the end", async () => {
    const out = sink(false);
    const s = await prefetch({ url: base, lines: ["repo/big", "repo/small", "repo/missing", "https://nowhere.example/x"], out });
    expect(s.ok).toBe(2);
    expect(s.failed).toBe(2);
    expect(s.hits).toBe(1);
    expect(s.sizeBytes).toBe(BIG.length + "small".length + "not found".length);
    const big = s.results.find((r) => r.entry === "repo/big")!;
    expect(big).toMatchObject({ ok: true, status: 200, cache: "MISS", sizeBytes: BIG.length });
    expect(s.results.find((r) => r.entry === "repo/missing")).toMatchObject({ ok: false, status: 404, error: "404 Not Found" });
    const lines = out.text.trimEnd().split("\n");
    expect(lines).toHaveLength(5);
    expect(lines.filter((l) => /^\[[ \d]+\/4\] ok /.test(l))).toHaveLength(2);
    expect(lines.find((l) => l.includes("repo/missing"))).toMatch(/FAIL 404 .*repo\/missing: 404 Not Found$/);
    expect(lines[4]).toMatch(/^prefetched 2\/4 entries \(1 already cached\), 1\.0 MiB in [\d.]+ s \(.*\/s\); 2 failed$/);
  });

  test("TTY: a redrawn bar with count and bytes, then the summary and the failures", async () => {
    const out = sink(true);
    const s = await prefetch({ url: base, lines: ["repo/big", "repo/small", "repo/nope"], out, concurrency: 1 });
    expect(s.failed).toBe(1);
    expect(out.text).toContain("\x1b["); // cursor control: the line is redrawn, not appended
    expect(out.text).toContain("3/3 | 1.0 MiB");
    expect(out.text).toContain("1 failed");
    expect(out.text).toContain("  FAIL repo/nope: 404 Not Found\n");
    expect(out.text.split("\n").filter((l) => l.startsWith("[")).length).toBe(0);
  });

  test("at most --concurrency requests are in flight", async () => {
    maxActive = 0;
    gateWidth = 3;
    const lines = Array.from({ length: 9 }, (_, n) => `repo/slow/${n}`);
    const s = await prefetch({ url: base, lines, out: sink(false), concurrency: 3 });
    expect(s.ok).toBe(9);
    expect(maxActive).toBe(3);
  });

  test("an entry that stops sending bytes fails after --timeout; the token is sent as Bearer", async () => {
    const s = await prefetch({ url: base, lines: ["repo/stall", "repo/auth"], out: sink(false), timeoutSeconds: 0.3, headers: { authorization: "Bearer t0k" } });
    expect(s.results[0]).toMatchObject({ ok: false, sizeBytes: 10, error: "no data for 0.3 s" });
    expect(s.results[1]).toMatchObject({ ok: true, sizeBytes: "Bearer t0k".length });
  });
});

describe("CLI (bun scripts/prefetch.ts)", () => {
  async function cli(args: string[], stdin?: string, env: Record<string, string> = {}) {
    const p = Bun.spawn([process.execPath, join(ROOT, "scripts/prefetch.ts"), ...args], {
      cwd: await tmpDataDir("vault-prefetch-cwd-"),
      stdin: stdin === undefined ? "ignore" : new TextEncoder().encode(stdin),
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, ...env },
    });
    const timer = setTimeout(() => p.kill(), 30_000);
    const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    clearTimeout(timer);
    return { stdout, stderr, code };
  }

  test("reads the list from stdin; exit 0 when all fetched, 1 when one failed", async () => {
    const good = await cli(["--url", base, "--concurrency", "2", "-"], "repo/big\n# comment\nrepo/small\n");
    expect(good.code).toBe(0);
    expect(good.stderr).toContain("prefetched 2/2 entries");
    const bad = await cli(["--url", base, "-"], "repo/small\nrepo/missing\n");
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("1 failed");
  });

  test("a list file plus --config mapping an upstream URL onto a repository; VAULT_TOKEN is sent", async () => {
    const dir = await tmpDataDir("vault-prefetch-");
    const cfg = join(dir, "vault.config.json");
    await Bun.write(cfg, JSON.stringify({ server: { port: server.port }, repositories: [{ name: "repo", format: "http", type: "proxy", upstream: "https://up.example.org/files/" }] }));
    const list = join(dir, "list.txt");
    await Bun.write(list, "https://up.example.org/files/small\nrepo/auth\n");
    const before = paths.length;
    const r = await cli(["--config", cfg, list], undefined, { VAULT_TOKEN: "s3cret" });
    expect(r.stderr).toContain("prefetched 2/2 entries");
    expect(r.code).toBe(0);
    expect(paths.slice(before).sort()).toEqual(["/repo/auth", "/repo/small"]);
  });

  test("usage errors exit 2", async () => {
    expect((await cli([])).code).toBe(2);
    expect((await cli(["--concurrency", "0", "-"], "")).code).toBe(2);
    expect((await cli(["--url", base, "/nonexistent/list.txt"])).code).toBe(2);
    expect((await cli(["--config", "/nonexistent/vault.config.json", "-"], "")).code).toBe(2);
    const help = await cli(["--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("usage: vault prefetch");
  });
});

describe("against a real vault (http proxy repository)", () => {
  test("prefetched artifacts are cached: a second run is all hits and upstream saw one request each", async () => {
    const root = await tmpDataDir("vault-prefetch-up-");
    await Bun.write(join(root, "a.bin"), BIG);
    await Bun.write(join(root, "dir/b.txt"), "bee\n");
    const up = await startUpstream({ root });
    const config = { repositories: [{ name: "files", format: "http", type: "proxy" as const, upstream: up.url + "/" }] };
    const vault = await startVault({ config });
    try {
      const lines = ["files/a.bin", `${up.url}/dir/b.txt`, "files/missing.bin"];
      const first = await prefetch({ url: vault.url, lines, config, out: sink(false) });
      expect(first.results.map((r) => [r.entry, r.ok, r.status])).toEqual([
        ["files/a.bin", true, 200],
        [`${up.url}/dir/b.txt`, true, 200],
        ["files/missing.bin", false, 404],
      ]);
      expect(first.hits).toBe(0);
      // A miss is committed just after its body ends; until then the engine answers from the finished flight
      // (labelled MISS, no upstream request). Wait, bounded, for both entries to be answerable from the cache alone.
      for (const p of ["a.bin", "dir/b.txt"])
        for (let i = 0; ; i++) {
          const r = await fetch(`${vault.url}/files/${p}`, { method: "HEAD", headers: { "cache-control": "only-if-cached" } });
          if (r.status === 200) break;
          if (i > 100) throw new Error(`${p} never became a cache hit (last status ${r.status})`);
          await Bun.sleep(20);
        }
      const second = await prefetch({ url: vault.url, lines: lines.slice(0, 2), config, out: sink(false) });
      expect(second.failed).toBe(0);
      expect(second.hits).toBe(2);
      expect(second.sizeBytes).toBe(BIG.length + 4);
      expect(up.count("/a.bin")).toBe(1);
      expect(up.count("/dir/b.txt")).toBe(1);
      const res = await fetch(`${vault.url}/files/a.bin`);
      expect(res.headers.get("x-vault-cache")).toBe("HIT");
      expect(new Uint8Array(await res.arrayBuffer())).toEqual(BIG);
    } finally {
      await vault.stop();
      await up.stop();
    }
  });
});

/** Waits (bounded) until `url` is answerable from the cache alone: a miss is committed just after its body ends. */
async function untilCached(url: string): Promise<void> {
  for (let i = 0; ; i++) {
    const r = await fetch(url, { method: "HEAD", headers: { "cache-control": "only-if-cached" } });
    if (r.status === 200) return;
    if (i > 100) throw new Error(`${url} never became a cache hit (last status ${r.status})`);
    await Bun.sleep(20);
  }
}

describe("against a real vault (pypi proxy repository with a separate files host)", () => {
  test("a files-host URL is prefetched through the pypi repository: then a HIT, and the files host saw one request", async () => {
    const idx = await startPypiIndex();
    const config = { repositories: [{ name: "py", format: "pypi", type: "proxy" as const, upstream: idx.indexUrl, fileHosts: [idx.url, idx.files.url] }] };
    const vault = await startVault({ config });
    try {
      // projects other than "example" link their files absolutely on the files host
      const f = [...idx.byName.values()].find((x) => x.project !== "example" && x.installable && x.url.startsWith(idx.files.url + "/"));
      expect(f).toBeDefined();
      const vaultUrl = `${vault.url}/py/files${f!.path}`;
      const first = await prefetch({ url: vault.url, lines: [`${f!.url}#sha256=${f!.sha256}`], config, out: sink(false) });
      expect(first.results.map((r) => [r.url, r.ok, r.status, r.sizeBytes])).toEqual([[vaultUrl, true, 200, f!.sizeBytes]]);
      await untilCached(vaultUrl);
      const res = await fetch(vaultUrl);
      expect(res.status).toBe(200);
      expect(res.headers.get("x-vault-cache")).toBe("HIT");
      const body = new Uint8Array(await res.arrayBuffer());
      expect(new Bun.CryptoHasher("sha256").update(body).digest("hex")).toBe(f!.sha256);
      expect(idx.files.count(f!.path)).toBe(1);
      expect(idx.fileRequests().filter((r) => r.path === f!.path)).toHaveLength(1); // and nothing from the index server
    } finally {
      await vault.stop();
      await idx.stop();
    }
  });
});

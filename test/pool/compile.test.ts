/** The worker pool inside a `bun build --compile` binary (ROADMAP: single binary), built with core/pool.ts's bunCompilePlugin. */
import { expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { join, resolve } from "node:path";
import { bunCompilePlugin } from "../../core/pool.ts";
import { tmpDataDir } from "../helpers/tmp.ts";

const ROOT = resolve(import.meta.dir, "../..");

test("pool tasks run, move buffers and keep error codes inside a compiled binary", async () => {
  const dir = await tmpDataDir("vault-compile-");
  const outfile = join(dir, "pool-check");
  const built = await Bun.build({
    entrypoints: [join(ROOT, "test/pool/compiled-main.ts"), join(ROOT, "workers/index.ts"), join(ROOT, "node_modules/piscina/dist/worker.js")],
    root: ROOT,
    external: ["@napi-rs/nice"],
    compile: { outfile },
    plugins: [bunCompilePlugin()],
  });
  expect(built.logs.filter((l) => l.level === "error")).toEqual([]);
  expect(built.success).toBe(true);

  const data = join(dir, "data.bin");
  const content = new Uint8Array(300_000).map((_, n) => n % 251);
  await Bun.write(data, content);
  // Run from the temp dir so nothing resolves against the checkout by accident.
  const p = Bun.spawn([outfile, data], { cwd: dir, stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => p.kill(), 30_000);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  expect({ code, err }).toEqual({ code: 0, err: "" });
  expect(JSON.parse(out)).toEqual({
    sum: { hex: createHash("sha256").update(content).digest("hex"), sizeBytes: content.length },
    doc: '{"url":"V/a.tgz"}',
    docIsBytes: true,
    detached: true,
    missing: "ENOENT",
  });
}, 120_000);

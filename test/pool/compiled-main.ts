/** Entry of the single-binary pool check (test/pool/compile.test.ts): runs pool tasks inside a `bun build --compile` binary. */
import { createPool } from "../../core/pool.ts";
import type { RewriteResult } from "../../workers/document.ts";

const [path] = process.argv.slice(2);
const pool = createPool({ threads: 1 });
try {
  const sum = await pool.run<{ path: string }, { hex: string; sizeBytes: number }>("sha256File", { path });
  const bytes = new TextEncoder().encode(JSON.stringify({ url: "https://up.example/a.tgz" }));
  const buf = bytes.buffer as ArrayBuffer;
  const doc = await pool.run<unknown, RewriteResult>("rewriteJson", { bytes, rules: { urls: { from: ["https://up.example/"], to: "V/" } } }, { transfer: [buf] });
  const missing = await pool.run("sha256File", { path: path + ".missing" }).catch((e: { code?: string }) => e.code);
  console.log(JSON.stringify({ sum, doc: new TextDecoder().decode(doc.bytes), docIsBytes: doc.bytes instanceof Uint8Array, detached: buf.byteLength === 0, missing }));
} finally {
  await pool.close();
}

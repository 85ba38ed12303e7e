/** Keeps core/errors.ts ERROR_CODES and docs/errors.md in step: same codes, same statuses, each with a meaning. */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { ERROR_CODES, VaultError, toVaultError } from "../core/errors.ts";

const DOC = join(import.meta.dir, "..", "docs", "errors.md");

/** Rows of the table in docs/errors.md: `| \`CODE\` | status | meaning | causes |`. */
async function documented(): Promise<Map<string, { status: number; meaning: string }>> {
  const rows = new Map<string, { status: number; meaning: string }>();
  for (const line of (await Bun.file(DOC).text()).split("\n")) {
    const m = /^\|\s*`([A-Z0-9_]+)`\s*\|\s*(\d{3})\s*\|\s*([^|]*?)\s*\|/.exec(line);
    if (!m) continue;
    if (rows.has(m[1])) throw new Error(`docs/errors.md lists ${m[1]} twice`);
    rows.set(m[1], { status: Number(m[2]), meaning: m[3] });
  }
  return rows;
}

test("every code in ERROR_CODES is documented with its status, and nothing else is", async () => {
  const docs = await documented();
  const code = Object.fromEntries(Object.entries(ERROR_CODES).map(([k, v]) => [k, v]));
  const doc = Object.fromEntries([...docs].map(([k, v]) => [k, v.status]));
  expect(doc).toEqual(code);
});

test("every documented code has a meaning", async () => {
  for (const [code, { meaning }] of await documented()) expect({ code, meaning: meaning.length > 10 }).toEqual({ code, meaning: true });
});

test("VaultError takes the catalogue's status by default; unknown errors become VAULT_INTERNAL without leaking", () => {
  for (const [code, status] of Object.entries(ERROR_CODES)) expect(new VaultError(code).status).toBe(status);
  const e = toVaultError(new Error("password=hunter2 in /etc/secret"));
  expect([e.code, e.status, e.message]).toEqual(["VAULT_INTERNAL", 500, "internal error"]);
});

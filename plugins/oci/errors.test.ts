// Keeps the OCI error table in plugins/oci/README.md and OCI_ERROR_STATUS (errors.ts) in step.
import { expect, test } from "bun:test";
import { join } from "node:path";
import { OCI_ERROR_STATUS } from "./errors.ts";

test("README error table lists every OCI code with its status", async () => {
  const text = await Bun.file(join(import.meta.dir, "README.md")).text();
  const rows = new Map<string, number>();
  for (const m of text.matchAll(/^\| `([A-Z_]+)` \| (\d{3}) \|/gm)) rows.set(m[1], Number(m[2]));
  expect(Object.fromEntries(rows)).toEqual({ ...OCI_ERROR_STATUS });
});

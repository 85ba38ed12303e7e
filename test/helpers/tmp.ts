/** Temporary directories for tests, removed when the process exits. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const made: string[] = [];
process.on("exit", () => {
  for (const d of made) require("node:fs").rmSync(d, { recursive: true, force: true });
});

/** A fresh empty directory under the OS temp dir; `prefix` names it for debugging. Removed at process exit. */
export async function tmpDataDir(prefix = "vault-test-"): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  made.push(d);
  return d;
}

/** Removes a directory made by tmpDataDir now. */
export async function removeDir(d: string): Promise<void> {
  await rm(d, { recursive: true, force: true });
}

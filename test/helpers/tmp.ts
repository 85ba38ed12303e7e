/** Temporary directories for tests, removed when the process exits. */
import { mkdtemp, rm } from "node:fs/promises";
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const made: string[] = [];

/**
 * Removes every directory made by tmpDataDir in this process. `bun test` runs it once after all test files
 * (registered by the preload file test/setup.ts: Bun's test runner does not fire process "exit" handlers);
 * other processes (child scripts of tests) get it on exit.
 */
export function removeTmpDirs(): void {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
}
process.on("exit", removeTmpDirs);

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

/**
 * Where the entry file of a thread the vault starts is, from the sources or inside the single binary
 * (`bun build --compile`, scripts/build.ts). In a compiled binary every module's `import.meta.url` is
 * `file:///$bunfs/root/<binary>` (`B:/~BUN/root/` on Windows) and each extra entrypoint sits beside it at its path
 * from the repository root, so the same root-relative path serves both cases.
 */
import { pathToFileURL } from "node:url";
import { resolve } from "node:path";

/** True inside a `bun build --compile` binary. */
export const COMPILED: boolean = /\/\$bunfs\/|\/~BUN\//.test(import.meta.url);

/** The repository root (this file is core/threads.ts). */
const ROOT = resolve(import.meta.dir, "..");

/**
 * URL of a thread entry.
 * @param fromRoot the entry's path from the repository root, e.g. `workers/tail-hash.ts`; scripts/build.ts must list
 *   it among the binary's entrypoints
 */
export function threadEntry(fromRoot: string): URL {
  return COMPILED ? new URL(`./${fromRoot}`, import.meta.url) : pathToFileURL(resolve(ROOT, fromRoot));
}

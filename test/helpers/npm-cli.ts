/**
 * The real npm CLI for e2e tests: `npm` on PATH (it comes with node), run with its own user config file, an empty global
 * config, its own `--cache`, no update notifier, audit or fund calls, bounded in time. Under CI=true a missing npm fails
 * the tests; elsewhere they are skipped with the reason printed ({@link npmTest}).
 */
import { test } from "bun:test";
import { join } from "node:path";

const CI = process.env.CI === "true";
/** The npm executable, or null when it is missing. */
export const NPM = Bun.which("npm");
if (!NPM) console.warn(`npm e2e: ${CI ? "FAILING (CI=true)" : "skipping"}: npm not found on PATH`);
/** Runs npm tests when npm exists, and also under CI (where they then fail loudly). */
export const npmTest = NPM || CI ? test : test.skip;

/** Where one npm "user" keeps its state: the user config (`.npmrc`, written by `npm login`) and the cache. */
export interface NpmHome {
  /** Working directory and HOME. */
  dir: string;
  userconfig: string;
  cache: string;
}

/** Creates an npm home in `dir` with an empty user config (or `npmrc`) and an empty global config. */
export async function npmHome(dir: string, npmrc = ""): Promise<NpmHome> {
  const userconfig = join(dir, ".npmrc-user");
  await Bun.write(userconfig, npmrc);
  await Bun.write(join(dir, ".npmrc-global"), "");
  return { dir, userconfig, cache: join(dir, ".npm-cache") };
}

/**
 * Runs `npm <args>` in `cwd` (default `home.dir`) as that home's user, killed after `timeoutMs`. `answers` are typed on
 * stdin one at a time, each once its prompt (e.g. `Username:`) has appeared in the output: npm's prompts (`npm login`)
 * read from a fresh line reader each, so input written ahead of its prompt would be lost.
 * @returns exit code, stdout + stderr, and stdout alone
 * @throws when npm is missing (only reached under CI=true)
 */
export async function runNpm(
  home: NpmHome,
  args: string[],
  o: { cwd?: string; answers?: [prompt: string, answer: string][]; timeoutMs?: number } = {},
): Promise<{ code: number; out: string; stdout: string }> {
  if (!NPM) throw new Error("npm is required under CI=true (it comes with node)");
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    HOME: home.dir,
    npm_config_userconfig: home.userconfig,
    npm_config_globalconfig: join(home.dir, ".npmrc-global"),
    npm_config_update_notifier: "false",
  };
  const answers = [...(o.answers ?? [])];
  const p = Bun.spawn([NPM, ...args, "--userconfig", home.userconfig, "--cache", home.cache, "--no-audit", "--no-fund", "--loglevel", "warn"], {
    cwd: o.cwd ?? home.dir,
    env,
    stdin: answers.length > 0 ? "pipe" : "ignore",
    stdout: "pipe",
    stderr: "pipe",
    timeout: o.timeoutMs ?? 120_000,
    killSignal: "SIGKILL",
  });
  let all = "";
  let seen = 0;
  const onText = (t: string) => {
    all += t;
    while (answers.length > 0 && p.stdin && typeof p.stdin !== "number") {
      const at = all.indexOf(answers[0][0], seen);
      if (at < 0) break;
      seen = at + answers[0][0].length;
      p.stdin.write(answers.shift()![1] + "\n");
      p.stdin.flush();
      if (answers.length === 0) p.stdin.end();
    }
  };
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    let text = "";
    const dec = new TextDecoder();
    for await (const chunk of stream) {
      const t = dec.decode(chunk, { stream: true });
      text += t;
      onText(t);
    }
    return text;
  };
  const [stdout, stderr] = await Promise.all([collect(p.stdout), collect(p.stderr)]);
  return { code: await p.exited, out: stdout + stderr, stdout };
}

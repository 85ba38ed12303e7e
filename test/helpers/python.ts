/** The Python clients of the e2e tests (pip, twine): a clean environment, async runs, a venv with a working pip. */
import { existsSync } from "node:fs";
import { join } from "node:path";

/**
 * Environment for pip and twine: no user/site pip config (this machine's pip.conf adds find-links and extra indexes),
 * no TWINE_* settings, no keyring, no HTTP proxy for loopback, no version check, no prompts.
 */
export function pythonClientEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("PIP_") && !k.startsWith("TWINE_") && !/_proxy$/i.test(k)) env[k] = v;
  return {
    ...env,
    NO_PROXY: "127.0.0.1,localhost",
    PIP_CONFIG_FILE: "/dev/null",
    PIP_DISABLE_PIP_VERSION_CHECK: "1",
    PIP_NO_INPUT: "1",
    PIP_DEFAULT_TIMEOUT: "30",
    PYTHONDONTWRITEBYTECODE: "1",
    PYTHON_KEYRING_BACKEND: "keyring.backends.null.Keyring",
  };
}

/**
 * Runs a command asynchronously (vaults and upstreams run in the test process: never block its event loop), with
 * {@link pythonClientEnv}; killed after `timeoutMs` ms (default 150 000).
 * @returns exit code and stdout + stderr
 */
export async function runClient(cmd: string[], timeoutMs = 150_000): Promise<{ code: number; out: string }> {
  const p = Bun.spawn(cmd, { env: pythonClientEnv(), stdout: "pipe", stderr: "pipe", timeout: timeoutMs, killSignal: "SIGKILL" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out: out + err };
}

/** Interpreters tried for venvs: $VAULT_TEST_PYTHON, `python3` on PATH, /usr/bin/python3 (existing, deduplicated). */
export const PYTHON_CANDIDATES: string[] = [process.env.VAULT_TEST_PYTHON, Bun.which("python3"), "/usr/bin/python3"].filter(
  (p, i, a): p is string => !!p && existsSync(p) && a.indexOf(p) === i,
);

/**
 * Creates a venv in `dir` with the first interpreter whose venv has a working pip.
 * @returns the interpreter, the venv's python and pip's version, or `error` naming why each candidate failed
 */
export async function makeVenv(dir: string, candidates = PYTHON_CANDIDATES): Promise<{ python: string; venvPython: string; pipVersion: string } | { error: string }> {
  const problems: string[] = [];
  for (const py of candidates) {
    const r = await runClient([py, "-m", "venv", dir]);
    if (r.code !== 0) {
      problems.push(`${py} -m venv: ${r.out.trim().split("\n").pop()}`);
      continue;
    }
    const venvPython = join(dir, "bin", "python");
    const v = await runClient([venvPython, "-m", "pip", "--version"]);
    if (v.code === 0) return { python: py, venvPython, pipVersion: v.out.split(" ")[1] };
    problems.push(`${py}: venv has no working pip (${v.out.trim().split("\n").pop()})`);
  }
  return { error: problems.join("; ") || "no python3 candidates" };
}

/** Installed distributions of a venv: name (lower-case, `_` → `-`) → version. @throws Error when python fails */
export async function installedDists(venvPython: string): Promise<Record<string, string>> {
  const r = await runClient([venvPython, "-c", "import json,importlib.metadata as m;print(json.dumps({d.metadata['Name'].lower().replace('_','-'):d.version for d in m.distributions()}))"]);
  if (r.code !== 0) throw new Error(`listing the venv's distributions failed: ${r.out}`);
  return JSON.parse(r.out.trim().split("\n").pop()!);
}

/** What {@link twineUploadForm} puts in the form. */
export interface TwineUpload {
  name: string;
  version: string;
  filename: string;
  bytes: Uint8Array;
  /** Default from the file name: `bdist_wheel` for `.whl`, else `sdist`. */
  filetype?: string;
  /** More fields, or overrides (set after the defaults). */
  fields?: Record<string, string>;
  /** Leave out the `sha256_digest` twine always sends. */
  noDigest?: boolean;
}

/** The multipart form twine posts to the legacy upload API (field names as twine sends them; specs/pypi.md). */
export function twineUploadForm(o: TwineUpload): FormData {
  const wheel = o.filename.endsWith(".whl");
  const f = new FormData();
  f.set(":action", "file_upload");
  f.set("protocol_version", "1");
  f.set("metadata_version", "2.1");
  f.set("name", o.name);
  f.set("version", o.version);
  f.set("filetype", o.filetype ?? (wheel ? "bdist_wheel" : "sdist"));
  f.set("pyversion", wheel ? "py3" : "source");
  if (!o.noDigest) f.set("sha256_digest", new Bun.CryptoHasher("sha256").update(o.bytes).digest("hex"));
  for (const [k, v] of Object.entries(o.fields ?? {})) f.set(k, v);
  f.set("content", new File([o.bytes as BlobPart], o.filename, { type: "application/octet-stream" }));
  return f;
}

/**
 * Signing Release files with the real `gpg` (specs/apt.md §2, §6 step 5): the configured secret key is imported into
 * a private GnuPG home (mode 0700, in the OS temp directory: gpg-agent's socket path must stay short), then
 * `gpg --clearsign` makes `InRelease` and `gpg --detach-sign --armor` makes `Release.gpg`, with SHA512 digests.
 * Verifying an upstream's Release files against a keyring with the real `gpgv` ({@link Keyring}).
 */
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Thrown when gpg is missing, the key does not import, or signing fails (message includes gpg's stderr). */
export class GpgError extends Error {
  override name = "GpgError";
}

/** Result of one gpg run. */
interface GpgRun {
  stdout: Uint8Array;
  stderr: string;
  code: number;
}

/** Most time one gpg invocation may take, ms. */
const GPG_TIMEOUT_MS = 60_000;

async function gpg(home: string, args: string[], stdin?: Uint8Array | string, tool: "gpg" | "gpgv" = "gpg"): Promise<GpgRun> {
  const bin = Bun.which(tool);
  if (!bin) throw new GpgError(`${tool} is not installed (apt-get install ${tool})`);
  const p = Bun.spawn([bin, "--homedir", home, ...(tool === "gpg" ? ["--batch", "--no-tty"] : []), "--quiet", ...args], {
    stdin: stdin === undefined ? "ignore" : typeof stdin === "string" ? new TextEncoder().encode(stdin) : stdin,
    stdout: "pipe",
    stderr: "pipe",
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", LC_ALL: "C" },
    timeout: GPG_TIMEOUT_MS,
  });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).bytes(), new Response(p.stderr).text(), p.exited]);
  return { stdout, stderr, code };
}

/** Options of {@link Signer.create}. */
export interface SignerOptions {
  /** The secret key (armored or binary). */
  key: Uint8Array;
  passphrase?: string;
  /** Fingerprint or key id to sign with (default: the first secret key). */
  keyId?: string;
}

/** A signing key imported into its own GnuPG home. Call {@link close} when done (stops gpg-agent, removes the home). */
export class Signer {
  private constructor(
    private home: string,
    /** Fingerprint of the signing key (40 hex digits). */
    readonly fingerprint: string,
    private passArgs: string[],
  ) {}

  /**
   * Imports the key and picks the signing key.
   * @throws GpgError when gpg is missing, the import fails, or no (matching) secret key is found
   */
  static async create(o: SignerOptions): Promise<Signer> {
    const home = await mkdtemp(join(tmpdir(), "vault-gpg-"));
    try {
      await chmod(home, 0o700);
      const imp = await gpg(home, ["--import"], o.key);
      if (imp.code !== 0) throw new GpgError(`cannot import the signing key: ${imp.stderr.trim()}`);
      const list = await gpg(home, ["--with-colons", "--list-secret-keys"]);
      const fprs: string[] = [];
      let inSec = false;
      for (const line of new TextDecoder().decode(list.stdout).split("\n")) {
        const f = line.split(":");
        if (f[0] === "sec") inSec = true;
        else if (f[0] === "ssb") inSec = false;
        else if (f[0] === "fpr" && inSec) {
          fprs.push(f[9]);
          inSec = false;
        }
      }
      const want = o.keyId?.replace(/^0x/i, "").toUpperCase();
      const fpr = want ? fprs.find((x) => x.endsWith(want)) : fprs[0];
      if (!fpr) throw new GpgError(want ? `no secret key ${o.keyId} in the signing key` : "the signing key holds no secret key");
      const passArgs = ["--pinentry-mode", "loopback"];
      if (o.passphrase !== undefined) {
        const file = join(home, "passphrase");
        await writeFile(file, o.passphrase, { mode: 0o600 });
        passArgs.push("--passphrase-file", file);
      } else passArgs.push("--passphrase", "");
      const s = new Signer(home, fpr, passArgs);
      await s.clearsign("probe\n"); // fails now rather than at the first upload (wrong passphrase, expired key)
      return s;
    } catch (e) {
      await rm(home, { recursive: true, force: true });
      throw e;
    }
  }

  private async sign(mode: string[], text: string): Promise<string> {
    const r = await gpg(this.home, [...this.passArgs, "--local-user", this.fingerprint, "--digest-algo", "SHA512", ...mode], text);
    if (r.code !== 0) throw new GpgError(`gpg ${mode.join(" ")} failed: ${r.stderr.trim()}`);
    return new TextDecoder().decode(r.stdout);
  }

  /** `InRelease`: the Release clearsigned. @throws GpgError */
  clearsign(release: string): Promise<string> {
    return this.sign(["--clearsign"], release);
  }

  /** `Release.gpg`: an armored detached signature of the Release. @throws GpgError */
  detachSign(release: string): Promise<string> {
    return this.sign(["--detach-sign", "--armor"], release);
  }

  /** The public key, armored (`public.key`) or as a binary keyring usable with `signed-by=` (`public.gpg`). @throws GpgError */
  async publicKey(armor: boolean): Promise<Uint8Array> {
    const r = await gpg(this.home, [...(armor ? ["--armor"] : []), "--export", this.fingerprint]);
    if (r.code !== 0 || r.stdout.byteLength === 0) throw new GpgError(`cannot export the public key: ${r.stderr.trim()}`);
    return r.stdout;
  }

  /** Stops this home's gpg-agent and removes the home. */
  async close(): Promise<void> {
    const gpgconf = Bun.which("gpgconf");
    if (gpgconf) await Bun.spawn([gpgconf, "--homedir", this.home, "--kill", "gpg-agent"], { stdout: "ignore", stderr: "ignore" }).exited.catch(() => {});
    await rm(this.home, { recursive: true, force: true });
  }
}

/** Status keywords of gpgv that make a signature unacceptable even next to a good one (apt-secure(8) refuses them too). */
const BAD_STATUS = /^\[GNUPG:\] (BADSIG|ERRSIG|EXPSIG|EXPKEYSIG|REVKEYSIG|NO_PUBKEY)\b/m;

/**
 * An OpenPGP keyring (an upstream archive's, e.g. the distribution's `*-archive-keyring.gpg`) that Release files are
 * verified against with the real `gpgv`, as APT does with `Signed-By` (specs/apt.md §2). Armored keyrings (`.asc`) are
 * converted once with `gpg --dearmor`. Call {@link close} when done.
 */
export class Keyring {
  private constructor(
    private home: string,
    private keyring: string,
  ) {}

  /**
   * Reads the keyring file (binary or armored) into a private directory.
   * @throws GpgError when the file cannot be read, gpg/gpgv is missing or an armored file does not convert
   */
  static async open(path: string): Promise<Keyring> {
    let data: Uint8Array;
    try {
      data = new Uint8Array(await readFile(path));
    } catch (e) {
      throw new GpgError(`cannot read the keyring ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const home = await mkdtemp(join(tmpdir(), "vault-gpgv-"));
    try {
      await chmod(home, 0o700);
      const keyring = join(home, "keyring.gpg");
      if (new TextDecoder().decode(data.subarray(0, 64)).includes("-----BEGIN PGP")) {
        const r = await gpg(home, ["--dearmor"], data);
        if (r.code !== 0 || r.stdout.byteLength === 0) throw new GpgError(`cannot read the armored keyring ${path}: ${r.stderr.trim()}`);
        data = r.stdout;
      }
      await writeFile(keyring, data, { mode: 0o600 });
      return new Keyring(home, keyring);
    } catch (e) {
      await rm(home, { recursive: true, force: true });
      throw e;
    }
  }

  /** Runs gpgv on files written to a fresh directory; returns the status lines and the plaintext (`--output`). */
  private async gpgv(files: Record<string, Uint8Array | string>, args: (dir: string) => string[]): Promise<{ ok: boolean; status: string; output: string; stderr: string }> {
    const dir = await mkdtemp(join(this.home, "v-"));
    try {
      for (const [name, body] of Object.entries(files)) await writeFile(join(dir, name), body);
      const r = await gpg(this.home, ["--status-fd", "1", "--keyring", this.keyring, ...args(dir)], undefined, "gpgv");
      const status = new TextDecoder().decode(r.stdout);
      const output = await readFile(join(dir, "output"), "utf8").catch(() => "");
      return { ok: r.code === 0 && /^\[GNUPG:\] GOODSIG /m.test(status) && !BAD_STATUS.test(status), status, output, stderr: r.stderr.trim() };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Verifies a clearsigned document (`InRelease`).
   * @returns the signed text as gpgv read it (dash-escaping undone)
   * @throws GpgError naming gpgv's complaint when no good signature by a key of this keyring is found
   */
  async verifyClearsigned(text: Uint8Array): Promise<string> {
    const r = await this.gpgv({ InRelease: text }, (d) => ["--output", join(d, "output"), join(d, "InRelease")]);
    if (!r.ok) throw new GpgError(problem(r.stderr, r.status));
    return r.output;
  }

  /**
   * Verifies a detached signature (`Release.gpg`) of `data` (`Release`).
   * @throws GpgError naming gpgv's complaint when no good signature by a key of this keyring is found
   */
  async verifyDetached(data: Uint8Array, signature: Uint8Array): Promise<void> {
    const r = await this.gpgv({ Release: data, "Release.gpg": signature }, (d) => [join(d, "Release.gpg"), join(d, "Release")]);
    if (!r.ok) throw new GpgError(problem(r.stderr, r.status));
  }

  /** Removes the private directory. */
  async close(): Promise<void> {
    await rm(this.home, { recursive: true, force: true });
  }
}

/** The most telling line of a failed gpgv run. */
function problem(stderr: string, status: string): string {
  const bad = BAD_STATUS.exec(status);
  const lines = stderr.split("\n").map((l) => l.replace(/^gpgv: /, "").trim()).filter((l) => l && !/^(Signature made|using )/.test(l));
  return (lines.at(-1) ?? (bad ? bad[1] : "no good signature")).slice(0, 200);
}

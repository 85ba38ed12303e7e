/**
 * Signing Release files with the real `gpg` (specs/apt.md §2, §6 step 5): the configured secret key is imported into
 * a private GnuPG home (mode 0700, in the OS temp directory: gpg-agent's socket path must stay short), then
 * `gpg --clearsign` makes `InRelease` and `gpg --detach-sign --armor` makes `Release.gpg`, with SHA512 digests.
 */
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
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

async function gpg(home: string, args: string[], stdin?: Uint8Array | string): Promise<GpgRun> {
  const bin = Bun.which("gpg");
  if (!bin) throw new GpgError("gpg is not installed (apt-get install gpg)");
  const p = Bun.spawn([bin, "--homedir", home, "--batch", "--no-tty", "--quiet", ...args], {
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

/**
 * APT test helpers: a throwaway OpenPGP key made with the real `gpg` in a temp GNUPGHOME, a signed upstream archive
 * built at test time from the real .debs of ../shared/fixtures/apt/pool with `apt-ftparchive` (apt-utils), `xz` and
 * `gzip`, and the real `apt-get` run as the current user against an isolated root (its own state, cache, sources and
 * keyrings; the machine's /etc/apt is never read).
 */
import { chmod, copyFile, mkdir, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { tmpDataDir } from "./tmp.ts";

/** The fixture archive (real .debs and InRelease files). */
export const APT_FIXTURES = join(import.meta.dir, "..", "..", "..", "shared", "fixtures", "apt");

/** The fixture .debs: pool path → package name and sha256. */
export const FIXTURE_DEBS = {
  hello: { path: "pool/main/h/hello/hello_2.10-3_amd64.deb", sha256: "2e6e2f1a0007dc43bc91c273fd36e91e40a4f1c2765a03eca68b70a42103878a" },
  sl: { path: "pool/main/s/sl/sl_5.02-1+b1_amd64.deb", sha256: "47b95fd2c680eb8d8adff862a38b590318c76cd8d155cb3ac1049019732de2c0" },
  tree: { path: "pool/main/t/tree/tree_2.1.0-1_amd64.deb", sha256: "4c0dc6088e801285717bae2a98a7672f1e4d2eed4e918355987bc6617a8f490b" },
  cowsay: { path: "pool/main/c/cowsay/cowsay_3.03+dfsg2-8_all.deb", sha256: "5b16f90ff97871aa0f442087abc1878940d00e310f74190ba854a097545204bf" },
  "fortunes-min": { path: "pool/main/f/fortune-mod/fortunes-min_1.99.1-7.3_all.deb", sha256: "9eed5b45064e41133dae0967cf3a17588ad77c014fcc7bf1527fa3ea48e44d07" },
} as const;
export type FixturePackage = keyof typeof FIXTURE_DEBS;

/** Tools the APT tests need (Debian packages apt, gpg, apt-utils, xz-utils, gzip, curl). */
export const APT_TOOLS = ["apt-get", "gpg", "gpgv", "apt-ftparchive", "xz", "gzip", "curl"];

/** Result of a command. */
export interface Run {
  code: number;
  out: string;
}

/** Runs a command (bounded, default 120 s), stdout and stderr together. */
export async function run(cmd: string[], o: { cwd?: string; env?: Record<string, string>; stdin?: Uint8Array; timeoutMs?: number } = {}): Promise<Run> {
  const p = Bun.spawn(cmd, {
    cwd: o.cwd,
    env: { ...process.env, LC_ALL: "C", ...o.env },
    stdin: o.stdin ?? "ignore",
    stdout: "pipe",
    stderr: "pipe",
    timeout: o.timeoutMs ?? 120_000,
  });
  const [a, b, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out: a + b };
}

/** A throwaway signing key. */
export interface TestKey {
  home: string;
  fingerprint: string;
  /** The armored secret key (what a hosted repository's `signing.key` takes). */
  secretArmored: string;
  /** A binary keyring with the public key, for `signed-by=`. */
  keyring: string;
  /** `gpg --clearsign` / `gpg -abs` of a text with this key. */
  clearsign(text: string): Promise<string>;
  detachSign(text: string): Promise<string>;
}

/** Makes an ed25519 signing key in a fresh GNUPGHOME (no passphrase). */
export async function makeKey(uid = "Vault Test Archive <archive@example.invalid>"): Promise<TestKey> {
  const home = await tmpDataDir("apt-gpg-");
  await chmod(home, 0o700);
  const g = (args: string[], stdin?: string) => run(["gpg", "--homedir", home, "--batch", "--no-tty", ...args], { stdin: stdin === undefined ? undefined : new TextEncoder().encode(stdin) });
  const gen = await g(["--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"]);
  if (gen.code !== 0) throw new Error(`gpg key generation failed: ${gen.out}`);
  const list = await g(["--with-colons", "--list-secret-keys"]);
  const fingerprint = list.out.split("\n").find((l) => l.startsWith("fpr:"))!.split(":")[9];
  const secretArmored = (await g(["--armor", "--pinentry-mode", "loopback", "--passphrase", "", "--export-secret-keys", fingerprint])).out;
  const keyring = join(home, "archive-keyring.gpg");
  const exp = await g(["--output", keyring, "--export", fingerprint]);
  if (exp.code !== 0) throw new Error(`gpg export failed: ${exp.out}`);
  const sign = async (mode: string[], text: string) => {
    const r = await g(["--local-user", fingerprint, "--digest-algo", "SHA512", ...mode], text);
    if (r.code !== 0) throw new Error(`gpg ${mode.join(" ")} failed: ${r.out}`);
    return r.out;
  };
  return { home, fingerprint, secretArmored, keyring, clearsign: (t) => sign(["--clearsign"], t), detachSign: (t) => sign(["--armor", "--detach-sign"], t) };
}

/** Copies every file below `from` to `to` (same relative paths). */
async function copyTree(from: string, to: string): Promise<void> {
  for (const e of await readdir(from, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const src = join(e.parentPath, e.name);
    const dst = join(to, relative(from, src));
    await mkdir(dirname(dst), { recursive: true });
    await copyFile(src, dst);
  }
}

/** One generation of a test archive. */
export interface ArchiveGeneration {
  /** The Release text (unsigned body). */
  release: string;
  /** sha256 of `dists/<suite>/main/binary-amd64/Packages.xz` and of the uncompressed Packages. */
  packagesXzSha256: string;
  packagesSha256: string;
}

/**
 * Writes (or rewrites) a signed archive at `root` for `suite` with the given fixture packages in `main`/amd64:
 * pool files, `Packages`, `.gz`, `.xz`, their by-hash copies (earlier generations' copies stay), a Release with
 * `Acquire-By-Hash: yes` made by `apt-ftparchive release`, `InRelease` and `Release.gpg` (modified at `date`, default a
 * minute ago: give each generation a later one).
 */
export async function writeArchive(root: string, suite: string, packages: FixturePackage[], key: TestKey, o: { date?: Date } = {}): Promise<ArchiveGeneration> {
  for (const p of packages) {
    const dst = join(root, FIXTURE_DEBS[p].path);
    await mkdir(dirname(dst), { recursive: true });
    await copyFile(join(APT_FIXTURES, FIXTURE_DEBS[p].path), dst);
  }
  // apt-ftparchive scans a directory: give it only the packages of this generation
  const scan = await tmpDataDir("apt-scan-");
  for (const p of packages) {
    const dst = join(scan, FIXTURE_DEBS[p].path);
    await mkdir(dirname(dst), { recursive: true });
    await copyFile(join(APT_FIXTURES, FIXTURE_DEBS[p].path), dst);
  }
  const pk = await run(["apt-ftparchive", "packages", "pool"], { cwd: scan });
  if (pk.code !== 0) throw new Error(`apt-ftparchive packages failed: ${pk.out}`);
  await rm(scan, { recursive: true, force: true });
  const dir = join(root, "dists", suite, "main", "binary-amd64");
  await mkdir(join(dir, "by-hash", "SHA256"), { recursive: true });
  for (const f of ["Packages", "Packages.gz", "Packages.xz"]) await rm(join(dir, f), { force: true });
  await writeFile(join(dir, "Packages"), pk.out);
  for (const cmd of [["gzip", "-9", "-k", "-n"], ["xz", "-9", "-k"]]) {
    const r = await run([...cmd, join(dir, "Packages")]);
    if (r.code !== 0) throw new Error(`${cmd[0]} failed: ${r.out}`);
  }
  const sha = async (f: string) => new Bun.CryptoHasher("sha256").update(await Bun.file(f).bytes()).digest("hex");
  for (const f of ["Packages", "Packages.gz", "Packages.xz"]) await copyFile(join(dir, f), join(dir, "by-hash", "SHA256", await sha(join(dir, f))));
  const when = o.date ?? new Date(Date.now() - 60_000);
  const date = when.toUTCString();
  const rel = await run(
    [
      "apt-ftparchive",
      "-o", `APT::FTPArchive::Release::Origin=Vault Test`,
      "-o", `APT::FTPArchive::Release::Label=Vault Test`,
      "-o", `APT::FTPArchive::Release::Suite=${suite}`,
      "-o", `APT::FTPArchive::Release::Codename=${suite}`,
      "-o", "APT::FTPArchive::Release::Architectures=amd64",
      "-o", "APT::FTPArchive::Release::Components=main",
      "-o", "APT::FTPArchive::Release::Acquire-By-Hash=yes",
      // as Debian's archive: MD5Sum + SHA256 only, so APT asks for by-hash/SHA256
      "-o", "APT::FTPArchive::SHA1=false",
      "-o", "APT::FTPArchive::SHA512=false",
      "-o", `APT::FTPArchive::Release::Date=${date}`,
      "release", ".",
    ],
    { cwd: join(root, "dists", suite) },
  );
  if (rel.code !== 0) throw new Error(`apt-ftparchive release failed: ${rel.out}`);
  const suiteDir = join(root, "dists", suite);
  await writeFile(join(suiteDir, "Release"), rel.out);
  await writeFile(join(suiteDir, "InRelease"), await key.clearsign(rel.out));
  await writeFile(join(suiteDir, "Release.gpg"), await key.detachSign(rel.out));
  // Last-Modified (one-second resolution) follows the Release date, so generations written within one second differ
  for (const f of ["Release", "InRelease", "Release.gpg"]) await utimes(join(suiteDir, f), when, when);
  return { release: rel.out, packagesXzSha256: await sha(join(dir, "Packages.xz")), packagesSha256: await sha(join(dir, "Packages")) };
}

/** An isolated APT root for the real apt-get. */
export interface AptClient {
  dir: string;
  /** Runs `apt-get <args>` with the isolated configuration, in `cwd` (default: the client's download dir). */
  aptGet(args: string[], o?: { cwd?: string; extra?: string[] }): Promise<Run>;
  /** Where `apt-get download` puts files. */
  downloads: string;
  /** The `archives/` directory of `install --download-only`. */
  archives: string;
}

/**
 * Makes an isolated APT root: `APT_CONFIG` points at a file that moves every directory (state, cache, sources, parts,
 * keyrings, logs) into a temp dir and leaves the system's apt.conf.d unread. `sourcesList` lines are written as its
 * only sources.
 */
export async function aptClient(sourcesList: string): Promise<AptClient> {
  const d = await tmpDataDir("apt-client-");
  for (const sub of ["state/lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/apt.conf.d", "etc/preferences.d", "etc/trusted.gpg.d", "log", "downloads"])
    await mkdir(join(d, sub), { recursive: true });
  await writeFile(join(d, "state", "status"), "");
  await writeFile(join(d, "etc", "sources.list"), sourcesList);
  const conf = `
Dir::Etc::Parts "${d}/etc/apt.conf.d";
Dir::Etc::Main "/dev/null";
Dir::State "${d}/state";
Dir::State::status "${d}/state/status";
Dir::Cache "${d}/cache";
Dir::Etc::SourceList "${d}/etc/sources.list";
Dir::Etc::SourceParts "${d}/etc/sources.list.d";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "${d}/etc/preferences.d";
Dir::Etc::Trusted "${d}/etc/trusted.gpg";
Dir::Etc::TrustedParts "${d}/etc/trusted.gpg.d";
Dir::Log "${d}/log";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
${process.getuid?.() === 0 ? 'APT::Sandbox::User "root";' : ""}
Debug::NoLocking "true";
Acquire::Languages "none";
Acquire::Retries "0";
Acquire::http::Proxy "DIRECT";
Acquire::http::Timeout "30";
Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";
`;
  await writeFile(join(d, "apt.conf"), conf);
  const downloads = join(d, "downloads");
  return {
    dir: d,
    downloads,
    archives: join(d, "cache", "archives"),
    aptGet: (args, o = {}) =>
      run(["apt-get", "-q", ...(o.extra ?? []).flatMap((x) => ["-o", x]), ...args], {
        cwd: o.cwd ?? downloads,
        env: { APT_CONFIG: join(d, "apt.conf"), http_proxy: "", https_proxy: "", HTTP_PROXY: "", HTTPS_PROXY: "" },
        timeoutMs: 120_000,
      }),
  };
}

/** sha256 of a file, hex. */
export async function sha256File(path: string): Promise<string> {
  return new Bun.CryptoHasher("sha256").update(await Bun.file(path).bytes()).digest("hex");
}

/** The file name `apt-get download` gives a fixture package (an epoch becomes `%3a`). */
export function downloadName(p: FixturePackage): string {
  const base = FIXTURE_DEBS[p].path.split("/").pop()!;
  return p === "fortunes-min" ? base.replace("_1.99", "_1%3a1.99") : base;
}

/**
 * Runs `apt-get download <packages>` in the client's download dir.
 * @returns the run and, when it succeeded, the sha256 of each downloaded file by package
 */
export async function aptDownload(c: AptClient, ...packages: FixturePackage[]): Promise<Run & { sha256: Partial<Record<FixturePackage, string>> }> {
  const r = await c.aptGet(["download", ...packages]);
  const sha256: Partial<Record<FixturePackage, string>> = {};
  if (r.code === 0) for (const p of packages) sha256[p] = await sha256File(join(c.downloads, downloadName(p)));
  return { ...r, sha256 };
}

/** The fixture sha256 of each package, in the shape {@link aptDownload} returns. */
export function expectedSha256(...packages: FixturePackage[]): Partial<Record<FixturePackage, string>> {
  return Object.fromEntries(packages.map((p) => [p, FIXTURE_DEBS[p].sha256]));
}

/** `curl -sS` with the HTTP status appended: `status` is that code, `out` the body and messages before it (trailing whitespace trimmed). */
export async function curl(args: string[]): Promise<Run & { status: number }> {
  const r = await run(["curl", "-sS", "-w", "\n%{http_code}", ...args]);
  const t = r.out.trimEnd();
  const nl = t.lastIndexOf("\n");
  return { code: r.code, out: t.slice(0, Math.max(0, nl)).trimEnd(), status: Number(t.slice(nl + 1)) };
}

/** Saves the binary keyring a hosted or group repository serves at `<repoUrl>/public.gpg` into `dir`; returns its path. */
export async function fetchKeyring(repoUrl: string, dir: string): Promise<string> {
  const r = await fetch(`${repoUrl}/public.gpg`);
  if (r.status !== 200) throw new Error(`${repoUrl}/public.gpg answered ${r.status}`);
  const path = join(dir, `${repoUrl.split("/").pop()}.gpg`);
  await writeFile(path, new Uint8Array(await r.arrayBuffer()));
  return path;
}

/** The path of a fixture .deb on disk. */
export function fixtureDeb(p: FixturePackage): string {
  return join(APT_FIXTURES, FIXTURE_DEBS[p].path);
}

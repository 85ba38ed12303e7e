/**
 * e2e: an apt hosted repository. .debs (the real ones of ../shared/fixtures/apt/pool) uploaded with curl
 * `--upload-file`, then the real `apt-get update` / `download` / `install --download-only` with the repository's
 * signature verified by apt against the key the vault serves at `/<repo>/public.gpg`; the Release/InRelease checked
 * with gpgv; upload errors (auth, invalid packages, conflicting bytes, bad suite); by-hash generations kept.
 *
 * Under CI=true a missing apt-get/gpg/curl fails the tests; elsewhere they are skipped with the reason printed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFile } from "node:fs/promises";
import { APT_TOOLS, FIXTURE_DEBS, aptClient, curl, fixtureDeb, aptDownload, expectedSha256, makeKey, run, sha256File, type TestKey } from "../helpers/apt.ts";
import { requireTools } from "../helpers/registry.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { parseRelease, signedText } from "../../plugins/apt/release.ts";
import type { VaultConfig } from "../../core/config/types.ts";

const HAVE = requireTools(APT_TOOLS);
const aptTest = HAVE ? test : test.skip;
const TIMEOUT = 180_000;
const PW = "s3cret-apt";

describe("apt hosted repository: curl uploads, apt-get installs with the signature verified", () => {
  let key: TestKey;
  let vault: StartedVault;
  let keyring: string;
  const repo = () => `${vault.url}/apt-local`;

  beforeAll(async () => {
    if (!HAVE) return;
    key = await makeKey("Vault Hosted Test <hosted@example.invalid>");
    vault = await startVault({
      config: {
        auth: { admin: { user: "admin", password: PW } },
        repositories: [{ name: "apt-local", format: "apt", type: "hosted", signing: { key: key.secretArmored }, architectures: ["amd64"] }],
      },
    });
    keyring = join(await tmpDataDir("apt-hosted-keyring-"), "vault.gpg");
  });
  afterAll(async () => {
    await vault?.stop();
  });

  aptTest("curl --upload-file publishes .debs (default suite, upload/<suite>/<component>/, ?distribution=); identical re-upload is 200", async () => {
    const a = await curl(["-u", `admin:${PW}`, "--upload-file", fixtureDeb("hello"), `${repo()}/`]);
    expect(a.status).toBe(201);
    expect(a.out).toContain("published pool/main/h/hello/hello_2.10-3_amd64.deb in stable/main");
    const b = await curl(["-u", `admin:${PW}`, "--upload-file", fixtureDeb("fortunes-min"), `${repo()}/upload/stable/main/`]);
    expect(b.status).toBe(201);
    expect(b.out).toContain("pool/main/f/fortune-mod/fortunes-min_1.99.1-7.3_all.deb");
    const c = await curl(["-u", `admin:${PW}`, "--upload-file", fixtureDeb("cowsay"), `${repo()}/cowsay.deb?distribution=stable`]);
    expect(c.status).toBe(201);
    // raw POST body (Nexus style) to another suite
    const d = await curl(["-u", `admin:${PW}`, "--data-binary", `@${fixtureDeb("sl")}`, "-H", "content-type: application/vnd.debian.binary-package", `${repo()}/upload/testing/main`]);
    expect(d.status).toBe(201);
    const again = await curl(["-u", `admin:${PW}`, "--upload-file", fixtureDeb("hello"), `${repo()}/`]);
    expect(again.status).toBe(200);
    expect(again.out).toContain("already published");
  }, TIMEOUT);

  aptTest("apt-get update/download/install from the hosted repository, signature checked against public.gpg", async () => {
    const k = await fetch(`${repo()}/public.gpg`);
    expect(k.status).toBe(200);
    await writeFile(keyring, new Uint8Array(await k.arrayBuffer()));
    const armored = await (await fetch(`${repo()}/public.key`)).text();
    expect(armored).toStartWith("-----BEGIN PGP PUBLIC KEY BLOCK-----");
    const c = await aptClient(`deb [signed-by=${keyring}] ${repo()} stable main\ndeb [signed-by=${keyring}] ${repo()} testing main\n`);
    const u = await c.aptGet(["update"]);
    expect(u.out).not.toMatch(/NO_PUBKEY|not signed|Hash Sum mismatch|W: /);
    expect(u.code).toBe(0);
    const d = await aptDownload(c, "hello", "cowsay", "sl");
    expect(d.code).toBe(0);
    expect(d.sha256).toEqual(expectedSha256("hello", "cowsay", "sl"));
    const i = await c.aptGet(["install", "--download-only", "-y", "--no-install-recommends", "fortunes-min"]);
    expect(i.code).toBe(0);
    expect(await sha256File(join(c.archives, "fortunes-min_1%3a1.99.1-7.3_all.deb"))).toBe(FIXTURE_DEBS["fortunes-min"].sha256);
    // a key apt does not trust is refused
    const other = await makeKey("Someone Else <else@example.invalid>");
    const bad = await aptClient(`deb [signed-by=${other.keyring}] ${repo()} stable main\n`);
    const ub = await bad.aptGet(["update"]);
    expect(ub.out).toMatch(/NO_PUBKEY|not signed|signature/i);
  }, TIMEOUT);

  aptTest("InRelease and Release.gpg verify with gpgv; the Release lists every index with its size and SHA256", async () => {
    const dir = await tmpDataDir("apt-hosted-gpgv-");
    const inRelease = await (await fetch(`${repo()}/dists/stable/InRelease`)).text();
    const release = await (await fetch(`${repo()}/dists/stable/Release`)).text();
    const sig = await (await fetch(`${repo()}/dists/stable/Release.gpg`)).text();
    await writeFile(join(dir, "InRelease"), inRelease);
    await writeFile(join(dir, "Release"), release);
    await writeFile(join(dir, "Release.gpg"), sig);
    expect((await run(["gpgv", "--keyring", keyring, join(dir, "InRelease")])).code).toBe(0);
    expect((await run(["gpgv", "--keyring", keyring, join(dir, "Release.gpg"), join(dir, "Release")])).code).toBe(0);
    expect(signedText(inRelease)).toBe(release);
    const r = parseRelease(release);
    expect(r.acquireByHash).toBe(true);
    expect([...r.files.keys()].sort()).toEqual(["main/binary-amd64/Packages", "main/binary-amd64/Packages.gz"]);
    for (const name of ["Packages", "Packages.gz"]) {
      const f = r.files.get(`main/binary-amd64/${name}`)!;
      const body = new Uint8Array(await (await fetch(`${repo()}/dists/stable/main/binary-amd64/${name}`)).arrayBuffer());
      expect(body.byteLength).toBe(f.size);
      expect(new Bun.CryptoHasher("sha256").update(body).digest("hex")).toBe(f.hashes.SHA256!);
      const bh = await fetch(`${repo()}/dists/stable/main/binary-amd64/by-hash/SHA256/${f.hashes.SHA256}`);
      expect(bh.status).toBe(200);
      await bh.arrayBuffer();
    }
    const packages = await (await fetch(`${repo()}/dists/stable/main/binary-amd64/Packages`)).text();
    expect(packages.match(/^Package: /gm)!.length).toBe(3); // hello, cowsay (all), fortunes-min (all)
    expect(packages).toContain("Filename: pool/main/f/fortune-mod/fortunes-min_1.99.1-7.3_all.deb\n");
    expect(packages).toContain(`SHA256: ${FIXTURE_DEBS.hello.sha256}\n`);
  }, TIMEOUT);

  aptTest("upload errors: 401 without credentials, 400 for a non-.deb or a bad suite, 409 for the same name with other bytes", async () => {
    const anon = await curl(["--upload-file", fixtureDeb("tree"), `${repo()}/`]);
    expect(anon.status).toBe(401);
    const dir = await tmpDataDir("apt-hosted-bad-");
    await writeFile(join(dir, "junk.deb"), "this is not an ar archive\n");
    const junk = await curl(["-u", `admin:${PW}`, "--upload-file", join(dir, "junk.deb"), `${repo()}/`]);
    expect(junk.status).toBe(400);
    expect(junk.out).toContain("not a valid Debian package");
    const badSuite = await curl(["-u", `admin:${PW}`, "--upload-file", fixtureDeb("tree"), `${repo()}/x.deb?distribution=..%2Fetc`]);
    expect(badSuite.status).toBe(400);
    // same pool name, other bytes: hello's .deb with a changed data byte (control still valid)
    const b = await Bun.file(fixtureDeb("hello")).bytes();
    b[b.length - 10] ^= 0xff;
    await writeFile(join(dir, "hello.deb"), b);
    const conflict = await curl(["-u", `admin:${PW}`, "--upload-file", join(dir, "hello.deb"), `${repo()}/`]);
    expect(conflict.status).toBe(409);
    expect(conflict.out).toContain("already exists with different contents");
    const get = await fetch(`${repo()}/${FIXTURE_DEBS.hello.path}`);
    expect(await sha256File(fixtureDeb("hello"))).toBe(new Bun.CryptoHasher("sha256").update(new Uint8Array(await get.arrayBuffer())).digest("hex"));
    const missing = await fetch(`${repo()}/dists/stable/main/binary-amd64/Nope`);
    expect(missing.status).toBe(404);
    expect(await missing.text()).toStartWith("404 ");
  }, TIMEOUT);

  aptTest("concurrent uploads to one suite: every package ends up in its Packages", async () => {
    const names = ["hello", "sl", "tree", "cowsay", "fortunes-min"] as const;
    const rs = await Promise.all(names.map((n) => curl(["-u", `admin:${PW}`, "--upload-file", fixtureDeb(n), `${repo()}/upload/parallel/main/`])));
    for (const r of rs) expect(r.status).toBe(201);
    const packages = await (await fetch(`${repo()}/dists/parallel/main/binary-amd64/Packages`)).text();
    expect([...packages.match(/^Package: .*$/gm)!].sort()).toEqual(names.map((n) => `Package: ${n}`).sort());
    const c = await aptClient(`deb [signed-by=${keyring}] ${repo()} parallel main\n`);
    expect((await c.aptGet(["update"])).code).toBe(0);
    const d = await aptDownload(c, ...names);
    expect(d.code).toBe(0);
    expect(d.sha256).toEqual(expectedSha256(...names));
  }, TIMEOUT);

  aptTest("a new upload is a new generation; earlier by-hash indexes stay published for clients holding the older Release", async () => {
    const before = parseRelease(await (await fetch(`${repo()}/dists/stable/Release`)).text());
    const oldGz = before.files.get("main/binary-amd64/Packages.gz")!.hashes.SHA256!;
    const up = await curl(["-u", `admin:${PW}`, "--upload-file", fixtureDeb("tree"), `${repo()}/`]);
    expect(up.status).toBe(201);
    const after = parseRelease(await (await fetch(`${repo()}/dists/stable/Release`)).text());
    const newGz = after.files.get("main/binary-amd64/Packages.gz")!.hashes.SHA256!;
    expect(newGz).not.toBe(oldGz);
    expect((await fetch(`${repo()}/dists/stable/main/binary-amd64/by-hash/SHA256/${oldGz}`)).status).toBe(200);
    expect((await fetch(`${repo()}/dists/stable/main/binary-amd64/by-hash/SHA256/${newGz}`)).status).toBe(200);
    const c = await aptClient(`deb [signed-by=${keyring}] ${repo()} stable main\n`);
    expect((await c.aptGet(["update"])).code).toBe(0);
    const d = await aptDownload(c, "tree");
    expect(d.code).toBe(0);
    expect(d.sha256).toEqual(expectedSha256("tree"));
  }, TIMEOUT);

  aptTest("two vaults on one data directory uploading at once: the suite's last Release lists every package (reconciled)", async () => {
    const cfg: VaultConfig = {
      auth: { admin: { user: "admin", password: PW } },
      repositories: [{ name: "shared", format: "apt", type: "hosted", signing: { key: key.secretArmored }, architectures: ["amd64"] }],
    };
    const a = await startVault({ config: structuredClone(cfg) });
    const b = await startVault({ config: structuredClone(cfg), dataDir: a.dataDir });
    try {
      const names = ["hello", "sl", "tree", "cowsay", "fortunes-min"] as const;
      const rs = await Promise.all(names.map((n, i) => curl(["-u", `admin:${PW}`, "--upload-file", fixtureDeb(n), `${(i % 2 ? a : b).url}/shared/`])));
      for (const r of rs) expect(r.status).toBe(201);
      for (const v of [a, b]) {
        const c = await aptClient(`deb [signed-by=${key.keyring}] ${v.url}/shared stable main\n`);
        const u = await c.aptGet(["update"]);
        expect(u.code).toBe(0);
        const d = await aptDownload(c, ...names);
        expect(d.code).toBe(0);
        expect(d.sha256).toEqual(expectedSha256(...names));
      }
    } finally {
      await b.stop();
      await a.stop();
    }
  }, TIMEOUT);
});

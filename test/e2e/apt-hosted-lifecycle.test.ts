/**
 * e2e: the life of packages in an apt hosted repository after upload, with the real `apt-get`. DELETE of a pool file
 * (permissions, every suite listing it regenerated, audited, 404 afterwards) and `validForSeconds`: a Release past
 * its Valid-Until is signed again before it is answered, so apt (which refuses expired Releases, shown with the old
 * InRelease served from a plain file server) keeps updating.
 *
 * Under CI=true a missing apt-get/gpg/gpgv/curl fails the tests; elsewhere they are skipped with the reason printed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { dirname, join } from "node:path";
import { mkdir, writeFile } from "node:fs/promises";
import { Database } from "bun:sqlite";
import { APT_TOOLS, FIXTURE_DEBS, aptClient, aptDownload, curl, expectedSha256, fetchKeyring, fixtureDeb, makeKey, run, type TestKey } from "../helpers/apt.ts";
import { requireTools } from "../helpers/registry.ts";
import { startUpstream } from "../helpers/upstream.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { openDb } from "../../core/db/index.ts";
import { createAuthCore } from "../../core/auth/index.ts";
import { silentLogger } from "../../core/log.ts";
import { fieldValue } from "../../plugins/apt/deb822.ts";
import { parseRelease } from "../../plugins/apt/release.ts";

const HAVE = requireTools(APT_TOOLS);
const aptTest = HAVE ? test : test.skip;
const TIMEOUT = 180_000;
const PW = "s3cret-apt-life";
/** Valid-Until of the short-lived repository, seconds. */
const VALID_FOR = 3;

/** A Release field holding a date, as epoch ms. */
const dateField = (release: string, name: string) => Date.parse(fieldValue(parseRelease(release).fields, name)!.replace(/UTC$/, "GMT"));

describe("apt hosted repository: DELETE of pool files and Valid-Until", () => {
  let key: TestKey;
  let vault: StartedVault;
  let keyring: string;
  const repo = () => `${vault.url}/apt-local`;

  beforeAll(async () => {
    if (!HAVE) return;
    key = await makeKey("Vault Lifecycle Test <life@example.invalid>");
    vault = await startVault({
      config: {
        auth: { admin: { user: "admin", password: PW } },
        repositories: [
          { name: "apt-local", format: "apt", type: "hosted", signing: { key: key.secretArmored }, architectures: ["amd64"] },
          { name: "short", format: "apt", type: "hosted", signing: { key: key.secretArmored }, architectures: ["amd64"], validForSeconds: VALID_FOR },
        ],
      },
    });
    const db = openDb(join(vault.dataDir, "vault.db"));
    try {
      await createAuthCore({ db: db.db, log: silentLogger }).addUser({ name: "writer", password: PW, grants: [{ repository: "apt-local", actions: "write" }] });
    } finally {
      db.close();
    }
    keyring = await fetchKeyring(repo(), await tmpDataDir("apt-life-keys-"));
  });
  afterAll(async () => {
    await vault?.stop();
  });

  aptTest("DELETE removes a package from every suite listing it, in one new generation each; apt no longer offers it", async () => {
    for (const [p, suite] of [["hello", "stable"], ["hello", "testing"], ["tree", "stable"]] as const) {
      const r = await curl(["-u", `writer:${PW}`, "--upload-file", fixtureDeb(p), `${repo()}/upload/${suite}/main/`]);
      expect(r.status).toBe(201);
    }
    const c = await aptClient(`deb [signed-by=${keyring}] ${repo()} stable main\ndeb [signed-by=${keyring}] ${repo()} testing main\n`);
    expect((await c.aptGet(["update"])).code).toBe(0);
    expect((await aptDownload(c, "hello")).sha256).toEqual(expectedSha256("hello"));
    const before = await (await fetch(`${repo()}/dists/stable/Release`)).text();

    const url = `${repo()}/${FIXTURE_DEBS.hello.path}`;
    expect((await curl(["-X", "DELETE", url])).status).toBe(401);
    const denied = await curl(["-u", `writer:${PW}`, "-X", "DELETE", url]);
    expect(denied.status).toBe(403);
    const del = await curl(["-u", `admin:${PW}`, "-X", "DELETE", url]);
    expect(del.status).toBe(200);
    expect(del.out).toBe(`deleted ${FIXTURE_DEBS.hello.path} from stable/main, testing/main`);

    expect((await fetch(url)).status).toBe(404);
    for (const suite of ["stable", "testing"]) {
      const packages = await (await fetch(`${repo()}/dists/${suite}/main/binary-amd64/Packages`)).text();
      expect(packages).not.toContain("Package: hello\n");
      // the Release lists exactly the indexes served now
      const rel = parseRelease(await (await fetch(`${repo()}/dists/${suite}/Release`)).text());
      expect(rel.files.get("main/binary-amd64/Packages")!.hashes.SHA256).toBe(new Bun.CryptoHasher("sha256").update(packages).digest("hex"));
    }
    expect(await (await fetch(`${repo()}/dists/stable/main/binary-amd64/Packages`)).text()).toContain("Package: tree\n");
    expect(await (await fetch(`${repo()}/dists/stable/Release`)).text()).not.toBe(before);

    const u = await c.aptGet(["update"]);
    expect(u.code).toBe(0);
    expect(u.out).not.toMatch(/Hash Sum mismatch|W: /);
    const gone = await c.aptGet(["download", "hello"]);
    expect(gone.code).not.toBe(0);
    expect(gone.out).toMatch(/Unable to locate package hello|has no candidate|No packages found/);
    expect((await aptDownload(c, "tree")).sha256).toEqual(expectedSha256("tree"));

    const db = new Database(join(vault.dataDir, "vault.db"), { readonly: true });
    try {
      const row = db.query("SELECT actor, repository, detail FROM audit_log WHERE action = 'apt.delete'").get() as { actor: string; repository: string; detail: string };
      expect(row.actor).toBe("admin");
      expect(row.repository).toBe("apt-local");
      expect(JSON.parse(row.detail)).toMatchObject({ suites: ["stable", "testing"], package: "hello", version: "2.10-3", architecture: "amd64", sha256: FIXTURE_DEBS.hello.sha256 });
    } finally {
      db.close();
    }
  }, TIMEOUT);

  aptTest("DELETE errors: 404 for a file no suite lists, 405 for index paths; the package can be uploaded again", async () => {
    const again = await curl(["-u", `admin:${PW}`, "-X", "DELETE", `${repo()}/${FIXTURE_DEBS.hello.path}`]);
    expect(again.status).toBe(404);
    expect(again.out).toStartWith("404 ");
    expect((await curl(["-u", `admin:${PW}`, "-X", "DELETE", `${repo()}/pool/main/n/nope/nope_1.0_amd64.deb`])).status).toBe(404);
    const idx = await curl(["-u", `admin:${PW}`, "-X", "DELETE", `${repo()}/dists/stable/Release`]);
    expect(idx.status).toBe(405);
    expect(idx.out).toContain("only pool files can be deleted");
    const up = await curl(["-u", `admin:${PW}`, "--upload-file", fixtureDeb("hello"), `${repo()}/`]);
    expect(up.status).toBe(201);
    expect(await (await fetch(`${repo()}/dists/stable/main/binary-amd64/Packages`)).text()).toContain("Package: hello\n");
  }, TIMEOUT);

  aptTest("validForSeconds: the Release carries Valid-Until; past it, apt-get update (Check-Valid-Until) gets a newly signed one", async () => {
    const short = `${vault.url}/short`;
    expect((await curl(["-u", `admin:${PW}`, "--upload-file", fixtureDeb("sl"), `${short}/`])).status).toBe(201);
    const first = await (await fetch(`${short}/dists/stable/InRelease`)).text();
    const date1 = dateField(first, "Date");
    const until1 = dateField(first, "Valid-Until");
    expect(until1 - date1).toBe(VALID_FOR * 1000);
    const checked = ["Acquire::Check-Valid-Until=true"];
    const c = await aptClient(`deb [signed-by=${keyring}] ${short} stable main\n`);
    expect((await c.aptGet(["update"], { extra: checked })).code).toBe(0);

    // the old generation's files, served as they are by a plain file server: apt refuses them once expired
    const root = await tmpDataDir("apt-life-expired-");
    const rel = parseRelease(first);
    for (const [path, f] of rel.files) {
      const bytes = new Uint8Array(await (await fetch(`${short}/dists/stable/${dirname(path)}/by-hash/SHA256/${f.hashes.SHA256}`)).arrayBuffer());
      await mkdir(join(root, "dists/stable", dirname(path), "by-hash/SHA256"), { recursive: true });
      await writeFile(join(root, "dists/stable", path), bytes);
      await writeFile(join(root, "dists/stable", dirname(path), "by-hash/SHA256", f.hashes.SHA256!), bytes);
    }
    await writeFile(join(root, "dists/stable/InRelease"), first);
    const files = await startUpstream({ root });
    try {
      // Valid-Until has one-second resolution: wait until it has passed
      await Bun.sleep(Math.max(0, until1 + 1000 - Date.now()));
      const stale = await aptClient(`deb [signed-by=${keyring}] ${files.url} stable main\n`);
      const refused = await stale.aptGet(["update"], { extra: checked });
      expect(refused.out).toMatch(/is expired/);

      const u = await c.aptGet(["update"], { extra: checked });
      expect(u.out).not.toMatch(/expired|W: /);
      expect(u.code).toBe(0);
      expect((await aptDownload(c, "sl")).sha256).toEqual(expectedSha256("sl"));
      const second = await (await fetch(`${short}/dists/stable/InRelease`)).text();
      expect(dateField(second, "Date")).toBeGreaterThan(date1);
      expect(dateField(second, "Valid-Until")).toBeGreaterThan(Date.now());
      // same packages, newly signed: the indexes are the same bytes
      expect(parseRelease(second).files.get("main/binary-amd64/Packages.gz")).toEqual(rel.files.get("main/binary-amd64/Packages.gz")!);
      const dir = await tmpDataDir("apt-life-gpgv-");
      await writeFile(join(dir, "InRelease"), second);
      expect((await run(["gpgv", "--keyring", keyring, join(dir, "InRelease")])).code).toBe(0);
    } finally {
      await files.stop();
    }
  }, TIMEOUT);
});

/**
 * e2e: an apt group of a hosted repository (.debs uploaded with curl) and a proxy of a loopback archive (built with
 * apt-ftparchive from ../shared/fixtures/apt, signed with a throwaway key), signed with the group's own key. The real
 * `apt-get` updates and downloads packages of both members through the group with the signature checked against the
 * group's public.gpg; first member wins for a package both have; an upload and a deletion (through the group's
 * writeTo) and an upstream change show after the next update; pool files are answered by the member that lists them.
 *
 * Under CI=true a missing apt-get/gpg/gpgv/apt-ftparchive/curl fails the tests; elsewhere they are skipped with the reason printed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFile } from "node:fs/promises";
import { Database } from "bun:sqlite";
import { APT_TOOLS, FIXTURE_DEBS, aptClient, aptDownload, curl, expectedSha256, fetchKeyring, fixtureDeb, makeKey, run, writeArchive, type AptClient, type TestKey } from "../helpers/apt.ts";
import { requireTools } from "../helpers/registry.ts";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { parseRelease, signedText } from "../../plugins/apt/release.ts";
import { fieldValue, parseDeb822 } from "../../plugins/apt/deb822.ts";

const HAVE = requireTools(APT_TOOLS);
const aptTest = HAVE ? test : test.skip;
const TIMEOUT = 180_000;
const PW = "s3cret-apt-group";

describe("apt group of a hosted and a proxy repository, signed with the group's key", () => {
  let upstreamKey: TestKey;
  let hostedKey: TestKey;
  let groupKey: TestKey;
  let root: string;
  let up: TestUpstream;
  let vault: StartedVault;
  let keys: string;
  let groupKeyring: string;
  let client: AptClient;
  const group = () => `${vault.url}/apt-all`;
  /** Upstream GETs of a pool file (the vault sends `+` as %2B, as APT does). */
  const poolGets = (p: string) => up.count((r) => r.method === "GET" && decodeURIComponent(r.path) === `/debian/${p}`);

  beforeAll(async () => {
    if (!HAVE) return;
    [upstreamKey, hostedKey, groupKey] = await Promise.all([
      makeKey("Upstream Archive <upstream@example.invalid>"),
      makeKey("Hosted Repo <hosted@example.invalid>"),
      makeKey("Group Repo <group@example.invalid>"),
    ]);
    root = await tmpDataDir("apt-group-upstream-");
    await writeArchive(join(root, "debian"), "stable", ["hello", "sl", "tree"], upstreamKey, { date: new Date(Date.now() - 120_000) });
    up = await startUpstream({ root });
    vault = await startVault({
      config: {
        // merges run in the worker pool, as those of a big archive would
        pool: { offloadThresholdBytes: 512 },
        auth: { admin: { user: "admin", password: PW } },
        repositories: [
          { name: "apt-local", format: "apt", type: "hosted", signing: { key: hostedKey.secretArmored }, architectures: ["amd64"] },
          { name: "debian", format: "apt", type: "proxy", upstream: `${up.url}/debian/` },
          {
            name: "apt-all",
            format: "apt",
            type: "group",
            members: ["apt-local", "debian"],
            writeTo: "apt-local",
            signing: { key: groupKey.secretArmored },
            origin: "Example Group",
            validForSeconds: 3600,
          },
          { name: "apt-ro", format: "apt", type: "group", members: ["debian"] },
        ],
      },
    });
    // hello is in both members: the hosted one comes first
    for (const p of ["hello", "cowsay"] as const) {
      const r = await curl(["-u", `admin:${PW}`, "--upload-file", fixtureDeb(p), `${vault.url}/apt-local/`]);
      if (r.status !== 201) throw new Error(`upload of ${p} failed: ${r.status} ${r.out}`);
    }
    keys = await tmpDataDir("apt-group-keys-");
    groupKeyring = await fetchKeyring(group(), keys);
  });
  afterAll(async () => {
    await vault?.stop();
    await up?.stop();
  });

  aptTest("apt-get update and download packages of both members through the group; the hosted member wins for hello", async () => {
    client = await aptClient(`deb [signed-by=${groupKeyring}] ${group()} stable main\n`);
    const u = await client.aptGet(["update"]);
    expect(u.out).not.toMatch(/NO_PUBKEY|not signed|Hash Sum mismatch|W: /);
    expect(u.code).toBe(0);
    const d = await aptDownload(client, "hello", "cowsay", "sl", "tree");
    expect(d.code).toBe(0);
    expect(d.sha256).toEqual(expectedSha256("hello", "cowsay", "sl", "tree"));
    // pool files came from the member whose stanza won: hello from the hosted member, sl and tree from upstream
    expect(poolGets(FIXTURE_DEBS.hello.path)).toBe(0);
    expect(poolGets(FIXTURE_DEBS.sl.path)).toBe(1);
    expect(poolGets(FIXTURE_DEBS.tree.path)).toBe(1);
    // one stanza per package, hello's being the hosted member's own
    const packages = await (await fetch(`${group()}/dists/stable/main/binary-amd64/Packages`)).text();
    expect(packages.match(/^Package: .*$/gm)!.sort()).toEqual(["Package: cowsay", "Package: hello", "Package: sl", "Package: tree"]);
    const hosted = parseDeb822(await (await fetch(`${vault.url}/apt-local/dists/stable/main/binary-amd64/Packages`)).text());
    const helloStanza = parseDeb822(packages).find((p) => fieldValue(p, "Package") === "hello")!;
    expect(helloStanza).toEqual(hosted.find((p) => fieldValue(p, "Package") === "hello")!);
  }, TIMEOUT);

  aptTest("the group's Release is its own: signed by the group's key (gpgv), Valid-Until set, listing only what it serves", async () => {
    const dir = await tmpDataDir("apt-group-gpgv-");
    const inRelease = await (await fetch(`${group()}/dists/stable/InRelease`)).text();
    const release = await (await fetch(`${group()}/dists/stable/Release`)).text();
    await writeFile(join(dir, "InRelease"), inRelease);
    await writeFile(join(dir, "Release"), release);
    await writeFile(join(dir, "Release.gpg"), await (await fetch(`${group()}/dists/stable/Release.gpg`)).text());
    expect((await run(["gpgv", "--keyring", groupKeyring, join(dir, "InRelease")])).code).toBe(0);
    expect((await run(["gpgv", "--keyring", groupKeyring, join(dir, "Release.gpg"), join(dir, "Release")])).code).toBe(0);
    expect((await run(["gpgv", "--keyring", hostedKey.keyring, join(dir, "InRelease")])).code).not.toBe(0);
    expect(signedText(inRelease)).toBe(release);
    const r = parseRelease(release);
    expect(fieldValue(r.fields, "Origin")).toBe("Example Group");
    expect(fieldValue(r.fields, "Suite")).toBe("stable");
    const date = Date.parse(fieldValue(r.fields, "Date")!.replace(/UTC$/, "GMT"));
    expect(Date.parse(fieldValue(r.fields, "Valid-Until")!.replace(/UTC$/, "GMT")) - date).toBe(3600_000);
    expect([...r.files.keys()].sort()).toEqual(["main/binary-amd64/Packages", "main/binary-amd64/Packages.gz"]);
    for (const [path, f] of r.files) {
      const byName = new Uint8Array(await (await fetch(`${group()}/dists/stable/${path}`)).arrayBuffer());
      expect(new Bun.CryptoHasher("sha256").update(byName).digest("hex")).toBe(f.hashes.SHA256!);
      const bh = await fetch(`${group()}/dists/stable/main/binary-amd64/by-hash/SHA256/${f.hashes.SHA256}`);
      expect(bh.status).toBe(200);
      await bh.arrayBuffer();
    }
    // a client trusting the hosted member's key instead refuses the group
    const other = await aptClient(`deb [signed-by=${hostedKey.keyring}] ${group()} stable main\n`);
    expect((await other.aptGet(["update"])).out).toMatch(/NO_PUBKEY|not signed|signature/i);
  }, TIMEOUT);

  aptTest("an upload through the group's writeTo lands in the hosted member and shows in the group after apt-get update", async () => {
    expect((await client.aptGet(["download", "fortunes-min"])).code).not.toBe(0);
    const anon = await curl(["--upload-file", fixtureDeb("fortunes-min"), `${group()}/`]);
    expect(anon.status).toBe(401);
    const r = await curl(["-u", `admin:${PW}`, "--upload-file", fixtureDeb("fortunes-min"), `${group()}/`]);
    expect(r.status).toBe(201);
    expect(r.out).toContain("published pool/main/f/fortune-mod/fortunes-min_1.99.1-7.3_all.deb in stable/main");
    expect((await fetch(`${vault.url}/apt-local/${FIXTURE_DEBS["fortunes-min"].path}`)).status).toBe(200);
    const u = await client.aptGet(["update"]);
    expect(u.code).toBe(0);
    expect(u.out).not.toMatch(/Hash Sum mismatch|W: /);
    const d = await aptDownload(client, "fortunes-min");
    expect(d.code).toBe(0);
    expect(d.sha256).toEqual(expectedSha256("fortunes-min"));
    const db = new Database(join(vault.dataDir, "vault.db"), { readonly: true });
    try {
      const row = db.query("SELECT actor, repository, detail FROM audit_log WHERE action = 'apt.upload' AND path = ?").get(FIXTURE_DEBS["fortunes-min"].path) as { actor: string; repository: string; detail: string };
      expect(row.actor).toBe("admin");
      expect(row.repository).toBe("apt-local");
      expect(JSON.parse(row.detail)).toMatchObject({ via: "apt-all", package: "fortunes-min" });
    } finally {
      db.close();
    }
  }, TIMEOUT);

  aptTest("an upstream change is merged after apt-get update: a package upstream dropped is gone; its pool file is 404 in the group", async () => {
    const before = parseRelease(await (await fetch(`${group()}/dists/stable/Release`)).text()).files.get("main/binary-amd64/Packages.gz")!.hashes.SHA256!;
    await writeArchive(join(root, "debian"), "stable", ["hello", "tree"], upstreamKey, { date: new Date(Date.now() - 60_000) });
    const u = await client.aptGet(["update"]);
    expect(u.code).toBe(0);
    expect(u.out).not.toMatch(/Hash Sum mismatch|W: /);
    expect((await client.aptGet(["download", "sl"])).code).not.toBe(0);
    const d = await aptDownload(client, "tree", "hello", "fortunes-min");
    expect(d.code).toBe(0);
    expect(d.sha256).toEqual(expectedSha256("tree", "hello", "fortunes-min"));
    const sl = await fetch(`${group()}/${FIXTURE_DEBS.sl.path}`);
    expect(sl.status).toBe(404);
    expect(await sl.text()).toContain("not listed by any suite of this group");
    // the previous generation's by-hash index stays for clients holding the previous Release
    expect((await fetch(`${group()}/dists/stable/main/binary-amd64/by-hash/SHA256/${before}`)).status).toBe(200);
  }, TIMEOUT);

  aptTest("DELETE through the group's writeTo removes the package from the hosted member; the group follows after apt-get update", async () => {
    const url = `${group()}/${FIXTURE_DEBS["fortunes-min"].path}`;
    expect((await curl(["-X", "DELETE", url])).status).toBe(401);
    const del = await curl(["-u", `admin:${PW}`, "-X", "DELETE", url]);
    expect(del.status).toBe(200);
    expect(del.out).toBe(`deleted ${FIXTURE_DEBS["fortunes-min"].path} from stable/main`);
    expect((await fetch(`${vault.url}/apt-local/${FIXTURE_DEBS["fortunes-min"].path}`)).status).toBe(404);
    expect((await client.aptGet(["update"])).code).toBe(0);
    expect((await client.aptGet(["download", "fortunes-min"])).code).not.toBe(0);
    expect(await (await fetch(`${group()}/dists/stable/main/binary-amd64/Packages`)).text()).not.toContain("Package: fortunes-min\n");
    expect((await fetch(url)).status).toBe(404);
  }, TIMEOUT);

  aptTest("errors: unknown suite and index 404, writes to a group without writeTo 405, other methods 405", async () => {
    const suite = await fetch(`${group()}/dists/nosuch/InRelease`);
    expect(suite.status).toBe(404);
    expect(await suite.text()).toStartWith("404 ");
    expect((await fetch(`${group()}/dists/stable/main/binary-amd64/Nope`)).status).toBe(404);
    expect((await fetch(`${group()}/dists/stable/main/binary-amd64/by-hash/SHA256/${"0".repeat(64)}`)).status).toBe(404);
    expect((await fetch(`${group()}/pool/main/n/nope/nope_1.0_amd64.deb`)).status).toBe(404);
    const ro = await curl(["-u", `admin:${PW}`, "--upload-file", fixtureDeb("tree"), `${vault.url}/apt-ro/`]);
    expect(ro.status).toBe(405);
    expect(ro.out).toContain("no writeTo member");
    const patch = await fetch(`${group()}/dists/stable/InRelease`, { method: "PATCH" });
    expect(patch.status).toBe(405);
    // the group without a key publishes an unsigned Release only, and has no public key
    const unsigned = await fetch(`${vault.url}/apt-ro/dists/stable/Release`);
    expect(unsigned.status).toBe(200);
    expect(parseRelease(await unsigned.text()).files.has("main/binary-amd64/Packages.gz")).toBe(true);
    expect((await fetch(`${vault.url}/apt-ro/dists/stable/InRelease`)).status).toBe(404);
    expect((await fetch(`${vault.url}/apt-ro/public.gpg`)).status).toBe(404);
  }, TIMEOUT);
});

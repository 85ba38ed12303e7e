// podman (a docker-compatible client) against the vault's /v2/: pull through the proxy from a real docker-registry
// filled from the fixture layouts, login through the token flow, push to a hosted repository, remove the local image
// and pull it back. podman runs with private storage (vfs) under a temp dir and a permissive policy.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startVault, type StartedVault } from "../helpers/vault.ts";
import { requireTools, startRegistry, type CmdResult, type TestRegistry } from "../helpers/registry.ts";
import { tmpDataDir } from "../helpers/tmp.ts";
import { addUser, BUSYBOX_MANIFEST, fillUpstream } from "./oci-env.ts";

const HAVE = requireTools(["docker-registry", "podman"]);
const PW = "podman-pw-1";

describe.skipIf(!HAVE)("podman against the vault", () => {
  let reg: TestRegistry;
  let vault: StartedVault;
  let host: string;
  let podmanArgs: string[];
  let env: Record<string, string>;

  beforeAll(async () => {
    reg = await startRegistry();
    await fillUpstream(reg);
    vault = await startVault({
      config: {
        repositories: [
          { name: "hub", format: "oci", type: "proxy", upstream: reg.url, libraryPrefix: true, root: true },
          { name: "containers", format: "oci", type: "hosted", anonymousRead: false },
        ],
      },
    });
    host = `127.0.0.1:${vault.port}`;
    await addUser(vault.dataDir, "pusher", PW, [{ repository: "containers", actions: "read,write" }]);
    const dir = await tmpDataDir("podman-");
    const policy = join(dir, "policy.json");
    await writeFile(policy, JSON.stringify({ default: [{ type: "insecureAcceptAnything" }] }));
    const registries = join(dir, "registries.conf");
    await writeFile(registries, 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n');
    await writeFile(join(dir, "auth.json"), "{}");
    podmanArgs = ["--root", join(dir, "root"), "--runroot", join(dir, "run"), "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"];
    env = {
      ...(process.env as Record<string, string>),
      HOME: dir,
      XDG_RUNTIME_DIR: join(dir, "xdg"),
      CONTAINERS_REGISTRIES_CONF: registries,
      CONTAINERS_POLICY_JSON: policy,
      REGISTRY_AUTH_FILE: join(dir, "auth.json"),
    };
  }, 120_000);

  afterAll(async () => {
    await vault?.stop();
    await reg?.stop();
  });

  async function podman(args: string[], timeoutMs = 120_000): Promise<CmdResult> {
    const proc = Bun.spawn(["podman", ...podmanArgs, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe", env });
    const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    clearTimeout(timer);
    return { code, stdout, stderr };
  }
  async function must(args: string[]): Promise<string> {
    const r = await podman(args);
    if (r.code !== 0) throw new Error(`podman ${args.join(" ")} failed (${r.code}):\n${r.stderr}`);
    return r.stdout;
  }

  test("podman pull through the proxy (root addressing, library/ added): the image keeps its digest", async () => {
    await must(["pull", "--tls-verify=false", `${host}/busybox:1.35.0`]);
    const digest = (await must(["image", "inspect", "--format", "{{.Digest}}", `${host}/busybox:1.35.0`])).trim();
    expect(digest).toBe(BUSYBOX_MANIFEST);
    expect(reg.count((r) => r.method === "GET" && r.uri === `/v2/library/busybox/manifests/1.35.0`)).toBeGreaterThanOrEqual(1);
  }, 120_000);

  test("podman login (token flow); a wrong password is refused", async () => {
    const bad = await podman(["login", "--tls-verify=false", "-u", "pusher", "-p", "wrong", host]);
    expect(bad.code).not.toBe(0);
    expect((await must(["login", "--tls-verify=false", "-u", "pusher", "-p", PW, host])).toLowerCase()).toContain("login succeeded");
  }, 60_000);

  test("podman push to the hosted repository, remove the local copy, pull it back", async () => {
    const mine = `${host}/containers/tools/busybox:mine`;
    await must(["tag", `${host}/busybox:1.35.0`, mine]);
    // podman re-encodes what it pushes (its own layer compression): the digest to expect is the one it reports
    const digestFile = join(env.HOME, "pushed.digest");
    await must(["push", "--tls-verify=false", "--digestfile", digestFile, mine]);
    const pushed = (await Bun.file(digestFile).text()).trim();
    expect(pushed).toMatch(/^sha256:[0-9a-f]{64}$/);
    // the vault serves the pushed manifest to an authorised client (and refuses an anonymous one)
    const anon = await fetch(`http://${host}/v2/containers/tools/busybox/manifests/mine`, { method: "HEAD" });
    expect(anon.status).toBe(401);
    // no local image left at all: the pull must fetch every blob from the hosted repository
    await must(["rmi", "--all", "--force"]);
    expect((await must(["images", "--quiet"])).trim()).toBe("");
    await must(["pull", "--tls-verify=false", mine]);
    expect((await must(["image", "inspect", "--format", "{{.Digest}}", mine])).trim()).toBe(pushed);
    const layers = (await must(["image", "inspect", "--format", "{{len .RootFS.Layers}}", mine])).trim();
    expect(layers).toBe("1");
    const tags = await must(["search", "--tls-verify=false", "--list-tags", `${host}/containers/tools/busybox`]);
    expect(tags).toContain("mine");
  }, 120_000);
});

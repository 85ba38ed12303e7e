/**
 * `vault conda <mirror|pull-cache|push-cache>`: the conda → OCI mirror (plugins/conda/mirror/mirror.ts) on the command
 * line, with conda-oci-mirror's flags (specs/conda.md §6).
 */
import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { OciClient, parseRegistry } from "./oci-client.ts";
import { mirror, pullCache, pushCache, type MirrorOptions } from "./mirror.ts";

/** Subdirs used when none is given (conda-oci-mirror's defaults). */
export const DEFAULT_SUBDIRS = ["linux-64", "osx-64", "osx-arm64", "win-64", "linux-aarch64", "linux-ppc64le", "noarch"];

const USAGE = `usage: vault conda <mirror|pull-cache|push-cache> [options]

  mirror       copy packages (and each subdir's repodata.json) from a conda channel into an OCI registry
  pull-cache   pull each package's newest build from the registry into the local cache
  push-cache   push local cache packages the registry's repodata.json does not list (all with --all)

  -c, --channel NAME|URL   source channel: a name on conda.anaconda.org, or a channel URL (default conda-forge)
      --channel-name NAME  name used in OCI paths and the cache (default: the channel name, or the URL's last segment)
  -s, --subdir S           repeatable (default: ${DEFAULT_SUBDIRS.join(", ")})
  -p, --package PATTERN    repeatable fnmatch pattern of package names (default: all)
      --registry REF       e.g. ghcr.io/myorg or http://127.0.0.1:8080/containers (http:// = insecure)
                           (default ghcr.io/channel-mirrors)
      --cache-dir DIR      local cache (default ./cache)
      --dry-run            download/stage only, push nothing
      --workers N          packages handled at once (default 4)
      --all, --push-all    push-cache: push every local package
      --timeout MS         accepted for compatibility (requests are bounded by their own timeouts)
      --quiet VALUE, --debug VALUE  accepted for compatibility
Credentials for the registry: ORAS_USER and ORAS_PASS (sent to its token endpoint); without them requests are
anonymous. Exit status: 0 when everything succeeded, 1 when a package failed, 2 on a usage error.`;

/**
 * CLI entry (called by core/cli/bin.ts with the arguments after `conda`).
 * @returns exit code: 0 ok, 1 a package or the registry failed, 2 usage error
 */
export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args;
  if (cmd === undefined || cmd === "--help" || cmd === "-h" || cmd === "help") {
    (cmd === undefined ? process.stderr : process.stdout).write(USAGE + "\n");
    return cmd === undefined ? 2 : 0;
  }
  if (cmd !== "mirror" && cmd !== "pull-cache" && cmd !== "push-cache") {
    process.stderr.write(`vault conda: unknown command ${JSON.stringify(cmd)}\n${USAGE}\n`);
    return 2;
  }
  let values;
  try {
    ({ values } = parseArgs({
      args: rest,
      allowPositionals: false,
      options: {
        channel: { type: "string", short: "c" },
        "channel-name": { type: "string" },
        subdir: { type: "string", short: "s", multiple: true },
        package: { type: "string", short: "p", multiple: true },
        registry: { type: "string" },
        "cache-dir": { type: "string" },
        "dry-run": { type: "boolean" },
        "no-dry-run": { type: "boolean" },
        workers: { type: "string" },
        all: { type: "boolean" },
        "push-all": { type: "boolean" },
        timeout: { type: "string" },
        quiet: { type: "string" },
        debug: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    process.stderr.write(`vault conda ${cmd}: ${e instanceof Error ? e.message : String(e)}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE + "\n");
    return 0;
  }
  const channel = values.channel ?? "conda-forge";
  const isUrl = /^https?:\/\//i.test(channel);
  const channelUrl = isUrl ? (channel.endsWith("/") ? channel : channel + "/") : `https://conda.anaconda.org/${channel}/`;
  const channelName = values["channel-name"] ?? (isUrl ? new URL(channelUrl).pathname.split("/").filter(Boolean).pop() : channel);
  if (!channelName || !/^[a-z0-9]+([._-][a-z0-9]+)*$/.test(channelName)) {
    process.stderr.write(`vault conda ${cmd}: give --channel-name (lower-case, usable in OCI repository names) for ${channel}\n`);
    return 2;
  }
  const workers = values.workers === undefined ? 4 : Number(values.workers);
  if (!Number.isInteger(workers) || workers < 1) {
    process.stderr.write(`vault conda ${cmd}: --workers must be a positive integer\n`);
    return 2;
  }
  let client: OciClient;
  try {
    const user = process.env.ORAS_USER;
    client = new OciClient(parseRegistry(values.registry ?? "ghcr.io/channel-mirrors"), user ? { username: user, password: process.env.ORAS_PASS ?? "" } : {});
    if (!user && cmd !== "pull-cache" && !values["dry-run"]) process.stderr.write("vault conda: ORAS_USER/ORAS_PASS not set: pushing without credentials\n");
  } catch (e) {
    process.stderr.write(`vault conda ${cmd}: --registry: ${e instanceof Error ? e.message : String(e)}\n`);
    return 2;
  }
  const o: MirrorOptions = {
    channelUrl,
    channel: channelName,
    subdirs: values.subdir?.length ? values.subdir : DEFAULT_SUBDIRS,
    packages: values.package ?? [],
    client,
    cacheDir: resolve(values["cache-dir"] ?? "./cache"),
    dryRun: values["dry-run"] === true && values["no-dry-run"] !== true,
    workers,
    pushAll: values.all === true || values["push-all"] === true,
  };
  try {
    const s = cmd === "mirror" ? await mirror(o) : cmd === "pull-cache" ? await pullCache(o) : await pushCache(o);
    return s.failed.length ? 1 : 0;
  } catch (e) {
    process.stderr.write(`vault conda ${cmd}: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

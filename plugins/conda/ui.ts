/**
 * The conda plugin's web UI hooks (core/plugin.ts `packageOf`, `clientSetup`; docs/plugins.md "Web UI hooks"): which
 * package and version a stored file is, and the conda / mamba / pixi snippets that use a channel. Pure: no I/O.
 */
import type { ClientSetup, PackageRef, PluginContext } from "../../core/plugin.ts";
import { parseCondaPath } from "./paths.ts";
import type { CondaRepoConfig } from "./service.ts";

/**
 * The package of a stored conda file: a package file (`[label/<label>/]<subdir>/<name>-<version>-<build>.conda|.tar.bz2`,
 * CEP-26) is package `name` at `version` (every build and both formats of one version are one version), shown as
 * `<subdir>/<file>`. Documents (repodata.json and its variants, shards, channeldata.json), the hosted channel's info
 * rows (`info/…`) and stored variants (`…#…`) are none (null).
 */
export function condaPackageOf(path: string): PackageRef | null {
  if (path.includes("#")) return null;
  const p = parseCondaPath(path);
  if (p?.kind !== "package") return null;
  return { name: p.file.name, version: p.file.version, file: `${p.prefix}${p.subdir}/${p.file.filename}` };
}

/** A match spec as one shell word: single-quoted when it holds more than `[A-Za-z0-9._=+-]` (`!` of an epoch, `*`). */
function shellWord(s: string): string {
  return /^[A-Za-z0-9._=+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * "How to configure your client" (core/plugin.ts `clientSetup`) for a conda channel at `ctx.baseUrl(req)/`: `conda
 * install` (`--override-channels` for proxies and groups, which stand in for whole channels; a hosted channel is added
 * in front of the user's others), `conda config --add channels` and its `.condarc`, `mamba install`, pixi (command and
 * `pixi.toml`), and a `curl` upload where uploads are taken (hosted, group with `writeTo`). On a package page the spec
 * is `<name>==<version>`.
 */
export function condaClientSetup(ctx: PluginContext<CondaRepoConfig>, o: { req: Request; package?: { name: string; version?: string } }): ClientSetup[] {
  const url = `${ctx.baseUrl(o.req)}/`;
  const spec = o.package ? shellWord(o.package.version ? `${o.package.name}==${o.package.version}` : o.package.name) : "<package>";
  const channel = ctx.repo.type === "hosted" ? `-c ${url}` : `--override-channels -c ${url}`;
  const out: ClientSetup[] = [
    { client: "conda", title: "Install with conda", code: `conda install ${channel} ${spec}` },
    { client: "conda config", title: "Use this channel for every install (adds it to ~/.condarc)", code: `conda config --add channels ${url}` },
    { client: ".condarc", title: "The same in .condarc (conda, mamba, micromamba)", code: `channels:\n  - ${url}` },
    { client: "mamba", title: "Install with mamba", code: `mamba install ${channel} ${spec}` },
    { client: "pixi", title: "Add the channel and the package to a pixi workspace", code: `pixi workspace channel add ${url}\npixi add ${spec}` },
    { client: "pixi.toml", title: "The channel in pixi.toml", code: `[workspace]\nchannels = ["${url}"]` },
  ];
  if (ctx.repo.type === "hosted" || (ctx.repo.type === "group" && ctx.config.writeTo))
    out.push({ client: "curl", title: "Upload a package (its subdir in the URL)", code: `curl -u <user> -T <file>.conda ${url}<subdir>/<file>.conda` });
  return out;
}

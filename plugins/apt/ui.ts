/**
 * The apt plugin's web UI hooks (core/plugin.ts `packageOf`, `clientSetup`; docs/plugins.md "Web UI hooks"): which
 * Debian package and version a stored file is, and the sources.list / deb822 snippets that point APT at a repository.
 * Pure: no I/O.
 */
import type { ClientSetup, PackageRef, PluginContext } from "../../core/plugin.ts";
import type { AptRepoConfig } from "./service.ts";
import { isValidVersion } from "./version.ts";

/** A binary package file as Debian names it (`<package>_<version without epoch>_<arch>.deb`, also `.udeb`, `.ddeb`). */
const BINARY = /^([a-z0-9][a-z0-9+.-]+)_([^_]+)_([a-z0-9][a-z0-9-]*)\.(?:deb|udeb|ddeb)$/;
/** Files of one source version: `<source>_<version>.dsc`, `.debian.tar.*`, `.diff.gz`. */
const SOURCE = /^([a-z0-9][a-z0-9+.-]+)_([^_]+?)\.(?:dsc|debian\.tar\.(?:gz|xz|bz2|lzma|zst)|diff\.gz)$/;
/** Upstream tarballs shared by every Debian revision of one upstream version (`.orig[-<component>].tar.*[.asc]`). */
const ORIG = /^([a-z0-9][a-z0-9+.-]+)_([^_]+?)\.orig(?:-[A-Za-z0-9][A-Za-z0-9-]*)?\.tar\.(?:gz|xz|bz2|lzma|zst)(?:\.asc)?$/;
/** The tarball of a native source package (`<source>_<version>.tar.*`). */
const NATIVE = /^([a-z0-9][a-z0-9+.-]+)_([^_]+?)\.tar\.(?:gz|xz|bz2|lzma|zst)$/;

/**
 * The package of a stored apt file (specs/apt.md §1): a binary package file is its package (`Package:`) at the version
 * of its name — Debian's version without the epoch, which pool file names leave out (`fortunes-min_1.99.1-7.3_all.deb`
 * of `1:1.99.1-7.3` is version `1.99.1-7.3`; a name holding `%3a`, stored decoded, keeps its epoch). Source package
 * files (`.dsc`, `.debian.tar.*`, `.diff.gz`, a native tarball) are their source package at their version; an
 * `.orig.tar.*` is a file of its source package without a version (every Debian revision of that upstream version
 * shares it). Anything under `dists/` (Release, Packages, by-hash), the plugin's own records (`-/…`), stored variants
 * (`…#<digest>`) and other files are none (null).
 */
export function aptPackageOf(path: string): PackageRef | null {
  if (path.includes("#") || path.startsWith("-/") || path.startsWith("dists/")) return null;
  const segs = path.split("/");
  if (segs.includes("by-hash")) return null;
  const file = segs[segs.length - 1];
  const o = ORIG.exec(file);
  if (o) return isValidVersion(o[2]) ? { name: o[1] } : null;
  const m = BINARY.exec(file) ?? SOURCE.exec(file) ?? NATIVE.exec(file);
  return m && isValidVersion(m[2]) ? { name: m[1], version: m[2] } : null;
}

/** Where the snippets put a repository's keyring on the client (APT's directory for locally added keys). */
const KEYRINGS = "/etc/apt/keyrings";

/** The suite and component a hosted repository (or a group's hosted `writeTo`/first hosted member) publishes by default. */
function suiteOf(ctx: PluginContext<AptRepoConfig>): { suite: string; component: string } {
  const own = (c: AptRepoConfig) => ({ suite: c.defaultDistribution ?? "stable", component: c.defaultComponent ?? "main" });
  if (ctx.repo.type === "hosted") return own(ctx.config);
  if (ctx.repo.type === "group") {
    const names = [ctx.config.writeTo, ...(ctx.config.members ?? [])].filter((n): n is string => typeof n === "string");
    for (const n of names) {
      const m = ctx.member(n);
      if (m?.repo.type === "hosted") return own(m.config as AptRepoConfig);
    }
  }
  return { suite: "<suite>", component: "main" };
}

/**
 * "How to configure your client" (core/plugin.ts `clientSetup`) for APT, built from `ctx.baseUrl(req)` (the archive
 * root):
 * - hosted and group: the repository's own key from `public.gpg` into `/etc/apt/keyrings/<name>.gpg`, then a one-line
 *   `sources.list` entry with `signed-by=` and the same source in deb822 form (`.sources`); without `signing` the
 *   repository publishes an unsigned Release, so the entry says `trusted=yes` instead;
 * - proxy: the upstream archive's own keyring (the proxy serves the upstream's signed Release files as they are): the
 *   file `upstreamKeyring` names when it is a system keyring (`/usr/share/keyrings/…`), else a copy of it (or of the
 *   upstream's keyring) in `/etc/apt/keyrings/`;
 * - `apt-get install <package>` on a package page; `curl --upload-file` where uploads are taken (hosted, group with
 *   `writeTo`).
 * Suites: a hosted repository's `defaultDistribution`/`defaultComponent` (a group's hosted member's), `<suite>` for proxies.
 */
export function aptClientSetup(ctx: PluginContext<AptRepoConfig>, o: { req: Request; package?: { name: string; version?: string } }): ClientSetup[] {
  const url = ctx.baseUrl(o.req);
  const name = ctx.repo.name;
  const { suite, component } = suiteOf(ctx);
  const file = `/etc/apt/sources.list.d/${name}`;
  let keyring: string | undefined;
  let fetchKey = "";
  if (ctx.repo.type === "proxy") {
    const k = ctx.config.upstreamKeyring;
    const base = k ? k.slice(k.lastIndexOf("/") + 1) : "upstream-archive-keyring.gpg";
    keyring = k?.startsWith("/usr/share/keyrings/") ? k : `${KEYRINGS}/${base}`;
    if (keyring !== k) fetchKey = `# the upstream archive's own keyring${k ? ` (the one upstreamKeyring names: ${base})` : ""}: the proxy serves its signed Release files as they are\nsudo install -D -m 0644 ${base} ${keyring}\n`;
  } else if (ctx.config.signing) {
    keyring = `${KEYRINGS}/${name}.gpg`;
    fetchKey = `sudo install -d -m 0755 ${KEYRINGS}\nsudo curl -fsSL ${url}/public.gpg -o ${keyring}\n`;
  }
  const option = keyring ? `signed-by=${keyring}` : "trusted=yes";
  const out: ClientSetup[] = [
    {
      client: "apt",
      title: keyring ? "Add this repository (sources.list, with its key)" : "Add this repository (sources.list; its Release is not signed)",
      code: `${fetchKey}echo "deb [${option}] ${url} ${suite} ${component}" | sudo tee ${file}.list\nsudo apt-get update`,
    },
    {
      client: "deb822",
      title: `The same source in deb822 form (${file}.sources)`,
      code: `Types: deb\nURIs: ${url}\nSuites: ${suite}\nComponents: ${component}\n${keyring ? `Signed-By: ${keyring}` : "Trusted: yes"}`,
    },
  ];
  if (o.package) out.push({ client: "apt-get", title: "Install the package", code: `sudo apt-get update\nsudo apt-get install ${o.package.name}` });
  if (ctx.repo.type === "hosted" || (ctx.repo.type === "group" && ctx.config.writeTo))
    out.push({ client: "curl", title: `Upload a .deb to ${suite}/${component}`, code: `curl -u <user> --upload-file <package>.deb ${url}/upload/${suite}/${component}/` });
  return out;
}

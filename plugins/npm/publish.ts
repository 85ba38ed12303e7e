/**
 * Writes to a hosted npm package (specs/npm.md §5): checking a publish body (`npm publish`: one version, its tarball as
 * a base64 attachment) and editing the package document (new version, deprecations, dist-tags, unpublished versions).
 * Pure (no core/ imports): runs inline or in the worker pool through the `npmPackument` task (task.ts). Problems with
 * the client's input come back as {@link WriteProblem} values, not exceptions, so they cross the thread boundary whole.
 *
 * The package document is a full packument whose `dist.tarball` values are repository-relative paths
 * (`<name>/-/<file>.tgz`, made absolute when rendered, documents.ts `renderHosted`), with `_rev`, `time` (`created`,
 * `modified`, one ISO date per version ever published — unpublished versions keep theirs, so their numbers are never
 * reused), `maintainers` and the latest version's descriptive fields at the top.
 */
import { createHash, randomUUID } from "node:crypto";
import semver from "semver";
import { isValidTagName } from "./names.ts";
import { distTagsOf, expectedDigests, isObject, parseDoc, encodeDoc, timeOf, versionsMap, type Json } from "./documents.ts";

/** Why a write is refused: the HTTP status npm gets and the message of its `{"error": …}` body. */
export interface WriteProblem {
  status: 400 | 403 | 404 | 409;
  message: string;
}

/** One published version as recorded beside the document (the `<name>#v#<version>` row of hosted.ts). */
export interface VersionRecord {
  version: string;
  /** The version's manifest as it appears in the packument (dist with relative tarball path, `_npmUser`, …). */
  manifest: Json;
  /** Publish time, ISO 8601. */
  time: string;
  /** Dist-tags the publish set (`latest` unless `npm publish --tag`). */
  tags: string[];
}

/** A checked publish body. */
export interface InspectedPublish {
  version: string;
  /** The version manifest with `_id`, and `dist` = our `shasum`, `integrity` (sha512) and relative `tarball`. */
  manifest: Json;
  tags: string[];
  /** Tarball file name as stored and served: `<name without scope>-<version>.tgz`. */
  file: string;
  /** The decoded tarball. */
  tarball: Uint8Array;
}

/** Scripts whose presence makes npm run a package's install step (`hasInstallScript` in abbreviated packuments). */
const INSTALL_SCRIPTS = ["preinstall", "install", "postinstall"];

const bad = (message: string): WriteProblem => ({ status: 400, message });

/** The bare name of a package (`@scope/pkg` → `pkg`). */
export function bareName(name: string): string {
  return name.startsWith("@") ? name.slice(name.indexOf("/") + 1) : name;
}

/** The repository-relative path of a tarball: `<name>/-/<bare name>-<version>.tgz`. */
export function tarballPath(name: string, version: string): string {
  return `${name}/-/${bareName(name)}-${version}.tgz`;
}

/** Base64 (standard alphabet, optional padding, line breaks allowed). */
const BASE64 = /^[A-Za-z0-9+/\r\n]*={0,2}\s*$/;

/**
 * Checks the body of `PUT /<name>` carrying `_attachments` (`npm publish`): a JSON object naming `name`, exactly one
 * version (valid semver, its manifest naming the same package and version) and exactly one attachment (base64 gzip data
 * whose `length`, sha1 `dist.shasum` and SRI `dist.integrity` sha512/sha1 entries match; at least one of the two must be
 * given), and dist-tags that point at that version. The client's `dist.tarball` is ignored.
 * @returns the checked publish, the problem (400) to answer, or null when the body has no attachment (a document update:
 *   `npm deprecate`, `npm unpublish <pkg>@<version>`, see {@link DocEdit} `update`)
 * @throws PackumentParseError when `body` is not a JSON object
 */
export function inspectPublish(body: Uint8Array, name: string): InspectedPublish | WriteProblem | null {
  const doc = parseDoc(body);
  if (!isObject(doc._attachments) || Object.keys(doc._attachments).length === 0) return null;
  if (doc.name !== name) return bad(`the document names package ${JSON.stringify(doc.name)}, not ${name}`);
  if (doc._id !== undefined && doc._id !== name) return bad(`the document's _id ${JSON.stringify(doc._id)} is not ${name}`);
  const versions = Object.entries(versionsMap(doc));
  if (versions.length !== 1) return bad(`a publish carries exactly one version (got ${versions.length})`);
  const [version, given] = versions[0];
  if (semver.valid(version) !== version) return bad(`invalid version ${JSON.stringify(version)}: not a semver version`);
  if (given.name !== name || given.version !== version) return bad(`the manifest of ${version} must name ${name}@${version}`);
  const atts = isObject(doc._attachments) ? Object.values(doc._attachments) : [];
  if (atts.length !== 1) return bad(`a publish carries exactly one attachment, the tarball (got ${atts.length}; provenance bundles are not supported)`);
  const att = atts[0];
  if (!isObject(att) || typeof att.data !== "string" || !BASE64.test(att.data)) return bad("the attachment has no base64 data");
  const tarball = new Uint8Array(Buffer.from(att.data, "base64"));
  if (att.length !== undefined && att.length !== tarball.byteLength)
    return bad(`the attachment is ${tarball.byteLength} bytes, its length says ${String(att.length)}`);
  if (tarball.byteLength < 2 || tarball[0] !== 0x1f || tarball[1] !== 0x8b) return bad("the attachment is not a gzip tarball");
  const sha1 = createHash("sha1").update(tarball).digest("hex");
  const sha512 = createHash("sha512").update(tarball).digest();
  const dist: Json = isObject(given.dist) ? given.dist : {};
  if (dist.shasum !== undefined && (typeof dist.shasum !== "string" || dist.shasum.toLowerCase() !== sha1)) return bad(`dist.shasum does not match the tarball (sha1 ${sha1})`);
  const want = expectedDigests({ integrity: typeof dist.integrity === "string" ? dist.integrity : undefined });
  if (want.sha512 === undefined && want.sha1 === undefined && dist.shasum === undefined) return bad("dist.integrity (sha512) or dist.shasum (sha1) is required to check the tarball");
  if (want.sha512 !== undefined && want.sha512 !== sha512.toString("hex")) return bad("dist.integrity does not match the tarball (sha512 differs)");
  if (want.sha1 !== undefined && want.sha1 !== sha1) return bad("dist.integrity does not match the tarball (sha1 differs)");
  const tags: string[] = [];
  for (const [tag, v] of Object.entries(isObject(doc["dist-tags"]) ? doc["dist-tags"] : {})) {
    if (!isValidTagName(tag)) return bad(`invalid dist-tag ${JSON.stringify(tag)}: a tag must not be a version or range`);
    if (v !== version) return bad(`dist-tag ${tag} must point at the published version ${version}`);
    tags.push(tag);
  }
  if (tags.length === 0) tags.push("latest");
  const manifest: Json = { ...given, _id: `${name}@${version}` };
  manifest.dist = { shasum: sha1, integrity: `sha512-${sha512.toString("base64")}`, tarball: tarballPath(name, version) };
  const scripts = isObject(given.scripts) ? given.scripts : {};
  if (INSTALL_SCRIPTS.some((s) => typeof scripts[s] === "string")) manifest.hasInstallScript = true;
  return { version, manifest, tags, file: `${bareName(name)}-${version}.tgz`, tarball };
}

/** One change to a package document. */
export type DocEdit =
  /** A new version (refused with 403 when the version was ever published). `user` becomes a maintainer. */
  | { kind: "add"; record: VersionRecord; user: string }
  /**
   * A whole document sent back by npm (`npm deprecate`, `npm unpublish <pkg>@<ver>`): per existing version its
   * `deprecated` message is taken (`""` or absent clears it), versions it leaves out are removed, its dist-tags replace
   * ours (only tags pointing at remaining versions). Versions we do not have are refused (400): publish them instead.
   */
  | { kind: "update"; body: Uint8Array }
  /** `npm dist-tag add`: the version must exist (404). */
  | { kind: "tag"; tag: string; version: string }
  /** `npm dist-tag rm`: not `latest` (400); an unknown tag is 404. */
  | { kind: "untag"; tag: string }
  /** Removes versions (unknown ones are ignored). */
  | { kind: "remove"; versions: string[] }
  /**
   * Brings the document in line with the version records stored beside it (several processes may have written it
   * concurrently): versions without a record are removed, records missing from the document are added back with their
   * tags (a tag moves to a restored version published after the one it names).
   */
  | { kind: "reconcile"; have: string[]; restore: VersionRecord[] };

/** Result of {@link editDoc}. */
export interface EditResult {
  /** The new document (absent when `problem` is set, or when nothing changed). */
  body?: Uint8Array;
  problem?: WriteProblem;
  /** Versions this edit removed. */
  removed: string[];
  /** Versions left in the document. */
  remaining: string[];
  /** The new `_rev` (or the current one when nothing changed). */
  rev?: string;
  /** The document's dist-tags after the edit. */
  distTags?: Record<string, string>;
}

/** Fields copied to the top of the document from the `latest` version (what `npm view` shows). */
const TOP_FIELDS = ["description", "readme", "readmeFilename", "license", "homepage", "repository", "keywords", "author", "bugs"];

/** Drops tags whose version is gone; points `latest` at the highest stable version (else highest) when missing. */
function fixTags(doc: Json): void {
  const versions = versionsMap(doc);
  const tags: Record<string, string> = {};
  for (const [t, v] of Object.entries(distTagsOf(doc))) if (Object.hasOwn(versions, v)) tags[t] = v;
  const all = Object.keys(versions).filter((v) => semver.valid(v) !== null);
  if (tags.latest === undefined && all.length > 0) {
    const stable = all.filter((v) => semver.prerelease(v) === null);
    tags.latest = semver.rsort(stable.length > 0 ? stable : all)[0];
  }
  doc["dist-tags"] = tags;
}

/** Copies the latest version's descriptive fields to the top of the document. */
function refreshTop(doc: Json): void {
  const latest = versionsMap(doc)[distTagsOf(doc).latest ?? ""];
  if (!latest) return;
  for (const k of TOP_FIELDS) {
    if (latest[k] !== undefined) doc[k] = latest[k];
    else delete doc[k];
  }
}

/** The next CouchDB-style revision: `<n+1>-<32 hex>`. */
function nextRev(rev: unknown): string {
  const n = typeof rev === "string" ? Number.parseInt(rev, 10) : 0;
  return `${Number.isFinite(n) && n > 0 ? n + 1 : 1}-${randomUUID().replace(/-/g, "")}`;
}

/**
 * Applies one edit to the package document `doc` of package `name` (absent: a package with no document yet, only valid
 * for `add`). `now` (epoch ms) stamps `time.modified` and new versions' creation. Unchanged documents are not rewritten.
 * @throws PackumentParseError when `doc` or an `update` body is not a JSON object
 */
export function editDoc(name: string, doc: Uint8Array | undefined, now: number, edit: DocEdit): EditResult {
  const cur: Json = doc ? parseDoc(doc) : { _id: name, name, "dist-tags": {}, versions: {}, time: {}, maintainers: [] };
  const nowIso = new Date(now).toISOString();
  const versions = versionsMap(cur);
  const time = timeOf(cur);
  const tags = distTagsOf(cur);
  const before = Object.keys(versions);
  const fail = (problem: WriteProblem): EditResult => ({ problem, removed: [], remaining: before });
  let changed = true;
  const removed: string[] = [];
  switch (edit.kind) {
    case "add": {
      const v = edit.record.version;
      if (Object.hasOwn(versions, v)) return fail({ status: 403, message: `cannot publish over the previously published version ${v}` });
      if (Object.hasOwn(time, v)) return fail({ status: 403, message: `version ${v} of ${name} was published before and unpublished: version numbers are never reused` });
      versions[v] = edit.record.manifest;
      time[v] = edit.record.time;
      time.created ??= edit.record.time;
      for (const t of edit.record.tags) tags[t] = v;
      const maintainers = Array.isArray(cur.maintainers) ? cur.maintainers : [];
      if (!maintainers.some((m) => isObject(m) && m.name === edit.user)) maintainers.push({ name: edit.user });
      cur.maintainers = maintainers;
      break;
    }
    case "update": {
      const inc = parseDoc(edit.body);
      if (inc.name !== undefined && inc.name !== name) return fail(bad(`the document names package ${JSON.stringify(inc.name)}, not ${name}`));
      if (!isObject(inc.versions)) return fail(bad("the document has no versions object"));
      const incoming = versionsMap(inc);
      const unknown = Object.keys(incoming).filter((v) => !Object.hasOwn(versions, v));
      if (unknown.length > 0) return fail(bad(`version ${unknown[0]} is not published in this repository: publish it with its tarball`));
      changed = false;
      for (const v of before) {
        if (!Object.hasOwn(incoming, v)) {
          delete versions[v];
          removed.push(v);
          changed = true;
          continue;
        }
        const dep = incoming[v].deprecated;
        const want = typeof dep === "string" && dep !== "" ? dep : undefined;
        if (versions[v].deprecated !== want) {
          changed = true;
          if (want === undefined) delete versions[v].deprecated;
          else versions[v].deprecated = want;
        }
      }
      if (isObject(inc["dist-tags"])) {
        const next: Record<string, string> = {};
        for (const [t, v] of Object.entries(distTagsOf(inc))) if (isValidTagName(t) && Object.hasOwn(versions, v)) next[t] = v;
        if (JSON.stringify(next) !== JSON.stringify(tags)) {
          for (const k of Object.keys(tags)) delete tags[k];
          Object.assign(tags, next);
          changed = true;
        }
      }
      break;
    }
    case "tag": {
      if (!Object.hasOwn(versions, edit.version)) return fail({ status: 404, message: `version ${edit.version} of ${name} not found` });
      changed = tags[edit.tag] !== edit.version;
      tags[edit.tag] = edit.version;
      break;
    }
    case "untag": {
      if (edit.tag === "latest") return fail(bad("the latest dist-tag cannot be removed: point it at another version instead"));
      if (!Object.hasOwn(tags, edit.tag)) return fail({ status: 404, message: `dist-tag ${edit.tag} not found` });
      delete tags[edit.tag];
      break;
    }
    case "remove": {
      for (const v of edit.versions) {
        if (!Object.hasOwn(versions, v)) continue;
        delete versions[v];
        removed.push(v);
      }
      changed = removed.length > 0;
      break;
    }
    case "reconcile": {
      const have = new Set(edit.have);
      changed = false;
      for (const v of before) {
        if (have.has(v)) continue;
        delete versions[v];
        removed.push(v);
        changed = true;
      }
      for (const r of edit.restore) {
        if (Object.hasOwn(versions, r.version)) continue;
        versions[r.version] = r.manifest;
        time[r.version] = r.time;
        // a tag follows the restored version when it is unset, dangling, or on a version published before it
        for (const t of r.tags) if (!Object.hasOwn(tags, t) || !Object.hasOwn(versions, tags[t]) || (time[tags[t]] ?? "") < r.time) tags[t] = r.version;
        changed = true;
      }
      break;
    }
  }
  const remaining = Object.keys(versions);
  if (!changed) return { removed, remaining, rev: typeof cur._rev === "string" ? cur._rev : undefined, distTags: tags };
  cur.versions = versions;
  cur["dist-tags"] = tags;
  fixTags(cur);
  time.modified = nowIso;
  time.created ??= nowIso;
  cur.time = time;
  refreshTop(cur);
  cur._rev = nextRev(cur._rev);
  return { body: encodeDoc(cur), removed, remaining, rev: cur._rev as string, distTags: distTagsOf(cur) };
}

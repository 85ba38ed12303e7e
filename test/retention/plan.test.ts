/** planRetention with the built-in plugins' own version hooks (pypi: PEP 440, npm: semver, oci: tags by semver, else time). */
import { describe, expect, test } from "bun:test";
import { planRetention, type RetentionRow, type VersionHooks } from "../../core/retention.ts";
import type { PluginContext, VaultPlugin } from "../../core/plugin.ts";
import pypi from "../../plugins/pypi/index.ts";
import npm from "../../plugins/npm/index.ts";
import oci from "../../plugins/oci/index.ts";

const DAY = 24 * 60 * 60 * 1000;
const NOW = Date.UTC(2026, 5, 1);

/** The hooks runRetention hands the planner, from a plugin (its packageOf ignores the context). */
function hooksOf(p: VaultPlugin): VersionHooks {
  return { versionOf: (path) => p.packageOf!(path, undefined as unknown as PluginContext), compareVersions: p.compareVersions };
}

function row(path: string, o: Partial<RetentionRow> = {}): RetentionRow {
  return { path, sizeBytes: 100, fetchedAt: NOW - DAY, lastAccessAt: NOW - DAY, status: 200, ...o };
}

const removed = (rows: RetentionRow[], plan: ReturnType<typeof planRetention>) =>
  Object.fromEntries(plan.removals.flatMap((r) => r.paths.map((p) => [p, r.reason])).filter(([p]) => rows.some((x) => x.path === p)));

describe("planRetention", () => {
  test("proxy keepVersions orders pypi versions by PEP 440 (not as strings), per project; documents are no version", () => {
    const wheel = (project: string, v: string, storedDaysAgo = 1) =>
      row(`files/packages/ab/cd/${"0".repeat(8)}/${project}-${v}-py3-none-any.whl`, { fetchedAt: NOW - storedDaysAgo * DAY });
    const rows = [
      wheel("demo", "10.0", 9), // newest by PEP 440, stored first
      wheel("demo", "2.0"),
      wheel("demo", "2.0rc1"),
      wheel("demo", "1.0.post1"),
      wheel("demo", "1.0"),
      row("files/packages/ab/cd/00000000/demo-1.0.tar.gz"), // the sdist goes with its wheel's version
      wheel("other", "0.1"),
      row("simple/demo/"),
      row("simple/demo/#json"),
    ];
    const plan = planRetention(rows, { keepVersions: 2 }, { type: "proxy", now: NOW, hooks: hooksOf(pypi) });
    expect(removed(rows, plan)).toEqual({
      [rows[2].path]: "keep_versions",
      [rows[3].path]: "keep_versions",
      [rows[4].path]: "keep_versions",
      [rows[5].path]: "keep_versions",
    });
    expect(plan.removals.find((r) => r.paths[0] === rows[4].path)?.version).toEqual({ name: "demo", version: "1.0" });
    expect(plan).toMatchObject({ files: 9, storedBytes: 900, keptBytes: 500 });
  });

  test("proxy: max age, then last access, then the quota evicts least recently used files until under maxBytes", () => {
    const rows = [
      row("a", { fetchedAt: NOW - 40 * DAY, lastAccessAt: NOW }), // too old, though used today
      row("b", { lastAccessAt: NOW - 20 * DAY }), // unused for 20 days
      row("c", { lastAccessAt: NOW - 5 * DAY, sizeBytes: 300 }),
      row("d", { lastAccessAt: NOW - 4 * DAY, sizeBytes: 300 }),
      row("e", { lastAccessAt: NOW - 3 * DAY, sizeBytes: 300 }),
      row("f", { lastAccessAt: NOW - 2 * DAY, sizeBytes: 300 }),
      row("nothing-here", { status: 404, sizeBytes: 0, lastAccessAt: NOW - 30 * DAY }), // a negative entry ages out too
    ];
    const plan = planRetention(rows, { maxAgeDays: 30, unusedForDays: 14, maxBytes: 650 }, { type: "proxy", now: NOW, hooks: hooksOf(pypi) });
    expect(removed(rows, plan)).toEqual({ a: "max_age", b: "unused", "nothing-here": "unused", c: "quota", d: "quota" });
    expect(plan.keptBytes).toBe(600);
    // under the quota already: nothing for quota
    expect(planRetention(rows, { maxBytes: 10_000 }, { type: "proxy", now: NOW, hooks: hooksOf(pypi) }).removals).toEqual([]);
  });

  test("hosted: whole versions by semver (npm), every file of a version together; maxBytes removes nothing", () => {
    const tgz = (v: string, o: Partial<RetentionRow> = {}) => row(`left-pad/-/left-pad-${v}.tgz`, o);
    const rows = [
      tgz("1.2.0"),
      tgz("1.10.0"), // newer than 1.2.0 (strings would say older)
      tgz("1.9.0-rc.1"), // a pre-release of 1.9.0: newer than 1.2.0
      tgz("0.9.0", { fetchedAt: NOW - 400 * DAY, lastAccessAt: NOW }),
      row("@scope/util/-/util-2.0.0.tgz"),
      row("left-pad#doc", { fetchedAt: NOW - 400 * DAY }), // documents are never removed by retention
      row("left-pad#v#1.2.0"),
    ];
    const plan = planRetention(rows, { keepVersions: 2, maxAgeDays: 365, maxBytes: 1 }, { type: "hosted", now: NOW, hooks: hooksOf(npm) });
    expect(plan.removals.map((r) => [r.version, r.reason])).toEqual([
      [{ name: "left-pad", version: "1.2.0" }, "keep_versions"],
      [{ name: "left-pad", version: "0.9.0" }, "max_age"],
    ]);
  });

  test("hosted unusedForDays takes a version only when none of its files was downloaded since", () => {
    const rows = [
      row("files/demo/demo-1.0-py3-none-any.whl", { lastAccessAt: NOW - 90 * DAY }),
      row("files/demo/demo-1.0.tar.gz", { lastAccessAt: NOW - 2 * DAY }),
      row("files/demo/demo-0.9-py3-none-any.whl", { lastAccessAt: NOW - 90 * DAY }),
    ];
    const plan = planRetention(rows, { unusedForDays: 30 }, { type: "hosted", now: NOW, hooks: hooksOf(pypi) });
    expect(plan.removals).toEqual([{ reason: "unused", paths: [rows[2].path], sizeBytes: 100, version: { name: "demo", version: "0.9" } }]);
  });

  test("oci tags: semver tags by precedence, other tags by when they were stored", () => {
    const tag = (t: string, daysAgo: number) => row(`library/app/_tags/${t}`, { fetchedAt: NOW - daysAgo * DAY });
    const semverTags = [tag("v1.10.0", 5), tag("v1.9.3", 1), tag("v1.2.0", 2)];
    expect(removed(semverTags, planRetention(semverTags, { keepVersions: 1 }, { type: "proxy", now: NOW, hooks: hooksOf(oci) }))).toEqual({
      "library/app/_tags/v1.9.3": "keep_versions",
      "library/app/_tags/v1.2.0": "keep_versions",
    });
    const named = [tag("latest", 1), tag("stable", 3), tag("edge", 2), row("library/app/_manifests/sha256:" + "a".repeat(64))];
    expect(removed(named, planRetention(named, { keepVersions: 2 }, { type: "proxy", now: NOW, hooks: hooksOf(oci) }))).toEqual({
      "library/app/_tags/stable": "keep_versions",
    });
  });
});

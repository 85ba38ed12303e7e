/**
 * Retention's own SQL on SQLite and Postgres: the hosted quota's stored-bytes sum, the one-run-per-interval claim of the
 * periodic job shared by every process on a database, and an LRU quota eviction of a proxy filled through the vault.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { and, eq } from "drizzle-orm";
import { tablesOf } from "../../core/db/index.ts";
import { storedBytes } from "../../core/retention-quota.ts";
import { runRetention, takeRun } from "../../core/retention.ts";
import type { VaultArtifactStore } from "../../core/artifacts.ts";
import { startUpstream, type TestUpstream } from "../helpers/upstream.ts";
import { startVault } from "../helpers/vault.ts";
import { metadataDrivers, useMetadata } from "../helpers/metadata.ts";

let up: TestUpstream;
beforeAll(async () => {
  up = await startUpstream({ handler: (req) => new Response(new Uint8Array(1000).fill(new URL(req.url).pathname.length) as BodyInit) });
});
afterAll(() => up.stop());

for (const driver of metadataDrivers()) describe(`retention on ${driver}`, () => {
  const md = useMetadata(driver);

  test("takeRun: one run per interval between every process on the database", async () => {
    const a = await md.open();
    const b = await md.reopen(a); // another process's connection
    const t0 = Date.UTC(2026, 0, 1);
    const hour = 60 * 60 * 1000;
    expect(await takeRun(a.db, hour, t0)).toBe(true);
    expect(await takeRun(b.db, hour, t0 + 1000)).toBe(false);
    expect(await takeRun(a.db, hour, t0 + 30 * 60 * 1000)).toBe(false);
    // due again after the interval (a minute of slack for timer jitter), taken by exactly one of two racing processes
    const race = await Promise.all([takeRun(a.db, hour, t0 + hour - 30_000), takeRun(b.db, hour, t0 + hour - 30_000)]);
    expect(race.filter(Boolean).length).toBe(1);
  });

  test("the LRU quota of a proxy filled through the vault, and the stored-bytes sum of the hosted quota", async () => {
    const opened = await md.open();
    const v = await startVault({
      config: {
        metadata: md.configOf(opened),
        repositories: [{ name: "cache", format: "http", type: "proxy", upstream: `${up.url}/`, retention: { maxBytes: 2500 } }],
      },
    });
    try {
      for (const f of ["a", "b", "c", "d"]) expect((await fetch(`${v.url}/cache/${f}`)).status).toBe(200);
      const ctx = v.vault.repositories.get("cache")!;
      await (ctx.artifacts as VaultArtifactStore).flush();
      expect(await storedBytes(ctx.metadata, "cache")).toBe(4000);
      expect(await storedBytes(ctx.metadata, "nothing")).toBe(0);
      const { artifacts } = tablesOf(ctx.metadata);
      const now = Date.now();
      for (const [f, ago] of [["a", 1], ["b", 4], ["c", 3], ["d", 2]] as const)
        await ctx.metadata.update(artifacts).set({ lastAccessAt: now - ago * 60_000 }).where(and(eq(artifacts.repository, "cache"), eq(artifacts.path, f)));
      const [report] = await runRetention([{ ctx, plugin: v.vault.plugins.get("http")! }], { log: ctx.log });
      expect(report.plan.removals.map((r) => [r.paths[0], r.reason])).toEqual([
        ["b", "quota"],
        ["c", "quota"],
      ]);
      expect((await ctx.artifacts.list("")).map((e) => e.path)).toEqual(["a", "d"]);
      expect(await storedBytes(ctx.metadata, "cache")).toBe(2000);
      expect((await fetch(`${v.url}/cache/b`)).headers.get("x-vault-cache")).toBe("MISS");
    } finally {
      await v.stop();
    }
  }, 60_000);
});

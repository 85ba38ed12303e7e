/** Helpers of the plugin API (core/plugin.ts) that hold logic: serviceRegistry. */
import { describe, expect, test } from "bun:test";
import { serviceRegistry, type PluginContext } from "./plugin.ts";

/** The parts of a context serviceRegistry reads (the rest is never touched). */
const ctxOf = (name: string, type: "proxy" | "hosted" | "group", config: object = { name }) =>
  ({ repo: { name, type, mount: `/${name}` }, config }) as unknown as PluginContext;

describe("serviceRegistry", () => {
  test("one service per repository config, made by its type's factory; groups reach members through serviceOf", () => {
    const made: string[] = [];
    const members = new Map<string, PluginContext>();
    const serviceOf = serviceRegistry<{ name: string; members?: string[] }>({
      proxy: (c) => (made.push(`proxy:${c.repo.name}`), { name: c.repo.name }),
      hosted: (c) => (made.push(`hosted:${c.repo.name}`), { name: c.repo.name }),
      group: (c, of) => (made.push(`group:${c.repo.name}`), { name: c.repo.name, members: [...members.values()].map((m) => of(m).name) }),
    });
    const p = ctxOf("p", "proxy");
    const h = ctxOf("h", "hosted");
    members.set("p", p).set("h", h);
    const g = serviceOf(ctxOf("g", "group"));
    expect(g.members).toEqual(["p", "h"]);
    // the same config object (another mount of the same repository) gets the same service
    expect(serviceOf({ ...p, repo: { ...p.repo, mount: "" } } as PluginContext)).toBe(serviceOf(p));
    expect(made).toEqual(["group:g", "proxy:p", "hosted:h"]);
    // another vault in the same process (another config object) gets its own
    expect(serviceOf(ctxOf("p", "proxy"))).not.toBe(serviceOf(p));
  });

  test("a type without a factory throws naming the repository", () => {
    const serviceOf = serviceRegistry<object>({ proxy: () => ({}) });
    expect(() => serviceOf(ctxOf("up", "hosted"))).toThrow("no hosted service for repository up");
  });
});

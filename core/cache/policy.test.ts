/** Cache-Control parsing and the store/freshness decision (specs/http-caching.md §2). */
import { describe, expect, test } from "bun:test";
import { decideStore, parseCacheControl, requestDirectives, staleWhileRevalidateMs, upstreamLifetime } from "./policy.ts";
import { NegativeCache } from "./negative.ts";
import type { CacheRequest } from "../plugin.ts";

const spec = (o: Partial<CacheRequest> = {}): CacheRequest => ({ key: "k", upstreamUrl: "http://u/k", class: "mutable", ...o });
const H = (h: Record<string, string>) => new Headers(h);

describe("cache policy", () => {
  test("parseCacheControl: case, arguments, quoted commas, junk", () => {
    const d = parseCacheControl('Public, MAX-AGE=60, no-cache="set-cookie, x", s-maxage = 5,, immutable');
    expect(d.get("public")).toBe(true);
    expect(d.get("max-age")).toBe("60");
    expect(d.get("no-cache")).toBe("set-cookie, x");
    expect(d.get("s-maxage")).toBe("5");
    expect(d.get("immutable")).toBe(true);
    expect(parseCacheControl(null).size).toBe(0);
  });

  test("upstream lifetime: s-maxage › max-age › Expires − Date, minus Age", () => {
    expect(upstreamLifetime(H({}), parseCacheControl("s-maxage=10, max-age=100"))).toBe(10);
    expect(upstreamLifetime(H({ age: "30" }), parseCacheControl("max-age=100"))).toBe(70);
    const date = new Date(1_700_000_000_000);
    expect(upstreamLifetime(H({ date: date.toUTCString(), expires: new Date(date.getTime() + 120_000).toUTCString() }), parseCacheControl(""))).toBe(120);
    expect(upstreamLifetime(H({ expires: "0" }), parseCacheControl(""))).toBe(0);
    expect(upstreamLifetime(H({}), parseCacheControl("public"))).toBeUndefined();
  });

  test("decideStore follows the table", () => {
    const now = 1_000_000;
    expect(decideStore(spec(), undefined, H({ "cache-control": "no-store" }), now).store).toBe(false);
    expect(decideStore(spec(), undefined, H({ "cache-control": "private" }), now).store).toBe(false);
    expect(decideStore(spec({ class: "immutable" }), undefined, H({ "cache-control": "max-age=5" }), now)).toEqual({ store: true, expiresAt: null, flags: [] });
    expect(decideStore(spec(), undefined, H({}), now).expiresAt).toBe(now + 600_000);
    expect(decideStore(spec(), { metadataTtlSeconds: 30 }, H({}), now).expiresAt).toBe(now + 30_000);
    expect(decideStore(spec({ ttlSeconds: 50 }), { metadataTtlSeconds: 30 }, H({ "cache-control": "max-age=20" }), now).expiresAt).toBe(now + 20_000);
    expect(decideStore(spec({ ttlSeconds: 50 }), undefined, H({ "cache-control": "max-age=9999" }), now).expiresAt).toBe(now + 50_000);
    const nc = decideStore(spec(), undefined, H({ "cache-control": "no-cache" }), now);
    expect(nc).toEqual({ store: true, expiresAt: now, flags: ["no-cache"] });
    expect(decideStore(spec(), undefined, H({ "cache-control": "proxy-revalidate, immutable" }), now).flags).toEqual(["must-revalidate", "immutable"]);
  });

  test("request directives", () => {
    expect(requestDirectives(H({})).revalidate).toBe(false);
    expect(requestDirectives(H({ "cache-control": "max-age=0" })).revalidate).toBe(true);
    expect(requestDirectives(H({ "cache-control": "no-cache" })).revalidate).toBe(true);
    expect(requestDirectives(H({ pragma: "no-cache" })).revalidate).toBe(true);
    expect(requestDirectives(H({ "cache-control": "max-age=60", pragma: "no-cache" })).revalidate).toBe(false);
    expect(requestDirectives(H({ "cache-control": "only-if-cached" })).onlyIfCached).toBe(true);
    expect(requestDirectives(H({ "cache-control": "no-store" })).noStore).toBe(true);
  });

  test("negative cache: TTL and bound", () => {
    const n = new NegativeCache(3);
    n.set("a", 100);
    expect(n.has("a", 99)).toBe(true);
    expect(n.has("a", 100)).toBe(false);
    expect(n.size).toBe(0);
    for (const k of ["a", "b", "c", "d"]) n.set(k, 1000);
    expect(n.size).toBe(3);
    expect(n.has("a", 0)).toBe(false);
    expect(n.has("d", 0)).toBe(true);
    n.delete("d");
    expect(n.has("d", 0)).toBe(false);
  });
});

describe("stale-while-revalidate", () => {
  test("the upstream's delta-seconds is recorded as a flag; the window is the larger of it and the policy's, in ms", () => {
    const d = decideStore(spec(), undefined, new Headers({ "cache-control": "max-age=5, stale-while-revalidate=30" }), 0);
    expect(d.flags).toEqual(["stale-while-revalidate=30"]);
    expect(staleWhileRevalidateMs(d.flags, undefined)).toBe(30_000);
    expect(staleWhileRevalidateMs(d.flags, { staleWhileRevalidateSeconds: 120 })).toBe(120_000);
    expect(staleWhileRevalidateMs([], undefined)).toBe(0);
    expect(decideStore(spec(), undefined, new Headers({ "cache-control": "stale-while-revalidate=abc" }), 0).flags).toEqual([]);
  });
});

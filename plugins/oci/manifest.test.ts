// Unit tests: manifest validation against real manifest examples (../shared/fixtures/oci), Accept negotiation, referrer descriptors.
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  acceptedTypes,
  amd64Child,
  DOCKER_LIST,
  DOCKER_MANIFEST,
  negotiate,
  OCI_INDEX,
  OCI_MANIFEST,
  parseManifest,
  referencedBlobs,
  referrerDescriptor,
} from "./manifest.ts";
import { VaultError } from "../../core/plugin.ts";

const FIX = join(import.meta.dir, "..", "..", "..", "shared", "fixtures", "oci");
const read = (p: string) => new Uint8Array(readFileSync(join(FIX, p)));
const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const D = (c: string) => "sha256:" + c.repeat(64);

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof VaultError ? String(e.code) : "other";
  }
  return undefined;
}

describe("parseManifest on real documents", () => {
  test("OCI image manifest (busybox OCI layout)", () => {
    const idx = JSON.parse(readFileSync(join(FIX, "busybox-oci-layout", "index.json"), "utf8"));
    const desc = idx.manifests[0];
    const m = parseManifest(read(`busybox-oci-layout/blobs/sha256/${desc.digest.slice(7)}`), desc.mediaType);
    expect(m.kind).toBe("image");
    expect(m.mediaType).toBe(desc.mediaType);
    expect(referencedBlobs(m).length).toBe(1 + m.layers.length);
  });
  test("Docker schema 2 manifest (v2s2 dir and example)", () => {
    const m = parseManifest(read("busybox-docker-v2s2-dir/manifest.json"), DOCKER_MANIFEST);
    expect(m.mediaType).toBe(DOCKER_MANIFEST);
    expect(m.config?.mediaType).toBe("application/vnd.docker.container.image.v1+json");
    expect(parseManifest(read("manifest-examples/v2s2.manifest.json"), null).layers.length).toBe(3);
  });
  test("Docker manifest list and OCI indexes", () => {
    const list = parseManifest(read("manifest-examples/schema2list.json"), DOCKER_LIST);
    expect(list.kind).toBe("index");
    expect(list.manifests.length).toBe(7);
    expect(amd64Child(list)?.platform?.architecture).toBe("amd64");
    expect(referencedBlobs(list)).toEqual([]);
    expect(parseManifest(read("manifest-examples/ociv1.image.index.json"), OCI_INDEX).kind).toBe("index");
    expect(parseManifest(read("manifest-examples/oci1index.json"), null).kind).toBe("index");
    expect(parseManifest(read("manifest-examples/ociv1.manifest.json"), OCI_MANIFEST).kind).toBe("image");
  });
  test("every manifest of the regclient test repository parses", () => {
    const idx = JSON.parse(readFileSync(join(FIX, "regclient-testrepo-oci-layout", "index.json"), "utf8"));
    let n = 0;
    const walk = (d: { mediaType: string; digest: string }) => {
      const m = parseManifest(read(`regclient-testrepo-oci-layout/blobs/sha256/${d.digest.slice(7)}`), d.mediaType);
      n++;
      for (const c of m.manifests) if (c.mediaType.includes("manifest") || c.mediaType.includes("index")) walk(c);
    };
    for (const d of idx.manifests) walk(d);
    expect(n).toBeGreaterThan(5);
  });
  test("schema 1 is refused", () => {
    expect(code(() => parseManifest(read("manifest-examples/v2s1.manifest.json"), "application/vnd.docker.distribution.manifest.v1+prettyjws"))).toBe("MANIFEST_INVALID");
    expect(code(() => parseManifest(read("manifest-examples/v2s1.manifest.json"), null))).toBe("MANIFEST_INVALID");
  });
});

describe("parseManifest refuses malformed documents", () => {
  const config = { mediaType: "application/vnd.oci.image.config.v1+json", digest: D("a"), size: 2 };
  test.each([
    ["not JSON", new TextEncoder().encode("{")],
    ["array", enc([])],
    ["schemaVersion 3", enc({ schemaVersion: 3, mediaType: OCI_MANIFEST, config, layers: [] })],
    ["no config", enc({ schemaVersion: 2, mediaType: OCI_MANIFEST, layers: [] })],
    ["bad digest", enc({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { ...config, digest: "sha256:zz" }, layers: [] })],
    ["negative size", enc({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { ...config, size: -1 }, layers: [] })],
    ["layers not array", enc({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: {} })],
    ["index without manifests", enc({ schemaVersion: 2, mediaType: OCI_INDEX })],
    ["unknown media type", enc({ schemaVersion: 2, mediaType: "application/x-foo", config, layers: [] })],
    ["bad subject", enc({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [], subject: { digest: D("b") } })],
    ["bad annotations", enc({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [], annotations: { a: 1 } })],
  ])("%s → MANIFEST_INVALID", (_n, body) => {
    expect(code(() => parseManifest(body, null))).toBe("MANIFEST_INVALID");
  });
  test("Content-Type must agree with mediaType", () => {
    const body = enc({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [] });
    expect(code(() => parseManifest(body, DOCKER_MANIFEST))).toBe("MANIFEST_INVALID");
    expect(parseManifest(body, OCI_MANIFEST + "; charset=utf-8").mediaType).toBe(OCI_MANIFEST);
    expect(parseManifest(body, "application/json").mediaType).toBe(OCI_MANIFEST);
  });
  test("subject, artifactType and layers with urls", () => {
    const m = parseManifest(
      enc({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        artifactType: "application/vnd.example.sbom",
        config: { mediaType: "application/vnd.oci.empty.v1+json", digest: D("e"), size: 2 },
        layers: [{ mediaType: "x", digest: D("f"), size: 1, urls: ["https://example.invalid/f"] }],
        subject: { mediaType: OCI_MANIFEST, digest: D("c"), size: 10 },
        annotations: { "org.opencontainers.image.created": "2024-01-01T00:00:00Z" },
      }),
      OCI_MANIFEST,
    );
    expect(m.subject?.digest).toBe(D("c"));
    expect(referencedBlobs(m).map((d) => d.digest)).toEqual([D("e")]);
    expect(referrerDescriptor(m, D("9"), 123)).toEqual({
      mediaType: OCI_MANIFEST,
      digest: D("9"),
      size: 123,
      artifactType: "application/vnd.example.sbom",
      annotations: { "org.opencontainers.image.created": "2024-01-01T00:00:00Z" },
    });
  });
  test("referrer artifactType falls back to the config media type", () => {
    const m = parseManifest(enc({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: "application/x-cfg", digest: D("a"), size: 1 }, layers: [] }), null);
    expect(referrerDescriptor(m, D("1"), 5).artifactType).toBe("application/x-cfg");
  });
});

describe("Accept negotiation", () => {
  test("parses every Accept value, ignores q=", () => {
    expect([...acceptedTypes(`${OCI_MANIFEST};q=0.5, ${DOCKER_MANIFEST} ,${OCI_INDEX}`)]).toEqual([OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX]);
    expect(acceptedTypes(null).size).toBe(0);
  });
  test("distribution's rules", () => {
    const only = (...t: string[]) => new Set(t);
    expect(negotiate(OCI_MANIFEST, only(), true)).toBe("serve");
    expect(negotiate(OCI_MANIFEST, only(OCI_MANIFEST), true)).toBe("serve");
    expect(negotiate(OCI_MANIFEST, only("*/*"), true)).toBe("serve");
    expect(negotiate(OCI_MANIFEST, only(DOCKER_MANIFEST), true)).toBe("not-acceptable");
    expect(negotiate(OCI_INDEX, only(OCI_MANIFEST, DOCKER_MANIFEST), false)).toBe("not-acceptable");
    expect(negotiate(DOCKER_LIST, only(DOCKER_MANIFEST), true)).toBe("fallback-amd64");
    expect(negotiate(DOCKER_LIST, only(DOCKER_MANIFEST), false)).toBe("serve");
    expect(negotiate(DOCKER_MANIFEST, only("application/vnd.docker.distribution.manifest.v1+prettyjws"), true)).toBe("serve");
  });
});

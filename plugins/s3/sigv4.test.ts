// SigV4 against the AWS documentation's published S3 examples (sigv4-header-based-auth, sigv4-query-string-auth, sigv4-streaming) and against the SDK's own signer.
import { describe, expect, test } from "bun:test";
import { SignatureV4 } from "@smithy/signature-v4";
import { createHash, createHmac } from "node:crypto";
import {
  parseSignature,
  verifySignature,
  parseQuery,
  signingKey,
  chunkSignature,
  canonicalUri,
  formatAmzDate,
  EMPTY_SHA256,
} from "./sigv4.ts";
import { S3Error } from "./errors.ts";
import { awsChunkedDecoder, encodeAwsChunked } from "./aws-chunked.ts";

const AKID = "AKIAIOSFODNN7EXAMPLE";
const SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const T0 = Date.UTC(2013, 4, 24, 0, 0, 0);

function verify(method: string, target: string, headers: Record<string, string>, now = T0) {
  const u = new URL(target, "http://examplebucket.s3.amazonaws.com");
  const h = new Headers(headers);
  const query = parseQuery(u.search);
  const sig = parseSignature(h, query);
  if (!sig) throw new Error("unsigned");
  return verifySignature(sig, { method, rawPath: u.pathname, query, headers: h }, SECRET, now);
}

function authz(signed: string, sig: string) {
  return `AWS4-HMAC-SHA256 Credential=${AKID}/20130524/us-east-1/s3/aws4_request,SignedHeaders=${signed},Signature=${sig}`;
}

describe("AWS documentation examples (header auth)", () => {
  test("GET Object with Range", () => {
    const v = verify("GET", "/test.txt", {
      host: "examplebucket.s3.amazonaws.com",
      range: "bytes=0-9",
      "x-amz-content-sha256": EMPTY_SHA256,
      "x-amz-date": "20130524T000000Z",
      authorization: authz("host;range;x-amz-content-sha256;x-amz-date", "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
    });
    expect(v.accessKeyId).toBe(AKID);
    expect(v.region).toBe("us-east-1");
  });

  test("PUT Object with a Date header and storage class", () => {
    const v = verify("PUT", "/test%24file.text", {
      host: "examplebucket.s3.amazonaws.com",
      date: "Fri, 24 May 2013 00:00:00 GMT",
      "x-amz-date": "20130524T000000Z",
      "x-amz-storage-class": "REDUCED_REDUNDANCY",
      "x-amz-content-sha256": "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
      authorization: authz(
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
      ),
    });
    expect(v.payloadHash).toBe("44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  });

  test("GET Bucket Lifecycle (valueless query parameter)", () => {
    verify("GET", "/?lifecycle", {
      host: "examplebucket.s3.amazonaws.com",
      "x-amz-date": "20130524T000000Z",
      "x-amz-content-sha256": EMPTY_SHA256,
      authorization: authz("host;x-amz-content-sha256;x-amz-date", "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
    });
  });

  test("GET Bucket (list objects) with sorted query", () => {
    verify("GET", "/?max-keys=2&prefix=J", {
      host: "examplebucket.s3.amazonaws.com",
      "x-amz-date": "20130524T000000Z",
      "x-amz-content-sha256": EMPTY_SHA256,
      authorization: authz("host;x-amz-content-sha256;x-amz-date", "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
    });
  });

  test("a wrong signature is SignatureDoesNotMatch, a skewed clock RequestTimeTooSkewed", () => {
    const h = {
      host: "examplebucket.s3.amazonaws.com",
      "x-amz-date": "20130524T000000Z",
      "x-amz-content-sha256": EMPTY_SHA256,
      authorization: authz("host;x-amz-content-sha256;x-amz-date", "0".repeat(64)),
    };
    expect(() => verify("GET", "/?lifecycle", h)).toThrow(S3Error);
    try {
      verify("GET", "/?lifecycle", h);
    } catch (e) {
      expect((e as S3Error).code).toBe("SignatureDoesNotMatch");
      expect((e as S3Error).status).toBe(403);
    }
    try {
      verify("GET", "/?lifecycle", { ...h, authorization: authz("host;x-amz-content-sha256;x-amz-date", "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543") }, T0 + 16 * 60_000);
      throw new Error("accepted");
    } catch (e) {
      expect((e as S3Error).code).toBe("RequestTimeTooSkewed");
    }
  });
});

describe("AWS documentation example (presigned URL)", () => {
  const url =
    "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
  test("verifies within the expiry", () => {
    const v = verify("GET", url, { host: "examplebucket.s3.amazonaws.com" }, T0 + 3600_000);
    expect(v.payloadHash).toBe("UNSIGNED-PAYLOAD");
  });
  test("expired → AccessDenied", () => {
    try {
      verify("GET", url, { host: "examplebucket.s3.amazonaws.com" }, T0 + 86401_000);
      throw new Error("accepted");
    } catch (e) {
      expect((e as S3Error).code).toBe("AccessDenied");
      expect((e as S3Error).message).toContain("expired");
    }
  });
});

describe("AWS documentation example (streaming, STREAMING-AWS4-HMAC-SHA256-PAYLOAD)", () => {
  const headers = {
    host: "s3.amazonaws.com",
    "x-amz-date": "20130524T000000Z",
    "x-amz-storage-class": "REDUCED_REDUNDANCY",
    "content-encoding": "aws-chunked",
    "x-amz-decoded-content-length": "66560",
    "content-length": "66824",
    "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    authorization: authz(
      "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class",
      "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
    ),
  };
  test("seed and chunk signatures", () => {
    const v = verify("PUT", "/examplebucket/chunkObject.txt", headers);
    expect(v.seedSignature).toBe("4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9");
    const key = signingKey(SECRET, "20130524", "us-east-1");
    const h1 = new Bun.CryptoHasher("sha256").update(new Uint8Array(65536).fill(97)).digest("hex");
    const s1 = chunkSignature(key, "20130524T000000Z", "20130524/us-east-1/s3/aws4_request", v.seedSignature, h1);
    expect(s1).toBe("ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648");
    const h2 = new Bun.CryptoHasher("sha256").update(new Uint8Array(1024).fill(97)).digest("hex");
    const s2 = chunkSignature(key, "20130524T000000Z", "20130524/us-east-1/s3/aws4_request", s1, h2);
    expect(s2).toBe("0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497");
    const s3 = chunkSignature(key, "20130524T000000Z", "20130524/us-east-1/s3/aws4_request", s2, EMPTY_SHA256);
    expect(s3).toBe("b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9");
  });

  test("the documented body decodes, split at every awkward boundary", async () => {
    const v = verify("PUT", "/examplebucket/chunkObject.txt", headers);
    const body = encodeAwsChunked(new Uint8Array(66560).fill(97), { signing: { key: v.key, amzDate: v.amzDate, scope: "20130524/us-east-1/s3/aws4_request", seedSignature: v.seedSignature } });
    expect(body.length).toBe(66824); // the documented Content-Length
    const text = Buffer.from(body).toString("latin1");
    expect(text.startsWith("10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n")).toBe(true);
    for (const step of [1, 7, 85, 4096, 70000]) {
      const dec = awsChunkedDecoder({ signing: { key: v.key, amzDate: v.amzDate, scope: "20130524/us-east-1/s3/aws4_request", seedSignature: v.seedSignature }, decodedLength: 66560 });
      const out = await new Response(pieces(body, step).pipeThrough(dec)).bytes();
      expect(out.length).toBe(66560);
      expect(out.every((b) => b === 97)).toBe(true);
    }
  });

  test("a tampered chunk fails with SignatureDoesNotMatch", async () => {
    const v = verify("PUT", "/examplebucket/chunkObject.txt", headers);
    const signing = { key: v.key, amzDate: v.amzDate, scope: "20130524/us-east-1/s3/aws4_request", seedSignature: v.seedSignature };
    const body = encodeAwsChunked(new Uint8Array(66560).fill(97), { signing });
    body[200] = 98;
    const err = await new Response(pieces(body, 1000).pipeThrough(awsChunkedDecoder({ signing }))).bytes().catch((e) => e);
    expect((err as S3Error).code).toBe("SignatureDoesNotMatch");
  });
});

describe("trailers", () => {
  test("unsigned chunks with a checksum trailer are decoded and the trailer handed over", async () => {
    const data = new TextEncoder().encode("hello world, trailers");
    const body = encodeAwsChunked(data, { chunkSize: 5, trailers: { "x-amz-checksum-crc32": "abc=" } });
    let got: Record<string, string> = {};
    const out = await new Response(pieces(body, 3).pipeThrough(awsChunkedDecoder({ onTrailers: (t) => (got = t) }))).text();
    expect(out).toBe("hello world, trailers");
    expect(got).toEqual({ "x-amz-checksum-crc32": "abc=" });
  });
  test("signed trailer verifies; a changed trailer value fails", async () => {
    const key = signingKey(SECRET, "20130524", "us-east-1");
    const signing = { key, amzDate: "20130524T000000Z", scope: "20130524/us-east-1/s3/aws4_request", seedSignature: "1".repeat(64) };
    const body = encodeAwsChunked(new Uint8Array(100000).fill(1), { signing, trailers: { "x-amz-checksum-crc32c": "sOO8/Q==" } });
    const ok = await new Response(pieces(body, 999).pipeThrough(awsChunkedDecoder({ signing, signedTrailer: true }))).bytes();
    expect(ok.length).toBe(100000);
    const bad = Buffer.from(Buffer.from(body).toString("latin1").replace("sOO8/Q==", "AAAAAA=="), "latin1");
    const err = await new Response(pieces(bad, 999).pipeThrough(awsChunkedDecoder({ signing, signedTrailer: true }))).bytes().catch((e) => e);
    expect((err as S3Error).code).toBe("SignatureDoesNotMatch");
  });
  test("a truncated body is IncompleteBody", async () => {
    const body = encodeAwsChunked(new Uint8Array(1000), { chunkSize: 100 });
    const err = await new Response(pieces(body.subarray(0, 500), 64).pipeThrough(awsChunkedDecoder())).bytes().catch((e) => e);
    expect((err as S3Error).code).toBe("IncompleteBody");
  });
});

describe("agreement with the SDK's signer (@smithy/signature-v4)", () => {
  const signer = new SignatureV4({
    credentials: { accessKeyId: AKID, secretAccessKey: SECRET },
    region: "eu-west-3",
    service: "s3",
    sha256: Sha256,
    uriEscapePath: false,
    applyChecksum: false,
  });
  const cases: [string, string, Record<string, string>][] = [
    ["GET", "/bucket/dir/a%20b%2Bc%21%2A.txt", { "list-type": "2", prefix: "a b/ü", delimiter: "/" }],
    ["PUT", "/bucket/k%3Ak/%E2%82%AC//x/", { partNumber: "3", uploadId: "abc~def=" }],
    ["POST", "/bucket", { delete: "" }],
    ["GET", "/", {}],
  ];
  for (const [method, path, query] of cases) {
    test(`${method} ${path}`, async () => {
      const now = Date.now();
      const signed = await signer.sign(
        {
          method,
          protocol: "http:",
          hostname: "127.0.0.1",
          port: 9000,
          path,
          query,
          headers: { host: "127.0.0.1:9000", "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "x-amz-meta-note": "  a   b  " },
        },
        { signingDate: new Date(now) },
      );
      const qs = Object.entries(query)
        .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
        .join("&");
      const h = new Headers(signed.headers as Record<string, string>);
      const q = parseQuery(qs);
      const sig = parseSignature(h, q)!;
      const v = verifySignature(sig, { method, rawPath: path, query: q, headers: h }, SECRET, now);
      expect(v.region).toBe("eu-west-3");
      expect(formatAmzDate(now)).toBe(sig.amzDate);
    });
  }
  test("canonical URI keeps // and trailing / and re-encodes once", () => {
    expect(canonicalUri("/b/a%2Fb//c/")).toBe("/b/a%2Fb//c/");
    expect(canonicalUri("/b/a b")).toBe("/b/a%20b");
  });
});

/** The hash constructor SignatureV4 wants (sha256, or HMAC-SHA256 when given a secret). */
class Sha256 {
  private h: ReturnType<typeof createHash> | ReturnType<typeof createHmac>;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    const k = secret === undefined || typeof secret === "string" ? secret : new Uint8Array(ArrayBuffer.isView(secret) ? secret.buffer.slice(secret.byteOffset, secret.byteOffset + secret.byteLength) : secret);
    this.h = k === undefined ? createHash("sha256") : createHmac("sha256", k);
  }
  update(d: string | ArrayBuffer | ArrayBufferView) {
    this.h.update(typeof d === "string" ? d : ArrayBuffer.isView(d) ? new Uint8Array(d.buffer, d.byteOffset, d.byteLength) : new Uint8Array(d));
  }
  async digest() {
    return new Uint8Array(this.h.digest());
  }
  reset() {}
}

/** Re-chunks bytes into a stream of `step`-sized pieces. */
function pieces(data: Uint8Array, step: number): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream({
    pull(c) {
      if (off >= data.length) return c.close();
      c.enqueue(data.slice(off, off + step));
      off += step;
    },
  });
}

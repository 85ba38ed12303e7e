// XML parsing safety (no DTD, no entity expansion, malformed documents) and checksum encodings.
import { describe, expect, test } from "bun:test";
import { parseXml, listOf, textOf, renderXml } from "./xml.ts";
import { createChecksum, multipartEtag, compositeChecksum } from "./checksums.ts";
import { S3Error } from "./errors.ts";

function code(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return (e as S3Error).code as string;
  }
  return undefined;
}

describe("parseXml", () => {
  test("reads a DeleteObjects document, decoding predefined entities and character references", () => {
    const d = parseXml(
      `<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet><Object><Key>a&amp;b&#x0A;c</Key></Object><Object><Key>d &lt;e&gt;</Key><VersionId>null</VersionId></Object></Delete>`,
      "Delete",
    );
    expect(textOf(d.Quiet)).toBe("true");
    const objs = listOf(d.Object);
    expect(objs.map((o) => textOf(o.Key))).toEqual(["a&b\nc", "d <e>"]);
    expect(textOf(objs[1].VersionId)).toBe("null");
  });
  test("a single <Part> is still a list", () => {
    const d = parseXml(`<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"x"</ETag></Part></CompleteMultipartUpload>`, "CompleteMultipartUpload");
    expect(listOf(d.Part).length).toBe(1);
  });
  test("entity declarations (billion laughs, external entities) are refused as MalformedXML", () => {
    const laughs = `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><Delete><Object><Key>&lol2;</Key></Object></Delete>`;
    expect(code(() => parseXml(laughs, "Delete"))).toBe("MalformedXML");
    const xxe = `<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><Delete><Object><Key>&x;</Key></Object></Delete>`;
    expect(code(() => parseXml(xxe, "Delete"))).toBe("MalformedXML");
  });
  test("malformed documents, wrong roots and undeclared entities are MalformedXML", () => {
    expect(code(() => parseXml(`<Delete><Object><Key>a</Object></Delete>`, "Delete"))).toBe("MalformedXML");
    expect(code(() => parseXml(`not xml at all`, "Delete"))).toBe("MalformedXML");
    expect(code(() => parseXml(``, "Delete"))).toBe("MalformedXML");
    expect(code(() => parseXml(`<Other/>`, "Delete"))).toBe("MalformedXML");
  });
  test("renderXml escapes text and repeats arrays", () => {
    const x = renderXml("ListBucketResult", { Name: "b", Contents: [{ Key: "a<&>" }, { Key: "z" }], Skip: undefined });
    expect(x).toContain(`<Contents><Key>a&lt;&amp;&gt;</Key></Contents><Contents><Key>z</Key></Contents>`);
    expect(x).not.toContain("Skip");
    const back = parseXml(x, "ListBucketResult");
    expect((back.Contents as unknown as { Key: string }[]).length).toBe(2);
  });
});

describe("checksums", () => {
  const fox = new TextEncoder().encode("The quick brown fox jumps over the lazy dog");
  test("crc32 / crc32c / sha256 as base64 big-endian, incremental", () => {
    const c = createChecksum("crc32");
    c.update(fox.subarray(0, 10));
    c.update(fox.subarray(10));
    expect(Buffer.from(c.digestBase64(), "base64").toString("hex")).toBe("414fa339");
    const cc = createChecksum("crc32c");
    cc.update(fox.subarray(0, 3));
    cc.update(fox.subarray(3));
    expect(Buffer.from(cc.digestBase64(), "base64").toString("hex")).toBe("22620404");
    const s = createChecksum("sha256");
    s.update(fox);
    expect(Buffer.from(s.digestBase64(), "base64").toString("hex")).toBe("d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592");
  });
  test("unsupported algorithm is refused", () => {
    expect(code(() => createChecksum("crc64nvme"))).toBe("InvalidRequest");
  });
  test("multipart ETag is md5 of the binary part md5s with -N", () => {
    const m1 = new Bun.CryptoHasher("md5").update("a").digest("hex");
    const m2 = new Bun.CryptoHasher("md5").update("b").digest("hex");
    const want = new Bun.CryptoHasher("md5").update(Buffer.concat([Buffer.from(m1, "hex"), Buffer.from(m2, "hex")])).digest("hex");
    expect(multipartEtag([m1, m2])).toBe(`${want}-2`);
    expect(compositeChecksum("crc32", ["AAAAAA==", "AAAAAA=="]).endsWith("-2")).toBe(true);
  });
});

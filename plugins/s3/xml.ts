/** XML for the S3 API: request bodies parsed with fast-xml-parser (no DTDs, so no entity expansion), response documents rendered with escaping. */
import { XMLParser, XMLValidator } from "fast-xml-parser";
import { S3Error, xmlEscape } from "./errors.ts";

/** The S3 XML namespace. */
export const S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/";

/** Largest XML request body accepted, bytes (DeleteObjects with 1000 keys of 1024 bytes fits). */
export const MAX_XML_BYTES = 2 * 1024 * 1024;

/** Element names that are lists in the request documents we accept. */
const LIST_TAGS = new Set(["Object", "Part"]);

const parser = new XMLParser({
  ignoreAttributes: true,
  ignoreDeclaration: true,
  ignorePiTags: true,
  removeNSPrefix: true,
  parseTagValue: false,
  trimValues: false,
  // Only the five predefined entities and character references are decoded: a DOCTYPE is refused before
  // parsing, so no entity can be declared (no "billion laughs", no external entities).
  processEntities: { enabled: true, maxEntityCount: 0, maxTotalExpansions: 100000, maxExpandedLength: MAX_XML_BYTES },
  htmlEntities: true, // character references (`&#x0A;`); fixed replacements, no expansion
  isArray: (name) => LIST_TAGS.has(name),
});

/** A parsed element: text, nested elements, or lists of them (`Object`, `Part` are always arrays). */
export type XmlNode = string | { [name: string]: XmlNode | XmlNode[] };

/**
 * Parses an S3 request document and returns its root element's content, checking the root name.
 * @throws S3Error MalformedXML on invalid XML, a DOCTYPE/ENTITY declaration, or another root element
 */
export function parseXml(text: string, root: string): Record<string, XmlNode | XmlNode[]> {
  if (/<!DOCTYPE|<!ENTITY/i.test(text)) throw new S3Error("MalformedXML", "XML documents with a DOCTYPE or ENTITY declaration are not accepted.");
  if (text.trim() === "") throw new S3Error("MalformedXML");
  const valid = XMLValidator.validate(text);
  if (valid !== true) throw new S3Error("MalformedXML", `The XML you provided was not well-formed: ${valid.err.msg}`);
  let doc: Record<string, unknown>;
  try {
    doc = parser.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new S3Error("MalformedXML", `The XML you provided was not well-formed: ${(e as Error).message}`);
  }
  const r = doc[root];
  if (r === undefined) throw new S3Error("MalformedXML", `expected a <${root}> document`);
  if (r === "" || typeof r !== "object") return {};
  return r as Record<string, XmlNode | XmlNode[]>;
}

/** Text of a child element, or undefined. Nested elements are not text: MalformedXML. */
export function textOf(node: XmlNode | XmlNode[] | undefined): string | undefined {
  if (node === undefined) return undefined;
  if (typeof node === "string") return node;
  if (Array.isArray(node)) throw new S3Error("MalformedXML", "unexpected repeated element");
  if (Object.keys(node).length === 0) return "";
  throw new S3Error("MalformedXML", "unexpected nested element");
}

/** Children as a list (for `Object`, `Part`). */
export function listOf(node: XmlNode | XmlNode[] | undefined): Record<string, XmlNode | XmlNode[]>[] {
  if (node === undefined) return [];
  const arr = Array.isArray(node) ? node : [node];
  return arr.map((n) => (typeof n === "string" ? {} : (n as Record<string, XmlNode | XmlNode[]>)));
}

/** A value for {@link renderXml}: text, a nested element map, a list (repeated element), or undefined (omitted). */
export type XmlValue = string | number | boolean | undefined | null | XmlObject | XmlValue[];
/** Child elements for {@link renderXml}: element name → value, rendered in key order. */
export interface XmlObject {
  [name: string]: XmlValue;
}

function renderValue(name: string, v: XmlValue): string {
  if (v === undefined || v === null) return "";
  if (Array.isArray(v)) return v.map((x) => renderValue(name, x)).join("");
  if (typeof v === "object") return `<${name}>${renderChildren(v)}</${name}>`;
  return `<${name}>${xmlEscape(String(v))}</${name}>`;
}

function renderChildren(o: XmlObject): string {
  let s = "";
  for (const [k, v] of Object.entries(o)) s += renderValue(k, v);
  return s;
}

/**
 * Renders a response document `<root xmlns="…S3 ns…">…</root>` with an XML declaration. Keys are element
 * names in order; arrays repeat the element; undefined/null are omitted; text is escaped. `ns: false` omits `xmlns`.
 */
export function renderXml(root: string, body: XmlObject, ns = true): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<${root}${ns ? ` xmlns="${S3_NS}"` : ""}>${renderChildren(body)}</${root}>`;
}

/** An XML response with `application/xml` and the given status/headers. */
export function xmlResponse(root: string, body: XmlObject, headers: Record<string, string> = {}, status = 200): Response {
  return new Response(renderXml(root, body), { status, headers: { "content-type": "application/xml", ...headers } });
}

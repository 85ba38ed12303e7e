/**
 * deb822 control data (specs/apt.md §4): paragraphs of `Name: value` fields separated by blank lines, continuation
 * lines starting with a space or tab. Used for .deb `control` files, Packages stanzas and Release files. Pure: no
 * core imports (also loaded by the worker pool).
 */

/** One field of a paragraph, in document order. */
export interface Field {
  /** Field name as written (`Package`, `SHA256`); compared case-insensitively. */
  name: string;
  /**
   * Value: the text after `Name:` with the first line's leading whitespace removed; continuation lines follow after
   * `\n` with their leading space kept (` long description`, ` <hex> <size> <path>`). Trailing whitespace trimmed.
   */
  value: string;
}

/** A paragraph: its fields in order. */
export type Paragraph = Field[];

/** Thrown for text that is not deb822 (a line that is neither a field nor a continuation). */
export class Deb822Error extends Error {
  override name = "Deb822Error";
}

const FIELD = /^([!-9;-~][!-9;-~]*):(.*)$/;

/**
 * Parses deb822 text into paragraphs. Blank (whitespace-only) lines separate paragraphs; lines starting with `#` at
 * the start of a field are comments and skipped; CRLF accepted.
 * @throws Deb822Error on a continuation line before any field or a line that is not `Name: value`
 */
export function parseDeb822(text: string): Paragraph[] {
  const out: Paragraph[] = [];
  let cur: Paragraph = [];
  let last: Field | undefined;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i];
    if (line.endsWith("\r")) line = line.slice(0, -1);
    if (line.trim() === "") {
      if (cur.length) out.push(cur);
      cur = [];
      last = undefined;
      continue;
    }
    const c = line.charCodeAt(0);
    if (c === 0x20 || c === 0x09) {
      if (!last) throw new Deb822Error(`line ${i + 1}: continuation line without a field`);
      last.value += "\n" + line.trimEnd();
      continue;
    }
    if (c === 0x23) continue; // # comment
    const m = FIELD.exec(line);
    if (!m) throw new Deb822Error(`line ${i + 1}: expected "Name: value"`);
    last = { name: m[1], value: m[2].trim() };
    cur.push(last);
  }
  if (cur.length) out.push(cur);
  return out;
}

/** The value of field `name` (case-insensitive) in a paragraph, or undefined. */
export function fieldValue(p: Paragraph, name: string): string | undefined {
  const n = name.toLowerCase();
  for (const f of p) if (f.name.toLowerCase() === n) return f.value;
  return undefined;
}

/** Renders one paragraph (no trailing blank line): `Name: value` lines, multi-line values as stored. */
export function renderParagraph(p: Paragraph): string {
  let s = "";
  for (const f of p) {
    const nl = f.value.indexOf("\n");
    const first = nl < 0 ? f.value : f.value.slice(0, nl);
    s += f.name + ":" + (first === "" ? "" : " " + first) + (nl < 0 ? "" : f.value.slice(nl)) + "\n";
  }
  return s;
}

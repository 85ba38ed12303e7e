/** PEP 691 content negotiation for simple-index pages: Accept q-values, `latest` aliases, `?format=`. */

/** The representations a simple page is served in. `text-html` is the legacy alias of `html` (PEP 691). */
export type Representation = "json" | "html" | "text-html";

/** Exact Content-Type sent for each representation (pip accepts only these, specs/pypi.md §3). */
export const CONTENT_TYPES: Record<Representation, string> = {
  json: "application/vnd.pypi.simple.v1+json",
  html: "application/vnd.pypi.simple.v1+html",
  "text-html": "text/html; charset=utf-8",
};

/** Server offers in tie-break order: with equal q, `text/html` wins (as PyPI does for `*\/*` or no Accept). */
const OFFERS: { rep: Representation; type: string; aliases: string[] }[] = [
  { rep: "text-html", type: "text/html", aliases: [] },
  { rep: "html", type: "application/vnd.pypi.simple.v1+html", aliases: ["application/vnd.pypi.simple.latest+html"] },
  { rep: "json", type: "application/vnd.pypi.simple.v1+json", aliases: ["application/vnd.pypi.simple.latest+json"] },
];

interface MediaRange {
  type: string;
  q: number;
}

/** Parses an Accept header into media ranges with q (0..1); malformed ranges are dropped. */
export function parseAccept(accept: string): MediaRange[] {
  const out: MediaRange[] = [];
  for (const part of accept.split(",")) {
    const [rawType, ...params] = part.split(";");
    const type = rawType.trim().toLowerCase();
    if (!/^([a-z0-9!#$&^_.+-]+\/([a-z0-9!#$&^_.+-]+|\*)|\*\/\*)$/.test(type)) continue;
    let q = 1;
    for (const p of params) {
      const [k, v] = p.split("=").map((s) => s.trim().toLowerCase());
      if (k === "q") {
        if (v === undefined || !/^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(v)) {
          q = -1;
          break;
        }
        q = Number(v);
      }
    }
    if (q >= 0) out.push({ type, q });
  }
  return out;
}

/**
 * Chooses the representation of a simple page (PEP 691): `format` (the `?format=` query value, decoded; a `+`
 * decoded to a space is restored) overrides `accept`; no Accept means `*\/*`. Each offer takes the q of its most specific matching range (exact type or
 * its `latest` alias > `type/*` > `*\/*`); the highest q > 0 wins, ties go to text/html, then v1+html, then JSON.
 * @returns the representation, or null when nothing is acceptable (answer 406)
 */
export function negotiate(accept: string | null | undefined, format?: string | null): Representation | null {
  // `?format=application/vnd.pypi.simple.v1+json` written unencoded (as PEP 691 shows it) arrives with the `+`
  // decoded to a space by form decoding; no media type contains a space, so put the `+` back.
  if (format) format = format.replace(/(application\/vnd\.pypi\.simple\.(?:v1|latest)) (json|html)\b/gi, "$1+$2");
  const header = format != null && format !== "" ? format : accept == null || accept.trim() === "" ? "*/*" : accept;
  const ranges = parseAccept(header);
  let best: Representation | null = null;
  let bestQ = 0;
  for (const offer of OFFERS) {
    const [major] = offer.type.split("/");
    let spec = 0;
    let q = 0;
    for (const r of ranges) {
      let s = 0;
      if (r.type === offer.type || offer.aliases.includes(r.type)) s = 3;
      else if (r.type === `${major}/*`) s = 2;
      else if (r.type === "*/*") s = 1;
      if (s > spec || (s === spec && s > 0 && r.q > q)) {
        spec = s;
        q = r.q;
      }
    }
    if (spec > 0 && q > bestQ) {
      best = offer.rep;
      bestQ = q;
    }
  }
  return best;
}

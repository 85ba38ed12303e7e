/** `WWW-Authenticate` challenges (RFC 9110 §11.6.1, distribution token spec): building ours, parsing upstreams'. */

/** A parsed challenge: scheme (lower-case) and its auth-params (lower-case names). */
export interface Challenge {
  /** e.g. `bearer`, `basic`. */
  scheme: string;
  /** auth-params by lower-case name, values unquoted (`realm`, `service`, `scope`, …); a token68 is under `token68`. */
  params: Record<string, string>;
}

function quote(v: string): string {
  return `"${v.replace(/["\\]/g, (c) => "\\" + c)}"`;
}

/**
 * Our Bearer challenge (distribution token spec step 1):
 * `Bearer realm="<realm>",service="<service>"[,scope="<scope>"][,error="<error>"]`.
 * @param scope e.g. `repository:team/app:pull,push` (several joined by a space)
 * @param error `invalid_token` / `insufficient_scope` (RFC 6750 §3.1), optional
 */
export function bearerChallenge(realm: string, service: string, scope?: string, error?: string): string {
  let s = `Bearer realm=${quote(realm)},service=${quote(service)}`;
  if (scope) s += `,scope=${quote(scope)}`;
  if (error) s += `,error=${quote(error)}`;
  return s;
}

/**
 * Parses a `WWW-Authenticate` value into challenges. Handles several challenges in one header, quoted strings with
 * `\` escapes, and token68 values. Unparseable input yields what could be read (possibly nothing).
 */
export function parseChallenges(header: string | null): Challenge[] {
  const out: Challenge[] = [];
  if (!header) return out;
  const s = header;
  let i = 0;
  const n = s.length;
  const skipWs = () => {
    while (i < n && (s[i] === " " || s[i] === "\t")) i++;
  };
  const token = () => {
    const start = i;
    while (i < n && /[!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(s[i])) i++;
    return s.slice(start, i);
  };
  let current: Challenge | null = null;
  while (i < n) {
    skipWs();
    if (s[i] === ",") {
      i++;
      continue;
    }
    const word = token();
    if (!word) {
      i++;
      continue;
    }
    skipWs();
    if (s[i] === "=" && current) {
      // auth-param of the current challenge (a token68 ending in "=" never reaches here with a name before it)
      i++;
      skipWs();
      let value = "";
      if (s[i] === '"') {
        i++;
        while (i < n && s[i] !== '"') {
          if (s[i] === "\\" && i + 1 < n) i++;
          value += s[i++];
        }
        i++;
      } else value = token();
      current.params[word.toLowerCase()] = value;
      continue;
    }
    // a new challenge: scheme [token68 | auth-params]
    current = { scheme: word.toLowerCase(), params: {} };
    out.push(current);
    skipWs();
    // token68 (e.g. "Basic dXNlcg==") directly after the scheme
    const t68 = /^[A-Za-z0-9\-._~+/]+=*/.exec(s.slice(i));
    if (t68 && !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\s*=[^=]/.test(s.slice(i))) {
      current.params["token68"] = t68[0];
      i += t68[0].length;
    }
  }
  return out;
}

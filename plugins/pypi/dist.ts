/**
 * Distribution files of uploads (specs/pypi.md §9): wheel and sdist file names (binary distribution format spec,
 * PEP 625), PEP 440 version canonicalisation, core metadata headers, and the one-pass inspection of an uploaded file
 * (digests + the wheel's `*.dist-info/METADATA`, read with fflate). Pure functions without core imports, so the
 * worker pool can run {@link inspectDistribution} for big files.
 */
import { unzipSync } from "fflate";
import { isValidName, normalizeName } from "./names.ts";

/** A parsed distribution file name. */
export interface DistFilename {
  kind: "wheel" | "sdist";
  /** Normalized project name (PEP 503) of the name part. */
  project: string;
  /** The version part as written in the file name. */
  version: string;
  /** `.whl`, `.tar.gz` or `.zip`. */
  extension: ".whl" | ".tar.gz" | ".zip";
}

/** Characters a stored file name may contain (also what makes it safe as one URL path segment without encoding). */
const FILENAME_RE = /^[A-Za-z0-9][A-Za-z0-9._+!-]*$/;
/** Longest file name accepted, characters. */
export const MAX_FILENAME_LENGTH = 255;

/**
 * PEP 440 version grammar (public part, then an optional local label), case-insensitive, with the spellings the
 * spec's normalisation rules accept (`v` prefix, `alpha`/`pre`/`preview`/`rev`/`r`, `-N` post releases, `_`/`-`/`.`
 * separators).
 */
const VERSION_RE =
  /^v?(?:(\d+)!)?(\d+(?:\.\d+)*)(?:[-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?(\d+)?)?(?:-(\d+)|[-_.]?(post|rev|r)[-_.]?(\d+)?)?(?:[-_.]?(dev)[-_.]?(\d+)?)?(?:\+([a-z0-9]+(?:[-_.][a-z0-9]+)*))?$/i;

/**
 * The canonical form of a PEP 440 version, for comparing two spellings of one version: epoch omitted when 0,
 * release numbers without leading zeros and with trailing `.0` components removed (`1.0.0` ≡ `1`), `a`/`b`/`rc`
 * pre-releases, `.postN`, `.devN`, local label lower-cased with `.` separators.
 * @returns the canonical string, or null when `v` is not a PEP 440 version
 * @example canonicalVersion("1.0-1") === "1.post1"; canonicalVersion("V2.0RC1") === "2rc1"
 */
export function canonicalVersion(v: string): string | null {
  const m = VERSION_RE.exec(v.trim());
  if (!m) return null;
  const [, epoch, release, preL, preN, postDash, postL, postN, devL, devN, local] = m;
  const nums = release.split(".").map((n) => BigInt(n).toString());
  while (nums.length > 1 && nums[nums.length - 1] === "0") nums.pop();
  let out = epoch !== undefined && BigInt(epoch) !== 0n ? `${BigInt(epoch)}!` : "";
  out += nums.join(".");
  if (preL !== undefined) {
    const l = preL.toLowerCase();
    out += (l === "alpha" ? "a" : l === "beta" ? "b" : l === "c" || l === "pre" || l === "preview" ? "rc" : l) + BigInt(preN ?? "0");
  }
  if (postDash !== undefined) out += `.post${BigInt(postDash)}`;
  else if (postL !== undefined) out += `.post${BigInt(postN ?? "0")}`;
  if (devL !== undefined) out += `.dev${BigInt(devN ?? "0")}`;
  if (local !== undefined) out += "+" + local.toLowerCase().replace(/[-_]/g, ".");
  return out;
}

/**
 * Parses a distribution file name: a wheel `{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl` or an sdist
 * `{name}-{version}.tar.gz` / `.zip` (the name part of a legacy sdist may itself contain `-`: every split is tried
 * and the one whose name and version match `expect` wins, else the last `-`).
 * @param expect the upload's `name` and `version`, to choose among the splits of a legacy sdist name
 * @returns the parsed name, or a reason string when the file name is not a valid wheel or sdist name
 */
export function parseDistFilename(filename: string, expect?: { name: string; version: string }): DistFilename | string {
  if (filename.length > MAX_FILENAME_LENGTH) return "file name too long";
  if (!FILENAME_RE.test(filename)) return "file name contains characters other than letters, digits and ._+!-";
  const lower = filename.toLowerCase();
  if (lower.endsWith(".whl")) {
    const parts = filename.slice(0, -4).split("-");
    if (parts.length !== 5 && parts.length !== 6) return "wheel file name must be {name}-{version}(-{build})?-{python}-{abi}-{platform}.whl";
    if (!/^[A-Za-z0-9](?:[A-Za-z0-9._]*[A-Za-z0-9])?$/.test(parts[0])) return "invalid project name in wheel file name";
    if (parts.length === 6 && !/^\d[A-Za-z0-9_.]*$/.test(parts[2])) return "invalid build tag in wheel file name";
    for (const t of parts.slice(-3)) if (!/^[A-Za-z0-9_.]+$/.test(t)) return "invalid compatibility tag in wheel file name";
    return { kind: "wheel", project: normalizeName(parts[0]), version: parts[1], extension: ".whl" };
  }
  const extension = lower.endsWith(".tar.gz") ? ".tar.gz" : lower.endsWith(".zip") ? ".zip" : undefined;
  if (!extension) return "not a wheel (.whl) or sdist (.tar.gz, .zip) file name";
  const stem = filename.slice(0, -extension.length);
  const splits: DistFilename[] = [];
  for (let i = stem.indexOf("-"); i !== -1; i = stem.indexOf("-", i + 1)) {
    const name = stem.slice(0, i);
    const version = stem.slice(i + 1);
    if (isValidName(name) && version !== "") splits.push({ kind: "sdist", project: normalizeName(name), version, extension });
  }
  if (splits.length === 0) return "sdist file name must be {name}-{version}.tar.gz or .zip";
  if (expect) {
    const p = normalizeName(expect.name);
    const v = canonicalVersion(expect.version);
    const hit = splits.find((s) => s.project === p && v !== null && canonicalVersion(s.version) === v);
    if (hit) return hit;
  }
  return splits[splits.length - 1];
}

/**
 * The header fields of a core metadata document (`METADATA`, `PKG-INFO`: RFC 822 style, headers end at the first
 * empty line; continuation lines are appended). Repeated fields keep every value.
 * @returns lower-cased field name → values in order
 */
export function parseMetadataHeaders(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let last: string[] | undefined;
  for (const line of text.split(/\r?\n/)) {
    if (line === "") break;
    if (/^[ \t]/.test(line) && last) {
      last[last.length - 1] += "\n" + line.trim();
      continue;
    }
    const i = line.indexOf(":");
    if (i <= 0) continue;
    const k = line.slice(0, i).trim().toLowerCase();
    if (!out.has(k)) out.set(k, []);
    last = out.get(k)!;
    last.push(line.slice(i + 1).trim());
  }
  return out;
}

/** Digest algorithms an upload may declare (form field `<name>_digest`), as Bun.CryptoHasher spells them. */
export const UPLOAD_DIGESTS = { sha256: "sha256", md5: "md5", blake2_256: "blake2b256" } as const;
/** A form digest name: `sha256`, `md5` or `blake2_256`. */
export type UploadDigest = keyof typeof UPLOAD_DIGESTS;

/** Largest `METADATA` extracted from a wheel, bytes (anything bigger is refused as a likely zip bomb). */
export const MAX_METADATA_BYTES = 16 * 1024 * 1024;

/** Input of {@link inspectDistribution}; structured-cloneable. */
export interface InspectInput {
  /** The whole uploaded file. */
  bytes: Uint8Array;
  /** Its parsed name. */
  dist: DistFilename;
  /** Digests to compute besides sha256. */
  algorithms: UploadDigest[];
}

/** Output of {@link inspectDistribution}. */
export interface InspectOutput {
  /** The input bytes, handed back (moved, not copied, when the pool ran the task). */
  bytes: Uint8Array;
  /** Lowercase hex digests: sha256 always, plus the ones asked for. */
  digests: Partial<Record<UploadDigest, string>> & { sha256: string };
  /** Wheels: the content of `<dist-info>/METADATA`. */
  metadata?: Uint8Array;
  /** Why the file is not a valid distribution of its kind (the upload is then refused with 400). */
  problem?: string;
}

/**
 * Hashes an uploaded file and checks it is what its name says: a wheel must be a zip archive with exactly one
 * top-level `*.dist-info/METADATA` (preferring `{name}-{version}.dist-info` when there are several) of at most
 * {@link MAX_METADATA_BYTES}, whose `Name` and `Version` match the file name; an sdist must start with the gzip
 * (`.tar.gz`) or zip (`.zip`) signature. Never throws for bad input: `problem` says what is wrong.
 */
export function inspectDistribution(i: InspectInput): InspectOutput {
  const digests = { sha256: new Bun.CryptoHasher("sha256").update(i.bytes).digest("hex") } as InspectOutput["digests"];
  for (const a of i.algorithms) if (a !== "sha256") digests[a] = new Bun.CryptoHasher(UPLOAD_DIGESTS[a]).update(i.bytes).digest("hex");
  const out: InspectOutput = { bytes: i.bytes, digests };
  const b = i.bytes;
  if (i.dist.kind === "sdist") {
    const gz = b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b;
    const zip = b.length >= 4 && b[0] === 0x50 && b[1] === 0x4b && b[2] === 0x03 && b[3] === 0x04;
    if (i.dist.extension === ".tar.gz" ? !gz : !zip) out.problem = `not a ${i.dist.extension === ".tar.gz" ? "gzip" : "zip"} file`;
    return out;
  }
  let entries: Record<string, Uint8Array>;
  let tooBig = false;
  try {
    entries = unzipSync(b, {
      filter: (f) => {
        if (!/^[^/]+\.dist-info\/METADATA$/.test(f.name)) return false;
        if (f.originalSize > MAX_METADATA_BYTES) {
          tooBig = true;
          return false;
        }
        return true;
      },
    });
  } catch (e) {
    out.problem = `not a valid zip archive (${e instanceof Error ? e.message : String(e)})`;
    return out;
  }
  if (tooBig) {
    out.problem = `METADATA is larger than ${MAX_METADATA_BYTES} bytes`;
    return out;
  }
  let names = Object.keys(entries);
  if (names.length === 0) {
    out.problem = "wheel contains no .dist-info/METADATA";
    return out;
  }
  if (names.length > 1) {
    const want = canonicalVersion(i.dist.version);
    names = names.filter((n) => {
      const dir = n.slice(0, n.indexOf(".dist-info/"));
      const dash = dir.lastIndexOf("-");
      return dash > 0 && normalizeName(dir.slice(0, dash)) === i.dist.project && canonicalVersion(dir.slice(dash + 1)) === want;
    });
    if (names.length !== 1) {
      out.problem = "wheel contains several .dist-info directories";
      return out;
    }
  }
  const meta = entries[names[0]];
  const headers = parseMetadataHeaders(new TextDecoder().decode(meta));
  const name = headers.get("name")?.[0];
  const version = headers.get("version")?.[0];
  if (name === undefined || normalizeName(name) !== i.dist.project) out.problem = `METADATA Name ${JSON.stringify(name ?? null)} does not match the file name`;
  else if (version === undefined || canonicalVersion(version) === null || canonicalVersion(version) !== canonicalVersion(i.dist.version))
    out.problem = `METADATA Version ${JSON.stringify(version ?? null)} does not match the file name`;
  else out.metadata = meta;
  return out;
}

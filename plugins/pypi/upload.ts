/**
 * The legacy upload API twine speaks (specs/pypi.md §9): reading the multipart/form-data body within the size limit and
 * validating its fields against the file name. The file's contents are checked later (dist.ts `inspectDistribution`).
 */
import { readBodyLimited, VaultError } from "../../core/plugin.ts";
import { canonicalVersion, parseDistFilename, UPLOAD_DIGESTS, type DistFilename, type UploadDigest } from "./dist.ts";
import { isValidName, normalizeName } from "./names.ts";
import { badUpload, uploadTooLarge } from "./errors.ts";

/** Default `maxUploadBytes`: 100 MiB. */
export const DEFAULT_MAX_UPLOAD_BYTES = 100 * 1024 * 1024;
/**
 * Bytes a request body may carry beyond `maxUploadBytes` for the other form fields (twine sends the long description,
 * classifiers, …): 4 MiB.
 */
export const FORM_OVERHEAD_BYTES = 4 * 1024 * 1024;

/** Hex length of each declared digest. */
const DIGEST_HEX_LENGTH: Record<UploadDigest, number> = { sha256: 64, md5: 32, blake2_256: 64 };

/** A validated upload form. */
export interface UploadForm {
  /** The distribution file name (the `content` part's filename). */
  filename: string;
  dist: DistFilename;
  /** `name` as sent (the project's display spelling). */
  name: string;
  /** Normalized project name. */
  project: string;
  /** `version` as sent. */
  version: string;
  filetype: "sdist" | "bdist_wheel";
  /** `requires_python`, when non-empty. */
  requiresPython?: string;
  /** Declared digests (`sha256_digest`, `md5_digest`, `blake2_256_digest`), lowercase hex. */
  digests: Partial<Record<UploadDigest, string>>;
  /** The file (buffered by the form parser). */
  file: Blob;
}

function field(form: FormData, name: string): string | undefined {
  const v = form.get(name);
  return typeof v === "string" ? v : undefined;
}

/**
 * Reads and validates a legacy upload (`POST`, multipart/form-data): `:action=file_upload`, `protocol_version` 1 when
 * given, `name`, `version` (PEP 440), `filetype` (`sdist` | `bdist_wheel`), the `content` file part, optional
 * `sha256_digest`/`md5_digest`/`blake2_256_digest` and `requires_python`; other metadata fields are ignored. The file
 * name must be a wheel or sdist name of the same kind whose normalized project name and version equal `name` and
 * `version`.
 *
 * The body is buffered (Bun's form parser): a Content-Length over `maxUploadBytes` + {@link FORM_OVERHEAD_BYTES} is
 * refused before reading, a chunked body as soon as it grows past that, and a file over `maxUploadBytes` after parsing.
 * @throws VaultError 400 (VAULT_BAD_REQUEST, the message says which field is wrong), 413 (VAULT_TOO_LARGE)
 */
export async function readUploadForm(req: Request, maxUploadBytes: number): Promise<UploadForm> {
  const ct = req.headers.get("content-type") ?? "";
  if (!/^multipart\/form-data\s*;/i.test(ct)) throw badUpload("expected a multipart/form-data body (the legacy upload API, as twine sends it)");
  const limit = maxUploadBytes + FORM_OVERHEAD_BYTES;
  const clHeader = req.headers.get("content-length");
  const cl = clHeader !== null && /^\d{1,15}$/.test(clHeader) ? Number(clHeader) : null;
  if (cl !== null && cl > limit) throw uploadTooLarge(maxUploadBytes);
  let form: FormData;
  try {
    form = cl !== null ? await req.formData() : await new Response((await readBodyLimited(req, limit, () => uploadTooLarge(maxUploadBytes))) as BodyInit, { headers: { "content-type": ct } }).formData();
  } catch (e) {
    if (e instanceof VaultError) throw e;
    throw badUpload("malformed multipart/form-data body");
  }

  const action = field(form, ":action");
  if (action !== "file_upload") throw badUpload(action === undefined ? "missing :action (expected file_upload)" : `unsupported :action ${JSON.stringify(action.slice(0, 40))}`);
  const protocol = field(form, "protocol_version");
  if (protocol !== undefined && protocol !== "1") throw badUpload(`unsupported protocol_version ${JSON.stringify(protocol.slice(0, 10))}`);
  const name = field(form, "name")?.trim();
  if (!name) throw badUpload("missing name");
  if (!isValidName(name)) throw badUpload(`invalid project name ${JSON.stringify(name.slice(0, 100))}`);
  const version = field(form, "version")?.trim();
  if (!version) throw badUpload("missing version");
  if (version.length > 128 || canonicalVersion(version) === null) throw badUpload(`invalid version ${JSON.stringify(version.slice(0, 100))} (PEP 440)`);
  const filetype = field(form, "filetype");
  if (filetype !== "sdist" && filetype !== "bdist_wheel")
    throw badUpload(filetype === undefined ? "missing filetype" : `unsupported filetype ${JSON.stringify(filetype.slice(0, 40))} (sdist or bdist_wheel)`);

  const content = form.get("content");
  if (content === null || typeof content === "string") throw badUpload("missing content (the distribution file)");
  const filename = (content as File).name ?? "";
  if (!filename) throw badUpload("the content part has no file name");
  const dist = parseDistFilename(filename, { name, version });
  if (typeof dist === "string") throw badUpload(`invalid file name ${JSON.stringify(filename.slice(0, 255))}: ${dist}`);
  if ((dist.kind === "wheel") !== (filetype === "bdist_wheel")) throw badUpload(`filetype ${filetype} does not match the file name ${filename}`);
  const project = normalizeName(name);
  if (dist.project !== project) throw badUpload(`file name ${filename} does not belong to project ${name}`);
  if (canonicalVersion(dist.version) !== canonicalVersion(version)) throw badUpload(`file name ${filename} does not match version ${version}`);
  if (content.size > maxUploadBytes) throw uploadTooLarge(maxUploadBytes);
  if (content.size === 0) throw badUpload("the file is empty");

  const digests: Partial<Record<UploadDigest, string>> = {};
  for (const alg of Object.keys(UPLOAD_DIGESTS) as UploadDigest[]) {
    const v = field(form, `${alg}_digest`)?.trim();
    if (!v) continue;
    if (!new RegExp(`^[0-9a-fA-F]{${DIGEST_HEX_LENGTH[alg]}}$`).test(v)) throw badUpload(`${alg}_digest is not ${DIGEST_HEX_LENGTH[alg]} hex digits`);
    digests[alg] = v.toLowerCase();
  }
  const rp = field(form, "requires_python")?.trim();
  if (rp && (rp.length > 1000 || /[\x00-\x1f\x7f]/.test(rp))) throw badUpload("invalid requires_python");

  const out: UploadForm = { filename, dist, name, project, version, filetype, digests, file: content };
  if (rp) out.requiresPython = rp;
  return out;
}

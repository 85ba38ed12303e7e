/** Pool tasks that hash files: sha256 of a file, and several digests of one file in a single read. */

/** Hash algorithms `digests` accepts (names as Bun.CryptoHasher spells them). */
export type DigestAlgorithm = "sha256" | "md5" | "sha1" | "sha512";

const ALGORITHMS: ReadonlySet<string> = new Set<DigestAlgorithm>(["sha256", "md5", "sha1", "sha512"]);

/**
 * sha256 of a file, streamed (constant memory whatever the size).
 * Runs inline or in the pool (`pool.run("sha256File", { path })`).
 * @param i.path absolute path of a local file
 * @returns `hex` lowercase sha256, `sizeBytes` bytes read
 * @throws Error with `code: "ENOENT"` when the file does not exist (other fs errors likewise)
 */
export async function sha256File(i: { path: string }): Promise<{ hex: string; sizeBytes: number }> {
  const hasher = new Bun.CryptoHasher("sha256");
  let sizeBytes = 0;
  for await (const chunk of Bun.file(i.path).stream()) {
    hasher.update(chunk);
    sizeBytes += chunk.byteLength;
  }
  return { hex: hasher.digest("hex"), sizeBytes };
}

/**
 * Several digests of one file in a single streamed pass (e.g. conda's md5 + sha256, APT's MD5Sum/SHA1/SHA256/SHA512).
 * @param i.path absolute path of a local file
 * @param i.algorithms any of `sha256`, `md5`, `sha1`, `sha512` (duplicates ignored; at least one)
 * @returns lowercase hex digest per requested algorithm
 * @throws RangeError on an unknown or empty algorithm list; Error with `code: "ENOENT"` when the file does not exist
 */
export async function digests<A extends DigestAlgorithm>(i: { path: string; algorithms: A[] }): Promise<Record<A, string>> {
  const algs = [...new Set(i.algorithms)];
  if (algs.length === 0) throw new RangeError("digests: no algorithm requested");
  for (const a of algs) if (!ALGORITHMS.has(a)) throw new RangeError(`digests: unknown algorithm "${a}" (use sha256, md5, sha1, sha512)`);
  const hashers = algs.map((a) => new Bun.CryptoHasher(a));
  for await (const chunk of Bun.file(i.path).stream()) for (const h of hashers) h.update(chunk);
  const out = {} as Record<A, string>;
  algs.forEach((a, n) => (out[a] = hashers[n].digest("hex")));
  return out;
}

/** Request bodies read into memory with a size cap (manifests, upload forms): one place for the 413 logic of every plugin. */

/**
 * Reads a request body into one buffer, refusing more than `maxBytes` bytes: a `Content-Length` over the cap is refused
 * before anything is read, and a chunked body as soon as it grows past it (the rest is not read).
 * @param maxBytes largest accepted body, bytes
 * @param tooLarge makes the error thrown (the plugin's own 413 in its ecosystem's format)
 * @returns the body bytes (empty when there is no body)
 * @throws whatever `tooLarge()` returns, when the body is larger than `maxBytes`
 */
export async function readBodyLimited(req: Request, maxBytes: number, tooLarge: () => Error): Promise<Uint8Array> {
  const cl = req.headers.get("content-length");
  if (cl !== null && /^\d+$/.test(cl) && Number(cl) > maxBytes) throw tooLarge();
  if (!req.body) return new Uint8Array(0);
  const parts: Uint8Array[] = [];
  let n = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.byteLength;
    if (n > maxBytes) {
      void reader.cancel().catch(() => {});
      throw tooLarge();
    }
    parts.push(value);
  }
  return Buffer.concat(parts);
}

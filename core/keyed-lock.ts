/** Per-key serialisation of async work inside one process (part of the plugin API: `artifact-vault/plugin`). */

/**
 * Serialises async work per key within this process: read-modify-write of one package's documents by hosted
 * repositories (an upload and a delete of the same project never interleave). Keys are free-form strings; a key's
 * queue is dropped when it drains, so memory is bounded by the keys in use. Across processes or nodes, callers still
 * need the metadata database's own guarantees (a unique row, a conditional update, `atomic`).
 */
export class KeyedLock {
  private tails = new Map<string, Promise<unknown>>();

  /**
   * Runs `fn` after every earlier `run` of the same key has settled (fulfilled or rejected).
   * @returns `fn`'s result; rejects with `fn`'s error (an earlier failure of the same key does not propagate)
   */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, tail);
    try {
      return await next;
    } finally {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

/** Worker-side glue for piscina: move result buffers back instead of copying them, and keep error codes across the thread boundary. */
import type * as PiscinaLib from "piscina";

/** piscina, loaded when a wrapped task first returns (core/pool.ts imports this module for TASK_ERROR on the main thread, where piscina is loaded only once something is offloaded). */
let piscina: typeof PiscinaLib | undefined;

/** Marker of an error flattened by {@link pooled} (structured clone drops `code` and custom fields of Error objects). */
export const TASK_ERROR = "__vaultTaskError";

/** The plain form an error crosses the thread boundary in; core/pool.ts turns it back into an Error. */
export interface FlatTaskError {
  [TASK_ERROR]: true;
  name: string;
  message: string;
  code?: string;
  stack?: string;
}

/** ArrayBuffers directly inside `value` (itself, or its top-level properties / array items) that can be moved. */
function buffersOf(value: unknown): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  const add = (v: unknown) => {
    if (v instanceof ArrayBuffer) out.add(v);
    // Only views that own their whole buffer: a slice of a bigger (possibly shared or cached) buffer is copied.
    else if (ArrayBuffer.isView(v) && v.buffer instanceof ArrayBuffer && v.byteOffset === 0 && v.byteLength === v.buffer.byteLength) out.add(v.buffer);
  };
  add(value);
  if (value && typeof value === "object" && !ArrayBuffer.isView(value) && !(value instanceof ArrayBuffer))
    for (const v of Array.isArray(value) ? value : Object.values(value)) add(v);
  return [...out];
}

/**
 * Wraps a pure task function for the worker entry: its result's ArrayBuffers (top level, or top-level fields such
 * as `{ bytes }`) are moved to the main thread with piscina's `move()`, and a thrown error keeps `name`, `code`
 * and `stack`. Only for workers/index.ts: inline callers use the unwrapped function.
 */
export function pooled<I, O>(fn: (input: I) => O | Promise<O>): (input: I) => Promise<O> {
  return async (input: I) => {
    let result: O;
    try {
      result = await fn(input);
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      const flat: FlatTaskError = { [TASK_ERROR]: true, name: err.name, message: err.message, stack: err.stack };
      const code = (err as { code?: unknown }).code;
      if (typeof code === "string") flat.code = code;
      throw flat;
    }
    const buffers = buffersOf(result);
    if (buffers.length === 0) return result;
    const { move, transferableSymbol, valueSymbol } = (piscina ??= require("piscina") as typeof PiscinaLib);
    return move({ [transferableSymbol]: buffers, [valueSymbol]: result } as never) as O;
  };
}

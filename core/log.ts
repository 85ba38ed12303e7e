/** Structured JSON logs (one object per line on stderr) with levels and child fields. */
import type { Logger } from "./plugin.ts";

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type LogLevel = keyof typeof LEVELS;

/** Field names whose values are never written (defence in depth: callers must not pass secrets anyway). */
const SECRET_FIELD = /pass(word)?|secret|token|authorization|cookie/i;

/**
 * Creates a logger writing JSON lines `{ time, level, msg, ...fields }` to `sink` (default stderr).
 * Lines below `level` are dropped without formatting.
 */
export function createLogger(level: LogLevel = "info", fields: Record<string, unknown> = {}, sink: (line: string) => void = defaultSink): Logger {
  const min = LEVELS[level];
  const emit = (lvl: LogLevel, msg: string, extra?: Record<string, unknown>) => {
    if (LEVELS[lvl] < min) return;
    const rec: Record<string, unknown> = { time: new Date().toISOString(), level: lvl, msg, ...fields };
    if (extra) for (const [k, v] of Object.entries(extra)) rec[k] = SECRET_FIELD.test(k) ? "[redacted]" : v instanceof Error ? v.message : v;
    sink(JSON.stringify(rec));
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (f) => createLogger(level, { ...fields, ...f }, sink),
  };
}

function defaultSink(line: string) {
  process.stderr.write(line + "\n");
}

/** A logger that drops everything (tests, CLI quiet mode). */
export const silentLogger: Logger = createLogger("error", {}, () => {});

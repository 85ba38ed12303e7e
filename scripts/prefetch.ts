#!/usr/bin/env bun
/** Dev wrapper: `bun scripts/prefetch.ts [options] LISTFILE|-` runs the same code as `vault prefetch` (core/cli/commands/prefetch.ts). */
import { run } from "../core/cli/commands/prefetch.ts";

process.exitCode = await run(process.argv.slice(2));

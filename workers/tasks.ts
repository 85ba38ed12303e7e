/**
 * Every pool task, by name, as the plain function it is. core/pool.ts runs these inline (small inputs) or asks
 * the pool to run the export of the same name from workers/index.ts (big inputs). Add a task here AND there;
 * core/pool.test.ts checks the two lists agree.
 */
import { sha256File, digests } from "./checksum.ts";
import { rewriteJson, rewriteUrls } from "./document.ts";
import { pypiSimple } from "../plugins/pypi/task.ts";
import { npmPackument } from "../plugins/npm/task.ts";
import { aptIndex } from "../plugins/apt/task.ts";
import { condaRepodata } from "../plugins/conda/task.ts";

export const tasks = { sha256File, digests, rewriteJson, rewriteUrls, pypiSimple, npmPackument, aptIndex, condaRepodata };

/** Name of a pool task (an export of workers/index.ts). */
export type TaskName = keyof typeof tasks;
/** Input of task `N`. */
export type TaskInput<N extends TaskName> = Parameters<(typeof tasks)[N]>[0];
/** Resolved output of task `N`. */
export type TaskOutput<N extends TaskName> = Awaited<ReturnType<(typeof tasks)[N]>>;

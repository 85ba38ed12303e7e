/**
 * The one worker entry of the piscina pool: every export is a task, selected by piscina's `name` option
 * (`pool.run("sha256File", input)`). Each wraps the pure function of the same name in workers/tasks.ts.
 * Workers never import core/.
 */
import { pooled } from "./transfer.ts";
import { tasks } from "./tasks.ts";

export const sha256File = pooled(tasks.sha256File);
export const digests = pooled(tasks.digests);
export const rewriteJson = pooled(tasks.rewriteJson);
export const rewriteUrls = pooled(tasks.rewriteUrls);
/** The pypi plugin's document task (plugins/pypi/task.ts; pure, imports no core/): simple-page snapshot/render, upload inspection, group merge. */
export const pypiSimple = pooled(tasks.pypiSimple);
/** The npm plugin's packument task (plugins/npm/task.ts; pure, imports no core/): proxy rewrite and lookups, hosted publish checks, edits and renderings, group merges. */
export const npmPackument = pooled(tasks.npmPackument);
/** The apt plugin's index task (plugins/apt/task.ts; pure, imports no core/): pool file hashes listed by a Packages/Sources index. */
export const aptIndex = pooled(tasks.aptIndex);
/** The conda plugin's repodata task (plugins/conda/task.ts; pure, imports no core/): snapshots, derived variants and shards, hosted renders, group merges, package inspection. */
export const condaRepodata = pooled(tasks.condaRepodata);

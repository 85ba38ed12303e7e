/** Permission model (DESIGN.md §6): actions ordered read < write < delete < admin, each implying the ones before it. */
import type { Action } from "../plugin.ts";
import { VaultError } from "../errors.ts";

/** Every action, in implication order. */
export const ACTIONS: readonly Action[] = ["read", "write", "delete", "admin"];

/** Level of an action: read 1, write 2, delete 3, admin 4 (0 = nothing). */
export function actionLevel(a: Action): number {
  return ACTIONS.indexOf(a) + 1;
}

/** Whether `s` names an action. */
export function isAction(s: string): s is Action {
  return (ACTIONS as readonly string[]).includes(s);
}

/**
 * Parses a comma list of actions (`"read,write"`, `"delete"`) into the highest level it grants.
 * Also accepts `none` (0) and `all` (admin).
 * @throws VaultError VAULT_BAD_REQUEST (400) naming the unknown action
 */
export function parseActions(list: string): number {
  let level = 0;
  for (const raw of list.split(",")) {
    const a = raw.trim().toLowerCase();
    if (a === "" || a === "none") continue;
    if (a === "all") {
      level = Math.max(level, actionLevel("admin"));
      continue;
    }
    if (!isAction(a)) throw new VaultError("VAULT_BAD_REQUEST", 400, `unknown action "${a}" (expected read, write, delete, admin)`);
    level = Math.max(level, actionLevel(a));
  }
  return level;
}

/** The stored form of a level: every implied action, comma-joined (`3` → `"read,write,delete"`; `0` → `""`). */
export function actionsOf(level: number): Action[] {
  return ACTIONS.slice(0, Math.max(0, Math.min(level, ACTIONS.length)));
}

/**
 * Validates a grant target: `*` (every repository) or a repository name (`[a-z0-9][a-z0-9._-]*`, as in
 * RepositoryConfig.name).
 * @throws VaultError VAULT_BAD_REQUEST (400)
 */
export function checkGrantRepository(repository: string): void {
  if (repository === "*" || /^[a-z0-9][a-z0-9._-]{0,127}$/.test(repository)) return;
  throw new VaultError("VAULT_BAD_REQUEST", 400, `bad repository name "${repository}" (a repository name or *)`);
}

/**
 * Parses a CLI grant `repo:actions` (`pypi-local:write`, `*:read`). The repository is everything before the
 * last `:`.
 * @throws VaultError VAULT_BAD_REQUEST (400)
 */
export function parseGrantSpec(spec: string): { repository: string; level: number } {
  const i = spec.lastIndexOf(":");
  if (i <= 0) throw new VaultError("VAULT_BAD_REQUEST", 400, `bad grant "${spec}" (expected REPO:ACTIONS, e.g. pypi-local:write)`);
  const repository = spec.slice(0, i);
  checkGrantRepository(repository);
  return { repository, level: parseActions(spec.slice(i + 1)) };
}

/** `vault user add|list|remove|passwd|grant|revoke|disable|enable`: manage users and their per-repository grants. */
import { parseArgs } from "node:util";
import { COMMON_OPTIONS, cliActor, formatTime, openCliAuth, readPassword, reportError, requireConfiguredRepository, table } from "../../auth/cli.ts";
import { checkGrantRepository, isAction, parseActions, parseGrantSpec } from "../../auth/permissions.ts";
import { VaultError } from "../../errors.ts";

const USAGE = `usage:
  vault user add NAME [--password P | --password-stdin] [--admin] [--grant REPO:ACTIONS ...]
  vault user list [--json]
  vault user remove NAME
  vault user passwd NAME [--password P | --password-stdin]
  vault user grant NAME REPO ACTIONS        (ACTIONS: read, write, delete, admin; each implies the ones before)
  vault user revoke NAME REPO [ACTION]      (revokes ACTION and above; without ACTION the whole grant)
  vault user disable|enable NAME
common options: --config FILE, --data DIR
REPO is a repository name or '*' (every repository); grant refuses a name the config does not define.
A user added without a password can only use API tokens (vault token create).
Prefer --password-stdin: a --password value is visible to other users of this machine.
`;

/**
 * Runs `vault user …`.
 * @param args the arguments after `user`
 * @returns exit code: 0 ok, 1 failure (unknown user, name taken, config), 2 usage (including `grant` on a repository
 *   the config does not define)
 */
export async function run(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        ...COMMON_OPTIONS,
        password: { type: "string" },
        "password-stdin": { type: "boolean" },
        admin: { type: "boolean" },
        grant: { type: "string", multiple: true },
      },
    });
  } catch (e) {
    process.stderr.write(USAGE);
    return reportError("user", e);
  }
  const { values: v, positionals: pos } = parsed;
  const [sub, ...rest] = pos;
  if (v.help || !sub) {
    (v.help ? process.stdout : process.stderr).write(USAGE);
    return v.help ? 0 : 2;
  }
  const need = (n: number, max = n) => {
    if (rest.length < n || rest.length > max) throw new VaultError("VAULT_BAD_REQUEST", 400, `wrong number of arguments for "user ${sub}"\n${USAGE}`);
  };
  if (v.password !== undefined && v["password-stdin"]) {
    process.stderr.write("vault user: use either --password or --password-stdin\n");
    return 2;
  }

  let cli;
  try {
    // validate arguments before touching the database
    switch (sub) {
      case "add":
        need(1);
        for (const g of v.grant ?? []) parseGrantSpec(g);
        break;
      case "list":
        need(0);
        break;
      case "remove":
      case "passwd":
      case "disable":
      case "enable":
        need(1);
        break;
      case "grant":
        need(3);
        checkGrantRepository(rest[1]);
        parseActions(rest[2]);
        break;
      case "revoke":
        need(2, 3);
        if (rest[2] !== undefined && !isAction(rest[2])) throw new VaultError("VAULT_BAD_REQUEST", 400, `unknown action "${rest[2]}"`);
        break;
      default:
        throw new VaultError("VAULT_BAD_REQUEST", 400, `unknown subcommand "${sub}"\n${USAGE}`);
    }
    cli = await openCliAuth({ config: v.config, data: v.data });
    const { auth } = cli;
    const by = cliActor();
    switch (sub) {
      case "add": {
        const name = rest[0];
        const password =
          v.password !== undefined || v["password-stdin"] ? await readPassword({ password: v.password, stdin: v["password-stdin"], prompt: "password" }) : undefined;
        const grants = (v.grant ?? []).map((g) => {
          const i = g.lastIndexOf(":");
          return { repository: g.slice(0, i), actions: g.slice(i + 1) };
        });
        const u = await auth.addUser({ name, password, admin: v.admin ?? false, grants, by });
        if (v.json) process.stdout.write(JSON.stringify(u) + "\n");
        else process.stderr.write(`user ${u.name} added${u.isAdmin ? " (admin)" : ""}${u.hasPassword ? "" : " (no password: token-only)"}\n`);
        return 0;
      }
      case "list": {
        const list = await auth.listUsers();
        if (v.json) {
          process.stdout.write(JSON.stringify(list) + "\n");
          return 0;
        }
        const rows = [["NAME", "ADMIN", "PASSWORD", "DISABLED", "CREATED", "GRANTS"]];
        for (const u of list) {
          const grants = u.grants.map((g) => `${g.repository}:${g.actions[g.actions.length - 1]}`).join(" ") || "-";
          rows.push([u.name, u.isAdmin ? "yes" : "no", u.hasPassword ? "yes" : "no", u.disabled ? "yes" : "no", formatTime(u.createdAt), grants]);
        }
        process.stdout.write(table(rows));
        return 0;
      }
      case "remove":
        await auth.removeUser(rest[0], by);
        process.stderr.write(`user ${rest[0]} removed (with their tokens, keys and grants)\n`);
        return 0;
      case "passwd": {
        if (!(await auth.getUser(rest[0]))) throw new VaultError("VAULT_NOT_FOUND", 404, `user ${rest[0]} not found`);
        const password = await readPassword({ password: v.password, stdin: v["password-stdin"], prompt: `new password for ${rest[0]}` });
        await auth.setPassword(rest[0], password, by);
        process.stderr.write(`password of ${rest[0]} changed\n`);
        return 0;
      }
      case "grant": {
        await requireConfiguredRepository(cli, rest[1]);
        const u = await auth.grant(rest[0], rest[1], rest[2], by);
        const g = u.grants.find((x) => x.repository === rest[1]);
        process.stderr.write(`${u.name} on ${rest[1]}: ${g ? g.actions.join(",") : "nothing"}\n`);
        return 0;
      }
      case "revoke": {
        const action = rest[2] as Parameters<typeof auth.revoke>[2];
        const u = await auth.revoke(rest[0], rest[1], action, by);
        const g = u.grants.find((x) => x.repository === rest[1]);
        process.stderr.write(`${u.name} on ${rest[1]}: ${g ? g.actions.join(",") : "nothing"}\n`);
        return 0;
      }
      case "disable":
      case "enable":
        await auth.setDisabled(rest[0], sub === "disable", by);
        process.stderr.write(`user ${rest[0]} ${sub}d\n`);
        return 0;
    }
    return 2;
  } catch (e) {
    return reportError("user", e);
  } finally {
    await cli?.close();
  }
}

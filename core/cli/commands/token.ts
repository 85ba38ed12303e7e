/** `vault token create|list|revoke`: API tokens (`vault_<id>_<secret>`) and S3 access keys of users. */
import { parseArgs } from "node:util";
import { COMMON_OPTIONS, cliActor, formatTime, openCliAuth, reportError, table } from "../../auth/cli.ts";
import { VaultError } from "../../errors.ts";

const USAGE = `usage:
  vault token create --user U [--name N] [--expires-days D] [--s3] [--json]
  vault token list [--user U] [--json]
  vault token revoke ID
common options: --config FILE, --data DIR
create prints the token (or, with --s3, the S3 access key id and secret) once on stdout; it cannot be shown again.
Use an API token as a Bearer token, as the password of HTTP Basic (with your user name or __token__), or in .npmrc.
`;

/**
 * Runs `vault token …`.
 * @param args the arguments after `token`
 * @returns exit code: 0 ok, 1 failure (unknown user or token, config), 2 usage
 */
export async function run(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        ...COMMON_OPTIONS,
        user: { type: "string", short: "u" },
        name: { type: "string" },
        "expires-days": { type: "string" },
        s3: { type: "boolean" },
      },
    });
  } catch (e) {
    process.stderr.write(USAGE);
    return reportError("token", e);
  }
  const { values: v, positionals: pos } = parsed;
  const [sub, ...rest] = pos;
  if (v.help || !sub) {
    (v.help ? process.stdout : process.stderr).write(USAGE);
    return v.help ? 0 : 2;
  }

  let cli;
  try {
    let expiresInSeconds: number | undefined;
    switch (sub) {
      case "create":
        if (rest.length !== 0) throw new VaultError("VAULT_BAD_REQUEST", 400, `unexpected argument "${rest[0]}"\n${USAGE}`);
        if (!v.user) throw new VaultError("VAULT_BAD_REQUEST", 400, `--user is required\n${USAGE}`);
        if (v["expires-days"] !== undefined) {
          const d = Number(v["expires-days"]);
          if (!Number.isFinite(d) || d <= 0) throw new VaultError("VAULT_BAD_REQUEST", 400, "--expires-days must be a positive number");
          expiresInSeconds = d * 86_400;
        }
        break;
      case "list":
        if (rest.length !== 0) throw new VaultError("VAULT_BAD_REQUEST", 400, `unexpected argument "${rest[0]}"\n${USAGE}`);
        break;
      case "revoke":
        if (rest.length !== 1) throw new VaultError("VAULT_BAD_REQUEST", 400, `revoke takes one token id\n${USAGE}`);
        break;
      default:
        throw new VaultError("VAULT_BAD_REQUEST", 400, `unknown subcommand "${sub}"\n${USAGE}`);
    }
    cli = await openCliAuth({ config: v.config, data: v.data });
    const { auth } = cli;
    const by = cliActor();
    switch (sub) {
      case "create": {
        const user = v.user!;
        if (v.s3) {
          const k = await auth.createAccessKey(user, { name: v.name, expiresInSeconds, by });
          if (v.json) process.stdout.write(JSON.stringify({ user, ...k }) + "\n");
          else process.stdout.write(`AWS_ACCESS_KEY_ID=${k.accessKeyId}\nAWS_SECRET_ACCESS_KEY=${k.secretAccessKey}\n`);
          process.stderr.write(`S3 access key ${k.accessKeyId} created for ${user}${k.expiresAt ? `, expires ${formatTime(k.expiresAt)}` : ""}; the secret is shown only now\n`);
        } else {
          const t = await auth.createToken(user, { name: v.name, expiresInSeconds, by });
          if (v.json) process.stdout.write(JSON.stringify({ user, ...t }) + "\n");
          else process.stdout.write(t.token + "\n");
          process.stderr.write(`token ${t.id} created for ${user}${t.expiresAt ? `, expires ${formatTime(t.expiresAt)}` : ""}; it is shown only now\n`);
        }
        return 0;
      }
      case "list": {
        const list = await auth.listTokens({ user: v.user });
        if (v.json) {
          process.stdout.write(JSON.stringify(list) + "\n");
          return 0;
        }
        const now = Date.now();
        const rows = [["ID", "KIND", "USER", "NAME", "CREATED", "EXPIRES", "LAST USED"]];
        for (const t of list) {
          const expires = t.expiresAt === null ? "never" : formatTime(t.expiresAt) + (t.expiresAt <= now ? " (expired)" : "");
          rows.push([t.id, t.kind, t.user, t.name, formatTime(t.createdAt), expires, formatTime(t.lastUsedAt)]);
        }
        process.stdout.write(table(rows));
        return 0;
      }
      case "revoke": {
        if (!(await auth.revokeToken(rest[0], by))) throw new VaultError("VAULT_NOT_FOUND", 404, `no token or access key ${rest[0]}`);
        process.stderr.write(`revoked ${rest[0]}\n`);
        return 0;
      }
    }
    return 2;
  } catch (e) {
    return reportError("token", e);
  } finally {
    await cli?.close();
  }
}

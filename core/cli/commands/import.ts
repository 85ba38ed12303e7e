/** `vault import`: reads an archive written by `vault export` into this vault's repositories (docs/export-import.md). */
import { createReadStream } from "node:fs";
import { formatBytes } from "../../ui/html.ts";
import { TransferError } from "../../transfer.ts";
import { importArchive, type ImportReport } from "../../transfer-import.ts";
import type { Vault } from "../../server.ts";
import { byteProgress, openCliVault, transferRepositories } from "./export.ts";
import { parseDataCommandArgs, STDIO, type CommandIo } from "../args.ts";
import type { ProgressStream } from "./prefetch.ts";

const USAGE = `usage: vault import [--config FILE] [--data DIR] [--map SRC=DST]... [--dry-run] ARCHIVE

Imports an archive written by "vault export" ("-" reads standard input). Every blob is checked against the
manifest's sha256 while it streams into the blob store; rows are recorded only once the whole archive arrived
intact, so a damaged or truncated archive records nothing. Running the same import again changes nothing.

Each exported repository goes to the repository of the same name, or the one --map names; it must have the same
format and type. Proxies get cache entries (documents marked stale: revalidated when the upstream is reachable,
served stale until then); hosted repositories get the files and regenerate their index documents.

  --map SRC=DST   import the archive's repository SRC into this vault's DST (repeatable)
  --dry-run       verify the archive and show what would be imported; store nothing
`;

/** The report as printed: one line per repository, then the blob totals and the warnings. */
export function formatImportReport(r: ImportReport): string {
  const verb = r.dryRun ? "would record" : "recorded";
  let s = "";
  for (const t of r.targets) {
    s += `  ${t.source}${t.target !== t.source ? ` → ${t.target}` : ""} (${t.format} ${t.type}): ${verb} ${t.recorded} file${t.recorded === 1 ? "" : "s"} (${formatBytes(t.bytes)})`;
    if (t.unchanged) s += `, ${t.unchanged} already stored`;
    if (t.kept) s += `, ${t.kept} kept (${t.type === "proxy" ? "this vault's cached copy is as new" : "this vault's own documents"})`;
    if (t.afterImport?.ok) s += ", indexes regenerated";
    if (t.afterImport && !t.afterImport.ok) s += `; regenerating the indexes FAILED: ${t.afterImport.error}`;
    s += "\n";
  }
  s += `${r.dryRun ? "verified (dry run, nothing stored)" : "imported"}: ${r.blobs.verified} blob${r.blobs.verified === 1 ? "" : "s"} (${formatBytes(r.blobs.bytes)}) checked against the manifest`;
  if (!r.dryRun) s += `, ${r.blobs.written} written to the blob store`;
  s += ` from ${r.manifest.source.host} (exported ${r.manifest.createdAt})\n`;
  for (const w of r.warnings) s += `warning: ${w}\n`;
  return s;
}

/**
 * Runs `vault import` ({@link importArchive}) with a byte progress bar on a TTY and prints the report.
 * @param args the arguments after `import`
 * @param io where to print the report
 * @param progress where the progress bar goes (default stderr)
 * @returns exit code: 0 imported (or verified), 1 refused, damaged or failed (nothing recorded unless only an index
 *   regeneration failed), 2 usage error
 */
export async function run(args: string[], io: CommandIo = STDIO, progress: ProgressStream = process.stderr): Promise<number> {
  const parsed = parseDataCommandArgs(args, { map: { type: "string", multiple: true }, "dry-run": { type: "boolean" } }, USAGE, io, true);
  if (typeof parsed === "number") return parsed;
  const { values, positionals } = parsed;
  if (positionals.length !== 1) {
    io.err(`vault import: give exactly one ARCHIVE (or - for standard input)\n${USAGE}`);
    return 2;
  }
  const map = new Map<string, string>();
  for (const m of values.map ?? []) {
    const i = m.indexOf("=");
    const src = i > 0 ? m.slice(0, i) : "";
    const dst = i > 0 ? m.slice(i + 1) : "";
    if (src === "" || dst === "" || map.has(src)) {
      io.err(`vault import: --map ${JSON.stringify(m)}: expected SRC=DST, each source once\n`);
      return 2;
    }
    map.set(src, dst);
  }
  const file = positionals[0];
  let vault: Vault | undefined;
  try {
    const input = file === "-" ? process.stdin : createReadStream(file);
    await new Promise<void>((resolve, reject) => {
      if (file === "-") return resolve();
      (input as ReturnType<typeof createReadStream>).once("open", () => resolve()).once("error", (e) => reject(new TransferError(`cannot read ${file}: ${e.message}`)));
    });
    vault = (await openCliVault(values, false)).vault;
    const bar = byteProgress(progress, values["dry-run"] ? "verify" : "import");
    let started = false;
    let report: ImportReport;
    try {
      report = await importArchive({
        input,
        repositories: transferRepositories(vault),
        map,
        dryRun: values["dry-run"] === true,
        onPlan: (p) => {
          started = true;
          bar.start(p.bytes);
        },
        onBytes: bar.add,
      });
    } finally {
      if (started) bar.stop();
    }
    io.out(formatImportReport(report));
    return report.targets.some((t) => t.afterImport && !t.afterImport.ok) ? 1 : 0;
  } catch (e) {
    io.err(`vault import: ${(e as Error).message}\n`);
    return 1;
  } finally {
    await vault?.stop(0);
  }
}

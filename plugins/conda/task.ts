/**
 * The conda plugin's worker-pool task, `condaRepodata`: every repodata and package operation that may be big — proxy
 * snapshots (decompress, check, CEP-15 `base_url` rewrite), the variants derived from a snapshot (`.zst`,
 * `current_repodata.json`, shards, file lookup), hosted renders, group merges, `channeldata.json`, and reading uploaded
 * package files. Pure and structured-cloneable (imports no core/): runs inline for small inputs and in the pool
 * (workers/index.ts) above the offload threshold (conda-forge's linux-64 repodata.json is over 200 MB).
 */
import {
  addRecords,
  deriveVariants,
  mergeChanneldata,
  mergeRepodata,
  normalizeSnapshot,
  renderChanneldata,
  shardIndexInfo,
  type AddedRecord,
  type ChannelFileInfo,
  type DeriveInput,
  type DeriveOutput,
  type NormalizeInput,
  type NormalizeOutput,
  type ShardIndexInfo,
} from "./repodata.ts";
import { inspectPackage, PackageError, type PackageInfo } from "./package.ts";
import type { PackageFormat } from "./paths.ts";

/** Input of {@link condaRepodata}: one operation. */
export type CondaTaskInput =
  | ({ op: "normalize" } & NormalizeInput)
  | ({ op: "derive" } & DeriveInput)
  | { op: "add"; current?: Uint8Array; subdir: string; add: AddedRecord[]; remove?: string[] }
  | { op: "merge"; sources: Uint8Array[]; subdir: string }
  | { op: "channeldata"; current?: Uint8Array; files: ChannelFileInfo[]; subdirs: string[]; recomputed?: string[] }
  | { op: "merge-channeldata"; sources: Uint8Array[] }
  | { op: "shard-index"; body: Uint8Array }
  | { op: "inspect"; path: string; format: PackageFormat; withInfoFiles?: boolean };

/** Output of {@link condaRepodata}, by operation. */
export interface CondaTaskOutput {
  /** normalize, add, merge, channeldata, merge-channeldata: the document. */
  body?: Uint8Array;
  normalize?: Omit<NormalizeOutput, "body">;
  derive?: DeriveOutput;
  shardIndex?: ShardIndexInfo;
  inspect?: PackageInfo;
  /** inspect: why the file is not a usable package (a PackageError's message). */
  problem?: string;
}

/**
 * Runs one conda document operation:
 * - `normalize`: upstream repodata (maybe zstd) → the snapshot to store (repodata.ts `normalizeSnapshot`)
 * - `derive`: snapshot → `.zst`, current_repodata, shards, file lookup (repodata.ts `deriveVariants`)
 * - `add`: a hosted subdir's repodata with records added (and files removed); `merge`: a group's repodata from its members'
 * - `channeldata`: a hosted channel's channeldata.json; `merge-channeldata`: a group's
 * - `shard-index`: the `info` of an upstream `repodata_shards.msgpack.zst`
 * - `inspect`: a package file on disk → its info/index.json, about, run_exports (`problem` when it is not a package)
 * @throws RepodataError for unusable repodata (normalize, derive, add, merge, shard-index)
 */
export async function condaRepodata(i: CondaTaskInput): Promise<CondaTaskOutput> {
  switch (i.op) {
    case "normalize": {
      const { body, ...rest } = normalizeSnapshot(i);
      return { body, normalize: rest };
    }
    case "derive":
      return { derive: deriveVariants(i) };
    case "add":
      return { body: addRecords(i.current, i.subdir, i.add, i.remove) };
    case "merge":
      return { body: mergeRepodata(i.sources, i.subdir) };
    case "channeldata":
      return { body: renderChanneldata(i.current, i.files, i.subdirs, i.recomputed) };
    case "merge-channeldata":
      return { body: mergeChanneldata(i.sources) };
    case "shard-index":
      return { shardIndex: shardIndexInfo(i.body) };
    case "inspect":
      try {
        return { inspect: await inspectPackage(i.path, i.format, i.withInfoFiles) };
      } catch (e) {
        if (e instanceof PackageError) return { problem: e.message };
        throw e;
      }
  }
}

/** Builds the configured storage driver (`storage:` in the config): fs by default; S3 arrives with issue 4. */
import { isAbsolute, join, resolve } from "node:path";
import type { StorageConfig } from "../config/types.ts";
import type { StorageDriver } from "./driver.ts";
import { createFsDriver } from "./fs.ts";
import type { S3DriverOptions } from "./s3.ts";

export { createFsDriver } from "./fs.ts";
export type { S3DriverOptions } from "./s3.ts";
export { createBlobStore, type BlobStore, type DbOrTx } from "./blobs.ts";
export * from "./driver.ts";

/**
 * The S3 driver (core/storage/s3.ts), loaded on first use: the AWS SDK it pulls in costs a vault on the fs driver
 * some 10 MiB of memory. A static `require` specifier, so `bun build --compile` still embeds it.
 */
export function createS3Driver(o: S3DriverOptions): StorageDriver {
  return (require("./s3.ts") as typeof import("./s3.ts")).createS3Driver(o);
}

/**
 * Creates the storage driver named by `cfg` (DESIGN.md §3).
 * - `undefined` or `{ driver: "fs" }`: filesystem under `cfg.root`, default `<dataDir>/store`; a relative `root`
 *   resolves against `dataDir`.
 * - `{ driver: "s3" }`: the S3 driver (core/storage/s3.ts) over `bucket` at `endpoint`; spool files in `<dataDir>/tmp`.
 *
 * @param dataDir the data directory (`server.dataDir`, default `./data`)
 * @throws Error when `driver` is unknown
 */
export function createStorage(cfg: StorageConfig | undefined, dataDir: string): StorageDriver {
  const driver = cfg?.driver ?? "fs";
  if (driver === "fs") {
    const root = cfg && cfg.driver === "fs" && cfg.root ? cfg.root : "store";
    return createFsDriver({ root: isAbsolute(root) ? root : join(resolve(dataDir), root) });
  }
  if (cfg && cfg.driver === "s3") {
    return createS3Driver({ ...cfg, spoolDir: join(resolve(dataDir), "tmp") });
  }
  throw new Error(`unknown storage.driver ${JSON.stringify(driver)} (expected "fs" or "s3")`);
}

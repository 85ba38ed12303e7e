/** bun test preload: global hooks for the whole run (temp directories removed once every test file has finished). */
import { afterAll } from "bun:test";
import { removeTmpDirs } from "./helpers/tmp.ts";

afterAll(removeTmpDirs);

/**
 * drizzle-kit settings: generates SQLite migrations into core/db/migrations from the one schema (`npx drizzle-kit generate`).
 * The Postgres migrations come from the same schema description with drizzle.pg.config.ts.
 */
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "sqlite",
  schema: "./core/db/schema.ts",
  out: "./core/db/migrations",
});

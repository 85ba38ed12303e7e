/**
 * drizzle-kit settings for the Postgres metadata driver: generates pg migrations into core/db/migrations-pg from the
 * same schema description (core/db/schema-pg.ts re-exports its pg build): `npx drizzle-kit generate --config drizzle.pg.config.ts`.
 * After generating, embed the new file in core/db/migrations.ts (core/db/db.test.ts checks every file is embedded).
 */
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  schema: "./core/db/schema-pg.ts",
  out: "./core/db/migrations-pg",
});

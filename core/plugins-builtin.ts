/**
 * Built-in plugins, imported through static specifiers so `bun build --compile` embeds them. One line per
 * plugins/<format>/index.ts; plugins/<dir>/index.ts files not listed here are still found by core/loader.ts
 * scanning the plugins directory (when running from source).
 */
export const BUILTIN_PLUGINS: Record<string, () => Promise<{ default?: unknown }>> = {
  http: () => import("../plugins/http/index.ts"),
  pypi: () => import("../plugins/pypi/index.ts"),
  oci: () => import("../plugins/oci/index.ts"),
  s3: () => import("../plugins/s3/index.ts"),
  npm: () => import("../plugins/npm/index.ts"),
  apt: () => import("../plugins/apt/index.ts"),
  conda: () => import("../plugins/conda/index.ts"),
};

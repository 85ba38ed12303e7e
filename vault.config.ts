/**
 * The example configuration `npm start` serves (docs/configuration.md is the full reference).
 * Strings may use `${ENV_VAR}` and `${ENV_VAR:-default}`; `$${` is a literal `${`.
 */
import { defineConfig } from "./core/config/types.ts";
import type { RepositoryConfig } from "./core/config/types.ts";

/** Optional repositories whose upstream comes only from the environment (no host is written here). */
const optional: RepositoryConfig[] = [];
if (process.env.VAULT_NPM_UPSTREAM) {
  // e.g. VAULT_NPM_UPSTREAM="$(npm config get registry)" — needs the npm plugin
  optional.push({ name: "npm", format: "npm", type: "proxy", upstream: "${VAULT_NPM_UPSTREAM}" });
}
/** Members of the npm group: hosted packages first, then the npm proxy when its upstream is set. */
const npmMembers = ["npm-local", ...(process.env.VAULT_NPM_UPSTREAM ? ["npm"] : [])];
if (process.env.VAULT_APT_UPSTREAM) {
  // a Debian/Ubuntu archive root, e.g. the one in /etc/apt/sources.list — needs the apt plugin;
  // VAULT_APT_UPSTREAM_KEYRING (e.g. /usr/share/keyrings/debian-archive-keyring.gpg): its Release files are checked with gpgv
  const keyring = process.env.VAULT_APT_UPSTREAM_KEYRING ? { upstreamKeyring: "${VAULT_APT_UPSTREAM_KEYRING}" } : {};
  optional.push({ name: "debian", format: "apt", type: "proxy", upstream: "${VAULT_APT_UPSTREAM}", ...keyring });
}
if (process.env.VAULT_APT_SIGNING_KEY) {
  // a hosted apt repository signed with this armored secret key: curl -u <user> --upload-file x.deb http://127.0.0.1:8080/apt-local/
  optional.push({ name: "apt-local", format: "apt", type: "hosted", signing: { key: "${VAULT_APT_SIGNING_KEY}" } });
  // apt-all: apt-local's packages first, then the debian proxy's, signed with the same key; uploads go to apt-local
  const members = ["apt-local", ...(process.env.VAULT_APT_UPSTREAM ? ["debian"] : [])];
  optional.push({ name: "apt-all", format: "apt", type: "group", members, writeTo: "apt-local", signing: { key: "${VAULT_APT_SIGNING_KEY}" } });
}

export default defineConfig({
  // vault serve --port/--host/--data/--log-level override these
  server: { host: "127.0.0.1", port: 8080, dataDir: "./data", logLevel: "info", shutdownGraceSeconds: 30 },
  storage: { driver: "fs" },
  metadata: { driver: "sqlite" },
  auth: { anonymousRead: true },
  // Third-party plugins by path (relative to this file) or npm package name, e.g.:
  // plugins: ["./test/fixtures/example-plugin/index.ts"],
  repositories: [
    // pip install --index-url http://127.0.0.1:8080/pypi/simple/ requests
    { name: "pypi", format: "pypi", type: "proxy", upstream: "https://pypi.org/simple/" },
    // twine upload --repository-url http://127.0.0.1:8080/pypi-local/ -u <user> dist/*  (a user with write permission)
    { name: "pypi-local", format: "pypi", type: "hosted" },
    // pip install --index-url http://127.0.0.1:8080/python/simple/ …: your uploads first, then PyPI
    { name: "python", format: "pypi", type: "group", members: ["pypi-local", "pypi"], writeTo: "pypi-local" },
    // curl http://127.0.0.1:8080/apache/httpd/KEYS  →  <upstream>httpd/KEYS, cached
    { name: "apache", format: "http", type: "proxy", upstream: "${VAULT_APACHE_UPSTREAM:-https://archive.apache.org/dist/}" },
    // npm login --registry http://127.0.0.1:8080/npm-local/ && npm publish --registry …  (a user with write permission)
    { name: "npm-local", format: "npm", type: "hosted" },
    // npm install --registry http://127.0.0.1:8080/npm-all/ …: your packages first, then the npm proxy; publishes go to npm-local
    { name: "npm-all", format: "npm", type: "group", members: npmMembers, writeTo: "npm-local" },
    // docker pull 127.0.0.1:8080/hub/library/busybox. root: true also answers Docker's registry-mirrors (/v2/<image>),
    // except for Docker Hub namespaces named like a vault repository; give the mirror its own `port:` to avoid that.
    { name: "hub", format: "oci", type: "proxy", upstream: "https://registry-1.docker.io", root: true },
    // skopeo copy … docker://127.0.0.1:8080/containers/<image>:<tag>  (push needs a user with write permission)
    { name: "containers", format: "oci", type: "hosted", anonymousRead: false },
    // pixi/conda/mamba channel http://127.0.0.1:8080/conda-forge/ (e.g. `conda install -c http://127.0.0.1:8080/conda-forge/ --override-channels numpy`)
    { name: "conda-forge", format: "conda", type: "proxy", upstream: "${VAULT_CONDA_UPSTREAM:-https://conda.anaconda.org/conda-forge/}" },
    // curl -u <user> -T pkg-1.0-0.conda http://127.0.0.1:8080/conda-local/<subdir>/pkg-1.0-0.conda  (a user with write permission)
    { name: "conda-local", format: "conda", type: "hosted" },
    // channel http://127.0.0.1:8080/conda/: your packages first, then conda-forge; uploads go to conda-local
    { name: "conda", format: "conda", type: "group", members: ["conda-local", "conda-forge"], writeTo: "conda-local" },
    // aws --endpoint-url http://127.0.0.1:8080/objects s3 ls  (add `port: 9000` for buckets at the root of their own listener)
    // private: objects are readable only with an access key (`vault token create --user U --s3`)
    { name: "objects", format: "s3", type: "hosted", anonymousRead: false },
    ...optional,
  ],
});

/**
 * The web UI in a real browser: Debian's chromium, headless, driven by playwright-core (no browser download) against a
 * vault filled by real requests (test/ui/env.ts). A person searches, opens a package page and reads the sha256 and
 * the pip command; a stored name holding markup shows as text and runs nothing; signing in with HTTP Basic shows a
 * private repository. Under CI=true a missing chromium fails the run.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { requireTools } from "../helpers/registry.ts";
import { PW, startUiEnv, XSS_FILE, XSS_PACKAGE, type UiEnv } from "./env.ts";

const HAVE_CHROMIUM = requireTools(["chromium"]);

/** Launch flags: no sandbox (root in CI), no GPU, nothing that talks to the network by itself. */
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

describe.skipIf(!HAVE_CHROMIUM)("web UI in headless chromium", () => {
  let env: UiEnv;
  let browser: Browser;
  const contexts: BrowserContext[] = [];

  beforeAll(async () => {
    env = await startUiEnv();
    browser = await chromium.launch({ executablePath: Bun.which("chromium")!, args: ARGS, timeout: 60_000 });
  }, 120_000);
  afterAll(async () => {
    for (const c of contexts) await c.close();
    await browser?.close();
    await env?.stop();
  }, 30_000);

  /** A fresh page; collects console errors, page errors and dialogs (an XSS would raise one of them). */
  async function open(o: { user?: string } = {}): Promise<{ page: Page; problems: string[] }> {
    const ctx = await browser.newContext(o.user ? { httpCredentials: { username: o.user, password: PW } } : {});
    contexts.push(ctx);
    const page = await ctx.newPage();
    page.setDefaultTimeout(20_000);
    const problems: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console: ${m.text()}`);
    });
    page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
    page.on("dialog", (d) => {
      problems.push(`dialog: ${d.message()}`);
      void d.dismiss();
    });
    return { page, problems };
  }

  test("search, open the package page, read the sha256 of a file and the pip command", async () => {
    const { page, problems } = await open();
    await page.goto(`${env.vault.url}/-/ui/`);
    expect(await page.title()).toBe("Repositories · Artifact Vault");
    const listed = await page.locator("table.repositories tbody tr").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-repository")));
    expect(listed).toEqual(["pypi-local", "pypi-proxy", "python", "files", "objects"]);

    await page.fill('header form.search input[name="q"]', "ui-demo");
    await page.press('header form.search input[name="q"]', "Enter");
    await page.waitForURL(/\/-\/ui\/search\?q=ui-demo$/);
    const results = page.locator("tr.result a.package");
    expect(await results.allTextContents()).toEqual(["ui-demo"]);

    await results.first().click();
    await page.waitForURL(`${env.vault.url}/-/ui/repositories/pypi-local/packages/ui-demo`);
    expect(await page.locator("h1 .package-name").textContent()).toBe("ui-demo");
    expect(await page.locator("h1 .version").textContent()).toBe("1.1.0");
    for (const u of env.uploads) {
      const row = page.locator(`tr.file[data-path="files/ui-demo/${u.filename}"]`);
      expect(await row.locator("code.sha256").textContent()).toBe(u.sha256);
      expect(await row.locator("a.name").textContent()).toBe(u.filename);
      expect(await row.locator("a.name").getAttribute("href")).toBe(`${env.vault.url}/pypi-local/files/ui-demo/${u.filename}`);
    }
    expect(await page.locator('.version[data-version="1.1.0"] tr.file td.downloads').allTextContents()).toContain("2");
    const pip = page.locator('section.setup').first().locator('.snippet[data-client="pip"] code');
    expect(await pip.textContent()).toBe(`pip install --index-url ${env.vault.url}/pypi-local/simple/ ui-demo==1.1.0`);
    // the embedded script ran under the page's Content-Security-Policy: each snippet got its copy button
    await page.locator("button.copy").first().waitFor();
    expect(await page.locator("button.copy").count()).toBe(await page.locator(".snippet pre").count());
    // and the stylesheet applied
    expect(await page.locator("header.top").evaluate((e) => getComputedStyle(e).display)).toBe("flex");
    expect(problems).toEqual([]);
  });

  test("a stored name holding <script> and an onerror attribute is shown as text and runs nothing", async () => {
    const { page, problems } = await open();
    await page.goto(`${env.vault.url}/-/ui/search?q=script`);
    const link = page.locator("tr.result a.package");
    expect(await link.allTextContents()).toEqual([XSS_PACKAGE]);
    expect(await page.locator("main img").count()).toBe(0);
    expect(await page.locator("main script").count()).toBe(0);
    await link.first().click();
    await page.waitForURL(/\/-\/ui\/repositories\/objects\/packages\//);
    expect(await page.locator("h1 .package-name").textContent()).toBe(XSS_PACKAGE);
    expect(await page.locator("tr.file .name").allTextContents()).toEqual([XSS_FILE]);
    expect(await page.locator("main img").count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
    expect(problems).toEqual([]);
  });

  test("signing in with HTTP Basic shows the private repository its user may read", async () => {
    const anon = await open();
    await anon.page.goto(`${env.vault.url}/-/ui/`);
    expect(await anon.page.locator('tr[data-repository="secret"]').count()).toBe(0);

    const { page, problems } = await open({ user: "alice" });
    await page.goto(`${env.vault.url}/-/ui/login`);
    await page.waitForURL(`${env.vault.url}/-/ui/`);
    expect(await page.locator("header .who").textContent()).toBe("alice");
    expect(await page.locator('tr[data-repository="secret"] td').first().textContent()).toContain("private");
    await page.click('tr[data-repository="secret"] a');
    await page.waitForURL(`${env.vault.url}/-/ui/repositories/secret`);
    expect(await page.locator("tr.result a.package").allTextContents()).toEqual(["internal/secret-tool"]);
    expect(problems).toEqual([]);
  });
});

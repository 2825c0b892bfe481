// Chromium for the browser tests and the click timing tool: Debian's
// package driven by playwright-core (never a downloaded browser). No test
// framework here, so tools outside vitest can use it.
import { chromium } from "playwright-core";

import { CHROMIUM, CHROMIUM_ARGS } from "./harness.mjs";

export function launch() {
  // playwright-core gives every launch a fresh, empty user data dir.
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

/**
 * A fresh browser profile (its own storage) showing `url` at `width`;
 * `init` runs in every document before the page's own scripts.
 */
export async function openPage(browser, url, { width = 1280, tls = false, init } = {}) {
  const context = await browser.newContext({
    ignoreHTTPSErrors: tls,
    viewport: { width, height: width < 600 ? 780 : 900 },
  });
  if (init) await context.addInitScript(init);
  const tab = await context.newPage();
  const errors = [];
  tab.on("pageerror", (e) => errors.push(e));
  await tab.goto(url);
  return { context, tab, errors, width };
}


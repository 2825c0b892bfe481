// Driving the job page in Chromium: open it as someone, read what it says,
// and record a step (a screenshot, an accessibility scan, a check that
// nothing scrolls sideways) the same way in every test.
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

import { expect } from "vitest";

import { RESULTS } from "./harness.mjs";

export { launch, openPage } from "./browser.mjs";

const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

/** How long a page may take to show what the server just did. */
export const LIVE = 15_000;

/** The widths every step is checked and photographed at. */
export const WIDTHS = [375, 1280];

/** The page's parts, by what they are for. */
export const part = {
  indicator: (tab) => tab.locator("#connection"),
  banner: (tab) => tab.locator("#connection-detail"),
  headline: (tab) => tab.locator("#job-headline"),
  status: (tab) => tab.locator("#job-status"),
  badge: (tab) => tab.locator("#job-badge"),
  notice: (tab) => tab.locator("#job-caught-up"),
  actions: (tab) => tab.locator("#job-actions"),
  who: (tab) => tab.locator("#who"),
  listItem: (tab, job) => tab.locator(`#job-list a[data-job-id="${job}"]`),
};

/**
 * An `init` script for openPage: records, from the first moment, every
 * time the page shows someone as signed in (`window.everSignedIn`).
 */
export function recordSignIns() {
  window.everSignedIn = [];
  document.addEventListener("DOMContentLoaded", () => {
    new MutationObserver(() => {
      const account = document.getElementById("account");
      if (account && !account.hidden) window.everSignedIn.push(document.getElementById("who")?.textContent ?? "");
    }).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
  });
}

/** Every control in the action area, as a screen reader would be told of it. */
export function actionControls(tab) {
  return tab
    .locator("#job-actions")
    .locator("button, input, textarea")
    .evaluateAll((controls) =>
      controls.map((c) => ({
        name: c.textContent || c.value || c.id,
        disabled: c.disabled,
        describedBy: c.getAttribute("aria-describedby") ?? "",
      })),
    );
}

export async function connectionOf(tab) {
  return part.indicator(tab).getAttribute("data-state");
}

export async function expectConnection(tab, state) {
  await expect.poll(() => connectionOf(tab), { timeout: LIVE }).toBe(state);
}

export async function expectText(locator, text) {
  await expect.poll(() => locator.innerText(), { timeout: LIVE }).toContain(text);
}

/**
 * One step of a flow, for every page shown: a screenshot kept under
 * test-results/job-page/<width>/, no sideways scrolling, and an axe-core
 * scan with no serious or critical violations.
 */
export async function step(flow, name, pages) {
  for (const [role, { tab, width }] of Object.entries(pages)) {
    const path = join(RESULTS, "job-page", String(width), `${flow}-${name}-${role}.png`);
    mkdirSync(dirname(path), { recursive: true });
    await tab.screenshot({ path, fullPage: true });
    const { scrollWidth, innerWidth } = await tab.evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth,
      innerWidth: window.innerWidth,
    }));
    expect(scrollWidth, `${flow}/${name}/${role} at ${width}px scrolls sideways`).toBeLessThanOrEqual(innerWidth);
    await expectAccessible(tab, `${flow}/${name}/${role} at ${width}px`);
  }
}

/** axe-core on the page as it is now: nothing serious or critical. */
export async function expectAccessible(tab, where) {
  if (!(await tab.evaluate(() => "axe" in window))) await tab.addScriptTag({ content: AXE });
  const violations = await tab.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      targets: v.nodes.map((n) => n.target.join(" ")),
    }));
  });
  const serious = violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  expect(serious, `${where}: ${JSON.stringify(serious, null, 1)}`).toEqual([]);
}

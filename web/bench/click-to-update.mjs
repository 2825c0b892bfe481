// How long from one person's click to the other person's page showing it,
// measured inside the pages in Debian's Chromium against the real server
// (`serve --dev`, SQLite, loopback): the worker clicks Mark as Complete and
// the client's page changes; the client sends Request changes and the
// worker's page changes; repeated for --rounds rounds. Each sample is the
// time between the click event in one page and the DOM change in the other
// (both read from the shared wall clock, performance.timeOrigin + now()).
//
//   JOBSTATUS_BIN=../target/release/jobstatus npm run bench:click -- \
//       [--rounds 40] [--out ../bench-results/click-to-update.json]
//
// Prints the figures; asserts nothing about them (a benchmark, not a test).
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";

import { BIN, JobstatusServer, WEB, apiClients, bearer, ensureResults, freePort, servePage, tempDir } from "../e2e/harness.mjs";
import { launch, openPage } from "../e2e/browser.mjs";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "40" },
    out: { type: "string" },
  },
});
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 1000) {
  console.error("--rounds must be a whole number from 1 to 1000");
  process.exit(2);
}

const WAIT = 10_000;

/** Records, in the page, when #job-headline starts to contain `text`. */
function watchFor(tab, text) {
  return tab.evaluate((expected) => {
    window.seen = undefined;
    const headline = document.getElementById("job-headline");
    const observer = new MutationObserver(() => {
      if (window.seen === undefined && headline.textContent.includes(expected)) {
        window.seen = performance.timeOrigin + performance.now();
        observer.disconnect();
      }
    });
    observer.observe(headline, { childList: true, characterData: true, subtree: true });
  }, text);
}

/** Records, in the page, when the next click happens (capture phase, before the page's own handler). */
function recordClick(tab) {
  return tab.evaluate(() => {
    window.clicked = undefined;
    document.addEventListener(
      "click",
      () => {
        window.clicked ??= performance.timeOrigin + performance.now();
      },
      { capture: true, once: true },
    );
  });
}

async function seenAt(tab) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const at = await tab.evaluate(() => window.seen);
    if (at !== undefined) return at;
    if (Date.now() > deadline) throw new Error("the other page did not change in time");
    await new Promise((r) => setTimeout(r, 2));
  }
}

function summary(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  const round = (x) => Math.round(x * 10) / 10;
  return {
    samples: sorted.length,
    median_ms: round(at(0.5)),
    p99_ms: round(at(0.99)),
    max_ms: round(sorted[sorted.length - 1]),
    min_ms: round(sorted[0]),
  };
}

ensureResults();
const work = tempDir("jobstatus-click-");
const pagePort = await freePort();
const pageOrigin = `http://127.0.0.1:${pagePort}`;
const page = await servePage(join(WEB, "dist"), pagePort);
const server = new JobstatusServer({
  port: await freePort(),
  database: join(work, "jobstatus-dev.db"),
  dev: true,
  pageUrl: `${pageOrigin}/`,
  heartbeatSecs: 15,
});
await server.start();
const browser = await launch();
try {
  const { admin } = apiClients(server.url);
  await admin.createJob(
    { jobId: 2n, clientId: "client-alice", workerId: "worker-bob" },
    bearer(server.printed.tokens.service),
  );
  const open = (role) => {
    const url = new URL(server.printed.links[role]);
    url.searchParams.set("job", "2");
    return openPage(browser, url.toString(), { width: 1280 });
  };
  const client = await open("client");
  const worker = await open("worker");
  for (const p of [client, worker]) {
    await p.tab.waitForFunction(() => document.getElementById("connection")?.dataset.state === "live", null, {
      timeout: WAIT,
    });
  }

  const workerToClient = [];
  const clientToWorker = [];
  for (let round = 0; round < rounds; round++) {
    // The worker marks the job complete; the client's page changes.
    await worker.tab.getByRole("button", { name: "Mark as Complete" }).waitFor({ timeout: WAIT });
    await worker.tab.waitForFunction(
      () => [...document.querySelectorAll("#job-actions button")].some((b) => !b.disabled),
      null,
      { timeout: WAIT },
    );
    await watchFor(client.tab, "Please review and approve!");
    await recordClick(worker.tab);
    await worker.tab.getByRole("button", { name: "Mark as Complete" }).click();
    const shown = await seenAt(client.tab);
    workerToClient.push(shown - (await worker.tab.evaluate(() => window.clicked)));

    // The client asks for changes; the worker's page changes.
    await client.tab.getByRole("button", { name: "Request changes" }).click();
    await client.tab.getByLabel("What needs to change?").fill(`round ${round + 1}: one more coat of paint`);
    await watchFor(worker.tab, "You are working on this job.");
    await recordClick(client.tab);
    await client.tab.getByRole("button", { name: "Send request" }).click();
    const back = await seenAt(worker.tab);
    clientToWorker.push(back - (await client.tab.evaluate(() => window.clicked)));
  }

  const result = {
    measures: "click in one page to the DOM change in the other, same Chromium, loopback, serve --dev (SQLite, synchronous=FULL)",
    rounds,
    worker_click_to_client_page: summary(workerToClient),
    client_click_to_worker_page: summary(clientToWorker),
    server_binary: resolve(BIN),
    chromium: await browser.version(),
    at: new Date().toISOString(),
  };
  console.log("| direction | samples | median | p99 | max |");
  console.log("|---|---|---|---|---|");
  for (const [name, s] of [
    ["worker's Mark as Complete → client's page", result.worker_click_to_client_page],
    ["client's Request changes → worker's page", result.client_click_to_worker_page],
  ]) {
    console.log(`| ${name} | ${s.samples} | ${s.median_ms} ms | ${s.p99_ms} ms | ${s.max_ms} ms |`);
  }
  if (values.out) {
    const out = resolve(values.out);
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
    console.error(`written to ${out}`);
  }
  await client.context.close();
  await worker.context.close();
} finally {
  await browser.close();
  await server.stop();
  page.close();
}

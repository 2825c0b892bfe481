// The two-party test, automated in Debian's Chromium: two
// browsers (client and worker) on the same job see each other's actions
// without a reload; a stranger is denied; a server restart mid-session is
// survived with nothing missed; the same over TLS (HTTP/2). The page is
// served from a different origin than the API, so CORS is real.
import { join } from "node:path";

import { chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  CHROMIUM,
  CHROMIUM_ARGS,
  JobstatusServer,
  RESULTS,
  WEB,
  apiClients,
  bearer,
  ensureResults,
  freePort,
  selfSignedCert,
  servePage,
  tempDir,
  token,
} from "./harness.mjs";

const CLIENT = "client-alice";
const WORKER = "worker-bob";
const STRANGER = "stranger-eve";
const LIVE = 15_000;

let browser;
let server;
let page;
let otherOriginPage;
let pageOrigin;
let work;
const tokens = {};

beforeAll(async () => {
  ensureResults();
  work = tempDir("jobstatus-e2e-");
  const pagePort = await freePort();
  const otherPort = await freePort();
  pageOrigin = `http://127.0.0.1:${pagePort}`;
  page = await servePage(join(WEB, "dist"), pagePort);
  // The same page from an origin the server does not allow.
  otherOriginPage = { server: await servePage(join(WEB, "dist"), otherPort), origin: `http://127.0.0.1:${otherPort}` };
  server = new JobstatusServer({
    port: await freePort(),
    database: join(work, "jobstatus.db"),
    corsOrigins: [pageOrigin],
  });
  await server.start();
  for (const who of [CLIENT, WORKER, STRANGER]) tokens[who] = token(who);
  tokens.service = token("platform", { service: true });
  const { admin } = apiClients(server.url);
  for (const jobId of [1n, 2n, 3n]) {
    await admin.createJob({ jobId, clientId: CLIENT, workerId: WORKER }, bearer(tokens.service));
  }
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // playwright-core gives every launch a fresh, empty user data dir.
    args: CHROMIUM_ARGS,
  });
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  page?.close();
  otherOriginPage?.server.close();
});

async function openAs(who, { api = server.url, job, origin = pageOrigin, tls = false } = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: tls, viewport: { width: 1000, height: 700 } });
  const tab = await context.newPage();
  const protocols = [];
  const cdp = await context.newCDPSession(tab);
  await cdp.send("Network.enable");
  cdp.on("Network.responseReceived", (e) => {
    if (e.response.url.startsWith(api)) protocols.push(e.response.protocol);
  });
  const url = new URL(origin);
  url.searchParams.set("api", api);
  url.searchParams.set("token", tokens[who]);
  if (job) url.searchParams.set("job", String(job));
  await tab.goto(url.toString());
  return { context, tab, protocols };
}

const jobState = (tab) => tab.locator("#job-connection");
const actions = (tab) => tab.locator("#job-actions");

async function expectLive(tab) {
  await expect.poll(() => jobState(tab).getAttribute("data-state"), { timeout: LIVE }).toBe("live");
}

async function shot(tab, name) {
  await tab.screenshot({ path: join(RESULTS, `${name}.png`), fullPage: true });
}

/** The two-party flow on job `job`: mark complete, see it, approve with CASH, see that. */
async function twoPartyFlow(client, worker, job) {
  await expectLive(client.tab);
  await expectLive(worker.tab);
  await expect.poll(() => actions(client.tab).innerText()).toContain("The worker is working on this job.");

  await worker.tab.getByRole("button", { name: "Mark as Complete" }).click();
  await expect.poll(() => actions(worker.tab).innerText()).toContain("Waiting for client to approve completion");
  // The client's page changes by itself: no reload.
  await expect.poll(() => actions(client.tab).innerText()).toContain("Worker has marked this job as complete");

  await client.tab.getByLabel("CASH", { exact: true }).check();
  await client.tab.getByRole("button", { name: "Approve & Pay" }).click();
  await expect.poll(() => actions(client.tab).innerText()).toContain("You have approved this job completion");
  await expect.poll(() => actions(client.tab).innerText()).toContain("proof of payment");
  await expect.poll(() => actions(worker.tab).innerText()).toContain("Job completed! Client has approved.");
  await expect.poll(() => actions(worker.tab).innerText()).toContain("CASH");
  // The job list (WatchMyJobs) follows too.
  await expect
    .poll(() => worker.tab.locator(`#job-list [data-job-id="${job}"]`).innerText())
    .toContain("Awaiting payment");
}

describe("two browsers over HTTP/1.1, page on another origin", () => {
  it("worker marks complete, client approves with CASH, each sees the other live", async () => {
    const client = await openAs(CLIENT, { job: 1 });
    const worker = await openAs(WORKER, { job: 1 });
    // The list shows every job of the caller.
    await expect.poll(() => client.tab.locator("#job-list li").count(), { timeout: LIVE }).toBe(3);
    await twoPartyFlow(client, worker, 1);
    // Plain http: the browser spoke HTTP/1.1 to the API.
    expect(worker.protocols.length).toBeGreaterThan(0);
    expect(worker.protocols.every((p) => p === "http/1.1")).toBe(true);
    await shot(client.tab, "http1-client");
    await shot(worker.tab, "http1-worker");
    await client.context.close();
    await worker.context.close();
  });

  it("a stranger's token shows access denied", async () => {
    const stranger = await openAs(STRANGER, { job: 1 });
    await expect.poll(() => jobState(stranger.tab).getAttribute("data-state"), { timeout: LIVE }).toBe("denied");
    await expect.poll(() => actions(stranger.tab).innerText()).toContain("Access denied");
    expect(await stranger.tab.locator("#job-list li").count()).toBe(0);
    await shot(stranger.tab, "stranger-denied");
    await stranger.context.close();
  });

  it("a page from an origin not on the list gets no access (CORS)", async () => {
    const outsider = await openAs(CLIENT, { job: 1, origin: otherOriginPage.origin });
    await expect
      .poll(() => jobState(outsider.tab).getAttribute("data-state"), { timeout: LIVE })
      .toBe("reconnecting");
    // After a few attempts the page says what is wrong instead of spinning.
    await expect.poll(() => outsider.tab.locator("#error").innerText(), { timeout: LIVE }).toContain("Cannot reach the server");
    expect(await jobState(outsider.tab).getAttribute("data-state")).not.toBe("live");
    expect(await outsider.tab.locator("#job-list li").count()).toBe(0);
    await shot(outsider.tab, "cors-refused-origin");
    await outsider.context.close();
  });

  it("both pages survive a server restart and catch up with what happened meanwhile", async () => {
    const client = await openAs(CLIENT, { job: 2 });
    const worker = await openAs(WORKER, { job: 2 });
    await expectLive(client.tab);
    await expectLive(worker.tab);

    await server.stop();
    await expect.poll(() => jobState(client.tab).getAttribute("data-state"), { timeout: LIVE }).toBe("reconnecting");
    await expect.poll(() => jobState(worker.tab).getAttribute("data-state"), { timeout: LIVE }).toBe("reconnecting");
    await expect.poll(() => client.tab.locator("#connection").getAttribute("data-state"), { timeout: LIVE }).toBe("reconnecting");
    // While the pages are cut off, the worker's change is committed through
    // another instance on the same database (on a port the pages do not
    // know): when they come back they can only learn of it from the log.
    const side = new JobstatusServer({
      port: await freePort(),
      database: server.database,
      corsOrigins: [pageOrigin],
    });
    await side.start();
    await apiClients(side.url).jobs.markComplete({ jobId: 2n }, bearer(tokens[WORKER]));
    await side.stop();
    expect(await actions(client.tab).innerText()).not.toContain("Worker has marked this job as complete");
    await server.start();

    await expectLive(client.tab);
    await expectLive(worker.tab);
    await expect.poll(() => client.tab.locator("#connection").getAttribute("data-state"), { timeout: LIVE }).toBe("live");
    await expect.poll(() => actions(client.tab).innerText()).toContain("Worker has marked this job as complete");
    await expect.poll(() => actions(worker.tab).innerText()).toContain("Waiting for client to approve completion");

    // And they are live again: the rest of the flow goes through.
    await client.tab.getByLabel("CASH", { exact: true }).check();
    await client.tab.getByRole("button", { name: "Approve & Pay" }).click();
    await expect.poll(() => actions(worker.tab).innerText()).toContain("Job completed! Client has approved.");
    await expect.poll(() => actions(client.tab).innerText()).toContain("proof of payment");
    await shot(client.tab, "restart-client");
    await shot(worker.tab, "restart-worker");
    await client.context.close();
    await worker.context.close();
  });
});

describe("over TLS", () => {
  let tlsServer;

  beforeAll(async () => {
    // The same database, served by a TLS instance (certificate made here).
    await server.stop();
    tlsServer = new JobstatusServer({
      port: await freePort(),
      database: server.database,
      corsOrigins: [pageOrigin],
      tls: selfSignedCert(work),
    });
    await tlsServer.start();
  });

  afterAll(async () => {
    await tlsServer?.stop();
  });

  it("runs the two-party flow with the browser on HTTP/2", async () => {
    const client = await openAs(CLIENT, { job: 3, api: tlsServer.url, tls: true });
    const worker = await openAs(WORKER, { job: 3, api: tlsServer.url, tls: true });
    await twoPartyFlow(client, worker, 3);
    expect(worker.protocols.length).toBeGreaterThan(0);
    expect(worker.protocols.every((p) => p === "h2")).toBe(true);
    await shot(client.tab, "tls-client");
    await shot(worker.tab, "tls-worker");
    await client.context.close();
    await worker.context.close();
  });
});

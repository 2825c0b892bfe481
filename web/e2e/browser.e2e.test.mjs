// The page against a production-style server (a configured secret and CORS
// list, no --dev) in Debian's Chromium: which HTTP version the browser
// speaks over plain HTTP and over TLS, and what a page on an origin the
// server does not allow is told.
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  JobstatusServer,
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
import { WIDTHS, expectConnection, expectText, launch, openPage, part, step } from "./page.mjs";

const CLIENT = "client-alice";
const WORKER = "worker-bob";

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
  for (const who of [CLIENT, WORKER]) tokens[who] = token(who);
  tokens.service = token("platform", { service: true });
  const { admin } = apiClients(server.url);
  for (const jobId of [1n, 2n]) {
    await admin.createJob({ jobId, clientId: CLIENT, workerId: WORKER }, bearer(tokens.service));
  }
  browser = await launch();
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  page?.close();
  otherOriginPage?.server.close();
});

/** Opens the page as `who`, recording the HTTP version of every API response. */
async function openAs(who, { api = server.url, job, origin = pageOrigin, tls = false, width } = {}) {
  const url = new URL(origin);
  url.searchParams.set("api", api);
  url.searchParams.set("token", tokens[who]);
  if (job) url.searchParams.set("job", String(job));
  const opened = await openPage(browser, "about:blank", { tls, width });
  const protocols = [];
  const cdp = await opened.context.newCDPSession(opened.tab);
  await cdp.send("Network.enable");
  cdp.on("Network.responseReceived", (e) => {
    if (e.response.url.startsWith(api)) protocols.push(e.response.protocol);
  });
  await opened.tab.goto(url.toString());
  return { ...opened, protocols };
}

/** The seed's flow in short: mark complete, see it, approve with CASH, see that. */
async function twoPartyFlow(client, worker) {
  await expectConnection(client.tab, "live");
  await expectConnection(worker.tab, "live");
  await worker.tab.getByRole("button", { name: "Mark as Complete" }).click();
  await expectText(part.headline(worker.tab), "Waiting for client to approve completion");
  await expectText(part.headline(client.tab), "Worker has marked this job as complete");
  await client.tab.getByLabel("Cash", { exact: true }).check();
  await client.tab.getByRole("button", { name: "Approve & Pay" }).click();
  await expectText(part.headline(client.tab), "You have approved this job completion.");
  await expectText(part.headline(worker.tab), "Client has approved your work.");
}

describe("plain HTTP, page on another origin", () => {
  it("runs the flow with the browser on HTTP/1.1", async () => {
    const client = await openAs(CLIENT, { job: 1 });
    const worker = await openAs(WORKER, { job: 1 });
    await twoPartyFlow(client, worker);
    expect(worker.protocols.length).toBeGreaterThan(0);
    expect(worker.protocols.every((p) => p === "http/1.1")).toBe(true);
    await client.context.close();
    await worker.context.close();
  });

  it.each(WIDTHS)("a page from an origin not on the list is told the server refuses it, not that it is down (%i px)", async (width) => {
    const outsider = await openAs(CLIENT, { job: 1, origin: otherOriginPage.origin, width });
    await expectConnection(outsider.tab, "offline");
    await expectText(part.banner(outsider.tab), "answers, but the browser blocked the call");
    await expectText(part.banner(outsider.tab), otherOriginPage.origin);
    await expectText(part.banner(outsider.tab), "--cors-origin");
    expect(await outsider.tab.locator("#job-list li").count()).toBe(0);
    expect(await outsider.tab.locator("#account").isVisible()).toBe(false);
    await step("cors", "1-refused-origin", { outsider });
    await outsider.context.close();
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

  it("runs the flow with the browser on HTTP/2", async () => {
    const client = await openAs(CLIENT, { job: 2, api: tlsServer.url, tls: true });
    const worker = await openAs(WORKER, { job: 2, api: tlsServer.url, tls: true });
    await twoPartyFlow(client, worker);
    expect(worker.protocols.length).toBeGreaterThan(0);
    expect(worker.protocols.every((p) => p === "h2")).toBe(true);
    await client.context.close();
    await worker.context.close();
  });
});

// The job page as a user meets it, in Debian's Chromium: the server runs
// as `serve --dev` (its secret kept beside the database), the page is
// opened from the sign-in links it prints, and the original feature's
// two-browser test runs step by step, for both payment paths and for
// Request changes, at 375 px and 1280 px. Every step is photographed,
// checked for sideways scrolling and scanned with axe-core.
import { createServer } from "node:http";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  JobstatusServer,
  WEB,
  apiClients,
  bearer,
  ensureResults,
  freePort,
  servePage,
  tempDir,
  token,
} from "./harness.mjs";
import {
  LIVE,
  WIDTHS,
  actionControls,
  connectionOf,
  expectAccessible,
  expectConnection,
  expectText,
  launch,
  openPage,
  part,
  recordSignIns,
  step,
} from "./page.mjs";

let browser;
let server;
let pageServer;
let pageOrigin;
let admin;
let service;
let nextJob = 100n;

beforeAll(async () => {
  ensureResults();
  const work = tempDir("jobstatus-page-");
  const pagePort = await freePort();
  pageOrigin = `http://127.0.0.1:${pagePort}`;
  pageServer = await servePage(join(WEB, "dist"), pagePort);
  server = new JobstatusServer({
    port: await freePort(),
    database: join(work, "jobstatus-dev.db"),
    dev: true,
    pageUrl: `${pageOrigin}/`,
  });
  await server.start();
  service = server.printed.tokens.service;
  admin = apiClients(server.url).admin;
  browser = await launch();
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  pageServer?.close();
});

/** The printed sign-in link of `role`, pointed at `job`. */
function link(role, job) {
  const url = new URL(server.printed.links[role]);
  url.searchParams.set("job", String(job));
  return url.toString();
}

/** A sign-in link like the printed ones, carrying `signInToken` instead. */
function linkWith(signInToken, job) {
  const url = new URL(link("client", job));
  url.hash = `token=${signInToken}`;
  return url.toString();
}

/** Signed with a secret this server does not know: well formed, refused. */
const foreignToken = (sub) => token(sub, { secret: "some-other-deployment-secret-0123456789" });

/** A fresh job between the demo's client and worker, made by the platform. */
async function newJob() {
  nextJob += 1n;
  await admin.createJob(
    { jobId: nextJob, clientId: "client-alice", workerId: "worker-bob" },
    bearer(service),
  );
  return nextJob;
}

async function openBoth(job, width) {
  const client = await openPage(browser, link("client", job), { width });
  const worker = await openPage(browser, link("worker", job), { width });
  await expectConnection(client.tab, "live");
  await expectConnection(worker.tab, "live");
  return { client, worker };
}

async function close(...pages) {
  for (const p of pages) {
    expect(p.errors, "uncaught errors in the page").toEqual([]);
    await p.context.close();
  }
}

/** The worker marks the job complete; the client's page changes by itself. */
async function markComplete(client, worker) {
  await expectText(part.headline(worker.tab), "You are working on this job.");
  await worker.tab.getByRole("button", { name: "Mark as Complete" }).click();
  await expectText(part.headline(worker.tab), "Waiting for client to approve completion");
  await expectText(part.headline(client.tab), "Worker has marked this job as complete. Please review and approve!");
}

describe.each(WIDTHS)("the two-browser test at %i px", (width) => {
  it("GCASH: mark complete, approve and pay, the payment service confirms, both are told", async () => {
    const job = await newJob();
    const { client, worker } = await openBoth(job, width);
    const both = { client, worker };
    await expectText(part.headline(client.tab), "worker-bob is working on this job.");
    await expectText(part.who(client.tab), "Signed in as client-alice");
    await expectText(part.who(worker.tab), "Signed in as worker-bob");
    await step("gcash", "1-in-progress", both);

    await markComplete(client, worker);
    // No payment method is chosen for the client, so Approve & Pay waits.
    const pay = client.tab.getByRole("button", { name: "Approve & Pay" });
    await expect.poll(() => pay.isDisabled()).toBe(true);
    expect(await client.tab.locator('input[name="method"]:checked').count()).toBe(0);
    await step("gcash", "2-marked-complete", both);

    await client.tab.getByLabel("GCash", { exact: true }).check();
    await expect.poll(() => pay.isEnabled()).toBe(true);
    await pay.click();
    await expectText(part.status(client.tab), "Waiting for GCash to confirm your payment.");
    await expectText(part.headline(worker.tab), "Client has approved your work.");
    await expectText(part.status(worker.tab), "as soon as the payment arrives");
    // Nothing says completed before the job is.
    expect((await worker.tab.locator("#job").innerText()).toLowerCase()).not.toContain("completed");
    await expectText(part.listItem(worker.tab, job), "Awaiting payment");
    await step("gcash", "3-approved", both);

    await admin.confirmPayment({ jobId: job }, bearer(service));
    await expectText(part.headline(worker.tab), "Job completed! Client has approved.");
    await expectText(part.status(worker.tab), "Payment by GCash confirmed");
    await expectText(part.status(client.tab), "Payment by GCash confirmed");
    await expectText(part.badge(client.tab), "Completed");
    await expectText(part.listItem(client.tab, job), "Completed");
    expect(await worker.tab.locator("#job-actions button").count()).toBe(0);
    await step("gcash", "4-paid", both);
    await close(client, worker);
  });

  it("CASH: the client sends a proof, the worker sees it and confirms", async () => {
    const job = await newJob();
    const { client, worker } = await openBoth(job, width);
    const both = { client, worker };
    await markComplete(client, worker);
    await client.tab.getByLabel("Cash", { exact: true }).check();
    await client.tab.getByRole("button", { name: "Approve & Pay" }).click();
    await expectText(part.headline(client.tab), "You have approved this job completion.");
    await expectText(part.status(worker.tab), "They will pay you in cash");
    await step("cash", "1-approved", both);

    // An empty or blank proof cannot be sent.
    const submit = client.tab.getByRole("button", { name: "Submit proof of payment" });
    const proof = client.tab.getByLabel("Payment reference");
    await expect.poll(() => submit.isDisabled()).toBe(true);
    await proof.fill("   ");
    expect(await submit.isDisabled()).toBe(true);
    await proof.fill("  OR-10234 ");
    await expect.poll(() => submit.isEnabled()).toBe(true);
    await step("cash", "2-proof-typed", { client });
    await submit.click();
    await expectText(part.status(client.tab), "Your reference: OR-10234");
    await expectText(part.status(worker.tab), "Proof of payment: OR-10234");
    expect((await worker.tab.locator("#job").innerText()).toLowerCase()).not.toContain("completed");
    await step("cash", "3-proof-sent", both);

    await worker.tab.getByRole("button", { name: "Confirm cash received" }).click();
    await expectText(part.headline(worker.tab), "Job completed! Client has approved.");
    await expectText(part.status(client.tab), "Payment by cash confirmed");
    await expectText(part.badge(worker.tab), "Completed");
    await step("cash", "4-paid", both);
    await close(client, worker);
  });

  it("Request changes: the client gives a reason, the worker sees it and marks complete again", async () => {
    const job = await newJob();
    const { client, worker } = await openBoth(job, width);
    const both = { client, worker };
    await markComplete(client, worker);
    await client.tab.getByRole("button", { name: "Request changes" }).click();
    const send = client.tab.getByRole("button", { name: "Send request" });
    await expect.poll(() => send.isDisabled()).toBe(true);
    await client.tab.getByLabel("What needs to change?").fill("The tap in the kitchen still drips.");
    await step("changes", "1-reason-typed", { client });
    await send.click();
    await expectText(part.status(worker.tab), "The client asked for changes: The tap in the kitchen still drips.");
    await expectText(part.status(client.tab), "You asked for changes: The tap in the kitchen still drips.");
    await expectText(part.badge(client.tab), "In progress");
    await step("changes", "2-requested", both);

    await markComplete(client, worker);
    await step("changes", "3-marked-again", both);
    await close(client, worker);
  });

  it("a cancelled job says so, when, and why, to both", async () => {
    const job = await newJob();
    const { client, worker } = await openBoth(job, width);
    await admin.cancelJob({ jobId: job, reason: "The client moved away." }, bearer(service));
    for (const p of [client, worker]) {
      await expectText(part.headline(p.tab), "This job was cancelled on");
      await expectText(part.status(p.tab), "Reason: The client moved away.");
      await expectText(part.badge(p.tab), "Cancelled");
      expect(await p.tab.locator("#job-actions button").count()).toBe(0);
    }
    await step("cancelled", "1-cancelled", { client, worker });
    await close(client, worker);
  });

  it("a stranger sees no job and no list", async () => {
    const stranger = await openPage(browser, linkWith(server.printed.tokens.stranger, 1), { width });
    await expectText(part.headline(stranger.tab), "You don't have access to this job.");
    await expectConnection(stranger.tab, "live");
    await expectText(stranger.tab.locator("#my-jobs"), "You have no jobs yet.");
    expect(await stranger.tab.locator("#job-list li").count()).toBe(0);
    await step("stranger", "1-denied", { stranger });
    await close(stranger);
  });

  it("offline: actions wait; after a restart the page catches up, and says so only if something changed", async () => {
    const job = await newJob();
    const { client, worker } = await openBoth(job, width);
    const both = { client, worker };
    const markButton = worker.tab.getByRole("button", { name: "Mark as Complete" });
    await expect.poll(() => markButton.isEnabled()).toBe(true);

    await server.stop();
    await expectConnection(worker.tab, "offline");
    await expectConnection(client.tab, "offline");
    expect(await markButton.isDisabled()).toBe(true);
    await expect.poll(() => worker.tab.locator("#job-paused").isVisible()).toBe(true);
    await expectText(part.banner(worker.tab), "does not answer");
    expect((await part.banner(worker.tab).innerText()).toLowerCase()).not.toContain("cors");
    await step("offline", "1-server-down", both);

    // Back with nothing changed: live again, nothing to announce.
    await server.start();
    await expectConnection(worker.tab, "live");
    await expectConnection(client.tab, "live");
    await expect.poll(() => markButton.isEnabled()).toBe(true);
    expect(await part.notice(client.tab).isVisible()).toBe(false);
    expect(await part.banner(client.tab).isVisible()).toBe(false);
    await step("offline", "2-back-nothing-changed", both);

    // Down again; meanwhile the worker's change is committed through another
    // instance on the same database, so the pages can only learn it from
    // the log when they are back.
    await server.stop();
    await expectConnection(client.tab, "offline");
    const side = new JobstatusServer({ port: await freePort(), database: server.database, dev: true });
    await side.start();
    await apiClients(side.url).jobs.markComplete({ jobId: job }, bearer(server.printed.tokens.worker));
    await side.stop();
    expect(await part.headline(client.tab).innerText()).toContain("working on this job");
    await server.start();
    await expectConnection(client.tab, "live");
    await expectText(part.notice(client.tab), "Back online. While you were away, worker-bob marked the job complete.");
    await expectText(part.notice(worker.tab), "Back online. While you were away, you marked the job complete.");
    await expectText(part.headline(client.tab), "Please review and approve!");
    await step("offline", "3-caught-up", both);

    // Down once more with the review open: every control of it waits, and
    // says why to a screen reader too.
    await server.stop();
    await expectConnection(client.tab, "offline");
    const controls = await actionControls(client.tab);
    expect(controls.map((c) => c.name)).toEqual(
      expect.arrayContaining(["GCASH", "CASH", "Approve & Pay", "Request changes", "change-reason", "Send request"]),
    );
    for (const control of controls) {
      expect(control, `${control.name} while offline`).toMatchObject({ disabled: true });
      expect(control.describedBy.split(" ")).toContain("job-paused");
    }
    await expect.poll(() => client.tab.locator("#job-paused").isVisible()).toBe(true);
    // The notice tells of a catch-up only while the page is live.
    expect(await part.notice(client.tab).isVisible()).toBe(false);
    await step("offline", "4-review-paused", { client });
    await server.start();
    await expectConnection(client.tab, "live");
    // Both back before the next change, or the worker would (rightly) be
    // told of it as something that happened while it was away.
    await expectConnection(worker.tab, "live");
    await expect.poll(async () => (await actionControls(client.tab)).find((c) => c.name === "Request changes")?.disabled).toBe(false);

    // And live for real: the flow goes on.
    await client.tab.getByLabel("Cash", { exact: true }).check();
    await client.tab.getByRole("button", { name: "Approve & Pay" }).click();
    await expectText(part.status(worker.tab), "They will pay you in cash");
    // The next change replaces the catch-up notice.
    await expect.poll(() => part.notice(worker.tab).isVisible()).toBe(false);
    await close(client, worker);
  });

  it("a device that goes offline is told so, and reconnects as soon as the network is back", async () => {
    const job = await newJob();
    const worker = await openPage(browser, link("worker", job), { width });
    await expectConnection(worker.tab, "live");
    await worker.context.setOffline(true);
    await expectText(part.banner(worker.tab), "This device is offline.");
    expect(await worker.tab.getByRole("button", { name: "Mark as Complete" }).isDisabled()).toBe(true);
    await step("device-offline", "1-offline", { worker });
    // Long enough offline that the next scheduled try is 3 s or more away.
    await expectConnection(worker.tab, "offline");
    const nextTryIn = async () => Number(/(\d+) s/.exec((await part.indicator(worker.tab).getAttribute("title")) ?? "")?.[1] ?? 0);
    await expect.poll(nextTryIn, { timeout: 20_000 }).toBeGreaterThanOrEqual(3);
    await worker.context.setOffline(false);
    const back = Date.now();
    await expectConnection(worker.tab, "live");
    // At once on the browser's "online" event, not at that next try.
    expect(Date.now() - back).toBeLessThan(1_500);
    expect(await part.banner(worker.tab).isVisible()).toBe(false);
    await close(worker);
  });
});

describe.each(WIDTHS)("keyboard only at %i px", (width) => {
  it("the worker reaches Mark as Complete with Tab, presses Enter, and lands on the new state", async () => {
    const job = await newJob();
    const worker = await openPage(browser, link("worker", job), { width });
    await expectConnection(worker.tab, "live");
    const focusedText = () => worker.tab.evaluate(() => document.activeElement?.textContent ?? "");
    for (let i = 0; i < 30 && (await focusedText()) !== "Mark as Complete"; i++) {
      await worker.tab.keyboard.press("Tab");
    }
    expect(await focusedText()).toBe("Mark as Complete");
    await worker.tab.keyboard.press("Enter");
    await expectText(part.headline(worker.tab), "Waiting for client to approve completion");
    // On the job's title, just above the new state (which, a live region,
    // is announced once rather than also read out for the focus).
    await expect.poll(() => worker.tab.evaluate(() => document.activeElement?.id)).toBe("job-title");
    await step("keyboard", "1-after-enter", { worker });
    await close(worker);
  });
});

describe.each(WIDTHS)("signing in at %i px", (width) => {
  it("a printed sign-in link signs in at once and leaves no token in the address bar", async () => {
    const page = await openPage(browser, server.printed.links.client, { width });
    await expectConnection(page.tab, "live");
    await expectText(part.who(page.tab), "Signed in as client-alice");
    await expectText(page.tab.locator("#job-title"), "Job #1");
    expect(page.tab.url()).not.toContain("token=");
    expect(page.tab.url()).toContain("job=1");
    // A reload keeps the tab signed in (the token is kept for this tab only).
    await page.tab.reload();
    await expectConnection(page.tab, "live");
    await expectText(part.who(page.tab), "Signed in as client-alice");
    await step("sign-in", "0-linked", { page });
    await close(page);
  });

  it("a kept token is never sent to another server that a link names", async () => {
    // Anything that asks this address for anything is recorded, and CORS
    // would let an authorized call through: only the page can hold it back.
    const seen = [];
    const trap = createServer((req, res) => {
      seen.push({ method: req.method, authorization: req.headers.authorization });
      res.writeHead(204, {
        "access-control-allow-origin": "*",
        "access-control-allow-methods": "POST",
        "access-control-allow-headers": "authorization, content-type, x-grpc-web, x-user-agent, grpc-timeout",
      });
      res.end();
    });
    const trapPort = await freePort();
    await new Promise((done) => trap.listen(trapPort, "127.0.0.1", done));
    const page = await openPage(browser, server.printed.links.client, { width });
    await expectConnection(page.tab, "live");
    await page.tab.goto(`${pageOrigin}/?api=http://127.0.0.1:${trapPort}&job=1`);
    await expect.poll(() => page.tab.locator("#sign-in").isVisible()).toBe(true);
    await expectText(page.tab.locator("#sign-in-error"), `You were signed in to ${server.url}`);
    expect(await page.tab.locator("#api").inputValue()).toBe(`http://127.0.0.1:${trapPort}`);
    await new Promise((r) => setTimeout(r, 500));
    expect(seen).toEqual([]);
    await step("sign-in", "4-other-server", { page });
    trap.close();
    await close(page);
  });

  it("a sign-in link with a refused token never shows anyone signed in", async () => {
    const page = await openPage(browser, linkWith(foreignToken("client-alice"), 1), { width, init: recordSignIns });
    await expect.poll(() => page.tab.locator("#sign-in").isVisible(), { timeout: LIVE }).toBe(true);
    await expectText(page.tab.locator("#sign-in-error"), "The server refused this token");
    expect(await connectionOf(page.tab)).toBe("signed-out");
    expect(page.tab.url()).not.toContain("token=");
    expect(await page.tab.evaluate(() => window.everSignedIn)).toEqual([]);
    await close(page);
  });

  it("a pasted export line is trimmed and accepted; garbage and refused tokens never show as signed in", async () => {
    // Anything that ever says "Signed in" is recorded.
    const page = await openPage(browser, `${pageOrigin}/?api=${server.url}`, { width, init: recordSignIns });
    await expect.poll(() => page.tab.locator("#sign-in").isVisible()).toBe(true);
    expect(await connectionOf(page.tab)).toBe("signed-out");
    await step("sign-in", "1-form", { page });

    const tokenBox = page.tab.getByLabel("Your token");
    const signIn = page.tab.getByRole("button", { name: "Sign in" });
    await tokenBox.fill("Base64 error? not a token at all");
    await signIn.click();
    await expectText(page.tab.locator("#sign-in-error"), "A token has no spaces in it");
    await tokenBox.fill("abc.def");
    await signIn.click();
    await expectText(page.tab.locator("#sign-in-error"), "does not look like a token");
    expect(await tokenBox.getAttribute("aria-invalid")).toBe("true");
    await step("sign-in", "2-not-a-token", { page });

    // A bad server address is marked on its own field.
    const address = page.tab.getByLabel("Server address");
    await tokenBox.fill(server.printed.tokens.client);
    await address.fill("localhost:50051");
    await signIn.click();
    await expectText(page.tab.locator("#sign-in-error"), "The server address must look like");
    expect(await address.getAttribute("aria-invalid")).toBe("true");
    expect(await tokenBox.getAttribute("aria-invalid")).toBeNull();
    await address.fill(server.url);

    // Well formed, but signed with a secret this server does not know.
    await tokenBox.fill(foreignToken("client-alice"));
    await signIn.click();
    await expectText(page.tab.locator("#sign-in-error"), "The server refused this token");
    expect(await connectionOf(page.tab)).toBe("signed-out");
    expect(await page.tab.evaluate(() => window.everSignedIn)).toEqual([]);
    await step("sign-in", "3-refused", { page });

    await tokenBox.fill(`   export CLIENT_TOKEN=${server.printed.tokens.client}  \n`);
    await signIn.click();
    await expectConnection(page.tab, "live");
    await expectText(part.who(page.tab), "Signed in as client-alice");
    await expectText(page.tab.locator("#job-list"), "Job #1");
    // The recorder does see a sign-in when there is one.
    expect(await page.tab.evaluate(() => window.everSignedIn)).toContain("Signed in as client-alice");
    await page.tab.getByRole("button", { name: "Sign out" }).click();
    await expect.poll(() => page.tab.locator("#sign-in").isVisible()).toBe(true);
    expect(await connectionOf(page.tab)).toBe("signed-out");
    await close(page);
  });

  it("the job list says each job's state in words and marks the open one", async () => {
    await newJob(); // a second job in the list, whichever tests ran before
    const page = await openPage(browser, link("worker", 1), { width });
    await expectConnection(page.tab, "live");
    const current = page.tab.locator('#job-list a[aria-current="page"]');
    await expectText(current, "Job #1");
    const second = page.tab.locator('#job-list a[data-job-id]:not([aria-current])').first();
    const id = await second.getAttribute("data-job-id");
    await second.click();
    await expect.poll(() => current.getAttribute("data-job-id")).toBe(id);
    await expectText(page.tab.locator("#job-title"), `Job #${id}`);
    expect(new URL(page.tab.url()).searchParams.get("job")).toBe(id);
    for (const item of await page.tab.locator("#job-list a").all()) {
      expect(await item.innerText()).toMatch(/Job #\d+\s+(Open|In progress|Waiting for approval|Awaiting payment|Completed|Cancelled)/);
    }
    // Keyboard: the list is reachable and opens a job with Enter.
    await page.tab.locator("#job-list a").first().focus();
    await page.tab.keyboard.press("Enter");
    await expectText(current, "Job #1");
    await step("job-list", "1-list", { page });
    await close(page);
  });
});

describe.each(WIDTHS)("an embedding application signs the page in, at %i px", (width) => {
  let embedder;
  let framed;
  let hooked;
  let refreshing;

  beforeAll(async () => {
    // The page as an application would host it, told which origin may send
    // it tokens; the application's own page on another origin frames it.
    const appPort = await freePort();
    const appOrigin = `http://127.0.0.1:${appPort}`;
    const framedPort = await freePort();
    framed = { origin: `http://127.0.0.1:${framedPort}` };
    framed.server = await servePage(join(WEB, "dist"), framedPort, {
      "/config.js": `window.jobstatusConfig = { api: ${JSON.stringify(server.url)}, tokenOrigin: ${JSON.stringify(appOrigin)} };`,
    });
    const workerToken = server.printed.tokens.worker;
    embedder = {
      origin: appOrigin,
      server: await servePage(join(WEB, "dist"), appPort, {
        "/": `<!doctype html><html lang="en"><head><title>App</title></head><body><main>
<iframe id="jobs" title="Job details" src="${framed.origin}/?job=1" style="width:100%;height:700px;border:0"></iframe>
</main><script>
addEventListener("message", (e) => {
  if (e.origin !== ${JSON.stringify(framed.origin)}) return;
  window.heard = (window.heard || []).concat(e.data.type);
  if (e.data.type === "jobstatus:ready") {
    e.source.postMessage({ type: "jobstatus:sign-in", token: ${JSON.stringify(workerToken)} }, ${JSON.stringify(framed.origin)});
  }
});
</script></body></html>`,
      }),
    };
    const hookedPort = await freePort();
    hooked = { origin: `http://127.0.0.1:${hookedPort}` };
    hooked.server = await servePage(join(WEB, "dist"), hookedPort, {
      "/config.js": `window.jobstatusConfig = { api: ${JSON.stringify(server.url)}, job: 1,
        getToken: async () => { window.asked = (window.asked || 0) + 1; return ${JSON.stringify(server.printed.tokens.client)}; } };`,
    });
    // An application whose tokens are refused for its first 1.5 s (a
    // rotated secret, a clock skew), then good again.
    const refreshingPort = await freePort();
    refreshing = { origin: `http://127.0.0.1:${refreshingPort}` };
    refreshing.server = await servePage(join(WEB, "dist"), refreshingPort, {
      "/config.js": `window.jobstatusConfig = { api: ${JSON.stringify(server.url)}, job: 1,
        getToken: async () => performance.now() < 1500 ? ${JSON.stringify(foreignToken("client-alice"))} : ${JSON.stringify(server.printed.tokens.client)} };`,
    });
  });

  afterAll(() => {
    embedder?.server.close();
    framed?.server.close();
    hooked?.server.close();
    refreshing?.server.close();
  });

  it("by postMessage from the framing origin, and from no other", async () => {
    const app = await openPage(browser, `${embedder.origin}/`, { width });
    const frame = app.tab.frameLocator("#jobs");
    await expectText(frame.locator("#who"), "Signed in as worker-bob");
    await expect.poll(() => frame.locator("#connection").getAttribute("data-state"), { timeout: LIVE }).toBe("live");
    expect(await frame.locator("#sign-in").isVisible()).toBe(false);
    expect(await app.tab.evaluate(() => window.heard)).toContain("jobstatus:ready");
    await step("embedded", "0-framed", { app });

    // The same page opened directly ignores a token posted by anyone else.
    const direct = await openPage(browser, `${framed.origin}/?job=1`, { width });
    await direct.tab.evaluate((t) => window.postMessage({ type: "jobstatus:sign-in", token: t }, "*"), server.printed.tokens.client);
    await new Promise((r) => setTimeout(r, 500));
    expect(await connectionOf(direct.tab)).toBe("signed-out");
    expect(await direct.tab.locator("#account").isVisible()).toBe(false);
    await close(app, direct);
  });

  it("by a getToken hook in config.js, with no sign-in form", async () => {
    // A link's api= never overrides the application's own setting.
    const page = await openPage(browser, `${hooked.origin}/?api=http://127.0.0.1:9`, { width });
    await expectConnection(page.tab, "live");
    await expectText(part.who(page.tab), "Signed in as client-alice");
    await expectText(page.tab.locator("#job-title"), "Job #1");
    expect(await page.tab.locator("#sign-in").isVisible()).toBe(false);
    expect(await page.tab.getByRole("button", { name: "Sign out" }).isVisible()).toBe(false);
    expect(await page.tab.evaluate(() => window.asked)).toBeGreaterThanOrEqual(1);
    await step("embedded", "1-hooked", { page });
    await close(page);
  });

  it("a refused token from the hook is asked for again, and never shown as signed in meanwhile", async () => {
    const page = await openPage(browser, `${refreshing.origin}/`, { width, init: recordSignIns });
    await expectText(part.banner(page.tab), "The server refused the application's token");
    await expectText(part.banner(page.tab), "Asking the application again in");
    expect(await page.tab.evaluate(() => window.everSignedIn)).toEqual([]);
    await step("embedded", "2-token-refused", { page });
    await expectConnection(page.tab, "live");
    await expectText(part.who(page.tab), "Signed in as client-alice");
    expect(await part.banner(page.tab).isVisible()).toBe(false);
    await close(page);
  });
});

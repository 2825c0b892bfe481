// The reconnecting client against the real server, from Node (grpc-web over
// HTTP/1.1 with Node's fetch): watchJob and watchMyJobs across a restart.
import { join } from "node:path";

import { afterAll, beforeAll, expect, it } from "vitest";

import {
  PaymentMethod,
  createJobServiceClient,
  createJobStatusTransport,
  watchJob,
  watchMyJobs,
} from "../src/client/index.ts";
import { JobstatusServer, apiClients, bearer, ensureResults, freePort, tempDir, token } from "./harness.mjs";

let server;
const tokens = {};

beforeAll(async () => {
  ensureResults();
  server = new JobstatusServer({
    port: await freePort(),
    database: join(tempDir("jobstatus-client-e2e-"), "db.sqlite"),
    corsOrigins: [],
    heartbeatSecs: 1,
  });
  await server.start();
  for (const who of ["client-alice", "worker-bob", "worker-carol", "stranger-eve"]) tokens[who] = token(who);
  tokens.service = token("platform", { service: true });
  const { admin } = apiClients(server.url);
  await admin.createJob({ jobId: 10n, clientId: "client-alice", workerId: "worker-bob" }, bearer(tokens.service));
  await admin.createJob({ jobId: 11n, clientId: "client-alice", workerId: "worker-bob" }, bearer(tokens.service));
});

afterAll(async () => {
  await server?.stop();
});

it("watchJob and watchMyJobs resume across a server restart without gaps or repeats", async () => {
  const client = createJobServiceClient(createJobStatusTransport(server.url));
  const revisions = [];
  const states = [];
  const beats = [];
  const job = watchJob(10, {
    client,
    token: tokens["client-alice"],
    onUpdate: (j) => revisions.push(Number(j.revision)),
    onStatus: (s) => states.push(s.state),
    onHeartbeat: (r) => beats.push(Number(r)),
    backoff: { initialMs: 100, maxMs: 500 },
  });
  const listed = [];
  const mine = watchMyJobs({
    client,
    token: tokens["worker-bob"],
    onUpdate: (jobs, change) => listed.push(`${change.kind} ${change.jobId} r${jobs.get(change.jobId)?.revision ?? "-"}`),
    backoff: { initialMs: 100, maxMs: 500 },
  });
  await expect.poll(() => states.at(-1), { timeout: 10_000 }).toBe("live");
  // Heartbeats arrive on an idle stream (1 s here) with the job's revision.
  await expect.poll(() => beats.length, { timeout: 5_000 }).toBeGreaterThan(0);
  expect(beats[0]).toBe(1);

  const { jobs } = apiClients(server.url);
  await jobs.markComplete({ jobId: 10n }, bearer(tokens["worker-bob"]));
  await expect.poll(() => revisions, { timeout: 10_000 }).toEqual([1, 2]);

  await server.stop();
  await expect.poll(() => states.at(-1), { timeout: 10_000 }).toBe("reconnecting");
  await server.start();
  await apiClients(server.url).jobs.approveCompletion(
    { jobId: 10n, paymentMethod: PaymentMethod.CASH },
    bearer(tokens["client-alice"]),
  );
  await expect.poll(() => revisions, { timeout: 10_000 }).toEqual([1, 2, 3]);
  await expect.poll(() => states.at(-1), { timeout: 10_000 }).toBe("live");

  // Job 11 goes to another worker: it leaves Bob's list.
  await apiClients(server.url).admin.assignWorker({ jobId: 11n, workerId: "worker-carol" }, bearer(tokens.service));
  await expect.poll(() => listed, { timeout: 10_000 }).toContain("left 11 r-");
  // Unfinished jobs come first, most recently updated first: compare as a set.
  expect([...listed.slice(0, 2)].sort()).toEqual(["snapshot 10 r1", "snapshot 11 r1"]);
  expect(listed).toContain("event 10 r2");
  expect(listed).toContain("event 10 r3");
  // Each revision was applied once.
  expect(listed.filter((l) => l === "event 10 r2")).toHaveLength(1);

  job.cancel();
  mine.cancel();
  expect((await job.done).state).toBe("cancelled");
  expect((await mine.done).state).toBe("cancelled");
});

it("a stranger is denied and a bad token is not retried forever", async () => {
  const client = createJobServiceClient(createJobStatusTransport(server.url));
  const denied = await watchJob(10, { client, token: tokens["stranger-eve"], onUpdate: () => {} }).done;
  expect(denied.state).toBe("denied");
  const refused = await watchJob(10, { client, token: "not-a-token", onUpdate: () => {} }).done;
  expect(refused.state).toBe("unauthenticated");
});

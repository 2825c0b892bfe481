import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";

import {
  EventType,
  HeartbeatSchema,
  JobEventSchema,
  JobLeftSchema,
  JobSchema,
  JobService,
  JobStatus,
  SnapshotReason,
  SnapshotSchema,
  WatchJobResponseSchema,
  WatchMyJobsResponseSchema,
  backoffDelay,
  watchJob,
  watchMyJobs,
  type Job,
  type WatchJobRequest,
  type WatchJobResponse,
  type WatchMyJobsRequest,
  type WatchMyJobsResponse,
  type WatchStatus,
} from "../src/client/index.js";

// ------------------------------------------------------------ fixtures

function job(revision: number, status = JobStatus.IN_PROGRESS, id = 1n): Job {
  return create(JobSchema, {
    jobId: id,
    clientId: "client-alice",
    workerId: "worker-bob",
    status,
    revision: BigInt(revision),
  });
}

const snapshot = (j: Job): WatchJobResponse =>
  create(WatchJobResponseSchema, {
    kind: {
      case: "snapshot",
      value: create(SnapshotSchema, { job: j, reason: SnapshotReason.INITIAL }),
    },
  });

const event = (j: Job): WatchJobResponse =>
  create(WatchJobResponseSchema, {
    kind: {
      case: "event",
      value: create(JobEventSchema, {
        event: EventType.WORKER_MARKED_COMPLETE,
        jobId: j.jobId,
        revision: j.revision,
        job: j,
      }),
    },
  });

const heartbeat = (revision: number): WatchJobResponse =>
  create(WatchJobResponseSchema, {
    kind: { case: "heartbeat", value: create(HeartbeatSchema, { revision: BigInt(revision) }) },
  });

type Script = (
  request: WatchJobRequest,
  call: number,
  authorization: string | null,
) => AsyncIterable<WatchJobResponse>;

/** A fake transport whose WatchJob runs `script` once per connection. */
function fakeServer(script: Script) {
  const requests: { afterRevision?: bigint; authorization: string | null }[] = [];
  const transport = createRouterTransport(({ service }) => {
    service(JobService, {
      watchJob(request, context) {
        const authorization = context.requestHeader.get("authorization");
        requests.push({ afterRevision: request.afterRevision, authorization });
        return script(request, requests.length, authorization);
      },
    });
  });
  return { client: createClient(JobService, transport), requests };
}

/** Options shared by every test: no real waiting, recorded statuses. */
function harness() {
  const statuses: WatchStatus[] = [];
  const delays: number[] = [];
  const updates: Job[] = [];
  return {
    statuses,
    delays,
    updates,
    states: () => statuses.map((s) => s.state),
    revisions: () => updates.map((u) => Number(u.revision)),
    common: {
      token: "t0",
      onStatus: (s: WatchStatus) => statuses.push(s),
      onUpdate: (j: Job) => updates.push(j),
      sleep: async (ms: number) => {
        delays.push(ms);
      },
      random: () => 1,
    },
  };
}

const unavailable = () =>
  new ConnectError("server is shutting down; resume with after_revision", Code.Unavailable);

// --------------------------------------------------------------- tests

describe("backoffDelay", () => {
  it("grows exponentially, is capped, and jitters within [half, full]", () => {
    const full = () => 1;
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(n, {}, full))).toEqual([
      250, 500, 1000, 2000, 4000,
    ]);
    expect(backoffDelay(30, {}, full)).toBe(10_000);
    expect(backoffDelay(3, {}, () => 0)).toBe(500);
    expect(backoffDelay(2, { initialMs: 100, maxMs: 150, jitter: 0 }, () => 0.3)).toBe(150);
  });
});

describe("watchJob", () => {
  it("applies the snapshot and events in order and goes live", async () => {
    const h = harness();
    const { client, requests } = fakeServer(async function* () {
      yield snapshot(job(1));
      yield event(job(2, JobStatus.AWAITING_CLIENT_APPROVAL));
      yield event(job(3, JobStatus.COMPLETED));
    });
    const handle = watchJob(1, { client, ...h.common });
    const final = await handle.done;
    expect(h.revisions()).toEqual([1, 2, 3]);
    expect(h.states()).toEqual(["connecting", "live", "ended"]);
    expect(final.state).toBe("ended");
    expect(requests).toEqual([{ afterRevision: undefined, authorization: "Bearer t0" }]);
  });

  it("reconnects after a server shutdown and resumes from the last applied revision, without duplicates", async () => {
    const h = harness();
    const { client, requests } = fakeServer(async function* (request, call) {
      if (call === 1) {
        yield snapshot(job(1));
        yield event(job(2));
        throw unavailable();
      }
      if (call === 2) {
        // The connection drops before anything arrives.
        throw new ConnectError("network", Code.Unknown);
      }
      // Replay after request.afterRevision, overlapping one old revision
      // (as a buggy proxy might) to prove it is not applied twice.
      expect(request.afterRevision).toBe(2n);
      yield event(job(2));
      yield event(job(3, JobStatus.AWAITING_CLIENT_APPROVAL));
      yield heartbeat(3);
      yield event(job(4, JobStatus.CANCELLED));
    });
    const final = await watchJob(1, { client, ...h.common }).done;
    expect(final.state).toBe("ended");
    expect(h.revisions()).toEqual([1, 2, 3, 4]);
    expect(requests.map((r) => r.afterRevision)).toEqual([undefined, 2n, 2n]);
    expect(h.states()).toEqual([
      "connecting",
      "live",
      "reconnecting",
      "reconnecting",
      "live",
      "ended",
    ]);
    // Two consecutive failures: the second waits longer than the first.
    expect(h.delays).toEqual([250, 500]);
  });

  it("resets the backoff once live again", async () => {
    const h = harness();
    const { client } = fakeServer(async function* (_request, call) {
      if (call <= 3) throw unavailable();
      if (call === 4) {
        yield heartbeat(5);
        throw unavailable();
      }
      yield event(job(6, JobStatus.COMPLETED));
    });
    await watchJob(1, { client, ...h.common, afterRevision: 5n }).done;
    expect(h.delays).toEqual([250, 500, 1000, 250]);
  });

  it("caps the backoff for a server that stays down", async () => {
    const h = harness();
    let calls = 0;
    const { client } = fakeServer(async function* () {
      calls += 1;
      if (calls < 12) throw unavailable();
      yield snapshot(job(1, JobStatus.COMPLETED));
    });
    await watchJob(1, { client, ...h.common, backoff: { maxMs: 3000 } }).done;
    expect(Math.max(...h.delays)).toBe(3000);
    expect(h.delays.slice(0, 5)).toEqual([250, 500, 1000, 2000, 3000]);
  });

  it("reconnects from the last revision when it sees a hole", async () => {
    const h = harness();
    const { client, requests } = fakeServer(async function* (_request, call) {
      if (call === 1) {
        yield snapshot(job(1));
        yield event(job(3)); // 2 is missing
        return;
      }
      yield event(job(2));
      yield event(job(3, JobStatus.COMPLETED));
    });
    await watchJob(1, { client, ...h.common }).done;
    expect(h.revisions()).toEqual([1, 2, 3]);
    expect(requests.map((r) => r.afterRevision)).toEqual([undefined, 1n]);
  });

  it("reconnects when a stream ends without a terminal event", async () => {
    const h = harness();
    const { client, requests } = fakeServer(async function* (_request, call) {
      if (call === 1) {
        yield snapshot(job(1));
        return;
      }
      yield event(job(2, JobStatus.COMPLETED));
    });
    await watchJob(1, { client, ...h.common }).done;
    expect(requests).toHaveLength(2);
    expect(h.revisions()).toEqual([1, 2]);
  });

  it("reconnects when the server goes silent, and keeps a stream that heartbeats", async () => {
    const h = harness();
    const { client, requests } = fakeServer(async function* (_request, call, _auth) {
      if (call === 1) {
        yield snapshot(job(1));
        // Heartbeats closer together than the idle timeout keep it open...
        for (let i = 0; i < 4; i++) {
          await new Promise((resolve) => setTimeout(resolve, 40));
          yield heartbeat(1);
        }
        // ...then nothing at all, as from a connection that died silently.
        await new Promise((resolve) => setTimeout(resolve, 5_000));
        return;
      }
      yield event(job(2, JobStatus.COMPLETED));
    });
    const started = Date.now();
    let beats = 0;
    const onHeartbeat = () => (beats += 1);
    const final = await watchJob(1, { client, ...h.common, onHeartbeat, idleTimeoutMs: 100 }).done;
    expect(final.state).toBe("ended");
    expect(beats).toBe(4); // 160 ms of heartbeats were not cut at 100 ms
    expect(Date.now() - started).toBeLessThan(4_000);
    expect(requests.map((r) => r.afterRevision)).toEqual([undefined, 1n]);
    const cut = h.statuses.find((s) => s.state === "reconnecting");
    expect(cut?.error?.code).toBe(Code.Unavailable);
    expect(cut?.error?.rawMessage).toBe("no message from the server for 100 ms");
    expect(h.revisions()).toEqual([1, 2]);
  });

  it("reconnectNow drops a live connection and resumes where it was", async () => {
    const h = harness();
    let handle: ReturnType<typeof watchJob> | undefined;
    const { client, requests } = fakeServer(async function* (_request, call) {
      if (call === 1) {
        yield snapshot(job(1));
        setTimeout(() => handle?.reconnectNow("the device went offline"), 10);
        await new Promise((resolve) => setTimeout(resolve, 5_000));
        return;
      }
      yield event(job(2, JobStatus.COMPLETED));
    });
    handle = watchJob(1, { client, ...h.common });
    const started = Date.now();
    expect((await handle.done).state).toBe("ended");
    expect(Date.now() - started).toBeLessThan(4_000);
    expect(requests.map((r) => r.afterRevision)).toEqual([undefined, 1n]);
    expect(h.statuses.find((s) => s.state === "reconnecting")?.error?.rawMessage).toBe("the device went offline");
  });

  it("reconnectNow skips the rest of a back-off wait", async () => {
    const statuses: WatchStatus[] = [];
    const { client, requests } = fakeServer(async function* (_request, call) {
      if (call === 1) throw unavailable();
      yield snapshot(job(1, JobStatus.COMPLETED));
    });
    const handle = watchJob(1, {
      client,
      token: "t0",
      onUpdate: () => {},
      onStatus: (s) => {
        statuses.push(s);
        if (s.state === "reconnecting") setTimeout(() => handle.reconnectNow(), 10);
      },
      backoff: { initialMs: 60_000, maxMs: 60_000, jitter: 0 },
    });
    const started = Date.now();
    expect((await handle.done).state).toBe("ended");
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(requests).toHaveLength(2);
    expect(statuses.find((s) => s.state === "reconnecting")?.retryInMs).toBe(60_000);
  });

  it("stops at once on access denied", async () => {
    const h = harness();
    const { client, requests } = fakeServer(async function* () {
      throw new ConnectError("you may not see job 1", Code.PermissionDenied);
    });
    const final = await watchJob(1, { client, ...h.common }).done;
    expect(final.state).toBe("denied");
    expect(final.error?.code).toBe(Code.PermissionDenied);
    expect(requests).toHaveLength(1);
    expect(h.delays).toEqual([]);
  });

  it("surfaces an expired token without retrying forever", async () => {
    const h = harness();
    const { client, requests } = fakeServer(async function* () {
      throw new ConnectError("token expired", Code.Unauthenticated);
    });
    const final = await watchJob(1, { client, ...h.common }).done;
    expect(final.state).toBe("unauthenticated");
    expect(requests).toHaveLength(1);

    // A token source gets one more try with its fresh token, then stops.
    const h2 = harness();
    const again = fakeServer(async function* () {
      throw new ConnectError("token expired", Code.Unauthenticated);
    });
    let n = 0;
    const final2 = await watchJob(1, {
      ...h2.common,
      client: again.client,
      token: () => `t${++n}`,
    }).done;
    expect(final2.state).toBe("unauthenticated");
    expect(again.requests.map((r) => r.authorization)).toEqual(["Bearer t1", "Bearer t2"]);
  });

  it("recovers with a refreshed token", async () => {
    const h = harness();
    const { client } = fakeServer(async function* (_request, _call, authorization) {
      if (authorization !== "Bearer fresh") {
        throw new ConnectError("token expired", Code.Unauthenticated);
      }
      yield snapshot(job(1, JobStatus.COMPLETED));
    });
    let first = true;
    const final = await watchJob(1, {
      ...h.common,
      client,
      token: async () => {
        const t = first ? "stale" : "fresh";
        first = false;
        return t;
      },
    }).done;
    expect(final.state).toBe("ended");
    expect(h.revisions()).toEqual([1]);
  });

  it("can be cancelled while live, and calls nothing afterwards", async () => {
    const h = harness();
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const { client } = fakeServer(async function* () {
      yield snapshot(job(1));
      await released;
      yield event(job(2));
    });
    const handle = watchJob(1, { client, ...h.common });
    await expect.poll(() => h.states()).toContain("live");
    handle.cancel();
    release();
    const final = await handle.done;
    expect(final.state).toBe("cancelled");
    expect(h.revisions()).toEqual([1]);
    expect(h.states().at(-1)).toBe("cancelled");
  });

  it("can be cancelled while waiting to reconnect", async () => {
    const h = harness();
    const { client, requests } = fakeServer(async function* () {
      throw unavailable();
    });
    let wake!: () => void;
    const handle = watchJob(1, {
      client,
      ...h.common,
      sleep: (_ms, signal) =>
        new Promise<void>((resolve) => {
          wake = resolve;
          signal.addEventListener("abort", () => resolve());
        }),
    });
    await expect.poll(() => h.states()).toContain("reconnecting");
    handle.cancel();
    const final = await handle.done;
    expect(final.state).toBe("cancelled");
    expect(requests).toHaveLength(1);
    expect(wake).toBeTypeOf("function");
  });
});

// ------------------------------------------------------------ WatchMyJobs

const my = (kind: WatchMyJobsResponse["kind"]) => create(WatchMyJobsResponseSchema, { kind });
const mySnapshot = (j: Job) =>
  my({ case: "snapshot", value: create(SnapshotSchema, { job: j, reason: SnapshotReason.INITIAL }) });
const myEvent = (j: Job) =>
  my({
    case: "event",
    value: create(JobEventSchema, { jobId: j.jobId, revision: j.revision, job: j }),
  });
const myBeat = () => my({ case: "heartbeat", value: create(HeartbeatSchema, {}) });
const myLeft = (id: bigint, revision: number) =>
  my({
    case: "left",
    value: create(JobLeftSchema, {
      jobId: id,
      revision: BigInt(revision),
      cause: EventType.WORKER_ASSIGNED,
    }),
  });

describe("watchMyJobs", () => {
  it("keeps the job list, handles joins and leaves, and resumes with a map of revisions", async () => {
    const maps: Record<string, bigint>[] = [];
    const transport = createRouterTransport(({ service }) => {
      service(JobService, {
        async *watchMyJobs(request: WatchMyJobsRequest) {
          maps.push({ ...request.afterRevisions });
          if (maps.length === 1) {
            yield mySnapshot(job(1, JobStatus.IN_PROGRESS, 1n));
            yield mySnapshot(job(4, JobStatus.IN_PROGRESS, 2n));
            yield myBeat();
            yield myEvent(job(2, JobStatus.AWAITING_CLIENT_APPROVAL, 1n));
            yield mySnapshot(job(2, JobStatus.IN_PROGRESS, 3n)); // joins
            throw unavailable();
          }
          // Resumed: job 2 was lost while away; job 1 moved on; 1's old
          // revision repeats and must be dropped.
          yield myEvent(job(2, JobStatus.AWAITING_CLIENT_APPROVAL, 1n));
          yield myEvent(job(3, JobStatus.AWAITING_PAYMENT, 1n));
          yield myLeft(2n, 0);
          yield myBeat();
          yield myLeft(3n, 3);
          throw new ConnectError("token expired", Code.Unauthenticated);
        },
      });
    });
    const h = harness();
    const seen: string[] = [];
    let latest = new Map<bigint, Job>();
    const final = await watchMyJobs({
      ...h.common,
      client: createClient(JobService, transport),
      onUpdate: (jobs, change) => {
        latest = new Map(jobs);
        seen.push(`${change.kind} ${change.jobId}`);
      },
    }).done;
    expect(maps).toEqual([{}, { "1": 2n, "2": 4n, "3": 2n }]);
    expect(seen).toEqual([
      "snapshot 1",
      "snapshot 2",
      "event 1",
      "snapshot 3",
      "event 1",
      "left 2",
      "left 3",
    ]);
    expect([...latest.keys()]).toEqual([1n]);
    expect(latest.get(1n)?.revision).toBe(3n);
    expect(h.states()).toEqual(["connecting", "live", "reconnecting", "live", "unauthenticated"]);
    expect(final.state).toBe("unauthenticated");
  });
});

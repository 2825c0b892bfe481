// The job page's words and sign-in parsing, without a browser: every role
// against every state and payment method, and every way a person pastes
// a token.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";

import {
  EventType,
  JobEventSchema,
  JobSchema,
  JobStatus,
  PaymentMethod,
  type Job,
} from "../src/client/index.js";
import { OFFLINE_AFTER_ATTEMPTS, combine, isNetworkFailure, offlineReason } from "../src/demo/connection.js";
import { embedMessage, expiryOf, parseToken, subjectOf, takeTokenFromUrl } from "../src/demo/session.js";
import { STATE_WORDS, describeEvent, roleOf, viewJob, type Role } from "../src/demo/view.js";

const CLIENT = "client-alice";
const WORKER = "worker-bob";
const STRANGER = "stranger-eve";
const AT = new Date("2026-11-30T14:05:00Z");
const fmt = () => "Nov 30, 14:05";

function job(fields: Omit<Partial<Job>, "$typeName" | "$unknown">): Job {
  return create(JobSchema, {
    jobId: 7n,
    clientId: CLIENT,
    workerId: WORKER,
    revision: 3n,
    updatedAt: timestampFromDate(AT),
    ...fields,
  });
}

const STATUSES = [
  JobStatus.OPEN,
  JobStatus.IN_PROGRESS,
  JobStatus.AWAITING_CLIENT_APPROVAL,
  JobStatus.AWAITING_PAYMENT,
  JobStatus.COMPLETED,
  JobStatus.CANCELLED,
];
const METHODS = [PaymentMethod.UNSPECIFIED, PaymentMethod.GCASH, PaymentMethod.CASH];
const PEOPLE: [Role, string][] = [
  ["client", CLIENT],
  ["worker", WORKER],
  ["viewer", STRANGER],
];

/** Every job shape the page can meet (including combinations the server never sends). */
function everyJob(): Job[] {
  const all: Job[] = [];
  for (const status of STATUSES)
    for (const paymentMethod of METHODS)
      for (const paymentProofRef of ["", "OR-1"])
        for (const changeRequestReason of ["", "fix the tap"])
          for (const workerMarkedComplete of [false, true])
            for (const clientMarkedComplete of [false, true])
              all.push(
                job({
                  status,
                  paymentMethod,
                  paymentProofRef,
                  changeRequestReason,
                  workerMarkedComplete,
                  clientMarkedComplete,
                  workerId: status === JobStatus.OPEN ? "" : WORKER,
                }),
              );
  return all;
}

function words(view: ReturnType<typeof viewJob>): string {
  return [view.badge.text, view.headline, ...view.details].join(" ");
}

describe("the job's words, role by role", () => {
  it("never says completed, paid or confirmed before the job is completed", () => {
    for (const j of everyJob()) {
      for (const [, me] of PEOPLE) {
        const text = words(viewJob(j, me, fmt)).toLowerCase();
        if (j.status !== JobStatus.COMPLETED) {
          expect(text, `${JobStatus[j.status]} as ${me}: ${text}`).not.toMatch(/\bcompleted\b|\bpaid\b|confirmed\b/);
        }
      }
    }
  });

  it("offers each action to exactly the right person in exactly the right state", () => {
    for (const j of everyJob()) {
      for (const [role, me] of PEOPLE) {
        const action = viewJob(j, me, fmt).action?.kind;
        const cash = j.paymentMethod === PaymentMethod.CASH;
        const expected =
          role === "worker" && j.status === JobStatus.IN_PROGRESS
            ? "mark-complete"
            : role === "client" && j.status === JobStatus.AWAITING_CLIENT_APPROVAL
              ? "review"
              : role === "client" && j.status === JobStatus.AWAITING_PAYMENT && cash && !j.paymentProofRef
                ? "submit-proof"
                : role === "worker" && j.status === JobStatus.AWAITING_PAYMENT && cash && j.paymentProofRef
                  ? "confirm-cash"
                  : undefined;
        expect(action, `${JobStatus[j.status]} ${PaymentMethod[j.paymentMethod]} as ${role}`).toBe(expected);
      }
    }
  });

  it("says the state in words on every badge, the same for everyone", () => {
    for (const j of everyJob()) {
      const badges = PEOPLE.map(([, me]) => viewJob(j, me, fmt).badge.text);
      expect(new Set(badges).size).toBe(1);
      expect(badges[0]).toBe(STATE_WORDS[j.status]);
      expect(badges[0]).not.toMatch(/_/);
    }
  });

  it("walks the seed's flow with its own words", () => {
    const working = job({ status: JobStatus.IN_PROGRESS });
    expect(viewJob(working, WORKER, fmt).action).toEqual({ kind: "mark-complete" });
    expect(viewJob(working, CLIENT, fmt).headline).toBe("worker-bob is working on this job.");

    const marked = job({ status: JobStatus.AWAITING_CLIENT_APPROVAL, workerMarkedComplete: true });
    expect(viewJob(marked, WORKER, fmt).headline).toBe("Waiting for client to approve completion");
    expect(viewJob(marked, CLIENT, fmt).headline).toBe(
      "Worker has marked this job as complete. Please review and approve!",
    );
    expect(viewJob(marked, CLIENT, fmt).details).toEqual(["worker-bob marked it complete on Nov 30, 14:05."]);

    const gcash = job({ status: JobStatus.AWAITING_PAYMENT, paymentMethod: PaymentMethod.GCASH });
    expect(viewJob(gcash, CLIENT, fmt).headline).toBe("You have approved this job completion.");
    expect(viewJob(gcash, CLIENT, fmt).details).toEqual(["Waiting for GCash to confirm your payment."]);
    expect(viewJob(gcash, WORKER, fmt).headline).toBe("Client has approved your work.");
    expect(words(viewJob(gcash, WORKER, fmt))).toContain("told here as soon as the payment arrives");

    const done = job({ status: JobStatus.COMPLETED, paymentMethod: PaymentMethod.GCASH });
    expect(viewJob(done, WORKER, fmt).headline).toBe("Job completed! Client has approved.");
    expect(viewJob(done, WORKER, fmt).details).toEqual(["Payment by GCash confirmed on Nov 30, 14:05."]);
    expect(viewJob(done, CLIENT, fmt).details).toEqual(["Payment by GCash confirmed on Nov 30, 14:05."]);
  });

  it("shows the cash proof to the worker before they confirm", () => {
    const waiting = job({ status: JobStatus.AWAITING_PAYMENT, paymentMethod: PaymentMethod.CASH });
    expect(viewJob(waiting, CLIENT, fmt).action).toEqual({ kind: "submit-proof" });
    expect(viewJob(waiting, WORKER, fmt).action).toBeUndefined();
    const proved = job({ status: JobStatus.AWAITING_PAYMENT, paymentMethod: PaymentMethod.CASH, paymentProofRef: "OR-10234" });
    const worker = viewJob(proved, WORKER, fmt);
    expect(worker.action).toEqual({ kind: "confirm-cash", proof: "OR-10234" });
    expect(worker.details).toContain("Proof of payment: OR-10234");
    expect(viewJob(proved, CLIENT, fmt).details).toEqual([
      "Your reference: OR-10234",
      "Waiting for worker-bob to confirm they received the cash.",
    ]);
  });

  it("tells both sides about requested changes, and when and why a job was cancelled", () => {
    const again = job({ status: JobStatus.IN_PROGRESS, changeRequestReason: "the tap still drips" });
    expect(viewJob(again, WORKER, fmt).details[0]).toBe("The client asked for changes: the tap still drips");
    expect(viewJob(again, CLIENT, fmt).details[0]).toBe("You asked for changes: the tap still drips");
    const cancelled = job({ status: JobStatus.CANCELLED, cancelReason: "client moved away" });
    for (const [, me] of PEOPLE) {
      const view = viewJob(cancelled, me, fmt);
      expect(view.headline).toBe("This job was cancelled on Nov 30, 14:05.");
      expect(view.details).toEqual(["Reason: client moved away"]);
      expect(view.action).toBeUndefined();
    }
  });

  it("knows who is who", () => {
    const j = job({});
    expect(roleOf(j, CLIENT)).toBe("client");
    expect(roleOf(j, WORKER)).toBe("worker");
    expect(roleOf(j, STRANGER)).toBe("viewer");
    expect(roleOf(job({ workerId: "" }), "")).toBe("viewer");
  });

  it("describes changes from the viewer's side", () => {
    const event = (fields: object) => create(JobEventSchema, { jobId: 7n, revision: 4n, ...fields });
    expect(describeEvent(event({ event: EventType.WORKER_MARKED_COMPLETE, actorId: WORKER }), CLIENT)).toBe(
      "worker-bob marked the job complete",
    );
    expect(describeEvent(event({ event: EventType.WORKER_MARKED_COMPLETE, actorId: WORKER }), WORKER)).toBe(
      "you marked the job complete",
    );
    expect(
      describeEvent(
        event({ event: EventType.CLIENT_APPROVED_COMPLETION, actorId: CLIENT, paymentMethod: PaymentMethod.CASH }),
        WORKER,
      ),
    ).toBe("client-alice approved completion (paying by cash)");
    for (const type of Object.values(EventType).filter((v): v is EventType => typeof v === "number")) {
      expect(describeEvent(event({ event: type, actorId: CLIENT }), WORKER)).not.toBe("");
      // Only the payment's confirmation completes a job, and even that
      // line names the payment: no event calls the job "completed".
      expect(describeEvent(event({ event: type, actorId: CLIENT }), WORKER)).not.toMatch(/completed|paid\b/i);
    }
  });
});

// A token for client-alice (signature irrelevant: parsing only).
const PAYLOAD = btoa(JSON.stringify({ sub: CLIENT, exp: 1_900_000_000 })).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
const TOKEN = `eyJhbGciOiJIUzI1NiJ9.${PAYLOAD}.c2lnbmF0dXJl`;

describe("signing in", () => {
  it("accepts a token however it was pasted", () => {
    for (const pasted of [
      TOKEN,
      `  ${TOKEN}\n`,
      `export CLIENT_TOKEN=${TOKEN}`,
      `export CLIENT_TOKEN="${TOKEN}"`,
      `CLIENT_TOKEN='${TOKEN}'`,
      `Bearer ${TOKEN}`,
      `authorization: Bearer ${TOKEN}`,
    ]) {
      expect(parseToken(pasted), pasted).toEqual({ ok: true, token: TOKEN });
    }
  });

  it("says what is wrong with anything else", () => {
    expect(parseToken("")).toEqual({ ok: false, problem: "Paste a token first." });
    expect(parseToken("export CLIENT_TOKEN=")).toMatchObject({ ok: false, problem: "Paste a token first." });
    expect(parseToken(`${TOKEN} ${TOKEN}`)).toMatchObject({ ok: false, problem: expect.stringContaining("no spaces") });
    expect(parseToken("not a token")).toMatchObject({ ok: false });
    expect(parseToken("abc.def")).toMatchObject({ ok: false, problem: expect.stringContaining("three parts") });
    expect(parseToken("a.b!c.d")).toMatchObject({ ok: false });
    expect(parseToken("eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.sig")).toMatchObject({
      ok: false,
      problem: expect.stringContaining("not readable"),
    });
  });

  it("reads the subject and expiry for display only", () => {
    expect(subjectOf(TOKEN)).toBe(CLIENT);
    expect(expiryOf(TOKEN)).toEqual(new Date(1_900_000_000_000));
    expect(subjectOf("garbage")).toBe("");
    expect(expiryOf("garbage")).toBeUndefined();
  });

  it("takes token= out of the address and keeps the rest", () => {
    expect(takeTokenFromUrl(`http://localhost:5173/?api=http://127.0.0.1:50051&job=1&token=${TOKEN}`)).toEqual({
      token: TOKEN,
      cleaned: "http://localhost:5173/?api=http%3A%2F%2F127.0.0.1%3A50051&job=1",
    });
    // The printed links carry it in the fragment, which no server sees.
    expect(takeTokenFromUrl(`http://localhost:5173/?api=http://127.0.0.1:50051&job=1#token=${TOKEN}`)).toEqual({
      token: TOKEN,
      cleaned: "http://localhost:5173/?api=http://127.0.0.1:50051&job=1",
    });
    expect(takeTokenFromUrl(`http://localhost:5173/?job=1#token=${TOKEN}&x=1`).cleaned).toBe(
      "http://localhost:5173/?job=1#x=1",
    );
    expect(takeTokenFromUrl("http://localhost:5173/?job=2")).toEqual({
      token: undefined,
      cleaned: "http://localhost:5173/?job=2",
    });
  });

  it("understands only its own embedding messages", () => {
    expect(embedMessage({ type: "jobstatus:sign-in", token: TOKEN })).toEqual({ type: "jobstatus:sign-in", token: TOKEN });
    expect(embedMessage({ type: "jobstatus:sign-out" })).toEqual({ type: "jobstatus:sign-out" });
    for (const other of [null, "jobstatus:sign-in", { type: "jobstatus:sign-in" }, { type: "other", token: TOKEN }, 42]) {
      expect(embedMessage(other)).toBeUndefined();
    }
  });
});

describe("the connection indicator", () => {
  const network = new ConnectError("Failed to fetch", Code.Unknown, undefined, undefined, new TypeError("Failed to fetch"));

  it("is live only when every running watch is", () => {
    expect(combine([{ state: "live", attempt: 0 }, { state: "live", attempt: 0 }])).toBe("live");
    expect(combine([{ state: "live", attempt: 0 }, { state: "connecting", attempt: 0 }])).toBe("connecting");
    expect(combine([{ state: "live", attempt: 0 }, { state: "reconnecting", attempt: 1 }])).toBe("reconnecting");
    expect(
      combine([{ state: "live", attempt: 0 }, { state: "reconnecting", attempt: OFFLINE_AFTER_ATTEMPTS }]),
    ).toBe("offline");
    expect(combine([{ state: "reconnecting", attempt: 5 }, { state: "unauthenticated", attempt: 0 }])).toBe(
      "signed-out",
    );
    // A watch that ended for a reason of its own does not hold the page back.
    for (const state of ["ended", "denied", "failed", "cancelled"] as const) {
      expect(combine([{ state: "live", attempt: 0 }, { state, attempt: 0 }])).toBe("live");
    }
    expect(combine([undefined, { state: "live", attempt: 0 }])).toBe("live");
  });

  it("is never live with no running watch: none yet, or only ones being replaced", () => {
    expect(combine([])).toBe("connecting");
    expect(combine([undefined, undefined])).toBe("connecting");
    expect(combine([{ state: "cancelled", attempt: 0 }, { state: "cancelled", attempt: 0 }])).toBe("connecting");
    expect(combine([{ state: "cancelled", attempt: 0 }, { state: "reconnecting", attempt: 1 }])).toBe("reconnecting");
  });

  it("says the device is offline before guessing about the server", () => {
    const network = new ConnectError("Failed to fetch", Code.Unknown, undefined, undefined, new TypeError("x"));
    const text = offlineReason("http://127.0.0.1:50051", "http://localhost:5173", network, true, false);
    expect(text).toBe("This device is offline. The page reconnects as soon as the network is back.");
  });

  it("tells a stopped server from a refused origin from a server's own answer", () => {
    const api = "http://127.0.0.1:50051";
    const origin = "http://localhost:5173";
    expect(isNetworkFailure(network)).toBe(true);
    expect(offlineReason(api, origin, network, false)).toContain("does not answer");
    expect(offlineReason(api, origin, network, false)).not.toContain("cors");
    const cors = offlineReason(api, origin, network, true);
    expect(cors).toContain("answers, but the browser blocked the call");
    expect(cors).toContain(origin);
    const unavailable = new ConnectError("the database is unreachable", Code.Unavailable);
    expect(isNetworkFailure(unavailable)).toBe(false);
    expect(offlineReason(api, origin, unavailable, undefined)).toBe(
      "The server at http://127.0.0.1:50051 is unavailable: the database is unreachable. Retrying.",
    );
    expect(offlineReason(api, origin, network, undefined)).toContain("Cannot reach the server");
  });
});

/**
 * Reconnecting watchers: what every frontend would otherwise write around
 * the raw WatchJob and WatchMyJobs streams.
 *
 * - Reconnects after any failure or server shutdown, with capped
 *   exponential backoff and jitter, and when the server sends nothing
 *   (not even a heartbeat) for `idleTimeoutMs`: a connection that died
 *   without a word (a sleeping laptop, a dropped mobile network, a proxy
 *   that stopped forwarding) looks exactly like a quiet one otherwise.
 * - Resumes from the last revision it applied (`after_revision`, or the
 *   `after_revisions` map), so nothing is missed or applied twice; events
 *   that repeat a revision are dropped and a hole makes it reconnect (the
 *   server then replays from the log).
 * - Stops and says so on errors that retrying cannot fix: an invalid or
 *   expired token (`unauthenticated`, after one retry with a fresh token
 *   when the token is a function), no access (`denied`), bad arguments
 *   (`failed`).
 * - Can be cancelled; `done` resolves with the final status.
 */
import { Code, ConnectError } from "@connectrpc/connect";

import {
  JobStatus,
  type Job,
  type JobEvent,
  type JobLeft,
} from "../gen/jobstatus/v1/jobstatus_pb.js";
import { backoffDelay, sleep, type BackoffOptions } from "./backoff.js";
import { authHeaders, type JobServiceClient, type TokenSource } from "./transport.js";

export type WatchState =
  /** First connection attempt in progress. */
  | "connecting"
  /** Caught up with the server and receiving changes. */
  | "live"
  /** The connection failed; another attempt follows after `retryInMs`. */
  | "reconnecting"
  /** The caller may not see this job (PERMISSION_DENIED / NOT_FOUND). Final. */
  | "denied"
  /** The token was refused or has expired. Final: get a new token. */
  | "unauthenticated"
  /** A request the server will never accept (e.g. a bad job id). Final. */
  | "failed"
  /** The job reached a terminal state; nothing more will happen. Final. */
  | "ended"
  /** `cancel()` was called. Final. */
  | "cancelled";

export interface WatchStatus {
  state: WatchState;
  /** Consecutive failed attempts so far (0 while live). */
  attempt: number;
  /** For `reconnecting`: the wait before the next attempt, in ms. */
  retryInMs?: number;
  /** The error behind `reconnecting`, `denied`, `unauthenticated`, `failed`. */
  error?: ConnectError;
}

export interface WatchHandle {
  /** Stops watching (closes the stream; no more callbacks). */
  cancel(): void;
  /**
   * Reconnects now: drops the current connection, if there is one (say
   * why in `reason`), or skips the rest of a back-off wait. For what the
   * stream cannot see itself: the browser's `offline` event (the
   * connection is as good as gone) and `online` (worth trying at once).
   */
  reconnectNow(reason?: string): void;
  /** Resolves with the final status once the watcher has stopped. */
  readonly done: Promise<WatchStatus>;
}

interface CommonOptions {
  client: JobServiceClient;
  token: TokenSource;
  onStatus?: (status: WatchStatus) => void;
  /** Called for every heartbeat (the server's clock and, for WatchJob, revision). */
  onHeartbeat?: (revision: bigint) => void;
  backoff?: BackoffOptions;
  /**
   * Reconnect when no message (snapshot, event or heartbeat) arrives for
   * this long. Default 45 s: three of the server's default 15 s heartbeat
   * intervals, so one late heartbeat never cuts a healthy stream. Set it
   * above 2x the server's `--heartbeat-secs` if that is raised.
   */
  idleTimeoutMs?: number;
  /** Test seams. */
  random?: () => number;
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

export interface JobUpdate {
  /** "snapshot": replace local state (first message, or a resync). */
  source: "snapshot" | "event";
  /** The change, for events. */
  event?: JobEvent;
}

export interface WatchJobOptions extends CommonOptions {
  /** Called with the whole job after every applied snapshot or event. */
  onUpdate: (job: Job, update: JobUpdate) => void;
  /** Resume after this revision instead of starting with a snapshot. */
  afterRevision?: bigint;
}

const FINAL_CODES: Partial<Record<Code, WatchState>> = {
  [Code.Unauthenticated]: "unauthenticated",
  [Code.PermissionDenied]: "denied",
  [Code.NotFound]: "denied",
  [Code.InvalidArgument]: "failed",
  [Code.FailedPrecondition]: "failed",
  [Code.Unimplemented]: "failed",
  [Code.OutOfRange]: "failed",
};

export function isTerminal(status: JobStatus): boolean {
  return status === JobStatus.COMPLETED || status === JobStatus.CANCELLED;
}

/** The default for `idleTimeoutMs`. */
export const DEFAULT_IDLE_TIMEOUT_MS = 45_000;

/** Thrown inside a session to make the loop reconnect. */
function retryable(message: string): ConnectError {
  return new ConnectError(message, Code.Unavailable);
}

/**
 * The shared loop: run `session` until it reports the end, reconnecting on
 * retryable failures. `session` resolves "ended" when the stream finished
 * for good, calls `live()` once it is caught up, and `heard()` for every
 * message (which keeps the idle timer from firing).
 */
function reconnecting(
  options: CommonOptions,
  session: (signal: AbortSignal, live: () => void, heard: () => void) => Promise<"ended">,
): WatchHandle {
  const controller = new AbortController();
  const signal = controller.signal;
  const wait = options.sleep ?? sleep;
  const idleMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  let current: WatchStatus = { state: "connecting", attempt: 0 };
  /** Aborts the current back-off wait, if there is one. */
  let waiting: AbortController | undefined;
  /** Drops the current connection, if there is one, saying why. */
  let drop: ((reason: string) => void) | undefined;
  const report = (status: WatchStatus) => {
    current = status;
    if (!signal.aborted || status.state === "cancelled") options.onStatus?.(status);
  };

  /** One connection, cut if it stays silent for `idleMs`. */
  const connection = async (live: () => void): Promise<"ended"> => {
    const attempt = new AbortController();
    const stop = () => attempt.abort();
    signal.addEventListener("abort", stop, { once: true });
    let dropped: string | undefined;
    drop = (reason) => {
      dropped = reason;
      attempt.abort();
    };
    let timer: ReturnType<typeof setTimeout> | undefined;
    const quiet = idleMs >= 1000 ? `${Math.round(idleMs / 1000)} s` : `${idleMs} ms`;
    const heard = () => {
      clearTimeout(timer);
      timer = setTimeout(() => drop?.(`no message from the server for ${quiet}`), idleMs);
    };
    heard();
    try {
      return await session(attempt.signal, live, heard);
    } catch (e) {
      if (dropped !== undefined && !signal.aborted) throw retryable(dropped);
      throw e;
    } finally {
      drop = undefined;
      clearTimeout(timer);
      signal.removeEventListener("abort", stop);
    }
  };

  const run = async (): Promise<WatchStatus> => {
    let attempt = 0;
    let authRetried = false;
    report({ state: "connecting", attempt });
    for (;;) {
      try {
        await connection(() => {
          attempt = 0;
          authRetried = false;
          if (current.state !== "live") report({ state: "live", attempt });
        });
        const ended: WatchStatus = { state: "ended", attempt: 0 };
        report(ended);
        return ended;
      } catch (e) {
        if (signal.aborted) {
          return current;
        }
        const error = ConnectError.from(e);
        let final = FINAL_CODES[error.code];
        if (
          final === "unauthenticated" &&
          typeof options.token === "function" &&
          !authRetried
        ) {
          // A token source may have a fresh token: try once more with it.
          authRetried = true;
          final = undefined;
        }
        if (final) {
          const status: WatchStatus = { state: final, attempt, error };
          report(status);
          return status;
        }
        attempt += 1;
        const retryInMs = backoffDelay(attempt, options.backoff, options.random);
        report({ state: "reconnecting", attempt, retryInMs, error });
        waiting = new AbortController();
        const stopWaiting = () => waiting?.abort();
        signal.addEventListener("abort", stopWaiting, { once: true });
        await wait(retryInMs, waiting.signal);
        signal.removeEventListener("abort", stopWaiting);
        waiting = undefined;
        if (signal.aborted) return current;
      }
    }
  };

  const done = run();
  return {
    cancel() {
      if (signal.aborted) return;
      controller.abort();
      report({ state: "cancelled", attempt: 0 });
    },
    reconnectNow(reason = "reconnecting on request") {
      if (waiting) waiting.abort();
      else drop?.(reason);
    },
    done,
  };
}

/**
 * Watches one job: `onUpdate` gets the whole job after each change, in
 * revision order, exactly once, across reconnects and server restarts.
 */
export function watchJob(jobId: bigint | number, options: WatchJobOptions): WatchHandle {
  const id = BigInt(jobId);
  let last: bigint | undefined = options.afterRevision;
  let job: Job | undefined;
  return reconnecting(options, async (signal, live, heard) => {
    const headers = await authHeaders(options.token);
    const stream = options.client.watchJob(
      { jobId: id, afterRevision: last },
      { headers, signal },
    );
    for await (const message of stream) {
      heard();
      const kind = message.kind;
      switch (kind.case) {
        case "snapshot": {
          if (!kind.value.job) throw retryable("snapshot without a job");
          job = kind.value.job;
          last = job.revision;
          options.onUpdate(job, { source: "snapshot" });
          live();
          if (isTerminal(job.status)) return "ended";
          break;
        }
        case "event": {
          const event = kind.value;
          if (last !== undefined && event.revision <= last) break; // already applied
          if (last !== undefined && event.revision !== last + 1n) {
            // A hole: reconnect from what we have; the server replays it.
            throw retryable(`revision ${event.revision} after ${last}`);
          }
          if (!event.job) throw retryable("event without a job");
          job = event.job;
          last = event.revision;
          options.onUpdate(job, { source: "event", event });
          if (isTerminal(job.status)) return "ended";
          break;
        }
        case "heartbeat":
          live();
          options.onHeartbeat?.(kind.value.revision);
          break;
        default:
          break; // a newer server's message kind: ignore it
      }
    }
    // The server ends a watch cleanly only after a terminal event.
    if (job && isTerminal(job.status)) return "ended";
    throw retryable("the stream ended early");
  });
}

export interface MyJobsChange {
  jobId: bigint;
  /** "snapshot": the job joined (or was resynced); "left": removed. */
  kind: "snapshot" | "event" | "left";
  event?: JobEvent;
  left?: JobLeft;
}

export interface WatchMyJobsOptions extends CommonOptions {
  /** Called with every job the caller has, after each change. */
  onUpdate: (jobs: ReadonlyMap<bigint, Job>, change: MyJobsChange) => void;
  /** Resume: job id -> last revision applied. */
  afterRevisions?: ReadonlyMap<bigint, bigint>;
}

/**
 * Watches every job where the caller is the client or the worker, on one
 * stream. Jobs join and leave as assignments change.
 */
export function watchMyJobs(options: WatchMyJobsOptions): WatchHandle {
  const jobs = new Map<bigint, Job>();
  // What the next connection resumes from (seeded by the caller's map).
  const revisions = new Map<bigint, bigint>(options.afterRevisions ?? []);
  return reconnecting(options, async (signal, live, heard) => {
    const headers = await authHeaders(options.token);
    const afterRevisions: { [key: string]: bigint } = {};
    for (const [id, revision] of revisions) afterRevisions[id.toString()] = revision;
    const stream = options.client.watchMyJobs({ afterRevisions }, { headers, signal });
    for await (const message of stream) {
      heard();
      const kind = message.kind;
      switch (kind.case) {
        case "snapshot": {
          const job = kind.value.job;
          if (!job) throw retryable("snapshot without a job");
          jobs.set(job.jobId, job);
          revisions.set(job.jobId, job.revision);
          options.onUpdate(jobs, { jobId: job.jobId, kind: "snapshot" });
          break;
        }
        case "event": {
          const event = kind.value;
          const known = revisions.get(event.jobId);
          if (known !== undefined && event.revision <= known) break;
          if (known !== undefined && event.revision !== known + 1n) {
            throw retryable(`job ${event.jobId}: revision ${event.revision} after ${known}`);
          }
          if (!event.job) throw retryable("event without a job");
          jobs.set(event.jobId, event.job);
          revisions.set(event.jobId, event.revision);
          options.onUpdate(jobs, { jobId: event.jobId, kind: "event", event });
          break;
        }
        case "left": {
          const left = kind.value;
          jobs.delete(left.jobId);
          revisions.delete(left.jobId);
          options.onUpdate(jobs, { jobId: left.jobId, kind: "left", left });
          break;
        }
        case "heartbeat":
          live();
          options.onHeartbeat?.(kind.value.revision);
          break;
        default:
          break;
      }
    }
    throw retryable("the stream ended early");
  });
}

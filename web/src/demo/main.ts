/**
 * The job details page, on the reconnecting client:
 * the caller's jobs live through WatchMyJobs, the open job live through
 * WatchJob, actions through unary calls. Every state shown comes from the
 * server's stream, so two browsers always agree; errors are shown in the
 * page (never `alert()`).
 *
 * URL parameters (all optional; the form sets them too):
 *   api=http://localhost:50051   the jobstatus server (grpc-web)
 *   token=<JWT>                  the user's token
 *   job=1                        open this job's details at once
 */
import { ConnectError } from "@connectrpc/connect";

import {
  JobStatus,
  PaymentMethod,
  createJobServiceClient,
  createJobStatusTransport,
  watchJob,
  watchMyJobs,
  type Job,
  type JobServiceClient,
  type WatchHandle,
  type WatchStatus,
} from "../client/index.js";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const params = new URLSearchParams(location.search);
let api = params.get("api") ?? `${location.protocol}//${location.hostname}:50051`;
let token = params.get("token") ?? "";
let openJobId: bigint | undefined = params.get("job") ? BigInt(params.get("job")!) : undefined;

let client: JobServiceClient;
let listWatch: WatchHandle | undefined;
let jobWatch: WatchHandle | undefined;
let jobs = new Map<bigint, Job>();
let current: Job | undefined;
let busy = false;

/** The token's subject, for choosing the client's or the worker's view. */
function subject(jwt: string): string {
  try {
    const payload = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return String(JSON.parse(atob(payload)).sub ?? "");
  } catch {
    return "";
  }
}

const STATUS_TEXT: Record<JobStatus, string> = {
  [JobStatus.UNSPECIFIED]: "Unknown",
  [JobStatus.OPEN]: "Open",
  [JobStatus.IN_PROGRESS]: "In progress",
  [JobStatus.AWAITING_CLIENT_APPROVAL]: "Awaiting client approval",
  [JobStatus.AWAITING_PAYMENT]: "Awaiting payment",
  [JobStatus.COMPLETED]: "Completed",
  [JobStatus.CANCELLED]: "Cancelled",
};

const STATE_TEXT: Record<WatchStatus["state"], string> = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  denied: "access denied",
  unauthenticated: "signed out",
  failed: "error",
  ended: "final",
  cancelled: "closed",
};

function showError(message: string | undefined) {
  const box = $<HTMLDivElement>("error");
  box.hidden = !message;
  box.textContent = message ?? "";
}

function describe(error: unknown): string {
  const e = ConnectError.from(error);
  return e.rawMessage || e.message;
}

let connectionTrouble = false;

/** After a few failed attempts in a row, say why instead of just spinning. */
function reportTrouble(status: WatchStatus) {
  if (status.state === "reconnecting" && status.attempt >= 3) {
    connectionTrouble = true;
    showError(
      `Cannot reach the server at ${api} (${describe(status.error)}); retrying. ` +
        `If this persists, check the address and that this page's origin (${location.origin}) is allowed (--cors-origin).`,
    );
  } else if (status.state === "live" && connectionTrouble) {
    connectionTrouble = false;
    showError(undefined);
  }
}

function indicate(element: HTMLElement, status: WatchStatus) {
  reportTrouble(status);
  element.dataset.state = status.state;
  element.textContent = STATE_TEXT[status.state];
  if (status.state === "reconnecting" && status.retryInMs !== undefined) {
    element.title = `attempt ${status.attempt}, next in ${Math.round(status.retryInMs)} ms`;
  }
}

function connect() {
  listWatch?.cancel();
  jobWatch?.cancel();
  showError(undefined);
  jobs = new Map();
  renderList();
  client = createJobServiceClient(createJobStatusTransport(api));
  $("who").textContent = token ? `signed in as ${subject(token) || "?"}` : "";
  if (!token) {
    showError("Paste a token to connect.");
    return;
  }
  listWatch = watchMyJobs({
    client,
    token,
    onUpdate: (latest) => {
      jobs = new Map(latest);
      renderList();
    },
    onStatus: (status) => {
      indicate($("connection"), status);
      if (status.state === "unauthenticated") {
        showError(`Your token was refused: ${describe(status.error)}. Sign in again.`);
      }
    },
  });
  if (openJobId !== undefined) openJob(openJobId);
}

function renderList() {
  const list = $<HTMLUListElement>("job-list");
  list.replaceChildren();
  const sorted = [...jobs.values()].sort((a, b) => (a.jobId < b.jobId ? -1 : 1));
  $("my-jobs-empty").hidden = sorted.length > 0;
  for (const job of sorted) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.jobId = job.jobId.toString();
    button.textContent = `Job #${job.jobId} — ${STATUS_TEXT[job.status]}`;
    button.setAttribute("aria-current", String(job.jobId === openJobId));
    button.addEventListener("click", () => openJob(job.jobId));
    item.append(button);
    list.append(item);
  }
}

function openJob(id: bigint) {
  jobWatch?.cancel();
  openJobId = id;
  current = undefined;
  const url = new URL(location.href);
  url.searchParams.set("job", id.toString());
  history.replaceState(null, "", url);
  $("details").hidden = false;
  $("job-title").textContent = `Job #${id}`;
  $("job-status").textContent = "";
  $("job-actions").replaceChildren();
  renderList();
  jobWatch = watchJob(id, {
    client,
    token,
    onUpdate: (job) => {
      current = job;
      renderJob();
    },
    onStatus: (status) => {
      indicate($("job-connection"), status);
      if (status.state === "denied") {
        $("job-status").textContent = "";
        $("job-actions").replaceChildren(
          note("denied", "Access denied: you are not the client or the worker of this job."),
        );
      } else if (status.state === "unauthenticated") {
        showError(`Your token was refused: ${describe(status.error)}. Sign in again.`);
      } else if (status.state === "failed") {
        showError(describe(status.error));
      }
    },
  });
}

function note(kind: string, text: string): HTMLElement {
  const p = document.createElement("p");
  p.className = `note ${kind}`;
  p.dataset.note = kind;
  p.textContent = text;
  return p;
}

function button(label: string, onClick: () => Promise<unknown>): HTMLButtonElement {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.disabled = busy;
  b.addEventListener("click", async () => {
    busy = true;
    showError(undefined);
    renderJob();
    try {
      const job = (await onClick()) as Job | undefined;
      // Apply our own answer at once; the stream brings the same revision
      // (and the other party's changes) and never goes backwards.
      if (job && current && job.revision > current.revision) current = job;
    } catch (error) {
      showError(describe(error));
    } finally {
      busy = false;
      renderJob();
    }
  });
  return b;
}

async function call<T>(f: (headers: Record<string, string>) => Promise<T>): Promise<T> {
  return f({ authorization: `Bearer ${token}` });
}

function renderJob() {
  const job = current;
  const actions = $("job-actions");
  if (!job) return;
  const me = subject(token);
  const isClient = job.clientId === me;
  const isWorker = job.workerId === me;
  $("job-status").textContent =
    `${STATUS_TEXT[job.status]} · client ${job.clientId} · worker ${job.workerId || "none"} · revision ${job.revision}`;
  const items: HTMLElement[] = [];
  const expectedRevision = job.revision;
  const requestId = () => crypto.randomUUID();
  const approved = job.clientMarkedComplete;
  const method =
    job.paymentMethod === PaymentMethod.CASH
      ? "CASH"
      : job.paymentMethod === PaymentMethod.GCASH
        ? "GCASH"
        : "";

  if (job.status === JobStatus.CANCELLED) {
    items.push(note("cancelled", `This job was cancelled. ${job.cancelReason}`));
  } else if (isWorker) {
    if (job.status === JobStatus.IN_PROGRESS) {
      if (job.changeRequestReason) {
        items.push(note("changes", `The client asked for changes: ${job.changeRequestReason}`));
      }
      items.push(
        button("Mark as Complete", () =>
          call((headers) =>
            client.markComplete(
              { jobId: job.jobId, requestId: requestId(), expectedRevision },
              { headers },
            ),
          ),
        ),
      );
    }
    if (job.workerMarkedComplete && !approved) {
      items.push(note("waiting", "Waiting for client to approve completion"));
    }
    if (approved) {
      items.push(note("done", "Job completed! Client has approved."));
      if (method) items.push(note("method", `Payment method: ${method}`));
      if (
        job.status === JobStatus.AWAITING_PAYMENT &&
        method === "CASH" &&
        job.paymentProofRef
      ) {
        items.push(
          button("Confirm cash received", () =>
            call((headers) =>
              client.confirmPayment(
                { jobId: job.jobId, requestId: requestId(), expectedRevision },
                { headers },
              ),
            ),
          ),
        );
      }
    }
  } else if (isClient) {
    if (job.status === JobStatus.OPEN || job.status === JobStatus.IN_PROGRESS) {
      items.push(note("working", "The worker is working on this job."));
    }
    if (job.workerMarkedComplete && !approved) {
      items.push(note("prompt", "Worker has marked this job as complete."));
      const choice = document.createElement("fieldset");
      choice.innerHTML =
        '<legend>Pay with</legend>' +
        '<label><input type="radio" name="method" value="GCASH" checked /> GCASH</label> ' +
        '<label><input type="radio" name="method" value="CASH" /> CASH</label>';
      items.push(choice);
      items.push(
        button("Approve & Pay", () => {
          const picked = choice.querySelector<HTMLInputElement>("input:checked")?.value;
          const paymentMethod = picked === "CASH" ? PaymentMethod.CASH : PaymentMethod.GCASH;
          return call((headers) =>
            client.approveCompletion(
              { jobId: job.jobId, paymentMethod, requestId: requestId(), expectedRevision },
              { headers },
            ),
          );
        }),
      );
    }
    if (approved) {
      items.push(note("done", "You have approved this job completion"));
      if (job.status === JobStatus.COMPLETED) {
        items.push(note("paid", "Payment confirmed. This job is complete."));
      } else if (method === "CASH") {
        if (job.paymentProofRef) {
          items.push(note("next", "Proof of payment sent; waiting for the worker to confirm."));
        } else {
          items.push(note("next", "Next step: upload your proof of payment (CASH)."));
          const proof = document.createElement("input");
          proof.placeholder = "receipt reference or link";
          proof.id = "proof";
          items.push(proof);
          items.push(
            button("Submit proof of payment", () =>
              call((headers) =>
                client.submitPaymentProof(
                  {
                    jobId: job.jobId,
                    proofRef: proof.value || "receipt",
                    requestId: requestId(),
                    expectedRevision,
                  },
                  { headers },
                ),
              ),
            ),
          );
        }
      } else if (method === "GCASH") {
        items.push(note("next", "Next step: complete the payment with GCash."));
      }
    }
  } else {
    items.push(note("readonly", "You are viewing this job read-only."));
  }
  actions.replaceChildren(...items);
}

$<HTMLInputElement>("api").value = api;
$<HTMLInputElement>("token").value = token;
$<HTMLFormElement>("login").addEventListener("submit", (e) => {
  e.preventDefault();
  api = $<HTMLInputElement>("api").value.trim();
  token = $<HTMLInputElement>("token").value.trim();
  const url = new URL(location.href);
  url.searchParams.set("api", api);
  url.searchParams.delete("token"); // keep tokens out of the address bar
  history.replaceState(null, "", url);
  connect();
});
if (token) connect();

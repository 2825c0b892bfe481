/**
 * The job details page: the signed-in user's jobs (WatchMyJobs), the open
 * job (WatchJob) and the one action their role allows now (unary calls),
 * on the reconnecting client. What it says comes from `view.ts`, who is
 * signed in from `session.ts`, the indicator from `connection.ts`; this
 * file owns the DOM and the wiring.
 *
 * Must never show a state the server has not sent, act while not live,
 * keep a token in the address bar, call a token "signed in" before the
 * server accepted it, or send a kept token to any server but the one that
 * accepted it.
 *
 * Address parameters (all optional): `api=` the jobstatus server,
 * `job=` the job to open, `#token=` a sign-in link's token (read once and
 * removed). An embedding application sets `window.jobstatusConfig`
 * (see `public/config.js`; then `api=` is ignored: the application says
 * where its tokens go), posts `{ type: "jobstatus:sign-in", token }`, or
 * calls `window.jobstatus.signIn(token)`.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";

import {
  PaymentMethod,
  createJobServiceClient,
  createJobStatusTransport,
  resolveToken,
  watchJob,
  watchMyJobs,
  type Job,
  type JobEvent,
  type JobServiceClient,
  type TokenSource,
  type WatchHandle,
  type WatchStatus,
} from "../client/index.js";
import {
  CONNECTION_WORDS,
  combine,
  isNetworkFailure,
  offlineReason,
  serverAnswers,
  type ConnectionState,
} from "./connection.js";
import { embedMessage, parseToken, subjectOf, takeTokenFromUrl, type PageConfig } from "./session.js";
import { STATE_WORDS, defaultFormatTime, describeEvent, roleOf, viewJob, type Action } from "./view.js";
import { backoffDelay } from "../client/index.js";

declare global {
  interface Window {
    jobstatusConfig?: PageConfig;
    jobstatus?: { signIn(token: string): void; signOut(): void };
  }
}

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

/**
 * Where a pasted or linked token is kept: this tab only, until it closes,
 * beside the server address that accepted it (it is sent nowhere else).
 */
const STORED_TOKEN = "jobstatus.token";
const STORED_API = "jobstatus.api";
/** The longest wait before asking the application for a token again. */
const MAX_TOKEN_RETRY_MS = 60_000;
const MAX_PROOF_CHARS = 2048;
const MAX_REASON_CHARS = 2000;

const config: PageConfig = window.jobstatusConfig ?? {};
const embedded = window.parent !== window && Boolean(config.tokenOrigin);
/** The embedding application, not the person, says who is signed in and where. */
const appOwned = Boolean(config.getToken || config.tokenOrigin);

let api = "";
let token: TokenSource | undefined;
/** The token's subject: who the page shows the jobs of. */
let me = "";
/** The server accepted the token (a watch went live with it). */
let accepted = false;
let client: JobServiceClient | undefined;
let listWatch: WatchHandle | undefined;
let jobWatch: WatchHandle | undefined;
let listStatus: WatchStatus | undefined;
let jobStatus: WatchStatus | undefined;
let jobs = new Map<bigint, Job>();
let openJobId: bigint | undefined;
let current: Job | undefined;
let jobProblem: { kind: "denied" | "failed"; message: string } | undefined;
let busy = false;
let connection: ConnectionState = "signed-out";
/** The action area is rebuilt only when its action changes, so typed text survives updates. */
let actionKey = "";
/** While the job watch is cut off: the revision it had and the changes replayed since. */
let lost: { revision: bigint; missed: JobEvent[]; resynced: boolean } | undefined;
/** What the page says after a catch-up; shown only once the page is live. */
let caughtUpText = "";
/** The last probe of the server (see `serverAnswers`), per address and attempt. */
let probe: { api: string; attempt: number } | undefined;
let answered: { api: string; answers: boolean } | undefined;
/**
 * Bumped on every sign-in, sign-out and job switch: callbacks of watches
 * and sign-ins started before then find a newer value and do nothing.
 */
let signInGeneration = 0;
let jobGeneration = 0;
/** Asking the application for a token again after the server refused one. */
let tokenRetry: { timer: ReturnType<typeof setTimeout>; attempt: number } | undefined;
/** An action started from the keyboard or a click in the action area: keep focus near it. */
let refocus = false;

// ---- start-up ---------------------------------------------------------

function start() {
  const params = new URLSearchParams(location.search);
  const storedApi = sessionStorage.getItem(STORED_API);
  api = config.api ?? (appOwned ? null : params.get("api")) ?? storedApi ?? defaultApi();
  const job = params.get("job") ?? (config.job !== undefined ? String(config.job) : null);
  openJobId = parseJobId(job);

  const { token: linked, cleaned } = takeTokenFromUrl(location.href);
  if (cleaned !== location.href) history.replaceState(null, "", cleaned);

  $("sign-out").addEventListener("click", () => signOut());
  // The browser knows before the streams do: offline, a connection is as
  // good as gone (it may take a heartbeat timeout to notice); online, the
  // next back-off attempt need not be waited for.
  window.addEventListener("offline", () => {
    listWatch?.reconnectNow("the device went offline");
    jobWatch?.reconnectNow("the device went offline");
    setConnection();
  });
  window.addEventListener("online", () => {
    if (listStatus?.state === "reconnecting") listWatch?.reconnectNow();
    if (jobStatus?.state === "reconnecting") jobWatch?.reconnectNow();
    setConnection();
  });
  $<HTMLFormElement>("sign-in-form").addEventListener("submit", onSignInForm);
  if (config.tokenOrigin) window.addEventListener("message", onEmbedMessage);
  window.jobstatus = {
    signIn: (raw) => {
      const parsed = parseToken(raw);
      if (parsed.ok) void signIn(parsed.token, { remember: false });
    },
    signOut: () => signOut(),
  };

  if (config.getToken) {
    void signIn(config.getToken, { remember: false });
  } else if (linked) {
    const parsed = parseToken(linked);
    if (parsed.ok) void signIn(parsed.token, { remember: true });
    else showSignIn(`The sign-in link's token is not usable: ${parsed.problem}`);
  } else if (sessionStorage.getItem(STORED_TOKEN)) {
    if (storedApi === api) {
      void signIn(sessionStorage.getItem(STORED_TOKEN) ?? "", { remember: true });
    } else {
      // A link to another server must not receive this tab's token.
      showSignIn(`You were signed in to ${storedApi}; this page is for ${api}. Sign in to it to continue.`);
    }
  } else {
    showSignIn("");
  }
  if (embedded) tellParent({ type: "jobstatus:ready" });
}

function defaultApi(): string {
  return `${location.protocol}//${location.hostname}:50051`;
}

function parseJobId(text: string | null | undefined): bigint | undefined {
  if (!text || !/^[0-9]{1,18}$/.test(text)) return undefined;
  const id = BigInt(text);
  return id > 0n ? id : undefined;
}

// ---- signing in and out ----------------------------------------------

function showSignIn(problem: string) {
  signInGeneration += 1;
  stopWatching();
  token = undefined;
  accepted = false;
  $("workspace").hidden = true;
  $("account").hidden = true;
  if (appOwned) {
    // The application owns identity: no form, just what happened.
    $("sign-in").hidden = true;
    showBanner(problem || "Waiting for the application to sign you in.", "attention");
  } else {
    $("sign-in").hidden = false;
    $<HTMLInputElement>("api").value = api;
    setText($("sign-in-error"), problem);
    showBanner("");
  }
  setConnection();
}

/** Marks one sign-in field as wrong (or neither), for assistive technology too. */
function markInvalid(field: "token" | "api" | undefined) {
  for (const id of ["token", "api"] as const) {
    if (id === field) $(id).setAttribute("aria-invalid", "true");
    else $(id).removeAttribute("aria-invalid");
  }
}

function onSignInForm(e: SubmitEvent) {
  e.preventDefault();
  const parsed = parseToken($<HTMLTextAreaElement>("token").value);
  const address = $<HTMLInputElement>("api").value.trim().replace(/\/+$/, "");
  if (!parsed.ok) {
    $("sign-in-error").textContent = parsed.problem;
    markInvalid("token");
    $("token").focus();
    return;
  }
  if (!/^https?:\/\/[^/?#\s]+$/.test(address)) {
    $("sign-in-error").textContent = "The server address must look like https://jobs.example.com or http://localhost:50051.";
    markInvalid("api");
    $("api").focus();
    return;
  }
  markInvalid(undefined);
  api = address;
  sessionStorage.setItem(STORED_API, api);
  const url = new URL(location.href);
  url.searchParams.set("api", api);
  history.replaceState(null, "", url);
  $<HTMLTextAreaElement>("token").value = "";
  void signIn(parsed.token, { remember: true });
}

function onEmbedMessage(e: MessageEvent) {
  if (e.origin !== config.tokenOrigin) return;
  const message = embedMessage(e.data);
  if (message?.type === "jobstatus:sign-in") {
    const parsed = parseToken(message.token);
    if (parsed.ok) void signIn(parsed.token, { remember: false });
    else tellParent({ type: "jobstatus:signed-out", reason: parsed.problem });
  } else if (message?.type === "jobstatus:sign-out") {
    signOut();
  }
}

function tellParent(message: Record<string, string>) {
  if (embedded && config.tokenOrigin) window.parent.postMessage(message, config.tokenOrigin);
}

async function signIn(source: TokenSource, { remember }: { remember: boolean }) {
  const generation = ++signInGeneration;
  stopWatching();
  const stillCurrent = () => generation === signInGeneration;
  let first: string;
  try {
    first = await resolveToken(source);
  } catch (error) {
    if (!stillCurrent()) return;
    if (source === config.getToken) {
      retryTokenLater(`The application could not give a token: ${String(error)}.`);
    } else {
      showSignIn(`Could not get a token from the application: ${String(error)}`);
    }
    return;
  }
  // Another sign-in or a sign-out came while the token was being fetched.
  if (!stillCurrent()) return;
  const parsedFirst = parseToken(first);
  if (!parsedFirst.ok) {
    if (source === config.getToken) retryTokenLater(`The application's token is not usable: ${parsedFirst.problem}`);
    else showSignIn(parsedFirst.problem);
    return;
  }
  token = source;
  me = subjectOf(parsedFirst.token);
  accepted = false;
  jobs = new Map();
  client = createJobServiceClient(createJobStatusTransport(api));
  $("sign-in").hidden = true;
  $("sign-in-error").textContent = "";
  $("workspace").hidden = false;
  $("account").hidden = true;
  showBanner("");

  const onAccepted = () => {
    if (accepted || !stillCurrent()) return;
    accepted = true;
    if (tokenRetry) clearTimeout(tokenRetry.timer);
    tokenRetry = undefined;
    if (remember && typeof source === "string") {
      sessionStorage.setItem(STORED_TOKEN, source);
      sessionStorage.setItem(STORED_API, api);
    }
    $("who").textContent = `Signed in as ${me}`;
    $("sign-out").hidden = Boolean(config.getToken);
    $("account").hidden = false;
  };
  listWatch = watchMyJobs({
    client,
    token: source,
    onUpdate: (latest) => {
      if (!stillCurrent()) return;
      jobs = new Map(latest);
      renderList();
    },
    onStatus: (status) => {
      if (!stillCurrent()) return;
      listStatus = status;
      if (status.state === "live") onAccepted();
      if (status.state === "unauthenticated") refused(status.error);
      else update();
    },
  });
  if (openJobId !== undefined) openJob(openJobId, { onAccepted });
  update();
}

/** The server refused the token: back to signed out, saying why. */
function refused(error: ConnectError | undefined) {
  const why = error?.rawMessage || "the token was refused";
  sessionStorage.removeItem(STORED_TOKEN);
  const signedOutReason = accepted ? `You were signed out: ${why}.` : `The server refused this token: ${why}.`;
  tellParent({ type: "jobstatus:signed-out", reason: why });
  if (config.getToken) {
    // The application refreshes tokens; ask it again rather than stall.
    retryTokenLater(`The server refused the application's token: ${why}.`);
  } else if (embedded) {
    showSignIn(`${signedOutReason} Waiting for the application to sign you in again.`);
  } else {
    showSignIn(`${signedOutReason} Sign in again.`);
  }
}

/** With a `getToken` hook: show why, then ask the application again, backing off. */
function retryTokenLater(why: string) {
  const attempt = (tokenRetry?.attempt ?? 0) + 1;
  const wait = backoffDelay(attempt, { initialMs: 2_000, maxMs: MAX_TOKEN_RETRY_MS });
  showSignIn(`${why} Asking the application again in ${Math.ceil(wait / 1000)} s.`);
  if (tokenRetry) clearTimeout(tokenRetry.timer);
  const getToken = config.getToken;
  tokenRetry = {
    attempt,
    timer: setTimeout(() => {
      if (getToken) void signIn(getToken, { remember: false });
    }, wait),
  };
}

function signOut() {
  sessionStorage.removeItem(STORED_TOKEN);
  if (tokenRetry) clearTimeout(tokenRetry.timer);
  tokenRetry = undefined;
  tellParent({ type: "jobstatus:signed-out", reason: "signed out" });
  showSignIn("");
}

function stopWatching() {
  jobGeneration += 1;
  const [list, job] = [listWatch, jobWatch];
  listWatch = jobWatch = undefined;
  list?.cancel();
  job?.cancel();
  listStatus = jobStatus = undefined;
  current = undefined;
  jobProblem = undefined;
  lost = undefined;
  caughtUpText = "";
  actionKey = "";
}

// ---- watching ---------------------------------------------------------

function openJob(id: bigint, { onAccepted }: { onAccepted?: () => void } = {}) {
  if (!client || !token) return;
  const generation = ++jobGeneration;
  const stillOpen = () => generation === jobGeneration;
  const previous = jobWatch;
  jobWatch = undefined;
  previous?.cancel();
  jobStatus = undefined;
  caughtUpText = "";
  openJobId = id;
  current = undefined;
  jobProblem = undefined;
  lost = undefined;
  actionKey = "";
  $("job-action-error").textContent = "";
  const url = new URL(location.href);
  url.searchParams.set("job", id.toString());
  history.replaceState(null, "", url);
  jobWatch = watchJob(id, {
    client,
    token,
    onUpdate: (job, change) => {
      if (!stillOpen()) return;
      if (lost) {
        if (change.event) lost.missed.push(change.event);
        else lost.resynced = true;
      } else {
        caughtUpText = "";
      }
      current = job;
      update();
    },
    onStatus: (status) => {
      if (!stillOpen()) return;
      jobStatus = status;
      switch (status.state) {
        case "live":
          onAccepted?.();
          caughtUp();
          break;
        case "ended":
          caughtUp();
          break;
        case "reconnecting":
          if (!lost && current) lost = { revision: current.revision, missed: [], resynced: false };
          break;
        case "denied":
          jobProblem = {
            kind: "denied",
            message: "Only this job's client and its assigned worker can see it.",
          };
          break;
        case "failed":
          jobProblem = { kind: "failed", message: status.error?.rawMessage ?? "The server refused the request." };
          break;
        case "unauthenticated":
          refused(status.error);
          return;
        default:
          break;
      }
      update();
    },
  });
  update();
}

/** Back after a cut: say what changed meanwhile, and only if something did. */
function caughtUp() {
  const was = lost;
  lost = undefined;
  if (!was || !current || current.revision === was.revision) {
    caughtUpText = "";
    return;
  }
  // Only what the page had not shown before the cut.
  const missed = was.missed.filter((event) => event.revision > was.revision);
  const what = missed.map((event) => describeEvent(event, me));
  caughtUpText =
    what.length > 0 && !was.resynced
      ? `Back online. While you were away, ${what.join("; then ")}.`
      : "Back online. This job changed while you were away; it is shown as it is now.";
}

// ---- rendering --------------------------------------------------------

function update() {
  setConnection();
  renderList();
  renderJob();
  const notice = $("job-caught-up");
  const show = Boolean(caughtUpText) && connection === "live";
  if (show) setText(notice, caughtUpText);
  notice.hidden = !show;
}

function setConnection() {
  connection = token ? combine([listStatus, jobStatus]) : "signed-out";
  const indicator = $("connection");
  indicator.dataset.state = connection;
  setText($("connection-text"), CONNECTION_WORDS[connection]);
  const retrying = [listStatus, jobStatus].find((s) => s?.state === "reconnecting");
  indicator.title = retrying?.retryInMs !== undefined ? `Next attempt in ${Math.ceil(retrying.retryInMs / 1000)} s` : "";
  if (connection === "offline") {
    const error = retrying?.error;
    const attempt = retrying?.attempt ?? 0;
    if (navigator.onLine && isNetworkFailure(error) && (probe?.api !== api || probe.attempt !== attempt)) {
      // Asked again on every attempt (the server may come back behind a
      // refusing proxy), but the banner keeps the last answer meanwhile.
      const asked = { api, attempt };
      probe = asked;
      void serverAnswers(api).then((answers) => {
        if (asked.api !== api) return;
        const changed = answered?.api !== api || answered.answers !== answers;
        answered = { api, answers };
        if (changed) setConnection();
      });
    }
    const answers = isNetworkFailure(error) && answered?.api === api ? answered.answers : undefined;
    showBanner(offlineReason(api, location.origin, error, answers, navigator.onLine));
  } else if (token) {
    showBanner(connection === "reconnecting" && !navigator.onLine ? offlineReason(api, location.origin, undefined, undefined, false) : "");
  }
}

/** Writes only on change: the banner is an alert and is announced on every write. */
function showBanner(text: string, tone: "danger" | "attention" = "danger") {
  const banner = $("connection-detail");
  setText(banner, text);
  if (banner.dataset.tone !== tone) banner.dataset.tone = tone;
  banner.hidden = !text;
}

/** Sets an element's text only when it differs, so live regions do not repeat themselves. */
function setText(element: HTMLElement, text: string) {
  if (element.textContent !== text) element.textContent = text;
}

function renderList() {
  const list = $<HTMLUListElement>("job-list");
  const sorted = [...jobs.values()].sort((a, b) => (a.jobId < b.jobId ? -1 : 1));
  $("my-jobs-empty").hidden = sorted.length > 0 || listStatus?.state !== "live";
  const existing = [...list.querySelectorAll<HTMLAnchorElement>("a[data-job-id]")];
  const sameOrder =
    existing.length === sorted.length && existing.every((a, i) => a.dataset.jobId === sorted[i].jobId.toString());
  if (!sameOrder) {
    list.replaceChildren(
      ...sorted.map((job) => {
        const item = document.createElement("li");
        const link = document.createElement("a");
        link.dataset.jobId = job.jobId.toString();
        link.href = `?job=${job.jobId}`;
        link.addEventListener("click", (e) => {
          e.preventDefault();
          openJob(job.jobId);
        });
        const name = document.createElement("span");
        name.className = "job-name";
        const badge = document.createElement("span");
        badge.className = "badge";
        const role = document.createElement("span");
        role.className = "visually-hidden";
        link.append(name, badge, role);
        item.append(link);
        return item;
      }),
    );
  }
  for (const link of list.querySelectorAll<HTMLAnchorElement>("a[data-job-id]")) {
    const job = jobs.get(BigInt(link.dataset.jobId ?? "0"));
    if (!job) continue;
    const view = viewJob(job, me);
    const role = roleOf(job, me);
    (link.firstChild as HTMLElement).textContent = `Job #${job.jobId}`;
    const [, badge, said] = link.children as unknown as HTMLElement[];
    badge.textContent = STATE_WORDS[job.status];
    badge.dataset.tone = view.badge.tone;
    said.textContent = `, you are the ${role}`;
    if (job.jobId === openJobId) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function renderJob() {
  const none = openJobId === undefined;
  $("job-none").hidden = !none;
  $("job-body").hidden = none;
  if (none) return;
  setText($("job-title"), `Job #${openJobId}`);
  const badge = $("job-badge");
  const headline = $("job-headline");
  const details = $<HTMLUListElement>("job-details");
  const people = $("job-people");
  const updated = $("job-updated");
  if (jobProblem || !current) {
    badge.hidden = true;
    setText(people, "");
    setText(updated, "");
    setText(
      headline,
      jobProblem
        ? jobProblem.kind === "denied"
          ? "You don't have access to this job."
          : "This job cannot be shown."
        : "Loading…",
    );
    setList(details, jobProblem ? [jobProblem.message] : []);
    setAction(undefined);
    return;
  }
  const job = current;
  const view = viewJob(job, me);
  const role = roleOf(job, me);
  badge.hidden = false;
  setText(badge, view.badge.text);
  badge.dataset.tone = view.badge.tone;
  const worker = job.workerId || "not assigned yet";
  setText(
    people,
    role === "client"
      ? `You are the client · Worker: ${worker}`
      : role === "worker"
        ? `You are the worker · Client: ${job.clientId}`
        : `Client: ${job.clientId} · Worker: ${worker}`,
  );
  setText(headline, view.headline);
  setList(details, view.details);
  setText(updated, job.updatedAt ? `Last change: ${defaultFormatTime(timestampDate(job.updatedAt))}` : "");
  setAction(view.action);
}

function setList(list: HTMLUListElement, items: string[]) {
  const same =
    list.children.length === items.length && items.every((text, i) => list.children[i].textContent === text);
  if (same) return;
  list.replaceChildren(
    ...items.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }),
  );
}

// ---- actions ----------------------------------------------------------

function setAction(action: Action | undefined) {
  const area = $("job-actions");
  const key = action ? `${openJobId}:${action.kind}:${action.kind === "confirm-cash" ? action.proof : ""}` : "";
  if (key !== actionKey) {
    actionKey = key;
    $("job-action-error").textContent = "";
    // A keyboard user whose button just went away lands on the job's
    // title, just above the new state, not at the top of the document.
    // (Not on the state itself: it is a live region, and would be read
    // twice, once for the focus and once as an announcement.)
    const hadFocus = area.contains(document.activeElement) || refocus;
    refocus = false;
    area.replaceChildren(...(action ? buildAction(action) : []));
    if (hadFocus) $("job-title").focus();
  }
  const live = connection === "live";
  const paused = Boolean(action) && !live;
  $("job-paused").hidden = !paused;
  for (const control of area.querySelectorAll<HTMLButtonElement | HTMLInputElement | HTMLTextAreaElement>(
    "button, input, textarea",
  )) {
    const ready = control.dataset.ready ? control.dataset.ready === "yes" : true;
    control.disabled = !live || busy || (control instanceof HTMLButtonElement && !ready);
    // Why it is disabled, for screen readers too (the hint keeps its own ids).
    const described = (control.getAttribute("aria-describedby") ?? "").split(" ").filter((id) => id && id !== "job-paused");
    if (paused) described.push("job-paused");
    if (described.length > 0) control.setAttribute("aria-describedby", described.join(" "));
    else control.removeAttribute("aria-describedby");
  }
}

function buildAction(action: Action): HTMLElement[] {
  switch (action.kind) {
    case "mark-complete":
      return [button("Mark as Complete", "primary", () => perform((job, h) => client!.markComplete(base(job), h)))];
    case "confirm-cash":
      return [
        button("Confirm cash received", "primary", () =>
          perform((job, h) => client!.confirmPayment(base(job), h)),
        ),
      ];
    case "submit-proof":
      return [proofForm()];
    case "review":
      return reviewForms();
  }
}

function base(job: Job) {
  return { jobId: job.jobId, requestId: newRequestId(), expectedRevision: job.revision };
}

function button(label: string, kind: "primary" | "secondary", onClick?: () => void): HTMLButtonElement {
  const b = document.createElement("button");
  b.type = onClick ? "button" : "submit";
  b.className = kind;
  b.textContent = label;
  if (onClick) b.addEventListener("click", onClick);
  return b;
}

/** Approve & Pay with a chosen method, or ask for changes with a reason. */
function reviewForms(): HTMLElement[] {
  const approve = document.createElement("form");
  approve.id = "approve-form";
  const fieldset = document.createElement("fieldset");
  const legend = document.createElement("legend");
  legend.textContent = "How will you pay?";
  const choices = document.createElement("div");
  choices.className = "choices";
  for (const [value, label] of [
    ["GCASH", "GCash"],
    ["CASH", "Cash"],
  ]) {
    const wrap = document.createElement("label");
    wrap.className = "choice";
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "method";
    input.value = value;
    const text = document.createElement("span");
    text.textContent = label;
    wrap.append(input, text);
    choices.append(wrap);
  }
  fieldset.append(legend, choices);
  const pay = button("Approve & Pay", "primary");
  pay.dataset.ready = "no";
  pay.setAttribute("aria-describedby", "approve-hint");
  const ask = button("Request changes", "secondary", () => {
    changes.hidden = false;
    ask.hidden = true;
    reason.focus();
  });
  const hint = document.createElement("p");
  hint.id = "approve-hint";
  hint.className = "hint";
  hint.textContent = "Choose how you will pay to approve.";
  const row = document.createElement("div");
  row.className = "row";
  row.append(pay, ask);
  approve.append(fieldset, hint, row);
  approve.addEventListener("change", () => {
    const picked = approve.querySelector<HTMLInputElement>("input:checked");
    pay.dataset.ready = picked ? "yes" : "no";
    hint.hidden = Boolean(picked);
    setAction(currentAction());
  });
  approve.addEventListener("submit", (e) => {
    e.preventDefault();
    const picked = approve.querySelector<HTMLInputElement>("input:checked")?.value;
    if (!picked) return;
    const paymentMethod = picked === "CASH" ? PaymentMethod.CASH : PaymentMethod.GCASH;
    perform((job, h) => client!.approveCompletion({ ...base(job), paymentMethod }, h));
  });

  const changes = document.createElement("form");
  changes.id = "changes-form";
  changes.hidden = true;
  const label = document.createElement("label");
  label.htmlFor = "change-reason";
  label.textContent = "What needs to change?";
  const reason = document.createElement("textarea");
  reason.id = "change-reason";
  reason.rows = 3;
  reason.maxLength = MAX_REASON_CHARS;
  const send = button("Send request", "primary");
  send.dataset.ready = "no";
  const cancel = button("Cancel", "secondary", () => {
    changes.hidden = true;
    ask.hidden = false;
    ask.focus();
  });
  const sendRow = document.createElement("div");
  sendRow.className = "row";
  sendRow.append(send, cancel);
  changes.append(label, reason, sendRow);
  reason.addEventListener("input", () => {
    send.dataset.ready = reason.value.trim() ? "yes" : "no";
    setAction(currentAction());
  });
  changes.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = reason.value.trim();
    if (!text) return;
    perform((job, h) => client!.requestChanges({ ...base(job), reason: text }, h));
  });
  return [approve, changes];
}

/** The client's reference for a cash payment (required; sent as typed, trimmed). */
function proofForm(): HTMLElement {
  const form = document.createElement("form");
  form.id = "proof-form";
  const label = document.createElement("label");
  label.htmlFor = "proof-ref";
  label.textContent = "Payment reference";
  const input = document.createElement("input");
  input.id = "proof-ref";
  input.type = "text";
  input.maxLength = MAX_PROOF_CHARS;
  input.autocomplete = "off";
  input.placeholder = "e.g. OR-10234 or a photo link";
  const submit = button("Submit proof of payment", "primary");
  submit.dataset.ready = "no";
  input.addEventListener("input", () => {
    submit.dataset.ready = input.value.trim() ? "yes" : "no";
    setAction(currentAction());
  });
  form.append(label, input, submit);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const proofRef = input.value.trim();
    if (!proofRef) return;
    perform((job, h) => client!.submitPaymentProof({ ...base(job), proofRef }, h));
  });
  return form;
}

function currentAction(): Action | undefined {
  return current && !jobProblem ? viewJob(current, me).action : undefined;
}

/** Runs one action against the job as shown, with the signed-in token. */
function perform(call: (job: Job, options: { headers: Record<string, string> }) => Promise<Job>) {
  const job = current;
  if (!job || !token || busy || connection !== "live") return;
  refocus = $("job-actions").contains(document.activeElement);
  busy = true;
  $("job-action-error").textContent = "";
  update();
  void (async () => {
    try {
      const headers = { authorization: `Bearer ${await resolveToken(token!)}` };
      const answer = await call(job, { headers });
      // Our own answer at once; the stream brings the same revision (and
      // the other party's changes) and never goes backwards.
      if (current && answer.jobId === current.jobId && answer.revision > current.revision) current = answer;
    } catch (error) {
      const e = ConnectError.from(error);
      if (e.code === Code.Unauthenticated) {
        refused(e);
        return;
      }
      $("job-action-error").textContent = actionError(e);
    } finally {
      busy = false;
      update();
      if (refocus) {
        // Nothing changed (the call failed): back to the control that was used.
        refocus = false;
        $("job-actions").querySelector<HTMLElement>("button:not(:disabled)")?.focus();
      }
    }
  })();
}

function actionError(e: ConnectError): string {
  if (isNetworkFailure(e) || e.code === Code.Unavailable || e.code === Code.DeadlineExceeded) {
    return "The server could not be reached, so this may not have gone through. The page shows the job as it really is once it is live again.";
  }
  if (e.code === Code.Aborted || e.code === Code.FailedPrecondition) {
    return `Not done: ${e.rawMessage}. The page shows the job as it is now.`;
  }
  return `Not done: ${e.rawMessage || e.message}.`;
}

/** A fresh idempotency key (crypto.randomUUID needs a secure context). */
function newRequestId(): string {
  if (typeof crypto.randomUUID === "function" && window.isSecureContext) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

start();

/**
 * The page's one connection indicator: the states of its two watches (the
 * job list and the open job) folded into a single honest answer, and, when
 * the server cannot be reached, the likely reason in words.
 *
 * Must never say "live" unless every running watch is caught up, and never
 * guess CORS when the server simply does not answer.
 */
import { Code, ConnectError } from "@connectrpc/connect";

import type { WatchStatus } from "../client/index.js";

export type ConnectionState = "signed-out" | "connecting" | "live" | "reconnecting" | "offline";

/** Failed attempts in a row after which "reconnecting" becomes "offline". */
export const OFFLINE_AFTER_ATTEMPTS = 3;

export const CONNECTION_WORDS: Record<ConnectionState, string> = {
  "signed-out": "Signed out",
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

/**
 * One state for all watches. A watch that stopped for good without a
 * connection problem (its job ended, access denied) does not hold the page
 * back; a refused token signs the page out. A cancelled watch says nothing
 * (it is being replaced), and with no watch heard from yet the page is
 * still connecting, never live.
 */
export function combine(statuses: readonly (WatchStatus | undefined)[]): ConnectionState {
  const running = statuses.filter((s): s is WatchStatus => s !== undefined && s.state !== "cancelled");
  if (running.length === 0) return "connecting";
  let worst: ConnectionState = "live";
  const rank: Record<ConnectionState, number> = {
    live: 0,
    connecting: 1,
    reconnecting: 2,
    offline: 3,
    "signed-out": 4,
  };
  for (const status of running) {
    let state: ConnectionState;
    switch (status.state) {
      case "unauthenticated":
        state = "signed-out";
        break;
      case "reconnecting":
        state = status.attempt >= OFFLINE_AFTER_ATTEMPTS ? "offline" : "reconnecting";
        break;
      case "connecting":
        state = "connecting";
        break;
      default:
        state = "live";
    }
    if (rank[state] > rank[worst]) worst = state;
  }
  return worst;
}

/** True when the call never reached a server (the browser's fetch failed). */
export function isNetworkFailure(error: unknown): boolean {
  if (!(error instanceof ConnectError)) return false;
  return error.code === Code.Unknown && error.cause instanceof TypeError;
}

/**
 * Whether anything answers at `api`, whatever its CORS policy: an opaque
 * (`no-cors`) request succeeds when the server is up, even if it would
 * refuse this origin, and fails when nothing listens.
 */
export async function serverAnswers(api: string, timeoutMs = 3000): Promise<boolean> {
  try {
    await fetch(api, { mode: "no-cors", cache: "no-store", signal: AbortSignal.timeout(timeoutMs) });
    return true;
  } catch {
    return false;
  }
}

/** Why the page is offline, in words a person can act on. */
export function offlineReason(
  api: string,
  origin: string,
  error: ConnectError | undefined,
  answers: boolean | undefined,
  deviceOnline = true,
): string {
  if (!deviceOnline) {
    return "This device is offline. The page reconnects as soon as the network is back.";
  }
  if (error && !isNetworkFailure(error)) {
    return `The server at ${api} is unavailable: ${error.rawMessage || error.message}. Retrying.`;
  }
  if (answers === false) {
    return `The server at ${api} does not answer: it may be stopped, or the address is wrong. Retrying.`;
  }
  if (answers === true) {
    return (
      `The server at ${api} answers, but the browser blocked the call: ` +
      `this page's origin (${origin}) may not be allowed there (--cors-origin). Retrying.`
    );
  }
  return `Cannot reach the server at ${api}. Retrying.`;
}

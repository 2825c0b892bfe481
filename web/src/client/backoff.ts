/**
 * Capped exponential backoff with jitter, as every reconnecting client
 * needs it: the n-th consecutive failure waits about `initialMs * 2^(n-1)`,
 * never more than `maxMs`, and a random share of that so that a server
 * restart does not bring every browser back in the same millisecond.
 */
export interface BackoffOptions {
  /** Wait before the first retry. Default 250 ms. */
  initialMs?: number;
  /** The longest wait. Default 10 s. */
  maxMs?: number;
  /** Growth per failure. Default 2. */
  multiplier?: number;
  /**
   * Share of the delay that is random, 0..1. Default 0.5: the wait is
   * between half and all of the exponential value ("equal jitter").
   */
  jitter?: number;
}

export const DEFAULT_BACKOFF: Required<BackoffOptions> = {
  initialMs: 250,
  maxMs: 10_000,
  multiplier: 2,
  jitter: 0.5,
};

/** The wait before retry number `attempt` (1 for the first retry). */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  const o = { ...DEFAULT_BACKOFF, ...options };
  const exponent = Math.max(0, attempt - 1);
  const ceiling = Math.min(o.maxMs, o.initialMs * Math.pow(o.multiplier, exponent));
  const jitter = Math.min(1, Math.max(0, o.jitter));
  return Math.round(ceiling * (1 - jitter) + ceiling * jitter * random());
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

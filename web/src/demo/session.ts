/**
 * Who is signed in, and how a token reaches the page: pasted (forgivingly
 * cleaned), a sign-in link's `#token=` (read once, then removed from the
 * address bar), the embedding application's hook, or `postMessage` from
 * the embedding window. Pure parsing here; the page wires it.
 *
 * Must never treat a token as accepted: only the server's answer does
 * that. Reading the subject is for display, not for trust.
 */

/** What an embedding application may set before the page loads (`config.js`). */
export interface PageConfig {
  /** The jobstatus server, e.g. `https://jobs.example.com`. */
  api?: string;
  /** Open this job at start. */
  job?: number | string;
  /**
   * Returns the signed-in user's current token. Called on start and again
   * whenever the server refuses the token in use (for refresh). With it,
   * the page shows no sign-in form: the application owns identity.
   */
  getToken?: () => string | Promise<string>;
  /**
   * Accept `{ type: "jobstatus:sign-in", token }` messages from this origin
   * (the page is in an iframe of that application). Others are ignored.
   */
  tokenOrigin?: string;
}

export type Parsed = { ok: true; token: string } | { ok: false; problem: string };

const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/**
 * Cleans what a person pasted: surrounding space and quotes, a shell
 * `export NAME=` or `NAME=` prefix, an `Authorization: Bearer` prefix.
 * Says plainly what is wrong with anything that is still not a JWT.
 */
export function parseToken(input: string): Parsed {
  let text = input.trim();
  text = text.replace(/^export\s+/, "");
  const assignment = /^[A-Za-z_][A-Za-z0-9_]*=(.*)$/s.exec(text);
  if (assignment) text = assignment[1].trim();
  text = text.replace(/^authorization:\s*/i, "").replace(/^bearer\s+/i, "");
  text = text.replace(/^(['"])(.*)\1$/s, "$2").trim();
  if (!text) return { ok: false, problem: "Paste a token first." };
  if (/\s/.test(text)) {
    return { ok: false, problem: "A token has no spaces in it: paste just the token, or its export line." };
  }
  if (!JWT.test(text)) {
    return { ok: false, problem: "That does not look like a token (three parts separated by dots)." };
  }
  if (!claims(text)) {
    return { ok: false, problem: "That token's middle part is not readable; copy it again." };
  }
  return { ok: true, token: text };
}

interface Claims {
  sub?: unknown;
  exp?: unknown;
}

function claims(jwt: string): Claims | undefined {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part + "=".repeat((4 - (part.length % 4)) % 4);
    const value: unknown = JSON.parse(atob(padded));
    return typeof value === "object" && value !== null ? (value as Claims) : undefined;
  } catch {
    return undefined;
  }
}

/** The token's subject, for the page's own display and role choice. */
export function subjectOf(jwt: string): string {
  const sub = claims(jwt)?.sub;
  return typeof sub === "string" ? sub : "";
}

/** The token's expiry, if it has one. */
export function expiryOf(jwt: string): Date | undefined {
  const exp = claims(jwt)?.exp;
  return typeof exp === "number" ? new Date(exp * 1000) : undefined;
}

/** A message for the page from its embedding window, if it is one. */
export type EmbedMessage = { type: "jobstatus:sign-in"; token: string } | { type: "jobstatus:sign-out" };

export function embedMessage(data: unknown): EmbedMessage | undefined {
  if (typeof data !== "object" || data === null) return undefined;
  const message = data as { type?: unknown; token?: unknown };
  if (message.type === "jobstatus:sign-in" && typeof message.token === "string") {
    return { type: "jobstatus:sign-in", token: message.token };
  }
  if (message.type === "jobstatus:sign-out") return { type: "jobstatus:sign-out" };
  return undefined;
}

/**
 * Reads a sign-in link's token, from the fragment (`#token=`, never sent
 * to any server) or the query (`?token=`), and returns the address without
 * it, so the token does not stay in the address bar, history or bookmarks.
 */
export function takeTokenFromUrl(href: string): { token?: string; cleaned: string } {
  const url = new URL(href);
  const fragment = new URLSearchParams(url.hash.replace(/^#/, ""));
  const token = fragment.get("token") || url.searchParams.get("token") || undefined;
  fragment.delete("token");
  // Deleting re-encodes the whole query: only when there is one to delete.
  if (url.searchParams.has("token")) url.searchParams.delete("token");
  const rest = fragment.toString();
  url.hash = rest ? `#${rest}` : "";
  return { token, cleaned: url.toString() };
}

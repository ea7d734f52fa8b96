/**
 * The page's credentials: the rep key that signs a rep in, and the conversation token it renews.
 *
 * A rep key arrives once in the address's fragment (`#rep_key=…`, never sent to any server), is
 * kept in this tab's sessionStorage and removed from the address bar. With it the page can start
 * conversations (`POST /conversations`). The conversation token (`?token=…`) is renewed through
 * `POST /token` before it expires; the gateway ends a session whose token ran out.
 */

const REP_KEY_STORAGE = "teleprompter.rep_key";
/** Renew when less than this share of the token's lifetime is left… */
const RENEW_AT_FRACTION_LEFT = 0.2;
/** …or less than this, whichever comes first. */
const RENEW_LEAD_MS = 5 * 60_000;
/** A renewal that failed on the network is retried this often while the token lasts. */
const RETRY_MS = 30_000;

/** A refusal from a token endpoint: `status` 401/403 means retrying cannot help. */
export class CredentialError extends Error {
  constructor(message, { status = 0, code = "" } = {}) {
    super(message);
    this.name = "CredentialError";
    this.status = status;
    this.code = code;
  }
}

/** The rep key from the fragment (then kept and hidden) or from this tab's storage. */
export function takeRepKey() {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const fromFragment = fragment.get("rep_key");
  if (fromFragment) {
    try {
      sessionStorage.setItem(REP_KEY_STORAGE, fromFragment);
    } catch {
      // Storage can be disabled; the key still works for this page view.
    }
    fragment.delete("rep_key");
    const rest = fragment.toString();
    const url = new URL(window.location.href);
    url.hash = rest ? `#${rest}` : "";
    history.replaceState(history.state, "", url);
    return fromFragment;
  }
  try {
    return sessionStorage.getItem(REP_KEY_STORAGE);
  } catch {
    return null;
  }
}

/** The rep's name in a rep key (unverified: only for display). */
export function repName(repKey) {
  return decodeClaims(repKey)?.sub ?? null;
}

/** A JWT's claims, unverified (the gateway verifies); null if it is not one. */
export function decodeClaims(token) {
  const part = token?.split(".")[1];
  if (!part) return null;
  try {
    const binary = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    const json = new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)));
    const claims = JSON.parse(json);
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

async function post(path, bearer, body) {
  let response;
  try {
    response = await fetch(new URL(path, window.location.href), {
      method: "POST",
      headers: { Authorization: `Bearer ${bearer}`, "Content-Type": "application/json" },
      body: JSON.stringify(body ?? {}),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (error) {
    throw new CredentialError(`The gateway could not be reached (${error.message}).`);
  }
  let payload = {};
  try {
    payload = await response.json();
  } catch {
    // An error page, not JSON: the status says enough.
  }
  if (!response.ok) {
    throw new CredentialError(payload.message ?? `The gateway answered ${response.status}.`, {
      status: response.status,
      code: payload.error ?? "",
    });
  }
  return payload;
}

/** A new conversation for the signed-in rep: { conversation_id, token, expires_at }. */
export function startConversation(repKey) {
  return post("/conversations", repKey);
}

/** Keeps a conversation token fresh: renews it before it expires, reports each new one. */
export class TokenRenewal {
  /**
   * @param {object} options
   * @param {string} options.conversationId
   * @param {string} options.token - the token in use now
   * @param {(token: string) => void} options.onRenewed - a fresh token to use from now on
   * @param {(error: CredentialError) => void} options.onRefused - renewal is no longer possible
   */
  constructor({ conversationId, token, onRenewed, onRefused }) {
    this.conversationId = conversationId;
    this.token = token;
    this.onRenewed = onRenewed;
    this.onRefused = onRefused;
    this.timer = null;
    this.stopped = false;
  }

  start() {
    this.stopped = false;
    this.#schedule();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** Milliseconds until the token should be renewed (0: now); null if it carries no expiry. */
  dueInMs(now = Date.now()) {
    const claims = decodeClaims(this.token);
    if (!Number.isFinite(claims?.exp)) return null;
    const lifetimeMs = Number.isFinite(claims.iat) ? (claims.exp - claims.iat) * 1000 : 0;
    const lead = Math.min(RENEW_LEAD_MS, lifetimeMs * RENEW_AT_FRACTION_LEFT) || RENEW_LEAD_MS;
    return Math.max(0, claims.exp * 1000 - lead - now);
  }

  #schedule(delayMs = this.dueInMs()) {
    clearTimeout(this.timer);
    if (this.stopped || delayMs === null) return;
    // setTimeout's delay is a signed 32-bit count of milliseconds.
    this.timer = setTimeout(() => this.#renew(), Math.min(delayMs, 2 ** 31 - 1));
  }

  async #renew() {
    if (this.stopped) return;
    try {
      const { token } = await post("/token", this.token, { conversation_id: this.conversationId });
      if (this.stopped) return;
      this.token = token;
      this.onRenewed(token);
      this.#schedule();
    } catch (error) {
      if (this.stopped) return;
      if (error.status === 401 || error.status === 403) {
        this.onRefused(error);
        return;
      }
      this.#schedule(RETRY_MS);
    }
  }
}

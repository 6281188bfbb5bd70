// Tally's browser client: votes that count exactly once, with retries and regional failover,
// and live results over SSE with a polling fallback. No dependencies; an ES module.
//
//   import { createClient } from "https://us-east.tally.example.net/client.js";
//   const tally = createClient({ endpoints: ["https://us-east.tally.example.net",
//                                            "https://us-west.tally.example.net"] });
//   const receipt = await tally.vote("superbowl", "green");   // { counted, voteId, endpoint }
//   const stop = tally.live("superbowl", (results) => render(results));
//
// vote() makes ONE vote ID per call (crypto.randomUUID) and sends that same ID on every retry,
// to any region, so a retry after a lost answer can never count twice. It retries timeouts,
// network errors, 5xx and 429 with full-jitter exponential backoff that honours Retry-After,
// moving along `endpoints` (nearest first), within `deadlineMs`. It rejects with a VoteError
// whose `mayHaveBeenCounted` says whether an answer was lost (then call voteWithId again with
// `error.voteId` later: the answer is `counted` or `duplicate`, never a second count).
// The same rules as the Rust client (tally_client).

// The colour of an option, the same on every page (dashboard, voting page, your own): an option
// named like a colour gets that colour ("Green" is green, whatever its place in the list);
// any other takes the palette's colour for its place.
const NAMED_COLORS = {
  green: "#22c55e", blue: "#3b82f6", red: "#ef4444", yellow: "#eab308", orange: "#f97316",
  purple: "#a855f7", pink: "#ec4899", teal: "#14b8a6", cyan: "#06b6d4", indigo: "#6366f1",
  violet: "#8b5cf6", lime: "#84cc16", gold: "#f59e0b", white: "#e2e8f0", silver: "#cbd5e1",
  gray: "#94a3b8", grey: "#94a3b8", black: "#64748b", brown: "#b45309",
  yes: "#22c55e", no: "#ef4444",
};
const PALETTE = [
  "#3b82f6", "#22c55e", "#f97316", "#a855f7", "#eab308", "#ec4899", "#14b8a6", "#ef4444",
  "#6366f1", "#84cc16", "#06b6d4", "#f43f5e", "#8b5cf6", "#10b981", "#f59e0b", "#0ea5e9",
];

export function optionColor(name, index) {
  return NAMED_COLORS[String(name).trim().toLowerCase()] ?? PALETTE[index % PALETTE.length];
}

// Text that reads on `optionColor(...)`: dark on light colours, white on dark ones (WCAG's
// relative luminance of the #rrggbb colour against a 0.18 threshold).
export function textColorOn(hex) {
  const channel = (at) => {
    const value = parseInt(hex.slice(at, at + 2), 16) / 255;
    return value <= 0.03928 ? value / 12.92 : ((value + 0.055) / 1.055) ** 2.4;
  };
  const luminance = 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
  return luminance > 0.18 ? "#1b1f24" : "#ffffff";
}

const BACKOFF_INITIAL_MS = 50;
const BACKOFF_MAX_MS = 2000;
const RETRY_AFTER_SECONDS_MAX = 30;
const ATTEMPTS_MAX = 64;
const SSE_FAILURES_BEFORE_POLLING = 3;
const POLLING_PHASE_MS = 30000;
const POLL_INTERVAL_MS = 1000;

export class VoteError extends Error {
  constructor(message, { voteId, mayHaveBeenCounted, status = 0, code = "" }) {
    super(message);
    this.name = "VoteError";
    this.voteId = voteId;
    this.mayHaveBeenCounted = mayHaveBeenCounted;
    this.status = status;
    this.code = code;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// Refusal codes (of a 503) after which the vote may have been counted: retry with its ID.
const MAY_FOLLOW_A_COUNT = new Set(["unconfirmed", "not_replicated"]);
const retryable = (status) => status === 408 || status === 429 || status >= 500;
const trimSlash = (url) => url.replace(/\/+$/, "");

function backoff() {
  let attempt = 0;
  return (retryAfterMs) => {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_INITIAL_MS * 2 ** Math.min(attempt, 20));
    attempt += 1;
    const jittered = Math.random() * ceiling;
    return retryAfterMs == null ? jittered : Math.max(retryAfterMs, jittered);
  };
}

function retryAfterMs(response) {
  const value = response.headers.get("retry-after");
  if (value === null || !/^\s*\d+\s*$/.test(value)) return null;
  return Math.min(Number(value), RETRY_AFTER_SECONDS_MAX) * 1000;
}

async function fetchWithin(url, options, timeoutMs) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    return await fetch(url, { ...options, signal: controller.signal });
  } finally {
    clearTimeout(timer);
  }
}

export function createClient({ endpoints, attemptTimeoutMs = 2000, deadlineMs = 10000 } = {}) {
  if (!Array.isArray(endpoints) || endpoints.length === 0) {
    throw new Error("createClient: give endpoints, nearest region first");
  }
  const bases = endpoints.map(trimSlash);

  async function voteWithId(poll, option, voteId) {
    const giveUpAt = Date.now() + deadlineMs;
    const nextDelay = backoff();
    let mayHaveBeenCounted = false;
    let last = "no attempt made";
    const body = JSON.stringify({ option, vote_id: voteId });
    // When each region may be tried again: a failure benches only its own region (for the
    // backoff, or as long as its Retry-After asked); the next attempt goes to the region free
    // soonest, the nearest among equals.
    const freeAt = bases.map(() => Date.now());
    for (let attempt = 0; attempt < ATTEMPTS_MAX; attempt += 1) {
      let index = 0;
      for (let i = 1; i < freeAt.length; i += 1) if (freeAt[i] < freeAt[index]) index = i;
      if (freeAt[index] >= giveUpAt) break;
      await sleep(Math.max(0, freeAt[index] - Date.now()));
      const base = bases[index];
      const url = `${base}/v1/polls/${encodeURIComponent(poll)}/votes`;
      let wait = null;
      try {
        const timeout = Math.max(1, Math.min(attemptTimeoutMs, giveUpAt - Date.now()));
        const response = await fetchWithin(
          url,
          { method: "POST", headers: { "content-type": "application/json" }, body },
          timeout,
        );
        if (response.ok) {
          const answer = await response.json();
          return { counted: answer.status === "counted", voteId, endpoint: base, attempts: attempt + 1 };
        }
        if (!retryable(response.status)) {
          const answer = await response.json().catch(() => ({}));
          // This request was refused; an earlier attempt whose answer was lost may still
          // have been counted (say the poll closed before the retry reached another region).
          throw new VoteError(answer.message || `refused with ${response.status}`, {
            voteId, mayHaveBeenCounted, status: response.status, code: answer.error || "",
          });
        }
        // 503 and 429 are Tally shedding load: nothing was taken, but for an edge's
        // "unconfirmed" (it sent the vote on and lost the answer). Other 5xx may come from a
        // proxy after the node took the vote.
        if (response.status !== 503 && response.status !== 429) mayHaveBeenCounted = true;
        else if (MAY_FOLLOW_A_COUNT.has((await response.json().catch(() => ({}))).error)) {
          mayHaveBeenCounted = true;
        }
        last = `${base} answered ${response.status}`;
        wait = retryAfterMs(response);
      } catch (error) {
        if (error instanceof VoteError) throw error;
        // fetch cannot tell "never connected" from "answer lost": assume the worst.
        mayHaveBeenCounted = true;
        last = `${base}: ${error.name === "AbortError" ? "timed out" : error.message}`;
      }
      freeAt[index] = Date.now() + nextDelay(wait);
    }
    const message = mayHaveBeenCounted
      ? `may have been counted (${last}); retry later with vote ID ${voteId}`
      : `not counted: no region took the vote (${last})`;
    throw new VoteError(message, { voteId, mayHaveBeenCounted });
  }

  function vote(poll, option) {
    return voteWithId(poll, option, crypto.randomUUID());
  }

  async function results(poll) {
    let last = "";
    for (const base of bases) {
      try {
        const response = await fetchWithin(
          `${base}/v1/polls/${encodeURIComponent(poll)}/results`, {}, attemptTimeoutMs);
        if (response.ok) return { ...(await response.json()), endpoint: base };
        if (!retryable(response.status)) throw new Error(`results refused with ${response.status}`);
        last = `${base} answered ${response.status}`;
      } catch (error) {
        if (error.message.startsWith("results refused")) throw error;
        last = `${base}: ${error.message}`;
      }
    }
    throw new Error(`no region answered: ${last}`);
  }

  // Calls onResults(results, { via: "sse" | "polling", endpoint }) with every update until the
  // returned function is called. EventSource reconnects by itself with Last-Event-ID; after
  // repeated failures without an event, this moves to the next region, and after
  // SSE_FAILURES_BEFORE_POLLING of those polls for a while before trying SSE again.
  function live(poll, onResults) {
    let stopped = false;
    let source = null;
    let index = 0;
    let failures = 0;
    const path = `/v1/polls/${encodeURIComponent(poll)}`;
    const follow = () => {
      if (stopped) return;
      if (failures >= SSE_FAILURES_BEFORE_POLLING) {
        pollForAWhile();
        return;
      }
      const base = bases[index % bases.length];
      source = new EventSource(`${base}${path}/stream`);
      let received = false;
      let errorsSinceEvent = 0;
      source.addEventListener("results", (event) => {
        received = true;
        failures = 0;
        errorsSinceEvent = 0;
        onResults(JSON.parse(event.data), { via: "sse", endpoint: base });
      });
      source.onerror = () => {
        errorsSinceEvent += 1;
        // After events, EventSource reconnects by itself (sending Last-Event-ID); a region that
        // keeps failing is left for the next.
        if (received && errorsSinceEvent < SSE_FAILURES_BEFORE_POLLING) return;
        source.close();
        failures += 1;
        index += 1;
        setTimeout(follow, nextDelay(null));
      };
    };
    const nextDelay = backoff();
    const pollForAWhile = async () => {
      const until = Date.now() + POLLING_PHASE_MS;
      while (!stopped && Date.now() < until) {
        const base = bases[index % bases.length];
        try {
          const response = await fetchWithin(`${base}${path}/results`, {}, attemptTimeoutMs);
          if (response.ok) onResults(await response.json(), { via: "polling", endpoint: base });
          else index += 1;
        } catch {
          index += 1;
        }
        await sleep(POLL_INTERVAL_MS);
      }
      failures = 0;
      follow();
    };
    follow();
    return () => {
      stopped = true;
      if (source) source.close();
    };
  }

  return { vote, voteWithId, results, live };
}

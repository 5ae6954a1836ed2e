import { Cmd } from './codes.js';

/**
 * Client-side flood pacing, shared by the terminal client library and the
 * web app. The server tells an opted-in client its limits in "03"
 * (`limits`); a client that spaces its requests with the same token bucket,
 * a little slower, is never refused for rate.
 */

/** The flood-control limits a server announces in "03" to clients that sent `caps`. */
export interface Limits {
  /** Requests per second after the burst; 0 means no flood control. */
  rate: number;
  burst: number;
  /** Longest CHAT or WHISPER message, in characters. */
  maxMessage: number;
  /**
   * Requests the connection may send at once to start with, when fewer than `burst`: what
   * this client's earlier connection, or another of its address, left of the allowance.
   */
  tokens?: number;
}

/** Reads `limits` from a "03" reply; undefined if absent or malformed (older confab, course server). */
export function parseLimits(value: unknown): Limits | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { rate, burst, maxMessage, tokens } = value as Record<string, unknown>;
  const ok = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n) && n >= 0;
  if (!ok(rate) || !ok(burst) || !ok(maxMessage)) return undefined;
  return ok(tokens) && tokens < burst
    ? { rate, burst, maxMessage, tokens }
    : { rate, burst, maxMessage };
}

/**
 * Headroom kept below the announced limits. The server counts a request when
 * it arrives, not when it was sent: a request held up in the network (or a
 * server clock that steps) brings the next one closer to it on the server's
 * clock. Spending only 90% of the rate and leaving a tenth of the burst unused
 * absorbs that (see jitterToleranceMs) without noticeably slowing a paste.
 */
const RATE_SHARE = 0.9;
const BURST_SHARE = 0.9;

/**
 * The longest delay setTimeout keeps (2^31 - 1 ms, 24.8 days). A longer one fires at once
 * (Node: after 1 ms, with a TimeoutOverflowWarning on stderr each time), so a server
 * announcing a tiny rate (`1e-300`) had the queue's timer fire every millisecond and
 * `confab chat` print the warning over and over.
 */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A token bucket that answers "when may the next request go?" rather than
 * "may it go now?", so a queue can sleep exactly that long.
 */
export class SendPacer {
  private readonly rate: number;
  private readonly burst: number;
  /** The server's burst, which caps what one request costs (costCap). */
  private readonly serverBurst: number;
  private tokens: number;
  private last: number;
  /**
   * How much the network delay may vary between requests before the server
   * could refuse one: the unused burst and rate, in time at the server's rate.
   * About 200 ms at the default limits (20/s, burst 40).
   */
  readonly jitterToleranceMs: number;

  /** `now` in milliseconds, from a monotonic clock. */
  constructor(limits: Pick<Limits, 'rate' | 'burst' | 'tokens'>, now: number) {
    this.rate = limits.rate * RATE_SHARE;
    this.burst = Math.max(1, Math.floor(limits.burst * BURST_SHARE));
    this.serverBurst = limits.burst;
    // The same headroom below what the server says is left as below the burst.
    const left = limits.tokens ?? limits.burst;
    this.tokens = Math.max(0, Math.min(this.burst, left - (limits.burst - this.burst)));
    this.last = now;
    this.jitterToleranceMs =
      (1000 * Math.max(0, limits.burst - this.burst + (1 - RATE_SHARE))) / limits.rate;
  }

  private refill(now: number): void {
    const elapsed = Math.max(0, now - this.last);
    this.last = now;
    this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.rate) / 1000);
  }

  /**
   * Milliseconds until a request of `cost` (requestCost) may be sent (0: now), at most
   * MAX_TIMER_MS: a queue sleeping that long asks again when it wakes.
   */
  delay(now: number, cost = 1): number {
    this.refill(now);
    const need = costCap(cost, this.serverBurst);
    if (this.tokens >= need) return 0;
    // Rounded up, so that waking after this delay always finds the tokens whole.
    return Math.min(MAX_TIMER_MS, Math.ceil(((need - this.tokens) * 1000) / this.rate));
  }

  /** Records a request of `cost` sent at `now`; call only when delay(now, cost) is 0. */
  take(now: number, cost = 1): void {
    this.refill(now);
    this.tokens -= costCap(cost, this.serverBurst);
  }

  /**
   * The queue's timer, set for `due`, fired at `now`. Firing late means the
   * machine was busy (a page's long script, a stalled event loop), and then
   * what was written just before may not have reached the server yet, or the
   * server may not have read it yet. Refilling for the time it was late would
   * let the queue go out in a burst right behind those, and the server counts
   * both together and refuses the excess (seen in Chromium on a loaded
   * machine: 19 lines written during a 1.3 s script reached the server over
   * a second, most within 2 ms, 12 more went at once when the timer fired
   * after the script, and 3 were refused). So the bucket is refilled only up
   * to `due`; the queue then goes on at the rate.
   */
  wake(due: number, now: number): void {
    this.refill(Math.min(due, now));
    this.last = Math.max(this.last, now);
  }
}

/**
 * How many requests' worth of the allowance a request takes, before costCap: confab counts a
 * RENAME once for each room it is announced in, the sender's `rooms` (the lobby included).
 */
export function requestCost(request: { readonly cmd: string }, rooms: number): number {
  return request.cmd === Cmd.RENAME ? Math.max(1, rooms) : 1;
}

/**
 * The rooms the server will count a request written now in (requestCost): the client's
 * `joined`, and those of the JOIN_ROOMs it has written and not yet had answered.
 */
export function roomsByNow(joined: number, unanswered: Iterable<{ readonly cmd: string }>): number {
  let joining = 0;
  for (const request of unanswered) if (request.cmd === Cmd.JOIN_ROOM) joining++;
  return joined + joining;
}

/**
 * What a request of `cost` takes from a bucket of `burst`: at most half of it, so that a
 * client pacing with a bucket below the server's (SendPacer) can always send it.
 */
export function costCap(cost: number, burst: number): number {
  return Math.max(1, Math.min(cost, Math.floor(burst / 2)));
}

/** A pacer for the announced limits, or undefined when there is nothing to pace. */
export function pacerFor(limits: Limits | undefined, now: number): SendPacer | undefined {
  if (limits === undefined || limits.rate <= 0) return undefined;
  return new SendPacer(limits, now);
}

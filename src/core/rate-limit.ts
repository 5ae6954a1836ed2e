import type { Limits } from '../protocol/pacing.js';

/** A clock in milliseconds; injected so tests can move time by hand. */
export type Clock = () => number;

/**
 * A token bucket: `burst` tokens to start, refilled at `rate` per second.
 * Each request takes one; an empty bucket refuses.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    readonly rate: number,
    readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.last = now;
  }

  take(now: number): boolean {
    if (!this.has(now)) return false;
    this.tokens -= 1;
    return true;
  }

  /** Whether a token is there now, without taking it. */
  has(now: number): boolean {
    const elapsed = Math.max(0, now - this.last);
    this.last = now;
    this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.rate) / 1000);
    return this.tokens >= 1;
  }
}

/**
 * A session's bucket after the flood limits changed to `rate` and `burst` (rate 0: off):
 * the new limits, but never below those it was told, which a client that paces itself
 * keeps to until it reconnects. Flood control turned on applies to all: a client told
 * there was none (rate 0) has no pace to keep, and gets a full burst to start.
 */
export function bucketAfterReload(
  told: Limits | undefined,
  rate: number,
  burst: number,
  now: number,
): TokenBucket | undefined {
  if (rate <= 0) return undefined;
  if (told === undefined || told.rate <= 0) return new TokenBucket(rate, burst, now);
  return new TokenBucket(Math.max(rate, told.rate), Math.max(burst, told.burst), now);
}

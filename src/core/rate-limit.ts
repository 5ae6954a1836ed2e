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
    private readonly rate: number,
    private readonly burst: number,
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

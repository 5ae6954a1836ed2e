import type { Limits } from '../protocol/pacing.js';
import { setNewest } from './newest.js';

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
    /** Tokens to start with (a full bucket unless what an earlier connection left is less). */
    tokens = burst,
  ) {
    this.tokens = Math.min(burst, tokens);
    this.last = now;
  }

  /** Tokens as of the last request, not refilled since: at most what there is now. */
  get available(): number {
    return this.tokens;
  }

  /** Tokens now, refilled since the last request. */
  level(now: number): number {
    this.has(now);
    return this.tokens;
  }

  /** Lowers the tokens to `tokens`: what another connection of the same client left. */
  lowerTo(tokens: number): void {
    this.tokens = Math.min(this.tokens, tokens);
  }

  /** Takes `count` tokens if they are there now; else takes none. */
  take(now: number, count = 1): boolean {
    if (!this.has(now, count)) return false;
    this.tokens -= count;
    return true;
  }

  /** Whether `count` tokens are there now, without taking them. */
  has(now: number, count = 1): boolean {
    const elapsed = Math.max(0, now - this.last);
    this.last = now;
    this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.rate) / 1000);
    return this.tokens >= count;
  }
}

/**
 * A session's bucket after the flood limits changed to `rate` and `burst` (rate 0: off):
 * the new limits, but never below those it was told, which a client that paces itself
 * keeps to until it reconnects. A client told there was none (rate 0) keeps none until it
 * reconnects: it had no pace to keep, and a page it pasted after flood control was turned
 * on was refused past the burst and then cut off (2004). A course client, told nothing,
 * gets the new limits.
 */
export function bucketAfterReload(
  told: Limits | undefined,
  rate: number,
  burst: number,
  now: number,
): TokenBucket | undefined {
  if (rate <= 0 || (told !== undefined && told.rate <= 0)) return undefined;
  if (told === undefined) return new TokenBucket(rate, burst, now);
  return new TokenBucket(Math.max(rate, told.rate), Math.max(burst, told.burst), now);
}

/**
 * What each address's connections left of their flood allowance, kept after they close: a
 * client that reconnects (or resumes) after every burst would otherwise get a fresh burst each
 * time, and flood control would not bound it. A new connection from the address starts with
 * the least that a connection of it left, refilled since; a full allowance is forgotten. One
 * entry per address (an IPv4 address or an IPv6 /64); the oldest go first past `max`.
 */
export class SpentAllowances {
  private readonly left = new Map<string, { tokens: number; at: number }>();

  constructor(private readonly max: number) {}

  /** Records what a closing connection's bucket holds, if less than a full burst. */
  keep(address: string, bucket: TokenBucket, now: number): void {
    const start = this.start(address, bucket.rate, bucket.burst, now);
    const tokens = Math.min(bucket.level(now), start);
    if (tokens >= bucket.burst) this.left.delete(address);
    else setNewest(this.left, address, { tokens, at: now }, this.max);
  }

  /** The tokens a new connection from `address` starts with, at most `burst`. */
  start(address: string, rate: number, burst: number, now: number): number {
    const entry = this.left.get(address);
    if (entry === undefined) return burst;
    const tokens = entry.tokens + (Math.max(0, now - entry.at) * rate) / 1000;
    if (tokens < burst) return tokens;
    this.left.delete(address);
    return burst;
  }
}

/**
 * A token bucket per client address, for budgets kept per address rather than per connection
 * (OPER checks, new rooms). At most `max` addresses: the oldest is forgotten first (its bucket
 * was likely full again anyway).
 */
export class AddressBuckets {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(private readonly max: number) {}

  /** The address's bucket, full if new, or made anew if the limits changed since. */
  of(address: string, rate: number, burst: number, now: number): TokenBucket {
    let bucket = this.buckets.get(address);
    if (bucket === undefined || bucket.rate !== rate || bucket.burst !== burst) {
      bucket = new TokenBucket(rate, burst, now);
      setNewest(this.buckets, address, bucket, this.max);
    }
    return bucket;
  }
}

import { describe, expect, it } from 'vitest';
import { AddressBuckets, SpentAllowances, TokenBucket } from '../../../src/core/rate-limit.js';

/** A bucket of burst 5 at 1 token/s with `left` tokens at time 0. */
function spent(left: number): TokenBucket {
  const bucket = new TokenBucket(1, 5, 0);
  bucket.take(0, 5 - left);
  return bucket;
}

describe('SpentAllowances', () => {
  it('hands a new connection what the last one of its address left, refilled since', () => {
    const kept = new SpentAllowances(10);
    kept.keep('a', spent(1), 0);
    expect(kept.start('a', 1, 5, 0)).toBe(1);
    expect(kept.start('a', 1, 5, 2000)).toBe(3);
    expect(kept.start('b', 1, 5, 0)).toBe(5);
  });

  it('forgets an address whose allowance is full again, when kept or asked for', () => {
    const kept = new SpentAllowances(10);
    kept.keep('a', spent(0), 0);
    // Refilled by its next close: forgotten, so even a start dated back gets a full burst.
    kept.keep('a', spent(5), 5000);
    expect(kept.start('a', 1, 5, 0)).toBe(5);
    kept.keep('b', spent(0), 0);
    expect(kept.start('b', 1, 5, 5000)).toBe(5);
    // Asked for at a time before its entry: what was kept, not a refill from then.
    expect(kept.start('b', 1, 5, 0)).toBe(5);
  });

  it('keeps at most max addresses, forgetting the one kept longest ago', () => {
    const kept = new SpentAllowances(3);
    for (const address of ['a', 'b', 'c']) kept.keep(address, spent(0), 0);
    // Kept again: now the newest, so b goes first.
    kept.keep('a', spent(0), 0);
    kept.keep('d', spent(0), 0);
    expect(['a', 'b', 'c', 'd'].map((x) => kept.start(x, 1, 5, 0))).toEqual([0, 5, 0, 0]);
    kept.keep('e', spent(0), 0);
    expect(['a', 'c', 'd', 'e'].map((x) => kept.start(x, 1, 5, 0))).toEqual([0, 5, 0, 0]);
  });
});

describe('AddressBuckets', () => {
  it('gives each address one bucket, new when the limits change, and forgets the oldest past max', () => {
    const buckets = new AddressBuckets(2);
    const a = buckets.of('a', 1, 5, 0);
    expect(buckets.of('a', 1, 5, 0)).toBe(a);
    const b = buckets.of('b', 1, 5, 0);
    // New limits: a new bucket, and a is now the newest.
    const a2 = buckets.of('a', 2, 5, 0);
    expect(a2).not.toBe(a);
    expect(a2.rate).toBe(2);
    buckets.of('c', 2, 5, 0);
    expect(buckets.of('a', 2, 5, 0)).toBe(a2);
    expect(buckets.of('b', 1, 5, 0)).not.toBe(b);
  });
});

import { describe, expect, it } from 'vitest';
import { LogLimiter } from '../../../src/core/log-limit.js';

describe('LogLimiter', () => {
  it('passes one line of a kind per interval, the next saying how many it held back', () => {
    let now = 0;
    const limit = new LogLimiter(10_000, () => now);
    expect(limit.pass('a')).toEqual({});
    expect(limit.pass('b')).toEqual({});
    for (let i = 0; i < 5; i++) expect(limit.pass('a')).toBeUndefined();
    now += 9_999;
    expect(limit.pass('a')).toBeUndefined();
    now += 1;
    expect(limit.pass('a')).toEqual({ held: 6 });
    expect(limit.pass('b')).toEqual({});
    now += 10_000;
    // Nothing held back since: no count.
    expect(limit.pass('a')).toEqual({});
  });
});

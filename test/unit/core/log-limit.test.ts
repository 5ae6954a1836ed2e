import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { type Held, LogLimiter } from '../../../src/core/log-limit.js';

describe('LogLimiter', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** A limiter on the fake clock, and the lines it wrote as [kind, line number, held]. */
  function limiter() {
    const limit = new LogLimiter(10_000);
    const written: [string, number, number | undefined][] = [];
    const log = (kind: string, n: number) =>
      limit.log(kind, (extra) => written.push([kind, n, extra.held]), undefined);
    return { limit, written, log };
  }

  it('writes one line of a kind per interval, and at its end the last held back with their count', () => {
    const { written, log } = limiter();
    log('a', 1);
    log('b', 1);
    for (let n = 2; n <= 6; n++) log('a', n);
    expect(written).toEqual([
      ['a', 1, undefined],
      ['b', 1, undefined],
    ]);
    vi.advanceTimersByTime(9_999);
    log('a', 7);
    expect(written).toHaveLength(2);
    // The flood stopped: its count is told all the same, with the last line's fields.
    vi.advanceTimersByTime(1);
    expect(written.at(-1)).toEqual(['a', 7, 6]);
    // That line began an interval: the next waits for its end.
    log('a', 8);
    vi.advanceTimersByTime(9_999);
    expect(written).toHaveLength(3);
    vi.advanceTimersByTime(1);
    expect(written.at(-1)).toEqual(['a', 8, 1]);
    // Nothing held back since: no line, and the next one is written at once, with no count.
    vi.advanceTimersByTime(60_000);
    expect(written).toHaveLength(4);
    log('a', 9);
    expect(written.at(-1)).toEqual(['a', 9, undefined]);
    log('b', 2);
    expect(written.at(-1)).toEqual(['b', 2, undefined]);
  });

  it('writes one line per interval while a flood goes on', () => {
    const { written, log } = limiter();
    for (let n = 1; n <= 600; n++) {
      log('a', n);
      vi.advanceTimersByTime(100);
    }
    // 60 s of lines ten a second: the first, then one per 10 s with the count of the others.
    expect(written.length).toBeGreaterThanOrEqual(6);
    expect(written.length).toBeLessThanOrEqual(7);
    // Once the last interval ends, every line is written or counted, once.
    vi.advanceTimersByTime(10_000);
    expect(written.reduce((sum, [, , held]) => sum + (held ?? 1), 0)).toBe(600);
  });

  it('holds nothing back for longer than an interval when its clock steps back', () => {
    let offset = 0;
    const limit = new LogLimiter(10_000, () => Date.now() + offset);
    const written: number[] = [];
    limit.log('a', () => written.push(1), undefined);
    offset = -3_600_000;
    limit.log('a', () => written.push(2), undefined);
    expect(written).toEqual([1, 2]);
  });

  it('says which addresses the lines held back came from, the first few by name', () => {
    const limit = new LogLimiter(10_000);
    const written: Held[] = [];
    const log = (from: string | undefined) => limit.log('a', (held) => written.push(held), from);
    log('10.0.0.1');
    for (let i = 0; i < 5; i++) log('10.0.0.1');
    log('10.0.0.2');
    log(undefined);
    vi.advanceTimersByTime(10_000);
    expect(written).toEqual([{}, { held: 7, heldFrom: { '10.0.0.1': 5, '10.0.0.2': 1 } }]);
    // A flood from many addresses: eight by name, the rest counted together.
    for (let i = 0; i < 30; i++) log(`10.0.1.${i % 12}`);
    vi.advanceTimersByTime(10_000);
    const last = written.at(-1)!;
    expect(last.held).toBe(30);
    expect(Object.keys(last.heldFrom!)).toHaveLength(8);
    expect(last.heldFrom!['10.0.1.0']).toBe(3);
    expect(Object.values(last.heldFrom!).reduce((a, b) => a + b, 0) + last.heldFromOthers!).toBe(
      30,
    );
    // Each interval counts afresh.
    log('10.0.0.3');
    vi.advanceTimersByTime(10_000);
    expect(written.at(-1)).toEqual({ held: 1, heldFrom: { '10.0.0.3': 1 } });
  });

  it('writes what it holds back when flushed, and nothing after', () => {
    const { limit, written, log } = limiter();
    log('a', 1);
    log('a', 2);
    log('a', 3);
    limit.flush();
    expect(written).toEqual([
      ['a', 1, undefined],
      ['a', 3, 2],
    ]);
    vi.advanceTimersByTime(60_000);
    expect(written).toHaveLength(2);
  });
});

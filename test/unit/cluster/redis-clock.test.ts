/**
 * RedisClock against a real redis-server: a node reads Redis's time through its own clock,
 * however far off that is, and one whose clock agrees with Redis's keeps its own exactly.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { CLOCK_TOLERANCE_MS, RedisClock } from '../../../src/cluster/redis-clock.js';
import { commandClient } from '../../../src/store/redis-client.js';
import { useRedis, withoutRedis } from '../../helpers/redis.js';

const skip = withoutRedis();
const MONTH_MS = 30 * 24 * 3600 * 1000;

describe.skipIf(skip)('RedisClock', () => {
  const redis = useRedis();
  const clients: ReturnType<typeof commandClient>[] = [];
  afterEach(() => {
    for (const c of clients.splice(0)) c.disconnect();
  });
  const client = () => {
    const c = commandClient(redis.url);
    clients.push(c);
    return c;
  };
  /** A client whose answers to TIME come back `delay()` ms late. */
  const answeringLate = (delay: () => number) => {
    const c = client();
    return {
      time: async () => {
        const time = await c.time();
        await sleep(delay());
        return time;
      },
    };
  };

  it.each([
    ['a month ahead', MONTH_MS],
    ['a month behind', -MONTH_MS],
    ['ten seconds ahead', 10_000],
  ])('reads Redis time on a machine whose clock is %s', async (_, skew) => {
    const clock = new RedisClock(client(), () => Date.now() + skew);
    // Before its first sample it is the machine's clock.
    expect(Math.abs(clock.now() - Date.now() - skew)).toBeLessThan(500);
    expect(await clock.sync()).toBe(true);
    // Redis runs on this machine: its time is this clock's, within the round trip.
    expect(Math.abs(clock.now() - Date.now())).toBeLessThan(500);
    expect(clock.skew).toBeCloseTo(-skew, -3);
  });

  it("keeps a clock that agrees with Redis's as it is, to the millisecond", async () => {
    const clock = new RedisClock(client(), () => Date.now() + CLOCK_TOLERANCE_MS / 2);
    for (let i = 0; i < 5; i++) expect(await clock.sync()).toBe(true);
    expect(clock.skew).toBe(0);
  });

  it('follows a clock stepped while the node runs, and only past the tolerance', async () => {
    let step = 0;
    const clock = new RedisClock(client(), () => Date.now() + step);
    await clock.sync();
    expect(clock.skew).toBe(0);
    step = 3 * CLOCK_TOLERANCE_MS;
    await clock.sync();
    expect(Math.abs(clock.now() - Date.now())).toBeLessThan(500);
    const taken = clock.skew;
    step += CLOCK_TOLERANCE_MS / 4;
    await clock.sync();
    expect(clock.skew).toBe(taken);
  });

  it("judges nothing by a sample across a step of the machine's clock", async () => {
    let calls = 0;
    // The machine's clock jumps a minute during the round trip: the answer's moment is unknown.
    const clock = new RedisClock(client(), () => Date.now() + (calls++ % 2 === 1 ? 60_000 : 0));
    expect(await clock.sync()).toBe(false);
    expect(clock.skew).toBe(0);
    expect(clock.judged).toBe(false);
  });

  it('judges nothing by a sample slower than ten seconds', async () => {
    // Both of the machine's clocks see eleven seconds pass during the round trip.
    let local = 0;
    let mono = 0;
    const clock = new RedisClock(
      client(),
      () => Date.now() + MONTH_MS + (local++ % 2 === 1 ? 11_000 : 0),
      undefined,
      () => performance.now() + (mono++ % 2 === 1 ? 11_000 : 0),
    );
    expect(await clock.sync()).toBe(false);
    expect(clock.judged).toBe(false);
  });

  it('keeps the closer of two slow samples, and a later one that cannot agree with it', async () => {
    let slowMs = 1_200;
    const clock = new RedisClock(
      answeringLate(() => slowMs),
      Date.now,
    );
    expect(await clock.sync()).toBe(true);
    const close = clock.skew;
    // Slower: placed less closely, and agreeing within both bounds: not taken.
    slowMs = 2_400;
    expect(await clock.sync()).toBe(true);
    expect(clock.skew).toBe(close);
  });

  it('judges by a slow sample, within half its round trip, until a fast one comes', async () => {
    let slowMs = 1_600;
    // Redis answers at once, and its answer takes slowMs to come back: a worst case, the
    // middle of the round trip then being slowMs / 2 off when TIME ran.
    const slow = answeringLate(() => slowMs);
    const doubts: number[] = [];
    const clock = new RedisClock(
      slow,
      () => Date.now() - MONTH_MS,
      (_, doubt) => doubts.push(doubt),
    );
    expect(await clock.sync()).toBe(true);
    expect(clock.judged).toBe(true);
    expect(doubts).toHaveLength(1);
    expect(doubts[0]).toBeGreaterThanOrEqual(slowMs / 2);
    // A month off before; now behind by the half round trip, and not past it.
    expect(Math.abs(clock.now() - Date.now() + slowMs / 2)).toBeLessThan(300);
    slowMs = 0;
    expect(await clock.sync()).toBe(true);
    expect(Math.abs(clock.now() - Date.now())).toBeLessThan(300);
    const fast = clock.skew;
    // Once a fast one was taken, a slow one is not.
    slowMs = 1_600;
    expect(await clock.sync()).toBe(false);
    expect(clock.skew).toBe(fast);
  });

  it('keeps a clock that agrees as it is through slow samples that cannot tell it is off', async () => {
    // Each placed within 1.2 s / 2 of TIME: the 600 ms they seem off by is their doubt.
    const clock = new RedisClock(
      answeringLate(() => 1_200),
      Date.now,
    );
    for (let i = 0; i < 3; i++) {
      expect(await clock.sync()).toBe(true);
      expect(clock.skew).toBe(0);
    }
  });

  it('tells, for a slow sample it keeps the clock by, how far off the clock may then be', async () => {
    // 2.4 s behind, answers 2 s late: the sample sees it 1.4 s off, within its doubt of 1 s and
    // the tolerance, so the clock is kept; the doubt told covers the 2.4 s it really is off.
    const doubts: number[] = [];
    const clock = new RedisClock(
      answeringLate(() => 2_000),
      () => Date.now() - 2_400,
      (_, doubt) => doubts.push(doubt),
    );
    expect(await clock.sync()).toBe(true);
    expect(clock.skew).toBe(0);
    expect(Math.abs(clock.now() - Date.now())).toBeLessThanOrEqual(doubts[0]! + 100);
  });

  it('keeps a clock that agrees as it is once a fast sample follows slow ones', async () => {
    let slowMs = 1_600;
    const slow = answeringLate(() => slowMs);
    const clock = new RedisClock(slow, () => Date.now() + CLOCK_TOLERANCE_MS / 2);
    expect(await clock.sync()).toBe(true);
    slowMs = 0;
    expect(await clock.sync()).toBe(true);
    expect(clock.skew).toBe(0);
  });

  it('tries again within a second until a sample is good enough to judge by', async () => {
    let calls = 0;
    // sync() reads the machine's clock twice: the first three samples' round trips take a
    // minute by it.
    const local = () => {
      const call = calls++;
      return Date.now() + MONTH_MS + (call % 2 === 1 && call < 6 ? 60_000 : 0);
    };
    const judged: number[] = [];
    const clock = new RedisClock(client(), local, (skew) => judged.push(skew));
    expect(await clock.sync()).toBe(false);
    expect(clock.judged).toBe(false);
    // Every minute once judged; every 50 ms till then.
    clock.start(60_000, undefined, 50);
    try {
      for (let i = 0; i < 100 && !clock.judged; i++) await sleep(20);
    } finally {
      clock.stop();
    }
    expect(clock.judged).toBe(true);
    expect(calls).toBe(8);
    expect(judged).toHaveLength(1);
    expect(Math.abs(judged[0]! + MONTH_MS)).toBeLessThan(1_000);
  });

  it("goes on by the monotonic clock when the machine's steps, and reads TIME again at once", async () => {
    let step = 0;
    const clock = new RedisClock(client(), () => Date.now() + step);
    expect(await clock.sync()).toBe(true);
    expect(clock.skew).toBe(0);
    // A day ahead between samples (NTP setting a clock that was wrong, say).
    step = 24 * 3600 * 1000;
    expect(Math.abs(clock.now() - Date.now())).toBeLessThan(500);
    // Whole milliseconds still: chats' times are stored.
    expect(Number.isInteger(clock.now())).toBe(true);
    for (let i = 0; i < 100 && clock.skew === 0; i++) await sleep(20);
    expect(clock.skew).toBeCloseTo(-step, -3);
    expect(Math.abs(clock.now() - Date.now())).toBeLessThan(500);
  });

  it('keeps its last offset when Redis does not answer', async () => {
    const c = client();
    const clock = new RedisClock(c, () => Date.now() + MONTH_MS);
    await clock.sync();
    const taken = clock.skew;
    c.disconnect();
    await expect(clock.sync()).rejects.toThrow();
    expect(clock.skew).toBe(taken);
  });
});

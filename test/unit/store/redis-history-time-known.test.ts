/**
 * A cluster node prunes history by age on Redis's clock, which it learns by reading TIME.
 * Until it has (Redis answered too slowly to judge by), its clock is its machine's, which
 * may be a month ahead: the store's own prune waits for the time to be known rather than
 * take every room's messages as a month old.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisHistoryStore } from '../../../src/store/redis-history.js';
import { useRedis, withoutRedis } from '../../helpers/redis.js';

const skip = withoutRedis();
const MONTH_MS = 30 * 24 * 3600 * 1000;

describe.skipIf(skip)('the Redis history store, before the time is known', () => {
  const redis = useRedis();
  const open: RedisHistoryStore[] = [];
  afterEach(async () => {
    for (const s of open.splice(0)) await s.close();
  });

  it('prunes nothing by age until the time is known, and by age after', async () => {
    let known = false;
    const store = new RedisHistoryStore({
      redis: redis.url,
      prefix: 'known:',
      retention: { maxMessages: 100, maxAgeMs: 3_600_000 },
      pruneIntervalMs: 20,
      now: () => Date.now() + MONTH_MS,
      timeKnown: () => known,
    });
    open.push(store);
    await store.append('lobby', { at: Date.now(), from: 'eve', msg: 'written just now' });
    // Some twenty of the timer's prunes would have run meanwhile.
    await sleep(400);
    expect((await store.read('lobby', { limit: 10 })).map((m) => m.msg)).toEqual([
      'written just now',
    ]);
    // The test's `now` stays a month ahead: known, the prune takes the message as old.
    known = true;
    for (let i = 0; i < 100 && (await store.read('lobby', { limit: 10 })).length > 0; i++) {
      await sleep(20);
    }
    expect(await store.read('lobby', { limit: 10 })).toEqual([]);
  });
});

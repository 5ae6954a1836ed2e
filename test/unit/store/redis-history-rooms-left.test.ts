/**
 * What the Redis history store keeps of rooms that lost their messages. A client walks
 * through rooms (JOIN_ROOM, one CHAT, PART, the next name): three requests, so at the
 * default flood limit one address's 128 connections leave a message in some 850 new
 * rooms a second. Redis's memory, which the whole cluster shares, must not grow with every
 * room ever written to: a room whose messages are gone (by age, or taken because more
 * rooms than `maxRooms` hold messages) is forgotten once no node asks about it or keeps it.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import {
  EMPTY_EPOCH_TTL_S,
  PRUNE_LUA,
  type RedisHistoryOptions,
  RedisHistoryStore,
  roomTag,
} from '../../../src/store/redis-history.js';
import { useRedis, withoutRedis } from '../../helpers/redis.js';

const skip = withoutRedis();

/** Rooms written to once. */
const ROOMS = 300;
/** Keys the store may keep in all once retention emptied them (a cache of some rooms). */
const KEYS_LEFT = ROOMS / 10;

const draft = (msg: string, at = 0) => ({ at, from: 'eve', msg });

describe.skipIf(skip)('the Redis history store, rooms that lost their messages', () => {
  const redis = useRedis();
  let prefixes = 0;
  const open: { store: RedisHistoryStore; client: Redis }[] = [];

  const setup = (options: Partial<RedisHistoryOptions> = {}) => {
    const prefix = `left${prefixes++}:`;
    const newStore = () =>
      new RedisHistoryStore({
        retention: { maxMessages: 100, maxAgeMs: 1_000 },
        pruneIntervalMs: 0,
        redis: redis.url,
        prefix,
        ...options,
      });
    const store = newStore();
    const client = new Redis(redis.url);
    open.push({ store, client });
    const keysOf = (room: string) => {
      const base = `${prefix}h:{r${roomTag(room)}}:`;
      return ['top', 'epoch', 'floor', 'base'].map((k) => base + k);
    };
    /** Each of the room's keys that exist: its milliseconds left, -1 for none. */
    const lives = async (room: string) => {
      const left: number[] = [];
      for (const key of keysOf(room)) {
        const ms = await client.pttl(key);
        if (ms !== -2) left.push(ms);
      }
      return left;
    };
    /** Another node's store on the same keys, which has seen nothing of any room. */
    const another = () => {
      const other = newStore();
      open.push({ store: other, client: new Redis(redis.url) });
      return other;
    };
    return { store, client, prefix, keysOf, lives, another };
  };

  afterEach(async () => {
    for (const { store, client } of open.splice(0)) {
      client.disconnect();
      await store.close();
    }
  });

  it('keeps nothing without expiry per room once its messages are gone', async () => {
    const { store, client, prefix } = setup();
    const rooms = Array.from({ length: ROOMS }, (_, i) => `walk-${i}`);
    for (const room of rooms) await store.append(room, draft('x'));
    await store.prune(10_000);
    for (const room of rooms.slice(0, 5)) {
      expect(await store.read(room, { limit: 10 })).toEqual([]);
    }
    const keys = await client.keys(`${prefix}*`);
    let lasting = 0;
    for (const key of keys) if ((await client.pttl(key)) === -1) lasting++;
    expect(
      lasting,
      `${lasting} keys without expiry (of ${keys.length}) for ${ROOMS} rooms with nothing stored`,
    ).toBeLessThan(KEYS_LEFT);
  });

  it('numbers on under its epoch if written to before it is forgotten, and keeps it for good', async () => {
    const { store, client, prefix, lives } = setup();
    const first = await store.append('r', draft('one'));
    await store.append('r', draft('two'));
    await store.prune(10_000);
    const left = await lives('r');
    expect(left.length).toBeGreaterThanOrEqual(2);
    for (const ms of left) expect(ms).toBeGreaterThan(0);
    for (const ms of left) expect(ms).toBeLessThanOrEqual(EMPTY_EPOCH_TTL_S * 1000);
    expect(await client.zcard(`${prefix}h:written`)).toBe(0);
    expect(await store.room('r')).toMatchObject({ epoch: first.epoch, top: 2, oldest: 3 });

    const next = await store.append('r', draft('three', 10_000));
    expect(next).toMatchObject({ epoch: first.epoch, message: { id: 3 } });
    expect(await lives('r')).toEqual(left.map(() => -1));
    expect(await client.zcard(`${prefix}h:written`)).toBe(1);
    expect((await store.read('r', { after: 0, limit: 10 })).map((m) => m.msg)).toEqual(['three']);
  });

  it('starts a forgotten room over with a new epoch', async () => {
    const { store, client, keysOf, lives } = setup();
    const first = await store.append('r', draft('one'));
    await store.prune(10_000);
    // What Redis does once the keys' time is up, without waiting for it.
    for (const key of keysOf('r')) await client.pexpire(key, 1);
    for (let i = 0; i < 200 && (await lives('r')).length > 0; i++) await sleep(5);
    expect(await lives('r')).toEqual([]);
    const room = await store.room('r');
    expect(room).toMatchObject({ top: 0, oldest: 1 });
    expect(room.epoch).not.toBe(first.epoch);
    expect(await store.append('r', draft('again', 10_000))).toMatchObject({
      epoch: room.epoch,
      message: { id: 1 },
    });
  });

  it('lengthens the life of all the keys of a room being forgotten when a node keeps it', async () => {
    const { store, client, keysOf, lives } = setup();
    await store.append('gone', draft('one'));
    await store.append('stays', draft('one', 5_000));
    await store.prune(5_500);
    for (const key of keysOf('gone')) await client.pexpire(key, 5_000);
    await store.keep(['gone', 'stays', 'never']);
    const left = await lives('gone');
    expect(left.length).toBeGreaterThanOrEqual(2);
    for (const ms of left) expect(ms).toBeGreaterThan(5_000);
    expect(await lives('stays')).toEqual((await lives('stays')).map(() => -1));
    expect(await lives('never')).toEqual([]);
    // Asking about it does the same.
    for (const key of keysOf('gone')) await client.pexpire(key, 5_000);
    await store.room('gone');
    for (const ms of await lives('gone')) expect(ms).toBeGreaterThan(5_000);
  });

  it('keeps the epoch a roll-back check rotates in a room being forgotten no longer than its top', async () => {
    const { store, client, keysOf, lives, another } = setup();
    const first = await store.append('r', draft('one'));
    await store.append('r', draft('two'));
    await store.prune(10_000);
    // Redis came back with a lower top than this node saw (a roll-back): the join's script
    // rotates the epoch, numbering on from the top (the base).
    store.seen('r', first.epoch, 5);
    const rotated = await store.room('r');
    expect(rotated.epoch).not.toBe(first.epoch);
    expect(rotated).toMatchObject({ top: 2, oldest: 3, base: 2 });
    // Still a room without messages: every key it has goes at one time.
    for (const ms of await lives('r')) expect(ms).toBeGreaterThan(0);
    // What Redis does once the keys' time is up, without waiting for it.
    for (const key of keysOf('r')) if ((await client.pttl(key)) > 0) await client.pexpire(key, 1);
    for (let i = 0; i < 200 && (await lives('r')).some((ms) => ms > 0); i++) await sleep(5);
    // A node that has seen nothing of the room (restarted meanwhile) must not number it
    // from 1 under the rotated epoch: its members take ids up to the base for never used,
    // and would skip those messages without being told.
    const fresh = another();
    const room = await fresh.room('r');
    expect(room.epoch).not.toBe(rotated.epoch);
    expect(room).toEqual({ epoch: room.epoch, top: 0, oldest: 1 });
  });

  it('gives every key of a room being forgotten one and the same time of expiry', async () => {
    const { store, client, keysOf } = setup();
    const rooms = Array.from({ length: 300 }, (_, i) => `walk-${i}`);
    for (const room of rooms) {
      await store.append(room, draft('x'));
      // All four keys there (values that change nothing: the lowest floor, no base).
      await client.mset(keysOf(room)[2]!, '1', keysOf(room)[3]!, '0');
    }
    /** Rooms whose keys do not all expire at the same millisecond. */
    const apart = async () => {
      const pipeline = client.pipeline();
      for (const room of rooms) for (const key of keysOf(room)) pipeline.pexpiretime(key);
      const times = (await pipeline.exec())!.map(([, t]) => t as number);
      const found: string[] = [];
      rooms.forEach((room, i) => {
        if (new Set(times.slice(i * 4, i * 4 + 4)).size > 1) found.push(room);
      });
      return found;
    };
    await store.prune(10_000);
    const found = await apart();
    // Renewed again and again, by the keepers of every node and by joins: each time, a top
    // that expires a millisecond before its epoch leaves a moment in which a join renews
    // that epoch alone, and its ids are given out again.
    for (let i = 0; i < 20; i++) {
      await store.keep(rooms);
      found.push(...(await apart()));
    }
    expect(found).toEqual([]);
  });

  it('takes every message of the rooms written to least recently past maxRooms', async () => {
    const { store, client, prefix, lives } = setup({
      retention: { maxMessages: 100, maxAgeMs: 0 },
      maxRooms: 5,
    });
    const written = `${prefix}h:written`;
    const rooms = Array.from({ length: 8 }, (_, i) => `room${i}`);
    const epochs = new Map<string, string>();
    for (const room of rooms) {
      epochs.set(room, (await store.append(room, draft(`in ${room}`))).epoch);
      // Redis's clock orders them: a few milliseconds apart.
      await sleep(3);
    }
    const check = async (emptied: string[]) => {
      for (const room of rooms) {
        const msgs = (await store.read(room, { after: 0, limit: 10 })).map((m) => m.msg);
        if (emptied.includes(room)) {
          expect([room, msgs]).toEqual([room, []]);
          expect(await store.room(room)).toMatchObject({
            epoch: epochs.get(room),
            top: 1,
            oldest: 2,
          });
          for (const ms of await lives(room)) expect(ms).toBeGreaterThan(0);
        } else {
          expect(msgs.length, room).toBeGreaterThan(0);
          for (const ms of await lives(room)) expect(ms).toBe(-1);
        }
      }
    };
    // Checked as each new room is written, not at the next prune.
    for (let i = 0; i < 400 && (await client.zcard(written)) > 5; i++) await sleep(5);
    await check(['room0', 'room1', 'room2']);
    expect(await client.zcard(written)).toBe(5);
    // Written to again (kept for good again): one room too many, checked at once too.
    expect(await store.append('room0', draft('again'))).toMatchObject({
      epoch: epochs.get('room0'),
      message: { id: 2 },
    });
    for (let i = 0; i < 400 && (await client.zcard(written)) > 5; i++) await sleep(5);
    await store.prune(1);
    await check(['room1', 'room2', 'room3']);
    expect(await client.zcard(written)).toBe(5);
  });

  it('checks maxRooms when a room being forgotten is written to again', async () => {
    const { store, client, prefix } = setup({
      retention: { maxMessages: 100, maxAgeMs: 0 },
      maxRooms: 2,
    });
    const written = `${prefix}h:written`;
    const settled = async () => {
      for (let i = 0; i < 400 && (await client.zcard(written)) > 2; i++) await sleep(5);
      return client.zcard(written);
    };
    for (const room of ['a', 'b', 'c']) {
      await store.append(room, draft(room));
      await sleep(3);
    }
    expect(await settled()).toBe(2);
    // A walk through a few more rooms than the limit comes back to each within two
    // minutes: every room it writes is one being forgotten, none new to Redis.
    for (const room of ['a', 'b', 'c', 'a', 'b', 'c']) {
      await store.append(room, draft(room));
      await sleep(3);
    }
    expect(await settled()).toBe(2);
  });

  it('leaves a room written to since it was chosen to lose its messages', async () => {
    const { store, client, prefix } = setup({ maxRooms: 1 });
    await store.append('r', draft('one'));
    const base = `${prefix}h:{r${roomTag('r')}}:`;
    const keys = ['msgs', 'cidz', 'floor', 'top', 'epoch', 'base'].map((k) => base + k);
    const written = `${prefix}h:written`;
    const score = await client.zscore(written, roomTag('r'));
    // As if the limit were below the one room (0 allowed), so that only the score decides.
    const evalPrune = (seen: string) =>
      client.eval(PRUNE_LUA, 7, ...keys, written, '', EMPTY_EPOCH_TTL_S, roomTag('r'), seen, 0);
    await evalPrune(`${Number(score) - 1}`);
    expect(await store.read('r', { after: 0, limit: 10 })).toHaveLength(1);
    await evalPrune(score!);
    expect(await store.read('r', { after: 0, limit: 10 })).toEqual([]);
    expect(await client.zscore(written, roomTag('r'))).toBeNull();
  });

  it("prunes by age out of memory while an earlier version's set of rooms is still there", async () => {
    const { store, client, prefix } = setup();
    await store.append('old', draft('one'));
    await store.append('new', draft('one'));
    // As an earlier version left it: a set of tags, without times. (A Redis upgraded from
    // it is likely full, as rooms written to were kept for good.)
    await client.zrem(`${prefix}h:written`, roomTag('old'));
    await client.sadd(`${prefix}h:rooms`, roomTag('old'));
    try {
      // Redis refuses a script's or command's write that may grow memory: pruning must not
      // need one first, or memory never comes back.
      await client.config('SET', 'maxmemory-policy', 'noeviction');
      await client.config('SET', 'maxmemory', '1');
      await store.prune(10_000).catch(() => {});
    } finally {
      await client.config('SET', 'maxmemory', '0');
    }
    for (const room of ['new', 'old']) {
      expect([room, await store.read(room, { after: 0, limit: 10 })]).toEqual([room, []]);
    }
  });

  it('leaves a room chosen to lose its messages when another node brought the rooms down to the limit meanwhile', async () => {
    const { store, client, prefix } = setup({ maxRooms: 2 });
    await store.append('a', draft('one'));
    await sleep(3);
    await store.append('b', draft('one'));
    const written = `${prefix}h:written`;
    // A node read 3 rooms and chose 'b' as the lowest after another node's prune of 'a':
    // its choice is stale, as 'b' is within the limit now.
    const base = `${prefix}h:{r${roomTag('b')}}:`;
    const keys = ['msgs', 'cidz', 'floor', 'top', 'epoch', 'base'].map((k) => base + k);
    const score = await client.zscore(written, roomTag('b'));
    await client.eval(
      PRUNE_LUA,
      7,
      ...keys,
      written,
      '',
      EMPTY_EPOCH_TTL_S,
      roomTag('b'),
      score!,
      2,
    );
    expect(await store.read('b', { after: 0, limit: 10 })).toHaveLength(1);
    expect(await client.zcard(written)).toBe(2);
  });

  it('prunes the rooms an earlier version recorded in a set', async () => {
    const { store, client, prefix, lives } = setup();
    await store.append('old', draft('one'));
    await store.append('young', draft('one', 9_500));
    // As an earlier version left them: a set of tags, without times.
    for (const room of ['old', 'young']) {
      await client.zrem(`${prefix}h:written`, roomTag(room));
      await client.sadd(`${prefix}h:rooms`, roomTag(room));
    }
    await store.prune(10_000);
    expect(await store.read('old', { after: 0, limit: 10 })).toEqual([]);
    for (const ms of await lives('old')) expect(ms).toBeGreaterThan(0);
    expect(await store.read('young', { after: 0, limit: 10 })).toHaveLength(1);
    expect(await client.exists(`${prefix}h:rooms`)).toBe(0);
    expect(await client.zrange(`${prefix}h:written`, '0', '-1')).toEqual([roomTag('young')]);
  });
});

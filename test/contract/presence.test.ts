import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisPresence } from '../../src/cluster/redis-presence.js';
import { agreeOnShards } from '../../src/cluster/shards.js';
import { parseMask } from '../../src/core/bans.js';
import { MemoryPresence, PresenceHub } from '../../src/core/memory-presence.js';
import {
  type Heartbeat,
  MAX_MOVES_FOLLOWED,
  MemberGone,
  MOVED_TTL_MS,
  type Presence,
  PresenceKeeper,
  ReleaseRetried,
} from '../../src/core/presence.js';
import { newSender, newToken, senderOf } from '../../src/core/resume-token.js';
import { useRedis, withoutRedis } from '../helpers/redis.js';
import { TcpRelay } from '../helpers/tcp-relay.js';
import { eventually, HEARTBEAT_MS, presenceContract, TIMEOUT_MS } from './presence.js';

presenceContract({
  name: 'memory',
  cluster() {
    const hub = new PresenceHub();
    return {
      node: (options) => new MemoryPresence({ ...options, hub }),
      dispose: () => {},
    };
  },
});

describe('MemoryPresence alone', () => {
  it('is registered from the start and never reaps or expires itself', async () => {
    const presence = new MemoryPresence();
    expect(presence.timeoutMs).toBe(Number.POSITIVE_INFINITY);
    expect(await presence.claim('1', 'ann', { ip: '127.0.0.1', port: 1 })).toBe(true);
    expect(await presence.join('1', 'lobby', 10)).toEqual({ ok: true, count: 1, name: 'lobby' });
    expect(await presence.reap()).toEqual([]);
    expect(await presence.heartbeat()).toEqual({ status: 'ok' });
  });
});

describe('MemoryPresence moves', () => {
  it('keeps at most MAX_MOVES_FOLLOWED move records for a member resumed in a loop', async () => {
    const hub = new PresenceHub();
    const [a, b] = [new MemoryPresence({ node: 'a', hub }), new MemoryPresence({ node: 'b', hub })];
    const addr = { ip: '127.0.0.1', port: 1 };
    await a.claim('0', 'ann', addr);
    await a.grant('0', 't0');
    for (let i = 1; i <= 40; i++) {
      expect(
        await (i % 2 === 1 ? b : a).takeOver(`t${i - 1}`, `${i}`, addr, `t${i}`),
      ).toBeDefined();
    }
    expect(hub.moved.size).toBe(MAX_MOVES_FOLLOWED);
    // The records kept are the ones a removal can still follow.
    expect((await a.successor('a', `${40 - MAX_MOVES_FOLLOWED}`))?.id).toBe('40');
    expect(await b.successor('b', `${39 - MAX_MOVES_FOLLOWED}`)).toBeUndefined();
  });
});

describe('MemoryPresence move records', () => {
  it('drops them once expired, with their per-member lists', async () => {
    let now = 0;
    const hub = new PresenceHub(() => now);
    const [a, b] = [new MemoryPresence({ node: 'a', hub }), new MemoryPresence({ node: 'b', hub })];
    const addr = { ip: '127.0.0.1', port: 1 };
    await a.claim('0', 'ann', addr);
    await a.grant('0', 't0');
    for (let i = 1; i <= 3; i++)
      await (i % 2 === 1 ? b : a).takeOver(`t${i - 1}`, `${i}`, addr, `t${i}`);
    await a.claim('10', 'bob', addr);
    await a.grant('10', 'u0');
    now = MOVED_TTL_MS;
    expect(await a.successor('a', '0')).toBeUndefined();
    await b.takeOver('u0', '11', addr, 'u1');
    expect([...hub.moved.keys()]).toEqual(['a:10']);
    expect([...hub.movesOf.keys()]).toEqual(['a:10']);
  });
});

/**
 * The refill after a restart (REFILL_MS) in the tests below, but those about it: short, so that
 * a node coming back after another's claim plays one slower than the refill.
 */
const SHORT_REFILL_MS = 200;

describe.skipIf(withoutRedis())('Redis', () => {
  const redis = useRedis();

  let clusters = 0;
  /** Every cluster is a prefix of its own on the one server. */
  const newPrefix = () => `p${++clusters}-${process.pid}:`;

  presenceContract({
    name: 'Redis',
    cluster() {
      const prefix = newPrefix();
      return {
        node: (options) => new RedisPresence({ ...options, redis: redis.url, prefix }),
        dispose: () => {},
      };
    },
  });

  describe('RedisPresence', () => {
    /**
     * The keys kept while a node is registered: the nodes' liveness, timeouts and last
     * heartbeat, the epoch and the join counter.
     */
    const LASTING = ['clock', 'epoch', 'nodes', 'seq', 'timeouts'];
    const cleanup: (() => unknown)[] = [];
    afterEach(async () => {
      for (const fn of cleanup.splice(0).reverse()) await fn();
    });
    const addr = (port: number) => ({ ip: '127.0.0.1', port });
    const ban = (mask: string, expires: number | null) => ({
      mask,
      by: 'op',
      reason: 'r',
      expires,
    });

    function node(
      prefix: string,
      name: string,
      url = redis.url,
      timeoutMs = TIMEOUT_MS,
      refillMs = SHORT_REFILL_MS,
    ): RedisPresence {
      const presence = new RedisPresence({ redis: url, prefix, node: name, timeoutMs, refillMs });
      cleanup.push(() => presence.close().catch(() => {}));
      return presence;
    }

    /** Retries while the connection comes back after a restart (bounded). */
    async function once<T>(operation: () => Promise<T>): Promise<T> {
      for (let attempt = 1; ; attempt++) {
        try {
          return await operation();
        } catch (error) {
          if (attempt >= 50) throw error;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    }

    /** Nodes by these names, each heartbeating once. */
    async function liveNodes<const N extends readonly string[]>(
      prefix: string,
      names: N,
      refillMs = SHORT_REFILL_MS,
    ): Promise<{ -readonly [K in keyof N]: RedisPresence }> {
      const nodes = names.map((name) => node(prefix, name, redis.url, TIMEOUT_MS, refillMs));
      for (const n of nodes) await n.heartbeat();
      return nodes as { -readonly [K in keyof N]: RedisPresence };
    }

    /**
     * Nodes by these names (liveNodes); ann is claimed on the first with token-1, taken over
     * on the second (token-2 next) and renamed "anna" there.
     */
    async function annMoved<const N extends readonly string[]>(
      prefix: string,
      names: N,
    ): Promise<{ -readonly [K in keyof N]: RedisPresence }> {
      const nodes = await liveNodes(prefix, names);
      const [a, b] = [nodes[0]!, nodes[1]!];
      await a.claim('1', 'ann', addr(1));
      await a.grant('1', 'token-1');
      await b.takeOver('token-1', '2', addr(2), 'token-2');
      expect(await b.rename('2', 'anna')).toBe(true);
      return nodes;
    }

    it('keeps its keys under the prefix, and none without an expiry once its members are gone', async () => {
      const prefix = newPrefix();
      const client = new Redis(redis.url, { protocol: 2 });
      cleanup.push(() => client.disconnect());
      const before = await client.dbsize();
      const a = node(prefix, 'a');
      await a.heartbeat();
      await a.claim('1', 'ann', addr(1));
      await a.join('1', 'caf\u00e9 {x}', 10);
      await a.join('1', 'lobby', 10);
      await a.grant('1', newToken(newSender()));
      const keys = await client.keys(`${prefix}*`);
      expect(await client.dbsize()).toBe(before + keys.length);
      expect(keys.every((k) => k.startsWith(`${prefix}{presence}:`))).toBe(true);
      await a.release('1');
      // What stays: the node's liveness and clock, the epoch and the join counter; and the release's
      // answer, should it be asked again, until it expires.
      const p = `${prefix}{presence}:`;
      expect((await client.keys(`${prefix}*`)).sort()).toEqual(
        [...LASTING, 'rl:a:1'].sort().map((k) => `${p}${k}`),
      );
      expect(await client.pttl(`${p}rl:a:1`)).toBeGreaterThan(0);
    });

    it('ranks rooms past its limit again, at most once a minute, when the ranking lost or kept rooms it should not (a build that kept none wrote)', async () => {
      const prefix = newPrefix();
      const client = new Redis(redis.url, { protocol: 2 });
      cleanup.push(() => client.disconnect());
      const [a] = await liveNodes(prefix, ['a']);
      for (let i = 1; i <= 7; i++) await a.claim(`${i}`, `m${i}`, addr(i));
      await a.join('1', 'first', 10);
      for (const i of [2, 3]) await a.join(`${i}`, 'busy', 10);
      for (const i of [4, 5, 6]) await a.join(`${i}`, 'big', 10);
      await a.join('7', 'last', 10);
      const ranked = async () => (await a.rooms(2)).map((r) => `${r.room}:${r.count}`);
      expect(await ranked()).toEqual(['big:3', 'busy:2']);
      const p = `${prefix}{presence}:`;
      // Lost: an older build made the rooms.
      await client.del(`${p}rc`);
      expect(await ranked()).toEqual(['big:3', 'busy:2']);
      // Kept too many: an older build emptied a room without taking it out. Within the minute
      // of the last rebuild, the first rooms made are ranked, as older builds did.
      await client.zadd(`${p}rc`, 2 ** 40, 'gone');
      expect(await ranked()).toEqual(['busy:2', 'first:1']);
      // The minute over, it is rebuilt.
      await client.del(`${p}rcb`);
      expect(await ranked()).toEqual(['big:3', 'busy:2']);
      expect(await client.zscore(`${p}rc`, 'gone')).toBeNull();
      expect(await client.pttl(`${p}rcb`)).toBeGreaterThan(0);
      // As many rooms as ranked, but not the same: an older build emptied busy and made new.
      // Counted from the rooms, busy is left out; ranked again within the minute, by the
      // first made; after it, by the ranking again.
      const tag = (room: string) => Buffer.from(room, 'utf8').toString('base64url');
      await client.del(`${p}r:${tag('busy')}`);
      await client.zrem(`${p}rooms`, tag('busy'));
      await client.hdel(`${p}rn`, tag('busy'));
      await client.zadd(`${p}rooms`, 1e6, tag('new'));
      for (const m of ['b:1', 'b:2', 'b:3', 'b:4'])
        await client.zadd(`${p}r:${tag('new')}`, 1e6, m);
      expect(await ranked()).toEqual(['big:3', 'first:1']);
      await client.del(`${p}rcb`);
      expect(await ranked()).toEqual(['new:4', 'big:3']);
      // An older build's join: counted as the room holds it, ranked where it was.
      await client.zadd(`${p}r:${tag('last')}`, 1e6, 'b:5');
      expect((await a.rooms(10)).map((r) => `${r.room}:${r.count}`)).toContain('last:2');
    });

    it('lists an identity only while a member holds it, whatever token it was granted or moved with', async () => {
      const prefix = newPrefix();
      const client = new Redis(redis.url, { protocol: 2 });
      cleanup.push(() => client.disconnect());
      const ids = `${prefix}{presence}:ids`;
      const [a, b] = await liveNodes(prefix, ['a', 'b']);
      await a.claim('1', 'ann', addr(1));
      // Granted one identity, then another; then taken over with a token of a third.
      await a.grant('1', newToken(newSender()));
      const token = newToken(newSender());
      await a.grant('1', token);
      expect(await client.hlen(ids)).toBe(1);
      const third = newToken(newSender());
      await b.takeOver(token, '2', addr(2), third);
      expect(await client.hvals(ids)).toEqual(['b:2']);
      await b.release('2');
      expect(await client.exists(ids)).toBe(0);
    });

    it('keeps at most MAX_MOVES_FOLLOWED move records for a member resumed in a loop, each expiring', async () => {
      const prefix = newPrefix();
      const client = new Redis(redis.url, { protocol: 2 });
      cleanup.push(() => client.disconnect());
      const [a, b] = await liveNodes(prefix, ['a', 'b']);
      await a.claim('0', 'ann', addr(1));
      await a.grant('0', 't0');
      for (let i = 1; i <= 40; i++) {
        expect(
          await (i % 2 === 1 ? b : a).takeOver(`t${i - 1}`, `${i}`, addr(1), `t${i}`),
        ).toBeDefined();
      }
      const moves = await client.keys(`${prefix}{presence}:mv:*`);
      expect(moves).toHaveLength(MAX_MOVES_FOLLOWED);
      expect((await a.successor('a', `${40 - MAX_MOVES_FOLLOWED}`))?.id).toBe('40');
      expect(await b.successor('b', `${39 - MAX_MOVES_FOLLOWED}`)).toBeUndefined();
      await a.release('40');
      // What stays once the member has gone expires on its own.
      const left = (await client.keys(`${prefix}*`)).filter(
        (k) => !LASTING.some((s) => k === `${prefix}{presence}:${s}`),
      );
      // The move records, the member's list of them, and the release's answer.
      expect(left.length).toBeLessThanOrEqual(MAX_MOVES_FOLLOWED + 2);
      for (const key of left) expect(await client.pttl(key)).toBeGreaterThan(0);
    });

    it('registers every member again when Redis restarts without persistence', async () => {
      const prefix = newPrefix();
      const [a, b] = await liveNodes(prefix, ['a', 'b']);
      await a.claim('1', 'ann', addr(1));
      await b.claim('1', 'bob', addr(2));
      await a.claim('2', 'al', addr(3));
      await a.join('1', 'lobby', 10);
      await b.join('1', 'lobby', 10);
      await a.join('2', 'lobby', 10);
      await a.join('1', 'side', 10);
      await a.rename('2', 'alf');

      await redis.restart();

      expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: [] });
      // Before b's heartbeat only a's members are back; someone takes b's nickname meanwhile.
      expect((await a.members('lobby')).map((m) => m.nickname)).toEqual(['ann', 'alf']);
      expect(await a.claim('9', 'BOB', addr(9))).toBe(true);
      expect(await once(() => b.heartbeat())).toEqual({ status: 'reset', lost: ['1'] });
      expect((await b.members('lobby')).map((m) => m.nickname)).toEqual(['ann', 'alf']);
      expect((await b.members('side')).map((m) => m.nickname)).toEqual(['ann']);
      expect((await b.find('bob'))?.id).toBe('9');
      expect(await b.claim('2', 'ann', addr(4))).toBe(false);
      expect(await a.heartbeat()).toEqual({ status: 'ok' });
      expect(await b.heartbeat()).toEqual({ status: 'ok' });
      // The lost member is not registered any more; the others work as before.
      expect(await b.release('1')).toEqual([]);
      expect(await a.release('1')).toEqual([
        { room: 'lobby', count: 1 },
        { room: 'side', count: 0 },
      ]);
    });

    it('after a restart, asks again at the next heartbeat for every member whose registration failed', async () => {
      const prefix = newPrefix();
      const client = new Redis(redis.url, { protocol: 2 });
      cleanup.push(() => client.disconnect());
      const a = new RedisPresence({ redis: client, prefix, node: 'a', timeoutMs: TIMEOUT_MS });
      cleanup.push(() => a.close().catch(() => {}));
      await a.heartbeat();
      await a.claim('1', 'ann', addr(1));
      await a.claim('2', 'bob', addr(2));
      await a.join('2', 'lobby', 10);
      await redis.restart();
      // The connection drops as one member is registered again (a reply lost on the way).
      const scripts = client as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
      const register = scripts.confabPresenceReregister!.bind(client);
      let failures = 1;
      scripts.confabPresenceReregister = (...args) =>
        failures-- > 0 ? Promise.reject(new Error('Connection is closed.')) : register(...args);
      await once(() => client.ping());
      await expect(a.heartbeat()).rejects.toThrow('Connection is closed.');
      expect(await a.heartbeat()).toEqual({ status: 'reset', lost: [] });
      expect(await a.heartbeat()).toEqual({ status: 'ok' });
      expect((await a.find('ann'))?.id).toBe('1');
      expect((await a.members('lobby')).map((m) => m.nickname)).toEqual(['bob']);
    });

    it('after a restart, the identity each member holds is registered again with its token', async () => {
      const prefix = newPrefix();
      const [a, b] = await liveNodes(prefix, ['a', 'b']);
      await a.claim('1', 'ann', addr(1));
      const ann = newToken(newSender());
      await a.grant('1', ann);
      // Taken over: the member registered again holds the identity of its later token.
      await b.claim('2', 'bob', addr(2));
      await b.grant('2', 'token-2');
      const bob = newToken(newSender());
      expect(await b.takeOver('token-2', '3', addr(3), bob)).toBeDefined();

      await redis.restart();

      const client = new Redis(redis.url, { protocol: 2 });
      cleanup.push(() => client.disconnect());
      const ids = `${prefix}{presence}:ids`;
      expect(await once(() => client.exists(ids))).toBe(0);
      expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: [] });
      expect(await once(() => b.heartbeat())).toEqual({ status: 'reset', lost: [] });
      expect((await client.hvals(ids)).sort()).toEqual(['a:1', 'b:3']);
      // Held again: refused to another member.
      await a.claim('4', 'cy', addr(4));
      expect(await a.grant('4', newToken(senderOf(ann)!))).toBe(false);
      expect(await a.grant('4', newToken(senderOf(bob)!))).toBe(false);
    });

    it('after a restart, a member registered again keeps the operator it proved', async () => {
      const prefix = newPrefix();
      const [a, b] = await liveNodes(prefix, ['a', 'b']);
      await a.claim('1', 'ann', addr(1));
      await a.grant('1', 'op-token');
      await a.operate('1', 'teacher');

      await redis.restart();

      expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: [] });
      expect(await once(() => b.heartbeat())).toEqual({ status: 'reset', lost: [] });
      expect(await b.takeOver('op-token', '2', addr(2), 'next')).toMatchObject({
        nickname: 'ann',
        operator: 'teacher',
      });
    });

    it('after a restart, ranks the rooms its members are registered into again', async () => {
      const prefix = newPrefix();
      const client = new Redis(redis.url, { protocol: 2 });
      cleanup.push(() => client.disconnect());
      const [a, b] = await liveNodes(prefix, ['a', 'b']);
      for (let i = 1; i <= 3; i++) await a.claim(`${i}`, `m${i}`, addr(i));
      await a.join('1', 'small', 10);
      for (const i of [2, 3]) await a.join(`${i}`, 'big', 10);

      await redis.restart();

      expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: [] });
      expect(await once(() => b.heartbeat())).toEqual({ status: 'reset', lost: [] });
      // Not rebuilt from the rooms: ranked as they were registered.
      await client.set(`${prefix}{presence}:rcb`, '1', 'PX', 60_000);
      expect((await b.rooms(1)).map((r) => `${r.room}:${r.count}`)).toEqual(['big:2']);
    });

    describe('while the nodes register their members again after a restart (the refill)', () => {
      const REFILL = 1_500;
      /** Runs `fn` once `ms` have passed, while the caller awaits something else. */
      const later = <T>(ms: number, fn: () => Promise<T>) =>
        new Promise<T>((resolve, reject) => {
          setTimeout(() => fn().then(resolve, reject), ms);
        });
      /**
       * Redis restarts empty and `first` finds so (the refill starts); `asked` runs on it while
       * `late` comes back 300 ms after. What `asked` answered, and `late`'s heartbeat.
       */
      async function askedBeforeBack<T>(
        first: RedisPresence,
        late: RedisPresence,
        asked: () => Promise<T>,
      ): Promise<[T, Heartbeat]> {
        await redis.restart();
        expect(await once(() => first.heartbeat())).toEqual({ status: 'reset', lost: [] });
        return Promise.all([asked(), later(300, () => once(() => late.heartbeat()))]);
      }

      it('a resume waits for the node of its member, then takes it over', async () => {
        const prefix = newPrefix();
        const [a, b] = await liveNodes(prefix, ['a', 'b'], REFILL);
        await a.claim('1', 'ann', addr(1));
        await a.join('1', 'lobby', 10);
        await a.grant('1', 'token-1');

        const [taken, beat] = await askedBeforeBack(b, a, () =>
          b.takeOver('token-1', '2', addr(2), 'token-2'),
        );
        expect(beat).toEqual({ status: 'reset', lost: [] });
        expect(taken).toMatchObject({ node: 'a', id: '1', nickname: 'ann' });
        expect((await b.members('lobby')).map((m) => `${m.node}:${m.id}`)).toEqual(['b:2']);
      });

      it("a claim of a nickname waits, and finds it taken once its member's node is back", async () => {
        const prefix = newPrefix();
        const [a, b] = await liveNodes(prefix, ['a', 'b'], REFILL);
        await a.claim('1', 'ann', addr(1));

        const [claimed, beat] = await askedBeforeBack(b, a, () => b.claim('2', 'ANN', addr(2)));
        expect(claimed).toBe(false);
        // ann kept her nickname: not closed for it.
        expect(beat).toEqual({ status: 'reset', lost: [] });
        expect(await b.find('ann')).toMatchObject({ node: 'a', id: '1' });
        // A free nickname is claimed once the refill is over, and so is a rename to one.
        expect(await b.claim('2', 'bob', addr(2))).toBe(true);
        expect(await b.rename('2', 'ANN')).toBe(false);
        expect(await b.rename('2', 'bo')).toBe(true);
      });

      /** Nodes a and b, with ann on a and bob on b in the lobby. */
      async function annAndBobInTheLobby(): Promise<[RedisPresence, RedisPresence]> {
        const [a, b] = await liveNodes(newPrefix(), ['a', 'b'], REFILL);
        await a!.claim('1', 'ann', addr(1));
        await a!.join('1', 'lobby', 10);
        await b!.claim('1', 'bob', addr(2));
        await b!.join('1', 'lobby', 10);
        return [a!, b!];
      }

      it("a read of a room's members waits, and lists those of a node back during it", async () => {
        const [a, b] = await annAndBobInTheLobby();

        const [read, beat] = await askedBeforeBack(b, a, () => b.members('lobby'));
        expect(beat).toEqual({ status: 'reset', lost: [] });
        expect(read.map((m) => m.nickname).sort()).toEqual(['ann', 'bob']);
      });

      it("a read of a room's members before any node registered again waits for them", async () => {
        const [a, b] = await annAndBobInTheLobby();

        await redis.restart();
        // Asked of an empty Redis (as a read sent during the outage is, once it is back).
        const read = b.members('lobby');
        expect(await later(300, () => once(() => b.heartbeat()))).toEqual({
          status: 'reset',
          lost: [],
        });
        await later(300, () => once(() => a.heartbeat()));
        expect((await read).map((m) => m.nickname).sort()).toEqual(['ann', 'bob']);
      });

      it('a lookup of a nickname (a whisper, a KICK) waits, and finds its holder once back', async () => {
        const prefix = newPrefix();
        const [a, b] = await liveNodes(prefix, ['a', 'b'], REFILL);
        await a.claim('1', 'ann', addr(1));

        const [found] = await askedBeforeBack(b, a, () => b.find('ANN'));
        expect(found).toMatchObject({ node: 'a', id: '1', nickname: 'ann' });
        // Nobody by a name is answered once the refill is over.
        expect(await b.find('bob')).toBeUndefined();
      });

      it('a rename to a nickname waits, and finds it taken once its holder is back', async () => {
        const prefix = newPrefix();
        const [a, b] = await liveNodes(prefix, ['a', 'b'], REFILL);
        await a.claim('1', 'ann', addr(1));
        await b.claim('1', 'bob', addr(2));

        const [renamed, beat] = await askedBeforeBack(b, a, () => b.rename('1', 'ann'));
        expect(renamed).toBe(false);
        expect(beat).toEqual({ status: 'reset', lost: [] });
      });

      it('a join waits, and finds the room full once its members are back', async () => {
        const prefix = newPrefix();
        const [a, b] = await liveNodes(prefix, ['a', 'b'], REFILL);
        await a.claim('1', 'ann', addr(1));
        await a.join('1', 'side', 2);
        await b.claim('1', 'bob', addr(2));

        const [joined] = await askedBeforeBack(b, a, () => b.join('1', 'side', 1));
        expect(joined).toEqual({ ok: false, reason: 'full' });
        expect(await b.count('side')).toBe(1);
        // A room with space is joined once the refill is over.
        expect(await b.join('1', 'side', 2)).toMatchObject({ ok: true, count: 2 });
      });

      it('a spent token waits out the refill, and the identity it names is then refused', async () => {
        const prefix = newPrefix();
        const [a, b] = await liveNodes(prefix, ['a', 'b'], REFILL);
        await a.claim('1', 'ann', addr(1));
        const first = newToken(newSender());
        const sender = senderOf(first)!;
        await a.grant('1', first);
        // Resumed on b: the first token is spent, the member holds the identity with the next.
        expect(await b.takeOver(first, '2', addr(2), newToken(sender))).toBeDefined();
        // a has heard of it: it registers only b's copy again.
        expect(await a.heartbeat()).toEqual({ status: 'ok', gone: ['1'] });
        await a.claim('3', 'cy', addr(3));

        await redis.restart();

        expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: [] });
        const back = later(300, () => once(() => b.heartbeat()));
        const taken = await a.takeOver(first, '4', addr(4), newToken(sender));
        // What the connection presenting it does next (connectInCluster's grant): refused.
        const granted = await a.grant('3', newToken(sender));
        await back;
        expect(taken).toBeUndefined();
        expect(granted).toBe(false);
      });

      it('starts no second refill for a node whose reset comes after it ended', async () => {
        const prefix = newPrefix();
        const client = new Redis(redis.url, { protocol: 2 });
        cleanup.push(() => client.disconnect());
        const refill = `${prefix}{presence}:refill`;
        const [a, b] = await liveNodes(prefix, ['a', 'b'], 300);
        await b.claim('1', 'bob', addr(1));

        await redis.restart();

        expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: [] });
        expect(await client.exists(refill)).toBe(1);
        // Over: a's claims are answered as before the restart, not held for b.
        expect(await a.claim('1', 'BOB', addr(2))).toBe(true);
        expect(await client.exists(refill)).toBe(0);
        expect(await once(() => b.heartbeat())).toEqual({ status: 'reset', lost: ['1'] });
        expect(await client.exists(refill)).toBe(0);
      });

      it('does not register a member again into a room others filled after the refill ended', async () => {
        const prefix = newPrefix();
        const [a, b] = await liveNodes(prefix, ['a', 'b'], 300);
        await b.claim('1', 'bob', addr(1));
        await b.join('1', 'lobby', 2);
        await b.claim('2', 'bea', addr(2));
        await b.join('2', 'lobby', 2);
        await b.join('2', 'side', 2);

        await redis.restart();

        // b is away past the refill; meanwhile a fills the lobby but not "side".
        expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: [] });
        await a.claim('1', 'ann', addr(3));
        // Answered once the refill is over.
        expect(await a.join('1', 'lobby', 2)).toMatchObject({ ok: true, count: 1 });
        await a.claim('2', 'al', addr(4));
        expect(await a.join('2', 'lobby', 2)).toMatchObject({ ok: true, count: 2 });
        const capacities = new Map([
          ['lobby', 2],
          ['side', 2],
        ]);
        expect(await once(() => b.heartbeat((room) => capacities.get(room)))).toEqual({
          status: 'reset',
          lost: ['1', '2'],
          crowded: ['1', '2'],
        });
        expect((await a.members('lobby')).map((m) => m.nickname)).toEqual(['ann', 'al']);
        expect(await a.members('side')).toEqual([]);
        // Not registered: their nicknames are free.
        expect(await a.find('bob')).toBeUndefined();
        // With the room not full, a member comes back as before.
        expect(await a.leave('2', 'lobby')).toBe(1);
        await b.claim('3', 'cy', addr(5));
        await b.join('3', 'lobby', 2);
        await redis.restart();
        expect(await once(() => b.heartbeat((room) => capacities.get(room)))).toEqual({
          status: 'reset',
          lost: [],
        });
        expect((await b.members('lobby')).map((m) => m.nickname)).toEqual(['cy']);
      });

      it('registers members again over a capacity during the refill, and counts none against itself after it', async () => {
        const prefix = newPrefix();
        const client = new Redis(redis.url, { protocol: 2 });
        cleanup.push(() => client.disconnect());
        const [a] = await liveNodes(prefix, ['a'], 300);
        const b = new RedisPresence({
          redis: client,
          prefix,
          node: 'b',
          timeoutMs: TIMEOUT_MS,
          refillMs: 300,
        });
        cleanup.push(() => b.close().catch(() => {}));
        await b.heartbeat();
        await b.claim('1', 'bob', addr(1));
        await b.join('1', 'lobby', 5);
        await b.claim('2', 'bea', addr(2));
        await b.join('2', 'lobby', 5);
        await redis.restart();
        // The capacity is lower now (a reload, or another node's setting): within the refill,
        // both members were in the room before, and come back to it.
        expect(await once(() => b.heartbeat(() => 1))).toEqual({ status: 'reset', lost: [] });
        expect((await b.members('lobby')).map((m) => m.nickname)).toEqual(['bob', 'bea']);

        await redis.restart();
        expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: [] });
        await a.claim('9', 'ann', addr(9));
        // Answered once the refill is over.
        expect(await a.join('9', 'side', 5)).toMatchObject({ ok: true });
        // Late: bob is registered again and bea's registration fails on the way, so both are
        // asked again at the next heartbeat, bob already in the lobby at its capacity.
        const scripts = client as unknown as Record<
          string,
          (...args: unknown[]) => Promise<unknown>
        >;
        const register = scripts.confabPresenceReregister!.bind(client);
        let calls = 0;
        scripts.confabPresenceReregister = (...args) =>
          ++calls === 2 ? Promise.reject(new Error('Connection is closed.')) : register(...args);
        await once(() => client.ping());
        await expect(b.heartbeat(() => 1)).rejects.toThrow('Connection is closed.');
        expect(await b.heartbeat(() => 1)).toEqual({
          status: 'reset',
          lost: ['2'],
          crowded: ['2'],
        });
        expect((await a.members('lobby')).map((m) => m.nickname)).toEqual(['bob']);
      });

      it('takes nothing over for a resume no longer wanted while it waits', async () => {
        const prefix = newPrefix();
        const [a, b] = await liveNodes(prefix, ['a', 'b'], REFILL);
        await a.claim('1', 'ann', addr(1));
        await a.grant('1', 'token-1');

        await redis.restart();

        expect(await once(() => b.heartbeat())).toEqual({ status: 'reset', lost: [] });
        let wanted = true;
        const taking = b.takeOver('token-1', '2', addr(2), 'token-2', () => wanted);
        await new Promise((resolve) => setTimeout(resolve, 100));
        wanted = false;
        expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: [] });
        expect(await taking).toBeUndefined();
        expect(await b.find('ann')).toMatchObject({ node: 'a', id: '1' });
        // The token still takes the member over for a connection that wants it.
        expect(await b.takeOver('token-1', '3', addr(3), 'token-3')).toMatchObject({ id: '1' });
      });

      it('asks again for a takeover whose reply was lost while it waited, and resumes', async () => {
        const prefix = newPrefix();
        const relay = await TcpRelay.start(redis.port);
        cleanup.push(() => relay.close());
        const a = node(prefix, 'a', redis.url, TIMEOUT_MS, REFILL);
        const b = node(prefix, 'b', relay.redisUrl, TIMEOUT_MS, REFILL);
        await a.heartbeat();
        await b.heartbeat();
        await a.claim('1', 'ann', addr(1));
        await a.grant('1', 'token-1');

        await redis.restart();

        expect(await once(() => b.heartbeat())).toEqual({ status: 'reset', lost: [] });
        const taking = b.takeOver('token-1', '2', addr(2), 'token-2');
        await new Promise((resolve) => setTimeout(resolve, 300));
        // Once a has registered ann again, the next time b asks Redis moves the member, and
        // the reply (the first to b that names ann) is lost. Armed before a's heartbeat: b
        // asks again every half second at most, and may do so as soon as that has run.
        const lost = relay.arm('ann', 'reset', { direction: 'down' });
        expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: [] });
        expect(await taking).toMatchObject({ node: 'a', id: '1', nickname: 'ann' });
        await lost;
        expect(await a.find('ann')).toMatchObject({ node: 'b', id: '2' });
      });

      it('starts at a reset, and each reset within it lengthens it; a new cluster, and nodes already back, wait for nothing', async () => {
        const prefix = newPrefix();
        const client = new Redis(redis.url, { protocol: 2 });
        cleanup.push(() => client.disconnect());
        const refill = `${prefix}{presence}:refill`;
        const [a, b] = await liveNodes(prefix, ['a', 'b'], REFILL);
        expect(await client.exists(refill)).toBe(0);
        await a.claim('1', 'ann', addr(1));

        await redis.restart();

        expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: [] });
        const ttl = await client.pttl(refill);
        expect(ttl).toBeGreaterThan(0);
        expect(ttl).toBeLessThanOrEqual(REFILL);
        // Another node's reset within it gives it its length again, for that node's members.
        await new Promise((resolve) => setTimeout(resolve, 400));
        expect(await once(() => b.heartbeat())).toEqual({ status: 'reset', lost: [] });
        expect(await client.pttl(refill)).toBeGreaterThan(ttl - 200);
        // Held nicknames and registered tokens are answered at once.
        expect(await b.claim('2', 'ann', addr(2))).toBe(false);
        expect(await client.exists(refill)).toBe(1);
      });
    });

    it('after a restart, a room its members were registered in again keeps the name it was made with', async () => {
      const prefix = newPrefix();
      const [a, b] = await liveNodes(prefix, ['a', 'b']);
      await a.claim('1', 'ann', addr(1));
      await b.claim('1', 'bob', addr(2));
      expect(await a.join('1', 'physics', 10, 'Physics')).toMatchObject({ name: 'Physics' });

      await redis.restart();

      expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: [] });
      expect(await once(() => b.heartbeat())).toEqual({ status: 'reset', lost: [] });
      // Node a shows the room as "Physics" still: a node new to it must show it so too.
      expect(await b.join('1', 'physics', 10, 'PHYSICS')).toEqual({
        ok: true,
        count: 2,
        name: 'Physics',
      });
      expect((await b.rooms(10)).map((r) => r.name)).toEqual(['Physics']);
    });

    it('after a restart, a member taken over just before it comes back once: the later copy, with the later token', async () => {
      const prefix = newPrefix();
      const [a, b, c] = await liveNodes(prefix, ['a', 'b', 'c']);
      await a.claim('1', 'ann', addr(1));
      await a.join('1', 'lobby', 10);
      await a.grant('1', 'token-1');
      // Taken over on b; a has not heard of it yet when Redis restarts empty.
      expect((await b.takeOver('token-1', '2', addr(2), 'token-2'))?.id).toBe('1');

      await redis.restart();

      // a registers its copy first: it stands until b registers the later one.
      expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: [] });
      expect(await once(() => b.heartbeat())).toEqual({
        status: 'reset',
        lost: [],
        displaced: [{ node: 'a', id: '1' }],
      });
      expect(await c.heartbeat()).toEqual({ status: 'reset', lost: [] });
      expect(await c.find('ann')).toMatchObject({ node: 'b', id: '2' });
      expect((await c.members('lobby')).map((m) => `${m.node}:${m.id}`)).toEqual(['b:2']);
      // The used token stays used; the later one works, once.
      expect(await c.takeOver('token-1', '3', addr(3), 'x')).toBeUndefined();
      expect(await a.release('1')).toEqual([]);
      expect((await c.takeOver('token-2', '4', addr(4), 'token-3'))?.node).toBe('b');
    });

    it('after a restart, an earlier copy of a member that renamed since is not registered again', async () => {
      const prefix = newPrefix();
      const [a, b] = await annMoved(prefix, ['a', 'b']);

      await redis.restart();

      // The later copy first: the earlier one, under a name now free, finds it and is lost.
      expect(await once(() => b.heartbeat())).toEqual({ status: 'reset', lost: [] });
      expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: ['1'] });
      expect(await a.find('ann')).toBeUndefined();
      expect(await a.takeOver('token-1', '3', addr(3), 'x')).toBeUndefined();
      expect((await a.takeOver('token-2', '4', addr(4), 'token-3'))?.nickname).toBe('anna');
    });

    it('after a restart, the earlier copy of a member goes even when the later one lost its new name meanwhile', async () => {
      const prefix = newPrefix();
      const [a, b] = await annMoved(prefix, ['a', 'b']);

      await redis.restart();

      // The earlier copy first, then someone takes the later copy's name before b is back.
      expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: [] });
      expect(await a.claim('9', 'anna', addr(9))).toBe(true);
      expect(await once(() => b.heartbeat())).toEqual({
        status: 'reset',
        lost: ['2'],
        displaced: [{ node: 'a', id: '1' }],
      });
      // Neither copy stays: the used token does not work a second time.
      expect(await b.find('ann')).toBeUndefined();
      expect(await b.takeOver('token-1', '3', addr(3), 'x')).toBeUndefined();
      expect(await b.takeOver('token-2', '4', addr(4), 'y')).toBeUndefined();
      expect((await b.find('anna'))?.id).toBe('9');
    });

    it('after a restart, an earlier copy registering after the later one left is refused too', async () => {
      const prefix = newPrefix();
      const [a, b] = await annMoved(prefix, ['a', 'b']);

      await redis.restart();

      // The later copy comes back, and leaves; the earlier one must not come back after it.
      expect(await once(() => b.heartbeat())).toEqual({ status: 'reset', lost: [] });
      await b.release('2');
      expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: ['1'] });
      expect(await a.find('ann')).toBeUndefined();
      expect(await a.takeOver('token-1', '3', addr(3), 'x')).toBeUndefined();
    });

    /**
     * ann claimed on a (a timeout ten times b's) and taken over on b, a not told; Redis
     * restarts empty and b registers its copy again. `later` makes the later copy leave
     * (from b or elsewhere); past twice b's timeout, within a's, a comes back: its earlier
     * copy must be refused.
     */
    async function earlierCopyBackLate(
      later: (b: RedisPresence, prefix: string) => Promise<void>,
    ): Promise<void> {
      const prefix = newPrefix();
      const a = node(prefix, 'a', redis.url, 10 * TIMEOUT_MS);
      const b = node(prefix, 'b');
      await a.heartbeat();
      await b.heartbeat();
      await a.claim('1', 'ann', addr(1));
      await a.grant('1', 'token-1');
      await b.takeOver('token-1', '2', addr(2), 'token-2');

      await redis.restart();

      expect(await once(() => b.heartbeat())).toEqual({ status: 'reset', lost: [] });
      await later(b, prefix);
      await new Promise((resolve) => setTimeout(resolve, 3 * TIMEOUT_MS));
      expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: ['1'] });
      expect(await a.find('ann')).toBeUndefined();
    }

    it('after a restart, an earlier copy is refused on a node of a longer timeout than the later copy’s, come back after twice the shorter', async () => {
      await earlierCopyBackLate((b) => b.release('2').then(() => {}));
    });

    it('after a restart, a resume on a node started since keeps the latest copy recorded as long as before', async () => {
      await earlierCopyBackLate(async (_b, prefix) => {
        // c has heard of no timeout longer than its own and b's.
        const c = node(prefix, 'c');
        await c.heartbeat();
        expect((await c.takeOver('token-2', '3', addr(3), 'token-3'))?.node).toBe('b');
        await c.release('3');
      });
    });

    it('after a restart, keeps a lineage by the timeouts of registered nodes, not one an older version’s reap left', async () => {
      const prefix = newPrefix();
      const p = `${prefix}{presence}:`;
      const client = new Redis(redis.url, { protocol: 2 });
      cleanup.push(() => client.disconnect());
      await client.zadd(`${p}timeouts`, 3_600_000, 'gone');
      const [a, b] = await liveNodes(prefix, ['a', 'b']);
      expect(await client.zscore(`${p}timeouts`, 'gone')).toBeNull();
      await a.claim('1', 'ann', addr(1));
      await a.grant('1', 'token-1');
      await b.takeOver('token-1', '2', addr(2), 'token-2');

      await redis.restart();

      expect(await once(() => b.heartbeat())).toEqual({ status: 'reset', lost: [] });
      const ttl = await client.pttl(`${p}l:a:1`);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(2 * TIMEOUT_MS);
    });

    it('after a restart, a copy a resume moved meanwhile still counts as the latest', async () => {
      const prefix = newPrefix();
      const [a, b, c] = await annMoved(prefix, ['a', 'b', 'c']);

      await redis.restart();

      expect(await once(() => a.heartbeat())).toEqual({ status: 'reset', lost: [] });
      expect(await once(() => c.heartbeat())).toEqual({ status: 'reset', lost: [] });
      // a's copy is taken over before b is back: as late as b's, and registered first.
      expect((await c.takeOver('token-1', '3', addr(3), 'token-3'))?.node).toBe('a');
      expect(await once(() => b.heartbeat())).toEqual({ status: 'reset', lost: ['2'] });
      expect(await b.find('anna')).toBeUndefined();
      expect(await b.takeOver('token-2', '4', addr(4), 'x')).toBeUndefined();
      expect((await b.find('ann'))?.node).toBe('c');
    });

    it('leaves no key without an expiry when a build that knows no lineage or identities removes a member', async () => {
      const prefix = newPrefix();
      const client = new Redis(redis.url, { protocol: 2 });
      cleanup.push(() => client.disconnect());
      const [a, b] = await liveNodes(prefix, ['a', 'b']);
      await a.claim('1', 'ann', addr(1));
      await a.grant('1', 'token-1');
      const ann = newSender();
      await b.takeOver('token-1', '2', addr(2), newToken(ann));
      await a.claim('3', 'bob', addr(3));
      // What the previous build's release does: the member's keys, and nothing else.
      const p = `${prefix}{presence}:`;
      for (const [n, id] of [
        ['b', '2'],
        ['a', '3'],
      ] as const) {
        const [key, tok] = await client.hmget(`${p}m:${n}:${id}`, 'key', 'tok');
        await client.hdel(`${p}nicks`, key!);
        await client.zrem(`${p}n:${n}`, id);
        await client.del(`${p}m:${n}:${id}`, `${p}mr:${n}:${id}`, `${p}t:${tok}`);
      }
      // The identity it left listed is held by nobody: granted to the next member asking,
      // and gone with it.
      await a.claim('5', 'cy', addr(5));
      expect(await a.grant('5', newToken(ann))).toBe(true);
      await a.release('5');
      for (const key of await client.keys(`${p}*`)) {
        if (LASTING.some((k) => key === `${p}${k}`)) continue;
        expect(await client.pttl(key), key).toBeGreaterThan(0);
      }
    });

    /** Nodes a and b, b through a relay (so its replies can be held back or cut), beaten once. */
    async function relayedPair(): Promise<{ relay: TcpRelay; a: RedisPresence; b: RedisPresence }> {
      const prefix = newPrefix();
      const relay = await TcpRelay.start(redis.port);
      cleanup.push(() => relay.close());
      const a = node(prefix, 'a');
      const b = node(prefix, 'b', relay.redisUrl);
      await a.heartbeat();
      await b.heartbeat();
      return { relay, a, b };
    }

    /** What `work` rejected with, or undefined once it resolved. */
    const failure = (work: Promise<unknown>): Promise<unknown> =>
      work.then(
        () => undefined,
        (e: unknown) => e,
      );

    /**
     * Node b through a relay, with bob in two rooms; ann on a. Then `remove` on b, whose
     * answer is held back once Redis applied it, and the connection dropped: the error.
     */
    async function answerLost<T>(
      remove: (b: RedisPresence) => Promise<T>,
    ): Promise<{ relay: TcpRelay; a: RedisPresence; b: RedisPresence; error: unknown }> {
      const { relay, a, b } = await relayedPair();
      await b.claim('1', 'bob', addr(1));
      await b.join('1', 'lobby', 10);
      await b.join('1', 'side', 10);
      await a.claim('2', 'ann', addr(2));
      await a.join('2', 'lobby', 10);
      relay.holdReplies();
      const removed = remove(b);
      await eventually(async () => (await a.find('bob')) === undefined);
      relay.cut();
      const error = await failure(removed);
      return { relay, a, b, error };
    }

    const BOB_LEFT = [
      { room: 'lobby', count: 1 },
      { room: 'side', count: 0 },
    ];

    it('answers a release whose reply was lost after its next heartbeat, as Redis applied it, once', async () => {
      const { b, error } = await answerLost((b) => b.release('1'));
      expect(error).toBeInstanceOf(ReleaseRetried);
      const retried = (error as ReleaseRetried).retried;
      await once(() => b.heartbeat());
      expect(await retried).toEqual(BOB_LEFT);
      expect(await b.release('1')).toEqual([]);
      expect(await b.expel('1')).toBeUndefined();
    });

    it('answers an expel whose reply was lost with the rooms, not as a member already gone', async () => {
      const { b, error } = await answerLost((b) => b.expel('1'));
      expect(error).toBeInstanceOf(ReleaseRetried);
      const retried = (error as ReleaseRetried).retried;
      // The member's own release, asked meanwhile, waits for the retry and finds nothing.
      const own = b.release('1');
      await once(() => b.heartbeat());
      expect(await retried).toEqual(BOB_LEFT);
      expect(await own).toEqual([]);
    });

    it('answers a reap whose reply was lost at the next reap, once', async () => {
      const prefix = newPrefix();
      const relay = await TcpRelay.start(redis.port);
      cleanup.push(() => relay.close());
      const dead = node(prefix, 'dead');
      const reaper = node(prefix, 'reaper', relay.redisUrl);
      await dead.heartbeat();
      await reaper.heartbeat();
      await dead.claim('1', 'dora', addr(1));
      await dead.join('1', 'lobby', 10);
      // The dead node beats no more; the first reply that names dora is the reap's, lost.
      const lost = relay.arm('dora', 'drop', { direction: 'down' });
      let failed = false;
      const deadline = Date.now() + 10 * TIMEOUT_MS;
      while (!failed && Date.now() < deadline) {
        await once(() => reaper.heartbeat());
        try {
          expect(await reaper.reap()).toEqual([]);
        } catch {
          failed = true;
        }
        await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_MS));
      }
      expect(failed).toBe(true);
      await lost;
      // Gone from Redis already: the next reap tells it all the same, and no later one.
      expect(await once(() => reaper.find('dora'))).toBeUndefined();
      const again = await once(() => reaper.reap());
      expect(again).toMatchObject([
        { node: 'dead', members: [{ id: '1', nickname: 'dora', rooms: [{ count: 0 }] }] },
      ]);
      expect(await reaper.reap()).toEqual([]);
    });

    it('answers no reap twice: one that failed before it reached Redis asks for nothing the last answered reap had', async () => {
      const prefix = newPrefix();
      const client = new Redis(redis.url, { protocol: 2 });
      cleanup.push(() => client.disconnect());
      const dead = node(prefix, 'dead');
      const reaper = new RedisPresence({
        redis: client,
        prefix,
        node: 'reaper',
        timeoutMs: TIMEOUT_MS,
      });
      cleanup.push(() => reaper.close().catch(() => {}));
      await dead.heartbeat();
      await reaper.heartbeat();
      await dead.claim('1', 'dora', addr(1));
      await eventually(async () => {
        await reaper.heartbeat();
        return (await reaper.reap()).length > 0;
      });
      const scripts = client as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
      const reap = scripts.confabPresenceReap!.bind(client);
      scripts.confabPresenceReap = () => Promise.reject(new Error('Connection is closed.'));
      await expect(reaper.reap()).rejects.toThrow('Connection is closed.');
      scripts.confabPresenceReap = reap;
      expect(await reaper.reap()).toEqual([]);
    });

    it('asks a lost release again when the node closes, before the close removes what is left', async () => {
      const { b, error } = await answerLost((b) => b.release('1'));
      const retried = (error as ReleaseRetried).retried;
      await once(() => b.count('lobby'));
      expect(await b.close()).toEqual([]);
      expect(await retried).toEqual(BOB_LEFT);
    });

    it('closes without waiting for a reconnect when the connection drops while it asks a lost release again', async () => {
      const { relay, b, error } = await answerLost((b) => b.release('1'));
      expect(error).toBeInstanceOf(ReleaseRetried);
      const retried = (error as ReleaseRetried).retried;
      await once(() => b.count('lobby'));
      // The retry the close asks is lost too, and new connections wait: the close must not.
      const dropped = relay.arm('\r\n30000\r\n', 'drop');
      relay.hold();
      const closed = b.close();
      await dropped;
      expect(await closed).toEqual([]);
      await expect(retried).rejects.toBeInstanceOf(MemberGone);
      relay.release();
    });

    it('gives up a lost release when the node closes cut off from Redis', async () => {
      const { relay, b } = await relayedPair();
      await b.claim('1', 'bob', addr(1));
      relay.holdReplies();
      const released = failure(b.release('1'));
      await relay.close();
      const error = await released;
      expect(error).toBeInstanceOf(ReleaseRetried);
      const retried = (error as ReleaseRetried).retried;
      await b.close();
      await expect(retried).rejects.toBeInstanceOf(MemberGone);
    });

    /**
     * The nodes heartbeat as a keeper would, for `ms`: a silence of every node counts as part
     * of the timeout only (a stall of Redis), so a reap needs some node alive meanwhile.
     */
    async function beating(nodes: readonly RedisPresence[], ms: number): Promise<void> {
      const until = Date.now() + ms;
      for (let i = 0; i < 1_000 && Date.now() < until; i++) {
        await Promise.all(nodes.map((n) => n.heartbeat()));
        await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_MS));
      }
    }

    /**
     * Stops the redis-server (SIGSTOP) for three timeouts, with `calls` made in order while
     * it is stopped (each reaches it after the one before), then continues it: their results.
     */
    async function inStall(calls: readonly (() => Promise<unknown>)[]): Promise<unknown[]> {
      const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
      const made: Promise<unknown>[] = [];
      process.kill(redis.pid, 'SIGSTOP');
      try {
        for (const call of calls) {
          made.push(call());
          await sleep(30);
        }
        await sleep(3 * TIMEOUT_MS);
      } finally {
        process.kill(redis.pid, 'SIGCONT');
      }
      return Promise.all(made);
    }

    /** Node b, cut off past the timeout, is reaped by a; returns the members a removed with it. */
    async function reapB(a: RedisPresence, b: RedisPresence): Promise<string[]> {
      await beating([a], TIMEOUT_MS + 100);
      await a.heartbeat();
      const dead = await a.reap();
      expect(dead.map((d) => d.node)).toEqual([b.node]);
      return dead[0]!.members.map((m) => m.nickname);
    }

    it('answers a release whose reply was lost with its rooms after its node was reaped, as Redis applied it', async () => {
      const { a, b, error } = await answerLost((b) => b.release('1'));
      expect(error).toBeInstanceOf(ReleaseRetried);
      const retried = (error as ReleaseRetried).retried;
      // Released already, bob is not among what the reaping node finds and tells.
      expect(await reapB(a, b)).toEqual([]);
      expect(await once(() => b.heartbeat())).toEqual({ status: 'expired' });
      expect(await retried).toEqual(BOB_LEFT);
    });

    it('answers a release whose reply was lost as nothing left after its node was reaped, when Redis had not applied it', async () => {
      const { relay, a, b } = await relayedPair();
      await b.claim('1', 'bob', addr(1));
      await b.join('1', 'lobby', 10);
      // The release is lost on its way to Redis: bob stays registered until the reap.
      const dropped = relay.arm('{presence}:nodes');
      const error = await failure(b.release('1'));
      await dropped;
      expect(error).toBeInstanceOf(ReleaseRetried);
      const retried = (error as ReleaseRetried).retried;
      expect(await reapB(a, b)).toEqual(['bob']);
      expect(await once(() => b.heartbeat())).toEqual({ status: 'expired' });
      expect(await retried).toBeUndefined();
    });

    it('answers a lost release as nothing left when an earlier expel, answered, freed the member', async () => {
      const { relay, a, b } = await relayedPair();
      await b.claim('1', 'bob', addr(1));
      await b.join('1', 'lobby', 10);
      await b.join('1', 'side', 10);
      // A KICK's removal, answered: its rooms hear of it from there.
      const kicked = [
        { room: 'lobby', count: 0 },
        { room: 'side', count: 0 },
      ];
      expect(await b.expel('1')).toEqual(kicked);
      // Then the member's own release (its connection closing) loses its reply. A claim sent
      // after it on the same connection shows when Redis has run it.
      relay.holdReplies();
      const released = b.release('1');
      const after = b.claim('2', 'cy', addr(2)).catch(() => false);
      await eventually(async () => (await a.find('cy')) !== undefined);
      relay.cut();
      const error = await failure(released);
      await after;
      expect(error).toBeInstanceOf(ReleaseRetried);
      const retried = (error as ReleaseRetried).retried;
      await once(() => b.heartbeat());
      // The expel's rooms were told once already: told again, every room sees bob leave twice.
      expect((await retried) ?? []).toEqual([]);
    });

    it('still retries a lost release after a cut-off longer than the timeout when no node reaped it', async () => {
      const { relay, a, b } = await relayedPair();
      await b.claim('1', 'bob', addr(1));
      await b.join('1', 'lobby', 10);
      // The release loses its reply (whether or not Redis applied it: here, before it could).
      relay.holdReplies();
      const released = failure(b.release('1'));
      relay.cut();
      const error = await released;
      expect(error).toBeInstanceOf(ReleaseRetried);
      (error as ReleaseRetried).retried.catch(() => {});
      // Longer than the timeout without an answered heartbeat: the next one loses its reply too.
      await new Promise((resolve) => setTimeout(resolve, TIMEOUT_MS + 100));
      await once(() => b.count('lobby'));
      relay.holdReplies();
      const beat = failure(b.heartbeat());
      relay.cut();
      expect(await beat).toBeInstanceOf(Error);
      // Back: nobody reaped b (its heartbeat came first, or it is alone), so it is not expired.
      expect(await once(() => b.heartbeat())).toEqual({ status: 'ok' });
      // The retry must have freed bob: else his nickname and place stay taken for good.
      await b.heartbeat();
      expect(await a.find('bob')).toBeUndefined();
      expect(await a.count('lobby')).toBe(0);
    });

    it('does not count a stall of Redis against the nodes: a reap that waited it out reaps nobody', async () => {
      const prefix = newPrefix();
      const [a, b, c] = await liveNodes(prefix, ['a', 'b', 'c'] as const);
      await a.claim('1', 'ann', addr(1));
      // b's reap was on its way when Redis stopped; a's heartbeat reaches Redis after it,
      // c's not before the stall ends. Both were alive all along.
      const [reaped, beat] = await inStall([() => b.reap(), () => a.heartbeat()]);
      expect(reaped).toEqual([]);
      expect(beat).toEqual({ status: 'ok' });
      expect(await c.heartbeat()).toEqual({ status: 'ok' });
      expect(await b.find('ann')).toBeDefined();
      // A node that then stays silent while others beat is reaped after the timeout.
      await beating([a, b], TIMEOUT_MS + 100);
      expect((await b.reap()).map((dead) => dead.node)).toEqual(['c']);
    });

    it('counts a silence of every node as part of the timeout only, and a node that beat before it stays', async () => {
      const prefix = newPrefix();
      const [a, b] = await liveNodes(prefix, ['a', 'b'] as const);
      // Nobody talks to Redis for twice the timeout: Redis stalled, or every node was cut off.
      await new Promise((resolve) => setTimeout(resolve, 2 * TIMEOUT_MS));
      await a.heartbeat();
      expect(await a.reap()).toEqual([]);
      // From the first heartbeat after it, b's silence counts in full.
      await beating([a], TIMEOUT_MS + 100);
      expect((await a.reap()).map((dead) => dead.node)).toEqual([b.node]);
    });

    it('does not count a stall against nodes whose timeouts differ, whichever speaks first after it', async () => {
      const prefix = newPrefix();
      const long = node(prefix, 'long', redis.url, 10 * TIMEOUT_MS);
      await long.heartbeat();
      const [b, c] = await liveNodes(prefix, ['b', 'c'] as const);
      // The first to speak after the stall has a long timeout; the reap after it, a short one.
      const [, reaped] = await inStall([
        () => long.heartbeat(),
        () => b.reap(),
        () => c.heartbeat(),
      ]);
      expect(reaped).toEqual([]);
    });

    it('keeps the nodes listed as live right after a silence, to a census and to the shard agreement', async () => {
      const prefix = newPrefix();
      const [a, b] = await liveNodes(prefix, ['a', 'b'] as const);
      await new Promise((resolve) => setTimeout(resolve, 3 * TIMEOUT_MS));
      // Before any node speaks again, a census counts both (a stalled Redis just answered).
      expect(await a.census()).toEqual({ users: 0, nodes: 2 });
      await a.heartbeat();
      // Heartbeats are still in Redis's time, which the shard agreement reads: a is live.
      const client = new Redis(redis.url, { protocol: 2 });
      cleanup.push(() => client.disconnect());
      const where = {
        key: a.keyOf('shards'),
        nodes: a.nodesKey,
        timeouts: a.keyOf('timeouts'),
        waiting: a.keyOf('shards-waiting'),
        timeoutMs: TIMEOUT_MS,
      };
      expect(await agreeOnShards(client, { ...where, node: 'a' }, 'list-a')).toBeUndefined();
      expect(await agreeOnShards(client, { ...where, node: 'b' }, 'list-b')).toBe('list-a');
      void b;
    });

    it('keeps a ban written again while another node dropped its expired row', async () => {
      const prefix = newPrefix();
      // One connection: the nodes' commands reach Redis in the order they are sent, so both
      // read the bans (mallory's expired) before either writes.
      const shared = new Redis(redis.url, { protocol: 2 });
      cleanup.push(() => shared.disconnect());
      const [a, b] = ['a', 'b'].map(
        (name) => new RedisPresence({ redis: shared, prefix, node: name, timeoutMs: TIMEOUT_MS }),
      ) as [RedisPresence, RedisPresence];
      await a.ban('n:mallory', ban('mallory', 2_000), 1_000);
      await Promise.all([
        b.ban('n:mallory', ban('mallory', null), 3_000),
        a.ban('n:eve', ban('eve', null), 3_000),
      ]);
      expect((await b.bans()).map((x) => x.mask).sort()).toEqual(['eve', 'mallory']);
    });

    it('lifts and replaces a ban stored under the key an earlier version gave its mask', async () => {
      const [a, b] = await liveNodes(newPrefix(), ['a', 'b'] as const);
      // Written before a nickname's key left out marks on letters: under "n:josé".
      await a.ban('n:jos\u00e9', ban('Jos\u00e9', null), 1_000);
      await a.ban('n:eve', ban('eve', null), 1_000);
      expect(await b.unban(parseMask('Jos\u00e9').key)).toBe(true);
      expect((await a.bans()).map((x) => x.mask)).toEqual(['eve']);
      // Banned again under the new key: one row, not the old one beside it.
      await a.ban('n:jos\u00e9', ban('Jos\u00e9', null), 1_000);
      await b.ban(parseMask('JOSE').key, ban('JOSE', null), 2_000);
      expect((await a.bans()).map((x) => x.mask)).toEqual(['eve', 'JOSE']);
    });

    it("times a ban given in seconds by Redis's clock, not by its node's", async () => {
      const [a] = await liveNodes(newPrefix(), ['a'] as const);
      // A node whose clock is a month behind (not yet judged, or from a node far from Redis):
      // by its own clock, a ten-minute ban would have ended for every other node.
      const behind = Date.now() - 30 * 24 * 3600 * 1000;
      const stored = await a.ban('n:mallory', ban('mallory', behind + 600_000), behind, 600);
      expect(stored.expires).toBeGreaterThan(Date.now() + 590_000);
      expect(stored.expires).toBeLessThan(Date.now() + 610_000);
      expect(Number.isInteger(stored.expires)).toBe(true);
      expect(await a.bans()).toEqual([stored]);
    });

    it("removes no ended ban while its node's time is not known", async () => {
      const prefix = newPrefix();
      let known = false;
      const [a, b] = ['a', 'b'].map(
        (name) =>
          new RedisPresence({
            redis: redis.url,
            prefix,
            node: name,
            timeoutMs: TIMEOUT_MS,
            timeKnown: () => known,
          }),
      ) as [RedisPresence, RedisPresence];
      cleanup.push(
        () => a.close(),
        () => b.close(),
      );
      await a.ban('n:mallory', ban('mallory', 2_000), 1_000);
      // A clock a month ahead: mallory's ban has ended by it, but it is not known to be right.
      await b.ban('n:eve', ban('eve', null), 1_000 + 30 * 24 * 3600 * 1000);
      expect((await a.bans()).map((x) => x.mask).sort()).toEqual(['eve', 'mallory']);
      known = true;
      await b.ban('n:kim', ban('kim', null), 3_000);
      expect((await a.bans()).map((x) => x.mask).sort()).toEqual(['eve', 'kim']);
    });

    it('records the shard list a node agreed on where none is stored, and refuses its heartbeat where another is', async () => {
      const prefix = newPrefix();
      const [a, b] = await liveNodes(prefix, ['a', 'b'] as const);
      const client = new Redis(redis.url, { protocol: 2 });
      cleanup.push(() => client.disconnect());
      const key = a.keyOf('shards');
      // Before it agreed, a node's heartbeat leaves the record alone.
      expect((await a.heartbeat()).status).toBe('ok');
      expect(await client.get(key)).toBeNull();
      a.shardList = 'list-a';
      b.shardList = 'list-a';
      expect((await a.heartbeat()).status).toBe('ok');
      expect(await client.get(key)).toBe('list-a');
      expect((await b.heartbeat()).status).toBe('ok');
      await client.set(key, 'list-c');
      const refused = await a.heartbeat();
      expect(refused).toEqual({
        status: 'refused',
        reason: expect.stringMatching(/list-c.+list-a/),
      });
      // Not registered by it: a node refused is not kept alive by its heartbeats.
      const before = await client.zscore(a.nodesKey, 'a');
      await new Promise((resolve) => setTimeout(resolve, 20));
      await a.heartbeat();
      expect(await client.zscore(a.nodesKey, 'a')).toBe(before);
      expect(await client.get(key)).toBe('list-c');
    });

    it('moves no heartbeat of a node of an older version past Redis time, nor a dead one’s reap later', async () => {
      const prefix = newPrefix();
      const client = new Redis(redis.url, { protocol: 2 });
      cleanup.push(() => client.disconnect());
      const nodes = `${prefix}{presence}:nodes`;
      // An older version's heartbeat: its Redis time in the node zset, nothing else.
      const olderBeat = (name: string) =>
        client.eval(
          "local t = redis.call('TIME') redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1]) return 1",
          1,
          nodes,
          name,
        );
      const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
      // A new node ran once and left; older ones beat on for a while, then one dies.
      const tried = node(prefix, 'tried');
      await tried.heartbeat();
      await tried.close();
      for (let i = 0; i < (4 * TIMEOUT_MS) / HEARTBEAT_MS; i++) {
        await Promise.all([olderBeat('older'), olderBeat('dead')]);
        await sleep(HEARTBEAT_MS);
      }
      const m = node(prefix, 'm');
      await m.heartbeat();
      const [sec, usec] = (await client.time()) as unknown as [string, string];
      const now = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
      expect(Number(await client.zscore(nodes, 'dead'))).toBeLessThanOrEqual(now);
      // Reaped about one timeout after its last heartbeat, while the others beat.
      for (let i = 0; i < (TIMEOUT_MS + 200) / HEARTBEAT_MS; i++) {
        await Promise.all([m.heartbeat(), olderBeat('older')]);
        await sleep(HEARTBEAT_MS);
      }
      expect((await m.reap()).map((dead) => dead.node)).toEqual(['dead']);
    });

    it('reaps a dead node of a short timeout on time when the live ones have long ones', async () => {
      const prefix = newPrefix();
      const short = node(prefix, 'short');
      const long = node(prefix, 'long', redis.url, 3 * TIMEOUT_MS);
      await long.heartbeat();
      await short.heartbeat();
      const died = Date.now();
      // long beats every fifth of its timeout, then reaps, as its keeper would; its gaps are
      // longer than the dead node's timeout allows a silence.
      let reapedAfter: number | undefined;
      for (let i = 0; reapedAfter === undefined && i < 20; i++) {
        await new Promise((resolve) => setTimeout(resolve, (3 * TIMEOUT_MS) / 5));
        await long.heartbeat();
        if ((await long.reap()).some((dead) => dead.node === 'short')) {
          reapedAfter = Date.now() - died;
        }
      }
      expect(reapedAfter).toBeLessThan(3 * TIMEOUT_MS + 400);
    });

    it('a node cut off from Redis learns it expired, and the others reap it', async () => {
      const prefix = newPrefix();
      const relay = await TcpRelay.start(redis.port);
      cleanup.push(() => relay.close());
      const a = node(prefix, 'a');
      const b = node(prefix, 'b', relay.redisUrl);
      const reaped: string[] = [];
      const expired: string[] = [];
      const keepers = [a, b].map(
        (presence: Presence) =>
          new PresenceKeeper(
            presence,
            {
              onReaped: (dead) => reaped.push(...dead.map((d) => d.node)),
              onExpired: () => expired.push(presence.node),
              onError: () => {},
            },
            { intervalMs: HEARTBEAT_MS },
          ),
      );
      for (const keeper of keepers) cleanup.push(() => keeper.stop());
      await Promise.all(keepers.map((keeper) => keeper.start()));
      await b.claim('1', 'bob', addr(1));
      await b.join('1', 'lobby', 10);

      await relay.close();

      await eventually(() => expired.length > 0 && reaped.length > 0);
      expect(expired).toEqual(['b']);
      expect(reaped).toEqual(['b']);
      expect(await a.find('bob')).toBeUndefined();
      expect(await a.count('lobby')).toBe(0);
    });
  });
});

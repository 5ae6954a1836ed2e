import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { RedisBroker } from '../../src/cluster/redis-broker.js';
import { ShardedBroker, ShardedHistoryStore, shardOf } from '../../src/cluster/shards.js';
import type { RoomEvent, RoomRef } from '../../src/core/broker.js';
import { MemoryBroker, MemoryBrokerHub } from '../../src/store/memory-broker.js';
import { MemoryHistoryStore } from '../../src/store/memory-history.js';
import { commandClient } from '../../src/store/redis-client.js';
import {
  EMPTY_EPOCH_TTL_S,
  RedisHistoryStore,
  roomChannel,
  roomTag,
} from '../../src/store/redis-history.js';
import { type RedisServer, startRedis, useRedis, withoutRedis } from '../helpers/redis.js';
import { TcpRelay } from '../helpers/tcp-relay.js';
import {
  type BrokerCluster,
  type BrokerNode,
  brokerContract,
  eventually,
  joined,
  type Node,
  Recorder,
  say,
  useCluster,
  whisperTo,
} from './broker.js';

const retention = { maxMessages: 10_000, maxAgeMs: 0 };

brokerContract({
  name: 'memory',
  cluster() {
    const hub = new MemoryBrokerHub();
    const history = new MemoryHistoryStore({ retention, pruneIntervalMs: 0 });
    const brokers: MemoryBroker[] = [];
    const cluster: BrokerCluster = {
      node() {
        const broker = new MemoryBroker({ hub });
        brokers.push(broker);
        return Promise.resolve({ broker, history });
      },
      async dispose() {
        for (const broker of brokers) await broker.close();
        await history.close();
      },
    };
    return Promise.resolve(cluster);
  },
});

describe('roomChannel', () => {
  it('names every room key with a distinct printable-ASCII channel', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: 'grapheme', maxLength: 8 }),
        fc.string({ unit: 'grapheme', maxLength: 8 }),
        (a, b) => {
          const ca = roomChannel('p:', a);
          expect(ca).toMatch(/^p:b:r:[A-Za-z0-9_-]*$/);
          expect(ca === roomChannel('p:', b)).toBe(a === b);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe.skipIf(withoutRedis())('Redis', () => {
  const redis = useRedis();

  let clusters = 0;
  const errors: Error[] = [];

  /** A cluster is a prefix of its own on one Redis; each node its own store and broker. */
  function redisCluster(
    server: () => RedisServer,
    keepIntervalMs?: number,
  ): Promise<BrokerCluster & { prefix: string }> {
    const prefix = `b${++clusters}-${process.pid}:`;
    const opened: BrokerNode[] = [];
    return Promise.resolve({
      prefix,
      node() {
        const url = server().url;
        const history = new RedisHistoryStore({
          retention,
          pruneIntervalMs: 0,
          redis: url,
          prefix,
          publish: true,
        });
        const broker = new RedisBroker({
          redis: url,
          prefix,
          history,
          onError: (error) => errors.push(error),
          ...(keepIntervalMs === undefined ? {} : { keepIntervalMs }),
        });
        const node = { broker, history };
        opened.push(node);
        return Promise.resolve(node);
      },
      async dispose() {
        for (const node of opened) {
          await node.broker.close();
          await node.history.close();
        }
      },
    });
  }

  brokerContract({ name: 'Redis', cluster: () => redisCluster(() => redis) });

  /** `run` against a Redis of its own (to empty or restart) and a cluster on it; both stopped after. */
  async function withOwnRedis(
    run: (own: RedisServer, c: Awaited<ReturnType<typeof redisCluster>>) => Promise<void>,
  ): Promise<void> {
    const own = await startRedis();
    try {
      const c = await redisCluster(() => own);
      try {
        await run(own, c);
      } finally {
        await c.dispose();
      }
    } finally {
      await own.stop();
    }
  }

  /** Empties Redis behind the nodes' backs: their connections stay up. */
  async function flushAll(own: RedisServer): Promise<void> {
    const admin = new Redis(own.url, { protocol: 2 });
    try {
      await admin.flushall();
    } finally {
      admin.disconnect();
    }
  }

  describe('RedisBroker keeping rooms', () => {
    let prefix = '';
    const cluster = useCluster({
      name: 'Redis',
      cluster: async () => {
        const c = await redisCluster(() => redis, 20);
        prefix = c.prefix;
        return c;
      },
    });

    it('keeps the epoch of a room with members here while nobody writes there, and only then', async () => {
      const c = await cluster();
      const a = await c.node();
      const quiet = { key: 'quiet', name: 'quiet' };
      const busy = { key: 'busy', name: 'busy' };
      await a.broker.subscribe(quiet);
      await a.broker.subscribe(busy);
      await say(a, busy, 'bob', 'one');
      const epochOf = (room: string) => `${prefix}h:{r${roomTag(room)}}:epoch`;
      const admin = new Redis(redis.url, { protocol: 2 });
      try {
        // Asked about on subscribing, the quiet room's epoch expires unless kept.
        const ttl = await admin.ttl(epochOf('quiet'));
        expect(ttl).toBeGreaterThan(0);
        expect(ttl).toBeLessThanOrEqual(EMPTY_EPOCH_TTL_S);
        await admin.expire(epochOf('quiet'), 5);
        await eventually(async () => {
          expect(await admin.ttl(epochOf('quiet'))).toBeGreaterThan(5);
        });
        // A room written to keeps its epoch for good: keeping it gives it no expiry.
        expect(await admin.ttl(epochOf('busy'))).toBe(-1);
        // Once this node has nobody in it, the quiet room is left to expire.
        await a.broker.unsubscribe('quiet');
        await admin.expire(epochOf('quiet'), 5);
        await new Promise((r) => setTimeout(r, 200));
        const left = await admin.ttl(epochOf('quiet'));
        expect(left).toBeGreaterThan(0);
        expect(left).toBeLessThanOrEqual(5);
        expect(await admin.ttl(epochOf('busy'))).toBe(-1);
        // Asking about the room (a join, anywhere) gives it its whole life again.
        await a.history.room('quiet');
        expect(await admin.ttl(epochOf('quiet'))).toBeGreaterThan(5);
      } finally {
        admin.disconnect();
      }
    });
  });

  describe('RedisBroker', () => {
    let prefix = '';
    const cluster = useCluster({
      name: 'Redis',
      cluster: async () => {
        const c = await redisCluster(() => redis);
        prefix = c.prefix;
        return c;
      },
    });

    /** Appends a chat from ghost through a store that does not publish: it reaches nobody live. */
    async function appendSilently(room: string, msg: string): Promise<void> {
      const silent = new RedisHistoryStore({
        retention,
        pruneIntervalMs: 0,
        redis: redis.url,
        prefix,
      });
      try {
        await silent.append(room, { at: 1_000, from: 'ghost', msg });
      } finally {
        await silent.close();
      }
    }

    /** Holds each catch-up read of `history` (its `room` calls) until the returned call. */
    function holdCatchUps(history: Pick<RedisHistoryStore, 'room'>): () => void {
      let open!: () => void;
      const gate = new Promise<void>((resolve) => {
        open = resolve;
      });
      const room0 = history.room.bind(history);
      history.room = async (key) => {
        await gate;
        return room0(key);
      };
      return open;
    }

    /** What `broker` holds of room `key` behind a catch-up: read from its own state (nothing else shows it). */
    function heldIn(broker: RedisBroker, key: string): number | undefined {
      return (broker as unknown as { rooms: Map<string, { held: unknown[] }> }).rooms.get(key)?.held
        .length;
    }

    it('loses and repeats nothing when its subscription is killed during a burst', async () => {
      const c = await cluster();
      const [a, b] = [await c.node(), await c.node()];
      const room = { key: 'burst', name: 'burst' };
      await a.broker.subscribe(room);
      await b.broker.subscribe(room);
      const admin = new Redis(redis.url, { protocol: 2 });
      try {
        const total = 600;
        const channel = roomChannel(prefix, room.key);
        const kill = () => admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub') as Promise<number>;
        let kills = 0;
        for (let i = 0; i < total; i += 20) {
          // In the middle of a burst, and once right before the last batch, after which
          // nothing more is published: only the catch-up on reconnect can bring that one.
          const killNow = i % 200 === 100 || i === total - 20;
          if (killNow) {
            // Both subscribers back from the previous kill, so that each kill hits both.
            await eventually(async () => {
              expect(await admin.pubsub('NUMSUB', channel)).toEqual([channel, 2]);
            });
          }
          const batch = Array.from({ length: 20 }, (_, j) => say(b, room, 'bob', `m${i + j}`));
          if (killNow) kills += await kill();
          await Promise.all(batch);
        }
        expect(kills).toBe(8);
        for (const n of [a, b]) {
          await eventually(() => expect(n.got.chatIds('burst')).toHaveLength(total));
          expect(n.got.chatIds('burst')).toEqual(Array.from({ length: total }, (_, i) => i + 1));
        }
        expect(a.got.resyncs).toContain('burst');
        expect(a.got.lostRooms).toEqual([]);
      } finally {
        admin.disconnect();
      }
    });

    it('says resync once the room is subscribed again, so what is published then arrives', async () => {
      const c = await cluster();
      const [a, b] = [await c.node(), await c.node()];
      const room = { key: 'again', name: 'again' };
      await a.broker.subscribe(room);
      await b.broker.subscribe(room);
      const admin = new Redis(redis.url, { protocol: 2 });
      try {
        // What a handler does on resync, reading membership again, must not miss what follows.
        const resync = a.got.resync.bind(a.got);
        a.got.resync = (key, missed) => {
          resync(key, missed);
          void admin.publish(
            roomChannel(prefix, room.key),
            JSON.stringify({ o: b.broker.node, e: joined(room, 'late') }),
          );
        };
        expect(Number(await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub'))).toBe(2);
        await eventually(() => expect(a.got.resyncs).toEqual(['again']));
        expect(a.got.resyncCauses).toEqual(['subscription']);
        await eventually(() => expect(a.got.of('again')).toEqual([joined(room, 'late')]));
      } finally {
        admin.disconnect();
      }
    });

    it('fills a gap from history before handing over what follows it', async () => {
      const c = await cluster();
      const [a, b] = [await c.node(), await c.node()];
      const room = { key: 'gap', name: 'gap' };
      await a.broker.subscribe(room);
      await say(b, room, 'bob', 'one');
      await eventually(() => expect(a.got.chatIds('gap')).toEqual([1]));
      await appendSilently('gap', 'two');
      await say(b, room, 'bob', 'three');
      await eventually(() => expect(a.got.chatIds('gap')).toEqual([1, 2, 3]));
      expect(a.got.of('gap')[1]).toMatchObject({ id: 2, from: 'ghost', msg: 'two' });
    });

    it('says so when retention deleted part of a gap, and hands over what is left', async () => {
      const c = await cluster();
      const a = await c.node();
      const room = { key: 'trim', name: 'trim' };
      await a.broker.subscribe(room);
      const small = { maxMessages: 2, maxAgeMs: 0 };
      const silent = new RedisHistoryStore({
        retention: small,
        pruneIntervalMs: 0,
        redis: redis.url,
        prefix,
      });
      const loud = new RedisHistoryStore({
        retention: small,
        pruneIntervalMs: 0,
        redis: redis.url,
        prefix,
        publish: true,
      });
      try {
        for (const m of ['1', '2', '3', '4'])
          await silent.append('trim', { at: 0, from: 'x', msg: m });
        await loud.append('trim', { at: 0, from: 'x', msg: '5' });
      } finally {
        await silent.close();
        await loud.close();
      }
      await eventually(() => expect(a.got.chatIds('trim')).toEqual([4, 5]));
      expect(a.got.lostRooms).toMatchObject([{ key: 'trim', reason: 'trimmed' }]);
    });

    it('hands over every text exactly as stored (JSON made by the append script)', async () => {
      const c = await cluster();
      const [a, b] = [await c.node(), await c.node()];
      const room = { key: 'caf\u00e9 {x}\u0000\u{1F600}', name: 'text' };
      await a.broker.subscribe(room);
      let sent = 0;
      const texts = fc.string({ unit: 'binary', maxLength: 12 });
      await fc.assert(
        fc.asyncProperty(texts, texts, async (from, msg) => {
          const m = await say(b, room, from, msg);
          sent++;
          await eventually(() => expect(a.got.chatIds(room.key)).toHaveLength(sent));
          expect(a.got.of(room.key).at(-1)).toEqual({
            type: 'chat',
            room: 'text',
            id: m.id,
            at: m.at,
            from: m.from,
            msg: m.msg,
            epoch: m.epoch,
          });
        }),
        { numRuns: 60 },
      );
    });

    it('drops malformed publications on a room channel, and goes on in step', async () => {
      const c = await cluster();
      const [a, b] = [await c.node(), await c.node()];
      const room = { key: 'junk', name: 'junk' };
      await a.broker.subscribe(room);
      await say(b, room, 'bob', 'first');
      await eventually(() => expect(a.got.chatIds('junk')).toEqual([1]));
      const { epoch } = await b.history.room('junk');
      const admin = new Redis(redis.url, { protocol: 2 });
      const channel = roomChannel(prefix, room.key);
      const isChat = (m: unknown) =>
        Array.isArray(m) &&
        typeof m[0] === 'number' &&
        typeof m[1] === 'string' &&
        typeof m[2] === 'string';
      const bytes = fc.uint8Array({ maxLength: 300 });
      const junk = fc.oneof(
        bytes.map((b) => Buffer.from(b)),
        // Looks like an append script's payload from its first byte, or further.
        bytes.map((b) => Buffer.concat([Buffer.from('['), Buffer.from(b)])),
        bytes.map((b) => Buffer.concat([Buffer.from(`["C","${epoch}",`), Buffer.from(b)])),
        // Well-formed JSON of the wrong shape, some with heads that are not echoes.
        fc
          .tuple(
            fc.constantFrom('C', 'c', ''),
            fc.oneof(fc.constant(epoch), fc.string({ unit: 'binary', maxLength: 6 }), fc.integer()),
            fc.oneof(fc.integer({ min: -2, max: 9 }), fc.double(), fc.string({ maxLength: 2 })),
            fc.oneof(fc.integer({ min: -2, max: 9 }), fc.constant(null)),
            fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 4 }),
          )
          .filter(([, , first, last, chats]) => {
            // A well-formed payload is a real chat to the broker (Redis is trusted), and one
            // of an epoch the room's history does not know stalls the room until it does.
            const wellFormed =
              typeof first === 'number' &&
              Number.isSafeInteger(first) &&
              last === first + chats.length - 1 &&
              chats.length > 0 &&
              chats.every(isChat);
            return !wellFormed;
          })
          .map(([tag, e, first, last, chats]) =>
            Buffer.from(JSON.stringify([tag, e, first, last, ...chats])),
          ),
      );
      // In the room's epoch and numbered as the next chats, but with a chat of the wrong shape.
      const next = fc
        .array(
          fc.oneof(
            fc.tuple(fc.integer(), fc.string({ maxLength: 3 }), fc.string({ maxLength: 3 })),
            fc.array(fc.jsonValue({ maxDepth: 1 }), { maxLength: 4 }),
            fc.jsonValue({ maxDepth: 1 }),
          ),
          { minLength: 1, maxLength: 3 },
        )
        .filter((chats) => !chats.every(isChat))
        .map((chats) => ({ chats }));
      let sent = 1;
      const payload = (p: Buffer | { chats: unknown[] }) =>
        Buffer.isBuffer(p)
          ? p
          : JSON.stringify(['C', epoch, sent + 1, sent + p.chats.length, ...p.chats]);
      try {
        await fc.assert(
          fc.asyncProperty(
            fc.array(fc.oneof(junk, next), { minLength: 1, maxLength: 5 }),
            async (payloads) => {
              for (const p of payloads) await admin.publish(channel, payload(p));
              await say(b, room, 'bob', `after ${sent}`);
              sent++;
              await eventually(() =>
                expect(a.got.chatIds('junk')).toEqual(
                  Array.from({ length: sent }, (_, i) => i + 1),
                ),
              );
            },
          ),
          { numRuns: 60 },
        );
      } finally {
        admin.disconnect();
      }
      expect(a.got.lostRooms).toEqual([]);
      expect(a.got.of('junk').at(-1)).toMatchObject({ from: 'bob', msg: `after ${sent - 1}` });
    });

    it('subscribes a room again when its SUBSCRIBE went out on a connection Redis then dropped', async () => {
      const c = await cluster();
      const b = await c.node();
      const room = { key: 'lostsub', name: 'lostsub' };
      await b.broker.subscribe(room);
      // Made as the server makes a node: the store and the broker share one command client,
      // and the broker's subscriber connection is duplicated from it.
      const shared = commandClient(redis.url);
      const history = new RedisHistoryStore({
        retention,
        pruneIntervalMs: 0,
        redis: shared,
        prefix,
        publish: true,
      });
      const broker = new RedisBroker({ redis: shared, prefix, history, onError: () => {} });
      const got = new Recorder();
      broker.onEvent(got);
      const admin = new Redis(redis.url, { protocol: 2 });
      try {
        await broker.start();
        // Redis holds every command until the pause ends, then runs the KILL, held first, before
        // the room's SUBSCRIBE written meanwhile: that one's reply is lost with the connection.
        const paused = admin.call('CLIENT', 'PAUSE', '300', 'ALL');
        const killed = admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
        await paused;
        let subscribed = false;
        void broker.subscribe(room).then(
          () => {
            subscribed = true;
          },
          () => {},
        );
        expect(Number(await killed)).toBe(2);
        await eventually(() => expect(subscribed).toBe(true));
        await say(b, room, 'bob', 'after the kill');
        await eventually(() => expect(got.of('lostsub')).toHaveLength(1));
        expect(got.of('lostsub')[0]).toMatchObject({ msg: 'after the kill' });
      } finally {
        admin.disconnect();
        await broker.close();
        await history.close();
        shared.disconnect();
      }
    });

    /** A node whose connections to Redis go through a relay of its own, to lose a write. */
    async function relayedNode() {
      const relay = await TcpRelay.start(redis.port);
      const history = new RedisHistoryStore({
        retention,
        pruneIntervalMs: 0,
        redis: relay.redisUrl,
        prefix,
        publish: true,
      });
      const broker = new RedisBroker({ redis: relay.redisUrl, prefix, history, onError: () => {} });
      const got = new Recorder();
      broker.onEvent(got);
      await broker.start();
      return {
        broker,
        history,
        got,
        relay,
        async close() {
          await broker.close();
          await history.close();
          await relay.close();
        },
      };
    }

    /**
     * Node b and node a (whose connections go through its relay) both subscribed to the room
     * `key`; then `check`, and node a closed whatever happened.
     */
    async function inRelayedRoom(
      key: string,
      check: (a: Awaited<ReturnType<typeof relayedNode>>, b: Node, room: RoomRef) => Promise<void>,
    ): Promise<void> {
      const c = await cluster();
      const b = await c.node();
      const room = { key, name: key };
      await b.broker.subscribe(room);
      const a = await relayedNode();
      try {
        await a.broker.subscribe(room);
        await check(a, b, room);
      } finally {
        await a.close();
      }
    }

    it('has the room’s other nodes resync when the PUBLISH of an event was lost, and goes on', async () => {
      await inRelayedRoom('unsent', async (a, b, room) => {
        const renamed: RoomEvent = { type: 'renamed', room: 'unsent', from: 'ann', to: 'anna' };
        const dropped = a.relay.arm('"type":"renamed"');
        a.broker.publish(room.key, renamed);
        await dropped;
        // Its own node had it at once; the other never will, and reads the members instead.
        expect(a.got.of('unsent')).toEqual([renamed]);
        await eventually(() => expect(b.got.resyncCauses).toEqual(['publish']));
        expect(b.got.resyncs).toEqual(['unsent']);
        expect(b.got.of('unsent')).toEqual([]);
        // The publishing node is not told (it had the event), and events flow on.
        a.broker.publish(room.key, joined(room, 'carl'));
        await eventually(() => expect(b.got.of('unsent')).toEqual([joined(room, 'carl')]));
        expect(a.got.resyncs).toEqual([]);
        expect(b.got.resyncs).toEqual(['unsent']);
        await eventually(() => expect(a.got.placements.map((p) => p.nickname)).toEqual(['carl']));
        expect(a.got.unplacedJoins).toEqual([]);
      });
    });

    it('says its own join will not come back once Redis is known not to have run its PUBLISH', async () => {
      await inRelayedRoom('unplaced', async (a, _b, room) => {
        const dropped = a.relay.arm('"type":"joined"');
        a.broker.publish(room.key, joined(room, 'dora'));
        await dropped;
        await eventually(() => expect(a.got.unplacedJoins).toEqual(['unplaced dora']));
        expect(a.got.placements).toEqual([]);
      });
    });

    it('does not say so before its own join comes back when Redis ran the PUBLISH and lost only its reply', async () => {
      await inRelayedRoom('ranlost', async (a, b, room) => {
        const reset = a.relay.arm('"type":"joined"', 'reset');
        a.broker.publish(room.key, joined(room, 'eda'));
        await reset;
        await eventually(() => expect(b.got.of('ranlost')).toEqual([joined(room, 'eda')]));
        await eventually(() => expect(a.got.joinsTold).toContain('placed eda'));
        // Its resync round came back to b, and then to a, after its join: a said nothing
        // of the join before the join itself came back.
        await eventually(() => expect(b.got.resyncs).toEqual(['ranlost']));
        a.broker.publish(room.key, joined(room, 'sentinel'));
        await eventually(() => expect(a.got.joinsTold).toContain('placed sentinel'));
        expect(a.got.joinsTold[0]).toBe('placed eda');
      });
    });

    it('does not say its own join will not come back once it came back before its PUBLISH failed', async () => {
      await inRelayedRoom('backfirst', async (a, b, room) => {
        // Redis runs it and its echo comes back on the subscription; only then does the
        // command connection close, losing the reply.
        const stalled = a.relay.arm('"type":"joined"', 'stall', { stallMs: 500 });
        a.broker.publish(room.key, joined(room, 'fay'));
        await stalled;
        await eventually(() => expect(a.got.joinsTold).toEqual(['placed fay']));
        // Its resync round, sent once the PUBLISH failed, came back to b (and to a).
        await eventually(() => expect(b.got.resyncs).toEqual(['backfirst']));
        a.broker.publish(room.key, joined(room, 'sentinel'));
        await eventually(() => expect(a.got.joinsTold).toContain('placed sentinel'));
        // A join that came back is never told as not coming back: on a node, that would let
        // a later join of the same nickname waiting in the room go unplaced.
        expect(a.got.joinsTold).toEqual(['placed fay', 'placed sentinel']);
      });
    });

    it('takes its own resync round in turn when it comes back while the room catches up', async () => {
      const c = await cluster();
      const [a, b] = [await c.node(), await c.node()];
      const room = { key: 'roundheld', name: 'roundheld' };
      await a.broker.subscribe(room);
      await say(b, room, 'bob', 'one');
      await eventually(() => expect(a.got.chatIds('roundheld')).toEqual([1]));
      // a's next catch-up waits until the round below is held behind it.
      const open = holdCatchUps(a.history);
      const admin = new Redis(redis.url, { protocol: 2 });
      try {
        // Chat 2 reaches nobody live: chat 3 is a gap for a, which catches up from history.
        await appendSilently('roundheld', 'two');
        await say(b, room, 'bob', 'three');
        // a's own resync round (as a PUBLISH it lost would send) and another node's join,
        // both while a is out of step: held, to be handed over in turn after the catch-up.
        const channel = roomChannel(prefix, room.key);
        await admin.publish(
          channel,
          JSON.stringify({ o: a.broker.node, e: { type: 'resync', n: 1 } }),
        );
        await admin.publish(channel, JSON.stringify({ o: b.broker.node, e: joined(room, 'zed') }));
        // Held, behind chat 3.
        await eventually(() => expect(heldIn(a.broker as RedisBroker, room.key)).toBe(3));
        open();
        await eventually(() =>
          expect(a.got.of('roundheld').map((e) => (e.type === 'chat' ? e.id : e.type))).toEqual([
            1,
            2,
            3,
            'joined',
          ]),
        );
        // And goes on in step.
        await say(b, room, 'bob', 'four');
        await eventually(() => expect(a.got.chatIds('roundheld')).toEqual([1, 2, 3, 4]));
      } finally {
        open();
        admin.disconnect();
      }
    });

    it('tells its own lost join as unplaced in the round’s turn among events held behind a catch-up', async () => {
      await inRelayedRoom('roundorder', async (a, b, room) => {
        // What a's node is told, in the order told: chats, joins, and unplaced joins.
        const told: string[] = [];
        const room0 = a.got.room.bind(a.got);
        a.got.room = (key, event) => {
          told.push(
            event.type === 'chat'
              ? `chat ${event.id}`
              : `${event.type} ${'nickname' in event ? event.nickname : ''}`,
          );
          room0(key, event);
        };
        const unplaced0 = a.got.unplaced.bind(a.got);
        a.got.unplaced = (key, event) => {
          told.push(`unplaced ${event.nickname}`);
          unplaced0(key, event);
        };
        await say(b, room, 'bob', 'one');
        await eventually(() => expect(told).toEqual(['chat 1']));
        const open = holdCatchUps(a.history);
        const held = () => heldIn(a.broker, room.key);
        try {
          // Chat 2 reaches nobody live: chat 3 is a gap for a, which catches up from history.
          await appendSilently('roundorder', 'two');
          await say(b, room, 'bob', 'three');
          await eventually(() => expect(held()).toBe(1));
          // a's own join, held behind chat 3; its PUBLISH is lost, so a sends a resync
          // round, which comes back held behind the join.
          const dropped = a.relay.arm('"type":"joined"');
          a.broker.publish(room.key, joined(room, 'dora'));
          await dropped;
          await eventually(() => expect(held()).toBe(3));
          // Another node's join after the round.
          await b.broker.publish(room.key, joined(room, 'zed'));
          await eventually(() => expect(held()).toBe(4));
          expect(told).toEqual(['chat 1']);
          open();
          await eventually(() =>
            expect(told).toEqual([
              'chat 1',
              'chat 2',
              'chat 3',
              'joined dora',
              'unplaced dora',
              'joined zed',
            ]),
          );
        } finally {
          open();
        }
      });
    });

    it('rejects a whisper whose PUBLISH was lost, and sends the next', async () => {
      const c = await cluster();
      const b = await c.node();
      const a = await relayedNode();
      try {
        const dropped = a.relay.arm('"type":"whisper"');
        const lost = a.broker.whisper(b.broker.node, whisperTo('bob', 'lost'));
        await dropped;
        await expect(lost).rejects.toThrow();
        await a.broker.whisper(b.broker.node, whisperTo('bob', 'next'));
        await eventually(() => expect(b.got.whispers).toEqual([whisperTo('bob', 'next')]));
      } finally {
        await a.close();
      }
    });

    it('hands over no event of a type it does not know, and resyncs on another node’s request', async () => {
      const c = await cluster();
      const [a, b] = [await c.node(), await c.node()];
      const room = { key: 'types', name: 'types' };
      await a.broker.subscribe(room);
      const admin = new Redis(redis.url, { protocol: 2 });
      const channel = roomChannel(prefix, room.key);
      const from = (e: unknown) => JSON.stringify({ o: b.broker.node, e });
      try {
        // A newer node's event, and events that travel on other channels.
        await admin.publish(channel, from({ type: 'future', room: 'types', nickname: 'x' }));
        await admin.publish(channel, from({ type: 'chat', room: 'types', id: 1, from: 'x' }));
        await admin.publish(channel, from(whisperTo('ann', 'wrong channel')));
        await admin.publish(channel, from({ type: 'resync' }));
        await admin.publish(channel, from(joined(room, 'end')));
        await eventually(() => expect(a.got.of('types')).toEqual([joined(room, 'end')]));
        expect(a.got.resyncs).toEqual(['types']);
        expect(a.got.resyncCauses).toEqual(['publish']);
        expect(a.got.whispers).toEqual([]);
        // Its own request is not for itself: it had its events.
        await admin.publish(channel, JSON.stringify({ o: a.broker.node, e: { type: 'resync' } }));
        await admin.publish(channel, from(joined(room, 'last')));
        await eventually(() => expect(a.got.of('types')).toHaveLength(2));
        expect(a.got.resyncs).toEqual(['types']);
      } finally {
        admin.disconnect();
      }
    });

    it('takes a room off Redis when unsubscribed', async () => {
      const c = await cluster();
      const a = await c.node();
      const room = { key: 'numsub', name: 'numsub' };
      const channel = roomChannel(prefix, room.key);
      const admin = new Redis(redis.url, { protocol: 2 });
      try {
        await a.broker.subscribe(room);
        expect(await admin.pubsub('NUMSUB', channel)).toEqual([channel, 1]);
        await a.broker.unsubscribe(room.key);
        expect(await admin.pubsub('NUMSUB', channel)).toEqual([channel, 0]);
      } finally {
        admin.disconnect();
      }
    });

    it('hands its own next chat back at once only within the epoch it hands over', async () => {
      const c = await cluster();
      const a = await c.node();
      const room = { key: 'fast', name: 'fast' };
      await a.broker.subscribe(room);
      const m = await say(a, room, 'ann', 'one');
      // Synchronously in say: its append's epoch is the one the broker hands over.
      expect(a.got.chatIds('fast')).toEqual([1]);
      const next = {
        type: 'chat',
        room: 'fast',
        id: m.id + 1,
        at: 1,
        from: 'ann',
        msg: 'x',
      } as const;
      a.broker.publish(room.key, next, 'another epoch');
      expect(a.got.chatIds('fast')).toEqual([1]);
    });

    it('does not hand over its own chat of a new epoch as the next id of the old one (Redis emptied without closing connections)', async () => {
      // FLUSHALL, or a failover to an empty replica behind a proxy: the connections stay up,
      // so the room stays in step while the append makes a new epoch. Its id 1 is the room's
      // last + 1 in the old epoch: publish's fast path took it for that one, and the catch-up
      // its copy then started (another epoch) handed it over again after the "lost".
      await withOwnRedis(async (own, c) => {
        const a = await c.node();
        const got = new (await import('./broker.js')).Recorder();
        a.broker.onEvent(got);
        await a.broker.start();
        const room = { key: 'flushed', name: 'flushed' };
        await a.broker.subscribe(room);
        const before = (await a.history.room('flushed')).epoch;
        await flushAll(own);
        const m = await say(a, room, 'ann', 'hi');
        expect(m.id).toBe(1);
        await eventually(() => expect(got.lostRooms).toHaveLength(1));
        await new Promise((resolve) => setTimeout(resolve, 100));
        expect(got.lostRooms[0]!.epoch).not.toBe(before);
        expect(got.chatIds('flushed')).toEqual([1]);
      });
    });

    it('calls inEpoch back for a new epoch only after telling of the loss, and at once within the epoch handed over', async () => {
      await withOwnRedis(async (own, c) => {
        const a = await c.node();
        const got = new (await import('./broker.js')).Recorder();
        a.broker.onEvent(got);
        await a.broker.start();
        const room = { key: 'waits', name: 'waits' };
        await a.broker.subscribe(room);
        const old = (await a.history.room('waits')).epoch;
        const calls: number[] = [];
        a.broker.inEpoch!('waits', old, () => calls.push(got.lostRooms.length));
        expect(calls).toEqual([0]);
        await flushAll(own);
        const appended = await a.history.append('waits', { at: 1, from: 'ann', msg: 'hi' });
        expect(appended.epoch).not.toBe(old);
        a.broker.inEpoch!('waits', appended.epoch, () => calls.push(got.lostRooms.length));
        const m = appended.message;
        a.broker.publish(
          'waits',
          { type: 'chat', room: 'waits', id: m.id, at: m.at, from: m.from, msg: m.msg },
          appended.epoch,
        );
        // Not at once: the room still hands over the old epoch.
        expect(calls).toEqual([0]);
        await eventually(() => expect(calls).toEqual([0, 1]));
        expect(got.lostRooms[0]!.epoch).toBe(appended.epoch);
        // The old epoch, moved past, and a room not handed over here: at once.
        a.broker.inEpoch!('waits', old, () => calls.push(-1));
        a.broker.inEpoch!('elsewhere', 'any', () => calls.push(-2));
        expect(calls).toEqual([0, 1, -1, -2]);
      });
    });

    it('calls an inEpoch caller through an id once the room’s chats up to it were handed over here', async () => {
      await withOwnRedis(async (_own, c) => {
        const [a, b] = [await c.node(), await c.node()];
        const got = new (await import('./broker.js')).Recorder();
        a.broker.onEvent(got);
        await a.broker.start();
        b.broker.onEvent(new (await import('./broker.js')).Recorder());
        await b.broker.start();
        const room = { key: 'order', name: 'order' };
        await a.broker.subscribe(room);
        await b.broker.subscribe(room);
        const { epoch } = await a.history.room('order');
        const calls: string[] = [];
        // The "71" of node a's own chat 2 waits for chat 1, another node's, to be handed
        // over here first: its sender counts its own ids as seen.
        const handed = () => `after ${got.chatIds('order').join(',')}`;
        a.broker.inEpoch('order', epoch, () => calls.push(`two ${handed()}`), 2);
        a.broker.inEpoch('order', epoch, () => calls.push(`three ${handed()}`), 3);
        expect(calls).toEqual([]);
        await say(b, room, 'bob', 'one');
        await say(a, room, 'ann', 'two');
        await eventually(() => expect(calls).toEqual(['two after 1,2']));
        await say(b, room, 'bob', 'three');
        await eventually(() => expect(calls).toEqual(['two after 1,2', 'three after 1,2,3']));
        // Handed over already: at once.
        a.broker.inEpoch('order', epoch, () => calls.push('one again'), 1);
        expect(calls).toHaveLength(3);
      });
    });

    it('calls whoever waits in inEpoch, in order, once they waited long enough for a room that does not move', async () => {
      const prefix = `w-${process.pid}:`;
      const history = new RedisHistoryStore({
        retention,
        pruneIntervalMs: 0,
        redis: redis.url,
        prefix,
      });
      const b = new RedisBroker({ redis: redis.url, prefix, history, epochWaitMs: 200 });
      try {
        b.onEvent(new (await import('./broker.js')).Recorder());
        await b.start();
        await b.subscribe({ key: 'still', name: 'still' });
        const calls: number[] = [];
        // No chat of these epochs ever comes: the room stays where it is.
        b.inEpoch('still', 'e1', () => calls.push(1));
        b.inEpoch('still', 'e2', () => calls.push(2));
        await new Promise((resolve) => setTimeout(resolve, 50));
        expect(calls).toEqual([]);
        await eventually(() => expect(calls).toEqual([1, 2]));
      } finally {
        await b.close();
        await history.close();
      }
    });

    it('tells an inEpoch caller where the room went when its epoch was lost before the room got to it', async () => {
      await withOwnRedis(async (own, c) => {
        const a = await c.node();
        a.broker.onEvent(new (await import('./broker.js')).Recorder());
        await a.broker.start();
        await a.broker.subscribe({ key: 'twice', name: 'twice' });
        await flushAll(own);
        // Stored without its publication reaching this node (as if its subscription was down).
        const quiet = new RedisHistoryStore({
          retention,
          pruneIntervalMs: 0,
          redis: own.url,
          prefix: c.prefix,
        });
        const lost = await quiet.append('twice', { at: 1, from: 'ann', msg: 'one' });
        await quiet.close();
        const calls: (string | undefined)[] = [];
        a.broker.inEpoch('twice', lost.epoch, (to) => calls.push(to));
        // Lost again before this node read the room: its next chat is of a third epoch.
        await flushAll(own);
        const next = await a.history.append('twice', { at: 2, from: 'ann', msg: 'two' });
        expect(next.epoch).not.toBe(lost.epoch);
        a.broker.inEpoch('twice', next.epoch, (to) => calls.push(to ?? 'here'));
        const m = next.message;
        a.broker.publish(
          'twice',
          { type: 'chat', room: 'twice', id: m.id, at: m.at, from: m.from, msg: m.msg },
          next.epoch,
        );
        await eventually(() => expect(calls).toEqual([next.epoch, 'here']));
      });
    });

    it('calls whoever waits in inEpoch when the room is unsubscribed', async () => {
      await withOwnRedis(async (_own, c) => {
        const a = await c.node();
        a.broker.onEvent(new (await import('./broker.js')).Recorder());
        await a.broker.start();
        await a.broker.subscribe({ key: 'gone', name: 'gone' });
        const calls: string[] = [];
        a.broker.inEpoch!('gone', 'an epoch not read yet', () => calls.push('called'));
        expect(calls).toEqual([]);
        await a.broker.unsubscribe('gone');
        expect(calls).toEqual(['called']);
      });
    });

    /** Node a, started and subscribed to room `key` with a recorder; node b to say things there. */
    async function listening(c: BrokerCluster, key: string) {
      const a = await c.node();
      const b = await c.node();
      const got = new (await import('./broker.js')).Recorder();
      a.broker.onEvent(got);
      await a.broker.start();
      const room = { key, name: key };
      await a.broker.subscribe(room);
      return { a, b, got, room };
    }

    it('says a room’s history was lost when Redis restarts empty, then goes on in the new epoch', async () => {
      await withOwnRedis(async (own, c) => {
        const { a, b, got, room } = await listening(c, 'epoch');
        for (const m of ['one', 'two']) await say(b, room, 'bob', m);
        await eventually(() => expect(got.chatIds('epoch')).toEqual([1, 2]));
        const before = (await b.history.room('epoch')).epoch;
        await own.restart();
        // The stores' connections come back on their own; retry the first append (bounded).
        let next: Awaited<ReturnType<typeof say>> | undefined;
        for (let attempt = 0; next === undefined && attempt < 100; attempt++) {
          next = await say(b, room, 'bob', 'after').catch(async () => {
            await new Promise((resolve) => setTimeout(resolve, 50));
            return undefined;
          });
        }
        expect(next?.id).toBe(1);
        await eventually(() => expect(got.chatIds('epoch')).toEqual([1, 2, 1]));
        expect(got.lostRooms).toHaveLength(1);
        expect(got.lostRooms[0]).toMatchObject({ key: 'epoch', reason: 'epoch' });
        expect(got.lostRooms[0]!.epoch).not.toBe(before);
        a.broker.publish(room.key, joined(room, 'ann'));
        expect(got.of('epoch').at(-1)).toEqual(joined(room, 'ann'));
      });
    });

    it('hands over no chat of a new epoch as the old one’s when Redis empties during a catch-up', async () => {
      await withOwnRedis(async (own, c) => {
        const { a, b, got, room } = await listening(c, 'relabel');
        await say(b, room, 'bob', 'one');
        await eventually(() => expect(got.chatIds('relabel')).toEqual([1]));
        const old = (await b.history.room('relabel')).epoch;
        const silent = new RedisHistoryStore({
          retention,
          pruneIntervalMs: 0,
          redis: own.url,
          prefix: c.prefix,
        });
        try {
          await silent.append('relabel', { at: 1_000, from: 'ghost', msg: 'two' });
          // Between the catch-up's read of the top and its read of the page, Redis empties
          // and the new epoch gets ids 1 to 3 (unpublished: a node's own connections stay up).
          const read0 = a.history.read.bind(a.history);
          let emptied = false;
          a.history.read = async (key, query) => {
            if (!emptied) {
              emptied = true;
              await flushAll(own);
              for (const msg of ['new1', 'new2', 'new3']) {
                await silent.append('relabel', { at: 2_000, from: 'ghost', msg });
              }
            }
            return read0(key, query);
          };
          // Id 3 comes live after 1: a gap, and the catch-up.
          await say(b, room, 'bob', 'three');
          let now = '';
          await eventually(async () => {
            now = (await silent.room('relabel')).epoch;
            expect(got.lostRooms).toEqual([{ key: 'relabel', reason: 'epoch', epoch: now }]);
            expect(got.chatIds('relabel')).toEqual([1, 1, 2, 3]);
          });
          expect(emptied).toBe(true);
          const chats = got.of('relabel').filter((e) => e.type === 'chat');
          expect(chats.map((e) => [e.msg, e.epoch])).toEqual([
            ['one', old],
            ['new1', now],
            ['new2', now],
            ['new3', now],
          ]);
        } finally {
          await silent.close();
        }
      });
    });
  });
});

describe.skipIf(withoutRedis())('Redis, rooms sharded over two instances', () => {
  const servers = [useRedis(), useRedis()];
  let clusters = 0;
  const errors: Error[] = [];

  /**
   * Each node has a store and a broker per instance (the same node id for both), put
   * together as ClusterNode does with --redis-shards.
   */
  function shardedCluster(
    instances: () => readonly RedisServer[],
  ): Promise<BrokerCluster & { prefix: string }> {
    const prefix = `s${++clusters}-${process.pid}:`;
    const opened: BrokerNode[] = [];
    return Promise.resolve({
      prefix,
      node() {
        const node = randomUUID();
        const stores = instances().map(
          (server) =>
            new RedisHistoryStore({
              retention,
              pruneIntervalMs: 0,
              redis: server.url,
              prefix,
              publish: true,
            }),
        );
        const brokers = instances().map(
          (server, i) =>
            new RedisBroker({
              redis: server.url,
              prefix,
              node,
              history: stores[i]!,
              onError: (error) => errors.push(error),
            }),
        );
        const each = {
          broker: new ShardedBroker(brokers),
          history: new ShardedHistoryStore(stores),
        };
        opened.push(each);
        return Promise.resolve(each);
      },
      async dispose() {
        for (const each of opened) {
          await each.broker.close();
          await each.history.close();
        }
      },
    });
  }

  brokerContract({ name: 'Redis, 2 shards', cluster: () => shardedCluster(() => servers) });

  /** Room keys that land on instance 0 and on instance 1. */
  const onShard = (shard: number, count: number) =>
    Array.from({ length: 100 }, (_, i) => `room${i}`)
      .filter((k) => shardOf(k, 2) === shard)
      .slice(0, count);

  it('waits in inEpoch for the room’s own instance to tell of its new epoch', async () => {
    const c = await shardedCluster(() => servers);
    try {
      const a = await c.node();
      const got = new Recorder();
      a.broker.onEvent(got);
      await a.broker.start();
      const key = onShard(1, 1)[0]!;
      await a.broker.subscribe({ key, name: key });
      const old = (await a.history.room(key)).epoch;
      const admin = new Redis(servers[1]!.url, { protocol: 2 });
      try {
        await admin.flushall();
      } finally {
        admin.disconnect();
      }
      const appended = await a.history.append(key, { at: 1, from: 'ann', msg: 'hi' });
      expect(appended.epoch).not.toBe(old);
      const calls: number[] = [];
      a.broker.inEpoch(key, appended.epoch, () => calls.push(got.lostRooms.length));
      const m = appended.message;
      a.broker.publish(
        key,
        { type: 'chat', room: key, id: m.id, at: m.at, from: m.from, msg: m.msg },
        appended.epoch,
      );
      expect(calls).toEqual([]);
      await eventually(() => expect(calls).toEqual([1]));
    } finally {
      await c.dispose();
    }
  });

  it('keeps each room’s history and channel on its own instance', async () => {
    const c = await shardedCluster(() => servers);
    try {
      const [a, b] = [await c.node(), await c.node()];
      const got = new Recorder();
      a.broker.onEvent(got);
      await a.broker.start();
      await b.broker.start();
      const rooms = [...onShard(0, 2), ...onShard(1, 2)].map((key) => ({ key, name: key }));
      for (const room of rooms) await a.broker.subscribe(room);
      for (const room of rooms) await say(b, room, 'bob', `hi ${room.key}`);
      await eventually(() => {
        for (const room of rooms) expect(got.chatIds(room.key)).toEqual([1]);
      });
      for (const [i, server] of servers.entries()) {
        const admin = new Redis(server.url, { protocol: 2 });
        try {
          const channels = await admin.pubsub('CHANNELS', `${c.prefix}b:r:*`);
          const keys = await admin.keys(`${c.prefix}*`);
          for (const room of rooms) {
            const here = shardOf(room.key, 2) === i;
            expect(channels.includes(roomChannel(c.prefix, room.key))).toBe(here);
            // A room's keys carry its base64url tag.
            const tag = Buffer.from(room.key).toString('base64url');
            expect(keys.some((k) => k.includes(tag))).toBe(here);
          }
        } finally {
          admin.disconnect();
        }
      }
    } finally {
      await c.dispose();
    }
  });

  it('says history was lost only for the rooms of an instance that restarts empty', async () => {
    const own = [await startRedis(), await startRedis()];
    try {
      const c = await shardedCluster(() => own);
      try {
        const [a, b] = [await c.node(), await c.node()];
        const got = new Recorder();
        a.broker.onEvent(got);
        await a.broker.start();
        const kept = { key: onShard(0, 1)[0]!, name: 'kept' };
        const gone = { key: onShard(1, 1)[0]!, name: 'gone' };
        for (const room of [kept, gone]) {
          await a.broker.subscribe(room);
          for (const m of ['one', 'two']) await say(b, room, 'bob', m);
        }
        await eventually(() => {
          expect(got.chatIds(kept.key)).toEqual([1, 2]);
          expect(got.chatIds(gone.key)).toEqual([1, 2]);
        });
        await own[1]!.restart();
        let next: Awaited<ReturnType<typeof say>> | undefined;
        for (let attempt = 0; next === undefined && attempt < 100; attempt++) {
          next = await say(b, gone, 'bob', 'after').catch(async () => {
            await new Promise((resolve) => setTimeout(resolve, 50));
            return undefined;
          });
        }
        expect(next?.id).toBe(1);
        expect((await say(b, kept, 'bob', 'three')).id).toBe(3);
        await eventually(() => {
          expect(got.chatIds(gone.key)).toEqual([1, 2, 1]);
          expect(got.chatIds(kept.key)).toEqual([1, 2, 3]);
        });
        expect(got.lostRooms.map((l) => [l.key, l.reason])).toEqual([[gone.key, 'epoch']]);
        expect((await b.history.read(kept.key, { limit: 10 })).map((m) => m.msg)).toEqual([
          'one',
          'two',
          'three',
        ]);
      } finally {
        await c.dispose();
      }
    } finally {
      for (const server of own) await server.stop();
    }
  });
});

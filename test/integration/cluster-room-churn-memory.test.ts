/**
 * A cluster node's memory, and Redis's, under rooms made and abandoned: every
 * room a node's members join is subscribed on Redis and dropped when they
 * leave, and a node that runs for months sees a great many. Each SUBSCRIBE
 * used to race a promise renewed only when the subscriber connection
 * reconnects, adding a reaction to it that held the room's whole broker state
 * (about a kilobyte) until a reconnect that may never come. The node runs as
 * its own process and its heap is read after garbage collection through the
 * inspector. In Redis, each room a join made kept its history epoch for a
 * week: a join and a part are two requests, so one address's connections
 * could leave some 20 GB a day at the default flood limits. And each room
 * written to kept its history for good, 4.7 KB for one short chat.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMPTY_EPOCH_TTL_S } from '../../src/store/redis-history.js';
import { Inspector, inspectorUrl } from '../helpers/inspector.js';
import { RawClient } from '../helpers/raw-client.js';
import { type RedisServer, startRedis, withoutRedis } from '../helpers/redis.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';

const skip = withoutRedis();

/** Clients making rooms at once. */
const CLIENTS = 4;
/** Rooms made before the first reading: code, caches and pools warm up. */
const WARM_ROOMS = 1000;
/** Rooms made between the two readings. */
const ROOMS = 2000;
/**
 * What one more room made and abandoned may leave behind on average: the node remembers
 * the newest id of up to 100,000 rooms it saw (redis-history), 100 to 200 bytes each
 * as measured with the heap's noise (170 to 380 over 2,000 rooms). The leak left about
 * 1,500 bytes a room.
 */
const BYTES_PER_ROOM = 700;
/** --history-max-rooms of the node. */
const MAX_ROOMS = 100;

let redis: RedisServer;
let node: SpawnedServer;
let inspector: Inspector;
let admin: Redis;
const clients: RawClient[] = [];
/** Walkers that chat in each room: with `history`, so that each chat is acknowledged. */
const chatters: RawClient[] = [];

beforeAll(async () => {
  if (skip) return;
  redis = await startRedis();
  node = await spawnServer(
    ['--redis', redis.url, '--rate-limit', '0', '--history-max-rooms', String(MAX_ROOMS)],
    { NODE_OPTIONS: '--inspect=127.0.0.1:0' },
    100_000,
  );
  const url = inspectorUrl(node.output());
  if (url === undefined) throw new Error(`no inspector address in:\n${node.output()}`);
  inspector = await Inspector.connect(url);
  admin = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  for (let i = 0; i < CLIENTS; i++) {
    const client = await RawClient.open(node.port);
    clients.push(client);
    client.sendPy({ cmd: '0', nickname: `walker${i}`, caps: ['errors', 'rooms'] });
    await client.expect('03', 10_000);
    const chatter = await RawClient.open(node.port);
    chatters.push(chatter);
    chatter.sendPy({ cmd: '0', nickname: `chatter${i}`, caps: ['errors', 'rooms', 'history'] });
    await chatter.expect('03', 10_000);
    // With `history`, the lobby's join is answered on its own.
    expect((await chatter.expect('101', 10_000)).room).toBe('lobby');
  }
}, 30_000);

afterAll(async () => {
  for (const client of [...clients, ...chatters]) client.close();
  // First: a process with a debugger attached waits for it to go before it exits.
  inspector?.close();
  admin?.disconnect();
  await node?.stop();
  await redis?.stop();
});

/**
 * Each client makes rooms `from`, `from + CLIENTS`, … below `to` one at a time and leaves
 * each, with a chat in each if `chat`.
 */
async function walk(from: number, to: number, chat = false): Promise<void> {
  const walkers = chat ? chatters : clients;
  await Promise.all(
    walkers.map(async (client, c) => {
      for (let i = from + c; i < to; i += CLIENTS) {
        const room = `walk${i}`;
        client.sendPy({ cmd: '100', room });
        const joined = await client.expect('101', 10_000);
        expect(joined.room).toBe(room);
        if (chat) {
          client.sendPy({ cmd: '7', room, msg: 'passing through' });
          await client.expect('71', 10_000);
        }
        client.sendPy({ cmd: '102', room });
        await client.expect('103', 10_000);
        client.drain();
      }
    }),
  );
}

/** Keys in Redis that never expire. */
async function lasting(): Promise<number> {
  let n = 0;
  for (const key of await admin.keys('*')) if ((await admin.pttl(key)) === -1) n++;
  return n;
}

describe.skipIf(skip)('a cluster node whose members make and leave rooms', () => {
  it('keeps no broker state of the rooms that are gone, nor anything for good in Redis', async () => {
    await walk(0, WARM_ROOMS);
    const before = await inspector.heapAfterGc();
    const keysBefore = await lasting();
    await walk(WARM_ROOMS, WARM_ROOMS + ROOMS);
    const after = await inspector.heapAfterGc();
    const perRoom = (after - before) / ROOMS;
    expect(perRoom, `${after - before} bytes more after ${ROOMS} rooms`).toBeLessThan(
      BYTES_PER_ROOM,
    );
    // Nobody wrote in these rooms: all they left in Redis (their epochs) expires soon.
    const keysAfter = await lasting();
    expect(keysAfter - keysBefore, 'more keys in Redis without expiry').toBeLessThan(ROOMS / 100);
    const ttls: number[] = [];
    for (const key of await admin.keys('*:epoch')) {
      const ttl = await admin.pttl(key);
      if (ttl !== -1) ttls.push(ttl);
    }
    expect(ttls.length).toBeGreaterThan(ROOMS / 2);
    expect(Math.max(...ttls)).toBeLessThanOrEqual(EMPTY_EPOCH_TTL_S * 1000);
  }, 50_000);

  it('keeps the messages of no more than --history-max-rooms rooms in Redis', async () => {
    const rooms = 1000;
    await walk(100_000, 100_000 + rooms, true);
    // Checked as each new room is written, right after its chat: let the last checks end.
    const holding = async () => (await admin.keys('*:msgs')).length;
    // Bounded in time, not in tries (each is slower on a loaded machine).
    const deadline = Date.now() + 15_000;
    for (let i = 0; i < 3_000 && Date.now() < deadline && (await holding()) > MAX_ROOMS; i++) {
      await sleep(5);
    }
    const written = await holding();
    expect(written).toBe(MAX_ROOMS);
    // Those that lost theirs are forgotten unless someone comes back within minutes.
    const tops = await admin.keys('*:top');
    let lastingTops = 0;
    for (const key of tops) if ((await admin.pttl(key)) === -1) lastingTops++;
    expect(lastingTops).toBe(MAX_ROOMS);
    expect(tops.length).toBeGreaterThan(rooms - 2 * CLIENTS);
  }, 50_000);
});

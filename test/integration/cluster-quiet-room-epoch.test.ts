/**
 * A room nobody wrote to, on a cluster: its epoch expires two minutes after the last node
 * with members in it kept it (docs/cluster.md). A member that left it, or whose connection
 * went away, comes back later with the position its "101" gave it ({epoch, 0}): nothing
 * was ever written there, so nothing can be missing, and it must not be told otherwise.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawClient } from '../helpers/raw-client.js';
import { type RedisServer, startRedis, withoutRedis } from '../helpers/redis.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';

const skip = withoutRedis();

let redis: RedisServer;
let node: SpawnedServer;
let admin: Redis;
const clients: RawClient[] = [];

beforeAll(async () => {
  if (skip) return;
  redis = await startRedis();
  node = await spawnServer(['--redis', redis.url, '--rate-limit', '0']);
  admin = new Redis(redis.url, { maxRetriesPerRequest: 1 });
}, 60_000);

afterAll(async () => {
  for (const client of clients) client.close();
  admin?.disconnect();
  await node?.stop();
  await redis?.stop();
});

describe.skipIf(skip)('a quiet room whose epoch expired while nobody was in it', () => {
  it('recovers a member coming back with the position it was given there', async () => {
    const ann = await RawClient.open(node.port);
    clients.push(ann);
    ann.sendPy({ cmd: '0', nickname: 'ann', caps: ['errors', 'rooms', 'history'], lobby: false });
    await ann.expect('03', 10_000);
    ann.sendPy({ cmd: '100', room: 'quiet' });
    const first = await ann.expect('101');
    expect(first.top).toBe(0);
    ann.sendPy({ cmd: '102', room: 'quiet' });
    await ann.expect('103');
    // Two minutes pass with nobody in the room: its epoch, never written, expires.
    for (const key of await admin.keys('*:epoch')) {
      if ((await admin.ttl(key)) > 0) await admin.del(key);
    }
    ann.sendPy({ cmd: '100', room: 'quiet', since: { epoch: first.epoch, id: 0 } });
    const back = await ann.expect('101');
    // Nothing was ever written there: a "not recovered" would show a gap that is not one.
    expect(back).toMatchObject({ room: 'quiet', recovered: true });
  }, 30_000);
});

/**
 * Member lists after a node's subscriber connection was down: joins, leaves
 * and renames published meanwhile are not stored, so the node reads the
 * rooms' members again and tells its clients the difference. Two confab
 * processes on a real redis-server; node A reaches Redis through a relay
 * that holds its reconnecting subscriber off for as long as the test needs.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawClient } from '../helpers/raw-client.js';
import { type RedisServer, startRedis, withoutRedis } from '../helpers/redis.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';
import { TcpRelay } from '../helpers/tcp-relay.js';

const skip = withoutRedis();

type Message = Record<string, unknown> & { cmd: string };

let redis: RedisServer;
let relay: TcpRelay;
const nodes: SpawnedServer[] = [];
const clients: RawClient[] = [];

function startNode(url: string): Promise<SpawnedServer> {
  return spawnServer(['--redis', url, '--cluster-timeout', '10', '--rate-limit', '0']);
}

async function connect(port: number, nickname: string, caps?: string[]): Promise<RawClient> {
  const client = await RawClient.open(port);
  clients.push(client);
  client.sendPy(caps === undefined ? { cmd: '0', nickname } : { cmd: '0', nickname, caps });
  await client.expect('03', 10_000);
  return client;
}

/** The nicknames USERS lists, for `room` or the lobby. */
async function users(client: RawClient, room?: string): Promise<string[]> {
  client.sendPy(room === undefined ? { cmd: '1' } : { cmd: '1', room });
  const answer = await client.expect('10', 10_000);
  return (answer.users as unknown[][]).map((u) => String(u[0]));
}

/** A member list as a client keeps it: its start, then every "8" and "30" of the room. */
function follow(start: readonly string[], events: readonly Message[]): string[] {
  const list = [...start];
  for (const m of events) {
    if (m.cmd === '8') list.push(String(m.nickname));
    if (m.cmd === '30') list.splice(list.indexOf(String(m.nickname)), 1);
  }
  return list;
}

function membership(client: RawClient, room?: string): Message[] {
  return (client.received as Message[]).filter(
    (m) => (m.cmd === '8' || m.cmd === '30' || m.cmd === '91') && m.room === room,
  );
}

beforeAll(async () => {
  if (skip) return;
  redis = await startRedis();
  relay = await TcpRelay.start(redis.port);
  nodes.push(await startNode(relay.redisUrl));
  nodes.push(await startNode(redis.url));
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.close();
  relay?.release();
  await Promise.all(nodes.map((n) => n.stop()));
  await relay?.close();
  await redis?.stop();
}, 60_000);

describe.skipIf(skip)('a node whose subscription was down', () => {
  it('shows its clients the joins, leaves and renames it missed, as "30"s and "8"s', async () => {
    const [a, b] = [nodes[0]!.port, nodes[1]!.port];
    const cora = await connect(a, 'cora');
    const rex = await connect(a, 'rex', ['rooms']);
    rex.sendPy({ cmd: '100', room: 'den' });
    await rex.expect('101', 10_000);
    const stay = await connect(b, 'stay');
    const gone = await connect(b, 'gone', ['rooms']);
    gone.sendPy({ cmd: '100', room: 'den' });
    await gone.expect('101', 10_000);
    const ren = await connect(b, 'ren');
    await cora.waitFor((m) => m.cmd === '8' && m.nickname === 'ren');
    await rex.waitFor((m) => m.cmd === '8' && m.nickname === 'gone' && m.room === 'den');
    const lobbyBefore = await users(cora);
    const denBefore = await users(rex, 'den');
    expect(lobbyBefore).toEqual(['cora', 'rex', 'stay', 'gone', 'ren']);
    expect(denBefore).toEqual(['rex', 'gone']);
    cora.drain();
    rex.drain();

    const admin = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await admin.connect();
    try {
      relay.hold();
      expect(Number(await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub'))).toBe(2);
      // Node A's subscriber is down for certain once its reconnect waits at the relay.
      for (let i = 0; i < 500 && relay.held === 0; i++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(relay.held).toBeGreaterThan(0);

      gone.sendPy({ cmd: '3' });
      ren.sendPy({ cmd: '5', newNickname: 'renee' });
      await ren.expect('51', 10_000);
      const newb = await connect(b, 'newb', ['rooms']);
      newb.sendPy({ cmd: '100', room: 'den' });
      await newb.expect('101', 10_000);
      // Published: node B's own member saw them.
      await stay.waitFor((m) => m.cmd === '30' && m.nickname === 'gone');
      await stay.waitFor((m) => m.cmd === '8' && m.nickname === 'newb');
      expect(membership(cora)).toEqual([]);
      expect(membership(rex, 'lobby')).toEqual([]);
    } finally {
      relay.release();
      admin.disconnect();
    }

    await cora.waitFor((m) => m.cmd === '8' && m.nickname === 'newb');
    await rex.waitFor((m) => m.cmd === '8' && m.nickname === 'newb' && m.room === 'den');
    const lobbyNow = await users(cora);
    expect(lobbyNow).toEqual(['cora', 'rex', 'stay', 'renee', 'newb']);
    expect(await users(rex, 'den')).toEqual(['rex', 'newb']);
    // A course client: a "30" or "8" per change, with the count after it, nothing else.
    expect(cora.drain()).toEqual([
      { cmd: '30', nickname: 'gone', userCount: 4 },
      { cmd: '30', nickname: 'ren', userCount: 3 },
      { cmd: '8', nickname: 'renee', userCount: 4 },
      { cmd: '8', nickname: 'newb', userCount: 5 },
    ]);
    const lobby = membership(rex, 'lobby');
    const den = membership(rex, 'den');
    expect(follow(lobbyBefore, lobby)).toEqual(lobbyNow);
    expect(follow(denBefore, den)).toEqual(['rex', 'newb']);
    expect(den).toEqual([
      { cmd: '30', nickname: 'gone', userCount: 1, room: 'den' },
      { cmd: '8', nickname: 'newb', userCount: 2, room: 'den' },
    ]);

    // In step again: the next leave is shown once.
    rex.drain();
    stay.sendPy({ cmd: '3' });
    await cora.waitFor((m) => m.cmd === '30' && m.nickname === 'stay');
    await rex.waitFor((m) => m.cmd === '30' && m.nickname === 'stay');
    expect(cora.drain()).toEqual([{ cmd: '30', nickname: 'stay', userCount: 4 }]);
    expect(membership(rex, 'lobby')).toEqual([
      { cmd: '30', nickname: 'stay', userCount: 4, room: 'lobby' },
    ]);
  }, 90_000);
});

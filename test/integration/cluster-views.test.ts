/**
 * What a node of a cluster shows of the whole: /healthz and /metrics, ROOMS,
 * resume tokens presented on another node, and chats carried on while Redis
 * kills the nodes' subscriber connections. Three confab processes (a fourth
 * where one is killed) on one real redis-server.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOBBY } from '../../src/protocol/codes.js';
import { RawClient } from '../helpers/raw-client.js';
import { type RedisServer, startRedis, withoutRedis } from '../helpers/redis.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';

const skip = withoutRedis();
/**
 * Seconds without a heartbeat before a node is reaped: long enough that a client
 * reconnecting at once after a kill -9 finds its member not yet reaped.
 */
const TIMEOUT_S = 10;
const CAPS = ['errors', 'rooms', 'renames', 'whispers', 'history'];

type Message = Record<string, unknown> & { cmd: string };

let redis: RedisServer;
const nodes: SpawnedServer[] = [];
const clients: RawClient[] = [];

function startNode(): Promise<SpawnedServer> {
  return spawnServer([
    '--redis',
    redis.url,
    '--cluster-timeout',
    String(TIMEOUT_S),
    '--max-users',
    '50',
    '--rate-limit',
    '0',
  ]);
}

async function open(port: number): Promise<RawClient> {
  const client = await RawClient.open(port);
  clients.push(client);
  return client;
}

async function connect(
  port: number,
  nickname: string,
  extra: object = {},
): Promise<{ client: RawClient; welcome: Message }> {
  const client = await open(port);
  client.sendPy({ cmd: '0', nickname, caps: CAPS, ...extra });
  const welcome = (await client.expect('03', 10_000)) as Message;
  return { client, welcome };
}

function all(client: RawClient, cmd: string): Message[] {
  return (client.received as Message[]).filter((m) => m.cmd === cmd);
}

/** Waits until `client` has received `n` messages matching `what` (taken or not). */
async function waitFor(client: RawClient, what: (m: Message) => boolean, n: number) {
  const deadline = Date.now() + 20_000;
  for (let i = 0; i < 2_000 && Date.now() < deadline; i++) {
    if ((client.received as Message[]).filter(what).length >= n) return;
    if (client.isClosed) break;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`waiting for ${n} messages; got ${client.describe()}`);
}

/** Polls `read` until `done` holds of its result (bounded), and returns the last result. */
async function until<T>(read: () => Promise<T>, done: (value: T) => boolean): Promise<T> {
  let value = await read();
  for (let i = 0; i < 100 && !done(value); i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    value = await read();
  }
  return value;
}

/** JOIN_ROOM, answered. */
async function enter(client: RawClient, room: string): Promise<void> {
  client.sendPy({ cmd: '100', room });
  await waitFor(
    client,
    (m) => m.cmd === '101' && String(m.room).toLowerCase() === room.toLowerCase(),
    1,
  );
}

async function health(node: SpawnedServer): Promise<Record<string, unknown>> {
  const response = await fetch(`http://127.0.0.1:${node.httpPort}/healthz`);
  return (await response.json()) as Record<string, unknown>;
}

async function metric(node: SpawnedServer, name: string): Promise<number | undefined> {
  const response = await fetch(`http://127.0.0.1:${node.httpPort}/metrics`);
  const line = (await response.text()).split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

beforeAll(async () => {
  if (skip) return;
  redis = await startRedis();
  for (let i = 0; i < 3; i++) nodes.push(await startNode());
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.close();
  await Promise.all(nodes.map((n) => n.stop()));
  await redis?.stop();
}, 60_000);

describe.skipIf(skip)('a cluster seen from any of its nodes', () => {
  it('counts users and nodes across the cluster on /healthz and /metrics, besides its own', async () => {
    const a = await connect(nodes[0]!.port, 'hz0');
    const b = await connect(nodes[1]!.port, 'hz1');
    const c = await connect(nodes[1]!.port, 'hz2', { lobby: false });
    // The numbers are read at most once a second: asked until they catch up (bounded).
    const seen = await until(
      () => health(nodes[2]!),
      (h) => (h.cluster as { users?: number } | undefined)?.users === 3,
    );
    expect(seen).toMatchObject({
      status: 'ok',
      users: 0,
      connections: 0,
      redis: 'reachable',
      cluster: { users: 3, nodes: 3 },
    });
    expect(await health(nodes[1]!)).toMatchObject({ users: 1, connections: 2 });
    const users = await until(
      () => metric(nodes[0]!, 'confab_cluster_users'),
      (n) => n === 3,
    );
    expect(users).toBe(3);
    expect(await metric(nodes[0]!, 'confab_cluster_nodes')).toBe(3);
    expect(await metric(nodes[0]!, 'confab_redis_up')).toBe(1);
    // This node's own lobby, as before.
    expect(await metric(nodes[0]!, 'confab_room_members{room="lobby"}')).toBe(1);
    for (const x of [a, b, c]) x.client.close();
    const after = await until(
      () => health(nodes[2]!),
      (h) => (h.cluster as { users?: number } | undefined)?.users === 0,
    );
    expect(after).toMatchObject({ cluster: { users: 0, nodes: 3 } });
  }, 60_000);

  it('lists on ROOMS the rooms with members on any node, with cluster-wide counts', async () => {
    const a = await connect(nodes[0]!.port, 'ro0', { lobby: false });
    const b = await connect(nodes[1]!.port, 'ro1');
    const c = await connect(nodes[2]!.port, 'ro2', { lobby: false });
    await enter(a.client, 'Physics');
    await enter(a.client, 'maths');
    await enter(b.client, 'physics');
    c.client.sendPy({ cmd: '104' });
    const listed = await c.client.expect('105');
    // Nobody on node 2 is in any room, and it had never heard of these.
    expect(listed.rooms).toEqual([
      { room: LOBBY, userCount: 1, joined: false },
      { room: 'Physics', userCount: 2, joined: false },
      { room: 'maths', userCount: 1, joined: false },
    ]);
    a.client.sendPy({ cmd: '102', room: 'maths' });
    await a.client.expect('103');
    // The leave is told asynchronously: asked again until it is in (bounded).
    const again = await until(
      async () => {
        c.client.sendPy({ cmd: '104' });
        return (await c.client.expect('105')).rooms as { room: string }[];
      },
      (rooms) => rooms.length === 2,
    );
    expect(again.map((r) => r.room)).toEqual([LOBBY, 'Physics']);
    for (const x of [a, b, c]) x.client.close();
  }, 60_000);
});

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

/**
 * Polls `read` until `done` holds of its result (for at most `ms`, by default 10 s), and
 * returns the last result.
 */
async function until<T>(
  read: () => Promise<T>,
  done: (value: T) => boolean,
  ms = 10_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  let value = await read();
  for (let i = 0; i < ms / 100 && Date.now() < deadline && !done(value); i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    value = await read();
  }
  return value;
}

/** JOIN_ROOM, answered. */
async function enter(client: RawClient, room: string): Promise<void> {
  client.sendPy({ cmd: '100', room });
  await client.waitFor(
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

  it('takes a session back on another node while its ghost is still open', async () => {
    const ghost = await connect(nodes[0]!.port, 'gus');
    const token = String(ghost.welcome.resume);
    await enter(ghost.client, 'study');
    const watcher = await connect(nodes[1]!.port, 'wes');
    await enter(watcher.client, 'study');
    const lobby = (await ghost.client.expect('101')) as Message;
    const back = await open(nodes[2]!.port);
    back.sendPy({
      cmd: '0',
      nickname: 'whoever',
      caps: CAPS,
      resume: token,
      since: [{ room: LOBBY, epoch: lobby.epoch, id: lobby.top }],
    });
    const welcome = await back.expect('03', 10_000);
    expect(welcome).toMatchObject({ resumed: true, nickname: 'gus' });
    expect(welcome.resume).not.toBe(token);
    // The old connection is told and closed; nobody sees it leave or join.
    expect(await ghost.client.expect('90', 10_000)).toMatchObject({ code: 2007 });
    await ghost.client.expectClose(10_000);
    // Each room's history is read on its own: their "101"s come in either order, so both
    // are waited for.
    await back.waitFor((m) => m.cmd === '101', 2);
    expect(
      all(back, '101')
        .map((m) => m.room)
        .sort(),
    ).toEqual([LOBBY, 'study']);
    back.sendPy({ cmd: '7', room: 'study', msg: 'back again' });
    await watcher.client.waitFor((m) => m.cmd === '70' && m.msg === 'back again', 1);
    expect(all(watcher.client, '70').find((m) => m.msg === 'back again')?.from).toBe('gus');
    watcher.client.sendPy({ cmd: '1', room: 'study' });
    const users = (await watcher.client.expect('10')).users as unknown[][];
    expect(users.map((u) => u[0])).toEqual(['gus', 'wes']);
    expect(all(watcher.client, '30')).toEqual([]);
    expect(all(watcher.client, '8').filter((m) => m.nickname === 'gus')).toEqual([]);
    // A token works once: presented again, on any node, it is an ordinary CONNECT.
    const again = await connect(nodes[1]!.port, 'gus2', { resume: token });
    expect(again.welcome).toMatchObject({ resumed: false, nickname: 'gus2' });
    for (const c of [back, watcher.client, again.client]) c.close();
  }, 60_000);

  it('takes a session back on another node after its node was killed', async () => {
    const doomed = await startNode();
    nodes.push(doomed);
    const victim = await connect(doomed.port, 'vic');
    const token = String(victim.welcome.resume);
    await enter(victim.client, 'lab');
    const watcher = await connect(nodes[1]!.port, 'wil');
    await enter(watcher.client, 'lab');
    doomed.child.kill('SIGKILL');
    await victim.client.closed;
    const back = await open(nodes[0]!.port);
    back.sendPy({ cmd: '0', nickname: 'whoever', caps: CAPS, resume: token });
    expect(await back.expect('03', 10_000)).toMatchObject({ resumed: true, nickname: 'vic' });
    await back.waitFor((m) => m.cmd === '101' && m.room === 'lab', 1);
    watcher.client.sendPy({ cmd: '7', room: 'lab', msg: 'still there?' });
    await back.waitFor((m) => m.cmd === '70' && m.msg === 'still there?', 1);
    // Once the dead node is reaped, its member is not: it lives on this node now. The reap
    // comes up to a timeout and a heartbeat after the kill, and /healthz reads the count at
    // most once a second: asked for longer than the timeout.
    const reaped = await until(
      () => health(nodes[0]!),
      (h) => (h.cluster as { nodes?: number } | undefined)?.nodes === 3,
      TIMEOUT_S * 1000 + 20_000,
    );
    expect(reaped).toMatchObject({ cluster: { nodes: 3 } });
    watcher.client.sendPy({ cmd: '1', room: 'lab' });
    const users = (await watcher.client.expect('10')).users as unknown[][];
    expect(users.map((u) => u[0])).toEqual(['vic', 'wil']);
    expect(all(watcher.client, '30')).toEqual([]);
    for (const c of [back, watcher.client]) c.close();
  }, 60_000);

  it('delivers every chat once, in order, while Redis kills the subscriber connections', async () => {
    const members: RawClient[] = [];
    for (let i = 0; i < 6; i++) {
      members.push((await connect(nodes[i % 3]!.port, `pub${i}`, { lobby: false })).client);
    }
    for (const m of members) await enter(m, 'killroom');
    const admin = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await admin.connect();
    const COUNT = 60;
    let kills = 0;
    try {
      for (let i = 0; i < COUNT; i++) {
        members.forEach((m, j) => {
          m.sendPy({ cmd: '7', room: 'killroom', msg: `${j}:${i}` });
        });
        if (i % 10 === 5) {
          // Every node's subscriber is back before the next kill (bounded wait: a reconnect
          // on a loaded machine may take seconds).
          const deadline = Date.now() + 15_000;
          for (let w = 0; w < 750 && Date.now() < deadline; w++) {
            const list = String(await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub'));
            if (list.trim().split('\n').length >= 3) break;
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
          kills += Number(await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub'));
        }
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    } finally {
      admin.disconnect();
    }
    expect(kills).toBeGreaterThanOrEqual(6 * 3);
    for (const [j, m] of members.entries()) {
      const mine = (x: Message) => x.cmd === '70' && x.room === 'killroom';
      await m.waitFor(mine, 5 * COUNT);
      const got = (m.received as Message[]).filter(mine);
      expect(got).toHaveLength(5 * COUNT);
      const ids = got.map((x) => Number(x.id));
      for (let k = 1; k < ids.length; k++) expect(ids[k]).toBeGreaterThan(ids[k - 1]!);
      // Each other member's chats, every one once, in the order sent.
      for (let other = 0; other < members.length; other++) {
        if (other === j) continue;
        const from = got.filter((x) => x.from === `pub${other}`).map((x) => x.msg);
        expect(from).toEqual(Array.from({ length: COUNT }, (_, i) => `${other}:${i}`));
      }
    }
    for (const m of members) m.close();
  }, 120_000);
});

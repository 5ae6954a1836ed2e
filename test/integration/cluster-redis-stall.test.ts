/**
 * Redis that stalls rather than dies: its connections stay up but nothing answers for a
 * while (a fork for a snapshot of a big dataset, a paused VM or container, DEBUG SLEEP).
 * Here the redis-server this file started is stopped with SIGSTOP and continued with
 * SIGCONT. A stall shorter than --cluster-timeout must cost nothing but the wait; a longer
 * one closes each node's clients with 3006 (they may have been reaped meanwhile) and the
 * cluster must then serve them again, with every nickname held once.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../helpers/cluster.js';
import { RawClient } from '../helpers/raw-client.js';
import { type RedisServer, startRedis, withoutRedis } from '../helpers/redis.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';
import { wsClient } from '../helpers/ws-client.js';

const skip = withoutRedis();
const TIMEOUT_S = 3;
const CAPS = ['errors', 'rooms', 'history'];
const P = 'confab:{presence}:';

let redis: RedisServer;
let admin: Redis;
const nodes: SpawnedServer[] = [];
const clients: RawClient[] = [];
let stopped = false;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/**
 * Stops the redis-server this file started (its TCP connections stay up) for at most `ms`.
 * STALL_BY=pause does it with CLIENT PAUSE ALL instead, which Redis 7.0 lets nobody lift
 * early (CLIENT UNPAUSE waits too): that stall lasts `ms`.
 */
const BY_PAUSE = process.env.STALL_BY === 'pause';
let pausedUntil = 0;
function stall(ms: number): void {
  if (BY_PAUSE) {
    pausedUntil = Date.now() + ms;
    void admin.call('CLIENT', 'PAUSE', String(ms), 'ALL');
  } else process.kill(redis.pid, 'SIGSTOP');
  stopped = true;
}
async function unstall(): Promise<void> {
  if (!stopped) return;
  stopped = false;
  if (BY_PAUSE) await sleep(pausedUntil - Date.now());
  else process.kill(redis.pid, 'SIGCONT');
}

async function open(port: number): Promise<RawClient> {
  const client = await RawClient.open(port);
  clients.push(client);
  return client;
}

async function member(node: number, nickname: string, extra: object = {}) {
  const c = await open(nodes[node]!.port);
  c.sendPy({ cmd: '0', nickname, caps: CAPS, ...extra });
  const welcome = await c.expect('03', 10_000);
  return { c, welcome };
}

function chats(c: RawClient): string[] {
  return c.received.filter((m) => m.cmd === '70').map((m) => `${m.from}:${m.msg}`);
}

/** Every node's own view of who is in the lobby, and Presence's. */
async function nicknames(): Promise<string[]> {
  return Object.keys(await admin.hgetall(`${P}nicks`)).sort();
}

beforeAll(async () => {
  if (skip) return;
  redis = await startRedis();
  admin = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  const common = ['--cluster-timeout', String(TIMEOUT_S), '--rate-limit', '0'];
  for (let i = 0; i < 3; i++) nodes.push(await spawnServer(['--redis', redis.url, ...common]));
}, 60_000);

afterAll(async () => {
  await unstall();
  for (const c of clients) c.close();
  await Promise.all(nodes.map((n) => n.stop()));
  admin?.disconnect();
  await redis?.stop();
}, 60_000);

describe.skipIf(skip)('Redis that stalls', () => {
  it('for less than the timeout: chats wait, then arrive once each and in order; nobody leaves', async () => {
    const ann = await member(0, 'ann');
    const bob = await member(1, 'bob');
    const cat = await member(2, 'cat');
    const dan = await open(nodes[2]!.port);
    dan.sendPy({ cmd: '0', nickname: 'dan' });
    await dan.expect('03', 10_000);
    await until(
      'everyone to see dan',
      () => bob.c.received.some((m) => m.nickname === 'dan'),
      5_000,
    );
    stall(1_000);
    try {
      for (let i = 0; i < 5; i++) {
        ann.c.sendPy({ cmd: '7', msg: `a${i}`, room: 'lobby', cid: `a${i}` });
        bob.c.sendPy({ cmd: '7', msg: `b${i}`, room: 'lobby', cid: `b${i}` });
      }
      // Requests that wait on Presence are answered once it answers.
      cat.c.sendPy({ cmd: '100', room: 'den' });
      dan.sendPy({ cmd: '1' });
      await sleep(1_000);
    } finally {
      await unstall();
    }
    const den = await cat.c.waitFor((m) => m.cmd === '101' && m.room === 'den', 1, 10_000);
    expect(den.members).toEqual(['cat']);
    expect((await dan.expect('10', 10_000)).users).toHaveLength(4);
    ann.c.sendPy({ cmd: '7', msg: 'end', room: 'lobby' });
    bob.c.sendPy({ cmd: '7', msg: 'end', room: 'lobby' });
    const expected = [0, 1, 2, 3, 4].flatMap((i) => [`ann:a${i}`, `bob:b${i}`]);
    for (const c of [cat.c, dan]) {
      await c.waitFor((m) => m.cmd === '70' && m.msg === 'end', 2, 10_000);
      const got = chats(c).filter((t) => !t.endsWith(':end'));
      expect([...got].sort()).toEqual([...expected].sort());
      expect(got.filter((t) => t.startsWith('ann:'))).toEqual(
        expected.filter((t) => t.startsWith('ann:')),
      );
      expect(got.filter((t) => t.startsWith('bob:'))).toEqual(
        expected.filter((t) => t.startsWith('bob:')),
      );
    }
    await ann.c.waitFor((m) => m.cmd === '71', 5, 10_000);
    for (const c of [ann.c, bob.c, cat.c, dan]) {
      expect(c.isClosed).toBe(false);
      expect(c.received.filter((m) => m.cmd === '30' || m.cmd === '90')).toEqual([]);
    }
    expect(await nicknames()).toEqual(['ann', 'bob', 'cat', 'dan']);
    for (const c of [ann.c, bob.c, cat.c, dan]) c.sendPy({ cmd: '3' });
    await until('the lobby to empty', async () => (await nicknames()).length === 0, 10_000);
  }, 60_000);

  it('for longer than the timeout: clients told 3006 come back, each nickname held once', async () => {
    const ann = await member(0, 'ann');
    const bob = await member(1, 'bob');
    const cat = await member(2, 'cat');
    const dan = await open(nodes[0]!.port);
    dan.sendPy({ cmd: '0', nickname: 'dan' });
    await dan.expect('03', 10_000);
    const web = await wsClient(nodes[1]!.httpPort!);
    web.send({ cmd: '0', nickname: 'wes', caps: CAPS });
    await web.expect('03', 10_000);
    await until('cat to see wes', () => cat.c.received.some((m) => m.nickname === 'wes'), 5_000);
    const lobby = (await ann.c.expect('101')) as unknown as { epoch: string; top: number };
    const since = [{ room: 'lobby', epoch: lobby.epoch, id: lobby.top }];
    let back: RawClient[] = [];
    stall((TIMEOUT_S + 2) * 1000);
    try {
      ann.c.sendPy({ cmd: '7', msg: 'hello?', room: 'lobby', cid: 'x1' });
      // Cut off for longer than the timeout, every node closes its clients.
      await Promise.all(
        [ann.c, bob.c, cat.c, dan].map((c) => c.expectClose((TIMEOUT_S + 3) * 1000)),
      );
      for (const c of [ann.c, bob.c, cat.c]) {
        expect(c.received.find((m) => m.cmd === '90')?.code).toBe(3006);
      }
      // 3006 on a WebSocket: close code 1013.
      expect(await web.closed).toBe(1013);
      // Each comes back at once, while Redis still stalls, to another node.
      const again = async (node: number, nickname: string, token: unknown) => {
        const c = await open(nodes[node]!.port);
        c.sendPy({ cmd: '0', nickname, caps: CAPS, resume: token, since });
        return c;
      };
      back = [
        await again(1, 'ann', ann.welcome.resume),
        await again(2, 'bob', bob.welcome.resume),
        await again(0, 'cat', cat.welcome.resume),
        await open(nodes[0]!.port),
      ];
      back[3]!.sendPy({ cmd: '0', nickname: 'dan' });
      await sleep(1_000);
    } finally {
      await unstall();
    }
    // Every CONNECT that waited is answered, and every one gets its nickname back.
    for (const c of back) await c.expect('03', 15_000);
    const [ann2, bob2, cat2, dan2] = back as [RawClient, RawClient, RawClient, RawClient];
    // Nobody reaped anybody: Presence's clock counts the stall as part of the timeout only.
    expect(await admin.zcard(`${P}nodes`)).toBe(3);
    for (const n of nodes) expect(n.output()).not.toContain('stopped answering');
    expect(await nicknames()).toEqual(['ann', 'bob', 'cat', 'dan']);
    // The chat sent into the stall was stored once, and everyone resuming is given it.
    for (const c of [ann2, bob2, cat2]) {
      await c.waitFor((m) => m.cmd === '70' && m.msg === 'hello?', 1, 10_000);
    }
    const hello = ann2.received.find((m) => m.cmd === '70' && m.msg === 'hello?');
    for (const c of [bob2, cat2]) {
      expect(c.received.filter((m) => m.cmd === '70' && m.msg === 'hello?')).toHaveLength(1);
    }
    ann2.sendPy({ cmd: '7', msg: 'hello?', room: 'lobby', cid: 'x1' });
    expect(await ann2.expect('71', 10_000)).toMatchObject({ id: hello?.id, duplicate: true });
    cat2.sendPy({ cmd: '1', room: 'lobby' });
    const users = ((await cat2.expect('10', 10_000)).users as unknown[][]).map((u) => u[0]);
    expect([...users].sort()).toEqual(['ann', 'bob', 'cat', 'dan']);
    for (const c of back) expect(c.isClosed).toBe(false);
    for (const c of back) c.sendPy({ cmd: '3' });
    void dan2;
    await until('the lobby to empty', async () => (await nicknames()).length === 0, 10_000);
  }, 60_000);

  it('out of memory (noeviction) past the timeout: chats are refused, nobody is cut off', async () => {
    const ada = await member(0, 'oom-ada');
    const bea = await member(1, 'oom-bea');
    const cay = await member(2, 'oom-cay');
    const used = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1]);
    await admin.config('SET', 'maxmemory', String(Math.max(1, used - 1_000_000)));
    try {
      // The chat cannot be stored: its sender is told so and closed, as the docs say.
      ada.c.sendPy({ cmd: '7', msg: 'while full' });
      expect(await ada.c.expect('90')).toMatchObject({ code: 3005 });
      await sleep(TIMEOUT_S * 1000 * 2);
    } finally {
      await admin.config('SET', 'maxmemory', '0');
    }
    for (const quiet of [bea, cay]) {
      expect(quiet.c.received.filter((m) => m.cmd === '90')).toEqual([]);
    }
    bea.c.sendPy({ cmd: '7', msg: 'room again' });
    await cay.c.waitFor((m) => m.cmd === '70' && m.msg === 'room again', 1, 10_000);
    expect(cay.c.isClosed).toBe(false);
    for (const quiet of [bea, cay]) quiet.c.close();
    await until('the lobby to empty', async () => (await nicknames()).length === 0, 10_000);
  }, 60_000);

  it('/healthz says degraded; a CONNECT waiting on it meets the handshake deadline, with 3006', async () => {
    const node = await spawnServer([
      '--redis',
      redis.url,
      '--cluster-timeout',
      String(TIMEOUT_S),
      '--handshake-timeout',
      '1',
    ]);
    try {
      stall(3_000);
      try {
        const waiting = await open(node.port);
        waiting.sendPy({ cmd: '0', nickname: 'eve', caps: CAPS });
        const res = await fetch(`http://127.0.0.1:${node.httpPort}/healthz`, {
          signal: AbortSignal.timeout(5_000),
        });
        expect(await res.json()).toMatchObject({ status: 'degraded', redis: 'unreachable' });
        await waiting.expectClose(5_000);
        // It did send CONNECT in time: it is told why it gets no answer, as a client of a
        // node cut off is, and comes back (to another node if it knows one).
        expect(waiting.received.find((m) => m.cmd === '90')?.code).toBe(3006);
      } finally {
        await unstall();
      }
      await until('eve to be freed', async () => (await nicknames()).length === 0, 10_000);
    } finally {
      await node.stop();
    }
  }, 60_000);

  it('SIGTERM while it stalls: the node exits without waiting for Redis to answer', async () => {
    // Longer than the exit may take, so that it is not cut off first; short enough that the
    // others reap it (its member was not released) before the next test counts the lobby.
    const node = await spawnServer([
      '--redis',
      redis.url,
      '--cluster-timeout',
      '6',
      '--shutdown-timeout',
      '1',
    ]);
    const exited = new Promise<void>((resolve) => node.child.once('exit', () => resolve()));
    let stoppedInStall = false;
    try {
      const c = await open(node.port);
      c.sendPy({ cmd: '0', nickname: 'fay', caps: CAPS });
      await c.expect('03', 10_000);
      stall(20_000);
      const stopped = Date.now();
      node.child.kill('SIGTERM');
      // Its client is told at once. Then the node waits for Redis two seconds at most (its
      // client gone at once, --shutdown-timeout does not count): it must not linger on the
      // connections it gave up on (ioredis's own wait for them was 2 s more), nor wait for
      // the stall's end.
      expect((await c.waitFor((m) => m.cmd === '90', 1, 5_000)).code).toBe(3001);
      stoppedInStall = await Promise.race([
        exited.then(() => true),
        sleep(Math.max(0, stopped + 3_500 - Date.now())).then(() => false),
      ]);
    } finally {
      await unstall();
      await node.stop();
    }
    expect(stoppedInStall).toBe(true);
  }, 60_000);

  it('a node paused past the timeout: what its clients sent meanwhile is not shown under names given away', async () => {
    // A paused VM or container, a stopped process: the node's clock stops, Redis's does not.
    const paused = await spawnServer([
      '--redis',
      redis.url,
      '--cluster-timeout',
      String(TIMEOUT_S),
    ]);
    try {
      const bob = await member(0, 'bob');
      const old = await open(paused.port);
      old.sendPy({ cmd: '0', nickname: 'ann', caps: CAPS });
      await old.expect('03', 10_000);
      await bob.c.waitFor((m) => m.cmd === '8' && m.nickname === 'ann', 1, 5_000);
      let ann: RawClient;
      paused.child.kill('SIGSTOP');
      try {
        // Waits in the paused node's socket.
        old.sendPy({ cmd: '7', msg: 'sent while paused', room: 'lobby' });
        // The others reap the node and free its nicknames; someone else takes "ann".
        await bob.c.waitFor((m) => m.cmd === '30' && m.nickname === 'ann', 1, 15_000);
        ann = (await member(1, 'ann')).c;
      } finally {
        paused.child.kill('SIGCONT');
      }
      // Back, the node learns it was reaped and closes its clients.
      await old.expectClose(10_000);
      expect(old.received.find((m) => m.cmd === '90')?.code).toBe(3006);
      // Whatever it did meanwhile is in Redis by now: ask the room's history.
      bob.c.sendPy({ cmd: '106', room: 'lobby' });
      const page = (await bob.c.expect('107', 10_000)).messages as { msg: string }[];
      expect(page.map((m) => m.msg)).not.toContain('sent while paused');
      // The new "ann" never said it, and nobody was shown it as hers.
      for (const c of [bob.c, ann]) {
        expect(c.received.filter((m) => m.cmd === '70' && m.msg === 'sent while paused')).toEqual(
          [],
        );
      }
      ann.sendPy({ cmd: '3' });
      bob.c.sendPy({ cmd: '3' });
      await until('the lobby to empty', async () => (await nicknames()).length === 0, 10_000);
    } finally {
      await paused.stop();
    }
  }, 60_000);
});

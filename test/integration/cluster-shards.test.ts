/**
 * Two confab processes whose rooms are spread over two real redis-servers
 * (`--redis A --redis-shards B`): chats, whispers, history and resumes across
 * nodes with rooms on both instances; one instance restarted empty; and a node
 * that cannot start with a shard it cannot reach or a list the others do not use.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agreeOnShards, fnv1a32, shardListHash, shardOf } from '../../src/cluster/shards.js';
import { roomKey } from '../../src/core/rooms.js';
import { roomTag } from '../../src/store/redis-history.js';
import { until } from '../helpers/cluster.js';
import { join as joinLobby, RawClient } from '../helpers/raw-client.js';
import { type RedisServer, startRedis, withoutRedis } from '../helpers/redis.js';
import { freePort, serveExit, serveProcess, stopProcess } from '../helpers/servers.js';
import { type SpawnedServer, spawnServer as spawnAny } from '../helpers/spawn-server.js';

/**
 * A node with --redis-shards may wait up to 10 s before it listens, by design: a Redis emptied
 * moments ago (each test's Redis is new) is waited out for running nodes to record their shard
 * list. Twice the helper's usual patience, so that a machine loaded by the rest of the suite
 * does not fail the start.
 */
const spawnServer = (args: string[]) => spawnAny(args, {}, undefined, 30_000);

const skip = withoutRedis();
const CAPS = ['errors', 'rooms', 'history', 'whispers'];
const ROOMS = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot'];
/** The instance (0: --redis, 1: --redis-shards) each room lives on. */
const shardOfRoom = (room: string) => shardOf(roomKey(room), 2);

/**
 * A node of its own on two new Redis servers, `--redis` on the first and `--redis-shards` on
 * `shard`, which `body` may stop; everything is stopped after.
 */
async function withShardedNode(
  extra: readonly string[],
  body: (node: SpawnedServer, shard: RedisServer) => Promise<void>,
): Promise<void> {
  const own = [await startRedis(), await startRedis()];
  let node: SpawnedServer | undefined;
  try {
    node = await spawnServer(['--redis', own[0]!.url, '--redis-shards', own[1]!.url, ...extra]);
    await body(node, own[1]!);
  } finally {
    await node?.stop();
    await own[0]!.stop();
    await own[1]!.stop().catch(() => {});
  }
}

type Message = Record<string, unknown> & { cmd: string };

let a: RedisServer;
let b: RedisServer;
const nodes: SpawnedServer[] = [];
const clients: RawClient[] = [];

async function connect(node: number, nickname: string, extra: object = {}): Promise<RawClient> {
  const client = await RawClient.open(nodes[node]!.port);
  clients.push(client);
  client.sendPy({ cmd: '0', nickname, caps: CAPS, lobby: false, ...extra });
  return client;
}

async function join(client: RawClient, room: string, since?: object): Promise<Message> {
  client.sendPy({ cmd: '100', room, ...(since === undefined ? {} : { since }) });
  return (await client.waitFor((m) => m.cmd === '101' && m.room === room, 1, 10_000)) as Message;
}

const chats = (client: RawClient, room: string) =>
  (client.received as Message[]).filter((m) => m.cmd === '70' && m.room === room);

/** Runs `confab serve` with `args`, expecting a start-up error: its exit code and stderr. */
function failedStart(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return serveExit(['--port', '0', '--http-port', 'off', '--history', 'memory', ...args]);
}

beforeAll(async () => {
  if (skip) return;
  a = await startRedis();
  b = await startRedis();
  for (let i = 0; i < 2; i++) {
    nodes.push(
      await spawnServer([
        '--redis',
        a.url,
        '--redis-shards',
        b.url,
        '--cluster-timeout',
        '30',
        '--rate-limit',
        '0',
      ]),
    );
  }
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.close();
  await Promise.all(nodes.map((n) => n.stop()));
  await a?.stop();
  await b?.stop();
}, 60_000);

describe.skipIf(skip)('rooms sharded over two Redis instances', () => {
  it('the rooms of this test live on both instances', () => {
    const shards = new Set(ROOMS.map(shardOfRoom));
    expect(shards).toEqual(new Set([0, 1]));
  });

  it('chats, whispers, history and a resume work across nodes, each room on its instance', async () => {
    const ann = await connect(0, 'ann');
    const bob = await connect(1, 'bob');
    const welcome = (await ann.expect('03')) as Message;
    await bob.expect('03');
    for (const room of ROOMS) {
      await join(ann, room);
      await join(bob, room);
    }
    for (const room of ROOMS) {
      ann.sendPy({ cmd: '7', room, msg: `ann in ${room}` });
      bob.sendPy({ cmd: '7', room, msg: `bob in ${room}` });
    }
    for (const room of ROOMS) {
      for (const c of [ann, bob]) {
        // The other's chat as "70", its own as "71".
        await c.waitFor((m) => m.cmd === '70' && m.room === room);
        const own = (await c.waitFor((m) => m.cmd === '71' && m.room === room)) as Message;
        expect([room, [chats(c, room)[0]!.id, own.id].sort()]).toEqual([room, [1, 2]]);
      }
    }
    ann.sendPy({ cmd: '2', to: 'bob', msg: 'psst' });
    await ann.expect('22');
    await bob.waitFor((m) => m.cmd === '70' && m.msg === 'psst' && m.room === undefined);

    // Each room's history is on its own instance, and only there.
    for (const [i, server] of [a, b].entries()) {
      const admin = new Redis(server.url, { protocol: 2, maxRetriesPerRequest: 1 });
      try {
        for (const room of ROOMS) {
          const msgs = `confab:h:{r${roomTag(roomKey(room))}}:msgs`;
          expect([room, await admin.exists(msgs)]).toEqual([room, shardOfRoom(room) === i ? 1 : 0]);
        }
      } finally {
        admin.disconnect();
      }
    }

    // A newcomer on the other node gets each room's history on joining.
    const cat = await connect(1, 'cat');
    await cat.expect('03');
    for (const room of ROOMS) {
      const header = await join(cat, room);
      expect(header.top).toBe(2);
      await cat.waitFor((m) => m.cmd === '70' && m.room === room, 2);
      const got = chats(cat, room);
      expect(got.map((m) => m.id)).toEqual([1, 2]);
      expect(got.map((m) => m.msg).sort()).toEqual([`ann in ${room}`, `bob in ${room}`]);
    }

    // Ann resumes on the other node from what she has of one room per instance: the chats
    // sent since follow once each, then live ones, with no gap.
    const picked = [
      ROOMS.find((r) => shardOfRoom(r) === 0)!,
      ROOMS.find((r) => shardOfRoom(r) === 1)!,
    ];
    const epochs = new Map<string, unknown>();
    for (const room of ROOMS) {
      const header = (ann.received as Message[]).find((m) => m.cmd === '101' && m.room === room);
      epochs.set(room, header?.epoch);
    }
    for (const room of picked) bob.sendPy({ cmd: '7', room, msg: `while away in ${room}` });
    for (const room of picked) {
      await ann.waitFor((m) => m.cmd === '70' && m.msg === `while away in ${room}`);
    }
    const back = await connect(1, 'ann-again', {
      resume: welcome.resume,
      since: picked.map((room) => ({ room, epoch: epochs.get(room), id: 2 })),
    });
    expect(await back.expect('03')).toMatchObject({ resumed: true, nickname: 'ann' });
    await ann.expectClose(10_000);
    for (const room of picked) {
      expect(await back.waitFor((m) => m.cmd === '101' && m.room === room)).toMatchObject({
        recovered: true,
        top: 3,
      });
      bob.sendPy({ cmd: '7', room, msg: `live in ${room}` });
      await back.waitFor((m) => m.cmd === '70' && m.room === room, 2);
      expect(chats(back, room).map((m) => [m.id, m.msg])).toEqual([
        [3, `while away in ${room}`],
        [4, `live in ${room}`],
      ]);
    }
    for (const c of [back, bob, cat]) c.close();
  }, 120_000);

  it('an instance restarted empty loses its own rooms’ history only; nicknames stay claimed', async () => {
    const dan = await connect(0, 'dan');
    const eve = await connect(1, 'eve');
    const header = (await dan.expect('03')) as Message;
    expect(header.resumed).toBe(false);
    await eve.expect('03');
    const before = new Map<string, Message>();
    for (const room of ROOMS) {
      before.set(room, await join(dan, room));
      await join(eve, room);
    }
    await b.restart();
    const onB = ROOMS.filter((r) => shardOfRoom(r) === 1);
    const onA = ROOMS.filter((r) => shardOfRoom(r) === 0);
    // Live members of the rooms on the restarted instance are told, those of the others not.
    for (const room of onB) {
      await eve.waitFor((m) => m.cmd === '108' && m.room === room, 1, 20_000);
    }
    for (const room of ROOMS) {
      // Queued, not failed, while the node's client for the instance reconnects.
      dan.sendPy({ cmd: '7', room, msg: `after in ${room}`, cid: `after-${room}` });
      const stored = (await dan.waitFor(
        (m) => m.cmd === '71' && m.cid === `after-${room}`,
        1,
        10_000,
      )) as Message;
      const top = Number(before.get(room)!.top);
      expect([room, stored.id]).toEqual([room, onB.includes(room) ? 1 : top + 1]);
      await eve.waitFor((m) => m.cmd === '70' && m.room === room && m.msg === `after in ${room}`);
    }
    expect(
      (eve.received as Message[])
        .filter((m) => m.cmd === '108')
        .map((m) => m.room)
        .sort(),
    ).toEqual([...onB].sort());
    // A member coming back to each room from what it had before the restart.
    const fay = await connect(0, 'fay');
    await fay.expect('03');
    for (const room of ROOMS) {
      const old = before.get(room)!;
      const again = await join(fay, room, { epoch: old.epoch, id: Number(old.top) });
      if (onA.includes(room)) expect(again).toMatchObject({ recovered: true, epoch: old.epoch });
      else expect(again).toMatchObject({ recovered: false, reason: 'epoch' });
    }
    // Presence lives on --redis: the nicknames held before are still taken.
    const dup = await RawClient.open(nodes[1]!.port);
    clients.push(dup);
    dup.sendPy({ cmd: '0', nickname: 'dan' });
    await dup.expect('01');
    for (const c of [dan, eve, fay, dup]) c.close();
  }, 120_000);

  /** Its own Redis, and a node of this timeout on it killed with SIGKILL. */
  async function killedCluster(
    timeout: string,
    test: (node: (args: string[]) => Promise<SpawnedServer>, own: RedisServer) => Promise<void>,
  ): Promise<void> {
    const own = await startRedis();
    const started: SpawnedServer[] = [];
    try {
      const node = async (args: string[]) => {
        const server = await spawnServer([
          '--redis',
          own.url,
          '--cluster-timeout',
          timeout,
          '--http-port',
          'off',
          // A later --cluster-timeout in args wins.
          ...args,
        ]);
        started.push(server);
        return server;
      };
      const old = await node([]);
      const exited = new Promise((resolve) => old.child.once('exit', resolve));
      old.child.kill('SIGKILL');
      await exited;
      await test(node, own);
    } finally {
      for (const s of started) await s.stop();
      await own.stop();
    }
  }

  it.each([
    ['3', '3'],
    ['8', '2'],
  ])(
    'a node with a new list starts once the nodes of the old one, all killed, have timed out (timeouts %s s, then %s s)',
    async (dead, next) => {
      const shard = await startRedis();
      try {
        await killedCluster(dead, async (node) => {
          // Longer than the share of a timeout a silence may count: the next heartbeat, the
          // new node's, takes the dead node's silence for a stall of Redis and forgives it.
          // So would each later one if the new node, alone, waited longer between them.
          await new Promise((resolve) => setTimeout(resolve, 2_000));
          const started = await node(['--redis-shards', shard.url, '--cluster-timeout', next]);
          expect(started.output()).toMatch(/waiting up to \d+ s for them to be heard from again/);
        });
      } finally {
        await shard.stop();
      }
    },
    60_000,
  );

  it('after Redis restarts empty, a node started with another list is refused once the running node records its own again', async () => {
    const own = await startRedis();
    const shard = await startRedis();
    let running: SpawnedServer | undefined;
    try {
      running = await spawnServer([
        '--redis',
        own.url,
        '--cluster-timeout',
        '3',
        '--http-port',
        'off',
      ]);
      // Away while Redis restarts empty, and for a while after: the newcomer finds nothing
      // recorded, and would record its own list first if it did not wait.
      running.child.kill('SIGSTOP');
      let newcomer: Promise<{ code: number | null; stderr: string }>;
      try {
        await own.restart();
        newcomer = failedStart([
          '--redis',
          own.url,
          '--redis-shards',
          shard.url,
          '--cluster-timeout',
          '3',
        ]);
        await new Promise((resolve) => setTimeout(resolve, 1_500));
      } finally {
        running.child.kill('SIGCONT');
      }
      const { code, stderr } = await newcomer;
      expect(stderr).toMatch(
        /^confab: --redis-shards differs from the list the running nodes.+\n$/,
      );
      expect(code).toBe(1);
      expect(running.child.exitCode).toBeNull();
      // The running node's list is the one recorded, so it keeps running with it.
      const redis = new Redis(own.url, { protocol: 2, maxRetriesPerRequest: 1 });
      try {
        expect(await redis.get(SHARDS)).toBe(shardListHash([]));
      } finally {
        redis.disconnect();
      }
    } finally {
      await running?.stop();
      await own.stop();
      await shard.stop();
    }
  }, 60_000);

  it('a node paused past its timeout while the cluster took another list stops when it comes back', async () => {
    const own = await startRedis();
    const shard = await startRedis();
    const started: SpawnedServer[] = [];
    try {
      const paused = await spawnServer([
        '--redis',
        own.url,
        '--cluster-timeout',
        '2',
        '--http-port',
        'off',
      ]);
      started.push(paused);
      const client = await RawClient.open(paused.port);
      clients.push(client);
      client.sendPy({ cmd: '0', nickname: 'sleeper' });
      await client.expect('03', 10_000);
      paused.child.kill('SIGSTOP');
      try {
        // Waits for the paused node's timeout, then records its own list.
        started.push(
          await spawnServer([
            '--redis',
            own.url,
            '--redis-shards',
            shard.url,
            '--cluster-timeout',
            '2',
            '--http-port',
            'off',
          ]),
        );
      } finally {
        paused.child.kill('SIGCONT');
      }
      await until('the paused node to exit', () => paused.child.exitCode !== null, 15_000);
      expect(paused.child.exitCode).toBe(1);
      expect(paused.output()).toMatch(
        /shutting down: another --redis-shards list is recorded for this cluster .+ while this one was away/,
      );
      expect(started[1]!.child.exitCode).toBeNull();
    } finally {
      for (const s of started) await s.stop();
      await own.stop();
      await shard.stop();
    }
  }, 60_000);

  it('a node waiting for the agreement stops at once on SIGTERM, leaving the stored list', async () => {
    const shard = await startRedis();
    try {
      await killedCluster('30', async (_node, own) => {
        const redis = new Redis(own.url, { protocol: 2, maxRetriesPerRequest: 1 });
        try {
          const stored = await redis.get(SHARDS);
          const server = serveProcess([
            '--port',
            '0',
            '--http-port',
            'off',
            '--history',
            'memory',
            '--redis',
            own.url,
            '--redis-shards',
            shard.url,
            '--cluster-timeout',
            '30',
          ]);
          try {
            await until('the warning', () => server.stdout().includes('waiting up to'), 15_000);
            const t0 = Date.now();
            server.child.kill('SIGTERM');
            expect(await server.exited).toBe(1);
            expect(Date.now() - t0).toBeLessThan(3_000);
          } finally {
            server.child.kill('SIGKILL');
          }
          expect(server.stderr()).toMatch(/stopped while waiting for the shard list agreement/);
          expect(await redis.get(SHARDS)).toBe(stored);
          // Only the killed node is left registered.
          expect(await redis.zcard(NODES)).toBe(1);
        } finally {
          redis.disconnect();
        }
      });
    } finally {
      await shard.stop();
    }
  }, 60_000);

  it('a node refuses to start with another shard list than the running nodes', async () => {
    const other = await startRedis();
    try {
      const { code, stderr } = await failedStart(['--redis', a.url, '--redis-shards', other.url]);
      expect(code).toBe(1);
      expect(stderr).toMatch(
        /^confab: --redis-shards differs from the list the running nodes.+\n$/,
      );
    } finally {
      await other.stop();
    }
  }, 60_000);

  const NODES = 'confab:{presence}:nodes';
  const TIMEOUTS = 'confab:{presence}:timeouts';
  const SHARDS = 'confab:{presence}:shards';
  const WAITING = 'confab:{presence}:shards-waiting';

  /**
   * A Redis of its own, the shard agreement's keys as Presence names them, a starting node
   * of this timeout asking by name, and Redis's time now.
   */
  async function agreement(
    timeoutMs: number,
    test: (
      redis: Redis,
      agree: (
        node: string,
        list: string,
        since?: number,
      ) => Promise<string | undefined | { waitMs: number }>,
      now: number,
    ) => Promise<void>,
  ): Promise<void> {
    const own = await startRedis();
    const redis = new Redis(own.url, { protocol: 2, maxRetriesPerRequest: 1 });
    try {
      const where = { key: SHARDS, nodes: NODES, timeouts: TIMEOUTS, waiting: WAITING, timeoutMs };
      const [secs, micros] = await redis.time();
      await test(
        redis,
        (node, list, since) => agreeOnShards(redis, { ...where, node, since }, list),
        Number(secs) * 1000 + Math.floor(Number(micros) / 1000),
      );
    } finally {
      redis.disconnect();
      await own.stop();
    }
  }

  /** An old list, run by nSilent alone, last heard 1 s before `now`, of this timeout. */
  async function silentNode(redis: Redis, now: number, timeoutMs: number): Promise<void> {
    await redis.set(SHARDS, 'list-old');
    await redis.zadd(NODES, now - 1_000, 'nSilent');
    await redis.zadd(TIMEOUTS, timeoutMs, 'nSilent');
  }

  /** Asks until the answer is agreement: nSilent, not heard again, has passed its timeout. */
  const untilSilentGone = (agree: () => Promise<unknown>) =>
    until('the silent node to time out', async () => (await agree()) === undefined, 10_000);

  it('a node that counted itself alone does not overwrite the list of one that started meanwhile', async () => {
    await agreement(30_000, async (redis, agree, now) => {
      // An old cluster's list, and a node dead for longer than the timeout: neither counts.
      await redis.set(SHARDS, 'old-list');
      await redis.zadd(NODES, now - 60_000, 'nDead');
      // nA heartbeats, finds no other live node, and is about to record its list ...
      await redis.zadd(NODES, now, 'nA');
      // ... when nB heartbeats and records its own.
      await redis.zadd(NODES, now, 'nB');
      expect(await agree('nB', 'list-b')).toBe('old-list');
      // nB was not alone, so it took the stored list: it stops. nA's record must not then
      // replace what a live node (nB, had it agreed) runs with: it is no longer alone.
      expect(await agree('nA', 'list-a')).toBe('old-list');
      // Once nB is gone, nA is alone and sets its list; a node with the same list agrees.
      await redis.zrem(NODES, 'nB');
      expect(await agree('nA', 'list-a')).toBeUndefined();
      await redis.zadd(NODES, now, 'nC');
      expect(await agree('nC', 'list-a')).toBeUndefined();
      expect(await agree('nC', 'list-c')).toBe('list-a');
      expect(await redis.get(SHARDS)).toBe('list-a');
    });
  }, 60_000);

  it('waits for nodes last heard before the starting node’s first heartbeat to beat again or time out', async () => {
    await agreement(10_000, async (redis, agree, now) => {
      // Heard 1 s before nA's first heartbeat (a silence that heartbeat forgave, say), 5 s timeout.
      await silentNode(redis, now, 5_000);
      await redis.zadd(NODES, now, 'nA');
      const wait = await agree('nA', 'list-a', now);
      expect(wait).toEqual({ waitMs: expect.any(Number) });
      expect((wait as { waitMs: number }).waitMs).toBeGreaterThan(0);
      expect((wait as { waitMs: number }).waitMs).toBeLessThanOrEqual(4_001);
      // The same list agrees at once; without a first heartbeat's time, the node runs.
      expect(await agree('nA', 'list-old', now)).toBeUndefined();
      expect(await agree('nA', 'list-a')).toBe('list-old');
      // Heard again: it runs, with its list.
      await redis.zadd(NODES, now + 1, 'nSilent');
      expect(await agree('nA', 'list-a', now)).toBe('list-old');
      // Not heard again: once its timeout has passed, nA is alone and sets its own.
      await redis.zadd(NODES, now - 1_000, 'nSilent');
      await untilSilentGone(() => agree('nA', 'list-a', now));
      expect(await redis.get(SHARDS)).toBe('list-a');
    });
  }, 60_000);

  it('does not count a node that waits too: nodes started together with a new list all start', async () => {
    await agreement(10_000, async (redis, agree, now) => {
      await silentNode(redis, now, 2_000);
      // nA and nB start with the new list; each has beaten after the other's first heartbeat.
      await redis.zadd(NODES, now, 'nA');
      expect(await agree('nA', 'list-new', now)).toEqual({ waitMs: expect.any(Number) });
      await redis.zadd(NODES, now + 1, 'nB');
      expect(await agree('nB', 'list-new', now + 1)).toEqual({ waitMs: expect.any(Number) });
      await redis.zadd(NODES, now + 2, 'nA');
      expect(await agree('nA', 'list-new', now)).toEqual({ waitMs: expect.any(Number) });
      await untilSilentGone(() => agree('nA', 'list-new', now));
      // nA runs with it now: nB agrees, a node with another list is refused.
      expect(await agree('nB', 'list-new', now + 1)).toBeUndefined();
      await redis.zadd(NODES, now + 3, 'nC');
      // Once nA has beaten since nC's first heartbeat.
      expect(await agree('nC', 'list-c', now + 3)).toEqual({ waitMs: expect.any(Number) });
      await redis.zadd(NODES, now + 4, 'nA');
      expect(await agree('nC', 'list-c', now + 3)).toBe('list-new');
      expect(await redis.hlen(WAITING)).toBe(0);
    });
  }, 60_000);

  it('counts each running node by its own timeout, not the starting one’s', async () => {
    await agreement(10_000, async (redis, agree, now) => {
      await redis.set(SHARDS, 'list-old');
      // Silent for 20 s: past the starting node's 10 s, within its own 60 s. It runs.
      await redis.zadd(NODES, now - 20_000, 'nSlow');
      await redis.zadd(TIMEOUTS, 60_000, 'nSlow');
      expect(await agree('nA', 'list-a')).toBe('list-old');
      // Silent for 5 s, within the starting node's 10 s, past its own 2 s: gone.
      await redis.zadd(NODES, now - 60_000, 'nSlow');
      await redis.zadd(NODES, now - 5_000, 'nQuick');
      await redis.zadd(TIMEOUTS, 2_000, 'nQuick');
      expect(await agree('nA', 'list-a')).toBeUndefined();
      // A node of an older version records no timeout: the starting node's stands in.
      await redis.zadd(NODES, now - 5_000, 'nOld');
      expect(await agree('nB', 'list-b')).toBe('list-a');
    });
  }, 60_000);

  it('a node refuses a list naming one Redis server twice, under another URL or database', async () => {
    // Its databases share one pub/sub: two brokers on it would each deliver every whisper.
    // Fresh servers with no running node, so nothing but this check stops the start.
    const own = [await startRedis(), await startRedis()];
    try {
      const [x, y] = [own[0]!, own[1]!];
      for (const shards of [`${x.url}/1`, `redis://localhost:${x.port}`]) {
        const { code, stderr } = await failedStart(['--redis', x.url, '--redis-shards', shards]);
        expect([shards, code]).toEqual([shards, 1]);
        expect(stderr).toMatch(
          /^confab: --redis-shards redis:\S+ is the Redis server of --redis redis:\S+ again: .+\n$/,
        );
      }
      const { code, stderr } = await failedStart([
        '--redis',
        x.url,
        '--redis-shards',
        `${y.url},${y.url}/2`,
      ]);
      expect(code).toBe(1);
      expect(stderr).toContain(
        `--redis-shards ${y.url}/2 is the Redis server of --redis-shards ${y.url} again`,
      );
    } finally {
      for (const r of own) await r.stop();
    }
  }, 120_000);

  it('a node exits with a one-line error naming a shard it cannot reach', async () => {
    const own = await startRedis();
    try {
      const dead = `redis://127.0.0.1:${await freePort()}`;
      const { code, stderr } = await failedStart(['--redis', own.url, '--redis-shards', dead]);
      expect(code).toBe(1);
      expect(stderr).toMatch(
        /^confab: cannot reach Redis at redis:\/\/127\.0\.0\.1:\d+ \(--redis-shards\): .+\n$/,
      );
      expect(stderr).toContain(dead);
    } finally {
      await own.stop();
    }
  }, 60_000);

  it('with a shard down, its rooms fail their chats (3005) and the node still stops when told', async () => {
    await withShardedNode(['--rate-limit', '0'], async (node, shard) => {
      const port = node.port;
      const onA = ROOMS.find((r) => shardOfRoom(r) === 0)!;
      const onB = ROOMS.find((r) => shardOfRoom(r) === 1)!;
      const member = async (nickname: string, room: string) => {
        const c = await RawClient.open(port);
        clients.push(c);
        c.sendPy({ cmd: '0', nickname, caps: CAPS, lobby: false });
        await c.expect('03');
        await join(c, room);
        return c;
      };
      const gil = await member('gil', onB);
      const hal = await member('hal', onB);
      const ida = await member('ida', onA);
      await shard.stop();
      ida.sendPy({ cmd: '7', room: onA, msg: 'on the live instance', cid: 'live' });
      await ida.waitFor((m) => m.cmd === '71' && m.cid === 'live', 1, 10_000);
      // A chat on the instance that is down waits while the client reconnects ("about ten
      // seconds of attempts", docs/cluster.md), then fails its connection with 3005.
      gil.sendPy({ cmd: '7', room: onB, msg: 'into the void', cid: 'void' });
      await gil.waitFor((m) => m.cmd === '90' && m.code === 3005, 1, 30_000);
      await gil.expectClose(10_000);
      // Stopped with a chat still waiting for that instance: it exits by itself, unkilled.
      hal.sendPy({ cmd: '7', room: onB, msg: 'pending', cid: 'pending' });
      await new Promise((resolve) => setTimeout(resolve, 200));
      const child = node.child;
      const exited = new Promise<[number | null, string | null]>((resolve) =>
        child.once('exit', (code, signal) => resolve([code, signal])),
      );
      const stopping = stopProcess(child, 8_000);
      expect(await exited).toEqual([0, null]);
      await stopping;
    });
  }, 120_000);

  it('with a shard down, a join into its rooms is refused (1022) at its deadline, the member staying, and frees a member gone meanwhile', async () => {
    await withShardedNode([], async (node, shard) => {
      const port = node.port;
      const onB = ROOMS.find((r) => shardOfRoom(r) === 1)!;
      const connect = async (nickname: string) => {
        const c = await RawClient.open(port);
        clients.push(c);
        c.sendPy({ cmd: '0', nickname, caps: CAPS, lobby: false });
        return c;
      };
      const kim = await connect('kim');
      await kim.expect('03');
      const lee = await connect('lee');
      await lee.expect('03');
      await shard.stop();
      // Presence (on the live instance) takes the join; the room's events never come. The
      // member's requests after it wait, but not for the whole outage.
      kim.sendPy({ cmd: '100', room: onB });
      kim.sendPy({ cmd: '6', beginTime: 1 });
      lee.sendPy({ cmd: '100', room: onB });
      await new Promise((resolve) => setTimeout(resolve, 200));
      lee.close();
      // ROOM_READY_MS (15 s) after the join: refused, its place given back, and the member
      // goes on (its RTT, which waited behind the join, is answered).
      await until('the join to be refused', () => kim.received.some((m) => m.cmd === '60'), 40_000);
      expect(kim.received.map((m) => m.cmd)).toEqual(['90', '60']);
      expect(kim.received[0]).toMatchObject({ code: 1022, ref: '100' });
      expect(String(kim.received[0]!.message)).toMatch(/try again/);
      expect(kim.isClosed).toBe(false);
      // lee went while its join waited: once the join failed, it left, and its nickname is free.
      await until(
        'lee to be free',
        async () => {
          const again = await connect('lee');
          const first = await again.waitFor((m) => m.cmd === '03' || m.cmd === '01', 1, 10_000);
          again.close();
          return first.cmd === '03';
        },
        30_000,
      );
    });
  }, 120_000);

  it('with a shard down, course clients still connect into the lobby, which lives on --redis', async () => {
    await withShardedNode([], async (node, shard) => {
      // By its hash alone the lobby would live on the shard (fnv1a32('lobby') % 2 is 1).
      expect(fnv1a32(roomKey('lobby')) % 2).toBe(1);
      expect(shardOfRoom('lobby')).toBe(0);
      await shard.stop();
      const ann = await joinLobby(node.port, 'ann');
      clients.push(ann);
      const bob = await joinLobby(node.port, 'bob');
      clients.push(bob);
      ann.sendPy({ cmd: '7', msg: 'still here' });
      expect(await bob.expect('70')).toEqual({ cmd: '70', from: 'ann', msg: 'still here' });
    });
  }, 60_000);

  it('reports Redis unreachable on /healthz and /metrics while a shard is down', async () => {
    await withShardedNode([], async (node, shard) => {
      const health = async () =>
        (await (await fetch(`http://127.0.0.1:${node.httpPort}/healthz`)).json()) as {
          redis?: string;
        };
      expect((await health()).redis).toBe('reachable');
      await shard.stop();
      await until(
        '/healthz to say unreachable',
        async () => (await health()).redis === 'unreachable',
        20_000,
      );
      const metrics = await (await fetch(`http://127.0.0.1:${node.httpPort}/metrics`)).text();
      expect(metrics).toMatch(/^confab_redis_up 0$/m);
    });
  }, 60_000);
});

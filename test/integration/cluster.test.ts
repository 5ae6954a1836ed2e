/**
 * Three confab processes sharing one real redis-server (`--redis`): what
 * clients on different nodes see of each other, exactly-N admission across
 * nodes, a node killed with SIGKILL, and a Redis that is not there.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOBBY } from '../../src/protocol/codes.js';
import { RawClient } from '../helpers/raw-client.js';
import { type RedisServer, startRedis, withoutRedis } from '../helpers/redis.js';
import { freePort, serveExit } from '../helpers/servers.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';

const skip = withoutRedis();
/** Seconds without a heartbeat before a node is reaped: short, so the kill test is quick. */
const TIMEOUT_S = 2;
const EXT = ['errors', 'rooms', 'renames', 'whispers'];

type Message = Record<string, unknown> & { cmd: string };

let redis: RedisServer;
const nodes: SpawnedServer[] = [];
const clients: RawClient[] = [];

async function open(port: number): Promise<RawClient> {
  const client = await RawClient.open(port);
  clients.push(client);
  return client;
}

async function connect(port: number, nickname: string, extra: object = {}): Promise<RawClient> {
  const client = await open(port);
  client.sendPy({ cmd: '0', nickname, ...extra });
  // Right after Redis restarted empty, a new nickname waits out the refill (5 s or more).
  await client.expect('03', 15_000);
  return client;
}

function all(client: RawClient, cmd: string): Message[] {
  return (client.received as Message[]).filter((m) => m.cmd === cmd);
}

beforeAll(async () => {
  if (skip) return;
  redis = await startRedis();
  for (let i = 0; i < 3; i++) {
    nodes.push(
      await spawnServer([
        '--redis',
        redis.url,
        '--cluster-timeout',
        String(TIMEOUT_S),
        '--max-users',
        '3',
        '--room-capacity',
        '10',
        '--rate-limit',
        '0',
      ]),
    );
  }
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.close();
  await Promise.all(nodes.map((n) => n.stop()));
  await redis?.stop();
}, 60_000);

/**
 * A course client "A" on the first port, extended clients on the other two:
 * every step waits for what shows it was handled. Returns what A received.
 */
async function courseScript(ports: [number, number, number]): Promise<{
  frames: string[];
  bytes: number;
}> {
  let bytes = 0;
  const a = await open(ports[0]);
  a.socket.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
  });
  const step = async (send: () => void, waits: [RawClient, string][]) => {
    send();
    for (const [who, cmd] of waits) await who.expect(cmd, 10_000);
  };
  await step(() => a.sendPy({ cmd: '0', nickname: 'ann' }), []);
  await a.expect('03');
  const b = await open(ports[1]);
  await step(
    () => b.sendPy({ cmd: '0', nickname: 'bob', caps: EXT }),
    [
      [b, '03'],
      [a, '8'],
    ],
  );
  const c = await open(ports[2]);
  await step(
    () => c.sendPy({ cmd: '0', nickname: 'cat', caps: EXT }),
    [
      [c, '03'],
      [a, '8'],
      [b, '8'],
    ],
  );
  const late = await open(ports[1]);
  await step(() => late.sendPy({ cmd: '0', nickname: 'dan' }), [[late, '02']]);
  const dup = await open(ports[2]);
  await step(() => dup.sendPy({ cmd: '0', nickname: 'ANN' }), [[dup, '01']]);
  await step(() => a.sendPy({ cmd: '1' }), [[a, '10']]);
  await step(
    () => b.sendPy({ cmd: '7', msg: 'hello from bob' }),
    [
      [a, '70'],
      [c, '70'],
    ],
  );
  await step(
    () => c.sendPy({ cmd: '2', to: 'ann', msg: 'psst from cat' }),
    [
      [c, '22'],
      [a, '70'],
    ],
  );
  await step(
    () => a.sendPy({ cmd: '2', to: 'BOB', msg: 'psst from ann' }),
    [
      [a, '22'],
      [b, '70'],
    ],
  );
  await step(() => a.sendPy({ cmd: '2', to: 'zed', msg: 'anyone?' }), [[a, '20']]);
  await step(() => a.sendPy({ cmd: '5', newNickname: 'cat' }), [[a, '50']]);
  await step(
    () => b.sendPy({ cmd: '5', newNickname: 'bea' }),
    [
      [b, '51'],
      [c, '91'],
    ],
  );
  // A course client is not told of renames, and its node may learn of one
  // after c's: a chat from the new name, on the same room's ordered events,
  // reaches a only after the rename did.
  await step(
    () => b.sendPy({ cmd: '7', msg: 'bea here' }),
    [
      [a, '70'],
      [c, '70'],
    ],
  );
  await step(() => a.sendPy({ cmd: '1' }), [[a, '10']]);
  await step(
    () => a.sendPy({ cmd: '7', msg: 'hi all' }),
    [
      [b, '70'],
      [c, '70'],
    ],
  );
  await step(
    () => c.sendPy({ cmd: '3' }),
    [
      [a, '30'],
      [b, '30'],
    ],
  );
  await step(() => a.sendPy({ cmd: '4' }), [[a, '40']]);
  for (const client of [a, b, c, late, dup]) client.close();
  await b.closed;
  // Ports differ between runs; nothing else may.
  const frames = a.rawFrames.map((f) => f.replace(/,\d+\]/g, ',PORT]'));
  return { frames, bytes };
}

describe.skipIf(skip)('a cluster of three nodes over Redis', () => {
  it('shows a course client on one node exactly what one process shows it', async () => {
    const clustered = await courseScript([nodes[0]!.port, nodes[1]!.port, nodes[2]!.port]);
    const single = await spawnServer(['--max-users', '3']);
    try {
      const alone = await courseScript([single.port, single.port, single.port]);
      expect(clustered.frames).toEqual(alone.frames);
      expect(clustered.bytes).toBe(alone.bytes);
      expect(clustered.frames.some((f) => f.includes('psst from cat'))).toBe(true);
    } finally {
      await single.stop();
    }
    // The lobby is empty again on every node: the leaves were told everywhere.
    const check = await connect(nodes[2]!.port, 'check', { caps: EXT });
    let users: unknown;
    // The leaves are told asynchronously: asked again until they are in (bounded in time, not
    // in tries: each try is slower on a loaded machine).
    const deadline = Date.now() + 15_000;
    for (let i = 0; i < 300 && Date.now() < deadline; i++) {
      check.sendPy({ cmd: '1' });
      users = (await check.expect('10')).users;
      if (Array.isArray(users) && users.length === 1) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(users).toEqual([['check', '127.0.0.1', expect.any(Number)]]);
    check.close();
  }, 60_000);

  it('says on /healthz that Redis is reachable', async () => {
    const response = await fetch(`http://127.0.0.1:${nodes[0]!.httpPort}/healthz`);
    expect(await response.json()).toMatchObject({ status: 'ok', redis: 'reachable' });
  });

  it('admits exactly a room capacity of racing joins from three nodes, every time', async () => {
    const racers: RawClient[] = [];
    for (let i = 0; i < 60; i++) {
      racers.push(
        await connect(nodes[i % 3]!.port, `racer${i}`, { caps: ['errors', 'rooms'], lobby: false }),
      );
    }
    for (let round = 0; round < 5; round++) {
      const room = `race${round}`;
      for (const r of racers) r.sendPy({ cmd: '100', room });
      const outcomes = await Promise.all(
        racers.map(async (r) => {
          await r.waitFor(
            (m) => (m.cmd === '101' || m.cmd === '90') && m.room !== LOBBY,
            round + 1,
          );
          const last = (r.received as Message[]).filter((m) => m.cmd === '101' || m.cmd === '90');
          return last[round]!;
        }),
      );
      expect(outcomes.filter((m) => m.cmd === '101')).toHaveLength(10);
      expect(outcomes.filter((m) => m.cmd === '90' && m.code === 1012)).toHaveLength(50);
    }
    for (const r of racers) r.close();
  }, 120_000);

  it('lets exactly one of two nodes claim the same nickname at once', async () => {
    for (let round = 0; round < 10; round++) {
      const pair = await Promise.all([open(nodes[0]!.port), open(nodes[1]!.port)]);
      for (const c of pair)
        c.sendPy({ cmd: '0', nickname: `same${round}`, caps: ['rooms'], lobby: false });
      const results = await Promise.all(
        pair.map((c) =>
          Promise.race([
            c.expect('03', 10_000).then(() => '03'),
            c.expect('01', 10_000).then(() => '01'),
          ]),
        ),
      );
      expect(results.sort()).toEqual(['01', '03']);
      for (const c of pair) c.close();
    }
  }, 60_000);

  it('survives kill -9 of a node: its members leave, names free, nothing lost, resume elsewhere', async () => {
    const caps = [...EXT, 'history'];
    const x1 = await connect(nodes[0]!.port, 'x1', { caps });
    const x2 = await connect(nodes[1]!.port, 'x2', { caps });
    const x3 = await connect(nodes[2]!.port, 'x3', { caps });
    const entered = await x3.expect('101');
    const start = Number(entered.top);
    const epoch = String(entered.epoch);
    const said = (c: RawClient) =>
      all(c, '70')
        .filter((m) => m.room === LOBBY && Number(m.id) > start)
        .map((m) => [Number(m.id), String(m.msg)] as const);
    const COUNT = 40;
    for (let i = 0; i < COUNT; i++) {
      x1.sendPy({ cmd: '7', msg: `one ${i}` });
      x2.sendPy({ cmd: '7', msg: `two ${i}` });
      if (i === 15) nodes[2]!.child.kill('SIGKILL');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    // Its member leaves everywhere, once the others notice (within --cluster-timeout and a beat).
    for (const c of [x1, x2]) {
      const left = await c.expect('30', 20_000);
      expect(left).toMatchObject({ nickname: 'x3', room: LOBBY });
    }
    await x1.waitFor((m) => m.cmd === '70' && String(m.msg).startsWith('two'), COUNT);
    await x2.waitFor((m) => m.cmd === '70' && String(m.msg).startsWith('one'), COUNT);
    const ones = Array.from({ length: COUNT }, (_, i) => `one ${i}`);
    const twos = Array.from({ length: COUNT }, (_, i) => `two ${i}`);
    const atX1 = said(x1);
    const atX2 = said(x2);
    expect(atX1.map(([, msg]) => msg)).toEqual(twos);
    expect(atX2.map(([, msg]) => msg)).toEqual(ones);
    // Live order is id order on every node.
    for (const seen of [atX1, atX2]) {
      for (let i = 1; i < seen.length; i++) expect(seen[i]![0]).toBeGreaterThan(seen[i - 1]![0]);
    }
    // x3's client comes back on another node with where it had got to: the name is free
    // again, and every chat it missed follows, once each.
    await x3.closed;
    const had = said(x3);
    const last = had.length > 0 ? had[had.length - 1]![0] : start;
    const back = await connect(nodes[0]!.port, 'x3', {
      caps,
      since: [{ room: LOBBY, epoch, id: last }],
    });
    const resumed = await back.expect('101');
    expect(resumed).toMatchObject({ recovered: true, epoch });
    const top = Number(resumed.top);
    expect(top).toBe(start + 2 * COUNT);
    await back.waitFor((m) => m.cmd === '70', top - last);
    const replayed = all(back, '70').map((m) => [Number(m.id), String(m.msg)] as const);
    const ids = [...had, ...replayed].map(([id]) => id);
    expect(ids).toEqual(Array.from({ length: 2 * COUNT }, (_, i) => start + i + 1));
    const msgs = [...had, ...replayed].map(([, msg]) => msg).sort();
    expect(msgs).toEqual([...ones, ...twos].sort());
    for (const c of [x1, x2, back]) c.close();
  }, 120_000);

  it('goes on after Redis restarts empty: chats flow, and a resume is told it was not recovered', async () => {
    const caps = [...EXT, 'history'];
    const ROOM = 'restart';
    const enter = async (port: number, nickname: string, since?: object) => {
      const c = await connect(port, nickname, { caps, lobby: false });
      c.sendPy({ cmd: '100', room: ROOM, ...(since === undefined ? {} : { since }) });
      return { c, header: await c.expect('101') };
    };
    const { c: r1 } = await enter(nodes[0]!.port, 'r1');
    const { c: r2, header: before } = await enter(nodes[1]!.port, 'r2');
    r1.sendPy({ cmd: '7', room: ROOM, msg: 'before the restart' });
    await r2.waitFor((m) => m.cmd === '70' && m.msg === 'before the restart', 1);
    await redis.restart();
    // At once, before the nodes' next heartbeats register them again: its nickname waits out
    // the refill, and its JOIN then finds the room in a new epoch.
    const { c: r3, header } = await enter(nodes[1]!.port, 'r3', {
      epoch: before.epoch,
      id: Number(before.top) + 1,
    });
    expect(header).toMatchObject({ recovered: false, reason: 'epoch' });
    for (let i = 0; i < 5; i++)
      r1.sendPy({ cmd: '7', room: ROOM, msg: `after ${i}`, cid: `a${i}` });
    await r2.waitFor((m) => m.cmd === '70' && String(m.msg).startsWith('after'), 5);
    await r3.waitFor((m) => m.cmd === '70' && String(m.msg).startsWith('after'), 5);
    for (const c of [r2, r3]) {
      const after = all(c, '70').filter((m) => String(m.msg).startsWith('after'));
      expect(after.map((m) => m.msg)).toEqual([
        'after 0',
        'after 1',
        'after 2',
        'after 3',
        'after 4',
      ]);
    }
    for (const c of [r1, r2, r3]) c.close();
  }, 60_000);

  it('exits with a one-line error when Redis cannot be reached', async () => {
    const port = await freePort();
    const { code, stderr } = await serveExit([
      '--port',
      '0',
      '--http-port',
      'off',
      '--redis',
      `redis://127.0.0.1:${port}`,
    ]);
    expect(code).toBe(1);
    expect(stderr).toMatch(
      /^confab: cannot reach Redis at redis:\/\/127\.0\.0\.1:\d+ \(--redis\): .+\n$/,
    );
  }, 60_000);
});

/**
 * A node that reaches Redis over a slow link (a 0.6 s round trip, with --cluster-timeout 4):
 * its start-up takes more round trips than the timeout holds, and the node beats all along,
 * so the others do not reap it meanwhile, and its first client is served, not told the node
 * was cut off from the cluster.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawClient } from '../helpers/raw-client.js';
import { type RedisServer, startRedis, withoutRedis } from '../helpers/redis.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';
import { TcpRelay } from '../helpers/tcp-relay.js';

const skip = withoutRedis();
// The timeout holds a heartbeat and a reap (three round trips) and an interval, with room to
// spare; the start, some fifteen round trips, is longer than it.
const ARGS = ['--cluster-timeout', '4', '--rate-limit', '0'];

/**
 * A file's Redis, a relay in front of it, and the nodes and clients a describe starts (the
 * first `direct` nodes on Redis itself), all stopped after it.
 */
function slowRedis(args: readonly string[], direct: number, relayed: number, slowMs?: number) {
  const state = {
    redis: undefined as unknown as RedisServer,
    relay: undefined as unknown as TcpRelay,
    nodes: [] as SpawnedServer[],
    clients: [] as RawClient[],
    /** A node on the relay. */
    relayed: () => spawnServer(['--redis', `redis://127.0.0.1:${state.relay.port}`, ...args]),
  };
  beforeAll(async () => {
    state.redis = await startRedis();
    state.relay = await TcpRelay.start(state.redis.port);
    if (slowMs !== undefined) state.relay.slow(slowMs);
    for (let i = 0; i < direct; i++) {
      state.nodes.push(await spawnServer(['--redis', state.redis.url, ...args]));
    }
    for (let i = 0; i < relayed; i++) state.nodes.push(await state.relayed());
  }, 30_000);
  afterAll(async () => {
    for (const c of state.clients) c.close();
    for (const n of state.nodes) await n.stop();
    await state.relay?.close();
    await state.redis?.stop();
  }, 30_000);
  return state;
}

describe.skipIf(skip)('a node starting against a slow Redis', () => {
  const file = slowRedis(ARGS, 1, 0, 300);
  const { nodes, clients } = file;

  it('is not reaped while it starts, and serves its first client', async () => {
    nodes.push(await file.relayed());
    const slow = nodes[1]!;
    const first = await RawClient.open(slow.port);
    clients.push(first);
    first.sendPy({ cmd: '0', nickname: 'ann', caps: ['errors'] });
    const answer = await Promise.race([first.expect('03', 20_000), first.expect('90', 20_000)]);
    expect(answer).toMatchObject({ cmd: '03' });
    expect(nodes[0]!.output()).not.toContain('a node stopped answering');
    expect(slow.output()).not.toContain('cut off from the cluster');
    // And ann is a member everywhere: the fast node lists her.
    const bob = await RawClient.open(nodes[0]!.port);
    clients.push(bob);
    bob.sendPy({ cmd: '0', nickname: 'bob' });
    await bob.expect('03', 10_000);
    bob.sendPy({ cmd: '1' });
    const users = await bob.expect('10', 10_000);
    expect(JSON.stringify(users)).toContain('ann');
  }, 60_000);
});

describe.skipIf(skip)('a node whose Redis link slows while clients connect', () => {
  const args = ['--cluster-timeout', '5', '--rate-limit', '0', '--max-users', '50'];
  const file = slowRedis(args, 1, 1);
  const { nodes, clients } = file;

  it('keeps its heartbeats on time, and tells none of its clients it was cut off', async () => {
    // A 0.9 s round trip: the timeout holds a heartbeat and a reap (three round trips) and an
    // interval. Behind the CONNECTs' commands, each of them had waited a round trip more.
    file.relay.slow(450);
    const answers: Promise<string>[] = [];
    for (let i = 0; i < 12; i++) {
      const client = await RawClient.open(nodes[1]!.port);
      clients.push(client);
      client.sendPy({ cmd: '0', nickname: `c${i}`, caps: ['errors'] });
      answers.push(
        Promise.race([client.expect('03', 30_000), client.expect('90', 30_000)]).then((m) =>
          m.cmd === '90' ? `90 ${String(m.code)}` : m.cmd,
        ),
      );
      await new Promise((r) => setTimeout(r, 1_000));
    }
    expect(await Promise.all(answers)).toEqual(Array.from({ length: 12 }, () => '03'));
    // Some seconds more with them all connected: a cut-off would have closed them by now.
    await new Promise((r) => setTimeout(r, 4_000));
    expect(nodes[1]!.output()).not.toContain('cut off from the cluster');
    for (const client of clients) expect(client.received.some((m) => m.cmd === '90')).toBe(false);
  }, 90_000);
});

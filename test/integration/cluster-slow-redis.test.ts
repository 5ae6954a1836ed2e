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

describe.skipIf(skip)('a node starting against a slow Redis', () => {
  let redis: RedisServer;
  let relay: TcpRelay;
  const nodes: SpawnedServer[] = [];
  const clients: RawClient[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    relay = await TcpRelay.start(redis.port);
    relay.slow(300);
    nodes.push(await spawnServer(['--redis', redis.url, ...ARGS]));
  }, 30_000);
  afterAll(async () => {
    for (const c of clients) c.close();
    for (const n of nodes) await n.stop();
    await relay?.close();
    await redis?.stop();
  }, 30_000);

  it('is not reaped while it starts, and serves its first client', async () => {
    nodes.push(await spawnServer(['--redis', `redis://127.0.0.1:${relay.port}`, ...ARGS]));
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

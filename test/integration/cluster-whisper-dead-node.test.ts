/**
 * A whisper to a member whose node has just died (kill -9): until the others reap the
 * node (`--cluster-timeout`), Presence still lists the member there, but no node listens
 * on its address any more. The sender must not be told "22" (delivered) for a whisper
 * nobody got; it is told "20", as for a name nobody holds.
 */
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type TestCluster, until } from '../helpers/cluster.js';
import { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();

describe.skipIf(skip)('a whisper to a member of a node that just died', () => {
  let cluster: TestCluster;
  const clients: RawClient[] = [];
  beforeAll(async () => {
    // Long enough that nobody reaps the dead node while the test runs.
    cluster = await startCluster(2, ['--cluster-timeout', '60']);
  }, 60_000);
  afterAll(async () => {
    for (const c of clients) c.close();
    await cluster?.stop();
  }, 60_000);

  const join = async (node: number, nickname: string) => {
    const client = await RawClient.open(cluster.nodes[node]!.port);
    clients.push(client);
    client.sendPy({ cmd: '0', nickname });
    await client.expect('03', 10_000);
    return client;
  };

  it('is answered "20", not "22", while Presence still lists the member', async () => {
    const ann = await join(0, 'ann');
    await join(1, 'bob');
    ann.sendPy({ cmd: '2', to: 'bob', msg: 'while bob is there' });
    await ann.expect('22', 10_000);

    const admin = new Redis(cluster.redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await admin.connect();
    try {
      const nodeChannels = async () =>
        ((await admin.call('PUBSUB', 'CHANNELS', '*b:n:*')) as string[]).length;
      expect(await nodeChannels()).toBe(2);
      const dead = cluster.nodes[1]!.child;
      const exited = once(dead, 'exit');
      dead.kill('SIGKILL');
      await exited;
      await until(
        'Redis dropping the dead node’s subscriber',
        async () => (await nodeChannels()) === 1,
        10_000,
      );
    } finally {
      admin.disconnect();
    }

    ann.sendPy({ cmd: '2', to: 'bob', msg: 'after bob’s node died' });
    const answer = await ann.waitFor((m) => m.cmd === '20' || m.cmd === '22', 1, 10_000);
    expect(answer.cmd).toBe('20');

    // Presence still holds "bob" (its node is not reaped yet): the "20" came from nobody
    // taking the whisper, not from a name already freed.
    const other = await RawClient.open(cluster.nodes[0]!.port);
    clients.push(other);
    other.sendPy({ cmd: '0', nickname: 'bob' });
    expect((await other.waitFor((m) => ['01', '03'].includes(m.cmd), 1, 10_000)).cmd).toBe('01');
  }, 60_000);
});

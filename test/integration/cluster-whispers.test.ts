/**
 * Whispers to members of another node.
 *
 * Piled up on a member faster than it reads: its node took each (the sender was told "22"),
 * so a few wait until the member has read enough, and more than those are dropped, rather
 * than cut the member off as a slow consumer (on one process the sender is refused instead:
 * integration/robustness).
 *
 * To a member whose node has just died (kill -9): until the others reap the node
 * (`--cluster-timeout`), Presence still lists the member there, but no node listens on its
 * address any more. The sender must not be told "22" (delivered) for a whisper nobody got;
 * it is told "20", as for a name nobody holds.
 */
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type TestCluster, until } from '../helpers/cluster.js';
import { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();

describe.skipIf(skip)('whispers to members of another node', () => {
  let cluster: TestCluster;
  const clients: RawClient[] = [];
  beforeAll(async () => {
    // Long enough that nobody reaps the dead node while the test runs; no flood control, and
    // a small queue, for whispers piled up on a reader.
    cluster = await startCluster(2, [
      '--cluster-timeout',
      '60',
      '--rate-limit',
      '0',
      '--max-queue',
      '262144',
    ]);
  }, 60_000);
  afterAll(async () => {
    for (const c of clients) c.close();
    await cluster?.stop();
  }, 60_000);

  const join = async (node: number, nickname: string, caps?: string[]) => {
    const client = await RawClient.open(cluster.nodes[node]!.port);
    clients.push(client);
    client.sendPy(caps === undefined ? { cmd: '0', nickname } : { cmd: '0', nickname, caps });
    await client.expect('03', 10_000);
    return client;
  };

  it('piled up on a reader are dropped by its node, and the reader is not cut off', async () => {
    // With whispers each arrives whole, not cut to a course client's 1024 bytes.
    const victim = await join(1, 'victim', ['whispers']);
    // It reads nothing from now: what it is sent fills the kernel's buffers, then the node's.
    victim.socket.pause();
    const sender = await join(0, 'sender');
    // 4,000 control characters: some 24 KB as JSON escapes them; 600 of them, 14 MB.
    const msg = '\u0001'.repeat(4_000);
    const sent = 600;
    for (let i = 0; i < sent; i++) {
      sender.sendPy({ cmd: '2', to: 'victim', msg });
      await sender.expect('22', 10_000);
    }
    // Still a member: it gets what its node queued once it reads, and stays.
    victim.socket.resume();
    const whisper = (m: { cmd: string; whisper?: unknown }) => m.cmd === '70' && m.whisper === true;
    await victim.waitFor(whisper, 1, 30_000);
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const got = victim.received.filter(whisper).length;
    expect(got).toBeGreaterThan(0);
    expect(got).toBeLessThan(sent);
    sender.sendPy({ cmd: '1' });
    const users = (await sender.expect('10', 10_000)).users as string[][];
    expect(users.map((u) => u[0])).toContain('victim');
    victim.sendPy({ cmd: '4' });
    await victim.expect('40', 10_000);
  }, 120_000);

  it('sent while its reader is behind arrive once it has read enough', async () => {
    const victim = await join(1, 'reader', ['whispers']);
    victim.socket.pause();
    const sender = await join(0, 'far');
    // A member of the reader's own node is refused once the reader is behind (1022): that
    // is when a whisper from another node must wait for it rather than be dropped.
    const near = await join(1, 'near', ['errors']);
    const msg = '\u0001'.repeat(4_000);
    const answered = (m: { cmd: string }) => m.cmd === '22' || m.cmd === '90';
    let behind = false;
    for (let i = 0; i < 2_000 && !behind; i++) {
      sender.sendPy({ cmd: '2', to: 'reader', msg });
      await sender.expect('22', 10_000);
      near.sendPy({ cmd: '2', to: 'reader', msg: 'probe' });
      await near.waitFor(answered, 1, 10_000);
      behind = near.drain().find(answered)?.cmd === '90';
    }
    expect(behind).toBe(true);
    for (const mark of ['mark 1', 'mark 2']) {
      sender.sendPy({ cmd: '2', to: 'reader', msg: mark });
      await sender.expect('22', 10_000);
    }
    victim.socket.resume();
    const marked = (m: { cmd: string; msg?: unknown }) =>
      m.cmd === '70' && typeof m.msg === 'string' && m.msg.startsWith('mark');
    await victim.waitFor(marked, 2, 30_000);
    expect(victim.received.filter(marked).map((m) => m.msg)).toEqual(['mark 1', 'mark 2']);
  }, 120_000);

  it('to a member of a node that just died is answered "20", not "22", while Presence still lists the member', async () => {
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

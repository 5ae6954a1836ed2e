/**
 * `confab chat --host` with several servers, the nodes of one cluster: it joins the first
 * that answers, and when its node dies (kill -9) it takes its session back on the next
 * one, with every chat sent meanwhile shown exactly once and nobody told it left.
 */
import { once } from 'node:events';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatClient } from '../../src/client/chat-client.js';
import { ChatProcess } from '../helpers/chat-process.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();

/** A loopback port nothing listens on (just released). */
async function closedPort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

describe.skipIf(skip)('confab chat given the nodes of a cluster', () => {
  let cluster: TestCluster;
  beforeAll(async () => {
    // Long enough that nobody reaps the dead node while the test runs: the session is
    // taken back with its resume token, not made again.
    cluster = await startCluster(2, ['--cluster-timeout', '60']);
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  }, 60_000);

  it('skips a server that is down, and moves to the next node when its own dies', async () => {
    const [n0, n1] = cluster.nodes as [(typeof cluster.nodes)[0], (typeof cluster.nodes)[0]];
    const hosts = [await closedPort(), n0.port, n1.port].map((p) => `127.0.0.1:${p}`).join(',');
    const bob = await ChatClient.connect({ port: n1.port, nickname: 'bob', history: true });
    const leaves: string[] = [];
    bob.on('leave', (m) => leaves.push(m.nickname));
    const ann = ChatProcess.start(['ann', '--host', hosts]);
    try {
      await ann.waitFor('You are the 2nd user.');
      expect(ann.output).toContain(`127.0.0.1:${n0.port}`);
      bob.chat('before');
      await ann.waitFor(/bob: before\n/);

      n0.child.kill('SIGKILL');
      for (let i = 1; i <= 3; i++) bob.chat(`while away ${i}`);
      await ann.waitFor('Connection lost.');
      await ann.waitFor(`Reconnected as ann to 127.0.0.1:${n1.port}.`);
      // Taken back, not a new session.
      expect(ann.output).not.toContain('a new session');
      await ann.waitFor(/bob: while away 3\n/);
      ann.type('back again');
      const heard = await new Promise<{ from: string; msg: string }>((resolve) =>
        bob.on('chat', (m) => {
          if (m.from === 'ann') resolve(m);
        }),
      );
      expect(heard.msg).toBe('back again');
      for (let i = 1; i <= 3; i++) {
        expect(ann.output.match(new RegExp(`bob: while away ${i}\\n`, 'g'))).toHaveLength(1);
      }
      expect(ann.output.match(/bob: before\n/g)).toHaveLength(1);
      // Its chat came after any leave of it would have, on the same room's events.
      expect(leaves).toEqual([]);
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
    } finally {
      await ann.stop();
      await bob.exit();
    }
  }, 60_000);
});

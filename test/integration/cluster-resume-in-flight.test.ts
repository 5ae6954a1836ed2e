/**
 * A chat its sender's node stores only after the session resumed on another node: one process
 * tells the connection that took the session over of it ("71"), and so must the cluster.
 */
import { describe, expect, it } from 'vitest';
import { memberWithToken, useCluster } from '../helpers/cluster.js';
import type { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();
const CAPS = ['errors', 'rooms', 'history', 'renames'];

// A timeout long enough that the node paused below is never taken for dead, however slow
// the machine.
const file = useCluster('cluster-resume-in-flight', 2, ['--cluster-timeout', '10']);
const open = (node: number) => file.open(node);

const member = (node: number, nickname: string) => memberWithToken(file, node, nickname, CAPS);

describe.skipIf(skip)('a chat in flight across a resume on another node', () => {
  it('tells a chat that was stored only after its session resumed on another node to the new connection, as "71"', async () => {
    const wit = await member(1, 'wit');
    const sam = await member(0, 'sam');
    const paused = file.cluster.nodes[0]!;
    let back: RawClient | undefined;
    paused.child.kill('SIGSTOP');
    try {
      // Sent without a cid into the paused node's socket, then the session resumes elsewhere:
      // the old node, running again, reads the chat before the notice of the move.
      sam.c.sendPy({ cmd: '7', msg: 'in flight', room: 'lobby' });
      await new Promise((resolve) => setTimeout(resolve, 200));
      back = await open(1);
      back.sendPy({ cmd: '0', nickname: 'x', caps: CAPS, resume: sam.token });
      expect((await back.expect('03', 10_000)).resumed).toBe(true);
    } finally {
      paused.child.kill('SIGCONT');
    }
    await sam.c.expectClose(10_000);
    wit.c.sendPy({ cmd: '106', room: 'lobby', limit: 10 });
    const page = (await wit.c.expect('107', 10_000)).messages as { id: number; msg: string }[];
    const stored = page.find((m) => m.msg === 'in flight');
    // Had the notice of the move been read first, the chat would have gone unread.
    expect(stored).toBeDefined();
    await back.waitFor((m) => m.cmd === '71' && m.id === stored!.id, 1, 10_000);
    expect(back.received.filter((m) => m.cmd === '70' && m.msg === 'in flight')).toEqual([]);
    expect(back.received.filter((m) => m.cmd === '71')).toHaveLength(1);
  }, 30_000);
});

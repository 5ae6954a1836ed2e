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
    const paused = file.cluster.nodes[0]!;
    // The old node, running again, reads the chat and the notice of the move in whichever
    // order its event loop finds them ready. Read after the notice, the chat goes unread,
    // as a chat sent on a connection already taken over: the case is tried again, a few
    // times at most, until the chat came first.
    for (let attempt = 0; attempt < 5; attempt++) {
      const msg = `in flight ${attempt}`;
      const sam = await member(0, `sam${attempt}`);
      let back: RawClient | undefined;
      let top = 0;
      paused.child.kill('SIGSTOP');
      try {
        // Sent without a cid into the paused node's socket, then the session resumes elsewhere.
        sam.c.sendPy({ cmd: '7', msg, room: 'lobby' });
        await new Promise((resolve) => setTimeout(resolve, 200));
        back = await open(1);
        back.sendPy({ cmd: '0', nickname: 'x', caps: CAPS, resume: sam.token });
        expect((await back.expect('03', 10_000)).resumed).toBe(true);
        // The resumed session's page of the room is out before the chat can be stored:
        // stored earlier, the chat would be in that page (a "70", and rightly no "71").
        top = (await back.expect('101', 10_000)).top as number;
      } finally {
        paused.child.kill('SIGCONT');
      }
      await sam.c.expectClose(10_000);
      // The old node may close the connection before its append of the chat reaches Redis:
      // not in a page yet is not "never stored" until a later page says so too.
      let stored: { id: number; msg: string } | undefined;
      for (let read = 0; read < 3 && stored === undefined; read++) {
        if (read > 0) await new Promise((resolve) => setTimeout(resolve, 500));
        wit.c.sendPy({ cmd: '106', room: 'lobby', limit: 10 });
        const page = (await wit.c.expect('107', 10_000)).messages as { id: number; msg: string }[];
        stored = page.find((m) => m.msg === msg);
      }
      // Never shown to the new connection as someone's chat, stored or not.
      const shown = () => back.received.filter((m) => m.cmd === '70' && m.msg === msg);
      if (stored === undefined) {
        expect(shown()).toEqual([]);
        expect(back.received.filter((m) => m.cmd === '71')).toEqual([]);
        back.sendPy({ cmd: '3' });
        continue;
      }
      expect(stored.id).toBeGreaterThan(top);
      await back.waitFor((m) => m.cmd === '71' && m.id === stored.id, 1, 10_000);
      expect(shown()).toEqual([]);
      expect(back.received.filter((m) => m.cmd === '71')).toHaveLength(1);
      return;
    }
    throw new Error('the old node read the notice of the move first every time');
  }, 90_000);
});

/**
 * A node paused across an empty Redis restart, within the refill (so not taken for dead):
 * the other nodes read their rooms a few heartbeats after their subscription came back,
 * maybe before the paused node registered its members again, and showed those leaving.
 * Once it has registered them, it asks them to read the rooms again: they are shown back.
 */
import { describe, expect, it } from 'vitest';
import { lobbyUsers, memberWithToken, useCluster } from '../helpers/cluster.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();
const CAPS = ['errors', 'rooms', 'history'];

// As --cluster-timeout 10 s (the default) has it: the others read again about 3 s after Redis is back,
// the refill lasts 5 s.
const file = useCluster('cluster-redis-reread', 2, ['--cluster-timeout', '10']);

describe.skipIf(skip)('members of a node paused across an empty Redis restart', () => {
  it('are shown in their rooms again once their node registered them again', async () => {
    const a0 = await memberWithToken(file, 0, 'a0', CAPS);
    const a1 = await memberWithToken(file, 1, 'a1', CAPS);
    const paused = file.cluster.nodes[0]!;
    paused.child.kill('SIGSTOP');
    try {
      await file.cluster.redis.restart();
      await new Promise((resolve) => setTimeout(resolve, 4_000));
    } finally {
      paused.child.kill('SIGCONT');
    }
    // What a1 was last shown of a0: nothing, or a0 back after being shown leaving.
    const shown = () =>
      a1.c.received.filter(
        (m) => (m.cmd === '30' || m.cmd === '8') && m.nickname === 'a0' && m.room === 'lobby',
      );
    await expect.poll(() => shown().at(-1)?.cmd, { timeout: 20_000, interval: 100 }).not.toBe('30');
    expect(await lobbyUsers(a1.c)).toEqual(['a0', 'a1']);
    a0.c.sendPy({ cmd: '7', msg: 'still here' });
    await a1.c.waitFor((m) => m.cmd === '70' && m.msg === 'still here');
  }, 60_000);
});

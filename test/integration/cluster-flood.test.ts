/**
 * Flood control on a node of a cluster, where a CONNECT waits for its claim in Redis: what a
 * client writes behind it is counted as it arrives, not handed on unmetered once the claim
 * is answered, also when the client goes at once (its requests are still handled then).
 */
import { describe, expect, it } from 'vitest';
import { useCluster } from '../helpers/cluster.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();
const file = useCluster('cluster-flood', 2, ['--rate-limit', '20', '--rate-burst', '40']);

describe.skipIf(skip)('flood control on a cluster node', () => {
  it('holds chats written behind a CONNECT still being claimed to the limit, also when the client goes at once', async () => {
    const watcher = await file.join(1, 'burst-watch');
    for (let round = 0; round < 3; round++) {
      const flooder = await file.open(0);
      const chats = Array.from({ length: 60 }, (_, i) => ({ cmd: '7', msg: `r${round}m${i}` }));
      flooder.write(
        [{ cmd: '0', nickname: `burst${round}` }, ...chats].map((r) => JSON.stringify(r)).join(''),
      );
      flooder.socket.end();
      // Joined and left, or, with nothing left to send, cut off for flooding before it joined.
      await flooder.expectClose(10_000);
    }
    // Anything still on its way from the other node.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const heard = watcher.received.filter(
      (m) => m.cmd === '70' && String(m.from).startsWith('burst'),
    );
    // A burst of 40, and what the rate refills meanwhile: not 3 × 60. (20 refused in a row
    // are not yet a flood to be cut off for.)
    expect(heard.length).toBeGreaterThanOrEqual(40);
    expect(heard.length).toBeLessThan(120);
  });
});

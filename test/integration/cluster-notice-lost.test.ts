/**
 * A node's subscriber connection that drops just as a notice to that node arrives
 * (`CLIENT KILL TYPE pubsub` at an unlucky moment, a network blip). Chats missed so are read
 * from history and room members from Presence (docs/cluster.md), but node notices are not
 * stored: an eviction told to the node a resume on another node took a member from is lost
 * with the connection. The old connection must not stay: Presence has given its member to
 * the new one, and the name may go to anyone after that.
 */
import { describe, expect, it } from 'vitest';
import { resumeToken, useRelayedCluster } from '../helpers/cluster.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();
const CAPS = ['errors', 'rooms', 'history'];

// Node 0 reaches Redis directly, node 1 through the relay.
const cluster = useRelayedCluster(1, CAPS);
const { member, open } = cluster;

describe.skipIf(skip)('an eviction notice lost with a subscriber connection', () => {
  it('does not leave the old connection speaking as the member', async () => {
    const old = await member(1, 'ann');
    const token = resumeToken(old);
    expect(typeof token).toBe('string');

    const lost = cluster.relay.arm('"type":"evict"', 'drop', { direction: 'down' });
    const taken = await open(0);
    taken.sendPy({ cmd: '0', nickname: 'ann', caps: CAPS, resume: token });
    const back = (await taken.expect('03', 10_000)) as unknown as { resumed: boolean };
    expect(back.resumed).toBe(true);
    await lost;

    // The member is node 0's now. Node 1 has its subscriber connection back within a second
    // or so; give it a few to close the old connection (more on a loaded machine).
    await old.expectClose(15_000).catch(() => undefined);
    if (!old.isClosed) {
      // Still open: once the member renamed and someone else took "ann", the old
      // connection's chat reaches the room under the new holder's name.
      taken.sendPy({ cmd: '5', newNickname: 'ann2' });
      await taken.expect('51', 10_000);
      const heard = await cluster.heardFrom(old, 'ann');
      expect(heard, 'a chat from a connection that is no member').toEqual([]);
    }
    expect(old.isClosed).toBe(true);
  }, 60_000);
});

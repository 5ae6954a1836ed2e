/**
 * A member that joins a room while its node's subscriber connection is coming back
 * (`CLIENT KILL TYPE pubsub`, a network blip) is shown the room's members in its "101",
 * and, once the node is subscribed again, every change to them since (docs/cluster.md,
 * "When things fail"): a rename that landed meanwhile reaches it, as a "91" or as the
 * old name leaving and the new one joining.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { followMembers, until, useCluster } from '../helpers/cluster.js';
import type { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();
const CAPS = ['errors', 'rooms', 'renames', 'history'];

let admin: Redis;
const file = useCluster('cluster-join-resync', 2, ['--max-users', '50']);

const member = (node: number, nickname: string) => file.join(node, nickname, { caps: CAPS });

/** The members of `room` as `c` was shown them. */
function shown(c: RawClient, room: string): string[] {
  return [...followMembers(new Set(), c.rawFrames, room)].sort();
}

describe.skipIf(skip)('a join while the subscriber connection comes back', () => {
  beforeAll(() => {
    admin = new Redis(file.cluster.redis.url, { maxRetriesPerRequest: 1 });
  });
  afterAll(() => {
    admin?.disconnect();
  });

  it('shows the joiner a rename that landed meanwhile', async () => {
    const ann = await member(1, 'ann');
    ann.sendPy({ cmd: '100', room: 'physics' });
    await ann.waitFor((m) => m.cmd === '101' && m.room === 'physics');
    const bob = await member(0, 'bob');
    let name = 'ann';
    const wrong: string[] = [];
    for (let round = 0; round < 6 && wrong.length === 0; round++) {
      await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
      // bob joins a room new to its node; ann, on the other node, renames a moment later.
      bob.sendPy({ cmd: '100', room: 'physics' });
      await new Promise((r) => setTimeout(r, 5 + round * 5));
      name = name === 'ann' ? 'anna' : 'ann';
      ann.sendPy({ cmd: '5', newNickname: name });
      await ann.expect('51', 10_000);
      await bob.waitFor((m) => m.cmd === '101' && m.room === 'physics');
      // Past three heartbeats (--cluster-timeout 2 s here) after the node subscribed again,
      // and then until it comes right (bounded): the resync's read may come later on a
      // loaded machine.
      await new Promise((r) => setTimeout(r, 4000));
      const want = [name, 'bob'].sort().join();
      await until(
        'bob to be shown the room as it is',
        () => shown(bob, 'physics').join() === want,
        10_000,
      ).catch(() => {});
      const got = shown(bob, 'physics');
      if (got.join() !== [name, 'bob'].sort().join())
        wrong.push(
          `round ${round}: physics holds ${name} and bob; bob was shown ${got.join(',')}: ${bob.rawFrames
            .filter((f) => f.includes('"physics"'))
            .join(' ')}`,
        );
      bob.received.splice(0);
      bob.sendPy({ cmd: '102', room: 'physics' });
      await bob.expect('103', 10_000);
    }
    expect(wrong).toEqual([]);
  }, 120_000);
});

/**
 * What the members of a room on a cluster are shown of each other ("101", then "8",
 * "30", "91") stays what Presence holds, also when a member's session moves to another
 * node while its JOIN_ROOM is still on its way.
 */
import { describe, expect, it } from 'vitest';
import { followMembers, useCluster } from '../helpers/cluster.js';
import type { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();
const CAPS = ['errors', 'rooms', 'renames', 'history'];

const file = useCluster('cluster-join-roster', 2, ['--max-users', '50']);

const member = (node: number, nickname: string) => file.join(node, nickname, { caps: CAPS });

/** Every "8", "30" and "91" of `room` that `c` was shown, kept across calls. */
const views = new Map<RawClient, { names: Set<string>; seen: number }>();
function shownSoFar(c: RawClient, room: string): string[] {
  let v = views.get(c);
  if (v === undefined) {
    v = { names: new Set(), seen: 0 };
    views.set(c, v);
  }
  v.names = followMembers(v.names, c.rawFrames.slice(v.seen), room);
  v.seen = c.rawFrames.length;
  return [...v.names].sort();
}

describe.skipIf(skip)('the members of a room on a cluster', () => {
  it('a member whose session is taken over on another node mid-JOIN is shown joining the room', async () => {
    const carol = await member(1, 'carol');
    carol.sendPy({ cmd: '100', room: 'chem' });
    await carol.waitFor((m) => m.cmd === '101' && m.room === 'chem');
    const wrong: string[] = [];
    for (let round = 0; round < 80 && wrong.length === 0; round++) {
      const nickname = `dan${round}`;
      const old = await file.open(0);
      old.sendPy({ cmd: '0', nickname, caps: CAPS });
      const welcome = await old.expect('03', 10_000);
      // dan joins a room new to its node, and at once takes its session over on the other node
      // (its first connection is still open: a half-open one, say).
      const now = await file.open(1);
      old.sendPy({ cmd: '100', room: 'chem' });
      // A little later each round, from at once to about 2 ms, so that some round lands
      // the takeover between the join's claim in Presence and its "joined".
      const until = process.hrtime.bigint() + BigInt((round % 10) * 200_000);
      while (process.hrtime.bigint() < until) {}
      now.sendPy({ cmd: '0', nickname, caps: CAPS, resume: welcome.resume });
      const back = await now.expect('03', 10_000);
      expect(back.resumed).toBe(true);
      await old.closed;
      await new Promise((r) => setTimeout(r, 500));
      carol.received.splice(0);
      carol.sendPy({ cmd: '1', room: 'chem' });
      const users = await carol.expect('10', 10_000);
      const inRoom = (users.users as [string][]).map((u) => u[0]).sort();
      const told = shownSoFar(carol, 'chem');
      // Presence has dan in chem (the resume took its place there along), so chem must have
      // been told: a "8" for dan, or a "30" had its place been let go.
      if (inRoom.join() !== told.join())
        wrong.push(
          `round ${round}: chem holds ${inRoom.join(',')}, carol was shown ${told.join(',')}`,
        );
      now.sendPy({ cmd: '3' });
      await now.closed;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(wrong).toEqual([]);
  }, 240_000);
});

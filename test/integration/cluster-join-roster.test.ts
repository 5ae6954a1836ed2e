/**
 * What the members of a room on a cluster are shown of each other ("101", then "8",
 * "30", "91") stays what Presence holds, also when a member's session moves to another
 * node while its JOIN_ROOM is still on its way.
 */
import { describe, expect, it } from 'vitest';
import { followMembers, until, useCluster } from '../helpers/cluster.js';
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
  /**
   * Rounds of: a member on node 0 joins `room`, where carol (node 1) is, and at once resumes
   * its session on node `to`; what carol was shown of `room`, against Presence's list.
   */
  async function takenOverMidJoin(room: string, to: number, rounds: number): Promise<string[]> {
    const carol = await member(1, `carol${room}`);
    carol.sendPy({ cmd: '100', room });
    await carol.waitFor((m) => m.cmd === '101' && m.room === room);
    const wrong: string[] = [];
    for (let round = 0; round < rounds && wrong.length === 0; round++) {
      const nickname = `dan${round}${room}`;
      const old = await file.open(0);
      old.sendPy({ cmd: '0', nickname, caps: CAPS });
      const welcome = await old.expect('03', 10_000);
      // dan joins a room new to its node, and at once takes its session over on node `to`
      // (its first connection is still open: a half-open one, say).
      const now = await file.open(to);
      old.sendPy({ cmd: '100', room });
      // A little later each round, from at once to about 2 ms, so that some round lands
      // the takeover between the join's claim in Presence and its "joined".
      const spinUntil = process.hrtime.bigint() + BigInt((round % 10) * 200_000);
      while (process.hrtime.bigint() < spinUntil) {}
      now.sendPy({ cmd: '0', nickname, caps: CAPS, resume: welcome.resume });
      const back = await now.expect('03', 10_000);
      expect(back.resumed).toBe(true);
      await old.closed;
      await new Promise((r) => setTimeout(r, 500));
      // Compared from then on, until they agree (bounded): carol's node and the connection
      // that took the session over are told on their own time, later on a loaded machine.
      let inRoom: string[] = [];
      let told: string[] = [];
      let entered = false;
      const deadline = Date.now() + 10_000;
      for (let i = 0; i < 100; i++) {
        carol.received.splice(0);
        carol.sendPy({ cmd: '1', room });
        const users = await carol.expect('10', 10_000);
        inRoom = (users.users as [string][]).map((u) => u[0]).sort();
        told = shownSoFar(carol, room);
        entered = now.received.some((m) => m.cmd === '101' && m.room === room);
        if (inRoom.join() === told.join() && inRoom.includes(nickname) === entered) break;
        if (Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      // Presence has dan in the room when the resume took its place there along: the room
      // must have been told, with a "8" for dan (or a "30" had its place been let go).
      if (inRoom.join() !== told.join())
        wrong.push(
          `round ${round}: ${room} holds ${inRoom.join(',')}, carol was shown ${told.join(',')}`,
        );
      // And the connection that took the session over holds that place too.
      if (inRoom.includes(nickname) !== entered)
        wrong.push(
          `round ${round}: ${room} holds ${inRoom.join(',')}, ${nickname} entered: ${entered}`,
        );
      now.sendPy({ cmd: '3' });
      await now.closed;
      if (wrong.length > 0) break;
      // Its leave told before the next round (bounded): else it could reach carol after the
      // next round's USERS.
      await until(
        `carol to be shown ${nickname} gone`,
        () => !shownSoFar(carol, room).includes(nickname),
        10_000,
      );
    }
    return wrong;
  }

  it('a member whose session is taken over on another node mid-JOIN is shown joining the room', async () => {
    expect(await takenOverMidJoin('chem', 1, 80)).toEqual([]);
  }, 240_000);

  it('a member whose session is taken back on its own node mid-JOIN is shown joining the room', async () => {
    expect(await takenOverMidJoin('phys', 0, 40)).toEqual([]);
  }, 240_000);
});

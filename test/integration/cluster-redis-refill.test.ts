/**
 * Right after Redis restarted empty, before every node has registered its members again (the
 * refill): a client that resumes on another node gets its session back once its node is, and
 * a newcomer cannot take the nickname of a member whose node is not back yet.
 */
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { lobbyUsers, memberWithToken, useCluster } from '../helpers/cluster.js';
import type { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();
const CAPS = ['errors', 'rooms', 'history'];

// A timeout long enough that the node paused below is never taken for dead, nor takes itself
// for cut off, however slow the machine and the restart.
const file = useCluster('cluster-redis-refill', 2, [
  '--cluster-timeout',
  '30',
  '--room-capacity',
  '2',
]);
const open = (node: number) => file.open(node);

const member = (node: number, nickname: string) => memberWithToken(file, node, nickname, CAPS);

const REFILL_KEY = 'confab:{presence}:refill';

/** Waits (bounded) until Redis holds `key` (or, with `held` false, no longer does). */
async function untilKey(url: string, key: string, held = true): Promise<void> {
  const client = new Redis(url, { protocol: 2, lazyConnect: true });
  try {
    const deadline = Date.now() + 15_000;
    for (let i = 0; i < 1_500 && Date.now() < deadline; i++) {
      try {
        if ((await client.exists(key)) === (held ? 1 : 0)) return;
      } catch {
        // Redis is still starting.
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    throw new Error(`timed out waiting for ${key}`);
  } finally {
    client.disconnect();
  }
}

describe.skipIf(skip)(
  'a cluster while its nodes register their members again after Redis restarted empty',
  () => {
    it("a resume on another node waits for its member's node and takes the session back; a newcomer does not get its nickname", async () => {
      const wit = await member(1, 'wit');
      const sam = await member(0, 'sam');
      const paused = file.cluster.nodes[0]!;
      let back: RawClient | undefined;
      let rival: RawClient | undefined;
      paused.child.kill('SIGSTOP');
      try {
        await file.cluster.redis.restart();
        // Node 1 found Redis empty and registered its members again; node 0 has not.
        await untilKey(file.cluster.redis.url, REFILL_KEY);
        back = await open(1);
        back.sendPy({ cmd: '0', nickname: 'x', caps: CAPS, resume: sam.token });
        rival = await open(1);
        rival.sendPy({ cmd: '0', nickname: 'SAM', caps: CAPS });
        await new Promise((resolve) => setTimeout(resolve, 300));
      } finally {
        paused.child.kill('SIGCONT');
      }
      const welcome = await back.expect('03', 10_000);
      expect(welcome).toMatchObject({ resumed: true, nickname: 'sam' });
      await rival.expect('01', 10_000);
      // The old connection is closed as in any takeover, not as a member whose name was taken.
      expect(await sam.c.expect('90', 10_000)).toMatchObject({ code: 2007 });
      await sam.c.expectClose(10_000);
      // Nobody saw sam leave, and sam is listed once.
      expect(wit.c.received.filter((m) => m.cmd === '30')).toEqual([]);
      expect(await lobbyUsers(wit.c)).toEqual(['sam', 'wit']);
    }, 60_000);

    it('closes a member whose room others filled while its node was away past the refill: the room stays within its capacity', async () => {
      const inRoom = (m: { cmd: string; room?: unknown }) => m.cmd === '101' && m.room === 'crowd';
      const kim = await member(0, 'kim');
      kim.c.sendPy({ cmd: '100', room: 'crowd' });
      await kim.c.waitFor(inRoom);
      // On kim's node, in the lobby only, which nobody fills.
      const zed = await member(0, 'zed');
      const paused = file.cluster.nodes[0]!;
      const newcomers: RawClient[] = [];
      paused.child.kill('SIGSTOP');
      try {
        await file.cluster.redis.restart();
        await untilKey(file.cluster.redis.url, REFILL_KEY);
        // The refill is over (five seconds) with kim's node still away: joins are let in.
        await untilKey(file.cluster.redis.url, REFILL_KEY, false);
        for (const nickname of ['lee', 'liv']) {
          const { c } = await member(1, nickname);
          newcomers.push(c);
          c.sendPy({ cmd: '100', room: 'crowd' });
          await c.waitFor(inRoom);
        }
      } finally {
        paused.child.kill('SIGCONT');
      }
      // Its node registers kim again, finds the room full, and closes it as cut off.
      expect(await kim.c.expect('90', 15_000)).toMatchObject({ code: 3006 });
      await kim.c.expectClose(10_000);
      // Nobody holds kim's nickname: zed, whose node kept showing kim, sees it leave, once
      // (told by the close, or by the node's read of the room when its subscription is back).
      const left = (m: { cmd: string; nickname?: unknown }) =>
        m.cmd === '30' && m.nickname === 'kim';
      await zed.c.waitFor(left);
      expect(zed.c.received.filter(left)).toHaveLength(1);
      expect(await lobbyUsers(zed.c)).not.toContain('kim');
      expect(zed.c.received.filter(left)).toEqual([]);
      const rooms = newcomers[0]!;
      rooms.sendPy({ cmd: '104' });
      const listed = (await rooms.expect('105', 10_000)) as unknown as {
        rooms: { room: string; userCount: number }[];
      };
      expect(listed.rooms.find((r) => r.room === 'crowd')?.userCount).toBe(2);
      // kim's nickname is free again.
      const again = await member(1, 'kim');
      again.c.close();
    }, 60_000);

    it('a resume whose client goes while it waits takes nothing from the connection that has the member', async () => {
      const wit = await member(1, 'wit2');
      const pam = await member(0, 'pam');
      const paused = file.cluster.nodes[0]!;
      paused.child.kill('SIGSTOP');
      try {
        await file.cluster.redis.restart();
        await untilKey(file.cluster.redis.url, REFILL_KEY);
        const back = await open(1);
        back.sendPy({ cmd: '0', nickname: 'x', caps: CAPS, resume: pam.token });
        await new Promise((resolve) => setTimeout(resolve, 150));
        back.close();
        await new Promise((resolve) => setTimeout(resolve, 150));
      } finally {
        paused.child.kill('SIGCONT');
      }
      await untilKey(file.cluster.redis.url, REFILL_KEY, false);
      // Still pam's: what she says reaches the room, and nobody saw her leave.
      pam.c.sendPy({ cmd: '7', msg: 'still here', room: 'lobby' });
      await wit.c.waitFor((m) => m.cmd === '70' && m.msg === 'still here', 1, 10_000);
      expect(pam.c.received.filter((m) => m.cmd === '90')).toEqual([]);
      expect(wit.c.received.filter((m) => m.cmd === '30' && m.nickname === 'pam')).toEqual([]);
    }, 60_000);
  },
);

/**
 * Members joining one room of a cluster at the same moment: each is shown the other once,
 * either in its "101" or as a "8" after it, never both, and its "101" counts whom it lists,
 * as on one process.
 */
import { describe, expect, it } from 'vitest';
import { until, useCluster } from '../helpers/cluster.js';
import type { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();
const CAPS = ['errors', 'rooms', 'history'];
const COURSE_CAPS = ['errors', 'rooms'];

const file = useCluster('cluster-join-twice', 2, ['--max-users', '50']);

/**
 * What `c` was shown of `room`, from its "101" on, in order; and each step that does not
 * follow from the ones before it: a "8" of someone shown already, a "30" of someone not
 * shown, or a count other than the number of members shown.
 */
function follow(c: RawClient, room: string): { shown: Set<string>; wrong: string[] } {
  const shown = new Set<string>();
  const wrong: string[] = [];
  let entered = false;
  for (const frame of c.rawFrames) {
    const m = JSON.parse(frame) as Record<string, unknown>;
    if (m.room !== room) continue;
    if (m.cmd === '101') {
      entered = true;
      for (const name of m.members as string[]) shown.add(name);
      if (m.userCount !== shown.size) {
        wrong.push(`"101" lists ${[...shown].join(',')} but counts ${String(m.userCount)}`);
      }
    } else if (!entered) {
    } else if (m.cmd === '8') {
      const name = m.nickname as string;
      if (shown.has(name)) wrong.push(`"8" of ${name}, shown already`);
      shown.add(name);
      if (m.userCount !== shown.size) wrong.push(`"8" of ${name} counts ${String(m.userCount)}`);
    } else if (m.cmd === '30') {
      const name = m.nickname as string;
      if (!shown.has(name)) wrong.push(`"30" of ${name}, never shown`);
      shown.delete(name);
      if (m.userCount !== shown.size) wrong.push(`"30" of ${name} counts ${String(m.userCount)}`);
    }
  }
  return { shown, wrong };
}

describe.skipIf(skip)('members joining one room of a cluster at once', () => {
  /**
   * Rounds of: `count` members (on the nodes `nodes` gives, in turn) connect, then all
   * send JOIN_ROOM of a room new to the cluster in one go, with `watcher` there already
   * when one is given; each must end up shown everyone once, consistently.
   */
  async function racingJoins(
    nodes: readonly number[],
    count: number,
    rounds: number,
    caps: readonly string[],
    withWatcher: boolean,
  ): Promise<string[]> {
    const wrong: string[] = [];
    for (let round = 0; round < rounds && wrong.length === 0; round++) {
      const room = `race${nodes.join('')}${count}${caps.length}${withWatcher ? 'w' : ''}r${round}`;
      const clients: RawClient[] = [];
      const nicknames: string[] = [];
      if (withWatcher) {
        const watcher = await file.join(nodes[1 % nodes.length]!, `w${room}`, { caps });
        watcher.sendPy({ cmd: '100', room });
        await watcher.waitFor((m) => m.cmd === '101' && m.room === room);
        clients.push(watcher);
        nicknames.push(`w${room}`);
      }
      const joiners: RawClient[] = [];
      for (let i = 0; i < count; i++) {
        const nickname = `j${i}${room}`;
        joiners.push(await file.join(nodes[i % nodes.length]!, nickname, { caps }));
        nicknames.push(nickname);
      }
      for (const c of joiners) c.sendPy({ cmd: '100', room });
      clients.push(...joiners);
      for (const c of joiners)
        await c.waitFor((m) => m.cmd === '101' && m.room === room, 1, 10_000);
      // Until every one was shown everyone (bounded): events from the other node come on
      // their own time.
      const everyone = [...nicknames].sort().join();
      await until(
        `everyone in ${room} to be shown everyone`,
        () => clients.every((c) => [...follow(c, room).shown].sort().join() === everyone),
        10_000,
      ).catch(() => {});
      // A "8" repeated later than that would still be wrong.
      await new Promise((r) => setTimeout(r, 200));
      clients.forEach((c, i) => {
        const seen = follow(c, room);
        for (const w of seen.wrong) wrong.push(`round ${round}, ${nicknames[i]}: ${w}`);
        const shown = [...seen.shown].sort().join();
        if (shown !== everyone) {
          wrong.push(`round ${round}, ${nicknames[i]}: shown ${shown}, in the room ${everyone}`);
        }
      });
      for (const c of clients) {
        c.sendPy({ cmd: '3' });
        await c.closed;
      }
    }
    return wrong;
  }

  it('two members on one node', async () => {
    expect(await racingJoins([0], 2, 8, CAPS, false)).toEqual([]);
  }, 120_000);

  it('two members on two nodes', async () => {
    expect(await racingJoins([0, 1], 2, 8, CAPS, false)).toEqual([]);
  }, 120_000);

  it('four members on two nodes, without history, with a member there already', async () => {
    expect(await racingJoins([0, 1], 4, 6, COURSE_CAPS, true)).toEqual([]);
  }, 120_000);
});

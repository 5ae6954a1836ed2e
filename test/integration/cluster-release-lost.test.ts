/**
 * A member's departure whose release in Presence fails because the node's connection to
 * Redis drops while the release waits for its reply (`CLIENT KILL TYPE normal`, a network
 * blip). The node retries the release after its next heartbeat, and Presence frees the
 * member then; the rooms it was in must hear it left ("30"), on every node, so that what
 * their members were shown agrees with Presence (USERS, the "101" of a newcomer). The
 * subscriber connections stay up meanwhile: no resync comes to mend the lists.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { followMembers, until, useCluster } from '../helpers/cluster.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();
const CAPS = ['errors', 'rooms', 'history'];
/** Scenarios tried until one has its release cut off in flight. */
const ATTEMPTS = 10;

const c = useCluster('release-lost', 2, []);
let admin: Redis;

beforeAll(() => {
  if (skip) return;
  admin = new Redis(c.cluster.redis.url, { maxRetriesPerRequest: 1 });
});

afterAll(async () => {
  await admin?.call('CLIENT', 'UNPAUSE').catch(() => {});
  admin?.disconnect();
});

/** The nicknames USERS lists for the lobby, asked on `client`. */
async function users(client: Awaited<ReturnType<typeof c.join>>): Promise<Set<string>> {
  client.drain();
  client.sendPy({ cmd: '1' });
  const reply = (await client.expect('10', 10_000)) as unknown as { users: [string][] };
  return new Set(reply.users.map((u) => u[0]));
}

describe.skipIf(skip)('a release whose reply was lost', () => {
  it('still tells the rooms the member left, once Presence has freed it', async () => {
    const node0 = c.cluster.nodes[0]!;
    // On node 1: what it is shown of the lobby is followed from its first "101".
    const watcher = await c.join(1, 'watcher', { caps: CAPS });
    const frames: string[] = [];
    let cut = '';
    for (let attempt = 0; attempt < ATTEMPTS && cut === ''; attempt++) {
      const nickname = `ghost${attempt}`;
      const ghost = await c.join(0, nickname, { caps: CAPS });
      await watcher.waitFor((m) => m.cmd === '8' && m.nickname === nickname, 1, 10_000);
      const logged = node0.output().split('could not release a member').length;
      // Writes wait; the release is sent and waits with them; then the connection drops.
      await admin.call('CLIENT', 'PAUSE', '10000', 'WRITE');
      ghost.close();
      await ghost.closed;
      await until(
        'a write waiting on a paused Redis',
        async () => /flags=b\b/.test(String(await admin.call('CLIENT', 'LIST'))),
        5_000,
      );
      await new Promise((resolve) => setTimeout(resolve, 300));
      await admin.call('CLIENT', 'KILL', 'TYPE', 'normal');
      await admin.call('CLIENT', 'UNPAUSE');
      // Did the release fail? (A heartbeat caught by the kill is just sent again.)
      try {
        await until(
          'the failed release in the log',
          () => node0.output().split('could not release a member').length > logged,
          3_000,
        );
        cut = nickname;
      } catch {
        // Not in flight this time (a slow machine): try again.
      }
    }
    expect(cut, 'no release was cut off in flight').not.toBe('');

    // Presence frees the member at the node's retry after its next heartbeat.
    await until(
      'Presence freeing the member',
      async () => !(await users(watcher)).has(cut),
      10_000,
    );
    const inPresence = await users(watcher);
    // The rooms hear it: the "30" comes as soon as the retry's answer does.
    let shown = new Set<string>();
    await until(
      'the lobby as shown to agree with Presence',
      () => {
        frames.push(...watcher.rawFrames.splice(0));
        shown = followMembers(new Set(), frames, 'lobby');
        return !shown.has(cut);
      },
      5_000,
    ).catch(() => {});
    expect([...shown].sort()).toEqual([...inPresence].sort());
  }, 150_000);
});

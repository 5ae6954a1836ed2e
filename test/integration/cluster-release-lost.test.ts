/**
 * A member's departure whose release in Presence fails because the node's connection to
 * Redis drops while the release waits for its reply (`CLIENT KILL TYPE normal`, a network
 * blip). The node retries the release after its next heartbeat, and Presence frees the
 * member then; the rooms it was in must hear it left ("30"), on every node, so that what
 * their members were shown agrees with Presence (USERS, the "101" of a newcomer). The
 * subscriber connections stay up meanwhile: no resync comes to mend the lists. Here node 0
 * reaches Redis through a relay that closes its connection once the release went through.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lobbyUsers, shownAndListed, until, useRelayedCluster } from '../helpers/cluster.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();
const CAPS = ['errors', 'rooms', 'history'];
const TIMEOUT_S = 2;

// Node 0 reaches Redis through the relay, node 1 directly.
const cluster = useRelayedCluster(0, CAPS, TIMEOUT_S);
const { member } = cluster;
let admin: Redis;

beforeAll(() => {
  if (skip) return;
  admin = new Redis(cluster.redis.url, { maxRetriesPerRequest: 1 });
});

afterAll(() => admin?.disconnect());

/**
 * What a node sends Redis to release (or expel) `nickname`, as the command's arguments go
 * on the wire: its node and member id, then how long the answer is kept (twice the timeout,
 * at least 30 s).
 */
async function releaseOf(nickname: string): Promise<string> {
  const ref = (await admin.hget('confab:{presence}:nicks', nickname)) ?? '';
  const at = ref.lastIndexOf(':');
  expect(at, `${nickname} registered in Presence`).toBeGreaterThan(0);
  const [node, id] = [ref.slice(0, at), ref.slice(at + 1)];
  const kept = String(Math.max(2 * TIMEOUT_S * 1000, 30_000));
  return `${node}\r\n$${id.length}\r\n${id}\r\n$${kept.length}\r\n${kept}\r\n`;
}

describe.skipIf(skip)('a release whose reply was lost', () => {
  it('still tells the rooms the member left, once Presence has freed it', async () => {
    // On node 1: what it is shown of the lobby is followed from its first "101".
    const watcher = await member(1, 'watcher');
    const ghost = await member(0, 'ghost');
    await watcher.waitFor((m) => m.cmd === '8' && m.nickname === 'ghost', 1, 10_000);
    // The release reaches Redis, and the node's connection drops before it reads the answer.
    const lost = cluster.relay.arm(await releaseOf('ghost'), 'reset');
    ghost.close();
    await lost;

    // Presence frees the member at the node's retry after its next heartbeat.
    await until(
      'Presence freeing the member',
      async () => !(await lobbyUsers(watcher)).includes('ghost'),
      10_000,
    );
    // The rooms hear it: the "30" comes as soon as the retry's answer does.
    const { shown, listed } = await shownAndListed(watcher, (s) => !s.includes('ghost'), 5_000);
    expect(shown).toEqual(listed);
  }, 60_000);
});

/**
 * A node whose heartbeats have a connection of their own: while its other connection (the
 * one its claims, joins and chats wait on) answers nothing for the timeout, it sends no
 * heartbeat, so the others reap it, and it closes its clients; once that connection answers
 * again, it heartbeats again.
 */
import { describe, expect, it } from 'vitest';
import { MemoryPresence, PresenceHub } from '../../../src/core/memory-presence.js';
import { PresenceKeeper } from '../../../src/core/presence.js';

const TIMEOUT_MS = 10_000;
const INTERVAL_MS = 1_000;

describe('PresenceKeeper with a probe of the other connection', () => {
  it('stops heartbeating once the probe went unanswered for the timeout, and starts again after', async () => {
    let now = 1_000_000;
    const hub = new PresenceHub(() => now);
    const presence = new MemoryPresence({ hub, node: 'n1', timeoutMs: TIMEOUT_MS });
    const other = new MemoryPresence({ hub, node: 'n2', timeoutMs: TIMEOUT_MS });
    const expired: number[] = [];
    let answer: (() => void) | undefined;
    let stalled = false;
    const k = new PresenceKeeper(
      presence,
      { onReaped: () => {}, onExpired: () => expired.push(now) },
      {
        intervalMs: INTERVAL_MS,
        now: () => now,
        probe: () =>
          stalled
            ? new Promise<void>((resolve) => {
                answer = resolve;
              })
            : Promise.resolve(),
      },
    );
    await k.start();
    k.stop();
    await other.heartbeat();
    let beats = 0;
    const beat = presence.heartbeat.bind(presence);
    presence.heartbeat = () => {
      beats++;
      return beat();
    };
    stalled = true;
    for (let i = 0; i < 22; i++) {
      now += INTERVAL_MS;
      await other.heartbeat();
      await k.tick();
    }
    // Heartbeats until the probe sent first had waited the timeout, none after; told once.
    expect(beats).toBe(10);
    expect(expired).toHaveLength(1);
    expect((await other.reap()).map((d) => d.node)).toEqual(['n1']);
    // The connection answers again: heartbeats go again, and the node learns it was reaped.
    stalled = false;
    answer?.();
    // The next probe is sent at a tick, and its answer counts at the tick after.
    for (let i = 0; i < 3; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      now += INTERVAL_MS;
      await k.tick();
    }
    expect(beats).toBeGreaterThan(10);
  });
});

/**
 * A node's process paused past the timeout (a paused VM or container): the others may have
 * reaped it. Back, it reads its sockets before its timers run, so the keeper is asked first
 * (stale) and tells the node at once; a stall of Redis, during which the ticks go on, is left
 * to the ticks.
 */
import { describe, expect, it } from 'vitest';
import { MemoryPresence, PresenceHub } from '../../../src/core/memory-presence.js';
import { PresenceKeeper } from '../../../src/core/presence.js';

const TIMEOUT_MS = 10_000;
const INTERVAL_MS = 1_000;

function keeper() {
  let now = 1_000_000;
  const hub = new PresenceHub(() => now);
  const presence = new MemoryPresence({ hub, node: 'n1', timeoutMs: TIMEOUT_MS });
  const expired: number[] = [];
  const k = new PresenceKeeper(
    presence,
    { onReaped: () => {}, onExpired: () => expired.push(now) },
    { intervalMs: INTERVAL_MS, now: () => now },
  );
  return {
    k,
    presence,
    expired,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

describe('PresenceKeeper after a pause of its process', () => {
  it('is stale once neither a tick nor an answered heartbeat came for the timeout', async () => {
    const { k, expired, advance } = keeper();
    await k.start();
    k.stop();
    advance(TIMEOUT_MS - 1);
    expect(k.stale()).toBe(false);
    advance(2);
    expect(k.stale()).toBe(true);
    expect(k.stale()).toBe(true);
    // Told once.
    expect(expired).toHaveLength(1);
  });

  it('a tick back from such a pause tells the node before it heartbeats', async () => {
    const { k, expired, advance } = keeper();
    await k.start();
    k.stop();
    advance(TIMEOUT_MS + 1);
    const tick = k.tick();
    expect(expired).toHaveLength(1);
    await tick;
    expect(k.stale()).toBe(false);
  });

  it('ticks that go on while heartbeats go unanswered are not a pause', async () => {
    const { k, presence, expired, advance } = keeper();
    await k.start();
    k.stop();
    // A stalled Redis: every tick runs, no heartbeat returns.
    presence.heartbeat = () => new Promise(() => {});
    for (let i = 0; i < 20; i++) {
      advance(INTERVAL_MS);
      void k.tick();
      expect(k.stale()).toBe(false);
    }
    // The ticks themselves noticed the cut-off, once.
    expect(expired).toHaveLength(1);
  });

  it('the heartbeat that waited out a stall of Redis counts from its answer: no second cut-off', async () => {
    const { k, presence, expired, advance } = keeper();
    await k.start();
    k.stop();
    const real = presence.heartbeat.bind(presence);
    let answer: (() => void) | undefined;
    presence.heartbeat = () =>
      new Promise((resolve, reject) => {
        answer = () => real().then(resolve, reject);
      });
    // Redis stalls for 1.5 timeouts; the ticks go on and notice the cut-off once.
    const first = k.tick();
    for (let i = 0; i < 15; i++) {
      advance(INTERVAL_MS);
      void k.tick();
    }
    expect(expired).toHaveLength(1);
    // It answers; the next heartbeat is then slow for a while (a loaded machine).
    answer!();
    await first;
    advance(INTERVAL_MS);
    void k.tick();
    for (let i = 0; i < 3; i++) {
      advance(INTERVAL_MS);
      void k.tick();
    }
    expect(expired).toHaveLength(1);
  });
});

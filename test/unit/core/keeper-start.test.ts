/**
 * A starting node's heartbeat still under way when the keeper starts: its answer is the
 * keeper's first round, not dropped (a reset or an expiry it reported would reach nobody).
 */
import { describe, expect, it } from 'vitest';
import { MemoryPresence, PresenceHub } from '../../../src/core/memory-presence.js';
import { type Heartbeat, PresenceKeeper } from '../../../src/core/presence.js';

function keeper() {
  const presence = new MemoryPresence({ hub: new PresenceHub(), node: 'n1', timeoutMs: 10_000 });
  const counts = { beats: 0, reaps: 0, expired: 0, resets: 0 };
  presence.heartbeat = async () => {
    counts.beats++;
    return { status: 'ok' };
  };
  const reap = presence.reap.bind(presence);
  presence.reap = () => {
    counts.reaps++;
    return reap();
  };
  const k = new PresenceKeeper(
    presence,
    {
      onReaped: () => {},
      onExpired: () => counts.expired++,
      onReset: () => counts.resets++,
    },
    { intervalMs: 60_000 },
  );
  return { k, counts };
}

/** A heartbeat answered `answer` after `ms`. */
function later(answer: Heartbeat, ms: number): Promise<Heartbeat> {
  return new Promise((resolve) => setTimeout(() => resolve(answer), ms));
}

describe('PresenceKeeper started with a heartbeat under way', () => {
  for (const [answer, seen] of [
    [{ status: 'expired' }, { expired: 1, resets: 0 }],
    [
      { status: 'reset', lost: [] },
      { expired: 0, resets: 1 },
    ],
  ] as const) {
    it(`takes its answer ('${answer.status}') as its first round's, sending none of its own`, async () => {
      const { k, counts } = keeper();
      try {
        await k.start({ beat: later(answer, 50), sent: performance.now() });
        expect(counts).toEqual({ beats: 0, reaps: 1, ...seen });
        // The next round heartbeats as ever.
        await k.tick();
        expect(counts).toEqual({ beats: 1, reaps: 2, ...seen });
      } finally {
        k.stop();
      }
    });
  }

  it('counts a failed one as a failed round', async () => {
    const { k, counts } = keeper();
    try {
      await k.start({ beat: Promise.reject(new Error('lost')), sent: performance.now() });
      expect(counts).toEqual({ beats: 0, reaps: 0, expired: 0, resets: 0 });
    } finally {
      k.stop();
    }
  });
});

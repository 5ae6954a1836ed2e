/**
 * A heartbeat refused (the node may not run in this cluster any more): the keeper stops
 * heartbeating, reaps nobody, and tells the node once, with the reason.
 */
import { describe, expect, it } from 'vitest';
import { MemoryPresence, PresenceHub } from '../../../src/core/memory-presence.js';
import { type Heartbeat, PresenceKeeper } from '../../../src/core/presence.js';

/** A keeper heartbeating every 5 ms whose `beat`th heartbeat (1 first) answers `answer`. */
function keeper(answer: (beat: number) => Heartbeat) {
  const presence = new MemoryPresence({ hub: new PresenceHub(), node: 'n1', timeoutMs: 10_000 });
  const counts = { beats: 0, reaps: 0 };
  presence.heartbeat = async () => answer(++counts.beats);
  const reap = presence.reap.bind(presence);
  presence.reap = () => {
    counts.reaps++;
    return reap();
  };
  const refused: string[] = [];
  const k = new PresenceKeeper(
    presence,
    { onReaped: () => {}, onExpired: () => {}, onRefused: (reason) => refused.push(reason) },
    { intervalMs: 5 },
  );
  return { k, counts, refused };
}

const REFUSED: Heartbeat = { status: 'refused', reason: 'another list' };

describe('PresenceKeeper with a refused heartbeat', () => {
  it('stops heartbeating and reaping, and tells the node once why', async () => {
    const { k, counts, refused } = keeper((beat) => (beat === 1 ? { status: 'ok' } : REFUSED));
    try {
      await k.start();
      expect(counts.reaps).toBe(1);
      // Far more than one interval: ticks would have run on.
      for (let i = 0; i < 100 && counts.beats < 2; i++) {
        await new Promise((r) => setTimeout(r, 5));
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(counts).toEqual({ beats: 2, reaps: 1 });
      expect(refused).toEqual(['another list']);
    } finally {
      k.stop();
    }
  });

  it('sends no more heartbeats when the very first is refused', async () => {
    const { k, counts, refused } = keeper(() => REFUSED);
    try {
      await k.start();
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(counts).toEqual({ beats: 1, reaps: 0 });
      expect(refused).toEqual(['another list']);
    } finally {
      k.stop();
    }
  });
});

/**
 * A heartbeat refused (the node may not run in this cluster any more): the keeper stops
 * heartbeating, reaps nobody, and tells the node once, with the reason.
 */
import { describe, expect, it } from 'vitest';
import { MemoryPresence, PresenceHub } from '../../../src/core/memory-presence.js';
import { PresenceKeeper } from '../../../src/core/presence.js';

describe('PresenceKeeper with a refused heartbeat', () => {
  it('stops heartbeating and reaping, and tells the node once why', async () => {
    const hub = new PresenceHub();
    const presence = new MemoryPresence({ hub, node: 'n1', timeoutMs: 10_000 });
    let beats = 0;
    let reaps = 0;
    presence.heartbeat = async () => {
      beats++;
      return beats === 1 ? { status: 'ok' } : { status: 'refused', reason: 'another list' };
    };
    const reap = presence.reap.bind(presence);
    presence.reap = () => {
      reaps++;
      return reap();
    };
    const refused: string[] = [];
    const k = new PresenceKeeper(
      presence,
      { onReaped: () => {}, onExpired: () => {}, onRefused: (reason) => refused.push(reason) },
      { intervalMs: 5 },
    );
    try {
      await k.start();
      expect(reaps).toBe(1);
      // Far more than one interval: ticks would have run on.
      for (let i = 0; i < 100 && beats < 2; i++) await new Promise((r) => setTimeout(r, 5));
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(beats).toBe(2);
      expect(reaps).toBe(1);
      expect(refused).toEqual(['another list']);
    } finally {
      k.stop();
    }
  });
});

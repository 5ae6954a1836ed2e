/** JoinPlaces: members waiting for their joins to come back through the broker, per room. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ChatPlace, JoinedEvent } from '../../../src/core/broker.js';
import { JoinPlaces } from '../../../src/core/join-places.js';

const joined = (nickname: string): JoinedEvent => ({
  type: 'joined',
  room: 'physics',
  nickname,
  count: 2,
});
const place: ChatPlace = { id: 7, epoch: 'e1' };

describe('JoinPlaces', () => {
  it('gives a join its place; those still waiting before it (lost with a subscription) get none', async () => {
    const places = new JoinPlaces();
    const ann = places.wait('r', 'ann');
    const bob = places.wait('r', 'bob');
    const cy = places.wait('r', 'cy');
    const other = places.wait('s', 'ann');
    places.placed('r', joined('bob'), place);
    await expect(ann).resolves.toBeUndefined();
    await expect(bob).resolves.toEqual(place);
    places.placed('r', joined('nobody'), place);
    places.placed('r', joined('cy'), { id: 9, epoch: 'e1' });
    await expect(cy).resolves.toEqual({ id: 9, epoch: 'e1' });
    places.giveUp('s');
    await expect(other).resolves.toBeUndefined();
  });

  it('ends every wait of a room it gives up on, and then knows the room no more', async () => {
    const places = new JoinPlaces();
    const waits = [places.wait('r', 'ann'), places.wait('r', 'bob')];
    places.giveUp('r');
    await expect(Promise.all(waits)).resolves.toEqual([undefined, undefined]);
    places.giveUp('r');
    places.placed('r', joined('ann'), place);
    const again = places.wait('r', 'ann');
    places.placed('r', joined('ann'), place);
    await expect(again).resolves.toEqual(place);
  });

  it('stops the wait of a join whose PUBLISH failed only, and leaves the others waiting', async () => {
    const places = new JoinPlaces();
    const ann = places.wait('r', 'ann');
    const bob = places.wait('r', 'bob');
    places.unplaced('r', 'bob');
    places.unplaced('r', 'nobody');
    places.unplaced('s', 'ann');
    await expect(bob).resolves.toBeUndefined();
    let annSettled = false;
    void ann.then(() => {
      annSettled = true;
    });
    await Promise.resolve();
    expect(annSettled).toBe(false);
    places.placed('r', joined('ann'), place);
    await expect(ann).resolves.toEqual(place);
    // Its join, should Redis have taken it after all, finds nobody waiting.
    places.placed('r', joined('bob'), place);
  });

  describe('with a clock', () => {
    afterEach(() => {
      vi.useRealTimers();
    });

    it('gives each member up after its own 3 s of waiting, not the first one’s', async () => {
      vi.useFakeTimers();
      const places = new JoinPlaces();
      const settled: string[] = [];
      const wait = (nickname: string) =>
        places.wait('r', nickname).then((after) => {
          settled.push(`${nickname} ${after === undefined ? 'none' : after.id}`);
        });
      const ann = wait('ann');
      await vi.advanceTimersByTimeAsync(2_000);
      const bob = wait('bob');
      await vi.advanceTimersByTimeAsync(1_000);
      await ann;
      expect(settled).toEqual(['ann none']);
      await vi.advanceTimersByTimeAsync(1_000);
      // Still waiting: its join comes back in its place.
      places.placed('r', joined('bob'), place);
      await bob;
      expect(settled).toEqual(['ann none', 'bob 7']);
      const cy = wait('cy');
      await vi.advanceTimersByTimeAsync(3_000);
      await cy;
      expect(settled.at(-1)).toBe('cy none');
    });
  });
});

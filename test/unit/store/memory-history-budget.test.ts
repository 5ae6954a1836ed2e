/**
 * MemoryHistoryStore's bound on what it holds (`maxBytes`, `maxEmptyRooms`): the
 * HistoryStore contract runs it with the default budget, far above what the contract
 * writes; here the budget is small enough to matter.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { StoredMessage } from '../../../src/core/history.js';
import {
  MemoryHistoryStore,
  type MemoryHistoryStoreOptions,
  ROOM_WEIGHT,
} from '../../../src/store/memory-history.js';

const RETENTION = { maxMessages: 20, maxAgeMs: 0 };

function open(options: Partial<MemoryHistoryStoreOptions> = {}): MemoryHistoryStore {
  return new MemoryHistoryStore({ retention: RETENTION, pruneIntervalMs: 0, ...options });
}

/** Every message the store still holds for a room, oldest first. */
async function held(store: MemoryHistoryStore, room: string): Promise<StoredMessage[]> {
  return store.read(room, { limit: RETENTION.maxMessages });
}

describe('MemoryHistoryStore budget', () => {
  it('drops the oldest messages of the rooms written least recently first, and keeps their ids', async () => {
    // Each message 2 × (100 + 3) + 96 = 302: three rooms of three messages are 2,718, and
    // each room ROOM_WEIGHT; the budget leaves 2,000 for the messages of those three.
    const maxBytes = 2_000 + 3 * ROOM_WEIGHT;
    const store = open({ maxBytes });
    const text = 'x'.repeat(100);
    for (const room of ['a', 'b', 'c']) {
      for (let i = 0; i < 3; i++) await store.append(room, { at: 1, from: 'ann', msg: text });
    }
    expect(store.bytes).toBeLessThanOrEqual(maxBytes);
    // 2,718 - 2,000: three messages go, all of them a's, the room written first.
    expect(await held(store, 'a')).toEqual([]);
    expect((await held(store, 'b')).map((m) => m.id)).toEqual([1, 2, 3]);
    expect((await held(store, 'c')).map((m) => m.id)).toEqual([1, 2, 3]);
    const a = await store.room('a');
    expect(a).toMatchObject({ top: 3, oldest: 4 });
    // Written again, a is now the newest: b loses its oldest; a's ids go on from 3.
    const next = await store.append('a', { at: 2, from: 'ann', msg: text });
    expect(next.message.id).toBe(4);
    expect(next.epoch).toBe(a.epoch);
    expect((await held(store, 'b')).map((m) => m.id)).toEqual([2, 3]);
    expect((await held(store, 'a')).map((m) => m.id)).toEqual([4]);
    expect(store.bytes).toBeLessThanOrEqual(maxBytes);
  });

  it('keeps the newest message of a room even when it alone is over the budget', async () => {
    const store = open({ maxBytes: 1_000 });
    await store.append('a', { at: 1, from: 'ann', msg: 'small' });
    const big = await store.append('a', { at: 1, from: 'ann', msg: 'y'.repeat(2_000) });
    expect((await held(store, 'a')).map((m) => m.id)).toEqual([big.message.id]);
    await store.append('b', { at: 1, from: 'ann', msg: 'small' });
    expect(await held(store, 'a')).toEqual([]);
    expect(store.bytes).toBeLessThanOrEqual(1_000);
  });

  it('forgets the rooms it emptied past maxEmptyRooms, and gives them a new epoch', async () => {
    let n = 0;
    const store = open({ maxBytes: 1_000, maxEmptyRooms: 2, newId: () => `seed${n++}` });
    const first = await store.append('r0', { at: 1, from: 'ann', msg: 'z'.repeat(400) });
    // Each next room pushes the one before it out.
    for (let i = 1; i <= 3; i++) {
      await store.append(`r${i}`, { at: 1, from: 'ann', msg: 'z'.repeat(400) });
    }
    // r0, r1 remembered by their top; r2 was one too many: both forgotten, seed changed.
    expect(await store.room('r2')).toMatchObject({ top: 1, oldest: 2 });
    const r0 = await store.room('r0');
    expect(r0.top).toBe(0);
    expect(r0.epoch).not.toBe(first.epoch);
  });

  it('agrees with a model of the budget over random appends to a few rooms', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 200, max: 4_000 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 5 }), fc.nat({ max: 300 })), {
          minLength: 1,
          maxLength: 120,
        }),
        async (maxBytes, appends) => {
          const store = open({ maxBytes });
          // The model: per room its top and its held [id, weight]s, least recently written first.
          const tops = new Map<string, number>();
          const rooms = new Map<string, [id: number, weight: number][]>();
          let total = 0;
          for (const [r, length] of appends) {
            const room = `room${r}`;
            const { message } = await store.append(room, {
              at: 1,
              from: 'ann',
              msg: 'm'.repeat(length),
            });
            const id = (tops.get(room) ?? 0) + 1;
            tops.set(room, id);
            const kept = rooms.get(room) ?? [];
            rooms.delete(room);
            rooms.set(room, kept);
            const weight = 2 * (length + 3) + 96;
            // A room holding messages counts for itself too.
            if (kept.length === 0) total += ROOM_WEIGHT;
            kept.push([id, weight]);
            total += weight;
            if (kept.length > RETENTION.maxMessages) total -= kept.shift()![1];
            for (const held of rooms.values()) {
              while (total > maxBytes && held.length > (held === kept ? 1 : 0)) {
                total -= held.shift()![1];
                if (held.length === 0) total -= ROOM_WEIGHT;
              }
            }
            expect(message.id).toBe(id);
            expect(store.bytes).toBe(total);
            expect(store.bytes).toBeLessThanOrEqual(Math.max(maxBytes, ROOM_WEIGHT + weight));
          }
          for (const [room, held] of rooms) {
            expect((await store.read(room, { limit: 100 })).map((m) => m.id)).toEqual(
              held.map(([id]) => id),
            );
            expect(await store.room(room)).toMatchObject({
              top: tops.get(room),
              oldest: held[0]?.[0] ?? tops.get(room)! + 1,
            });
          }
        },
      ),
      { numRuns: 100 },
    );
  });
});

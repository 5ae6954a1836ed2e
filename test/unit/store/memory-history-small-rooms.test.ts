/**
 * --history-memory-max against a walk of many rooms with the smallest messages: the
 * budget counts each message's text and object (`weigh`), about 100 bytes for a
 * one-character chat, but each room's ring, its cid map and its epoch cost several
 * times that. Unless a room is counted too, such a walk holds some 7 times the budget
 * (1.8 GB at the default 256 MiB).
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import { expect, it } from 'vitest';
import { MemoryHistoryStore } from '../../../src/store/memory-history.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

it('holds about its budget in rooms of one short message each', async () => {
  const BUDGET = 4 * 1024 * 1024;
  const store = new MemoryHistoryStore({
    retention: { maxMessages: 1000, maxAgeMs: 0 },
    pruneIntervalMs: 0,
    maxBytes: BUDGET,
    // The rooms emptied are remembered by their top: a bounded cost of its own, left out here.
    maxEmptyRooms: 0,
  });
  const ROOMS = 60_000;
  // Room names as read from the network: distinct strings, each kept by its ring.
  const names = Array.from({ length: ROOMS }, (_, i) => `walk${i}`);
  gc();
  const before = process.memoryUsage().heapUsed;
  for (const room of names) await store.append(room, { at: Date.now(), from: 'a', msg: 'x' });
  gc();
  const grown = process.memoryUsage().heapUsed - before;
  await store.close();
  expect(grown).toBeLessThan(2 * BUDGET);
}, 60_000);

/**
 * MemoryHistoryStore's budget (--history-memory-max) against a walk that leaves one
 * short message in each of a great many rooms: what each room holding a message costs
 * besides its messages (its ring, cid map, epoch and map entry, some 600 bytes) must count
 * too, or the store holds several times its budget.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import { expect, it } from 'vitest';
import { MemoryHistoryStore } from '../../../src/store/memory-history.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

it('holds about its budget when every room has one short message', async () => {
  const maxBytes = 2 * 1024 * 1024;
  const store = new MemoryHistoryStore({
    retention: { maxMessages: 1000, maxAgeMs: 0 },
    pruneIntervalMs: 0,
    maxBytes,
    // The emptied rooms' tops are bounded on their own: few here, to see the rooms' share.
    maxEmptyRooms: 100,
  });
  gc();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < 60_000; i++) {
    await store.append(`room${i}`, { at: Date.now(), from: 'walker', msg: `${i}` });
  }
  gc();
  const grown = process.memoryUsage().heapUsed - before;
  await store.close();
  expect(store.bytes).toBeLessThanOrEqual(maxBytes);
  expect(grown).toBeLessThan(1.5 * maxBytes);
}, 60_000);

/**
 * MemoryHistoryStore's budget (--history-memory-max) against a walk that leaves one
 * short message in each of a great many rooms: what each room holding a message costs
 * besides its messages (its ring, cid map, epoch and map entry, some 600 bytes) must count
 * too, or the store holds several times its budget.
 */
import { randomBytes } from 'node:crypto';
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

/**
 * Heap grown, per byte the store counts, when one room holds `count` short chats with
 * cids (past the budget, as many as it takes): each kept under a sender of its own (a walk
 * of clients, each sending one chat, their senders made as Chat makes them) or under the
 * nickname.
 */
async function cidsPerCountedByte(
  senders: boolean,
  count: number,
  maxBytes = 8 * 1024 * 1024,
): Promise<number> {
  const store = new MemoryHistoryStore({
    retention: { maxMessages: 100_000, maxAgeMs: 0 },
    pruneIntervalMs: 0,
    maxBytes,
  });
  gc();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < count; i++) {
    const draft = { at: Date.now(), from: 'walker', msg: 'x', cid: `c${i}` };
    const sender = senders ? randomBytes(9).toString('base64url') : undefined;
    await store.append('r', sender === undefined ? draft : { ...draft, sender });
  }
  gc();
  const grown = process.memoryUsage().heapUsed - before;
  await store.close();
  expect(store.bytes).toBeLessThanOrEqual(maxBytes);
  return grown / store.bytes;
}

it('holds about its budget when every short chat has a cid', async () => {
  expect(await cidsPerCountedByte(false, 240_000)).toBeLessThan(1.5);
}, 60_000);

it('counts a cid kept under a sender as it costs, as one kept under the nickname', async () => {
  // Below the budget, so that both hold the same chats: cut past it, their maps of cids
  // are left in states of their own (deleted entries, capacities), which weigh differently.
  // Many, so that the store layer's cache of senders' names (a few thousand, whatever the
  // budget) is a small part of what grows.
  const nickname = await cidsPerCountedByte(false, 120_000, 64 * 1024 * 1024);
  const sender = await cidsPerCountedByte(true, 120_000, 64 * 1024 * 1024);
  // Nor counted as more than it costs: the budget would then hold fewer chats than it could.
  expect(sender).toBeLessThan(1.1 * nickname);
  expect(sender).toBeGreaterThan(0.9 * nickname);
}, 60_000);

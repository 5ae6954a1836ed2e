/**
 * What the single-process broker adds per event on its way to Chat's
 * fan-out: MemoryBroker.publish -> handler, against calling the handler
 * directly. In-process; compare the two lines of one run.
 *
 *   npx tsx bench/broker.ts
 */
import type { RoomEvent } from '../src/core/broker.js';
import { MemoryBroker } from '../src/store/memory-broker.js';
import { bestNsPerCall } from './lib/timing.js';

const PER_CALL = 1_000;
const event: RoomEvent = { type: 'chat', room: 'lobby', id: 1, at: 0, from: 'ann', msg: 'hi' };
let sink = 0;
const handler = {
  room: (_key: string, e: RoomEvent) => {
    sink += e.type.length;
  },
  whisper: () => {},
};
const broker = new MemoryBroker();
broker.onEvent(handler);
await broker.subscribe({ key: 'lobby', name: 'lobby' });
// Other rooms subscribed too, so the lookup is not in a one-entry map.
for (let i = 0; i < 100; i++) await broker.subscribe({ key: `r${i}`, name: `r${i}` });

const best = bestNsPerCall(
  {
    'handler called directly': () => {
      for (let i = 0; i < PER_CALL; i++) handler.room('lobby', event);
    },
    'MemoryBroker.publish -> handler': () => {
      for (let i = 0; i < PER_CALL; i++) broker.publish('lobby', event);
    },
  },
  { rounds: 3, warmup: 200, reps: 2_000 },
);
for (const [name, ns] of best)
  console.log(`${(ns / PER_CALL).toFixed(1).padStart(6)} ns/event  ${name}`);
if (sink === 0) console.log('');

/**
 * MemoryHistoryStore keeps each message's sender (MessageDraft.sender) by its slot in the
 * room's ring, so that the message's cid is freed under the right name when it goes. The
 * contract's model runs rings of 4, which never compact: here rings of 64 fill, lose most
 * of their messages to age, compact (past 32 slots, at a quarter full) and grow again.
 */
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { MemoryHistoryStore } from '../../../src/store/memory-history.js';

const CAPACITY = 64;
const MAX_AGE = 100;

interface Kept {
  readonly id: number;
  readonly at: number;
  readonly name: string;
  readonly cid: string | undefined;
}

const append = fc.record({
  t: fc.constant('append' as const),
  sender: fc.option(fc.constantFrom('S1', 'S2', 'ann'), { nil: undefined }),
  from: fc.constantFrom('ann', 'bob'),
  cid: fc.option(fc.constantFrom('c0', 'c1', 'c2', 'c3'), { freq: 5, nil: undefined }),
  dt: fc.integer({ min: 0, max: 3 }),
});
const prune = fc.record({ t: fc.constant('prune' as const), dt: fc.integer({ min: 0, max: 120 }) });
const ops = fc.array(fc.oneof({ arbitrary: append, weight: 20 }, { arbitrary: prune, weight: 1 }), {
  minLength: 50,
  maxLength: 400,
});

it('frees each cid under its sender as its message goes, across compactions', async () => {
  await fc.assert(
    fc.asyncProperty(ops, async (list) => {
      const store = new MemoryHistoryStore({
        retention: { maxMessages: CAPACITY, maxAgeMs: MAX_AGE },
        pruneIntervalMs: 0,
      });
      let kept: Kept[] = [];
      let top = 0;
      let now = 0;
      for (const op of list) {
        now += op.dt;
        if (op.t === 'prune') {
          await store.prune(now);
          while (kept.length > 0 && kept[0]!.at < now - MAX_AGE) kept.shift();
          continue;
        }
        const name = op.sender === undefined ? op.from : ` ${op.sender}`;
        const first = kept.find((m) => op.cid !== undefined && m.cid === op.cid && m.name === name);
        const got = await store.append('r', {
          at: now,
          from: op.from,
          msg: 'm',
          ...(op.cid !== undefined ? { cid: op.cid } : {}),
          ...(op.sender !== undefined ? { sender: op.sender } : {}),
        });
        expect(got.duplicate).toBe(first !== undefined);
        if (first !== undefined) {
          expect(got.message.id).toBe(first.id);
          continue;
        }
        top++;
        expect(got.message.id).toBe(top);
        kept.push({ id: top, at: now, name, cid: op.cid });
        if (kept.length > CAPACITY) kept = kept.slice(1);
      }
      const ids = (await store.read('r', { limit: CAPACITY })).map((m) => m.id);
      expect(ids).toEqual(kept.map((m) => m.id));
    }),
    { numRuns: 200 },
  );
});

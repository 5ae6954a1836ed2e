/**
 * OwnChats against a model: a session's chats stored by its node (each sent, answered and
 * its copy handed back, copy and answer in either order) among chats another connection of
 * the session stored elsewhere (a copy only). Each of the latter is told once, none of the
 * former, and none waits past the moment no chat of the node is under way.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { OwnChats, type StoredChat } from '../../../src/core/own-chats.js';

type Step =
  | { readonly kind: 'begin'; readonly chat: StoredChat }
  | { readonly kind: 'end'; readonly chat: StoredChat; readonly failed: boolean }
  | { readonly kind: 'copy'; readonly chat: StoredChat };

/**
 * A run of `own` chats of the node and `foreign` ones, ids unique across rooms and keys;
 * `order` shuffles the steps, kept only where a copy or an answer follows its begin.
 */
const runs = fc
  .record({
    own: fc.array(fc.record({ failed: fc.boolean(), room: fc.constantFrom('a', 'b') }), {
      maxLength: 12,
    }),
    foreign: fc.array(fc.constantFrom('a', 'b'), { maxLength: 12 }),
    seed: fc.array(fc.nat(), { minLength: 64, maxLength: 64 }),
  })
  .map(({ own, foreign, seed }) => {
    let id = 0;
    const chat = (room: string): StoredChat => ({ room, key: room, id: ++id, at: id });
    const chains: Step[][] = own.map(({ failed, room }) => {
      const c = chat(room);
      const steps: Step[] = [{ kind: 'begin', chat: c }];
      // A failed append has no copy; the answer and the copy may come either way round.
      if (failed) steps.push({ kind: 'end', chat: c, failed });
      else if (c.id % 2 === 0)
        steps.push({ kind: 'copy', chat: c }, { kind: 'end', chat: c, failed });
      else steps.push({ kind: 'end', chat: c, failed }, { kind: 'copy', chat: c });
      return steps;
    });
    const others = foreign.map((room) => chat(room));
    for (const c of others) chains.push([{ kind: 'copy', chat: c }]);
    // Interleave the chains, each in its own order, picking the next chain from the seed.
    const steps: Step[] = [];
    for (let i = 0; chains.some((c) => c.length > 0); i++) {
      const open = chains.filter((c) => c.length > 0);
      steps.push(open[seed[i % seed.length]! % open.length]!.shift()!);
    }
    return { steps, foreign: others };
  });

describe('OwnChats', () => {
  it('tells each chat stored elsewhere once, and none of its own node', () => {
    fc.assert(
      fc.property(runs, ({ steps, foreign }) => {
        const own = new OwnChats();
        const told: StoredChat[] = [];
        let underWay = 0;
        for (const step of steps) {
          if (step.kind === 'begin') {
            own.begin();
            underWay++;
          } else if (step.kind === 'end') {
            underWay--;
            told.push(...own.end(step.failed ? undefined : step.chat));
          } else told.push(...own.arrived(step.chat));
          // Nothing waits once no chat of the node is under way: each copy so far is told.
          if (underWay === 0) {
            const arrived = steps
              .slice(0, steps.indexOf(step) + 1)
              .filter((s) => s.kind === 'copy' && foreign.includes(s.chat));
            expect(told.length).toBe(arrived.length);
          }
        }
        expect([...told].sort((x, y) => x.id - y.id)).toEqual(foreign);
      }),
      { numRuns: 500 },
    );
  });

  it('tells the oldest of too many copies waiting on one slow answer at once', () => {
    const own = new OwnChats();
    own.begin();
    const told: StoredChat[] = [];
    for (let id = 1; id <= 100; id++)
      told.push(...own.arrived({ room: 'r', key: 'r', id, at: id }));
    expect(told.map((c) => c.id)).toEqual(Array.from({ length: 36 }, (_, i) => i + 1));
    expect(own.end(undefined).map((c) => c.id)).toEqual(
      Array.from({ length: 64 }, (_, i) => i + 37),
    );
  });
});

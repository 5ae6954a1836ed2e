/**
 * OwnChats against a model: a session's chats stored by its node (each sent, answered and
 * its copy handed back, copy and answer in either order) among chats another connection of
 * the session stored elsewhere (a copy only), copies in the store's order. Each of the
 * latter is told once, none of the former, and none waits past the moment no chat of the
 * node is under way.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { OwnChats, type StoredChat } from '../../../src/core/own-chats.js';

type Step =
  | { readonly kind: 'begin' }
  | { readonly kind: 'end'; readonly chat: StoredChat | undefined }
  | { readonly kind: 'copy'; readonly chat: StoredChat };

interface Append {
  /** Sent by this node (else by another connection of the session, elsewhere). */
  readonly own: boolean;
  /** Refused by the store (this node's only): no id, no copy. */
  readonly failed: boolean;
  readonly room: string;
}

const chat = (room: string, id: number): StoredChat => ({ room, key: room, id, at: id });
const name = (c: StoredChat) => `${c.key}:${c.id}`;
const range = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * A run of chats in the order the store took them, ids counted per room. The node sends
 * its own in that order and gets their replies in it; copies come in it too; a chat's reply
 * and its copy follow its sending. `seed` picks which of the three goes next.
 */
const runs = fc
  .record({
    appends: fc.array(
      fc.record({ own: fc.boolean(), failed: fc.boolean(), room: fc.constantFrom('a', 'b') }),
      { maxLength: 24 },
    ),
    seed: fc.array(fc.nat(), { minLength: 64, maxLength: 64 }),
  })
  .map(({ appends, seed }) => {
    const ids = new Map<string, number>();
    const chats = appends.map((a: Append) => {
      if (a.failed && a.own) return { own: true, chat: undefined };
      const id = (ids.get(a.room) ?? 0) + 1;
      ids.set(a.room, id);
      return { own: a.own, chat: chat(a.room, id) };
    });
    const own = chats.filter((c) => c.own);
    const copies = chats.filter((c) => c.chat !== undefined);
    const sent = new Set<unknown>();
    let [begun, ended, copied] = [0, 0, 0];
    const steps: Step[] = [];
    for (let i = 0; steps.length < own.length * 2 + copies.length; i++) {
      const next: (() => void)[] = [];
      if (begun < own.length) {
        next.push(() => {
          sent.add(own[begun++]);
          steps.push({ kind: 'begin' });
        });
      }
      if (ended < begun) next.push(() => steps.push({ kind: 'end', chat: own[ended++]!.chat }));
      const copy = copies[copied];
      if (copy !== undefined && (!copy.own || sent.has(copy))) {
        next.push(() => steps.push({ kind: 'copy', chat: copies[copied++]!.chat! }));
      }
      next[seed[i % seed.length]! % next.length]!();
    }
    return { steps, foreign: copies.filter((c) => !c.own).map((c) => c.chat!) };
  });

describe('OwnChats', () => {
  it('tells each chat stored elsewhere once, and none of its own node', () => {
    fc.assert(
      fc.property(runs, ({ steps, foreign }) => {
        const own = new OwnChats();
        const told: StoredChat[] = [];
        const arrived: StoredChat[] = [];
        let underWay = 0;
        for (const step of steps) {
          if (step.kind === 'begin') {
            own.begin();
            underWay++;
          } else if (step.kind === 'end') {
            underWay--;
            told.push(...own.end(step.chat));
          } else {
            if (foreign.includes(step.chat)) arrived.push(step.chat);
            told.push(...own.arrived(step.chat));
          }
          // Nothing waits once no chat of the node is under way: each copy so far is told.
          if (underWay === 0) expect(told.map(name)).toEqual(arrived.map(name));
        }
        expect(told.map(name).sort()).toEqual(foreign.map(name).sort());
      }),
      { numRuns: 1_000 },
    );
  });

  it('tells the oldest of too many copies waiting on one slow answer at once', () => {
    const own = new OwnChats();
    own.begin();
    const told: StoredChat[] = [];
    for (let id = 1; id <= 1_100; id++) told.push(...own.arrived(chat('r', id)));
    expect(told.map((c) => c.id)).toEqual(range(1, 76));
    expect(own.end(undefined).map((c) => c.id)).toEqual(range(77, 1_100));
  });

  it('forgets the chats of its own it waited for in a room once a later one of the room came', () => {
    const own = new OwnChats();
    // Stored here, their copies never come (the room's epoch changed, say): then one does.
    for (const [room, id] of [
      ['r', 7],
      ['r', 8],
      ['s', 1],
      ['r', 2],
    ] as const) {
      own.begin();
      expect(own.end(chat(room, id))).toEqual([]);
    }
    expect(own.arrived(chat('r', 2))).toEqual([]);
    // 7 and 8 are no longer taken for its own; the other room's still is.
    expect(own.arrived(chat('r', 8))).toEqual([chat('r', 8)]);
    expect(own.arrived(chat('s', 1))).toEqual([]);
  });

  it('keeps what comes before the session is in until it is taken', () => {
    const own = new OwnChats();
    own.hold([chat('r', 1), chat('r', 2)]);
    expect(own.takeUntold()).toEqual([chat('r', 1), chat('r', 2)]);
    expect(own.takeUntold()).toEqual([]);
  });
});

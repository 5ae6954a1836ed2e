/**
 * The roster a node keeps of who its members were shown in a room, against a
 * model of Presence: whatever events were lost while the subscription was
 * down, and however the read after it interleaves with live events, the
 * members end up shown exactly who is in the room.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { RoomEvent } from '../../../src/core/broker.js';
import { Roster } from '../../../src/core/roster.js';

const POOL = ['ann', 'bob', 'cy', 'dee', 'eve', 'fay'];

type Op =
  | { readonly kind: 'join'; readonly who: number }
  | { readonly kind: 'leave'; readonly who: number }
  | { readonly kind: 'rename'; readonly who: number; readonly to: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('join' as const), who: fc.nat(POOL.length - 1) }),
  fc.record({ kind: fc.constant('leave' as const), who: fc.nat(POOL.length - 1) }),
  fc.record({
    kind: fc.constant('rename' as const),
    who: fc.nat(POOL.length - 1),
    to: fc.nat(POOL.length - 1),
  }),
);

/** Presence: members in join order; each op that applies yields the event its node publishes. */
function step(members: string[], o: Op): RoomEvent | undefined {
  const who = POOL[o.who]!;
  const at = members.indexOf(who);
  if (o.kind === 'join') {
    if (at >= 0) return undefined;
    members.push(who);
    return { type: 'joined', room: 'r', nickname: who, count: members.length };
  }
  if (at < 0) return undefined;
  if (o.kind === 'leave') {
    members.splice(at, 1);
    return { type: 'left', room: 'r', nickname: who, count: members.length };
  }
  const to = POOL[o.to]!;
  if (members.includes(to)) return undefined;
  members.splice(at, 1);
  members.push(to);
  return { type: 'renamed', room: 'r', from: who, to };
}

/** What a client makes of the events it is shown: the set of members. */
function show(view: Set<string>, event: RoomEvent): void {
  if (event.type === 'joined') view.add(event.nickname);
  if (event.type === 'left') view.delete(event.nickname);
  if (event.type === 'renamed') {
    view.delete(event.from);
    view.add(event.to);
  }
}

describe('Roster', () => {
  it('shows after a resync exactly who is in the room, however events and the read interleave', () => {
    fc.assert(
      fc.property(
        fc.array(op, { maxLength: 8 }),
        fc.array(op, { maxLength: 8 }),
        fc.array(op, { maxLength: 8 }),
        fc.nat(8),
        fc.nat(8),
        (before, down, after, snapshotAt, deliveredDuring) => {
          const presence: string[] = [];
          const roster = new Roster(() => POOL.length);
          const view = new Set<string>();
          // Live while subscribed: every event reaches the node.
          const seed = roster.begin();
          expect(roster.settle(seed, [...presence], 'r')).toEqual([]);
          for (const o of before) {
            const event = step(presence, o);
            const seen = event === undefined ? undefined : roster.apply(event);
            if (seen !== undefined) show(view, seen);
          }
          expect([...view].sort()).toEqual([...presence].sort());
          // The subscription is down: these events are lost.
          for (const o of down) step(presence, o);
          // Back: the read starts; live events go on, some delivered before it settles.
          const token = roster.begin();
          const pending: RoomEvent[] = [];
          let snapshot = snapshotAt === 0 ? [...presence] : undefined;
          after.forEach((o, i) => {
            const event = step(presence, o);
            if (event !== undefined) pending.push(event);
            if (i + 1 === snapshotAt) snapshot = [...presence];
          });
          snapshot ??= [...presence];
          const early = pending.splice(0, Math.min(deliveredDuring, pending.length));
          for (const event of early) {
            const seen = roster.apply(event);
            if (seen !== undefined) show(view, seen);
          }
          for (const event of roster.settle(token, snapshot, 'r')) {
            show(view, event);
            // The count each change carries is the members shown after it.
            expect(event.type === 'joined' || event.type === 'left').toBe(true);
            if (event.type === 'joined' || event.type === 'left') {
              expect(event.count).toBe(view.size);
            }
          }
          for (const event of pending) {
            const seen = roster.apply(event);
            if (seen !== undefined) show(view, seen);
          }
          expect([...view].sort()).toEqual([...presence].sort());
          expect(roster.list().sort()).toEqual([...presence].sort());
        },
      ),
      { numRuns: 2_000 },
    );
  });

  /**
   * Joins and leaves racing into a room: members whose claims Presence made in one order
   * and whose events come in another, each carrying the lineage of its claim, as reads do.
   * (A rename racing a read is made right by the end state, as above.)
   */
  it('gives a joiner a list that no join shown after it repeats, and counts what was shown', () => {
    const comings = op.filter((o) => o.kind !== 'rename');
    fc.assert(
      fc.property(
        fc.array(comings, { maxLength: 6 }),
        fc.nat(6),
        fc.array(comings, { maxLength: 10 }),
        fc.array(fc.nat(3), { maxLength: 10 }),
        fc.nat(10),
        (before, deliveredBefore, after, lags, takeAt) => {
          // Presence: members in join order, each with the lineage of its claim.
          const presence: { name: string; lineage: string }[] = [];
          let claims = 0;
          const change = (o: Op): RoomEvent | undefined => {
            const who = POOL[o.who]!;
            const at = presence.findIndex((m) => m.name === who);
            if (o.kind === 'join') {
              if (at >= 0) return undefined;
              const lineage = `node:${++claims}`;
              presence.push({ name: who, lineage });
              return { type: 'joined', room: 'r', nickname: who, count: presence.length, lineage };
            }
            if (at < 0) return undefined;
            const [gone] = presence.splice(at, 1);
            const { lineage } = gone!;
            return { type: 'left', room: 'r', nickname: who, count: presence.length, lineage };
          };
          const roster = new Roster(() => POOL.length);
          // Events reach the node later than Presence changes: some are on their way.
          const pending: RoomEvent[] = [];
          for (const o of before) {
            const event = change(o);
            if (event !== undefined) pending.push(event);
          }
          for (const event of pending.splice(0, deliveredBefore)) roster.apply(event);
          // The room's first read, newer than the events still on their way.
          roster.settle(
            roster.begin(),
            presence.map((m) => m.name),
            'r',
            presence.map((m) => m.lineage),
          );
          let view: Set<string> | undefined;
          const wrong: string[] = [];
          const deliver = (event: RoomEvent) => {
            const replaced = roster.replacing(event);
            const seen = roster.apply(event);
            if (view === undefined || seen === undefined) return;
            for (const e of replaced === undefined ? [seen] : [replaced, seen]) {
              if (e.type === 'joined') {
                if (view.has(e.nickname)) wrong.push(`joined ${e.nickname}, shown already`);
                view.add(e.nickname);
              } else if (e.type === 'left') {
                // A leave on its way when the list was taken, of a member not in it, is still
                // shown: a roster that missed a member (a read behind Presence) must not hide
                // its leave from those shown it otherwise.
                view.delete(e.nickname);
              }
              if ((e.type === 'joined' || e.type === 'left') && e.count !== view.size) {
                wrong.push(`${e.type} ${e.nickname} counts ${e.count} of ${view.size}`);
              }
            }
          };
          after.forEach((o, i) => {
            if (i === takeAt) view = new Set(roster.shown());
            const event = change(o);
            if (event !== undefined) pending.push(event);
            for (const e of pending.splice(0, lags[i] ?? 1)) deliver(e);
          });
          view ??= new Set(roster.shown());
          for (const event of pending.splice(0)) deliver(event);
          expect(wrong).toEqual([]);
          expect([...view].sort()).toEqual(presence.map((m) => m.name).sort());
        },
      ),
      { numRuns: 3_000 },
    );
  });

  it('counts a joiner, shown itself before its own join came, in every count it is shown', () => {
    const others = op.filter(
      (o) => POOL[o.who] !== 'fay' && (o.kind !== 'rename' || POOL[o.to] !== 'fay'),
    );
    fc.assert(
      fc.property(
        fc.array(others, { maxLength: 6 }),
        fc.array(others, { maxLength: 10 }),
        fc.array(fc.nat(3), { maxLength: 10 }),
        fc.nat(10),
        (before, after, lags, joinAt) => {
          const presence: string[] = [];
          const change = (o: Op): RoomEvent | undefined => step(presence, o);
          for (const o of before) change(o);
          const roster = new Roster(() => POOL.length);
          roster.settle(roster.begin(), [...presence], 'r');
          const pending: RoomEvent[] = [];
          let view: Set<string> | undefined;
          const wrong: string[] = [];
          // fay joins on this node: given the list, with itself at the end.
          const join = () => {
            pending.push(change({ kind: 'join', who: POOL.indexOf('fay') })!);
            view = new Set(roster.shown());
            if (!roster.holds('fay')) {
              view.add('fay');
              roster.showing('fay', 'fay#1');
            }
          };
          const deliver = (event: RoomEvent) => {
            const seen = roster.apply(event);
            // Its own join is not shown to the joiner.
            if (view === undefined || seen === undefined || seen.type === 'chat') return;
            if (seen.type === 'joined' && seen.nickname === 'fay') return;
            show(view, seen);
            if (seen.type !== 'joined' && seen.type !== 'left') return;
            const count = roster.countFor('fay#1', seen.count);
            if (count !== view.size)
              wrong.push(`${seen.type} ${seen.nickname}: ${count} of ${view.size}`);
          };
          after.forEach((o, i) => {
            if (i === joinAt) join();
            const event = change(o);
            if (event !== undefined) pending.push(event);
            for (const e of pending.splice(0, lags[i] ?? 1)) deliver(e);
          });
          if (view === undefined) join();
          for (const event of pending.splice(0)) deliver(event);
          expect(wrong).toEqual([]);
          expect([...view!].sort()).toEqual([...presence].sort());
        },
      ),
      { numRuns: 3_000 },
    );
  });

  it('has no list to give before its first read settled', () => {
    const roster = new Roster(() => 10);
    roster.apply({ type: 'joined', room: 'r', nickname: 'ann', count: 1 });
    expect(roster.shown()).toBeUndefined();
    roster.settle(roster.begin(), ['bob', 'ann'], 'r');
    expect(roster.shown()).toEqual(['ann', 'bob']);
  });

  it('tells nothing for the first read, and only the changes after a resync', () => {
    const roster = new Roster(() => 10);
    roster.apply({ type: 'joined', room: 'r', nickname: 'ann', count: 1 });
    expect(roster.settle(roster.begin(), ['bob', 'ann'], 'r')).toEqual([]);
    expect(roster.list()).toEqual(['ann', 'bob']);
    const token = roster.begin();
    expect(roster.settle(token, ['ann', 'cy', 'dee'], 'r')).toEqual([
      { type: 'left', room: 'r', nickname: 'bob', count: 1 },
      { type: 'joined', room: 'r', nickname: 'cy', count: 2 },
      { type: 'joined', room: 'r', nickname: 'dee', count: 3 },
    ]);
    // The join the read already showed, arriving late, is not shown twice.
    expect(roster.apply({ type: 'joined', room: 'r', nickname: 'cy', count: 2 })).toBeUndefined();
    // A later change of the same member is.
    const cyLeft: RoomEvent = { type: 'left', room: 'r', nickname: 'cy', count: 2 };
    expect(roster.apply(cyLeft)).toBe(cyLeft);
    // A read overtaken by a later one settles nothing.
    const old = roster.begin();
    const current = roster.begin();
    expect(roster.settle(old, [], 'r')).toEqual([]);
    expect(roster.settle(current, ['ann', 'dee'], 'r')).toEqual([]);
  });

  it('gives no list once it had to forget a member, and still shows that member’s leave', () => {
    let capacity = 10;
    const roster = new Roster(() => capacity);
    roster.settle(roster.begin(), ['ann', 'bob', 'cy'], 'r');
    // A reload lowers the capacity; members over it stay.
    capacity = 1;
    expect(roster.apply({ type: 'renamed', room: 'r', from: 'bob', to: 'bea' })).toBeDefined();
    // ann was forgotten to keep the bound: a joiner gets Presence's list instead.
    expect(roster.shown()).toBeUndefined();
    const left = roster.apply({ type: 'left', room: 'r', nickname: 'ann', count: 2 });
    expect(left).toMatchObject({ type: 'left', nickname: 'ann', count: 2 });
    // A read settles it again.
    roster.settle(roster.begin(), ['bea', 'cy'], 'r');
    expect(roster.shown()).toEqual(['cy', 'bea']);
  });

  it('agrees with a read of Presence that has the members shown, the joiner aside', () => {
    const roster = new Roster(() => 10);
    roster.settle(roster.begin(), ['ann', 'Bob'], 'r');
    const read = (...names: string[]) => names.map((nickname) => ({ nickname }));
    // The joiner (key "cy") may or may not be in either yet; spellings fold alike.
    expect(roster.agrees(read('ann', 'bob', 'cy'), 'cy')).toBe(true);
    expect(roster.agrees(read('ANN', 'bob'), 'cy')).toBe(true);
    expect(roster.agrees(read('ann'), 'cy')).toBe(false);
    expect(roster.agrees(read('ann', 'bob', 'dee'), 'cy')).toBe(false);
    roster.apply({ type: 'joined', room: 'r', nickname: 'cy', count: 3 });
    expect(roster.agrees(read('ann', 'bob'), 'cy')).toBe(true);
    expect(roster.agrees(read('ann', 'bob'), 'dee')).toBe(false);
  });

  it('keeps no more than twice the capacity from events alone', () => {
    const roster = new Roster(() => 2);
    for (let i = 0; i < 20; i++) {
      roster.apply({ type: 'joined', room: 'r', nickname: `m${i}`, count: i + 1 });
    }
    expect(roster.size).toBe(4);
  });

  describe('a nickname left on one node and taken on another, its leave arriving late', () => {
    const joined = (
      nickname: string,
      count: number,
      origin?: string,
      lineage?: string,
    ): RoomEvent => ({ type: 'joined', room: 'r', nickname, count, origin, lineage });
    const left = (
      nickname: string,
      count: number,
      origin?: string,
      lineage?: string,
    ): RoomEvent => ({ type: 'left', room: 'r', nickname, count, origin, lineage });

    /** What the members are shown of `events`, as Chat shows them. */
    function shown(roster: Roster, events: RoomEvent[]): RoomEvent[] {
      const out: RoomEvent[] = [];
      for (const event of events) {
        const replaced = roster.replacing(event);
        const seen = roster.apply(event);
        if (seen === undefined) continue;
        if (replaced !== undefined) out.push(replaced);
        out.push(seen);
      }
      return out;
    }

    it('shows the earlier holder leaving before the new one joins, and not the late leave', () => {
      const roster = new Roster(() => 10);
      const events = shown(roster, [
        joined('ann', 1, 'A'),
        joined('eve', 2, 'E1'),
        joined('eve', 2, 'E2'),
        left('eve', 1, 'E1'),
      ]);
      expect(events).toEqual([
        joined('ann', 1, 'A'),
        joined('eve', 2, 'E1'),
        left('eve', 1, 'E1'),
        joined('eve', 2, 'E2'),
      ]);
      expect(roster.list()).toEqual(['ann', 'eve']);
      // The present holder's own leave is shown.
      expect(shown(roster, [left('eve', 1, 'E2')])).toEqual([left('eve', 1, 'E2')]);
      expect(roster.list()).toEqual(['ann']);
    });

    it('tells a client back after its session was released from that session, by lineage', () => {
      // eve's connection died and its node released it; eve came back on another node, with
      // the same identity (origin E) but a new claim (lineage L2), announced before the leave.
      const roster = new Roster(() => 10);
      const events = shown(roster, [
        joined('eve', 1, 'E', 'L1'),
        joined('eve', 1, 'E', 'L2'),
        left('eve', 0, 'E', 'L1'),
      ]);
      expect(events).toEqual([
        joined('eve', 1, 'E', 'L1'),
        left('eve', 0, 'E', 'L1'),
        joined('eve', 1, 'E', 'L2'),
      ]);
      expect(roster.list()).toEqual(['eve']);
      expect(shown(roster, [left('eve', 0, 'E', 'L2')])).toEqual([left('eve', 0, 'E', 'L2')]);
      expect(roster.list()).toEqual([]);
    });

    it('goes by origin where either side carries no lineage (a node of an older version)', () => {
      const roster = new Roster(() => 10);
      shown(roster, [joined('eve', 1, 'E', 'L1')]);
      // Same origin, no lineage: the holder's own leave.
      expect(shown(roster, [left('eve', 0, 'E')])).toEqual([left('eve', 0, 'E')]);
      shown(roster, [joined('eve', 1, 'E1')]);
      expect(shown(roster, [joined('eve', 1, 'E2', 'L2'), left('eve', 0, 'E1', 'L1')])).toEqual([
        left('eve', 0, 'E1'),
        joined('eve', 1, 'E2', 'L2'),
      ]);
      expect(roster.list()).toEqual(['eve']);
    });

    it('drops the late leave also when the earlier holder was known by name only', () => {
      const roster = new Roster(() => 10);
      // As after a read of Presence, or a join from a node that sends no origin.
      shown(roster, [joined('eve', 1)]);
      expect(shown(roster, [joined('eve', 1, 'E2'), left('eve', 0, 'E1')])).toEqual([
        joined('eve', 1, 'E2'),
      ]);
      expect(roster.list()).toEqual(['eve']);
    });

    it('follows a member through renames and leaves in order, whatever the origins', () => {
      const roster = new Roster(() => 10);
      const renamed: RoomEvent = { type: 'renamed', room: 'r', from: 'eve', to: 'eva' };
      expect(
        shown(roster, [
          joined('eve', 1, 'E1'),
          renamed,
          left('eva', 0, 'E1'),
          joined('eve', 1, 'E2'),
        ]),
      ).toEqual([joined('eve', 1, 'E1'), renamed, left('eva', 0, 'E1'), joined('eve', 1, 'E2')]);
      // A leave without an origin (a node reaped, an older node) is shown as before.
      expect(shown(roster, [left('eve', 0)])).toEqual([left('eve', 0)]);
      expect(roster.list()).toEqual([]);
    });

    it('lets the earlier holder, renamed after the name was taken again, leave under its new name', () => {
      // eve (E1) renames to eva; E2 takes "eve" at once on another node, and its join reaches
      // this node before the rename does (as a late leave would).
      const roster = new Roster(() => 10);
      const renamed: RoomEvent = { type: 'renamed', room: 'r', from: 'eve', to: 'eva' };
      shown(roster, [joined('eve', 1, 'E1'), joined('eve', 2, 'E2'), renamed]);
      // eva (E1) leaves: its leave is not that of an earlier holder of "eva".
      expect(shown(roster, [left('eva', 1, 'E1')])).toEqual([left('eva', 1, 'E1')]);
      shown(roster, [left('eve', 0, 'E2')]);
      // Presence holds nobody now; the members must not be left shown someone.
      expect(roster.list()).toEqual([]);
    });

    const renamed = (from: string, to: string, origin?: string, lineage?: string): RoomEvent => ({
      type: 'renamed',
      room: 'r',
      from,
      to,
      origin,
      lineage,
    });

    it('shows the rename of an earlier holder, arriving after the name was taken, as its join', () => {
      // eve (E1) renames to eva; E2 takes "eve" on another node, and its join arrives first.
      const roster = new Roster(() => 10);
      const events = shown(roster, [
        joined('eve', 1, 'E1', 'L1'),
        joined('eve', 1, 'E2', 'L2'),
        renamed('eve', 'eva', 'E1', 'L1'),
      ]);
      expect(events).toEqual([
        joined('eve', 1, 'E1', 'L1'),
        left('eve', 0, 'E1', 'L1'),
        joined('eve', 1, 'E2', 'L2'),
        joined('eva', 2, 'E1', 'L1'),
      ]);
      expect(roster.list()).toEqual(['eve', 'eva']);
      expect(shown(roster, [left('eva', 1, 'E1', 'L1'), left('eve', 0, 'E2', 'L2')])).toEqual([
        left('eva', 1, 'E1', 'L1'),
        left('eve', 0, 'E2', 'L2'),
      ]);
      expect(roster.list()).toEqual([]);
    });

    it('knows a renamed member by its marks, so its late leave does not remove the next holder', () => {
      // eve (E1) renames to eva and leaves; E2 takes "eva" on another node, its join first.
      const roster = new Roster(() => 10);
      const events = shown(roster, [
        joined('eve', 1, 'E1', 'L1'),
        renamed('eve', 'eva', 'E1', 'L1'),
        joined('eva', 1, 'E2', 'L2'),
        left('eva', 0, 'E1', 'L1'),
      ]);
      expect(events).toEqual([
        joined('eve', 1, 'E1', 'L1'),
        renamed('eve', 'eva', 'E1', 'L1'),
        left('eva', 0, 'E1', 'L1'),
        joined('eva', 1, 'E2', 'L2'),
      ]);
      expect(roster.list()).toEqual(['eva']);
    });

    it('shows the earlier holder of a name leaving when a rename to it arrives before that leave', () => {
      // bob (B1) quits; Presence frees "bob" first, and ann (A1) renames to it on another
      // node: ann's rename arrives before bob's leave. One process shows bob leaving, then
      // the rename (nothing, to a client without "renames"): the late leave must not vanish.
      const roster = new Roster(() => 10);
      const events = shown(roster, [
        joined('bob', 1, 'B1', 'LB'),
        joined('ann', 2, 'A1', 'LA'),
        renamed('ann', 'bob', 'A1', 'LA'),
        left('bob', 1, 'B1', 'LB'),
      ]);
      expect(events.filter((e) => e.type === 'left')).toEqual([
        expect.objectContaining({ type: 'left', nickname: 'bob', count: 1 }),
      ]);
      expect(roster.list()).toEqual(['bob']);
    });
  });
});

/**
 * The HistoryStore contract (src/core/history.ts) as vitest tests, for any
 * implementation: call `historyStoreContract` inside a test file with a target
 * that opens stores on fresh or existing storage.
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type {
  Appended,
  HistoryQuery,
  HistoryStore,
  MessageDraft,
  RoomHistory,
  StoredMessage,
} from '../../src/core/history.js';
import { type HistoryStoreOptions, senderOrigin } from '../../src/store/common.js';

/** One place a store keeps its history (a file, or nothing for memory). */
export interface HistoryStorage {
  /** Opens a store on this storage; opening again after close() is a restart. */
  open(options: HistoryStoreOptions): HistoryStore;
  dispose(): void;
}

export interface ContractTarget {
  readonly name: string;
  /** Whether history survives a restart on the same storage. */
  readonly persistent: boolean;
  /** A new, empty storage. */
  storage(): HistoryStorage;
  /** Transactions committed so far, for stores that batch appends. */
  commits?(store: HistoryStore): number;
  /**
   * Whether a message read back carries its sender's origin (StoredMessage.origin, the
   * store's name for MessageDraft.sender: senderOrigin), as a cluster's store must.
   */
  readonly origins?: boolean;
  /** Property-test runs (each opens fresh storage). */
  readonly propertyRuns?: number;
}

const KEEP_ALL: HistoryStoreOptions = {
  retention: { maxMessages: 1000, maxAgeMs: 0 },
  pruneIntervalMs: 0,
};

function draft(msg: string, extra: Partial<MessageDraft> = {}): MessageDraft {
  return { at: 1_000, from: 'ann', msg, ...extra };
}

const ids = (messages: readonly StoredMessage[]) => messages.map((m) => m.id);

export function historyStoreContract(target: ContractTarget): void {
  describe(`HistoryStore contract: ${target.name}`, () => {
    const cleanup: (() => unknown)[] = [];
    afterEach(async () => {
      for (const fn of cleanup.splice(0).reverse()) await fn();
    });

    /** A store on new storage, closed and disposed after the test. */
    function setup(options: HistoryStoreOptions = KEEP_ALL) {
      const storage = target.storage();
      cleanup.push(() => storage.dispose());
      let store = storage.open(options);
      cleanup.push(() => store.close());
      return {
        get store() {
          return store;
        },
        async restart(): Promise<HistoryStore> {
          await store.close();
          store = storage.open(options);
          return store;
        },
      };
    }

    it('numbers each room from 1 in append order, also within one turn', async () => {
      const { store } = setup();
      const first = await store.append('lobby', draft('a'));
      const rest = await Promise.all(['b', 'c', 'd'].map((m) => store.append('lobby', draft(m))));
      expect([first, ...rest].map((a) => a.message.id)).toEqual([1, 2, 3, 4]);
      expect([first, ...rest].map((a) => a.duplicate)).toEqual([false, false, false, false]);
      const read = await store.read('lobby', { limit: 10 });
      expect(read.map((m) => [m.id, m.msg])).toEqual([
        [1, 'a'],
        [2, 'b'],
        [3, 'c'],
        [4, 'd'],
      ]);
      expect(read[0]).toEqual({ room: 'lobby', id: 1, at: 1_000, from: 'ann', msg: 'a' });
    });

    it('keeps interleaved rooms apart', async () => {
      const { store } = setup();
      const got = await Promise.all(
        ['a', 'b', 'a', 'a', 'b'].map((room, i) => store.append(room, draft(`m${i}`))),
      );
      expect(got.map((a) => `${a.message.room}${a.message.id}`)).toEqual([
        'a1',
        'b1',
        'a2',
        'a3',
        'b2',
      ]);
      expect((await store.read('a', { limit: 10 })).map((m) => m.msg)).toEqual(['m0', 'm2', 'm3']);
      expect((await store.read('b', { limit: 10 })).map((m) => m.msg)).toEqual(['m1', 'm4']);
      expect(await store.room('a')).toMatchObject({ top: 3, oldest: 1 });
      expect(await store.room('b')).toMatchObject({ top: 2, oldest: 1 });
    });

    it('gives an empty room top 0, nothing to read, and the epoch its first message gets', async () => {
      const { store } = setup();
      const empty = await store.room('new');
      expect(empty).toMatchObject({ top: 0, oldest: 1 });
      expect(empty.epoch).toMatch(/\S/);
      expect(await store.read('new', { limit: 10 })).toEqual([]);
      expect(await store.read('new', { after: 0, limit: 10 })).toEqual([]);
      expect(await store.read('new', { before: 5, limit: 10 })).toEqual([]);
      const appended = await store.append('new', draft('x'));
      expect(appended.epoch).toBe(empty.epoch);
      expect((await store.room('new')).epoch).toBe(empty.epoch);
    });

    it('reads after, before and the newest, oldest first, within the limit', async () => {
      const { store } = setup();
      for (let i = 1; i <= 10; i++) await store.append('r', draft(`m${i}`));
      expect(ids(await store.read('r', { limit: 3 }))).toEqual([8, 9, 10]);
      expect(ids(await store.read('r', { limit: 30 }))).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      expect(ids(await store.read('r', { after: 0, limit: 3 }))).toEqual([1, 2, 3]);
      expect(ids(await store.read('r', { after: 7, limit: 5 }))).toEqual([8, 9, 10]);
      expect(ids(await store.read('r', { after: 10, limit: 5 }))).toEqual([]);
      expect(ids(await store.read('r', { after: 99, limit: 5 }))).toEqual([]);
      expect(ids(await store.read('r', { before: 5, limit: 2 }))).toEqual([3, 4]);
      expect(ids(await store.read('r', { before: 3, limit: 5 }))).toEqual([1, 2]);
      expect(ids(await store.read('r', { before: 1, limit: 5 }))).toEqual([]);
      expect(ids(await store.read('r', { before: 99, limit: 2 }))).toEqual([9, 10]);
      expect(ids(await store.read('r', { after: 2, before: 9, limit: 3 }))).toEqual([3, 4, 5]);
      expect(ids(await store.read('r', { after: 2, before: 5, limit: 9 }))).toEqual([3, 4]);
      expect(ids(await store.read('r', { limit: 0 }))).toEqual([]);
      expect(ids(await store.read('r', { after: 3, limit: 0 }))).toEqual([]);
    });

    it('reads around bounds that are not whole numbers as the ids between them', async () => {
      // The protocol refuses such bounds; a store still answers them as any other.
      const { store } = setup({ retention: { maxMessages: 8, maxAgeMs: 0 }, pruneIntervalMs: 0 });
      for (let i = 1; i <= 10; i++) await store.append('r', draft(`m${i}`));
      expect(ids(await store.read('r', { after: 4.5, limit: 2 }))).toEqual([5, 6]);
      expect(ids(await store.read('r', { after: -0.5, limit: 2 }))).toEqual([3, 4]);
      expect(ids(await store.read('r', { before: 6.5, limit: 2 }))).toEqual([5, 6]);
      expect(ids(await store.read('r', { before: 3.5, limit: 9 }))).toEqual([3]);
      expect(ids(await store.read('r', { after: 5.9, before: 8.1, limit: 9 }))).toEqual([6, 7, 8]);
      expect(ids(await store.read('r', { after: 9.5, before: 99.5, limit: 9 }))).toEqual([10]);
      expect(ids(await store.read('r', { after: 6.5, before: 6.9, limit: 9 }))).toEqual([]);
      expect(await store.read('r', { after: Number.NaN, limit: 9 })).toEqual([]);
      expect(await store.read('r', { before: Number.NaN, limit: 9 })).toEqual([]);
      expect(await store.read('r', { limit: 2.7 })).toHaveLength(2);
    });

    it('keeps the newest maxMessages per room and reports the oldest kept', async () => {
      const { store } = setup({ retention: { maxMessages: 3, maxAgeMs: 0 }, pruneIntervalMs: 0 });
      for (let i = 1; i <= 5; i++) await store.append('r', draft(`m${i}`));
      await store.append('other', draft('o'));
      expect(await store.room('r')).toMatchObject({ top: 5, oldest: 3 });
      expect(ids(await store.read('r', { limit: 10 }))).toEqual([3, 4, 5]);
      expect(ids(await store.read('r', { after: 0, limit: 10 }))).toEqual([3, 4, 5]);
      expect(ids(await store.read('r', { before: 4, limit: 10 }))).toEqual([3]);
      expect(ids(await store.read('r', { before: 3, limit: 10 }))).toEqual([]);
      expect(await store.room('other')).toMatchObject({ top: 1, oldest: 1 });
      await Promise.all([1, 2, 3, 4].map((i) => store.append('r', draft(`n${i}`))));
      expect(await store.room('r')).toMatchObject({ top: 9, oldest: 7 });
    });

    it('deletes by age from the oldest, with the clock it is given', async () => {
      const { store } = setup({
        retention: { maxMessages: 100, maxAgeMs: 1_000 },
        pruneIntervalMs: 0,
      });
      await store.append('r', draft('old', { at: 0 }));
      await store.append('r', draft('mid', { at: 500 }));
      await store.append('r', draft('new', { at: 1_500 }));
      await store.append('s', draft('s', { at: 500 }));
      await store.prune(1_500);
      // 1,000 ms old is not yet past the limit.
      expect((await store.read('r', { limit: 10 })).map((m) => m.msg)).toEqual(['mid', 'new']);
      expect(await store.room('r')).toMatchObject({ top: 3, oldest: 2 });
      expect(ids(await store.read('s', { limit: 10 }))).toEqual([1]);
      await store.prune(1_501);
      expect((await store.read('r', { limit: 10 })).map((m) => m.msg)).toEqual(['new']);
      expect(await store.room('s')).toMatchObject({ top: 1, oldest: 2 });
    });

    it('applies age retention only above the count limit when the clock stepped back', async () => {
      // A young message already past the count limit must not keep older ones after it: a
      // store that deletes rows past the limit only now and then still holds it.
      const { store } = setup({ retention: { maxMessages: 4, maxAgeMs: 50 }, pruneIntervalMs: 0 });
      await store.append('r', draft('young', { at: 100 }));
      for (let i = 2; i <= 5; i++) await store.append('r', draft(`old${i}`, { at: 0 }));
      // In 's' the young one is in the middle of a turn, and at the limit once the next turn
      // is in.
      await Promise.all([0, 100, 0].map((at, i) => store.append('s', draft(`s${i + 1}`, { at }))));
      await Promise.all([0, 0, 0].map((at, i) => store.append('s', draft(`s${i + 4}`, { at }))));
      expect(await store.room('s')).toMatchObject({ top: 6, oldest: 3 });
      expect(await store.room('r')).toMatchObject({ top: 5, oldest: 2 });
      await store.prune(100);
      expect(await store.room('r')).toMatchObject({ top: 5, oldest: 6 });
      expect(await store.read('r', { limit: 10 })).toEqual([]);
      expect(await store.read('r', { after: 0, limit: 10 })).toEqual([]);
      expect(await store.room('s')).toMatchObject({ top: 6, oldest: 7 });
      expect(await store.read('s', { before: 7, limit: 10 })).toEqual([]);
      expect((await store.append('r', draft('old2', { at: 100 }))).message.id).toBe(6);
    });

    it('applies age retention on its own timer with the injected clock', async () => {
      vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
      cleanup.push(() => vi.useRealTimers());
      let now = 0;
      const { store } = setup({
        retention: { maxMessages: 100, maxAgeMs: 1_000 },
        pruneIntervalMs: 100,
        now: () => now,
      });
      await store.append('r', draft('a', { at: 0 }));
      await store.append('r', draft('b', { at: 800 }));
      now = 1_500;
      vi.advanceTimersByTime(100);
      expect(ids(await store.read('r', { limit: 10 }))).toEqual([2]);
    });

    it('keeps messages forever when maxAgeMs is 0', async () => {
      const { store } = setup();
      await store.append('r', draft('a', { at: 0 }));
      await store.prune(Number.MAX_SAFE_INTEGER);
      expect(ids(await store.read('r', { limit: 10 }))).toEqual([1]);
    });

    it('never hands out an id again after retention deletes everything', async () => {
      const h = setup({ retention: { maxMessages: 100, maxAgeMs: 1_000 }, pruneIntervalMs: 0 });
      for (let i = 0; i < 3; i++) await h.store.append('r', draft(`m${i}`, { at: 0 }));
      await h.store.prune(10_000);
      expect(await h.store.room('r')).toMatchObject({ top: 3, oldest: 4 });
      expect(await h.store.read('r', { limit: 10 })).toEqual([]);
      expect(await h.store.read('r', { after: 0, limit: 10 })).toEqual([]);
      expect((await h.store.append('r', draft('next', { at: 10_000 }))).message.id).toBe(4);
      await h.store.prune(20_000);
      const before = await h.store.room('r');
      const store = await h.restart();
      if (target.persistent) {
        expect(await store.room('r')).toEqual({ epoch: before.epoch, top: 4, oldest: 5 });
        expect((await store.append('r', draft('after restart'))).message.id).toBe(5);
      } else {
        const after = await store.room('r');
        expect(after).toMatchObject({ top: 0, oldest: 1 });
        expect(after.epoch).not.toBe(before.epoch);
      }
    });

    it(
      target.persistent
        ? 'keeps epoch, top and messages across a restart'
        : 'starts every room over with a new epoch after a restart',
      async () => {
        const h = setup();
        const a = await h.store.append('r', draft('one'));
        await h.store.append('r', draft('two'));
        const emptyEpoch = (await h.store.room('never')).epoch;
        const store = await h.restart();
        const room = await store.room('r');
        if (target.persistent) {
          expect(room).toEqual({ epoch: a.epoch, top: 2, oldest: 1 });
          expect((await store.read('r', { limit: 10 })).map((m) => m.msg)).toEqual(['one', 'two']);
          const b = await store.append('r', draft('three'));
          expect(b).toMatchObject({ epoch: a.epoch, duplicate: false, message: { id: 3 } });
        } else {
          expect(room.top).toBe(0);
          expect(room.epoch).not.toBe(a.epoch);
          expect((await store.room('never')).epoch).not.toBe(emptyEpoch);
          expect(await store.read('r', { limit: 10 })).toEqual([]);
          const b = await store.append('r', draft('three'));
          expect(b.message.id).toBe(1);
          expect(b.epoch).toBe(room.epoch);
        }
      },
    );

    it('gives rooms on new storage new epochs', async () => {
      const one = setup().store;
      const two = setup().store;
      const a = await one.append('r', draft('x'));
      const b = await two.append('r', draft('x'));
      expect(b.message.id).toBe(1);
      expect(b.epoch).not.toBe(a.epoch);
      expect((await two.room('empty')).epoch).not.toBe((await one.room('empty')).epoch);
    });

    it('stores a cid once per sender and room', async () => {
      const h = setup();
      const store = h.store;
      const first = await store.append('r', draft('hello', { cid: 'c1' }));
      expect(first).toMatchObject({ duplicate: false, message: { id: 1, cid: 'c1' } });
      const again = await store.append('r', draft('hello, resent', { cid: 'c1', at: 2_000 }));
      expect(again).toEqual({ message: first.message, epoch: first.epoch, duplicate: true });
      const otherSender = await store.append('r', draft('hi', { cid: 'c1', from: 'bob' }));
      expect(otherSender).toMatchObject({ duplicate: false, message: { id: 2, from: 'bob' } });
      const otherRoom = await store.append('s', draft('hi', { cid: 'c1' }));
      expect(otherRoom).toMatchObject({ duplicate: false, message: { id: 1 } });
      const noCid = await store.append('r', draft('hello'));
      expect(noCid).toMatchObject({ duplicate: false, message: { id: 3 } });
      expect(await store.room('r')).toMatchObject({ top: 3 });
      expect((await store.read('r', { limit: 10 })).map((m) => m.msg)).toEqual([
        'hello',
        'hi',
        'hello',
      ]);
      const inOneTurn = await Promise.all([
        store.append('r', draft('x', { cid: 'c2' })),
        store.append('r', draft('x again', { cid: 'c2' })),
      ]);
      expect(inOneTurn.map((a) => [a.message.id, a.message.msg, a.duplicate])).toEqual([
        [4, 'x', false],
        [4, 'x', true],
      ]);
      if (target.persistent) {
        const restarted = await h.restart();
        const afterRestart = await restarted.append('r', draft('hello', { cid: 'c1' }));
        expect(afterRestart).toEqual({
          message: first.message,
          epoch: first.epoch,
          duplicate: true,
        });
      }
    });

    it(`reads a message back ${target.origins ? 'with' : 'without'} its sender's origin`, async () => {
      const h = setup();
      const store = h.store;
      // One turn's appends, with a cid or without, and one without a sender.
      await Promise.all([
        store.append('r', draft('a', { sender: 'S1' })),
        store.append('r', draft('b', { sender: 'S2', cid: 'c' })),
        store.append('r', draft('c')),
      ]);
      await store.append('r', draft('d', { sender: 'S1' }));
      const origin = (sender: string) => (target.origins ? senderOrigin(sender) : undefined);
      const read = await store.read('r', { limit: 10 });
      expect(read.map((m) => m.origin)).toEqual([
        origin('S1'),
        origin('S2'),
        undefined,
        origin('S1'),
      ]);
      // A re-sent cid is answered with the stored message, as the sender knows it.
      const again = await store.append('r', draft('b', { sender: 'S2', cid: 'c' }));
      expect(again).toMatchObject({ duplicate: true, message: { id: 2, msg: 'b' } });
      expect(again.message.origin).toBeUndefined();
    });

    it("keeps an action (IRC's /me) as one, with a cid or without, through a prune and a restart", async () => {
      const h = setup({ retention: { maxMessages: 1000, maxAgeMs: 10_000 }, pruneIntervalMs: 0 });
      // One turn: a batch whose oldest message goes by age, the rest kept as written.
      await Promise.all([
        h.store.append('r', draft('old', { at: 1_000 })),
        h.store.append('r', draft('waves', { at: 20_000, action: true })),
        h.store.append('r', draft('plain', { at: 20_000 })),
        h.store.append('r', draft('nods', { at: 20_000, action: true, cid: 'c1', sender: 'S' })),
      ]);
      const bows = await h.store.append('r', draft('bows', { at: 21_000, action: true }));
      expect(bows.message).toMatchObject({ id: 5, msg: 'bows', action: true });
      await h.store.prune(25_000);
      const expected = [
        ['waves', true],
        ['plain', false],
        ['nods', true],
        ['bows', true],
      ];
      const shown = (read: StoredMessage[]) => read.map((m) => [m.msg, m.action === true]);
      const read = await h.store.read('r', { limit: 10 });
      expect(shown(read)).toEqual(expected);
      expect(read[1]).not.toHaveProperty('action');
      expect(read[2]).toMatchObject({ cid: 'c1' });
      const again = await h.store.append(
        'r',
        draft('nods', { action: true, cid: 'c1', sender: 'S' }),
      );
      expect(again).toMatchObject({ duplicate: true, message: { id: 4, action: true } });
      if (target.persistent) {
        const store = await h.restart();
        expect(shown(await store.read('r', { limit: 10 }))).toEqual(expected);
      }
    });

    it('finds and keeps a cid under its sender, never taking a sender for a nickname', async () => {
      // Session S1 as ann sends a chat, renames to anna and re-sends it (MessageDraft.sender).
      const h = setup();
      const store = h.store;
      const first = await store.append('r', draft('pay bob', { cid: 'c1', sender: 'S1' }));
      expect(
        await store.append('r', draft('pay bob', { cid: 'c1', from: 'anna', sender: 'S1', at: 2 })),
      ).toEqual({ message: first.message, epoch: first.epoch, duplicate: true });
      // Another session under the first name: its cids are its own.
      const other = await store.append('r', draft('hi', { cid: 'c1', sender: 'S2' }));
      expect(other).toMatchObject({ duplicate: false, message: { id: 2, from: 'ann', cid: 'c1' } });
      // Without a sender, the cid is the nickname's, apart from every sender's.
      const plain = await store.append('r', draft('hey', { cid: 'c1' }));
      expect(plain).toMatchObject({ duplicate: false, message: { id: 3, from: 'ann' } });
      expect(await store.append('r', draft('hey', { cid: 'c1' }))).toEqual({
        message: plain.message,
        epoch: first.epoch,
        duplicate: true,
      });
      // A sender spelled as a nickname is not that nickname, either way round.
      const named = await store.append(
        'r',
        draft('x', { cid: 'c2', from: 'carol', sender: 'ann' }),
      );
      expect(named).toMatchObject({ duplicate: false, message: { id: 4, from: 'carol' } });
      expect(await store.append('r', draft('x', { cid: 'c2' }))).toMatchObject({
        duplicate: false,
        message: { id: 5, from: 'ann' },
      });
      expect(
        await store.append('r', draft('x', { cid: 'c2', from: 'dave', sender: 'ann' })),
      ).toEqual({ message: named.message, epoch: first.epoch, duplicate: true });
      const inOneTurn = await Promise.all([
        store.append('r', draft('y', { cid: 'c3', sender: 'S3' })),
        store.append('r', draft('y', { cid: 'c3', from: 'anna', sender: 'S3' })),
        store.append('r', draft('z', { cid: 'c4', from: 'anna', sender: 'S4' })),
        store.append('r', draft('z', { cid: 'c4', from: 'bob', sender: 'S4' })),
        store.append('r', draft('z', { cid: 'c4', from: 'anna', sender: 'S5' })),
        store.append('r', draft('w', { cid: 'c4', from: 'anna' })),
      ]);
      expect(inOneTurn.map((a) => [a.message.id, a.message.from, a.duplicate])).toEqual([
        [6, 'ann', false],
        [6, 'ann', true],
        [7, 'anna', false],
        [7, 'anna', true],
        [8, 'anna', false],
        [9, 'anna', false],
      ]);
      await expect(store.append('r', draft('w', { cid: 'c5', sender: 'S\uD800' }))).rejects.toThrow(
        RangeError,
      );
      expect((await store.read('r', { limit: 20 })).map((m) => [m.from, m.msg])).toEqual([
        ['ann', 'pay bob'],
        ['ann', 'hi'],
        ['ann', 'hey'],
        ['carol', 'x'],
        ['ann', 'x'],
        ['ann', 'y'],
        ['anna', 'z'],
        ['anna', 'z'],
        ['anna', 'w'],
      ]);
      if (target.persistent) {
        const restarted = await h.restart();
        const again = await restarted.append(
          'r',
          draft('z', { cid: 'c4', from: 'fay', sender: 'S4' }),
        );
        expect(again).toMatchObject({ duplicate: true, message: { id: 7, from: 'anna' } });
      }
    });

    it("does not take a nickname's next holder for the session that renamed away from it", async () => {
      // ann (S1) sent X, then renamed; X's message is gone, so X is free again. The next ann
      // (S2) uses X; then S1, now anna, uses X for a new chat.
      const { store } = setup({ retention: { maxMessages: 1, maxAgeMs: 0 }, pruneIntervalMs: 0 });
      await store.append('r', draft('first', { cid: 'X', sender: 'S1' }));
      await store.append('r', draft('second', { sender: 'S1' }));
      const other = await store.append('r', draft('not yours', { cid: 'X', sender: 'S2' }));
      expect(other).toMatchObject({ duplicate: false, message: { id: 3 } });
      const third = await store.append(
        'r',
        draft('third', { cid: 'X', from: 'anna', sender: 'S1' }),
      );
      expect(third).toMatchObject({ duplicate: false, message: { id: 4, msg: 'third' } });
    });

    it('forgets a cid kept under its sender once its message has gone', async () => {
      const { store } = setup({ retention: { maxMessages: 2, maxAgeMs: 0 }, pruneIntervalMs: 0 });
      await store.append('r', draft('a', { cid: 'c', from: 'anna', sender: 'S' }));
      expect(
        (await store.append('r', draft('a', { cid: 'c', from: 'bob', sender: 'S' }))).duplicate,
      ).toBe(true);
      await store.append('r', draft('b'));
      await store.append('r', draft('c'));
      const again = await store.append('r', draft('a', { cid: 'c', from: 'bob', sender: 'S' }));
      expect(again).toMatchObject({ duplicate: false, message: { id: 4, from: 'bob' } });
      expect(
        (await store.append('r', draft('a', { cid: 'c', from: 'carol', sender: 'S' }))).duplicate,
      ).toBe(true);
    });

    it('forgets a cid once its message has gone', async () => {
      const { store } = setup({ retention: { maxMessages: 2, maxAgeMs: 0 }, pruneIntervalMs: 0 });
      await store.append('r', draft('a', { cid: 'c' }));
      await store.append('r', draft('b'));
      expect((await store.append('r', draft('a', { cid: 'c' }))).duplicate).toBe(true);
      await store.append('r', draft('c'));
      const again = await store.append('r', draft('a', { cid: 'c' }));
      expect(again).toMatchObject({ duplicate: false, message: { id: 4 } });
    });

    it('stores a cid again once its message is past the count limit, in later turns', async () => {
      // A store may delete rows past the limit only now and then; the old row must not
      // stand in the way of the new one.
      const { store } = setup({ retention: { maxMessages: 8, maxAgeMs: 0 }, pruneIntervalMs: 0 });
      await store.append('r', draft('a', { cid: 'c' }));
      for (let i = 0; i < 8; i++) await store.append('r', draft(`m${i}`));
      const again = await store.append('r', draft('a', { cid: 'c' }));
      expect(again).toMatchObject({ duplicate: false, message: { id: 10, cid: 'c' } });
      expect((await store.read('r', { limit: 100 })).map((m) => m.id)).toEqual([
        3, 4, 5, 6, 7, 8, 9, 10,
      ]);
      expect(await store.room('r')).toMatchObject({ top: 10, oldest: 3 });
      expect((await store.append('r', draft('a', { cid: 'c' }))).duplicate).toBe(true);
    });

    it('stores lone surrogates in msg and cid as U+FFFD, and returns what it stores', async () => {
      const h = setup();
      const a = await h.store.append('r', draft('a\uD800b\uDC00', { cid: '\uD800' }));
      expect(a.message).toMatchObject({ msg: 'a\uFFFDb\uFFFD', cid: '\uFFFD' });
      // Pairs are kept; different ill-formed cids that read the same are one cid.
      const b = await h.store.append('r', draft('\u{1F600}', { cid: '\u{1F600}' }));
      expect(b.message).toMatchObject({ id: 2, msg: '\u{1F600}', cid: '\u{1F600}' });
      expect(await h.store.append('r', draft('again', { cid: '\uDBFF' }))).toMatchObject({
        duplicate: true,
        message: { id: 1 },
      });
      expect(await h.store.read('r', { limit: 10 })).toEqual([a.message, b.message]);
      if (target.persistent) {
        expect(await (await h.restart()).read('r', { limit: 10 })).toEqual([a.message, b.message]);
      }
    });

    it('refuses room keys and senders that are not well-formed Unicode', async () => {
      const { store } = setup();
      await expect(store.append('r\uD800', draft('x'))).rejects.toThrow(RangeError);
      await expect(store.append('r', draft('x', { from: 'ann\uDC00' }))).rejects.toThrow(
        RangeError,
      );
      await expect(store.read('\uDC00', { limit: 5 })).rejects.toThrow(RangeError);
      await expect(store.room('\uD800')).rejects.toThrow(RangeError);
      expect(await store.room('\uFFFD')).toMatchObject({ top: 0 });
      const ok = await store.append('\u{1F600}', draft('x', { from: '\u{1F600}' }));
      expect(ok.message.id).toBe(1);
    });

    it('frees a cid pushed out by appends of the same turn', async () => {
      const { store } = setup({ retention: { maxMessages: 2, maxAgeMs: 0 }, pruneIntervalMs: 0 });
      const oneTurn = await Promise.all([
        store.append('r', draft('a', { cid: 'c' })),
        store.append('r', draft('b')),
        store.append('r', draft('d')),
        store.append('r', draft('a', { cid: 'c' })),
      ]);
      expect(oneTurn.map((a) => [a.message.id, a.duplicate])).toEqual([
        [1, false],
        [2, false],
        [3, false],
        [4, false],
      ]);
      await store.append('s', draft('a', { cid: 'c' }));
      const nextTurn = await Promise.all([
        store.append('s', draft('b')),
        store.append('s', draft('d')),
        store.append('s', draft('a', { cid: 'c' })),
      ]);
      expect(nextTurn.map((a) => [a.message.id, a.duplicate])).toEqual([
        [2, false],
        [3, false],
        [4, false],
      ]);
      expect((await store.read('s', { limit: 10 })).map((m) => [m.id, m.msg])).toEqual([
        [3, 'd'],
        [4, 'a'],
      ]);
      expect((await store.append('s', draft('a', { cid: 'c' }))).duplicate).toBe(true);
    });

    it('resolves the appends of one turn in order, readable once resolved', async () => {
      const { store } = setup();
      const order: number[] = [];
      const seen: number[] = [];
      const all = Array.from({ length: 100 }, (_, i) =>
        store.append('r', draft(`m${i}`)).then(async (a) => {
          order.push(a.message.id);
          if (i === 0) seen.push((await store.room('r')).top);
          return a;
        }),
      );
      const done = await Promise.all(all);
      expect(ids(done.map((a) => a.message))).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
      expect(order).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
      expect(seen[0]).toBeGreaterThanOrEqual(1);
    });

    const commits = target.commits;
    if (commits !== undefined) {
      it('commits the appends of one event-loop turn together', async () => {
        const { store } = setup();
        const start = commits(store);
        await Promise.all(
          Array.from({ length: 100 }, (_, i) => store.append(`r${i % 3}`, draft('x'))),
        );
        expect(commits(store) - start).toBe(1);
        await Promise.all(Array.from({ length: 10 }, () => store.append('r0', draft('y'))));
        await Promise.all(Array.from({ length: 10 }, () => store.append('r1', draft('y'))));
        expect(commits(store) - start).toBe(3);
        // Every promise of the turn resolves only after that turn's commit.
        const turn = Array.from({ length: 5 }, () =>
          store.append('r2', draft('z')).then(() => commits(store)),
        );
        expect(await Promise.all(turn)).toEqual([4, 4, 4, 4, 4].map((n) => start + n));
        expect(await store.room('r0')).toMatchObject({ top: 44 });
      });
    }

    if (target.persistent) {
      it('writes what is pending when closed', async () => {
        const h = setup();
        const pending = [h.store.append('r', draft('a')), h.store.append('r', draft('b'))];
        const store = await h.restart();
        expect((await Promise.all(pending)).map((a) => a.message.id)).toEqual([1, 2]);
        expect(ids(await store.read('r', { limit: 10 }))).toEqual([1, 2]);
      });
    }

    it('refuses appends once closed', async () => {
      const storage = target.storage();
      cleanup.push(() => storage.dispose());
      const store = storage.open(KEEP_ALL);
      await store.close();
      await expect(store.append('r', draft('late'))).rejects.toThrow(/closed/);
    });

    it('agrees with a simple model over random appends, reads, prunes and restarts', async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(operation, { minLength: 1, maxLength: 40 }), async (ops) => {
          await runAgainstModel(target, ops);
        }),
        { numRuns: target.propertyRuns ?? 100 },
      );
    }, 120_000);

    it('agrees with the model when the clock steps back around the count limit', async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(steppingRound, { minLength: 1, maxLength: 4 }),
          async (rounds) => {
            await runAgainstModel(target, rounds.flat());
          },
        ),
        { numRuns: 2 * (target.propertyRuns ?? 100) },
      );
    }, 120_000);
  });
}

// ---- the model ----

// Odd keys on purpose: an empty name, a NUL, a character outside the BMP, and senders and
// cids that would collide if they were joined naively.
const ROOMS = ['a', 'b', '', 'x\u0000y', '\u{1F600}'] as const;
const MODEL_RETENTION = { maxMessages: 4, maxAgeMs: 50 };

type Op =
  | {
      t: 'append';
      dt: number;
      batch: {
        room: string;
        from: string;
        cid: string | undefined;
        sender: string | undefined;
        msg: string;
        dt: number;
      }[];
    }
  | { t: 'prune'; dt: number }
  | {
      t: 'read';
      room: string;
      after: number | undefined;
      before: number | undefined;
      limit: number;
    }
  | { t: 'room'; room: string }
  | { t: 'restart' };

const room = fc.constantFrom(...ROOMS);
/** Appends go to one room half the time, so rooms fill past their limit. */
const busyRoom = fc.oneof(room, fc.constant(ROOMS[0]));
/** A clock step: on by up to `max` three times in four, else back. */
const mostlyOn = (max: number) =>
  fc.oneof(
    { arbitrary: fc.integer({ min: 0, max }), weight: 3 },
    { arbitrary: fc.integer({ min: -60, max: -1 }), weight: 1 },
  );
/** An id bound for a read, now and then between two ids. */
const bound = (min: number) =>
  fc.oneof(
    { arbitrary: fc.integer({ min, max: 25 }), weight: 4 },
    { arbitrary: fc.integer({ min, max: 24 }).map((n) => n + 0.5), weight: 1 },
  );
const operation: fc.Arbitrary<Op> = fc.oneof(
  {
    arbitrary: fc.record({
      t: fc.constant('append' as const),
      // The clock mostly moves on, but now and then steps back, also within a turn (each
      // message's dt), so age retention meets a young message before older ones and cuts
      // a turn's messages part-way.
      dt: mostlyOn(30),
      batch: fc.array(
        fc.record({
          room: busyRoom,
          from: fc.constantFrom('ann', 'bob', 'a', '1:a', ''),
          cid: fc.option(
            fc.oneof(
              fc.constantFrom('x', 'y', 'a', '1:a', '', '\uD800', '\uDC00x'),
              fc.string({ maxLength: 2 }),
            ),
            {
              nil: undefined,
            },
          ),
          // The sending session (MessageDraft.sender), sometimes spelled as a nickname.
          sender: fc.option(fc.constantFrom('S1', 'S2', 'ann', '1:a'), {
            freq: 4,
            nil: undefined,
          }),
          msg: fc.oneof(
            fc.string({ maxLength: 6, unit: 'binary' }),
            fc.string({ maxLength: 3 }).map((t) => `${t}\uD800`),
          ),
          dt: fc.oneof(
            { arbitrary: fc.constant(0), weight: 2 },
            { arbitrary: mostlyOn(10), weight: 1 },
          ),
        }),
        { minLength: 1, maxLength: 6 },
      ),
    }),
    weight: 5,
  },
  {
    arbitrary: fc.record({
      t: fc.constant('prune' as const),
      dt: mostlyOn(60),
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      t: fc.constant('read' as const),
      room,
      after: fc.option(bound(-1), { nil: undefined }),
      before: fc.option(bound(0), { nil: undefined }),
      limit: fc.integer({ min: 0, max: 6 }),
    }),
    weight: 3,
  },
  { arbitrary: fc.record({ t: fc.constant('room' as const), room }), weight: 2 },
  { arbitrary: fc.constant({ t: 'restart' as const }), weight: 1 },
);

/** A clock step, as often back as on. */
const clockStep = fc.oneof(
  { arbitrary: fc.integer({ min: 0, max: 20 }), weight: 1 },
  { arbitrary: fc.integer({ min: -60, max: -1 }), weight: 1 },
);
/**
 * Rounds of a few turns to one room, the clock stepping back within and between them, then a
 * prune and a look: sequences where a young message lies at or below the count limit with
 * older ones after it, which the general mix above reaches only rarely.
 */
const steppingRound: fc.Arbitrary<Op[]> = fc
  .tuple(
    fc.array(
      fc.record({
        t: fc.constant('append' as const),
        dt: clockStep,
        batch: fc.array(
          fc.record({
            room: fc.constant(ROOMS[0]),
            from: fc.constant('ann'),
            cid: fc.option(fc.constantFrom('x', 'y'), { nil: undefined }),
            sender: fc.constant(undefined),
            msg: fc.constant('m'),
            dt: clockStep,
          }),
          { minLength: 1, maxLength: 4 },
        ),
      }),
      { minLength: 2, maxLength: 5 },
    ),
    fc.integer({ min: 0, max: 60 }),
    fc.option(bound(-1), { nil: undefined }),
  )
  .map(([turns, dt, after]): Op[] => [
    ...turns,
    { t: 'prune', dt },
    { t: 'room', room: ROOMS[0] },
    { t: 'read', room: ROOMS[0], after, before: undefined, limit: 6 },
  ]);

/** The platform's own replacement of lone surrogates (ES2024, in Node 20), as the reference. */
function toWellFormed(text: string): string {
  return (text as unknown as { toWellFormed(): string }).toWellFormed();
}

interface ModelRoom {
  top: number;
  messages: StoredMessage[];
}

class Model {
  rooms = new Map<string, ModelRoom>();
  /** The name each message's cid is kept under: its sender's, or its from without one. */
  private readonly keptUnder = new WeakMap<StoredMessage, string>();

  private get(room: string): ModelRoom {
    let r = this.rooms.get(room);
    if (r === undefined) {
      r = { top: 0, messages: [] };
      this.rooms.set(room, r);
    }
    return r;
  }

  append(room: string, given: MessageDraft): { message: StoredMessage; duplicate: boolean } {
    const d = {
      ...given,
      msg: toWellFormed(given.msg),
      ...(given.cid !== undefined ? { cid: toWellFormed(given.cid) } : {}),
    };
    const r = this.get(room);
    // A space opens no generated nickname: the sender's name is apart from every nickname.
    const name = d.sender === undefined ? d.from : ` ${d.sender}`;
    const first = r.messages.find(
      (m) => d.cid !== undefined && m.cid === d.cid && this.keptUnder.get(m) === name,
    );
    if (first !== undefined) return { message: first, duplicate: true };
    r.top++;
    const message: StoredMessage = {
      room,
      id: r.top,
      at: d.at,
      from: d.from,
      msg: d.msg,
      ...(d.cid !== undefined ? { cid: d.cid } : {}),
    };
    r.messages.push(message);
    this.keptUnder.set(message, name);
    if (r.messages.length > MODEL_RETENTION.maxMessages) r.messages.shift();
    return { message, duplicate: false };
  }

  prune(now: number): void {
    for (const r of this.rooms.values()) {
      while (r.messages.length > 0 && r.messages[0]!.at < now - MODEL_RETENTION.maxAgeMs) {
        r.messages.shift();
      }
    }
  }

  read(room: string, q: HistoryQuery): StoredMessage[] {
    const all = (this.rooms.get(room)?.messages ?? []).filter(
      (m) =>
        (q.after === undefined || m.id > q.after) && (q.before === undefined || m.id < q.before),
    );
    if (q.limit <= 0) return [];
    return q.after !== undefined ? all.slice(0, q.limit) : all.slice(-q.limit);
  }

  room(room: string): { top: number; oldest: number } {
    const r = this.rooms.get(room);
    if (r === undefined) return { top: 0, oldest: 1 };
    return { top: r.top, oldest: r.messages[0]?.id ?? r.top + 1 };
  }
}

async function runAgainstModel(target: ContractTarget, ops: readonly Op[]): Promise<void> {
  const storage = target.storage();
  const options: HistoryStoreOptions = { retention: MODEL_RETENTION, pruneIntervalMs: 0 };
  let store = storage.open(options);
  let model = new Model();
  let clock = 0;
  // Epochs seen for written rooms; a restart that loses history must not reuse any of them.
  let epochs = new Map<string, string>();
  const lost = new Set<string>();
  // Each stored message's origin (`origins` targets): the sender's, checked on every read.
  const origins = new Map<string, string | undefined>();
  const originKey = (roomKey: string, id: number) => `${roomKey}\n${id}`;
  const checkEpoch = (roomKey: string, epoch: string) => {
    expect(lost.has(epoch)).toBe(false);
    const known = epochs.get(roomKey);
    if (known === undefined) epochs.set(roomKey, epoch);
    else expect(epoch).toBe(known);
  };
  try {
    for (const op of ops) {
      switch (op.t) {
        case 'append': {
          // Times stay at 0 or more, as a real clock's.
          clock = Math.max(0, clock + op.dt);
          const drafts = op.batch.map((b) => {
            clock = Math.max(0, clock + b.dt);
            return {
              room: b.room,
              draft: {
                at: clock,
                from: b.from,
                msg: b.msg,
                ...(b.cid !== undefined ? { cid: b.cid } : {}),
                ...(b.sender !== undefined ? { sender: b.sender } : {}),
              },
            };
          });
          const got: Appended[] = await Promise.all(
            drafts.map((d) => store.append(d.room, d.draft)),
          );
          drafts.forEach((d, i) => {
            const want = model.append(d.room, d.draft);
            expect(got[i]!.message).toEqual(want.message);
            expect(got[i]!.duplicate).toBe(want.duplicate);
            const sender = d.draft.sender;
            if (!want.duplicate) {
              const origin =
                target.origins && sender !== undefined ? senderOrigin(sender) : undefined;
              origins.set(originKey(d.room, want.message.id), origin);
            }
            checkEpoch(d.room, got[i]!.epoch);
          });
          break;
        }
        case 'prune':
          clock = Math.max(0, clock + op.dt);
          await store.prune(clock);
          model.prune(clock);
          break;
        case 'read': {
          const q: HistoryQuery = {
            limit: op.limit,
            ...(op.after !== undefined ? { after: op.after } : {}),
            ...(op.before !== undefined ? { before: op.before } : {}),
          };
          const read = await store.read(op.room, q);
          expect(read.map((m) => m.origin)).toEqual(
            read.map((m) => origins.get(originKey(op.room, m.id))),
          );
          expect(read.map(({ origin: _, ...m }) => m)).toEqual(model.read(op.room, q));
          break;
        }
        case 'room': {
          const got: RoomHistory = await store.room(op.room);
          expect({ top: got.top, oldest: got.oldest }).toEqual(model.room(op.room));
          if (got.top > 0) checkEpoch(op.room, got.epoch);
          break;
        }
        case 'restart':
          await store.close();
          store = storage.open(options);
          if (!target.persistent) {
            model = new Model();
            origins.clear();
            for (const e of epochs.values()) lost.add(e);
            epochs = new Map();
          }
          break;
      }
    }
  } finally {
    await store.close();
    storage.dispose();
  }
}

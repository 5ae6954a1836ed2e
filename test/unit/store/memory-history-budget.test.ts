/**
 * MemoryHistoryStore's bound on what it holds (`maxBytes`, `maxEmptyRooms`): the
 * HistoryStore contract runs it with the default budget, far above what the contract
 * writes; here the budget is small enough to matter.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Chat } from '../../../src/core/chat.js';
import type { StoredMessage } from '../../../src/core/history.js';
import type { Request, ServerMessage } from '../../../src/protocol/messages.js';
import { levelUnder } from '../../../src/store/common.js';
import {
  MemoryHistoryStore,
  type MemoryHistoryStoreOptions,
  ROOM_WEIGHT,
} from '../../../src/store/memory-history.js';
import { joinChat, sendRequest } from '../../helpers/fake-peer.js';
import { turns, walkRooms } from '../../helpers/walk.js';

const RETENTION = { maxMessages: 20, maxAgeMs: 0 };

function open(options: Partial<MemoryHistoryStoreOptions> = {}): MemoryHistoryStore {
  return new MemoryHistoryStore({ retention: RETENTION, pruneIntervalMs: 0, ...options });
}

/** Every message the store still holds for a room, oldest first. */
async function held(store: MemoryHistoryStore, room: string): Promise<StoredMessage[]> {
  return store.read(room, { limit: RETENTION.maxMessages });
}

describe('MemoryHistoryStore budget', () => {
  it('cuts the rooms weighing the most down to one size, each losing its oldest, and keeps their ids', async () => {
    // Each message 2 × (100 + 3) + 96 = 302: a and b weigh ROOM_WEIGHT + 2 × 302 = 1,244,
    // big with ten 3,660. Past 6,000, all are cut to 15/16 of it, 5,625: big alone, down to
    // 3,137 (levelUnder), so it loses its two oldest; a and b are under that size.
    const store = open({ maxBytes: 6_000 });
    const text = 'x'.repeat(100);
    for (const room of ['a', 'b']) {
      for (let i = 0; i < 2; i++) await store.append(room, { at: 1, from: 'ann', msg: text });
    }
    for (let i = 0; i < 10; i++) await store.append('big', { at: 1, from: 'ann', msg: text });
    expect(store.bytes).toBe(3 * ROOM_WEIGHT + 12 * 302);
    expect((await held(store, 'a')).map((m) => m.id)).toEqual([1, 2]);
    expect((await held(store, 'b')).map((m) => m.id)).toEqual([1, 2]);
    expect((await held(store, 'big')).map((m) => m.id)).toEqual([3, 4, 5, 6, 7, 8, 9, 10]);
    expect(await store.room('big')).toMatchObject({ top: 10, oldest: 3 });
    const next = await store.append('big', { at: 2, from: 'ann', msg: text });
    expect(next.message.id).toBe(11);
  });

  it('keeps a quiet room’s history while one member floods a room of its own past maxBytes', async () => {
    const store = open({ maxBytes: 20_000, retention: { maxMessages: 1_000, maxAgeMs: 0 } });
    for (let i = 0; i < 5; i++) {
      await store.append('quiet', { at: 1, from: 'ann', msg: `hello ${i}`.padEnd(100) });
    }
    // The flood: written after quiet, and far more of it than the budget holds.
    for (let i = 0; i < 500; i++) {
      await store.append('flood', { at: 2, from: 'eve', msg: `${i}`.padEnd(100, 'x') });
    }
    expect(store.bytes).toBeLessThanOrEqual(20_000);
    expect((await store.read('quiet', { limit: 100 })).map((m) => m.id)).toEqual([1, 2, 3, 4, 5]);
    const flood = await store.read('flood', { limit: 1_000 });
    expect(flood.at(-1)?.id).toBe(500);
    expect(flood.length).toBeGreaterThan(40);
  });

  it('empties rooms of one size least recently written first, as few as it needs to', async () => {
    // Rooms of one 400-character message each (ROOM_WEIGHT + 902 = 1,542); five of them
    // pass 7,000, and cutting to 6,562 empties only the first written.
    const store = open({ maxBytes: 7_000 });
    for (let i = 0; i < 5; i++) {
      await store.append(`r${i}`, { at: 1, from: 'ann', msg: 'z'.repeat(400) });
    }
    expect(await held(store, 'r0')).toEqual([]);
    for (let i = 1; i < 5; i++) expect(await held(store, `r${i}`)).toHaveLength(1);
    expect(store.bytes).toBe(4 * 1_542);
  });

  it('empties the rooms written to least recently past maxRooms, keeping their tops', async () => {
    const store = open({ maxRooms: 3 });
    for (const room of ['r0', 'r1', 'r2', 'r3']) {
      await store.append(room, { at: 1, from: 'ann', msg: 'hi' });
      await store.append(room, { at: 1, from: 'ann', msg: 'hi' });
    }
    expect(await held(store, 'r0')).toEqual([]);
    expect(await store.room('r0')).toMatchObject({ top: 2, oldest: 3 });
    // Written again, r1 is the newest: r2 goes next.
    await store.append('r1', { at: 1, from: 'ann', msg: 'again' });
    await store.append('r4', { at: 1, from: 'ann', msg: 'hi' });
    expect(await held(store, 'r2')).toEqual([]);
    for (const room of ['r1', 'r3', 'r4'])
      expect((await held(store, room)).length).toBeGreaterThan(0);
    expect((await store.append('r0', { at: 1, from: 'ann', msg: 'back' })).message.id).toBe(3);
    expect(() => open({ maxRooms: -1 })).toThrow(RangeError);
  });

  it('keeps the newest message of a room even when it alone is over the budget', async () => {
    const store = open({ maxBytes: ROOM_WEIGHT + 1_000 });
    await store.append('a', { at: 1, from: 'ann', msg: 'small' });
    const big = await store.append('a', { at: 1, from: 'ann', msg: 'y'.repeat(2_000) });
    expect((await held(store, 'a')).map((m) => m.id)).toEqual([big.message.id]);
    await store.append('b', { at: 1, from: 'ann', msg: 'small' });
    expect(await held(store, 'a')).toEqual([]);
    expect(store.bytes).toBeLessThanOrEqual(ROOM_WEIGHT + 1_000);
  });

  it('forgets the rooms it emptied past maxEmptyRooms, which then number on from the highest top forgotten', async () => {
    const store = open({ maxBytes: ROOM_WEIGHT + 1_000, maxEmptyRooms: 2 });
    const first = await store.append('r0', { at: 1, from: 'ann', msg: 'z'.repeat(400) });
    await store.append('r0', { at: 1, from: 'ann', msg: 'z' });
    // Each next room pushes the one before it out.
    for (let i = 1; i <= 3; i++) {
      await store.append(`r${i}`, { at: 1, from: 'ann', msg: 'z'.repeat(400) });
    }
    // r0 (top 2), r1 remembered by their top; r2 was one too many: both forgotten.
    expect(await store.room('r2')).toMatchObject({ top: 1, oldest: 2 });
    // Forgotten, and rooms never written alike: same epoch, ids on from the highest top.
    // Only in those never written were the ids up to it never used (their base).
    for (const room of ['r0', 'r1']) {
      expect(await store.room(room)).toEqual({ epoch: expect.any(String), top: 2, oldest: 3 });
    }
    expect(await store.room('never')).toMatchObject({ top: 2, oldest: 3, base: 2 });
    expect((await store.room('r0')).epoch).toBe(first.epoch);
    const again = await store.append('r0', { at: 1, from: 'ann', msg: 'again' });
    expect(again).toMatchObject({ epoch: first.epoch, message: { id: 3 } });
  });

  it('tells a room never written from a forgotten one, at any top', async () => {
    const store = open({ maxBytes: ROOM_WEIGHT + 1_000, maxEmptyRooms: 2 });
    const written: string[] = [];
    for (let i = 0; i < 300; i++) {
      written.push(`r${i}`);
      await store.append(`r${i}`, { at: 1, from: 'ann', msg: 'z'.repeat(400 + (i % 7)) });
      await store.append(`r${i}`, { at: 1, from: 'ann', msg: 'z'.repeat(400) });
    }
    const { top } = await store.room('never');
    expect(top).toBeGreaterThan(1);
    // Every room written and then forgotten lost ids: no base, whatever the filter holds.
    for (const room of written.slice(0, -3)) {
      const info = await store.room(room);
      expect(info).toMatchObject({ top, oldest: top + 1 });
      expect(info.base).toBeUndefined();
    }
    // Rooms never written: nothing used below the top, bar the filter's rare false "maybe".
    let clean = 0;
    for (let i = 0; i < 1_000; i++) {
      const info = await store.room(`never${i}`);
      expect(info).toMatchObject({ top, oldest: top + 1 });
      if (info.base === top) clean++;
      else expect(info.base).toBeUndefined();
    }
    expect(clean).toBeGreaterThan(990);
    // Written now, such a room keeps its base: its ids start above it.
    const fresh = `never${(
      await Promise.all(Array.from({ length: 1_000 }, (_, i) => store.room(`never${i}`)))
    ).findIndex((info) => info.base === top)}`;
    const first = await store.append(fresh, { at: 1, from: 'ann', msg: 'hi' });
    expect(first.message.id).toBe(top + 1);
    expect(await store.room(fresh)).toMatchObject({ top: top + 1, oldest: top + 1, base: top });
  });

  it('answers HISTORY in a room never written with no more to page, at any top', async () => {
    const chat = new Chat({ history: open({ maxBytes: 65_536, maxEmptyRooms: 2 }) });
    const caps = ['rooms', 'history'];
    const walker = joinChat(chat, 'walker', caps);
    await walkRooms(walker, 20);
    const reader = joinChat(chat, 'reader', caps);
    sendRequest(reader, { cmd: '100', room: 'quiet' } as Request);
    await turns(3);
    expect(reader.outbox.find((m) => m.cmd === '101' && m.room === 'quiet')).toMatchObject({
      top: expect.any(Number),
    });
    expect(
      (reader.outbox.find((m) => m.cmd === '101' && m.room === 'quiet') as { top: number }).top,
    ).toBeGreaterThan(0);
    sendRequest(reader, { cmd: '106', room: 'quiet' } as Request);
    await turns(4);
    expect(reader.outbox.find((m) => m.cmd === '107')).toMatchObject({ messages: [], more: false });
    chat.shutdown();
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
          // The model: per room its top and its held [id, weight]s, least recently written
          // first; a room holding messages weighs ROOM_WEIGHT more. Past the budget, the
          // heaviest rooms (of one weight, the least recently written) are cut to one
          // size, the written one keeping its newest; if that alone is over, the others
          // make room.
          const tops = new Map<string, number>();
          const rooms = new Map<string, [id: number, weight: number][]>();
          let total = 0;
          const weightOf = (held: [number, number][]) =>
            held.length === 0 ? 0 : ROOM_WEIGHT + held.reduce((sum, [, w]) => sum + w, 0);
          const target = Math.floor((maxBytes * 15) / 16);
          const cut = (order: [number, number][][], level: number, kept: [number, number][]) => {
            for (const held of order) {
              if (total <= target) return;
              while (held.length > (held === kept ? 1 : 0) && weightOf(held) > level) {
                total -= held.shift()![1];
                if (held.length === 0) total -= ROOM_WEIGHT;
              }
            }
          };
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
            if (kept.length === 0) total += ROOM_WEIGHT;
            kept.push([id, weight]);
            total += weight;
            if (kept.length > RETENTION.maxMessages) total -= kept.shift()![1];
            if (total > maxBytes) {
              const order = [...rooms.values()]
                .filter((held) => held.length > 0)
                .sort((a, b) => weightOf(b) - weightOf(a));
              cut(order, levelUnder(order.map(weightOf), target), kept);
              const others = order.filter((held) => held !== kept && held.length > 0);
              const rest = target - weightOf(kept);
              if (total > target) {
                cut(others, rest > 0 ? levelUnder(others.map(weightOf), rest) : 0, kept);
              }
            }
            expect(message.id).toBe(id);
            expect(store.bytes).toBe(total);
            expect(store.bytes).toBeLessThanOrEqual(Math.max(maxBytes, weight + ROOM_WEIGHT));
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

describe('MemoryHistoryStore budget, seen by a member who stays in a room', () => {
  it('never numbers a live room from 1 again without telling its members (its rooms forgotten past maxEmptyRooms)', async () => {
    // A quiet room loses its messages to the budget while its member stays in it; then more
    // rooms than maxEmptyRooms are emptied. The next chat there must not reuse an id the
    // member was shown: nothing tells a member of one process that an epoch changed, and
    // ChatClient and the web app drop a chat whose id (in the epoch they know) they have seen.
    const chat = new Chat({
      history: open({ maxBytes: 65_536, maxEmptyRooms: 2 }),
    });
    const stayer = joinChat(chat, 'stayer', ['rooms', 'history']);
    const walker = joinChat(chat, 'walker', ['rooms', 'history']);
    sendRequest(stayer, { cmd: '100', room: 'quiet' } as Request);
    await turns(3);
    // As long as a walked room's chat, so that quiet is cut as they are: least recently
    // written first (a shorter one would stay, the walked rooms weighing more).
    sendRequest(stayer, { cmd: '7', room: 'quiet', msg: 'first'.padEnd(4096, '.') } as Request);
    await turns(3);
    const shown = () =>
      stayer.outbox.filter(
        (m): m is ServerMessage & { id: number; msg: string } =>
          m.cmd === '70' && m.room === 'quiet',
      );
    const ids = () =>
      stayer.outbox
        .filter((m) => (m.cmd === '70' || m.cmd === '71') && m.room === 'quiet')
        .map((m) => (m as { id: number }).id);
    expect(ids()).toEqual([1]);
    // Rooms walked through, each a message of 4,096 characters (about 8 KB): quiet's goes
    // first, then each walked room is emptied in turn, past maxEmptyRooms.
    await walkRooms(walker, 20);
    sendRequest(walker, { cmd: '100', room: 'quiet' } as Request);
    await turns(3);
    sendRequest(walker, { cmd: '7', room: 'quiet', msg: 'second' } as Request);
    await turns(3);
    expect(shown().map((m) => m.msg)).toEqual(['second']);
    // Without a gap in between, the member's ids in the room only go up.
    expect(stayer.outbox.some((m) => m.cmd === '108')).toBe(false);
    expect(ids()[1]).toBeGreaterThan(1);
    chat.shutdown();
  });

  it.each([
    ['never written, joined on a fresh store', 0, false, true],
    ['never written, joined after rooms were forgotten', 10, false, true],
    ['written, then forgotten', 10, true, false],
  ])(
    'recovers a quiet room (%s) for a member who left it at its top, after more rooms than maxEmptyRooms were emptied, only if nothing in it was deleted',
    async (_case, before, write, recovered) => {
      // protocol.md: "A room quiet for longer than the age limit still recovers: nothing is
      // missing". A room never written is reported at the top the store numbers unknown rooms
      // from; that rises when emptied rooms are forgotten, in the same epoch, and a since at
      // the old top must not read as chats deleted that never existed.
      const chat = new Chat({
        history: open({ maxBytes: 65_536, maxEmptyRooms: 2 }),
      });
      const caps = ['rooms', 'history'];
      const stayer = joinChat(chat, 'stayer', caps);
      const walker = joinChat(chat, 'walker', caps);
      await walkRooms(walker, before);
      sendRequest(stayer, { cmd: '100', room: 'quiet' } as Request);
      await turns(3);
      if (write) {
        // As long as a walked room's chat, so that it goes as theirs do.
        const msg = 'gone soon'.padEnd(4096, '.');
        sendRequest(stayer, { cmd: '7', room: 'quiet', msg } as Request);
        await turns(3);
      }
      const joined = stayer.outbox.find((m) => m.cmd === '101' && m.room === 'quiet') as {
        epoch: string;
        top: number;
      };
      const top = write ? joined.top + 1 : joined.top;
      if (before > 0) expect(joined.top).toBeGreaterThan(0);
      sendRequest(stayer, { cmd: '102', room: 'quiet' } as Request);
      await turns(2);
      await walkRooms(walker, 20);
      stayer.outbox.splice(0);
      sendRequest(stayer, {
        cmd: '100',
        room: 'quiet',
        since: { epoch: joined.epoch, id: top },
      } as Request);
      await turns(3);
      const again = stayer.outbox.find((m) => m.cmd === '101') as { top: number };
      expect(again).toMatchObject({ epoch: joined.epoch, recovered });
      expect(again.top).toBeGreaterThan(top);
      chat.shutdown();
    },
  );

  // A room never written whose top rose by more than MAX_REPLAY (was told 'too-many'), and
  // one written after its top rose (was told 'deleted'): the replay counts from its base.
  for (const [what, reason] of [
    ['the top rose past 1000 ids', 'too-many'],
    ['a chat was sent there after the top rose', 'deleted'],
  ] as const) {
    it(`recovers a room never written for a member who left it at its top, after ${what} (was: ${reason})`, async () => {
      const store = open({ maxBytes: 65_536, maxEmptyRooms: 2 });
      const chat = new Chat({ history: store });
      const caps = ['rooms', 'history'];
      const stayer = joinChat(chat, 'stayer', caps);
      const walker = joinChat(chat, 'walker', caps);
      sendRequest(stayer, { cmd: '100', room: 'quiet' } as Request);
      await turns(3);
      const joined = stayer.outbox.find((m) => m.cmd === '101' && m.room === 'quiet') as {
        epoch: string;
        top: number;
      };
      sendRequest(stayer, { cmd: '102', room: 'quiet' } as Request);
      await turns(2);
      // A busy room's top becomes the one unknown rooms number from once it is forgotten.
      if (reason === 'too-many') {
        for (let i = 0; i < 1_100; i++) await store.append('busy', { at: 1, from: 'x', msg: 'm' });
      }
      await walkRooms(walker, 20);
      if (reason === 'deleted') {
        sendRequest(walker, { cmd: '100', room: 'quiet' } as Request);
        await turns(3);
        sendRequest(walker, { cmd: '7', room: 'quiet', msg: 'hello' } as Request);
        await turns(3);
      }
      stayer.outbox.splice(0);
      const since = { epoch: joined.epoch, id: joined.top };
      sendRequest(stayer, { cmd: '100', room: 'quiet', since } as Request);
      await turns(4);
      const again = stayer.outbox.find((m) => m.cmd === '101');
      expect(again).toMatchObject({ epoch: joined.epoch, recovered: true });
      // What was said there since is replayed, and nothing else.
      const replayed = stayer.outbox.filter((m) => m.cmd === '70').map((m) => m.msg);
      expect(replayed).toEqual(reason === 'deleted' ? ['hello'] : []);
      chat.shutdown();
    });
  }
});

describe('MemoryHistoryStore rings', () => {
  it('reads every message kept after a full ring was cut down by age, and grows again', async () => {
    let now = 0;
    const store = new MemoryHistoryStore({
      retention: { maxMessages: 100, maxAgeMs: 1_000 },
      pruneIntervalMs: 0,
      now: () => now,
    });
    // 150 messages wrap the ring of 100; the newest 10 are young enough to stay.
    for (let i = 1; i <= 150; i++) {
      await store.append('a', { at: i <= 140 ? 0 : 5_000, from: 'ann', msg: `m${i}` });
    }
    now = 5_500;
    await store.prune(now);
    const ids = (messages: StoredMessage[]) => messages.map((m) => m.id);
    const range = (lo: number, hi: number) => Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
    expect(ids(await store.read('a', { limit: 100 }))).toEqual(range(141, 150));
    // Its slots went with the messages.
    const rings = (store as unknown as { rooms: Map<string, { slots: unknown[] }> }).rooms;
    expect(rings.get('a')!.slots.length).toBe(10);
    for (let i = 151; i <= 260; i++)
      await store.append('a', { at: 5_000, from: 'ann', msg: `m${i}` });
    expect(ids(await store.read('a', { limit: 100 }))).toEqual(range(161, 260));
    expect(ids(await store.read('a', { after: 200, limit: 5 }))).toEqual(range(201, 205));
    for (const m of await store.read('a', { limit: 100 })) expect(m.msg).toBe(`m${m.id}`);
  });
});

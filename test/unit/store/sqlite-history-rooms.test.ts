/**
 * At most `maxRooms` rooms hold messages in the SQLite store. Each room keeps its newest
 * `maxMessages` for the age limit, so a client spreading its chats over ever new rooms (join,
 * chat, leave, next room) had the disk hold all of them that long; past the limit the rooms
 * written to least recently now lose all their messages, their rows (top and epoch) staying.
 * Room names are chosen so that their order by name is not the order they were written in.
 */
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { expect, it, vi } from 'vitest';
import type { MessageDraft } from '../../../src/core/history.js';
import { levelUnder } from '../../../src/store/common.js';
import type { SqliteHistoryStore } from '../../../src/store/sqlite-history.js';
import { resume } from '../../helpers/resume.js';
import { useSqliteStores } from '../../helpers/sqlite-stores.js';

const { file, open } = useSqliteStores('confab-sqlite-rooms-');

const draft = (msg: string, at: number): MessageDraft => ({ at, from: 'eve', msg });

/** Ids of the messages a room holds. */
async function ids(store: SqliteHistoryStore, room: string): Promise<number[]> {
  return (await store.read(room, { after: 0, limit: 10_000 })).map((m) => m.id);
}

/** The rooms of `rooms` that hold messages. */
async function holding(store: SqliteHistoryStore, rooms: readonly string[]): Promise<string[]> {
  const held: string[] = [];
  for (const room of rooms) if ((await ids(store, room)).length > 0) held.push(room);
  return held;
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

it('empties the rooms written to least recently past maxRooms, and tells a member resuming there', async () => {
  const store = open({ maxRooms: 3 });
  const rooms = ['delta', 'alpha', 'echo', 'bravo', 'charlie'];
  const epochs = new Map<string, string>();
  for (const [i, room] of rooms.entries()) {
    await store.append(room, draft('one', 2 * i));
    epochs.set(room, (await store.append(room, draft('two', 2 * i + 1))).epoch);
  }
  await store.prune(100);
  expect(await holding(store, rooms)).toEqual(['echo', 'bravo', 'charlie']);
  for (const room of ['echo', 'bravo', 'charlie']) expect(await ids(store, room)).toEqual([1, 2]);
  // Their rows stay: top and epoch, nothing left to read.
  const delta = epochs.get('delta')!;
  expect(await store.room('delta')).toEqual({ epoch: delta, top: 2, oldest: 3 });
  expect(await store.read('delta', { before: 3, limit: 10 })).toEqual([]);
  expect(await resume(store, 'delta', { epoch: delta, id: 1 })).toEqual({
    epoch: delta,
    top: 2,
    recovered: false,
    reason: 'deleted',
  });
  // One that had seen everything misses nothing.
  expect(await resume(store, 'delta', { epoch: delta, id: 2 })).toMatchObject({ recovered: true });
  // A room kept is recovered from as before.
  const echo = epochs.get('echo')!;
  expect(await resume(store, 'echo', { epoch: echo, id: 1 })).toMatchObject({ recovered: true });
});

it('moves a room written to again to the front, and numbers an emptied room on', async () => {
  // One room's state cached: the others are read back from the database when written again.
  const store = open({ maxRooms: 3, cachedRooms: 1 });
  const rooms = ['delta', 'alpha', 'echo', 'bravo'];
  for (const [i, room] of rooms.entries()) await store.append(room, draft('one', i));
  await store.prune(100);
  expect(await holding(store, rooms)).toEqual(['alpha', 'echo', 'bravo']);
  // alpha, the least recently written, is written again: echo is now the one to go.
  await store.append('alpha', draft('again', 10));
  const delta = await store.append('delta', draft('back', 11));
  expect(delta.message.id).toBe(2);
  await store.prune(100);
  expect(await holding(store, rooms)).toEqual(['delta', 'alpha', 'bravo']);
  expect(await ids(store, 'delta')).toEqual([2]);
  expect(await store.room('echo')).toMatchObject({ top: 1, oldest: 2 });
  // Also after a restart: echo's next id is 2, under the same epoch.
  const echo = await store.room('echo');
  await store.close();
  const again = open({ maxRooms: 3 });
  expect(await again.append('echo', draft('after', 20))).toMatchObject({
    epoch: echo.epoch,
    message: { id: 2 },
  });
});

it('knows the order rooms were written in after a restart, from each room newest message', async () => {
  const first = open({ maxRooms: 0 });
  for (const [i, room] of ['charlie', 'alpha', 'delta', 'bravo', 'charlie'].entries()) {
    await first.append(room, draft(`m${i}`, i));
  }
  await first.close();
  // Written to least recently: alpha, then delta (charlie was written again last).
  const store = open({ maxRooms: 2 });
  await store.prune(100);
  expect(await holding(store, ['alpha', 'bravo', 'charlie', 'delta'])).toEqual([
    'bravo',
    'charlie',
  ]);
  expect(await ids(store, 'charlie')).toEqual([1, 2]);
});

it('keeps every room, and no order of them, with maxRooms and maxBytes off', async () => {
  const store = open({ maxRooms: 0, maxBytes: 0 });
  const rooms = Array.from({ length: 50 }, (_, i) => `room-${49 - i}`);
  for (const [i, room] of rooms.entries()) await store.append(room, draft('one', i));
  await store.prune(100);
  expect(await holding(store, rooms)).toEqual(rooms);
  expect(store.stats.writtenRooms).toBe(0);
});

it('checks maxRooms as a room starts holding messages, not only at the prune', async () => {
  // No timer, and no prune called.
  const store = open({ maxRooms: 4 });
  const rooms = Array.from({ length: 40 }, (_, i) => `room-${(i * 7) % 40}`);
  for (const [i, room] of rooms.entries()) {
    await store.append(room, draft('one', i));
    // The check runs a turn after the commit that made a room more.
    expect(store.stats.writtenRooms).toBeLessThanOrEqual(5);
  }
  await vi.waitFor(() => expect(store.stats.writtenRooms).toBe(4));
  expect(await holding(store, rooms)).toEqual(rooms.slice(-4));
});

it('deletes a bounded number of messages in each step, a turn between steps', async () => {
  // One message a row: the full room is 5,000 rows.
  const store = open({ maxRooms: 1, batchMessages: 1 });
  const count = 5000;
  await Promise.all(
    Array.from({ length: count }, (_, i) => store.append('zulu', draft(`m${i}`, 1))),
  );
  await store.append('alpha', draft('one', 2));
  const oldest: number[] = [];
  for (let turn = 0; turn < 100; turn++) {
    const info = await store.room('zulu');
    if (oldest.at(-1) !== info.oldest) oldest.push(info.oldest);
    if (info.oldest > count) break;
    await nextTurn();
  }
  expect(oldest[0]).toBe(1);
  expect(oldest.at(-1)).toBe(count + 1);
  // Seen part way: no step took the room whole.
  expect(oldest.length).toBeGreaterThanOrEqual(4);
  for (let i = 1; i < oldest.length; i++) {
    expect(oldest[i]! - oldest[i - 1]!).toBeLessThanOrEqual(2048);
  }
  expect(await ids(store, 'alpha')).toEqual([1]);
  expect(await store.append('zulu', draft('next', 3))).toMatchObject({
    message: { id: count + 1 },
  });
});

it('leaves a room with an append waiting for the commit, and gives that append the next id', async () => {
  const store = open({ maxRooms: 2 });
  await store.append('charlie', draft('one', 0));
  await store.append('charlie', draft('two', 1));
  await store.append('bravo', draft('one', 2));
  // The check this commit starts runs at the next turn, before the commit of the append
  // made here, in the same turn.
  await store.append('alpha', draft('one', 3));
  const appended = store.append('charlie', draft('three', 4));
  await store.prune(100);
  expect((await appended).message.id).toBe(3);
  expect(await holding(store, ['alpha', 'bravo', 'charlie'])).toEqual(['alpha', 'charlie']);
  expect(await ids(store, 'charlie')).toEqual([1, 2, 3]);
  expect(await store.room('bravo')).toMatchObject({ top: 1, oldest: 2 });
});

it('settles a check under way when closed, and the next store finishes it', async () => {
  const store = open({ maxRooms: 1 });
  // 1,000 rooms in one commit: a check of several steps, CAP_ROOMS_PER_TURN rooms each.
  const rooms = Array.from({ length: 1000 }, (_, i) => `r${String(999 - i).padStart(3, '0')}`);
  await Promise.all(rooms.map((room, i) => store.append(room, draft('one', i))));
  const check = store.prune(100);
  await nextTurn();
  const left = store.stats.writtenRooms;
  expect(left).toBeLessThan(1000);
  expect(left).toBeGreaterThan(1);
  await store.close();
  // Stopped before another query, not failed on a closed database.
  await expect(check).resolves.toBeUndefined();
  const again = open({ maxRooms: 1 });
  expect(again.stats.writtenRooms).toBe(left);
  await again.prune(100);
  expect(await holding(again, rooms)).toEqual(['r000']);
  // Every room emptied kept its top.
  expect(await again.room('r999')).toMatchObject({ top: 1, oldest: 2 });
  expect(await again.append('r999', draft('two', 2000))).toMatchObject({ message: { id: 2 } });
});

it('moves no room to the front for a commit that failed', async () => {
  const store = open({ maxRooms: 2 });
  await store.append('charlie', draft('one', 0));
  await store.append('bravo', draft('one', 1));
  // Inserts of the room "boom" fail, as on a full disk: the whole commit is rolled back.
  const db = new Database(file());
  db.exec(`CREATE TRIGGER boom BEFORE INSERT ON batches WHEN NEW.room = 'boom'
    BEGIN SELECT RAISE(ABORT, 'no room left'); END`);
  db.close();
  const failed = await Promise.allSettled([
    store.append('charlie', draft('two', 2)),
    store.append('boom', draft('one', 3)),
  ]);
  expect(failed.map((r) => (r.status === 'rejected' ? String(r.reason) : r.status))).toEqual([
    expect.stringContaining('no room left'),
    expect.stringContaining('no room left'),
  ]);
  await store.append('alpha', draft('one', 4));
  await store.prune(100);
  // charlie's last write that was stored is the oldest, and boom holds nothing.
  expect(await holding(store, ['alpha', 'boom', 'bravo', 'charlie'])).toEqual(['alpha', 'bravo']);
  expect(store.stats.writtenRooms).toBe(2);
  expect(await store.append('charlie', draft('two', 5))).toMatchObject({ message: { id: 2 } });
});

it('keeps the cids of the messages a room still holds when a step empties it only in part', async () => {
  const store = open({ maxRooms: 2 });
  // alpha, written to least recently, takes all but 8 of the first step's 2,048 messages.
  await Promise.all(
    Array.from({ length: 2040 }, (_, i) => store.append('alpha', draft(`m${i}`, 1))),
  );
  // bravo's 100 messages are one row: too many for what is left, it loses no row this step.
  await Promise.all(
    Array.from({ length: 100 }, (_, i) =>
      store.append('bravo', { at: 2, from: 'eve', msg: `b${i}`, cid: `c${i + 1}` }),
    ),
  );
  // Two rooms more in one commit: the first step is to empty alpha and bravo.
  await Promise.all([
    store.append('charlie', draft('one', 3)),
    store.append('delta', draft('one', 3)),
  ]);
  // The first step has emptied alpha; bravo is whole until the next.
  while (store.stats.writtenRooms > 3) await nextTurn();
  expect(store.stats.writtenRooms).toBe(3);
  expect((await ids(store, 'bravo')).length).toBe(100);
  // Message 3 is still there to read: its cid sent again is that message, not a new one.
  const again = await store.append('bravo', { at: 4, from: 'eve', msg: 'b2', cid: 'c3' });
  expect(again).toMatchObject({ duplicate: true, message: { id: 3 } });
});

it('checks maxRooms when it opens, with no prune and no append', async () => {
  const first = open({ maxRooms: 0 });
  const rooms = ['echo', 'alpha', 'delta', 'bravo', 'charlie'];
  for (const [i, room] of rooms.entries()) await first.append(room, draft('one', i));
  await first.close();
  const store = open({ maxRooms: 2 });
  await vi.waitFor(() => expect(store.stats.writtenRooms).toBe(2));
  expect(await holding(store, rooms)).toEqual(['bravo', 'charlie']);
});

it('no longer counts the rooms age retention emptied', async () => {
  const store = open({ maxRooms: 2, retention: { maxMessages: 100, maxAgeMs: 1000 } });
  await store.append('bravo', draft('old', 0));
  await store.append('alpha', draft('new', 5000));
  await store.prune(5500);
  expect(store.stats.writtenRooms).toBe(1);
  // Two rooms hold messages again: none is over the limit, alpha keeps its message.
  await store.append('charlie', draft('new', 5100));
  await store.prune(5600);
  expect(await holding(store, ['alpha', 'bravo', 'charlie'])).toEqual(['alpha', 'charlie']);
  expect(store.stats.writtenRooms).toBe(2);
});

/** The bytes of the messages a store holds, as it counts them, and as its file has them. */
function storedBytes(store: SqliteHistoryStore): { counted: number | undefined; actual: number } {
  const db = new Database(file(), { readonly: true });
  try {
    const actual = db
      .prepare('SELECT coalesce(sum(octet_length(data)), 0) FROM batches')
      .pluck()
      .get() as number;
    return { counted: store.stats.storedBytes, actual };
  } finally {
    db.close();
  }
}

/** The ids from `from` to `to`, in order. */
function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

it('finds the size to cut rooms down to: the largest that brings them under the limit', () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 1, max: 1_000_000 }), { maxLength: 50 }),
      fc.integer({ min: 0, max: 10_000_000 }),
      (unsorted, most) => {
        const sizes = [...unsorted].sort((a, b) => b - a);
        const level = levelUnder(sizes, most);
        const cut = (l: number) => sizes.reduce((sum, size) => sum + Math.min(size, l), 0);
        if (cut(Number.POSITIVE_INFINITY) <= most) {
          expect(level).toBe(sizes[0] ?? 0);
        } else {
          expect(cut(level)).toBeLessThanOrEqual(most);
          expect(cut(level + 1)).toBeGreaterThan(most);
        }
      },
    ),
  );
});

it('cuts the rooms holding the most down to their newest once the messages take more than maxBytes', async () => {
  // A client within flood control filled 393 MB in 30 s over many rooms, which only
  // maxRooms × maxMessages bounded (some 250 GB at the defaults).
  const maxBytes = 2 * 1024 * 1024;
  const store = open({ maxRooms: 0, maxBytes });
  const rooms = Array.from({ length: 40 }, (_, i) => `room${(i * 7) % 40}`);
  for (const [i, room] of rooms.entries()) {
    for (let j = 0; j < 20; j++)
      await store.append(room, draft(`${i}.${j} ${'x'.repeat(8000)}`, i));
  }
  // The check runs a step a turn: done once a few turns pass with nothing more to take.
  for (let i = 0; i < 200; i++) await nextTurn();
  const { counted, actual } = storedBytes(store);
  expect(counted).toBe(actual);
  // Over by at most what the commits between two looks wrote (16 of 8 KB).
  expect(actual).toBeLessThanOrEqual(maxBytes + 16 * 8100);
  // 6.4 MB written, about a third kept: every room that holds messages holds its newest.
  let kept = 0;
  for (const room of rooms) {
    const held = await ids(store, room);
    kept += held.length;
    if (held.length > 0) expect(held).toEqual(range(21 - held.length, 20));
  }
  expect(kept).toBeGreaterThan(200);
  expect(kept).toBeLessThan(400);
});

it('keeps an active room’s history while one member floods a room of its own past maxBytes', async () => {
  // One member writing 4,000-character chats into its own room within flood control, and
  // the rooms written to least recently emptied first: every other room, one written to
  // two seconds before included, lost all its history within seconds.
  const maxBytes = 1024 * 1024;
  const store = open({ maxRooms: 0, maxBytes });
  for (let i = 0; i < 30; i++) await store.append('physics', draft(`before ${i}`, i));
  for (let i = 0; i < 600; i++) {
    await store.append('junk', draft(`${i} ${'x'.repeat(4000)}`, 100 + i));
    if (i % 40 === 0) await store.append('physics', draft(`during ${i}`, 100 + i));
    if (i % 16 === 0) await nextTurn();
  }
  for (let i = 0; i < 200; i++) await nextTurn();
  const { counted, actual } = storedBytes(store);
  expect(counted).toBe(actual);
  expect(actual).toBeLessThanOrEqual(maxBytes + 16 * 4100);
  expect(await ids(store, 'physics')).toEqual(range(1, 45));
  const junk = await ids(store, 'junk');
  expect(junk.length).toBeGreaterThan(100);
  expect(junk).toEqual(range(601 - junk.length, 600));
});

it('takes no more than the bytes over maxBytes when the rooms written at once share pages', async () => {
  // 20 busy rooms written in turn with rooms of one chat each: their rows share pages, and a
  // budget of pages in use had emptied nearly every room to free a tenth.
  const maxBytes = 150_000;
  const store = open({ maxRooms: 0, maxBytes });
  const busy = Array.from({ length: 20 }, (_, i) => `busy${i}`);
  let at = 0;
  for (let round = 0; round < 60; round++) {
    for (const room of busy)
      await store.append(room, draft(`${room} ${round} ${'y'.repeat(80)}`, at++));
    await store.append(`once${round}`, draft(`once ${'z'.repeat(80)}`, at++));
  }
  for (let i = 0; i < 200; i++) await nextTurn();
  const { counted, actual } = storedBytes(store);
  expect(counted).toBe(actual);
  expect(actual).toBeLessThanOrEqual(maxBytes + 16 * 200);
  // What went is about what was over, not most of it.
  expect(actual).toBeGreaterThan(maxBytes * 0.8);
  for (const room of busy.slice(-5)) expect((await ids(store, room)).length).toBeGreaterThan(0);
});

it('keeps its count of bytes in step with what age retention cuts, and counts them again at open', async () => {
  const retention = { maxMessages: 10_000, maxAgeMs: 1_000 };
  const store = open({ maxRooms: 0, maxBytes: 1024 * 1024, batchMessages: 4, retention });
  // One commit: each room's ten messages in batches of four, which the cutoff cuts in part.
  await Promise.all(
    Array.from({ length: 30 }, (_, i) =>
      store.append(`r${i % 3}`, draft(`m${i} ${'q'.repeat(i * 10)}`, i)),
    ),
  );
  const before = storedBytes(store).actual;
  // Messages said before 15 go: batches cut in part, and whole ones deleted.
  await store.prune(1_015);
  expect(storedBytes(store).actual).toBeLessThan(before);
  let { counted, actual } = storedBytes(store);
  expect(counted).toBe(actual);
  await store.close();
  const again = open({ maxRooms: 0, maxBytes: 1024 * 1024 });
  ({ counted, actual } = storedBytes(again));
  expect(actual).toBeGreaterThan(0);
  expect(counted).toBe(actual);
});

it('stores every chat while the checkpointer restarts the WAL under commits that delete', async () => {
  // Each commit deletes past the count limit; the checkpointer restarts a small WAL often. A
  // commit that read before it wrote was refused "database is locked" when a restart came
  // between the two.
  const store = open({
    maxBytes: 1024 * 1024,
    walBytesLimit: 32 * 1024,
    retention: { maxMessages: 20, maxAgeMs: 0 },
  });
  const failures: unknown[] = [];
  const started = Date.now();
  for (let turn = 0; turn < 4000 && Date.now() - started < 8_000; turn++) {
    await Promise.all(
      Array.from({ length: 5 }, (_, i) =>
        store.append('lobby', draft(`${turn}.${i} ${'w'.repeat(200)}`, turn)).catch((err) => {
          failures.push(err);
        }),
      ),
    );
  }
  expect(failures).toEqual([]);
}, 20_000);

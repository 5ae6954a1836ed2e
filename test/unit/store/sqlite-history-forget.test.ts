/**
 * At most `maxEmptyRooms` rows of rooms holding no messages in the SQLite store. A room
 * emptied (by age retention or maxRooms) kept its row (key, epoch, top) for good, so a
 * client walking through new rooms with a chat in each grew the file by some 50 bytes a
 * room without end. Past the limit those rows are now deleted, as the memory store forgets
 * its emptied rooms: a room without a row numbers on from the highest top deleted, in the
 * same epoch, and a filter of the names deleted tells a room never written from one that was.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { expect, it, vi } from 'vitest';
import { Chat } from '../../../src/core/chat.js';
import type { MessageDraft } from '../../../src/core/history.js';
import type { Request, ServerMessage } from '../../../src/protocol/messages.js';
import {
  type SqliteHistoryOptions,
  SqliteHistoryStore,
} from '../../../src/store/sqlite-history.js';
import { joinChat, sendRequest } from '../../helpers/fake-peer.js';
import { resume } from '../../helpers/resume.js';
import { useSqliteStores } from '../../helpers/sqlite-stores.js';
import { turns, walkRooms } from '../../helpers/walk.js';

const { dir, file, open } = useSqliteStores('confab-sqlite-forget-');

async function reopen(
  store: SqliteHistoryStore,
  options: Partial<SqliteHistoryOptions> = {},
): Promise<SqliteHistoryStore> {
  await store.close();
  return open(options);
}

const draft = (msg: string, at = 0): MessageDraft => ({ at, from: 'eve', msg });

/** What the file (the one at `at`) holds, read on a connection of its own. */
function query<T>(sql: string, at = file()): T[] {
  const db = new Database(at, { readonly: true });
  try {
    return db.prepare(sql).all() as T[];
  } finally {
    db.close();
  }
}

/** The `n` a query counts. */
const count = (at: string, sql: string): number => query<{ n: number }>(sql, at)[0]!.n;

const rows = (): number => count(file(), 'SELECT count(*) AS n FROM rooms');
const hasRow = (room: string): boolean =>
  query<{ key: string }>('SELECT key FROM rooms').some((r) => r.key === room);

/** Every check, emptying and forgetting the store has started, done. */
async function settle(store: SqliteHistoryStore): Promise<void> {
  await store.prune(0);
  await store.prune(0);
}

/** A chat in each of `count` new rooms, named so that their order by name is not the walk's. */
async function walk(store: SqliteHistoryStore, count: number, prefix = 'walk'): Promise<void> {
  for (let i = 0; i < count; i++) {
    await store.append(`${prefix}-${(i * 7919) % 100_003}`, draft(`m${i}`, i));
  }
}

it('keeps the rows of a walk through new rooms bounded', async () => {
  const store = open({ maxRooms: 2, maxEmptyRooms: 5 });
  let most = 0;
  for (let i = 0; i < 300; i++) {
    await store.append(`walk-${(i * 7919) % 100_003}`, draft(`m${i}`, i));
    if (i % 10 === 0) most = Math.max(most, rows());
  }
  await settle(store);
  expect(most).toBeLessThanOrEqual(2 + 5 + 4);
  expect(rows()).toBeLessThanOrEqual(2 + 5);
  expect(store.stats.emptyRooms).toBeLessThanOrEqual(5);
});

it('gives a member who stayed in a forgotten room ids above all it saw, in the same epoch, also after a restart', async () => {
  let store = open({ maxRooms: 2, maxEmptyRooms: 3 });
  // A busy room's top becomes the one rooms without a row number from, once it is forgotten.
  for (let i = 0; i < 50; i++) await store.append('busy', draft(`b${i}`));
  const seen = new Map<string, Set<number>>();
  const epochs = new Map<string, string>();
  const note = (room: string, epoch: string, id: number) => {
    if (epochs.has(room)) expect(epoch).toBe(epochs.get(room));
    epochs.set(room, epoch);
    const ids = seen.get(room) ?? new Set();
    // Above every id given in the room so far: never one twice.
    expect(Math.max(0, ...ids)).toBeLessThan(id);
    ids.add(id);
    seen.set(room, ids);
  };
  for (const msg of ['one', 'two']) {
    const appended = await store.append('quiet', draft(msg));
    note('quiet', appended.epoch, appended.message.id);
  }
  // Rooms come back to be written again: each is emptied and forgotten many times over.
  for (let round = 0; round < 6; round++) {
    for (let i = 0; i < 30; i++) {
      const room = `r${(i * 13 + round) % 17}`;
      const appended = await store.append(room, draft(`m${i}`));
      note(room, appended.epoch, appended.message.id);
    }
    if (round === 2) store = await reopen(store, { maxRooms: 2, maxEmptyRooms: 3 });
  }
  await settle(store);
  expect(hasRow('quiet')).toBe(false);
  expect(hasRow('busy')).toBe(false);
  const again = await store.append('quiet', draft('three'));
  note('quiet', again.epoch, again.message.id);
  expect(again.message.id).toBeGreaterThan(50);
  store = await reopen(store, { maxRooms: 2, maxEmptyRooms: 3 });
  const after = await store.append('quiet', draft('four'));
  note('quiet', after.epoch, after.message.id);
  expect(after.message.id).toBe(again.message.id + 1);
});

it('never shows a member who stays in a room an id twice once the room was forgotten', async () => {
  // Nothing tells a member of one process that ids went back: ChatClient and the web app
  // drop a chat whose id (in the epoch they know) they have seen.
  const store = open({ maxRooms: 2, maxEmptyRooms: 2 });
  const chat = new Chat({ history: store });
  const stayer = joinChat(chat, 'stayer', ['rooms', 'history']);
  const walker = joinChat(chat, 'walker', ['rooms', 'history']);
  sendRequest(stayer, { cmd: '100', room: 'quiet' } as Request);
  await turns(3);
  for (const msg of ['first', 'second']) {
    sendRequest(stayer, { cmd: '7', room: 'quiet', msg } as Request);
    await turns(3);
  }
  // The room's key, as the core names it to the store.
  const keys = query<{ key: string }>('SELECT key FROM rooms');
  expect(keys.length).toBe(1);
  await walkRooms(walker, 20);
  await settle(store);
  expect(hasRow(keys[0]!.key)).toBe(false);
  sendRequest(walker, { cmd: '100', room: 'quiet' } as Request);
  await turns(3);
  sendRequest(walker, { cmd: '7', room: 'quiet', msg: 'third' } as Request);
  await turns(4);
  const shown = stayer.outbox.filter(
    (m): m is ServerMessage & { id: number; msg: string } =>
      (m.cmd === '70' || m.cmd === '71') && m.room === 'quiet',
  );
  // Its own two chats acknowledged ("71"), then the walker's shown ("70").
  expect(shown.map((m) => m.cmd)).toEqual(['71', '71', '70']);
  expect(shown.map((m) => m.id).slice(0, 2)).toEqual([1, 2]);
  expect(shown[2]).toMatchObject({ msg: 'third' });
  expect(shown[2]!.id).toBeGreaterThan(2);
  expect(stayer.outbox.some((m) => m.cmd === '108')).toBe(false);
  chat.shutdown();
});

it('resumes a room never written as recovered, and a forgotten one as deleted', async () => {
  const store = open({ maxRooms: 1, maxEmptyRooms: 2 });
  await store.append('gone', draft('one'));
  const gone = await store.append('gone', draft('two'));
  await walk(store, 10, 'first');
  await settle(store);
  // The member of the room never written saw its top then.
  const never = await store.room('never');
  expect(never.top).toBeGreaterThan(0);
  expect(never.base).toBe(never.top);
  await walk(store, 10, 'second');
  for (let i = 0; i < 5; i++) await store.append('busy', draft(`b${i}`));
  await walk(store, 10, 'third');
  await settle(store);
  expect(hasRow('gone')).toBe(false);
  const { forgotten } = store.stats;
  expect(forgotten).toBeGreaterThan(never.top);
  // Forgotten: ids up to its top were given out, and are gone.
  expect(await store.room('gone')).toEqual({
    epoch: gone.epoch,
    top: forgotten,
    oldest: forgotten + 1,
  });
  expect(await resume(store, 'gone', { epoch: gone.epoch, id: 2 })).toEqual({
    epoch: gone.epoch,
    top: forgotten,
    recovered: false,
    reason: 'deleted',
  });
  // Never written: its top rose, and nothing was missed.
  expect(await store.room('never')).toMatchObject({ epoch: never.epoch, top: forgotten });
  expect(await resume(store, 'never', { epoch: never.epoch, id: never.top })).toMatchObject({
    epoch: never.epoch,
    top: forgotten,
    recovered: true,
  });
  // Written now, it keeps its base: a member who left it at the old top is replayed the
  // chat sent since, and told nothing is missing.
  const hello = await store.append('never', draft('hello'));
  expect(hello.message.id).toBe(forgotten + 1);
  expect(await store.room('never')).toMatchObject({ top: forgotten + 1, base: forgotten });
  expect(await resume(store, 'never', { epoch: never.epoch, id: never.top })).toMatchObject({
    recovered: true,
  });
  const restarted = await reopen(store, { maxRooms: 1, maxEmptyRooms: 2 });
  expect(await restarted.room('never')).toMatchObject({ top: forgotten + 1, base: forgotten });
});

it('keeps the highest top forgotten and the names forgotten through a restart', async () => {
  let store = open({ maxRooms: 1, maxEmptyRooms: 2 });
  for (let i = 0; i < 7; i++) await store.append('gone', draft(`g${i}`));
  await walk(store, 10);
  await settle(store);
  expect(hasRow('gone')).toBe(false);
  // The walk's later rooms numbered on from gone's top.
  const { forgotten } = store.stats;
  expect(forgotten).toBeGreaterThanOrEqual(7);
  const before = await Promise.all(['gone', 'never'].map((room) => store.room(room)));
  expect(before[0]!.base).toBeUndefined();
  expect(before[1]!.base).toBe(forgotten);
  store = await reopen(store, { maxRooms: 1, maxEmptyRooms: 2 });
  expect(store.stats.forgotten).toBe(forgotten);
  expect(await Promise.all(['gone', 'never'].map((room) => store.room(room)))).toEqual(before);
  expect(await store.append('gone', draft('back'))).toMatchObject({
    epoch: before[0]!.epoch,
    message: { id: forgotten + 1 },
  });
});

it('bounds the rows of a database written before rows were forgotten, when it opens', async () => {
  const first = open({ maxRooms: 3, maxEmptyRooms: 1_000_000 });
  for (let i = 0; i < 5; i++) await first.append('old', draft(`o${i}`));
  await walk(first, 400);
  await settle(first);
  await first.close();
  expect(rows()).toBe(401);
  // As an earlier version left it: no base column, no forgotten names.
  const db = new Database(file());
  db.exec(`DROP TABLE forgotten_filter; DROP TABLE forgotten_rooms;
    DELETE FROM meta WHERE key = 'forgotten'; ALTER TABLE rooms DROP COLUMN base`);
  db.close();
  const store = open({ maxRooms: 3, maxEmptyRooms: 10 });
  expect(store.stats.emptyRooms).toBe(398);
  // No prune and no append: in steps after it opened.
  await vi.waitFor(() => expect(store.stats.emptyRooms).toBeLessThanOrEqual(10));
  expect(rows()).toBeLessThanOrEqual(13);
  expect(store.stats.forgotten).toBe(5);
  expect(await store.append('old', draft('again'))).toMatchObject({ message: { id: 6 } });
  // Rooms that kept their messages are read as before.
  const kept = query<{ key: string }>('SELECT DISTINCT room AS key FROM batches');
  expect(kept.length).toBe(4);
  for (const { key } of kept) expect((await store.read(key, { limit: 10 })).length).toBe(1);
});

it('keeps the names of the rooms forgotten by a pass the store closed during', async () => {
  const first = open({ maxRooms: 1, maxEmptyRooms: 1_000_000 });
  await first.append('a-first', draft('one'));
  await first.close();
  // Rows enough for several steps, as emptied rooms leave them: no messages.
  const db = new Database(file());
  const epoch = (db.prepare('SELECT epoch FROM rooms').get() as { epoch: string }).epoch;
  const insert = db.prepare('INSERT INTO rooms (key, epoch, top) VALUES (?, ?, 3)');
  db.transaction(() => {
    for (let i = 0; i < 3000; i++) insert.run(`r${String(i).padStart(4, '0')}`, epoch);
  })();
  db.close();
  const store = open({ maxRooms: 1, maxEmptyRooms: 10 });
  // The pass's first step, then closed before its next.
  await turns(1);
  await store.close();
  const left = rows();
  expect(left).toBeLessThan(3001);
  expect(left).toBeGreaterThan(10);
  expect(hasRow('r0000')).toBe(false);
  // The filter was not stored yet: the names are in forgotten_rooms, read back at open.
  const again = open({ maxRooms: 1, maxEmptyRooms: 1_000_000 });
  expect(again.stats.forgotten).toBe(3);
  expect((await again.room('r0000')).base).toBeUndefined();
  expect(await again.room('never')).toMatchObject({ top: 3, base: 3 });
  expect(await again.append('r0000', draft('back'))).toMatchObject({ message: { id: 4 } });
});

it('deletes no row when the names cannot be stored, and forgets them once they can', async () => {
  const store = open({ maxRooms: 1, maxEmptyRooms: 2 });
  for (let i = 0; i < 3; i++) await store.append('gone', draft(`g${i}`));
  const db = new Database(file());
  db.exec(`CREATE TRIGGER full BEFORE INSERT ON forgotten_filter
    BEGIN SELECT RAISE(ABORT, 'disk full'); END`);
  db.close();
  await walk(store, 10);
  await expect(store.prune(0)).rejects.toThrow('disk full');
  expect(rows()).toBe(11);
  expect(store.stats.forgotten).toBe(0);
  expect(await store.room('gone')).toMatchObject({ top: 3, oldest: 4 });
  const fixed = new Database(file());
  fixed.exec('DROP TRIGGER full');
  fixed.close();
  await settle(store);
  expect(rows()).toBeLessThanOrEqual(3);
  expect(await store.append('gone', draft('back'))).toMatchObject({ message: { id: 4 } });
});

it('keeps the row of a room with an append waiting for the commit', async () => {
  const store = open({ maxRooms: 1, maxEmptyRooms: 1_000 });
  for (let i = 0; i < 4; i++) await store.append('quiet', draft(`q${i}`));
  await walk(store, 5);
  await settle(store);
  expect(store.stats.emptyRooms).toBe(5);
  const appended = store.append('quiet', draft('back'));
  // A step in the same turn as the append, before its commit.
  const step = (
    store as unknown as { forgetStep(after: undefined): { deleted: number } }
  ).forgetStep(undefined);
  expect(step.deleted).toBe(4);
  expect(await appended).toMatchObject({ message: { id: 5 } });
  expect(hasRow('quiet')).toBe(true);
  expect(store.stats.emptyRooms).toBe(0);
});

it('refuses a maxEmptyRooms that is not a count', () => {
  for (const maxEmptyRooms of [-1, 1.5, Number.NaN]) {
    expect(() => open({ maxEmptyRooms })).toThrow(RangeError);
  }
});

it('agrees with a model: ids only go up in a room, no id below a base was given, rows stay bounded', async () => {
  const rooms = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
  const op = fc.oneof(
    {
      arbitrary: fc.record({
        kind: fc.constant('append' as const),
        room: fc.constantFrom(...rooms),
      }),
      weight: 6,
    },
    { arbitrary: fc.record({ kind: fc.constant('prune' as const) }), weight: 3 },
    // A restart starts a checkpointer thread: few of them.
    { arbitrary: fc.record({ kind: fc.constant('restart' as const) }), weight: 1 },
  );
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 20, maxLength: 60 }), async (ops) => {
      const at = path.join(dir.path, `model-${run++}.db`);
      const options = {
        retention: { maxMessages: 2, maxAgeMs: 10 },
        pruneIntervalMs: 0,
        maxRooms: 2,
        maxEmptyRooms: 1,
      };
      let store = new SqliteHistoryStore(at, options);
      let now = 0;
      /** Ids given out in each room, and its epoch. */
      const given = new Map<string, number[]>();
      const epochs = new Map<string, string>();
      try {
        for (const step of ops) {
          now += 3;
          if (step.kind === 'append') {
            const { epoch, message } = await store.append(step.room, draft('m', now));
            const ids = given.get(step.room) ?? [];
            expect(message.id).toBeGreaterThan(ids.at(-1) ?? 0);
            expect(epoch).toBe(epochs.get(step.room) ?? epoch);
            epochs.set(step.room, epoch);
            given.set(step.room, [...ids, message.id]);
          } else if (step.kind === 'prune') {
            await store.prune(now);
            await store.prune(now);
            expect(count(at, 'SELECT count(*) AS n FROM rooms')).toBeLessThanOrEqual(2 + 1);
          } else {
            await store.close();
            store = new SqliteHistoryStore(at, options);
          }
          // Kept as rooms are emptied and written, never counted again.
          expect(store.stats.emptyRooms).toBe(
            count(
              at,
              'SELECT count(*) AS n FROM rooms WHERE NOT EXISTS (SELECT 1 FROM batches WHERE room = key)',
            ),
          );
          for (const room of rooms) {
            const info = await store.room(room);
            const ids = given.get(room) ?? [];
            expect(info.top).toBeGreaterThanOrEqual(ids.at(-1) ?? 0);
            expect(info.epoch).toBe(epochs.get(room) ?? info.epoch);
            // Nothing at or below the base was given out.
            for (const id of ids) expect(id).toBeGreaterThan(info.base ?? 0);
          }
        }
      } finally {
        await store.close();
      }
    }),
    { numRuns: 20 },
  );
}, 60_000);

/**
 * What the SQLite history store keeps of many rooms. Each room keeps its newest
 * `maxMessages`, so a client spreading its chats over ever new rooms (join, chat, leave,
 * next room: some 850 rooms a second from one address at the default flood limits) had all
 * of them kept for the age limit, and every room that ever held a message kept its row (its
 * top and epoch) for good. Now at most `maxRooms` rooms hold messages, the rooms written to
 * least recently losing theirs, and past `maxEmptyRooms` rooms without messages are forgotten.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type SqliteHistoryOptions,
  SqliteHistoryStore,
} from '../../../src/store/sqlite-history.js';

const dirs: string[] = [];
const stores: SqliteHistoryStore[] = [];

afterEach(async () => {
  for (const store of stores.splice(0)) await store.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function newFile(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'confab-sqlite-rooms-'));
  dirs.push(dir);
  return path.join(dir, 'history.db');
}

function open(file: string, options: Partial<SqliteHistoryOptions> = {}): SqliteHistoryStore {
  const store = new SqliteHistoryStore(file, {
    retention: { maxMessages: 100, maxAgeMs: 0 },
    pruneIntervalMs: 0,
    ...options,
  });
  stores.push(store);
  return store;
}

const draft = (msg: string, at: number) => ({ at, from: 'eve', msg });

async function messages(store: SqliteHistoryStore, room: string): Promise<string[]> {
  return (await store.read(room, { after: 0, limit: 10 })).map((m) => m.msg);
}

function rows(file: string): number {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare('SELECT count(*) FROM rooms').pluck().get() as number;
  } finally {
    db.close();
  }
}

describe('the SQLite history store, many rooms', () => {
  it('takes every message of the rooms written to least recently past maxRooms', async () => {
    const store = open(newFile(), { maxRooms: 3 });
    const epochs = new Map<string, string>();
    for (let i = 0; i < 5; i++) {
      epochs.set(`r${i}`, (await store.append(`r${i}`, draft(`in r${i}`, i))).epoch);
    }
    await store.prune(10);
    for (const room of ['r0', 'r1']) {
      expect([room, await messages(store, room)]).toEqual([room, []]);
      expect(await store.room(room)).toEqual({ epoch: epochs.get(room), top: 1, oldest: 2 });
    }
    for (const room of ['r2', 'r3', 'r4']) expect(await messages(store, room)).toHaveLength(1);
    // Written to again, it numbers on, and is the most recently written.
    expect(await store.append('r0', draft('again', 5))).toMatchObject({
      epoch: epochs.get('r0'),
      message: { id: 2 },
    });
    await store.prune(10);
    expect(await messages(store, 'r0')).toEqual(['again']);
    expect(await messages(store, 'r2')).toEqual([]);
    expect(await messages(store, 'r3')).toHaveLength(1);
  });

  it('knows which rooms were written to least recently after a restart', async () => {
    const file = newFile();
    const first = open(file, { maxRooms: 0 });
    for (const i of [2, 0, 3, 1]) await first.append(`r${i}`, draft(`in r${i}`, i));
    await first.close();
    const store = open(file, { maxRooms: 2 });
    await store.prune(10);
    expect(await messages(store, 'r0')).toEqual([]);
    expect(await messages(store, 'r1')).toEqual([]);
    expect(await messages(store, 'r2')).toHaveLength(1);
    expect(await messages(store, 'r3')).toHaveLength(1);
  });

  it('forgets rooms without messages past maxEmptyRooms, each then starting a new epoch', async () => {
    const file = newFile();
    const store = open(file, { maxRooms: 2, maxEmptyRooms: 1, cachedRooms: 1 });
    const rooms = ['a', 'b', 'c', 'd', 'e', 'f'];
    const epochs = new Map<string, string>();
    for (const [i, room] of rooms.entries()) {
      epochs.set(room, (await store.append(room, draft(`in ${room}`, i))).epoch);
    }
    const never = (await store.room('never')).epoch;
    await store.prune(10);
    // The two written to last keep their messages and rows, the others are forgotten.
    expect(rows(file)).toBe(2);
    for (const room of ['e', 'f']) {
      expect(await store.room(room)).toEqual({ epoch: epochs.get(room), top: 1, oldest: 1 });
    }
    const a = await store.room('a');
    expect(a).toMatchObject({ top: 0, oldest: 1 });
    expect(a.epoch).not.toBe(epochs.get('a'));
    expect(await store.append('a', draft('back', 20))).toMatchObject({
      epoch: a.epoch,
      message: { id: 1 },
    });
    // Rooms never written to get the new generation's epoch too.
    expect((await store.room('never')).epoch).not.toBe(never);
    const b = await store.room('b');
    await store.close();
    const again = open(file, { maxRooms: 2, maxEmptyRooms: 1 });
    expect(await again.room('b')).toEqual(b);
    expect(await again.room('a')).toEqual({ epoch: a.epoch, top: 1, oldest: 1 });
  });

  it('keeps every row while there are at most maxEmptyRooms rooms without messages', async () => {
    const file = newFile();
    const store = open(file, { maxRooms: 1, maxEmptyRooms: 3, cachedRooms: 1 });
    const a = await store.append('a', draft('one', 0));
    for (const room of ['b', 'c', 'd']) await store.append(room, draft('one', 1));
    await store.prune(10);
    expect(rows(file)).toBe(4);
    expect(await store.room('a')).toEqual({ epoch: a.epoch, top: 1, oldest: 2 });
  });
});

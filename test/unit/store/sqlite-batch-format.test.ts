/**
 * The SQLite store's batch rows: one flat array with times as small distances below the row's
 * newest (encodeBatch), and rows written by earlier versions (an array per message, times as
 * they are) still read, pruned and answered the same.
 */

import path from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeBatch,
  type Entry,
  encodeBatch,
  type Mark,
  markOf,
  readMark,
} from '../../../src/store/sqlite-batches.js';
import { SqliteHistoryStore } from '../../../src/store/sqlite-history.js';
import { useTempDir } from '../../helpers/temp-dir.js';

const dir = useTempDir('confab-sqlite-batch-format-');

const text = fc.string({ unit: 'grapheme', maxLength: 40 });
/** Times as a clock gives them, and the odd ones a batch may still hold. */
const time = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 1_700_000_000_000, max: 1_700_000_000_050 }) },
  { weight: 2, arbitrary: fc.maxSafeNat() },
  {
    weight: 1,
    arbitrary: fc
      .double({ noNaN: true, noDefaultInfinity: true, min: -1e15, max: 1e15 })
      .filter((x) => !Object.is(x, -0)),
  },
);
/** A message's cid, or none, and whether it is an action (IRC's /me). */
const mark = fc
  .tuple(fc.option(text, { nil: undefined }), fc.boolean())
  .map(([cid, action]) => markOf(cid, action));
const entry = fc
  .tuple(time, text, text, mark)
  .map(([at, from, msg, m]): Entry => (m === 0 ? [at, from, msg] : [at, from, msg, m]));

function flatOf(entries: readonly Entry[]): (number | string | Mark)[] {
  return entries.flatMap(([at, from, msg, m]) => [at, from, msg, m ?? 0]);
}

describe('encodeBatch and decodeBatch', () => {
  it('give back every message of a batch, whatever its times and texts', () => {
    fc.assert(
      fc.property(fc.array(entry, { minLength: 1, maxLength: 20 }), (entries) => {
        const newest = Math.max(...entries.map((e) => e[0]));
        expect(decodeBatch(encodeBatch(flatOf(entries), newest), newest)).toEqual(entries);
      }),
      { numRuns: 500 },
    );
  });

  it('write a clock’s times as small negative distances in one flat array', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 1_000 }), { minLength: 1, maxLength: 20 }),
        (offsets) => {
          const ats = offsets.map((o) => 1_764_950_000_000 + o);
          const newest = Math.max(...ats);
          const flat = flatOf(ats.map((at, i): Entry => [at, 'ann', `m${i}`]));
          const row = JSON.parse(encodeBatch(flat, newest)) as unknown[];
          expect(row).toHaveLength(ats.length * 4);
          ats.forEach((at, i) => {
            expect(row[i * 4]).toBe(at - newest - 1);
            expect(row[i * 4 + 3]).toBe(0);
          });
        },
      ),
    );
  });

  it('read a row of an earlier version as it was written', () => {
    fc.assert(
      fc.property(fc.array(entry, { minLength: 1, maxLength: 20 }), time, (entries, newest) => {
        expect(decodeBatch(JSON.stringify(entries), newest)).toEqual(entries);
      }),
    );
  });

  it('refuse a row that is not a whole batch', () => {
    expect(() => decodeBatch('{}', 0)).toThrow(/not an array/);
    expect(() => decodeBatch('[-1,"ann","hi"]', 5)).toThrow(/partial/);
    for (const row of [
      '["x","a","b",0]',
      '[null,"a","b",0]',
      '[-1,5,"b",0]',
      '[-1,"a",{"o":1},0]',
      '[-1,"a","b",true]',
      '[[1000,"a"]]',
      '[[1000,"a","b",5]]',
      '[[1000,"a","b"],7]',
      '[["1000","a","b"]]',
    ]) {
      expect(() => decodeBatch(row, 5), row).toThrow(/corrupt/);
    }
  });

  it('give a damaged row’s messages well typed, or refuse the row', () => {
    const slot = fc.oneof(fc.jsonValue({ maxDepth: 1 }), fc.integer({ min: -5, max: 5 }), text);
    const row = fc.oneof(
      fc.array(slot, { maxLength: 12 }),
      fc.array(fc.array(slot, { maxLength: 5 }), { maxLength: 4 }),
      fc.jsonValue(),
    );
    fc.assert(
      fc.property(row, fc.integer({ min: 0, max: 2_000_000_000_000 }), (value, newest) => {
        let entries: Entry[];
        try {
          entries = decodeBatch(JSON.stringify(value), newest);
        } catch (error) {
          expect(error).toBeInstanceOf(Error);
          return;
        }
        for (const [at, from, msg, mark, ...rest] of entries) {
          expect(typeof at).toBe('number');
          expect(typeof from).toBe('string');
          expect(typeof msg).toBe('string');
          const { cid } = readMark(mark);
          expect(cid === undefined || typeof cid === 'string').toBe(true);
          expect(
            mark === undefined || typeof mark === 'string' || mark === 1 || cid !== undefined,
          ).toBe(true);
          expect(rest).toEqual([]);
        }
      }),
      { numRuns: 1000 },
    );
  });
});

it('reads, prunes and answers cids from rows of an earlier version beside new ones', async () => {
  const file = path.join(dir.path, 'history.db');
  const retention = { maxMessages: 1000, maxAgeMs: 60_000 };
  const options = { retention, pruneIntervalMs: 0 };
  const first = new SqliteHistoryStore(file, options);
  await first.append('r', { at: 1_000, from: 'ann', msg: 'made the room', sender: 'S' });
  await Promise.all([
    first.append('r', { at: 2_000, from: 'bob', msg: 'old two', sender: 'S' }),
    first.append('r', { at: 2_500, from: 'bob', msg: 'old three', cid: 'c3', sender: 'S' }),
    first.append('r', { at: 3_000, from: 'cy', msg: 'old four', sender: 'S' }),
  ]);
  await first.close();
  // Messages 2 to 4 made into the row an earlier version wrote: an array each.
  const db = new Database(file);
  const row = db.prepare('SELECT data FROM batches WHERE room = ? AND first = 2').get('r') as {
    data: string;
  };
  expect(JSON.parse(row.data)).toEqual([
    -1001,
    'bob',
    'old two',
    0,
    -501,
    'bob',
    'old three',
    'c3',
    -1,
    'cy',
    'old four',
    0,
  ]);
  const earlier = JSON.stringify([
    [2_000, 'bob', 'old two'],
    [2_500, 'bob', 'old three', 'c3'],
    [3_000, 'cy', 'old four'],
  ]);
  db.prepare('UPDATE batches SET data = ? WHERE room = ? AND first = 2').run(earlier, 'r');
  db.close();

  const store = new SqliteHistoryStore(file, options);
  try {
    await Promise.all([
      store.append('r', { at: 4_000, from: 'dee', msg: 'new five', sender: 'S' }),
      store.append('r', { at: 4_001, from: 'dee', msg: 'new six', cid: 'c6', sender: 'S' }),
    ]);
    const all = await store.read('r', { limit: 10 });
    expect(all.map((m) => [m.id, m.at, m.from, m.msg, m.cid])).toEqual([
      [1, 1_000, 'ann', 'made the room', undefined],
      [2, 2_000, 'bob', 'old two', undefined],
      [3, 2_500, 'bob', 'old three', 'c3'],
      [4, 3_000, 'cy', 'old four', undefined],
      [5, 4_000, 'dee', 'new five', undefined],
      [6, 4_001, 'dee', 'new six', 'c6'],
    ]);
    expect((await store.read('r', { after: 2, limit: 2 })).map((m) => m.msg)).toEqual([
      'old three',
      'old four',
    ]);
    // Re-sent cids are answered from either kind of row.
    const old = await store.append('r', {
      at: 5_000,
      from: 'bob',
      msg: 'x',
      cid: 'c3',
      sender: 'S',
    });
    expect(old).toMatchObject({ duplicate: true, message: { id: 3, at: 2_500, msg: 'old three' } });
    const recent = await store.append('r', {
      at: 5_000,
      from: 'dee',
      msg: 'x',
      cid: 'c6',
      sender: 'S',
    });
    expect(recent).toMatchObject({
      duplicate: true,
      message: { id: 6, at: 4_001, msg: 'new six' },
    });
    // Age retention cuts the old row part-way: 2,500 and later are kept.
    await store.prune(2_400 + retention.maxAgeMs);
    expect((await store.read('r', { limit: 10 })).map((m) => [m.id, m.at])).toEqual([
      [3, 2_500],
      [4, 3_000],
      [5, 4_000],
      [6, 4_001],
    ]);
    // And the new row part-way, read back after a restart.
    await store.prune(4_001 + retention.maxAgeMs);
  } finally {
    await store.close();
  }
  const reopened = new SqliteHistoryStore(file, options);
  try {
    expect((await reopened.read('r', { limit: 10 })).map((m) => [m.id, m.at, m.msg])).toEqual([
      [6, 4_001, 'new six'],
    ]);
  } finally {
    await reopened.close();
  }
});

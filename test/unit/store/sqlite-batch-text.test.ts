/**
 * SqliteHistoryStore writes a turn's messages into rows of at most BATCH_TEXT characters
 * (besides BATCH_MESSAGES messages): a chat re-sent with a cid is answered by parsing the
 * row its first message is in, so rows of long chats must stay short.
 */

import path from 'node:path';
import Database from 'better-sqlite3';
import { expect, it } from 'vitest';
import { SqliteHistoryStore } from '../../../src/store/sqlite-history.js';
import { useTempDir } from '../../helpers/temp-dir.js';

const dir = useTempDir('confab-sqlite-batch-text-');

it('splits a turn of long chats into rows of a few, and still finds each cid', async () => {
  const file = path.join(dir.path, 'history.db');
  const retention = { maxMessages: 1000, maxAgeMs: 0 };
  const store = new SqliteHistoryStore(file, { retention, pruneIntervalMs: 0 });
  // Escaped in JSON, each chat is some 24 KB: 64 of them in one row were 1.5 MB.
  const long = '\u0001'.repeat(4000);
  const appended = await Promise.all(
    Array.from({ length: 64 }, (_, i) =>
      store.append('r', { at: 1, from: 'ann', msg: long, cid: `c${i}`, sender: 'S' }),
    ),
  );
  expect(appended.map((a) => a.message.id)).toEqual(Array.from({ length: 64 }, (_, i) => i + 1));
  const again = await store.append('r', { at: 2, from: 'ann', msg: 'x', cid: 'c40', sender: 'S' });
  expect(again).toMatchObject({ duplicate: true, message: { id: 41, msg: long } });
  // A single chat longer than a row's share still has a row of its own.
  await store.append('r', { at: 3, from: 'ann', msg: 'y'.repeat(20_000) });
  await store.close();
  const db = new Database(file, { readonly: true });
  const rows = db.prepare('SELECT first, last FROM batches ORDER BY first').all() as {
    first: number;
    last: number;
  }[];
  db.close();
  expect(rows.length).toBeGreaterThanOrEqual(16);
  for (const row of rows) expect(row.last - row.first + 1).toBeLessThanOrEqual(4);
  expect(rows.at(-1)).toEqual({ first: 65, last: 65 });
  expect(rows.flatMap((r) => [r.first, r.last]).at(0)).toBe(1);
});

import {
  chmodSync,
  linkSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect, it } from 'vitest';
import { SqliteHistoryStore } from '../../../src/store/sqlite-history.js';
import { useSqliteStores } from '../../helpers/sqlite-stores.js';

const { dir, file, open } = useSqliteStores('confab-sqlite-modes-');

const modeOf = (name: string) => statSync(path.join(dir.path, name)).mode & 0o777;

it('makes the database and every file beside it readable by its owner only', async () => {
  const store = open();
  await store.append('lobby', { at: 1, from: 'ann', msg: 'private' });
  // SQLite's own files while they exist.
  const whileOpen = readdirSync(dir.path);
  expect(whileOpen).toEqual(expect.arrayContaining(['history.db-wal', 'history.db-shm']));
  for (const name of whileOpen) expect(modeOf(name), name).toBe(0o600);
  await store.close();
  const files = readdirSync(dir.path).sort();
  // The database, its lock and its mark.
  expect(files).toEqual(
    expect.arrayContaining(['history.db', 'history.db-lock', 'history.db-mark']),
  );
  for (const name of files) expect(modeOf(name), name).toBe(0o600);
});

it('locks the database a link leads to, so two data dirs cannot share one through it', async () => {
  await open().close();
  const other = mkdtempSync(path.join(os.tmpdir(), 'confab-sqlite-link-'));
  try {
    symlinkSync(file(), path.join(other, 'history.db'));
    const store = open();
    try {
      const retention = { maxMessages: 10, maxAgeMs: 0 };
      expect(() => new SqliteHistoryStore(path.join(other, 'history.db'), { retention })).toThrow(
        expect.objectContaining({ code: 'SQLITE_BUSY' }),
      );
    } finally {
      await store.close();
    }
  } finally {
    rmSync(other, { recursive: true, force: true });
  }
});

it('refuses a database with a second name, or a link to one not made yet: its lock would be another', async () => {
  await open().close();
  const other = mkdtempSync(path.join(os.tmpdir(), 'confab-sqlite-link-'));
  const retention = { maxMessages: 10, maxAgeMs: 0 };
  try {
    const linked = path.join(other, 'history.db');
    linkSync(file(), linked);
    expect(() => new SqliteHistoryStore(linked, { retention })).toThrow(
      /has 2 names \(hard links\)/,
    );
    expect(() => open()).toThrow(/has 2 names/);
    rmSync(linked);
    await open().close();
    const later = path.join(other, 'later.db');
    symlinkSync(later, linked);
    expect(() => new SqliteHistoryStore(linked, { retention })).toThrow(
      `${linked} is a symbolic link to ${later}, which does not exist`,
    );
    // Nothing made through it, and no lock left held.
    expect(readdirSync(other).sort()).toEqual(['history.db']);
  } finally {
    rmSync(other, { recursive: true, force: true });
  }
});

it('leaves the mode an operator gave an existing database', async () => {
  await open().close();
  chmodSync(file(), 0o640);
  await open().close();
  expect(modeOf('history.db')).toBe(0o640);
});

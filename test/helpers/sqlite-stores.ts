import path from 'node:path';
import { afterEach } from 'vitest';
import { type SqliteHistoryOptions, SqliteHistoryStore } from '../../src/store/sqlite-history.js';
import { useTempDir } from './temp-dir.js';

/**
 * SQLite stores on `history.db` in a fresh directory for each test, closed after it:
 * `open` (no prune timer, count limit 10,000, no age limit, unless `options` say otherwise),
 * `file` its path, `dir` the directory.
 */
export function useSqliteStores(prefix: string) {
  const dir = useTempDir(prefix);
  const stores: SqliteHistoryStore[] = [];
  // Registered after useTempDir's, so it runs before the directory is removed.
  afterEach(async () => {
    for (const store of stores.splice(0)) await store.close();
  });
  const file = (): string => path.join(dir.path, 'history.db');
  const open = (options: Partial<SqliteHistoryOptions> = {}): SqliteHistoryStore => {
    const store = new SqliteHistoryStore(file(), {
      retention: { maxMessages: 10_000, maxAgeMs: 0 },
      pruneIntervalMs: 0,
      ...options,
    });
    stores.push(store);
    return store;
  };
  return { dir, file, open };
}

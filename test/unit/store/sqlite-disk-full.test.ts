/**
 * SqliteHistoryStore on a disk that fills up and is then given room again, on a 2 MiB
 * tmpfs (root only: elsewhere the file says why in one line and skips). Appends fail while
 * the disk is full (the server closes their senders with 3005, nothing is acknowledged
 * that was not stored); once there is room the store must work as before, its checkpoints
 * on their own thread.
 */
import { rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteHistoryStore } from '../../../src/store/sqlite-history.js';
import { fill, mountSmallDisk, noSmallDisk } from '../../helpers/small-disk.js';

if (noSmallDisk !== undefined) console.log(`skipped: ${noSmallDisk}`);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.skipIf(noSmallDisk !== undefined)('SqliteHistoryStore on a full disk', () => {
  let dir = '';
  let unmountable: string | undefined;
  let unmount = () => {};
  beforeAll(() => {
    const disk = mountSmallDisk('2m');
    if (typeof disk === 'string') {
      unmountable = disk;
      console.log(`skipped: ${disk}`);
    } else {
      ({ dir, unmount } = disk);
    }
  });
  afterAll(() => unmount());

  it('copies the WAL back on its own thread again once the disk has room', async (ctx) => {
    if (unmountable !== undefined) ctx.skip();
    const file = path.join(dir, 'history.db');
    const store = new SqliteHistoryStore(file, {
      retention: { maxMessages: 100_000, maxAgeMs: 0 },
      pruneIntervalMs: 0,
    });
    const filler = path.join(dir, 'filler');
    try {
      for (let i = 0; i < 50; i++) {
        await store.append('r', { at: 0, from: 'a', msg: `${i} ${'x'.repeat(3000)}` });
      }
      await sleep(300);
      fill(filler);
      // Commits still fit in the WAL's pages for a while; copying them into the database
      // file needs room it does not have, so the checkpointer's checkpoints fail.
      let failed = 0;
      for (let i = 0; i < 100; i++) {
        await store
          .append('r', { at: 0, from: 'a', msg: `full ${i} ${'y'.repeat(3000)}` })
          .catch(() => failed++);
        await sleep(10);
      }
      expect(failed).toBeGreaterThan(0);
      rmSync(filler);
      const before = statSync(file).size;
      // About 120 KB the database file has no pages for (500 KB of WAL): only a checkpoint can
      // grow it, and SQLite's own (every 1,000 pages, on the event loop) would not run for this
      // little. Without a checkpointer the WAL is never started over either, and a small disk
      // stays full for good.
      for (let i = 0; i < 30; i++) {
        await store.append('after', { at: 0, from: 'a', msg: `${i} ${'z'.repeat(4000)}` });
      }
      for (let i = 0; i < 60 && statSync(file).size <= before; i++) await sleep(50);
      expect(statSync(file).size).toBeGreaterThan(before);
      expect((await store.read('after', { limit: 1 }))[0]?.msg.startsWith('29 ')).toBe(true);
    } finally {
      await store.close();
      rmSync(filler, { force: true });
    }
  });
});

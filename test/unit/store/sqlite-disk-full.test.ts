/**
 * SqliteHistoryStore on a disk that fills up and is then given room again, on a 2 MiB
 * tmpfs (root only: elsewhere the file says why in one line and skips). Appends fail while
 * the disk is full (the server closes their senders with 3005, nothing is acknowledged
 * that was not stored); once there is room the store must work as before, its checkpoints
 * on their own thread.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteHistoryStore } from '../../../src/store/sqlite-history.js';

/** Why the disk-full tests cannot run here, if they cannot: they mount a tmpfs. */
const missing =
  process.platform !== 'linux' || process.getuid?.() !== 0
    ? 'the disk-full tests mount a tmpfs, which needs root on Linux'
    : undefined;
if (missing !== undefined) console.log(`skipped: ${missing}`);

/**
 * Mounts the small tmpfs on a new directory; what is missing when it cannot. Done in
 * beforeAll, not when the file is imported: a run that filters this test out (-t) ran no
 * afterAll and left the tmpfs mounted.
 */
function mountSmallDisk(dir: string): string | undefined {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir], { stdio: 'ignore' });
    return undefined;
  } catch {
    return 'mount -t tmpfs failed (no mount capability here)';
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Writes zeros to `file` until the disk has no room left. */
function fill(file: string): void {
  const fd = openSync(file, 'w');
  const chunk = Buffer.alloc(4096);
  try {
    for (let i = 0; i < 1024; i++) writeSync(fd, chunk);
  } catch {
    // ENOSPC: full.
  } finally {
    closeSync(fd);
  }
}

describe.skipIf(missing !== undefined)('SqliteHistoryStore on a full disk', () => {
  let dir = '';
  let unmountable: string | undefined;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'confab-full-'));
    unmountable = mountSmallDisk(dir);
    if (unmountable !== undefined) console.log(`skipped: ${unmountable}`);
  });
  afterAll(() => {
    if (unmountable === undefined) {
      try {
        execFileSync('umount', [dir]);
      } catch {
        // Still busy (a file the test failed to close): detached now, freed once closed.
        execFileSync('umount', ['-l', dir]);
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

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

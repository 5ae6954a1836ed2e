import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { HistoryStore } from '../../src/core/history.js';
import { MemoryHistoryStore } from '../../src/store/memory-history.js';
import { SqliteHistoryStore } from '../../src/store/sqlite-history.js';
import { historyStoreContract } from './history-store.js';

function tempDir(): string {
  return mkdtempSync(path.join(tmpdir(), 'confab-history-'));
}

function sqliteCommits(store: HistoryStore): number {
  if (!(store instanceof SqliteHistoryStore)) throw new Error('not an SQLite store');
  return store.stats.commits;
}

historyStoreContract({
  name: 'memory',
  persistent: false,
  storage: () => ({ open: (options) => new MemoryHistoryStore(options), dispose: () => {} }),
});

historyStoreContract({
  name: 'SQLite file',
  persistent: true,
  propertyRuns: 40,
  commits: sqliteCommits,
  storage() {
    const dir = tempDir();
    return {
      open: (options) => new SqliteHistoryStore(path.join(dir, 'history.db'), options),
      dispose: () => rmSync(dir, { recursive: true, force: true }),
    };
  },
});

historyStoreContract({
  name: 'SQLite :memory:',
  persistent: false,
  propertyRuns: 40,
  commits: sqliteCommits,
  storage: () => ({
    open: (options) => new SqliteHistoryStore(':memory:', options),
    dispose: () => {},
  }),
});

describe('SqliteHistoryStore', () => {
  const options = { retention: { maxMessages: 10_000, maxAgeMs: 0 }, pruneIntervalMs: 0 };

  it('refuses a file another store has open', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'history.db');
    const first = new SqliteHistoryStore(file, options);
    try {
      await first.append('r', { at: 0, from: 'a', msg: 'x' });
      expect(() => new SqliteHistoryStore(file, options)).toThrow(/locked/);
    } finally {
      await first.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  /** Runs the crash child until it has acknowledged `killAt`, then kills it with SIGKILL. */
  async function crashAfter(file: string, killAt: number): Promise<number> {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', path.join(import.meta.dirname, 'sqlite-crash-child.ts'), file],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    let acked = 0;
    let buffered = '';
    const exited = new Promise<NodeJS.Signals | null>((resolve) => {
      child.once('exit', (_code, signal) => resolve(signal));
    });
    child.stdout.on('data', (d: Buffer) => {
      buffered += d.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        const id = Number(line.slice('ack '.length));
        if (acked < killAt && id >= killAt) child.kill('SIGKILL');
        acked = Math.max(acked, id);
      }
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const signal = await exited;
    clearTimeout(timer);
    expect(signal, stderr).toBe('SIGKILL');
    return acked;
  }

  for (const killAt of [1_000, 400]) {
    it(`keeps every acknowledged message when the process is killed (after ack ${killAt})`, async () => {
      const dir = tempDir();
      const file = path.join(dir, 'history.db');
      try {
        const acked = await crashAfter(file, killAt);
        expect(acked).toBeGreaterThanOrEqual(killAt);
        const store = new SqliteHistoryStore(file, options);
        try {
          const room = await store.room('crash');
          expect(room.top).toBeGreaterThanOrEqual(acked);
          const read = await store.read('crash', { after: 0, limit: 10_000 });
          expect(read.length).toBe(room.top);
          for (let id = 1; id <= acked; id++) {
            expect(read[id - 1]).toEqual({
              room: 'crash',
              id,
              at: id,
              from: 'child',
              msg: `message ${id}`,
            });
          }
          const next = await store.append('crash', { at: 0, from: 'parent', msg: 'after' });
          expect(next.message.id).toBe(room.top + 1);
          expect(next.epoch).toBe(room.epoch);
        } finally {
          await store.close();
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { ShardedHistoryStore } from '../../src/cluster/shards.js';
import type {
  HistoryQuery,
  HistoryStore,
  MessageDraft,
  Retention,
  StoredMessage,
} from '../../src/core/history.js';
import { MemoryHistoryStore } from '../../src/store/memory-history.js';
import {
  APPEND_LUA,
  RedisHistoryStore,
  roomChannel,
  roomTag,
} from '../../src/store/redis-history.js';
import { SqliteHistoryStore } from '../../src/store/sqlite-history.js';
import { useRedis, withoutRedis } from '../helpers/redis.js';
import { eventually } from './broker.js';
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
  // Batches of at most two messages: a turn's appends to a room are split over several rows.
  // One room's state cached: the others are read back from the database on their next append.
  name: 'SQLite :memory:, small batches and cache',
  persistent: false,
  propertyRuns: 40,
  commits: sqliteCommits,
  storage: () => ({
    open: (options) =>
      new SqliteHistoryStore(':memory:', { ...options, batchMessages: 2, cachedRooms: 1 }),
    dispose: () => {},
  }),
});

describe('SqliteHistoryStore', () => {
  const options = { retention: { maxMessages: 10_000, maxAgeMs: 0 }, pruneIntervalMs: 0 };

  it('opens a database that stores one row per message, as earlier versions did', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'history.db');
    const old = new Database(file);
    old.exec(`
      CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
      CREATE TABLE rooms (key TEXT PRIMARY KEY, epoch TEXT NOT NULL, top INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE messages (room TEXT NOT NULL, id INTEGER NOT NULL, at INTEGER NOT NULL,
        "from" TEXT NOT NULL, msg TEXT NOT NULL, cid TEXT, PRIMARY KEY (room, id)) WITHOUT ROWID;
      CREATE UNIQUE INDEX messages_cid ON messages (room, "from", cid) WHERE cid IS NOT NULL;
      INSERT INTO meta VALUES ('seed', 'oldseed');
      INSERT INTO rooms VALUES ('r', 'e-old', 3);
      INSERT INTO messages VALUES ('r', 2, 20, 'ann', 'two "quoted" \u00e9', NULL);
      INSERT INTO messages VALUES ('r', 3, 30, 'bob', 'three', 'c1');
    `);
    old.close();
    const store = new SqliteHistoryStore(file, options);
    try {
      expect(await store.room('r')).toEqual({ epoch: 'e-old', top: 3, oldest: 2 });
      expect(await store.read('r', { after: 0, limit: 10 })).toEqual([
        { room: 'r', id: 2, at: 20, from: 'ann', msg: 'two "quoted" \u00e9' },
        { room: 'r', id: 3, at: 30, from: 'bob', msg: 'three', cid: 'c1' },
      ]);
      const again = await store.append('r', { at: 40, from: 'bob', msg: 'three', cid: 'c1' });
      expect(again).toMatchObject({ duplicate: true, message: { id: 3 } });
      expect((await store.append('r', { at: 50, from: 'ann', msg: 'four' })).message.id).toBe(4);
    } finally {
      await store.close();
    }
    const check = new Database(file, { readonly: true });
    try {
      const tables = check.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all();
      expect(tables).not.toContainEqual({ name: 'messages' });
    } finally {
      check.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  for (const batchMessages of [4, undefined]) {
    it(`cuts a row part-way by age (batches of ${batchMessages ?? 'the default size'})`, async () => {
      const dir = tempDir();
      const file = path.join(dir, 'history.db');
      const cutOptions = {
        retention: { maxMessages: 100, maxAgeMs: 100 },
        pruneIntervalMs: 0,
        ...(batchMessages !== undefined ? { batchMessages } : {}),
      };
      const msgIds = (messages: readonly { id: number }[]) => messages.map((m) => m.id);
      /** What a reader sees of room 'r'. */
      const answers = async (store: SqliteHistoryStore) => ({
        room: await store.room('r'),
        newest: msgIds(await store.read('r', { limit: 100 })),
        fromStart: msgIds(await store.read('r', { after: 0, limit: 100 })),
        afterCut: msgIds(await store.read('r', { after: 6, limit: 2 })),
        atCut: msgIds(await store.read('r', { after: 5, limit: 1 })),
        beforeCut: msgIds(await store.read('r', { before: 6, limit: 9 })),
        upToCut: msgIds(await store.read('r', { before: 7, limit: 9 })),
      });
      let store = new SqliteHistoryStore(file, cutOptions);
      try {
        // One turn, one room, the clock moving within it: ids 1..10 at 0, 10, .., 90.
        await Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            store.append('r', { at: i * 10, from: 'ann', msg: `m${i + 1}`, cid: `c${i + 1}` }),
          ),
        );
        // 45 and older go: the first young message, 6 (at 50), is inside a row.
        await store.prune(145);
        const cut = await answers(store);
        expect(cut).toEqual({
          room: { epoch: cut.room.epoch, top: 10, oldest: 6 },
          newest: [6, 7, 8, 9, 10],
          fromStart: [6, 7, 8, 9, 10],
          afterCut: [7, 8],
          atCut: [6],
          beforeCut: [],
          upToCut: [6],
        });
        expect((await store.read('r', { after: 0, limit: 1 }))[0]).toEqual({
          room: 'r',
          id: 6,
          at: 50,
          from: 'ann',
          msg: 'm6',
          cid: 'c6',
        });
        await store.close();
        // The cids of the messages cut away are deleted with them, not left to go stale.
        const check = new Database(file, { readonly: true });
        try {
          const cids = check.prepare('SELECT cid, id FROM cids ORDER BY id').all();
          expect(cids).toEqual([6, 7, 8, 9, 10].map((id) => ({ cid: `c${id}`, id })));
        } finally {
          check.close();
        }
        store = new SqliteHistoryStore(file, cutOptions);
        expect(await answers(store)).toEqual(cut);
        // A cid of a message cut away is free; one of a message kept is not.
        const resent = await store.append('r', { at: 150, from: 'ann', msg: 'again', cid: 'c5' });
        expect(resent).toMatchObject({ duplicate: false, message: { id: 11, msg: 'again' } });
        const kept = await store.append('r', { at: 150, from: 'ann', msg: 'm6', cid: 'c6' });
        expect(kept).toMatchObject({ duplicate: true, message: { id: 6, at: 50 } });
        // Cut again inside the row already cut: 8 (at 70) is the first young one.
        await store.prune(165);
        const again = await answers(store);
        expect(again).toMatchObject({
          room: { top: 11, oldest: 8 },
          newest: [8, 9, 10, 11],
          fromStart: [8, 9, 10, 11],
          afterCut: [8, 9],
          atCut: [8],
          beforeCut: [],
          upToCut: [],
        });
        expect(
          (await store.append('r', { at: 170, from: 'ann', msg: 'x', cid: 'c7' })).message.id,
        ).toBe(12);
        await store.close();
        store = new SqliteHistoryStore(file, cutOptions);
        expect(await store.room('r')).toMatchObject({ top: 12, oldest: 8 });
        expect(msgIds(await store.read('r', { after: 0, limit: 100 }))).toEqual([8, 9, 10, 11, 12]);
        expect(
          (await store.append('r', { at: 170, from: 'ann', msg: 'x', cid: 'c7' })).duplicate,
        ).toBe(true);
      } finally {
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  it('keeps the state of few rooms, and lets the event loop turn while age retention goes through many', async () => {
    const dir = tempDir();
    const store = new SqliteHistoryStore(path.join(dir, 'history.db'), {
      ...options,
      retention: { maxMessages: 100, maxAgeMs: 1_000 },
      pruneIntervalMs: 0,
      cachedRooms: 100,
    });
    try {
      const rooms = Array.from({ length: 600 }, (_, i) => `room${String(i).padStart(3, '0')}`);
      await Promise.all(rooms.map((room) => store.append(room, { at: 0, from: 'a', msg: 'old' })));
      await Promise.all(
        rooms.map((room) => store.append(room, { at: 5_000, from: 'a', msg: 'x' })),
      );
      // Rooms used long ago keep no state in the process.
      expect(store.stats.cachedRooms).toBeLessThanOrEqual(100);
      const pruned = store.prune(10_000);
      // One transaction's worth is done at once; the rest waits for later turns.
      const left = async () =>
        (await Promise.all(rooms.map((room) => store.read(room, { limit: 10 })))).filter(
          (messages) => messages.length > 0,
        ).length;
      const early = await left();
      expect(early).toBeGreaterThan(0);
      expect(early).toBeLessThan(rooms.length);
      await pruned;
      expect(await left()).toBe(0);
      // Ids go on from the top, with nothing stored.
      const next = await store.append('room599', { at: 10_000, from: 'a', msg: 'y' });
      expect(next.message.id).toBe(3);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs a prune asked for while another waits behind a running one after both, never beside them', async () => {
    const store = new SqliteHistoryStore(':memory:', {
      ...options,
      retention: { maxMessages: 100, maxAgeMs: 1_000 },
      pruneIntervalMs: 0,
    });
    // Counts the prunes under way at once, each of which takes several turns here.
    const probe = store as unknown as { pruneRooms(now: number): Promise<void> };
    const pruneRooms = probe.pruneRooms.bind(store);
    let running = 0;
    let most = 0;
    const order: number[] = [];
    probe.pruneRooms = async (now) => {
      running++;
      most = Math.max(most, running);
      order.push(now);
      try {
        await pruneRooms(now);
      } finally {
        running--;
      }
    };
    try {
      const rooms = Array.from({ length: 600 }, (_, i) => `room${String(i).padStart(3, '0')}`);
      for (const at of [0, 5_000, 20_000]) {
        await Promise.all(rooms.map((room) => store.append(room, { at, from: 'a', msg: 'm' })));
      }
      const first = store.prune(2_000);
      const second = store.prune(7_000);
      await first;
      // The second has not started yet: this one goes after it.
      const third = store.prune(7_500);
      await Promise.all([second, third]);
      expect(most).toBe(1);
      expect(order).toEqual([2_000, 7_000, 7_500]);
      expect((await store.read('room599', { limit: 10 })).map((m) => m.at)).toEqual([20_000]);
    } finally {
      await store.close();
    }
  });

  it('prunes the other rooms by age when one row cannot be read, and says so', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'history.db');
    const store = new SqliteHistoryStore(file, {
      ...options,
      retention: { maxMessages: 100, maxAgeMs: 1_000 },
    });
    try {
      for (const room of ['a', 'c']) await store.append(room, { at: 0, from: 'x', msg: 'm' });
      // Young enough to be read by the prune, which finds it unreadable.
      await store.append('b', { at: 9_500, from: 'x', msg: 'm' });
      const other = new Database(file);
      other.prepare("UPDATE batches SET data = '[' WHERE room = 'b'").run();
      other.close();
      await expect(store.prune(10_000)).rejects.toThrow(SyntaxError);
      expect(await store.read('a', { limit: 10 })).toEqual([]);
      expect(await store.read('c', { limit: 10 })).toEqual([]);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

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

  it('copies the WAL into the database file while open, and leaves no WAL when closed', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'history.db');
    const store = new SqliteHistoryStore(file, options);
    try {
      const empty = statSync(file).size;
      for (let turn = 0; turn < 20; turn++) {
        const appends = [];
        for (let i = 0; i < 100; i++) {
          appends.push(store.append('r', { at: 0, from: 'a', msg: `message ${turn}.${i}` }));
        }
        await Promise.all(appends);
      }
      // Commits only go to the WAL (SQLite's own checkpoints are off): the database file
      // grows only when the checkpointer copies them back, which it does on its own thread.
      for (let i = 0; i < 100 && statSync(file).size === empty; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(statSync(file).size).toBeGreaterThan(empty);
    } finally {
      await store.close();
    }
    try {
      expect(existsSync(`${file}-wal`)).toBe(false);
      const reopened = new SqliteHistoryStore(file, options);
      expect(await reopened.room('r')).toMatchObject({ top: 2_000, oldest: 1 });
      await reopened.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps the WAL near its bound under a steady stream of commits', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'history.db');
    const walBytesLimit = 1024 * 1024;
    const store = new SqliteHistoryStore(file, { ...options, walBytesLimit });
    let largest = 0;
    try {
      // About a commit a millisecond, for two seconds: a checkpoint (every 100 ms) always
      // overlaps a commit, so the WAL is never found copied whole when a write begins, and
      // the reset that follows a complete checkpoint never comes by itself.
      const end = Date.now() + 2_000;
      for (let i = 0; Date.now() < end; i++) {
        await store.append(`r${i % 4}`, { at: 0, from: 'a', msg: `message ${i}` });
        await new Promise((resolve) => setTimeout(resolve, 1));
        if (i % 20 === 0) largest = Math.max(largest, statSync(`${file}-wal`).size);
      }
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
    // The bound, plus what commits while a checkpoint waits to run and runs.
    expect(largest).toBeLessThan(4 * walBytesLimit);
  });

  it('makes a new file with 4 KiB pages, and stores in a file made with 1 KiB pages as it is', async () => {
    const dir = tempDir();
    const fresh = path.join(dir, 'fresh.db');
    const older = path.join(dir, 'older.db');
    const made = new Database(older);
    made.pragma('page_size = 1024');
    made.exec('CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID');
    made.close();
    try {
      for (const file of [fresh, older]) {
        const store = new SqliteHistoryStore(file, options);
        for (let i = 0; i < 300; i++) await store.append('r', { at: i, from: 'a', msg: `m${i}` });
        await store.close();
        const reopened = new SqliteHistoryStore(file, options);
        expect((await reopened.read('r', { limit: 2 })).map((m) => m.msg)).toEqual([
          'm298',
          'm299',
        ]);
        await reopened.close();
      }
      const pageSize = (file: string) => {
        const db = new Database(file, { readonly: true });
        try {
          return db.pragma('page_size', { simple: true });
        } finally {
          db.close();
        }
      };
      expect([pageSize(fresh), pageSize(older)]).toEqual([4096, 1024]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('closes in a process that nothing else keeps alive', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'history.db');
    try {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', path.join(import.meta.dirname, 'sqlite-close-child.ts'), file],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
      });
      const code = await new Promise((resolve) => child.once('exit', resolve));
      expect({ code, stdout }).toEqual({ code: 0, stdout: 'closed\n' });
      expect(existsSync(`${file}-wal`)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fails the appends of a commit that fails, and stores again from what is stored', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'history.db');
    const store = new SqliteHistoryStore(file, options);
    // Another connection holding the write lock past the busy timeout fails the commit.
    const blocker = new Database(file);
    try {
      expect((await store.append('r', { at: 0, from: 'a', msg: 'first' })).message.id).toBe(1);
      blocker.exec('BEGIN IMMEDIATE');
      const results = await Promise.allSettled([
        store.append('r', { at: 0, from: 'a', msg: 'x', cid: 'c1' }),
        store.append('s', { at: 0, from: 'a', msg: 'y' }),
      ]);
      expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
      blocker.exec('ROLLBACK');
      // Ids and the cid of the failed commit were never acknowledged: they are free again.
      const again = await store.append('r', { at: 0, from: 'a', msg: 'x', cid: 'c1' });
      expect(again).toMatchObject({ duplicate: false, message: { id: 2 } });
      expect((await store.append('s', { at: 0, from: 'a', msg: 'y' })).message.id).toBe(1);
      expect((await store.read('r', { after: 0, limit: 10 })).map((m) => m.msg)).toEqual([
        'first',
        'x',
      ]);
      expect(await store.room('r')).toMatchObject({ top: 2 });
    } finally {
      blocker.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 20_000);

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

describe.skipIf(withoutRedis())('Redis', () => {
  const redis = useRedis();

  let storages = 0;
  /** Every storage is a prefix of its own on the one server: fresh, and kept across store restarts. */
  const newPrefix = () => `t${++storages}-${process.pid}:`;

  /**
   * A store on a prefix of its own, without its prune timer, and a plain client of the
   * same Redis to look inside; both closed after `test`.
   */
  const withStore = async (
    retention: Retention,
    test: (t: { store: RedisHistoryStore; client: Redis; prefix: string }) => Promise<void>,
  ) => {
    const prefix = newPrefix();
    const store = new RedisHistoryStore({
      retention,
      pruneIntervalMs: 0,
      redis: redis.url,
      prefix,
    });
    const client = new Redis(redis.url, { protocol: 2 });
    try {
      await test({ store, client, prefix });
    } finally {
      client.disconnect();
      await store.close();
    }
  };

  historyStoreContract({
    name: 'Redis',
    persistent: true,
    origins: true,
    propertyRuns: 40,
    storage() {
      const prefix = newPrefix();
      return {
        open: (options) => new RedisHistoryStore({ ...options, redis: redis.url, prefix }),
        dispose: () => {},
      };
    },
  });

  describe('over two instances', () => {
    const second = useRedis();
    historyStoreContract({
      name: 'Redis, 2 shards',
      persistent: true,
      origins: true,
      propertyRuns: 20,
      storage() {
        const prefix = newPrefix();
        return {
          open: (options) =>
            new ShardedHistoryStore(
              [redis, second].map(
                (server) => new RedisHistoryStore({ ...options, redis: server.url, prefix }),
              ),
            ),
          dispose: () => {},
        };
      },
    });
  });

  describe('RedisHistoryStore', () => {
    const retention = { maxMessages: 1_000, maxAgeMs: 0 };
    const draft = (msg: string, from = 'ann') => ({ at: 1_000, from, msg });

    /** Retries an operation while the store's connection comes back after a restart (bounded). */
    async function once<T>(operation: () => Promise<T>): Promise<T> {
      for (let attempt = 1; ; attempt++) {
        try {
          return await operation();
        } catch (error) {
          if (attempt >= 50) throw error;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    }

    it('starts rooms over with new epochs when Redis restarts without persistence', async () => {
      const store = new RedisHistoryStore({
        retention,
        pruneIntervalMs: 0,
        redis: redis.url,
        prefix: newPrefix(),
      });
      try {
        const before: string[] = [];
        for (const m of ['one', 'two', 'three'])
          before.push((await store.append('r', draft(m))).epoch);
        expect(new Set(before).size).toBe(1);
        const asked = await store.room('asked');
        expect(await store.room('r')).toMatchObject({ epoch: before[0], top: 3, oldest: 1 });

        await redis.restart();

        const after = await once(() => store.room('r'));
        expect(after).toMatchObject({ top: 0, oldest: 1 });
        expect(after.epoch).not.toBe(before[0]);
        expect(await store.read('r', { after: 0, limit: 10 })).toEqual([]);
        const next = await store.append('r', draft('four'));
        expect(next).toMatchObject({ epoch: after.epoch, duplicate: false, message: { id: 1 } });
        expect((await store.room('asked')).epoch).not.toBe(asked.epoch);
      } finally {
        await store.close();
      }
    });

    it('keeps its keys under the prefix, and cids and stream bounded by the cap', async () => {
      await withStore({ maxMessages: 3, maxAgeMs: 1_000 }, async ({ store, client, prefix }) => {
        const before = await client.dbsize();
        for (let i = 0; i < 10; i++) {
          await store.append('caf\u00e9 {x}', { at: i, from: 'ann', msg: `m${i}`, cid: `c${i}` });
        }
        const keys = await client.keys(`${prefix}*`);
        expect(await client.dbsize()).toBe(before + keys.length);
        const cids = keys.filter((k) => k.endsWith(':cidz'));
        const msgs = keys.filter((k) => k.endsWith(':msgs'));
        expect([cids.length, msgs.length]).toEqual([1, 1]);
        expect(await client.zcard(cids[0]!)).toBe(3);
        // Trimmed a whole stream node at a time: bounded, though not to exactly 3.
        for (let i = 10; i < 1_000; i++) {
          void store.append('caf\u00e9 {x}', { at: i, from: 'ann', msg: `m${i}` });
        }
        await store.append('caf\u00e9 {x}', { at: 1_000, from: 'ann', msg: 'last', cid: 'c' });
        expect(await client.xlen(msgs[0]!)).toBeLessThanOrEqual(3 + 200);
        expect(await client.zcard(cids[0]!)).toBe(1);
        expect(await store.read('caf\u00e9 {x}', { after: 0, limit: 10 })).toHaveLength(3);
        expect(await store.read('caf\u00e9 {x}', { limit: 10 })).toHaveLength(3);
        expect(await store.room('caf\u00e9 {x}')).toMatchObject({ top: 1001, oldest: 999 });
        await store.prune(1_999);
        expect(await client.zcard(cids[0]!)).toBe(1);
        expect(await store.room('caf\u00e9 {x}')).toMatchObject({ top: 1001, oldest: 1000 });
        await store.prune(10_000);
        expect(await client.exists(cids[0]!)).toBe(0);
        expect(await client.xlen(msgs[0]!)).toBe(0);
        expect(await store.room('caf\u00e9 {x}')).toMatchObject({ top: 1001, oldest: 1002 });
      });
    });

    it('stores and publishes the appends of one turn to a room in one step, in order', async () => {
      const prefix = newPrefix();
      const store = new RedisHistoryStore({
        retention: { maxMessages: 100, maxAgeMs: 0 },
        pruneIntervalMs: 0,
        redis: redis.url,
        prefix,
        publish: true,
      });
      const sub = new Redis(redis.url, { protocol: 2 });
      const payloads: string[] = [];
      sub.on('message', (_channel: string, message: string) => payloads.push(message));
      try {
        await sub.subscribe(roomChannel(prefix, 'r'));
        const sent = ['a', 'b', 'c', 'd', 'e'];
        const appended = await Promise.all(
          sent.map((msg, i) =>
            store.append('r', { at: i, from: 'ann', msg, ...(i === 3 ? { cid: 'k' } : {}) }),
          ),
        );
        expect(appended.map((a) => a.message.id)).toEqual([1, 2, 3, 4, 5]);
        // A resend of a stored cid is not published again.
        await store.append('r', { at: 9, from: 'ann', msg: 'd', cid: 'k' });
        await store.append('r', { at: 9, from: 'ann', msg: 'f' });
        await eventually(() => expect(payloads).toHaveLength(2));
        const [epoch] = [appended[0]!.epoch];
        expect(payloads.map((p) => JSON.parse(p) as unknown)).toEqual([
          ['C', epoch, 1, 5, ...sent.map((msg, i) => [i, 'ann', msg])],
          ['C', epoch, 6, 6, [9, 'ann', 'f']],
        ]);
      } finally {
        sub.disconnect();
        await store.close();
      }
    });

    it('publishes exactly the new messages of each call, whatever their text, in id order', async () => {
      const chat = fc.record({
        from: fc.constantFrom('ann', 'b\u00f6b', '\u{1F600}', '1:a'),
        // Any text, multi-byte and lone surrogates included: byte lengths differ from lengths.
        msg: fc.oneof(
          fc.string({ maxLength: 8, unit: 'binary' }),
          fc.string({ maxLength: 4, unit: 'grapheme' }),
          fc.constantFrom('', ',', ' ', '"]', '\uD800', 'c1 2'),
        ),
        cid: fc.option(fc.constantFrom('k', 'l', '\u00e9', ''), { nil: undefined }),
        at: fc.oneof(fc.integer({ min: -5, max: 5 }), fc.constant(1_764_558_000_123)),
      });
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.array(chat, { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 4 }),
          async (turns) => {
            const prefix = newPrefix();
            const store = new RedisHistoryStore({
              retention: { maxMessages: 1_000, maxAgeMs: 0 },
              pruneIntervalMs: 0,
              redis: redis.url,
              prefix,
              publish: true,
            });
            const sub = new Redis(redis.url, { protocol: 2 });
            const published: unknown[] = [];
            const heads: [unknown, number][] = [];
            sub.on('message', (_channel: string, message: string) => {
              const [tag, epoch, first, last, ...chats] = JSON.parse(message) as unknown[];
              heads.push([tag, (last as number) - (first as number) + 1 - chats.length]);
              for (const [i, c] of chats.entries())
                published.push([epoch, (first as number) + i, c]);
            });
            try {
              await sub.subscribe(roomChannel(prefix, 'r'));
              const fresh: unknown[] = [];
              for (const turn of turns) {
                const appended = await Promise.all(turn.map((d) => store.append('r', d)));
                for (const a of appended) {
                  if (a.duplicate) continue;
                  const m = a.message;
                  fresh.push([a.epoch, m.id, [m.at, m.from, m.msg]]);
                }
              }
              await eventually(() => expect(published).toEqual(fresh));
              expect(heads.every(([tag, off]) => tag === 'C' && off === 0)).toBe(true);
              // What was stored reads back as appended.
              const stored = await store.read('r', { after: 0, limit: 1_000 });
              expect(stored.map((m) => [m.id, [m.at, m.from, m.msg]])).toEqual(
                fresh.map((f) => (f as unknown[]).slice(1)),
              );
            } finally {
              sub.disconnect();
              await store.close();
            }
          },
        ),
        { numRuns: 40 },
      );
    });

    it('refuses a joined call whose count is not a whole number, before writing anything', async () => {
      const admin = new Redis(redis.url, { protocol: 2 });
      const keys = ['top', 'epoch', 'msgs', 'cidz', 'rooms', 'floor', 'base'].map(
        (k) => `${newPrefix()}${k}`,
      );
      try {
        for (const count of ['B', 'B0', 'B-1', 'B1.5', 'Bx']) {
          await expect(
            admin.eval(APPEND_LUA, 7, ...keys, 'e1', '10', 't', '', '', '0', count, '[1,"a","b"]'),
          ).rejects.toThrow(/bad message count/);
        }
        // Nor without the joined text after the count.
        await expect(
          admin.eval(APPEND_LUA, 7, ...keys, 'e1', '10', 't', '', '', '0', 'B1'),
        ).rejects.toThrow(/bad message count/);
        expect(await admin.exists(...keys)).toBe(0);
        // The same call with a good count stores the message.
        await admin.eval(APPEND_LUA, 7, ...keys, 'e1', '10', 't', '', '', '0', 'B1', '[1,"a","b"]');
        expect(await admin.get(keys[0]!)).toBe('1');
      } finally {
        admin.disconnect();
      }
    });

    it('refuses a call of more than 64 messages in either form, before writing anything', async () => {
      const admin = new Redis(redis.url, { protocol: 2 });
      const keys = ['top', 'epoch', 'msgs', 'cidz', 'rooms', 'floor', 'base'].map(
        (k) => `${newPrefix()}${k}`,
      );
      const call = (maxMessages: string, ...args: string[]) =>
        admin.eval(APPEND_LUA, 7, ...keys, 'e1', maxMessages, 't', '', '', '0', ...args);
      const chat = '[1,"a","b"]';
      const joined = (n: number) => [`B${n}`, Array(n).fill(chat).join(',')];
      // Each message with a cid, or some: three arguments for those, one for the others.
      const each = (n: number) =>
        Array.from({ length: n }, (_, i) =>
          i % 2 === 0 ? [`c1:a${i}`, `"${i}"`, chat] : [chat],
        ).flat();
      try {
        for (const args of [joined(65), each(65), joined(4_000), each(4_000)]) {
          await expect(call('10000', ...args)).rejects.toThrow(/more than 64 messages/);
        }
        expect(await admin.exists(...keys)).toBe(0);
        await call('10000', ...joined(64));
        await call('10000', ...each(64));
        expect(await admin.get(keys[0]!)).toBe('128');
        expect(await admin.zcard(keys[3]!)).toBe(32);
        expect(await admin.zscore(keys[3]!, '1:a62')).toBe('127');
      } finally {
        admin.disconnect();
      }
    });

    it('trims below the entry holding the floor, never through it', async () => {
      // One entry a stream node, so that `MINID ~` trims entry by entry: trimming through
      // the entry holding the floor would lose readable messages.
      const admin = new Redis(redis.url, { protocol: 2 });
      const [, nodeEntries] = (await admin.config('GET', 'stream-node-max-entries')) as string[];
      await admin.config('SET', 'stream-node-max-entries', '1');
      try {
        await withStore({ maxMessages: 10, maxAgeMs: 0 }, async ({ store, client, prefix }) => {
          let sent = 0;
          // Calls of 1 to 64 messages (one per room and turn), so the floor lands inside
          // entries of every size.
          for (const size of [64, 1, 7, 64, 3, 64, 64, 2, 33, 64, 64, 5]) {
            const turn: Promise<unknown>[] = [];
            for (let i = 0; i < size; i++) {
              turn.push(store.append('r', { at: sent, from: 'ann', msg: `m${++sent}` }));
            }
            await Promise.all(turn);
            const read = await store.read('r', { after: 0, limit: 20 });
            expect(read.map((m) => m.msg)).toEqual(
              Array.from(
                { length: Math.min(10, sent) },
                (_, i) => `m${sent - Math.min(10, sent) + i + 1}`,
              ),
            );
          }
          // Entries wholly below the floor are gone: at most the one holding it and those
          // after it, and as many as 63 messages below it, remain.
          const entries = await client.xrange(`${prefix}h:{r${roomTag('r')}}:msgs`, '-', '+');
          expect(entries.length).toBeLessThanOrEqual(4);
          expect(Number.parseInt(entries[0]![0], 10)).toBeGreaterThan(sent - 10 - 64);
        });
      } finally {
        await admin.config('SET', 'stream-node-max-entries', nodeEntries!);
        admin.disconnect();
      }
    });

    it('writes the same entries, payloads and floor from a call without cids (one joined argument) as from one with', async () => {
      // Two rooms get the same turns. Room 'j' sends each as it is: no cid, so the script
      // gets the messages joined in one argument after 'B' and their count. Room 'p' sends
      // the same messages after a repeat of the cid just stored in both rooms: the call
      // then goes one argument per message, the repeat is not stored, and what the script
      // writes for the rest must be byte for byte what it wrote for room 'j', as an older
      // node's script would (nodes before and after that change share a Redis). The cap is
      // small, so the floor and XTRIM run after the joined form too.
      const text = fc.oneof(
        fc.string({ maxLength: 6, unit: 'binary' }),
        fc.constantFrom(
          'caf\u00e9',
          '\u{1F600}',
          '\uD800',
          '\uDC00x',
          'a"b\\c',
          '\n\t\u0001',
          '\u007f',
          '"],[',
          '\u2028',
          '',
        ),
      );
      const chat = fc.record({
        from: fc.constantFrom('ann', 'b\u00f6b', '\u{1F600}'),
        msg: text,
        at: fc.oneof(
          fc.integer({ min: -5, max: 5 }),
          fc.constant(1_764_558_000_123),
          fc.constant(0.5),
        ),
      });
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 4 }),
          fc.array(fc.array(chat, { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 5 }),
          async (max, turns) => {
            const prefix = newPrefix();
            const store = new RedisHistoryStore({
              retention: { maxMessages: max, maxAgeMs: 0 },
              pruneIntervalMs: 0,
              redis: redis.url,
              prefix,
              publish: true,
            });
            const client = new Redis(redis.url, { protocol: 2 });
            const sub = new Redis(redis.url, { protocol: 2 });
            const payloads = new Map<string, unknown[][]>([
              ['j', []],
              ['p', []],
            ]);
            const rooms = ['j', 'p'] as const;
            const channels = new Map(rooms.map((r) => [roomChannel(prefix, r), r]));
            // The epoch differs per room: compared without it.
            sub.on('message', (channel: string, message: string) =>
              payloads
                .get(channels.get(channel)!)!
                .push((JSON.parse(message) as unknown[]).slice(2)),
            );
            const key = (room: string, k: string) => `${prefix}h:{r${roomTag(room)}}:${k}`;
            try {
              await sub.subscribe(...channels.keys());
              for (const [t, turn] of turns.entries()) {
                const seed = { at: 0, from: 'ann', msg: `seed${t}`, cid: `k${t}` };
                for (const room of rooms)
                  expect((await store.append(room, seed)).duplicate).toBe(false);
                const [joined, perMessage] = await Promise.all([
                  Promise.all(turn.map((d) => store.append('j', d))),
                  Promise.all([seed, ...turn].map((d) => store.append('p', d))),
                ]);
                expect(perMessage[0]!.duplicate).toBe(true);
                expect(perMessage.slice(1).map((a) => a.message)).toEqual(
                  joined.map((a) => ({ ...a.message, room: 'p' })),
                );
              }
              const [j, p] = await Promise.all(
                rooms.map(async (room) => ({
                  entries: await client.xrange(key(room, 'msgs'), '-', '+'),
                  top: await client.get(key(room, 'top')),
                  floor: await client.get(key(room, 'floor')),
                  cids: await client.zrange(key(room, 'cidz'), '0', '-1', 'WITHSCORES'),
                  read: (await store.read(room, { after: 0, limit: 100 })).map(
                    ({ room: _, ...m }) => m,
                  ),
                })),
              );
              expect(j).toEqual(p);
              await eventually(() => expect(payloads.get('j')!.length).toBe(2 * turns.length));
              await eventually(() => expect(payloads.get('p')).toEqual(payloads.get('j')));
            } finally {
              sub.disconnect();
              client.disconnect();
              await store.close();
            }
          },
        ),
        { numRuns: 40 },
      );
    });

    it('appends again after Redis forgot its scripts, and with a client that has a key prefix', async () => {
      const prefix = newPrefix();
      const client = new Redis(redis.url, { protocol: 2, keyPrefix: 'kp:' });
      const store = new RedisHistoryStore({ retention, pruneIntervalMs: 0, redis: client, prefix });
      const admin = new Redis(redis.url, { protocol: 2 });
      try {
        expect((await store.append('r', draft('one'))).message.id).toBe(1);
        // The next call names the script by its SHA, which Redis no longer knows.
        await admin.script('FLUSH');
        expect((await store.append('r', draft('two'))).message.id).toBe(2);
        expect((await store.read('r', { after: 0, limit: 10 })).map((m) => m.msg)).toEqual([
          'one',
          'two',
        ]);
        expect(await admin.exists(`kp:${prefix}h:{r${roomTag('r')}}:msgs`)).toBe(1);
      } finally {
        await store.close();
        client.disconnect();
        admin.disconnect();
      }
    });

    it('reads messages stored with separate from and msg fields, as earlier versions did', async () => {
      await withStore(retention, async ({ store, client, prefix }) => {
        const base = `${prefix}h:{r${roomTag('old')}}:`;
        await client.xadd(`${base}msgs`, '1-0', 'at', '5', 'from', 'ann', 'msg', 'hi', 'cid', 'k');
        await client.set(`${base}top`, '1');
        expect(await store.read('old', { after: 0, limit: 10 })).toEqual([
          { room: 'old', id: 1, at: 5, from: 'ann', msg: 'hi', cid: 'k' },
        ]);
        const next = await store.append('old', { at: 6, from: 'bob', msg: 'yo' });
        expect(next.message.id).toBe(2);
        expect(await store.read('old', { limit: 10 })).toEqual([
          { room: 'old', id: 1, at: 5, from: 'ann', msg: 'hi', cid: 'k' },
          { room: 'old', id: 2, at: 6, from: 'bob', msg: 'yo' },
        ]);
      });
    });

    it('stores each append call as one stream entry, and reads, caps and prunes inside it', async () => {
      const prefix = newPrefix();
      const store = new RedisHistoryStore({
        retention: { maxMessages: 5, maxAgeMs: 100 },
        pruneIntervalMs: 0,
        redis: redis.url,
        prefix,
      });
      const client = new Redis(redis.url, { protocol: 2 });
      const msgs = `${prefix}h:{r${roomTag('r')}}:msgs`;
      const turn = (from: number, n: number) =>
        Promise.all(
          Array.from({ length: n }, (_, i) =>
            store.append('r', {
              at: from + i,
              from: 'ann',
              msg: `m${from + i}`,
              cid: `c${from + i}`,
            }),
          ),
        );
      const read = async (query: HistoryQuery) => (await store.read('r', query)).map((m) => m.id);
      try {
        await turn(1, 4);
        await turn(5, 3);
        expect(await client.xlen(msgs)).toBe(2);
        // Ids 1 and 2 are past the cap of 5, though their entry holds 3 and 4 too.
        expect(await store.room('r')).toMatchObject({ top: 7, oldest: 3 });
        expect(await read({ after: 0, limit: 10 })).toEqual([3, 4, 5, 6, 7]);
        expect(await read({ after: 3, limit: 2 })).toEqual([4, 5]);
        expect(await read({ before: 6, limit: 2 })).toEqual([4, 5]);
        expect(await read({ before: 5, limit: 10 })).toEqual([3, 4]);
        // A cid below the cap is free again; one inside an entry is found there.
        expect(
          (await store.append('r', { at: 8, from: 'ann', msg: 'x', cid: 'c2' })).duplicate,
        ).toBe(false);
        expect(await store.append('r', { at: 9, from: 'ann', msg: 'y', cid: 'c6' })).toMatchObject({
          duplicate: true,
          message: { id: 6, at: 6, msg: 'm6', cid: 'c6' },
        });
        // Age retention cuts inside the second entry: 5 and 6 are older than 107 - 100.
        await store.prune(107);
        expect(await store.room('r')).toMatchObject({ top: 8, oldest: 7 });
        expect(await read({ after: 0, limit: 10 })).toEqual([7, 8]);
        expect(
          (await store.append('r', { at: 10, from: 'ann', msg: 'z', cid: 'c5' })).duplicate,
        ).toBe(false);
      } finally {
        client.disconnect();
        await store.close();
      }
    });

    it('stores nothing of a failed append call, and never gives its ids out again', async () => {
      await withStore(retention, async ({ store, client, prefix }) => {
        const base = `${prefix}h:{r${roomTag('r')}}:`;
        const turn = (...drafts: MessageDraft[]) =>
          Promise.all(drafts.map((d) => store.append('r', d)));
        // A cid set of the wrong type fails the call at its second message, before it wrote.
        await client.set(`${base}cidz`, 'not a sorted set');
        await expect(turn(draft('a'), { ...draft('b'), cid: 'k' })).rejects.toThrow(/WRONGTYPE/);
        await client.del(`${base}cidz`);
        expect((await store.append('r', draft('c'))).message.id).toBe(1);
        // A stream of the wrong type fails it after the top was raised, as running out of
        // memory half way through would: those ids are skipped.
        await client.del(`${base}msgs`);
        await client.set(`${base}msgs`, 'not a stream');
        await expect(turn(draft('d'), draft('e'))).rejects.toThrow(/WRONGTYPE/);
        await client.del(`${base}msgs`);
        expect((await store.append('r', draft('f'))).message.id).toBe(4);
        expect((await store.read('r', { limit: 10 })).map((m) => [m.id, m.msg])).toEqual([
          [4, 'f'],
        ]);
        expect(await store.room('r')).toMatchObject({ top: 4, oldest: 4 });
      });
    });

    it('pages, caps, prunes and deduplicates a stream of earlier entries and new ones alike', async () => {
      const chat = fc.record({
        from: fc.constantFrom('ann', 'bob'),
        msg: fc.constantFrom('m', '', 'caf\u00e9', '"],[', '\\"],[0,"\\\\', '\u0001\\'),
        cid: fc.option(fc.constantFrom('x', 'y', 'z', '"\\'), { nil: undefined }),
        dt: fc.integer({ min: -30, max: 20 }),
      });
      const step = fc.oneof(
        { arbitrary: fc.array(chat, { minLength: 1, maxLength: 5 }), weight: 4 },
        { arbitrary: fc.integer({ min: -20, max: 60 }), weight: 1 },
        // Ids a failed call skipped: it raised the top, then stored nothing.
        { arbitrary: fc.record({ skipped: fc.integer({ min: 1, max: 3 }) }), weight: 1 },
      );
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 5 }),
          fc.array(fc.tuple(chat, fc.boolean()), { maxLength: 6 }),
          fc.nat(6),
          fc.array(step, { minLength: 1, maxLength: 8 }),
          fc.integer({ min: 1, max: 4 }),
          async (max, seeds, cut, steps, pageSize) => {
            const prefix = newPrefix();
            const store = new RedisHistoryStore({
              retention: { maxMessages: max, maxAgeMs: 50 },
              pruneIntervalMs: 0,
              redis: redis.url,
              prefix,
            });
            const client = new Redis(redis.url, { protocol: 2 });
            const base = `${prefix}h:{r${roomTag('r')}}:`;
            let clock = 100;
            let top = 0;
            const kept: StoredMessage[] = [];
            /** The highest id of a message dropped by the cap or by age. */
            let gone = 0;
            const drop = (keep: (m: StoredMessage) => boolean) => {
              while (kept.length > 0 && !keep(kept[0]!)) gone = kept.shift()!.id;
            };
            const splitAt = new Set<number>();
            const sameCid = (a: { from: string; cid?: string | undefined }, b: typeof a) =>
              a.cid !== undefined && a.cid === b.cid && a.from === b.from;
            try {
              // One message per entry, as earlier versions stored them; they had cut the
              // oldest by age exactly and hidden those past the cap behind the floor.
              for (const [s, split] of seeds) {
                clock = Math.max(0, clock + s.dt);
                top++;
                const m: StoredMessage = {
                  room: 'r',
                  id: top,
                  at: clock,
                  from: s.from,
                  msg: s.msg,
                  ...(s.cid !== undefined && !kept.some((k) => sameCid(k, s))
                    ? { cid: s.cid }
                    : {}),
                };
                kept.push(m);
                if (split) splitAt.add(top);
              }
              const floor = Math.max(1, top - max + 1, Math.min(cut + 1, top + 1));
              drop((m) => m.id >= floor);
              for (const m of kept) {
                const fields = splitAt.has(m.id)
                  ? ['at', String(m.at), 'from', m.from, 'msg', m.msg]
                  : ['at', String(m.at), 'j', JSON.stringify([m.at, m.from, m.msg])];
                if (m.cid !== undefined) fields.push('cid', m.cid);
                await client.xadd(`${base}msgs`, `${m.id}-0`, ...fields);
                if (m.cid !== undefined) {
                  await client.zadd(
                    `${base}cidz`,
                    m.id,
                    `${Buffer.byteLength(m.from)}:${m.from}${m.cid}`,
                  );
                }
              }
              if (top > 0) {
                await client.set(`${base}top`, String(top));
                await client.set(`${base}epoch`, 'earlier');
                await client.set(`${base}floor`, String(floor));
                await client.sadd(`${prefix}h:rooms`, roomTag('r'));
              }
              for (const s of steps) {
                if (typeof s === 'number') {
                  clock = Math.max(0, clock + s);
                  await store.prune(clock);
                  drop((m) => m.at >= clock - 50);
                  continue;
                }
                if (!Array.isArray(s)) {
                  // A call that fails once it raised the top, with the stream set aside.
                  const msgs = `${base}msgs`;
                  const had = (await client.exists(msgs)) === 1;
                  if (had) await client.rename(msgs, `${base}aside`);
                  await client.set(msgs, 'not a stream');
                  const failed = Array.from({ length: s.skipped }, () =>
                    store.append('r', { at: clock, from: 'ann', msg: 'lost' }),
                  );
                  await expect(Promise.all(failed)).rejects.toThrow(/WRONGTYPE/);
                  await client.del(msgs);
                  if (had) await client.rename(`${base}aside`, msgs);
                  top += s.skipped;
                  continue;
                }
                const drafts = s.map((c) => {
                  clock = Math.max(0, clock + c.dt);
                  return { at: clock, from: c.from, msg: c.msg, ...(c.cid ? { cid: c.cid } : {}) };
                });
                const got = await Promise.all(drafts.map((d) => store.append('r', d)));
                drafts.forEach((d, i) => {
                  // Within the cap of ids: skipped ones count, as for the floor.
                  const first = kept.find((k) => sameCid(k, d) && k.id > top - max);
                  expect(got[i]!.duplicate).toBe(first !== undefined);
                  if (first !== undefined) {
                    expect(got[i]!.message).toEqual(first);
                    return;
                  }
                  const m: StoredMessage = { room: 'r', id: ++top, ...d };
                  expect(got[i]!.message).toEqual(m);
                  kept.push(m);
                  // The cap counts ids, skipped ones too.
                  drop((k) => k.id > top - max);
                });
              }
              // Ids between the last message dropped and the first kept were skipped: oldest
              // may be any of them.
              const room = await store.room('r');
              expect(room.top).toBe(top);
              expect(room.oldest).toBeGreaterThan(gone);
              expect(room.oldest).toBeLessThanOrEqual(kept[0]?.id ?? top + 1);
              // Paged forward from the start and back from the end: each message once, in order.
              const forward: StoredMessage[] = [];
              for (let after = 0, n = 0; n < 50; n++) {
                const page = await store.read('r', { after, limit: pageSize });
                // The oldest pageSize after `after`: never short while more are kept.
                expect(page).toEqual(kept.filter((m) => m.id > after).slice(0, pageSize));
                if (page.length === 0) break;
                forward.push(...page);
                after = page[page.length - 1]!.id;
              }
              expect(forward).toEqual(kept);
              const backward: StoredMessage[] = [];
              for (let before: number | undefined, n = 0; n < 50; n++) {
                const page = await store.read('r', {
                  limit: pageSize,
                  ...(before !== undefined ? { before } : {}),
                });
                expect(page).toEqual(
                  kept.filter((m) => before === undefined || m.id < before).slice(-pageSize),
                );
                if (page.length === 0) break;
                backward.unshift(...page);
                before = page[0]!.id;
              }
              expect(backward).toEqual(kept);
            } finally {
              client.disconnect();
              await store.close();
            }
          },
        ),
        { numRuns: 40 },
      );
    });

    it('keeps a room whose first append call failed part-way under age retention, with a lasting epoch', async () => {
      const prefix = newPrefix();
      const store = new RedisHistoryStore({
        retention: { maxMessages: 100, maxAgeMs: 100 },
        pruneIntervalMs: 0,
        redis: redis.url,
        prefix,
      });
      const client = new Redis(redis.url, { protocol: 2 });
      const base = `${prefix}h:{r${roomTag('r')}}:`;
      try {
        // Asking gives the room an epoch that expires unless the room is written to.
        const asked = await store.room('r');
        await client.set(`${base}msgs`, 'not a stream');
        const failed = ['a', 'b'].map((msg) => store.append('r', { at: 0, from: 'ann', msg }));
        await expect(Promise.all(failed)).rejects.toThrow(/WRONGTYPE/);
        await client.del(`${base}msgs`);
        const next = await store.append('r', { at: 10, from: 'ann', msg: 'c' });
        expect(next).toMatchObject({ epoch: asked.epoch, message: { id: 3 } });
        expect(await client.ttl(`${base}epoch`)).toBe(-1);
        await store.prune(200);
        expect(await store.read('r', { after: 0, limit: 10 })).toEqual([]);
        expect(await store.room('r')).toMatchObject({ epoch: asked.epoch, top: 3, oldest: 4 });
      } finally {
        client.disconnect();
        await store.close();
      }
    });

    it('gives long messages of one turn stream entries of their own', async () => {
      await withStore(retention, async ({ store, client, prefix }) => {
        const long = (c: string) => c.repeat(40_000);
        const sent = [long('a'), long('b'), long('c'), 'd', 'e'];
        const appended = await Promise.all(sent.map((m) => store.append('r', draft(m))));
        expect(appended.map((a) => a.message.id)).toEqual([1, 2, 3, 4, 5]);
        // A read of one message, or a repeated cid, fetches its whole entry: each long one
        // is alone in its entry, and the short ones share one apart from them.
        expect(await client.xlen(`${prefix}h:{r${roomTag('r')}}:msgs`)).toBe(4);
        expect((await store.read('r', { after: 0, limit: 10 })).map((m) => m.msg)).toEqual(sent);
      });
    });

    it('prunes every other room when one room cannot be pruned, and reports it after', async () => {
      await withStore({ maxMessages: 100, maxAgeMs: 10 }, async ({ store, client, prefix }) => {
        const names = Array.from({ length: 250 }, (_, i) => `room${i}`);
        await Promise.all(names.map((r) => store.append(r, { at: 0, from: 'ann', msg: 'old' })));
        // Broken in the first step of the scan, so that later steps come after its failure.
        const [, pairs] = await client.zscan(`${prefix}h:written`, '0', 'COUNT', 100);
        const first = pairs.filter((_, i) => i % 2 === 0);
        const broken = Buffer.from(first[0]!, 'base64url').toString('utf8');
        // A young message, so that its prune goes on to the cids, which it cannot read.
        await store.append(broken, { at: 2_000, from: 'ann', msg: 'young' });
        await client.set(`${prefix}h:{r${first[0]}}:cidz`, 'not a sorted set');
        await expect(store.prune(1_000)).rejects.toThrow(/WRONGTYPE/);
        for (const r of names) {
          const left = (await store.read(r, { limit: 10 })).length;
          expect([r, left]).toEqual([r, r === broken ? 1 : 0]);
        }
      });
    });

    it('prunes by age while Redis is out of memory, and refuses appends then without skipping ids', async () => {
      const prefix = newPrefix();
      const store = new RedisHistoryStore({
        retention: { maxMessages: 100, maxAgeMs: 100 },
        pruneIntervalMs: 0,
        redis: redis.url,
        prefix,
      });
      const admin = new Redis(redis.url, { protocol: 2 });
      const turn = (from: number, n: number) =>
        Promise.all(
          Array.from({ length: n }, (_, i) =>
            store.append('r', { at: from + i, from: 'ann', msg: `m${from + i}` }),
          ),
        );
      const ids = async () => (await store.read('r', { after: 0, limit: 100 })).map((m) => m.id);
      try {
        await turn(1, 4);
        await turn(5, 4);
        const fresh = await store.room('fresh');
        // Redis refuses a script's first write that may grow memory, but none after it.
        await admin.config('SET', 'maxmemory-policy', 'noeviction');
        await admin.config('SET', 'maxmemory', '1');
        // Inside the second entry, then past every entry: both raise or keep the floor.
        await store.prune(106);
        expect(await ids()).toEqual([6, 7, 8]);
        await expect(store.append('r', { at: 200, from: 'ann', msg: 'no' })).rejects.toThrow(/OOM/);
        // A room's first append: its epoch is there, but nothing else.
        await expect(store.append('fresh', { at: 200, from: 'ann', msg: 'no' })).rejects.toThrow(
          /OOM/,
        );
        await store.prune(200);
        expect(await ids()).toEqual([]);
        expect(await store.room('r')).toMatchObject({ top: 8, oldest: 9 });
        await admin.config('SET', 'maxmemory', '0');
        expect((await store.append('r', { at: 201, from: 'ann', msg: 'yes' })).message.id).toBe(9);
        expect(await ids()).toEqual([9]);
        const first = await store.append('fresh', { at: 201, from: 'ann', msg: 'yes' });
        expect(first).toMatchObject({ epoch: fresh.epoch, message: { id: 1 } });
      } finally {
        await admin.config('SET', 'maxmemory', '0');
        admin.disconnect();
        await store.close();
      }
    });

    it('numbers concurrent appends from two stores on one Redis 1..N, once each', async () => {
      const prefix = newPrefix();
      const nodes = [0, 1].map(
        () => new RedisHistoryStore({ retention, pruneIntervalMs: 0, redis: redis.url, prefix }),
      );
      try {
        const perNode = 150;
        // Both nodes append in the same turns, in batches, so their pipelines interleave in Redis.
        const appended = await Promise.all(
          nodes.map(async (node, n) => {
            const got = [];
            for (let i = 0; i < perNode; i += 10) {
              const batch = Array.from({ length: 10 }, (_, j) =>
                node.append('room', draft(`${n}:${i + j}`, `node${n}`)),
              );
              got.push(...(await Promise.all(batch)));
            }
            return got;
          }),
        );
        const all = appended.flat();
        expect(all.map((a) => a.message.id).sort((a, b) => a - b)).toEqual(
          Array.from({ length: 2 * perNode }, (_, i) => i + 1),
        );
        expect(new Set(all.map((a) => a.epoch)).size).toBe(1);
        // Each node's own appends got increasing ids, in the order it made them.
        for (const mine of appended) {
          const ids = mine.map((a) => a.message.id);
          expect(ids).toEqual([...ids].sort((a, b) => a - b));
        }
        const byId = new Map(all.map((a) => [a.message.id, a.message]));
        for (const node of nodes) {
          const read = await node.read('room', { after: 0, limit: 1_000 });
          expect(read).toEqual(Array.from({ length: 2 * perNode }, (_, i) => byId.get(i + 1)));
          expect(await node.room('room')).toMatchObject({ top: 2 * perNode, oldest: 1 });
        }
      } finally {
        await Promise.all(nodes.map((node) => node.close()));
      }
    });
  });
});

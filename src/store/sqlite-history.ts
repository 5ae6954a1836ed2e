import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type {
  Appended,
  HistoryQuery,
  HistoryStore,
  MessageDraft,
  Retention,
  RoomHistory,
  StoredMessage,
} from '../core/history.js';
import {
  ageCutoff,
  checkKey,
  checkRetention,
  DEFAULT_PRUNE_INTERVAL_MS,
  type HistoryStoreOptions,
  newSeed,
  readLimit,
  roomEpoch,
  wellFormed,
} from './common.js';

export interface SqliteHistoryOptions extends HistoryStoreOptions {
  /**
   * `normal` (the default) keeps every committed message through a crash or kill of the
   * process; `full` also through a power loss or kernel crash, at an fsync per commit.
   */
  readonly synchronous?: 'normal' | 'full';
  /**
   * Called once the messages of a commit have been handed to their callers
   * (after their promise reactions): the composition root writes them out
   * then, rather than a loop turn later.
   */
  readonly afterCommit?: () => void;
}

export interface SqliteHistoryStats {
  /** Transactions committed by appends (one per event-loop turn that appended). */
  readonly commits: number;
  /** Messages given a new id (duplicates are not). */
  readonly appended: number;
}

interface MessageRow {
  id: number;
  at: number;
  from: string;
  msg: string;
  cid: string | null;
}

interface RoomState {
  readonly epoch: string;
  /** The highest id assigned, including ones still waiting for the commit. */
  top: number;
  /** The highest id committed: what readers are told, since only committed rows can be read. */
  committedTop: number;
  /** The room has its row in `rooms` (its epoch; its top is also the highest stored id). */
  saved: boolean;
  /** Rows up to this id are known to be deleted. */
  deletedTo: number;
  /**
   * A cid of a row past the window but not yet deleted is being used again: the next commit
   * must delete up to the floor first, or the new row would break the unique cid index.
   */
  cidReused: boolean;
}

interface Pending {
  readonly room: string;
  readonly state: RoomState;
  readonly message: StoredMessage;
  readonly duplicate: boolean;
  readonly resolve: (appended: Appended) => void;
  readonly reject: (error: unknown) => void;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rooms (
  key TEXT PRIMARY KEY,
  epoch TEXT NOT NULL,
  top INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
  room TEXT NOT NULL,
  id INTEGER NOT NULL,
  at INTEGER NOT NULL,
  "from" TEXT NOT NULL,
  msg TEXT NOT NULL,
  cid TEXT,
  PRIMARY KEY (room, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_cid ON messages (room, "from", cid) WHERE cid IS NOT NULL;
`;

const COLUMNS = 'id, at, "from", msg, cid';
/**
 * How often the checkpointer looks for new commits. Each checkpoint with work syncs the
 * WAL and the database file, so not much more often than this.
 */
const CHECKPOINT_INTERVAL_MS = 100;
/**
 * WAL frames (pages) past which the checkpointer stops waiting for a pause in the writes and
 * makes the writer start the WAL over (RESTART, briefly blocking it): under a steady stream of
 * commits a PASSIVE checkpoint never ends with the WAL fully copied, and the file would grow
 * without bound. 16,384 frames: 16 MiB of the 1 KiB pages a new database has (64 MiB of
 * an older database's 4 KiB ones).
 */
const WAL_FRAMES_LIMIT = 16_384;

/**
 * The checkpointer: a worker thread with its own connection to the database that copies the
 * WAL back into it, so that the page copies and fsyncs of a checkpoint do not stop the event
 * loop. Plain JavaScript evaluated by the worker, so it runs the same from the TypeScript
 * sources (tests) and from dist/. It checkpoints when the commit counter in `commits` has moved;
 * a message from the parent closes its connection and ends it.
 */
const CHECKPOINTER = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const db = new Database(workerData.path, { fileMustExist: true, timeout: workerData.restartWaitMs });
const commits = new Int32Array(workerData.commits);
// The counter starts at 0 with the store, which may have committed before this thread is up.
let seen = 0;
function checkpoint() {
  const now = Atomics.load(commits, 0);
  if (now === seen) return;
  seen = now;
  const [r] = db.pragma('wal_checkpoint(PASSIVE)');
  if (r.log > workerData.framesLimit && r.checkpointed < r.log) db.pragma('wal_checkpoint(RESTART)');
}
const timer = setInterval(checkpoint, workerData.intervalMs);
parentPort.once('message', () => {
  clearInterval(timer);
  db.close();
  parentPort.close();
});
`;
const betterSqlite3 = createRequire(import.meta.url).resolve('better-sqlite3');
/** Rows per multi-row INSERT (6 parameters each, far below SQLite's limit of 32766). */
const INSERT_ROWS = 64;

/**
 * Room history in one SQLite file.
 *
 * Durability: WAL with synchronous=NORMAL. A commit is in the WAL file (in the
 * kernel's page cache) before `append` resolves, so a crash or SIGKILL of the
 * process loses nothing a client was sent; only a power loss or kernel crash
 * can lose the last transactions before a checkpoint (the database stays
 * consistent either way). `synchronous: 'full'` closes that gap too.
 *
 * Throughput: `append` assigns the id at once from the room's cached top and
 * queues the row; all appends of one event-loop turn are written in a single
 * transaction in the check phase (setImmediate), and their promises resolve
 * after that one commit, in append order.
 *
 * Checkpoints (copying the WAL back into the database file, with an fsync of
 * each) run in a worker thread with its own connection, never on the event
 * loop; closing the store stops it and the last connection to close leaves
 * the WAL checkpointed and removed.
 *
 * Rows past a room's count limit are deleted in runs (once the room has
 * passed the limit by a margin), not on every commit; reads never return them.
 * A room's top is the highest id it stores, so its row in `rooms` is written
 * once (and again only when age retention empties the room).
 *
 * Ids come from a cache of each room's top, so a second process writing the
 * same file would hand out the same ids: a lock file beside it
 * (`<file>-lock`, held in exclusive locking mode) makes a second store fail to
 * open instead. The database file itself is not locked exclusively, which
 * the checkpointer's connection needs.
 */
export class SqliteHistoryStore implements HistoryStore {
  private readonly db: Database.Database;
  /** Holds the lock file; undefined for an in-memory database. */
  private readonly lock: Database.Database | undefined;
  private checkpointer: Worker | undefined;
  /** Commits so far, read by the checkpointer to know when there is something to copy. */
  private readonly commitCount = new Int32Array(new SharedArrayBuffer(4));
  /** Rows a room may keep past its count limit before they are deleted. */
  private readonly deleteMargin: number;
  private readonly retention: Retention;
  private readonly seed: string;
  private readonly rooms = new Map<string, RoomState>();
  private pending: Pending[] = [];
  /** Cids appended this turn, not yet committed, so a repeat within the turn is caught. */
  private pendingCids = new Map<string, StoredMessage>();
  private flushScheduled = false;
  private readonly timer: NodeJS.Timeout | undefined;
  private closed = false;
  private commits = 0;
  private appended = 0;
  private readonly afterCommit: (() => void) | undefined;

  private readonly insertMessage: Database.Statement<
    [string, number, number, string, string, string | null]
  >;
  /** INSERT of INSERT_ROWS rows at once: one statement step for many messages. */
  private readonly insertMessages: Database.Statement<unknown[]>;
  private readonly saveRoom: Database.Statement<[string, string, number]>;
  private readonly loadRoom: Database.Statement<[string, string], { epoch: string; top: number }>;
  private readonly saveTop: Database.Statement<[string, string]>;
  private readonly roomKeys: Database.Statement<[], { key: string }>;
  private readonly findCid: Database.Statement<[string, string, string], MessageRow>;
  private readonly oldestId: Database.Statement<[string], { oldest: number | null }>;
  private readonly newest: Database.Statement<[string, number, number, number], MessageRow>;
  private readonly after: Database.Statement<[string, number, number, number], MessageRow>;
  private readonly deleteUpTo: Database.Statement<[string, number]>;
  private readonly firstKept: Database.Statement<[string, number], { id: number }>;
  private readonly deleteRoomMessages: Database.Statement<[string]>;
  private readonly commitBatch: (batch: readonly Pending[]) => void;

  constructor(path: string, options: SqliteHistoryOptions) {
    checkRetention(options.retention);
    this.retention = options.retention;
    this.afterCommit = options.afterCommit;
    // Large runs delete whole pages at a time; the margin is also what a room may hold
    // beyond its limit until then.
    this.deleteMargin = Math.max(1, Math.floor(this.retention.maxMessages / 2));
    const inFile = path !== '' && path !== ':memory:';
    let lock: Database.Database | undefined;
    if (inFile) {
      lock = new Database(`${path}-lock`, { timeout: 0 });
      try {
        lock.pragma('locking_mode = EXCLUSIVE');
        // Nothing in it needs a journal file left beside it.
        lock.pragma('journal_mode = MEMORY');
        // In exclusive locking mode the lock of the first write is held until close.
        lock.pragma('user_version = 1');
      } catch (error) {
        lock.close();
        throw error;
      }
    }
    this.lock = lock;
    let db: Database.Database;
    try {
      db = new Database(path);
    } catch (error) {
      lock?.close();
      throw error;
    }
    this.db = db;
    try {
      // Set before the first table exists (a database keeps its page size): every
      // commit writes each page it touched to the WAL whole, and a turn's chats touch
      // one page per room, so small pages mean fewer bytes written per chat.
      db.pragma('page_size = 1024');
      db.pragma('journal_mode = WAL');
      db.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
      db.exec(SCHEMA);
      // A database without a seed is new: its rooms get epochs nobody has seen.
      db.prepare('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)').run(
        'seed',
        newSeed(options.newId),
      );
      const row = db.prepare('SELECT value FROM meta WHERE key = ?').get('seed') as
        | { value: string }
        | undefined;
      this.seed = row!.value;
      if (inFile) {
        this.checkpointer = this.startCheckpointer(path);
        db.pragma('wal_autocheckpoint = 0');
      }
    } catch (error) {
      db.close();
      lock?.close();
      throw error;
    }

    this.insertMessage = db.prepare(
      'INSERT INTO messages (room, id, at, "from", msg, cid) VALUES (?, ?, ?, ?, ?, ?)',
    );
    this.insertMessages = db.prepare<unknown[]>(
      `INSERT INTO messages (room, id, at, "from", msg, cid) VALUES ${new Array(INSERT_ROWS).fill('(?, ?, ?, ?, ?, ?)').join(', ')}`,
    );
    this.saveRoom = db.prepare(
      'INSERT INTO rooms (key, epoch, top) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET top = excluded.top',
    );
    this.loadRoom = db.prepare(
      'SELECT epoch, max(top, coalesce((SELECT max(id) FROM messages WHERE room = ?), 0)) AS top FROM rooms WHERE key = ?',
    );
    this.saveTop = db.prepare(
      'UPDATE rooms SET top = max(top, coalesce((SELECT max(id) FROM messages WHERE room = ?), 0)) WHERE key = ?',
    );
    this.roomKeys = db.prepare('SELECT key FROM rooms');
    this.findCid = db.prepare(
      `SELECT ${COLUMNS} FROM messages WHERE room = ? AND "from" = ? AND cid = ?`,
    );
    this.oldestId = db.prepare('SELECT min(id) AS oldest FROM messages WHERE room = ?');
    this.newest = db.prepare(
      `SELECT ${COLUMNS} FROM messages WHERE room = ? AND id > ? AND id < ? ORDER BY id DESC LIMIT ?`,
    );
    this.after = db.prepare(
      `SELECT ${COLUMNS} FROM messages WHERE room = ? AND id > ? AND id < ? ORDER BY id LIMIT ?`,
    );
    this.deleteUpTo = db.prepare('DELETE FROM messages WHERE room = ? AND id <= ?');
    this.firstKept = db.prepare(
      'SELECT id FROM messages WHERE room = ? AND at >= ? ORDER BY id LIMIT 1',
    );
    this.deleteRoomMessages = db.prepare('DELETE FROM messages WHERE room = ?');

    this.commitBatch = db.transaction((batch: readonly Pending[]) => {
      // Count retention first, against each room's final top: it is one index range delete
      // per room, it frees the cids of messages going now before new rows reuse them, and rows
      // of this batch already past the limit are not written at all. The states are changed
      // here, before the commit: if it fails, flush() drops them and reloads what is stored.
      const floors = new Map<RoomState, number>();
      for (const p of batch) {
        const state = p.state;
        if (p.duplicate || floors.has(state)) continue;
        const floor = state.top - this.retention.maxMessages;
        floors.set(state, floor);
        if (!state.saved) {
          this.saveRoom.run(p.room, state.epoch, state.top);
          state.saved = true;
        }
        if (
          floor - state.deletedTo >= this.deleteMargin ||
          (state.cidReused && floor > state.deletedTo)
        ) {
          this.deleteUpTo.run(p.room, floor);
          state.deletedTo = floor;
        }
        state.cidReused = false;
      }
      // Rows go in INSERT_ROWS at a time: a busy turn's batch costs a few statement
      // steps instead of one per message (measured: the insert was a quarter of the
      // server's CPU in W-pipe with one statement per row).
      const rows: (string | number | null)[] = [];
      for (const p of batch) {
        const m = p.message;
        if (p.duplicate || m.id <= floors.get(p.state)!) continue;
        rows.push(p.room, m.id, m.at, m.from, m.msg, m.cid ?? null);
        if (rows.length === INSERT_ROWS * 6) {
          this.insertMessages.run(...rows);
          rows.length = 0;
        }
      }
      for (let i = 0; i < rows.length; i += 6) {
        this.insertMessage.run(
          rows[i] as string,
          rows[i + 1] as number,
          rows[i + 2] as number,
          rows[i + 3] as string,
          rows[i + 4] as string,
          rows[i + 5] as string | null,
        );
      }
    });

    const interval = options.pruneIntervalMs ?? DEFAULT_PRUNE_INTERVAL_MS;
    if (interval > 0 && this.retention.maxAgeMs > 0) {
      const now = options.now ?? Date.now;
      this.timer = setInterval(() => this.pruneNow(now()), interval);
      this.timer.unref();
    }
  }

  /** Counters for tests and metrics. */
  get stats(): SqliteHistoryStats {
    return { commits: this.commits, appended: this.appended };
  }

  append(room: string, draft: MessageDraft): Promise<Appended> {
    if (this.closed) return Promise.reject(new Error('history store is closed'));
    return new Promise<Appended>((resolve, reject) => {
      checkKey('room', room);
      checkKey('from', draft.from);
      const cid = draft.cid === undefined ? undefined : wellFormed(draft.cid);
      const state = this.state(room);
      let duplicateOf: StoredMessage | undefined;
      let key: string | undefined;
      if (cid !== undefined) {
        key = `${room.length}:${room}${draft.from.length}:${draft.from}${cid}`;
        duplicateOf = this.pendingCids.get(key);
        if (duplicateOf === undefined) {
          const row = this.findCid.get(room, draft.from, cid);
          if (row !== undefined) duplicateOf = toMessage(room, row);
        }
        // Appends of this turn may already have pushed it out of the room's window, as they
        // would have one turn later: then the cid is free again.
        if (duplicateOf !== undefined && duplicateOf.id <= state.top - this.retention.maxMessages) {
          duplicateOf = undefined;
          state.cidReused = true;
        }
      }
      let message: StoredMessage;
      if (duplicateOf !== undefined) {
        message = duplicateOf;
      } else {
        state.top++;
        message = {
          room,
          id: state.top,
          at: draft.at,
          from: draft.from,
          msg: wellFormed(draft.msg),
          ...(cid !== undefined ? { cid } : {}),
        };
        if (key !== undefined) this.pendingCids.set(key, message);
      }
      // A duplicate waits for the batch too, so promises resolve in append order and a
      // repeat of a message still in this batch is not acknowledged before it is durable.
      this.pending.push({
        room,
        state,
        message,
        duplicate: duplicateOf !== undefined,
        resolve,
        reject,
      });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  room(room: string): Promise<RoomHistory> {
    try {
      checkKey('room', room);
      const state = this.rooms.get(room) ?? this.stored(room);
      if (state === undefined) {
        return Promise.resolve({ epoch: roomEpoch(this.seed, room), top: 0, oldest: 1 });
      }
      const top = state.committedTop;
      const oldest = Math.max(this.oldestId.get(room)?.oldest ?? top + 1, this.floor(state) + 1);
      return Promise.resolve({ epoch: state.epoch, top, oldest });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  read(room: string, query: HistoryQuery): Promise<StoredMessage[]> {
    try {
      checkKey('room', room);
      const limit = readLimit(query, this.retention);
      if (limit === 0) return Promise.resolve([]);
      // Ids below `before` and above `after`; with `after`, the oldest of them (paging
      // forward), otherwise the newest (paging back). Never rows past the count limit
      // that are still waiting for their deletion.
      const state = this.rooms.get(room) ?? this.stored(room);
      const floor = state === undefined ? 0 : this.floor(state);
      const before = query.before ?? Number.POSITIVE_INFINITY;
      const rows =
        query.after !== undefined
          ? this.after.all(room, Math.max(query.after, floor), before, limit)
          : this.newest.all(room, floor, before, limit).reverse();
      return Promise.resolve(rows.map((row) => toMessage(room, row)));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  prune(now: number): Promise<void> {
    try {
      this.pruneNow(now);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    this.flush();
    const checkpointer = this.checkpointer;
    this.checkpointer = undefined;
    if (checkpointer !== undefined) {
      // Its connection closes first, so the store's own is the last one: closing that
      // checkpoints the whole WAL and removes it.
      const exited = new Promise((resolve) => checkpointer.once('exit', resolve));
      // Unreferenced, it would let the process end before this resolves.
      checkpointer.ref();
      checkpointer.postMessage('close');
      await exited;
    }
    this.db.close();
    this.lock?.close();
  }

  private startCheckpointer(path: string): Worker {
    const worker = new Worker(CHECKPOINTER, {
      eval: true,
      workerData: {
        module: betterSqlite3,
        path,
        commits: this.commitCount.buffer,
        intervalMs: CHECKPOINT_INTERVAL_MS,
        framesLimit: WAL_FRAMES_LIMIT,
        restartWaitMs: 5_000,
      },
    });
    // It must not keep the process alive, and it must not fail silently: without it the WAL
    // would grow for ever, so the store goes back to SQLite's own checkpoints, on the loop.
    worker.unref();
    worker.on('error', () => {});
    worker.on('exit', () => {
      if (this.checkpointer !== worker) return;
      this.checkpointer = undefined;
      if (!this.closed) this.db.pragma('wal_autocheckpoint = 1000');
    });
    return worker;
  }

  /** Ids up to this one are past the room's count limit, whether deleted yet or not. */
  private floor(state: RoomState): number {
    return Math.max(0, state.committedTop - this.retention.maxMessages);
  }

  /** The room's cached state, loaded on its first append. */
  private state(room: string): RoomState {
    let state = this.rooms.get(room);
    if (state === undefined) {
      state = this.stored(room) ?? {
        epoch: roomEpoch(this.seed, room),
        top: 0,
        committedTop: 0,
        saved: false,
        deletedTo: 0,
        cidReused: false,
      };
      this.rooms.set(room, state);
    }
    return state;
  }

  private stored(room: string): RoomState | undefined {
    const row = this.loadRoom.get(room, room);
    return row === undefined
      ? undefined
      : {
          epoch: row.epoch,
          top: row.top,
          committedTop: row.top,
          saved: true,
          deletedTo: 0,
          cidReused: false,
        };
  }

  private flush(): void {
    this.flushScheduled = false;
    const batch = this.pending;
    if (batch.length === 0) return;
    this.pending = [];
    this.pendingCids = new Map();
    try {
      this.commitBatch(batch);
    } catch (error) {
      // Nothing of the batch was stored and no id of it was acknowledged: forget the cached
      // tops so the next append starts again from what the database holds.
      for (const p of batch) this.rooms.delete(p.room);
      for (const p of batch) p.reject(error);
      return;
    }
    this.commits++;
    Atomics.add(this.commitCount, 0, 1);
    for (const p of batch) {
      if (!p.duplicate) {
        this.appended++;
        p.state.committedTop = p.message.id;
      }
    }
    for (const p of batch) {
      p.resolve({ message: p.message, epoch: p.state.epoch, duplicate: p.duplicate });
    }
    // Queued after the reactions to the promises just resolved, so it runs once they have run.
    if (this.afterCommit !== undefined) queueMicrotask(this.afterCommit);
  }

  private pruneNow(now: number): void {
    const cutoff = ageCutoff(now, this.retention);
    if (cutoff === Number.NEGATIVE_INFINITY || this.closed) return;
    // Age retention removes a room's oldest messages up to the first one still young enough,
    // so stored ids stay consecutive even if the clock once stepped back.
    this.db.transaction(() => {
      for (const { key } of this.roomKeys.all()) {
        const kept = this.firstKept.get(key, cutoff);
        if (kept === undefined) {
          // The room's top is its highest stored id: keep it before there is none.
          this.saveTop.run(key, key);
          this.deleteRoomMessages.run(key);
        } else this.deleteUpTo.run(key, kept.id - 1);
      }
    })();
  }
}

function toMessage(room: string, row: MessageRow): StoredMessage {
  return {
    room,
    id: row.id,
    at: row.at,
    from: row.from,
    msg: row.msg,
    ...(row.cid !== null ? { cid: row.cid } : {}),
  };
}

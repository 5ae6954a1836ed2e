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
 * The file is opened in exclusive locking mode: ids come from a cache of each
 * room's top, so a second process writing the same file would hand out the
 * same ids. It fails to open instead.
 */
export class SqliteHistoryStore implements HistoryStore {
  private readonly db: Database.Database;
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
  private readonly loadRoom: Database.Statement<[string], { epoch: string; top: number }>;
  private readonly roomKeys: Database.Statement<[], { key: string }>;
  private readonly findCid: Database.Statement<[string, string, string], MessageRow>;
  private readonly oldestId: Database.Statement<[string], { oldest: number | null }>;
  private readonly newest: Database.Statement<[string, number, number], MessageRow>;
  private readonly after: Database.Statement<[string, number, number, number], MessageRow>;
  private readonly deleteUpTo: Database.Statement<[string, number]>;
  private readonly firstKept: Database.Statement<[string, number], { id: number }>;
  private readonly deleteRoomMessages: Database.Statement<[string]>;
  private readonly commitBatch: (batch: readonly Pending[]) => void;

  constructor(path: string, options: SqliteHistoryOptions) {
    checkRetention(options.retention);
    this.retention = options.retention;
    this.afterCommit = options.afterCommit;
    const db = new Database(path);
    this.db = db;
    try {
      db.pragma('locking_mode = EXCLUSIVE');
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
    } catch (error) {
      db.close();
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
    this.loadRoom = db.prepare('SELECT epoch, top FROM rooms WHERE key = ?');
    this.roomKeys = db.prepare('SELECT key FROM rooms');
    this.findCid = db.prepare(
      `SELECT ${COLUMNS} FROM messages WHERE room = ? AND "from" = ? AND cid = ?`,
    );
    this.oldestId = db.prepare('SELECT min(id) AS oldest FROM messages WHERE room = ?');
    this.newest = db.prepare(
      `SELECT ${COLUMNS} FROM messages WHERE room = ? AND id < ? ORDER BY id DESC LIMIT ?`,
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
      // of this batch already past the limit are not written at all.
      const floors = new Map<RoomState, number>();
      for (const p of batch) {
        if (p.duplicate || floors.has(p.state)) continue;
        const floor = p.state.top - this.retention.maxMessages;
        floors.set(p.state, floor);
        this.saveRoom.run(p.room, p.state.epoch, p.state.top);
        if (floor > 0) this.deleteUpTo.run(p.room, floor);
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
      const oldest = this.oldestId.get(room)?.oldest ?? top + 1;
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
      // forward), otherwise the newest (paging back).
      const before = query.before ?? Number.POSITIVE_INFINITY;
      const rows =
        query.after !== undefined
          ? this.after.all(room, query.after, before, limit)
          : this.newest.all(room, before, limit).reverse();
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

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    this.flush();
    this.db.close();
    return Promise.resolve();
  }

  /** The room's cached state, loaded on its first append. */
  private state(room: string): RoomState {
    let state = this.rooms.get(room);
    if (state === undefined) {
      state = this.stored(room) ?? { epoch: roomEpoch(this.seed, room), top: 0, committedTop: 0 };
      this.rooms.set(room, state);
    }
    return state;
  }

  private stored(room: string): RoomState | undefined {
    const row = this.loadRoom.get(room);
    return row === undefined
      ? undefined
      : { epoch: row.epoch, top: row.top, committedTop: row.top };
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
        if (kept === undefined) this.deleteRoomMessages.run(key);
        else this.deleteUpTo.run(key, kept.id - 1);
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

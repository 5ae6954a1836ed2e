import { lstatSync, readlinkSync, realpathSync, statSync } from 'node:fs';
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
import { asAction } from '../core/history.js';
import {
  ageCutoff,
  checkKey,
  checkMaxRooms,
  checkRetention,
  checkSenders,
  cidName,
  DEFAULT_MAX_HISTORY_ROOMS,
  DEFAULT_PRUNE_INTERVAL_MS,
  DEFAULT_SQLITE_HISTORY_BYTES,
  type HistoryStoreOptions,
  levelUnder,
  newSeed,
  readLimit,
  roomEpoch,
  wellFormed,
  withBase,
} from './common.js';
import { createPrivate } from './data-dir.js';
import { FileLock } from './file-lock.js';
import { filterBits, NameFilter } from './name-filter.js';
import {
  decodeBatch,
  type Entry,
  encodeBatch,
  type Mark,
  markOf,
  readMark,
  SLOTS,
} from './sqlite-batches.js';
import { type Commit, Marks } from './sqlite-marks.js';

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
  /** Messages per stored batch at most (BATCH_MESSAGES); tests make it small. */
  readonly batchMessages?: number;
  /** Rooms whose state stays cached between commits at most (CACHED_ROOMS); tests make it small. */
  readonly cachedRooms?: number;
  /** WAL size past which the checkpointer restarts the WAL (WAL_BYTES_LIMIT); tests make it small. */
  readonly walBytesLimit?: number;
  /**
   * Rooms holding messages at most (0: no limit); past it the rooms written to least
   * recently lose all their messages, checked when the store opens, when a room starts
   * holding messages and at each prune. Their rows (top and epoch) stay, up to
   * maxEmptyRooms. Default
   * DEFAULT_MAX_HISTORY_ROOMS.
   */
  readonly maxRooms?: number;
  /**
   * Bytes the stored messages may take at most, as stored (0: no limit; the file, with
   * SQLite's pages and indexes, takes more): past it, the rooms holding the most are cut down
   * to one size, losing their oldest messages, checked every 16 commits. Default
   * DEFAULT_SQLITE_HISTORY_BYTES.
   */
  readonly maxBytes?: number;
  /**
   * Rows of rooms holding no messages kept at most (default 100,000, as the memory store's
   * option); past it they are forgotten, and a room without a row numbers on from the
   * highest top forgotten.
   */
  readonly maxEmptyRooms?: number;
}

export interface SqliteHistoryStats {
  /** Transactions committed by appends (one per event-loop turn that appended). */
  readonly commits: number;
  /** Messages given a new id (duplicates are not). */
  readonly appended: number;
  /** Rooms whose state is cached. */
  readonly cachedRooms: number;
  /** Rooms in the order maxRooms is kept by: those holding messages (none without a limit). */
  readonly writtenRooms: number;
  /** Rooms with a row and no messages (maxEmptyRooms). */
  readonly emptyRooms: number;
  /** The highest top of the rooms whose rows were deleted: a room without a row numbers on from it. */
  readonly forgotten: number;
  /** The bytes of the stored messages as maxBytes counts them (undefined: no limit, or to count again). */
  readonly storedBytes: number | undefined;
}

/** A batch being gathered in a commit. */
interface OpenBatch {
  readonly room: string;
  readonly first: number;
  last: number;
  /** The latest time in it, which age retention looks at. */
  newest: number;
  /** Its messages as encodeBatch takes them, SLOTS each. */
  readonly flat: (number | string | Mark)[];
  /** Characters of its senders, texts and cids (BATCH_TEXT). */
  text: number;
}

interface BatchRow {
  first: number;
  newest: number;
  data: string;
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
  /** Ids up to this one were never given out in the room (RoomHistory.base). */
  readonly base: number;
  /** Its row is stored and it holds no committed message: one of the emptyRooms. */
  empty: boolean;
}

/** A room's row as forgetting sees it: `held` is 1 if it holds messages. */
interface RoomRow {
  key: string;
  top: number;
  held: number;
}

interface Pending {
  readonly room: string;
  readonly state: RoomState;
  readonly message: StoredMessage;
  /** The name its cid is kept under (cidName), when it has one. */
  readonly cidName: string | undefined;
  readonly duplicate: boolean;
  readonly resolve: (appended: Appended) => void;
  readonly reject: (error: unknown) => void;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rooms (
  key TEXT PRIMARY KEY,
  epoch TEXT NOT NULL,
  top INTEGER NOT NULL,
  base INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS forgotten_filter (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  bits BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS forgotten_rooms (key TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
  room TEXT NOT NULL,
  first INTEGER NOT NULL,
  last INTEGER NOT NULL,
  newest INTEGER NOT NULL,
  data TEXT NOT NULL,
  PRIMARY KEY (room, first)
);
CREATE TABLE IF NOT EXISTS cids (
  room TEXT NOT NULL,
  "from" TEXT NOT NULL,
  cid TEXT NOT NULL,
  id INTEGER NOT NULL,
  PRIMARY KEY (room, "from", cid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cids_id ON cids (room, id);
DROP TRIGGER IF EXISTS batches_bytes_in;
DROP TRIGGER IF EXISTS batches_bytes_out;
DROP TRIGGER IF EXISTS batches_bytes_cut;
DROP TABLE IF EXISTS stored_bytes;
`;

/** Gives every room a new epoch (`seed`'s), as a new database would: returns `seed`. */
function startNewEpochs(db: Database.Database, seed: string): string {
  db.transaction(() => {
    db.prepare("UPDATE meta SET value = ? WHERE key = 'seed'").run(seed);
    const rooms = db.prepare('SELECT key FROM rooms').pluck().all() as string[];
    const setEpoch = db.prepare('UPDATE rooms SET epoch = ? WHERE key = ?');
    for (const room of rooms) setEpoch.run(roomEpoch(seed, room), room);
  })();
  return seed;
}

/**
 * Databases written by earlier versions keep one row per message: moved into one batch each,
 * once, when such a database is opened.
 */
const MIGRATE_MESSAGES = `
INSERT INTO batches (room, first, last, newest, data)
  SELECT room, id, id, at, CASE WHEN cid IS NULL THEN json_array(json_array(at, "from", msg))
    ELSE json_array(json_array(at, "from", msg, cid)) END FROM messages;
INSERT OR REPLACE INTO cids (room, "from", cid, id)
  SELECT room, "from", cid, id FROM messages WHERE cid IS NOT NULL;
DROP TABLE messages;
`;
/**
 * How often the checkpointer looks for new commits. Each checkpoint with work syncs the
 * WAL and the database file, so not much more often than this.
 */
const CHECKPOINT_INTERVAL_MS = 100;

/**
 * Rooms whose state stays cached after a commit. Past it the oldest cached go (a room used
 * again reads its state back, one lookup): a process that sees a great many rooms over its
 * life keeps no state for each.
 */
const CACHED_ROOMS = 10_000;

/** Rooms age retention goes through in one transaction before it lets the event loop turn. */
const PRUNE_ROOMS_PER_TURN = 256;
/**
 * Messages (ids) one step of the maxRooms check deletes at most, and so at most as many
 * batch rows and cids, before the event loop turns: a full room can be a thousand rows or
 * more, and a step bounded by rooms alone held the loop for seconds.
 */
const CAP_MESSAGES_PER_TURN = 2048;
/** Rooms one step of the maxRooms check empties at most (each costs a few lookups however small). */
const CAP_ROOMS_PER_TURN = 256;

/** Rooms whose rows one step of forgetting looks at, and so deletes at most, before the event loop turns. */
const FORGET_ROOMS_PER_TURN = 512;
/**
 * Names of rooms forgotten kept in `forgotten_rooms` at most before the filter is stored
 * (also at the end of each pass): storing it writes it whole (up to 1 MiB, some 5 ms), which
 * every step would make most of a pass's cost. Once in 4,096 names it was still half of
 * what a pass of 110,000 rows wrote to disk (48.8 MiB, against 24.3 at this); the names
 * waiting are read back at open, 32,768 in some 25 ms.
 */
const FORGOTTEN_ROOMS_PER_SAVE = 32_768;

/** The default of SqliteHistoryOptions.maxEmptyRooms. */
const MAX_EMPTY_ROOMS = 100_000;

/** Commits between two looks at the bytes stored (maxBytes). */
const MEASURE_EVERY_COMMITS = 16;

/** Rooms a step of the check emptied. */
interface Emptied {
  /** Out of the order of rooms written to, once committed (those whose messages it deleted, and those found holding none). */
  readonly unlisted: string[];
  /** Whose messages it deleted. */
  readonly now: string[];
}

/** Lets the event loop turn between the transactions of a long prune. */
function nextTurn(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}

/**
 * The rooms holding messages, least recently written first, as their newest messages' times
 * say: read when the store opens, with a limit. A skip scan over the batches' key (the next
 * room after each) and one seek to each room's last batch, in one statement: a room costs the
 * same whatever it holds (some 8 µs), and with the limit kept there are about maxRooms of them.
 */
function writtenOrder(db: Database.Database): Map<string, true> {
  const rooms = db
    .prepare<[], { room: string }>(
      `WITH RECURSIVE stored(room) AS (
         SELECT min(room) FROM batches
         UNION ALL
         SELECT (SELECT min(room) FROM batches WHERE room > stored.room) FROM stored
           WHERE stored.room IS NOT NULL)
       SELECT room FROM stored WHERE room IS NOT NULL ORDER BY
         (SELECT newest FROM batches WHERE batches.room = stored.room ORDER BY first DESC LIMIT 1),
         room`,
    )
    .all();
  return new Map(rooms.map(({ room }) => [room, true]));
}

/**
 * WAL size past which the checkpointer stops waiting for a pause in the writes and makes the
 * writer start the WAL over (RESTART, briefly blocking it): under a steady stream of commits
 * every PASSIVE checkpoint overlaps a commit, no write begins with the WAL fully copied, which
 * is when SQLite starts it over by itself, and the file would grow without bound (100 MiB in
 * 12 s of small chats from six clients). Counted in frames (one page each) of the database's
 * own page size.
 */
const WAL_BYTES_LIMIT = 16 * 1024 * 1024;

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
  // A checkpoint that fails (a full disk: the database file cannot grow) is tried again at
  // the next tick. Thrown out of the timer it would end this thread for good, and with it
  // the WAL's restarts: on a small disk the WAL would then keep the disk full after space
  // was freed, every append failing.
  try {
    const [r] = db.pragma('wal_checkpoint(PASSIVE)');
    // Not only when this one fell short: r.log is the WAL's end when the checkpoint began, so
    // under a steady stream it reports the WAL copied whole while commits went on behind it,
    // and no write ever finds it copied whole and starts it over. RESTART makes one.
    if (r.log > workerData.framesLimit) db.pragma('wal_checkpoint(RESTART)');
    seen = now;
  } catch {}
}
const timer = setInterval(checkpoint, workerData.intervalMs);
parentPort.once('message', () => {
  clearInterval(timer);
  db.close();
  parentPort.close();
});
`;
const betterSqlite3 = createRequire(import.meta.url).resolve('better-sqlite3');
/**
 * Messages per batch row at most: a busy room's turn is a few rows, and a read (a replay
 * takes 100 at a time) parses little it does not return.
 */
const BATCH_MESSAGES = 128;
/**
 * Characters (of senders, texts and cids) past which a row of a turn's messages ends: a
 * chat re-sent with a cid is answered with its first message, read by parsing its row,
 * so a row of 128 chats of thousands of escaped characters each (megabytes of JSON) made
 * each re-send of a few bytes cost the event loop several milliseconds.
 */
const BATCH_TEXT = 16 * 1024;

/** `file` with every link resolved, or as it is while it does not exist yet. */
/**
 * Refuses a database that another server could open under a name whose lock is not this
 * one's: the lock lives beside the file a name resolves to, so a symbolic link to a file not
 * made yet would be locked beside the link, and a file with a second name (a hard link, as
 * `cp -al` makes) beside each name. Either way two servers would write one database.
 */
function refuseSharedNames(file: string): void {
  const target = statSync(file, { throwIfNoEntry: false });
  if (target === undefined) {
    if (lstatSync(file, { throwIfNoEntry: false })?.isSymbolicLink()) {
      throw new Error(
        `${file} is a symbolic link to ${readlinkSync(file)}, which does not exist: create the database there first, or remove the link`,
      );
    }
    return;
  }
  if (target.nlink > 1) {
    throw new Error(
      `${file} has ${target.nlink} names (hard links), and a server using another of them would write the same database: copy it (cp without -l) rather than link it`,
    );
  }
}

function realPathOf(file: string): string {
  try {
    return realpathSync(file);
  } catch {
    return file;
  }
}

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
 * A commit stores each room's new messages as one row (a batch, up to
 * BATCH_MESSAGES, its messages as a JSON array, its ids consecutive), not one
 * row per message: binding, converting and inserting one row per message was
 * most of the transaction's cost. Cids have their own table, to find a
 * repeat.
 *
 * Messages past a room's count limit are deleted in runs (once the room has
 * passed the limit by a margin), whole batches at a time, not on every
 * commit; reads never return them.
 * A room's top is the highest id it stores, so its row in `rooms` is written
 * once (and again only when age retention or maxRooms empties the room).
 *
 * At most `maxRooms` rooms hold messages: each room keeps its newest ones for the
 * age limit, and a client spreading its chats over ever new rooms would otherwise
 * have the disk hold all of them that long. The order they were written in is kept in
 * memory (read back at start from each room's newest batch); past the limit the
 * rooms written to least recently lose all their messages, in bounded steps with
 * a turn of the event loop between them, and keep their rows, so their ids go on.
 *
 * At most `maxEmptyRooms` rooms keep a row without messages (a walk through new
 * rooms would otherwise add one a room for good). Past it they are forgotten, as
 * the memory store forgets its emptied rooms: their rows are deleted, in bounded
 * steps, and every room without a row numbers on from the highest top deleted
 * (`forgotten`), in the epoch the seed gives it, so no id is given out twice in a
 * room. The names deleted go into a Bloom filter (NameFilter, at most 1 MiB), so
 * that a room it has never seen, never written, tells a member who saw a lower
 * top that nothing was missed (RoomHistory.base).
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
  private readonly lock: FileLock | undefined;
  private checkpointer: Worker | undefined;
  /** Commits so far, read by the checkpointer to know when there is something to copy. */
  private readonly commitCount = new Int32Array(new SharedArrayBuffer(4));
  /** Rows a room may keep past its count limit before they are deleted. */
  private readonly deleteMargin: number;
  private readonly retention: Retention;
  private readonly seed: string;
  /**
   * The file was not the one this store last closed here (it was restored from a backup,
   * or replaced): every room started a new epoch when it opened.
   */
  readonly replaced: boolean;
  /** Undefined for an in-memory database. */
  private readonly marks: Marks | undefined;
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
  private readonly batchMessages: number;
  private readonly cachedRooms: number;
  private readonly maxRooms: number;
  private readonly maxBytes: number;
  /** Commits since the bytes stored were last looked at (maxBytes). */
  private unmeasured = 0;
  /**
   * The bytes of the batches' data, counted at open and kept in step by each write and
   * delete; undefined after a transaction failed (what it changed is not known), counted
   * again at the next look. In memory: a row of its own, written by every commit, cost
   * W-pipe/each a tenth of its deliveries (one more page in the WAL a commit).
   */
  private bytes: number | undefined;
  /** `bytes` by room (rooms holding none left out), kept with it. */
  private roomBytes = new Map<string, number>();
  private countBytes!: Database.Statement<[], { room: string; bytes: number }>;
  /**
   * With maxRooms, the rooms holding messages, least recently written first: a commit moves
   * its rooms to the end once it has succeeded, emptying a room takes it out. None without,
   * where nothing reads it (maxBytes goes by the bytes of each room, roomBytes).
   */
  private readonly written: Map<string, true> | undefined;
  /** The maxRooms check running (checkRooms), if one is: never two at once. */
  private capping: Promise<void> | undefined;
  private readonly maxEmptyRooms: number;
  /** Rooms with a row and no messages, counted when the store opens and kept since. */
  private emptyRooms = 0;
  /** The highest top of the rooms whose rows were deleted: a room without a row starts above it. */
  private forgotten = 0;
  /**
   * The names of the rooms whose rows were deleted, once any were: a room it has never seen
   * and without a row was never written, so no id up to `forgotten` was given out in it.
   */
  private forgottenNames: NameFilter | undefined;
  /** Rows of `forgotten_rooms`: names forgotten since the filter was last stored. */
  private unsavedNames = 0;
  /** Forgetting running (forgetRooms), if it is: never two at once. */
  private forgetting: Promise<void> | undefined;

  private readonly insertBatch: Database.Statement<[string, number, number, number, string]>;
  private readonly insertCid: Database.Statement<[string, string, string, number]>;
  private readonly saveRoom: Database.Statement<[string, string, number, number]>;
  private readonly loadRoom: Database.Statement<
    [string, string],
    { epoch: string; top: number; base: number; last: number | null }
  >;
  private readonly saveTop: Database.Statement<[string, string]>;
  private readonly firstStoredRoom: Database.Statement<[], { room: string | null }>;
  private readonly nextStoredRoom: Database.Statement<[string], { room: string | null }>;
  /** Prunes run one after another, in call order: the timer's and any caller's. */
  private pruneChain: Promise<void> = Promise.resolve();
  /**
   * Prunes called and not yet settled, running or waiting. Not a flag the running one clears:
   * a prune called between the end of one and the start of the next it queued would start
   * at once, beside that one and ahead of it.
   */
  private prunes = 0;
  private readonly findCid: Database.Statement<[string, string, string], { id: number }>;
  private readonly batchOf: Database.Statement<[string, number], BatchRow>;
  private readonly oldestId: Database.Statement<[string], { oldest: number | null }>;
  private readonly newest: Database.Statement<[string, number], BatchRow>;
  private readonly after: Database.Statement<
    [{ room: string; after: number; before: number }],
    BatchRow
  >;
  private readonly deleteUpTo: Database.Statement<[string, number, number], number>;
  private readonly deleteCidsUpTo: Database.Statement<[string, number]>;
  private readonly youngRows: Database.Statement<[string, number, number], BatchRow>;
  private readonly cutBatch: Database.Statement<[number, string, string, number]>;
  private readonly span: Database.Statement<
    [string, string],
    { oldest: number | null; last: number | null }
  >;
  private readonly batchAt: Database.Statement<[string, number], { first: number; last: number }>;
  private readonly firstRooms: Database.Statement<[number], RoomRow>;
  private readonly nextRooms: Database.Statement<[string, number], RoomRow>;
  private readonly deleteRoom: Database.Statement<[string]>;
  private readonly deleteCids: Database.Statement<[string]>;
  private readonly saveForgotten: Database.Statement<[string]>;
  private readonly addForgottenRoom: Database.Statement<[string]>;
  private readonly saveFilter: Database.Statement<[Uint8Array]>;
  private readonly clearForgottenRooms: Database.Statement<[]>;
  private readonly commitBatch: (batch: readonly Pending[]) => void;
  /** pruneRoom in a transaction of its own (a savepoint within pruneSome's). */
  private readonly pruneRoomAlone: (room: string, cutoff: number) => boolean;

  constructor(path: string, options: SqliteHistoryOptions) {
    checkRetention(options.retention);
    this.retention = options.retention;
    this.afterCommit = options.afterCommit;
    this.batchMessages = options.batchMessages ?? BATCH_MESSAGES;
    this.cachedRooms = options.cachedRooms ?? CACHED_ROOMS;
    this.maxRooms = options.maxRooms ?? DEFAULT_MAX_HISTORY_ROOMS;
    checkMaxRooms(this.maxRooms);
    this.maxBytes = options.maxBytes ?? DEFAULT_SQLITE_HISTORY_BYTES;
    if (!(Number.isSafeInteger(this.maxBytes) && this.maxBytes >= 0)) {
      throw new RangeError(`maxBytes must be an integer, 0 or more, not ${this.maxBytes}`);
    }
    this.maxEmptyRooms = options.maxEmptyRooms ?? MAX_EMPTY_ROOMS;
    if (!(Number.isInteger(this.maxEmptyRooms) && this.maxEmptyRooms >= 0)) {
      throw new RangeError(
        `maxEmptyRooms must be an integer, 0 or more, not ${this.maxEmptyRooms}`,
      );
    }
    // Large runs delete whole pages at a time; the margin is also what a room may hold
    // beyond its limit until then.
    this.deleteMargin = Math.max(1, Math.floor(this.retention.maxMessages / 2));
    const inFile = path !== '' && path !== ':memory:';
    let lock: FileLock | undefined;
    if (inFile) {
      refuseSharedNames(path);
      // Beside the database itself: a history.db that is a link to another data dir's must
      // meet the lock of the server that owns that one.
      lock = FileLock.take(`${realPathOf(path)}-lock`);
      try {
        // SQLite gives its -wal and -shm files the database's mode.
        createPrivate(path);
        // Checked again under the lock: a link made meanwhile.
        refuseSharedNames(path);
      } catch (error) {
        lock.release();
        throw error;
      }
    }
    this.lock = lock;
    let db: Database.Database;
    /** The database's seed: its rooms' epochs, unless it was replaced (below). */
    let seed: string;
    try {
      db = new Database(path);
    } catch (error) {
      lock?.release();
      throw error;
    }
    this.db = db;
    try {
      // Set before the first table exists (a database keeps its page size; one made by an
      // older version keeps its 1 KiB pages). A turn's chats of a room are one row, mostly
      // in overflow pages, and every page a commit writes costs the WAL two writes and the
      // checkpointer a read and a write: 4 KiB pages make that a quarter of the calls of
      // 1 KiB ones for the same bytes, which costs a quiet room's one-chat commit no more.
      db.pragma('page_size = 4096');
      db.pragma('journal_mode = WAL');
      db.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
      db.exec(SCHEMA);
      const old = db
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'")
        .get();
      if (old !== undefined) db.transaction(() => db.exec(MIGRATE_MESSAGES))();
      // A database without a seed is new: its rooms get epochs nobody has seen.
      db.prepare('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)').run(
        'seed',
        newSeed(options.newId),
      );
      seed = db.prepare('SELECT value FROM meta WHERE key = ?').pluck().get('seed') as string;
      if (
        db.prepare("SELECT 1 FROM pragma_table_info('rooms') WHERE name = 'base'").get() ===
        undefined
      ) {
        db.exec('ALTER TABLE rooms ADD COLUMN base INTEGER NOT NULL DEFAULT 0');
      }
      const forgotten = db.prepare("SELECT value FROM meta WHERE key = 'forgotten'").get() as
        | { value: string }
        | undefined;
      this.forgotten = forgotten === undefined ? 0 : Number(forgotten.value);
      const filter = db.prepare('SELECT bits FROM forgotten_filter WHERE id = 1').get() as
        | { bits: Uint8Array }
        | undefined;
      if (filter !== undefined) this.forgottenNames = NameFilter.restore(filter.bits);
      // Rooms forgotten after the filter was last stored (the store closed, or the process
      // ended, during a pass).
      const unsaved = db.prepare('SELECT key FROM forgotten_rooms').pluck().all() as string[];
      if (unsaved.length > 0) {
        this.forgottenNames ??= new NameFilter(filterBits(this.maxEmptyRooms));
        for (const name of unsaved) this.forgottenNames.add(name);
      }
      this.unsavedNames = unsaved.length;
      // One seek a row: bounded by maxEmptyRooms and the rooms holding messages, but for the
      // first open of a database written before rows were forgotten.
      this.emptyRooms = (
        db
          .prepare(
            'SELECT count(*) AS n FROM rooms WHERE NOT EXISTS (SELECT 1 FROM batches WHERE room = rooms.key)',
          )
          .get() as { n: number }
      ).n;
      this.written = this.maxRooms > 0 ? writtenOrder(db) : undefined;
      // The rows' sizes are in their headers: counting reads no message.
      this.countBytes = db.prepare<[], { room: string; bytes: number }>(
        'SELECT room, sum(octet_length(data)) AS bytes FROM batches GROUP BY room',
      );
      if (this.maxBytes > 0) this.countAllBytes();
      if (inFile) {
        this.checkpointer = this.startCheckpointer(path, options.walBytesLimit ?? WAL_BYTES_LIMIT);
        db.pragma('wal_autocheckpoint = 0');
      }
    } catch (error) {
      db.close();
      lock?.release();
      throw error;
    }

    this.insertBatch = db.prepare(
      'INSERT INTO batches (room, first, last, newest, data) VALUES (?, ?, ?, ?, ?)',
    );
    // A cid of a message past the count limit, not deleted yet, may be used again: the new
    // message takes it over.
    this.insertCid = db.prepare(
      'INSERT OR REPLACE INTO cids (room, "from", cid, id) VALUES (?, ?, ?, ?)',
    );
    this.saveRoom = db.prepare(
      'INSERT INTO rooms (key, epoch, top, base) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET top = excluded.top',
    );
    const lastStored = '(SELECT last FROM batches WHERE room = ? ORDER BY first DESC LIMIT 1)';
    this.loadRoom = db.prepare(
      `SELECT epoch, top, base, ${lastStored} AS last FROM rooms WHERE key = ?`,
    );
    this.marks = inFile ? new Marks(db, `${path}-mark`) : undefined;
    // A room's top as a write would start from it (state): its stored top, or `forgotten`.
    this.replaced =
      this.marks?.matches((room) => this.stored(room)?.top ?? this.forgotten) === false;
    // Ids go on from the file's tops, which may have been given out already: in new epochs
    // a client that saw them is told its gap was not recovered rather than given a hole.
    this.seed = this.replaced ? startNewEpochs(db, newSeed(options.newId)) : seed;
    // From now the file is this store's, the new epochs too (a crash is no new alarm).
    this.marks?.renew(true);
    this.saveTop = db.prepare(
      `UPDATE rooms SET top = max(top, coalesce(${lastStored}, 0)) WHERE key = ?`,
    );
    // Only rooms with stored messages: the rooms table also keeps the top and epoch of up to
    // maxEmptyRooms rooms emptied. Each is one seek in the primary key.
    this.firstStoredRoom = db.prepare('SELECT min(room) AS room FROM batches');
    this.nextStoredRoom = db.prepare('SELECT min(room) AS room FROM batches WHERE room > ?');
    this.findCid = db.prepare('SELECT id FROM cids WHERE room = ? AND "from" = ? AND cid = ?');
    this.batchOf = db.prepare(
      'SELECT first, newest, data FROM batches WHERE room = ? AND first <= ? ORDER BY first DESC LIMIT 1',
    );
    this.oldestId = db.prepare('SELECT min(first) AS oldest FROM batches WHERE room = ?');
    // Paging back: the batches holding ids below the bound, newest first.
    this.newest = db.prepare(
      'SELECT first, newest, data FROM batches WHERE room = ? AND first < ? ORDER BY first DESC',
    );
    // Paging forward: from the batch holding the id after the bound (the last one starting
    // at or below it), oldest first.
    this.after = db.prepare(
      `SELECT first, newest, data FROM batches WHERE room = @room AND first < @before AND first >= coalesce(
         (SELECT max(first) FROM batches WHERE room = @room AND first <= @after), 0) ORDER BY first`,
    );
    // What it deletes comes back with the delete: a read first would start the transaction
    // as a reader, and one the checkpointer restarted the WAL under cannot then write
    // ("database is locked").
    this.deleteUpTo = db
      .prepare<[string, number, number], number>(
        'DELETE FROM batches WHERE room = ? AND first <= ? AND last <= ? RETURNING octet_length(data)',
      )
      .pluck();
    this.deleteCidsUpTo = db.prepare('DELETE FROM cids WHERE room = ? AND id <= ?');
    // Rows with a young message and one above the count floor: the young one may be at or
    // below the floor, so the first young message above it can be in a later row.
    this.youngRows = db.prepare(
      'SELECT first, newest, data FROM batches WHERE room = ? AND newest >= ? AND last > ? ORDER BY first',
    );
    this.cutBatch = db.prepare(
      'UPDATE batches SET first = ?, data = ? WHERE room = ? AND first = ?',
    );
    // A room's oldest and highest stored ids, one seek each.
    this.span = db.prepare(
      `SELECT (SELECT first FROM batches WHERE room = ? ORDER BY first LIMIT 1) AS oldest,
         (SELECT last FROM batches WHERE room = ? ORDER BY first DESC LIMIT 1) AS last`,
    );
    // The batch holding an id, or the last one before it.
    this.batchAt = db.prepare(
      'SELECT first, last FROM batches WHERE room = ? AND first <= ? ORDER BY first DESC LIMIT 1',
    );

    const held = 'EXISTS (SELECT 1 FROM batches WHERE room = rooms.key) AS held';
    this.firstRooms = db.prepare(`SELECT key, top, ${held} FROM rooms ORDER BY key LIMIT ?`);
    this.nextRooms = db.prepare(
      `SELECT key, top, ${held} FROM rooms WHERE key > ? ORDER BY key LIMIT ?`,
    );
    this.deleteRoom = db.prepare('DELETE FROM rooms WHERE key = ?');
    this.deleteCids = db.prepare('DELETE FROM cids WHERE room = ?');
    this.saveForgotten = db.prepare(
      "INSERT OR REPLACE INTO meta (key, value) VALUES ('forgotten', ?)",
    );
    this.addForgottenRoom = db.prepare('INSERT OR IGNORE INTO forgotten_rooms (key) VALUES (?)');
    this.saveFilter = db.prepare(
      'INSERT OR REPLACE INTO forgotten_filter (id, bits) VALUES (1, ?)',
    );
    this.clearForgottenRooms = db.prepare('DELETE FROM forgotten_rooms');

    this.pruneRoomAlone = db.transaction((room: string, cutoff: number) =>
      this.pruneRoom(room, cutoff),
    );

    this.commitBatch = db.transaction((batch: readonly Pending[]) => {
      // Count retention first, against each room's final top: it is one index range delete
      // per room, and messages of this batch already past the limit are not written at all.
      // The states are changed here, before the commit: if it fails, flush() drops them and
      // reloads what is stored.
      const floors = new Map<RoomState, number>();
      for (const p of batch) {
        const state = p.state;
        if (p.duplicate || floors.has(state)) continue;
        const floor = state.top - this.retention.maxMessages;
        floors.set(state, floor);
        if (!state.saved) {
          this.saveRoom.run(p.room, state.epoch, state.top, state.base);
          state.saved = true;
        }
        if (floor - state.deletedTo >= this.deleteMargin) {
          this.deleteThrough(p.room, floor);
          state.deletedTo = floor;
        }
      }
      // Each room's messages of the turn, in id order (consecutive: duplicates take no id,
      // and those past the floor are the oldest), go into rows of up to BATCH_MESSAGES and
      // BATCH_TEXT characters.
      const open = new Map<RoomState, OpenBatch>();
      for (const p of batch) {
        const m = p.message;
        if (p.duplicate || m.id <= floors.get(p.state)!) continue;
        let b = open.get(p.state);
        const text = m.from.length + m.msg.length + (m.cid?.length ?? 0);
        if (
          b !== undefined &&
          (b.last + 1 !== m.id ||
            b.flat.length === this.batchMessages * SLOTS ||
            b.text + text > BATCH_TEXT)
        ) {
          this.writeBatch(b);
          b = undefined;
        }
        if (b === undefined) {
          b = { room: p.room, first: m.id, last: m.id, newest: m.at, flat: [], text: 0 };
          open.set(p.state, b);
        }
        b.text += text;
        b.last = m.id;
        if (m.at > b.newest) b.newest = m.at;
        b.flat.push(m.at, m.from, m.msg, markOf(m.cid, m.action === true));
        if (m.cid !== undefined) this.insertCid.run(p.room, p.cidName ?? m.from, m.cid, m.id);
      }
      for (const b of open.values()) this.writeBatch(b);
    });

    const interval = options.pruneIntervalMs ?? DEFAULT_PRUNE_INTERVAL_MS;
    if (interval > 0 && (this.retention.maxAgeMs > 0 || this.maxRooms > 0)) {
      const now = options.now ?? Date.now;
      this.timer = setInterval(() => {
        // A prune still under way (many rooms) is not queued behind: the next tick catches up.
        // A failed one is tried again at the next tick; the store's other calls report errors.
        if (this.prunes === 0) this.prune(now()).catch(() => {});
      }, interval);
      this.timer.unref();
    }
    // Opened with more rooms holding messages than the limit (it was lowered, or off), or
    // more rows without messages (a database written before they were forgotten).
    this.checkRooms().catch(() => {});
    this.checkEmptyRooms().catch(() => {});
  }

  /** Counters for tests and metrics. */
  get stats(): SqliteHistoryStats {
    return {
      commits: this.commits,
      appended: this.appended,
      cachedRooms: this.rooms.size,
      writtenRooms: this.written?.size ?? 0,
      emptyRooms: this.emptyRooms,
      forgotten: this.forgotten,
      storedBytes: this.bytes,
    };
  }

  append(room: string, draft: MessageDraft): Promise<Appended> {
    if (this.closed) return Promise.reject(new Error('history store is closed'));
    return new Promise<Appended>((resolve, reject) => {
      checkKey('room', room);
      checkSenders(draft);
      const cid = draft.cid === undefined ? undefined : wellFormed(draft.cid);
      const name = cid === undefined ? undefined : cidName(draft);
      const state = this.state(room);
      let duplicateOf: StoredMessage | undefined;
      let key: string | undefined;
      if (name !== undefined && cid !== undefined) {
        key = `${room.length}:${room}${name.length}:${name}${cid}`;
        duplicateOf = this.pendingCids.get(key);
        if (duplicateOf === undefined) {
          const row = this.findCid.get(room, name, cid);
          if (row !== undefined) duplicateOf = this.message(room, row.id);
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
        message = asAction(message, draft.action === true);
        if (key !== undefined) this.pendingCids.set(key, message);
      }
      // A duplicate waits for the batch too, so promises resolve in append order and a
      // repeat of a message still in this batch is not acknowledged before it is durable.
      this.pending.push({
        room,
        state,
        message,
        cidName: name,
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
        const top = this.forgotten;
        const info = { epoch: roomEpoch(this.seed, room), top, oldest: top + 1 };
        return Promise.resolve(withBase(info, this.unusedBelow(room)));
      }
      const top = state.committedTop;
      const oldest = Math.max(this.oldestId.get(room)?.oldest ?? top + 1, this.floor(state) + 1);
      return Promise.resolve(withBase({ epoch: state.epoch, top, oldest }, state.base));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  read(room: string, query: HistoryQuery): Promise<StoredMessage[]> {
    try {
      checkKey('room', room);
      const limit = readLimit(query, this.retention);
      if (limit === 0 || Number.isNaN(query.after) || Number.isNaN(query.before)) {
        return Promise.resolve([]);
      }
      // Ids below `before` and above `after`; with `after`, the oldest of them (paging
      // forward), otherwise the newest (paging back). Never rows past the count limit
      // that are still waiting for their deletion.
      const state = this.rooms.get(room) ?? this.stored(room);
      const floor = state === undefined ? 0 : this.floor(state);
      // Bounds between ids mean the ids between them, as whole ones do: entries are found by
      // arithmetic on ids.
      const before =
        query.before === undefined ? Number.POSITIVE_INFINITY : Math.ceil(query.before);
      const found: StoredMessage[] = [];
      if (query.after !== undefined) {
        const after = Math.max(Math.floor(query.after), floor);
        for (const row of this.after.iterate({ room, after, before })) {
          const entries = parseEntries(row);
          for (let i = Math.max(0, after + 1 - row.first); i < entries.length; i++) {
            const id = row.first + i;
            if (id >= before || found.length === limit) break;
            found.push(toMessage(room, id, entries[i]!));
          }
          if (found.length === limit || row.first + entries.length >= before) break;
        }
      } else {
        for (const row of this.newest.iterate(room, before)) {
          const entries = parseEntries(row);
          let i = Math.min(entries.length, before - row.first) - 1;
          for (; i >= 0 && found.length < limit && row.first + i > floor; i--) {
            found.push(toMessage(room, row.first + i, entries[i]!));
          }
          if (found.length === limit || row.first <= floor + 1) break;
        }
        found.reverse();
      }
      return Promise.resolve(found);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  prune(now: number): Promise<void> {
    // With none under way or waiting, its first transaction runs now: a prune of few rooms is
    // done when this returns.
    const run =
      this.prunes > 0 ? this.pruneChain.then(() => this.pruneRooms(now)) : this.pruneRooms(now);
    this.prunes++;
    this.pruneChain = run
      .catch(() => {})
      .then(() => {
        this.prunes--;
      });
    return run;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    this.flush();
    // A maxRooms check and forgetting stop at their next turn, before any query: settled
    // before the database closes.
    await this.capping?.catch(() => {});
    await this.forgetting?.catch(() => {});
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
    this.marks?.renew(true);
    this.marks?.close();
    this.db.close();
    this.lock?.release();
  }

  private startCheckpointer(path: string, walBytesLimit: number): Worker {
    const worker = new Worker(CHECKPOINTER, {
      eval: true,
      workerData: {
        module: betterSqlite3,
        path,
        commits: this.commitCount.buffer,
        intervalMs: CHECKPOINT_INTERVAL_MS,
        framesLimit: Math.ceil(
          walBytesLimit / Number(this.db.pragma('page_size', { simple: true })),
        ),
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

  private writeBatch(b: OpenBatch): void {
    const data = encodeBatch(b.flat, b.newest);
    this.insertBatch.run(b.room, b.first, b.last, b.newest, data);
    this.addBytes(b.room, Buffer.byteLength(data));
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
        top: this.forgotten,
        committedTop: this.forgotten,
        saved: false,
        deletedTo: 0,
        base: this.unusedBelow(room),
        empty: false,
      };
      this.rooms.set(room, state);
    }
    return state;
  }

  private stored(room: string): RoomState | undefined {
    const row = this.loadRoom.get(room, room);
    if (row === undefined) return undefined;
    // Its top is also the highest id stored, kept in the row before the room is emptied.
    const top = Math.max(row.top, row.last ?? 0);
    return {
      epoch: row.epoch,
      top,
      committedTop: top,
      saved: true,
      deletedTo: 0,
      base: row.base,
      empty: row.last === null,
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
      this.recount();
      // Nothing of the batch was stored and no id of it was acknowledged: forget the cached
      // tops so the next append starts again from what the database holds.
      for (const p of batch) this.rooms.delete(p.room);
      for (const p of batch) p.reject(error);
      return;
    }
    this.commits++;
    Atomics.add(this.commitCount, 0, 1);
    if (this.marks !== undefined) {
      let last: Commit | undefined;
      for (const p of batch) if (!p.duplicate) last = [p.room, p.message.id];
      this.marks.committed(last);
    }
    for (const p of batch) {
      if (!p.duplicate) {
        this.appended++;
        p.state.committedTop = p.message.id;
        if (p.state.empty) {
          p.state.empty = false;
          this.emptyRooms--;
        }
      }
    }
    for (const p of batch) {
      p.resolve({ message: p.message, epoch: p.state.epoch, duplicate: p.duplicate });
    }
    this.wrote(batch);
    // Nothing is pending now, and every cached state is stored: any can go, the oldest first.
    if (this.rooms.size > this.cachedRooms) {
      for (const room of this.rooms.keys()) {
        if (this.rooms.size <= this.cachedRooms) break;
        this.rooms.delete(room);
      }
    }
    // Queued after the reactions to the promises just resolved, so it runs once they have run.
    if (this.afterCommit !== undefined) queueMicrotask(this.afterCommit);
  }

  /**
   * Age retention, PRUNE_ROOMS_PER_TURN rooms to a transaction with a turn of the event loop
   * between them: with a great many rooms one transaction over all would hold the loop. Then
   * the maxRooms check (checkRooms) and forgetting (checkEmptyRooms), joining those under way.
   */
  private async pruneRooms(now: number): Promise<void> {
    const cutoff = ageCutoff(now, this.retention);
    let after: string | undefined;
    const failed: { error?: unknown } = {};
    while (!this.closed && cutoff !== Number.NEGATIVE_INFINITY) {
      const last = this.pruneSome(after, cutoff, failed);
      if (last === null) break;
      after = last;
      await nextTurn();
    }
    // Also here, not only as rooms start holding messages: a check that failed (a full
    // disk) is made again.
    await this.checkRooms().catch((error: unknown) => {
      if (!('error' in failed)) failed.error = error;
    });
    await this.checkEmptyRooms().catch((error: unknown) => {
      if (!('error' in failed)) failed.error = error;
    });
    // One room that cannot be pruned (an unreadable row) holds back no other; the caller
    // hears of it once all are done.
    if ('error' in failed) throw failed.error;
  }

  /** Prunes the rooms with stored messages after `after` (all, if undefined); the last one, or null. */
  private pruneSome(
    after: string | undefined,
    cutoff: number,
    failed: { error?: unknown },
  ): string | null {
    const emptied: string[] = [];
    const last = this.db.transaction(() => {
      let room = after;
      for (let n = 0; n < PRUNE_ROOMS_PER_TURN; n++) {
        const next = (
          room === undefined ? this.firstStoredRoom.get() : this.nextStoredRoom.get(room)
        )?.room;
        if (next === null || next === undefined) return null;
        room = next;
        try {
          // Its own savepoint: a room that fails leaves nothing half done, and the rest go on.
          if (this.pruneRoomAlone(next, cutoff)) emptied.push(next);
        } catch (error) {
          this.recount();
          if (!('error' in failed)) failed.error = error;
        }
      }
      return room ?? null;
    })();
    // Once committed: rooms without messages no longer count for maxRooms.
    for (const room of emptied) this.written?.delete(room);
    this.emptied(emptied);
    return last;
  }

  /**
   * Age retention for one room removes its oldest messages up to the first one still young
   * enough, so stored ids stay consecutive even if the clock once stepped back. True if it
   * removed them all.
   */
  private pruneRoom(key: string, cutoff: number): boolean {
    // Only messages above the count floor count: those at or below it are gone for
    // readers, and a young one among them must not keep the older ones after it.
    const state = this.rooms.get(key) ?? this.stored(key);
    const floor = state === undefined ? 0 : this.floor(state);
    let young: { row: BatchRow; entries: Entry[]; skip: number } | undefined;
    for (const row of this.youngRows.iterate(key, cutoff, floor)) {
      const entries = parseEntries(row);
      let skip = Math.max(0, floor + 1 - row.first);
      while (skip < entries.length && entries[skip]![0] < cutoff) skip++;
      if (skip < entries.length) {
        young = { row, entries, skip };
        break;
      }
    }
    if (young === undefined) {
      // The room's top is its highest stored id: keep it before there is none.
      this.saveTop.run(key, key);
      this.deleteThrough(key, Number.MAX_SAFE_INTEGER);
      return true;
    }
    // The batch holding the first young message above the floor is cut there.
    const { row, entries, skip } = young;
    const kept = row.first + skip;
    this.deleteThrough(key, Math.max(kept - 1, floor));
    if (skip > 0) {
      const data = JSON.stringify(entries.slice(skip));
      this.cutBatch.run(kept, data, key, row.first);
      this.addBytes(key, Buffer.byteLength(data) - Buffer.byteLength(row.data));
    }
    return false;
  }

  /**
   * After a commit that succeeded (a failed one wrote nothing): its rooms are the ones
   * written to most recently, in the order of their last append. A room that starts holding
   * messages starts a check of maxRooms now, not at the next prune: a client walking through
   * rooms adds hundreds a second.
   */
  private wrote(batch: readonly Pending[]): void {
    const written = this.written;
    let added = false;
    if (written !== undefined) {
      let previous: string | undefined;
      for (const p of batch) {
        if (p.duplicate || p.room === previous) continue;
        previous = p.room;
        if (!written.delete(p.room)) added = true;
        written.set(p.room, true);
      }
    }
    const measure = this.maxBytes > 0 && ++this.unmeasured >= MEASURE_EVERY_COMMITS;
    if (measure) this.unmeasured = 0;
    if ((added && written!.size > this.maxRooms) || (measure && this.overBytes())) {
      this.checkRooms().catch(() => {});
    }
  }

  /**
   * Whether the messages stored take more than maxBytes, as their rows' data (not pages in
   * use: rooms written at the same time share pages, and emptying the least recent of them
   * freed so few whole pages that half the history went before the count fell).
   */
  private overBytes(): boolean {
    if (this.maxBytes === 0) return false;
    return this.countAllBytes() > this.maxBytes;
  }

  /** The bytes stored, counted from the rows if they are not known. */
  private countAllBytes(): number {
    if (this.bytes !== undefined) return this.bytes;
    let bytes = 0;
    this.roomBytes.clear();
    for (const row of this.countBytes.iterate()) {
      this.roomBytes.set(row.room, row.bytes);
      bytes += row.bytes;
    }
    this.bytes = bytes;
    return bytes;
  }

  private addBytes(room: string, bytes: number): void {
    if (this.bytes === undefined) return;
    this.bytes += bytes;
    const left = (this.roomBytes.get(room) ?? 0) + bytes;
    if (left > 0) this.roomBytes.set(room, left);
    else this.roomBytes.delete(room);
  }

  /** What a transaction that failed changed is not known: the bytes are counted again. */
  private recount(): void {
    if (this.maxBytes > 0) this.bytes = undefined;
  }

  /**
   * The maxRooms check: the running one if there is one (it counts again after each step, so
   * it also takes rooms that started holding messages since it began), else a new one if
   * more rooms hold messages than the limit.
   */
  private checkRooms(): Promise<void> {
    if (this.capping === undefined && !this.closed && this.overRooms() > 0) {
      this.capping = this.capRooms();
    }
    return this.capping ?? Promise.resolve();
  }

  /** Rooms holding messages past maxRooms, or 1 while the database is past maxBytes. */
  private overRooms(): number {
    const rooms = this.written === undefined ? 0 : this.written.size - this.maxRooms;
    return rooms > 0 ? rooms : this.overBytes() ? 1 : 0;
  }

  /**
   * Steps of capStep, each in a turn of its own (the first too: a commit that starts the
   * check has its promises to resolve first), until at most maxRooms rooms hold messages.
   * It stops when closed, before it queries again, and when a step could take nothing.
   */
  private async capRooms(): Promise<void> {
    try {
      for (;;) {
        await nextTurn();
        if (this.closed || this.overRooms() <= 0) return;
        let progress: boolean;
        try {
          progress = this.capStep();
        } catch (error) {
          this.recount();
          throw error;
        }
        if (!progress) return;
      }
    } finally {
      // Within the turn of the last count: a room that starts holding messages after it
      // starts a new check.
      this.capping = undefined;
    }
  }

  /**
   * One transaction of the check: past maxRooms, the rooms written to least recently lose
   * their messages (emptyLeastRecent); past maxBytes alone, the rooms holding the most lose
   * their oldest (trimLargest). False if it took nothing and left no room it could take
   * later (a later step would do no better).
   */
  private capStep(): boolean {
    const written = this.written;
    const busy = this.pending.length === 0 ? undefined : new Set(this.pending.map((p) => p.room));
    const emptied: Emptied = { unlisted: [], now: [] };
    const progress = this.db.transaction(() =>
      written !== undefined && written.size > this.maxRooms
        ? this.emptyLeastRecent(written, busy, emptied)
        : this.trimLargest(busy, emptied),
    )();
    // Once committed.
    for (const room of emptied.unlisted) written?.delete(room);
    this.emptied(emptied.now);
    return progress;
  }

  /**
   * The rooms written to least recently lose all their messages, their rows keeping top and
   * epoch (ids are never given out again), until at most maxRooms rooms hold messages,
   * CAP_ROOMS_PER_TURN rooms or CAP_MESSAGES_PER_TURN messages. A room too full for what is
   * left of a step loses its oldest messages now and the rest at the next, unless it is
   * written to in between (then it is no longer among the least recently written). A room
   * with appends waiting for this turn's commit is left: it is being written to now.
   */
  private emptyLeastRecent(
    written: Map<string, true>,
    busy: ReadonlySet<string> | undefined,
    emptied: Emptied,
  ): boolean {
    let over = written.size - this.maxRooms;
    let budget = CAP_MESSAGES_PER_TURN;
    let progress = false;
    for (const room of written.keys()) {
      if (over <= 0 || emptied.unlisted.length === CAP_ROOMS_PER_TURN) break;
      if (busy?.has(room)) {
        // Committed by the time of the next step, which may take it.
        progress = true;
        continue;
      }
      const { oldest, last } = this.span.get(room, room) ?? { oldest: null, last: null };
      if (oldest !== null && last !== null && last - oldest + 1 > budget) {
        if (this.deleteOldest(room, oldest, last, budget, emptied, 'down') > 0) progress = true;
        break;
      }
      if (last !== null) {
        this.empty(room);
        budget -= last - (oldest ?? last) + 1;
        emptied.now.push(room);
      }
      emptied.unlisted.push(room);
      over--;
      progress = true;
    }
    return progress;
  }

  /**
   * Past maxBytes: the rooms holding the most bytes are cut down to one size, the largest
   * that brings the count under maxBytes, each losing its oldest messages (as many as hold,
   * at the room's average size, what it has above that size), CAP_MESSAGES_PER_TURN
   * messages a step. Not the rooms written to least recently: one member flooding a room of
   * its own within flood control made every other room, an active one written to two
   * seconds before included, the least recent, and emptied them all; now its own room is
   * the largest and pays first, and every room keeps its newest.
   */
  private trimLargest(busy: ReadonlySet<string> | undefined, emptied: Emptied): boolean {
    const sizes = [...this.roomBytes].sort((a, b) => b[1] - a[1]);
    const level = levelUnder(
      sizes.map(([, bytes]) => bytes),
      this.maxBytes,
    );
    let budget = CAP_MESSAGES_PER_TURN;
    let progress = false;
    for (const [room, held] of sizes) {
      if (held <= level || budget <= 0 || emptied.unlisted.length === CAP_ROOMS_PER_TURN) break;
      if (busy?.has(room)) {
        // Committed by the time of the next step, which may take it.
        progress = true;
        continue;
      }
      const { oldest, last } = this.span.get(room, room) ?? { oldest: null, last: null };
      if (oldest === null || last === null) continue;
      const count = last - oldest + 1;
      const ids = Math.min(budget, Math.ceil(((held - level) * count) / held));
      const deleted = this.deleteOldest(room, oldest, last, ids, emptied, 'up');
      if (deleted > 0) progress = true;
      budget -= deleted;
    }
    return progress;
  }

  /**
   * Deletes a room's oldest messages in whole batches, about `ids` of them: through the end of
   * the last batch that fits (`down`; the cids of a batch left are of messages still
   * readable, and a repeat of one must be found) or of the batch that holds the last of
   * them (`up`); all of them, the room emptied, when that reaches its last. The ids deleted.
   */
  private deleteOldest(
    room: string,
    oldest: number,
    last: number,
    ids: number,
    emptied: Emptied,
    round: 'down' | 'up',
  ): number {
    const at = this.batchAt.get(room, oldest - 1 + ids);
    const through =
      at === undefined || round === 'up' || at.last <= oldest - 1 + ids ? at?.last : at.first - 1;
    if (through === undefined || through < oldest) return 0;
    if (through >= last) {
      this.empty(room);
      emptied.now.push(room);
      emptied.unlisted.push(room);
      return last - oldest + 1;
    }
    return this.deleteThrough(room, through) > 0 ? through - oldest + 1 : 0;
  }

  /** Deletes all of a room's messages, its row keeping its top. */
  private empty(room: string): void {
    // The room's top is its highest stored id: keep it before there is none.
    this.saveTop.run(room, room);
    this.deleteThrough(room, Number.MAX_SAFE_INTEGER);
  }

  /**
   * Rooms whose last messages a committed transaction deleted: one more each of the
   * emptyRooms, which past maxEmptyRooms starts forgetting them.
   */
  private emptied(rooms: readonly string[]): void {
    for (const room of rooms) {
      this.emptyRooms++;
      const state = this.rooms.get(room);
      if (state !== undefined) state.empty = true;
    }
    if (rooms.length > 0) this.checkEmptyRooms().catch(() => {});
  }

  /**
   * For a room without a row: `forgotten` if the room was never written (its ids start
   * above it, and a member who saw a lower top missed nothing), else 0.
   */
  private unusedBelow(room: string): number {
    return this.forgottenNames?.has(room) === true ? 0 : this.forgotten;
  }

  /**
   * Forgetting: the pass running if there is one, else a new one if more rows than
   * maxEmptyRooms hold no messages.
   */
  private checkEmptyRooms(): Promise<void> {
    if (this.forgetting === undefined && !this.closed && this.emptyRooms > this.maxEmptyRooms) {
      this.forgetting = this.forgetRooms();
    }
    return this.forgetting ?? Promise.resolve();
  }

  /**
   * One pass through the rooms table in key order, a step (forgetStep) a turn, deleting the
   * rows of rooms without messages. Like the memory store, it forgets all of them, not only
   * the excess: a pass costs a walk of the whole table, made once in maxEmptyRooms emptied
   * rooms. Rooms emptied behind it wait for the next pass, which the next room emptied (or
   * prune) starts if they are too many: passes one after another would hold a prune waiting
   * for them as long as a walk goes on. It stops when closed, before it queries again.
   */
  private async forgetRooms(): Promise<void> {
    try {
      let after: string | undefined;
      do {
        await nextTurn();
        if (this.closed) return;
        after = this.forgetStep(after).last;
      } while (after !== undefined);
    } finally {
      this.forgetting = undefined;
    }
  }

  /**
   * One transaction of forgetting: of the FORGET_ROOMS_PER_TURN rows after `after`, deletes
   * those of rooms holding no messages (and their cids, and their cached state), but for
   * rooms with appends waiting for this turn's commit; raises `forgotten` to their highest
   * top and keeps their names in `forgotten_rooms` in the same transaction, so no row is gone
   * without its name, until the filter is stored. `last`: the last row looked at, undefined
   * at the table's end.
   */
  private forgetStep(after: string | undefined): { last: string | undefined; deleted: number } {
    const busy = this.pending.length === 0 ? undefined : new Set(this.pending.map((p) => p.room));
    const rows =
      after === undefined
        ? this.firstRooms.all(FORGET_ROOMS_PER_TURN)
        : this.nextRooms.all(after, FORGET_ROOMS_PER_TURN);
    const last = rows.length < FORGET_ROOMS_PER_TURN ? undefined : rows.at(-1)?.key;
    const gone = rows.filter((row) => row.held === 0 && busy?.has(row.key) !== true);
    const unsaved = this.unsavedNames + gone.length;
    const save = unsaved > 0 && (last === undefined || unsaved >= FORGOTTEN_ROOMS_PER_SAVE);
    if (gone.length === 0 && !save) return { last, deleted: 0 };
    let top = this.forgotten;
    const names = this.forgottenNames ?? new NameFilter(filterBits(this.maxEmptyRooms));
    // Added before the commit: if it fails, the names stay as rooms that may have been
    // forgotten, which costs their members a recovery at worst.
    for (const row of gone) {
      names.add(row.key);
      top = Math.max(top, row.top);
    }
    this.forgottenNames = names;
    this.db.transaction(() => {
      for (const row of gone) {
        this.deleteRoom.run(row.key);
        this.deleteCids.run(row.key);
        this.addForgottenRoom.run(row.key);
      }
      if (top > this.forgotten) this.saveForgotten.run(String(top));
      if (save) {
        this.saveFilter.run(names.bytes());
        this.clearForgottenRooms.run();
      }
    })();
    this.forgotten = top;
    this.unsavedNames = save ? 0 : unsaved;
    this.emptyRooms -= gone.length;
    for (const row of gone) this.rooms.delete(row.key);
    return { last, deleted: gone.length };
  }

  /**
   * Deletes a room's batches that end at or before this id, and the cids of its messages up to
   * it: a cid names a message still readable, or is free again. The batches deleted.
   */
  private deleteThrough(room: string, id: number): number {
    const sizes = this.deleteUpTo.all(room, id, id);
    let deleted = 0;
    for (const size of sizes) deleted += size;
    this.addBytes(room, -deleted);
    const batches = sizes.length;
    this.deleteCidsUpTo.run(room, id);
    return batches;
  }

  /** The stored message with this id, or undefined if it is gone. */
  private message(room: string, id: number): StoredMessage | undefined {
    const row = this.batchOf.get(room, id);
    const entry = row === undefined ? undefined : parseEntries(row)[id - row.first];
    return entry === undefined ? undefined : toMessage(room, id, entry);
  }
}

function parseEntries(row: BatchRow): Entry[] {
  return decodeBatch(row.data, row.newest);
}

function toMessage(room: string, id: number, [at, from, msg, mark]: Entry): StoredMessage {
  const { cid, action } = readMark(mark);
  const message: StoredMessage =
    cid === undefined ? { room, id, at, from, msg } : { room, id, at, from, msg, cid };
  return asAction(message, action);
}

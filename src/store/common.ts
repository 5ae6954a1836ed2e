import { createHash, randomUUID } from 'node:crypto';
import type { HistoryQuery, MessageDraft, Retention, RoomHistory } from '../core/history.js';
import { hasLoneSurrogate, wellFormed } from '../protocol/text.js';

/** What every HistoryStore implementation here is configured with. */
export interface HistoryStoreOptions {
  readonly retention: Retention;
  /** The clock the store's own pruning timer uses (prune(now) takes its time from the caller). */
  readonly now?: () => number;
  /** How often the store applies age retention by itself; 0 leaves it to prune(). */
  readonly pruneIntervalMs?: number;
  /** Makes the random seed the epochs derive from (tests inject a predictable one). */
  readonly newId?: () => string;
}

export const DEFAULT_PRUNE_INTERVAL_MS = 60_000;

/**
 * The default of `maxRooms` in the SQLite, memory and Redis stores: past it, the rooms written to
 * least recently lose all their messages. Each room keeps its newest `maxMessages` for the
 * age limit, so without it a client spreading its chats over ever new rooms would have all
 * of them kept that long. In Redis as many rooms of one short chat each take some 47 MB, a
 * stream taking 4 KB from its first entry (Redis preallocates `stream-node-max-bytes`).
 */
export const DEFAULT_MAX_HISTORY_ROOMS = 10_000;

/** Throws unless `maxRooms` is a whole number, 0 (no limit) or more. */
export function checkMaxRooms(maxRooms: number): void {
  if (!(Number.isInteger(maxRooms) && maxRooms >= 0)) {
    throw new RangeError(`maxRooms must be a whole number, 0 or more, not ${maxRooms}`);
  }
}

export function checkRetention(retention: Retention): void {
  if (!Number.isInteger(retention.maxMessages) || retention.maxMessages < 1) {
    throw new RangeError(
      `retention.maxMessages must be a positive integer, not ${retention.maxMessages}`,
    );
  }
  if (!Number.isFinite(retention.maxAgeMs) || retention.maxAgeMs < 0) {
    throw new RangeError(`retention.maxAgeMs must be 0 or more, not ${retention.maxAgeMs}`);
  }
}

export function newSeed(newId: (() => string) | undefined): string {
  return (newId ?? randomUUID)();
}

/**
 * A room's epoch is derived from the storage's seed rather than drawn per room,
 * so asking about a room that was never written to needs no stored state (a
 * client can name any room) and still gives the same epoch that room's first
 * message will get. A new seed (new database, new process for memory) gives
 * every room a new epoch.
 */
export function roomEpoch(seed: string, room: string): string {
  return createHash('sha256')
    .update(seed)
    .update('\0')
    .update(room)
    .digest('base64url')
    .slice(0, 22);
}

/** The most messages one read returns, whatever the caller asks. */
export function readLimit(query: HistoryQuery, retention: Retention): number {
  const limit = Math.floor(query.limit);
  if (!(limit > 0)) return 0;
  return Math.min(limit, retention.maxMessages);
}

/** Messages older than this (strictly) have passed the age limit; -Infinity when there is none. */
export function ageCutoff(now: number, retention: Retention): number {
  return retention.maxAgeMs > 0 ? now - retention.maxAgeMs : Number.NEGATIVE_INFINITY;
}

/**
 * SQLite keeps text as UTF-8, where a lone surrogate (which JSON's \ud800 escapes let a
 * client send) becomes U+FFFD. Every store makes that replacement itself (`wellFormed`,
 * in protocol/text.ts), so all of them return the same message, and the message `append`
 * returns is the one a restart reads.
 */
export { wellFormed };

/**
 * Room keys and senders are refused rather than replaced: two different keys must never
 * become one (a room's history would show in another).
 */
export function checkKey(what: 'room' | 'from' | 'sender', key: string): void {
  if (hasLoneSurrogate(key)) throw new RangeError(`${what} is not well-formed Unicode`);
}

/**
 * The name a draft's cid is kept and found under: its sender's (MessageDraft.sender),
 * or its `from` without one. U+0001 opens no nickname (core/nickname.ts refuses control
 * characters), so a sender is never taken for a nickname.
 */
export function cidName(draft: MessageDraft): string {
  return draft.sender === undefined ? draft.from : senderName(draft.sender);
}

/** Senders' hashes (senderOrigin) by sender; cleared when full. */
const senderOrigins = new Map<string, string>();
/** Senders' names (senderName) by sender; cleared when full. */
const senderNames = new Map<string, string>();
const SENDER_NAMES = 4096;

/**
 * 96 bits of the sender's SHA-256, base64url: what a chat stored in Redis carries of its
 * sender (StoredMessage.origin), so that a node of a cluster knows its own members' chats,
 * and nothing stored (a database backup, a Redis key) makes a resume token that names it.
 */
export function senderOrigin(sender: string): string {
  let origin = senderOrigins.get(sender);
  if (origin === undefined) {
    if (senderOrigins.size >= SENDER_NAMES) senderOrigins.clear();
    origin = createHash('sha256').update(sender).digest('base64url').slice(0, 16);
    senderOrigins.set(sender, origin);
  }
  return origin;
}

/**
 * The name a cid of `sender` is kept under (cidName): its origin behind U+0001, which no
 * nickname contains.
 */
export function senderName(sender: string): string {
  let name = senderNames.get(sender);
  if (name === undefined) {
    if (senderNames.size >= SENDER_NAMES) senderNames.clear();
    name = `\u0001${senderOrigin(sender)}`;
    senderNames.set(sender, name);
  }
  return name;
}

/** checkKey for the names a draft is stored and its cid kept under. */
export function checkSenders(draft: MessageDraft): void {
  checkKey('from', draft.from);
  if (draft.sender !== undefined) checkKey('sender', draft.sender);
}

/** `info` with `base` when it says something (RoomHistory.base). */
export function withBase(info: RoomHistory, base: number): RoomHistory {
  return base > 0 ? { ...info, base } : info;
}

/** The default of SqliteHistoryOptions.maxBytes (--history-sqlite-max): 2 GiB. */
export const DEFAULT_SQLITE_HISTORY_BYTES = 2 * 1024 * 1024 * 1024;

/**
 * The largest size such that `sizes` (largest first), each cut down to it, add up to at most
 * `most`: a water level, rooms below it untouched.
 */
export function levelUnder(sizes: readonly number[], most: number): number {
  let rest = 0;
  for (const size of sizes) rest += size;
  if (rest <= most) return sizes[0] ?? 0;
  for (let k = 1; k <= sizes.length; k++) {
    rest -= sizes[k - 1]!;
    const level = (most - rest) / k;
    if (k === sizes.length || level >= sizes[k]!) return Math.max(0, Math.floor(level));
  }
  return 0;
}

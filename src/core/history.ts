/**
 * Room history behind one interface, so the core never knows where messages
 * are kept: in memory, in an SQLite file, or (with a cluster) in Redis.
 *
 * Ordering and atomicity, which every implementation guarantees and the
 * shared contract suite (test/contract/history-store.ts) checks:
 *
 * - Ids are per room, start at 1, and increase by one for each appended
 *   message in the order `append` was called. An id is never reused, not after
 *   retention deletes old messages and not after a restart on the same
 *   storage: each room keeps a `top` (the highest id ever assigned) that never
 *   goes back.
 * - A room's `epoch` names one unbroken history. It changes only when stored
 *   history was lost (a new or wiped database, memory storage after a
 *   restart). Ids from one epoch mean nothing in another.
 * - `append` resolves once the message is durable for that store (for SQLite:
 *   committed); callers deliver it only then, so every id a client has seen is
 *   still there after a crash. Appends made in one event-loop turn may share
 *   one transaction.
 * - A message with a `cid` (client message id) that the same sender already
 *   appended to the same room is not stored again: `append` resolves with the
 *   stored message and `duplicate: true`. A cid is kept and found under the
 *   draft's `sender`, or its `from` without one; a sender is never taken for
 *   a nickname.
 * - Reads see every append that has resolved.
 * - Text is stored as well-formed Unicode (SQLite keeps UTF-8): lone
 *   surrogates in `msg` and `cid` become U+FFFD, and the message `append`
 *   resolves with is the stored one, the one to deliver. A `room`, `from` or
 *   `sender` with a lone surrogate is refused (RangeError), never merged with
 *   another.
 */

/** A chat message as stored. Whispers are never stored. */
export interface StoredMessage {
  /** The room's key (its look-alike fold), not its display name. */
  readonly room: string;
  readonly id: number;
  /** Server time, milliseconds since the epoch. */
  readonly at: number;
  readonly from: string;
  readonly msg: string;
  readonly cid?: string;
  /**
   * Its draft's `sender` as the store names it, where the store keeps it (Redis, whose
   * chats carry it to every node of a cluster: ChatEvent's `origin`). Shown to nobody.
   */
  readonly origin?: string;
  /** The text says what `from` does (IRC's /me); absent on other chat. */
  readonly action?: true;
}

/**
 * `value` marked as an action (IRC's /me) when `action` holds; else `value` itself, so that
 * ordinary chat keeps the object shapes its path was tuned for.
 */
export function asAction<T extends { readonly action?: true }>(value: T, action: boolean): T {
  return action ? { ...value, action: true } : value;
}

export interface MessageDraft {
  readonly at: number;
  readonly from: string;
  readonly msg: string;
  readonly cid?: string;
  /** As StoredMessage.action: kept, and given back with the message. */
  readonly action?: true;
  /**
   * The sending session's lasting identity, the same across its renames and its
   * resumes (on any node), never shown to anyone: the cid is the sender's, so a
   * session that renamed between a chat and its re-send is still recognised, and
   * a nickname's next holder is not taken for it. The message is still `from`.
   */
  readonly sender?: string;
}

export interface Appended {
  readonly message: StoredMessage;
  readonly epoch: string;
  /** The cid was seen before: this is the message stored then, and it must not be delivered again. */
  readonly duplicate: boolean;
}

export interface RoomHistory {
  readonly epoch: string;
  /** The highest id ever assigned in the room (0 if none). */
  readonly top: number;
  /** The lowest id still stored, or top + 1 when nothing is stored. */
  readonly oldest: number;
  /**
   * No message of the epoch in this room has an id up to this one: they were
   * given out before the epoch began (it was rotated after Redis came back
   * with older data, and the epoch's own ids follow them), or, in the memory
   * and SQLite stores, in other rooms before this one was first written (they
   * number a room they do not know from above the rooms they forgot). A position at or
   * below it missed nothing before it. Undefined or 0 when the epoch's ids
   * start at 1.
   */
  readonly base?: number;
}

export interface HistoryQuery {
  /** Messages with ids greater than this, oldest first. */
  readonly after?: number;
  /** Messages with ids less than this, the newest ones, returned oldest first. */
  readonly before?: number;
  /** At most this many (the store may cap it further). */
  readonly limit: number;
}

/** Retention per room; a message goes when either limit passes it. */
export interface Retention {
  /** Messages kept per room (the newest). */
  readonly maxMessages: number;
  /** Age in milliseconds after which a message may be deleted; 0 keeps them forever. */
  readonly maxAgeMs: number;
}

export interface HistoryStore {
  append(room: string, draft: MessageDraft): Promise<Appended>;
  /** The room's epoch, top and oldest stored id; a room never written to gets a new epoch and top 0. */
  room(room: string): Promise<RoomHistory>;
  /** Without `after` or `before`: the newest `limit` messages. */
  read(room: string, query: HistoryQuery): Promise<StoredMessage[]>;
  /** Applies retention now (implementations also apply it on their own, cheaply). */
  prune(now: number): Promise<void>;
  /** Flushes what is pending and releases the storage. */
  close(): Promise<void>;
}

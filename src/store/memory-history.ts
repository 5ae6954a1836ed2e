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
  DEFAULT_MAX_HISTORY_ROOMS,
  DEFAULT_PRUNE_INTERVAL_MS,
  type HistoryStoreOptions,
  levelUnder,
  newSeed,
  readLimit,
  roomEpoch,
  senderName,
  wellFormed,
  withBase,
} from './common.js';
import { filterBits, NameFilter } from './name-filter.js';

/** Sender and cid as one map key; the length prefix keeps ("ab","c") apart from ("a","bc"). */
function cidKey(from: string, cid: string): string {
  return `${from.length}:${from}${cid}`;
}

/** The default of MemoryHistoryStoreOptions.maxBytes: 256 MiB. */
export const DEFAULT_MEMORY_HISTORY_BYTES = 256 * 1024 * 1024;

/**
 * What a stored message is counted as against the budget: its strings at two bytes a
 * character (V8 keeps text with any character above U+00FF so), and the message object
 * and its place in the ring; with a cid, also the cid's key (the name and the cid again)
 * and its entry in the room's cid map, with the map's spare room (CID_WEIGHT besides the
 * key's text).
 */
function weigh(message: StoredMessage): number {
  const text = message.msg.length + message.from.length;
  const cid = message.cid;
  if (cid === undefined) return 2 * text + 96;
  return 2 * (text + 2 * cid.length + message.from.length) + 96 + CID_WEIGHT;
}

/**
 * What a cut past the budget leaves of it: less than all, so that the sort of the rooms a
 * cut needs is made once for many appends (at the default, once for 16 MiB written).
 */
const SHED_TO = 15 / 16;

/** A cid's key and map entry besides the key's text (measured at about 100 bytes on Node 20). */
const CID_WEIGHT = 100;

/**
 * What a room holding messages is counted as against the budget besides them: its ring,
 * cid map, epoch and place in the store's map (measured at some 640 bytes on Node 20).
 * Without it, a walk leaving one short message in each of many rooms held several
 * times the budget.
 */
export const ROOM_WEIGHT = 640;

/**
 * What a message whose cid is kept under a sender (MessageDraft.sender) is counted as
 * besides `weigh`: the sender (each session's own, often outliving it), its slot in the
 * ring and the longer key of the cid (measured at some 200 bytes on Node 20, one room holding
 * 120,000 such chats against as many kept under the nickname).
 */
export const SENDER_WEIGHT = 200;

/**
 * One room's messages: a ring of at most `capacity` messages whose ids are
 * consecutive (retention only ever removes the oldest), so a message is found
 * by arithmetic on its id.
 */
class RoomRing {
  private slots: (StoredMessage | undefined)[] = [];
  /** Index in `slots` of the oldest message. */
  private head = 0;
  size = 0;
  /**
   * The weight of the messages held (weigh, SENDER_WEIGHT), and of the room itself
   * (ROOM_WEIGHT).
   */
  weight = ROOM_WEIGHT;
  /** (name, cid) -> message, only for messages still in the ring, so it is bounded like the ring. */
  private readonly cids = new Map<string, StoredMessage>();
  /**
   * By slot, the sender's name a message's cid is kept under (senderName), made with the
   * first such message: a Map from message to name cost each chat 1.5 µs more.
   */
  private senders: (string | undefined)[] | undefined;

  /**
   * `top`: the room's last id so far (its history may have been dropped before). `base`:
   * ids up to it were never given out in this room (see RoomHistory.base), 0 if unknown.
   */
  constructor(
    readonly epoch: string,
    private readonly capacity: number,
    public top: number,
    readonly base: number,
  ) {}

  get oldest(): number {
    return this.top - this.size + 1;
  }

  /** `key`: cidKey of the name the cid is kept under (common.ts cidName) and the cid. */
  findCid(key: string): StoredMessage | undefined {
    return this.cids.get(key);
  }

  /**
   * `key`: for a message with a cid, cidKey of the name it is kept under; `sender`: that
   * name (senderName), if not its `from`.
   */
  push(message: StoredMessage, key?: string, sender?: string): void {
    if (this.size === this.capacity) this.dropOldest();
    let slot: number;
    if (this.slots.length < this.capacity) {
      // Grows to capacity instead of allocating it up front: most rooms stay small.
      slot = this.slots.length;
      this.slots.push(message);
    } else {
      slot = (this.head + this.size) % this.capacity;
      this.slots[slot] = message;
    }
    if (sender !== undefined && this.senders === undefined) {
      this.senders = new Array<string | undefined>(this.slots.length).fill(undefined);
    }
    if (this.senders !== undefined) this.senders[slot] = sender;
    this.size++;
    this.weight += weigh(message) + (sender === undefined ? 0 : SENDER_WEIGHT);
    this.top = message.id;
    if (key !== undefined) this.cids.set(key, message);
  }

  /** Removes the oldest messages while they are older than `cutoff`. */
  dropOlderThan(cutoff: number): void {
    while (this.size > 0 && this.at(this.oldest).at < cutoff) this.dropOldest();
    this.compact();
  }

  /** Removes the oldest messages until it weighs at most `weight` or holds `keep`. */
  dropTo(weight: number, keep: number): void {
    while (this.size > keep && this.weight > weight) this.dropOldest();
    this.compact();
  }

  /**
   * Gives back the slots of a ring that age or the budget emptied to a quarter or less
   * (a room that once held its 1,000 messages keeps 8 KB of slots otherwise, whatever it
   * holds now). The ring grows again from what is left.
   */
  private compact(): void {
    if (this.slots.length <= 32 || this.size * 4 > this.slots.length) return;
    const senders = this.senders;
    if (senders !== undefined) {
      const kept: (string | undefined)[] = [];
      for (let id = this.oldest; id <= this.top; id++) kept.push(senders[this.slotOf(id)]);
      this.senders = kept;
    }
    this.slots = this.range(this.oldest, this.top);
    this.head = 0;
  }

  /** Messages with ids in [from, to], oldest first; the range is clamped to what is stored. */
  range(from: number, to: number): StoredMessage[] {
    const lo = Math.max(from, this.oldest);
    const hi = Math.min(to, this.top);
    const out: StoredMessage[] = [];
    for (let id = lo; id <= hi; id++) out.push(this.at(id));
    return out;
  }

  private at(id: number): StoredMessage {
    return this.slots[this.slotOf(id)]!;
  }

  private slotOf(id: number): number {
    return (this.head + (id - this.oldest)) % this.slots.length;
  }

  private dropOldest(): void {
    const gone = this.slots[this.head]!;
    // Frees the message now, not when its slot is next written: an idle room's expired
    // messages must not stay in memory.
    this.slots[this.head] = undefined;
    const sender = this.senders?.[this.head];
    if (sender !== undefined) this.senders![this.head] = undefined;
    if (gone.cid !== undefined) {
      const key = cidKey(sender ?? gone.from, gone.cid);
      // A later message may have taken the key over (this one was past the window).
      if (this.cids.get(key) === gone) this.cids.delete(key);
    }
    this.head = (this.head + 1) % this.capacity;
    this.size--;
    this.weight -= weigh(gone) + (sender === undefined ? 0 : SENDER_WEIGHT);
  }
}

export interface MemoryHistoryStoreOptions extends HistoryStoreOptions {
  /**
   * What all rooms' messages together may weigh, about in bytes (default
   * DEFAULT_MEMORY_HISTORY_BYTES). Past it, the rooms weighing the most are cut down to
   * one size, each losing its oldest messages, until all weigh at most SHED_TO of it.
   */
  readonly maxBytes?: number;
  /**
   * Rooms holding messages (default DEFAULT_MAX_HISTORY_ROOMS, 0 for no limit); past it,
   * the rooms written to least recently lose all their messages.
   */
  readonly maxRooms?: number;
  /**
   * Rooms whose every message is gone remembered by their top (default 100,000); past
   * it they are forgotten, and a room the store does not know numbers on from the
   * highest top forgotten.
   */
  readonly maxEmptyRooms?: number;
}

/**
 * History kept in this process only: a restart loses it, and every room then
 * gets a new epoch, so clients know their ids mean nothing any more.
 * `append` is durable as soon as it returns (there is nothing more durable to
 * wait for here).
 *
 * Everything it holds is bounded: the messages by `maxBytes`, whatever the
 * count and age limits let each room keep (a client walking through rooms,
 * leaving a message in each, would otherwise grow it for as long as they
 * allow), and a room that lost all its messages by its top id alone, so its
 * ids are not given out again. Past `maxEmptyRooms` of those, they are
 * forgotten, and every room the store does not know (a forgotten one, or one never
 * written) numbers on from the highest top forgotten: its epoch stays (a member of
 * one process is never told of a new one while in the room), and no id is given out
 * twice in it.
 */
export class MemoryHistoryStore implements HistoryStore {
  private readonly retention: Retention;
  private readonly seed: string;
  /** Rooms with messages, least recently written first. */
  private readonly rooms = new Map<string, RoomRing>();
  /** The last written, so that a run of appends to one room leaves the order alone. */
  private newest: RoomRing | undefined;
  /** The top of each room whose messages are all gone. */
  private readonly emptied = new Map<string, number>();
  /** The highest top `emptied` has held: what `forgotten` becomes when they are forgotten. */
  private emptiedTop = 0;
  /** The highest top of the rooms forgotten: a room the store does not know starts above it. */
  private forgotten = 0;
  /**
   * The names of the rooms forgotten, once any were: a room it has never seen was never
   * written, so no id up to `forgotten` was given out in it (RoomHistory.base).
   */
  private forgottenNames: NameFilter | undefined;
  private readonly maxBytes: number;
  private readonly maxRooms: number;
  private readonly maxEmptyRooms: number;
  private weight = 0;
  private readonly timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: MemoryHistoryStoreOptions) {
    checkRetention(options.retention);
    this.retention = options.retention;
    this.seed = newSeed(options.newId);
    this.maxBytes = options.maxBytes ?? DEFAULT_MEMORY_HISTORY_BYTES;
    this.maxEmptyRooms = options.maxEmptyRooms ?? 100_000;
    this.maxRooms = options.maxRooms ?? DEFAULT_MAX_HISTORY_ROOMS;
    checkMaxRooms(this.maxRooms);
    if (!(this.maxBytes > 0))
      throw new RangeError(`maxBytes must be positive, not ${this.maxBytes}`);
    if (!(this.maxEmptyRooms >= 0)) {
      throw new RangeError(`maxEmptyRooms must be 0 or more, not ${this.maxEmptyRooms}`);
    }
    const interval = options.pruneIntervalMs ?? DEFAULT_PRUNE_INTERVAL_MS;
    if (interval > 0 && this.retention.maxAgeMs > 0) {
      const now = options.now ?? Date.now;
      this.timer = setInterval(() => this.pruneNow(now()), interval);
      this.timer.unref();
    }
  }

  append(room: string, draft: MessageDraft): Promise<Appended> {
    if (this.closed) return Promise.reject(new Error('history store is closed'));
    try {
      checkKey('room', room);
      checkSenders(draft);
    } catch (error) {
      return Promise.reject(error);
    }
    const cid = draft.cid === undefined ? undefined : wellFormed(draft.cid);
    let ring = this.rooms.get(room);
    if (ring === undefined) {
      const known = this.emptied.get(room);
      this.emptied.delete(room);
      const top = known ?? this.forgotten;
      const base = known === undefined ? this.unusedBelow(room) : 0;
      ring = new RoomRing(roomEpoch(this.seed, room), this.retention.maxMessages, top, base);
      this.rooms.set(room, ring);
      this.weight += ring.weight;
      if (this.maxRooms > 0 && this.rooms.size > this.maxRooms) this.emptyLeastRecent();
    } else if (ring !== this.newest) {
      this.rooms.delete(room);
      this.rooms.set(room, ring);
    }
    this.newest = ring;
    let key: string | undefined;
    let sender: string | undefined;
    if (cid !== undefined) {
      sender = draft.sender === undefined ? undefined : senderName(draft.sender);
      key = cidKey(sender ?? draft.from, cid);
      const first = ring.findCid(key);
      if (first !== undefined) {
        return Promise.resolve({ message: first, epoch: ring.epoch, duplicate: true });
      }
    }
    const id = ring.top + 1;
    const msg = wellFormed(draft.msg);
    // Without a spread: this runs for every chat.
    let message: StoredMessage =
      cid === undefined
        ? { room, id, at: draft.at, from: draft.from, msg }
        : { room, id, at: draft.at, from: draft.from, msg, cid };
    message = asAction(message, draft.action === true);
    const before = ring.weight;
    ring.push(message, key, sender);
    this.weight += ring.weight - before;
    if (this.weight > this.maxBytes) this.shed(ring);
    return Promise.resolve({ message, epoch: ring.epoch, duplicate: false });
  }

  room(room: string): Promise<RoomHistory> {
    try {
      checkKey('room', room);
    } catch (error) {
      return Promise.reject(error);
    }
    const ring = this.rooms.get(room);
    if (ring === undefined) {
      const epoch = roomEpoch(this.seed, room);
      const top = this.emptied.get(room) ?? this.forgotten;
      const base = this.emptied.has(room) ? 0 : this.unusedBelow(room);
      return Promise.resolve(withBase({ epoch, top, oldest: top + 1 }, base));
    }
    return Promise.resolve(
      withBase({ epoch: ring.epoch, top: ring.top, oldest: ring.oldest }, ring.base),
    );
  }

  read(room: string, query: HistoryQuery): Promise<StoredMessage[]> {
    try {
      checkKey('room', room);
    } catch (error) {
      return Promise.reject(error);
    }
    const ring = this.rooms.get(room);
    const limit = readLimit(query, this.retention);
    if (ring === undefined || limit === 0) return Promise.resolve([]);
    // Ids below `before` and above `after`; with `after`, the oldest of them (paging forward),
    // otherwise the newest (paging back).
    const below = query.before !== undefined ? Math.ceil(query.before) - 1 : ring.top;
    const hi = Math.min(ring.top, below);
    if (query.after !== undefined) {
      const lo = Math.max(Math.floor(query.after) + 1, ring.oldest);
      return Promise.resolve(ring.range(lo, Math.min(hi, lo + limit - 1)));
    }
    return Promise.resolve(ring.range(hi - limit + 1, hi));
  }

  prune(now: number): Promise<void> {
    this.pruneNow(now);
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    return Promise.resolve();
  }

  /** What all rooms holding messages weigh together now, with them (about in bytes). */
  get bytes(): number {
    return this.weight;
  }

  private pruneNow(now: number): void {
    const cutoff = ageCutoff(now, this.retention);
    if (cutoff === Number.NEGATIVE_INFINITY) return;
    for (const [room, ring] of this.rooms) {
      const before = ring.weight;
      ring.dropOlderThan(cutoff);
      this.weight += ring.weight - before;
      if (ring.size === 0) this.empty(room, ring);
    }
  }

  /**
   * Past maxRooms: the rooms written to least recently lose all their messages, the one
   * just made (the newest) never among them.
   */
  private emptyLeastRecent(): void {
    for (const [room, ring] of this.rooms) {
      if (this.rooms.size <= this.maxRooms) return;
      const before = ring.weight;
      ring.dropTo(0, 0);
      this.weight += ring.weight - before;
      this.empty(room, ring);
    }
  }

  /**
   * Cuts the rooms weighing the most down to one size (levelUnder), each losing its oldest
   * messages, until all weigh at most SHED_TO of the budget; `current`, just written, keeps
   * its newest message at least. A member flooding a room of its own so pays with that
   * room's history, and quieter rooms keep theirs; rooms of one size (a walk through rooms)
   * lose theirs least recently written first, only as many as need to. Cutting to less than
   * the budget spreads the sort over many appends.
   */
  private shed(current: RoomRing): void {
    const target = Math.floor(this.maxBytes * SHED_TO);
    // Largest first; of one size, least recently written first (the sort is stable).
    const sizes = [...this.rooms].sort((a, b) => b[1].weight - a[1].weight);
    this.cutTo(
      sizes,
      levelUnder(
        sizes.map(([, ring]) => ring.weight),
        target,
      ),
      target,
      current,
    );
    if (this.weight <= target) return;
    // `current` kept more than the level (its newest message alone): the others make room.
    const others = sizes.filter(([, ring]) => ring !== current && ring.size > 0);
    const rest = target - current.weight;
    this.cutTo(
      others,
      rest > 0
        ? levelUnder(
            others.map(([, ring]) => ring.weight),
            rest,
          )
        : 0,
      target,
      current,
    );
  }

  /** Cuts `rooms`, in their order, down to `level` each, until all weigh at most `target`. */
  private cutTo(
    rooms: readonly [string, RoomRing][],
    level: number,
    target: number,
    current: RoomRing,
  ): void {
    for (const [room, ring] of rooms) {
      if (this.weight <= target) return;
      if (ring.weight <= level || ring.size === 0) continue;
      const before = ring.weight;
      ring.dropTo(level, ring === current ? 1 : 0);
      this.weight += ring.weight - before;
      if (ring.size === 0) this.empty(room, ring);
    }
  }

  /**
   * For a room the store holds nothing of: `forgotten` if the room was never written (its
   * ids start above it, and a member who saw a lower top missed nothing), else 0.
   */
  private unusedBelow(room: string): number {
    return this.forgottenNames?.has(room) === true ? 0 : this.forgotten;
  }

  /** Forgets a room that holds no messages, but for its top. */
  private empty(room: string, ring: RoomRing): void {
    this.rooms.delete(room);
    this.weight -= ring.weight;
    if (this.newest === ring) this.newest = undefined;
    if (this.emptied.size >= this.maxEmptyRooms) {
      this.forgottenNames ??= new NameFilter(filterBits(this.maxEmptyRooms));
      for (const name of this.emptied.keys()) this.forgottenNames.add(name);
      this.emptied.clear();
      this.forgotten = Math.max(this.forgotten, this.emptiedTop);
    }
    this.emptied.set(room, ring.top);
    this.emptiedTop = Math.max(this.emptiedTop, ring.top);
  }
}

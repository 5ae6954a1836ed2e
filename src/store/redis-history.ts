import { Redis } from 'ioredis';
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

export interface RedisHistoryOptions extends HistoryStoreOptions {
  /**
   * A `redis://host:port` URL the store connects to (and disconnects from on close), or a
   * client the caller owns: the store then leaves it open. Such a client may speak RESP2
   * or RESP3 but must keep ioredis's default `replyMapping: 'legacy'` (the reply shapes
   * read here); it should not resend unanswered commands (see `connect`).
   */
  readonly redis: string | Redis;
  /** Put before every key, so several clusters or tests can share one Redis. */
  readonly prefix?: string;
  /** Connection errors (ioredis reconnects by itself; commands meanwhile wait or fail). */
  readonly onError?: (error: Error) => void;
  /**
   * Publish each new message on its room's channel (`roomChannel`) in the script that
   * numbers and stores it, for a RedisBroker with the same prefix: live order is then id
   * order on every node. Off by default.
   */
  readonly publish?: boolean;
}

export const DEFAULT_REDIS_PREFIX = 'confab:';

/** base64url of the UTF-8 key: any room key gives a distinct, brace-free name. */
export function roomTag(room: string): string {
  return Buffer.from(room, 'utf8').toString('base64url');
}

/** The channel a room's events are published on, messages by the append script included. */
export function roomChannel(prefix: string, room: string): string {
  return `${prefix}b:r:${roomTag(room)}`;
}

/**
 * The payload the append script publishes, a JSON array:
 * ["c", id, epoch, at (as a string), from, msg]. Lua's cjson escapes the strings; `at`
 * goes as a string since cjson would print a large number in %.14g.
 */
export type PublishedChat = [
  tag: 'c',
  id: number,
  epoch: string,
  at: string,
  from: string,
  msg: string,
];

/**
 * How long the epoch of a room nobody has written to is kept. Asking about a room
 * creates its epoch (its first message must get the same one), and clients can name
 * any room, so those keys expire; the first append makes the epoch permanent.
 */
const EMPTY_EPOCH_TTL_S = 7 * 24 * 3600;

/** Rooms whose highest id a node remembers; beyond it the least recently new are forgotten. */
const MAX_REMEMBERED_ROOMS = 100_000;

/** Rooms whose age retention one SSCAN step hands over. */
const PRUNE_SCAN_COUNT = 100;

// Per room, under one hash tag (so a Cluster would keep them in one slot, as scripts need):
//   top    INCR counter, the highest id ever assigned; never decremented, never expires
//   epoch  the room's epoch, created with SET NX when first needed
//   msgs   the stream: entry id `<id>-0`, fields at, from, msg[, cid], in that order
//   cids   hash: `<byte length of from>:<from><cid>` -> id, only for messages still in msgs
//   base   the top when the epoch was rotated after a roll-back (absent: 0)
//
// A roll-back (Redis restarted from an older RDB or AOF) keeps the epoch key with a top
// below ids already handed out: INCR would give them out again under the same epoch.
// Each node remembers the highest id it has seen per room and epoch and passes it to the
// scripts, which rotate the epoch when the top is below it: atomically, so the first node
// to notice rotates it once and the others find an epoch they have not seen.
// Scripts return integers and strings only: booleans differ between RESP2 and RESP3.

/**
 * The room's epoch after the roll-back check. Needs top_key, epoch_key, base_key; ARGV[1]
 * is the epoch candidate, seen_epoch and seen_top what this node has seen.
 */
const ROTATE_LUA = `
local function current_epoch(top_key, epoch_key, base_key, seen_epoch, seen_top)
  local epoch = redis.call('GET', epoch_key)
  if not epoch then return nil end
  local top = tonumber(redis.call('GET', top_key) or '0')
  if epoch == seen_epoch and top < seen_top then
    epoch = ARGV[1]
    redis.call('SET', epoch_key, epoch)
    redis.call('SET', base_key, top)
  end
  return epoch
end
`;

/**
 * KEYS: top, epoch, msgs, cids, rooms, base. ARGV: epoch candidate, maxMessages, room tag,
 * at, from, msg, channel ('' for none), seen epoch, seen top[, cid]. Returns {id, epoch, 0}
 * for a new message, {id, epoch, 1, at, msg} for a duplicate cid (not published again).
 */
const APPEND_LUA = `${ROTATE_LUA}
local top_key, epoch_key, msgs, cids, rooms = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local max = tonumber(ARGV[2])
local at, from, msg, channel, cid = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[10]
local epoch = current_epoch(top_key, epoch_key, KEYS[6], ARGV[8], tonumber(ARGV[9]))
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', epoch_key, epoch)
end
local field
if cid then
  field = #from .. ':' .. from .. cid
  local first = redis.call('HGET', cids, field)
  if first then
    local entry = redis.call('XRANGE', msgs, first .. '-0', first .. '-0')[1]
    if entry then
      return {tonumber(first), epoch, 1, entry[2][2], entry[2][6]}
    end
  end
end
local id = redis.call('INCR', top_key)
if id == 1 then
  redis.call('PERSIST', epoch_key)
  redis.call('SADD', rooms, ARGV[3])
end
-- XADD's MAXLEN drops the oldest entries; their cids go first so the hash stays bounded.
local excess = redis.call('XLEN', msgs) + 1 - max
if excess > 0 then
  for _, gone in ipairs(redis.call('XRANGE', msgs, '-', '+', 'COUNT', excess)) do
    local f = gone[2]
    if f[8] then redis.call('HDEL', cids, #f[4] .. ':' .. f[4] .. f[8]) end
  end
end
if cid then
  redis.call('XADD', msgs, 'MAXLEN', max, id .. '-0', 'at', at, 'from', from, 'msg', msg, 'cid', cid)
  redis.call('HSET', cids, field, id)
else
  redis.call('XADD', msgs, 'MAXLEN', max, id .. '-0', 'at', at, 'from', from, 'msg', msg)
end
-- Published in the step that numbers it, so every subscriber receives a room's
-- messages in id order.
if channel ~= '' then
  redis.call('PUBLISH', channel, '["c",' .. string.format('%d', id) .. ',' .. cjson.encode(epoch) .. ',' ..
    cjson.encode(at) .. ',' .. cjson.encode(from) .. ',' .. cjson.encode(msg) .. ']')
end
return {id, epoch, 0}
`;

/**
 * KEYS: top, epoch, msgs, base. ARGV: epoch candidate, TTL for the epoch of a room never
 * written, seen epoch, seen top. Returns {epoch, top, oldest, base}.
 */
const ROOM_LUA = `${ROTATE_LUA}
local top = tonumber(redis.call('GET', KEYS[1]) or '0')
local epoch = current_epoch(KEYS[1], KEYS[2], KEYS[4], ARGV[3], tonumber(ARGV[4]))
if not epoch then
  epoch = ARGV[1]
  if top == 0 then
    redis.call('SET', KEYS[2], epoch, 'EX', ARGV[2])
  else
    redis.call('SET', KEYS[2], epoch)
  end
end
local oldest = top + 1
local first = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
if first then oldest = tonumber(string.match(first[1], '^%d+')) end
return {epoch, top, oldest, tonumber(redis.call('GET', KEYS[4]) or '0')}
`;

/**
 * KEYS: msgs, cids. ARGV: cutoff. Removes the oldest messages while they are older than
 * the cutoff (stopping at the first young enough, so stored ids stay consecutive even if
 * the clock once stepped back), and their cids.
 */
const PRUNE_LUA = `
local msgs, cids, cutoff = KEYS[1], KEYS[2], tonumber(ARGV[1])
local start = '-'
local keep
repeat
  local batch = redis.call('XRANGE', msgs, start, '+', 'COUNT', 100)
  for _, e in ipairs(batch) do
    local f = e[2]
    if tonumber(f[2]) >= cutoff then
      keep = e[1]
      break
    end
    if f[8] then redis.call('HDEL', cids, #f[4] .. ':' .. f[4] .. f[8]) end
  end
  if keep or #batch < 100 then break end
  start = '(' .. batch[#batch][1]
until false
if keep then
  redis.call('XTRIM', msgs, 'MINID', keep)
else
  redis.call('XTRIM', msgs, 'MAXLEN', 0)
end
return 0
`;

interface Scripts {
  confabHistoryAppend(...args: (string | number)[]): Promise<unknown>;
  confabHistoryRoom(...args: (string | number)[]): Promise<unknown>;
  confabHistoryPrune(...args: (string | number)[]): Promise<unknown>;
}

type StreamEntry = [id: string, fields: string[]];

/**
 * The client the store makes from a URL. ioredis 6 negotiates RESP3 by default; the store
 * asks for RESP2, whose reply shapes (and Lua conversions) it relies on, see connect().
 */
function connect(url: string): Redis {
  return new Redis(url, {
    // RESP2: the reply shapes ioredis and Redis have long agreed on; RESP3 adds nothing a
    // history store uses, and changes how a Lua boolean comes back.
    protocol: 2,
    // Commands of one event-loop turn (setImmediate) go out in one write.
    enableAutoPipelining: true,
    // An append whose reply was lost may have been stored: resending it on reconnect could
    // store it twice. The caller sees the error instead (a cid makes its retry safe).
    autoResendUnfulfilledCommands: false,
  });
}

function streamId(id: number): string {
  return `${id}-0`;
}

function idOf(entryId: string): number {
  return Number.parseInt(entryId, 10);
}

function toMessage(room: string, [entryId, fields]: StreamEntry): StoredMessage {
  let at = 0;
  let from = '';
  let msg = '';
  let cid: string | undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const value = fields[i + 1]!;
    switch (fields[i]) {
      case 'at':
        at = Number(value);
        break;
      case 'from':
        from = value;
        break;
      case 'msg':
        msg = value;
        break;
      case 'cid':
        cid = value;
        break;
    }
  }
  return { room, id: idOf(entryId), at, from, msg, ...(cid !== undefined ? { cid } : {}) };
}

/**
 * Room history in Redis, shared by every confab process connected to the same Redis.
 *
 * Each append is one Lua script, so concurrent appends from several processes get ids
 * 1, 2, 3... exactly once per room, and a message is stored (and, later, published) in
 * the same atomic step that numbers it. Durability is what Redis is configured for: an
 * appended message is in Redis's memory when `append` resolves; whether it survives a
 * Redis restart depends on its AOF/RDB settings. When it does not, the room's epoch key
 * is gone with the rest, and the next use makes a new epoch, so clients are told their
 * gap was not recovered rather than shown reused ids.
 */
export class RedisHistoryStore implements HistoryStore {
  private readonly redis: Redis;
  private readonly scripts: Scripts;
  private readonly owned: boolean;
  private readonly prefix: string;
  private readonly publish: boolean;
  private readonly retention: Retention;
  private readonly newId: (() => string) | undefined;
  private readonly timer: NodeJS.Timeout | undefined;
  /** Operations not yet settled, so close() sends its QUIT after them. */
  private readonly inflight = new Set<Promise<unknown>>();
  /** Per room, the highest id this node has seen and its epoch (see `seen`). */
  private readonly highest = new Map<string, { epoch: string; top: number }>();
  /** A prune in progress: reads and room() wait for it, so they never see what it removes. */
  private pruning: Promise<void> | undefined;
  private closed = false;

  constructor(options: RedisHistoryOptions) {
    checkRetention(options.retention);
    this.retention = options.retention;
    this.newId = options.newId;
    this.prefix = options.prefix ?? DEFAULT_REDIS_PREFIX;
    this.publish = options.publish ?? false;
    this.owned = typeof options.redis === 'string';
    this.redis = typeof options.redis === 'string' ? connect(options.redis) : options.redis;
    if (this.owned) {
      const onError = options.onError;
      // Without a listener ioredis prints every reconnect failure to stderr.
      this.redis.on('error', (error: Error) => onError?.(error));
    }
    this.redis.defineCommand('confabHistoryAppend', { lua: APPEND_LUA, numberOfKeys: 6 });
    this.redis.defineCommand('confabHistoryRoom', { lua: ROOM_LUA, numberOfKeys: 4 });
    this.redis.defineCommand('confabHistoryPrune', { lua: PRUNE_LUA, numberOfKeys: 2 });
    this.scripts = this.redis as unknown as Scripts;

    const interval = options.pruneIntervalMs ?? DEFAULT_PRUNE_INTERVAL_MS;
    if (interval > 0 && this.retention.maxAgeMs > 0) {
      const now = options.now ?? Date.now;
      const onError = options.onError;
      this.timer = setInterval(() => {
        this.prunePeriodically(now(), interval).catch((error: Error) => onError?.(error));
      }, interval);
      this.timer.unref();
    }
  }

  append(room: string, draft: MessageDraft): Promise<Appended> {
    if (this.closed) return Promise.reject(new Error('history store is closed'));
    try {
      checkKey('room', room);
      checkKey('from', draft.from);
    } catch (error) {
      return Promise.reject(error);
    }
    const cid = draft.cid === undefined ? undefined : wellFormed(draft.cid);
    const msg = wellFormed(draft.msg);
    const keys = this.keys(room);
    const seen = this.highest.get(room);
    const args: (string | number)[] = [
      keys.top,
      keys.epoch,
      keys.msgs,
      keys.cids,
      this.roomsKey(),
      keys.base,
      this.epochCandidate(room),
      this.retention.maxMessages,
      keys.tag,
      String(draft.at),
      draft.from,
      msg,
      this.publish ? roomChannel(this.prefix, room) : '',
      seen?.epoch ?? '',
      seen?.top ?? 0,
    ];
    if (cid !== undefined) args.push(cid);
    return this.track(
      this.scripts.confabHistoryAppend(...args).then((reply): Appended => {
        const [id, epoch, duplicate, at, storedMsg] = reply as [
          number,
          string,
          number,
          string?,
          string?,
        ];
        this.seen(room, epoch, id);
        const message: StoredMessage =
          duplicate === 1
            ? {
                room,
                id,
                at: Number(at),
                from: draft.from,
                msg: storedMsg!,
                ...(cid !== undefined ? { cid } : {}),
              }
            : {
                room,
                id,
                at: draft.at,
                from: draft.from,
                msg,
                ...(cid !== undefined ? { cid } : {}),
              };
        return { message, epoch, duplicate: duplicate === 1 };
      }),
    );
  }

  room(room: string): Promise<RoomHistory> {
    try {
      checkKey('room', room);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.track(
      this.afterPrune(async () => {
        const keys = this.keys(room);
        const seen = this.highest.get(room);
        const reply = await this.scripts.confabHistoryRoom(
          keys.top,
          keys.epoch,
          keys.msgs,
          keys.base,
          this.epochCandidate(room),
          EMPTY_EPOCH_TTL_S,
          seen?.epoch ?? '',
          seen?.top ?? 0,
        );
        const [epoch, top, oldest, base] = reply as [string, number, number, number];
        this.seen(room, epoch, top);
        return base > 0 ? { epoch, top, oldest, base } : { epoch, top, oldest };
      }),
    );
  }

  read(room: string, query: HistoryQuery): Promise<StoredMessage[]> {
    try {
      checkKey('room', room);
    } catch (error) {
      return Promise.reject(error);
    }
    const limit = readLimit(query, this.retention);
    if (limit === 0 || Number.isNaN(query.after) || Number.isNaN(query.before)) {
      return Promise.resolve([]);
    }
    // Ids below `before` and above `after`; with `after`, the oldest of them (paging
    // forward), otherwise the newest (paging back).
    const hi = query.before !== undefined ? Math.ceil(query.before) - 1 : Number.POSITIVE_INFINITY;
    const end = hi >= Number.MAX_SAFE_INTEGER ? '+' : streamId(hi);
    const lo = query.after !== undefined ? Math.max(Math.floor(query.after) + 1, 0) : 0;
    if (hi < 1 || hi < lo || lo >= Number.MAX_SAFE_INTEGER) return Promise.resolve([]);
    const msgs = this.keys(room).msgs;
    return this.track(
      this.afterPrune(async () => {
        if (query.after !== undefined) {
          const entries = await this.redis.xrange(msgs, streamId(lo), end, 'COUNT', limit);
          return entries.map((e) => toMessage(room, e));
        }
        const entries = await this.redis.xrevrange(msgs, end, '-', 'COUNT', limit);
        return entries.reverse().map((e) => toMessage(room, e));
      }),
    );
  }

  prune(now: number): Promise<void> {
    return this.track(this.pruneAll(now));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    await Promise.allSettled([...this.inflight]);
    if (!this.owned) return;
    try {
      await this.redis.quit();
    } catch {
      // Not connected: nothing is waiting for a reply any more.
      this.redis.disconnect();
    }
  }

  private keys(room: string) {
    const tag = roomTag(room);
    const base = `${this.prefix}h:{r${tag}}:`;
    return {
      tag,
      top: `${base}top`,
      epoch: `${base}epoch`,
      msgs: `${base}msgs`,
      cids: `${base}cids`,
      base: `${base}base`,
    };
  }

  /**
   * Records that `id` of `room` was handed out under `epoch` (appended here, read, or
   * delivered by the broker): should Redis come back with a lower top under that epoch,
   * the next script to touch the room rotates the epoch.
   */
  seen(room: string, epoch: string, id: number): void {
    const known = this.highest.get(room);
    if (known !== undefined && known.epoch === epoch) {
      if (id > known.top) known.top = id;
      return;
    }
    if (known === undefined && this.highest.size >= MAX_REMEMBERED_ROOMS) {
      // Rooms touched longest ago go first: their members have most likely left.
      this.highest.delete(this.highest.keys().next().value!);
    }
    this.highest.delete(room);
    this.highest.set(room, { epoch, top: id });
  }

  private roomsKey(): string {
    return `${this.prefix}h:rooms`;
  }

  /**
   * Fresh for every call: it becomes the epoch only if the room has none, and after Redis
   * lost its data the new epoch must differ from every earlier one.
   */
  private epochCandidate(room: string): string {
    return roomEpoch(newSeed(this.newId), room);
  }

  private track<T>(operation: Promise<T>): Promise<T> {
    this.inflight.add(operation);
    const forget = () => this.inflight.delete(operation);
    operation.then(forget, forget);
    return operation;
  }

  private async afterPrune<T>(read: () => Promise<T>): Promise<T> {
    const pruning = this.pruning;
    if (pruning !== undefined) await pruning.catch(() => {});
    return read();
  }

  private pruneAll(now: number): Promise<void> {
    const cutoff = ageCutoff(now, this.retention);
    if (cutoff === Number.NEGATIVE_INFINITY) return Promise.resolve();
    return this.exclusive(() => this.pruneRooms(cutoff));
  }

  /** Runs a prune after any in progress, and makes reads wait for it from this moment on. */
  private exclusive(step: () => Promise<void>): Promise<void> {
    const previous = this.pruning ?? Promise.resolve();
    const run = previous
      .catch(() => {})
      .then(step)
      .finally(() => {
        if (this.pruning === run) this.pruning = undefined;
      });
    this.pruning = run;
    return run;
  }

  private async pruneRooms(cutoff: number): Promise<void> {
    const rooms = this.roomsKey();
    let cursor = '0';
    // SSCAN returns every member present throughout the scan; each step is bounded.
    do {
      const [next, tags] = await this.redis.sscan(rooms, cursor, 'COUNT', PRUNE_SCAN_COUNT);
      cursor = next;
      await Promise.all(
        tags.map((tag) => {
          const base = `${this.prefix}h:{r${tag}}:`;
          return this.scripts.confabHistoryPrune(`${base}msgs`, `${base}cids`, String(cutoff));
        }),
      );
    } while (cursor !== '0');
  }

  /** The timer's prune: one node per interval does it, the others find the lock taken. */
  private prunePeriodically(now: number, interval: number): Promise<void> {
    const cutoff = ageCutoff(now, this.retention);
    if (this.closed) return Promise.resolve();
    const lock = `${this.prefix}h:prune-lock`;
    const lockMs = Math.max(1, Math.floor(interval / 2));
    return this.track(
      this.exclusive(async () => {
        const taken = await this.redis.set(lock, '1', 'PX', lockMs, 'NX');
        if (taken !== null) await this.pruneRooms(cutoff);
      }),
    );
  }
}

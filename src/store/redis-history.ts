import { createHash, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
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
import { setNewest } from '../core/newest.js';
import {
  ageCutoff,
  checkKey,
  checkMaxRooms,
  checkRetention,
  checkSenders,
  cidName,
  DEFAULT_MAX_HISTORY_ROOMS,
  DEFAULT_PRUNE_INTERVAL_MS,
  type HistoryStoreOptions,
  newSeed,
  readLimit,
  roomEpoch,
  senderOrigin,
  wellFormed,
} from './common.js';
import { Command } from './ioredis.js';
import { commandClient } from './redis-client.js';

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
  /**
   * Rooms whose messages are kept (0: no limit). Past it, checked by the node whose
   * append made a room hold messages again and by the prune (each interval, by one node
   * of those sharing the Redis), every message of the rooms written to least recently
   * goes, and those rooms are then forgotten as rooms that lost their messages by age
   * are. Default DEFAULT_MAX_HISTORY_ROOMS.
   */
  readonly maxRooms?: number;
  /**
   * Whether `now` can be trusted yet (default: always). Until it can, the timer's prune
   * waits: a node that has not yet read the cluster's clock would prune by its own, which
   * may be off by a month.
   */
  readonly timeKnown?: () => boolean;
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
 * The payload the append script publishes for one call, a JSON array:
 * ["C", epoch, first id, last id, [at, from, msg, origin], ...], the new messages of the
 * call in id order (duplicates are not published), so their ids are first, first + 1, ...
 * last. Each chat is encoded by the appending node, not by Redis's single thread; the ids
 * come first so that a node that has handed them over already (its own chats) can skip
 * the rest unparsed. `origin` (senderOrigin of the draft's sender) is left out for a draft
 * without a sender, and by versions before it.
 */
export type PublishedChats = [
  tag: 'C',
  epoch: string,
  first: number,
  last: number,
  ...chats: PublishedChat[],
];
/**
 * An action (IRC's /me) has a fifth element, 1, and then its origin, or 0 without one.
 * Versions before it take it for chat.
 */
export type PublishedChat = [
  at: number,
  from: string,
  msg: string,
  origin?: string | 0,
  action?: 1,
];

/**
 * How long the epoch of a room nobody has written to is kept. Asking about a room
 * creates its epoch (its first message must get the same one), and clients can name
 * any room: a client walking through new rooms made one key each, and at a week each
 * one address's connections filled Redis by gigabytes a day. So the key lives this long
 * past the last time a node asked about the room or kept it (`keep`: every node with
 * members in the room does, every KEEP_INTERVAL_MS), and the first append makes it
 * permanent. A room whose key expired while it stayed occupied (a node of an older
 * version, or one that could not reach Redis meanwhile) gets a new epoch at its first
 * message, which its members are told as a gap although nothing was lost.
 */
export const EMPTY_EPOCH_TTL_S = 120;

/** How often a node keeps the epochs of the rooms it has members in: a quarter of their life. */
export const KEEP_INTERVAL_MS = (EMPTY_EPOCH_TTL_S * 1000) / 4;

/** Rooms kept by one script call. */
const KEEP_BATCH = 500;

/**
 * Renews the life of those of a room's keys that expire (a room never written to, or one
 * that lost all its messages and is being forgotten): its top, epoch, floor and base,
 * which get one expiry together and must keep it, since a top gone with its epoch left
 * would give the room's ids out again under that epoch.
 */
const RENEW_LUA = `
-- One moment for all the keys (PEXPIREAT): EXPIRE takes the clock at each call, and a top
-- expiring a millisecond before its epoch leaves a moment in which a join renews the epoch.
local function expire_at(ttl)
  local now = redis.call('TIME')
  return string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ttl) * 1000)
end
local function renew(ttl, top, epoch, floor, base)
  if redis.call('PTTL', epoch) > 0 or redis.call('PTTL', top) > 0 then
    local at = expire_at(ttl)
    for _, key in ipairs({top, epoch, floor, base}) do
      if redis.call('PTTL', key) > 0 then redis.call('PEXPIREAT', key, at) end
    end
  end
end
`;

/** KEYS: per room its top, epoch, floor and base. ARGV: seconds. Rooms written to are left alone. */
const KEEP_LUA = `${RENEW_LUA}
for i = 1, #KEYS, 4 do renew(ARGV[1], KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3]) end
return 0
`;

/** Rooms whose highest id a node remembers; beyond it the least recently new are forgotten. */
const MAX_REMEMBERED_ROOMS = 100_000;

/** Rooms one ZSCAN or SSCAN step, or one step of the maxRooms check, hands over. */
const PRUNE_SCAN_COUNT = 100;

/**
 * Appends of one room and one event-loop turn that go in one script call. Bounded so
 * that one call keeps Redis's single thread only briefly; the append script refuses more,
 * and its count cap finds the entry holding the floor by this bound. Lowering it is safe;
 * raising it needs a cluster upgraded at once (older nodes would trim the larger entries).
 */
const MAX_BATCH = 64;

/**
 * Stored text (UTF-16 units of the chats' JSON, escapes included) past which a room's next
 * append of the turn starts another call. A call's messages become one stream entry, and
 * reading one of them (a page's first, or a page of one) fetches the whole entry: one short
 * message sharing its entry with long ones cost Redis some 200 KB a read, at the flood
 * rate of every connection of an address. 64 chats of a chat line's length still share
 * one entry; long messages get entries of their own. (A repeated cid's message is cut out
 * of its entry in Redis: only it comes back.)
 */
const MAX_BATCH_TEXT = 12 * 1024;

// Per room, under one hash tag (so a Cluster would keep them in one slot, as scripts need):
//   top    the highest id ever assigned; never decremented; expires only with the epoch,
//          floor and base, once the room has no messages left (PRUNE_LUA: forgotten)
//   epoch  the room's epoch, created with SET NX when first needed
//   msgs   the stream: one entry per append script call, entry id `<first id>-0`, fields
//          b: the call's new messages as `[at,from,msg,origin],...` (what the script
//          publishes), ids first, first + 1, ...; then, if any of them had a cid, c: a JSON
//          object from position in b (from 0) to cid, and o: where each such message lies
//          in b, `,<position>:<first byte, from 1>:<bytes>` each, then `,`, so that a repeated
//          cid is answered with its message alone (older entries have no o: with all of
//          theirs). Entries written by earlier versions
//          hold one message each, fields at, j[, cid] or at, from, msg[, cid]: they are
//          read as well.
//   floor  the lowest id readers may see: raised by the count cap and by age retention,
//          never lowered
//   cidz   sorted set: `<byte length of from>:<from><cid>`, scored by its message's id
//   base   the top when the epoch was rotated after a roll-back (absent: 0)
// And for all rooms, `h:written`: a sorted set of the tags of the rooms holding messages,
// scored by Redis's time (ms) of each one's last append call; age retention goes through
// it, and maxRooms takes the messages of its lowest.
//
// One entry per call, not per message: Redis's work per chat is then a few string
// operations in Lua, not an INCR and an XADD (about 7 µs per chat in W-pipe before).
// The entry holding an id is the one with the highest entry id at or below it, so reads
// and age retention start from that entry and hide what lies below the floor; the cap,
// which runs in every call once a room is full, trims below the lowest id that entry can
// start at (MAX_BATCH - 1 below the floor) instead of reading it.
// The stream is trimmed approximately (`MINID ~`: Redis drops whole stream nodes only,
// instead of marking entries deleted one by one and stepping over them on every later
// trim), so it can hold up to one stream node of entries below `floor`. Cids of messages
// below the floor are dropped by score, without reading the messages they belonged to.
//
// A roll-back (Redis restarted from an older RDB or AOF) keeps the epoch key with a top
// below ids already handed out: the next append would give them out again under the same
// epoch. Each node remembers the highest id it has seen per room and epoch and passes it
// to the scripts, which rotate the epoch when the top is below it: atomically, so the
// first node to notice rotates it once and the others find an epoch they have not seen.
// Scripts return integers and strings only: booleans differ between RESP2 and RESP3.

/** Helpers of every script that reads the stream. */
const STREAM_LUA = `
local function int(n) return string.format('%d', n) end
-- The stream entry holding id n (entries start at their first id), or nil.
local function holding(msgs, n)
  return redis.call('XREVRANGE', msgs, int(n) .. '-0', '-', 'COUNT', 1)[1]
end
`;

/**
 * The room's epoch after the roll-back check, given the epoch and top the caller read
 * (false and 0 when absent) and base_key; ARGV[1] is the epoch candidate, seen_epoch and
 * seen_top what this node has seen. The callers read the room's keys with one MGET: a
 * redis.call costs a script some 0.4 µs beside the command's own 0.1 for a GET
 * (bench/append-script.ts: 9.2 µs a one-chat call, against 9.6 with a GET each).
 */
const ROTATE_LUA = `${STREAM_LUA}
local function current_epoch(epoch, top, epoch_key, base_key, seen_epoch, seen_top)
  if not epoch then return nil end
  if epoch == seen_epoch and top < seen_top then
    epoch = ARGV[1]
    -- The new epoch and its base live as long as the epoch they replace: in a room being
    -- forgotten, a top gone with them left would number from 1 under the new epoch.
    local left = redis.call('PTTL', epoch_key)
    if left > 0 then
      redis.call('SET', epoch_key, epoch, 'PX', left)
      redis.call('SET', base_key, top, 'PX', left)
    else
      redis.call('SET', epoch_key, epoch)
      redis.call('SET', base_key, top)
    end
  end
  return epoch
end
`;

/**
 * KEYS: top, epoch, msgs, cidz, rooms, floor, base. ARGV: epoch candidate, maxMessages,
 * room tag, channel ('' for none), seen epoch, seen top, then either 'B' and the count of
 * messages, then all their [at, from, msg] as JSON joined by commas (a call without cids),
 * or per message its [at, from, msg] as JSON; a message with a cid has two arguments
 * before it: 'c' and the cid's key in cidz, then the cid as JSON. At most MAX_BATCH
 * messages: a call with more is refused before anything is written (the count cap trims
 * relying on no stream entry holding more). Returns epoch, the top
 * before, 1 if the room now holds messages and did not before (else 0), then for each
 * duplicate (if any) its position in ARGV's messages (from 1), the id it repeats, and that
 * message as a stream entry of its own (its id and fields; '' and none when the id is this
 * call's; an entry of an earlier version's as it is): the other messages got the ids
 * after the top before, in order.
 * Exported for the tests, which call it with arguments the store never sends.
 */
export const APPEND_LUA = `${ROTATE_LUA}
-- No entry holds more (the count cap trims by it).
local MAX_ENTRY = ${MAX_BATCH}
local top_key, epoch_key, msgs, cidz, rooms = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local floor_key = KEYS[6]
local max = tonumber(ARGV[2])
local channel = ARGV[4]
-- 'B' (66) and a count: the call's messages, none with a cid, already joined in ARGV[8].
-- The count cannot be checked against the text (a message may hold '],['): it is taken as
-- given, once it is a whole number, and that is checked before anything is written.
local count, body
if ARGV[7] and string.byte(ARGV[7], 1) == 66 then
  count, body = tonumber(string.sub(ARGV[7], 2)), ARGV[8]
  if not count or count < 1 or count % 1 ~= 0 or not body then
    return redis.error_reply('ERR confab append: bad message count')
  end
end
-- The messages of a call one argument each (those with a cid take three).
local given = count
if not given then
  given = 0
  local b = 7
  while b <= #ARGV do
    given = given + 1
    b = b + (string.byte(ARGV[b], 1) == 99 and 3 or 1)
  end
end
if given > MAX_ENTRY then
  return redis.error_reply('ERR confab append: more than ' .. int(MAX_ENTRY) .. ' messages')
end
local read = redis.call('MGET', epoch_key, top_key, floor_key)
local before = tonumber(read[2] or '0')
local floor = tonumber(read[3] or '1')
local epoch = current_epoch(read[1], before, epoch_key, KEYS[7], ARGV[5], tonumber(ARGV[6]))
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', epoch_key, epoch)
end
local out = {epoch, before, 0}
-- The entry id and fields a repeated cid is answered with: of a batch entry, only its
-- message, as an entry of its own, cut out by the place its o field gives (the whole
-- entry, up to MAX_BATCH_TEXT of text, for each re-send of a few bytes would swamp the
-- node's link and Redis's output buffers). Entries without o, as they are.
local function repeated(entry, id, cid)
  local fields = entry[2]
  if fields[1] ~= 'b' or fields[5] ~= 'o' then return entry[1], fields end
  local k = id - tonumber(string.match(entry[1], '^%d+'))
  local from, length = string.match(fields[6], ',' .. int(k) .. ':(%d+):(%d+),')
  if not from then return entry[1], fields end
  from, length = tonumber(from), tonumber(length)
  local chat = string.sub(fields[2], from, from + length - 1)
  return int(id) .. '-0', {'b', chat, 'c', '{"0":' .. cid .. '}'}
end
-- added: cid key -> id, for this call's repeats; scored: the same as ZADD's arguments;
-- places: per message with a cid, its position, first byte in b and length; size: b's so far.
local chats, cids, added, scored, places, size = {}, {}, {}, {}, {}, 0
local b, n = 7, 0
while not count and b <= #ARGV do
  n = n + 1
  local json, field, cid = ARGV[b], nil, nil
  -- 'c' (99) first: the cid's key and the cid follow, then the message.
  if string.byte(json, 1) == 99 then
    field, cid, json = string.sub(json, 2), ARGV[b + 1], ARGV[b + 2]
    b = b + 3
  else
    b = b + 1
  end
  local dup
  if field then
    -- Only while the first is within the cap (age retention raises the floor past it).
    local lowest = math.max(floor, before + #chats - max + 1)
    local prior = added[field]
    if prior then
      if prior >= lowest then dup = {n, prior, '', {}} end
    else
      prior = tonumber(redis.call('ZSCORE', cidz, field))
      if prior and prior >= lowest then
        local entry = holding(msgs, prior)
        if entry then dup = {n, prior, repeated(entry, prior, cid)} end
      end
    end
  end
  if dup then
    for _, v in ipairs(dup) do out[#out + 1] = v end
  else
    chats[#chats + 1] = json
    if field then
      added[field] = before + #chats
      scored[#scored + 1] = before + #chats
      scored[#scored + 1] = field
      cids[#cids + 1] = '"' .. int(#chats - 1) .. '":' .. cid
      places[#places + 1] = int(#chats - 1) .. ':' .. int(size + 1) .. ':' .. int(#json)
    end
    size = size + #json + 1
  end
end
if not count then
  count, body = #chats, table.concat(chats, ',')
end
if count > 0 then
  local top = before + count
  -- Before the top: once raised, a later failure of this call would leave the room out of
  -- retention for good, with keys that may expire. ZADD first, as out of memory Redis
  -- refuses it as a script's first write (but not PERSIST, nor anything after either).
  local now = redis.call('TIME')
  if redis.call('ZADD', rooms, int(now[1] * 1000 + math.floor(now[2] / 1000)), ARGV[3]) == 1 then
    -- New to the rooms written, or being forgotten: kept for good from now on, and one
    -- more room holding messages (out[3]: the node checks maxRooms).
    out[3] = 1
    for _, key in ipairs({epoch_key, top_key, floor_key, KEYS[7]}) do redis.call('PERSIST', key) end
  end
  -- The top first: should a later write fail, its ids are skipped, never given out twice.
  redis.call('SET', top_key, int(top))
  if #cids > 0 then
    redis.call('XADD', msgs, int(before + 1) .. '-0', 'b', body, 'c', '{' .. table.concat(cids, ',') .. '}',
      'o', ',' .. table.concat(places, ',') .. ',')
    redis.call('ZADD', cidz, unpack(scored))
  else
    redis.call('XADD', msgs, int(before + 1) .. '-0', 'b', body)
  end
  if top - max + 1 > floor then
    floor = top - max + 1
    redis.call('SET', floor_key, int(floor))
    -- The entry holding the floor starts at most MAX_ENTRY - 1 below it: trimming below
    -- that keeps it without reading it (XREVRANGE would copy its text into Lua, a fifth
    -- of a busy room's call).
    redis.call('XTRIM', msgs, 'MINID', '~', int(math.max(floor - MAX_ENTRY + 1, 0)) .. '-0')
    redis.call('ZREMRANGEBYSCORE', cidz, '-inf', '(' .. int(floor))
  end
  -- Published in the step that numbers them, so every subscriber receives a room's
  -- messages in id order.
  if channel ~= '' then
    redis.call('PUBLISH', channel, '["C",' .. cjson.encode(epoch) .. ',' .. int(before + 1) .. ',' ..
      int(top) .. ',' .. body .. ']')
  end
end
return out
`;

/**
 * KEYS: top, epoch, msgs, floor, base. ARGV: epoch candidate, TTL for the epoch of a room
 * never written, seen epoch, seen top. Returns {epoch, top, oldest, base}.
 */
const ROOM_LUA = `${ROTATE_LUA}${RENEW_LUA}
local read = redis.call('MGET', KEYS[2], KEYS[1])
local top = tonumber(read[2] or '0')
local epoch = current_epoch(read[1], top, KEYS[2], KEYS[5], ARGV[3], tonumber(ARGV[4]))
if not epoch then
  epoch = ARGV[1]
  -- A new epoch lives no longer than the top it numbers on from, should that expire.
  local left = redis.call('PTTL', KEYS[1])
  if top == 0 then
    redis.call('SET', KEYS[2], epoch, 'EX', ARGV[2])
  elseif left > 0 then
    redis.call('SET', KEYS[2], epoch, 'PX', left)
  else
    redis.call('SET', KEYS[2], epoch)
  end
end
renew(ARGV[2], KEYS[1], KEYS[2], KEYS[4], KEYS[5])
local oldest = top + 1
local first = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
if first then
  oldest = math.max(tonumber(string.match(first[1], '^%d+')), tonumber(redis.call('GET', KEYS[4]) or '1'))
end
return {epoch, top, oldest, tonumber(redis.call('GET', KEYS[5]) or '0')}
`;

/**
 * KEYS: floor, msgs, top. ARGV: lowest id, highest id, limit (in messages), 'after' (the
 * oldest of the range) or 'before' (the newest), and 'ids' or 'entries'. The range starts
 * at the floor at the lowest and ends at the room's top at the highest. Returns that
 * lowest id, stream entries oldest first (the first may hold ids below the range), and 1
 * if they hold all of the range's ids there are, else 0.
 *
 * 'ids': the entries holding the page's ids, known before reading: an entry's id is its
 * first message's, and ids are consecutive unless a failed append skipped some, so this
 * is a page unless ids were skipped (then fewer; asked again with 'entries').
 * 'entries': `limit + 1` entries from the page's end, which hold at least `limit` ids; an
 * entry holds up to a turn's chats, so they may return up to 64 times the page.
 */
const READ_LUA = `${STREAM_LUA}
local lo = math.max(tonumber(ARGV[1]), tonumber(redis.call('GET', KEYS[1]) or '0'))
local hi = math.min(tonumber(ARGV[2]), tonumber(redis.call('GET', KEYS[3]) or '0'))
local limit = tonumber(ARGV[3])
if hi < lo or limit < 1 then return {lo, {}, 1} end
local first, last = math.max(lo, hi - limit + 1), hi
if ARGV[4] == 'after' then first, last = lo, math.min(hi, lo + limit - 1) end
local all = (first == lo and last == hi) and 1 or 0
if ARGV[5] == 'entries' then first, last = lo, hi end
local start = int(first) .. '-0'
local holder = holding(KEYS[2], first)
if holder then start = holder[1] end
if ARGV[5] == 'ids' then
  return {lo, redis.call('XRANGE', KEYS[2], start, int(last) .. '-0'), all}
end
if ARGV[4] == 'after' then
  return {lo, redis.call('XRANGE', KEYS[2], start, int(last) .. '-0', 'COUNT', int(limit + 1)), all}
end
local entries = redis.call('XREVRANGE', KEYS[2], int(last) .. '-0', start, 'COUNT', int(limit + 1))
local oldest_first = {}
for i = #entries, 1, -1 do oldest_first[#oldest_first + 1] = entries[i] end
return {lo, oldest_first, all}
`;

/**
 * KEYS: msgs, cidz, floor, top, epoch, base, rooms. ARGV: cutoff ('' for none: every
 * message goes), seconds, room tag, the room's score in rooms ('' for any), and with a
 * score, the rooms allowed (maxRooms). Hides the
 * oldest messages while they are older than the cutoff (stopping at the first young
 * enough, so stored ids stay consecutive even if the clock once stepped back) by raising
 * the floor to that one, drops the entries wholly below it and the cids below it. It looks
 * from the floor up: a young message below it must not keep the older ones after it.
 * A room left with no message is forgotten: out of rooms, its stream and cids gone, and its
 * top and epoch expiring unless it is written to, asked about or kept before (a member
 * coming back later finds a new epoch). With a score, only if the room was not written to
 * since it had that score, and while more rooms than allowed hold messages. Exported for
 * the tests.
 */
export const PRUNE_LUA = `${STREAM_LUA}${RENEW_LUA}
local msgs, cidz = KEYS[1], KEYS[2]
-- A choice from the rooms past the limit: stale if the room was written to since, or if
-- the rooms are within the limit by now (other nodes emptied some meanwhile).
if ARGV[4] ~= '' and (redis.call('ZSCORE', KEYS[7], ARGV[3]) ~= ARGV[4] or
    redis.call('ZCARD', KEYS[7]) <= tonumber(ARGV[5])) then
  return 0
end
local keep, keep_entry
if ARGV[1] ~= '' then
  local cutoff = tonumber(ARGV[1])
  local floor = tonumber(redis.call('GET', KEYS[3]) or '1')
  local start = '-'
  local holder = holding(msgs, floor)
  if holder then start = holder[1] end
  repeat
    local batch = redis.call('XRANGE', msgs, start, '+', 'COUNT', 100)
    for _, e in ipairs(batch) do
      local id, f = tonumber(string.match(e[1], '^%d+')), e[2]
      if f[1] == 'b' then
        for i, chat in ipairs(cjson.decode('[' .. f[2] .. ']')) do
          local at = chat[1]
          if id + i - 1 >= floor and type(at) == 'number' and at >= cutoff then
            keep = id + i - 1
            break
          end
        end
      elseif id >= floor and (tonumber(f[2]) or cutoff - 1) >= cutoff then
        keep = id
      end
      if keep then
        keep_entry = e[1]
        break
      end
    end
    if keep or #batch < 100 then break end
    start = '(' .. batch[#batch][1]
  until false
  if keep then
    -- XTRIM first: out of memory, Redis refuses a script's first write that may grow memory
    -- (SET may, XTRIM may not) but none after it, and pruning is what frees memory then.
    redis.call('XTRIM', msgs, 'MINID', keep_entry)
    if keep > floor then redis.call('SET', KEYS[3], int(keep)) end
    redis.call('ZREMRANGEBYSCORE', cidz, '-inf', '(' .. int(keep))
    return 0
  end
end
redis.call('DEL', msgs, cidz)
redis.call('ZREM', KEYS[7], ARGV[3])
local at = expire_at(ARGV[2])
for _, key in ipairs({KEYS[4], KEYS[5], KEYS[3], KEYS[6]}) do redis.call('PEXPIREAT', key, at) end
return 0
`;

/**
 * KEYS: an earlier version's set of rooms written to, and h:written. ARGV: the score, then
 * tags. Moves each tag still in the set. SREM first: out of memory, Redis refuses a
 * script's first write that may grow memory (ZADD) but none after it, and the prune after
 * this is what frees memory then.
 */
const ADOPT_LUA = `
for i = 2, #ARGV do
  if redis.call('SREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[2], 'NX', ARGV[1], ARGV[i])
  end
end
return 0
`;

type PruneRooms = (rooms: { tag: string; score: string }[], age: string) => Promise<void>;

interface Scripts {
  confabHistoryRoom(...args: (string | number)[]): Promise<unknown>;
  confabHistoryRead(...args: (string | number)[]): Promise<unknown>;
  confabHistoryPrune(...args: (string | number)[]): Promise<unknown>;
  confabHistoryKeep(...args: (string | number)[]): Promise<unknown>;
  confabHistoryAdopt(...args: (string | number)[]): Promise<unknown>;
}

/** Text JSON.stringify would escape, or not ASCII: all but printable ASCII other than `"`, `\`. */
const NOT_PLAIN = /[^\x20\x21\x23-\x5b\x5d-\x7e]/;

const APPEND_SHA = createHash('sha1').update(APPEND_LUA).digest('hex');

/** Connections the append script went over in full (EVAL): later calls name it by its SHA. */
const appendLoaded = new WeakSet<object>();

/**
 * A message as its history entry holds it, `[at, from, msg, origin]` (PublishedChat);
 * `plain` when the JSON is printable ASCII, so its length is its byte count.
 */
function chatJson(item: Pick<Pending, 'at' | 'from' | 'msg' | 'origin' | 'action'>): {
  json: string;
  plain: boolean;
} {
  const { at, from, msg, origin, action } = item;
  const plain = Number.isFinite(at) && !NOT_PLAIN.test(from) && !NOT_PLAIN.test(msg);
  if (action) {
    const chat: PublishedChat = [at, from, msg, origin ?? 0, 1];
    return { json: JSON.stringify(chat), plain };
  }
  // JSON.stringify's own output for such text, a few times cheaper (this runs per chat). An
  // origin is base64url, which needs no escaping.
  let json: string;
  if (plain) json = `[${at},"${from}","${msg}"${origin === undefined ? '' : `,"${origin}"`}]`;
  else json = JSON.stringify(origin === undefined ? [at, from, msg] : [at, from, msg, origin]);
  return { json, plain };
}

/** One RESP bulk string; `bytes` when the caller knows the text is ASCII. */
function bulk(text: string, bytes = Buffer.byteLength(text)): string {
  return `$${bytes}\r\n${text}\r\n`;
}

/**
 * One append script call, written out here instead of by ioredis's script command, which
 * copies and flattens the argument list (two per chat) and measures every argument again:
 * over a tenth of a busy node's time went there. As ioredis does for its scripts, the
 * first call on a connection sends the script itself, and later ones its SHA.
 */
class AppendCall extends Command {
  private socket: object | undefined;

  constructor(
    private readonly body: string,
    private readonly count: number,
  ) {
    super('evalsha', [], { replyEncoding: 'utf8' });
  }

  override toWritable(socket: object): string {
    this.socket = socket;
    const full = !appendLoaded.has(socket);
    if (full) appendLoaded.add(socket);
    this.name = full ? 'eval' : 'evalsha';
    const script = full ? APPEND_LUA : APPEND_SHA;
    return `*${this.count + 3}\r\n${bulk(this.name)}${bulk(script)}${bulk('7')}${this.body}`;
  }

  /** Redis answered NOSCRIPT (its scripts were flushed): the next call sends it in full. */
  forget(): void {
    if (this.socket !== undefined) appendLoaded.delete(this.socket);
  }
}

/** An append waiting for its turn's script call. */
interface Pending {
  readonly at: number;
  readonly from: string;
  readonly msg: string;
  readonly cid: string | undefined;
  /** The name the cid is found and kept under (cidName). */
  readonly cidName: string | undefined;
  /** What the chat carries of its sender (PublishedChat). */
  readonly origin: string | undefined;
  readonly action: boolean;
  /** The chat as its entry holds it (chatJson): made once, measured for the batch's bound. */
  readonly json: string;
  readonly plain: boolean;
  resolve(appended: Appended): void;
  reject(error: Error): void;
}

/** One script call's appends, all to one room. */
interface Batch {
  readonly room: string;
  readonly items: Pending[];
  text: number;
}

type StreamEntry = [id: string, fields: string[]];

/** Sender and cid as one key; the byte length keeps ("ab","c") apart from ("a","bc"). */
function cidKey(from: string, cid: string): string {
  return `${Buffer.byteLength(from)}:${from}${cid}`;
}

function idOf(entryId: string): number {
  return Number.parseInt(entryId, 10);
}

/** An entry written by an earlier version: one message. */
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
      case 'j': {
        const [, f, m] = JSON.parse(value) as PublishedChat;
        from = f;
        msg = m;
        break;
      }
      case 'cid':
        cid = value;
        break;
    }
  }
  return { room, id: idOf(entryId), at, from, msg, ...(cid !== undefined ? { cid } : {}) };
}

/** The messages a stream entry holds, in id order. */
function messagesOf(room: string, entry: StreamEntry): StoredMessage[] {
  const [entryId, fields] = entry;
  if (fields[0] !== 'b') return [toMessage(room, entry)];
  const first = idOf(entryId);
  const chats = JSON.parse(`[${fields[1]}]`) as PublishedChat[];
  const cids = fields[2] === 'c' ? (JSON.parse(fields[3]!) as Record<string, string>) : undefined;
  return chats.map(([at, from, msg, origin, action], i) => {
    const cid = cids?.[i];
    let message: StoredMessage =
      cid === undefined
        ? { room, id: first + i, at, from, msg }
        : { room, id: first + i, at, from, msg, cid };
    if (typeof origin === 'string') message = { ...message, origin };
    return asAction(message, action === 1);
  });
}

/**
 * Room history in Redis, shared by every confab process connected to the same Redis.
 *
 * Appends run in Lua scripts (one per room and event-loop turn), so concurrent appends
 * from several processes get ids 1, 2, 3... exactly once per room, and a message is
 * stored (and, later, published) in the same atomic step that numbers it. Durability is what Redis is configured for: an
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
  private readonly maxRooms: number;
  private readonly newId: (() => string) | undefined;
  /** The random part of this store's epoch candidates (see epochCandidate). */
  private readonly candidates = randomBytes(12).toString('base64url');
  private candidateCount = 0;
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly onError: ((error: Error) => void) | undefined;
  /** A check of maxRooms is running (`checkRooms`), and another was asked for meanwhile. */
  private checking = false;
  private checkAgain = false;
  /** Operations not yet settled, so close() sends its QUIT after them. */
  private readonly inflight = new Set<Promise<unknown>>();
  /** Per room, the highest id this node has seen and its epoch (see `seen`). */
  private readonly highest = new Map<string, { epoch: string; top: number }>();
  /** A prune in progress: reads and room() wait for it, so they never see what it removes. */
  private pruning: Promise<void> | undefined;
  private closed = false;
  /** Appends waiting for this turn's script calls, in call order. */
  private batches: Batch[] = [];
  /** Per room, the batch this turn's next append joins. */
  private open = new Map<string, Batch>();

  constructor(options: RedisHistoryOptions) {
    checkRetention(options.retention);
    this.retention = options.retention;
    this.maxRooms = options.maxRooms ?? DEFAULT_MAX_HISTORY_ROOMS;
    checkMaxRooms(this.maxRooms);
    this.newId = options.newId;
    this.onError = options.onError;
    this.prefix = options.prefix ?? DEFAULT_REDIS_PREFIX;
    this.publish = options.publish ?? false;
    this.owned = typeof options.redis === 'string';
    this.redis = typeof options.redis === 'string' ? commandClient(options.redis) : options.redis;
    if (this.owned) {
      const onError = options.onError;
      // Without a listener ioredis prints every reconnect failure to stderr.
      this.redis.on('error', (error: Error) => onError?.(error));
    }
    this.redis.defineCommand('confabHistoryRoom', { lua: ROOM_LUA, numberOfKeys: 5 });
    this.redis.defineCommand('confabHistoryRead', { lua: READ_LUA, numberOfKeys: 3 });
    this.redis.defineCommand('confabHistoryPrune', { lua: PRUNE_LUA, numberOfKeys: 7 });
    this.redis.defineCommand('confabHistoryKeep', { lua: KEEP_LUA });
    this.redis.defineCommand('confabHistoryAdopt', { lua: ADOPT_LUA, numberOfKeys: 2 });
    this.scripts = this.redis as unknown as Scripts;

    const interval = options.pruneIntervalMs ?? DEFAULT_PRUNE_INTERVAL_MS;
    if (interval > 0 && (this.retention.maxAgeMs > 0 || this.maxRooms > 0)) {
      const now = options.now ?? Date.now;
      const timeKnown = options.timeKnown ?? (() => true);
      const onError = options.onError;
      this.timer = setInterval(() => {
        if (!timeKnown()) return;
        this.prunePeriodically(now(), interval).catch((error: Error) => onError?.(error));
      }, interval);
      this.timer.unref();
    }
  }

  /**
   * Appends of one event-loop turn are sent together, one script call per room (at most
   * MAX_BATCH messages, and MAX_BATCH_TEXT of text unless one message is longer, in call
   * order), which numbers, stores and publishes them in one step: a busy room costs Redis
   * one call and one PUBLISH per turn, not per message.
   */
  append(room: string, draft: MessageDraft): Promise<Appended> {
    if (this.closed) return Promise.reject(new Error('history store is closed'));
    try {
      checkKey('room', room);
      checkSenders(draft);
    } catch (error) {
      return Promise.reject(error);
    }
    const cid = draft.cid === undefined ? undefined : wellFormed(draft.cid);
    const name = cid === undefined ? undefined : cidName(draft);
    const msg = wellFormed(draft.msg);
    const origin = draft.sender === undefined ? undefined : senderOrigin(draft.sender);
    const action = draft.action === true;
    const { json, plain } = chatJson({ at: draft.at, from: draft.from, msg, origin, action });
    // Tracked by its batch's script call (close() sends what is waiting first).
    return new Promise<Appended>((resolve, reject) => {
      const text = json.length;
      let batch = this.open.get(room);
      if (
        batch === undefined ||
        batch.items.length >= MAX_BATCH ||
        batch.text + text > MAX_BATCH_TEXT
      ) {
        batch = { room, items: [], text: 0 };
        this.open.set(room, batch);
        this.batches.push(batch);
      }
      batch.text += text;
      batch.items.push({
        at: draft.at,
        from: draft.from,
        msg,
        cid,
        cidName: name,
        origin,
        action,
        json,
        plain,
        resolve,
        reject,
      });
      if (this.batches.length === 1 && batch.items.length === 1) {
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    const batches = this.batches;
    this.batches = [];
    // A new map, not clear(): V8's clear() leaves the old table (in the old generation, as
    // this store is long-lived) holding this turn's batches until the next full collection,
    // so every scavenge until then promoted the chats, promises and replies they reach
    // (about 1 MB per scavenge in W-pipe, and 4 ms pauses instead of 1.3).
    this.open = new Map();
    // Several rooms' calls in one write, as autopipelining would (they are sent directly).
    const stream =
      batches.length > 1 && this.redis.status === 'ready' ? this.redis.stream : undefined;
    stream?.cork();
    try {
      for (const batch of batches) this.appendBatch(batch);
    } finally {
      stream?.uncork();
    }
  }

  private appendBatch({ room, items }: Batch): void {
    const keys = this.keys(room);
    const seen = this.highest.get(room);
    const head = [
      keys.top,
      keys.epoch,
      keys.msgs,
      keys.cidz,
      this.writtenKey(),
      keys.floor,
      keys.base,
      this.epochCandidate(room),
      String(this.retention.maxMessages),
      keys.tag,
      this.publish ? roomChannel(this.prefix, room) : '',
      seen?.epoch ?? '',
      String(seen?.top ?? 0),
    ];
    let body = '';
    // Put before the keys as ioredis does for the other scripts, should the client have one.
    const keyPrefix = this.redis.options.keyPrefix ?? '';
    for (let i = 0; i < head.length; i++) body += bulk(i < 7 ? keyPrefix + head[i]! : head[i]!);
    let count = head.length;
    if (items.every((item) => item.cid === undefined)) {
      // The common call: no cids to dedupe, so the messages go joined, as one argument
      // the script stores and publishes as it is, instead of one per message to parse.
      let joined = '';
      let plainAll = true;
      for (let i = 0; i < items.length; i++) {
        const { json, plain } = items[i]!;
        joined += i === 0 ? json : `,${json}`;
        plainAll &&= plain;
      }
      body += bulk(`B${items.length}`) + bulk(joined, plainAll ? joined.length : undefined);
      count += 2;
    } else {
      for (const item of items) {
        const { json, plain } = item;
        if (item.cid === undefined) {
          body += bulk(json, plain ? json.length : undefined);
          count += 1;
        } else {
          body +=
            bulk(`c${cidKey(item.cidName ?? item.from, item.cid)}`) +
            bulk(JSON.stringify(item.cid)) +
            bulk(json, plain ? json.length : undefined);
          count += 3;
        }
      }
    }
    this.track(this.sendAppend(body, count)).then(
      (reply) => {
        const r = reply as (string | number)[];
        const epoch = r[0] as string;
        let next = (r[1] as number) + 1;
        let dup = 3;
        // This call's new messages, should a later one repeat the cid of one of them.
        const made: StoredMessage[] = [];
        for (let i = 0; i < items.length; i++) {
          const item = items[i]!;
          if (r[dup] === i + 1) {
            const id = r[dup + 1] as number;
            const entryId = r[dup + 2] as string;
            const stored =
              entryId === ''
                ? made[id - (r[1] as number) - 1]
                : messagesOf(room, [entryId, r[dup + 3] as unknown as string[]]).find(
                    (m) => m.id === id,
                  );
            // The first message with the cid, as stored (its entry is in the reply); its
            // origin is the sender's, known to the caller.
            const first = stored ?? {
              at: item.at,
              from: item.from,
              msg: item.msg,
              ...(item.action ? { action: true as const } : {}),
            };
            const message: StoredMessage = {
              room,
              id,
              at: first.at,
              from: first.from,
              msg: first.msg,
              ...(item.cid !== undefined ? { cid: item.cid } : {}),
              ...(first.action === true ? { action: true as const } : {}),
            };
            dup += 4;
            item.resolve({ message, epoch, duplicate: true });
          } else {
            const id = next++;
            // Without a spread: this runs for every chat.
            let message: StoredMessage =
              item.cid === undefined
                ? { room, id, at: item.at, from: item.from, msg: item.msg }
                : { room, id, at: item.at, from: item.from, msg: item.msg, cid: item.cid };
            message = asAction(message, item.action);
            if (r.length > 3) made.push(message);
            item.resolve({ message, epoch, duplicate: false });
          }
        }
        if (next > 1) this.seen(room, epoch, next - 1);
        // One more room holding messages: new to Redis, or one being forgotten.
        if (r[2] === 1 && this.maxRooms > 0) this.checkRooms();
      },
      (error: unknown) => {
        const e = error instanceof Error ? error : new Error(String(error));
        for (const item of items) item.reject(e);
      },
    );
  }

  private sendAppend(body: string, count: number): Promise<unknown> {
    const call = new AppendCall(body, count);
    this.redis.sendCommand(call);
    return call.promise.catch((error: unknown) => {
      // Not run: safe to send again, in full this time.
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
      call.forget();
      const again = new AppendCall(body, count);
      this.redis.sendCommand(again);
      return again.promise;
    });
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
          keys.floor,
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

  /**
   * Keeps these rooms, which this node has members in, from expiring while nobody writes to
   * them (EMPTY_EPOCH_TTL_S): rooms never written to, and rooms being forgotten; rooms
   * written to are left as they are.
   */
  async keep(rooms: readonly string[]): Promise<void> {
    for (let i = 0; i < rooms.length && !this.closed; i += KEEP_BATCH) {
      const keys = rooms.slice(i, i + KEEP_BATCH).flatMap((room) => {
        const k = this.keys(room);
        return [k.top, k.epoch, k.floor, k.base];
      });
      await this.track(this.scripts.confabHistoryKeep(keys.length, ...keys, EMPTY_EPOCH_TTL_S));
    }
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
    const lo = query.after !== undefined ? Math.max(Math.floor(query.after) + 1, 0) : 0;
    if (hi < 1 || hi < lo || lo >= Number.MAX_SAFE_INTEGER) return Promise.resolve([]);
    const keys = this.keys(room);
    const forward = query.after !== undefined;
    return this.track(
      this.afterPrune(async () => {
        const page = async (how: 'ids' | 'entries') => {
          const [lowest, entries, all] = (await this.scripts.confabHistoryRead(
            keys.floor,
            keys.msgs,
            keys.top,
            lo,
            Math.min(hi, Number.MAX_SAFE_INTEGER),
            limit,
            forward ? 'after' : 'before',
            how,
          )) as [number, StreamEntry[], number];
          const found: StoredMessage[] = [];
          for (const entry of entries) {
            for (const m of messagesOf(room, entry))
              if (m.id >= lowest && m.id <= hi) found.push(m);
          }
          return { found, all: all === 1 };
        };
        let { found, all } = await page('ids');
        // Ids a failed append skipped left the page short: the rest is further on.
        if (found.length < limit && !all) ({ found } = await page('entries'));
        return forward ? found.slice(0, limit) : found.slice(-limit);
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
    this.flush();
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
      cidz: `${base}cidz`,
      floor: `${base}floor`,
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
    // Rooms whose epoch was recorded longest ago go first (their members have most likely
    // left); a later id under the same epoch does not move a room, which would cost a map
    // write per message.
    setNewest(this.highest, room, { epoch, top: id }, MAX_REMEMBERED_ROOMS);
  }

  /** Sorted set: the tag of every room holding messages, scored by Redis's time (ms) of its last append. */
  private writtenKey(): string {
    return `${this.prefix}h:written`;
  }

  /**
   * Fresh for every call: it becomes the epoch only if the room has none, and after Redis
   * lost its data the new epoch must differ from every earlier one.
   */
  private epochCandidate(room: string): string {
    if (this.newId !== undefined) return roomEpoch(newSeed(this.newId), room);
    // Unique without hashing per call (most candidates are thrown away): this store's
    // random part, then a count. Opaque to clients like any epoch.
    return `${this.candidates}${(this.candidateCount++).toString(36)}`;
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
    return this.exclusive(() => this.pruneRooms(cutoff, now));
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

  /**
   * Prunes rooms (tags, and with a score only if not written to since): by age with a
   * cutoff, or of every message with ''. Each room's failure goes to `failed`.
   */
  private pruner(failed: (error: unknown) => void): PruneRooms {
    return async (rooms, age) => {
      const results = await Promise.allSettled(
        rooms.map(({ tag, score }) => {
          const base = `${this.prefix}h:{r${tag}}:`;
          return this.scripts.confabHistoryPrune(
            `${base}msgs`,
            `${base}cidz`,
            `${base}floor`,
            `${base}top`,
            `${base}epoch`,
            `${base}base`,
            this.writtenKey(),
            age,
            EMPTY_EPOCH_TTL_S,
            tag,
            score,
            this.maxRooms,
          );
        }),
      );
      for (const r of results) if (r.status === 'rejected') failed(r.reason);
    };
  }

  private async pruneRooms(cutoff: number, now: number): Promise<void> {
    // A room that cannot be pruned holds back no other room; the first such error is
    // reported once all were tried.
    let failed: { error: unknown } | undefined;
    const prune = this.pruner((error) => {
      failed ??= { error };
    });
    await this.adoptEarlierRooms(now);
    if (cutoff !== Number.NEGATIVE_INFINITY) {
      let cursor = '0';
      // ZSCAN returns every member present throughout the scan; each step is bounded.
      do {
        const [next, pairs] = await this.redis.zscan(
          this.writtenKey(),
          cursor,
          'COUNT',
          PRUNE_SCAN_COUNT,
        );
        cursor = next;
        const rooms = [];
        for (let i = 0; i < pairs.length; i += 2) rooms.push({ tag: pairs[i]!, score: '' });
        await prune(rooms, String(cutoff));
      } while (cursor !== '0');
    }
    await this.capRooms(prune);
    if (failed !== undefined) throw failed.error;
  }

  /** Rooms past maxRooms, those written to least recently first, lose their messages. */
  private async capRooms(prune: PruneRooms): Promise<void> {
    if (this.maxRooms === 0) return;
    let over = (await this.redis.zcard(this.writtenKey())) - this.maxRooms;
    // A step at a time, counting again after each: a room written to since it was chosen is
    // left (the score guard), and the least recently written is the next a walk through
    // rooms writes to. Bounded, should writes keep winning.
    let steps = 2 * Math.ceil(over / PRUNE_SCAN_COUNT) + 1;
    while (over > 0 && steps-- > 0 && !this.closed) {
      const step = Math.min(over, PRUNE_SCAN_COUNT);
      const pairs = await this.redis.zrange(this.writtenKey(), 0, String(step - 1), 'WITHSCORES');
      const rooms = [];
      for (let i = 0; i < pairs.length; i += 2) {
        rooms.push({ tag: pairs[i]!, score: pairs[i + 1]! });
      }
      await prune(rooms, '');
      over = (await this.redis.zcard(this.writtenKey())) - this.maxRooms;
    }
  }

  /**
   * Checks maxRooms now rather than at the next prune: a client walking through new rooms
   * adds hundreds a second. One check at a time; appends meanwhile ask for one more after.
   * Reads do not wait for it, as they do for a prune (a walk would hold every join up):
   * it takes whole rooms, written to least recently, and a recovery that finds messages
   * gone between its pages tells the client of the gap.
   */
  private checkRooms(): void {
    if (this.closed) return;
    if (this.checking) {
      this.checkAgain = true;
      return;
    }
    this.checking = true;
    const run = async () => {
      do {
        this.checkAgain = false;
        let failed: unknown;
        await this.capRooms(this.pruner((error) => (failed ??= error)));
        if (failed !== undefined) throw failed;
      } while (this.checkAgain && !this.closed);
    };
    this.track(run())
      .catch((error: Error) => this.onError?.(error))
      .finally(() => {
        this.checking = false;
      });
  }

  /**
   * Rooms an earlier version recorded as written to (a set, without times) are moved into
   * the sorted set, as written to now, so that retention goes on reaching them.
   */
  private async adoptEarlierRooms(now: number): Promise<void> {
    const earlier = `${this.prefix}h:rooms`;
    let cursor = '0';
    do {
      const [next, tags] = await this.redis.sscan(earlier, cursor, 'COUNT', PRUNE_SCAN_COUNT);
      cursor = next;
      if (tags.length === 0) continue;
      await this.scripts.confabHistoryAdopt(earlier, this.writtenKey(), String(now), ...tags);
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
        if (taken !== null) await this.pruneRooms(cutoff, now);
      }),
    );
  }
}

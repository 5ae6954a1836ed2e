import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { type Ban, parseMask } from '../core/bans.js';
import type { PeerAddress } from '../core/events.js';
import { REMOVAL_REMEMBERED_MS, type Removal } from '../core/moderation.js';
import { nicknameKey, nicknameLookupKey } from '../core/nickname.js';
import {
  type Census,
  checkId,
  checkText,
  type DeadNode,
  type DepartedMember,
  type Heartbeat,
  type JoinResult,
  lineageOf,
  MAX_MOVES_FOLLOWED,
  MemberGone,
  type MemberId,
  type MemberRef,
  MOVED_TTL_MS,
  type Presence,
  type PresenceMember,
  parseRef,
  ReleaseRetried,
  type RoomCount,
  type RoomLeft,
  type TakenOver,
} from '../core/presence.js';
import { senderOf } from '../core/resume-token.js';
import { commandClient } from '../store/redis-client.js';

export interface RedisPresenceOptions {
  /** Unique in the cluster and new for every process start (a random id if not given). */
  readonly node?: string;
  readonly timeoutMs: number;
  /**
   * A `redis://host:port` URL (the presence connects and, on close, disconnects), or a
   * client the caller owns and keeps open. Such a client must keep ioredis's default
   * `replyMapping: 'legacy'`, and should not resend unanswered commands.
   */
  readonly redis: string | Redis;
  /** How long after Redis restarted empty what may be a returning member's waits (REFILL_MS). */
  readonly refillMs?: number;
  /** Put before every key, so several clusters or tests can share one Redis. */
  readonly prefix?: string;
  /**
   * Whether `now` passed to `ban` can be trusted (RedisClock.judged; default always): until
   * then no ended ban is removed, since a clock a month ahead would remove other nodes' bans
   * for good.
   */
  readonly timeKnown?: () => boolean;
  readonly onError?: (error: Error) => void;
}

export const DEFAULT_PRESENCE_PREFIX = 'confab:';

// Every key is under one hash tag, `{presence}`: a node's death touches the rooms of all its
// members in one script, so in a Redis Cluster they must share a slot. Under P:
//   epoch        random string, made by the first heartbeat; gone = Redis lost our state
//   nodes        zset node -> Redis time (ms) of its last heartbeat, moved later by any
//                silence of every node forgiven since (forgive_silence)
//   timeouts     zset node -> its timeout (ms), removed with the node (an older version's
//                reap leaves it, and forgive_silence or a heartbeat reading the longest then)
//   clock        hash beat: Redis time (ms) of the last heartbeat of any node; refilled: the
//                epoch a refill was started for; since: Redis time (ms) the epoch was made
//   refill       set by the first heartbeat that finds Redis emptied (a node's 'reset'), for
//                the time every live node takes to register its members again (each later
//                reset within it starts that time again): meanwhile a
//                free nickname (claimed or looked up), a place in a room not full, or a token
//                that takes nothing over, waits (refilling)
//   seq          INCR counter: join order in rooms, claim order on nodes
//   nicks        hash nickname key -> ref ("<node>:<member>"; ids never contain ':')
//   n:<node>     zset member id -> seq, the node's members
//   m:<ref>      hash nick, key, ip, port, tok, snd, lin, gen
//   l:<lin>      hash ref, gen: the latest copy registered again after Redis restarted
//                empty of the member first claimed as <lin> (each resume adds 1 to gen), so
//                of two copies the nodes register again the later one wins; kept after that
//                copy goes, and for twice the longest node timeout a node writing it has
//                heard of (a later write never shortens it) only: all nodes have registered
//                again by then (a node cut off longer closes its clients), and a key an
//                older build never removes does not stay
//   mr:<ref>     zset room tag -> seq, the member's rooms in join order
//   r:<tag>      zset ref -> seq, a room's members in join order
//   rooms        zset tag -> seq, the rooms with members, in the order they were made
//   rn           hash tag -> the name the room was made with
//   t:<hash>     ref: the member a resume token takes over (the hash of the token, which
//                Redis never sees); the member's hash keeps it as 'tok', and goes with it
//   ids          hash identity -> ref: the member whose token carries that lasting identity
//                (the hash of the token's sender part; GRANT_LUA grants it to no other);
//                the member's hash keeps it as 'snd', and the field goes with the member.
//                One a build that knows none of this left behind names a ref whose 'snd'
//                differs: read as none, and replaced by the next grant of the identity
//   bans         hash mask key -> JSON [seq, mask, by, reason, expires]; seq orders them
//   rm:<hash>    JSON [action, detail]: why a KICK or BAN removed the member whose resume
//                token this is the hash of, for REMOVAL_REMEMBERED_MS (recordRemoval)
//   mv:<ref>     ref: where a resume moved the member, for MOVED_TTL_MS (successor)
//   rl:<ref>     '<attempt> ' .. JSON {tag, count, ...}: the rooms a release freed the member
//                from, for twice the node timeout and at least RELEASE_KEPT_MIN_MS, so that
//                that release asked again after its answer was lost (after a reap too)
//                answers as it did (RELEASE_LUA); read once, by it only
//   rp:<node>    '<tag> ' .. JSON {{node, members}, ...}: what the node's reaps since its last
//                answered one removed, for as long as rl: keys, so that a reap whose answer
//                was lost is answered by the node's next (REAP_LUA)
//   mh:<lin>     list of refs: the mv records of the member <lin>, oldest first, at most
//                MAX_MOVES_FOLLOWED; expires with the newest of them
// A room tag is the base64url of the room key's UTF-8: brace- and separator-free.
// Scripts name their keys from P (ARGV[1]); KEYS[1] is the nodes key, for routing.
// Time is Redis's TIME, so the nodes' clocks need not agree. Live nodes heartbeat several
// times a timeout, so a time in which no node's heartbeat came is a silence of every node:
// Redis stalled (a fork, a paused VM), or came back from a snapshot, or every node was cut
// off. Nobody's heartbeat could arrive meanwhile, and after it a reap that waited it out
// would run before the heartbeats that waited with it. So of such a silence only
// STALL_SHARE of the shortest timeout counts against the nodes (forgive_silence). Scripts
// return integers, strings and arrays only (booleans differ between RESP2 and RESP3).

/**
 * The share of the shortest node timeout a silence of every node counts as at most. Nodes
 * heartbeat at least five times a timeout (server.ts), so a node's last heartbeat before
 * the silence plus this share stays under the timeout: nobody is reaped for it.
 */
const STALL_SHARE = 0.4;

/**
 * After Redis restarted empty, the time from a node's heartbeat that finds it so (its
 * 'reset') that the other nodes have to register their members again: a node reconnects
 * within 2 s of Redis coming back (redis-client.ts's reconnectDelay) and heartbeats at least
 * once a second (server.ts), and 2 s more for an event loop busy telling its clients of the
 * new epochs; each reset within the refill gives its node's registrations this long again.
 * Meanwhile a claim or lookup of a nickname nobody holds, a join of a room not full, and a
 * resume whose token takes nothing over, wait: the nickname may be a member's whose node is
 * not back yet, the room may be fuller, and the token may be that member's, or a spent one
 * naming an identity that member holds.
 */
export const REFILL_MS = 5_000;
/**
 * A request waiting out a refill asks again after this long, doubling up to REFILL_POLL_MAX_MS
 * (a resume is answered soon after its member is back; thousands of clients reconnecting at
 * once ask Redis some ten times each, not thirty).
 */
const REFILL_POLL_FIRST_MS = 50;
const REFILL_POLL_MAX_MS = 500;

/**
 * Lua, for every script that judges nodes by their heartbeats (the shard agreement too):
 * Redis's time in ms, each node's own timeout, and whether a node is past it. TIMEOUTS,
 * the key of the zset of nodes' timeouts, is defined before it.
 */
export const NODE_TIMES_LUA = `
local function real_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- A node's own timeout (one of an older version, which records none: mine, the asking node's).
local function timeout_of(node, mine)
  return tonumber(redis.call('ZSCORE', TIMEOUTS, node)) or mine
end
-- Whether a node last heard of at score is past its own timeout at now.
local function expired(node, score, now, mine)
  return tonumber(score) < now - timeout_of(node, mine)
end
`;

const PRELUDE = `
local P, NODES = ARGV[1], KEYS[1]
local NICKS = P .. 'nicks'
local CLOCK, TIMEOUTS = P .. 'clock', P .. 'timeouts'
${NODE_TIMES_LUA}-- Redis restarted empty a moment ago, and some node may not have registered its members yet.
local function refilling() return redis.call('EXISTS', P .. 'refill') == 1 end
-- Keeps key for ms at least, never less than it already had: a node started since may have
-- heard of shorter timeouts only than the node that set it.
local function keep_at_least(key, ms)
  -- PTTL is negative for a key without an expiry.
  if redis.call('PTTL', key) < tonumber(ms) then redis.call('PEXPIRE', key, ms) end
end
-- {now, excess}: Redis time, and how much of the time since the last heartbeat of any node
-- exceeds what a silence may count (0 if none). With apply, every node's last heartbeat
-- moves later by the excess, which is then 0 until the next heartbeat.
local function forgive_silence(timeout, apply)
  local now = real_ms()
  local beat = tonumber(redis.call('HGET', CLOCK, 'beat'))
  if not beat then return {now, 0} end
  -- A node of an older version beats without writing 'beat': the latest score is a heartbeat
  -- too, so that no score is moved past the last heartbeat of any node.
  local top = tonumber(redis.call('ZRANGE', NODES, -1, -1, 'WITHSCORES')[2])
  if top and top > beat then beat = top end
  -- The shortest timeout of a node live when the silence began: a dead one's (not reaped
  -- yet, or left by an older version's reap) would take the gaps between a live node's
  -- heartbeats for silences, and put off its own reaping. A live node beats at least five
  -- times a timeout, so its last beat is within that share of the last beat of any node.
  -- A silence forgiven leaves each node's last beat at least that share before the next
  -- beat: one that has not beaten since no longer counts.
  local shortest = tonumber(timeout)
  local shorter = redis.call('ZRANGEBYSCORE', TIMEOUTS, '-inf', '(' .. shortest, 'WITHSCORES')
  for i = 1, #shorter, 2 do
    local t = tonumber(shorter[i + 1])
    local score = tonumber(redis.call('ZSCORE', NODES, shorter[i]))
    if score and t < shortest and score > beat - math.floor(t * ${STALL_SHARE}) then
      shortest = t
      break
    end
    -- Left by an older version's reap.
    if not score and apply then redis.call('ZREM', TIMEOUTS, shorter[i]) end
  end
  local allowed = math.floor(shortest * ${STALL_SHARE})
  local excess = now - beat - allowed
  if excess <= 0 then return {now, 0} end
  if not apply then return {now, excess} end
  for _, node in ipairs(redis.call('ZRANGE', NODES, 0, -1)) do
    redis.call('ZINCRBY', NODES, excess, node)
  end
  redis.call('HSET', CLOCK, 'beat', now - allowed)
  return {now, 0}
end
local function seq() return redis.call('INCR', P .. 'seq') end
local function mkey(ref) return P .. 'm:' .. ref end
local function mrooms(ref) return P .. 'mr:' .. ref end
local function rkey(tag) return P .. 'r:' .. tag end
local function nkey(node) return P .. 'n:' .. node end
-- The room's place in the ranking ROOMS reads past its limit (P..'rc'): its member count
-- times 2^32, less when it was made (P..'rooms', mod 2^32), so that of equal counts the
-- first made ranks first. Set from the room itself: a change missed is right again at the
-- room's next one.
local function count_room(tag)
  local count = redis.call('ZCARD', rkey(tag))
  if count == 0 then
    redis.call('ZREM', P .. 'rc', tag)
  else
    local made = tonumber(redis.call('ZSCORE', P .. 'rooms', tag)) or 0
    redis.call('ZADD', P .. 'rc', count * 4294967296 - made % 4294967296, tag)
  end
  return count
end
local function leave_room(ref, tag)
  redis.call('ZREM', rkey(tag), ref)
  redis.call('ZREM', mrooms(ref), tag)
  local count = count_room(tag)
  if count == 0 then
    redis.call('ZREM', P .. 'rooms', tag)
    redis.call('HDEL', P .. 'rn', tag)
  end
  return count
end
-- The member holding the identity snd, or false (a field left by an older build is none).
local function sender_holder(snd)
  local ref = redis.call('HGET', P .. 'ids', snd)
  if ref and redis.call('HGET', mkey(ref), 'snd') == snd then return ref end
  return false
end
-- The identity snd is no longer ref's to hold.
local function drop_sender(ref, snd)
  if snd and redis.call('HGET', P .. 'ids', snd) == ref then redis.call('HDEL', P .. 'ids', snd) end
end
-- The member at ref holds the identity snd ('' none), and no other it held before.
local function hold_sender(ref, snd)
  local before = redis.call('HGET', mkey(ref), 'snd')
  if before and before ~= snd then drop_sender(ref, before) end
  if snd == '' then
    redis.call('HDEL', mkey(ref), 'snd')
  else
    redis.call('HSET', mkey(ref), 'snd', snd)
    redis.call('HSET', P .. 'ids', snd, ref)
  end
end
-- {nick, ip, port, {tag, count, ...}, lineage} or false when the member is not registered
local function remove_member(node, id)
  local ref = node .. ':' .. id
  redis.call('ZREM', nkey(node), id)
  local m = redis.call('HMGET', mkey(ref), 'nick', 'key', 'ip', 'port', 'tok', 'lin', 'snd')
  if not m[1] then return false end
  if m[5] then redis.call('DEL', P .. 't:' .. m[5]) end
  drop_sender(ref, m[7])
  local left = {}
  for _, tag in ipairs(redis.call('ZRANGE', mrooms(ref), 0, -1)) do
    left[#left + 1] = tag
    left[#left + 1] = leave_room(ref, tag)
  end
  if redis.call('HGET', NICKS, m[2]) == ref then redis.call('HDEL', NICKS, m[2]) end
  redis.call('DEL', mkey(ref), mrooms(ref))
  return {m[1], m[3], m[4], left, m[6] or ref}
end
-- {{id, nick, ip, port, {tag, count, ...}, lineage}, ...}
local function remove_node(node)
  local out = {}
  for _, id in ipairs(redis.call('ZRANGE', nkey(node), 0, -1)) do
    local r = remove_member(node, id)
    if r then out[#out + 1] = {id, r[1], r[2], r[3], r[4], r[5]} end
  end
  redis.call('DEL', nkey(node))
  redis.call('ZREM', NODES, node)
  redis.call('ZREM', TIMEOUTS, node)
  return out
end
`;

/**
 * ARGV: P, node, id, nick, key, ip, port. 1 claimed, 0 taken, -1 node not registered, -2 member
 * exists, -3 free but refilling (ask again).
 */
const CLAIM_LUA = `${PRELUDE}
local node, id, nick, key = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if not redis.call('ZSCORE', NODES, node) then return -1 end
local ref = node .. ':' .. id
if redis.call('EXISTS', mkey(ref)) == 1 then return -2 end
if redis.call('HEXISTS', NICKS, key) == 1 then return 0 end
if refilling() then return -3 end
redis.call('HSET', NICKS, key, ref)
redis.call('HSET', mkey(ref), 'nick', nick, 'key', key, 'ip', ARGV[6], 'port', ARGV[7], 'lin', ref, 'gen', 0)
redis.call('ZADD', nkey(node), seq(), id)
return 1
`;

/** ARGV: P, node, id, nick, key. 1 renamed, 0 taken, -1 member not registered, -3 refilling. */
const RENAME_LUA = `${PRELUDE}
local node, id, nick, key = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ref = node .. ':' .. id
local old = redis.call('HGET', mkey(ref), 'key')
if not old then return -1 end
local holder = redis.call('HGET', NICKS, key)
if holder and holder ~= ref then return 0 end
if not holder and refilling() then return -3 end
if redis.call('HGET', NICKS, old) == ref then redis.call('HDEL', NICKS, old) end
redis.call('HSET', NICKS, key, ref)
redis.call('HSET', mkey(ref), 'nick', nick, 'key', key)
-- The course server's rename moves the member to the end of the listing.
for _, tag in ipairs(redis.call('ZRANGE', mrooms(ref), 0, -1)) do
  redis.call('ZADD', rkey(tag), 'XX', seq(), ref)
end
return 1
`;

/**
 * ARGV: P, node, id, ms the answer is kept, the attempt (a token its retries repeat).
 * {tag, count, ...} of the rooms left, or -1 for a member not registered. A retry (its first
 * answer lost) that finds the member gone answers what its first attempt freed, if that was
 * the one that freed it, once: not what another release or expel freed, answered already.
 */
const RELEASE_LUA = `${PRELUDE}
local node, id, attempt = ARGV[2], ARGV[3], ARGV[5]
local done = P .. 'rl:' .. node .. ':' .. id
local r = remove_member(node, id)
if not r then
  local kept = redis.call('GET', done)
  if not kept then return -1 end
  local sep = string.find(kept, ' ', 1, true)
  if not sep or string.sub(kept, 1, sep - 1) ~= attempt then return -1 end
  redis.call('DEL', done)
  return cjson.decode(string.sub(kept, sep + 1))
end
redis.call('SET', done, attempt .. ' ' .. cjson.encode(r[4]), 'PX', ARGV[4])
return r[4]
`;

/**
 * ARGV: P, node, id, tag, capacity, name. {the new count, the room's name}, or -1 not
 * registered, -2 already in, -3 full, -4 not full but refilling (ask again).
 */
const JOIN_LUA = `${PRELUDE}
local ref, tag, capacity = ARGV[2] .. ':' .. ARGV[3], ARGV[4], tonumber(ARGV[5])
if redis.call('EXISTS', mkey(ref)) == 0 then return -1 end
if redis.call('ZSCORE', mrooms(ref), tag) then return -2 end
local count = redis.call('ZCARD', rkey(tag))
if count >= capacity then return -3 end
-- Members of nodes not back yet would make it fuller.
if refilling() then return -4 end
local s = seq()
if count == 0 then
  redis.call('ZADD', P .. 'rooms', 'NX', s, tag)
  redis.call('HSET', P .. 'rn', tag, ARGV[6])
end
redis.call('ZADD', rkey(tag), s, ref)
redis.call('ZADD', mrooms(ref), s, tag)
count_room(tag)
return {count + 1, redis.call('HGET', P .. 'rn', tag) or ARGV[6]}
`;

/** ARGV: P, node, id, tag. The count after leaving, or -1 when the member was not in the room. */
const LEAVE_LUA = `${PRELUDE}
local ref, tag = ARGV[2] .. ':' .. ARGV[3], ARGV[4]
if not redis.call('ZSCORE', mrooms(ref), tag) then return -1 end
return leave_room(ref, tag)
`;

/**
 * ARGV: P, tag, node. {ref, nick, ip, port, lineage ('' if none), ...} in join order; -3 while
 * refilling, or while the asking node is not registered (Redis lost it).
 */
const MEMBERS_LUA = `${PRELUDE}
-- Redis restarted empty, and some node may not have registered its members again: a list
-- read now would show them gone. This node missing says so before any node has.
if refilling() or not redis.call('ZSCORE', NODES, ARGV[3]) then return -3 end
local out = {}
for _, ref in ipairs(redis.call('ZRANGE', rkey(ARGV[2]), 0, -1)) do
  local m = redis.call('HMGET', mkey(ref), 'nick', 'ip', 'port', 'lin')
  if m[1] then
    out[#out + 1] = ref
    out[#out + 1] = m[1]
    out[#out + 1] = m[2]
    out[#out + 1] = m[3]
    out[#out + 1] = m[4] or ''
  end
end
return out
`;

/** ARGV: P, key. {ref, nick, ip, port} or {}. */
const FIND_LUA = `${PRELUDE}
local ref = redis.call('HGET', NICKS, ARGV[2])
if not ref then
  if refilling() then return -3 end
  return {}
end
local m = redis.call('HMGET', mkey(ref), 'nick', 'ip', 'port')
if not m[1] then return {} end
return {ref, m[1], m[2], m[3]}
`;

/**
 * ARGV: P, node, id, token hash, sender hash or ''. 1; 0 when another member holds the
 * identity; -1 when the member is not registered.
 */
const GRANT_LUA = `${PRELUDE}
local ref = ARGV[2] .. ':' .. ARGV[3]
if redis.call('EXISTS', mkey(ref)) == 0 then return -1 end
local holder = ARGV[5] ~= '' and sender_holder(ARGV[5])
if holder and holder ~= ref then return 0 end
local old = redis.call('HGET', mkey(ref), 'tok')
if old then redis.call('DEL', P .. 't:' .. old) end
redis.call('HSET', mkey(ref), 'tok', ARGV[4])
redis.call('SET', P .. 't:' .. ARGV[4], ref)
hold_sender(ref, ARGV[5])
return 1
`;

/** ARGV: P, node, id, operator key (operatorKey). 1; 0 when the member is not registered. */
const OPERATE_LUA = `${PRELUDE}
local ref = ARGV[2] .. ':' .. ARGV[3]
if redis.call('EXISTS', mkey(ref)) == 0 then return 0 end
redis.call('HSET', mkey(ref), 'op', ARGV[4])
return 1
`;

/**
 * ARGV: P, node, id, token hash, ip, port, next token hash, moved ttl ms, most moves kept,
 * lineage ttl ms, next token's sender hash or ''. {old node, old id, nick, lin, gen,
 * operator or '', tag, name, ...} with the rooms in join order; {} when the token takes nothing over; -1 node not
 * registered, -2 member exists, -3 nothing yet but refilling (ask again).
 * Run again after it took a member over (its reply was lost), it answers the same: the
 * member it moved holds the next token's hash, and its last move names where it came from.
 */
const TAKE_OVER_LUA = `${PRELUDE}
local node, id = ARGV[2], ARGV[3]
if not redis.call('ZSCORE', NODES, node) then return -1 end
local ref = node .. ':' .. id
if redis.call('EXISTS', mkey(ref)) == 1 then
  local m = redis.call('HMGET', mkey(ref), 'nick', 'tok', 'lin', 'gen', 'op')
  local from = m[3] and redis.call('LINDEX', P .. 'mh:' .. m[3], -1)
  if m[2] ~= ARGV[7] or not from then return -2 end
  local colon = string.find(from, ':', 1, true)
  local out = {string.sub(from, 1, colon - 1), string.sub(from, colon + 1), m[1], m[3], m[4], m[5] or ''}
  for _, tag in ipairs(redis.call('ZRANGE', mrooms(ref), 0, -1)) do
    out[#out + 1] = tag
    out[#out + 1] = redis.call('HGET', P .. 'rn', tag) or ''
  end
  return out
end
local tkey = P .. 't:' .. ARGV[4]
local old = redis.call('GET', tkey)
if not old then
  if refilling() then return -3 end
  return {}
end
redis.call('DEL', tkey)
local m = redis.call('HMGET', mkey(old), 'nick', 'key', 'tok', 'lin', 'gen', 'snd', 'op')
if not m[1] or m[3] ~= ARGV[4] then return {} end
drop_sender(old, m[6])
local colon = string.find(old, ':', 1, true)
local oldnode, oldid = string.sub(old, 1, colon - 1), string.sub(old, colon + 1)
local lin, gen = m[4] or old, (tonumber(m[5]) or 0) + 1
redis.call('HSET', mkey(ref), 'nick', m[1], 'key', m[2], 'ip', ARGV[5], 'port', ARGV[6], 'tok', ARGV[7], 'lin', lin, 'gen', gen)
if m[7] then redis.call('HSET', mkey(ref), 'op', m[7]) end
redis.call('SET', P .. 't:' .. ARGV[7], ref)
hold_sender(ref, ARGV[11])
local lkey = P .. 'l:' .. lin
if redis.call('EXISTS', lkey) == 1 then
  -- Nodes are still registering copies again after a restart: this one is now the latest.
  redis.call('HSET', lkey, 'ref', ref, 'gen', gen)
  keep_at_least(lkey, ARGV[10])
end
if redis.call('HGET', NICKS, m[2]) == old then redis.call('HSET', NICKS, m[2], ref) end
local out = {oldnode, oldid, m[1], lin, gen, m[7] or ''}
local rooms = redis.call('ZRANGE', mrooms(old), 0, -1, 'WITHSCORES')
for i = 1, #rooms, 2 do
  local tag = rooms[i]
  -- Its place in the room (a rename moved it to the end) is kept.
  local place = redis.call('ZSCORE', rkey(tag), old) or rooms[i + 1]
  redis.call('ZREM', rkey(tag), old)
  redis.call('ZADD', rkey(tag), place, ref)
  redis.call('ZADD', mrooms(ref), rooms[i + 1], tag)
  count_room(tag)
  out[#out + 1] = tag
  out[#out + 1] = redis.call('HGET', P .. 'rn', tag) or ''
end
redis.call('ZREM', nkey(oldnode), oldid)
redis.call('ZADD', nkey(node), seq(), id)
redis.call('DEL', mkey(old), mrooms(old))
redis.call('SET', P .. 'mv:' .. old, ref, 'PX', ARGV[8])
-- A record more than the moves successor follows behind leads only to a member that has
-- gone: the member's records are kept to that many, however often it resumes.
local moves = P .. 'mh:' .. lin
redis.call('RPUSH', moves, old)
while redis.call('LLEN', moves) > tonumber(ARGV[9]) do
  redis.call('DEL', P .. 'mv:' .. redis.call('LPOP', moves))
end
redis.call('PEXPIRE', moves, ARGV[8])
return out
`;

/** ARGV: P, node, id, most moves followed. {ref, nick, ip, port} or {}. */
const SUCCESSOR_LUA = `${PRELUDE}
local start = ARGV[2] .. ':' .. ARGV[3]
local ref = start
for _ = 1, tonumber(ARGV[4]) do
  local moved = redis.call('GET', P .. 'mv:' .. ref)
  if not moved then break end
  ref = moved
end
if ref == start then return {} end
local m = redis.call('HMGET', mkey(ref), 'nick', 'ip', 'port')
if not m[1] then return {} end
return {ref, m[1], m[2], m[3]}
`;

/**
 * ARGV: P, limit. {tag, name or '', count, ...}: the `limit` rooms with the most members, most
 * first, and of equal counts the first made first. Past the limit the rooms are taken in the
 * ranking's order (P..'rc', see count_room), each counted from its members and left out if it
 * has none. A ranking out of step with the rooms (it holds another number of them, or a room
 * with no members: a build that kept none wrote meanwhile) is rebuilt, at most once a minute for
 * the cluster (a walk through every room, some 5 ms of Redis per 1,000 rooms); until then ROOMS
 * ranks the first `limit` rooms made, as such builds did. Within the limit every room is read.
 */
const ROOMS_LUA = `${PRELUDE}
local limit = tonumber(ARGV[2])
local rooms, ranked = P .. 'rooms', P .. 'rc'
local total = redis.call('ZCARD', rooms)
local function rebuild()
  if not redis.call('SET', P .. 'rcb', '1', 'NX', 'PX', 60000) then return false end
  redis.call('DEL', ranked)
  for _, tag in ipairs(redis.call('ZRANGE', rooms, 0, -1)) do count_room(tag) end
  return true
end
-- {tag, count, order}: the first limit in the ranking, and whether it held a room with nobody.
local function by_rank()
  local rows, stale = {}, false
  for i, tag in ipairs(redis.call('ZREVRANGE', ranked, 0, limit - 1)) do
    local count = redis.call('ZCARD', rkey(tag))
    if count > 0 then rows[#rows + 1] = {tag, count, i} else stale = true end
  end
  return rows, stale
end
local function by_made()
  local rows = {}
  local made = redis.call('ZRANGE', rooms, 0, limit - 1, 'WITHSCORES')
  for i = 1, #made, 2 do
    rows[#rows + 1] = {made[i], redis.call('ZCARD', rkey(made[i])), tonumber(made[i + 1])}
  end
  return rows
end
local rows, stale
if total > limit and (redis.call('ZCARD', ranked) == total or rebuild()) then
  rows, stale = by_rank()
  if stale then
    if rebuild() then rows = by_rank() else rows = by_made() end
  end
else
  rows = by_made()
end
-- By count, then as ranked or made: a count an older build changed may be out of the order.
table.sort(rows, function(a, b)
  if a[2] ~= b[2] then return a[2] > b[2] end
  return a[3] < b[3]
end)
local out = {}
for _, row in ipairs(rows) do
  out[#out + 1] = row[1]
  out[#out + 1] = redis.call('HGET', P .. 'rn', row[1]) or ''
  out[#out + 1] = row[2]
end
return out
`;

/**
 * ARGV: P, the ban's key, its mask, by and reason (the JSON array's items, without its
 * brackets), its end (JSON: ms or null), the seconds it lasts from now by Redis's clock (''
 * to take the end as given), then key, row of each ban the node found expired or
 * unreadable. Writes the ban with the next sequence number and removes those rows that are
 * still as the node read them: one written again meanwhile (another node's BAN of the same
 * mask) stays. Returns the end stored, as JSON.
 */
const BAN_LUA = `
local P, key = ARGV[1], ARGV[2]
local bans = P .. 'bans'
for i = 6, #ARGV, 2 do
  if ARGV[i] ~= key and redis.call('HGET', bans, ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', bans, ARGV[i])
  end
end
local expires = ARGV[4]
if ARGV[5] ~= '' then
  local t = redis.call('TIME')
  expires = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    + tonumber(ARGV[5]) * 1000)
end
-- Shares the join counter: only its order matters.
local seq = redis.call('INCR', P .. 'seq')
redis.call('HSET', bans, key, '[' .. seq .. ',' .. ARGV[3] .. ',' .. expires .. ']')
return expires
`;

/** ARGV: P, timeout ms. {members, nodes heard from within their own timeouts}. */
const CENSUS_LUA = `${PRELUDE}
local clock = forgive_silence(ARGV[2], false)
local now, mine = clock[1] - clock[2], tonumber(ARGV[2])
local live = 0
local nodes = redis.call('ZRANGE', NODES, 0, -1, 'WITHSCORES')
for i = 1, #nodes, 2 do
  if not expired(nodes[i], nodes[i + 1], now, mine) then live = live + 1 end
end
return {redis.call('HLEN', NICKS), live}
`;

/**
 * ARGV: P, node, epoch candidate, the epoch this node knows ('' before its first heartbeat),
 * how many members the node holds, the timeout ms, the refill ms, the hash of the shard list
 * the node agreed on ('' before it has). {status, epoch, the longest timeout of the nodes
 * registered}: 'ok'; 'expired' (the node had been reaped); 'reset' (the epoch changed: Redis
 * lost our state; the refill starts, unless another node's reset started it). Registers the
 * node in every case but {'refused', the stored list's hash}: another list was recorded, by a
 * node that started while this one was reaped or before it had recorded its own again after
 * Redis lost it. 'ok' is followed by 'held' and the ids of the node's members in Presence
 * when they are not as many as the node holds.
 */
// allow-oom: out of memory (maxmemory, noeviction), Redis refuses a script's first write
// that may grow memory. A heartbeat writes a few bytes; refused, every node would find itself
// cut off and close its clients (3006), while chats are only refused and pruning frees memory.
const HEARTBEAT_LUA = `#!lua flags=allow-oom
${PRELUDE}
local node, known, mine = ARGV[2], ARGV[4], tonumber(ARGV[5])
local list = ARGV[8] or ''
if list ~= '' then
  local stored = redis.call('GET', P .. 'shards')
  if not stored then
    redis.call('SET', P .. 'shards', list)
  elseif stored ~= list then
    return {'refused', stored}
  end
end
local epoch = redis.call('GET', P .. 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', P .. 'epoch', epoch)
  -- When Redis's state began (it was empty): a node starting soon after waits for the
  -- running ones to record their shard list again (shards.ts's freshState).
  redis.call('HSET', CLOCK, 'since', real_ms())
end
local was = redis.call('ZSCORE', NODES, node)
local now = forgive_silence(ARGV[6], true)[1]
redis.call('ZADD', NODES, now, node)
redis.call('ZADD', TIMEOUTS, ARGV[6], node)
redis.call('HSET', CLOCK, 'beat', now)
-- The longest timeout of a registered node: one an older version's reap left is dropped.
local longest
repeat
  local top = redis.call('ZRANGE', TIMEOUTS, -1, -1, 'WITHSCORES')
  if redis.call('ZSCORE', NODES, top[1]) then longest = top[2] else redis.call('ZREM', TIMEOUTS, top[1]) end
until longest
if known == '' then return {'ok', epoch, longest} end
if known ~= epoch then
  -- Redis lost our state. The first node to find so starts the refill, once per epoch; each
  -- other node that finds so within it gives it the whole length again from then, for its
  -- members' registration; one that comes after it has ended starts none. (A length of 0:
  -- none.)
  local ms = tonumber(ARGV[7] or '')
  if ms and ms > 0 then
    if redis.call('HGET', CLOCK, 'refilled') ~= epoch then
      redis.call('HSET', CLOCK, 'refilled', epoch)
      redis.call('SET', P .. 'refill', '1', 'PX', ms)
    else
      local left = redis.call('PTTL', P .. 'refill')
      if left > 0 and left < ms then redis.call('PEXPIRE', P .. 'refill', ms) end
    end
  end
  return {'reset', epoch, longest}
end
if not was then return {'expired', epoch, longest} end
local out = {'ok', epoch, longest}
-- Members the node counts that Presence has not (a resume took them elsewhere): it is told
-- which members Presence holds on it, so that it can close the others.
if mine and mine ~= redis.call('ZCARD', nkey(node)) then
  out[4] = 'held'
  for _, id in ipairs(redis.call('ZRANGE', nkey(node), 0, -1)) do out[#out + 1] = id end
end
return out
`;

/**
 * ARGV: P, node, id, nick, key, ip, port, token hash or '', lin, gen, lineage ttl ms, sender
 * hash or '', operator or '', then tag, name ('' none), capacity (0: unknown) for each room:
 * a room without a name (Presence restarted empty) gets it.
 * Registers a member again after a reset, in its rooms, with the resume token it holds.
 * After the refill (this node was cut off or paused past it), a room others filled
 * meanwhile keeps its capacity: the member is not registered again (-4), and its node
 * closes it as one whose nickname was taken. A resume may have taken the member over just
 * before the reset, its old node not yet told: that copy and the new one are both registered
 * again, the later (higher gen) wins, so the old token does not outlast the later copy's
 * return. 1; the ref of an earlier copy
 * this one removed; 0 when the nickname is someone else's now ({0, ref} when it removed an
 * earlier copy all the same); -3 when a later copy is registered; -1 node not registered.
 */
const REREGISTER_LUA = `${PRELUDE}
local node, id, nick, key = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local lkey, gen = P .. 'l:' .. ARGV[9], tonumber(ARGV[10])
if not redis.call('ZSCORE', NODES, node) then return -1 end
local ref = node .. ':' .. id
local last = redis.call('HMGET', lkey, 'ref', 'gen')
local copy = last[1]
if copy == ref then copy = false end
if copy and (tonumber(last[2]) or -1) >= gen then return -3 end
-- Recorded even if this copy is lost below or leaves later: an earlier one is refused after it.
redis.call('HSET', lkey, 'ref', ref, 'gen', gen)
keep_at_least(lkey, ARGV[11])
local displaced = false
if copy then
  -- Removed even if this copy then finds its nickname taken: else the earlier copy would
  -- stand, with the token already used.
  local colon = string.find(copy, ':', 1, true)
  if remove_member(string.sub(copy, 1, colon - 1), string.sub(copy, colon + 1)) then
    displaced = copy
  end
end
local holder = redis.call('HGET', NICKS, key)
if holder and holder ~= ref then
  if displaced then return {0, displaced} end
  return 0
end
-- During the refill joins wait, so its rooms hold only members registered again: a room
-- over a capacity lowered since, or another node's, keeps them all.
for i = 14, refilling() and 0 or #ARGV - 2, 3 do
  local room, capacity = rkey(ARGV[i]), tonumber(ARGV[i + 2])
  if capacity > 0 and not redis.call('ZSCORE', room, ref) and redis.call('ZCARD', room) >= capacity then
    if displaced then return {-4, displaced} end
    return -4
  end
end
redis.call('HSET', NICKS, key, ref)
redis.call('HSET', mkey(ref), 'nick', nick, 'key', key, 'ip', ARGV[6], 'port', ARGV[7], 'lin', ARGV[9], 'gen', gen)
redis.call('ZADD', nkey(node), 'NX', seq(), id)
if ARGV[8] ~= '' then
  redis.call('HSET', mkey(ref), 'tok', ARGV[8])
  redis.call('SET', P .. 't:' .. ARGV[8], ref)
end
hold_sender(ref, ARGV[12])
if ARGV[13] ~= '' then redis.call('HSET', mkey(ref), 'op', ARGV[13]) end
for i = 14, #ARGV - 2, 3 do
  local s = seq()
  redis.call('ZADD', P .. 'rooms', 'NX', s, ARGV[i])
  redis.call('ZADD', rkey(ARGV[i]), 'NX', s, ref)
  redis.call('ZADD', mrooms(ref), 'NX', s, ARGV[i])
  count_room(ARGV[i])
  if ARGV[i + 1] ~= '' then redis.call('HSETNX', P .. 'rn', ARGV[i], ARGV[i + 1]) end
end
if displaced then return displaced end
return 1
`;

/**
 * ARGV: P, self, timeout ms, kept ms, tag: the number of this node's reaps answered so far.
 * {{node, members}, ...}: at most 16 dead nodes newly reaped per call, after those that
 * earlier calls of the same tag reaped, whose answers were lost. What the calls of a tag
 * reaped is kept (rp:<self>) for `kept` ms, until a call of another tag, so a reap whose
 * answer was lost is answered again by the next, and its members' rooms are told they left;
 * once a call is answered, the tag moves on, and nothing is told twice.
 */
const REAP_LUA = `${PRELUDE}
local mine = tonumber(ARGV[3])
local now = forgive_silence(ARGV[3], true)[1]
local stash = P .. 'rp:' .. ARGV[2]
local out = {}
local kept = redis.call('GET', stash)
local sep = kept and string.find(kept, ' ', 1, true)
if sep and string.sub(kept, 1, sep - 1) == ARGV[5] then
  for _, row in ipairs(cjson.decode(string.sub(kept, sep + 1))) do out[#out + 1] = row end
end
local earlier = #out
-- Each node is reaped once its own timeout has passed, as it cuts itself off after that
-- long; only nodes silent for the shortest timeout can have.
local shortest = mine
local least = tonumber(redis.call('ZRANGE', TIMEOUTS, 0, 0, 'WITHSCORES')[2])
if least and least < shortest then shortest = least end
local silent = redis.call('ZRANGEBYSCORE', NODES, '-inf', '(' .. (now - shortest), 'WITHSCORES')
for i = 1, #silent, 2 do
  local node = silent[i]
  if node ~= ARGV[2] and expired(node, silent[i + 1], now, mine) then
    out[#out + 1] = {node, remove_node(node)}
    if #out - earlier == 16 then break end
  end
end
if #out > 0 then
  redis.call('SET', stash, ARGV[5] .. ' ' .. cjson.encode(out), 'PX', ARGV[4])
else
  redis.call('DEL', stash)
end
return out
`;

/** ARGV: P, node. The node's members, removed with it. */
const DEREGISTER_LUA = `${PRELUDE}
return remove_node(ARGV[2])
`;

type Run = (...args: (string | number)[]) => Promise<unknown>;

interface Scripts {
  confabPresenceClaim: Run;
  confabPresenceRename: Run;
  confabPresenceRelease: Run;
  confabPresenceJoin: Run;
  confabPresenceLeave: Run;
  confabPresenceMembers: Run;
  confabPresenceFind: Run;
  confabPresenceRooms: Run;
  confabPresenceSuccessor: Run;
  confabPresenceGrant: Run;
  confabPresenceTakeOver: Run;
  confabPresenceOperate: Run;
  confabPresenceCensus: Run;
  confabPresenceBan: Run;
  confabPresenceHeartbeat: Run;
  confabPresenceReregister: Run;
  confabPresenceReap: Run;
  confabPresenceDeregister: Run;
}

const SCRIPTS: Record<keyof Scripts, string> = {
  confabPresenceClaim: CLAIM_LUA,
  confabPresenceRename: RENAME_LUA,
  confabPresenceRelease: RELEASE_LUA,
  confabPresenceJoin: JOIN_LUA,
  confabPresenceLeave: LEAVE_LUA,
  confabPresenceMembers: MEMBERS_LUA,
  confabPresenceFind: FIND_LUA,
  confabPresenceRooms: ROOMS_LUA,
  confabPresenceSuccessor: SUCCESSOR_LUA,
  confabPresenceGrant: GRANT_LUA,
  confabPresenceTakeOver: TAKE_OVER_LUA,
  confabPresenceOperate: OPERATE_LUA,
  confabPresenceCensus: CENSUS_LUA,
  confabPresenceBan: BAN_LUA,
  confabPresenceHeartbeat: HEARTBEAT_LUA,
  confabPresenceReregister: REREGISTER_LUA,
  confabPresenceReap: REAP_LUA,
  confabPresenceDeregister: DEREGISTER_LUA,
};

/**
 * The scripts written at once rather than in the turn's pipeline (commandClient): ioredis keeps
 * one pipeline in flight at a time, and behind the commands of clients connecting over a slow
 * link each waited a round trip more; heartbeats reached Redis every four seconds, and the
 * node took itself for cut off. On the same connection still: Redis answers them in the order
 * it runs them, among the claims whose answers the heartbeat's list of members is read against.
 */
export const UNPIPELINED_SCRIPTS: readonly (keyof Scripts)[] = [
  'confabPresenceHeartbeat',
  'confabPresenceReap',
];

/** What this node has registered: enough to register it all again after a reset. */
interface Local {
  nickname: string;
  readonly address: PeerAddress;
  /**
   * Room tags, in join order, each with the room's name in Presence ('' when it had none):
   * registered again with it after a reset, so that the room keeps the name it was made with.
   */
  readonly rooms: Map<string, string>;
  /** The hash of the resume token granted last, to grant it again after a reset. */
  token?: string;
  /** senderHash of that token, registered again with it. */
  sender?: string;
  /** The ref it was first claimed as, and how many resumes moved it since (Redis's lin, gen). */
  readonly lin: string;
  readonly gen: number;
  /** The operator it proved itself (operate), registered again with it. */
  operator?: string;
}

/** A release or expel waiting to be asked again (RedisPresence.retryReleases). */
interface Unreleased {
  /** The attempt whose answer was lost: its retries ask as it (RELEASE_LUA). */
  readonly attempt: string;
  /** The first settles with the answer; any later one (asked meanwhile) with nothing left. */
  readonly waiters: {
    readonly resolve: (left: RoomLeft[] | undefined) => void;
    readonly reject: (error: Error) => void;
  }[];
}

/**
 * Times a takeover is asked of Redis while its replies are lost: the script answers a
 * repeat as it did the first time, so only an answer ends the doubt.
 */
const TAKE_OVER_ATTEMPTS = 5;

/**
 * The least time Redis keeps what a release freed (RELEASE_LUA's `rl:`), for a node whose
 * answer was lost to ask again: one cut off past the timeout is reaped, and asks once it is
 * back, which can take longer than twice a short timeout.
 */
const RELEASE_KEPT_MIN_MS = 30_000;

/** Redis keeps a resume token's hash only: whoever reads it cannot resume with it. */
export function tokenHash(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('base64url');
}

/** The hash of the lasting identity a token carries; '' for a token that carries none. */
function senderHash(token: string): string {
  const sender = senderOf(token);
  return sender === undefined ? '' : tokenHash(sender);
}

function tagOf(room: string): string {
  checkText('room', room);
  return Buffer.from(room, 'utf8').toString('base64url');
}

function roomOf(tag: string): string {
  return Buffer.from(tag, 'base64url').toString('utf8');
}

function roomsLeft(flat: unknown[]): RoomLeft[] {
  const left: RoomLeft[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) {
    left.push({ room: roomOf(flat[i] as string), count: Number(flat[i + 1]) });
  }
  return left;
}

function departed(rows: unknown[]): DepartedMember[] {
  return rows.map((row) => {
    const [id, nickname, ip, port, rooms, lineage] = row as [
      string,
      string,
      string,
      string,
      unknown[],
      string,
    ];
    return { id, nickname, address: { ip, port: Number(port) }, rooms: roomsLeft(rooms), lineage };
  });
}

/** A stored ban and its order, or undefined for a row this version cannot read. */
/**
 * Whether a ban row stored under `field` is a ban on `key` though stored under another field:
 * written by a version whose key for its mask differs (a nickname's key left out marks on
 * letters from one version on), it is read back as a ban on `key` and must go with it.
 */
function storedAsOther(field: string, row: string, key: string): boolean {
  if (field === key) return false;
  const ban = parseBan(row);
  return ban !== undefined && parseMask(ban[1].mask).key === key;
}

function parseBan(row: string): [number, Ban] | undefined {
  try {
    const [seq, mask, by, reason, expires] = JSON.parse(row) as unknown[];
    if (
      typeof seq !== 'number' ||
      typeof mask !== 'string' ||
      typeof by !== 'string' ||
      typeof reason !== 'string' ||
      (expires !== null && typeof expires !== 'number')
    ) {
      return undefined;
    }
    return [seq, { mask, by, reason, expires }];
  } catch {
    return undefined;
  }
}

function member(ref: string, nickname: string, ip: string, port: string): PresenceMember {
  return {
    ...parseRef(ref),
    nickname,
    address: { ip, port: Number(port) },
  };
}

/**
 * Presence shared by every node connected to one Redis. Each step that must be atomic
 * (claim, rename, join, a node's reaping) is one Lua script. The node keeps a copy of what
 * it registered, so when Redis comes back empty (a restart without persistence, seen as a
 * new epoch by the next heartbeat) that heartbeat registers every member again.
 */
export class RedisPresence implements Presence {
  readonly node: string;
  readonly timeoutMs: number;
  /** How long Redis keeps a release's answer (RELEASE_KEPT_MIN_MS), and a reap's. */
  private readonly releaseKeptMs: number;
  /** This node's reaps answered so far: the tag of its next (REAP_LUA). */
  private reapsAnswered = 0;
  private readonly refillMs: number;
  private readonly redis: Redis;
  private readonly scripts: Scripts;
  private readonly owned: boolean;
  private readonly prefix: string;
  /** The zset of nodes by the time of their last heartbeat. */
  readonly nodesKey: string;
  private readonly local = new Map<MemberId, Local>();
  /**
   * Releases and expels whose answer was lost (ReleaseRetried): asked again after the next
   * heartbeat.
   */
  private readonly unreleased = new Map<MemberId, Unreleased>();
  private epoch = '';
  private closed = false;
  /**
   * The longest --cluster-timeout of any node this one has heard of in its heartbeats (its
   * own at least): what Redis keeps of a member's lineage after a restart is kept for twice
   * it, so that the node slowest to come back still finds it.
   */
  private longestTimeoutMs: number;
  /**
   * Set by the node: registers it again now (a heartbeat with its members). A claim
   * refused because Redis no longer knows this node (it restarted empty) calls it and
   * tries once more, rather than fail a CONNECT until the next heartbeat.
   */
  onUnregistered: (() => Promise<void>) | undefined;

  /**
   * Set by the node once it agreed on it: the hash of its --redis-shards list (shards.ts's
   * shardListHash). Each heartbeat records it where Redis holds none (Redis restarted empty),
   * and is refused where Redis holds another: a node that starts with another list while
   * this one is reaped, or before it recorded its own again, would otherwise number the
   * rooms of a shard one of the lists lacks in two places.
   */
  shardList: string | undefined;

  private readonly timeKnown: () => boolean;

  /** A key under Presence's prefix and hash tag, for what the cluster keeps beside it. */
  keyOf(name: string): string {
    return `${this.prefix}${name}`;
  }

  constructor(options: RedisPresenceOptions) {
    this.node = options.node ?? `n${globalThis.crypto.randomUUID()}`;
    checkId('node', this.node);
    if (!(options.timeoutMs > 0)) throw new RangeError('timeoutMs must be positive');
    this.timeoutMs = options.timeoutMs;
    this.longestTimeoutMs = options.timeoutMs;
    this.releaseKeptMs = Math.max(2 * options.timeoutMs, RELEASE_KEPT_MIN_MS);
    this.refillMs = options.refillMs ?? REFILL_MS;
    this.timeKnown = options.timeKnown ?? (() => true);
    if (!Number.isInteger(this.refillMs) || this.refillMs < 0) {
      throw new RangeError('refillMs must be a whole number of ms, 0 or more');
    }
    this.prefix = `${options.prefix ?? DEFAULT_PRESENCE_PREFIX}{presence}:`;
    this.nodesKey = `${this.prefix}nodes`;
    this.owned = typeof options.redis === 'string';
    this.redis =
      typeof options.redis === 'string'
        ? commandClient(options.redis, UNPIPELINED_SCRIPTS)
        : options.redis;
    if (this.owned) {
      const onError = options.onError;
      // Without a listener ioredis prints every reconnect failure to stderr.
      this.redis.on('error', (error: Error) => onError?.(error));
    }
    for (const [name, lua] of Object.entries(SCRIPTS)) {
      this.redis.defineCommand(name, { lua, numberOfKeys: 1 });
    }
    this.scripts = this.redis as unknown as Scripts;
  }

  async claim(id: MemberId, nickname: string, address: PeerAddress): Promise<boolean> {
    checkId('member', id);
    checkText('nickname', nickname);
    const args = this.args(id, nickname, nicknameKey(nickname), address.ip, address.port);
    const ask = () => this.scripts.confabPresenceClaim(...args);
    let reply = await ask();
    if (reply === -1 && this.onUnregistered !== undefined) {
      await this.onUnregistered();
      reply = await ask();
    }
    reply = await this.afterRefill(reply, ask);
    if (reply === -1) throw new Error(`node ${this.node} is not registered`);
    if (reply === -2) throw new Error(`member ${id} is already registered`);
    if (reply !== 1) return false;
    this.local.set(id, {
      nickname,
      address: { ...address },
      rooms: new Map(),
      lin: lineageOf(this.node, id),
      gen: 0,
    });
    return true;
  }

  async rename(id: MemberId, nickname: string): Promise<boolean> {
    checkText('nickname', nickname);
    const args = this.args(id, nickname, nicknameKey(nickname));
    const ask = () => this.scripts.confabPresenceRename(...args);
    const reply = await this.afterRefill(await ask(), ask);
    if (reply === -1) throw new MemberGone(id);
    if (reply !== 1) return false;
    const mine = this.local.get(id);
    if (mine !== undefined) mine.nickname = nickname;
    return true;
  }

  async release(id: MemberId): Promise<RoomLeft[]> {
    return (await this.remove(id)) ?? [];
  }

  expel(id: MemberId): Promise<RoomLeft[] | undefined> {
    return this.remove(id);
  }

  /** Release and expel: the rooms left, undefined for a member not registered. */
  private async remove(id: MemberId): Promise<RoomLeft[] | undefined> {
    // Forgotten first: a failed release must not come back with a reset.
    this.local.delete(id);
    // Already waiting to be asked again: that retry answers, this one learns nothing is left.
    if (this.unreleased.has(id)) {
      const left = await this.retryLater(id);
      return left === undefined ? undefined : [];
    }
    const attempt = globalThis.crypto.randomUUID();
    try {
      const reply = await this.scripts.confabPresenceRelease(
        ...this.args(id, this.releaseKeptMs, attempt),
      );
      return reply === -1 ? undefined : roomsLeft(reply as unknown[]);
    } catch (error) {
      if (this.closed) throw error;
      throw new ReleaseRetried(id, this.retryLater(id, attempt), error);
    }
  }

  /** Settles once the release of `id` is asked again (after the next heartbeat). */
  private retryLater(id: MemberId, attempt = ''): Promise<RoomLeft[] | undefined> {
    let entry = this.unreleased.get(id);
    if (entry === undefined) {
      entry = { attempt, waiters: [] };
      this.unreleased.set(id, entry);
    }
    const waiters = entry.waiters;
    const retried = new Promise<RoomLeft[] | undefined>((resolve, reject) => {
      waiters.push({ resolve, reject });
    });
    // A caller that does not wait for it (a member forgotten) leaves no unhandled rejection.
    retried.catch(() => {});
    return retried;
  }

  async join(id: MemberId, room: string, capacity: number, name = room): Promise<JoinResult> {
    const tag = tagOf(room);
    checkText('room', name);
    const args = this.args(id, tag, capacity, name);
    const ask = () => this.scripts.confabPresenceJoin(...args);
    const reply = await this.afterRefill(await ask(), ask, -4);
    if (!Array.isArray(reply)) {
      const code = Number(reply);
      if (code === -1) throw new MemberGone(id);
      return { ok: false, reason: code === -2 ? 'already-in' : 'full' };
    }
    const shown = String(reply[1]) || name;
    this.local.get(id)?.rooms.set(tag, shown);
    return { ok: true, count: Number(reply[0]), name: shown };
  }

  async leave(id: MemberId, room: string): Promise<number | undefined> {
    const tag = tagOf(room);
    this.local.get(id)?.rooms.delete(tag);
    const reply = Number(await this.scripts.confabPresenceLeave(...this.args(id, tag)));
    return reply < 0 ? undefined : reply;
  }

  async members(room: string): Promise<PresenceMember[]> {
    const ask = () =>
      this.scripts.confabPresenceMembers(this.nodesKey, this.prefix, tagOf(room), this.node);
    const flat = (await this.afterRefill(await ask(), ask)) as string[];
    const out: PresenceMember[] = [];
    for (let i = 0; i + 4 < flat.length; i += 5) {
      const lineage = flat[i + 4] === '' ? undefined : flat[i + 4];
      out.push({ ...member(flat[i]!, flat[i + 1]!, flat[i + 2]!, flat[i + 3]!), lineage });
    }
    return out;
  }

  async count(room: string): Promise<number> {
    return this.redis.zcard(`${this.prefix}r:${tagOf(room)}`);
  }

  async find(nickname: string): Promise<PresenceMember | undefined> {
    checkText('nickname', nickname);
    // Too long to be anyone's: not folded, nor sent to Redis (a folded 63 KB name was 630 KB).
    const key = nicknameLookupKey(nickname);
    if (key === undefined) return undefined;
    const ask = () => this.scripts.confabPresenceFind(this.nodesKey, this.prefix, key);
    // Its holder may be on a node not back yet.
    const found = (await this.afterRefill(await ask(), ask)) as string[];
    return found.length === 4 ? member(found[0]!, found[1]!, found[2]!, found[3]!) : undefined;
  }

  async grant(id: MemberId, token: string): Promise<boolean> {
    const hash = tokenHash(token);
    const sender = senderHash(token);
    const reply = await this.scripts.confabPresenceGrant(...this.args(id, hash, sender));
    if (reply === -1) throw new Error(`member ${id} is not registered`);
    if (reply === 0) return false;
    const mine = this.local.get(id);
    if (mine !== undefined) {
      mine.token = hash;
      mine.sender = sender;
    }
    return true;
  }

  async recordRemoval(token: string, removal: Removal): Promise<void> {
    const value = JSON.stringify([removal.action, removal.detail]);
    await this.redis.set(this.removalKey(token), value, 'PX', REMOVAL_REMEMBERED_MS);
  }

  async takeRemoval(token: string): Promise<Removal | undefined> {
    const value = await this.redis.getdel(this.removalKey(token));
    if (value === null) return undefined;
    const [action, detail] = JSON.parse(value) as [unknown, unknown];
    if ((action !== 'kick' && action !== 'ban') || typeof detail !== 'string') return undefined;
    return { action, detail };
  }

  private removalKey(token: string): string {
    return `${this.prefix}rm:${tokenHash(token)}`;
  }

  async operate(id: MemberId, operator: string): Promise<void> {
    checkId('member', id);
    const mine = this.local.get(id);
    if (mine !== undefined) mine.operator = operator;
    await this.scripts.confabPresenceOperate(...this.args(id, operator));
  }

  async takeOver(
    token: string,
    id: MemberId,
    address: PeerAddress,
    next: string,
    wanted?: () => boolean,
  ): Promise<TakenOver | undefined> {
    checkId('member', id);
    const hash = tokenHash(next);
    const sender = senderHash(next);
    const args = this.args(
      id,
      tokenHash(token),
      address.ip,
      address.port,
      hash,
      MOVED_TTL_MS,
      MAX_MOVES_FOLLOWED,
      2 * this.longestTimeoutMs,
      sender,
    );
    const ask = async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await this.scripts.confabPresenceTakeOver(...args);
        } catch (error) {
          // Never sent (Redis unreachable all along): nothing was applied, and no more waits.
          if ((error as Error).name === 'MaxRetriesPerRequestError') throw error;
          // The reply may be all that was lost (the connection dropped after Redis ran the
          // script): asked again, the script answers as it did, or takes the member over now.
          // Given up, the caller frees the member it may have moved (ClusterNode.takeOver).
          if (attempt === TAKE_OVER_ATTEMPTS) throw error;
        }
      }
    };
    let reply = await ask();
    if (reply === -1 && this.onUnregistered !== undefined) {
      // As for a claim: Redis restarted empty and the heartbeat that registers us is due.
      await this.onUnregistered();
      reply = await ask();
    }
    // Its member may be on a node not back yet: found once it is, or nothing once all are.
    reply = await this.afterRefill(reply, ask, -3, wanted);
    // No longer wanted while it waited.
    if (reply === -3) return undefined;
    if (reply === -1) throw new Error(`node ${this.node} is not registered`);
    if (reply === -2) throw new Error(`member ${id} is already registered`);
    const flat = reply as string[];
    if (flat.length < 6) return undefined;
    const operator = flat[5] === '' ? undefined : flat[5];
    const rooms: { room: string; name: string }[] = [];
    const tags = new Map<string, string>();
    for (let i = 6; i + 1 < flat.length; i += 2) {
      const room = roomOf(flat[i]!);
      rooms.push({ room, name: flat[i + 1] === '' ? room : flat[i + 1]! });
      tags.set(flat[i]!, flat[i + 1]!);
    }
    this.local.set(id, {
      nickname: flat[2]!,
      address: { ...address },
      rooms: tags,
      token: hash,
      sender,
      lin: flat[3]!,
      gen: Number(flat[4]),
      ...(operator !== undefined ? { operator } : {}),
    });
    // Taken from this node's own member: a reset must not register that one again.
    if (flat[0] === this.node) this.local.delete(flat[1]!);
    return {
      node: flat[0]!,
      id: flat[1]!,
      nickname: flat[2]!,
      lineage: flat[3]!,
      rooms,
      ...(operator !== undefined ? { operator } : {}),
    };
  }

  async successor(node: string, id: MemberId): Promise<PresenceMember | undefined> {
    checkId('node', node);
    checkId('member', id);
    const found = (await this.scripts.confabPresenceSuccessor(
      this.nodesKey,
      this.prefix,
      node,
      id,
      MAX_MOVES_FOLLOWED,
    )) as string[];
    return found.length === 4 ? member(found[0]!, found[1]!, found[2]!, found[3]!) : undefined;
  }

  async rooms(limit: number): Promise<RoomCount[]> {
    if (!(limit >= 1)) return [];
    const flat = (await this.scripts.confabPresenceRooms(
      this.nodesKey,
      this.prefix,
      Math.floor(limit),
    )) as (string | number)[];
    const out: RoomCount[] = [];
    for (let i = 0; i + 2 < flat.length; i += 3) {
      const room = roomOf(String(flat[i]));
      const name = String(flat[i + 1]);
      out.push({ room, name: name === '' ? room : name, count: Number(flat[i + 2]) });
    }
    return out;
  }

  async census(): Promise<Census> {
    const [users, nodes] = (await this.scripts.confabPresenceCensus(
      this.nodesKey,
      this.prefix,
      this.timeoutMs,
    )) as [number, number];
    return { users: Number(users), nodes: Number(nodes) };
  }

  async bans(): Promise<Ban[]> {
    const rows = Object.values(await this.redis.hgetall(`${this.prefix}bans`));
    const parsed: [number, Ban][] = [];
    for (const row of rows) {
      const ban = parseBan(row);
      if (ban !== undefined) parsed.push(ban);
    }
    return parsed.sort((a, b) => a[0] - b[0]).map(([, ban]) => ban);
  }

  async ban(key: string, ban: Ban, now: number, seconds?: number): Promise<Ban> {
    const expired: string[] = [];
    const rows = this.timeKnown() ? await this.redis.hgetall(`${this.prefix}bans`) : {};
    for (const [k, row] of Object.entries(rows)) {
      const old = parseBan(row);
      if (
        old === undefined ||
        (old[1].expires !== null && old[1].expires <= now) ||
        storedAsOther(k, row, key)
      ) {
        expired.push(k, row);
      }
    }
    // Timed by Redis's clock, as every node reads it: not by this node's, which may not be
    // known yet, nor from when the request left a node far from Redis.
    const expires = (await this.scripts.confabPresenceBan(
      this.nodesKey,
      this.prefix,
      key,
      JSON.stringify([ban.mask, ban.by, ban.reason]).slice(1, -1),
      JSON.stringify(ban.expires),
      seconds === undefined ? '' : String(seconds),
      ...expired,
    )) as string;
    return { ...ban, expires: JSON.parse(expires) as number | null };
  }

  async unban(key: string): Promise<boolean> {
    const rows = await this.redis.hgetall(`${this.prefix}bans`);
    const fields = [key];
    for (const [field, row] of Object.entries(rows)) {
      if (storedAsOther(field, row, key)) fields.push(field);
    }
    return (await this.redis.hdel(`${this.prefix}bans`, ...fields)) > 0;
  }

  async heartbeat(capacityOf?: (room: string) => number | undefined): Promise<Heartbeat> {
    if (this.closed) throw new Error('presence is closed');
    // However long this node is cut off, its retries wait: not reaped meanwhile (its heartbeat
    // came first after Redis did, or it is alone), it answers 'ok', and only the retries free
    // the members it could not release. Reaped, it answers 'expired', and the retries still
    // ask: a release Redis applied answers with the rooms it freed (kept for releaseKeptMs),
    // which the reaping node did not see; one it did not finds nothing, the reaping node
    // having told those rooms.
    const reply = (await this.scripts.confabPresenceHeartbeat(
      ...this.args(
        globalThis.crypto.randomUUID(),
        this.epoch,
        this.local.size,
        this.timeoutMs,
        this.refillMs,
        this.shardList ?? '',
      ),
    )) as string[];
    if (reply[0] === 'refused') {
      return {
        status: 'refused',
        reason: `another --redis-shards list is recorded for this cluster (${reply[1]}, this node ${this.shardList}): a node started with it while this one was away`,
      };
    }
    const [status, epoch, longest] = reply as [string, string, string];
    // After a reset, only once every member is registered again: a registration that failed
    // (the connection dropped mid-way) is then asked again, with the others, at the next
    // heartbeat, which answers 'reset' again. Taken as done, that member would have been
    // found missing ('held') and closed as taken over elsewhere.
    if (status !== 'reset') this.epoch = epoch;
    // Never lowered: after Redis restarted empty, nodes not back yet have no timeout there.
    this.longestTimeoutMs = Math.max(this.longestTimeoutMs, Number(longest) || 0);
    let beat: Heartbeat = { status: 'ok' };
    if (status === 'ok' && reply[3] === 'held') {
      // Presence's list is as of the heartbeat; a member claimed or taken over here since
      // is answered after it, and so is not in `local` yet either.
      const held = new Set(reply.slice(4));
      const gone = [...this.local.keys()].filter((id) => !held.has(id));
      for (const id of gone) this.local.delete(id);
      if (gone.length > 0) beat = { status: 'ok', gone };
    }
    if (status === 'expired') {
      this.local.clear();
      beat = { status: 'expired' };
    } else if (status === 'reset') {
      const { lost, displaced, crowded } = await this.reregister(capacityOf);
      this.epoch = epoch;
      beat = {
        status: 'reset',
        lost,
        ...(displaced.length > 0 ? { displaced } : {}),
        ...(crowded.length > 0 ? { crowded } : {}),
      };
    }
    await this.retryReleases();
    return beat;
  }

  async reap(): Promise<DeadNode[]> {
    // Calls until one is answered share a tag: each answers what the earlier ones reaped.
    const rows = (await this.scripts.confabPresenceReap(
      this.nodesKey,
      this.prefix,
      this.node,
      this.timeoutMs,
      this.releaseKeptMs,
      this.reapsAnswered,
    )) as [string, unknown[]][];
    this.reapsAnswered++;
    return rows.map(([node, members]) => ({ node, members: departed(members) }));
  }

  async close(): Promise<DepartedMember[]> {
    if (this.closed) return [];
    this.closed = true;
    let gone: DepartedMember[] = [];
    try {
      // Cut off, the others reap this node anyway; waiting for a reconnect would hang the close.
      if (this.redis.status !== 'ready') return gone;
      // First, as after a reap: what a release whose answer was lost freed is not in `gone`.
      await this.retryReleases();
      // The retry may have lost the connection: the deregister would wait for a reconnect.
      if (this.redis.status !== 'ready') return gone;
      gone = departed(
        (await this.scripts.confabPresenceDeregister(this.nodesKey, this.prefix, this.node)) as [],
      );
    } finally {
      this.local.clear();
      // Not asked again (Redis unreachable): removed with the node, or reaped by the others.
      this.giveUpReleases();
      if (this.owned) {
        // QUIT would wait in the offline queue for a reconnect that may never come.
        if (this.redis.status !== 'ready') this.redis.disconnect();
        else {
          try {
            await this.redis.quit();
          } catch {
            this.redis.disconnect();
          }
        }
      }
    }
    return gone;
  }

  /**
   * `reply`, or while it says Presence is refilling (`refilling`: Redis restarted empty a
   * moment ago), the answer of `again` once the refill has ended or what was asked for came
   * back; still `refilling` once `wanted` says the caller has gone.
   */
  private async afterRefill(
    reply: unknown,
    again: () => Promise<unknown>,
    refilling = -3,
    wanted: () => boolean = () => true,
  ): Promise<unknown> {
    // The refill key's expiry ends the wait (each node's reset may lengthen it); the deadline
    // only bounds it should that fail.
    const deadline = Date.now() + 4 * Math.max(this.refillMs, REFILL_MS);
    let pause = REFILL_POLL_FIRST_MS;
    while (reply === refilling) {
      if (Date.now() >= deadline) throw new Error('Presence is still refilling');
      // Spread, so that clients that came together do not ask together.
      await new Promise((resolve) => setTimeout(resolve, pause * (0.75 + Math.random() / 2)));
      if (this.closed) throw new Error('presence is closed');
      if (!wanted()) return reply;
      reply = await again();
      pause = Math.min(2 * pause, REFILL_POLL_MAX_MS);
    }
    return reply;
  }

  /** KEYS[1], then ARGV: prefix, node, and the rest. */
  private args(...rest: (string | number)[]): (string | number)[] {
    return [this.nodesKey, this.prefix, this.node, ...rest];
  }

  /**
   * Registers every local member again, in the order they were claimed; returns those that
   * lost their nickname or a room (or were taken over meanwhile), and the earlier copies
   * removed.
   */
  private async reregister(
    capacityOf: ((room: string) => number | undefined) | undefined,
  ): Promise<{ lost: MemberId[]; displaced: MemberRef[]; crowded: MemberId[] }> {
    const entries = [...this.local];
    const replies = await Promise.all(
      entries.map(([id, m]) =>
        this.scripts.confabPresenceReregister(
          ...this.args(
            id,
            m.nickname,
            nicknameKey(m.nickname),
            m.address.ip,
            m.address.port,
            m.token ?? '',
            m.lin,
            m.gen,
            2 * this.longestTimeoutMs,
            m.sender ?? '',
            m.operator ?? '',
            ...[...m.rooms].flatMap(([tag, name]) => [tag, name, capacityOf?.(roomOf(tag)) ?? 0]),
          ),
        ),
      ),
    );
    const lost: MemberId[] = [];
    const displaced: MemberRef[] = [];
    const crowded: MemberId[] = [];
    entries.forEach(([id], i) => {
      const reply = replies[i];
      if (reply === 1) return;
      const removed = Array.isArray(reply) ? reply[1] : reply;
      if (typeof removed === 'string') {
        displaced.push(parseRef(removed));
        if (!Array.isArray(reply)) return;
      }
      lost.push(id);
      if ((Array.isArray(reply) ? reply[0] : reply) === -4) crowded.push(id);
      this.local.delete(id);
    });
    return { lost, displaced, crowded };
  }

  /**
   * Asks again each release whose answer was lost; one lost again waits for the next
   * heartbeat. Redis answers a retry as it did the first attempt if that was applied.
   */
  private async retryReleases(): Promise<void> {
    const entries = [...this.unreleased];
    await Promise.all(
      entries.map(async ([id, entry]) => {
        let reply: unknown;
        try {
          reply = await this.scripts.confabPresenceRelease(
            ...this.args(id, this.releaseKeptMs, entry.attempt),
          );
        } catch {
          return;
        }
        // Waiters that came meanwhile are in `entry` too: settled together.
        if (this.unreleased.get(id) !== entry) return;
        this.unreleased.delete(id);
        const left = reply === -1 ? undefined : roomsLeft(reply as unknown[]);
        entry.waiters.forEach(({ resolve }, i) => {
          resolve(i === 0 || left === undefined ? left : []);
        });
      }),
    );
  }

  /** Rejects every retry waiting: their members are gone otherwise. */
  private giveUpReleases(): void {
    const entries = [...this.unreleased];
    this.unreleased.clear();
    for (const [id, entry] of entries) {
      for (const { reject } of entry.waiters) reject(new MemberGone(id));
    }
  }
}

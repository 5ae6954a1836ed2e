import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type {
  Broker,
  BrokerHandler,
  NodeNotice,
  RoomEvent,
  RoomRef,
  WhisperEvent,
} from '../core/broker.js';
import type {
  Appended,
  HistoryQuery,
  HistoryStore,
  MessageDraft,
  RoomHistory,
  StoredMessage,
} from '../core/history.js';
import { roomKey } from '../core/rooms.js';
import { LOBBY } from '../protocol/codes.js';
import type { BrokerHistory } from './redis-broker.js';
import { NODE_TIMES_LUA } from './redis-presence.js';

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/**
 * 32-bit FNV-1a of the string's UTF-8 bytes (a lone surrogate counts as U+FFFD, as
 * Buffer.from encodes it), computed without encoding the string into a buffer first:
 * it runs for every chat published.
 */
export function fnv1a32(text: string): number {
  let hash = FNV_OFFSET;
  const byte = (b: number) => {
    hash = Math.imul(hash ^ b, FNV_PRIME);
  };
  for (let i = 0; i < text.length; i++) {
    let cp = text.charCodeAt(i);
    if (cp < 0x80) {
      byte(cp);
      continue;
    }
    if (cp >= 0xd800 && cp <= 0xdfff) {
      const next = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
      if (cp <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (next - 0xdc00);
        i++;
      } else {
        cp = 0xfffd;
      }
    }
    if (cp < 0x800) {
      byte(0xc0 | (cp >> 6));
    } else if (cp < 0x10000) {
      byte(0xe0 | (cp >> 12));
      byte(0x80 | ((cp >> 6) & 0x3f));
    } else {
      byte(0xf0 | (cp >> 18));
      byte(0x80 | ((cp >> 12) & 0x3f));
      byte(0x80 | ((cp >> 6) & 0x3f));
    }
    byte(0x80 | (cp & 0x3f));
  }
  return hash >>> 0;
}

const LOBBY_KEY = roomKey(LOBBY);

/**
 * The Redis instance (0 to count - 1) a room lives on, from its key (the look-alike fold
 * channels and history are named by). The lobby lives on the first, `--redis`, where
 * Presence is: every CONNECT of a course client joins it, and an instance of `--redis-shards`
 * that fails then keeps no one out who could get in without it. Every node must agree on it:
 * changing this function moves rooms away from their history, and PLACEMENT marks the change
 * (shardListHash).
 */
export function shardOf(key: string, count: number): number {
  return count === 1 || key === LOBBY_KEY ? 0 : fnv1a32(key) % count;
}

/**
 * How shardOf places rooms, in the hash the nodes compare their shard lists by: nodes of a
 * version that placed the lobby by its hash like any room have other hashes, so the first
 * node of this version waits for them to stop, or refuses to start beside them.
 */
const PLACEMENT = 'lobby on --redis';

/**
 * What the cluster's nodes compare their shard lists by: each URL as the instance it
 * names (scheme, host, port, database; without user, password or options), so that
 * `redis://h:6379` and `redis://H/0` agree.
 */
export function shardListHash(urls: readonly string[]): string {
  const named = urls.map((url) => {
    try {
      const parsed = new URL(url);
      const db = Number.parseInt(
        parsed.pathname.slice(1) || parsed.searchParams.get('db') || '0',
        10,
      );
      return `${parsed.protocol}//${parsed.hostname.toLowerCase()}:${parsed.port || '6379'}/${db}`;
    } catch {
      return url;
    }
  });
  const listed = named.length === 0 ? named : [PLACEMENT, ...named];
  return createHash('sha256').update(JSON.stringify(listed)).digest('hex').slice(0, 16);
}

/**
 * The first two of `clients` (by index) connected to one Redis server, whatever names
 * or database numbers their URLs give it: pub/sub is shared by a server's databases, so
 * the brokers of both would each hand over every whisper and notice sent to the node.
 * Told apart by INFO's run_id, which each server process draws at random.
 */
export async function sameServer(clients: readonly Redis[]): Promise<[number, number] | undefined> {
  const ids = await Promise.all(
    clients.map(async (client) => /^run_id:(\w+)/m.exec(await client.info('server'))?.[1]),
  );
  for (let j = 1; j < ids.length; j++) {
    const id = ids[j];
    if (id === undefined) continue;
    const i = ids.indexOf(id);
    if (i < j) return [i, j];
  }
  return undefined;
}

/**
 * Whether another node heartbeated within its own timeout decides, in the same step as the
 * write, whether this node's list replaces the stored one: a node that counted itself
 * alone just before another started and recorded its own list would otherwise overwrite
 * it, and both would run with different lists. A node of an older version records no
 * timeout: this node's own stands in for it.
 * A node last heard before `since` (this node's first heartbeat) may be dead: after a
 * silence of every node (the whole cluster killed) the first heartbeat moves their last
 * beats later, as it would after a stall of Redis. When only such nodes count and the list
 * differs, the answer is how long (ms) until they have all either beaten again or passed
 * their timeouts, and this node is recorded as waiting meanwhile: a node waiting so runs
 * with no list yet, and is not counted (nodes started together with a new list after the
 * cluster was killed would otherwise refuse each other).
 * KEYS: the list hash's key, Presence's node zset, its timeouts zset, the hash of nodes
 * waiting. ARGV: hash, this node, timeout ms, since ('' none).
 */
const AGREE_LUA = `
local TIMEOUTS = KEYS[3]
${NODE_TIMES_LUA}
local now, mine, since = real_ms(), tonumber(ARGV[3]), tonumber(ARGV[4])
for _, node in ipairs(redis.call('HKEYS', KEYS[4])) do
  if not redis.call('ZSCORE', KEYS[2], node) then redis.call('HDEL', KEYS[4], node) end
end
local others, unsure = 0, 0
local nodes = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #nodes, 2 do
  local node, score = nodes[i], tonumber(nodes[i + 1])
  if node ~= ARGV[2] and not expired(node, score, now, mine) and redis.call('HEXISTS', KEYS[4], node) == 0 then
    if since and score < since then
      unsure = math.max(unsure, score + timeout_of(node, mine) - now + 1)
    else
      others = others + 1
    end
  end
end
if others == 0 and unsure == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[2])
  return false
end
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local stored = redis.call('GET', KEYS[1])
if stored ~= ARGV[1] and others == 0 then
  redis.call('HSET', KEYS[4], ARGV[2], ARGV[1])
  return unsure
end
redis.call('HDEL', KEYS[4], ARGV[2])
if stored == ARGV[1] then return false end
return stored
`;

/** Where agreeOnShards reads and writes, all on the presence Redis. */
export interface ShardAgreement {
  /** The list hash's key. */
  readonly key: string;
  /** Presence's zset of nodes by the time of their last heartbeat. */
  readonly nodes: string;
  /** Presence's zset of nodes by their own timeouts. */
  readonly timeouts: string;
  /** The hash of nodes waiting for the agreement (node -> its list's hash). */
  readonly waiting: string;
  /** This node, as Presence registered it. */
  readonly node: string;
  /** This node's Presence timeout, for nodes that record none of their own. */
  readonly timeoutMs: number;
  /**
   * This node's first heartbeat (Redis time, ms): nodes last heard before it are not
   * known to run until heard again. Without it, every node heard within its timeout runs.
   */
  readonly since?: number | undefined;
}

/**
 * Records this node's shard list hash, or says the one the running nodes use when it
 * differs. A node with no other live node sets its own: a cluster restarted with a new
 * list takes it from its first node. Returns the other hash on a mismatch, undefined
 * when they agree, and `{ waitMs }` when only nodes not heard from since `where.since`
 * count: ask again, heartbeating meanwhile, once they have beaten or timed out.
 */
export async function agreeOnShards(
  redis: Redis,
  where: ShardAgreement,
  hash: string,
): Promise<string | undefined | { waitMs: number }> {
  const reply = (await redis.eval(
    AGREE_LUA,
    4,
    where.key,
    where.nodes,
    where.timeouts,
    where.waiting,
    hash,
    where.node,
    String(where.timeoutMs),
    where.since === undefined ? '' : String(where.since),
  )) as string | number | null;
  if (typeof reply === 'number') return { waitMs: reply };
  return reply ?? undefined;
}

/** KEYS: the list hash's key, Presence's clock hash. ARGV: ms. See freshState. */
const STATE_AGE_LUA = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local since = tonumber(redis.call('HGET', KEYS[2], 'since') or '')
if not since then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return math.max(0, since + tonumber(ARGV[1]) - now)
`;

/**
 * How long (ms) a starting node that finds no shard list recorded waits before recording its
 * own: what is left of `ms` since the state Redis holds began (a node found Redis empty and
 * made the epoch), when the nodes running before may not have recorded theirs again yet; 0
 * once a list is recorded, or for a state an older version began (no time recorded).
 */
export async function freshState(
  redis: Redis,
  keys: { readonly list: string; readonly clock: string },
  ms: number,
): Promise<number> {
  return Number(await redis.eval(STATE_AGE_LUA, 2, keys.list, keys.clock, String(ms)));
}

/** A history store per Redis instance, as the broker of that instance reads gaps from. */
export type ShardHistory = HistoryStore & BrokerHistory;

/**
 * Room history spread over several stores (one per Redis instance): each room's
 * messages live in the store `shardOf` picks for its key, so every guarantee of
 * HistoryStore holds per room as it does for that store.
 */
export class ShardedHistoryStore implements HistoryStore {
  constructor(readonly shards: readonly ShardHistory[]) {
    if (shards.length === 0) throw new RangeError('at least one history store is needed');
  }

  /** The store that keeps the room. */
  of(room: string): ShardHistory {
    return this.shards[shardOf(room, this.shards.length)]!;
  }

  append(room: string, draft: MessageDraft): Promise<Appended> {
    return this.of(room).append(room, draft);
  }

  room(room: string): Promise<RoomHistory> {
    return this.of(room).room(room);
  }

  read(room: string, query: HistoryQuery): Promise<StoredMessage[]> {
    return this.of(room).read(room, query);
  }

  seen(room: string, epoch: string, id: number): void {
    this.of(room).seen?.(room, epoch, id);
  }

  async prune(now: number): Promise<void> {
    await Promise.all(this.shards.map((s) => s.prune(now)));
  }

  async close(): Promise<void> {
    // Every store is closed even when one fails; the first failure is reported.
    const results = await Promise.allSettled(this.shards.map((s) => s.close()));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  }
}

/**
 * A broker over several Redis instances: each room's events travel through the broker of
 * the instance `shardOf` picks for its key (where its chats are numbered and published
 * too, so each sub-broker keeps the Broker guarantees for its rooms on its own), and
 * whispers and notices through the first one's. Every sub-broker has the same node id
 * (whispers address it, and a node ignores its own room events by it) and hands over to
 * the one handler.
 */
export class ShardedBroker implements Broker {
  readonly node: string;

  constructor(private readonly brokers: readonly Broker[]) {
    const first = brokers[0];
    if (first === undefined) throw new RangeError('at least one broker is needed');
    if (brokers.some((b) => b.node !== first.node)) {
      throw new RangeError('the brokers of one node must share its node id');
    }
    this.node = first.node;
  }

  private of(key: string): Broker {
    return this.brokers[shardOf(key, this.brokers.length)]!;
  }

  onEvent(handler: BrokerHandler): void {
    for (const broker of this.brokers) broker.onEvent(handler);
  }

  async start(): Promise<void> {
    await Promise.all(this.brokers.map((b) => b.start()));
  }

  publish(key: string, event: RoomEvent, epoch?: string): void {
    this.of(key).publish(key, event, epoch);
  }

  inEpoch(key: string, epoch: string, then: (movedTo?: string) => void, through?: number): void {
    this.of(key).inEpoch(key, epoch, then, through);
  }

  askReread(key: string): void {
    this.of(key).askReread(key);
  }

  whisper(node: string, event: WhisperEvent): Promise<boolean> {
    return this.brokers[0]!.whisper(node, event);
  }

  notify(node: string | undefined, notice: NodeNotice): Promise<boolean | undefined> {
    return this.brokers[0]!.notify(node, notice);
  }

  subscribe(room: RoomRef): Promise<void> {
    return this.of(room.key).subscribe(room);
  }

  unsubscribe(key: string): Promise<void> {
    return this.of(key).unsubscribe(key);
  }

  async close(waitMs?: number): Promise<void> {
    await Promise.allSettled(this.brokers.map((b) => b.close(waitMs)));
  }
}

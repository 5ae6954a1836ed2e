import { randomUUID } from 'node:crypto';
import type { RedisOptions } from 'ioredis';
import type {
  Broker,
  BrokerHandler,
  ChatPlace,
  JoinedEvent,
  LostReason,
  NodeNotice,
  ResyncCause,
  RoomEvent,
  RoomRef,
  WhisperEvent,
} from '../core/broker.js';
import type { SaidEvent } from '../core/events.js';
import { asAction, type HistoryStore } from '../core/history.js';
import { Redis } from '../store/ioredis.js';
import { commandClient, DISCONNECT_MS } from '../store/redis-client.js';
import {
  DEFAULT_REDIS_PREFIX,
  KEEP_INTERVAL_MS,
  type PublishedChat,
  type PublishedChats,
  roomChannel,
  roomTag,
} from '../store/redis-history.js';

export interface RedisBrokerOptions {
  /**
   * A `redis://host:port` URL, or a client the caller owns (left open on close) for
   * publishing. The subscriber is always a connection of the broker's own.
   */
  readonly redis: string | Redis;
  /**
   * Where chats are numbered, stored and published: a RedisHistoryStore with
   * `publish: true` and the same prefix. Gaps are filled from it.
   */
  readonly history: BrokerHistory;
  /** The same prefix as the history store's. */
  readonly prefix?: string;
  /** This node's address for whispers; unique in the cluster. */
  readonly node?: string;
  readonly onError?: (error: Error) => void;
  /**
   * Events held per room while its missing chats are fetched; beyond it they are
   * dropped, and the chats among them fetched again.
   */
  readonly maxHeld?: number;
  /** How often the rooms with members here are kept in history (`BrokerHistory.keep`). */
  readonly keepIntervalMs?: number;
  /** The longest an inEpoch caller waits for its room to move (AWAIT_MS). */
  readonly epochWaitMs?: number;
}

/**
 * What the broker reads gaps from; `seen` (RedisHistoryStore's) learns of every chat
 * handed over, so a roll-back of Redis below it is noticed, and `keep` (also
 * RedisHistoryStore's) is told, now and then, the rooms this node has members in.
 */
export type BrokerHistory = Pick<HistoryStore, 'room' | 'read'> & {
  seen?(room: string, epoch: string, id: number): void;
  keep?(rooms: readonly string[]): Promise<void>;
};

/**
 * On a room's channel: read the room's members again (BrokerHandler.resync, 'publish'). Sent
 * by a node whose PUBLISH of one of the room's events failed, once its command connection
 * takes commands again. A node of an older version hands it to its core as an event of a
 * type it does not know, which shows nobody anything.
 */
interface ResyncControl {
  readonly type: 'resync';
  /**
   * The sender's count of its resync rounds: back on its own subscription, every event it
   * published before the round has come back or never will (BrokerHandler.unplaced).
   */
  readonly n?: number;
}

/** What other nodes publish with PUBLISH (chats come from the append script instead). */
interface Envelope {
  /** The publishing node: a node ignores its own events, which it delivered at once. */
  readonly o: string;
  readonly e: RoomEvent | WhisperEvent | NodeNotice | ResyncControl;
}

/**
 * The events other than chats a room's channel carries, handed over as they come; any other
 * type (a newer node's) is dropped. Chats come only from the append script, in id order.
 */
const ROOM_EVENT_TYPES: Readonly<Record<Exclude<RoomEvent['type'], 'chat'>, true>> = {
  joined: true,
  left: true,
  renamed: true,
  moderated: true,
  gap: true,
};

function isRoomEvent(e: Envelope['e']): e is Exclude<RoomEvent, SaidEvent> {
  return Object.hasOwn(ROOM_EVENT_TYPES, e.type);
}

/** Every notice's type: a new one the compiler makes this list name, or it is never passed on. */
const NOTICE_TYPES: Readonly<Record<NodeNotice['type'], true>> = {
  remove: true,
  banned: true,
  unbanned: true,
  evict: true,
  missed: true,
  unheard: true,
  kicked: true,
};

function isNotice(e: Envelope['e']): e is NodeNotice {
  return Object.hasOwn(NOTICE_TYPES, e.type);
}

/** A caller of inEpoch: for `epoch`, and within it the chats up to `through` if given. */
interface Awaiting {
  readonly epoch: string;
  readonly through: number | undefined;
  readonly then: (movedTo?: string) => void;
}

type Held =
  | { readonly chat: SaidEvent; readonly epoch: string }
  | { readonly chat: undefined; readonly event: RoomEvent; readonly placed?: undefined }
  /** This node's own join come back: handed to `placed` in its turn. */
  | { readonly chat: undefined; readonly event: JoinedEvent; readonly placed: ChatPlace }
  /** This node's own resync round come back: its doubtful joins before it are told. */
  | { readonly chat: undefined; readonly event: undefined; readonly round: number };

/** Own joins whose PUBLISH failed kept per room until a resync round tells them; the oldest go past it. */
const MAX_DOUBTFUL_JOINS = 64;

interface RoomState {
  readonly key: string;
  readonly channel: string;
  name: string;
  /** The epoch of the chats handed over; undefined until the first catch-up reads it. */
  epoch: string | undefined;
  /** The id of the last chat handed over (or the top when subscribing). */
  last: number;
  /**
   * The last chat id, and its epoch, that arrived on the room's channel (or was the top
   * when the room was first subscribed), in the channel's order: this node's joins that
   * come back are placed after it.
   */
  seenEpoch: string;
  seenId: number;
  /** In step: live events go straight to the handler; otherwise they wait in `held`. */
  inStep: boolean;
  held: Held[];
  /** Events were dropped from `held`: catch up again, and tell the handler to resync. */
  overflowed: boolean;
  /** Events other than chats may have been missed: `resync` is due once back in step. */
  resync: boolean;
  /** Another node asked for a read of the members (ResyncControl), due once back in step. */
  reread: boolean;
  /**
   * This node's joins whose PUBLISH failed, each with the resync round current then: they
   * may still come back, and are told to `unplaced` once a later round has come back.
   */
  doubtful: { readonly event: JoinedEvent; readonly after: number }[];
  /**
   * This node's joins whose PUBLISH has not answered yet and which have not come back: one
   * that comes back before its PUBLISH fails is not doubtful.
   */
  unanswered: Set<JoinedEvent>;
  /** The subscriber connection generation the room's SUBSCRIBE was confirmed on. */
  subscribedOn: number;
  syncing: boolean;
  again: boolean;
  retry: NodeJS.Timeout | undefined;
  failures: number;
  everInStep: boolean;
  /** Epochs this node has moved past: their late chats are dropped. */
  readonly retired: Set<string>;
  /** inEpoch's callers waiting for the room's hand-over to get to them, in order. */
  awaiting: Awaiting[] | undefined;
  /** Calls them past AWAIT_MS however the room's catch-up goes. */
  awaitTimer: NodeJS.Timeout | undefined;
  readonly ready: Promise<void>;
  resolveReady(): void;
  rejectReady(error: Error): void;
}

const PAGE = 500;
const DEFAULT_MAX_HELD = 10_000;
/** inEpoch's callers kept per room; with one more, all are called. */
const MAX_AWAITING = 10_000;
/** The longest an inEpoch caller waits (a catch-up retries for longer while Redis is down). */
const AWAIT_MS = 10_000;
/** Catch-up rounds one sync makes before it waits (a room whose epoch keeps changing). */
const MAX_ROUNDS = 5;
const RETRY_MS = [50, 100, 250, 500, 1_000, 2_000, 5_000];
/**
 * Rooms remembered whose event's PUBLISH failed until each is told to resync: past it the
 * longest waiting are given up (logged). A room, not an event: one resync mends them all.
 */
const MAX_UNSENT_ROOMS = 10_000;
/** How long close() waits for Redis to answer QUIT before it just disconnects, unless told. */
const QUIT_MS = 1_000;

export function nodeChannel(prefix: string, node: string): string {
  return `${prefix}b:n:${roomTag(node)}`;
}

/** Where notices to every node go. */
export function allChannel(prefix: string): string {
  return `${prefix}b:all`;
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/**
 * An append script payload's epoch (when it is ASCII and needs no escapes), first and last
 * id, matched on the payload's head decoded as latin1: ASCII only, so that no other
 * bytes can pass for the epoch.
 */
const CHATS_HEAD = /^\["C","([^"\\\x80-\xff]*)",(\d{1,15}),(\d{1,15}),/;
/**
 * Bytes of a payload's head read for CHATS_HEAD: room for 15-digit ids and any epoch the
 * store makes; a longer epoch fails the match, and the payload is parsed in full instead.
 */
const HEAD_BYTES = 128;
/** `[`: an append script's payload; other events are JSON objects. */
const OPEN_BRACKET = 0x5b;

/**
 * Checks the shape of one append script call's payload,
 * `["C", epoch, first id, last id, [at, from, msg, origin], ...]` (PublishedChats); its
 * chats stay where they are.
 */
function parseChats(payload: string): PublishedChats {
  const parsed: unknown = JSON.parse(payload);
  if (!Array.isArray(parsed) || parsed.length < 5 || parsed[0] !== 'C') {
    throw new Error('malformed chat payload');
  }
  const first: unknown = parsed[2];
  if (
    typeof parsed[1] !== 'string' ||
    typeof first !== 'number' ||
    !Number.isSafeInteger(first) ||
    parsed[3] !== first + parsed.length - 5
  ) {
    throw new Error('malformed chat payload');
  }
  for (let i = 4; i < parsed.length; i++) {
    const c: unknown = parsed[i];
    if (
      !Array.isArray(c) ||
      typeof c[0] !== 'number' ||
      typeof c[1] !== 'string' ||
      typeof c[2] !== 'string' ||
      (c[3] !== undefined && c[3] !== 0 && typeof c[3] !== 'string') ||
      (c[4] !== undefined && c[4] !== 1)
    ) {
      throw new Error('malformed chat payload');
    }
  }
  return parsed as PublishedChats;
}

/**
 * The cluster broker: room events travel over Redis pub/sub, one channel per room under
 * the prefix (base64url of the room key, so any Unicode key is a distinct, safe name),
 * and one per node for whispers.
 *
 * Chats are not published here: RedisHistoryStore's append script publishes each one in
 * the atomic step that numbers and stores it, so every subscriber receives a room's
 * chats in id order, and `publish(chat)` only hands the sender's own node its chat
 * without waiting for the Redis echo (when it is the next id there; otherwise the echo
 * brings it in its place). Each node tracks, per room, the epoch and last id it handed
 * over; on a gap, an epoch it does not know, or a re-established subscription, it holds
 * live events, reads the missing range from history, hands it over, then the held
 * events. Other events are published with PUBLISH (pipelined: ioredis writes the
 * commands of one event-loop turn together).
 *
 * The subscriber connection speaks RESP2, like the history store: RESP3 would let one
 * connection do both, but a dedicated subscriber keeps a burst of publications from
 * queueing behind history reads, and its reconnects are observable on their own.
 */
export class RedisBroker implements Broker {
  readonly node: string;
  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly ownsPub: boolean;
  private readonly history: BrokerHistory;
  private readonly prefix: string;
  private readonly onError: (error: Error) => void;
  private readonly maxHeld: number;
  private readonly epochWaitMs: number;
  private readonly myChannel: string;
  private readonly everyChannel: string;
  private handler: BrokerHandler | undefined;
  private readonly rooms = new Map<string, RoomState>();
  private readonly byChannel = new Map<string, RoomState>();
  /** Counts the subscriber's connections: a SUBSCRIBE confirmed on an older one is gone. */
  private generation = 0;
  private connected = false;
  /**
   * Told once when the subscriber connection is next ready, each removed as soon as what it
   * waited for settled. A set rather than one promise renewed per connection: a reaction
   * added to that promise by every room's SUBSCRIBE stayed until the next reconnect, which
   * may not come for months, and held the room's whole state (each room ever subscribed,
   * about a kilobyte apiece).
   */
  private readonly readyWaiters = new Set<() => void>();
  private closed = false;
  private readonly started: Promise<void>;
  private readonly keeper: NodeJS.Timeout | undefined;
  private keeping = false;
  /**
   * Rooms whose event's PUBLISH failed (it may or may not have reached Redis), oldest first,
   * each with the number of the last such failure: their channels are told to resync.
   */
  private readonly unsent = new Map<string, number>();
  private unsentCount = 0;
  private mending = false;
  /** Resync rounds sent (ResyncControl.n). */
  private rounds = 0;
  private mendRetry: NodeJS.Timeout | undefined;
  private mendFailures = 0;

  constructor(options: RedisBrokerOptions) {
    this.node = options.node ?? randomUUID();
    this.prefix = options.prefix ?? DEFAULT_REDIS_PREFIX;
    this.history = options.history;
    this.maxHeld = options.maxHeld ?? DEFAULT_MAX_HELD;
    this.epochWaitMs = options.epochWaitMs ?? AWAIT_MS;
    const onError = options.onError;
    this.onError = (error) => onError?.(error);
    this.myChannel = nodeChannel(this.prefix, this.node);
    this.everyChannel = allChannel(this.prefix);
    const subOptions: RedisOptions = {
      protocol: 2,
      // Resubscribing is done here, room by room, with the catch-up it needs.
      autoResubscribe: false,
      // Set here, since duplicate() copies the command client's `false`: a SUBSCRIBE or
      // UNSUBSCRIBE whose reply a dropped connection lost is safe to send again, and
      // ioredis 6 otherwise forgets it, its promise never settling.
      autoResendUnfulfilledCommands: true,
      // A SUBSCRIBE waits for the connection however long it takes.
      maxRetriesPerRequest: null,
      disconnectTimeout: DISCONNECT_MS,
    };
    if (typeof options.redis === 'string') {
      this.ownsPub = true;
      this.pub = commandClient(options.redis);
      this.pub.on('error', this.onError);
      this.sub = new Redis(options.redis, subOptions);
    } else {
      this.ownsPub = false;
      this.pub = options.redis;
      this.sub = options.redis.duplicate(subOptions);
    }
    this.sub.on('error', this.onError);
    // Buffers: the echo of this node's own chats is recognised from its head, not decoded.
    this.sub.on('messageBuffer', (channel: Buffer, message: Buffer) =>
      this.message(channel.toString(), message),
    );
    this.sub.on('close', () => this.disconnected());
    this.sub.on('ready', () => this.reconnected());
    // Queued until the first connection is ready; later connections subscribe again.
    this.started = this.sub.subscribe(this.myChannel, this.everyChannel).then(() => {});
    this.started.catch(() => {});
    if (this.history.keep !== undefined) {
      this.keeper = setInterval(() => this.keepRooms(), options.keepIntervalMs ?? KEEP_INTERVAL_MS);
      this.keeper.unref();
    }
  }

  /** Keeps the rooms this node has members in (their epochs, while nobody writes there). */
  private keepRooms(): void {
    if (this.keeping || this.rooms.size === 0) return;
    this.keeping = true;
    this.history.keep!([...this.rooms.keys()])
      .catch((error: unknown) => this.onError(asError(error)))
      .finally(() => {
        this.keeping = false;
      });
  }

  start(): Promise<void> {
    return this.started;
  }

  onEvent(handler: BrokerHandler): void {
    this.handler = handler;
  }

  publish(key: string, event: RoomEvent, epoch?: string): void {
    if (this.closed) return;
    const state = this.rooms.get(key);
    if (event.type === 'chat') {
      // The append script published it; only the fast path for this node is left, within
      // the epoch being handed over: history emptied without a restart (FLUSHALL, a failover)
      // leaves the room in step while the append's id 1, 2, … are of a new epoch.
      if (state?.inStep && event.id === state.last + 1 && (epoch ?? state.epoch) === state.epoch) {
        state.last = event.id;
        this.hand(state, event);
      }
      return;
    }
    if (state !== undefined) {
      if (state.inStep) this.hand(state, event);
      else this.hold(state, { chat: undefined, event });
    }
    const envelope: Envelope = { o: this.node, e: event };
    const join = event.type === 'joined' && state !== undefined ? event : undefined;
    if (join !== undefined) state!.unanswered.add(join);
    this.pub.publish(roomChannel(this.prefix, key), JSON.stringify(envelope)).then(
      () => {
        if (join !== undefined) state!.unanswered.delete(join);
      },
      (error: unknown) => {
        // Redis may have run it: told as not coming back only once a later round has come
        // back, unless it has come back already.
        const back = join !== undefined && !state!.unanswered.delete(join);
        if (join !== undefined && !back && !this.closed) {
          if (state!.doubtful.length >= MAX_DOUBTFUL_JOINS) state!.doubtful.shift();
          state!.doubtful.push({ event: join, after: this.rounds });
        }
        this.unsentTo(key, error);
      },
    );
  }

  inEpoch(key: string, epoch: string, then: (movedTo?: string) => void, through?: number): void {
    const state = this.rooms.get(key);
    if (
      this.closed ||
      state === undefined ||
      state.epoch === undefined ||
      (state.epoch === epoch && (through === undefined || through <= state.last)) ||
      state.retired.has(epoch)
    ) {
      this.tell(then);
      return;
    }
    if (state.awaiting === undefined) {
      state.awaiting = [];
      // Each waiter holds its sender's later requests: a catch-up that keeps failing must
      // not hold them for the whole outage.
      state.awaitTimer = setTimeout(() => this.moved(state), this.epochWaitMs);
      state.awaitTimer.unref();
    }
    state.awaiting.push({ epoch, through, then });
    // Bounded by the chats in flight of the room's members here; a cap all the same.
    if (state.awaiting.length >= MAX_AWAITING) this.moved(state);
  }

  /**
   * Calls whoever waits in inEpoch, in order: the room moved to `to` (`lost` told it first),
   * is forgotten, or they waited `epochWaitMs`. One that waits for another epoch than `to`
   * is told where the room went: its epoch was lost before any of its chats came here.
   */
  private moved(state: RoomState, to?: string): void {
    const awaiting = state.awaiting;
    if (awaiting === undefined) return;
    // Those of the epoch moved to still wait for its chats below theirs, the first of them
    // with those after it, in order (the bound on the wait goes on).
    let kept = awaiting.length;
    if (to !== undefined) {
      kept = awaiting.findIndex(
        (a) => a.epoch === to && a.through !== undefined && a.through > state.last,
      );
      if (kept < 0) kept = awaiting.length;
    }
    this.release(state, kept, to);
  }

  /**
   * The room's chats through `id` were handed over (or lost): inEpoch's first callers whose
   * chats are all handed over now go, in order.
   */
  private handedThrough(state: RoomState, id: number): void {
    const awaiting = state.awaiting;
    if (awaiting === undefined) return;
    let done = 0;
    while (done < awaiting.length) {
      const a = awaiting[done]!;
      if (a.epoch !== state.epoch || (a.through !== undefined && a.through > id)) break;
      done++;
    }
    if (done > 0) this.release(state, done);
  }

  /** Calls the first `count` of inEpoch's callers, in order; the rest wait on. */
  private release(state: RoomState, count: number, to?: string): void {
    const awaiting = state.awaiting!;
    const callers = awaiting.slice(0, count);
    if (count < awaiting.length) {
      state.awaiting = awaiting.slice(count);
      // The wait moved on: its bound counts from here, for the callers left.
      state.awaitTimer?.refresh();
    } else {
      state.awaiting = undefined;
      clearTimeout(state.awaitTimer);
      state.awaitTimer = undefined;
    }
    for (const { epoch, then } of callers) {
      const elsewhere = to !== undefined && epoch !== to ? to : undefined;
      this.tell(() => then(elsewhere));
    }
  }

  whisper(node: string, event: WhisperEvent): Promise<boolean> {
    if (this.closed) return Promise.reject(new Error('broker is closed'));
    if (node === this.node) {
      this.handWhisper(event);
      return Promise.resolve(true);
    }
    const envelope: Envelope = { o: this.node, e: event };
    // PUBLISH counts the subscribers it reached: none means the node's subscriber
    // connection is gone (the node died), though Presence still lists its members.
    return this.pub
      .publish(nodeChannel(this.prefix, node), JSON.stringify(envelope))
      .then((receivers) => receivers > 0);
  }

  // ---- events whose PUBLISH failed ----

  /**
   * A PUBLISH of the room's event failed: its reply was lost, so the other nodes may or may
   * not have it. Sending it again could show it twice; instead the room's nodes are told to
   * read its members again (ResyncControl), which shows what they missed, once.
   */
  private unsentTo(key: string, error: unknown): void {
    this.onError(asError(error));
    this.askReread(key);
  }

  askReread(key: string): void {
    if (this.closed) return;
    this.unsent.delete(key);
    this.unsent.set(key, ++this.unsentCount);
    if (this.unsent.size > MAX_UNSENT_ROOMS) {
      const oldest = this.unsent.keys().next().value!;
      this.unsent.delete(oldest);
      this.onError(new Error(`room ${oldest}: too many rooms to resync; not told to`));
    }
    this.mend();
  }

  /**
   * Tells the channel of each room in `unsent` to resync. Sent on the command connection,
   * so these wait for it to be back (ioredis queues them meanwhile); retried while they fail.
   */
  private mend(): void {
    if (this.mending || this.mendRetry !== undefined || this.closed || this.unsent.size === 0) {
      return;
    }
    this.mending = true;
    const control: Envelope = { o: this.node, e: { type: 'resync', n: ++this.rounds } };
    const payload = JSON.stringify(control);
    const sent = [...this.unsent].map(([key, count]) =>
      this.pub.publish(roomChannel(this.prefix, key), payload).then(() => {
        // Not if it failed again meanwhile: that failure may be after this control.
        if (this.unsent.get(key) === count) this.unsent.delete(key);
      }),
    );
    void Promise.allSettled(sent).then((results) => {
      this.mending = false;
      if (this.closed) return;
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed === undefined) {
        this.mendFailures = 0;
        this.mend();
        return;
      }
      this.onError(asError(failed.reason));
      const delay = RETRY_MS[Math.min(this.mendFailures++, RETRY_MS.length - 1)]!;
      this.mendRetry = setTimeout(() => {
        this.mendRetry = undefined;
        this.mend();
      }, delay);
      this.mendRetry.unref();
    });
  }

  notify(node: string | undefined, notice: NodeNotice): Promise<boolean | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    if (node === this.node) {
      this.handNotice(notice);
      return Promise.resolve(true);
    }
    const envelope: Envelope = { o: this.node, e: notice };
    const channel = node === undefined ? this.everyChannel : nodeChannel(this.prefix, node);
    // As for a whisper: no receiver means that node's subscriber connection is gone.
    return this.pub.publish(channel, JSON.stringify(envelope)).then(
      (receivers) => node === undefined || receivers > 0,
      (error: unknown) => {
        this.onError(asError(error));
        return undefined;
      },
    );
  }

  subscribe(room: RoomRef): Promise<void> {
    if (this.closed) return Promise.reject(new Error('broker is closed'));
    const existing = this.rooms.get(room.key);
    if (existing !== undefined) {
      existing.name = room.name;
      return existing.ready;
    }
    let resolveReady!: () => void;
    let rejectReady!: (error: Error) => void;
    const ready = new Promise<void>((resolve, reject) => {
      resolveReady = resolve;
      rejectReady = reject;
    });
    const state: RoomState = {
      key: room.key,
      channel: roomChannel(this.prefix, room.key),
      name: room.name,
      epoch: undefined,
      last: 0,
      seenEpoch: '',
      seenId: 0,
      inStep: false,
      held: [],
      overflowed: false,
      resync: false,
      reread: false,
      doubtful: [],
      unanswered: new Set(),
      subscribedOn: -1,
      syncing: false,
      again: false,
      retry: undefined,
      failures: 0,
      everInStep: false,
      retired: new Set(),
      awaiting: undefined,
      awaitTimer: undefined,
      ready,
      resolveReady,
      rejectReady,
    };
    this.rooms.set(state.key, state);
    this.byChannel.set(state.channel, state);
    this.sync(state);
    return ready;
  }

  async unsubscribe(key: string): Promise<void> {
    const state = this.rooms.get(key);
    if (state === undefined) return;
    this.forget(state);
    state.resolveReady();
    if (this.closed) return;
    try {
      await this.sub.unsubscribe(state.channel);
    } catch (error) {
      // Gone with the connection: a new one subscribes only to the rooms still here.
      this.onError(asError(error));
    }
  }

  async close(waitMs = QUIT_MS): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.keeper);
    clearTimeout(this.mendRetry);
    this.unsent.clear();
    for (const state of [...this.rooms.values()]) {
      this.forget(state);
      state.rejectReady(new Error('broker is closed'));
    }
    const quit = async (redis: Redis) => {
      // QUIT would wait behind queued SUBSCRIBEs for a reconnect that may never come.
      if (redis.status !== 'ready') {
        redis.disconnect();
        return;
      }
      // A Redis that stalls (connected, answering nothing) would hold QUIT, and with it the
      // connection and the process, until it answers.
      let timer: NodeJS.Timeout | undefined;
      const stalled = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), Math.min(waitMs, QUIT_MS));
      });
      const quitted = await Promise.race([
        redis.quit().then(
          () => true,
          () => false,
        ),
        stalled,
      ]);
      clearTimeout(timer);
      if (!quitted) redis.disconnect();
    };
    await Promise.all([quit(this.sub), this.ownsPub ? quit(this.pub) : Promise.resolve()]);
  }

  // ---- receiving ----

  private message(channel: string, bytes: Buffer): void {
    if (channel === this.myChannel || channel === this.everyChannel) {
      const envelope = this.parseEnvelope(bytes.toString());
      if (envelope === undefined) return;
      const event = envelope.e;
      if (channel === this.myChannel && event.type === 'whisper') this.handWhisper(event);
      else if (isNotice(event) && envelope.o !== this.node) this.handNotice(event);
      return;
    }
    const state = this.byChannel.get(channel);
    if (state === undefined) return;
    if (bytes[0] !== OPEN_BRACKET) {
      const envelope = this.parseEnvelope(bytes.toString());
      if (envelope === undefined) return;
      const event = envelope.e;
      if (event.type === 'resync') {
        if (envelope.o !== this.node) this.rereadAsked(state);
        else if (typeof event.n === 'number') this.roundBack(state, event.n);
        return;
      }
      // Whispers and notices have channels of their own; an unknown type is a newer node's.
      if (!isRoomEvent(event)) return;
      if (envelope.o === this.node) {
        // Handed over already when published; a join is placed among the chats now.
        if (event.type === 'joined') this.placeJoin(state, event);
        return;
      }
      if (state.inStep) this.hand(state, event);
      else this.hold(state, { chat: undefined, event });
      return;
    }
    if (this.handedAlready(state, bytes)) return;
    let chats: PublishedChats;
    try {
      chats = parseChats(bytes.toString());
    } catch (error) {
      this.onError(asError(error));
      return;
    }
    const epoch = chats[1];
    const first = chats[2];
    this.seen(state, epoch, chats[3]);
    for (let i = 4; i < chats.length; i++) {
      // The handler may have unsubscribed the room meanwhile.
      if (!this.alive(state)) return;
      const id = first + i - 4;
      // Handed over already (this node's own, through publish): no event made for it.
      if (state.inStep && id <= state.last && epoch === state.epoch) continue;
      const [at, from, msg, sent, action] = chats[i] as PublishedChat;
      const origin = sent === 0 ? undefined : sent;
      const chat: SaidEvent = { type: 'chat', room: state.name, id, at, from, msg, origin, epoch };
      this.receiveChat(state, asAction(chat, action === 1), epoch);
    }
  }

  /**
   * Whether every chat of an append script's payload was handed over already (the echo
   * of this node's own chats, mostly), read from its head without decoding the rest.
   */
  private handedAlready(state: RoomState, bytes: Buffer): boolean {
    if (!state.inStep || state.epoch === undefined) return false;
    const head = CHATS_HEAD.exec(bytes.toString('latin1', 0, HEAD_BYTES));
    if (
      head !== null &&
      head[1] === state.epoch &&
      Number(head[3]) <= state.last &&
      Number(head[2]) <= Number(head[3])
    ) {
      this.seen(state, state.epoch, Number(head[3]));
      return true;
    }
    return false;
  }

  /**
   * Another node could not tell whether an event of the room reached this one: the members
   * are read again once the room is in step. Not before its first catch-up: the first read
   * of the members comes after it.
   */
  private rereadAsked(state: RoomState): void {
    if (!state.everInStep) return;
    if (!state.inStep) {
      state.reread = true;
      return;
    }
    const handler = this.handler;
    if (handler?.resync !== undefined) this.tell(() => handler.resync!(state.key, 'publish'));
  }

  /**
   * This node's resync round `round` came back on the room's channel, after every event it
   * published before it: its joins that failed before the round and have not come back
   * never will. In turn with the events held before it.
   */
  private roundBack(state: RoomState, round: number): void {
    if (!state.inStep) {
      this.hold(state, { chat: undefined, event: undefined, round });
      return;
    }
    this.roundCame(state, round);
  }

  /** The round's turn among the room's events (in step, or drained after a catch-up). */
  private roundCame(state: RoomState, round: number): void {
    const told = state.doubtful.filter((d) => d.after < round);
    if (told.length === 0) return;
    state.doubtful = state.doubtful.filter((d) => d.after >= round);
    const handler = this.handler;
    if (handler?.unplaced === undefined) return;
    for (const { event } of told) {
      const named = event.room === state.name ? event : { ...event, room: state.name };
      this.tell(() => handler.unplaced!(state.key, named));
    }
  }

  /** Chats up to `id` of `epoch` came on the room's channel (see RoomState.seenId). */
  private seen(state: RoomState, epoch: string, id: number): void {
    if (epoch === state.seenEpoch) {
      if (id > state.seenId) state.seenId = id;
    } else if (!state.retired.has(epoch)) {
      state.seenEpoch = epoch;
      state.seenId = id;
    }
  }

  /** This node's own join came back on the room's channel: after the chats seen so far. */
  private placeJoin(state: RoomState, event: JoinedEvent): void {
    const doubtful = state.doubtful.findIndex((d) => d.event.nickname === event.nickname);
    if (doubtful >= 0) state.doubtful.splice(doubtful, 1);
    else {
      for (const join of state.unanswered) {
        if (join.nickname !== event.nickname) continue;
        state.unanswered.delete(join);
        break;
      }
    }
    const placed: ChatPlace = { epoch: state.seenEpoch, id: state.seenId };
    if (state.inStep) this.handPlaced(state, event, placed);
    else this.hold(state, { chat: undefined, event, placed });
  }

  private handPlaced(state: RoomState, event: JoinedEvent, after: ChatPlace): void {
    const handler = this.handler;
    if (handler?.placed === undefined) return;
    const named = event.room === state.name ? event : { ...event, room: state.name };
    this.tell(() => handler.placed!(state.key, named, after));
  }

  private receiveChat(state: RoomState, chat: SaidEvent, epoch: string): void {
    if (!state.inStep) {
      this.hold(state, { chat, epoch });
      return;
    }
    if (epoch === state.epoch) {
      if (chat.id <= state.last) return;
      if (chat.id === state.last + 1) {
        state.last = chat.id;
        this.hand(state, chat);
        return;
      }
    } else if (state.retired.has(epoch)) {
      return;
    }
    // A gap, or a new epoch: what is missing comes from history first.
    state.inStep = false;
    this.hold(state, { chat, epoch });
    this.sync(state);
  }

  private parseEnvelope(payload: string): Envelope | undefined {
    try {
      const parsed = JSON.parse(payload) as Partial<Envelope> | null;
      if (
        typeof parsed === 'object' &&
        parsed !== null &&
        typeof parsed.o === 'string' &&
        typeof parsed.e === 'object' &&
        parsed.e !== null &&
        typeof parsed.e.type === 'string'
      ) {
        return parsed as Envelope;
      }
      throw new Error('malformed event payload');
    } catch (error) {
      this.onError(asError(error));
      return undefined;
    }
  }

  private hold(state: RoomState, item: Held): void {
    if (state.held.length >= this.maxHeld) {
      // Chats dropped here are read from history again; other events are gone.
      state.overflowed = true;
      return;
    }
    state.held.push(item);
  }

  private hand(state: RoomState, event: RoomEvent): void {
    if (event.type === 'chat' && state.epoch !== undefined) {
      this.history.seen?.(state.key, state.epoch, event.id);
    }
    const handler = this.handler;
    if (handler !== undefined) {
      try {
        handler.room(state.key, event.room === state.name ? event : { ...event, room: state.name });
      } catch (error) {
        this.onError(asError(error));
      }
    }
    if (event.type === 'chat' && state.awaiting !== undefined) this.handedThrough(state, event.id);
  }

  private handWhisper(event: WhisperEvent): void {
    try {
      this.handler?.whisper(event);
    } catch (error) {
      this.onError(asError(error));
    }
  }

  private handNotice(notice: NodeNotice): void {
    const handler = this.handler;
    if (handler?.notice !== undefined) this.tell(() => handler.notice!(notice));
  }

  private tell(fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.onError(asError(error));
    }
  }

  private lost(state: RoomState, reason: LostReason): void {
    const handler = this.handler;
    if (handler?.lost !== undefined) {
      this.tell(() => handler.lost!(state.key, reason, state.epoch ?? ''));
    }
    // Chats deleted before they could be read are handed over as far as they ever will be.
    if (reason === 'trimmed') this.handedThrough(state, state.last);
  }

  // ---- subscriber connection ----

  private disconnected(): void {
    if (!this.connected) return;
    this.connected = false;
    this.generation++;
    // Whatever is published until the next SUBSCRIBE is missed: catch up after it.
    for (const state of this.rooms.values()) state.inStep = false;
  }

  /**
   * `work`'s outcome, or `ifReady` once the subscriber connection is next ready, whichever
   * comes first. Nothing of the wait stays once `work` settles.
   */
  private untilReady<T>(work: Promise<T>, ifReady: T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const ready = () => resolve(ifReady);
      this.readyWaiters.add(ready);
      work.then(
        (value) => {
          this.readyWaiters.delete(ready);
          resolve(value);
        },
        (error: unknown) => {
          this.readyWaiters.delete(ready);
          reject(error);
        },
      );
    });
  }

  private reconnected(): void {
    this.connected = true;
    const waiting = [...this.readyWaiters];
    this.readyWaiters.clear();
    for (const ready of waiting) ready();
    // The first connection sends what was queued for it: the node's and the rooms' SUBSCRIBEs.
    if (this.generation === 0) return;
    this.sub
      .subscribe(this.myChannel, this.everyChannel)
      .catch((error: unknown) => this.onError(asError(error)));
    for (const state of this.rooms.values()) {
      if (state.everInStep) state.resync = true;
      this.sync(state);
    }
  }

  // ---- catching up ----

  private alive(state: RoomState): boolean {
    return !this.closed && this.rooms.get(state.key) === state;
  }

  private forget(state: RoomState): void {
    this.rooms.delete(state.key);
    this.byChannel.delete(state.channel);
    if (state.retry !== undefined) clearTimeout(state.retry);
    state.held = [];
    this.moved(state);
  }

  /** Subscribes the room if needed, catches up from history, then hands over what was held. */
  private sync(state: RoomState): void {
    state.inStep = false;
    if (state.syncing) {
      state.again = true;
      return;
    }
    if (state.retry !== undefined) {
      clearTimeout(state.retry);
      state.retry = undefined;
    }
    state.syncing = true;
    this.runSync(state).then(
      () => {
        state.syncing = false;
      },
      (error: unknown) => {
        state.syncing = false;
        if (!this.alive(state)) return;
        this.onError(asError(error));
        const delay = RETRY_MS[Math.min(state.failures++, RETRY_MS.length - 1)]!;
        state.retry = setTimeout(() => {
          state.retry = undefined;
          if (this.alive(state)) this.sync(state);
        }, delay);
        state.retry.unref();
      },
    );
  }

  private async runSync(state: RoomState): Promise<void> {
    for (let round = 0; round < MAX_ROUNDS; round++) {
      state.again = false;
      const generation = this.generation;
      if (state.subscribedOn !== generation) {
        // A SUBSCRIBE still unanswered once the connection is ready again may never be:
        // ioredis neither resends nor fails what a connection that drops before it is ready
        // had written (6.0 writes no SUBSCRIBE then; earlier versions did). Not waited for
        // past that.
        const confirmed = await this.untilReady(
          this.sub.subscribe(state.channel).then(() => true),
          false,
        );
        if (!this.alive(state)) return;
        // Confirmed on a connection that has since closed, or not at all: subscribe again.
        if (!confirmed || this.generation !== generation) continue;
        state.subscribedOn = generation;
      }
      await this.catchUp(state);
      if (!this.alive(state)) return;
      if (state.subscribedOn !== this.generation) continue;
      if (this.drain(state) && !state.again) {
        state.inStep = true;
        state.failures = 0;
        state.everInStep = true;
        state.resolveReady();
        // Only now: whatever is published after the handler reads the membership arrives.
        const handler = this.handler;
        const cause: ResyncCause | undefined = state.resync
          ? 'subscription'
          : state.reread
            ? 'publish'
            : undefined;
        state.resync = false;
        state.reread = false;
        // Every member waiting for its join is given up with the subscription: a round lost
        // with it would otherwise tell these later, to a later join of the same name.
        if (cause === 'subscription') state.doubtful = [];
        if (cause !== undefined && handler?.resync !== undefined) {
          this.tell(() => handler.resync!(state.key, cause));
        }
        return;
      }
    }
    throw new Error(`room ${state.key}: chats still out of step after ${MAX_ROUNDS} catch-ups`);
  }

  /**
   * Reads the room's epoch and top, then every chat after the last handed over up to that
   * top. Called only once the room's SUBSCRIBE is confirmed, so whatever is published
   * after the top was read arrives live, and is held meanwhile.
   */
  private async catchUp(state: RoomState): Promise<void> {
    const info = await this.history.room(state.key);
    if (!this.alive(state)) return;
    if (state.epoch === undefined) {
      state.epoch = info.epoch;
      state.last = info.top;
      // Joins wait for the first subscription: what it reads came before any of them.
      this.seen(state, info.epoch, info.top);
      return;
    }
    if (info.epoch !== state.epoch) {
      state.retired.add(state.epoch);
      if (state.retired.size > 8) state.retired.delete(state.retired.values().next().value!);
      state.epoch = info.epoch;
      // After a roll-back the ids up to the base are older chats: not handed over again.
      state.last = info.base ?? 0;
      // Joins are placed from the new epoch's base until its chats come on the channel (not
      // from its top: a join published before the read may precede chats at or below it).
      this.seen(state, info.epoch, state.last);
      this.lost(state, 'epoch');
      this.moved(state, info.epoch);
      if (!this.alive(state)) return;
    }
    while (state.last < info.top) {
      const page = await this.history.read(state.key, { after: state.last, limit: PAGE });
      if (!this.alive(state)) return;
      // Redis restarted empty since the top was read: the page may be of the new epoch, whose
      // ids 1, 2, … it would hand over as the old one's. The next round reads the new epoch.
      const now = await this.history.room(state.key);
      if (!this.alive(state)) return;
      if (now.epoch !== state.epoch) {
        state.again = true;
        return;
      }
      const before = state.last;
      let last = state.last;
      for (const m of page) {
        if (m.id <= last || m.id > info.top) continue;
        if (m.id !== last + 1) {
          state.last = m.id - 1;
          this.lost(state, 'trimmed');
          if (!this.alive(state)) return;
        }
        state.last = last = m.id;
        const chat: SaidEvent = {
          type: 'chat',
          room: state.name,
          id: m.id,
          at: m.at,
          from: m.from,
          msg: m.msg,
          origin: m.origin,
          epoch: state.epoch,
        };
        this.hand(state, asAction(chat, m.action === true));
        if (!this.alive(state)) return;
      }
      if ((page.length < PAGE || state.last === before) && state.last < info.top) {
        // Deleted by retention before it could be read.
        state.last = info.top;
        this.lost(state, 'trimmed');
        return;
      }
    }
  }

  /** Hands over the held events in order; false if they have a gap (catch up again). */
  private drain(state: RoomState): boolean {
    while (state.held.length > 0) {
      const held = state.held;
      state.held = [];
      for (let i = 0; i < held.length; i++) {
        if (!this.alive(state)) return true;
        const item = held[i]!;
        if (item.chat === undefined) {
          // Not roundBack: the room is not in step yet, and it would hold the round again.
          if (item.event === undefined) this.roundCame(state, item.round);
          else if (item.placed === undefined) this.hand(state, item.event);
          else this.handPlaced(state, item.event, item.placed);
          continue;
        }
        if (item.epoch !== state.epoch) {
          if (state.retired.has(item.epoch)) continue;
          state.held = held.slice(i).concat(state.held);
          return false;
        }
        if (item.chat.id <= state.last) continue;
        if (item.chat.id !== state.last + 1) {
          state.held = held.slice(i).concat(state.held);
          return false;
        }
        state.last = item.chat.id;
        this.hand(state, item.chat);
      }
    }
    if (state.overflowed) {
      state.overflowed = false;
      state.resync = true;
      return false;
    }
    return true;
  }
}

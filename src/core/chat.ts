import { Cmd, ErrorCode, type ErrorCodeValue, LOBBY } from '../protocol/codes.js';
import type { Position } from '../protocol/messages.js';
import type { Limits } from '../protocol/pacing.js';
import type { ParseResult } from '../protocol/request-codec.js';
import { clip } from '../protocol/text.js';
import { Admission } from './admission.js';
import { BannedWords, DEFAULT_BANNED_WORDS } from './banned-words.js';
import { addressGroup, BanList, type BanStore, MemoryBanStore } from './bans.js';
import type {
  Broker,
  ChatPlace,
  LostReason,
  NodeNotice,
  ResyncCause,
  RoomEvent,
  WhisperEvent,
} from './broker.js';
import { type ChatContext, refuse } from './command-context.js';
import { chatTarget, commandFor, permitted } from './commands.js';
import { type ChatEvent, Delivery } from './events.js';
import type { HistoryStore, MessageDraft } from './history.js';
import { Identities } from './identities.js';
import { JoinPlaces } from './join-places.js';
import { MemberLists } from './member-lists.js';
import type { Operator } from './moderation.js';
import { enforceBan, kickMissed, removeMember, secondsLeft } from './moderation-commands.js';
import { lookupKey, nicknameKey } from './nickname.js';
import { type DisconnectReason, type Logger, type Peer, silentLogger } from './ports.js';
import {
  type DeadNode,
  type MemberRef,
  type Presence,
  type PresenceMember,
  ReleaseRetried,
  type RoomLeft,
  type TakenOver,
} from './presence.js';
import { bucketAfterReload, type Clock, TokenBucket } from './rate-limit.js';
import { Replays } from './replay.js';
import { newSender, newToken, senderOf } from './resume-token.js';
import { Room } from './room.js';
import { type DeclaredRoom, Rooms, roomKey } from './rooms.js';
import { Roster } from './roster.js';
import { Session, type SessionHost } from './session.js';

export interface ChatOptions {
  /** Room capacity; the course server's is 10. */
  maxUsers?: number;
  bannedWords?: BannedWords;
  serverVersion?: string;
  /** USERS shows "hidden" and port 0 instead of members' addresses. */
  hideAddresses?: boolean;
  /** Longest CHAT or WHISPER message, in characters. */
  maxMessage?: number;
  /** Requests per second per session after the burst; 0 turns flood control off. */
  rateLimit?: number;
  rateBurst?: number;
  /** Open connections in total, and per remote IP (0 = unlimited); see `Chat.admission`. */
  maxConnections?: number;
  maxConnectionsPerIp?: number;
  /** Who may OPER; a reload replaces the list. */
  operators?: readonly Operator[];
  /**
   * Where bans persist; loaded once, here. Not used by a node of a cluster,
   * whose bans are the cluster's (Presence), read with `refreshBans`.
   */
  banStore?: BanStore;
  logger?: Logger;
  clock?: Clock;
  /** Rooms besides the lobby (see rooms.ts). */
  roomCapacity?: number;
  createRooms?: boolean;
  maxRoomsPerClient?: number;
  /** Rooms that may exist at once in this process (on a cluster: with members on this node). */
  maxRooms?: number;
  rooms?: readonly DeclaredRoom[];
  /** Where room history is kept; without one nothing is stored and nothing can be recovered. */
  history?: HistoryStore;
  /** Messages sent after "101" to a client that does not ask to recover. */
  historyOnJoin?: number;
  /**
   * This node's place in a cluster: nicknames and rooms are claimed through
   * `presence`, room events travel through `broker`. Needs a history store
   * that numbers chats cluster-wide (RedisHistoryStore with `publish: true`).
   * Without it the process is the whole chat and claims are synchronous.
   */
  cluster?: Cluster;
}

/** What a node of a cluster shares with the others. */
export interface Cluster {
  readonly presence: Presence;
  readonly broker: Broker;
  /**
   * What the shared history store's chats carry of a sender (MessageDraft.sender) as
   * their origin (StoredMessage.origin: RedisHistoryStore's is a hash, `senderOrigin`).
   */
  originOf(sender: string): string;
  /**
   * How long after a resync a room's members are read again (ms; 0 or none: at once). Long
   * enough for every live node to heartbeat: after a Redis restart each registers its
   * members again then, and a read before that would show them leaving.
   */
  readonly resyncDelayMs?: number;
  /**
   * True while this node may have been reaped (no heartbeat answered for the cluster timeout:
   * its process was paused, or Redis stalled); the first time, its clients are closed
   * (Chat.expired). Asked before a request or an event from the others is served: a node that
   * runs again after a pause reads its sockets before its timers run, and must not act for
   * members whose nicknames the others may have given away.
   */
  stale?(): boolean;
}

/** Requests waiting behind an unfinished one: reading pauses at the first, the session ends past the second. */
const BACKLOG_PAUSE = 64;
const BACKLOG_MAX = 10_000;
/**
 * Reading also pauses once the waiting requests hold this much text: counted
 * only in requests, a backlog of 64 frames of --max-frame held 4 MiB per
 * connection for as long as its client trickle-read the history it asked for.
 * Pausing costs an honest client nothing (TCP holds the rest).
 */
const BACKLOG_PAUSE_BYTES = 256 * 1024;

/** About what a waiting request holds: its strings, as JSON (a refusal quotes what was sent). */
function backlogWeight(result: ParseResult): number {
  return JSON.stringify(result).length;
}

/** Whether `session` is in every room of `places` (by key): all of them entered here. */
function holdsEvery(session: Session, places: TakenOver['rooms']): boolean {
  const held = new Set<string>();
  for (const room of session.rooms) held.add(room.key);
  return places.every((place) => held.has(place.room));
}

/** What Chat.reconfigure can change while sessions are open. */
export type ChatSettings = Pick<
  ChatOptions,
  | 'maxUsers'
  | 'bannedWords'
  | 'hideAddresses'
  | 'maxMessage'
  | 'rateLimit'
  | 'rateBurst'
  | 'maxConnections'
  | 'maxConnectionsPerIp'
  | 'operators'
  | 'roomCapacity'
  | 'createRooms'
  | 'maxRoomsPerClient'
  | 'maxRooms'
  | 'rooms'
  | 'historyOnJoin'
>;

function roomSettings(options: ChatSettings) {
  return {
    roomCapacity: options.roomCapacity,
    createRooms: options.createRooms,
    maxRoomsPerClient: options.maxRoomsPerClient,
    maxRooms: options.maxRooms,
    declared: options.rooms,
  };
}

/**
 * What an opted-in client is told when the server ends its session. Only
 * reasons a joined client can still read are here: a bad first request, a
 * handshake timeout or a connection cap strike before any client could opt
 * in, and a slow consumer or dead peer is cut off without being written to.
 */
const DISCONNECT_NOTICES: Partial<Record<DisconnectReason, [ErrorCodeValue, string]>> = {
  'banned-words': [ErrorCode.BANNED_WORDS, 'message contains a banned word'],
  'frame-too-large': [ErrorCode.FRAME_TOO_LARGE, 'request is larger than the frame limit'],
  flooding: [ErrorCode.FLOODING, 'too many requests'],
  'internal-error': [ErrorCode.INTERNAL_ERROR, 'the server could not handle your request'],
  'cluster-unavailable': [
    ErrorCode.CLUSTER_UNAVAILABLE,
    'this server lost contact with the cluster; reconnect',
  ],
  shutdown: [ErrorCode.SERVER_SHUTDOWN, 'the server is shutting down'],
  kicked: [ErrorCode.KICKED, 'kicked by an operator'],
  banned: [ErrorCode.BANNED, 'banned by an operator'],
  replaced: [ErrorCode.REPLACED, 'another connection took this session over'],
};

/** A removal chasing a member that keeps resuming elsewhere gives up after this many nodes. */
const MAX_REMOVE_HOPS = 3;

const RATE_LIMITED_MESSAGE = 'too many requests; slow down';

/**
 * A "password" or "resume" field's value in a logged excerpt, escapes and a cut-off end
 * included: a resume token in a log would let its reader take the session.
 */
const SECRET_FIELD = /("(?:password|resume)"\s*:\s*)"(?:[^"\\]|\\.)*("|$)/g;

/** OPER checks per address: five at once, then one every ten seconds. */
const OPER_BURST = 5;
const OPER_RATE = 0.1;
const OPER_BUCKETS = 4096;
/**
 * OPER checks for the whole server: ten at once, then one every two seconds, so guesses
 * from many addresses hold the event loop (about 50 ms a check) half a second at most,
 * then a few percent of it. The price: while they last, real operators wait too.
 */
const OPER_SERVER_BURST = 10;
const OPER_SERVER_RATE = 0.5;

/**
 * The chat service: sessions, the nickname registry and the room, with the
 * course protocol's rules. Single-threaded by design: every request runs to
 * completion before the next, so check-then-act (is the name free? is the
 * room full?) needs no lock.
 */
export class Chat implements ChatContext, SessionHost {
  readonly lobby: Room;
  readonly rooms: Rooms;
  readonly serverVersion: string;
  bannedWords: BannedWords;
  hideAddresses: boolean;
  maxMessage: number;
  readonly log: Logger;
  readonly bans: BanList;
  operators: readonly Operator[];
  private readonly clock: Clock;
  private rateLimit: number;
  private rateBurst: number;
  /** The connection caps; every listener counts its raw sockets here when it accepts them. */
  readonly admission: Admission;
  /** Counters for /metrics; plain numbers, read when scraped. */
  readonly stats = {
    joins: 0,
    leaves: 0,
    /** Sessions ended, by why (each exactly once), and connections turned away at the caps. */
    ended: new Map<DisconnectReason, number>(),
    /** Connections ended by the fault boundary (an internal error, never a client's fault alone). */
    faults: 0,
  };
  private readonly nicknames = new Map<string, Session>();
  /** OPER checks per address: each costs a deliberately slow hash, so they are few. */
  private readonly operBuckets = new Map<string, TokenBucket>();
  private readonly operServer: TokenBucket;
  private readonly sessions = new Set<Session>();
  /** Who holds each resume token and lasting identity, and on a cluster each origin. */
  private readonly identities: Identities;
  private readonly history: HistoryStore | undefined;
  /** "101"'s history and HISTORY's pages, read from `history`. */
  private readonly replays: Replays;
  private nextId = 1;
  private stopping = false;
  readonly cluster: Cluster | undefined;
  /**
   * Per room key, local members in it or on their way in: the broker
   * subscription lives while this is above zero, so a join in flight is not
   * left unsubscribed by a leave that empties the room meanwhile.
   */
  private readonly interest = new Map<string, number>();
  /** Per subscribed room key, who its local members were shown in it (see `reread`). */
  private readonly rosters = new Map<string, Roster>();
  /** On a cluster: each room's members as Presence gave them, for USERS (member-lists.ts). */
  private readonly memberLists: MemberLists | undefined;
  /** Rooms (key -> name) of PARTs whose leave in Presence failed: see partInDoubt. */
  private readonly partsInDoubt = new WeakMap<Session, Map<string, string>>();
  /** Presence releases in flight, so a stop can wait for their "30"s to go out. */
  private readonly releases = new Set<Promise<void>>();
  /** What waits for a session's requests under way to finish (a removal during a resume). */
  private readonly idleWaiters = new Map<Session, (() => void)[]>();
  /** Rooms whose members are read again once their resync has waited (see `resynced`). */
  private readonly resyncs = new Map<string, ReturnType<typeof setTimeout>>();
  /**
   * Per room key, this node's members without history that joined it and wait, held, for
   * their "joined" to come back in its place among the room's chats (see `awaitPlace`).
   */
  private readonly placing = new JoinPlaces();

  constructor(options: ChatOptions = {}) {
    this.lobby = new Room(LOBBY, options.maxUsers ?? 10);
    this.rooms = new Rooms(this.lobby, roomSettings(options));
    this.serverVersion = options.serverVersion ?? '1';
    this.bannedWords = options.bannedWords ?? new BannedWords(DEFAULT_BANNED_WORDS);
    this.hideAddresses = options.hideAddresses ?? false;
    this.maxMessage = options.maxMessage ?? 4096;
    this.rateLimit = options.rateLimit ?? 0;
    this.rateBurst = options.rateBurst ?? 40;
    this.log = options.logger ?? silentLogger;
    this.history = options.history;
    this.cluster = options.cluster;
    const cluster = this.cluster;
    this.identities = new Identities(
      cluster === undefined ? undefined : (sender) => cluster.originOf(sender),
    );
    // Chat ids must come from one place for the whole cluster: the shared store.
    if (this.cluster !== undefined && this.history === undefined) {
      throw new Error('a node of a cluster needs the shared history store');
    }
    this.cluster?.broker.onEvent({
      room: (key, event) => this.arrived(key, event),
      whisper: (event) => this.whispered(event),
      notice: (notice) => this.noticed(notice),
      lost: (key, reason, epoch) => this.gap(key, reason, epoch),
      resync: (key, missed) => this.resynced(key, missed),
      placed: (key, event, after) => this.placing.placed(key, event, after),
      unplaced: (key, event) => this.placing.unplaced(key, event.nickname),
    });
    this.replays = new Replays(this.history, options.historyOnJoin ?? 50);
    this.admission = new Admission(
      options.maxConnections ?? Number.POSITIVE_INFINITY,
      options.maxConnectionsPerIp ?? 0,
      (ip, fromIp, total) => {
        this.log.warn({ ip, fromIp, total }, 'connection limit reached');
        this.count('too-many-connections');
      },
    );
    this.clock = options.clock ?? Date.now;
    const presence = this.cluster?.presence;
    this.memberLists =
      presence === undefined
        ? undefined
        : new MemberLists((key) => presence.members(key), this.clock);
    this.operServer = new TokenBucket(OPER_SERVER_RATE, OPER_SERVER_BURST, this.clock());
    this.operators = options.operators ?? [];
    this.bans = new BanList(
      this.cluster === undefined
        ? (options.banStore ?? new MemoryBanStore())
        : new MemoryBanStore(),
    );
    this.admission.banned = (ip) => {
      const ban = this.bans.bansAddress(ip, this.clock());
      if (ban === undefined) return false;
      this.log.info({ ip, mask: ban.mask }, 'connection from a banned address refused');
      this.count('banned-address');
      return true;
    };
  }

  /**
   * Applies new settings to requests from now on; nobody is disconnected.
   * A smaller room keeps its members and only refuses new joins; a new rate
   * gives every session a fresh bucket, since a half-spent one was measured
   * against the old rate, but never one below the limits its "03" told it:
   * a client pacing itself to them must not be refused, nor cut off, for it.
   */
  reconfigure(options: ChatSettings): void {
    if (options.maxUsers !== undefined) this.lobby.capacity = options.maxUsers;
    this.rooms.configure(roomSettings(options));
    if (options.bannedWords !== undefined) this.bannedWords = options.bannedWords;
    if (options.hideAddresses !== undefined) this.hideAddresses = options.hideAddresses;
    if (options.maxMessage !== undefined) this.maxMessage = options.maxMessage;
    if (options.operators !== undefined) this.operators = options.operators;
    if (options.historyOnJoin !== undefined) this.replays.onJoin = options.historyOnJoin;
    this.admission.setCaps(options.maxConnections, options.maxConnectionsPerIp);
    const rateLimit = options.rateLimit ?? this.rateLimit;
    const rateBurst = options.rateBurst ?? this.rateBurst;
    if (rateLimit === this.rateLimit && rateBurst === this.rateBurst) return;
    this.rateLimit = rateLimit;
    this.rateBurst = rateBurst;
    const now = this.clock();
    for (const session of this.sessions) {
      session.bucket = bucketAfterReload(session.told, rateLimit, rateBurst, now);
      session.strikes = 0;
    }
  }

  get limits(): Limits {
    return { rate: this.rateLimit, burst: this.rateBurst, maxMessage: this.maxMessage };
  }

  /** Number of open sessions, joined or not. */
  get connectionCount(): number {
    return this.sessions.size;
  }

  /**
   * A transport calls this for each new connection it has admitted
   * (`admission.tryOpen`); the caps are counted there, per raw socket.
   */
  open(peer: Peer): Session {
    const session = new Session(this.nextId++, peer, this);
    this.sessions.add(session);
    if (this.rateLimit > 0)
      session.bucket = new TokenBucket(this.rateLimit, this.rateBurst, this.clock());
    if (this.stopping) this.disconnect(session, 'shutdown');
    return session;
  }

  find(nickname: string): Session | undefined {
    // A client's WHISPER or KICK names anyone, as long as a frame: too long is nobody, unfolded.
    const key = lookupKey(nickname);
    return key === undefined ? undefined : this.nicknames.get(key);
  }

  now(): number {
    return this.clock();
  }

  membersOf(room: Room): Promise<readonly PresenceMember[]> {
    return this.memberLists?.of(room.key) ?? Promise.resolve([]);
  }

  membersChanged(key: string): void {
    this.memberLists?.changed(key);
  }

  freshMembers(key: string): Promise<readonly PresenceMember[]> {
    return this.memberLists?.fresh(key) ?? Promise.resolve([]);
  }

  originOf(session: Session): string | undefined {
    this.identities.originate(session);
    return session.origin;
  }

  operAttempt(ip: string): 'ok' | 'address' | 'server' {
    const now = this.clock();
    // Per /64 for IPv6: per address, a host's 2^64 addresses each had five checks to spend.
    const key = addressGroup(ip);
    let bucket = this.operBuckets.get(key);
    if (bucket === undefined) {
      // Bounded: the oldest address is forgotten first (its bucket was likely full again anyway).
      if (this.operBuckets.size >= OPER_BUCKETS) {
        this.operBuckets.delete(this.operBuckets.keys().next().value!);
      }
      bucket = new TokenBucket(OPER_RATE, OPER_BURST, now);
      this.operBuckets.set(key, bucket);
    }
    // The address's budget first, so one already spent does not drain the server's; and
    // taken only when the server's allows the check, so refusals do not spend it.
    if (!bucket.has(now)) return 'address';
    if (!this.operServer.take(now)) return 'server';
    bucket.take(now);
    return 'ok';
  }

  members(): Session[] {
    return [...this.sessions].filter((s) => s.state === 'joined');
  }

  /**
   * The one fan-out point. A room event goes to every member of its room but
   * the session it came from; a whisper to its target. One Delivery carries
   * it to all of them, so each dialect encodes it once. A cluster broker
   * attaches here: publish to the broker, deliver what it hands back.
   */
  publish(event: ChatEvent, origin?: Session, epoch?: string): void {
    if (this.cluster !== undefined) {
      this.publishToCluster(this.cluster.broker, event, epoch);
      return;
    }
    const delivery = new Delivery(event);
    if (event.type === 'whisper') {
      this.find(event.to)?.deliver(delivery);
      return;
    }
    // The lobby by identity first: it carries all course traffic.
    const room = event.room === this.lobby.name ? this.lobby : this.rooms.named(event.room);
    room?.deliver(delivery, origin);
  }

  /**
   * In a cluster the broker hands every room event back, to this node's own
   * members too (at once, for events published here); whispers to members of
   * other nodes go through WHISPER's own path (`whisperTo`).
   */
  private publishToCluster(broker: Broker, event: ChatEvent, epoch: string | undefined): void {
    if (event.type === 'whisper') {
      this.whispered(event);
      return;
    }
    const room = event.room === this.lobby.name ? this.lobby : this.rooms.named(event.room);
    const key = room?.key ?? roomKey(event.room);
    broker.publish(key, event, epoch);
  }

  /** A room event from the broker: to this node's members of the room, but the one it is about. */
  private arrived(key: string, event: RoomEvent): void {
    if (event.type !== 'chat') this.memberLists?.changed(key);
    const from = event.type === 'chat' ? this.identities.sentBy(event.origin) : undefined;
    const roster = this.rosters.get(key);
    const replaced = roster?.replacing(event);
    const shown = roster === undefined ? event : roster.apply(event);
    if (shown === undefined) return;
    if (this.cluster?.stale?.() === true) return;
    const room = this.roomAt(key);
    if (room === undefined || room.size === 0) return;
    // Not to the newcomer, who holds the name now: its own join may come back only once it
    // is in the room (held while the room caught up).
    if (replaced !== undefined) room.deliver(new Delivery(replaced), this.subject(event));
    room.deliver(new Delivery(shown), shown.type === 'chat' ? from : this.subject(event));
  }

  /**
   * The local member an event comes from, who is not shown it: the joiner, the renamer,
   * the member being removed. Nicknames are unique across the cluster. (Chats: `sentBy`.)
   */
  private subject(event: RoomEvent): Session | undefined {
    switch (event.type) {
      case 'joined':
      case 'moderated':
        return this.find(event.nickname);
      case 'renamed':
        return this.find(event.to);
      default:
        return undefined;
    }
  }

  /**
   * Events of a room may have been missed (the subscription was down, or another node's
   * PUBLISH failed): show its members what changed meanwhile.
   */
  private resynced(key: string, missed: ResyncCause): void {
    // A join published while the subscription was down does not come back.
    if (missed === 'subscription') this.placing.giveUp(key);
    const delay = this.cluster?.resyncDelayMs ?? 0;
    if (delay <= 0) {
      this.reread(key, true);
      return;
    }
    if (this.resyncs.has(key)) return;
    const timer = setTimeout(() => {
      this.resyncs.delete(key);
      this.reread(key, true);
    }, delay);
    timer.unref();
    this.resyncs.set(key, timer);
  }

  /**
   * A member without history is joining `room` on a node of a cluster: chats published
   * before its join may still be on their way here, and one process would not show them.
   * From now the room's events are held for it, until its "joined" comes back in its place
   * among the chats (`JoinPlaces.placed`). The join's reply waits for that place, so that whatever
   * the client does after it comes after the join; then `enterPlaced` lets the member
   * have what was held. Undefined when nothing need wait: one process, or a member with
   * history (its replay does the same).
   */
  awaitPlace(
    session: Session,
    room: Room,
    nickname: string,
  ): Promise<ChatPlace | undefined> | undefined {
    if (this.cluster === undefined || session.has('history')) return undefined;
    session.holdRoom(room.name);
    return this.placing.wait(room.key, nickname);
  }

  /** After its join's reply: the member gets what was held for it but chats before `after`. */
  enterPlaced(session: Session, room: Room, after: ChatPlace | undefined): void {
    if (session.state === 'closed') return;
    // Left meanwhile: nothing held is of a room it is in.
    if (!session.rooms.has(room)) {
      session.dropHeld(room.name);
      return;
    }
    this.background(session, session.release(room.name, after?.id ?? 0, after?.epoch ?? ''));
  }

  /** The lobby or a room this node knows, by its key. */
  private roomAt(key: string): Room | undefined {
    return key === this.lobby.key ? this.lobby : this.rooms.keyed(key);
  }

  /**
   * Reads the room's members from Presence: at first to know who was shown,
   * and after a resync to show the local members, as "30"s and "8"s, who
   * left and joined while the events did not reach this node.
   */
  private reread(key: string, show: boolean): void {
    const lists = this.memberLists;
    const roster = this.rosters.get(key);
    if (lists === undefined || roster === undefined) return;
    lists.changed(key);
    const token = roster.begin();
    lists.fresh(key).then(
      (members) => {
        if (this.rosters.get(key) !== roster) return;
        const room = this.roomAt(key);
        const name = room?.name ?? key;
        const listed = members.map((m) => m.nickname);
        // This node's own members are in the room whatever Presence says (after a Redis
        // restart it may not have them again yet): one that lost its place there is closed,
        // and its leave told, like any other.
        if (room !== undefined) {
          const keys = new Set(listed.map(nicknameKey));
          for (const member of room.list()) {
            if (!keys.has(nicknameKey(member.nickname))) listed.push(member.nickname);
          }
        }
        const changes = roster.settle(token, listed, name);
        if (!show || changes.length === 0) return;
        this.log.info({ room: name, changes: changes.length }, 'members of a room read again');
        if (room === undefined || room.size === 0) return;
        for (const event of changes) room.deliver(new Delivery(event), this.subject(event));
      },
      (err: unknown) => this.log.warn({ err, room: key }, 'could not read the members of a room'),
    );
  }

  /**
   * The broker could not hand over some of a room's chats: its members with
   * "history" are told, in line with the chats, as a resume would tell them.
   */
  private gap(key: string, reason: LostReason, epoch: string): void {
    const room = this.roomAt(key);
    if (room === undefined || room.size === 0) return;
    this.log.warn({ room: room.name, reason, epoch }, 'chats of a room were lost');
    room.deliver(
      new Delivery({
        type: 'gap',
        room: room.name,
        epoch,
        reason: reason === 'epoch' ? 'epoch' : 'deleted',
      }),
    );
  }

  /** From another node: a member of this one to remove or close, or the ban list changed. */
  private noticed(notice: NodeNotice): void {
    const now = this.clock();
    switch (notice.type) {
      case 'remove':
        this.removeNoticed(notice);
        return;
      case 'banned':
        this.bans.add(notice.ban, now);
        enforceBan(this, notice.ban, notice.seconds);
        return;
      case 'unbanned':
        this.bans.remove(notice.mask, now);
        return;
      case 'evict':
        this.evicted(notice.member);
        return;
      case 'missed':
        for (const session of this.sessions) {
          if (session.presenceId === notice.asker.member && session.state === 'joined') {
            kickMissed(session, notice.asker.nickname);
          }
        }
        return;
    }
  }

  /**
   * A removal a KICK on any node asked for. The member may have been taken over by
   * a resume on a third node meanwhile, before or after its eviction notice
   * reaches this one: so it is removed here only if Presence still has it on
   * this node, in the same step that frees it (a resume after that finds
   * nothing to take); else the notice goes on to the member a resume moved it
   * to, if any, a few hops at most. Never a kick announced while the member
   * stays, nor a removal of someone else who took its nickname.
   */
  private removeNoticed(notice: Extract<NodeNotice, { type: 'remove' }>, waited = false): void {
    const cluster = this.cluster;
    if (cluster === undefined) return;
    let session: Session | undefined;
    for (const s of this.sessions) {
      if (s.state !== 'closed' && s.presenceId === notice.member) session = s;
    }
    if (session !== undefined && session.pending > 0 && !waited) {
      // Most often a resume under way (its "03" not sent yet): removed once it is done.
      const waiting = this.idleWaiters.get(session) ?? [];
      waiting.push(() => this.removeNoticed(notice, true));
      this.idleWaiters.set(session, waiting);
      return;
    }
    const nickname = session?.nickname ?? notice.nickname;
    const names = new Map<string, string>();
    for (const room of session?.rooms ?? []) names.set(room.key, room.name);
    const { action, by, reason, seconds } = notice;
    const expelled = cluster.presence.expel(notice.member).catch((err: unknown) => {
      if (!(err instanceof ReleaseRetried)) throw err;
      // Its answer was lost: what the retry frees is told as this answer would have been.
      this.log.warn({ err, nickname }, `could not ${action} a member yet: retrying`);
      return err.retried;
    });
    const work = expelled.then(async (left) => {
      if (left !== undefined) {
        if (session !== undefined && session.state === 'joined') {
          removeMember(this, session, action, by, reason, seconds);
        } else if (nickname !== undefined) {
          // Its connection closed a moment before, but the removal freed it: the rooms are
          // told of the removal all the same, where they would have been.
          const seen = left.find((l) => l.room === this.lobby.key) ?? left[0];
          if (seen !== undefined) {
            const room = this.roomAt(seen.room)?.name ?? names.get(seen.room) ?? seen.room;
            this.publish({ type: 'moderated', room, action, nickname, by, reason, seconds });
          }
        }
        // Its own release in leaving finds nothing left: the "30"s go out from here.
        const why = action === 'kick' ? 'kicked' : 'banned';
        this.announceLeft(left, nickname ?? '', names, why, session ?? {});
        return;
      }
      // Followed by its identity: by nickname, a member who left or renamed meanwhile would
      // hand the removal to whoever took that nickname since.
      const hops = (notice.hops ?? 0) + 1;
      const now =
        hops > MAX_REMOVE_HOPS
          ? undefined
          : await cluster.presence.successor(cluster.presence.node, notice.member);
      if (now === undefined) {
        this.log.warn({ nickname, by, action, hops }, `${nickname} was gone before the ${action}`);
        // Its operator is told as on one process; a ban stays stored, whoever it found.
        if (notice.asker !== undefined) {
          cluster.broker.notify(notice.asker.node, { type: 'missed', asker: notice.asker });
        }
        return;
      }
      cluster.broker.notify(now.node, { ...notice, member: now.id, nickname: now.nickname, hops });
    });
    this.track(
      work.catch((err: unknown) =>
        this.log.warn({ err, nickname }, `could not ${action} a member`),
      ),
    );
  }

  /**
   * Reads the cluster's ban list again: at start, and now and then in case a
   * notice of a change was missed (the subscriber connection was down).
   */
  async refreshBans(): Promise<void> {
    const presence = this.cluster?.presence;
    if (presence === undefined) return;
    const bans = await presence.bans();
    const now = this.clock();
    const known = new Set(this.bans.list(now).map((ban) => JSON.stringify(ban)));
    this.bans.replace(bans);
    // A ban whose notice this node missed removes its members now, as the notice would have.
    for (const ban of bans) {
      if (!known.has(JSON.stringify(ban))) enforceBan(this, ban, secondsLeft(ban, now));
    }
  }

  private whispered(event: WhisperEvent): void {
    if (this.cluster?.stale?.() === true) return;
    this.find(event.to)?.deliver(new Delivery(event));
  }

  /**
   * A whisper to a member of another node (Presence said which): resolves once sent (to
   * `false` when no node took it), rejects when it is not known to have been.
   */
  whisperTo(node: string, event: WhisperEvent): Promise<boolean> {
    return this.cluster?.broker.whisper(node, event) ?? Promise.resolve(false);
  }

  /**
   * A local member is joining `room`: resolves once the room's events reach
   * this node. Every call is paired with one `uninterested`.
   */
  interested(room: Room): Promise<void> {
    const broker = this.cluster?.broker;
    if (broker === undefined) return Promise.resolve();
    const interest = (this.interest.get(room.key) ?? 0) + 1;
    this.interest.set(room.key, interest);
    const subscribed = broker.subscribe(room);
    if (interest === 1) {
      this.rosters.set(room.key, new Roster(() => room.capacity));
      // Read once the room's events arrive, so that none falls between the read and them.
      subscribed.then(
        () => this.reread(room.key, false),
        () => {},
      );
    }
    return subscribed;
  }

  /** A local member left `room`, or did not get in: the last one unsubscribes. */
  uninterested(key: string): void {
    const broker = this.cluster?.broker;
    if (broker === undefined) return;
    const left = (this.interest.get(key) ?? 0) - 1;
    if (left > 0) {
      this.interest.set(key, left);
      return;
    }
    this.interest.delete(key);
    this.rosters.delete(key);
    this.memberLists?.changed(key);
    this.placing.giveUp(key);
    broker.unsubscribe(key).catch((err: unknown) => {
      this.log.warn({ err, room: key }, 'could not unsubscribe from a room');
    });
  }

  /**
   * A PART whose leave in Presence failed, its answer lost: Presence may or may not have
   * applied it. The failure closes the session (3005); its release then tells this room it
   * left, from the rooms Presence frees if it still had the member there, else with the
   * count Presence gives after, once, as the PART would have.
   */
  partInDoubt(session: Session, room: Room): void {
    const rooms = this.partsInDoubt.get(session) ?? new Map<string, string>();
    rooms.set(room.key, room.name);
    this.partsInDoubt.set(session, rooms);
  }

  /**
   * Presence forgets a member that never got in (its CONNECT was refused,
   * or it left while the claim was on its way).
   */
  forget(session: Session): void {
    const presence = this.cluster?.presence;
    if (presence === undefined) return;
    this.track(
      presence.release(session.presenceId).then(
        () => {},
        (err: unknown) => this.log.warn({ err, session: session.id }, 'could not release a member'),
      ),
    );
  }

  private track(work: Promise<void>): void {
    this.releases.add(work);
    void work.finally(() => this.releases.delete(work));
  }

  /**
   * Members of nodes that stopped heartbeating, already removed from
   * Presence by this node: the rooms they were in hear they left.
   */
  reaped(dead: readonly DeadNode[]): void {
    const broker = this.cluster?.broker;
    if (broker === undefined) return;
    for (const node of dead) {
      for (const member of node.members) {
        this.log.info(
          { node: node.node, nickname: member.nickname },
          `${member.nickname} left: their server stopped answering.`,
        );
        for (const left of member.rooms) {
          const room = this.rooms.keyed(left.room);
          broker.publish(left.room, {
            type: 'left',
            room: room?.name ?? left.room,
            nickname: member.nickname,
            count: left.count,
            lineage: member.lineage,
          });
        }
      }
    }
  }

  /**
   * This node may have been reaped by the others (its heartbeats went
   * unanswered for the timeout): they may have given its members' nicknames
   * away, so every local client is closed with a transient code.
   */
  expired(): void {
    this.log.error({}, 'cut off from the cluster for longer than the timeout; closing clients');
    for (const session of [...this.sessions]) this.disconnect(session, 'cluster-unavailable');
  }

  /**
   * After Redis came back empty, Presence registered this node's members
   * again; these found their nickname taken meanwhile, and are closed.
   */
  lost(members: readonly string[]): void {
    const ids = new Set(members);
    for (const session of [...this.sessions]) {
      if (ids.has(session.presenceId)) this.disconnect(session, 'cluster-unavailable');
    }
  }

  /** Members a resume took to another node, whose notice was lost: closed as it would have. */
  goneAway(members: readonly string[]): void {
    for (const member of members) this.evicted(member);
  }

  /**
   * After Redis came back empty, a member of this node registered again in
   * place of an earlier copy of itself (a resume took it over just before):
   * that copy's node closes it as a takeover does, in case the first notice
   * was lost with Redis.
   */
  displaced(members: readonly MemberRef[]): void {
    const cluster = this.cluster;
    if (cluster === undefined) return;
    for (const member of members) {
      if (member.node === cluster.presence.node) this.evicted(member.id);
      else cluster.broker.notify(member.node, { type: 'evict', member: member.id });
    }
  }

  /** Resolves once the leaves of sessions already ended are told to the cluster. */
  async settled(): Promise<void> {
    while (this.releases.size > 0) await Promise.allSettled([...this.releases]);
  }

  receive(session: Session, result: ParseResult): void {
    if (session.state === 'closed') return;
    if (session.state === 'joined' && this.cluster?.stale?.() === true) {
      // Closed with the node's other clients already, unless it was the first to ask.
      this.disconnect(session, 'cluster-unavailable');
      return;
    }
    // Flood control counts every frame after joining, garbage included, so
    // junk cannot be sprayed (and logged) faster than chat; EXIT always passes.
    if (
      session.bucket !== undefined &&
      session.state === 'joined' &&
      !(result.ok && result.request.cmd === Cmd.EXIT) &&
      !this.admit(session, result.ok ? result.request.cmd : result.error.ref)
    ) {
      return;
    }
    this.route(session, result);
  }

  /**
   * Requests are answered in the order they arrive, though storing a chat or
   * reading history finishes later: while one is unfinished, later requests
   * wait in the session's backlog. Chats are the exception that keeps a busy
   * room fast: a chat that will be stored may start behind other chats, since
   * the store keeps their order.
   */
  private route(session: Session, result: ParseResult): void {
    if (session.backlog === undefined) {
      if (session.pending === 0) {
        this.handle(session, result);
        return;
      }
      if (!session.barrier && result.ok && result.request.cmd === Cmd.CHAT) {
        const target = chatTarget(this, session, result.request);
        if (target !== undefined) {
          this.say(session, target.room, result.request.msg, target.cid);
          return;
        }
      }
    }
    session.backlog ??= [];
    const backlog = session.backlog;
    backlog.push(result);
    session.backlogBytes += backlogWeight(result);
    if (
      !session.paused &&
      (backlog.length >= BACKLOG_PAUSE || session.backlogBytes >= BACKLOG_PAUSE_BYTES)
    ) {
      session.paused = true;
      session.peer.pause?.(true);
    } else if (backlog.length > BACKLOG_MAX) {
      this.disconnect(session, 'flooding');
    }
  }

  /** An unfinished request finished: what waited behind it goes on. */
  private finished(session: Session): void {
    session.pending--;
    if (session.pending > 0) return;
    session.barrier = false;
    const idle = this.idleWaiters.get(session);
    if (idle !== undefined) {
      this.idleWaiters.delete(session);
      for (const then of idle) then();
    }
    const departures = session.departures;
    if (departures !== undefined) {
      session.departures = undefined;
      for (const event of departures) this.publish(event);
    }
    const backlog = session.backlog;
    if (backlog === undefined) return;
    session.backlog = undefined;
    session.backlogBytes = 0;
    for (const result of backlog) {
      if (session.state === 'closed') return;
      this.route(session, result);
    }
    // route() may have started a new backlog; TypeScript cannot see that.
    const waiting = session.backlog as ParseResult[] | undefined;
    if (
      session.paused &&
      (waiting?.length ?? 0) < BACKLOG_PAUSE &&
      session.backlogBytes < BACKLOG_PAUSE_BYTES
    ) {
      session.paused = false;
      session.peer.pause?.(false);
    }
  }

  /** Runs work for a request that no later request may overtake. */
  run(session: Session, work: Promise<void>): void {
    this.background(session, work);
  }

  private background(session: Session, work: Promise<void>): void {
    session.pending++;
    session.barrier = true;
    work.then(
      () => this.finished(session),
      (err: unknown) => {
        this.failed(session, err, 'request');
        this.finished(session);
      },
    );
  }

  private handle(session: Session, result: ParseResult): void {
    if (session.state === 'closed') return;
    if (!result.ok) {
      const { code, message, ref } = result.error;
      if (code === ErrorCode.RATE_LIMITED) {
        // Flood control's refusal (admit), queued in order; the decoder never makes this code.
        refuse(session, code, message, ref);
        return;
      }
      if (session.state === 'greeting') {
        this.log.warn(
          { session: session.id, code, ref: ref && clip(ref) },
          `Invalid first request: ${clip(message)}`,
        );
        this.disconnect(session, 'protocol');
        return;
      }
      // An extension's command is unknown to a client that did not ask for it, however malformed.
      if (ref !== undefined && (code === ErrorCode.UNKNOWN_COMMAND || !permitted(session, ref))) {
        this.unknownCommand(session, ref);
        return;
      }
      this.log.warn(
        { nickname: session.nickname, code, ref: ref && clip(ref) },
        `Invalid request: ${clip(message)}`,
      );
      refuse(session, code, message, ref);
      return;
    }
    const request = result.request;
    const command = commandFor(request.cmd);
    if (session.state === 'greeting') {
      if (!command.greeting) {
        this.log.warn({ session: session.id }, `Invalid request command. Command: ${request.cmd}`);
        this.disconnect(session, 'protocol');
        return;
      }
    } else if (command.greeting) {
      refuse(session, ErrorCode.ALREADY_CONNECTED, 'already connected', request.cmd);
      return;
    } else if (!permitted(session, request.cmd)) {
      this.unknownCommand(session, request.cmd);
      return;
    }
    this.log.debug({ nickname: session.nickname }, `Command ${request.cmd}`);
    // The table pairs each code with its own handler; TypeScript cannot see
    // through the lookup, so the request is passed at the table's type.
    (command.handle as (ctx: ChatContext, s: Session, r: typeof request) => void)(
      this,
      session,
      request,
    );
  }

  private unknownCommand(session: Session, cmd: string): void {
    this.log.warn({ nickname: session.nickname }, `Invalid request command. Command: ${clip(cmd)}`);
    refuse(session, ErrorCode.UNKNOWN_COMMAND, `unknown command "${cmd}"`, cmd);
  }

  /**
   * Flood control: refuse requests over the rate; cut off a session that
   * keeps at it. The refusal names the request (`ref`) so that a client
   * pairing replies with its calls rejects the right one.
   */
  private admit(session: Session, ref: string | undefined): boolean {
    if (session.bucket!.take(this.clock())) {
      session.strikes = 0;
      return true;
    }
    session.strikes++;
    if (session.strikes > session.bucket!.burst) {
      this.log.warn(
        { nickname: session.nickname, ip: session.address.ip },
        'flooding, disconnecting',
      );
      this.disconnect(session, 'flooding');
      return false;
    }
    if (session.strikes === 1) this.log.info({ nickname: session.nickname }, 'rate limit reached');
    // In its turn: answers to earlier requests may still be waiting in the backlog.
    this.route(session, {
      ok: false,
      error: { code: ErrorCode.RATE_LIMITED, message: RATE_LIMITED_MESSAGE, ref },
    });
    return false;
  }

  join(session: Session, nickname: string, room: Room | undefined): void {
    session.nickname = nickname;
    session.key = nicknameKey(nickname);
    session.state = 'joined';
    session.room = room;
    this.nicknames.set(session.key, session);
    this.stats.joins++;
    if (room === undefined) {
      this.log.info({ nickname }, `${nickname} connected outside the lobby.`);
      return;
    }
    this.rooms.add(session, room);
    this.log.info(
      { nickname, room: room.name, users: room.size },
      `${nickname} joined. There are ${room.size} users connected.`,
    );
  }

  issueToken(session: Session): string {
    return this.identities.issue(session);
  }

  /**
   * A CONNECT presented the resume token of an open session (most often one
   * whose connection died without the server noticing): `session` becomes
   * that member, with its nickname, rooms and place in each, and the old
   * connection is closed without a word to anyone.
   */
  takeBack(session: Session, token: string): boolean {
    const ghost = this.identities.holder(token);
    if (ghost === undefined || ghost === session || ghost.state !== 'joined') {
      // A spent or unknown token (the server restarted, say) takes nothing back but still
      // names its session: what the client re-sends is recognised as that session's.
      const named = session.sender === undefined ? this.identities.namedBy(token) : undefined;
      if (named !== undefined) this.identities.identify(session, named);
      return false;
    }
    this.identities.spend(ghost);
    // Said while the ghost is still open; it is only read if that connection still lives.
    refuse(ghost, ErrorCode.REPLACED, DISCONNECT_NOTICES.replaced![1]);
    session.nickname = ghost.nickname;
    session.key = ghost.key;
    // On a cluster Presence has moved the member to the new session's id (takeOver).
    if (this.cluster === undefined) session.presenceId = ghost.presenceId;
    session.operator = ghost.operator;
    session.lineage = ghost.lineage;
    if (ghost.sender !== undefined) this.identities.identify(session, ghost.sender);
    session.state = 'joined';
    session.room = ghost.room;
    for (const room of ghost.rooms) {
      room.replace(ghost, session);
      session.rooms.add(room);
    }
    this.nicknames.set(session.key, session);
    ghost.rooms.clear();
    ghost.room = undefined;
    ghost.successor = session;
    ghost.state = 'closed';
    this.sessions.delete(ghost);
    this.count('replaced');
    this.log.info(
      { nickname: session.nickname, session: session.id, replaced: ghost.id },
      `${session.nickname} took their session back.`,
    );
    ghost.peer.close('replaced');
    return true;
  }

  /**
   * takeBack on a node of a cluster: Presence moves the member the token was
   * granted to, from whichever node, to `session` in one step (so a token
   * works once, on one node), with a new token granted in the same step. A
   * ghost on this node is taken back as on one node; one on another node is
   * closed there (`evicted`), or has gone with its node. The rooms' live
   * events are held until the caller has replayed each (enterRoom).
   */
  async takeOver(session: Session, token: string): Promise<boolean> {
    const cluster = this.cluster;
    if (cluster === undefined) return false;
    const ghost = this.identities.holder(token);
    // The next token carries the same sender, whichever node the member was on. A session
    // here keeps its identity (its chats, its tokens, `namedBy`'s record) until Presence
    // grants the takeover: a connection that loses a race for the token, or whose takeover
    // fails, or that goes meanwhile takes nothing of it, and chats coming back meanwhile are
    // still the old connection's.
    let next: string;
    let sender: string | undefined;
    if (ghost === undefined) {
      // A token of a session on another node, or a spent or unknown one (still its
      // session's, as in takeBack).
      const named = this.identities.namedBy(token);
      if (named !== undefined) this.identities.identify(session, named);
      next = this.issueToken(session);
    } else {
      sender = senderOf(token) ?? newSender();
      next = newToken(sender);
    }
    let taken: TakenOver | undefined;
    try {
      taken = await cluster.presence.takeOver(token, session.presenceId, session.address, next);
    } catch (err) {
      // Redis may have moved the member to this connection all the same (a lost reply):
      // freed, or it would stay registered for nobody, its nickname and places kept.
      this.forget(session);
      throw err;
    }
    if (taken === undefined) return false;
    // The member's address is this connection's now: not a room event.
    for (const place of taken.rooms) this.memberLists?.changed(place.room);
    const local = taken.node === cluster.presence.node;
    if (!local) cluster.broker.notify(taken.node, { type: 'evict', member: taken.id });
    // A ghost whose JOIN_ROOM is on its way may have its place in Presence without having
    // entered the room here: it is closed like one on another node, and the room is told of
    // that join (`movedAway`) while this session takes every place Presence moved.
    if (
      sender !== undefined &&
      local &&
      ghost?.presenceId === taken.id &&
      session.state !== 'closed' &&
      holdsEvery(ghost, taken.rooms) &&
      this.takeBack(session, token)
    ) {
      this.identities.keep(session, next, sender);
      for (const room of session.rooms) session.holdRoom(room.name);
      return true;
    }
    // A connection closed meanwhile gets nothing: its removal is done.
    if (sender !== undefined && session.state !== 'closed') {
      this.identities.identify(session, sender);
      this.identities.keep(session, next, sender);
    }
    // A ghost on this node not taken back above is closed like one on another node.
    if (local) this.evicted(taken.id);
    const rooms = taken.rooms.map((r) =>
      r.room === this.lobby.key
        ? this.lobby
        : (this.rooms.keyed(r.room) ?? this.rooms.room(r.name)),
    );
    try {
      await Promise.all(rooms.map((room) => this.interested(room)));
    } catch (err) {
      for (const room of rooms) this.uninterested(room.key);
      this.abandon(session.presenceId, taken.nickname, rooms);
      throw err;
    }
    if (session.state === 'closed') {
      for (const room of rooms) this.uninterested(room.key);
      this.abandon(session.presenceId, taken.nickname, rooms);
      return false;
    }
    session.nickname = taken.nickname;
    session.key = nicknameKey(taken.nickname);
    session.lineage = taken.lineage;
    session.state = 'joined';
    this.nicknames.set(session.key, session);
    for (const made of rooms) {
      // Another local member may have made the same room meanwhile: that one.
      const room = made === this.lobby ? made : (this.rooms.find(made.name) ?? made);
      session.holdRoom(room.name);
      this.rooms.add(session, room);
      if (room === this.lobby) session.room = room;
    }
    this.log.info(
      { nickname: session.nickname, session: session.id, from: taken.node },
      `${session.nickname} took their session back from another node.`,
    );
    return true;
  }

  /** Another node took over a member of this node: its connection is closed, no "30" sent. */
  private evicted(member: string): void {
    for (const session of this.sessions) {
      if (session.presenceId !== member || session.state !== 'joined') continue;
      // Its release finds nothing left to free in Presence, so the rooms hear nothing.
      session.movedAway = true;
      this.disconnect(session, 'replaced');
      return;
    }
  }

  /** A member taken over for a session that closed meanwhile: released, and its rooms told. */
  private abandon(id: string, nickname: string, rooms: readonly Room[]): void {
    const names = new Map(rooms.map((room) => [room.key, room.name]));
    this.release(id, nickname, names, 'lost');
  }

  /**
   * A chat message, stored first when there is history (so that every id a
   * client sees survives a crash), then delivered to the room; a sender with
   * "history" learns its id.
   */
  say(session: Session, room: Room, msg: string, cid: string | undefined): void {
    const at = this.clock();
    const from = session.nickname;
    const history = this.history;
    if (history === undefined) {
      const id = room.nextId();
      this.publish({ type: 'chat', room: room.name, id, at, from, msg }, session);
      if (session.has('history'))
        session.reply({ type: 'stored', room: room.name, id, at, cid, duplicate: false });
      return;
    }
    session.pending++;
    // On a cluster every chat carries its sender's origin: its copy may come back before
    // this append's reply, or to the node its session has moved to meanwhile.
    this.identities.originate(session);
    const origin = session.origin;
    let draft: MessageDraft = { at, from, msg };
    if (cid !== undefined || origin !== undefined) {
      session.sender ??= newSender();
      draft =
        cid === undefined
          ? { at, from, msg, sender: session.sender }
          : { at, from, msg, cid, sender: session.sender };
    }
    history.append(room.key, draft).then(
      (appended) => {
        try {
          const m = appended.message;
          // Taken over meanwhile: the sender is now the connection that took the session.
          let sender = session;
          while (sender.successor !== undefined) sender = sender.successor;
          if (!appended.duplicate) {
            this.publish(
              origin === undefined
                ? { type: 'chat', room: room.name, id: m.id, at: m.at, from: m.from, msg: m.msg }
                : {
                    type: 'chat',
                    room: room.name,
                    id: m.id,
                    at: m.at,
                    from: m.from,
                    msg: m.msg,
                    origin,
                  },
              sender,
              appended.epoch,
            );
          }
          if (sender.has('history')) {
            sender.reply({
              type: 'stored',
              room: room.name,
              id: m.id,
              at: m.at,
              cid: m.cid,
              duplicate: appended.duplicate,
            });
          }
        } catch (err) {
          this.failed(session, err, 'request');
        }
        this.finished(session);
      },
      (err: unknown) => {
        this.log.error({ err, room: room.name }, 'could not store a chat message');
        this.failed(session, err, 'request');
        this.finished(session);
      },
    );
  }

  /**
   * Tells a member just added to `room` that it is in: "101", and for a
   * client with "history" the room's history, recovered from `since` when it
   * can be. Live events of the room wait until the history is out, so
   * nothing is missed or repeated between the two.
   */
  enterRoom(
    session: Session,
    room: Room,
    members: readonly string[],
    count: number,
    since: Position | undefined,
  ): void {
    if (!session.has('history')) {
      session.reply({ type: 'room-joined', room: room.name, members, count, history: undefined });
      return;
    }
    session.holdRoom(room.name);
    this.background(session, this.replays.join(session, room, members, count, since));
  }

  /**
   * HISTORY: the newest messages before `before`, at most `limit`, for a member of `room`;
   * later requests wait for the page, unless it went out at once (no store).
   */
  readHistory(session: Session, room: Room, before: number | undefined, limit: number): void {
    const work = this.replays.page(session, room, before, limit);
    if (work !== undefined) this.background(session, work);
  }

  rename(session: Session, nickname: string): void {
    const old = session.nickname;
    this.nicknames.delete(session.key);
    session.nickname = nickname;
    session.key = nicknameKey(nickname);
    this.nicknames.set(session.key, session);
    for (const room of session.rooms) room.moveToEnd(session);
    this.log.info({ old, nickname }, `${old} is now known as ${nickname}.`);
  }

  /** Ends a session from the server side: tell it why (if it opted in), leave, close. */
  disconnect(session: Session, reason: DisconnectReason, detail?: string): void {
    if (session.state === 'closed') return;
    const notice = DISCONNECT_NOTICES[reason];
    if (notice !== undefined) refuse(session, notice[0], detail ?? notice[1]);
    this.leave(session, reason);
    session.peer.close(reason);
  }

  /**
   * The fault boundary's report: log once, then end this session alone. A
   * failed send may come from inside a broadcast, so that session is only
   * closed here; it leaves (and the others get "30") when its transport
   * reports the close. A failed request has unwound to the transport, so
   * the session is disconnected at once, with 3005 for opted-in clients.
   */
  failed(session: Session, err: unknown, where: 'request' | 'send', input?: string): void {
    if (session.faulted) return;
    session.faulted = true;
    this.stats.faults++;
    this.log.error(
      {
        session: session.id,
        nickname: session.nickname,
        remote: session.address,
        where,
        // A request that failed mid-way must not leave its password or token in the log.
        input: input?.replace(SECRET_FIELD, '$1"[redacted]"'),
        err,
      },
      'internal error while serving a connection; closing it',
    );
    try {
      if (where === 'request') this.disconnect(session, 'internal-error');
      else session.peer.close('internal-error');
    } catch (again) {
      this.log.error({ session: session.id, err: again }, 'closing a failed connection failed');
      try {
        session.peer.close('internal-error');
      } catch {
        // The transport's close event still ends the session.
      }
    }
  }

  /** The transport lost or closed the connection. */
  ended(session: Session, reason: DisconnectReason): void {
    if (session.state === 'closed') return;
    if (session.state === 'joined' && reason === 'lost') {
      this.log.info(
        { nickname: session.nickname },
        `The TCP connection to the client (nickname=${session.nickname}) has been lost.`,
      );
    }
    this.leave(session, reason);
  }

  /** Disconnects everyone, without leave notices: the room is going away. */
  shutdown(): void {
    this.stopping = true;
    for (const timer of this.resyncs.values()) clearTimeout(timer);
    this.resyncs.clear();
    for (const session of [...this.sessions]) this.disconnect(session, 'shutdown');
  }

  /** Counts one connection ended for `reason` (for /metrics). */
  private count(reason: DisconnectReason): void {
    this.stats.ended.set(reason, (this.stats.ended.get(reason) ?? 0) + 1);
  }

  private leave(session: Session, reason: DisconnectReason): void {
    const wasJoined = session.state === 'joined';
    session.state = 'closed';
    this.sessions.delete(session);
    this.count(reason);
    this.identities.forget(session);
    if (!wasJoined) return;
    this.nicknames.delete(session.key);
    session.room = undefined;
    this.stats.leaves++;
    if (this.cluster !== undefined) {
      this.leaveCluster(session, reason);
      return;
    }
    const departures: ChatEvent[] = [];
    // The lobby first (joined first): course clients see exactly the course server's "30".
    for (const room of [...session.rooms]) {
      this.rooms.remove(session, room);
      this.log.info(
        { nickname: session.nickname, room: room.name, users: room.size, reason },
        `${session.nickname} left. There are ${room.size} users connected.`,
      );
      if (this.stopping) continue;
      departures.push({
        type: 'left',
        room: room.name,
        nickname: session.nickname,
        count: room.size,
      });
    }
    // Chats it sent before it went are still being stored: the room hears them first.
    if (session.pending > 0) session.departures = departures;
    else for (const event of departures) this.publish(event);
  }

  /**
   * Leaving a cluster: Presence frees the nickname and the places, and says
   * what each room counts after; the "30"s go out then, also when this node
   * is stopping (the rooms live on elsewhere).
   */
  private leaveCluster(session: Session, reason: DisconnectReason): void {
    const names = new Map<string, string>();
    for (const room of [...session.rooms]) {
      names.set(room.key, room.name);
      this.rooms.remove(session, room);
      this.uninterested(room.key);
    }
    const parted = this.partsInDoubt.get(session);
    this.partsInDoubt.delete(session);
    for (const [key, name] of parted ?? []) names.set(key, name);
    this.release(session.presenceId, session.nickname, names, reason, session, parted);
  }

  /** Frees a member in Presence; the rooms it was in hear it left. */
  private release(
    id: string,
    nickname: string,
    names: ReadonlyMap<string, string>,
    reason: DisconnectReason,
    who?: Partial<Pick<Session, 'origin' | 'lineage'>>,
    parted?: ReadonlyMap<string, string>,
  ): void {
    const cluster = this.cluster;
    if (cluster === undefined) return;
    const { presence } = cluster;
    const marks = { origin: who?.origin, lineage: who?.lineage };
    const announce = async (left: readonly RoomLeft[] | undefined) => {
      this.announceLeft(left ?? [], nickname, names, reason, marks);
      // PARTs in doubt whose leave Presence had applied: told with the count it gives now.
      // Not for a member Presence no longer had (moved away by a resume, or reaped).
      if (parted === undefined || left === undefined) return;
      const freed = new Set(left.map((l) => l.room));
      const rest = [...parted.keys()].filter((key) => !freed.has(key));
      try {
        const counts = await Promise.all(rest.map((key) => presence.count(key)));
        const more = rest.map((room, i) => ({ room, count: counts[i]! }));
        this.announceLeft(more, nickname, parted, reason, marks);
      } catch (err) {
        this.log.warn({ err, nickname }, 'could not tell a room a member left');
      }
    };
    // With PARTs in doubt, an expel: it tells a member Presence had from one it had not.
    const removed = parted === undefined ? presence.release(id) : presence.expel(id);
    this.track(
      removed.then(announce, (err: unknown) => {
        this.log.warn({ err, nickname }, 'could not release a member');
        // Its answer was lost: what the retry frees is told as this answer would have been.
        if (err instanceof ReleaseRetried) {
          return err.retried.then(announce, (again: unknown) =>
            this.log.warn({ err: again, nickname }, 'could not release a member'),
          );
        }
      }),
    );
  }

  /** The rooms a member was freed from in Presence hear it left. */
  private announceLeft(
    left: readonly RoomLeft[],
    nickname: string,
    names: ReadonlyMap<string, string>,
    reason: DisconnectReason,
    marks: Partial<Pick<Session, 'origin' | 'lineage'>>,
  ): void {
    const cluster = this.cluster;
    if (cluster === undefined) return;
    const { origin, lineage } = marks;
    for (const { room, count } of left) {
      this.log.info(
        { nickname, room: names.get(room) ?? room, users: count, reason },
        `${nickname} left. There are ${count} users connected.`,
      );
      const name = this.rooms.keyed(room)?.name ?? names.get(room) ?? room;
      cluster.broker.publish(room, { type: 'left', room: name, nickname, count, origin, lineage });
    }
  }
}

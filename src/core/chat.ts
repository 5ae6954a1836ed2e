import { Cmd, ErrorCode, type ErrorCodeValue, LOBBY } from '../protocol/codes.js';
import type { Position } from '../protocol/messages.js';
import { costCap, type Limits } from '../protocol/pacing.js';
import { type ParseResult, refusedFrame } from '../protocol/request-codec.js';
import { clip } from '../protocol/text.js';
import { Admission } from './admission.js';
import { BannedWords, DEFAULT_BANNED_WORDS } from './banned-words.js';
import { addressGroup, BanList, type BanStore, MemoryBanStore } from './bans.js';
import type { ChatPlace, WhisperEvent } from './broker.js';
import { type Cluster, ClusterNode } from './cluster-node.js';
import { type ChatContext, refuse } from './command-context.js';
import { chatTarget, commandFor, permitted } from './commands.js';
import { type ChatEvent, Delivery, type SaidEvent } from './events.js';
import { type Appended, asAction, type HistoryStore, type MessageDraft } from './history.js';
import { Identities } from './identities.js';
import { LogLimiter } from './log-limit.js';
import { type Operator, operatorByKey, operatorKey, RecentRemovals } from './moderation.js';
import { nicknameKey, nicknameLookupKey } from './nickname.js';
import { OwnChats, type StoredChat } from './own-chats.js';
import { type DisconnectReason, type Logger, type Peer, silentLogger } from './ports.js';
import type { DeadNode, MemberRef, PresenceMember, RoomCount } from './presence.js';
import {
  AddressBuckets,
  bucketAfterReload,
  type Clock,
  SpentAllowances,
  TokenBucket,
} from './rate-limit.js';
import { Replays } from './replay.js';
import { newSender } from './resume-token.js';
import { leftLine, Room } from './room.js';
import { type DeclaredRoom, Rooms } from './rooms.js';
import { type Blank, holderOf, Session, type SessionHost } from './session.js';

export interface ChatOptions {
  /** Room capacity; the course server's is 10. */
  maxUsers?: number;
  bannedWords?: BannedWords;
  serverVersion?: string;
  /** USERS shows "hidden" and port 0 instead of members' addresses. */
  hideAddresses?: boolean;
  /** The message of the day ('' for none). */
  motd?: string;
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
  /**
   * Whether `clock` can be trusted (a node of a cluster: whether it has read Redis's time;
   * default always). Until it can, no timed ban counts as ended.
   */
  timeKnown?: () => boolean;
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

export type { Cluster };

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
/**
 * Chats of one session being stored at once; later ones wait in the backlog (and so pause
 * reading). Unbounded, a client without flood control (--rate-limit 0) sending as fast as it
 * could while Redis stalled took a node from 82 to 951 MB in 15 s.
 */
const CHATS_IN_FLIGHT = 64;

/** About what a waiting request holds: its strings, as JSON (a refusal quotes what was sent). */
function backlogWeight(result: ParseResult): number {
  return JSON.stringify(result).length;
}

/** What Chat.reconfigure can change while sessions are open. */
export type ChatSettings = Pick<
  ChatOptions,
  | 'maxUsers'
  | 'bannedWords'
  | 'hideAddresses'
  | 'motd'
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

const RATE_LIMITED_MESSAGE = 'too many requests; slow down';

/**
 * A "password" or "resume" field's value in a logged excerpt, escapes and a cut-off end
 * included: a resume token in a log would let its reader take the session.
 */
const SECRET_FIELD = /("(?:password|resume)"\s*:\s*)"(?:[^"\\]|\\.)*("|$)/g;

/** OPER checks per address: five at once, then one every ten seconds. */
const OPER_BURST = 5;
const OPER_RATE = 0.1;
/** Addresses whose OPER checks, new rooms and CONNECTs are counted (AddressBuckets). */
const ADDRESS_BUCKETS = 4096;
/** Requests whose only effect is their answer: a client gone has no use for them. */
const ANSWER_ONLY: ReadonlySet<string> = new Set([
  Cmd.USERS,
  Cmd.VERSION,
  Cmd.RTT,
  Cmd.BANS,
  Cmd.ROOMS,
  Cmd.HISTORY,
]);

function answerOnly(result: ParseResult): boolean {
  return !result.ok || ANSWER_ONLY.has(result.request.cmd);
}

/**
 * A new room costs this many requests' worth of time: at the default 20 requests a second,
 * one room a second per address after a burst of 40, so that one address needs hours, not
 * seconds, to make --history-max-rooms rooms.
 */
const ROOM_RATE_SHARE = 20;

/**
 * A CONNECT costs this many requests' worth of time, per address, after a burst of
 * --rate-burst: two a second at the defaults. A CONNECT is the dearest request there is
 * (a join told to the lobby, a resume replaying up to 20 rooms from the store), and one
 * client that connects, resumes or exits in a loop made every lobby member read 7 MB/s, or
 * kept the server busy with replays nobody read.
 */
const CONNECT_RATE_SHARE = 10;
/**
 * CONNECTs an address has at once, at least, whatever --rate-burst says: a page and a
 * terminal that reconnect after a cut, with a few others behind the same NAT. An address
 * may also CONNECT at once every connection it may hold (--max-conns-per-ip): a class behind
 * one NAT that comes back after a restart, or arrives together, is let in together, and
 * only a loop after that is held to the rate.
 */
const CONNECT_MIN_BURST = 10;

/** Of each kind of refusal at accept or CONNECT, one line per this long (LogLimiter). */
const REFUSAL_LOG_MS = 10_000;

/** Addresses whose connections' spent flood allowance is remembered (SpentAllowances). */
const SPENT_ADDRESSES = 10_000;
/**
 * OPER checks for the whole server: ten at once, then one every two seconds, so guesses
 * from many addresses hold the event loop (about 50 ms a check) half a second at most,
 * then a few percent of it. The addresses an OPER succeeded from (OPER_TRUSTED) have a
 * budget of their own, the same again, so guesses from others do not lock the operators out.
 */
const OPER_SERVER_BURST = 10;
const OPER_SERVER_RATE = 0.5;
/** Address groups an OPER succeeded from, remembered (the newest) while the process runs. */
const OPER_TRUSTED = 256;

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
  motd: string;
  maxMessage: number;
  readonly log: Logger;
  readonly bans: BanList;
  readonly removals = new RecentRemovals();
  operators: readonly Operator[] = [];
  operatorNames: ReadonlySet<string> = new Set();
  private readonly clock: Clock;
  private storeFailedAt: number | undefined;
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
  private readonly operBuckets = new AddressBuckets(ADDRESS_BUCKETS);
  private readonly spent = new SpentAllowances(SPENT_ADDRESSES);
  /** New rooms per address (roomMade). */
  private readonly roomBuckets = new AddressBuckets(ADDRESS_BUCKETS);
  /** CONNECTs per address (connectAllowed). */
  private readonly connectBuckets = new AddressBuckets(ADDRESS_BUCKETS);
  /**
   * Lines each connection can cause (refusals, invalid first requests), of every listener:
   * one of each kind per REFUSAL_LOG_MS whatever comes, written out at shutdown.
   */
  readonly refusals: LogLimiter;
  private readonly operServer: TokenBucket;
  /** The server's budget for OPERs from the addresses one succeeded from (operTrusted). */
  private readonly operTrustedServer: TokenBucket;
  private readonly operTrusted = new Set<string>();
  private readonly sessions = new Set<Session>();
  /** Who holds each resume token and lasting identity, and on a cluster each origin. */
  private readonly identities: Identities;
  private readonly history: HistoryStore | undefined;
  /** "101"'s history and HISTORY's pages, read from `history`. */
  private readonly replays: Replays;
  private nextId = 1;
  private stopping = false;
  /** Stopping: nothing more is read or handled, what is under way finishes (quiesce). */
  private quiescing = false;
  readonly cluster: Cluster | undefined;
  /** On a node of a cluster, all it does on top of the single-process chat (cluster-node.ts). */
  private readonly node: ClusterNode | undefined;
  /** What waits for a session's requests under way to finish (a removal during a resume). */
  private readonly idleWaiters = new Map<Session, (() => void)[]>();

  constructor(options: ChatOptions = {}) {
    this.lobby = new Room(LOBBY, options.maxUsers ?? 10);
    this.rooms = new Rooms(this.lobby, roomSettings(options));
    this.rooms.mayCreate = (session) => this.roomMade(session);
    this.rooms.nameForbidden = (name) => this.bannedWords.matchesName(name);
    this.serverVersion = options.serverVersion ?? '1';
    this.bannedWords = options.bannedWords ?? new BannedWords(DEFAULT_BANNED_WORDS);
    this.hideAddresses = options.hideAddresses ?? false;
    this.motd = options.motd ?? '';
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
    this.replays = new Replays(this.history, options.historyOnJoin ?? 50);
    this.admission = new Admission(
      options.maxConnections ?? Number.POSITIVE_INFINITY,
      options.maxConnectionsPerIp ?? 0,
      (ip, fromIp, total) => {
        this.refusals.log(
          'connection-limit',
          (held) => this.log.warn({ ip, fromIp, total, ...held }, 'connection limit reached'),
          ip,
        );
        this.count('too-many-connections');
      },
    );
    this.clock = options.clock ?? Date.now;
    this.refusals = new LogLimiter(REFUSAL_LOG_MS, this.clock);
    this.node =
      cluster === undefined
        ? undefined
        : new ClusterNode(
            cluster,
            {
              chat: this,
              sessions: this.sessions,
              nicknames: this.nicknames,
              identities: this.identities,
              whenIdle: (session, then) => this.whenIdle(session, then),
            },
            this.clock,
          );
    this.operServer = new TokenBucket(OPER_SERVER_RATE, OPER_SERVER_BURST, this.clock());
    this.operTrustedServer = new TokenBucket(OPER_SERVER_RATE, OPER_SERVER_BURST, this.clock());
    this.setOperators(options.operators ?? []);
    const banStore =
      this.cluster === undefined
        ? (options.banStore ?? new MemoryBanStore())
        : new MemoryBanStore();
    this.bans = new BanList(banStore, banStore.load(), options.timeKnown);
    this.admission.banned = (ip) => {
      const ban = this.bans.bansAddress(ip, this.clock());
      if (ban === undefined) return false;
      this.refusals.log(
        'banned-address',
        (held) =>
          this.log.info(
            { ip, mask: ban.mask, ...held },
            'connection from a banned address refused',
          ),
        ip,
      );
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
    if (options.motd !== undefined) this.motd = options.motd;
    if (options.maxMessage !== undefined) this.maxMessage = options.maxMessage;
    if (options.operators !== undefined) this.dropOperators(options.operators);
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

  /**
   * A reload that takes an operator out of the list, or changes its password, ends that
   * operator's status in the sessions that hold it: kept, its later KICKs would name an
   * account that is now anyone's nickname to take, and a leaked password, replaced, would
   * still grant what it granted.
   */
  private dropOperators(operators: readonly Operator[]): void {
    this.setOperators(operators);
    for (const session of this.sessions) {
      const held = session.operator;
      if (held === undefined) continue;
      session.operator = operatorByKey(operators, operatorKey(held));
      if (session.operator !== undefined) continue;
      this.log.info(
        { nickname: session.nickname, ip: session.address.ip, operName: held.name },
        'operator status ended: no longer in the operators list with that password',
      );
      // Told unasked (no `ref`), or its client would show it as an operator until a KICK failed.
      refuse(
        session,
        ErrorCode.NOT_AUTHORIZED,
        `you are no longer operator ${held.name}: the server's operators list changed`,
      );
    }
  }

  /** The list, and its names' look-alike keys, folded once here rather than at every CONNECT. */
  private setOperators(operators: readonly Operator[]): void {
    this.operators = operators;
    this.operatorNames = new Set(operators.map((o) => nicknameKey(o.name)));
  }

  /** Number of open sessions, joined or not. */
  get connectionCount(): number {
    return this.sessions.size;
  }

  /** Whether a chat failed to be stored (a full disk, a store gone) within the last `ms`. */
  storeFailedWithin(ms: number): boolean {
    return this.storeFailedAt !== undefined && this.clock() - this.storeFailedAt < ms;
  }

  /**
   * A transport calls this for each new connection it has admitted
   * (`admission.tryOpen`); the caps are counted there, per raw socket.
   */
  open(peer: Peer): Session {
    const session = new Session(this.nextId++, peer, this);
    this.sessions.add(session);
    if (this.rateLimit > 0) {
      const now = this.clock();
      const left = this.spent.start(
        addressGroup(session.address.ip),
        this.rateLimit,
        this.rateBurst,
        now,
      );
      session.bucket = new TokenBucket(this.rateLimit, this.rateBurst, now, left);
    }
    if (this.stopping) this.disconnect(session, 'shutdown');
    return session;
  }

  find(nickname: string): Session | undefined {
    // A client's WHISPER or KICK names anyone, as long as a frame: too long is nobody, unfolded.
    const key = nicknameLookupKey(nickname);
    return key === undefined ? undefined : this.nicknames.get(key);
  }

  now(): number {
    return this.clock();
  }

  membersOf(room: Room): Promise<readonly PresenceMember[]> {
    return this.node?.memberLists.of(room.key) ?? Promise.resolve([]);
  }

  operated(session: Session): void {
    this.node?.operated(session);
  }

  membersChanged(key: string): void {
    this.node?.memberLists.changed(key);
  }

  roomCounts(): Promise<readonly RoomCount[]> {
    return this.node?.roomCounts.get() ?? Promise.resolve([]);
  }

  freshMembers(key: string): Promise<readonly PresenceMember[]> {
    return this.node?.memberLists.fresh(key) ?? Promise.resolve([]);
  }

  shownMembers(
    session: Session,
    room: Room,
    read?: readonly PresenceMember[],
  ): string[] | undefined {
    const shown = this.node?.shownMembers(room.key, session, read);
    if (shown !== undefined) session.dropHeldChanges(room.name);
    return shown;
  }

  originOf(session: Session): string | undefined {
    this.identities.originate(session);
    return session.origin;
  }

  /**
   * A new room from `session`'s address, within its budget: with flood control on, a room
   * every ROOM_RATE_SHARE requests' worth of time after a burst of --rate-burst rooms.
   */
  private roomMade(session: Session): boolean {
    if (this.rateLimit <= 0) return true;
    const now = this.clock();
    return this.addressBucket(this.roomBuckets, session, ROOM_RATE_SHARE, this.rateBurst, now).take(
      now,
    );
  }

  /**
   * A CONNECT from `session`'s address, within its budget (CONNECT_RATE_SHARE). None with
   * --max-conns-per-ip 0: a site that sets it has every client behind one address.
   */
  private connectAllowed(session: Session): boolean {
    return this.connectBudget(session, (bucket, now) => bucket.take(now));
  }

  /**
   * Whether a frame of `session` is worth reading: not when it is the first of a session
   * whose address has no CONNECT left, which is refused unread (a CONNECT's `since` can
   * take a millisecond to parse). Frames behind a CONNECT under way are read.
   */
  admitsFrame(session: Session): boolean {
    if (session.state !== 'greeting' || session.pending > 0) return true;
    if (this.connectBudget(session, (bucket, now) => bucket.has(now))) return true;
    this.refuseConnect(session);
    return false;
  }

  /** `use` of the address's CONNECT budget, or true when there is none. */
  private connectBudget(
    session: Session,
    use: (bucket: TokenBucket, now: number) => boolean,
  ): boolean {
    if (this.rateLimit <= 0 || !this.admission.perAddress) return true;
    const now = this.clock();
    const burst = Math.max(this.rateBurst, CONNECT_MIN_BURST, this.admission.perAddressCap);
    return use(
      this.addressBucket(this.connectBuckets, session, CONNECT_RATE_SHARE, burst, now),
      now,
    );
  }

  /** As a connection over --max-conns-per-ip is refused: "02", which clients retry later. */
  private refuseConnect(session: Session): void {
    session.reply({
      type: 'connect-refused',
      reason: 'room-full',
      detail: 'too many connections from your address; try again in a few seconds',
    });
    const ip = session.address.ip;
    this.refusals.log(
      'connect-rate',
      (held) => this.log.warn({ ip, ...held }, 'CONNECT over its address budget refused'),
      ip,
    );
    this.disconnect(session, 'too-many-connections');
  }

  /** `session`'s address's bucket of `buckets`: one `share` requests' worth of --rate-limit. */
  private addressBucket(
    buckets: AddressBuckets,
    session: Session,
    share: number,
    burst: number,
    now: number,
  ): TokenBucket {
    return buckets.of(addressGroup(session.address.ip), this.rateLimit / share, burst, now);
  }

  operAttempt(ip: string): 'ok' | 'address' | 'server' {
    const now = this.clock();
    // Per /64 for IPv6: per address, a host's 2^64 addresses each had five checks to spend.
    const group = addressGroup(ip);
    const bucket = this.operBuckets.of(group, OPER_RATE, OPER_BURST, now);
    // The address's budget first, so one already spent does not drain the server's; and
    // taken only when the server's allows the check, so refusals do not spend it.
    if (!bucket.has(now)) return 'address';
    const server = this.operTrusted.has(group) ? this.operTrustedServer : this.operServer;
    if (!server.take(now)) return 'server';
    bucket.take(now);
    return 'ok';
  }

  operSucceeded(ip: string): void {
    const group = addressGroup(ip);
    this.operTrusted.delete(group);
    this.operTrusted.add(group);
    if (this.operTrusted.size > OPER_TRUSTED) {
      this.operTrusted.delete(this.operTrusted.values().next().value!);
    }
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
    if (this.node !== undefined) {
      this.node.publish(event, epoch);
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

  /** See ClusterNode.awaitPlace; on one process nothing need wait. */
  awaitPlace(
    session: Session,
    room: Room,
    nickname: string,
  ): Promise<ChatPlace | undefined> | undefined {
    return this.node?.awaitPlace(session, room, nickname);
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

  /** On a node of a cluster, reads the cluster's ban list again (ClusterNode.refreshBans). */
  refreshBans(): Promise<void> {
    return this.node?.refreshBans() ?? Promise.resolve();
  }

  whisperTo(node: string, event: WhisperEvent): Promise<boolean> {
    return this.node?.whisperTo(node, event) ?? Promise.resolve(false);
  }

  interested(room: Room): Promise<void> {
    return this.node?.interested(room) ?? Promise.resolve();
  }

  uninterested(key: string): void {
    this.node?.uninterested(key);
  }

  shownAs(room: Room, name: string): Room {
    return this.node?.shownAs(room, name) ?? room;
  }

  partInDoubt(session: Session, room: Room): void {
    this.node?.partInDoubt(session, room);
  }

  forget(session: Session): void {
    this.node?.forget(session);
  }

  // The cluster keeper's callbacks (server.ts wires them on a node of a cluster): see ClusterNode.

  reaped(dead: readonly DeadNode[]): void {
    this.node?.reaped(dead);
  }

  /** The capacity of the room under `key` (the lobby's too), if it is known here. */
  capacityOf(key: string): number | undefined {
    return this.node?.capacityOf(key);
  }

  expired(): void {
    this.node?.expired();
  }

  lost(members: readonly string[], crowded: readonly string[] = []): void {
    this.node?.lost(members, crowded);
  }

  registeredAgain(): void {
    this.node?.registeredAgain();
  }

  goneAway(members: readonly string[]): void {
    this.node?.goneAway(members);
  }

  displaced(members: readonly MemberRef[]): void {
    this.node?.displaced(members);
  }

  /** Resolves once the leaves of sessions already ended are told to the cluster. */
  async settled(): Promise<void> {
    await this.node?.settled();
  }

  receive(session: Session, result: ParseResult): void {
    if (session.state === 'closed' || this.quiescing) return;
    if (session.state === 'joined' && this.cluster?.stale?.() === true) {
      // Closed with the node's other clients already, unless it was the first to ask.
      this.disconnect(session, 'cluster-unavailable');
      return;
    }
    // Flood control counts every frame after joining, garbage included, so
    // junk cannot be sprayed (and logged) faster than chat; EXIT always passes. Frames behind
    // a CONNECT still under way (a claim in Redis) count too: handled once it is, they would
    // all pass. A session starts with what its address's connections left
    // (SpentAllowances), so reconnecting buys no fresh burst; a resume takes its session's
    // (takeBack).
    if (
      session.state === 'greeting' &&
      result.ok &&
      result.request.cmd === Cmd.CONNECT &&
      !this.connectAllowed(session)
    ) {
      this.refuseConnect(session);
      return;
    }
    if (
      session.bucket !== undefined &&
      (session.state === 'joined' || session.pending > 0) &&
      !(result.ok && result.request.cmd === Cmd.EXIT) &&
      !this.admit(session, result.ok ? result.request.cmd : result.error.ref)
    ) {
      return;
    }
    this.route(session, result);
  }

  /**
   * Whitespace, or a WebSocket ping or pong, costs flood control a request: a stream of
   * nothing else would cost the server a wake and a scan per frame and its sender nothing
   * (75,000 pongs a second took 40% of a core). From a member, or behind a CONNECT under way,
   * it is answered only when refused: a client's keep-alive newline a second would otherwise
   * earn an error an hour. Before CONNECT, whitespace is an invalid first request, as it has
   * always been to the course server, while a control frame (a browser's answer to a
   * keepalive ping) passes until its address's tokens are spent, then closes the connection.
   */
  blank(session: Session, what: Blank): void {
    if (session.state === 'closed' || this.quiescing) return;
    const bucket = session.bucket;
    if (session.state === 'joined' || session.pending > 0) {
      if (bucket !== undefined) this.admit(session, undefined);
      return;
    }
    if (what === 'whitespace') {
      this.receive(session, refusedFrame('blank'));
      return;
    }
    if (bucket === undefined || this.spend(session, bucket)) return;
    this.disconnect(session, 'flooding');
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
      if (
        !session.barrier &&
        session.pending < CHATS_IN_FLIGHT &&
        result.ok &&
        result.request.cmd === Cmd.CHAT
      ) {
        const target = chatTarget(this, session, result.request);
        if (target !== undefined) {
          this.say(session, target.room, result.request.msg, target.cid, target.action);
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

  /**
   * An unfinished request finished: what waited behind it goes on. It runs in a promise's
   * callback, outside the transport's fault boundary, so it is its own: a request that throws
   * here closes its connection (3005) as it would have when it arrived.
   */
  private finished(session: Session): void {
    session.pending--;
    if (session.pending > 0) return;
    try {
      this.resumeBacklog(session);
      // Its connection went meanwhile: it leaves once nothing it sent is left to handle.
      const gone = session.goneWith;
      if (gone !== undefined && session.pending === 0) this.ended(session, gone);
    } catch (err) {
      this.failed(session, err, 'request');
      // A session that had faulted before is not disconnected again; gone, it must leave.
      const gone = session.goneWith;
      if (gone !== undefined && session.state !== 'closed') this.leave(session, gone);
    }
  }

  private resumeBacklog(session: Session): void {
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
      // A client that went is handled for what others see of it, not for answers it cannot
      // read (thousands of HISTORY pages asked for by a client that reset, say).
      if (session.goneWith !== undefined && answerOnly(result)) continue;
      this.route(session, result);
    }
    // route() may have started a new backlog; TypeScript cannot see that.
    const waiting = session.backlog as ParseResult[] | undefined;
    if (
      session.paused &&
      !this.quiescing &&
      (waiting?.length ?? 0) < BACKLOG_PAUSE &&
      session.backlogBytes < BACKLOG_PAUSE_BYTES
    ) {
      session.paused = false;
      session.peer.pause?.(false);
    }
  }

  /** Runs `then` once the session's requests under way have finished (`finished`). */
  private whenIdle(session: Session, then: () => void): void {
    const waiting = this.idleWaiters.get(session) ?? [];
    waiting.push(then);
    this.idleWaiters.set(session, waiting);
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
        // One a connection: a client opening them in a loop is not to write the log.
        const id = session.id;
        this.refusals.log(
          'invalid-first-request',
          (held) =>
            this.log.warn(
              { session: id, code, ref: ref && clip(ref), ...held },
              `Invalid first request: ${clip(message)}`,
            ),
          session.address.ip,
        );
        this.disconnect(session, 'protocol');
        return;
      }
      // An extension's command is unknown to a client that did not ask for it, however malformed.
      if (ref !== undefined && (code === ErrorCode.UNKNOWN_COMMAND || !permitted(session, ref))) {
        this.unknownCommand(session, ref);
        return;
      }
      const nickname = session.nickname;
      this.refusals.log(
        'invalid-request',
        (held) =>
          this.log.warn(
            { nickname, code, ref: ref && clip(ref), ...held },
            `Invalid request: ${clip(message)}`,
          ),
        session.address.ip,
      );
      refuse(session, code, message, ref);
      return;
    }
    const request = result.request;
    const command = commandFor(request.cmd);
    if (session.state === 'greeting') {
      if (!command.greeting) {
        const id = session.id;
        this.refusals.log(
          'not-connect-first',
          (held) =>
            this.log.warn(
              { session: id, ...held },
              `Invalid request command. Command: ${request.cmd}`,
            ),
          session.address.ip,
        );
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
    const nickname = session.nickname;
    this.refusals.log(
      'unknown-command',
      (held) =>
        this.log.warn({ nickname, ...held }, `Invalid request command. Command: ${clip(cmd)}`),
      session.address.ip,
    );
    refuse(session, ErrorCode.UNKNOWN_COMMAND, `unknown command "${clip(cmd)}"`, cmd);
  }

  /**
   * Flood control: refuse requests over the rate; cut off a session that
   * keeps at it. The refusal names the request (`ref`) so that a client
   * pairing replies with its calls rejects the right one.
   */
  private admit(session: Session, ref: string | undefined): boolean {
    const bucket = session.bucket!;
    if (this.spend(session, bucket)) {
      session.strikes = 0;
      return true;
    }
    session.strikes++;
    if (session.strikes > bucket.burst) {
      this.log.warn(
        { nickname: session.nickname, ip: session.address.ip },
        'flooding, disconnecting',
      );
      this.disconnect(session, 'flooding');
      return false;
    }
    if (session.strikes === 1) {
      // Once per run of refusals, and a client alternating one request in and one refused
      // starts a run each time: limited as the other lines a client causes.
      const nickname = session.nickname;
      this.refusals.log(
        'rate-limit',
        (held) => this.log.info({ nickname, ...held }, 'rate limit reached'),
        session.address.ip,
      );
    }
    // In its turn: answers to earlier requests may still be waiting in the backlog.
    this.route(session, {
      ok: false,
      error: { code: ErrorCode.RATE_LIMITED, message: RATE_LIMITED_MESSAGE, ref },
    });
    return false;
  }

  affords(session: Session, cost: number): boolean {
    const bucket = session.bucket;
    if (bucket === undefined) return true;
    // Flood control took one when the request was read. Capped by the burst the client was
    // told, which it paces by, when a reload has raised the bucket's since.
    const extra = costCap(cost, session.told?.burst ?? bucket.burst) - 1;
    if (extra <= 0) return true;
    return this.spend(session, bucket, extra);
  }

  join(session: Session, nickname: string, room: Room | undefined): void {
    session.nickname = nickname;
    session.key = nicknameKey(nickname);
    session.state = 'joined';
    session.room = room;
    this.nicknames.set(session.key, session);
    // The address an operator bans by: kept in the log whatever members are shown.
    const ip = session.address.ip;
    this.stats.joins++;
    if (room === undefined) {
      this.log.info({ nickname, ip }, `${nickname} connected outside the lobby.`);
      return;
    }
    this.rooms.add(session, room);
    this.log.info(
      { nickname, ip, room: room.name, users: room.size },
      `${nickname} joined. There are ${room.size} users connected.`,
    );
  }

  issueToken(session: Session): string {
    return this.identities.issue(session);
  }

  disownIdentity(session: Session): void {
    this.identities.disown(session);
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
    // The allowance goes with the member: a resume is no way to a fresh burst.
    if (ghost.bucket !== undefined) session.bucket?.lowerTo(ghost.bucket.level(this.clock()));
    session.strikes = Math.max(session.strikes, ghost.strikes);
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
    // Its rooms' live events, and the "71"s of the old connection's chats still being
    // stored, wait behind the replays its CONNECT asks for (a resume needs "history").
    for (const room of session.rooms) session.holdRoom(room.name);
    session.ownChats = ghost.ownChats;
    ghost.state = 'closed';
    this.sessions.delete(ghost);
    this.count('replaced');
    this.log.info(
      {
        nickname: session.nickname,
        ip: session.address.ip,
        session: session.id,
        replaced: ghost.id,
      },
      `${session.nickname} took their session back.`,
    );
    ghost.peer.close('replaced');
    return true;
  }

  /** takeBack on a node of a cluster (ClusterNode.takeOver); one process takes nothing over. */
  takeOver(session: Session, token: string): Promise<boolean> {
    return this.node?.takeOver(session, token) ?? Promise.resolve(false);
  }

  /**
   * A chat message, stored first when there is history (so that every id a
   * client sees survives a crash), then delivered to the room; a sender with
   * "history" learns its id.
   */
  say(session: Session, room: Room, msg: string, cid: string | undefined, action = false): void {
    const at = this.clock();
    const from = session.nickname;
    const history = this.history;
    if (history === undefined) {
      const id = room.nextId();
      const event: SaidEvent = { type: 'chat', room: room.name, id, at, from, msg };
      this.publish(asAction(event, action), session);
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
    if (origin !== undefined) {
      session.ownChats ??= new OwnChats();
      session.ownChats.begin();
    }
    if (cid !== undefined || origin !== undefined) {
      session.sender ??= newSender();
      draft =
        cid === undefined
          ? { at, from, msg, sender: session.sender }
          : { at, from, msg, cid, sender: session.sender };
    }
    // Spread only here: other chat keeps the shapes the hot path was tuned for.
    draft = asAction(draft, action);
    history.append(room.key, draft).then(
      (appended) => {
        // The request ends with its "71": later requests, an EXIT, a stop wait for it.
        let acknowledging = false;
        try {
          const m = appended.message;
          // Taken over meanwhile: the sender is now the connection that took the session.
          const sender = holderOf(session);
          // Counted before the publication, whose copy may come back at once.
          const others =
            origin === undefined
              ? undefined
              : sender.ownChats?.end(
                  appended.duplicate
                    ? undefined
                    : { room: room.name, key: room.key, id: m.id, at: m.at },
                );
          if (!appended.duplicate) {
            const event: SaidEvent = {
              type: 'chat',
              room: room.name,
              id: m.id,
              at: m.at,
              from: m.from,
              msg: m.msg,
              origin,
              epoch: appended.epoch,
            };
            this.publish(asAction(event, m.action === true), sender, appended.epoch);
          }
          // An id of an epoch the room's members have not been told of yet (Redis restarted
          // empty) waits for their "108": a "71" names no epoch. And it waits for the room's
          // chats below it, other nodes' among them: a client counts its own ids as seen.
          if (this.node !== undefined) {
            const then = (movedTo?: string) => {
              this.acknowledge(session, room, appended, others, movedTo);
              this.finished(session);
            };
            this.node.inEpoch(room, appended.epoch, then, m.id);
            acknowledging = true;
          } else this.acknowledge(session, room, appended, others);
        } catch (err) {
          this.failed(session, err, 'request');
        }
        if (!acknowledging) this.finished(session);
      },
      (err: unknown) => {
        this.log.error({ err, room: room.name }, 'could not store a chat message');
        this.storeFailedAt = this.clock();
        if (origin !== undefined) {
          const sender = holderOf(session);
          sender.tellStored(sender.ownChats?.end(undefined));
        }
        this.failed(session, err, 'request');
        this.finished(session);
      },
    );
  }

  /**
   * "71" for a chat stored (to a client with "history"), and those of its session's other
   * connections, to the connection that holds the session now: a takeover may have come
   * while it waited for its room's epoch.
   */
  private acknowledge(
    session: Session,
    room: Room,
    appended: Appended,
    others: readonly StoredChat[] | undefined,
    movedTo?: string,
  ): void {
    try {
      const holder = holderOf(session);
      if (holder.has('history')) {
        const m = appended.message;
        // Its epoch was lost again before the room got to it: the sender alone is told of
        // that epoch, so the id is filed under it, then of the one the room is in.
        const gap = (epoch: string) =>
          holder.send(new Delivery({ type: 'gap', room: room.name, epoch, reason: 'epoch' }));
        if (movedTo !== undefined) gap(appended.epoch);
        const stored = {
          type: 'stored',
          room: room.name,
          id: m.id,
          at: m.at,
          cid: m.cid,
          duplicate: appended.duplicate,
        } as const;
        if (holder === session) holder.reply(stored);
        else holder.storedForPredecessor(stored);
        if (movedTo !== undefined) gap(movedTo);
      }
      holder.tellStored(others);
    } catch (err) {
      this.failed(session, err, 'request');
    }
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
    if (session.pending > 0) {
      // What the client sent before it went is handled first, as one process handles it
      // at once: the requests behind a chat being stored or a claim in Redis (a client
      // that writes its lines and half-closes, as `nc -N` does) were dropped, EXIT included.
      // Its allowance is spent already (frames count as they arrive): kept for its address
      // now, not once they are handled, or its next connection would start afresh.
      if (session.goneWith === undefined) this.keepSpent(session);
      session.goneWith ??= reason;
      return;
    }
    if (session.state === 'joined' && reason === 'lost') {
      this.log.info(
        { nickname: session.nickname },
        `The ${session.peer.carrier} connection to the client (nickname=${session.nickname}) has been lost.`,
      );
    }
    this.leave(session, reason);
  }

  /**
   * Takes `tokens` of `session`'s `bucket`, if it has them. Once spent, what is left is kept
   * for its address now, not only when it closes, since the client's next connection may be
   * accepted before this one's close is read.
   */
  private spend(session: Session, bucket: TokenBucket, tokens = 1): boolean {
    if (!bucket.take(this.clock(), tokens)) return false;
    if (bucket.available < 1) this.keepSpent(session);
    return true;
  }

  /** What is left of `session`'s flood allowance, kept for its address (SpentAllowances). */
  private keepSpent(session: Session): void {
    if (session.bucket === undefined) return;
    this.spent.keep(addressGroup(session.address.ip), session.bucket, this.clock());
  }

  /**
   * The first step of a graceful stop: nothing more is read from any connection, nor handled
   * if it was read already, and the requests under way finish, for at most `ms`. A chat being
   * stored is then stored, acknowledged and delivered before its sender and its room are told
   * the server stops (shutdown), not stored and never told of.
   */
  async quiesce(ms: number): Promise<void> {
    this.quiescing = true;
    // Not marked `paused`: that is the backlog's, which resumes no peer while this lasts.
    for (const session of this.sessions) session.peer.pause?.(true);
    const until = performance.now() + ms;
    // Finished requests let those behind them in their backlogs go on: waited for in turn.
    for (;;) {
      const busy = [...this.sessions].filter((s) => s.pending > 0);
      const left = until - performance.now();
      if (busy.length === 0 || left <= 0) break;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.all(busy.map((s) => new Promise<void>((then) => this.whenIdle(s, then)))),
        new Promise<void>((then) => {
          timer = setTimeout(then, left);
        }),
      ]);
      clearTimeout(timer);
    }
    // Read again, though nothing read is handled: a paused socket would not see its client
    // close after the stop's "90", and the stop would wait --shutdown-timeout for it.
    for (const session of this.sessions) session.peer.pause?.(false);
  }

  /** Disconnects everyone, without leave notices: the room is going away. */
  shutdown(): void {
    this.stopping = true;
    this.node?.stop();
    for (const session of [...this.sessions]) this.disconnect(session, 'shutdown');
    this.refusals.flush();
  }

  /** Counts one connection ended for `reason` (for /metrics). */
  private count(reason: DisconnectReason): void {
    this.stats.ended.set(reason, (this.stats.ended.get(reason) ?? 0) + 1);
  }

  private leave(session: Session, reason: DisconnectReason): void {
    const wasJoined = session.state === 'joined';
    session.state = 'closed';
    this.keepSpent(session);
    this.sessions.delete(session);
    this.count(reason);
    this.identities.forget(session);
    if (!wasJoined) return;
    this.nicknames.delete(session.key);
    session.room = undefined;
    this.stats.leaves++;
    if (this.node !== undefined) {
      this.node.leave(session, reason);
      return;
    }
    const departures: ChatEvent[] = [];
    // The lobby first (joined first): course clients see exactly the course server's "30".
    for (const room of [...session.rooms]) {
      this.rooms.remove(session, room);
      this.log.info(
        { nickname: session.nickname, room: room.name, users: room.size, reason },
        leftLine(session.nickname, room.name, room.size, room === this.lobby),
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
}

import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import { CAPABILITIES, type Capability } from '../protocol/capabilities.js';
import { Cmd, LOBBY, mayReconnect, RECONNECT_STABLE_MS } from '../protocol/codes.js';
import { asNumber, asString } from '../protocol/coerce.js';
import {
  type ParsedServerMessage,
  parseServerText,
  REPLY_CODES,
} from '../protocol/message-codec.js';
import type {
  BanEntry,
  ConnectRequest,
  HistoryEntry,
  MessageOf,
  NotRecovered,
  Position,
  Request,
  RoomEntry,
  UserEntry,
} from '../protocol/messages.js';
import {
  type Limits,
  pacerFor,
  parseLimits,
  requestCost,
  roomsByNow,
  type SendPacer,
} from '../protocol/pacing.js';
import { encodeRequest } from '../protocol/request-codec.js';
import { banList } from '../protocol/slash-commands.js';
import {
  ChatClientError,
  dial,
  type Endpoint,
  retryable,
  serverText,
  type TlsOptions,
  unreachable,
  utf8,
} from './dial.js';

export { ChatClientError, type ChatErrorKind, type TlsOptions } from './dial.js';

/** A chat message as the 'chat' event and room history carry it. */
export interface ChatMessage {
  from: string;
  msg: string;
  whisper: boolean;
  /** The lobby when the server names none (course server, whispers). */
  room: string;
  /** Per room, with room chat when "rooms" was granted. */
  id?: number;
  /** Server time, ms since the epoch. */
  at?: number;
  /** Missed while the connection was down, and replayed after it came back ("history"). */
  recovered?: true;
  /** The text says what `from` does (IRC's /me; capability "actions"). */
  action?: true;
}

/** What "101" says, and (capability "history") what the server replayed after it. */
export type JoinedRoom = Omit<MessageOf<typeof Cmd.JOIN_ROOM_SUCCESS>, 'cmd'> & {
  /**
   * The stored messages sent with the join (ids up to `top`, oldest first): the
   * newest ones, or, when a recovery failed, the newest instead of the gap. They
   * are not emitted as 'chat'. A recovered gap is emitted as 'chat' instead.
   */
  history: ChatMessage[];
};

/** How a room fared across a reconnect. */
export interface RoomRecovery {
  room: string;
  /** Every message missed while away was replayed (as 'chat' with `recovered`). */
  recovered: boolean;
  /** Why not: the server's reason ("off" also when the server keeps no history). */
  reason?: NotRecovered;
  /** Set when the room could not be joined again: the client is no longer in it. */
  lost?: ChatClientError;
  /**
   * With `lost`: the chats sent to the room and never acknowledged, oldest first. They are
   * given up (not re-sent), so a caller can say which lines did not go.
   */
  unsent?: { msg: string; action?: true }[];
}

/** What "107" says: older messages of a room, oldest first. */
export interface HistoryPage {
  room: string;
  epoch: string;
  messages: HistoryEntry[];
  /** Older messages are still stored. */
  more: boolean;
}

export interface ChatEvents {
  /** Live chat, whispers, and a recovered gap (`recovered`), each (room, id) once. */
  chat: [ChatMessage];
  join: [{ nickname: string; userCount: number; room: string }];
  leave: [{ nickname: string; userCount: number; room: string }];
  rename: [{ oldNickname: string; newNickname: string; room: string }];
  /**
   * Every "101", once the history sent with it has arrived: for join() ('join'),
   * the lobby at CONNECT ('connect'), and rooms taken back or joined again
   * after a reconnect ('resume').
   */
  room: [JoinedRoom & { origin: 'join' | 'connect' | 'resume' }];
  /** "71": a chat of yours is stored; `cid` is what chat() returned. */
  stored: [{ room: string; id: number; at: number; cid?: string; duplicate: boolean }];
  /**
   * "108": messages of a room you stay in were lost on the server (history
   * reset: the ids that follow belong to `epoch`; or deleted before they
   * reached you). The chats after it arrive as usual.
   */
  gap: [{ room: string; epoch: string; reason: 'epoch' | 'deleted' }];
  /** "99": a member was kicked or banned (capability "moderation"). */
  moderation: [
    { action: 'kick' | 'ban'; nickname: string; by: string; reason: string; seconds?: number },
  ];
  /** A "90" that answers no pending call: a refused request or the reason for a disconnect. */
  'server-error': [{ code: number; message: string; ref?: string }];
  /** Any frame, including codes this library does not know (and replays it drops as seen). */
  message: [ParsedServerMessage];
  /** How many requests wait to be sent (paced to the server's limits); sent when it changes. */
  queue: [{ waiting: number }];
  /**
   * The connection was lost (option `reconnect`); the next attempt starts after `delayMs`.
   * `error` is why the last attempt failed (`attemptFailed`), or else the loss itself.
   */
  reconnecting: [
    {
      attempt: number;
      attempts: number;
      delayMs: number;
      error: ChatClientError;
      attemptFailed: boolean;
    },
  ];
  /**
   * Connected again, rooms restored and unacknowledged chats re-sent.
   * `resumed`: the server took the old session back (nobody saw a leave).
   */
  resumed: [{ resumed: boolean; nickname: string; rooms: RoomRecovery[] }];
  /** The end: after exit(), a refusal, or when reconnecting gave up. */
  close: [{ error?: ChatClientError }];
  /**
   * A reconnect was welcomed: `resumeToken` and `nickname` are this connection's. Sent before
   * the rooms are restored, so a caller keeping the token elsewhere is never a token behind.
   */
  session: [{ resumeToken: string | undefined; nickname: string }];
}

export interface ReconnectOptions {
  /**
   * Attempts after each lost connection before giving up (Infinity: never). Default 10. A
   * connection lost within 10 s of coming back shares the budget of the loss before it.
   */
  attempts?: number;
  /** Delay before the first attempt; doubles each time. Default 250 ms. */
  minDelayMs?: number;
  /** Largest delay between attempts. Default 10 s. */
  maxDelayMs?: number;
}

/** A server to connect to: one node of a cluster, or a single server. */
export interface ServerAddress {
  host: string;
  port: number;
}

export interface ConnectOptions {
  nickname: string;
  host?: string;
  port?: number;
  /**
   * Several servers, such as the nodes of one cluster, used in turn instead of
   * `host` and `port`: `connect()` takes the first that welcomes the client (one
   * that cannot be reached, or refuses for a passing reason, is skipped), and
   * after a lost connection each attempt dials the next one, starting with the
   * one after the server lost. A cluster takes the session back on any node.
   */
  servers?: readonly ServerAddress[];
  /**
   * Extensions to ask for; the course server ignores the request.
   * Default: all but "history" and "actions" (see those).
   */
  caps?: readonly Capability[];
  /**
   * Ask for "actions" (IRC's /me): chat that says what its sender does comes with
   * `action: true`, to be shown as such, and chat() may send one. Default false: a program
   * that shows chat as "from: msg" gets an action's text between asterisks instead.
   */
  actions?: boolean;
  /**
   * Ask for "history" (with "rooms"): ids and positions, history on join,
   * acknowledged chats, and recovery after a reconnect. Default false.
   */
  history?: boolean;
  /**
   * Connect again when the connection is lost (not after a 2xxx refusal or
   * exit()), taking the session back and replaying what was missed. Only
   * with a server that granted "errors": one that does not (the course
   * server) closes silently for a banned word as well.
   */
  reconnect?: boolean | ReconnectOptions;
  timeoutMs?: number;
  /** Connect over TLS; the server's certificate is verified unless told otherwise. */
  tls?: boolean | TlsOptions;
  /**
   * A resume token from an earlier run ("history"): the first CONNECT presents it, and takes
   * that session back if the server still holds it open (see `resumedAtConnect`).
   */
  resume?: string;
  /**
   * Queue requests to stay under the flood limit the server announces.
   * Default true; false sends at once and lets the server refuse (1008).
   */
  pace?: boolean;
}

interface Pending {
  cmd: string;
  resolve: (message: ParsedServerMessage) => void;
  reject: (error: ChatClientError) => void;
  /** Its reply comes after every history sent before it (see fence()). */
  fence?: true;
  /** Asks whether the calls written before it were answered (see probe()). */
  probe?: true;
  /** An RTT's own beginTime, which its reply carries back. */
  beginTime?: number;
}

/** A request waiting its turn, with the call awaiting its reply if any. */
interface Outgoing {
  request: Request;
  pending?: Pending;
}

/** A chat not yet acknowledged by "71" (or, without "history", not yet written). */
interface Unacked {
  cid: string | undefined;
  room: string;
  msg: string;
  action?: true;
  /** A replay already brought it back (its "71" was lost): not shown twice. */
  replayed?: true;
}

/** What the client knows of a room it is in (capability "history"). */
interface RoomTrack {
  epoch: string;
  /** The position: the newest id received (0: none yet). */
  id: number;
  /** Ids received lately, so a message replayed twice is shown once. */
  seen: Set<number>;
  /** The oldest id received or loaded, for HISTORY's `before`. */
  oldest: number | undefined;
}

/** A "101" whose history is still arriving. */
interface Replay {
  joined: JoinedRoom;
  top: number;
  origin: 'join' | 'connect' | 'resume';
  done: (joined: JoinedRoom) => void;
  /** Characters of text in `joined.history`, against REPLAY_HELD_CHARS. */
  heldChars: number;
}

/** Ids remembered per room for de-duplication; replays never reach further back. */
const SEEN_LIMIT = 4096;
/**
 * Gap after a paced request that gets no reply (CHAT, EXIT): long enough for
 * the course server's thread to come back to recv(). It adapts to twice the
 * latest round trip, within these bounds. At 50 ms a Python server on a loaded
 * machine was once slower, read two chats in one recv() and dropped the client:
 * 10 lines a second is still faster than anyone types.
 */
const PACE_GAP_MIN_MS = 100;
const PACE_GAP_MAX_MS = 500;
/**
 * How long a paced request that expects a reply holds the requests after it. A reply that
 * never comes (a hostile server; a reply over the frame limit, dropped) held them, chats
 * included, for as long as the connection lasted; `confab chat` gives up on a line after
 * as long, and what it typed next must then go out. A call unanswered after as long is
 * probed (see probe()): it ends once the server is heard answering a later request.
 */
const PACE_UNANSWERED_MS = 10_000;
/**
 * How long a probe's RTT may go unanswered before the connection is given up as dead (a
 * server whose loop or storage is stuck, a half-open link): it is then closed and, with a
 * reconnect policy, made again, as the web page does. Until then chats typed showed as
 * sent, and nothing said that none was.
 */
const PROBE_DEADLINE_MS = 10_000;
/**
 * Rooms the client keeps state for at most, but those it asked to join; a "101" nobody
 * asked for past it is ignored. A hostile server sending "101"s for rooms without end made
 * the client keep each room's state for good (200,000 of them: 163 MB of heap). confab lets
 * a client into 20 (--max-rooms-per-client), or as many as that is set to.
 */
const ROOMS_MAX = 1_000;
/**
 * History held for a "101" until it is complete, at most: past either bound the replay ends
 * and what follows is live chat. confab sends at most 1,000 messages for one "101"
 * (--history-on-join's most; a recovery's MAX_REPLAY), 4 MB of text at the default
 * --max-message. A hostile server claiming a `top` it never reached, and never answering the
 * RTT that ends a replay, was held without bound: 400,000 chats ran a 48 MB heap out.
 */
const REPLAY_HELD_MAX = 4_096;
const REPLAY_HELD_CHARS = 16 * 1024 * 1024;
/** What the client asks for unless told: every extension but history, which changes what join() and chat() carry. */
const DEFAULT_CAPS = CAPABILITIES.filter((c) => c !== 'history' && c !== 'actions');

function now(): number {
  return performance.timeOrigin + performance.now();
}

function toChatMessage(message: ParsedServerMessage, room: string): ChatMessage {
  const event: ChatMessage = {
    from: asString(message.from),
    msg: asString(message.msg),
    whisper: message.whisper === true,
    room,
  };
  if (typeof message.id === 'number') event.id = message.id;
  if (typeof message.at === 'number') event.at = message.at;
  if (message.action === true) event.action = true;
  return event;
}

function isNotRecovered(value: unknown): value is NotRecovered {
  return (
    value === 'epoch' ||
    value === 'ahead' ||
    value === 'deleted' ||
    value === 'too-many' ||
    value === 'off'
  );
}

/**
 * A connected, joined chat client. Works against confab and against the
 * course's Python server (which sends JSON objects with no delimiter).
 */
export class ChatClient extends EventEmitter<ChatEvents> {
  nickname: string;
  /** These four describe the current connection; a reconnect may change them. */
  serverAddress: [string, number];
  userCount: number;
  caps: readonly Capability[];
  /** What the server announced in "03"; undefined from the course server or an older confab. */
  limits: Limits | undefined;
  /** The server's message of the day, if its "03" had one (not on a resume). */
  motd: string | undefined;
  /** Capability "history": the token that takes this session back; each is used once. */
  resumeToken: string | undefined;
  private socket: net.Socket | undefined;
  private pending: Pending[] = [];
  private closed = false;
  /** exit() or destroy() was called: a lost connection is not reconnected. */
  private leaving = false;
  private closeError: ChatClientError | undefined;
  private closedPromise: Promise<void>;
  private resolveClosed: () => void = () => {};

  /** One request at a time: the server did not grant extensions (see pump). */
  private paced = false;
  /** Spaces requests to stay under the server's flood limit, when it announced one. */
  private pacer: SendPacer | undefined;
  private paceTimer: NodeJS.Timeout | undefined;
  private readonly outbox: Outgoing[] = [];
  private reportedWaiting = 0;
  private inFlight: string | undefined;
  /** Requests sent one at a time so far: tells a release timer whether its request is still the last. */
  private paceSent = 0;
  private sentAt = 0;
  private paceGap = PACE_GAP_MIN_MS;
  /** Frames that arrived before the caller could attach listeners. */
  private early: Uint8Array[] | undefined = [];
  /** pauseReading() was called, and resumeReading() not since: holds on a new connection too. */
  private readingPaused = false;

  /** Rooms this client is in, as the server shows their names. */
  private readonly joined = new Set<string>([LOBBY]);
  private readonly tracks = new Map<string, RoomTrack>();
  private readonly replays = new Map<string, Replay>();
  /** The latest "101" of each room, settled once its history has arrived. */
  private readonly roomReady = new Map<string, Promise<JoinedRoom>>();
  /** Chats sent and not yet acknowledged, in the order sent: re-sent after a reconnect. */
  private readonly unacked = new Map<string, Unacked>();
  private readonly cidPrefix = randomBytes(6).toString('base64url');
  private cidCounter = 0;

  /** Between a lost connection and the end of restore(): requests wait or are refused. */
  private restoring = false;
  private readonly reconnect: Required<ReconnectOptions> | undefined;
  private attemptsUsed = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  /** When the server was last heard (a frame read), for unheard(). */
  private heardAt = 0;
  /** When the current connection was restored (performance.now()), until it is lost. */
  private restoredAt: number | undefined;
  private wake: (() => void) | undefined;
  /** Rooms that got a "101" since the current connection opened, with what it said. */
  private readonly rejoined = new Map<string, JoinedRoom>();
  /** Whether the last "03" said the session was taken back. */
  private resumeWasTaken = false;
  /** The first CONNECT took back the session of the `resume` token it was given. */
  resumedAtConnect = false;
  /**
   * Resolves once the rooms the server put the first connection in with its welcome (the
   * lobby, rooms taken back) have come, with their history (true), or that connection was
   * lost first (false); true at once from a server without history. Never rejects.
   */
  welcomed: Promise<boolean> = Promise.resolve(true);
  /**
   * Until the fence sent after "03" is answered, a "101" is the server's own
   * (the lobby, rooms taken back), answering no JOIN_ROOM of ours.
   */
  private welcomeRooms = false;

  /** Which of `endpoints` the current connection (or the next attempt) is to. */
  private at = 0;

  private constructor(
    private readonly endpoints: readonly Endpoint[],
    private readonly askCaps: readonly Capability[],
    private readonly pace: boolean,
    nickname: string,
    reconnect: ConnectOptions['reconnect'],
  ) {
    super();
    this.nickname = nickname;
    this.serverAddress = ['', 0];
    this.userCount = 0;
    this.caps = [];
    this.closedPromise = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    if (reconnect !== undefined && reconnect !== false) {
      const r = reconnect === true ? {} : reconnect;
      this.reconnect = {
        attempts: r.attempts ?? 10,
        minDelayMs: r.minDelayMs ?? 250,
        maxDelayMs: r.maxDelayMs ?? 10_000,
      };
    }
  }

  private get endpoint(): Endpoint {
    return this.endpoints[this.at]!;
  }

  /** The server the client is connected to (or, while reconnecting, tries next). */
  get server(): ServerAddress {
    return { host: this.endpoint.host, port: this.endpoint.port };
  }

  /** Takes a connection that has just been welcomed ("03") as the current one. */
  private attach(socket: net.Socket, welcome: ParsedServerMessage): void {
    this.socket = socket;
    // The welcome, read by dial, is the first thing heard on it.
    this.heardAt = performance.now();
    // Its parts are shown as text, whatever they are; a hostile server's "03" without the
    // array ended `confab chat` as it printed its welcome (and left it running): the
    // address dialed stands in for it.
    this.serverAddress = Array.isArray(welcome.serverAddress)
      ? (welcome.serverAddress as [string, number])
      : [this.endpoint.host, this.endpoint.port];
    this.userCount = welcome.userCount as number;
    this.motd = typeof welcome.motd === 'string' && welcome.motd !== '' ? welcome.motd : undefined;
    this.caps = Array.isArray(welcome.caps) ? (welcome.caps as Capability[]) : [];
    this.paced = !Array.isArray(welcome.caps);
    this.limits = this.paced ? undefined : parseLimits(welcome.limits);
    this.pacer = this.pace ? pacerFor(this.limits, performance.now()) : undefined;
    this.inFlight = undefined;
    this.resumeToken = typeof welcome.resume === 'string' ? welcome.resume : undefined;
    if (welcome.resumed === true && typeof welcome.nickname === 'string')
      this.nickname = welcome.nickname;
    this.closeError = undefined;
    this.rejoined.clear();
    this.resumeWasTaken = welcome.resumed === true;
    this.welcomeRooms = this.caps.includes('history');
    if (this.readingPaused) socket.pause();
    socket.on('close', () => {
      if (this.early !== undefined) this.flushEarly();
      this.onSocketClose(socket);
    });
  }

  private flushEarly(): void {
    const early = this.early;
    if (early === undefined) return;
    this.early = undefined;
    for (const frame of early) this.onFrame(frame);
  }

  private take(frame: Uint8Array): void {
    this.heardAt = performance.now();
    if (this.early !== undefined) this.early.push(frame.slice());
    else this.onFrame(frame);
  }

  static async connect(options: ConnectOptions): Promise<ChatClient> {
    const tls = options.tls === true ? {} : options.tls === false ? undefined : options.tls;
    const timeoutMs = options.timeoutMs ?? 10_000;
    const servers =
      options.servers !== undefined && options.servers.length > 0
        ? options.servers
        : [{ host: options.host ?? '127.0.0.1', port: options.port ?? 20825 }];
    const endpoints = servers.map(({ host, port }): Endpoint => ({ host, port, tls, timeoutMs }));
    const asked = new Set<Capability>(options.caps ?? DEFAULT_CAPS);
    if (options.history === true) {
      asked.add('rooms');
      asked.add('history');
    }
    if (options.actions === true) asked.add('actions');
    const caps = CAPABILITIES.filter((c) => asked.has(c));
    const client = new ChatClient(
      endpoints,
      caps,
      options.pace ?? true,
      options.nickname,
      options.reconnect,
    );
    client.resumeToken = options.resume;
    for (;;) {
      try {
        await dial(client.endpoint, client.connectRequest(), (socket, welcome) => {
          client.attach(socket, welcome);
          // The caller's `await connect()` continues in a microtask, before this runs,
          // so messages that came with the welcome still reach its listeners.
          setImmediate(() => client.flushEarly());
          return (frame) => client.take(frame);
        });
        break;
      } catch (err) {
        // A nickname taken or a full lobby is the same on every node of a cluster.
        const last = client.at === endpoints.length - 1;
        if (last || !(err instanceof ChatClientError) || !unreachable(err)) throw err;
        client.at++;
      }
    }
    client.resumedAtConnect = client.resumeWasTaken;
    // The lobby's "101" and its history follow the welcome.
    if (client.hasHistory) {
      client.welcomed = client.fence().then(
        () => true,
        () => false,
      );
    }
    return client;
  }

  /** CONNECT, with what takes the session back after a lost connection. */
  private connectRequest(): ConnectRequest {
    const request: ConnectRequest = { cmd: Cmd.CONNECT, nickname: this.nickname };
    if (this.askCaps.length === 0) return request;
    request.caps = [...this.askCaps];
    if (this.resumeToken !== undefined) request.resume = this.resumeToken;
    const since = [...this.joined].flatMap((room) => {
      const track = this.tracks.get(room);
      return track === undefined ? [] : [{ room, epoch: track.epoch, id: track.id }];
    });
    if (since.length > 0) request.since = since.slice(0, 20);
    return request;
  }

  /** The member list of the lobby, or of a room you are in: [[nickname, ip, port], ...]. */
  async users(room?: string): Promise<UserEntry[]> {
    const reply = await this.call(
      room === undefined || room === LOBBY ? { cmd: Cmd.USERS } : { cmd: Cmd.USERS, room },
      room !== undefined && room !== LOBBY,
    );
    return reply.users as UserEntry[];
  }

  /** Whether the server granted rooms (confab does; the course server has one room). */
  get hasRooms(): boolean {
    return this.caps.includes('rooms');
  }

  /** Whether the server granted history (ids, acknowledgements, recovery). */
  get hasHistory(): boolean {
    return this.caps.includes('history');
  }

  /** The rooms this client is in, the lobby first. */
  get joinedRooms(): string[] {
    return [...this.joined];
  }

  /**
   * The rooms this client is in, the lobby first, each with the last message it has there
   * (with "history", once one came): what `join(room, since)` of a later session takes to
   * give what was missed in between.
   */
  get positions(): { room: string; since?: Position }[] {
    return [...this.joined].map((room) => {
      const track = this.tracks.get(room);
      return track === undefined ? { room } : { room, since: { epoch: track.epoch, id: track.id } };
    });
  }

  /**
   * Joins (or creates) a room; rejects with the server's error code when
   * refused. With "history" it resolves once the stored messages sent with
   * the join have arrived, in `history`: with `since` (a position from
   * `positions`, perhaps of an earlier session), those after it, and
   * `recovered` says whether that was all of them.
   */
  join(room: string, since?: Position): Promise<JoinedRoom> {
    return this.joinRoom(room, this.hasHistory ? since : undefined, false);
  }

  private async joinRoom(
    room: string,
    since: Position | undefined,
    internal: boolean,
  ): Promise<JoinedRoom> {
    const request: Request =
      since === undefined ? { cmd: Cmd.JOIN_ROOM, room } : { cmd: Cmd.JOIN_ROOM, room, since };
    const replied = this.request(request, true, internal);
    // Every history the server sends for the join comes before this reply.
    if (this.hasHistory) this.fence().catch(() => {});
    const reply = await replied;
    return (
      this.roomReady.get(asString(reply.room)) ??
      Promise.resolve(this.joinedFrom(reply, asString(reply.room)))
    );
  }

  /** Leaves a room (not the lobby: that is exit()); resolves with its name as shown. */
  async part(room: string): Promise<string> {
    const reply = await this.call({ cmd: Cmd.PART_ROOM, room }, true);
    return asString(reply.room);
  }

  /** Every room on the server, the lobby first. */
  async rooms(): Promise<RoomEntry[]> {
    const reply = await this.call({ cmd: Cmd.ROOMS }, true);
    return Array.isArray(reply.rooms) ? (reply.rooms as RoomEntry[]) : [];
  }

  /**
   * Older messages of a room you are in, oldest first: the `limit` (1-100,
   * default 50) newest below `before` (default: the oldest this client has).
   */
  async history(room: string, before?: number, limit?: number): Promise<HistoryPage> {
    if (!this.hasHistory)
      throw new ChatClientError('not-supported', 'this server keeps no history for this client');
    const from = before ?? this.oldestId(room);
    const request: Request = { cmd: Cmd.HISTORY, room };
    if (from !== undefined) request.before = from;
    if (limit !== undefined) request.limit = limit;
    const reply = await this.call(request, true);
    const shown = asString(reply.room);
    const messages = (Array.isArray(reply.messages) ? reply.messages : []).flatMap(
      (m: unknown): HistoryEntry[] => {
        if (typeof m !== 'object' || m === null) return [];
        const e = m as Record<string, unknown>;
        if (typeof e.id !== 'number') return [];
        const entry: HistoryEntry = {
          id: e.id,
          at: asNumber(e.at),
          from: asString(e.from),
          msg: asString(e.msg),
        };
        if (e.action === true) entry.action = true;
        return [entry];
      },
    );
    const track = this.tracks.get(shown);
    if (track !== undefined && track.epoch === reply.epoch) {
      for (const m of messages)
        if (track.oldest === undefined || m.id < track.oldest) track.oldest = m.id;
    }
    return { room: shown, epoch: asString(reply.epoch), messages, more: reply.more === true };
  }

  /** The oldest id this client has of a room (received, or loaded by history()). */
  oldestId(room: string): number | undefined {
    return this.tracks.get(room)?.oldest;
  }

  /** The last message this client has of a room ("history"): what a resume asks to continue from. */
  position(room: string): Position | undefined {
    const track = this.tracks.get(room);
    return track === undefined ? undefined : { epoch: track.epoch, id: track.id };
  }

  /** Chats sent and not yet acknowledged by the server. */
  get unacknowledged(): number {
    return this.unacked.size;
  }

  /**
   * Those chats, oldest first: after the close, what may never have reached anyone (with
   * history, the server stored none of them; without, it may have delivered some).
   */
  unacknowledgedChats(): { room: string; msg: string; action?: true }[] {
    return [...this.unacked.values()].map(({ room, msg, action }) =>
      action ? { room, msg, action } : { room, msg },
    );
  }

  async whisper(to: string, msg: string): Promise<void> {
    const reply = await this.call({ cmd: Cmd.WHISPER, to, msg });
    if (reply.cmd === Cmd.WHISPER_NO_SUCH_USER) {
      throw new ChatClientError('no-such-user', `there is no user "${to}"`);
    }
    if (reply.cmd === Cmd.WHISPER_MYSELF) {
      throw new ChatClientError('whisper-to-self', 'you cannot whisper to yourself');
    }
  }

  async rename(newNickname: string): Promise<string> {
    const reply = await this.call({ cmd: Cmd.RENAME, newNickname });
    if (reply.cmd === Cmd.RENAME_DUPLICATE_NICKNAME) {
      throw new ChatClientError('nickname-taken', `the nickname "${newNickname}" is taken`);
    }
    this.nickname = asString(reply.newNickname ?? newNickname);
    return this.nickname;
  }

  /** Round-trip time in milliseconds, measured by this client. */
  async rtt(): Promise<number> {
    const beginTime = now();
    const reply = await this.call({ cmd: Cmd.RTT, beginTime });
    return now() - asNumber(reply.beginTime);
  }

  async version(): Promise<string> {
    const reply = await this.call({ cmd: Cmd.VERSION });
    return asString(reply.serverVersion);
  }

  /** Becomes an operator; rejects with code 1010 for a wrong name or password. */
  async oper(name: string, password: string): Promise<string> {
    const reply = await this.call({ cmd: Cmd.OPER, name, password });
    return asString(reply.name);
  }

  /** Kicks a member; nothing answers success (the "99" and "30" tell everyone), a refusal comes as 'server-error'. */
  kick(nickname: string, reason?: string): void {
    this.send(reason ? { cmd: Cmd.KICK, nickname, reason } : { cmd: Cmd.KICK, nickname });
  }

  /**
   * Bans a nickname, address or CIDR block (for `seconds`, or until unbanned). Resolves with
   * the bans in force after it, and `unsaved` when the server could not keep the change past
   * its restart (its reason).
   */
  async ban(
    mask: string,
    seconds?: number,
    reason?: string,
  ): Promise<{ bans: BanEntry[]; unsaved: string | undefined }> {
    const request: Request = { cmd: Cmd.BAN, mask };
    if (seconds !== undefined) request.seconds = seconds;
    if (reason) request.reason = reason;
    const answer = await this.call(request);
    return { bans: banList(answer.bans), unsaved: unsavedOf(answer) };
  }

  /** The bans left, whether this lifted one (undefined: the server does not say), and `unsaved`. */
  async unban(
    mask: string,
  ): Promise<{ bans: BanEntry[]; removed: boolean | undefined; unsaved: string | undefined }> {
    const answer = await this.call({ cmd: Cmd.UNBAN, mask });
    const removed = typeof answer.removed === 'boolean' ? answer.removed : undefined;
    return { bans: banList(answer.bans), removed, unsaved: unsavedOf(answer) };
  }

  async bans(): Promise<BanEntry[]> {
    return banList((await this.call({ cmd: Cmd.BANS })).bans);
  }

  /**
   * Sends a chat message to the lobby or a room you are in; the protocol
   * sends nothing back to the sender (a refusal arrives as 'server-error').
   * With "history" it returns the message's `cid`: its "71" comes as
   * 'stored', and until then a reconnect sends it again, stored once.
   * While reconnecting, the message waits and goes out once connected.
   */
  chat(msg: string, room?: string, action = false): string | undefined {
    const target = room ?? LOBBY;
    if (target !== LOBBY) this.needRooms();
    if (action) this.needActions();
    if (this.closed) throw new ChatClientError('closed', 'the connection is closed');
    const cid = this.hasHistory ? `${this.cidPrefix}-${++this.cidCounter}` : undefined;
    const chat: Unacked = action ? { cid, room: target, msg, action } : { cid, room: target, msg };
    if (cid !== undefined || this.socket === undefined || this.restoring) {
      this.unacked.set(cid ?? `-${++this.cidCounter}`, chat);
    }
    if (this.socket !== undefined && !this.restoring) this.sendChat(chat);
    return cid;
  }

  private sendChat(chat: Unacked): void {
    const request: Request = { cmd: Cmd.CHAT, msg: chat.msg };
    if (chat.room !== LOBBY) request.room = chat.room;
    if (chat.cid !== undefined) request.cid = chat.cid;
    if (chat.action === true) request.action = true;
    this.enqueue({ request });
  }

  /** Whether the server takes actions (IRC's /me; confab does, the course server does not). */
  get hasActions(): boolean {
    return this.caps.includes('actions');
  }

  private needActions(): void {
    if (!this.hasActions)
      throw new ChatClientError('not-supported', 'this server does not take actions (/me)');
  }

  private needRooms(): void {
    if (!this.hasRooms)
      throw new ChatClientError('not-supported', 'this server does not support rooms');
  }

  /**
   * Leaves the room; resolves once the server has closed the connection.
   * Requests still waiting to be sent are dropped (their calls reject), so
   * leaving never waits behind a long paste.
   */
  async exit(): Promise<void> {
    this.leaving = true;
    if (!this.closed) {
      this.dropQueue(new ChatClientError('closed', 'left before it was sent'));
      const socket = this.socket;
      if (socket === undefined || this.restoring) {
        // Nothing to say goodbye on, or a session half taken back: just go.
        if (socket === undefined) this.finish(undefined);
        else socket.destroy();
      } else if (this.readingPaused) {
        // The server's close cannot be seen without reading, and what it still sends would
        // not be read: EXIT goes out, then the connection closes once it is written.
        socket.end(encodeRequest({ cmd: Cmd.EXIT }), () => socket.destroy());
      } else if (this.paced) {
        this.enqueue({ request: { cmd: Cmd.EXIT } });
      } else {
        // The server never counts EXIT against the flood limit.
        socket.write(encodeRequest({ cmd: Cmd.EXIT }));
      }
    }
    await this.closedPromise;
  }

  /** Resolves once every request queued so far has been sent (or the connection closed). */
  drained(): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (this.outbox.length > 0 && !this.closed) return;
        this.off('queue', check);
        this.off('close', check);
        resolve();
      };
      this.on('queue', check);
      this.on('close', check);
      check();
    });
  }

  /** Requests queued and not yet sent. */
  get waiting(): number {
    return this.outbox.length;
  }

  /**
   * Stops reading from the server until resumeReading(): for a caller that cannot pass on
   * what arrives as fast as it comes (`confab chat` writing to a pipe nobody reads). The
   * server's writes then wait (TCP), and confab cuts such a client off as a slow consumer
   * if it lasts, instead of the caller holding, without bound, what it has not passed on.
   * Replies wait too; exit() still leaves at once.
   */
  pauseReading(): void {
    this.readingPaused = true;
    this.socket?.pause();
  }

  resumeReading(): void {
    this.readingPaused = false;
    this.socket?.resume();
  }

  /** Drops the connection without saying goodbye (and without reconnecting). */
  destroy(): void {
    this.leaving = true;
    if (this.socket !== undefined) this.socket.destroy();
    else if (!this.closed) this.finish(undefined);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Whether a lost connection is being reconnected right now. */
  get isReconnecting(): boolean {
    return !this.closed && (this.socket === undefined || this.restoring);
  }

  /**
   * Sends any request, for callers (and tests) that need the raw protocol.
   * Requests go out in the order given, paced to the server's limits.
   */
  send(request: Request): void {
    if (this.closed) throw new ChatClientError('closed', 'the connection is closed');
    if (this.socket === undefined)
      throw new ChatClientError('reconnecting', 'the connection is being restored');
    this.enqueue({ request });
  }

  private enqueue(item: Outgoing): void {
    if (!this.paced && this.pacer === undefined) {
      this.write(item);
      return;
    }
    this.outbox.push(item);
    this.pump();
    this.reportQueue();
  }

  private write(item: Outgoing): void {
    const socket = this.socket;
    if (socket === undefined) {
      item.pending?.reject(new ChatClientError('reconnecting', 'the connection was lost'));
      return;
    }
    // Registered as it is written, so replies pair with calls in wire order.
    const pending = item.pending;
    if (pending !== undefined) {
      this.pending.push(pending);
      if (pending.probe === undefined) {
        setTimeout(() => this.probe(pending), PACE_UNANSWERED_MS).unref();
      } else {
        const at = performance.now();
        setTimeout(() => this.unheard(pending, socket, at), PROBE_DEADLINE_MS).unref();
      }
    }
    socket.write(encodeRequest(item.request));
  }

  /**
   * Replies carry no request id, and the server answers a connection's requests in order: a
   * reply of a kind answers the oldest call of that kind. A call whose reply never comes (a
   * reply over the frame limit, dropped; a hostile server) would take the next reply of its
   * kind, and every later call the one after its own. Once `stale` has waited
   * PACE_UNANSWERED_MS, an RTT goes out behind it; the RTT's reply (matched by its beginTime)
   * comes after any reply to the calls written before it, so those still waiting then were
   * never answered and end ('unanswered'). A reply that is only late (a stalled link) still
   * comes before the RTT's and goes to its own call: giving a reply to a later call once the
   * oldest had waited 10 s told `confab chat` the answer to one whisper for another.
   */
  private probe(stale: Pending): void {
    const at = this.pending.indexOf(stale);
    // Answered, or failed with the connection it was written on.
    if (at < 0 || this.closed || this.socket === undefined) return;
    // A probe written or waiting to be written after it asks the same.
    for (let i = at + 1; i < this.pending.length; i++) if (this.pending[i]!.probe) return;
    if (this.outbox.some((item) => item.pending?.probe)) return;
    this.request({ cmd: Cmd.RTT, beginTime: now() }, false, true, 'probe').catch(() => {});
  }

  /**
   * A probe still unanswered on the connection it was written on, `since` then: that
   * connection is dead if nothing at all came from the server meanwhile. Anything heard (a
   * history replay the probe's reply waits behind, on a slow link), or reading paused by
   * this client (which then hears nothing), keeps it, and the probe is looked at again later.
   */
  private unheard(probe: Pending, socket: net.Socket, since: number): void {
    if (socket !== this.socket || !this.pending.includes(probe)) return;
    if (this.heardAt > since || this.readingPaused) {
      const at = performance.now();
      setTimeout(() => this.unheard(probe, socket, at), PROBE_DEADLINE_MS).unref();
      return;
    }
    // Measured: a paced outbox writes the probe later than PACE_UNANSWERED_MS.
    // Rounded: a timer may fire a millisecond early, and 19.999 s is the 20 s it waited.
    const silent = Math.round((performance.now() - this.heardAt) / 1000);
    this.closeError = new ChatClientError('closed', `the server sent nothing for ${silent} s`);
    socket.destroy();
  }

  private reportQueue(): void {
    const waiting = this.outbox.length;
    if (waiting === this.reportedWaiting) return;
    this.reportedWaiting = waiting;
    this.emit('queue', { waiting });
  }

  private dropQueue(error: ChatClientError): void {
    clearTimeout(this.paceTimer);
    this.paceTimer = undefined;
    for (const item of this.outbox.splice(0)) item.pending?.reject(error);
    this.reportQueue();
  }

  private pump(): void {
    if (this.closed || this.socket === undefined) return;
    if (this.pacer !== undefined) this.pumpPaced(this.pacer, this.socket);
    else this.pumpOneAtATime();
  }

  /**
   * Against confab's flood control: send as many as the client-side bucket
   * allows now, then sleep until the next token. The bucket counts every
   * request, replies-requests too, because the server does.
   */
  private pumpPaced(pacer: SendPacer, socket: net.Socket): void {
    if (this.paceTimer !== undefined) return;
    socket.cork();
    try {
      while (this.outbox.length > 0) {
        const at = performance.now();
        const rooms = roomsByNow(this.joined.size, this.pending);
        const cost = requestCost(this.outbox[0]!.request, rooms);
        const wait = pacer.delay(at, cost);
        if (wait > 0) {
          const due = at + wait;
          this.paceTimer = setTimeout(() => {
            this.paceTimer = undefined;
            // Woken late (a stalled event loop): no burst of what refilled meanwhile.
            pacer.wake(due, performance.now());
            this.pump();
            this.reportQueue();
          }, wait);
          return;
        }
        pacer.take(at, cost);
        this.write(this.outbox.shift()!);
      }
    } finally {
      socket.uncork();
    }
  }

  /**
   * The course server reads each request with one recv() and fails on two in
   * one read, so against a server that granted no extensions requests go one
   * at a time: the next after the reply, or after a short gap if none comes.
   */
  private pumpOneAtATime(): void {
    if (this.inFlight !== undefined) return;
    const item = this.outbox.shift();
    if (item === undefined) return;
    const request = item.request;
    this.write(item);
    this.inFlight = request.cmd;
    this.sentAt = performance.now();
    const sent = ++this.paceSent;
    const wait = REPLY_CODES[request.cmd] === undefined ? this.paceGap : PACE_UNANSWERED_MS;
    setTimeout(() => {
      // Only for this request: a later one of the same kind may be in flight by now.
      if (this.paceSent === sent) this.release(request.cmd, false);
    }, wait).unref();
  }

  private release(cmd: string, answered: boolean): void {
    if (this.inFlight !== cmd) return;
    if (answered) {
      const roundTrip = performance.now() - this.sentAt;
      this.paceGap = Math.min(PACE_GAP_MAX_MS, Math.max(PACE_GAP_MIN_MS, 2 * roundTrip));
    }
    this.inFlight = undefined;
    this.pump();
    this.reportQueue();
  }

  /** Sends a request and resolves with its reply, in order with other calls. */
  call(request: Request, needsRooms = false): Promise<ParsedServerMessage> {
    return this.request(request, needsRooms, false);
  }

  private request(
    request: Request,
    needsRooms: boolean,
    internal: boolean,
    mark?: 'fence' | 'probe',
  ): Promise<ParsedServerMessage> {
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(this.closeError ?? new ChatClientError('closed', 'the connection is closed'));
        return;
      }
      if (this.socket === undefined || (this.restoring && !internal)) {
        reject(new ChatClientError('reconnecting', 'the connection is being restored'));
        return;
      }
      if (needsRooms && !this.hasRooms) {
        reject(new ChatClientError('not-supported', 'this server does not support rooms'));
        return;
      }
      const pending: Pending = { cmd: request.cmd, resolve, reject };
      if (mark === 'fence') pending.fence = true;
      if (mark === 'probe') pending.probe = true;
      if (request.cmd === Cmd.RTT) pending.beginTime = request.beginTime;
      this.enqueue({ request, pending });
    });
  }

  /**
   * A request whose reply comes after everything the server sent for the
   * requests before it: the history that follows a "101" ends there even
   * when the room stored nothing to send.
   */
  private fence(): Promise<ParsedServerMessage> {
    return this.request({ cmd: Cmd.RTT, beginTime: now() }, false, true, 'fence');
  }

  private onFrame(frame: Uint8Array): void {
    const message = parseServerText(utf8.decode(frame));
    if (message === undefined) return;
    this.emit('message', message);
    const cmd = message.cmd;
    const room = typeof message.room === 'string' ? message.room : LOBBY;
    switch (cmd) {
      case Cmd.CHAT_RESPONSE:
        this.onChat(message, room);
        return;
      case Cmd.CHAT_STORED:
        this.onStored(message, room);
        return;
      case Cmd.NEW_USER_ENTERS:
        this.emit('join', {
          nickname: asString(message.nickname),
          userCount: asNumber(message.userCount),
          room,
        });
        return;
      case Cmd.EXIT_BROADCAST:
        this.emit('leave', {
          nickname: asString(message.nickname),
          userCount: asNumber(message.userCount),
          room,
        });
        return;
      case Cmd.USER_RENAMED:
        this.emit('rename', {
          oldNickname: asString(message.oldNickname),
          newNickname: asString(message.newNickname),
          room,
        });
        return;
      case Cmd.MODERATION_NOTICE: {
        const notice = {
          action: message.action === 'ban' ? ('ban' as const) : ('kick' as const),
          nickname: asString(message.nickname),
          by: asString(message.by),
          reason: serverText(message.reason ?? ''),
        };
        this.emit(
          'moderation',
          typeof message.seconds === 'number' ? { ...notice, seconds: message.seconds } : notice,
        );
        return;
      }
      case Cmd.ERROR:
        this.onError(message);
        return;
      case Cmd.HISTORY_GAP:
        this.onGap(message, room);
        return;
      case Cmd.JOIN_ROOM_SUCCESS:
        // Past the bound only the reply to a join asked for: a server may allow more rooms
        // (confab's --max-rooms-per-client goes to 1,000,000), and a made-up one gets in
        // only in place of such a reply, one per join.
        if (!this.joined.has(room) && this.joined.size >= ROOMS_MAX && !this.joinAsked()) return;
        this.onJoined(message, room);
        if (this.welcomeRooms) return;
        break;
      case Cmd.PART_ROOM_SUCCESS: {
        this.joined.delete(room);
        this.tracks.delete(room);
        this.roomReady.delete(room);
        // Kept otherwise until the next connection (rejoined) or fence (replays): a server
        // joining and leaving room after room grew them past ROOMS_MAX without end. A join
        // still waiting for the replay hears it is over.
        this.rejoined.delete(room);
        const replay = this.replays.get(room);
        replay?.done(replay.joined);
        this.replays.delete(room);
        break;
      }
    }
    const exact =
      cmd === Cmd.RTT_RESPONSE
        ? this.pending.findIndex(
            (p) => p.beginTime !== undefined && p.beginTime === message.beginTime,
          )
        : -1;
    // Otherwise the oldest call of its kind: the server answers in order, and calls it never
    // answered are ended by probe() before a later reply of their kind comes.
    const index =
      exact >= 0 ? exact : this.pending.findIndex((p) => REPLY_CODES[p.cmd]?.includes(cmd));
    if (index < 0) return;
    const [answered] = this.pending.splice(index, 1);
    if (answered!.probe) {
      // Every call written before it that is still waiting was never answered (see probe()).
      const lost = new ChatClientError('unanswered', 'the server did not answer');
      for (const p of this.pending.splice(0, index)) p.reject(lost);
    }
    if (this.paced) this.release(answered!.cmd, true);
    // Now, not in the caller's continuation: a "101" later in this read opens a new replay.
    if (answered!.fence) {
      this.welcomeRooms = false;
      for (const r of [...this.replays.keys()]) this.endReplay(r);
    }
    answered!.resolve(message);
  }

  private joinedFrom(message: ParsedServerMessage, room: string): JoinedRoom {
    const joined: JoinedRoom = {
      room,
      // asString, not String: String({"toString": ""}) throws, and did so in the socket's
      // data handler, an uncaught exception that ended the process.
      members: Array.isArray(message.members) ? message.members.map((m) => asString(m)) : [],
      userCount: asNumber(message.userCount),
      history: [],
    };
    if (typeof message.epoch === 'string') joined.epoch = message.epoch;
    if (typeof message.top === 'number') joined.top = message.top;
    if (typeof message.recovered === 'boolean') joined.recovered = message.recovered;
    if (isNotRecovered(message.reason)) joined.reason = message.reason;
    return joined;
  }

  private onJoined(message: ParsedServerMessage, room: string): void {
    this.joined.add(room);
    const joined = this.joinedFrom(message, room);
    this.rejoined.set(room, joined);
    const origin = this.restoring ? 'resume' : this.welcomeRooms ? 'connect' : 'join';
    let done: (joined: JoinedRoom) => void = () => {};
    this.roomReady.set(
      room,
      new Promise((resolve) => {
        done = resolve;
      }),
    );
    this.replays.get(room)?.done(this.replays.get(room)!.joined);
    this.replays.delete(room);
    const { epoch, top } = joined;
    if (epoch === undefined || top === undefined) {
      this.emit('room', { ...joined, origin });
      done(joined);
      return;
    }
    let track = this.tracks.get(room);
    if (track === undefined || track.epoch !== epoch) {
      track = { epoch, id: 0, seen: new Set(), oldest: undefined };
      this.tracks.set(room, track);
    } else if (joined.recovered !== true) {
      // Not a continuation: the position restarts from what follows (an 'ahead'
      // client must not keep asking from beyond the server's top).
      track.id = 0;
    }
    this.replays.set(room, { joined, top, origin, done, heldChars: 0 });
  }

  /** The history of a "101" is complete: its position reaches `top`, and waiters hear of it. */
  private endReplay(room: string): void {
    const replay = this.replays.get(room);
    if (replay === undefined) return;
    this.replays.delete(room);
    const track = this.tracks.get(room);
    if (track !== undefined && track.epoch === replay.joined.epoch)
      track.id = Math.max(track.id, replay.top);
    this.emit('room', { ...replay.joined, origin: replay.origin });
    replay.done(replay.joined);
  }

  /** Records a (room, id) as received; false if it was already. */
  private see(room: string, id: number): boolean {
    const track = this.tracks.get(room);
    if (track === undefined) return true;
    if (track.seen.has(id)) return false;
    track.seen.add(id);
    if (track.seen.size > SEEN_LIMIT) {
      const first = track.seen.values().next().value;
      if (first !== undefined) track.seen.delete(first);
    }
    if (id > track.id) track.id = id;
    if (track.oldest === undefined || id < track.oldest) track.oldest = id;
    return true;
  }

  private onGap(message: ParsedServerMessage, room: string): void {
    const epoch = typeof message.epoch === 'string' ? message.epoch : undefined;
    const reason = message.reason === 'deleted' ? ('deleted' as const) : ('epoch' as const);
    if (epoch === undefined) return;
    const track = this.tracks.get(room);
    // The new epoch numbers from 1 again: ids seen under the old one must not hide them.
    if (track !== undefined && track.epoch !== epoch) {
      this.tracks.set(room, { epoch, id: 0, seen: new Set(), oldest: undefined });
    }
    this.emit('gap', { room, epoch, reason });
  }

  private onChat(message: ParsedServerMessage, room: string): void {
    const event = toChatMessage(message, room);
    const id = event.id;
    if (id === undefined || event.whisper || typeof message.room !== 'string') {
      this.emit('chat', event);
      return;
    }
    if (!this.see(room, id)) return;
    const replay = this.replays.get(room);
    if (replay !== undefined && id <= replay.top) {
      if (replay.joined.recovered === true) {
        event.recovered = true;
        if (!this.ownUnacked(event)) this.emit('chat', event);
      } else {
        replay.joined.history.push(event);
        replay.heldChars += event.msg.length + event.from.length;
      }
      if (
        id >= replay.top ||
        replay.joined.history.length >= REPLAY_HELD_MAX ||
        replay.heldChars >= REPLAY_HELD_CHARS
      )
        this.endReplay(room);
      return;
    }
    // Live traffic comes after the history: whatever was replayed is complete.
    if (replay !== undefined) this.endReplay(room);
    this.emit('chat', event);
  }

  /**
   * Whether a replayed message is one of ours whose "71" was lost with the
   * connection: the user saw it when sending it. It is still re-sent with its
   * cid, which the server acknowledges as a duplicate.
   */
  private ownUnacked(event: ChatMessage): boolean {
    if (event.from !== this.nickname) return false;
    for (const chat of this.unacked.values()) {
      if (chat.replayed || chat.room !== event.room || chat.msg !== event.msg) continue;
      chat.replayed = true;
      return true;
    }
    return false;
  }

  private onStored(message: ParsedServerMessage, room: string): void {
    const id = asNumber(message.id);
    const cid = typeof message.cid === 'string' ? message.cid : undefined;
    if (cid !== undefined) this.unacked.delete(cid);
    // Our own message is part of the room: a replay must not bring it back.
    if (Number.isInteger(id)) this.see(room, id);
    const stored: ChatEvents['stored'][0] = {
      room,
      id,
      at: asNumber(message.at),
      duplicate: message.duplicate === true,
    };
    if (cid !== undefined) stored.cid = cid;
    this.emit('stored', stored);
  }

  /** Whether a "101" now answers a JOIN this client sent (not one of a resume's rooms). */
  private joinAsked(): boolean {
    return !this.welcomeRooms && this.pending.some((p) => p.cmd === Cmd.JOIN_ROOM);
  }

  private onError(message: ParsedServerMessage): void {
    const code = asNumber(message.code);
    const text = serverText(message.message ?? 'error');
    const ref = typeof message.ref === 'string' ? message.ref : undefined;
    const index = ref === undefined ? -1 : this.pending.findIndex((p) => p.cmd === ref);
    if (index >= 0) {
      const room = typeof message.room === 'string' ? { room: message.room } : undefined;
      this.pending
        .splice(index, 1)[0]!
        .reject(new ChatClientError('server-error', text, code, room));
      return;
    }
    // A refused chat is not stored: re-sending it after a reconnect would be refused again.
    if (ref === Cmd.CHAT && code < 2000 && this.hasHistory) {
      const first = this.unacked.keys().next().value;
      if (first !== undefined) this.unacked.delete(first);
    }
    if (code >= 2000) this.closeError = new ChatClientError('server-error', text, code);
    this.emit(
      'server-error',
      ref === undefined ? { code, message: text } : { code, message: text, ref },
    );
  }

  private onSocketClose(socket: net.Socket): void {
    if (socket !== this.socket) return;
    this.socket = undefined;
    const error =
      this.closeError ?? new ChatClientError('closed', 'the server closed the connection');
    // A server without "errors" (the course server) closes silently for a
    // banned word too: only one that explains its closes is reconnected.
    const lost =
      this.reconnect !== undefined &&
      !this.leaving &&
      !this.closed &&
      this.caps.includes('errors') &&
      this.mayReconnect
        ? new ChatClientError('reconnecting', 'the connection was lost')
        : error;
    for (const p of this.pending.splice(0)) p.reject(lost);
    this.dropQueue(lost);
    for (const room of [...this.replays.keys()]) this.endReplay(room);
    if (lost === error) {
      this.finish(this.closeError);
      return;
    }
    if (!this.hasHistory) {
      // Without acknowledgements, a chat already written may or may not have arrived.
      for (const [key, chat] of this.unacked) if (chat.cid === undefined) this.unacked.delete(key);
    }
    this.restoring = true;
    void this.reconnectLoop(error);
  }

  private finish(error: ChatClientError | undefined): void {
    if (this.closed) return;
    this.closed = true;
    this.restoring = false;
    clearTimeout(this.retryTimer);
    this.wake?.();
    if (error !== undefined) this.closeError = error;
    for (const p of this.pending.splice(0))
      p.reject(error ?? new ChatClientError('closed', 'the connection is closed'));
    this.dropQueue(error ?? new ChatClientError('closed', 'the connection is closed'));
    this.emit('close', error === undefined ? {} : { error });
    this.resolveClosed();
  }

  private async reconnectLoop(cause: ChatClientError): Promise<void> {
    const policy = this.reconnect!;
    // Only a connection that lasted starts the waits again from the shortest (see there).
    if (
      this.restoredAt !== undefined &&
      performance.now() - this.restoredAt >= RECONNECT_STABLE_MS
    ) {
      this.attemptsUsed = 0;
    }
    this.restoredAt = undefined;
    const rooms = [...this.joined];
    let last = cause;
    while (this.attemptsUsed < policy.attempts) {
      const attempt = ++this.attemptsUsed;
      const base = Math.min(policy.maxDelayMs, policy.minDelayMs * 2 ** (attempt - 1));
      // Jitter, so that clients cut off together do not come back together.
      const delayMs = Math.round(base * (0.5 + Math.random() / 2));
      this.emit('reconnecting', {
        attempt,
        attempts: policy.attempts,
        delayMs,
        error: last,
        attemptFailed: last !== cause,
      });
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        this.retryTimer = setTimeout(resolve, delayMs);
      });
      this.wake = undefined;
      if (this.leaving || this.closed) return this.finish(undefined);
      // The server lost may be down: each attempt tries the next (the same one if alone).
      this.at = (this.at + 1) % this.endpoints.length;
      try {
        await dial(this.endpoint, this.connectRequest(), (socket, welcome) => {
          this.attach(socket, welcome);
          this.emit('session', { resumeToken: this.resumeToken, nickname: this.nickname });
          return (frame) => this.onFrame(frame);
        });
      } catch (err) {
        const error =
          err instanceof ChatClientError ? err : new ChatClientError('closed', asString(err));
        if (!retryable(error)) return this.finish(error);
        last = error;
        continue;
      }
      if (this.leaving) {
        this.socket?.destroy();
        return;
      }
      try {
        await this.restore(rooms);
      } catch {
        // The new connection was lost too; its close started the next round.
      }
      return;
    }
    this.finish(
      new ChatClientError(
        'closed',
        `could not reconnect after ${policy.attempts} attempts: ${last.message}`,
        last.code,
        { cause: last },
      ),
    );
  }

  /** On a new connection: rooms back, what was missed replayed, unacknowledged chats re-sent. */
  private async restore(rooms: string[]): Promise<void> {
    const resumed = this.resumeWasTaken;
    if (this.hasHistory) await this.fence();
    const report: RoomRecovery[] = [];
    for (const room of rooms) {
      let joined = this.rejoined.get(room);
      if (joined === undefined && room !== LOBBY) {
        if (!this.hasRooms) {
          report.push({
            room,
            recovered: false,
            reason: 'off',
            lost: new ChatClientError('not-supported', 'this server does not support rooms'),
          });
          this.forget(room);
          continue;
        }
        const track = this.tracks.get(room);
        try {
          joined = await this.joinRoom(
            room,
            track === undefined ? undefined : { epoch: track.epoch, id: track.id },
            true,
          );
        } catch (err) {
          if (!(err instanceof ChatClientError) || err.kind === 'reconnecting') throw err;
          report.push({ room, recovered: false, lost: err });
          this.forget(room);
          continue;
        }
      }
      if (!this.hasHistory || joined?.epoch === undefined) {
        report.push({ room, recovered: false, reason: 'off' });
      } else if (joined.recovered === false) {
        const entry: RoomRecovery = { room, recovered: false };
        if (joined.reason !== undefined) entry.reason = joined.reason;
        report.push(entry);
      } else {
        report.push({ room, recovered: true });
      }
    }
    this.restoring = false;
    this.restoredAt = performance.now();
    // Chats to a room no longer joined cannot be re-sent: given up, and said so with the room.
    for (const [key, chat] of [...this.unacked]) {
      if (this.joined.has(chat.room)) continue;
      this.unacked.delete(key);
      const entry = report.find((r) => r.room === chat.room && r.lost !== undefined);
      if (entry === undefined) continue;
      entry.unsent ??= [];
      entry.unsent.push(chat.action ? { msg: chat.msg, action: true } : { msg: chat.msg });
    }
    this.emit('resumed', { resumed, nickname: this.nickname, rooms: report });
    for (const [key, chat] of [...this.unacked]) {
      if (chat.cid === undefined) this.unacked.delete(key);
      this.sendChat(chat);
    }
  }

  private forget(room: string): void {
    this.joined.delete(room);
    this.tracks.delete(room);
    this.roomReady.delete(room);
  }

  /** Whether the last disconnect reason invites an automatic reconnect. */
  get mayReconnect(): boolean {
    return this.closeError?.code === undefined || mayReconnect(this.closeError.code);
  }
}

/** A "98"'s `unsaved`: why the server could not keep the change past a restart, if it says. */
function unsavedOf(answer: ParsedServerMessage): string | undefined {
  return typeof answer.unsaved === 'string' ? serverText(answer.unsaved) : undefined;
}

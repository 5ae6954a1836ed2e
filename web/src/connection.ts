import { CAPABILITIES } from '../../src/protocol/capabilities.js';
import {
  Cmd,
  ErrorCode,
  LOBBY,
  mayReconnect,
  RECONNECT_STABLE_MS,
} from '../../src/protocol/codes.js';
import { asNumber, asString } from '../../src/protocol/coerce.js';
import {
  type ParsedServerMessage,
  parseServerText,
  REPLY_CODES,
} from '../../src/protocol/message-codec.js';
import type { ConnectRequest, Request } from '../../src/protocol/messages.js';
import {
  pacerFor,
  parseLimits,
  requestCost,
  roomsByNow,
  type SendPacer,
} from '../../src/protocol/pacing.js';
import { ResumeState, type UnackedChat } from './resume.js';
import type { SavedSession } from './saved-session.js';

export type Status = 'offline' | 'connecting' | 'online' | 'reconnecting';

export interface Handlers {
  status(status: Status, detail?: string): void;
  /** `resumed`: the server took the old session back (nobody saw a leave or a join). */
  joined(info: {
    nickname: string;
    userCount: number;
    rejoined: boolean;
    resumed: boolean;
    /** The server's message of the day, if its "03" had one. */
    motd: string | undefined;
  }): void;
  /**
   * Joining failed for a reason the user must fix (taken name, full room). `lostNickname`:
   * the page's own nickname, taken by someone else while it was reconnecting (or reloading);
   * `taken`: a name refused as taken at a first join.
   */
  refused(reason: string, lostNickname?: string, taken?: string): void;
  message(message: ParsedServerMessage): void;
  /** Requests waiting to be sent, paced to the server's flood limit; called when it changes. */
  queued(waiting: number, dropped: number): void;
  /** A chat sent with `chat()` was refused ("90"); it will not be sent again. */
  chatRefused(chat: UnackedChat, reason: string): void;
  /**
   * A chat held a banned word; the server disconnects for it. `chat` is the one refused
   * when the server keeps history (cids tell); without, the page knows best what it sent last.
   */
  chatBanned(chat: UnackedChat | undefined): void;
  /** A room could not be joined again after reconnecting; the client is no longer in it. */
  roomLost(room: string, reason: string): void;
  /** What a page reload needs to come back as the same user; undefined once the user left. */
  save(session: SavedSession | undefined): void;
  /** The rooms the page is in, the lobby included: what a RENAME costs (requestCost). */
  rooms(): number;
}

export class RequestError extends Error {
  constructor(
    readonly reply: string,
    message: string,
    /** A "90"'s code and the room it names (1016: the room joined already, by its name). */
    readonly code?: number,
    readonly room?: string,
  ) {
    super(message);
  }
}

interface Pending {
  cmd: string;
  resolve: (m: ParsedServerMessage) => void;
  reject: (e: Error) => void;
  /** Its place among the requests written on this connection (`writes`). */
  seq?: number;
}

/** A request waiting its turn, with the call awaiting its reply if any. */
interface Outgoing {
  request: Request;
  pending?: Pending;
  /** A chat that is sent again after a reconnect until acknowledged. */
  chat?: UnackedChat;
  /** Asked by the page itself, not typed: not one of the user's lines if dropped. */
  quiet?: boolean;
}

const MAX_BACKOFF_MS = 15_000;
/** How long Join pressed again waits on a CONNECT already sent, rather than send another. */
const ASK_PATIENCE_MS = 5_000;

/**
 * One chat session over WebSocket, speaking confab's JSON with every
 * extension. Reconnects with backoff and rejoins under the same nickname
 * until the user leaves or the server says not to. With "history" granted a
 * reconnect takes the session back (resume token), replays what each room
 * missed (since) and sends unacknowledged chats again (cid).
 */
export class Connection {
  nickname = '';
  /** What the server granted in the latest "03". */
  caps: ReadonlySet<string> = new Set();
  readonly resume = new ResumeState(randomId());
  /** Counts sockets, so a chat knows which connection it was written on. */
  private generation = 0;
  private ws: WebSocket | undefined;
  /** The socket whose CONNECT is sent and not yet answered, and since when. */
  private asking: WebSocket | undefined;
  private askedAt = 0;
  private pending: Pending[] = [];
  private wanted = false;
  private everJoined = false;
  /** Whether the nickname is one this page had (a reload restoring its session), not one typed. */
  private ownNickname = false;
  private attempt = 0;
  /** When the current connection was joined (performance.now()), until it is lost. */
  private joinedAt: number | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private fatal: string | undefined;
  /** The last attempt was answered "02" (full or busy) on the way back: the retry says so. */
  private busy = false;
  /** The longest message the server takes, in characters, as its "03" said (if it did). */
  maxMessage: number | undefined;
  /** Set from the limits in "03"; requests then wait their turn in `outbox`. */
  private pacer: SendPacer | undefined;
  private paceTimer: ReturnType<typeof setTimeout> | undefined;
  private outbox: Outgoing[] = [];
  /** Requests written so far, numbering each: a refusal that names none is told by order. */
  private writes = 0;
  private readonly chatSeq = new WeakMap<UnackedChat, number>();
  /**
   * Rooms whose "101" follows "03" unasked (the lobby; a resume's rooms): not the answer to a
   * JOIN written meanwhile, as restore's are after a new session. They all come before the
   * answer to the first call written after "03", which ends the list: the page asks USERS or
   * VERSION at once (main.ts, `joined`). A JOIN of a room not in the list is answered
   * whatever came first.
   */
  private welcome = new Set<string>();

  constructor(
    private readonly url: string,
    private readonly on: Handlers,
  ) {}

  /**
   * Joins as a new session; `restore` comes from a page reload (see SavedSession), and
   * `returning` says the nickname was this user's already (its loss is told as such).
   */
  join(
    nickname: string,
    restore?: { resume?: string; rooms?: string[] },
    returning = restore !== undefined,
  ): void {
    // Join pressed again while the server answers the same CONNECT: a second one on a new
    // socket could reach the server before the first's close, and meet the nickname taken.
    // Not for long: an answer that does not come is given up on by pressing again.
    if (
      this.asking !== undefined &&
      this.asking === this.ws &&
      nickname === this.nickname &&
      performance.now() - this.askedAt < ASK_PATIENCE_MS
    ) {
      return;
    }
    // A pending retry or an attempt still in flight would join a second time
    // and then meet its own nickname as taken.
    this.cancelRetry();
    const previous = this.ws;
    this.ws = undefined;
    this.dropQueue();
    this.pacer = undefined;
    previous?.close();
    this.nickname = nickname;
    this.resume.reset(
      restore?.resume,
      restore?.rooms?.filter((r) => r !== LOBBY),
    );
    this.wanted = true;
    this.everJoined = false;
    this.ownNickname = returning;
    this.attempt = 0;
    this.open();
  }

  leave(): void {
    this.wanted = false;
    this.cancelRetry();
    // Leaving never waits behind a backlog; EXIT does not count against the limit.
    this.dropQueue();
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ cmd: Cmd.EXIT }));
    else this.ws?.close();
    this.forget();
    this.on.status('offline');
  }

  /** The session is over: nothing is resumed or re-sent, nor kept for a reload or a new tab. */
  private forget(): void {
    this.resume.reset();
    this.on.save(undefined);
  }

  /** True while waiting out the backoff before the next attempt. */
  get retryPending(): boolean {
    return this.timer !== undefined;
  }

  /** Skips the rest of the backoff and tries at once; does nothing unless a retry is pending. */
  retryNow(): void {
    if (!this.retryPending || !this.wanted) return;
    this.cancelRetry();
    this.open();
  }

  private cancelRetry(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private open(): void {
    this.fatal = undefined;
    this.on.status(this.everJoined ? 'reconnecting' : 'connecting');
    const ws = new WebSocket(this.url);
    this.ws = ws;
    this.generation++;
    let joined = false;
    ws.onopen = () => {
      const connect: ConnectRequest = {
        cmd: Cmd.CONNECT,
        nickname: this.nickname,
        caps: [...CAPABILITIES],
      };
      if (this.resume.token !== undefined) connect.resume = this.resume.token;
      const since = this.resume.since();
      if (since.length > 0) connect.since = since;
      ws.send(JSON.stringify(connect));
      this.asking = ws;
      this.askedAt = performance.now();
    };
    ws.onmessage = (event: MessageEvent<string>) => {
      // A socket given up on (a half-open one) may still deliver: the new one replays that.
      if (this.ws !== ws) return;
      const message = parseServerText(event.data);
      if (message === undefined) return;
      if (!joined) {
        if (this.asking === ws) this.asking = undefined;
        if (message.cmd === Cmd.CONNECT_SUCCESS) {
          joined = true;
          const limits = parseLimits(message.limits);
          this.pacer = pacerFor(limits, performance.now());
          this.maxMessage = limits?.maxMessage;
          this.joinedAt = performance.now();
          const rejoined = this.everJoined;
          this.everJoined = true;
          // asString, not String: String({"toString": ""}) throws, which stopped here with
          // the page left on "Connecting…" for good, and the socket open.
          this.caps = new Set(
            Array.isArray(message.caps) ? message.caps.map((c) => asString(c)) : [],
          );
          const resumed = this.history && message.resumed === true;
          this.welcome = new Set([LOBBY, ...(resumed ? this.resume.joined() : [])]);
          if (this.history) {
            this.resume.token = typeof message.resume === 'string' ? message.resume : undefined;
            if (resumed && typeof message.nickname === 'string') this.nickname = message.nickname;
          }
          this.on.status('online');
          this.on.joined({
            nickname: this.nickname,
            userCount: asNumber(message.userCount),
            rejoined,
            resumed,
            motd:
              typeof message.motd === 'string' && message.motd !== '' ? message.motd : undefined,
          });
          this.restore(resumed);
          this.saveSession();
        } else if (message.cmd === Cmd.CONNECT_DUPLICATE_NICKNAME) {
          const lost = this.everJoined || this.ownNickname;
          this.refuse(
            `The nickname “${this.nickname}” is taken. Try another one.`,
            lost ? this.nickname : undefined,
            lost ? undefined : this.nickname,
          );
        } else if (message.cmd === Cmd.CONNECT_CHATROOM_FULL) {
          // Coming back (or a reload restoring its session), a full lobby or a server that has
          // had too many CONNECTs from this address lately (after its restart, say) passes:
          // tried again as after a cut, keeping the session to resume.
          if (this.everJoined || this.ownNickname) {
            this.busy = true;
            ws.close();
            return;
          }
          this.refuse('The room is full. Try again in a moment.');
        } else if (message.cmd === Cmd.ERROR) {
          // Refused for good (banned meanwhile, a name no server takes), not for a moment
          // (3xxx): no tab is to come back as this session again.
          if (!mayReconnect(asNumber(message.code))) this.forget();
          this.refuse(asString(message.message ?? 'The server refused.'));
        }
        return;
      }
      this.dispatch(message);
    };
    ws.onclose = () => this.lost(ws);
  }

  /**
   * Gives the open socket up as on a dead network: nothing came back for a long while (a
   * half-open connection after a Wi-Fi change or a laptop's sleep, where no close ever
   * comes). It reconnects, and the resume replays what the old socket may still deliver.
   */
  abandon(): void {
    const ws = this.ws;
    if (ws === undefined) return;
    ws.onclose = null;
    try {
      ws.close();
    } catch {
      // Already closing: it is given up all the same.
    }
    this.lost(ws);
  }

  private lost(ws: WebSocket): void {
    if (this.asking === ws) this.asking = undefined;
    if (this.ws !== ws) return;
    this.ws = undefined;
    this.dropQueue();
    this.pacer = undefined;
    for (const p of this.pending.splice(0)) p.reject(new RequestError('closed', 'disconnected'));
    if (!this.wanted) return;
    const busy = this.busy;
    this.busy = false;
    if (this.fatal !== undefined || !this.everJoined) {
      // Never joined (server down, name taken) or told not to come back.
      if (!this.everJoined && this.fatal === undefined) {
        this.scheduleRetry(busy ? 'The server is full or busy.' : 'Cannot reach the server.');
        return;
      }
      this.wanted = false;
      // Ended by the server (taken over, kicked, banned): nothing to come back as.
      if (this.fatal !== undefined) this.forget();
      this.on.status('offline', this.fatal);
      return;
    }
    this.scheduleRetry(busy ? 'The server is full or busy.' : 'Connection lost.');
  }

  /** True when the server keeps history for this client (granted with rooms). */
  get history(): boolean {
    return this.caps.has('history') && this.caps.has('rooms');
  }

  /**
   * After "03": a session not taken back joins its rooms again, from where it
   * left each; then the chats never acknowledged go out again with their cid,
   * after the joins, since the server handles requests in order.
   */
  private restore(resumed: boolean): void {
    if (!this.caps.has('rooms')) return;
    if (!resumed) {
      for (const room of this.resume.joined()) {
        if (room === LOBBY) continue;
        const since = this.resume.position(room);
        this.call(
          since === undefined ? { cmd: Cmd.JOIN_ROOM, room } : { cmd: Cmd.JOIN_ROOM, room, since },
          true,
        ).catch((err: unknown) => {
          if (!(err instanceof RequestError) || err.reply === 'closed') return;
          this.resume.left(room);
          this.saveSession();
          this.on.roomLost(room, err.message);
        });
      }
    }
    if (!this.history) return;
    for (const chat of this.resume.pending()) {
      const request: Request = { cmd: Cmd.CHAT, msg: chat.msg, room: chat.room, cid: chat.cid };
      if (chat.action === true) request.action = true;
      this.enqueue({ request, chat });
    }
  }

  /** Reports what a page reload needs (the nickname changed, a room was joined or left). */
  saveSession(): void {
    this.on.save({
      nickname: this.nickname,
      resume: this.resume.token,
      rooms: this.resume.joined(),
    });
  }

  /**
   * Sends a chat to a room. With "history" it is kept until the server
   * acknowledges it ("71") and sent again, with the same cid, after a
   * reconnect; the returned record names it (undefined without history).
   */
  chat(room: string, msg: string, action = false): UnackedChat | undefined {
    if (this.ws?.readyState !== WebSocket.OPEN) {
      // Away (reconnecting), with history: kept with the chats not yet acknowledged, which go
      // out again once back (restore), under their cids, so none is stored twice.
      return this.history && this.everJoined ? this.resume.send(room, msg, action) : undefined;
    }
    const request: Request = { cmd: Cmd.CHAT, msg };
    if (action) request.action = true;
    if (!this.caps.has('rooms')) {
      this.enqueue({ request });
      return undefined;
    }
    request.room = room;
    if (!this.history) {
      this.enqueue({ request });
      return undefined;
    }
    const chat = this.resume.send(room, msg, action);
    request.cid = chat.cid;
    this.enqueue({ request, chat });
    return chat;
  }

  private refuse(reason: string, lostNickname?: string, taken?: string): void {
    this.wanted = false;
    // No retry follows: the page is offline until the user joins again, not reconnecting.
    this.on.status('offline');
    this.on.refused(reason, lostNickname, taken);
    this.ws?.close();
  }

  private scheduleRetry(why: string): void {
    if (this.joinedAt !== undefined && performance.now() - this.joinedAt >= RECONNECT_STABLE_MS) {
      this.attempt = 0;
    }
    this.joinedAt = undefined;
    const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** this.attempt) * (0.75 + Math.random() * 0.5);
    this.attempt++;
    // Set before reporting the status, so the handler sees the retry pending.
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.open();
    }, delay);
    this.on.status(
      this.everJoined ? 'reconnecting' : 'connecting',
      `${why} Retrying in ${Math.ceil(delay / 1000)} s…`,
    );
  }

  /** Keeps the resume state up to date with what arrives, before the page sees it. */
  private track(message: ParsedServerMessage): void {
    const room = typeof message.room === 'string' ? message.room : undefined;
    if (room === undefined) return;
    switch (message.cmd) {
      case Cmd.JOIN_ROOM_SUCCESS: {
        const had = this.resume.has(room);
        this.resume.entered(room, typeof message.epoch === 'string' ? message.epoch : undefined);
        if (!had) this.saveSession();
        return;
      }
      case Cmd.HISTORY_GAP:
        // Positions of the old epoch name nothing in the new one.
        if (typeof message.epoch === 'string') this.resume.entered(room, message.epoch);
        return;
      case Cmd.PART_ROOM_SUCCESS:
        this.resume.left(room);
        this.saveSession();
        return;
      case Cmd.CHAT_RESPONSE:
      case Cmd.CHAT_STORED:
        if (typeof message.id === 'number') this.resume.seen(room, message.id);
        if (message.cmd === Cmd.CHAT_STORED && typeof message.cid === 'string')
          this.resume.ack(message.cid);
        return;
    }
  }

  private dispatch(message: ParsedServerMessage): void {
    this.track(message);
    if (message.cmd === Cmd.ERROR) {
      const ref = typeof message.ref === 'string' ? message.ref : undefined;
      const index = ref === undefined ? -1 : this.pending.findIndex((p) => p.cmd === ref);
      if (index >= 0) {
        this.welcome.clear();
        const room = typeof message.room === 'string' ? message.room : undefined;
        this.pending
          .splice(index, 1)[0]!
          .reject(new RequestError('90', asString(message.message), asNumber(message.code), room));
        return;
      }
      if (ref === Cmd.CHAT && this.history) {
        const chat = this.resume.refused(this.generation);
        if (chat !== undefined) {
          this.on.chatRefused(chat, asString(message.message));
          return;
        }
      }
      // 2xxx: do not come back; 3xxx: transient, reconnecting is fine.
      const code = asNumber(message.code);
      if (code === ErrorCode.BANNED_WORDS && ref === undefined) {
        this.bannedWord();
        return;
      }
      if (code >= 2000 && code < 3000) this.fatal = `Disconnected: ${asString(message.message)}.`;
      this.on.message(message);
      return;
    }
    // Joining and leaving reach the page whoever asked, before the caller
    // resumes: the history that follows a "101" belongs to the view it sets up.
    const membership =
      message.cmd === Cmd.JOIN_ROOM_SUCCESS || message.cmd === Cmd.PART_ROOM_SUCCESS;
    if (membership) this.on.message(message);
    const unasked =
      message.cmd === Cmd.JOIN_ROOM_SUCCESS &&
      typeof message.room === 'string' &&
      this.welcome.delete(message.room);
    const index = unasked
      ? -1
      : this.pending.findIndex((p) => REPLY_CODES[p.cmd]?.includes(message.cmd));
    if (index >= 0) {
      this.welcome.clear();
      this.pending.splice(index, 1)[0]!.resolve(message);
      return;
    }
    if (!membership) this.on.message(message);
  }

  /**
   * A "90" 2001: the server names no request, but it handles requests in order and stops at
   * the refused one: the first written of the chats still unacknowledged on this connection
   * and the whispers still unanswered. Without history chats are never acknowledged, so an
   * unanswered whisper is taken for it, and otherwise the page's last chat.
   */
  private bannedWord(): void {
    this.fatal = 'Disconnected: a message you sent was refused for a banned word.';
    const chat = this.history
      ? this.resume.pending().find((c) => c.sentOn === this.generation)
      : undefined;
    const whisper = this.pending.findIndex((p) => p.cmd === Cmd.WHISPER);
    const never = Number.POSITIVE_INFINITY;
    const whisperSeq = this.pending[whisper]?.seq ?? never;
    const chatSeq = (chat === undefined ? undefined : this.chatSeq.get(chat)) ?? never;
    if (whisper >= 0 && whisperSeq < chatSeq) {
      this.pending
        .splice(whisper, 1)[0]!
        .reject(new RequestError('90', 'Not sent: the whisper contains a banned word.'));
      return;
    }
    // The same chat, now taken from those sent again after a reconnect.
    this.on.chatBanned(chat === undefined ? undefined : this.resume.refused(this.generation));
  }

  /** Sends a request, in order with calls, paced to the server's limits. */
  send(request: Request): void {
    if (this.ws?.readyState !== WebSocket.OPEN) return;
    this.enqueue({ request });
  }

  /** `quiet`: the page asks on its own (member list, RTT, history), the user typed nothing. */
  call(request: Request, quiet = false): Promise<ParsedServerMessage> {
    return new Promise((resolve, reject) => {
      if (this.ws?.readyState !== WebSocket.OPEN) {
        reject(new RequestError('closed', 'not connected'));
        return;
      }
      this.enqueue({ request, pending: { cmd: request.cmd, resolve, reject }, quiet });
    });
  }

  /** Requests queued and not yet sent. */
  get waiting(): number {
    return this.outbox.length;
  }

  private enqueue(item: Outgoing): void {
    if (this.pacer === undefined) {
      this.write(item);
      return;
    }
    const before = this.outbox.length;
    this.outbox.push(item);
    this.pump();
    if (this.outbox.length !== before) this.on.queued(this.outbox.length, 0);
  }

  private write(item: Outgoing): void {
    // Registered as it is written, so replies pair with calls in wire order.
    const seq = ++this.writes;
    if (item.pending !== undefined) {
      item.pending.seq = seq;
      this.pending.push(item.pending);
    }
    if (item.chat !== undefined) {
      item.chat.sentOn = this.generation;
      this.chatSeq.set(item.chat, seq);
    }
    this.ws?.send(JSON.stringify(item.request));
  }

  /** Sends what the bucket allows now, then sleeps until the next token. */
  private pump(): void {
    const pacer = this.pacer;
    if (pacer === undefined || this.paceTimer !== undefined) return;
    while (this.outbox.length > 0) {
      const now = performance.now();
      // The page shows a room once its JOIN_ROOM is answered.
      const rooms = roomsByNow(this.on.rooms(), this.pending);
      const cost = requestCost(this.outbox[0]!.request, rooms);
      const wait = pacer.delay(now, cost);
      if (wait > 0) {
        const due = now + wait;
        this.paceTimer = setTimeout(() => {
          this.paceTimer = undefined;
          // Woken late while shown, the page was busy and what it wrote may have left late,
          // all at once: no burst of what refilled meanwhile. A hidden page's timers run late
          // (up to a second) with nothing held back, and its queue keeps its rate.
          if (!document.hidden) pacer.wake(due, performance.now());
          const before = this.outbox.length;
          this.pump();
          if (this.outbox.length !== before) this.on.queued(this.outbox.length, 0);
        }, wait);
        return;
      }
      pacer.take(now, cost);
      this.write(this.outbox.shift()!);
    }
  }

  private dropQueue(): void {
    clearTimeout(this.paceTimer);
    this.paceTimer = undefined;
    const dropped = this.outbox.splice(0);
    for (const item of dropped) item.pending?.reject(new RequestError('closed', 'not sent'));
    // Chats waiting for their "71" go out again after reconnecting: not lost.
    const lost = dropped.filter(
      (item) => item.quiet !== true && (item.chat === undefined || !this.wanted),
    ).length;
    if (dropped.length > 0) this.on.queued(0, lost);
  }
}

/** A short random id, so cids from different page loads never meet. */
export function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

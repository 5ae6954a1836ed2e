import { CAPABILITIES } from '../../src/protocol/capabilities.js';
import { Cmd } from '../../src/protocol/codes.js';
import {
  type ParsedServerMessage,
  parseServerText,
  REPLY_CODES,
} from '../../src/protocol/message-codec.js';
import type { Request } from '../../src/protocol/messages.js';
import { pacerFor, parseLimits, type SendPacer } from '../../src/protocol/pacing.js';

export type Status = 'offline' | 'connecting' | 'online' | 'reconnecting';

export interface Handlers {
  status(status: Status, detail?: string): void;
  joined(info: { nickname: string; userCount: number; rejoined: boolean }): void;
  /** Joining failed for a reason the user must fix (taken name, full room). */
  refused(reason: string): void;
  message(message: ParsedServerMessage): void;
  /** Requests waiting to be sent, paced to the server's flood limit; called when it changes. */
  queued(waiting: number, dropped: number): void;
}

export class RequestError extends Error {
  constructor(
    readonly reply: string,
    message: string,
  ) {
    super(message);
  }
}

interface Pending {
  cmd: string;
  resolve: (m: ParsedServerMessage) => void;
  reject: (e: Error) => void;
}

/** A request waiting its turn, with the call awaiting its reply if any. */
interface Outgoing {
  request: Request;
  pending?: Pending;
}

const MAX_BACKOFF_MS = 15_000;

/**
 * One chat session over WebSocket, speaking confab's JSON with every
 * extension. Reconnects with backoff and rejoins under the same nickname
 * until the user leaves or the server says not to.
 */
export class Connection {
  nickname = '';
  private ws: WebSocket | undefined;
  private pending: Pending[] = [];
  private wanted = false;
  private everJoined = false;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private fatal: string | undefined;
  /** Set from the limits in "03"; requests then wait their turn in `outbox`. */
  private pacer: SendPacer | undefined;
  private paceTimer: ReturnType<typeof setTimeout> | undefined;
  private outbox: Outgoing[] = [];

  constructor(
    private readonly url: string,
    private readonly on: Handlers,
  ) {}

  join(nickname: string): void {
    // A pending retry or an attempt still in flight would join a second time
    // and then meet its own nickname as taken.
    this.cancelRetry();
    const previous = this.ws;
    this.ws = undefined;
    this.dropQueue();
    this.pacer = undefined;
    previous?.close();
    this.nickname = nickname;
    this.wanted = true;
    this.everJoined = false;
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
    this.on.status('offline');
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
    let joined = false;
    ws.onopen = () => {
      ws.send(
        JSON.stringify({ cmd: Cmd.CONNECT, nickname: this.nickname, caps: [...CAPABILITIES] }),
      );
    };
    ws.onmessage = (event: MessageEvent<string>) => {
      const message = parseServerText(event.data);
      if (message === undefined) return;
      if (!joined) {
        if (message.cmd === Cmd.CONNECT_SUCCESS) {
          joined = true;
          this.pacer = pacerFor(parseLimits(message.limits), performance.now());
          this.attempt = 0;
          const rejoined = this.everJoined;
          this.everJoined = true;
          this.on.status('online');
          this.on.joined({
            nickname: this.nickname,
            userCount: Number(message.userCount),
            rejoined,
          });
        } else if (message.cmd === Cmd.CONNECT_DUPLICATE_NICKNAME) {
          this.refuse(`The nickname “${this.nickname}” is taken. Try another one.`);
        } else if (message.cmd === Cmd.CONNECT_CHATROOM_FULL) {
          this.refuse('The room is full. Try again in a moment.');
        } else if (message.cmd === Cmd.ERROR) {
          this.refuse(String(message.message ?? 'The server refused.'));
        }
        return;
      }
      this.dispatch(message);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = undefined;
      this.dropQueue();
      this.pacer = undefined;
      for (const p of this.pending.splice(0)) p.reject(new RequestError('closed', 'disconnected'));
      if (!this.wanted) return;
      if (this.fatal !== undefined || !this.everJoined) {
        // Never joined (server down, name taken) or told not to come back.
        if (!this.everJoined && this.fatal === undefined) {
          this.scheduleRetry('Cannot reach the server.');
          return;
        }
        this.wanted = false;
        this.on.status('offline', this.fatal);
        return;
      }
      this.scheduleRetry('Connection lost.');
    };
  }

  private refuse(reason: string): void {
    this.wanted = false;
    this.on.refused(reason);
    this.ws?.close();
  }

  private scheduleRetry(why: string): void {
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

  private dispatch(message: ParsedServerMessage): void {
    if (message.cmd === Cmd.ERROR) {
      const ref = typeof message.ref === 'string' ? message.ref : undefined;
      const index = ref === undefined ? -1 : this.pending.findIndex((p) => p.cmd === ref);
      if (index >= 0) {
        this.pending.splice(index, 1)[0]!.reject(new RequestError('90', String(message.message)));
        return;
      }
      // 2xxx: do not come back; 3xxx: transient, reconnecting is fine.
      const code = Number(message.code);
      if (code >= 2000 && code < 3000) this.fatal = `Disconnected: ${String(message.message)}.`;
      this.on.message(message);
      return;
    }
    const index = this.pending.findIndex((p) => REPLY_CODES[p.cmd]?.includes(message.cmd));
    if (index >= 0) {
      this.pending.splice(index, 1)[0]!.resolve(message);
      return;
    }
    this.on.message(message);
  }

  /** Sends a request, in order with calls, paced to the server's limits. */
  send(request: Request): void {
    if (this.ws?.readyState !== WebSocket.OPEN) return;
    this.enqueue({ request });
  }

  call(request: Request): Promise<ParsedServerMessage> {
    return new Promise((resolve, reject) => {
      if (this.ws?.readyState !== WebSocket.OPEN) {
        reject(new RequestError('closed', 'not connected'));
        return;
      }
      this.enqueue({ request, pending: { cmd: request.cmd, resolve, reject } });
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
    if (item.pending !== undefined) this.pending.push(item.pending);
    this.ws?.send(JSON.stringify(item.request));
  }

  /** Sends what the bucket allows now, then sleeps until the next token. */
  private pump(): void {
    const pacer = this.pacer;
    if (pacer === undefined || this.paceTimer !== undefined) return;
    while (this.outbox.length > 0) {
      const now = performance.now();
      const wait = pacer.delay(now);
      if (wait > 0) {
        this.paceTimer = setTimeout(() => {
          this.paceTimer = undefined;
          const before = this.outbox.length;
          this.pump();
          if (this.outbox.length !== before) this.on.queued(this.outbox.length, 0);
        }, wait);
        return;
      }
      pacer.take(now);
      this.write(this.outbox.shift()!);
    }
  }

  private dropQueue(): void {
    clearTimeout(this.paceTimer);
    this.paceTimer = undefined;
    const dropped = this.outbox.splice(0);
    for (const item of dropped) item.pending?.reject(new RequestError('closed', 'not sent'));
    if (dropped.length > 0) this.on.queued(0, dropped.length);
  }
}

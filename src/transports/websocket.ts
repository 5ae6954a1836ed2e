import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import type { Chat } from '../core/chat.js';
import type { Delivery } from '../core/events.js';
import type { DisconnectReason, Logger, Peer, PeerAddress } from '../core/ports.js';
import { NO_CAPS, type Session } from '../core/session.js';
import { parseRequestMessage } from '../protocol/request-codec.js';
import { WsUnfinished } from '../protocol/ws-unfinished.js';
import { type Backlogged, type Backlogs, OVER_TOTAL } from './backlogs.js';
import { EncoderCache, JsonDialect, wsJson } from './dialects/json.js';
import { killAfter, openSession } from './lifecycle.js';
import { OVER_PARTIAL, type PartialFrames, type Unfinished } from './partial-frames.js';
import type { TransportStats } from './stats.js';
import {
  addressOf,
  busyWith,
  excerpt,
  SLOW_CONSUMER,
  type StreamLimits,
  sendPacedOn,
  stopWaiting,
} from './stream.js';

/** Browsers speak the same JSON as negotiated stream clients, one object per message. */
const wsDialect = new JsonDialect(wsJson);

/** Close codes a browser sees, by why the server ended the session. */
const CLOSE_CODES: Partial<Record<DisconnectReason, number>> = {
  exit: 1000,
  shutdown: 1001,
  'banned-words': 1008,
  protocol: 1008,
  flooding: 1008,
  'frame-too-large': 1009,
  'internal-error': 1011,
  // Try again later (perhaps on another node).
  'cluster-unavailable': 1013,
  kicked: 1008,
  banned: 1008,
  'banned-nickname': 1008,
  // Application range: the session lives on in another connection; do not reconnect.
  replaced: 4000,
};

/**
 * What `ws` keeps for each fragment of a message until its last one arrives,
 * besides the payload: a Buffer view and an array slot. Measured about 105
 * bytes of heap and 230 of RSS on Node 20.
 */
const FRAGMENT_COST = 256;

/**
 * Fragments one message may arrive in. `maxPayload` caps a message's bytes
 * but not its fragments, and ws's own default (16384) lets a message of
 * 1-byte fragments hold some 2 MB; this keeps what the fragments of one
 * message cost within about twice the frame limit (512 at 64 KiB).
 */
export function maxFragments(maxFrame: number): number {
  return Math.max(16, Math.ceil((2 * maxFrame) / FRAGMENT_COST));
}

/** Frames a closing connection reads before it is cut off (WsConnection.lateFrame). */
const LATE_FRAMES = 256;

/** A browser (or any WebSocket client) session: same core, same limits as TCP. */
export class WsConnection implements Peer, Backlogged, Unfinished {
  readonly remote: PeerAddress;
  readonly session: Session;
  private closing = false;
  /** Frames read since the server began to close the connection (lateFrame). */
  private late = 0;
  /** The core paused its reading (Peer.pause). */
  private paused = false;
  private endReason: DisconnectReason = 'lost';
  /** Answered the last keepalive ping. */
  alive = true;
  private readonly encoder = new EncoderCache((caps) => wsDialect.encoderFor(caps));
  /** The upgraded socket under `ws`, whose writes pacing waits for. */
  private readonly socket: Socket;
  /** Bytes of a message whose end has not come, framing included (PartialFrames). */
  private unfinished = 0;

  constructor(
    private readonly ws: WebSocket,
    request: IncomingMessage,
    readonly local: PeerAddress,
    chat: Chat,
    private readonly limits: StreamLimits,
    private readonly log: Logger,
    private readonly stats: TransportStats,
    private readonly backlogs: Backlogs,
    partials: PartialFrames,
  ) {
    this.remote = addressOf(request.socket.remoteAddress, request.socket.remotePort);
    this.socket = request.socket as Socket;
    request.socket.setNoDelay(true);
    // ws holds a message's fragments, and the frame under way, until the message is whole,
    // and tells nothing of them: their bytes are followed here, beside it. The bytes that
    // came with the upgrade request are given back to the socket and read again, after this.
    const unfinished = new WsUnfinished();
    this.socket.on('data', (chunk: Buffer) => {
      // Once ws has a close frame, or has failed the connection, it reads no more: what
      // follows is thrown away, not held.
      if (ws.readyState !== ws.OPEN) {
        if (this.unfinished > 0) {
          this.unfinished = 0;
          partials.update(this, 0);
        }
        return;
      }
      const bytes = unfinished.feed(chunk);
      if ((bytes === 0 && this.unfinished === 0) || this.closing) return;
      this.unfinished = bytes;
      partials.update(this, bytes);
    });
    const opened = openSession(chat, this, stats, limits.handshakeTimeoutMs, log);
    this.session = opened.session;
    // Text or binary frame alike, the payload must be one UTF-8 JSON request.
    // The connection's fault boundary: what handling it throws ends this
    // connection only (an exception out of a 'message' listener would end the process).
    ws.on('message', (data: Buffer) => {
      if (this.closing) {
        this.lateFrame();
        return;
      }
      stats.messagesIn++;
      try {
        if (this.session.admitsFrame()) this.session.receive(parseRequestMessage(data));
      } catch (err) {
        this.session.failed(err, excerpt(data));
        this.closing = true;
      }
    });
    // Answered or not, each costs the server a wake, and a ping a pong: counted as requests
    // are (75,000 unsolicited pongs a second took 40% of a core), in the same fault boundary.
    const control = () => {
      if (this.closing) {
        this.lateFrame();
        return;
      }
      stats.messagesIn++;
      try {
        this.session.blank('control');
      } catch (err) {
        this.session.failed(err);
        this.closing = true;
      }
    };
    ws.on('ping', control);
    ws.on('pong', () => {
      this.alive = true;
      control();
    });
    ws.on('error', (err) => {
      // ws reports oversized messages (then closes with 1009) and messages in
      // too many fragments (1008) here.
      const code = (err as { code?: string }).code;
      if (code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' || code === 'WS_ERR_TOO_MANY_BUFFERED_PARTS')
        this.endReason = 'frame-too-large';
      log.debug({ err, remote: this.remote }, 'websocket error');
    });
    ws.on('close', () => {
      backlogs.delete(this);
      this.unfinished = 0;
      partials.update(this, 0);
      try {
        opened.closed(this.endReason);
      } catch (err) {
        log.error({ err, session: this.session.id }, 'ending a session failed');
      }
    });
  }

  /** Peer: a getter, as in StreamConnection, so that idle connections hold no field for it. */
  get carrier(): string {
    return 'WebSocket';
  }

  send(delivery: Delivery): void {
    if (this.ws.readyState !== this.ws.OPEN) return;
    // chat.open() may answer ("02") before it returns, while this.session is still unset.
    const session = this.session as Session | undefined;
    const bytes = this.encoder.bytes(delivery, session?.caps ?? NO_CAPS);
    if (bytes === undefined) return;
    const queued = this.ws.bufferedAmount;
    if (this.stats.overflows(queued, queued, bytes.length, this.limits.maxQueue)) {
      this.cutOff(queued);
      return;
    }
    this.ws.send(bytes, { binary: false });
    if (this.ws.bufferedAmount > 0) this.backlogs.add(this);
  }

  /** Closes a client that does not read what it is sent. */
  private cutOff(queued: number): void {
    this.log.warn({ remote: this.remote, queued }, SLOW_CONSUMER);
    this.drop();
  }

  queuedBytes(): number {
    // A closing connection still holds what it had queued, until its client takes it or
    // the close times out: it counts until the socket is gone.
    if (this.ws.readyState === this.ws.CLOSED) return 0;
    return this.ws.bufferedAmount + this.heldBytes();
  }

  holding(): void {
    this.backlogs.add(this, true);
  }

  busy(): boolean {
    return busyWith(this.ws.bufferedAmount, this.limits);
  }

  heldBytes(): number {
    return (this.session as Session | undefined)?.heldBytes ?? 0;
  }

  takenBytes(): number {
    // The socket's own counts, framing included: payload bytes sent less bufferedAmount,
    // which counts each frame's header too, went down with every message queued.
    return this.socket.bytesWritten - this.socket.writableLength;
  }

  shed(queued: number): void {
    // Backlogs logs one line for all it closes at once.
    this.log.debug({ remote: this.remote, queued }, OVER_TOTAL);
    this.drop();
  }

  get joined(): boolean {
    return this.session.state === 'joined';
  }

  shedUnfinished(): void {
    // PartialFrames logs one line for all it closes at once.
    this.log.debug({ remote: this.remote, held: this.unfinished }, OVER_PARTIAL);
    this.unfinished = 0;
    this.endReason = 'partial-total';
    this.closing = true;
    this.ws.terminate();
  }

  private drop(): void {
    this.endReason = 'slow-consumer';
    this.closing = true;
    this.ws.terminate();
  }

  /** Peer.sendPaced, as on a stream connection. */
  sendPaced(deliveries: readonly Delivery[]): Promise<void> {
    // ws writes each frame to the socket whole, in order: an empty write after them waits for all.
    return sendPacedOn(
      this.socket,
      this.limits,
      {
        stopped: () => this.closing || this.ws.readyState !== this.ws.OPEN,
        queued: () => this.ws.bufferedAmount,
        size: (delivery) => this.encoder.bytes(delivery, this.session.caps)?.length ?? 0,
        send: (delivery) => this.send(delivery),
        cutOff: (queued) => {
          if (!this.closing) this.cutOff(queued);
        },
      },
      deliveries,
    );
  }

  close(reason: DisconnectReason): void {
    if (this.closing) return;
    this.closing = true;
    this.endReason = reason;
    this.ws.close(CLOSE_CODES[reason] ?? 1000, reason);
    stopWaiting(this.socket);
    killAfter(this.limits.closeTimeoutMs, this.ws, () => this.ws.terminate());
  }

  /**
   * A frame that arrived once the server began to close the connection: ws reads on until the
   * client's close frame (or --shutdown-timeout), and a client closed for flooding that kept
   * streaming pongs meanwhile held everyone's event loop for a second or more. A few are in
   * flight when the close is sent; past that the connection goes at once.
   */
  private lateFrame(): void {
    if (++this.late === LATE_FRAMES) this.ws.terminate();
  }

  pause(paused: boolean): void {
    this.paused = paused;
    if (paused) this.ws.pause();
    else {
      // Its pongs waited unread with everything else: the next ping starts afresh.
      this.alive = true;
      this.ws.resume();
    }
  }

  /**
   * Keepalive: a peer that missed the previous ping is dead. Not while the core has paused
   * its reading (its requests wait behind a slow one): its pong could not be read. A peer
   * that is gone then is still cut off by the stall timeout of what is written to it.
   */
  ping(): void {
    if (this.paused) return;
    if (!this.alive) {
      this.endReason = 'timeout';
      this.ws.terminate();
      return;
    }
    this.alive = false;
    this.ws.ping();
  }
}

import net from 'node:net';
import tls from 'node:tls';
import type { Chat } from '../core/chat.js';
import type { Delivery, Encoder } from '../core/events.js';
import type { LogLimiter } from '../core/log-limit.js';
import type { DisconnectReason, Logger, Peer, PeerAddress } from '../core/ports.js';
import { NO_CAPS, type Session } from '../core/session.js';
import type { Capability } from '../protocol/capabilities.js';
import { Cmd } from '../protocol/codes.js';
import {
  FrameDecoder,
  type FrameRefusal,
  type FrameSink,
  FrameTooLargeError,
} from '../protocol/frame-decoder.js';
import { parseRequestFrame, refusedFrame } from '../protocol/request-codec.js';
import { clip } from '../protocol/text.js';
import { type Backlogged, Backlogs, OVER_TOTAL } from './backlogs.js';
import { courseFrames, JsonDialect, jsonLines } from './dialects/json.js';
import {
  addressOf,
  Deadline,
  endSession,
  HandshakeDeadlines,
  killAfter,
  listenOn,
  RawSockets,
  startSession,
} from './lifecycle.js';
import { OVER_PARTIAL, PartialFrames, type Unfinished } from './partial-frames.js';
import { TransportStats } from './stats.js';

export interface StreamLimits {
  /** Largest request frame, and most bytes buffered for an unfinished one. */
  maxFrame: number;
  /** Most bytes queued for one client before it is cut off as too slow. */
  maxQueue: number;
  /** Most bytes queued for all clients together, on every listener (see Backlogs). */
  maxQueueTotal: number;
  /** Most bytes of unfinished requests for all clients together (see PartialFrames). */
  maxPartialTotal: number;
  /** How long a closing connection may take to flush before it is destroyed (ms). */
  closeTimeoutMs: number;
  /** TCP keepalive probe delay (ms); 0 turns keepalive off. */
  keepAliveMs: number;
  /** Time allowed from connect (or TLS handshake) to CONNECT (ms); 0 = unlimited. */
  handshakeTimeoutMs: number;
  /**
   * How long paced history may wait for a client that reads nothing at all (ms): the messages
   * it waits with are held in memory, so a client that never reads must not hold them for ever.
   */
  stallTimeoutMs: number;
}

/**
 * Coalesces each connection's messages within one event-loop turn into a
 * single write: a broadcast burst then costs one syscall per recipient, not
 * one per message. Flushed in the check phase, after all pending reads (or
 * earlier, once a batch fills its buffer).
 */
class WriteBatcher {
  private dirty: StreamConnection[] = [];
  private scheduled = false;
  private readonly run = () => this.flush();

  schedule(connection: StreamConnection): void {
    this.dirty.push(connection);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.run);
    }
  }

  /** Writes what is batched now instead of at the end of the turn. */
  flushNow(): void {
    if (this.dirty.length > 0) this.flush();
  }

  private flush(): void {
    this.scheduled = false;
    const dirty = this.dirty;
    this.dirty = [];
    for (const c of dirty) {
      // One connection's failure to write must not keep the rest from theirs.
      try {
        c.flush();
      } catch (err) {
        c.session.failed(err);
      }
    }
  }
}

const batcher = new WriteBatcher();

/**
 * Writes every connection's batch at once. For work that finishes in the
 * check phase, where a batch scheduled now would wait a whole loop turn:
 * the history store calls it once a commit's messages have been handed out.
 */
export function flushWrites(): void {
  batcher.flushNow();
}

/**
 * A connection's batch lives in one buffer of this size and is written as
 * soon as it is full rather than at the end of the turn, so a busy turn's
 * output starts flowing while the rest of it is still being read; otherwise
 * server and client take turns idling. Measured: 16 KiB beat 4, 8 and 32 KiB
 * and end-of-turn only (docs/performance.md).
 */
const BATCH_BYTES = 16 * 1024;

/**
 * Batch buffers whose write went to the kernel at once, kept for the next
 * batch of any connection: copying messages into a reused buffer costs less
 * than collecting them and concatenating per write. A batch starts small and
 * moves to a full-size buffer only if it outgrows it, so a room of thousands
 * keeps small buffers for its small batches. At most 4 MiB + 1 MiB are kept;
 * idle connections hold none.
 */
class BatchBuffers {
  private readonly spare: Buffer[] = [];
  constructor(
    readonly size: number,
    private readonly keep: number,
  ) {}
  take(): Buffer {
    return this.spare.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }
  give(buffer: Buffer): void {
    if (this.spare.length < this.keep) this.spare.push(buffer);
  }
}
const smallBatches = new BatchBuffers(4096, 1024);
const fullBatches = new BatchBuffers(BATCH_BYTES, 64);

export const SLOW_CONSUMER = 'outbound queue over the limit, disconnecting slow consumer';

/** Clients that negotiated split on newlines; the others are course clients, read with recv(1024). */
const lineDialect = new JsonDialect(jsonLines);
const courseDialect = new JsonDialect(courseFrames);

/** Characters of the client's input shown in a fault's log line. */
const EXCERPT_CHARS = 200;

/** A short excerpt of what a client sent, its control characters made visible. */
export function excerpt(bytes: Uint8Array): string {
  // Decoding more than is shown would cost a 64 KiB frame's worth for nothing.
  const head = Buffer.from(
    bytes.buffer,
    bytes.byteOffset,
    Math.min(bytes.length, EXCERPT_CHARS * 4),
  );
  const more = bytes.length > head.length ? `...(+${bytes.length - head.length} bytes)` : '';
  return clip(head.toString('utf8'), EXCERPT_CHARS) + more;
}

export { addressOf };

const NOTHING = new Uint8Array(0);

/** The wait `written` has under way per socket, shared by every paced sender of its connection. */
const writing = new WeakMap<net.Socket, Promise<void>>();
/** Ends the wait in `writing` at once (stopWaiting). */
const wakers = new WeakMap<net.Socket, () => void>();

/**
 * Ends a wait for `socket`'s queue to drain now: its connection started closing, so a paced
 * send stops (it checks `stopped()` next) instead of waiting for a slow reader to take what
 * was queued, or for the close timeout.
 */
export function stopWaiting(socket: net.Socket): void {
  wakers.get(socket)?.();
}

/**
 * Resolves once everything written to `socket` so far has gone to the kernel
 * (an empty write's callback comes after those of the writes before it), or
 * the socket is closed. Concurrent callers share one wait, so a resume of
 * many rooms adds one 'close' listener, not one per room.
 */
function written(socket: net.Socket): Promise<void> {
  const under = writing.get(socket);
  if (under !== undefined) return under;
  const wait = new Promise<void>((resolve) => {
    if (socket.destroyed) {
      resolve();
      return;
    }
    const done = () => {
      socket.off('close', done);
      if (wakers.get(socket) === done) wakers.delete(socket);
      resolve();
    };
    socket.once('close', done);
    wakers.set(socket, done);
    if (socket.writable) socket.write(NOTHING, done);
  }).then(() => {
    writing.delete(socket);
  });
  writing.set(socket, wait);
  return wait;
}

/**
 * Waits like `written`, but gives up (false) once a whole `stallMs` passes in which the kernel
 * took none of the socket's queued bytes: a slow reader is waited for as long as it reads, one
 * that reads nothing is not.
 */
async function drains(socket: net.Socket, stallMs: number): Promise<boolean> {
  let queued = socket.writableLength;
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const stalled = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), stallMs);
    });
    const done = await Promise.race([written(socket).then(() => true), stalled]);
    clearTimeout(timer);
    if (done) return true;
    const now = socket.writableLength;
    if (now >= queued) return false;
    queued = now;
  }
}

/** What pacing needs of a connection: its state, its queue and its own way to send and close. */
export interface PacedOutput {
  /** Nothing more goes out (closing, or closed). */
  stopped(): boolean;
  /** Bytes queued for the client that the kernel has not taken yet. */
  queued(): number;
  size(delivery: Delivery): number;
  /** Writes out what is batched, before waiting for it to drain. */
  flush?(): void;
  send(delivery: Delivery): void;
  /** The client read nothing for the stall timeout. */
  cutOff(queued: number): void;
}

/**
 * Peer.busy for a client with `queued` bytes waiting for it: past three quarters of
 * --max-queue, clear of the half that paced history fills (sendPacedOn).
 */
export function busyWith(queued: number, limits: StreamLimits): boolean {
  return queued > (limits.maxQueue * 3) / 4;
}

/**
 * Peer.sendPaced for a connection on `socket`: each delivery goes once the
 * queue is empty or has room for it within half of --max-queue; the other
 * half is left for the live traffic of the client's other rooms, which is not
 * paced. A client that reads nothing for --stall-timeout meanwhile is cut off.
 */
export async function sendPacedOn(
  socket: net.Socket,
  limits: StreamLimits,
  out: PacedOutput,
  deliveries: readonly Delivery[],
): Promise<void> {
  for (const delivery of deliveries) {
    for (;;) {
      // Destroyed as well: a WebSocket says it is open until its socket's 'close', and a
      // destroyed socket "drains" at once, so this loop would go round without yielding.
      if (out.stopped() || socket.destroyed) return;
      const queued = out.queued();
      if (queued === 0 || queued + out.size(delivery) <= limits.maxQueue / 2) break;
      out.flush?.();
      if (!(await drains(socket, limits.stallTimeoutMs))) {
        out.cutOff(out.queued());
        return;
      }
    }
    out.send(delivery);
  }
}

/** The connection that owns a socket, for the handlers that all sockets share. */
const OWNER = Symbol('connection');
type OwnedSocket = net.Socket & { [OWNER]: StreamConnection };

function onSocketData(this: net.Socket, chunk: Buffer): void {
  (this as OwnedSocket)[OWNER].received(chunk);
}

function onSocketEnd(this: net.Socket): void {
  (this as OwnedSocket)[OWNER].ended();
}

function onSocketClose(this: net.Socket): void {
  (this as OwnedSocket)[OWNER].closed();
}

/**
 * One stream connection (TCP, or TLS on top of it). Reads frames into its
 * session and writes the session's messages, within the limits.
 *
 * Thousands of these sit idle, so each holds only fields: it is its
 * decoder's sink, and its socket's handlers are shared functions that find
 * it through the socket (a closure per handler per socket cost about a
 * kilobyte per connection, docs/performance.md).
 */
export class StreamConnection implements Peer, FrameSink, Backlogged, Unfinished {
  readonly remote: PeerAddress;
  readonly session: Session;
  private readonly decoder: FrameDecoder;
  private closing = false;
  private endReason: DisconnectReason = 'lost';
  /** Messages waiting for this turn's flush (negotiated sessions only), in batch[0, batchBytes). */
  private batch: Buffer | undefined;
  private batchBytes = 0;
  /**
   * Bytes the socket held unsent after this connection's last write: with
   * batchBytes, everything queued for this client, without asking the
   * socket once per message of a broadcast burst.
   */
  private backlog = 0;
  /** Bytes written to the socket so far: less its unsent ones, what the client has taken. */
  private written = 0;
  /** Memory the decoder held for an unfinished request after the last read (PartialFrames). */
  private unfinished = 0;
  /** The frame being handled, for the fault log. */
  private inFrame: Uint8Array | undefined;
  /** The encoder for `encodedCaps`, picked again only when the session's capabilities change. */
  private encoder: Encoder | undefined;
  private encodedCaps: ReadonlySet<Capability> | undefined;
  private localAddress: PeerAddress | undefined;
  /** Lines any client can cause once per connection: the chat's, a few per 10 s. */
  private readonly refusals: LogLimiter;

  constructor(
    private readonly socket: net.Socket,
    chat: Chat,
    private readonly limits: StreamLimits,
    private readonly log: Logger,
    private readonly stats: TransportStats,
    private readonly deadlines: HandshakeDeadlines,
    private readonly backlogs: Backlogs,
    private readonly partials: PartialFrames,
  ) {
    this.refusals = chat.refusals;
    this.remote = addressOf(socket.remoteAddress, socket.remotePort);
    this.session = startSession(chat, this, stats, deadlines);
    this.decoder = new FrameDecoder(limits.maxFrame, this);
    (socket as OwnedSocket)[OWNER] = this;
    socket.on('data', onSocketData);
    // Before Node's own 'end' listener, which makes every later write fail.
    socket.prependListener('end', onSocketEnd);
    socket.on('close', onSocketClose);
  }

  /**
   * The client ended its side (FIN, or TLS close_notify), and Node ends ours: the replies
   * batched this turn go out first. A TLS close_notify is read in the turn of the requests
   * before it, whose replies, written at the turn's end, came after the end and were lost.
   */
  ended(): void {
    if (this.socket.destroyed) return;
    // A throw out of an 'end' listener would end the process.
    try {
      this.flush();
    } catch (err) {
      this.session.failed(err);
    }
  }

  /** The socket closed, whoever closed it: the session ends. */
  closed(): void {
    this.backlogs.delete(this);
    this.holdUnfinished(0);
    try {
      endSession(this.session, this.stats, this.deadlines, this.endReason);
    } catch (err) {
      this.log.error({ err, session: this.session.id }, 'ending a session failed');
    }
  }

  /**
   * The listening address the client reached, asked of the socket only when
   * needed (at CONNECT): most idle connections never need it.
   */
  get local(): PeerAddress {
    this.localAddress ??= addressOf(this.socket.localAddress, this.socket.localPort);
    return this.localAddress;
  }

  /** Peer: a getter, so that idle connections hold no field for it. */
  get carrier(): string {
    return this.socket instanceof tls.TLSSocket ? 'TLS' : 'TCP';
  }

  /** FrameSink: a complete request frame. */
  frame(frame: Uint8Array): void {
    if (this.closing) return;
    this.stats.messagesIn++;
    this.inFrame = frame;
    this.session.receive(parseRequestFrame(frame));
    this.inFrame = undefined;
  }

  /** FrameSink: bytes that were no request. */
  refused(reason: FrameRefusal): void {
    if (this.closing) return;
    this.stats.messagesIn++;
    if (reason === 'blank') this.session.blank('whitespace');
    else this.session.receive(refusedFrame(reason));
  }

  /** Stops reading from the client (its writes back up in TCP) or reads again. Idempotent. */
  pause(paused: boolean): void {
    if (this.socket.destroyed) return;
    if (paused) this.socket.pause();
    else this.socket.resume();
  }

  /**
   * The connection's fault boundary: whatever decoding, parsing or handling
   * this client's bytes throws ends this connection, never the process (an
   * exception escaping a socket's 'data' handler would end it).
   */
  received(chunk: Buffer): void {
    if (this.closing) return;
    try {
      // Neither buffered (up to --max-frame) nor parsed from an address with no CONNECT left.
      // Asked once a chunk, not once a frame: a greeting session's later frames in the chunk
      // follow a CONNECT (anything else before it closes the session), and a CONNECT's
      // budget is checked again when it is handled.
      if (!this.session.admitsFrame()) return;
      this.decoder.push(chunk);
      // Told after every read while a request is unfinished: how fast it arrives decides who
      // is closed first (PartialFrames).
      const held = this.decoder.held;
      if (held !== this.unfinished || held > 0) this.holdUnfinished(held);
    } catch (err) {
      if (err instanceof FrameTooLargeError) {
        const { remote } = this;
        this.refusals.log(
          'frame-too-large',
          (held) =>
            this.log.warn({ remote, limit: err.limit, ...held }, 'frame too large, closing'),
          remote.ip,
        );
        this.decoder.reset();
        this.session.disconnect('frame-too-large');
        return;
      }
      const input = excerpt(this.inFrame ?? chunk);
      this.inFrame = undefined;
      this.decoder.reset();
      this.session.failed(err, input);
      // Whatever state the failure left, this connection reads no more.
      this.closing = true;
      stopWaiting(this.socket);
    }
  }

  private holdUnfinished(bytes: number): void {
    this.unfinished = bytes;
    this.partials.update(this, bytes, this.decoder.buffered);
  }

  get joined(): boolean {
    return this.session.state === 'joined';
  }

  shedUnfinished(): void {
    // PartialFrames logs one line for all it closes at once.
    this.log.debug({ remote: this.remote, held: this.unfinished }, OVER_PARTIAL);
    this.unfinished = 0;
    this.closing = true;
    this.decoder.reset();
    this.endReason = 'partial-total';
    this.socket.destroy();
  }

  /** The delivery in this session's dialect (undefined: nothing for this client). */
  private encode(delivery: Delivery): Uint8Array | undefined {
    // chat.open() may answer ("02") before it returns, while this.session is still unset.
    const session = this.session as Session | undefined;
    const caps = session?.caps ?? NO_CAPS;
    if (caps !== this.encodedCaps) {
      this.encodedCaps = caps;
      this.encoder =
        session?.negotiated === true
          ? lineDialect.encoderFor(caps)
          : courseDialect.encoderFor(caps);
    }
    return delivery.bytes(this.encoder!);
  }

  /** Everything queued for this client: the socket's unsent bytes and this turn's batch. */
  private get queued(): number {
    if (this.batch === undefined) this.backlog = this.socket.writableLength;
    return this.backlog + this.batchBytes;
  }

  send(delivery: Delivery): void {
    if (this.socket.destroyed) return;
    const negotiated = (this.session as Session | undefined)?.negotiated === true;
    const bytes = this.encode(delivery);
    if (bytes === undefined) return;
    const queued = this.queued;
    if (this.stats.overflows(this.backlog, queued, bytes.length, this.limits.maxQueue)) {
      this.cutOff(queued);
      return;
    }
    if (!negotiated) {
      this.write(bytes);
      return;
    }
    if (this.batch !== undefined && this.batchBytes + bytes.length > this.batch.length) {
      if (this.batchBytes + bytes.length > BATCH_BYTES) this.flush();
      else this.grow();
    }
    if (bytes.length > BATCH_BYTES) {
      // Written after what was batched before it, so order holds.
      this.write(bytes);
      return;
    }
    if (this.batch === undefined) {
      this.batch = bytes.length > smallBatches.size ? fullBatches.take() : smallBatches.take();
      batcher.schedule(this);
    }
    this.batch.set(bytes, this.batchBytes);
    this.batchBytes += bytes.length;
  }

  sendPaced(deliveries: readonly Delivery[]): Promise<void> {
    const stopped = () => this.closing || this.socket.destroyed;
    return sendPacedOn(
      this.socket,
      this.limits,
      {
        stopped,
        queued: () => this.queued,
        size: (delivery) => this.encode(delivery)?.length ?? 0,
        flush: () => this.flush(),
        send: (delivery) => this.send(delivery),
        cutOff: (queued) => {
          if (!stopped()) this.cutOff(queued);
        },
      },
      deliveries,
    );
  }

  /** Closes a client that does not read what it is sent. */
  private cutOff(queued: number): void {
    this.log.warn({ remote: this.remote, queued }, SLOW_CONSUMER);
    this.drop();
  }

  queuedBytes(): number {
    if (this.socket.destroyed) return 0;
    return this.socket.writableLength + this.heldBytes();
  }

  holding(): void {
    this.backlogs.add(this, true);
  }

  busy(): boolean {
    return !this.socket.destroyed && busyWith(this.queued, this.limits);
  }

  heldBytes(): number {
    return (this.session as Session | undefined)?.heldBytes ?? 0;
  }

  takenBytes(): number {
    return this.written - this.socket.writableLength;
  }

  shed(queued: number): void {
    // Backlogs logs one line for all it closes at once.
    this.log.debug({ remote: this.remote, queued }, OVER_TOTAL);
    this.drop();
  }

  private drop(): void {
    this.endReason = 'slow-consumer';
    this.closing = true;
    this.batch = undefined;
    this.batchBytes = 0;
    // The 'close' event that follows tells the session, outside this call.
    this.socket.destroy();
  }

  /** Moves a batch that outgrew a small buffer into a full-size one. */
  private grow(): void {
    const small = this.batch!;
    this.batch = fullBatches.take();
    this.batch.set(small.subarray(0, this.batchBytes));
    smallBatches.give(small);
  }

  /** Writes straight to the socket, keeping the backlog count true for the queue cap. */
  private write(bytes: Uint8Array): void {
    this.socket.write(bytes);
    this.written += bytes.length;
    this.backlog = this.socket.writableLength;
    if (this.backlog > 0) this.backlogs.add(this);
  }

  /** Writes what this turn queued, as one buffer. */
  flush(): void {
    const batch = this.batch;
    if (batch === undefined) return;
    const length = this.batchBytes;
    this.batch = undefined;
    this.batchBytes = 0;
    if (this.socket.destroyed) return;
    const pool = batch.length === BATCH_BYTES ? fullBatches : smallBatches;
    if (this.socket.writableLength > 0) {
      // Queued behind bytes the kernel has not taken, the batch is held until it does, and
      // counted at its used bytes: written in its buffer, a chat a turn to a client that read
      // nothing held 16 KiB for each 4 KiB counted, and one of a few bytes 4 KiB.
      this.write(Buffer.from(batch.subarray(0, length)));
      pool.give(batch);
      return;
    }
    this.write(batch.subarray(0, length));
    // Nothing left in the stream means the kernel took it all: the buffer is free again.
    if (this.backlog === 0) pool.give(batch);
  }

  close(reason: DisconnectReason): void {
    if (this.closing) return;
    this.closing = true;
    this.endReason = reason;
    this.flush();
    this.socket.end();
    stopWaiting(this.socket);
    killAfter(this.limits.closeTimeoutMs, this.socket, () => this.socket.destroy());
  }
}

export interface ListenerOptions {
  host: string;
  port: number;
  limits: StreamLimits;
  /** What clients queue together, shared by a server's listeners (one of its own by default). */
  backlogs?: Backlogs;
  /** What clients hold of unfinished requests together, shared the same way. */
  partials?: PartialFrames;
  /** PEM certificate chain and key: serve TLS instead of plain TCP. */
  tls?: { cert: string | Buffer; key: string | Buffer };
}

/** What a course client reads as "room full": sent to connections over the caps. */
const TOO_MANY = courseFrames({ cmd: Cmd.CONNECT_CHATROOM_FULL });

/** A TCP or TLS listener feeding connections to the chat service. */
export class StreamListener {
  readonly kind: 'tcp' | 'tls';
  readonly stats: TransportStats;
  private readonly server: net.Server;
  private readonly sockets: RawSockets;
  private readonly deadlines: HandshakeDeadlines;
  /** TLS sockets still in their handshake, by remote address and port. */
  private readonly handshaking = new Map<string, { socket: net.Socket; deadline: Deadline }>();
  private readonly backlogs: Backlogs;
  private readonly partials: PartialFrames;

  constructor(
    private readonly chat: Chat,
    private readonly options: ListenerOptions,
    private readonly log: Logger,
  ) {
    this.backlogs = options.backlogs ?? new Backlogs(options.limits, log);
    this.partials = options.partials ?? new PartialFrames(options.limits, log);
    this.sockets = new RawSockets(chat.admission, log);
    this.deadlines = new HandshakeDeadlines(options.limits.handshakeTimeoutMs, log, chat.refusals);
    // Set on each accepted socket's handle before any JavaScript sees it.
    const socketOptions = {
      noDelay: true,
      keepAlive: options.limits.keepAliveMs > 0,
      keepAliveInitialDelay: options.limits.keepAliveMs,
    };
    if (options.tls === undefined) {
      this.kind = 'tcp';
      this.server = net.createServer(socketOptions);
    } else {
      this.kind = 'tls';
      const handshakeTimeout = this.tlsHandshakeMs();
      this.server = tls.createServer({ ...options.tls, handshakeTimeout, ...socketOptions }, (s) =>
        this.secured(s),
      );
      // Node reports a failed or timed-out handshake but leaves the socket open.
      this.server.on('tlsClientError', (err, socket) => {
        this.log.debug({ err }, 'TLS handshake failed');
        socket.destroy();
      });
    }
    // For TLS this is the raw TCP socket, before the handshake begins.
    this.server.on('connection', (socket: net.Socket) => this.accept(socket));
    this.stats = new TransportStats(this.kind);
    // A failed listen() is its caller's to report; log only errors after that.
    this.server.on('error', (err) => {
      if (this.server.listening) this.log.error({ err }, 'listener error');
    });
  }

  private tlsHandshakeMs(): number {
    return this.options.limits.handshakeTimeoutMs || 120_000;
  }

  private accept(socket: net.Socket): void {
    if (this.sockets.admit(socket) !== 'ok') {
      // A banned address is refused like a full server: a course client knows no other word.
      if (this.kind === 'tls') {
        socket.destroy();
        return;
      }
      // A course client reads this "02" as the reply to its CONNECT and reports a full room.
      socket.resume();
      socket.end(TOO_MANY);
      killAfter(Math.min(this.options.limits.closeTimeoutMs, 1000), socket, () => socket.destroy());
      return;
    }
    if (this.kind === 'tcp') {
      this.connect(socket);
      return;
    }
    // Node's own handshakeTimeout only reports, and restarts with every byte.
    const key = `${socket.remoteAddress}|${socket.remotePort}`;
    const entry = {
      socket,
      deadline: new Deadline(socket, this.tlsHandshakeMs(), () => {
        const ip = socket.remoteAddress;
        this.chat.refusals.log(
          'tls-handshake-timeout',
          (held) => this.log.info({ ip, ...held }, 'TLS handshake not finished in time, closing'),
          ip,
        );
      }),
    };
    this.handshaking.set(key, entry);
    socket.once('close', () => {
      if (this.handshaking.get(key) === entry) this.handshaking.delete(key);
    });
  }

  private secured(socket: tls.TLSSocket): void {
    const key = `${socket.remoteAddress}|${socket.remotePort}`;
    this.handshaking.get(key)?.deadline.stop();
    this.handshaking.delete(key);
    this.sockets.guard(socket);
    // A TLS 1.2 client may ask for a new handshake whenever it likes, each a full one for
    // the server: one joined client renegotiating back to back took half a CPU for as long
    // as it stayed. Node's own limit (3 in 10 minutes) only emits 'error', which the guard
    // logs, and the connection lived on. No confab client renegotiates: refuse it, and end
    // the connection that asks (the session ends as lost).
    socket.disableRenegotiation();
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ERR_TLS_RENEGOTIATION_DISABLED' || err.code === 'ERR_TLS_SESSION_ATTACK')
        socket.destroy();
    });
    this.connect(socket);
  }

  /** A session on an accepted (and, for TLS, secured) socket. */
  private connect(socket: net.Socket): void {
    // The connection lives as long as its socket's listeners.
    new StreamConnection(
      socket,
      this.chat,
      this.options.limits,
      this.log,
      this.stats,
      this.deadlines,
      this.backlogs,
      this.partials,
    );
  }

  listen(): Promise<PeerAddress> {
    return listenOn(this.server, { host: this.options.host, port: this.options.port });
  }

  /** New TLS connections get this certificate and key; open ones keep theirs. */
  setCertificate(material: { cert: string | Buffer; key: string | Buffer }): void {
    if (this.server instanceof tls.Server) this.server.setSecureContext(material);
  }

  /**
   * Stops accepting; resolves once every connection is closed, destroying
   * what is left after the close timeout. Handshakes have nothing to flush.
   */
  close(): Promise<void> {
    for (const { socket } of this.handshaking.values()) socket.destroy();
    return this.sockets.close(this.server, this.options.limits.closeTimeoutMs);
  }
}

import type net from 'node:net';
import type { Admission } from '../core/admission.js';
import type { Chat } from '../core/chat.js';
import type { LogLimiter } from '../core/log-limit.js';
import type { DisconnectReason, Logger, Peer, PeerAddress } from '../core/ports.js';
import type { Session } from '../core/session.js';
import type { TransportStats } from './stats.js';

/**
 * The handshake clocks of one listener: the sessions still greeting, in order
 * of arrival, and one timer for the oldest. Every session here gets the same
 * time, so arrival order is expiry order. (A timer per connection would cost
 * each idle one a Timeout, a closure and its context.)
 */
export class HandshakeDeadlines {
  /** When each session's time runs out; joined sessions stay until then and are skipped. */
  private readonly due = new Map<Session, number>();
  private timer: NodeJS.Timeout | undefined;
  private readonly expire = () => this.sweep();

  /**
   * @param ms time allowed from open to CONNECT; 0 = unlimited.
   * @param refusals the chat's limiter of lines a client can cause once per connection
   *   (Chat.refusals), which writes what it held back when the chat stops.
   */
  constructor(
    private readonly ms: number,
    private readonly log: Logger,
    private readonly refusals: LogLimiter,
  ) {}

  start(session: Session): void {
    if (this.ms <= 0 || session.state !== 'greeting') return;
    this.due.set(session, performance.now() + this.ms);
    if (this.timer === undefined) this.arm(this.ms);
  }

  /** The session's connection is gone. */
  stop(session: Session): void {
    this.due.delete(session);
  }

  private arm(ms: number): void {
    this.timer = setTimeout(this.expire, Math.max(1, Math.ceil(ms)));
    this.timer.unref();
  }

  private sweep(): void {
    this.timer = undefined;
    const now = performance.now();
    for (const [session, at] of this.due) {
      if (at > now) {
        this.arm(at - now);
        return;
      }
      this.due.delete(session);
      if (session.state !== 'greeting') continue;
      // A CONNECT still being handled waits for the cluster (Redis stalled): the client did
      // its part in time, and is told what a node cut off tells its clients.
      const waiting = session.pending > 0;
      const remote = session.peer.remote;
      this.refusals.log(
        waiting ? 'connect-waiting' : 'no-connect',
        (held) =>
          this.log.info(
            { remote, ...held },
            waiting
              ? 'CONNECT still waiting for the cluster, closing'
              : 'no CONNECT in time, closing',
          ),
        remote.ip,
      );
      try {
        session.disconnect(waiting ? 'cluster-unavailable' : 'timeout');
      } catch (err) {
        session.failed(err);
      }
    }
  }
}

/** Shared clocks for callers that do not keep their own, by chat, logger and time. */
const sharedDeadlines = new WeakMap<Chat, WeakMap<Logger, Map<number, HandshakeDeadlines>>>();

function deadlinesFor(chat: Chat, ms: number, log: Logger): HandshakeDeadlines {
  let byLog = sharedDeadlines.get(chat);
  if (byLog === undefined) {
    byLog = new WeakMap();
    sharedDeadlines.set(chat, byLog);
  }
  let byMs = byLog.get(log);
  if (byMs === undefined) {
    byMs = new Map();
    byLog.set(log, byMs);
  }
  let deadlines = byMs.get(ms);
  if (deadlines === undefined) {
    deadlines = new HandshakeDeadlines(ms, log, chat.refusals);
    byMs.set(ms, deadlines);
  }
  return deadlines;
}

/**
 * What every transport does when a connection opens: start its session, the
 * handshake clock and the counters. Pair it with endSession once the
 * connection has closed, whoever closed it.
 */
export function startSession(
  chat: Chat,
  peer: Peer,
  stats: TransportStats,
  deadlines: HandshakeDeadlines,
): Session {
  const session = chat.open(peer);
  deadlines.start(session);
  stats.open++;
  stats.accepted++;
  return session;
}

/** Undoes startSession's three, once. */
export function endSession(
  session: Session,
  stats: TransportStats,
  deadlines: HandshakeDeadlines,
  reason: DisconnectReason,
): void {
  deadlines.stop(session);
  stats.open--;
  session.ended(reason);
}

export interface OpenedSession {
  session: Session;
  /** Call once when the connection has closed, whoever closed it. */
  closed(reason: DisconnectReason): void;
}

/** startSession and endSession for a transport that keeps a closure per connection anyway. */
export function openSession(
  chat: Chat,
  peer: Peer,
  stats: TransportStats,
  handshakeTimeoutMs: number,
  log: Logger,
): OpenedSession {
  const deadlines = deadlinesFor(chat, handshakeTimeoutMs, log);
  const session = startSession(chat, peer, stats, deadlines);
  return {
    session,
    closed(reason) {
      endSession(session, stats, deadlines, reason);
    },
  };
}

/**
 * After a graceful close has begun, gives the peer `ms` to finish, then
 * kills the connection. The timer is dropped once `closing` emits 'close'.
 */
export function killAfter(
  ms: number,
  closing: { once(event: 'close', listener: () => void): unknown },
  kill: () => void,
): void {
  const timer = setTimeout(kill, ms);
  timer.unref();
  closing.once('close', () => clearTimeout(timer));
}

/**
 * Connections the kernel may hold completed but not yet accepted. Node's default of 511
 * overflows when a burst arrives while the event loop is busy (a restart's clients all
 * reconnecting, a GC pause): the kernel then drops the handshakes, and each such client
 * waits a second or more for its retry. The kernel cuts any larger request down to
 * net.core.somaxconn (4096 by default since Linux 5.4), so asking for the most it can
 * take leaves the queue's length to that setting: an operator expecting larger bursts
 * raises it, and confab follows.
 */
const LISTEN_BACKLOG = 65_535;

/** Starts a listener and resolves with the address it bound, or rejects. */
export function listenOn(
  server: net.Server,
  options: { host: string; port: number },
): Promise<PeerAddress> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ ...options, backlog: LISTEN_BACKLOG }, () => {
      server.off('error', reject);
      const bound = server.address() as net.AddressInfo;
      resolve({ ip: bound.address, port: bound.port });
    });
  });
}

export function addressOf(ip: string | undefined, port: number | undefined): PeerAddress {
  // IPv4 clients of a dual-stack listener appear as ::ffff:a.b.c.d; show them as IPv4.
  const plain = ip?.startsWith('::ffff:') ? ip.slice(7) : ip;
  return { ip: plain ?? '', port: port ?? 0 };
}

/**
 * One listener's raw sockets, from accept to close. Every listener hands
 * each socket here first, so that it has an error handler before anything
 * can fail on it (an unhandled 'error' ends the process), counts against the
 * connection caps whatever state it is in (TLS handshake, HTTP request,
 * WebSocket before CONNECT), and can be destroyed at the shutdown deadline.
 */
export class RawSockets {
  /** Each socket counted, with the address it was counted against. */
  private readonly sockets = new Map<net.Socket, string>();
  /**
   * One pair of handlers for all of this listener's sockets (`this` is the
   * socket), rather than a pair of closures per socket.
   */
  private readonly onError: (this: net.Socket, err: Error) => void;
  private readonly onClose: (this: net.Socket) => void;

  constructor(
    private readonly admission: Admission,
    log: Logger,
  ) {
    const sockets = this.sockets;
    this.onError = function (this: net.Socket, err: Error) {
      // Its code and message only: Node's HTTP parse errors carry the client's bytes
      // (rawPacket), which made some 211 KB of log a request in the pretty format.
      const { code } = err as NodeJS.ErrnoException;
      const remote = addressOf(this.remoteAddress, this.remotePort);
      log.debug({ err: { code, message: err.message }, remote }, 'socket error');
    };
    this.onClose = function (this: net.Socket) {
      const ip = sockets.get(this);
      if (ip === undefined) return;
      sockets.delete(this);
      admission.release(ip);
    };
  }

  get size(): number {
    return this.sockets.size;
  }

  /**
   * Gives a socket layered on an admitted one (a TLS socket over its TCP
   * socket) the same error handler. Node's own handler on a TLS socket
   * keeps its errors from ending the process but drops them silently after
   * the handshake; this one logs them.
   */
  guard(socket: net.Socket): void {
    socket.on('error', this.onError);
  }

  /**
   * 'ok', or why not: the address is banned, or the caps are full. The
   * caller refuses the socket as its protocol allows.
   */
  admit(socket: net.Socket): 'ok' | 'banned' | 'full' {
    socket.on('error', this.onError);
    const { ip } = addressOf(socket.remoteAddress, socket.remotePort);
    if (this.admission.banned(ip)) return 'banned';
    if (!this.admission.tryOpen(ip)) return 'full';
    this.sockets.set(socket, ip);
    socket.on('close', this.onClose);
    return 'ok';
  }

  /**
   * Stops `server` accepting and resolves once every socket it accepted is
   * closed; whatever is still open `ms` later is destroyed, so a peer that
   * never finishes (a handshake, a request, a close) cannot hold shutdown.
   */
  close(server: net.Server, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        for (const socket of this.sockets.keys()) socket.destroy();
      }, ms);
      server.close(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

/**
 * A deadline on a socket that has not yet reached its next stage: destroys
 * it when `ms` run out, unless stopped first; can be started again.
 */
export class Deadline {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly socket: net.Socket,
    private readonly ms: number,
    private readonly onExpiry: () => void,
  ) {
    socket.once('close', () => this.stop());
    this.start();
  }

  start(): void {
    if (this.socket.destroyed) return;
    if (this.timer !== undefined) {
      this.timer.refresh();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.onExpiry();
      this.socket.destroy();
    }, this.ms);
    this.timer.unref();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

import type net from 'node:net';
import type { Admission } from '../core/admission.js';
import type { Chat } from '../core/chat.js';
import type { DisconnectReason, Logger, Peer, PeerAddress } from '../core/ports.js';
import type { Session } from '../core/session.js';
import type { TransportStats } from './stats.js';

/**
 * Closes the session if it has not joined within `ms` (0 = never).
 * Returns a function that cancels the timer once the connection is gone.
 */
function handshakeDeadline(session: Session, ms: number, log: Logger, peer: Peer): () => void {
  if (ms <= 0 || session.state !== 'greeting') return () => {};
  const timer = setTimeout(() => {
    if (session.state !== 'greeting') return;
    log.info({ remote: peer.remote }, 'no CONNECT in time, closing');
    try {
      session.disconnect('timeout');
    } catch (err) {
      session.failed(err);
    }
  }, ms);
  timer.unref();
  return () => clearTimeout(timer);
}

export interface OpenedSession {
  session: Session;
  /** Call once when the connection has closed, whoever closed it. */
  closed(reason: DisconnectReason): void;
}

/**
 * What every transport does when a connection opens: start its session, the
 * handshake clock and the counters; and, when it closes, undo all three.
 */
export function openSession(
  chat: Chat,
  peer: Peer,
  stats: TransportStats,
  handshakeTimeoutMs: number,
  log: Logger,
): OpenedSession {
  const session = chat.open(peer);
  const cancelDeadline = handshakeDeadline(session, handshakeTimeoutMs, log, peer);
  stats.open++;
  stats.accepted++;
  return {
    session,
    closed(reason) {
      cancelDeadline();
      stats.open--;
      session.ended(reason);
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

/** Starts a listener and resolves with the address it bound, or rejects. */
export function listenOn(
  server: net.Server,
  options: { host: string; port: number; backlog?: number },
): Promise<PeerAddress> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => {
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
  private readonly sockets = new Set<net.Socket>();

  constructor(
    private readonly admission: Admission,
    private readonly log: Logger,
  ) {}

  get size(): number {
    return this.sockets.size;
  }

  /**
   * 'ok', or why not: the address is banned, or the caps are full. The
   * caller refuses the socket as its protocol allows.
   */
  admit(socket: net.Socket): 'ok' | 'banned' | 'full' {
    socket.on('error', (err) => this.log.debug({ err }, 'socket error'));
    const { ip } = addressOf(socket.remoteAddress, socket.remotePort);
    if (this.admission.banned(ip)) return 'banned';
    if (!this.admission.tryOpen(ip)) return 'full';
    this.sockets.add(socket);
    socket.once('close', () => {
      this.sockets.delete(socket);
      this.admission.release(ip);
    });
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
        for (const socket of this.sockets) socket.destroy();
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

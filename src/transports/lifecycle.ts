import type net from 'node:net';
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

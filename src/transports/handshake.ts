import type { Logger, PeerAddress } from '../core/ports.js';
import type { Session } from '../core/session.js';

/**
 * Closes the session if it has not joined within `ms` (0 = never).
 * Returns a function that cancels the timer once the connection is gone.
 */
export function handshakeDeadline(
  session: Session,
  ms: number,
  log: Logger,
  remote: PeerAddress,
): () => void {
  if (ms <= 0 || session.state !== 'greeting') return () => {};
  const timer = setTimeout(() => {
    if (session.state !== 'greeting') return;
    log.info({ remote }, 'no CONNECT in time, closing');
    session.disconnect('timeout');
  }, ms);
  timer.unref();
  return () => clearTimeout(timer);
}

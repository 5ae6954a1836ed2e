import type { Logger } from '../core/ports.js';

/** A connection with bytes written that its client has not taken yet. */
export interface Backlogged {
  /** Bytes queued for the client now: 0 once the kernel has taken them all. */
  queuedBytes(): number;
  /** Closes it as too slow, because all clients together hold too much. */
  shed(queued: number): void;
}

/** The caps it enforces, read at each check (a reload may change them). */
export interface BacklogLimits {
  /** Most bytes queued for one client (its own cap, enforced by its connection). */
  maxQueue: number;
  /** Most bytes queued for all clients together. */
  maxQueueTotal: number;
}

export const OVER_TOTAL =
  'outbound queues of all clients over the limit, disconnecting the slowest';

/**
 * What all clients of a server, on every listener, have queued together.
 * Each client's queue is capped (`maxQueue`), but thousands of clients that
 * read nothing could each hold that much; past `maxQueueTotal` the clients
 * holding most are closed as too slow until the rest fits.
 *
 * Connections report themselves when a write leaves bytes behind. Summing
 * their queues costs a pass over them, made at most once per event-loop
 * turn and only when so many are backlogged that their caps together could
 * pass the total: until then no check can find the total passed, so the
 * common case (a few clients momentarily behind) costs a set insertion.
 */
export class Backlogs {
  private readonly waiting = new Set<Backlogged>();
  private scheduled = false;
  private readonly run = () => this.check();

  constructor(
    private readonly limits: BacklogLimits,
    private readonly log: Logger,
  ) {}

  /** `connection` has bytes its client has not taken. */
  add(connection: Backlogged): void {
    this.waiting.add(connection);
    if (this.scheduled) return;
    if (this.waiting.size * this.limits.maxQueue <= this.limits.maxQueueTotal) return;
    this.scheduled = true;
    setImmediate(this.run);
  }

  /** `connection` has closed. */
  delete(connection: Backlogged): void {
    this.waiting.delete(connection);
  }

  /** Connections reported and not yet found drained. */
  get size(): number {
    return this.waiting.size;
  }

  /** Bytes queued for all clients now (what /metrics shows). */
  queued(): number {
    let total = 0;
    for (const { queued } of this.held()) total += queued;
    return total;
  }

  /** The connections still behind, with what each holds; forgets those that caught up. */
  private held(): { connection: Backlogged; queued: number }[] {
    const held: { connection: Backlogged; queued: number }[] = [];
    for (const connection of this.waiting) {
      const queued = connection.queuedBytes();
      if (queued === 0) this.waiting.delete(connection);
      else held.push({ connection, queued });
    }
    return held;
  }

  private check(): void {
    this.scheduled = false;
    const cap = this.limits.maxQueueTotal;
    const held = this.held();
    let total = 0;
    for (const { queued } of held) total += queued;
    if (total <= cap) return;
    const before = total;
    held.sort((a, b) => b.queued - a.queued);
    let shed = 0;
    for (const { connection, queued } of held) {
      if (total <= cap) break;
      this.waiting.delete(connection);
      total -= queued;
      shed++;
      // One connection's failure to close must not keep the others from it.
      try {
        connection.shed(queued);
      } catch (err) {
        this.log.error({ err }, 'closing a slow client failed');
      }
    }
    this.log.warn({ queued: before, limit: cap, disconnected: shed }, OVER_TOTAL);
  }
}

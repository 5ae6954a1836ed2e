import type { Logger } from '../core/ports.js';
import { MAX_HELD_BYTES } from '../core/session.js';
import { Looks, Progress } from './progress.js';

/** A connection with bytes written that its client has not taken yet. */
export interface Backlogged {
  /**
   * Bytes queued for the client now, the live events held behind its replays included:
   * 0 once the kernel has taken them all and nothing is held.
   */
  queuedBytes(): number;
  /** Of those, the live events held behind its replays. */
  heldBytes(): number;
  /** Bytes the client has taken so far (only ever grows, give or take framing). */
  takenBytes(): number;
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

/** A connection still behind, as a look found it. */
interface Behind {
  connection: Backlogged;
  queued: number;
  /** How slow its client is to take its bytes, lowest first (Progress.rank). */
  rank: number;
  progress: Progress;
  /** Live events held behind its replays. */
  live: number;
}

/**
 * What all clients of a server, on every listener, have queued together.
 * Each client's queue is capped (`maxQueue`), but thousands of clients that
 * read nothing could each hold that much; past `maxQueueTotal` clients are
 * closed as too slow until the rest fits.
 *
 * The slowest go first: how fast each client takes its bytes is looked at
 * every SAMPLE_MS while any is behind (Progress), and those that took
 * nothing since the first look go before those that read, however long ago
 * either fell behind, and those not looked at yet between them: a client
 * that just fell behind may be reading a history page on a slow link.
 * A slow reader is seen taking bytes only when its kernel frees a third of
 * its send buffer, seconds apart at 100 KB/s, so an order by when each was
 * last seen taking more let a stream of new clients that read nothing, each
 * fresher than its last step, get it closed first. Of clients alike (all
 * that took nothing, say), the ones holding most live events behind a replay
 * go first: a replay is sent only as its client takes it, while held live
 * events grow with the room's traffic whoever reads. Then the newest, then
 * the one holding most.
 *
 * Connections report themselves when a write leaves bytes behind. Summing
 * their queues costs a pass over them, made at most once per event-loop
 * turn and only when so many are backlogged that their caps together could
 * pass the total: until then no check can find the total passed, so the
 * common case (a few clients momentarily behind) costs a map lookup, and a
 * look every SAMPLE_MS.
 */
export class Backlogs {
  /** Each connection behind, and how fast its client takes its bytes. */
  private readonly waiting = new Map<Backlogged, Progress>();
  /** Those of them that held live events behind a replay when last seen. */
  private readonly holding = new Set<Backlogged>();
  private scheduled = false;
  private readonly run = () => this.check();
  private readonly looks = new Looks((tick) => {
    for (const [connection, progress] of this.waiting) {
      if (connection.queuedBytes() === 0) this.delete(connection);
      else progress.look(connection.takenBytes(), tick);
    }
    return this.waiting.size > 0;
  });

  constructor(
    private readonly limits: BacklogLimits,
    private readonly log: Logger,
  ) {}

  /**
   * `connection` has bytes its client has not taken; `holding` when they are live events held
   * behind a replay (up to MAX_HELD_BYTES beside its queue's cap).
   */
  add(connection: Backlogged, holding = false): void {
    if (!this.waiting.has(connection)) {
      this.waiting.set(connection, new Progress(connection.takenBytes()));
      this.looks.start();
    }
    if (holding) this.holding.add(connection);
    if (this.scheduled) return;
    const most = this.waiting.size * this.limits.maxQueue + this.holding.size * MAX_HELD_BYTES;
    if (most <= this.limits.maxQueueTotal) return;
    this.scheduled = true;
    setImmediate(this.run);
  }

  /** `connection` has closed, or its client has taken everything and nothing is held for it. */
  delete(connection: Backlogged): void {
    this.waiting.delete(connection);
    this.holding.delete(connection);
  }

  /** Connections reported and not yet found drained. */
  get size(): number {
    return this.waiting.size;
  }

  /** Bytes queued for all clients now (what /metrics shows). */
  queued(): number {
    let total = 0;
    for (const connection of this.waiting.keys()) {
      const queued = connection.queuedBytes();
      if (queued === 0) this.delete(connection);
      total += queued;
    }
    return total;
  }

  private check(): void {
    this.scheduled = false;
    const cap = this.limits.maxQueueTotal;
    const tick = this.looks.ticks;
    const held: Behind[] = [];
    let total = 0;
    for (const [connection, progress] of this.waiting) {
      const queued = connection.queuedBytes();
      if (queued === 0) {
        this.delete(connection);
        continue;
      }
      total += queued;
      held.push({
        connection,
        queued,
        rank: progress.rank(connection.takenBytes(), tick),
        progress,
        live: 0,
      });
    }
    if (total <= cap) return;
    const before = total;
    for (const behind of held) behind.live = behind.connection.heldBytes();
    // Of those alike, the newest first: a wave of new clients that read nothing looks, for the
    // seconds its kernel hides a slow reader's steps, as still as that reader.
    held.sort(
      (a, b) =>
        a.rank - b.rank ||
        b.live - a.live ||
        b.progress.since - a.progress.since ||
        b.queued - a.queued,
    );
    let shed = 0;
    for (const { connection, queued } of held) {
      if (total <= cap) break;
      this.delete(connection);
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

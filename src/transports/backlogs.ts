import type { Logger } from '../core/ports.js';
import { MAX_HELD_BYTES } from '../core/session.js';

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

/** How often the clients behind are looked at for bytes taken, in milliseconds. */
export const SAMPLE_MS = 200;

export const OVER_TOTAL =
  'outbound queues of all clients over the limit, disconnecting the slowest';

/**
 * What all clients of a server, on every listener, have queued together.
 * Each client's queue is capped (`maxQueue`), but thousands of clients that
 * read nothing could each hold that much; past `maxQueueTotal` the clients
 * holding most are closed as too slow until the rest fits.
 *
 * The slowest go first: those whose clients have taken nothing for longest
 * (since they fell behind at most), looked at every SAMPLE_MS while any is
 * behind rather than only when the total is passed, since a client that
 * reads nothing still "takes" bytes at first, while its kernel's buffers
 * fill. Of those alike, the ones holding most live events behind a replay
 * go first, then the ones holding most. A slow reader is seen taking bytes
 * only when its kernel frees a third of its send buffer, seconds apart at
 * 100 KB/s, so until then it looks as stalled as a client that reads
 * nothing; but what it holds is its replay, which is sent only as it takes
 * it, while held live events grow with the room's traffic whoever reads.
 * So many stalled clients holding a little each cannot get a client that
 * reads steadily but momentarily holds more (a history page on a slow
 * link) closed in their place.
 *
 * Connections report themselves when a write leaves bytes behind. Summing
 * their queues costs a pass over them, made at most once per event-loop
 * turn and only when so many are backlogged that their caps together could
 * pass the total: until then no check can find the total passed, so the
 * common case (a few clients momentarily behind) costs a map lookup.
 */
/** A connection still behind, as a look found it. */
interface Behind {
  connection: Backlogged;
  queued: number;
  /** The tick since which its client has taken nothing. */
  since: number;
  /** Live events held behind its replays (when looked at). */
  live: number;
}

export class Backlogs {
  /** Each connection behind: what its client had taken when last seen taking more, at which tick. */
  private readonly waiting = new Map<Backlogged, { taken: number; since: number }>();
  /** Those of them that held live events behind a replay when last seen. */
  private readonly holding = new Set<Backlogged>();
  private scheduled = false;
  private readonly run = () => this.check();
  /** Looks at who took more every SAMPLE_MS while anyone is behind, counting `ticks`. */
  private sampler: NodeJS.Timeout | undefined;
  private ticks = 0;
  private readonly sample = () => {
    this.ticks++;
    this.held(true);
    if (this.waiting.size > 0) return;
    clearInterval(this.sampler);
    this.sampler = undefined;
  };

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
      this.waiting.set(connection, { taken: connection.takenBytes(), since: this.ticks });
      if (this.sampler === undefined) {
        this.sampler = setInterval(this.sample, SAMPLE_MS);
        // It only ever looks; it must not keep a stopping process alive.
        this.sampler.unref();
      }
    }
    if (holding) this.holding.add(connection);
    if (this.scheduled) return;
    const most = this.waiting.size * this.limits.maxQueue + this.holding.size * MAX_HELD_BYTES;
    if (most <= this.limits.maxQueueTotal) return;
    this.scheduled = true;
    setImmediate(this.run);
  }

  /** `connection` has closed. */
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
    for (const { queued } of this.held()) total += queued;
    return total;
  }

  /**
   * The connections still behind, with what each holds and since which tick its client has
   * taken nothing; forgets those that caught up. A `look` notes who took more.
   */
  private held(look = false): Behind[] {
    const held: Behind[] = [];
    for (const [connection, seen] of this.waiting) {
      const queued = connection.queuedBytes();
      if (queued === 0) {
        this.waiting.delete(connection);
        this.holding.delete(connection);
        continue;
      }
      if (look) {
        const taken = connection.takenBytes();
        if (taken > seen.taken) {
          seen.taken = taken;
          seen.since = this.ticks;
        }
      }
      held.push({ connection, queued, since: seen.since, live: look ? connection.heldBytes() : 0 });
    }
    return held;
  }

  private check(): void {
    this.scheduled = false;
    const cap = this.limits.maxQueueTotal;
    const held = this.held(true);
    let total = 0;
    for (const { queued } of held) total += queued;
    if (total <= cap) return;
    const before = total;
    held.sort((a, b) => a.since - b.since || b.live - a.live || b.queued - a.queued);
    let shed = 0;
    for (const { connection, queued } of held) {
      if (total <= cap) break;
      this.waiting.delete(connection);
      this.holding.delete(connection);
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

import type { Logger } from '../core/ports.js';
import { Looks, Progress } from './progress.js';

/** A connection that may hold part of a request whose end has not arrived. */
export interface Unfinished {
  /** Whether its client has joined (a member's request, not a greeting's). */
  readonly joined: boolean;
  /** Closes it: all clients together hold too much of unfinished requests. */
  shedUnfinished(): void;
}

/** The cap it enforces, read at each check (a reload may change it). */
export interface PartialLimits {
  /** Largest request (one connection's own cap on what it holds unfinished). */
  maxFrame: number;
  /** Most bytes of unfinished requests held for all clients together. */
  maxPartialTotal: number;
}

export const OVER_PARTIAL =
  'unfinished requests of all clients over the limit, disconnecting those not joined, then the slowest';

/** What one connection holds of an unfinished request. */
interface Held {
  /** Memory held for it. */
  bytes: number;
  /** Its bytes that have arrived so far, which grow while it arrives. */
  arrived: number;
  /** A count of requests begun, oldest lowest. */
  began: number;
  progress: Progress;
}

/**
 * The unfinished requests of all clients of a server, on every listener (a WebSocket's
 * message counts with its framing, its fragments and the frame under way). Each is
 * capped at --max-frame, but thousands of connections that each send most of a frame and
 * never its end held that much each, and more: 9,750 TCP connections that sent 64 KB of a
 * CONNECT took a server from 92 to 857 MB. Past `maxPartialTotal` connections are closed
 * until the rest fits within three quarters of it, so the next few bytes held anywhere do
 * not find the total full again at once.
 *
 * Connections whose client has not joined go first: an honest CONNECT is a few hundred bytes
 * that arrive at once, and connections growing one faster than a member's chat came over a
 * slow link got that member closed in their place. Then the slowest: how fast each request
 * arrives is looked at every SAMPLE_MS while any is unfinished (Progress): those that have
 * not grown since the first look go first, then those not looked at yet, then those still
 * arriving, slowest first; of those alike, the ones begun first. An honest request is
 * unfinished only while its pieces arrive: closing those holding most let connections each
 * holding a little less than a long chat get the client that sent one closed in their place,
 * and closing those begun first let connections that stopped after their first piece, opened
 * after a chat on a slow link began, get its sender closed.
 *
 * A connection reports what it holds after each read while it holds anything: most reads end
 * on a frame's end, hold nothing before or after, and cost one comparison.
 */
export class PartialFrames {
  private readonly holding = new Map<Unfinished, Held>();
  private total = 0;
  private begun = 0;
  private readonly looks = new Looks((tick) => {
    for (const held of this.holding.values()) held.progress.look(held.arrived, tick);
    return this.holding.size > 0;
  });

  constructor(
    private readonly limits: PartialLimits,
    private readonly log: Logger,
  ) {}

  /**
   * `connection` holds `bytes` of memory for an unfinished request now (0 once none, or
   * closed), of which `arrived` bytes have arrived (the same when they are what it holds).
   */
  update(connection: Unfinished, bytes: number, arrived = bytes): void {
    const held = this.holding.get(connection);
    if (held !== undefined) {
      // Fewer bytes than before: a request ended and the next began in the same read.
      if (arrived < held.arrived) {
        held.progress = new Progress(arrived);
        held.began = this.begun++;
      }
      held.arrived = arrived;
    }
    const before = held?.bytes ?? 0;
    if (bytes === before) return;
    this.total += bytes - before;
    if (bytes === 0) this.holding.delete(connection);
    else if (held === undefined) {
      const progress = new Progress(arrived);
      this.holding.set(connection, { bytes, arrived, began: this.begun++, progress });
      this.looks.start();
    } else held.bytes = bytes;
    // A single request of the largest size always fits.
    const cap = Math.max(this.limits.maxPartialTotal, this.limits.maxFrame);
    if (this.total > cap) this.shed(cap);
  }

  private shed(cap: number): void {
    const before = this.total;
    const target = Math.max((cap * 3) / 4, this.limits.maxFrame);
    const tick = this.looks.ticks;
    const slowest = [...this.holding]
      .map(([connection, held]) => ({
        connection,
        held,
        member: connection.joined ? 1 : 0,
        rank: held.progress.rank(held.arrived, tick),
      }))
      .sort((a, b) => a.member - b.member || a.rank - b.rank || a.held.began - b.held.began);
    let shed = 0;
    for (const { connection, held } of slowest) {
      if (this.total <= target) break;
      this.holding.delete(connection);
      this.total -= held.bytes;
      shed++;
      // One connection's failure to close must not keep the others from it.
      try {
        connection.shedUnfinished();
      } catch (err) {
        this.log.error({ err }, 'closing a client holding an unfinished request failed');
      }
    }
    this.log.warn({ held: before, limit: cap, disconnected: shed }, OVER_PARTIAL);
  }
}

import type { Logger } from '../core/ports.js';

/** A connection that may hold part of a request whose end has not arrived. */
export interface Unfinished {
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
  'unfinished requests of all clients over the limit, disconnecting those unfinished longest';

/**
 * The unfinished requests of all clients of a server, on every listener (a WebSocket's
 * message counts with its framing, its fragments and the frame under way). Each is
 * capped at --max-frame, but thousands of connections that each send most of a frame and
 * never its end held that much each, and more: 9,750 TCP connections that sent 64 KB of a
 * CONNECT took a server from 92 to 857 MB. Past `maxPartialTotal` the connections whose
 * unfinished request began longest ago are closed until the rest fits within three quarters
 * of it, so the next few bytes held anywhere do not find the total full again at once. An
 * honest client's request is unfinished for the moments between its pieces; closing those
 * holding most instead let connections each holding a little less than a long chat get the
 * client that sent one closed in their place.
 *
 * A connection reports what it holds after each read only when that changes: most reads end
 * on a frame's end, hold nothing before or after, and cost one comparison.
 */
export class PartialFrames {
  /** What each holds, and since when (`began`: a count of requests begun, oldest lowest). */
  private readonly holding = new Map<Unfinished, { bytes: number; began: number }>();
  private total = 0;
  private begun = 0;

  constructor(
    private readonly limits: PartialLimits,
    private readonly log: Logger,
  ) {}

  /** `connection` holds `bytes` of an unfinished request now (0 once none, or closed). */
  update(connection: Unfinished, bytes: number): void {
    const held = this.holding.get(connection);
    const before = held?.bytes ?? 0;
    if (bytes === before) return;
    this.total += bytes - before;
    if (bytes === 0) this.holding.delete(connection);
    else if (held === undefined) this.holding.set(connection, { bytes, began: this.begun++ });
    else held.bytes = bytes;
    // A single request of the largest size always fits.
    const cap = Math.max(this.limits.maxPartialTotal, this.limits.maxFrame);
    if (this.total > cap) this.shed(cap);
  }

  private shed(cap: number): void {
    const before = this.total;
    const target = Math.max((cap * 3) / 4, this.limits.maxFrame);
    const oldest = [...this.holding].sort((a, b) => a[1].began - b[1].began);
    let shed = 0;
    for (const [connection, { bytes }] of oldest) {
      if (this.total <= target) break;
      this.holding.delete(connection);
      this.total -= bytes;
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

/**
 * Per-transport counters, kept as plain numbers so the hot path pays an
 * increment, not a metrics-library call; /metrics reads them when scraped.
 */
export class TransportStats {
  /** Connections open now. */
  open = 0;
  accepted = 0;
  /** Frames received (requests, valid or not). */
  messagesIn = 0;
  /** Messages queued for clients (one per recipient of a broadcast). */
  messagesOut = 0;
  /** The most bytes ever waiting for one client. */
  queueHighWater = 0;

  constructor(readonly transport: string) {}

  /**
   * Counts one message for a client with `queued` bytes already waiting, and
   * says whether adding `size` more would pass `cap` (a slow consumer). A queue holds at
   * most `cap`, or one message larger than it.
   */
  overflows(queued: number, size: number, cap: number): boolean {
    this.messagesOut++;
    if (queued > this.queueHighWater) this.queueHighWater = queued;
    // With nothing queued, one message fits whatever its size: a chat within --max-message
    // can encode past a small cap (24 KB of escaped controls), and cutting off every reader
    // for it would let one sender empty the room.
    return queued > 0 && queued + size > cap;
  }
}

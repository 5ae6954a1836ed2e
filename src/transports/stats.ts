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
   * Counts one message for a client with `queued` bytes waiting, `backlog` of them left
   * unsent by the socket (the rest is this turn's batch), and says whether adding `size`
   * more would pass `cap` (a slow consumer).
   */
  overflows(backlog: number, queued: number, size: number, cap: number): boolean {
    this.messagesOut++;
    if (queued > this.queueHighWater) this.queueHighWater = queued;
    // A client whose system took everything so far is keeping up, whatever this turn
    // brings: a chat within --max-message can encode past a small cap (24 KB of escaped
    // controls), and cutting off every reader for it, or for it and a chat before it in
    // the same turn, would let one sender empty the room. What one turn adds is bounded by
    // the batch, which is written once full.
    return backlog > 0 && queued + size > cap;
  }
}

/** What one held-back line would have written, given how many lines of its kind were held. */
type Write = (extra: { held?: number }) => void;

interface Kind {
  /** Until when lines of the kind are held back. */
  until: number;
  held: number;
  /** The last line held back: written with the count when the interval ends. */
  last: Write | undefined;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * Log lines a client can cause once per connection (a refusal at accept, say) would let one
 * address write thousands of lines a second: of each kind, one is written per interval. At
 * the end of an interval in which lines were held back, the last of them is written with
 * `held`, their count, so a flood that stops is still told in full; it starts the next
 * interval, so a flood that goes on writes one line per interval.
 */
export class LogLimiter {
  private readonly kinds = new Map<string, Kind>();

  constructor(
    private readonly intervalMs: number,
    private readonly clock: () => number = Date.now,
  ) {}

  /**
   * Writes the line now (`write({})`), or holds it back. Kinds are the caller's fixed names,
   * so the map stays as small as the code that calls it.
   */
  log(kind: string, write: Write): void {
    const now = this.clock();
    const seen = this.kinds.get(kind);
    // A clock that stepped back (the chat's follows Redis's in a cluster) ends the interval.
    if (seen !== undefined && now < seen.until && now >= seen.until - this.intervalMs) {
      seen.held++;
      seen.last = write;
      if (seen.timer === undefined) {
        seen.timer = setTimeout(() => this.endInterval(kind), seen.until - now);
        seen.timer.unref();
      }
      return;
    }
    if (seen?.timer !== undefined) clearTimeout(seen.timer);
    this.startInterval(kind, now);
    // Held back before, and not yet told (the timer had not run): told with this one.
    write(seen === undefined || seen.held === 0 ? {} : { held: seen.held });
  }

  /** Writes what is held back now, and forgets every kind: when the process stops. */
  flush(): void {
    for (const kind of [...this.kinds.keys()]) this.endInterval(kind);
    for (const seen of this.kinds.values()) clearTimeout(seen.timer);
    this.kinds.clear();
  }

  private endInterval(kind: string): void {
    const seen = this.kinds.get(kind);
    if (seen === undefined || seen.held === 0 || seen.last === undefined) return;
    clearTimeout(seen.timer);
    this.startInterval(kind, this.clock());
    seen.last({ held: seen.held });
  }

  /** Lines of `kind` are held back from `now` on, for an interval. */
  private startInterval(kind: string, now: number): void {
    this.kinds.set(kind, {
      until: now + this.intervalMs,
      held: 0,
      last: undefined,
      timer: undefined,
    });
  }
}

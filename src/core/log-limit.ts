/** What a line tells of the lines of its kind held back before it. */
export interface Held {
  /** How many. */
  held?: number;
  /** From which addresses (as the callers gave them), how many each: the first few. */
  heldFrom?: Record<string, number>;
  /** How many came from addresses past those. */
  heldFromOthers?: number;
}

/** What one held-back line would have written, given what was held back of its kind. */
type Write = (extra: Held) => void;

/** Addresses counted apart in a kind's held-back lines: a flood from many shows as a count. */
const HELD_ADDRESSES = 8;

interface Kind {
  /** Until when lines of the kind are held back. */
  until: number;
  held: number;
  /** Held-back lines by address, the first HELD_ADDRESSES; `others` counts the rest. */
  from: Map<string, number>;
  others: number;
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
   * so the map stays as small as the code that calls it. `from`, the client's address, is
   * counted while lines are held back, so the count says who caused them.
   */
  log(kind: string, write: Write, from: string | undefined): void {
    const now = this.clock();
    const seen = this.kinds.get(kind);
    // A clock that stepped back (the chat's follows Redis's in a cluster) ends the interval.
    if (seen !== undefined && now < seen.until && now >= seen.until - this.intervalMs) {
      seen.held++;
      seen.last = write;
      if (from !== undefined) {
        const n = seen.from.get(from);
        if (n !== undefined) seen.from.set(from, n + 1);
        else if (seen.from.size < HELD_ADDRESSES) seen.from.set(from, 1);
        else seen.others++;
      }
      if (seen.timer === undefined) {
        seen.timer = setTimeout(() => this.endInterval(kind), seen.until - now);
        seen.timer.unref();
      }
      return;
    }
    if (seen?.timer !== undefined) clearTimeout(seen.timer);
    this.startInterval(kind, now);
    // Held back before, and not yet told (the timer had not run): told with this one.
    write(seen === undefined || seen.held === 0 ? {} : heldOf(seen));
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
    seen.last(heldOf(seen));
  }

  /** Lines of `kind` are held back from `now` on, for an interval. */
  private startInterval(kind: string, now: number): void {
    this.kinds.set(kind, {
      until: now + this.intervalMs,
      held: 0,
      from: new Map(),
      others: 0,
      last: undefined,
      timer: undefined,
    });
  }
}

function heldOf(seen: Kind): Held {
  const held: Held = { held: seen.held };
  if (seen.from.size > 0) held.heldFrom = Object.fromEntries(seen.from);
  if (seen.others > 0) held.heldFromOthers = seen.others;
  return held;
}

/** How often a client's progress is looked at, while any is watched, in milliseconds. */
export const SAMPLE_MS = 200;

/**
 * How fast one client moves something along (the bytes it took of its queue, the bytes of a
 * request that arrived), from regular looks. Until a look finds it has not moved since the
 * one before, it is moving as fast as the kernel lets it (a new reader's socket buffers
 * filling, a request arriving whole); from then on, its speed is what it moved per look
 * since that one, so a client that filled its buffers and stopped is at 0 however recently
 * it began, and one that reads slowly, in steps seconds apart, is above it once a step is
 * seen. Before the first look nothing is known of it.
 */
export class Progress {
  private looked = false;
  private stalledAt: number | undefined;
  private atStall = 0;

  constructor(private last: number) {}

  /** A regular look, the `tick`th. A value lower than the last starts it over (a new request). */
  look(value: number, tick: number): void {
    this.looked = true;
    if (value < this.last) this.stalledAt = undefined;
    else if (value === this.last && this.stalledAt === undefined) {
      this.stalledAt = tick;
      this.atStall = value;
    }
    this.last = value;
  }

  /**
   * Lowest for the slowest, with `value` where it is now, after look `tick`: 0 for one that
   * has not moved since it first stood still; then one not looked at yet, which may be
   * anything (many new clients at once must not push out one seen moving); then the others,
   * by speed.
   */
  rank(value: number, tick: number): number {
    if (!this.looked) return 1;
    if (this.stalledAt === undefined) return Number.POSITIVE_INFINITY;
    const speed = (Math.max(value, this.last) - this.atStall) / Math.max(1, tick - this.stalledAt);
    return speed === 0 ? 0 : 2 + speed;
  }

  /** The look at which it first stood still; Infinity until then. */
  get stalledSince(): number {
    return this.stalledAt ?? Number.POSITIVE_INFINITY;
  }
}

/**
 * Calls `look` with a count of its calls every SAMPLE_MS, from `start` while it returns
 * true (something is still watched); unref'd, as it only ever looks.
 */
export class Looks {
  ticks = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly run = () => {
    this.ticks++;
    if (this.look(this.ticks)) return;
    clearInterval(this.timer);
    this.timer = undefined;
  };

  constructor(private readonly look: (tick: number) => boolean) {}

  start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(this.run, SAMPLE_MS);
    this.timer.unref();
  }
}

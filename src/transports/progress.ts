/** How often a client's progress is looked at, while any is watched, in milliseconds. */
export const SAMPLE_MS = 200;

/**
 * How fast one client moves something along (the bytes it took of its queue, the bytes of a
 * request that arrived), from regular looks: what it moved per look since the first. What a
 * new reader's kernel takes at once, before the first look, counts for nothing, so a client
 * that filled its buffers and stopped is at 0 however recently it began, and one that reads
 * slowly, in steps seconds apart, is above it once a step is seen. Before the first look
 * nothing is known of it. The value only grows; a lower one counts as no move.
 */
export class Progress {
  private firstLook: number | undefined;
  private atFirstLook = 0;

  constructor(private last: number) {}

  /** A regular look, the `tick`th. */
  look(value: number, tick: number): void {
    if (this.firstLook === undefined) {
      this.firstLook = tick;
      this.atFirstLook = Math.max(value, this.last);
    }
    this.last = Math.max(value, this.last);
  }

  /**
   * Lowest for the slowest, with `value` where it is now, after look `tick`: 0 for one that
   * has not moved since the first look, 2 and more for the others, by speed; and 1, between
   * them, for one not looked at yet, which may be anything.
   */
  rank(value: number, tick: number): number {
    if (this.firstLook === undefined) return 1;
    const moved = Math.max(value, this.last) - this.atFirstLook;
    return moved <= 0 ? 0 : 2 + moved / Math.max(1, tick - this.firstLook);
  }

  /** The look it was first seen at; Infinity before. */
  get since(): number {
    return this.firstLook ?? Number.POSITIVE_INFINITY;
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

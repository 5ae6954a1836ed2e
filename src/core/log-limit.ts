/**
 * Log lines a client can cause once per connection (a refusal at accept, say) would let one
 * address write thousands of lines a second: of each kind, one passes per interval, and the
 * next one that passes says how many were held back in between.
 */
export class LogLimiter {
  private readonly kinds = new Map<string, { until: number; held: number }>();

  constructor(
    private readonly intervalMs: number,
    private readonly clock: () => number = Date.now,
  ) {}

  /**
   * Fields to log this line with (`{ held }` when lines of its kind were held back since the
   * last one), or undefined to hold it back. Kinds are the caller's fixed names, so the map
   * stays as small as the code that calls it.
   */
  pass(kind: string): { held?: number } | undefined {
    const now = this.clock();
    const seen = this.kinds.get(kind);
    if (seen !== undefined && now < seen.until) {
      seen.held++;
      return undefined;
    }
    this.kinds.set(kind, { until: now + this.intervalMs, held: 0 });
    return seen === undefined || seen.held === 0 ? {} : { held: seen.held };
  }
}

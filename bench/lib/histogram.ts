/**
 * Latency histogram in microseconds: 1 µs buckets below 10 ms, 100 µs buckets
 * up to 1 s, one overflow bucket. Fixed memory, no allocation per sample.
 */
const FINE = 10_000;
const COARSE_STEP = 100;
const COARSE = (1_000_000 - FINE) / COARSE_STEP;

export class Histogram {
  private readonly counts = new Float64Array(FINE + COARSE + 1);
  count = 0;

  record(us: number): void {
    const v = Math.max(0, us);
    const i =
      v < FINE
        ? Math.floor(v)
        : Math.min(FINE + Math.floor((v - FINE) / COARSE_STEP), FINE + COARSE);
    this.counts[i]!++;
    this.count++;
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
  }

  /** The value at quantile q (0..1), in microseconds. */
  quantile(q: number): number {
    if (this.count === 0) return Number.NaN;
    const target = Math.ceil(q * this.count);
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i]!;
      if (seen >= target) return i < FINE ? i + 0.5 : FINE + (i - FINE + 0.5) * COARSE_STEP;
    }
    return Number.POSITIVE_INFINITY;
  }
}

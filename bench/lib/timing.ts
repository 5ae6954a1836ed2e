/**
 * Times in-process steps: each is warmed up, then timed over `reps` calls, in
 * `rounds` rounds with the steps interleaved so drift on a shared machine
 * touches them alike. Returns each step's best time per call, in ns.
 */
export function bestNsPerCall(
  steps: Record<string, () => void>,
  { rounds, warmup, reps }: { rounds: number; warmup: number; reps: number },
): Map<string, number> {
  const best = new Map<string, number>();
  for (let round = 0; round < rounds; round++) {
    for (const [name, step] of Object.entries(steps)) {
      for (let i = 0; i < warmup; i++) step();
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < reps; i++) step();
      const ns = Number(process.hrtime.bigint() - t0) / reps;
      best.set(name, Math.min(best.get(name) ?? Number.POSITIVE_INFINITY, ns));
    }
  }
  return best;
}

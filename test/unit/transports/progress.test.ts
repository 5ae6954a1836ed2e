/** Progress: how fast a client moves its bytes along, from regular looks. */
import { describe, expect, it } from 'vitest';
import { Progress } from '../../../src/transports/progress.js';

/** A Progress looked at `looks` times, moving `step` bytes between looks. */
function moving(step: number, looks: number, start = 0): { progress: Progress; value: number } {
  const progress = new Progress(start);
  let value = start;
  for (let tick = 1; tick <= looks; tick++) {
    progress.look(value, tick);
    value += step;
  }
  return { progress, value: value - step };
}

describe('Progress', () => {
  it('ranks still below not looked at, below moving, and movers by speed, never-still ones too', () => {
    const still = moving(0, 5, 4_000_000);
    const unknown = new Progress(64_000);
    // Trickling without a pause is ranked by its speed, not taken for the fastest.
    const trickle = moving(150, 5);
    const steady = moving(1_400, 5);
    expect(still.progress.rank(still.value, 5)).toBe(0);
    expect(unknown.rank(64_000, 5)).toBe(1);
    const ranks = [trickle, steady].map(({ progress, value }) => progress.rank(value, 5));
    expect(ranks[0]).toBeGreaterThan(1);
    expect(ranks[0]).toBeLessThan(ranks[1]!);
  });

  it('counts nothing a kernel took before the first look, and a count going down as no move', () => {
    const progress = new Progress(0);
    progress.look(4_000_000, 1);
    progress.look(3_999_950, 2);
    expect(progress.rank(3_999_900, 3)).toBe(0);
    expect(progress.rank(4_000_100, 3)).toBeGreaterThan(1);
  });
});

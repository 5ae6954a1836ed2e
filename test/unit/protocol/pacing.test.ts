import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TokenBucket } from '../../../src/core/rate-limit.js';
import { parseLimits, SendPacer } from '../../../src/protocol/pacing.js';

/**
 * Plays a client that paces with SendPacer against the server's own bucket:
 * requests wanted at `wants` (ms), sent when the pacer allows, and arriving
 * after per-request delays (TCP keeps their order). Returns how many the
 * server refused and when each was sent.
 */
function play(
  rate: number,
  burst: number,
  serverHeadStart: number,
  wants: number[],
  delays: number[],
): { refused: number; sentAt: number[] } {
  const start = 1_000_000;
  const server = new TokenBucket(rate, burst, start - serverHeadStart);
  const pacer = new SendPacer({ rate, burst }, start);
  let clock = start;
  let lastArrival = 0;
  let refused = 0;
  const sentAt: number[] = [];
  for (let i = 0; i < wants.length; i++) {
    clock = Math.max(clock, start + wants[i]!);
    // Bounded: each wait is at most one token's worth.
    for (let spins = 0; spins < 1000; spins++) {
      const wait = pacer.delay(clock);
      if (wait === 0) break;
      clock += wait;
    }
    pacer.take(clock);
    sentAt.push(clock);
    const arrival = Math.max(lastArrival, clock + delays[i % delays.length]!);
    lastArrival = arrival;
    if (!server.take(arrival)) refused++;
  }
  return { refused, sentAt };
}

describe('SendPacer', () => {
  it('is never refused by the server bucket with the same limits, whatever the demand and jitter', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 200 }),
        fc.integer({ min: 1, max: 100 }),
        fc.integer({ min: 0, max: 5000 }),
        fc.array(fc.integer({ min: 0, max: 3000 }), { minLength: 1, maxLength: 300 }),
        fc.integer({ min: 0, max: 2000 }),
        fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 20 }),
        (rate, burst, headStart, gaps, latency, jitters) => {
          const tolerance = new SendPacer({ rate, burst }, 0).jitterToleranceMs;
          // Any latency, varying by just under what the pacer promises to absorb.
          const delays = jitters.map((j) => latency + j * tolerance * 0.99);
          // Bursts of demand: many requests wanted at the same moment, then gaps.
          let t = 0;
          const wants = gaps.map((g) => {
            if (g % 3 !== 0) t += g;
            return t;
          });
          expect(play(rate, burst, headStart, wants, delays).refused).toBe(0);
        },
      ),
    );
  });

  it('absorbs about 200 ms of jitter at the default limits, and the property above can fail', () => {
    expect(new SendPacer({ rate: 20, burst: 40 }, 0).jitterToleranceMs).toBeCloseTo(205, 0);
    // The first request of a paste held up 400 ms, the rest not: while it is
    // on its way the server's full bucket cannot fill further, then the paste
    // and the paced lines sent meanwhile arrive together.
    const wants = new Array<number>(60).fill(0);
    const delays = new Array<number>(60).fill(0);
    delays[0] = 400;
    expect(play(20, 40, 0, wants, delays).refused).toBeGreaterThan(0);
  });

  it('sends a paste of 100 lines at about 90% of the rate after 90% of the burst', () => {
    const { sentAt, refused } = play(20, 40, 0, new Array<number>(100).fill(0), [0]);
    expect(refused).toBe(0);
    const start = sentAt[0]!;
    expect(sentAt.slice(0, 36).every((t) => t === start)).toBe(true);
    expect(sentAt[36]! - start).toBeGreaterThan(0);
    // 64 more at 18 per second.
    expect(sentAt[99]! - start).toBeGreaterThanOrEqual((64 / 18) * 1000 - 1);
    expect(sentAt[99]! - start).toBeLessThan((64 / 18) * 1000 + 64);
  });
});

describe('parseLimits', () => {
  it('accepts the announced shape', () => {
    expect(parseLimits({ rate: 20, burst: 40, maxMessage: 4096 })).toEqual({
      rate: 20,
      burst: 40,
      maxMessage: 4096,
    });
  });

  it('never throws on anything a server might send, and returns only finite non-negative numbers', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.anything(),
          fc.record({ rate: fc.anything(), burst: fc.anything(), maxMessage: fc.anything() }),
          fc.record({ rate: fc.double(), burst: fc.double(), maxMessage: fc.double() }),
        ),
        (value) => {
          const limits = parseLimits(value);
          if (limits === undefined) return;
          for (const n of [limits.rate, limits.burst, limits.maxMessage]) {
            expect(Number.isFinite(n) && n >= 0).toBe(true);
          }
        },
      ),
    );
  });
});

import { describe, expect, it } from 'vitest';
import { type BenchReport, table } from '../../bench/lib/report.js';
import type { FanoutResult } from '../../bench/lib/workload.js';

const run = (server: string, deliveriesPerSec: number, serverUsPerDelivery: number, p99Ms = 2) =>
  ({
    workload: 'W-pipe',
    server,
    seconds: 5,
    deliveries: deliveriesPerSec * 5,
    deliveriesPerSec,
    p50Ms: 1,
    p99Ms,
    lost: 0,
    serverCpuPct: 90,
    generatorCpuPct: 90,
    serverUsPerDelivery,
    serverPeakRssMiB: 100,
    chatsPerSec: deliveriesPerSec / 9,
  }) satisfies FanoutResult;

const report = (runs: FanoutResult[]): BenchReport => ({
  date: '',
  machine: '',
  command: '',
  fanout: [],
  runs,
  conns: [],
  rooms: [],
  skipped: [],
  notes: [],
});

describe('the round-by-round table', () => {
  it('pairs confab with each peer within a round, in the order the runs ran', () => {
    // The machine is twice as fast in round 2: a ratio of medians would mix minutes.
    const text = table(
      report([
        run('confab', 100, 1, 3),
        run('peer', 50, 2, 2),
        run('confab', 400, 0.5, 1),
        run('peer', 200, 0.25, 1.5),
        run('confab', 90, 1, 2),
        run('peer', 100, 1, 2),
      ]),
    );
    expect(text).toContain(
      '| W-pipe | peer | 2.00×, 2.00×, 0.90× | 2.00× | 0.50×, 2.00×, 1.00× | 1.00× | +1.00, -0.50, 0.00 | 0.00 |',
    );
  });

  it('takes the lower of the middle two for an even count, as the rows do, and leaves out single rounds', () => {
    const two = table(
      report([
        run('confab', 100, 1),
        run('peer', 50, 1),
        run('confab', 100, 1),
        run('peer', 100, 1),
      ]),
    );
    expect(two).toContain('| W-pipe | peer | 2.00×, 1.00× | 1.00× |');
    const one = table(report([run('confab', 100, 1), run('peer', 50, 1)]));
    expect(one).not.toContain('Round by round');
  });
});

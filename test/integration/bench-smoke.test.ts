import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { chart, table } from '../../bench/lib/report.js';
import { runBench } from '../../bench/run.js';
import { withoutSeed } from '../helpers/servers.js';

// Exercises the benchmark harness end to end with tiny settings. It asserts
// correctness (zero loss, every row present), never speed.
describe.skipIf(withoutSeed())('benchmark harness', () => {
  it('runs each kind of workload against confab and the course server with zero loss', async () => {
    const report = await runBench({
      servers: ['confab', 'seed'],
      workloads: ['W-seed', 'W-pipe', 'W-conns'],
      seconds: 0.5,
      warmup: 0.2,
      conns: 300,
      repeat: 2,
    });
    // Two rounds, servers interleaved; the table row is each server's median run.
    expect(report.runs.map((r) => `${r.workload}/${r.server}`)).toEqual([
      'W-seed/confab',
      'W-seed/seed',
      'W-seed/confab',
      'W-seed/seed',
      'W-pipe/confab',
      'W-pipe/confab',
    ]);
    for (const r of report.fanout) {
      expect(r.runs).toBe(2);
      expect(r.minPerSec).toBeLessThanOrEqual(r.deliveriesPerSec);
      expect(r.maxPerSec).toBeGreaterThanOrEqual(r.deliveriesPerSec);
    }
    expect(report.fanout.map((r) => `${r.workload}/${r.server}`)).toEqual([
      'W-seed/confab',
      'W-seed/seed',
      'W-pipe/confab',
    ]);
    for (const r of report.fanout) {
      expect(r.lost).toBe(0);
      expect(r.deliveries).toBeGreaterThan(0);
      expect(r.p99Ms).toBeGreaterThanOrEqual(r.p50Ms);
    }
    expect(report.conns).toMatchObject([{ server: 'confab', connections: 300 }]);
    expect(report.skipped.some((s) => s.startsWith('seed × W-pipe'))).toBe(true);
    expect(table(report)).toContain('| W-pipe | confab |');
    expect(chart(report)).toMatch(/^<svg[\s\S]*<\/svg>$/);
  }, 60_000);
});

// W-rooms: every member in a room of its own group, one sender per room.
// Lost and misrouted are counted per receiver, so a message that leaks into
// another room or never arrives fails this, whatever the timing.
describe('W-rooms harness', () => {
  it('delivers each room’s messages to exactly its other members, confab and IRC alike', async () => {
    const servers = (['confab', 'inspircd'] as const).filter(
      (s) => s === 'confab' || existsSync(`/usr/sbin/${s}`),
    );
    const report = await runBench({
      servers: [...servers],
      workloads: ['W-rooms'],
      seconds: 0.6,
      warmup: 0.2,
      conns: 0,
      rooms: { rooms: 12, members: 5, rate: 20 },
    });
    expect(report.rooms.map((r) => r.server)).toEqual(servers);
    for (const r of report.rooms) {
      expect(r).toMatchObject({ connections: 60, lost: 0, misrouted: 0 });
      expect(r.deliveries).toBeGreaterThan(0);
      expect(r.p99Ms).toBeGreaterThanOrEqual(r.p50Ms);
      expect(Number.isFinite(r.kibPerMember)).toBe(true);
    }
    expect(table(report)).toContain('| confab |');
  }, 60_000);
});

import type { RoomsResult } from './rooms.js';
import type { ConnsResult, FanoutResult } from './workload.js';

export interface BenchReport {
  date: string;
  machine: string;
  command: string;
  /** One row per server per workload: its median run when workloads were repeated. */
  fanout: FanoutResult[];
  /** Every run, in the order they ran. */
  runs: FanoutResult[];
  conns: ConnsResult[];
  rooms: RoomsResult[];
  skipped: string[];
  /** How the run was set up, where a reader could assume otherwise. */
  notes: string[];
}

const f = (n: number, digits = 0) =>
  Number.isFinite(n)
    ? n.toLocaleString('en', { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : '—';

/** 4,661,401 → 4.66M: compact enough for a range column. */
const short = (n: number) =>
  n >= 1e6 ? `${f(n / 1e6, 2)}M` : n >= 1e3 ? `${f(n / 1e3, n >= 1e5 ? 0 : 1)}k` : f(n);

/** Markdown tables: one row per server per workload, with ratios against confab. */
export function table(report: BenchReport): string {
  const lines: string[] = [];
  const workloads = [...new Set(report.fanout.map((r) => r.workload))];
  if (workloads.length > 0)
    lines.push(
      '| workload | server | deliveries/s | range over runs | p50 ms | p99 ms | lost | server CPU % | generator CPU % | server µs/delivery | server peak RSS MiB | confab/peer throughput | confab/peer µs/delivery |',
      '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    );
  for (const w of workloads) {
    const rows = report.fanout.filter((r) => r.workload === w);
    const confab = rows.find((r) => r.server === 'confab');
    for (const r of rows) {
      const ratio =
        confab && r.server !== 'confab'
          ? `${f(confab.deliveriesPerSec / r.deliveriesPerSec, 2)}×`
          : '';
      const cost =
        confab && r.server !== 'confab'
          ? `${f(confab.serverUsPerDelivery / r.serverUsPerDelivery, 2)}×`
          : '';
      const range =
        r.runs !== undefined && r.runs > 1 ? `${short(r.minPerSec!)}–${short(r.maxPerSec!)}` : '';
      lines.push(
        `| ${w} | ${r.server} | ${f(r.deliveriesPerSec)} | ${range} | ${f(r.p50Ms, 2)} | ${f(r.p99Ms, 2)} | ${r.lost} | ${f(r.serverCpuPct)} | ${f(r.generatorCpuPct)} | ${f(r.serverUsPerDelivery, 2)} | ${f(r.serverPeakRssMiB, 1)} | ${ratio} | ${cost} |`,
      );
    }
  }
  lines.push(...roundByRound(report));
  if (report.conns.length > 0) {
    lines.push(
      '',
      '| W-conns | connections | connects/s | range over runs | server CPU % | generator CPU % | server µs per connection | server KiB per idle connection | server peak RSS MiB | confab/peer connects/s | confab/peer µs per connection |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    );
    const confab = report.conns.find((c) => c.server === 'confab');
    for (const c of report.conns) {
      const range =
        c.runs !== undefined && c.runs > 1 ? `${short(c.minPerSec!)}–${short(c.maxPerSec!)}` : '';
      const peer = confab !== undefined && c.server !== 'confab';
      const ratio = peer ? `${f(confab.connectPerSec / c.connectPerSec, 2)}×` : '';
      const cost = peer ? `${f(confab.serverUsPerConnection / c.serverUsPerConnection, 2)}×` : '';
      lines.push(
        `| ${c.server} | ${f(c.connections)} | ${f(c.connectPerSec)} | ${range} | ${f(c.serverCpuPct)} | ${f(c.generatorCpuPct)} | ${f(c.serverUsPerConnection, 1)} | ${f(c.kibPerConnection, 2)} | ${f(c.serverPeakRssMiB, 1)} | ${ratio} | ${cost} |`,
      );
    }
  }
  if (report.rooms.length > 0) {
    const r0 = report.rooms[0]!;
    lines.push(
      '',
      `W-rooms: ${f(r0.rooms)} rooms × ${r0.members} members, one sender per room at ${f(r0.rate, 2)} msg/s`,
      '',
      '| W-rooms | history | connections | setup s | sent msg/s per room | deliveries/s | p50 ms | p99 ms | lost | misrouted | server CPU % | server µs/delivery | generator CPU % | generator µs/delivery | server KiB per member | server peak RSS MiB |',
      '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    );
    for (const r of report.rooms) {
      lines.push(
        `| ${r.server} | ${r.history ?? ''} | ${f(r.connections)} | ${f(r.setupSeconds, 1)} | ${f(r.sentPerSec, 2)} | ${f(r.deliveriesPerSec)} | ${f(r.p50Ms, 2)} | ${f(r.p99Ms, 2)} | ${r.lost} | ${r.misrouted} | ${f(r.serverCpuPct, 1)} | ${f(r.serverUsPerDelivery, 2)} | ${f(r.generatorCpuPct, 1)} | ${f(r.generatorUsPerDelivery, 2)} | ${f(r.kibPerMember, 2)} | ${f(r.serverPeakRssMiB, 1)} |`,
      );
    }
  }
  const clustered = [...report.fanout, ...report.rooms].filter((r) => r.redis !== undefined);
  if (clustered.length > 0) {
    // Redis is single-threaded: its µs per chat × chats/s must stay under one core.
    lines.push(
      '',
      'Redis alone (its CPU is also in the server columns above). A node appends the chats of one event-loop turn to a room with one append script (evalsha: its time includes the commands it runs) that PUBLISHes them together to every node subscribed; calls per chat below 1 are that batching:',
      '',
      '| workload | server | members per node | chats/s | Redis CPU % | Redis µs/chat | Redis µs/delivery | Redis share of server CPU | µs per chat by command, calls per chat (INFO commandstats) |',
      '|---|---|---|---:|---:|---:|---:|---:|---|',
    );
    for (const r of clustered) {
      const redis = r.redis!;
      const commands = Object.entries(redis.commands)
        .sort((a, b) => b[1].usPerChat - a[1].usPerChat)
        .map(([name, c]) => `${name} ${f(c.usPerChat, 1)} (${f(c.callsPerChat, 2)})`)
        .join(', ');
      lines.push(
        `| ${r.workload} | ${r.server} | ${(r.membersPerNode ?? []).join(' / ')} | ${f(r.chatsPerSec ?? Number.NaN)} | ${f(redis.cpuPct, 1)} | ${f(redis.usPerChat, 2)} | ${f(redis.usPerDelivery, 2)} | ${f((redis.cpuPct / r.serverCpuPct) * 100)}% | ${commands} |`,
      );
    }
  }
  const bullets = [...report.notes, ...report.skipped];
  if (bullets.length > 0) lines.push('', ...bullets.map((s) => `- ${s}`));
  return lines.join('\n');
}

/**
 * `items` sorted by `value`, and the middle one: the lower of the two middle ones for an even
 * count, so a table's row is always a run that happened.
 */
export function byMiddle<T>(
  items: readonly T[],
  value: (item: T) => number,
): { sorted: T[]; middle: T } {
  const sorted = [...items].sort((a, b) => value(a) - value(b));
  return { sorted, middle: sorted[Math.floor((sorted.length - 1) / 2)]! };
}

/** The middle value, taken as the rows take theirs (byMiddle). */
const middle = (values: readonly number[]) => byMiddle(values, (v) => v).middle;

/**
 * Ratios to each peer taken within each round, confab's k-th run against the peer's k-th.
 * The servers of one round run within a minute of each other, so on a machine whose speed
 * drifts from minute to minute these pairs compare like with like where the ratio of two
 * medians, taken from different minutes, may not.
 */
function roundByRound(report: BenchReport): string[] {
  const rows: string[] = [];
  const workloads = [...new Set(report.runs.map((r) => r.workload))];
  for (const w of workloads) {
    const runs = report.runs.filter((r) => r.workload === w);
    const mine = runs.filter((r) => r.server === 'confab');
    if (mine.length < 2) continue;
    for (const peer of new Set(runs.map((r) => r.server))) {
      if (peer === 'confab') continue;
      const theirs = runs.filter((r) => r.server === peer);
      const n = Math.min(mine.length, theirs.length);
      if (n < 2) continue;
      const pairs = mine.slice(0, n).map((m, k) => [m, theirs[k]!] as const);
      const speed = pairs.map(([m, t]) => m.deliveriesPerSec / t.deliveriesPerSec);
      const cost = pairs.map(([m, t]) => m.serverUsPerDelivery / t.serverUsPerDelivery);
      const p99 = pairs.map(([m, t]) => m.p99Ms - t.p99Ms);
      const list = (xs: number[]) => xs.map((x) => `${f(x, 2)}×`).join(', ');
      // Rounded first, so that -0.004 reads 0.00 rather than -0.00.
      const ms = (x: number) => {
        const r = Math.round(x * 100) / 100 || 0;
        return `${r > 0 ? '+' : ''}${f(r, 2)}`;
      };
      rows.push(
        `| ${w} | ${peer} | ${list(speed)} | ${f(middle(speed), 2)}× | ${list(cost)} | ${f(middle(cost), 2)}× | ${p99.map(ms).join(', ')} | ${ms(middle(p99))} |`,
      );
    }
  }
  if (rows.length === 0) return [];
  return [
    '',
    'Round by round: confab against each peer within the same round (its runs a minute apart at most), and the median of those ratios:',
    '',
    '| workload | peer | confab/peer throughput by round | median | confab/peer µs/delivery by round | median | confab − peer p99 ms by round | median |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
    ...rows,
  ];
}

const COLORS: Record<string, string> = {
  confab: '#2b6cb0',
  'confab-course': '#63b3ed',
  'confab-memory': '#4299e1',
  'confab-sqlite': '#1a365d',
  'confab-1node': '#9f7aea',
  'confab-2nodes': '#6b46c1',
  'confab-3nodes': '#44337a',
  baseline: '#805ad5',
  'baseline-sqlite': '#44337a',
  'baseline-1node': '#d6bcfa',
  'baseline-2nodes': '#e9d8fd',
  'baseline-memory': '#b794f4',
  seed: '#a0aec0',
  ngircd: '#dd6b20',
  inspircd: '#38a169',
};

/** A grouped bar chart of deliveries/s (log scale) per workload and server. */
export function chart(report: BenchReport): string {
  const workloads = [...new Set(report.fanout.map((r) => r.workload))];
  const servers = [...new Set(report.fanout.map((r) => r.server))];
  const width = 760;
  const height = 360;
  const left = 70;
  const bottom = 300;
  const top = 40;
  const max = Math.max(...report.fanout.map((r) => r.deliveriesPerSec), 10);
  const logMax = Math.ceil(Math.log10(max));
  const y = (v: number) => bottom - (Math.log10(Math.max(v, 1)) / logMax) * (bottom - top);
  const groupWidth = (width - left - 20) / Math.max(1, workloads.length);
  const barWidth = Math.min(40, (groupWidth - 20) / Math.max(1, servers.length));
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${left}" y="22" font-size="15" font-weight="bold">Delivered messages per second (log scale) — ${report.date.slice(0, 10)}</text>`,
  ];
  for (let e = 0; e <= logMax; e++) {
    const yy = y(10 ** e);
    out.push(`<line x1="${left}" x2="${width - 10}" y1="${yy}" y2="${yy}" stroke="#e2e8f0"/>`);
    out.push(`<text x="${left - 8}" y="${yy + 4}" text-anchor="end">1e${e}</text>`);
  }
  workloads.forEach((w, wi) => {
    const x0 = left + wi * groupWidth + 10;
    servers.forEach((s, si) => {
      const r = report.fanout.find((x) => x.workload === w && x.server === s);
      if (!r) return;
      const x = x0 + si * barWidth;
      const yy = y(r.deliveriesPerSec);
      out.push(
        `<rect x="${x}" y="${yy}" width="${barWidth - 4}" height="${bottom - yy}" fill="${COLORS[s] ?? '#718096'}"><title>${s} ${w}: ${Math.round(r.deliveriesPerSec)}/s</title></rect>`,
      );
    });
    out.push(
      `<text x="${x0 + (servers.length * barWidth) / 2}" y="${bottom + 18}" text-anchor="middle">${w}</text>`,
    );
  });
  servers.forEach((s, si) => {
    const x = left + si * 120;
    out.push(
      `<rect x="${x}" y="${bottom + 32}" width="12" height="12" fill="${COLORS[s] ?? '#718096'}"/>`,
    );
    out.push(`<text x="${x + 18}" y="${bottom + 42}">${s}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

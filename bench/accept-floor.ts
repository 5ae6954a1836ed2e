/**
 * What accepting a connection costs confab against the least any Node server pays: W-conns'
 * generator (15,000 idle connections, 256 connects in flight) against a fresh confab, then
 * against a bare `net` server that does only what every Node chat server must (TCP_NODELAY
 * and keep-alive on the accepted socket, the peer's address read, a 'data' and a 'close'
 * listener), round by round in turn. Each server runs with --trace-gc, so the garbage
 * collector's share is counted too.
 *
 *   npx tsx bench/accept-floor.ts [rounds=5]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { affinity, cpuList, pinProcess, rssKiB } from './lib/proc.js';
import {
  CONFAB_BENCH_FLAGS,
  freePort,
  type RunningServer,
  stopProcess,
  tempDirUntilExit,
  waitForPort,
} from './lib/servers.js';
import { runConns } from './lib/workload.js';

const rounds = Math.min(50, Math.max(1, Number(process.argv[2] ?? 5)));
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const FLOOR = `
const net = require('node:net');
const ignore = () => {};
const open = new Map();
function closed() { open.delete(this); }
const server = net.createServer({ noDelay: true, keepAlive: true, keepAliveInitialDelay: 60000 }, (s) => {
  s.on('error', ignore);
  open.set(s, s.remoteAddress);
  s.on('close', closed);
  s.on('data', ignore);
});
server.listen({ host: '127.0.0.1', port: Number(process.argv[1]), backlog: 65535 });
process.on('SIGTERM', () => process.exit(0));
`;

type Kind = 'confab' | 'node floor';

const allowed = affinity(process.pid);
const [serverCpu, generatorCpu] = allowed === undefined ? [] : cpuList(allowed);
const pinned = serverCpu !== undefined && generatorCpu !== undefined;
if (pinned) pinProcess(process.pid, String(generatorCpu));

function launch(kind: Kind, port: number, gcLog: string): ChildProcess {
  const out = openSync(gcLog, 'w');
  const args =
    kind === 'confab'
      ? [
          path.join(root, 'dist/cli/main.js'),
          'serve',
          '--port',
          String(port),
          '--max-users',
          '10',
          ...CONFAB_BENCH_FLAGS,
          '--history',
          'off',
          // A server locks its data dir: not the working directory's, which may be another's.
          '--data-dir',
          dataDir,
        ]
      : ['-e', FLOOR, String(port)];
  return spawn(process.execPath, ['--trace-gc', ...args], { stdio: ['ignore', out, 'inherit'] });
}

/** Milliseconds V8 paused the main thread for collections, from --trace-gc's lines. */
function gcMillis(log: string): number {
  let ms = 0;
  for (const m of readFileSync(log, 'utf8').matchAll(
    /(?:Scavenge|Mark-Compact)[^\n]*?, ([\d.]+) \/ [\d.]+ ms/g,
  ))
    ms += Number(m[1]);
  return ms;
}

interface Round {
  perSec: number;
  us: number;
  gcUs: number;
}

const dataDir = tempDirUntilExit('confab-accept-floor-');

async function round(kind: Kind): Promise<Round> {
  const port = await freePort();
  const gcLog = path.join(tmpdir(), `confab-accept-floor-${process.pid}.log`);
  const child = launch(kind, port, gcLog);
  try {
    await waitForPort(port, child, kind);
    if (pinned) pinProcess(child.pid!, String(serverCpu));
    const server: RunningServer = {
      name: 'confab',
      dialect: 'confab',
      port,
      pid: child.pid!,
      ports: [port],
      pids: [child.pid!],
      stop: () => stopProcess(child),
    };
    const gcBefore = gcMillis(gcLog);
    const result = await runConns(server, 15_000, () => {}, rssKiB);
    return {
      perSec: result.connectPerSec,
      us: result.serverUsPerConnection,
      gcUs: ((gcMillis(gcLog) - gcBefore) * 1000) / result.connections,
    };
  } finally {
    await stopProcess(child);
    rmSync(gcLog, { force: true });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
const results: Record<Kind, Round[]> = { confab: [], 'node floor': [] };
for (let i = 0; i < rounds; i++) {
  for (const kind of i % 2 === 0
    ? (['confab', 'node floor'] as const)
    : (['node floor', 'confab'] as const)) {
    const r = await round(kind);
    results[kind].push(r);
    console.log(
      `round ${i + 1} ${kind.padEnd(10)} ${Math.round(r.perSec).toLocaleString('en').padStart(7)}/s  ${r.us.toFixed(1)} µs per connection, GC ${r.gcUs.toFixed(1)}`,
    );
  }
}
const row = (kind: Kind) => {
  const rs = results[kind];
  return {
    perSec: median(rs.map((r) => r.perSec)),
    us: median(rs.map((r) => r.us)),
    gcUs: median(rs.map((r) => r.gcUs)),
  };
};
const c = row('confab');
const f = row('node floor');
console.log(
  `\n${pinned ? `server pinned to CPU ${serverCpu}, generator to ${generatorCpu}` : 'unpinned'}; medians of ${rounds} rounds`,
);
console.log('| server | connects/s | server µs per connection | of which GC |');
console.log('|---|---:|---:|---:|');
for (const [kind, r] of [
  ['confab', c],
  ['node floor', f],
] as const)
  console.log(
    `| ${kind} | ${Math.round(r.perSec).toLocaleString('en')} | ${r.us.toFixed(1)} | ${r.gcUs.toFixed(1)} |`,
  );
console.log(`confab / floor: ${(c.us / f.us).toFixed(2)}× the CPU per connection`);

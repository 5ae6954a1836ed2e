/**
 * confab's benchmark: the same workloads against confab, the course's Python
 * server, ngIRCd and InspIRCd, all on 127.0.0.1, one fresh server per run.
 *
 *   npm run bench                      # everything, about seven minutes
 *   npm run bench -- --servers confab,ngircd --workloads W-pipe --seconds 5 --repeat 1
 *
 * Workloads named `/each` have every sender write each message on its own, as
 * a chat client does; the others let a sender coalesce what it has ready.
 * `confab` keeps no history (like the IRC servers); `confab-sqlite` and
 * `confab-memory` store every chat (`--history sqlite|memory`).
 * Server `confab-course` is confab with clients that negotiate nothing (the
 * course client's shape: padded 1024-byte replies).
 * `confab-1node`, `confab-2nodes` and `confab-3nodes` are confab with
 * `--redis`: a throwaway redis-server and that many nodes, each room's members
 * spread over the nodes in turn; their CPU and memory are all the processes'
 * together, Redis included, and Redis's share is shown on its own too:
 *
 *   npm run bench -- --servers confab,confab-sqlite,confab-1node,confab-2nodes,confab-3nodes --workloads W-pipe,W-big
 *
 * W-rooms (not in the default list: it opens 10,000 connections per server)
 * is many small rooms at a steady rate instead of one room at full speed:
 *
 *   npm run bench -- --servers confab,ngircd,inspircd --workloads W-rooms
 *   npm run bench -- --servers confab --workloads W-rooms --rooms 100 --seconds 5 --rooms-history off,default
 *
 * Each single-process server runs pinned to one CPU and the generator to
 * another, so they never share one (--no-pin lets the scheduler place them).
 * Each workload but W-rooms runs --repeat times, the servers interleaved in
 * each round, and the table shows each server's median run: one unlucky run (a
 * neighbour's load, a peer's Nagle stall) moves no ratio.
 * Prints a table and writes bench/results/latest.{json,md,svg}.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { affinity, cpuList, pinProcess, rssKiB } from './lib/proc.js';
import { type BenchReport, byMiddle, chart, table } from './lib/report.js';
import { type RoomsResult, type RoomsWorkload, runRooms, W_ROOMS } from './lib/rooms.js';
import {
  CLUSTER_NODES,
  confabHasOption,
  type RunningServer,
  redisMissing,
  type ServerName,
  startServer,
} from './lib/servers.js';
import {
  type ConnsResult,
  type FanoutResult,
  runConns,
  runFanout,
  WORKLOADS,
} from './lib/workload.js';

export interface BenchOptions {
  servers: ServerName[];
  workloads: string[];
  seconds: number;
  warmup: number;
  conns: number;
  /** Run ngIRCd and InspIRCd with Nagle's algorithm on, as shipped (default: off, like confab). */
  peerNagle?: boolean;
  /** Another confab checkout (built) to run as server `baseline`. */
  baseline?: string;
  /** Flags for node itself when it runs a `baseline` server (V8's, say), to weigh them side by side. */
  baselineNodeFlags?: string[];
  /**
   * Pin a single-process server to the first CPU this process may use and this
   * process (the load generator) to the second, so that they never share one
   * (default: on where there are two CPUs and taskset; never for a run with a
   * cluster, whose processes need more). Every run's notes say which it was.
   */
  pin?: boolean;
  /** Called with each server once it is started (and pinned). */
  onServer?: (server: RunningServer) => void;
  /** Rounds of each fan-out workload; the report shows each server's median run. */
  repeat?: number;
  /** W-rooms' shape, over W_ROOMS. */
  rooms?: Partial<RoomsWorkload>;
  /**
   * confab's --history for W-rooms, one run each: `off`, `memory`, `sqlite`,
   * or `default` (no flag). Values this confab lacks the option for run as
   * `default`, with a note. Default: off.
   */
  roomsHistory?: string[];
  out?: string;
  progress?: (text: string) => void;
}

const IRC_BINARIES: Record<string, string> = {
  ngircd: '/usr/sbin/ngircd',
  inspircd: '/usr/sbin/inspircd',
};

/** The run with the median throughput (the lower middle one for an even count), with the range of all. */
function median(runs: FanoutResult[]): FanoutResult {
  const { sorted, middle: mid } = byMiddle(runs, (r) => r.deliveriesPerSec);
  return {
    ...mid,
    runs: runs.length,
    minPerSec: sorted[0]!.deliveriesPerSec,
    maxPerSec: sorted[sorted.length - 1]!.deliveriesPerSec,
    lost: runs.reduce((n, r) => n + r.lost, 0),
  };
}

/** The round with the median connect rate, its memory figures with it, and the range of rates. */
function medianConns(runs: ConnsResult[]): ConnsResult {
  const { sorted, middle: mid } = byMiddle(runs, (r) => r.connectPerSec);
  if (runs.length === 1) return mid;
  return {
    ...mid,
    runs: runs.length,
    minPerSec: sorted[0]!.connectPerSec,
    maxPerSec: sorted[sorted.length - 1]!.connectPerSec,
  };
}

export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const progress = o.progress ?? (() => {});
  const report: BenchReport = {
    date: new Date().toISOString(),
    machine: `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${os.release()}`,
    command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
    fanout: [],
    runs: [],
    conns: [],
    rooms: [],
    skipped: [],
    notes: [],
  };
  const servers = o.servers.filter((s) => {
    const bin = IRC_BINARIES[s];
    if (bin !== undefined && !existsSync(bin)) {
      report.skipped.push(`${s}: not installed (apt-get install ${s})`);
      return false;
    }
    const missing = CLUSTER_NODES[s] === undefined ? undefined : redisMissing();
    if (missing !== undefined) {
      report.skipped.push(`${s}: ${missing}`);
      return false;
    }
    return true;
  });
  const cluster = servers.some((s) => CLUSTER_NODES[s] !== undefined);
  if (cluster) {
    report.notes.push(
      'confab-Nnode(s): N confab nodes with --redis and one redis-server (no persistence), all on this machine; server CPU, µs/delivery and RSS are all the processes’ together, Redis included; history is in Redis (every chat stored), so compare with confab-sqlite/-memory for the hop alone',
    );
  }
  if (
    o.baselineNodeFlags !== undefined &&
    o.baselineNodeFlags.length > 0 &&
    servers.some((s) => s.startsWith('baseline'))
  ) {
    report.notes.push(
      `baseline ran as node ${o.baselineNodeFlags.join(' ')} (its own checkout's build)`,
    );
  }
  if (servers.some((s) => s === 'ngircd' || s === 'inspircd')) {
    report.notes.push(
      o.peerNagle === true
        ? 'ngIRCd and InspIRCd ran as shipped, with Nagle’s algorithm on'
        : 'ngIRCd and InspIRCd ran with TCP_NODELAY set on accepted sockets (bench/lib/nodelay.c, preloaded), as confab sets it; --peer-nagle runs them as shipped',
    );
  }
  // The generator and the server each get a CPU of this process's own (a container may allow fewer).
  const allowed = affinity(process.pid);
  const [serverCpu, generatorCpu] = allowed === undefined ? [] : cpuList(allowed);
  let unpinned: string | undefined;
  if (o.pin === false) unpinned = '--no-pin';
  else if (cluster) unpinned = 'a cluster’s processes share the machine’s CPUs';
  else if (serverCpu === undefined || generatorCpu === undefined)
    unpinned = `this process may use CPUs ${allowed ?? '(unknown)'} only`;
  else {
    try {
      pinProcess(process.pid, String(generatorCpu));
    } catch (err) {
      unpinned = `taskset failed: ${(err as Error).message.trim()}`;
    }
  }
  const pin = unpinned === undefined;
  report.notes.push(
    pin
      ? `each server ran pinned to CPU ${serverCpu} and the load generator to CPU ${generatorCpu} (taskset), so the two never shared a CPU; --no-pin lets the scheduler place them`
      : `not pinned to CPUs: ${unpinned}`,
  );
  // All of the server's threads; those it starts later inherit the CPU.
  const start: StartFn = async (name, members, confabArgs) => {
    const server = await startServer(name, members, {
      peerNagle: o.peerNagle,
      baseline: o.baseline,
      baselineNodeFlags: o.baselineNodeFlags,
      confabArgs,
    });
    if (pin) {
      try {
        pinProcess(server.pid, String(serverCpu));
      } catch (err) {
        await server.stop();
        throw err;
      }
    }
    o.onServer?.(server);
    return server;
  };
  try {
    await benchAll(o, servers, report, start, progress);
  } finally {
    if (pin && allowed !== undefined) pinProcess(process.pid, allowed);
  }
  if (o.out !== undefined) {
    mkdirSync(o.out, { recursive: true });
    writeFileSync(path.join(o.out, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);
    writeFileSync(path.join(o.out, 'latest.md'), `${table(report)}\n`);
    writeFileSync(path.join(o.out, 'latest.svg'), `${chart(report)}\n`);
  }
  return report;
}

type StartFn = (name: ServerName, members: number, confabArgs?: string[]) => Promise<RunningServer>;

async function benchAll(
  o: BenchOptions,
  servers: ServerName[],
  report: BenchReport,
  start: StartFn,
  progress: (text: string) => void,
): Promise<void> {
  const repeat = Math.max(1, o.repeat ?? 1);
  for (const name of o.workloads) {
    if (name === 'W-conns' || name === 'W-rooms') continue;
    const w = WORKLOADS[name];
    if (w === undefined) throw new Error(`unknown workload ${name}`);
    const runnable = servers.filter((s) => {
      if (s !== 'seed' || name === 'W-seed') return true;
      report.skipped.push(
        `seed × ${name}: the course server reads one recv(1024) per request, so it cannot take pipelined requests${w.members > 10 ? ' or more than its room of 10' : ''}`,
      );
      return false;
    });
    const runs: FanoutResult[] = [];
    for (let round = 1; round <= repeat; round++) {
      for (const s of runnable) {
        const server = await start(s, w.members);
        try {
          const tag = repeat > 1 ? ` (round ${round}/${repeat})` : '';
          runs.push(await runFanout(server, w, o.seconds, o.warmup, (t) => progress(t + tag)));
        } finally {
          await server.stop();
        }
      }
    }
    report.runs.push(...runs);
    for (const s of runnable) report.fanout.push(median(runs.filter((r) => r.server === s)));
  }
  if (o.workloads.includes('W-conns')) {
    const runnable = servers.filter((s) => {
      if (s === 'seed') {
        report.skipped.push(
          'seed × W-conns: a thread per connection and a listen backlog of 1; not comparable',
        );
        return false;
      }
      // The same server as confab before CONNECT.
      if (
        s === 'confab-course' ||
        s === 'confab-memory' ||
        s === 'confab-sqlite' ||
        s === 'baseline-sqlite' ||
        s === 'baseline-memory'
      )
        return false;
      if (CLUSTER_NODES[s] !== undefined) {
        report.skipped.push(`${s} × W-conns: a node's idle connections are confab's`);
        return false;
      }
      return true;
    });
    const runs: ConnsResult[] = [];
    for (let round = 1; round <= repeat; round++) {
      for (const s of runnable) {
        const server = await start(s, 10);
        try {
          const tag = repeat > 1 ? ` (round ${round}/${repeat})` : '';
          runs.push(await runConns(server, o.conns, (t) => progress(t + tag), rssKiB));
        } finally {
          await server.stop();
        }
      }
    }
    for (const s of runnable) report.conns.push(medianConns(runs.filter((r) => r.server === s)));
  }
  if (o.workloads.includes('W-rooms')) {
    report.rooms.push(...(await benchRooms(o, servers, report, start, progress)));
  }
}

async function benchRooms(
  o: BenchOptions,
  servers: ServerName[],
  report: BenchReport,
  start: StartFn,
  progress: (text: string) => void,
): Promise<RoomsResult[]> {
  const w: RoomsWorkload = { ...W_ROOMS, ...o.rooms };
  const total = w.rooms * w.members;
  // The generator holds every connection; its open-files limit is 20,000.
  if (total > 18_000) throw new Error(`W-rooms: ${total} connections is more than 18,000`);
  const results: RoomsResult[] = [];
  for (const s of servers) {
    if (s === 'seed' || s === 'confab-course') {
      report.skipped.push(`${s} × W-rooms: its clients have one room only`);
      continue;
    }
    const confab = s === 'confab' || s === 'baseline';
    const cluster = CLUSTER_NODES[s] !== undefined;
    const root = s === 'baseline' ? o.baseline : undefined;
    if (confab && !confabHasOption('--room-capacity', root)) {
      report.skipped.push(`${s} × W-rooms: this confab has no rooms`);
      continue;
    }
    // A cluster keeps history in Redis whatever --history says.
    const variants = confab ? (o.roomsHistory ?? ['off']) : cluster ? ['redis'] : ['n/a'];
    for (const history of variants) {
      const args = ['--room-capacity', String(Math.max(10, w.members))];
      let label = history;
      if (confab && history !== 'default') {
        if (confabHasOption('--history', root)) args.push('--history', history);
        else {
          label = 'default';
          report.notes.push(
            `W-rooms: ${s} has no --history option; ran as it is (asked for --history ${history})`,
          );
        }
      }
      // Whatever it stores goes to a directory of its own, removed after.
      const dataDir =
        confab && confabHasOption('--data-dir', root)
          ? mkdtempSync(path.join(os.tmpdir(), 'bench-rooms-'))
          : undefined;
      if (dataDir !== undefined) args.push('--data-dir', dataDir);
      // --max-users is the lobby's capacity: room members stay out of it (CONNECT "lobby": false),
      // but a confab without that puts them all in it.
      const server = await start(s, total, args);
      try {
        const r = await runRooms(server, w, o.seconds, o.warmup, progress);
        results.push(confab || cluster ? { ...r, history: label } : r);
        if (r.reconnects > 0) {
          report.notes.push(
            `W-rooms: ${r.reconnects} of ${s}'s members were reset or stuck while joining and connected again`,
          );
        }
      } catch (err) {
        // One server failing the workload (refusing members, say) leaves the others' results.
        report.skipped.push(`${s} × W-rooms: ${(err as Error).message}`);
      } finally {
        await server.stop();
        if (dataDir !== undefined) rmSync(dataDir, { recursive: true, force: true });
      }
    }
  }
  return results;
}

const isMain =
  process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const { values } = parseArgs({
    options: {
      servers: {
        type: 'string',
        default: 'confab,confab-sqlite,confab-course,seed,ngircd,inspircd',
      },
      workloads: { type: 'string', default: 'W-seed,W-pipe,W-pipe/each,W-big,W-big/each,W-conns' },
      seconds: { type: 'string', default: '8' },
      warmup: { type: 'string', default: '2' },
      conns: { type: 'string', default: '15000' },
      repeat: { type: 'string', default: '3' },
      rooms: { type: 'string', default: String(W_ROOMS.rooms) },
      members: { type: 'string', default: String(W_ROOMS.members) },
      rate: { type: 'string', default: String(W_ROOMS.rate) },
      'rooms-history': { type: 'string', default: 'off' },
      'peer-nagle': { type: 'boolean', default: false },
      'no-pin': { type: 'boolean', default: false },
      baseline: { type: 'string' },
      'baseline-node-flags': { type: 'string' },
    },
  });
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  if (!existsSync(path.join(root, 'dist/cli/main.js')))
    execFileSync('npm', ['run', 'build'], { cwd: root });
  const report = await runBench({
    servers: values.servers.split(',') as ServerName[],
    workloads: values.workloads.split(','),
    seconds: Math.min(Number(values.seconds), 600),
    warmup: Math.min(Number(values.warmup), 60),
    conns: Math.min(Number(values.conns), 18_000),
    repeat: Math.min(Number(values.repeat), 20),
    // 10,000 connections by default; the open-files limit is 20,000 per process.
    rooms: {
      rooms: Math.max(1, Number(values.rooms)),
      members: Math.max(2, Number(values.members)),
      rate: Math.max(0.01, Math.min(Number(values.rate), 1000)),
    },
    roomsHistory: values['rooms-history'].split(','),
    peerNagle: values['peer-nagle'],
    pin: !values['no-pin'],
    baseline: values.baseline === undefined ? undefined : path.resolve(values.baseline),
    baselineNodeFlags: values['baseline-node-flags']?.split(/\s+/).filter((f) => f !== ''),
    out: path.join(root, 'bench/results'),
    progress: (t) => process.stderr.write(`\r\x1b[K${t}`),
  });
  process.stderr.write('\r\x1b[K');
  console.log(`${report.machine}\n${report.date}\n`);
  console.log(table(report));
  console.log('\nWrote bench/results/latest.{json,md,svg}');
  const lost =
    report.runs.reduce((n, r) => n + r.lost, 0) +
    report.rooms.reduce((n, r) => n + r.lost + r.misrouted, 0);
  if (lost > 0) {
    console.error(`LOSS: ${lost} messages were not delivered`);
    process.exitCode = 1;
  }
}

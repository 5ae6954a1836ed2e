/**
 * Counts the server's system calls per delivery (or, for W-conns, per
 * connection opened and closed) under one workload, with `perf stat`
 * tracepoints, for each server named. Needs perf and permission to trace.
 * Counts depend on how much arrives per event-loop turn, far less on how busy
 * the machine is than rates do.
 *
 *   npx tsx bench/syscalls.ts W-big/each 5 confab,inspircd,ngircd
 *   npx tsx bench/syscalls.ts W-conns 0 confab,inspircd
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { rssKiB } from './lib/proc.js';
import { type ServerName, startServer } from './lib/servers.js';
import { runConns, runFanout, WORKLOADS } from './lib/workload.js';

const CALLS = [
  'accept4',
  'setsockopt',
  'getpeername',
  'getsockname',
  'epoll_ctl',
  'read',
  'recvfrom',
  'write',
  'writev',
  'shutdown',
  'close',
];

const [workload = 'W-big/each', seconds = '5', names = 'confab,inspircd'] = process.argv.slice(2);
const conns = workload === 'W-conns';
const w = conns ? WORKLOADS['W-seed'] : WORKLOADS[workload];
if (w === undefined) throw new Error(`unknown workload ${workload}`);

/** Starts counting the processes' system calls; the result comes when it is stopped. */
function countSyscalls(pids: readonly number[]): () => Promise<Map<string, number>> {
  const events = [...CALLS.map((c) => `syscalls:sys_enter_${c}`), 'raw_syscalls:sys_enter'];
  const perf: ChildProcess = spawn(
    'perf',
    ['stat', '-x,', '-e', events.join(','), '-p', pids.join(',')],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let out = '';
  perf.stderr?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise((r) => perf.once('exit', r));
  return async () => {
    perf.kill('SIGINT');
    await exited;
    const counts = new Map<string, number>();
    for (const line of out.split('\n')) {
      const [value, , event] = line.split(',');
      if (event === undefined || value === undefined || !/^\d+$/.test(value)) continue;
      counts.set(
        event.includes('raw_syscalls') ? 'all' : event.replace(/^.*sys_enter_/, ''),
        Number(value),
      );
    }
    return counts;
  };
}

for (const name of names.split(',') as ServerName[]) {
  const server = await startServer(name, w.members);
  let units: number;
  let rate: string;
  let counts: Map<string, number>;
  if (conns) {
    const stop = countSyscalls(server.pids);
    // perf needs a moment to attach before the first connection.
    await new Promise((r) => setTimeout(r, 500));
    const result = await runConns(server, 15_000, () => {}, rssKiB);
    counts = await stop();
    units = result.connections;
    rate = `${Math.round(result.connectPerSec)} connects/s; per connection`;
  } else {
    let stop: (() => Promise<Map<string, number>>) | undefined;
    // Counted from the first progress report (the end of the warm-up) to the end of the run.
    const result = await runFanout(server, w, Number(seconds), 1, () => {
      stop ??= countSyscalls(server.pids);
    });
    counts = stop === undefined ? new Map() : await stop();
    units = result.deliveries;
    rate = `${Math.round(result.deliveriesPerSec)} deliveries/s; per delivery`;
  }
  await server.stop();
  const per = [...counts]
    .filter(([, v]) => v > 0)
    .map(([k, v]) => `${k} ${(v / units).toFixed(conns ? 2 : 4)}`)
    .join(', ');
  console.log(`${name} ${workload}: ${rate}: ${per}`);
}

/**
 * Profiles confab under one workload: starts the server with --cpu-prof,
 * drives it, and prints the heaviest functions by self time.
 *
 *   npx tsx bench/profile.ts W-pipe 5            # without history
 *   npx tsx bench/profile.ts W-pipe 5 sqlite     # storing every chat (or memory)
 *   npx tsx bench/profile.ts W-pipe 5 confab-1node   # the cluster's nodes (each a profile)
 *   npx tsx bench/profile.ts W-conns                 # accepting 15,000 idle connections
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuMicrosOf, rssKiB } from './lib/proc.js';
import {
  CLUSTER_NODES,
  CONFAB_BENCH_FLAGS,
  freePort,
  type RunningServer,
  type ServerName,
  startServer,
  waitForPort,
} from './lib/servers.js';
import { runConns, runFanout, WORKLOADS } from './lib/workload.js';

const [workload = 'W-pipe', seconds = '5', history = 'off'] = process.argv.slice(2);
const conns = workload === 'W-conns';
const w = conns ? WORKLOADS['W-seed'] : WORKLOADS[workload];
if (w === undefined) throw new Error(`unknown workload ${workload}`);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = mkdtempSync(path.join(tmpdir(), 'confab-prof-'));
const cluster = CLUSTER_NODES[history as ServerName] !== undefined;
let server: RunningServer;
if (cluster) {
  server = await startServer(history as ServerName, w.members, {
    nodeFlags: ['--cpu-prof', '--cpu-prof-dir', dir],
  });
} else {
  const port = await freePort();
  const started = spawn(
    process.execPath,
    [
      '--cpu-prof',
      '--cpu-prof-dir',
      dir,
      path.join(root, 'dist/cli/main.js'),
      'serve',
      '--port',
      String(port),
      '--max-users',
      String(w.members),
      ...CONFAB_BENCH_FLAGS,
      '--history',
      history,
      '--data-dir',
      dir,
    ],
    { stdio: 'inherit' },
  );
  await waitForPort(port, started, 'confab');
  server = {
    name: 'confab',
    dialect: 'confab',
    port,
    pid: started.pid!,
    ports: [port],
    pids: [started.pid!],
    stop: async () => {
      started.kill('SIGINT');
      await new Promise((r) => started.once('exit', r));
    },
  };
}
if (conns) {
  const before = cpuMicrosOf(server.pids);
  const result = await runConns(server, 15_000, () => {}, rssKiB);
  const us = (cpuMicrosOf(server.pids) - before) / result.connections;
  console.log(
    `${Math.round(result.connectPerSec)} connects/s, server ${us.toFixed(1)} µs per connection (open and close)`,
  );
} else {
  const result = await runFanout(server, w, Number(seconds), 1, () => {});
  console.log(
    `${Math.round(result.deliveriesPerSec)} deliveries/s, ${result.serverUsPerDelivery.toFixed(2)} µs/delivery` +
      (result.redis !== undefined
        ? `, Redis ${result.redis.usPerChat.toFixed(1)} µs/chat ${JSON.stringify(result.redis.commands)}`
        : ''),
  );
}
await server.stop();
const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'))!;
interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
const profile = JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as { nodes: Node[] };
const self = new Map<string, number>();
let total = 0;
for (const n of profile.nodes) {
  const key = `${n.callFrame.functionName || '(anonymous)'} ${path.basename(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
  self.set(key, (self.get(key) ?? 0) + (n.hitCount ?? 0));
  total += n.hitCount ?? 0;
}
for (const [k, v] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
  console.log(`${((v / total) * 100).toFixed(1).padStart(5)}%  ${k}`);
}
console.log(`profile: ${path.join(dir, file)}`);

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { acceptQueue, affinity, cpuList, threadAffinities } from '../../bench/lib/proc.js';
import { chart, table } from '../../bench/lib/report.js';
import { freePort, startServer, stopProcess, waitForPort } from '../../bench/lib/servers.js';
import { runBench } from '../../bench/run.js';
import { withoutRedis } from '../helpers/redis.js';
import { CLI, ownDataDir, withoutSeed } from '../helpers/servers.js';

// Exercises the benchmark harness end to end with tiny settings. It asserts
// correctness (zero loss, every row present), never speed.
describe.skipIf(withoutSeed())('benchmark harness', () => {
  it('runs each kind of workload against confab and the course server with zero loss', async () => {
    const before = affinity(process.pid);
    const cpus = cpuList(before ?? '');
    const generator: string[] = [];
    const servers: string[][] = [];
    const report = await runBench({
      servers: ['confab', 'seed'],
      workloads: ['W-seed', 'W-pipe', 'W-conns'],
      seconds: 0.5,
      warmup: 0.2,
      // Enough that the server's CPU while accepting spans several of /proc's 10 ms ticks:
      // 300, at some 25 µs each, fit within one, and a round once counted none.
      conns: 2_000,
      repeat: 2,
      progress: () => {
        if (generator.length === 0) generator.push(...threadAffinities(process.pid));
      },
      onServer: (server) => servers.push(threadAffinities(server.pid)),
    });
    // With two CPUs or more, every thread of each server runs on the first and every
    // thread of the generator on the second while it measures; after, it gets all back.
    expect(servers).toHaveLength(8);
    if (cpus.length >= 2) {
      expect(new Set(servers.flat())).toEqual(new Set([String(cpus[0])]));
      expect(new Set(generator)).toEqual(new Set([String(cpus[1])]));
      expect(report.notes.some((n) => n.startsWith('each server ran pinned to CPU'))).toBe(true);
    } else {
      expect(report.notes.some((n) => n.startsWith('not pinned to CPUs'))).toBe(true);
    }
    expect(affinity(process.pid)).toBe(before);
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
    // W-conns too runs each round and keeps the median round.
    expect(report.conns).toMatchObject([{ server: 'confab', connections: 2_000, runs: 2 }]);
    const conns = report.conns[0]!;
    expect(conns.minPerSec).toBeLessThanOrEqual(conns.connectPerSec);
    expect(conns.maxPerSec).toBeGreaterThanOrEqual(conns.connectPerSec);
    expect(conns.generatorCpuPct).toBeGreaterThan(0);
    expect(conns.serverCpuPct).toBeGreaterThan(0);
    expect(conns.serverUsPerConnection).toBeGreaterThan(0);
    expect(report.skipped.some((s) => s.startsWith('seed × W-pipe'))).toBe(true);
    expect(table(report)).toContain('| W-pipe | confab |');
    // Both rounds of W-seed paired, confab against the course server.
    expect(table(report)).toMatch(/\| W-seed \| seed \| [\d.,]+×, [\d.,]+× \| [\d.,]+× \|/);
    expect(chart(report)).toMatch(/^<svg[\s\S]*<\/svg>$/);
  }, 60_000);
});

describe('waitForPort', () => {
  it('waits for the server itself, not another process that took its port', async () => {
    // freePort() leaves a moment in which another test's server can take the port: the
    // server started on it then exits with "in use" while the port still answers.
    const port = await freePort();
    const other = net.createServer().listen(port, '127.0.0.1');
    await new Promise((resolve) => other.once('listening', resolve));
    const child = spawn(
      process.execPath,
      [
        CLI,
        'serve',
        '--port',
        String(port),
        '--http-port',
        'off',
        '--history',
        'off',
        '--data-dir',
        ownDataDir(),
      ],
      { stdio: 'ignore' },
    );
    try {
      await expect(waitForPort(port, child, 'confab')).rejects.toThrow(/exited/);
    } finally {
      await stopProcess(child);
      other.close();
    }
  }, 30_000);
});

describe('acceptQueue', () => {
  it('counts connections a listener has not accepted yet, and only its own', async () => {
    // A listener that never accepts: its connections stay in the kernel's queue.
    const python = spawn('python3', [
      '-c',
      'import socket,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(16)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(20)',
    ]);
    const sockets: net.Socket[] = [];
    const open = (port: number) => {
      const s = net.connect(port, '127.0.0.1');
      // Python's end resets them.
      s.on('error', () => {});
      sockets.push(s);
      return s;
    };
    const other = net.createServer((c) => c.on('error', () => {})).listen(0, '127.0.0.1');
    try {
      const port = await new Promise<number>((resolve, reject) => {
        python.once('error', reject);
        python.stdout.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
      });
      if (!other.listening) await new Promise((r) => other.once('listening', r));
      expect(acceptQueue(port)).toBe(0);
      for (let i = 0; i < 3; i++) {
        const s = open(port);
        await new Promise((r) => s.once('connect', r));
      }
      expect(acceptQueue(port)).toBe(3);
      // A listener that accepts (Node's) drains its queue.
      const otherPort = (other.address() as net.AddressInfo).port;
      open(otherPort);
      await new Promise((r) => other.once('connection', r));
      expect(acceptQueue(otherPort)).toBe(0);
      python.kill();
      await new Promise((r) => python.once('exit', r));
      expect(acceptQueue(port)).toBeUndefined();
    } finally {
      for (const s of sockets) s.destroy();
      other.close();
      python.kill();
    }
  });
});

describe('cpuList', () => {
  it('reads the lists taskset prints', () => {
    expect(cpuList('0')).toEqual([0]);
    expect(cpuList('0-2,5,7-8')).toEqual([0, 1, 2, 5, 7, 8]);
    expect(cpuList('4-7')).toEqual([4, 5, 6, 7]);
    for (const bad of ['', 'x', '0-', '1,,2']) expect(cpuList(bad)).toEqual([]);
  });
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

// Cluster servers: confab nodes sharing one throwaway Redis. The members of a
// room must really be spread over the nodes (as their sockets say), so the
// deliveries cross nodes, and the server's processes must all be counted and
// all stopped.
describe.skipIf(withoutRedis())('cluster bench servers', () => {
  it('starts Redis and two nodes, and stops every one of them', async () => {
    const server = await startServer('confab-2nodes', 10);
    const pids = [...server.pids];
    try {
      expect(server.ports).toHaveLength(2);
      expect(pids).toHaveLength(3);
      expect(pids).toContain(server.redis?.pid);
      expect(new Set(pids).size).toBe(3);
      for (const pid of pids) expect(alive(pid)).toBe(true);
    } finally {
      await server.stop();
    }
    for (const pid of pids) expect(alive(pid)).toBe(false);
  }, 60_000);

  it('runs W-pipe, W-pipe/cid and W-rooms across two nodes with zero loss, Redis reported apart', async () => {
    const report = await runBench({
      servers: ['confab-2nodes'],
      workloads: ['W-pipe', 'W-pipe/cid', 'W-rooms'],
      seconds: 0.5,
      warmup: 0.2,
      conns: 0,
      repeat: 1,
      rooms: { rooms: 6, members: 4, rate: 20 },
    });
    // A cluster's processes are never pinned, and the report says so.
    expect(report.notes).toContain(
      'not pinned to CPUs: a cluster’s processes share the machine’s CPUs',
    );
    const [pipe] = report.fanout;
    expect(pipe).toMatchObject({ workload: 'W-pipe', server: 'confab-2nodes', lost: 0 });
    expect(pipe!.membersPerNode).toEqual([5, 5]);
    expect(pipe!.deliveries).toBeGreaterThan(0);
    // Redis's CPU comes from /proc in 10 ms ticks, which a short run on a busy machine may
    // not reach; its command times are in microseconds.
    expect(pipe!.redis!.usPerChat).toBeGreaterThanOrEqual(0);
    expect(pipe!.redis!.commands.evalsha!.usPerChat).toBeGreaterThan(0);
    // Redis's CPU is part of the server's, not beside it.
    expect(pipe!.redis!.cpuPct).toBeLessThan(pipe!.serverCpuPct);
    // Every chat is one XADD in an append script per batch, which publishes the
    // batch (a run this short is no steady state, so no counts per chat are checked).
    expect(Object.keys(pipe!.redis!.commands)).toEqual(
      expect.arrayContaining(['evalsha', 'xadd', 'publish']),
    );
    // History clients' cids reach the store: it dedupes each chat by one.
    const withCids = report.fanout.find((r) => r.workload === 'W-pipe/cid');
    expect(withCids).toMatchObject({ server: 'confab-2nodes', lost: 0 });
    expect(withCids!.deliveries).toBeGreaterThan(0);
    expect(Object.keys(withCids!.redis!.commands)).toEqual(
      expect.arrayContaining(['zscore', 'zadd']),
    );
    // Without cids no chat is looked up for a repeat (every append still scores its
    // room in the set of rooms written to, so ZADD alone tells nothing).
    expect(Object.keys(pipe!.redis!.commands)).not.toContain('zscore');
    expect(report.rooms).toMatchObject([
      { server: 'confab-2nodes', history: 'redis', lost: 0, misrouted: 0, connections: 24 },
    ]);
    expect(report.rooms[0]!.membersPerNode).toEqual([12, 12]);
    expect(report.rooms[0]!.deliveries).toBeGreaterThan(0);
    expect(table(report)).toContain('| W-pipe | confab-2nodes | 5 / 5 |');
  }, 120_000);
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

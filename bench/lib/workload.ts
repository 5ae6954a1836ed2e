import { Histogram } from './histogram.js';
import { Flusher, Member } from './loadgen.js';
import { acceptQueue, cpuMicrosOf, peakRssKiB, peakRssKiBOf, selfCpuMicros } from './proc.js';
import { openRedisWindow, type RedisShare } from './redis.js';
import type { RunningServer } from './servers.js';

export interface Workload {
  name: string;
  members: number;
  senders: number;
  /** Messages a sender may have in flight (not yet received by every other member). */
  window: number;
  /**
   * How senders write: `coalesce` puts everything a sender has ready in one
   * write per event-loop turn; `each` writes every message on its own, as a
   * chat client does when people type (with TCP_NODELAY, one segment each).
   */
  shape: 'coalesce' | 'each';
  /**
   * confab members negotiate "history" and give every chat a cid, as confab's web and
   * terminal clients do (the server then dedupes each chat by it and answers "71").
   * Other servers have no such thing: for them it is the workload without it.
   */
  cids?: boolean;
}

export const WORKLOADS: Record<string, Workload> = {
  'W-seed': { name: 'W-seed', members: 10, senders: 10, window: 1, shape: 'coalesce' },
  'W-pipe': { name: 'W-pipe', members: 10, senders: 10, window: 32, shape: 'coalesce' },
  'W-pipe/each': { name: 'W-pipe/each', members: 10, senders: 10, window: 32, shape: 'each' },
  'W-big': { name: 'W-big', members: 200, senders: 5, window: 8, shape: 'coalesce' },
  'W-big/each': { name: 'W-big/each', members: 200, senders: 5, window: 8, shape: 'each' },
  'W-pipe/cid': {
    name: 'W-pipe/cid',
    members: 10,
    senders: 10,
    window: 32,
    shape: 'coalesce',
    cids: true,
  },
  'W-big/cid': {
    name: 'W-big/cid',
    members: 200,
    senders: 5,
    window: 8,
    shape: 'coalesce',
    cids: true,
  },
};

export interface FanoutResult {
  workload: string;
  server: string;
  seconds: number;
  deliveries: number;
  deliveriesPerSec: number;
  p50Ms: number;
  p99Ms: number;
  lost: number;
  serverCpuPct: number;
  generatorCpuPct: number;
  serverUsPerDelivery: number;
  serverPeakRssMiB: number;
  /** Chats sent per second in the window (each is `members - 1` deliveries). */
  chatsPerSec?: number;
  /**
   * A cluster's Redis alone (its CPU is in the server columns too): per chat
   * it runs one append script and one PUBLISH to every node subscribed.
   */
  redis?: RedisShare;
  /** Members connected to each node, for a server of several nodes. */
  membersPerNode?: number[];
  /** Set on a median row: how many runs it summarises, their throughput range, and loss over all of them. */
  runs?: number;
  minPerSec?: number;
  maxPerSec?: number;
}

/** How many of the members are connected to each of the server's ports, as their sockets say. */
export function membersPerPort(
  server: RunningServer,
  members: readonly (Member | undefined)[],
): number[] {
  return server.ports.map((p) => members.filter((m) => m?.socket.remotePort === p).length);
}

const PAD = 'x'.repeat(24);

/**
 * Runs one fan-out workload against a running server: warm up, then measure
 * for `seconds`, then stop sending and wait for everything in flight.
 */
export async function runFanout(
  server: RunningServer,
  w: Workload,
  seconds: number,
  warmupSeconds: number,
  progress: (text: string) => void,
): Promise<FanoutResult> {
  const flusher = new Flusher();
  const members: Member[] = [];
  // Sequential for the seed server (listen backlog 1); batches elsewhere.
  const batch = server.dialect === 'seed' ? 1 : 50;
  for (let i = 0; i < w.members; i += batch) {
    const group: Member[] = [];
    for (let j = i; j < Math.min(w.members, i + batch); j++) {
      // Round-robin over the nodes: most deliveries cross from one node to another.
      const port = server.ports[j % server.ports.length]!;
      group.push(
        new Member(
          server.dialect,
          `m${j}`,
          port,
          undefined,
          flusher,
          w.shape === 'each',
          undefined,
          w.cids === true,
        ),
      );
    }
    await Promise.all(group.map((m) => m.join()));
    members.push(...group);
  }
  // Joins announce themselves to earlier members; let that traffic pass.
  await new Promise((r) => setTimeout(r, 200));

  const others = w.members - 1;
  const senders = members.slice(0, w.senders);
  const sent = new Array<number>(w.senders).fill(0);
  const done = new Array<number>(w.senders).fill(0);
  // Receipts per in-flight message, in a ring the size of the window.
  const receipts = senders.map(() => new Int32Array(w.window));
  // Next expected sequence number, per receiver per sender: a gap is a loss.
  const expected = members.map(() => new Int32Array(w.senders));
  let lost = 0;
  let deliveries = 0;
  let running = true;
  const hist = new Histogram();
  const now = () => performance.now();

  const send = (s: number) => {
    const seq = sent[s]!++;
    senders[s]!.chat(`${s} ${seq} ${Math.round(now() * 1000)} ${PAD}`);
  };

  for (const [r, member] of members.entries()) {
    const exp = expected[r]!;
    member.onPayload = (s, seq, ts, readAt) => {
      hist.record(readAt - ts);
      deliveries++;
      if (seq !== exp[s]) lost += Math.max(0, seq - exp[s]!);
      exp[s] = seq + 1;
      const ring = receipts[s]!;
      const slot = seq % w.window;
      if (++ring[slot]! === others) {
        ring[slot] = 0;
        done[s]!++;
        if (running) send(s);
      }
    };
  }

  for (let s = 0; s < w.senders; s++) for (let k = 0; k < w.window; k++) send(s);

  await new Promise((r) => setTimeout(r, warmupSeconds * 1000));
  hist.reset();
  deliveries = 0;
  const redisWindow = server.redis && (await openRedisWindow(server.redis));
  const chats0 = sent.reduce((a, b) => a + b, 0);
  const cpu0 = cpuMicrosOf(server.pids);
  const self0 = selfCpuMicros();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  // A window without one delivery measures nothing: on a machine busy with other work a
  // short window can fall inside one stall, so it runs on (up to 10 s more) until one lands.
  const latest = end + 10_000;
  while (performance.now() < end || (deliveries === 0 && performance.now() < latest)) {
    await new Promise((r) => setTimeout(r, 250));
    const rate = deliveries / ((performance.now() - t0) / 1000);
    progress(
      `${w.name} ${server.name}: ${((performance.now() - t0) / 1000).toFixed(1)}s ${Math.round(rate).toLocaleString('en')} deliveries/s`,
    );
  }
  const elapsed = (performance.now() - t0) / 1000;
  const measured = deliveries;
  const cpu = cpuMicrosOf(server.pids) - cpu0;
  const self = selfCpuMicros() - self0;
  const chats = sent.reduce((a, b) => a + b, 0) - chats0;
  const redis = redisWindow?.close(elapsed, chats, measured);
  running = false;

  // Drain: every message sent must reach every other member.
  const drainUntil = performance.now() + 10_000;
  const complete = () => sent.every((n, s) => done[s] === n);
  while (!complete() && performance.now() < drainUntil) await new Promise((r) => setTimeout(r, 20));
  let missing = 0;
  for (let s = 0; s < w.senders; s++) missing += sent[s]! - done[s]!;
  const peak = peakRssKiBOf(server.pids);
  const perNode = membersPerPort(server, members);
  for (const m of members) m.socket.destroy();
  return {
    workload: w.name,
    server: server.name,
    seconds: elapsed,
    deliveries: measured,
    deliveriesPerSec: measured / elapsed,
    p50Ms: hist.quantile(0.5) / 1000,
    p99Ms: hist.quantile(0.99) / 1000,
    lost: lost + missing,
    serverCpuPct: (cpu / (elapsed * 1e6)) * 100,
    generatorCpuPct: (self / (elapsed * 1e6)) * 100,
    serverUsPerDelivery: measured > 0 ? cpu / measured : Number.NaN,
    serverPeakRssMiB: peak / 1024,
    chatsPerSec: chats / elapsed,
    ...(redis === undefined ? {} : { redis: await redis, membersPerNode: perNode }),
  };
}

export interface ConnsResult {
  server: string;
  connections: number;
  connectPerSec: number;
  kibPerConnection: number;
  serverPeakRssMiB: number;
  /** CPU while the connections were being opened: the generator's near 100% makes it the ceiling. */
  serverCpuPct: number;
  generatorCpuPct: number;
  /** Server CPU per connection accepted (all its threads), while they were being opened. */
  serverUsPerConnection: number;
  /** Set on a median of several rounds: how many, and the range of their rates. */
  runs?: number;
  minPerSec?: number;
  maxPerSec?: number;
}

/** Opens `count` idle connections from several 127.x source addresses. */
export async function runConns(
  server: RunningServer,
  count: number,
  progress: (text: string) => void,
  rss: (pid: number) => number,
): Promise<ConnsResult> {
  const net = await import('node:net');
  await new Promise((r) => setTimeout(r, 500));
  const before = rss(server.pid);
  const sockets: import('node:net').Socket[] = [];
  // Few connections per source address, and addresses no recent run used: binding a source
  // port has to step over the TIME_WAIT sockets earlier runs left on the same address, and
  // with thousands of them that search, not the server, set the connect rate.
  const perSource = 500;
  const sources = Math.ceil(count / perSource);
  const firstSource = Math.floor(Math.random() * (250 * 250 - sources));
  const t0 = performance.now();
  const cpu0 = cpuMicrosOf(server.pids);
  const self0 = selfCpuMicros();
  const inFlight = 256;
  let opened = 0;
  let failed = 0;
  const openOne = (i: number) =>
    new Promise<void>((resolve) => {
      const source = firstSource + Math.floor(i / perSource);
      const localAddress = `127.${1 + Math.floor(source / 250)}.${1 + (source % 250)}.1`;
      const s = net.connect({ port: server.port, host: '127.0.0.1', localAddress });
      s.on('error', () => {
        failed++;
        resolve();
      });
      s.once('connect', () => {
        opened++;
        sockets.push(s);
        resolve();
      });
    });
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      await openOne(i);
      if (i % 1000 === 0)
        progress(`W-conns ${server.name}: ${opened.toLocaleString('en')} connected`);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  // A connect completes in the kernel; the connection counts once the server has accepted it.
  const drainBy = performance.now() + 5000;
  while ((acceptQueue(server.port) ?? 0) > 0 && performance.now() < drainBy) {
    await new Promise((r) => setTimeout(r, 1));
  }
  const seconds = (performance.now() - t0) / 1000;
  const serverCpu = cpuMicrosOf(server.pids) - cpu0;
  const generatorCpu = selfCpuMicros() - self0;
  // Let the server finish accepting and settle before reading its memory.
  await new Promise((r) => setTimeout(r, 1500));
  const after = rss(server.pid);
  const peak = peakRssKiB(server.pid);
  for (const s of sockets) s.destroy();
  if (failed > 0) progress(`W-conns ${server.name}: ${failed} connections failed`);
  return {
    server: server.name,
    connections: opened,
    connectPerSec: opened / seconds,
    kibPerConnection: (after - before) / Math.max(1, opened),
    serverPeakRssMiB: peak / 1024,
    serverCpuPct: (serverCpu / (seconds * 1e6)) * 100,
    generatorCpuPct: (generatorCpu / (seconds * 1e6)) * 100,
    serverUsPerConnection: serverCpu / Math.max(1, opened),
  };
}

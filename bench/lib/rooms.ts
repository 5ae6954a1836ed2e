import { Histogram } from './histogram.js';
import { Flusher, Member } from './loadgen.js';
import { cpuMicrosOf, peakRssKiBOf, rssKiBOf, selfCpuMicros } from './proc.js';
import { openRedisWindow, type RedisShare } from './redis.js';
import type { RunningServer } from './servers.js';
import { membersPerPort } from './workload.js';

/**
 * W-rooms: many small rooms, each with one sender at a steady rate, as a
 * chat service's day looks (most rooms quiet, a message now and then),
 * rather than W-pipe's one room at full speed. What it measures is the cost
 * of a delivery and of a member when connections are many and traffic thin.
 */
export interface RoomsWorkload {
  rooms: number;
  /** Members per room, the sender included. */
  members: number;
  /** Messages per second each room's sender sends, on average. */
  rate: number;
  /** Chat text length in characters (the payload, not the frame). */
  messageBytes: number;
}

export const W_ROOMS: RoomsWorkload = { rooms: 1000, members: 10, rate: 1, messageBytes: 64 };

export interface RoomsResult {
  workload: 'W-rooms';
  server: string;
  /** confab's --history for this run (`default`: no flag given). */
  history?: string;
  rooms: number;
  members: number;
  connections: number;
  /** Messages per second per room asked for, and what the senders achieved in the window. */
  rate: number;
  sentPerSec: number;
  seconds: number;
  deliveries: number;
  deliveriesPerSec: number;
  p50Ms: number;
  p99Ms: number;
  lost: number;
  /** Deliveries that reached a member of another room: must be zero, like loss. */
  misrouted: number;
  serverCpuPct: number;
  serverUsPerDelivery: number;
  generatorCpuPct: number;
  generatorUsPerDelivery: number;
  /** Server RSS growth from before the first connection to all joined, per connection. */
  kibPerMember: number;
  serverPeakRssMiB: number;
  /** Connecting and joining everyone, in seconds. */
  setupSeconds: number;
  /** Chats sent per second in the window, all rooms together. */
  chatsPerSec?: number;
  /** A cluster's Redis alone (also counted in the server columns). */
  redis?: RedisShare;
  /** Members connected to each node, for a server of several nodes. */
  membersPerNode?: number[];
  /** Members whose connection was lost or stuck before they were in their room, and who connected again. */
  reconnects: number;
}

/** Joins in flight at once: enough to keep a server busy, few enough not to trip accept backlogs. */
const JOIN_CONCURRENCY = 200;
/**
 * Connecting again, as a chat client would, when a connection is reset or stuck before its
 * member is in the room, for every server alike. ngIRCd needs it: its listen backlog is
 * compiled in at 10 (`listen(sock, 10)` in its conn.c, one accept per wakeup), so with many
 * joins in flight its accept queue overflows, Linux drops the handshake's last ACK
 * (tcp_abort_on_overflow=0), and a connection the client already thinks open is reset when the
 * server gives up on it; before this, runs failed about 9,000 members in (or sooner). Fewer
 * joins in flight would avoid it, but InspIRCd takes about a second per registration, so 8 in
 * flight would keep it over the setup limit.
 */
const JOIN_ATTEMPTS = 5;
/** Every member joined within this, or the run fails. */
const SETUP_LIMIT_MS = 600_000;
/** Source addresses the members are spread over, 127.0.0.1-127.0.0.8 (ephemeral ports). */
const SOURCES = 8;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs W-rooms against a running server that speaks rooms (confab with
 * `rooms`, or IRC channels): join everyone, send for `warmup` + `seconds`,
 * then stop sending and wait for everything in flight.
 */
export async function runRooms(
  server: RunningServer,
  w: RoomsWorkload,
  seconds: number,
  warmupSeconds: number,
  progress: (text: string) => void,
): Promise<RoomsResult> {
  if (server.dialect !== 'confab' && server.dialect !== 'irc')
    throw new Error(`W-rooms needs rooms: ${server.name} speaks ${server.dialect}`);
  const total = w.rooms * w.members;
  const roomName = (r: number) => (server.dialect === 'irc' ? `room${r}` : `r${r}`);
  const flusher = new Flusher();
  // members[r * w.members + k]: member k of room r; k = 0 is the room's sender.
  const members = new Array<Member | undefined>(total);

  // Let the server settle after start before taking its baseline memory.
  await sleep(500);
  const rssBefore = rssKiBOf(server.pids);
  const t0 = performance.now();
  const deadline = t0 + SETUP_LIMIT_MS;
  let next = 0;
  let joined = 0;
  let reconnects = 0;
  let failure: Error | undefined;
  const worker = async () => {
    while (next < total && failure === undefined) {
      if (performance.now() > deadline) {
        failure = new Error(`W-rooms ${server.name}: only ${joined} of ${total} joined in time`);
        return;
      }
      const i = next++;
      const room = Math.floor(i / w.members);
      // A room's members go round-robin over the nodes, starting at a
      // different node for each room so the senders are spread too.
      const port = server.ports[(i + room) % server.ports.length]!;
      for (let attempt = 1; ; attempt++) {
        const m = new Member(
          server.dialect,
          `m${i}`,
          port,
          `127.0.0.${1 + (i % SOURCES)}`,
          flusher,
          true,
          roomName(room),
        );
        members[i] = m;
        try {
          await m.join();
          if (++joined % 500 === 0)
            progress(`W-rooms ${server.name}: ${joined.toLocaleString('en')} of ${total} joined`);
          break;
        } catch (err) {
          const message = (err as Error).message;
          // A refusal (nickname taken, room full) is an answer, not a lost connection.
          const lost = /closed while joining|join timed out/.test(message);
          if (!lost || attempt === JOIN_ATTEMPTS || failure !== undefined) {
            failure ??= err as Error;
            break;
          }
          m.socket.destroy();
          reconnects++;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: JOIN_CONCURRENCY }, worker));
  const closeAll = () => {
    for (const m of members) m?.socket.destroy();
  };
  if (failure !== undefined) {
    closeAll();
    throw failure;
  }
  const setupSeconds = (performance.now() - t0) / 1000;
  // Joins announce themselves to earlier members; let that traffic pass.
  await sleep(1000);
  const rssAfter = rssKiBOf(server.pids);

  const sent = new Int32Array(w.rooms);
  // Next sequence number each member expects from its room's sender.
  const expected = new Int32Array(total);
  let lost = 0;
  let misrouted = 0;
  let deliveries = 0;
  const hist = new Histogram();
  for (let i = 0; i < total; i++) {
    const room = Math.floor(i / w.members);
    if (i % w.members === 0) continue; // a sender does not hear itself
    members[i]!.onPayload = (sender, seq, micros, readAt) => {
      if (sender !== room) {
        misrouted++;
        return;
      }
      hist.record(readAt - micros);
      deliveries++;
      if (seq !== expected[i]) lost += Math.max(0, seq - expected[i]!);
      expected[i] = seq + 1;
    };
  }

  const send = (r: number) => {
    const seq = sent[r]!++;
    const head = `${r} ${seq} ${Math.round(performance.now() * 1000)} `;
    members[r * w.members]!.chat(head.padEnd(w.messageBytes, 'x'));
  };
  // Each room on its own clock: a random phase, then intervals of 0.5 to 1.5
  // times the mean, so sends neither line up nor drift into step.
  const period = 1000 / w.rate;
  const timers = new Array<NodeJS.Timeout | undefined>(w.rooms);
  let sending = true;
  // Each send is due at a time fixed in advance, not "an interval after the
  // last one fired": timers that fire late on a busy machine do not lower the rate.
  const schedule = (r: number, due: number) => {
    timers[r] = setTimeout(
      () => {
        if (!sending) return;
        send(r);
        schedule(r, due + period * (0.5 + Math.random()));
      },
      Math.max(0, due - performance.now()),
    );
  };
  const start = performance.now();
  for (let r = 0; r < w.rooms; r++) schedule(r, start + period * Math.random());

  await sleep(warmupSeconds * 1000);
  hist.reset();
  deliveries = 0;
  const sent0 = sent.reduce((a, b) => a + b, 0);
  const redisWindow = server.redis && (await openRedisWindow(server.redis));
  const cpu0 = cpuMicrosOf(server.pids);
  const self0 = selfCpuMicros();
  const m0 = performance.now();
  const end = m0 + seconds * 1000;
  while (performance.now() < end) {
    await sleep(Math.min(250, Math.max(1, end - performance.now())));
    progress(
      `W-rooms ${server.name}: ${((performance.now() - m0) / 1000).toFixed(1)}s ${deliveries.toLocaleString('en')} deliveries`,
    );
  }
  const elapsed = (performance.now() - m0) / 1000;
  const measured = deliveries;
  const cpu = cpuMicrosOf(server.pids) - cpu0;
  const self = selfCpuMicros() - self0;
  const sentInWindow = sent.reduce((a, b) => a + b, 0) - sent0;
  const redis = redisWindow?.close(elapsed, sentInWindow, measured);
  sending = false;
  for (const t of timers) clearTimeout(t);

  // Drain: every message sent must reach every other member of its room.
  const complete = () => {
    for (let i = 0; i < total; i++) {
      if (i % w.members !== 0 && expected[i] !== sent[Math.floor(i / w.members)]) return false;
    }
    return true;
  };
  const drainUntil = performance.now() + 10_000;
  while (!complete() && performance.now() < drainUntil) await sleep(20);
  let missing = 0;
  for (let i = 0; i < total; i++) {
    if (i % w.members !== 0) missing += sent[Math.floor(i / w.members)]! - expected[i]!;
  }
  const peak = peakRssKiBOf(server.pids);
  const perNode = server.redis === undefined ? undefined : membersPerPort(server, members);
  closeAll();
  return {
    workload: 'W-rooms',
    server: server.name,
    rooms: w.rooms,
    members: w.members,
    connections: total,
    rate: w.rate,
    sentPerSec: sentInWindow / elapsed / w.rooms,
    seconds: elapsed,
    deliveries: measured,
    deliveriesPerSec: measured / elapsed,
    p50Ms: hist.quantile(0.5) / 1000,
    p99Ms: hist.quantile(0.99) / 1000,
    lost: lost + missing,
    misrouted,
    serverCpuPct: (cpu / (elapsed * 1e6)) * 100,
    serverUsPerDelivery: measured > 0 ? cpu / measured : Number.NaN,
    generatorCpuPct: (self / (elapsed * 1e6)) * 100,
    generatorUsPerDelivery: measured > 0 ? self / measured : Number.NaN,
    kibPerMember: (rssAfter - rssBefore) / total,
    serverPeakRssMiB: peak / 1024,
    setupSeconds,
    chatsPerSec: sentInWindow / elapsed,
    ...(redis === undefined ? {} : { redis: await redis, membersPerNode: perNode }),
    reconnects,
  };
}

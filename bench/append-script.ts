/**
 * Where Redis's time goes in one call of the history store's append script: Redis's own
 * count (`INFO commandstats`, µs per call) of the script as a busy node sends it (one
 * call a room and turn, its chats already joined), beside scripts that do less with the
 * same arguments. Redis runs on a throwaway server of its own; each variant is called
 * over a few rounds and the best round counts.
 *
 *   npx tsx bench/append-script.ts [chats per call, default 56]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from '../src/store/ioredis.js';
import { APPEND_LUA } from '../src/store/redis-history.js';
import { launchRedis, redisMissing, stopProcess } from './lib/servers.js';

const ROUNDS = 3;
const CALLS = 3_000;
/** Calls in flight at once, as a node's turn sends several rooms' calls together. */
const IN_FLIGHT = 20;
const ROOMS = 10;
const perCall = Number(process.argv[2] ?? 56);
if (!(Number.isInteger(perCall) && perCall >= 1 && perCall <= 1_000)) {
  throw new Error('chats per call: an integer from 1 to 1000');
}

const missing = redisMissing();
if (missing !== undefined) {
  console.log(`skipped: ${missing}`);
  process.exit(0);
}

const publish = APPEND_LUA.indexOf("redis.call('PUBLISH', channel,");
const publishEnd = APPEND_LUA.indexOf('\n', APPEND_LUA.indexOf('\n', publish) + 1);
if (publish < 0 || publishEnd < 0) throw new Error('the append script no longer publishes');

/** What each variant runs, with the append script's keys and arguments. */
const variants: [name: string, script: string, maxMessages: number][] = [
  ['append, rooms past their count cap (each call trims)', APPEND_LUA, 1_000],
  ['append, rooms below the cap', APPEND_LUA, 1e9],
  [
    'append, publishing the chats without building the payload',
    `${APPEND_LUA.slice(0, publish)}redis.call('PUBLISH', channel, body)${APPEND_LUA.slice(publishEnd)}`,
    1_000,
  ],
  ['a script doing nothing with the same arguments', 'return 1', 1_000],
  [
    'a script joining the chats into a new string once',
    "local s = '[' .. ARGV[8] .. ']' return 1",
    1_000,
  ],
];

const MSG = 'a typical chat line of some forty characters';
const body = Array.from(
  { length: perCall },
  (_, i) => `[${Date.now()},"member${i % 10}","${MSG} ${i}"]`,
).join(',');

const dir = mkdtempSync(path.join(tmpdir(), 'confab-bench-script-'));
const server = await launchRedis(dir);
const redis = new Redis({ host: '127.0.0.1', port: server.port, lazyConnect: true });
const best = new Map<string, { call: number; inner: number }>();
try {
  await redis.connect();
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, script, maxMessages] of variants) {
      await redis.flushall();
      const sha = (await redis.script('LOAD', script)) as string;
      await redis.config('RESETSTAT');
      let inFlight: Promise<unknown>[] = [];
      for (let i = 0; i < CALLS; i++) {
        const room = `r${i % ROOMS}`;
        inFlight.push(
          redis.evalsha(
            sha,
            7,
            `t:${room}`,
            `e:${room}`,
            `m:${room}`,
            `c:${room}`,
            'written',
            `f:${room}`,
            `b:${room}`,
            `epoch${i}`,
            String(maxMessages),
            room,
            `ch:${room}`,
            '',
            '0',
            `B${perCall}`,
            body,
          ),
        );
        if (inFlight.length === IN_FLIGHT) {
          await Promise.all(inFlight);
          inFlight = [];
        }
      }
      await Promise.all(inFlight);
      const stats = commandStats(await redis.info('commandstats'));
      const call = stats.get('evalsha') ?? 0;
      let inner = 0;
      for (const [command, us] of stats) if (command !== 'evalsha') inner += us;
      if (call < (best.get(name)?.call ?? Number.POSITIVE_INFINITY))
        best.set(name, { call, inner });
    }
  }
} finally {
  redis.disconnect();
  await stopProcess(server.child);
  rmSync(dir, { recursive: true, force: true });
}

/** Each command's µs per script call (usec ÷ the script's calls). */
function commandStats(info: string): Map<string, number> {
  const stats = new Map<string, number>();
  for (const m of info.matchAll(/^cmdstat_([a-z]+):calls=\d+,usec=(\d+),/gm)) {
    if (m[1] !== 'config' && m[1] !== 'script' && m[1] !== 'flushall')
      stats.set(m[1]!, Number(m[2]) / CALLS);
  }
  return stats;
}

console.log(
  `Redis µs per call, ${perCall} chats of ${body.length / perCall} bytes each (best of ${ROUNDS} rounds of ${CALLS} calls)`,
);
for (const [name, { call, inner }] of best) {
  console.log(
    `  ${name.padEnd(60)} ${call.toFixed(1).padStart(6)}  (commands it called: ${inner.toFixed(1)})`,
  );
}

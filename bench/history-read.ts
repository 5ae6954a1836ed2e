/**
 * What a page of history costs to read from each HistoryStore: a join's page (the newest
 * 100 messages) and a page further back, with rooms whose chats came one per event-loop
 * turn and many per turn (a busy room: the Redis store keeps a turn's chats in one stream
 * entry, the SQLite store in one row). `room()`, the call a join makes around its page
 * (twice: see readInEpoch in src/core/chat.ts), is timed too. With `--baseline DIR` (a
 * built checkout) its stores run beside this checkout's, interleaved, for a before and
 * after in one run. Sequential awaits: this is latency, not throughput.
 *
 *   npx tsx bench/history-read.ts [--baseline /path/to/other/checkout]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { HistoryStore } from '../src/core/history.js';
import { MemoryHistoryStore } from '../src/store/memory-history.js';
import { RedisHistoryStore } from '../src/store/redis-history.js';
import { SqliteHistoryStore } from '../src/store/sqlite-history.js';
import { launchRedis, redisMissing, stopProcess } from './lib/servers.js';

const { values } = parseArgs({ options: { baseline: { type: 'string' } } });
const ROUNDS = 3;
const READS = 500;
const MESSAGES = 5_000;
const MSG = 'a typical chat line of some forty characters';
const options = { retention: { maxMessages: 10_000, maxAgeMs: 0 }, pruneIntervalMs: 0 };

type Make = (name: string) => HistoryStore;
interface Build {
  label: string;
  memory: Make;
  sqlite: Make;
  redis: Make | undefined;
}

const dir = mkdtempSync(path.join(tmpdir(), 'confab-bench-read-'));
const redis = redisMissing() === undefined ? await launchRedis(dir) : undefined;
const redisUrl = redis === undefined ? undefined : `redis://127.0.0.1:${redis.port}`;

function build(
  label: string,
  mods: {
    memory: typeof MemoryHistoryStore;
    sqlite: typeof SqliteHistoryStore;
    redis: typeof RedisHistoryStore;
  },
): Build {
  return {
    label,
    memory: () => new mods.memory(options),
    sqlite: (name) => new mods.sqlite(path.join(dir, `${label}-${name}.db`), options),
    redis:
      redisUrl === undefined
        ? undefined
        : (name) => new mods.redis({ ...options, redis: redisUrl, prefix: `${label}:${name}:` }),
  };
}

const builds: Build[] = [
  build('this', {
    memory: MemoryHistoryStore,
    sqlite: SqliteHistoryStore,
    redis: RedisHistoryStore,
  }),
];
if (values.baseline !== undefined) {
  const root = path.resolve(values.baseline, 'dist/store');
  builds.push(
    build('baseline', {
      memory: (await import(path.join(root, 'memory-history.js'))).MemoryHistoryStore,
      sqlite: (await import(path.join(root, 'sqlite-history.js'))).SqliteHistoryStore,
      redis: (await import(path.join(root, 'redis-history.js'))).RedisHistoryStore,
    }),
  );
}

async function fill(store: HistoryStore, perTurn: number): Promise<void> {
  for (let n = 0; n < MESSAGES; n += perTurn) {
    await Promise.all(
      Array.from({ length: perTurn }, () =>
        store.append('r', { at: Date.now(), from: 'bench', msg: MSG }),
      ),
    );
    await new Promise((resolve) => setImmediate(resolve));
  }
}

async function micros(run: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < READS; i++) await run();
  return ((performance.now() - t0) * 1000) / READS;
}

const rows: string[] = [];
for (const kind of ['memory', 'sqlite', 'redis'] as const) {
  for (const perTurn of [1, 60]) {
    const stores = builds.flatMap((b) => {
      const make = b[kind];
      return make === undefined ? [] : [{ label: b.label, store: make(`${perTurn}`) }];
    });
    if (stores.length === 0) continue;
    for (const { store } of stores) await fill(store, perTurn);
    const best = new Map<string, number[]>();
    for (let round = 0; round < ROUNDS; round++) {
      for (const { label, store } of stores) {
        const times = [
          await micros(() => store.read('r', { limit: 100 })),
          await micros(() => store.read('r', { limit: 100, before: MESSAGES / 2 })),
          await micros(() => store.room('r')),
        ];
        const prev = best.get(label);
        best.set(label, prev === undefined ? times : prev.map((t, i) => Math.min(t, times[i]!)));
      }
    }
    for (const { label, store } of stores) {
      const [newest, back, room] = best.get(label)!;
      rows.push(
        `| ${kind} | ${perTurn} | ${label} | ${newest!.toFixed(0)} | ${back!.toFixed(0)} | ${room!.toFixed(0)} |`,
      );
      await store.close();
    }
  }
}
console.log('| store | chats per turn | build | newest 100 µs | 100 further back µs | room() µs |');
console.log('|---|---:|---|---:|---:|---:|');
for (const row of rows) console.log(row);
console.log(
  `\nBest of ${ROUNDS} rounds of ${READS} sequential calls each, ${MESSAGES} messages a room.`,
);
if (redis !== undefined) await stopProcess(redis.child);
rmSync(dir, { recursive: true, force: true });

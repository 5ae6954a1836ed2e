/**
 * Appends per second into each HistoryStore, with 1 and with 100 appends per
 * event-loop turn (a quiet server commits each message alone; a busy one
 * shares a commit among a turn's messages). Rooms keep their newest 10,000, so
 * the SQLite and Redis numbers include count retention. Steps run interleaved
 * over a few rounds and the best round counts: on a shared machine, read the
 * ratios. With Debian's redis-server present, a throwaway one (no persistence)
 * is measured too, publishing as a cluster's store does, with and without a
 * cid per chat; its own CPU per append is printed beside it.
 *
 *   npx tsx bench/history.ts
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { HistoryStore } from '../src/core/history.js';
import { MemoryHistoryStore } from '../src/store/memory-history.js';
import { RedisHistoryStore } from '../src/store/redis-history.js';
import { SqliteHistoryStore } from '../src/store/sqlite-history.js';
import { cpuMicros } from './lib/proc.js';
import { launchRedis, redisMissing, stopProcess } from './lib/servers.js';

const ROUNDS = 3;
const ROUND_MS = 1_000;
const MAX_PER_ROUND = 2_000_000;
const ROOMS = 10;
const MSG = 'a typical chat line of some forty characters';
const options = { retention: { maxMessages: 10_000, maxAgeMs: 0 }, pruneIntervalMs: 0 };

const dir = mkdtempSync(path.join(tmpdir(), 'confab-bench-history-'));
const stores: Record<string, HistoryStore> = {
  memory: new MemoryHistoryStore(options),
  'SQLite file': new SqliteHistoryStore(path.join(dir, 'history.db'), options),
};
/** Stores whose appends carry a cid, as confab's own clients send one with every chat. */
const withCid = new Set<string>();

const redis = redisMissing() === undefined ? await startRedis() : undefined;
if (redis !== undefined) {
  for (const name of ['Redis', 'Redis, cids']) {
    stores[name] = new RedisHistoryStore({ ...options, redis: redis.url, publish: true });
  }
  withCid.add('Redis, cids');
}

async function startRedis() {
  const { port, child } = await launchRedis(dir);
  return { url: `redis://127.0.0.1:${port}`, pid: child.pid!, stop: () => stopProcess(child) };
}

let cids = 0;

async function appendsPerSecond(
  store: HistoryStore,
  perTurn: number,
  cid: boolean,
): Promise<number> {
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < ROUND_MS && n < MAX_PER_ROUND) {
    const turn: Promise<unknown>[] = [];
    for (let i = 0; i < perTurn; i++, n++) {
      const draft = { at: Date.now(), from: 'bench', msg: MSG };
      turn.push(store.append(`room${n % ROOMS}`, cid ? { ...draft, cid: `c${cids++}` } : draft));
    }
    await Promise.all(turn);
    // Awaiting alone would continue in the same turn as the commit; a real server's next
    // messages arrive in a later turn.
    await new Promise((resolve) => setImmediate(resolve));
  }
  return (n / (performance.now() - t0)) * 1_000;
}

const best = new Map<string, number>();
/** Redis's own CPU per append in the best round, µs. */
const redisCost = new Map<string, number>();
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, store] of Object.entries(stores)) {
      for (const perTurn of [1, 100]) {
        const key = `${name}, ${perTurn} per turn`;
        const cpu0 = redis === undefined ? 0 : cpuMicros(redis.pid);
        const rate = await appendsPerSecond(store, perTurn, withCid.has(name));
        if (rate > (best.get(key) ?? 0)) {
          best.set(key, rate);
          if (name.startsWith('Redis') && redis !== undefined) {
            redisCost.set(key, (cpuMicros(redis.pid) - cpu0) / ((rate * ROUND_MS) / 1_000));
          }
        }
      }
    }
  }
} finally {
  for (const store of Object.values(stores)) await store.close();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
}

const base = best.get('SQLite file, 1 per turn')!;
console.log('appends/s (best of %d rounds of %d ms)', ROUNDS, ROUND_MS);
if (redis === undefined) console.log(`  (no Redis: ${redisMissing()})`);
for (const [key, rate] of best) {
  const cost = redisCost.get(key);
  console.log(
    `  ${key.padEnd(28)} ${Math.round(rate).toString().padStart(10)}   x${(rate / base).toFixed(1)}${cost === undefined ? '' : `   Redis ${cost.toFixed(1)} µs/append`}`,
  );
}

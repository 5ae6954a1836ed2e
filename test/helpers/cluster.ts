/**
 * Confab nodes sharing one real redis-server (`--redis`), each its own
 * process on free loopback ports, for the cluster integration tests.
 */
import { type RedisServer, startRedis } from './redis.js';
import { type SpawnedServer, spawnServer } from './spawn-server.js';

export interface TestCluster {
  readonly redis: RedisServer;
  readonly nodes: SpawnedServer[];
  /** Stops every node, then Redis. */
  stop(): Promise<void>;
}

/**
 * Starts Redis, then `count` nodes with `args` each (plus `perNode(i)`'s),
 * one after the other. `--cluster-timeout` defaults to 2 s here: short, so
 * tests about dead nodes are quick.
 */
export async function startCluster(
  count: number,
  args: readonly string[] = [],
  perNode: (index: number) => readonly string[] = () => [],
): Promise<TestCluster> {
  const redis = await startRedis();
  const nodes: SpawnedServer[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await redis.stop();
  };
  try {
    for (let i = 0; i < count; i++) {
      nodes.push(
        await spawnServer([
          '--redis',
          redis.url,
          '--cluster-timeout',
          '2',
          '--rate-limit',
          '0',
          ...args,
          ...perNode(i),
        ]),
      );
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { redis, nodes, stop };
}

/** Waits until `done` holds, polling every 50 ms for at most `timeoutMs`. */
export async function until(
  what: string,
  done: () => boolean | Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < timeoutMs / 50 && Date.now() < deadline; i++) {
    if (await done()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

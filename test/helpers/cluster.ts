/**
 * Confab nodes sharing one real redis-server (`--redis`), each its own
 * process on free loopback ports, for the cluster integration tests.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { RawClient } from './raw-client.js';
import { type RedisServer, startRedis, withoutRedis } from './redis.js';
import { type SpawnedServer, spawnServer } from './spawn-server.js';
import { TcpRelay } from './tcp-relay.js';

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

/** A test file's cluster (useCluster) and the clients it opens. */
export interface FileCluster {
  /** The running cluster; only inside the file's tests. */
  readonly cluster: TestCluster;
  port(node: number): number;
  /** A connection to `node` from `localAddress` (any 127.0.0.0/8 address), closed after the file. */
  open(node: number, localAddress?: string): Promise<RawClient>;
  /** A connection to `node` that sent CONNECT as `nickname` (with `extra`) and got its "03". */
  join(node: number, nickname: string, extra?: object): Promise<RawClient>;
}

/**
 * One cluster for a test file's tests: `count` nodes with `args`, each with a data directory
 * of its own under a temporary one (`prepare` may write files there first and give more
 * arguments), started before the tests and stopped after them, with every client `open`
 * made. Nothing starts where redis-server is missing (`withoutRedis`).
 */
export function useCluster(
  name: string,
  count: number,
  args: readonly string[],
  prepare: (dir: string) => readonly string[] = () => [],
): FileCluster {
  let dir: string | undefined;
  let running: TestCluster | undefined;
  const clients: RawClient[] = [];
  beforeAll(async () => {
    if (withoutRedis()) return;
    const root = mkdtempSync(path.join(os.tmpdir(), `confab-${name}-`));
    dir = root;
    running = await startCluster(count, [...args, ...prepare(root)], (i) => [
      '--data-dir',
      path.join(root, `data${i}`),
    ]);
  }, 60_000);
  afterAll(async () => {
    for (const c of clients) c.close();
    await running?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  }, 60_000);
  const file: FileCluster = {
    get cluster(): TestCluster {
      if (running === undefined) throw new Error('the cluster runs only inside the tests');
      return running;
    },
    port: (node) => file.cluster.nodes[node]!.port,
    async open(node, localAddress = '127.0.0.1') {
      const client = await RawClient.open(file.port(node), '127.0.0.1', localAddress);
      clients.push(client);
      return client;
    },
    async join(node, nickname, extra = {}) {
      const client = await file.open(node);
      client.sendPy({ cmd: '0', nickname, ...extra });
      await client.expect('03', 10_000);
      return client;
    },
  };
  return file;
}

/**
 * A connection to `node` that sent CONNECT as `nickname` with `caps` (history among them) and
 * read its "03" and its lobby's "101"; with the resume token the "03" gave it.
 */
export async function memberWithToken(
  file: FileCluster,
  node: number,
  nickname: string,
  caps: readonly string[],
): Promise<{ c: RawClient; token: string }> {
  const c = await file.open(node);
  c.sendPy({ cmd: '0', nickname, caps });
  const welcome = await c.expect('03', 10_000);
  await c.waitFor((m) => m.cmd === '101' && m.room === 'lobby');
  return { c, token: welcome.resume as string };
}

/**
 * For a test file: Redis and two nodes (`--cluster-timeout` `timeoutS`), node `via` reaching
 * Redis through a TcpRelay that the tests make lose what goes between them, the other
 * directly; clients opened here are closed after the file.
 */
export function useRelayedCluster(via: 0 | 1, caps: readonly string[], timeoutS = 5) {
  let redis: RedisServer | undefined;
  let relay: TcpRelay | undefined;
  const nodes: SpawnedServer[] = [];
  const clients: RawClient[] = [];

  beforeAll(async () => {
    if (withoutRedis()) return;
    redis = await startRedis();
    relay = await TcpRelay.start(redis.port);
    const urls = via === 0 ? [relay.redisUrl, redis.url] : [redis.url, relay.redisUrl];
    const args = ['--cluster-timeout', String(timeoutS), '--rate-limit', '0'];
    for (const url of urls) nodes.push(await spawnServer(['--redis', url, ...args]));
  }, 60_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await relay?.close();
    await redis?.stop();
  }, 60_000);

  const running = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('the cluster runs only inside the tests');
    return value;
  };
  const open = async (node: number): Promise<RawClient> => {
    const c = await RawClient.open(nodes[node]!.port);
    clients.push(c);
    return c;
  };
  /** A client on `node` that has CONNECTed as `nickname` (with `asked`, by default `caps`). */
  const member = async (node: number, nickname: string, asked = caps): Promise<RawClient> => {
    const c = await open(node);
    c.sendPy({ cmd: '0', nickname, caps: asked });
    await c.expect('03', 10_000);
    return c;
  };

  return {
    get relay(): TcpRelay {
      return running(relay);
    },
    get redis(): RedisServer {
      return running(redis);
    },
    open,
    member,
    /**
     * Once someone else has taken `nickname` on node 0, `old` (a connection that held it)
     * chats: what a member on node 0 hears of that ("from: msg").
     */
    async heardFrom(old: RawClient, nickname: string): Promise<string[]> {
      let other: RawClient | undefined;
      await until(
        `someone else taking "${nickname}"`,
        async () => {
          const c = await open(0);
          c.sendPy({ cmd: '0', nickname, caps });
          const m = await c.waitFor((x) => ['03', '01', '90'].includes(x.cmd), 1, 5_000);
          if (m.cmd === '03') other = c;
          else c.close();
          return other !== undefined;
        },
        10_000,
      );
      const listener = await member(0, 'listener');
      old.sendPy({ cmd: '7', msg: `not from the new ${nickname}` });
      await listener
        .waitFor((m) => m.cmd === '70' && m.msg === `not from the new ${nickname}`, 1, 3_000)
        .catch(() => undefined);
      return listener.received.filter((m) => m.cmd === '70').map((m) => `${m.from}: ${m.msg}`);
    },
  };
}

/** The resume token in the welcome ("03") `client` was sent. */
export function resumeToken(client: RawClient): string {
  const welcome = client.rawFrames.map((f) => JSON.parse(f) as Record<string, unknown>);
  return welcome.find((m) => m.cmd === '03')?.resume as string;
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

/**
 * The members of `room` as a client follows them from what it was shown in `frames`: a
 * "101" sets the list, "8", "30" and "91" change it. `names` is where it stood before.
 */
export function followMembers(
  names: ReadonlySet<string>,
  frames: readonly string[],
  room: string,
): Set<string> {
  let out = new Set(names);
  for (const m of frames.map((f) => JSON.parse(f) as Record<string, unknown>)) {
    if (m.room !== room) continue;
    if (m.cmd === '101') out = new Set(m.members as string[]);
    if (m.cmd === '8') out.add(m.nickname as string);
    if (m.cmd === '30') out.delete(m.nickname as string);
    if (m.cmd === '91') {
      out.delete(m.oldNickname as string);
      out.add(m.newNickname as string);
    }
  }
  return out;
}

/** The nicknames USERS lists for the lobby, asked on `client`, sorted. */
export async function lobbyUsers(client: RawClient): Promise<string[]> {
  client.drain();
  client.sendPy({ cmd: '1' });
  const reply = (await client.expect('10', 10_000)) as unknown as { users: [string][] };
  return reply.users.map((u) => u[0]).sort();
}

/**
 * What `watcher` was shown of the lobby's members (sorted), from its first "101", once
 * `agrees` with it or `ms` have passed; and what Presence has then (USERS).
 */
export async function shownAndListed(
  watcher: RawClient,
  agrees: (shown: string[]) => boolean,
  ms = 8_000,
): Promise<{ shown: string[]; listed: string[] }> {
  let shown: string[] = [];
  await until(
    'the lobby as shown to agree with Presence',
    () => {
      shown = [...followMembers(new Set(), watcher.rawFrames, 'lobby')].sort();
      return agrees(shown);
    },
    ms,
  ).catch(() => {});
  return { shown, listed: await lobbyUsers(watcher) };
}

/**
 * A real redis-server for the tests, on a free loopback port, with no
 * persistence: stopping it loses everything it held, as a Redis restarted
 * without RDB or AOF does.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { freePort, redisServerArgs } from '../../bench/lib/servers.js';
import { killedAfterFile } from './children.js';

export const REDIS_SERVER = process.env.CONFAB_REDIS_SERVER ?? '/usr/bin/redis-server';

export interface RedisServer {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /** Kills the server (SIGKILL): what it held is gone. */
  stop(): Promise<void>;
  /**
   * Stops the server and starts an empty one on the same port; `whileDown`, if given, runs
   * in between, and the new server starts once it resolved.
   */
  restart(whileDown?: () => Promise<void>): Promise<void>;
}

/** Why Redis cannot run here, or undefined if it can. */
export function redisMissing(): string | undefined {
  if (!existsSync(REDIS_SERVER)) {
    return `the Redis tests need ${REDIS_SERVER} (apt-get install redis-server, or set CONFAB_REDIS_SERVER)`;
  }
  return undefined;
}

/**
 * For tests that need Redis: true when it cannot run here, after saying so in
 * one line, so a machine without redis-server skips them plainly.
 */
export function withoutRedis(): boolean {
  const missing = redisMissing();
  if (missing !== undefined) console.log(`skipped: ${missing}`);
  return missing !== undefined;
}

/** Sends PING on a new connection; true once the server answers PONG. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let reply = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('latin1');
      // A server still loading answers -LOADING: not ready yet.
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

function launch(port: number, dir: string): ChildProcess {
  return killedAfterFile(
    spawn(REDIS_SERVER, redisServerArgs(port, dir), {
      stdio: ['ignore', 'ignore', 'inherit'],
    }),
  );
}

async function waitReady(port: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (let attempt = 0; attempt < 500 && Date.now() < deadline; attempt++) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `redis-server on port ${port} exited (${child.exitCode ?? child.signalCode})`,
      );
    }
    if (await ping(port)) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  child.kill('SIGKILL');
  throw new Error(`redis-server on port ${port} did not answer PING within 10 s`);
}

function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/**
 * Starts redis-server on a free 127.0.0.1 port and waits until it answers PING. A port
 * found free can be taken by another process (another test file's server) before
 * redis-server binds it, which then exits at once: tried again on another port, twice.
 */
export async function startRedis(): Promise<RedisServer> {
  const dir = mkdtempSync(path.join(tmpdir(), 'confab-redis-'));
  let port = await freePort();
  let child = launch(port, dir);
  // Only this child, by its own handle: never a process the test did not start.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  for (let attempt = 0; ; attempt++) {
    try {
      await waitReady(port, child);
      break;
    } catch (error) {
      const exited = child.exitCode !== null || child.signalCode !== null;
      if (exited && attempt < 2) {
        port = await freePort();
        child = launch(port, dir);
        continue;
      }
      process.removeListener('exit', killOnExit);
      rmSync(dir, { recursive: true, force: true });
      throw error;
    }
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    get pid() {
      return child.pid ?? -1;
    },
    async stop() {
      await kill(child);
      process.removeListener('exit', killOnExit);
      rmSync(dir, { recursive: true, force: true });
    },
    async restart(whileDown) {
      await kill(child);
      try {
        await whileDown?.();
      } finally {
        // Started again whatever the step did: a failed step must not leave later tests without Redis.
        child = launch(port, dir);
      }
      await waitReady(port, child);
    },
  };
}

/**
 * One redis-server for the tests of the enclosing describe: started before
 * them, stopped after. The object returned stands for it once it runs.
 */
export function useRedis(): RedisServer {
  let server: RedisServer | undefined;
  beforeAll(async () => {
    server = await startRedis();
  });
  afterAll(async () => {
    await server?.stop();
  });
  const running = (): RedisServer => {
    if (server === undefined) throw new Error('redis-server has not started');
    return server;
  };
  return {
    get url() {
      return running().url;
    },
    get port() {
      return running().port;
    },
    get pid() {
      return running().pid;
    },
    stop: () => running().stop(),
    restart: () => running().restart(),
  };
}

import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../../src/config.js';
import { silentLogger } from '../../src/core/ports.js';
import { ConfabServer } from '../../src/server.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SHARED = process.env.CONFAB_SHARED_DIR ?? path.resolve(ROOT, '../shared');
export const SEED_SERVER = path.join(SHARED, 'tools', 'seed_server.py');
export const CLI = path.join(ROOT, 'dist', 'cli', 'main.js');

/** Starts confab in this process on a free port; flags as on the command line. */
export async function startConfab(
  flags: Record<string, string | boolean> = {},
): Promise<ConfabServer> {
  const config = loadConfig(
    { port: '0', 'http-port': 'off', 'shutdown-timeout': '1', ...flags },
    {},
  );
  return ConfabServer.start(config, silentLogger);
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface SeedServer {
  port: number;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** Runs the course's own server, assembled from the lecture note at run time. */
export async function startSeed(maxUsers = 10): Promise<SeedServer> {
  if (!existsSync(SEED_SERVER)) throw new Error(`seed server tool not found at ${SEED_SERVER}`);
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const child = spawn(
      'python3',
      ['-u', SEED_SERVER, '--port', String(port), '--max-users', String(maxUsers)],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    const ready = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 10_000);
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('is listening on')) {
          clearTimeout(timer);
          resolve(true);
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    if (ready) {
      return {
        port,
        process: child,
        stop: () => stopProcess(child),
      };
    }
    await stopProcess(child);
    if (attempt >= 2) throw new Error(`seed server did not start:\n${output}`);
  }
}

/** SIGTERM, then SIGKILL if it has not exited within the grace period. */
export function stopProcess(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

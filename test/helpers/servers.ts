import { type ChildProcess, type StdioOptions, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type RunningServer,
  seedMissing,
  startServer,
  tempDirUntilExit,
} from '../../bench/lib/servers.js';
import { loadConfig } from '../../src/config.js';
import { silentLogger } from '../../src/core/ports.js';
import { ConfabServer } from '../../src/server.js';
import { killedAfterFile } from './children.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(ROOT, 'dist', 'cli', 'main.js');

let scratch: string | undefined;

/**
 * A new, empty directory for one server's --data-dir: a server alone locks its data dir, so
 * the tests' servers, running side by side, cannot share the default one. They are made in
 * the run's directory (test/data-dirs.ts), removed when the run ends.
 */
export function ownDataDir(): string {
  scratch ??= process.env.CONFAB_TEST_DATA_DIRS;
  // A test file run on its own, outside the suite's set-up, makes one for itself.
  scratch ??= tempDirUntilExit('confab-test-data-');
  return mkdtempSync(path.join(scratch, 'd-'));
}

/**
 * `args` with a --data-dir of its own added, unless they name one, a cluster, or print the
 * configuration (which would show it).
 */
export function withOwnDataDir(args: readonly string[]): string[] {
  if (!needsOwnDataDir((option) => args.includes(`--${option}`))) return [...args];
  return ['--data-dir', ownDataDir(), ...args];
}

/** Whether a server given the options `given` says it has needs a data dir of its own. */
function needsOwnDataDir(given: (option: string) => boolean): boolean {
  return !['data-dir', 'redis', 'print-config'].some(given);
}

/** Starts confab in this process on a free port; flags as on the command line. */
export async function startConfab(
  flags: Record<string, string | boolean> = {},
): Promise<ConfabServer> {
  const own = needsOwnDataDir((option) => flags[option] !== undefined);
  const config = loadConfig(
    {
      port: '0',
      'http-port': 'off',
      'shutdown-timeout': '1',
      history: 'memory',
      ...(own ? { 'data-dir': ownDataDir() } : {}),
      ...flags,
    },
    {},
  );
  return ConfabServer.start(config, silentLogger);
}

export { freePort, stopProcess } from '../../bench/lib/servers.js';

/**
 * `confab serve` with memory history, logging in `format`, on ports chosen beforehand: for
 * tests of the log itself, which do not read the ports from it (a pretty log, or one nobody
 * reads). `httpPort` 'off' turns the web listener off. NO_COLOR: the log compares as text.
 */
export function serveLogging(
  format: 'pretty' | 'json',
  port: number,
  httpPort: number | 'off',
  stdio: StdioOptions = ['ignore', 'pipe', 'pipe'],
  args: string[] = [],
  fileSizeLimitKiB?: number,
): ChildProcess {
  // With a limit, through bash's ulimit: every write past it fails (EFBIG; Node ignores
  // SIGXFSZ), as on a file system that has no more room for this process's files.
  const [command, prefix] =
    fileSizeLimitKiB === undefined
      ? [process.execPath, []]
      : ['bash', ['-c', `ulimit -f ${fileSizeLimitKiB} && exec "$@"`, 'bash', process.execPath]];
  return killedAfterFile(
    spawn(
      command,
      [
        ...prefix,
        CLI,
        'serve',
        '--port',
        String(port),
        '--http-port',
        String(httpPort),
        '--history',
        'memory',
        '--log-format',
        format,
        ...withOwnDataDir(args),
      ],
      { stdio, env: { ...process.env, NO_COLOR: '1' } },
    ),
  );
}

/** Everything `child` writes to stdout and stderr so far, as one text. */
export function outputOf(child: ChildProcess): () => string {
  let output = '';
  const collect = (d: Buffer) => {
    output += d.toString();
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  return () => output;
}

export type SeedServer = RunningServer;

/** Runs the course's own server, assembled from the lecture note at run time (bench/lib/servers.ts). */
export function startSeed(maxUsers = 10): Promise<SeedServer> {
  return startServer('seed', maxUsers);
}

/**
 * For tests that compare with the course server: true when it cannot run
 * here, after saying so in one line, so a bare clone skips them plainly.
 */
export function withoutSeed(): boolean {
  const missing = seedMissing();
  if (missing !== undefined) console.log(`skipped: ${missing}`);
  return missing !== undefined;
}

/** `confab serve ARGS` as its own process: its output so far, and its exit code once it exits. */
export function serveProcess(args: string[]): {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
} {
  const child = killedAfterFile(
    spawn(process.execPath, [CLI, 'serve', ...withOwnDataDir(args)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  let stderr = '';
  let stdout = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

/**
 * Runs `confab serve ARGS` expecting it to stop by itself (a start-up error): its exit
 * code (null if it was still running after `killAfterMs` and had to be killed), its
 * stderr and its stdout (the log). A test calling it needs a longer timeout than
 * `killAfterMs`, or a server that never stops outlives it.
 */
export async function serveExit(
  args: string[],
  killAfterMs = 30_000,
): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const server = serveProcess(args);
  const timer = setTimeout(() => server.child.kill('SIGKILL'), killAfterMs);
  const code = await server.exited;
  clearTimeout(timer);
  return {
    code: server.child.signalCode === 'SIGKILL' ? null : code,
    stderr: server.stderr(),
    stdout: server.stdout(),
  };
}

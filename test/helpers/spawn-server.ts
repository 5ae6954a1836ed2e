import { type ChildProcess, spawn } from 'node:child_process';
import { killedAfterFile } from './children.js';
import { CLI, stopProcess, withOwnDataDir } from './servers.js';

export interface SpawnedServer {
  child: ChildProcess;
  port: number;
  /** The HTTP/WebSocket port, when that listener is on. */
  httpPort: number | undefined;
  /** The TLS port, when --tls-port was given. */
  tlsPort: number | undefined;
  output: () => string;
  stop(): Promise<void>;
}

const START_TIMEOUT_MS = 15_000;

/** Waits (at most 10 s) until `read()` (a server's `output`, say) contains `text`. */
export async function waitFor(read: () => string, text: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (read().includes(text)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`never saw "${text}" in:\n${read()}`);
}

/** Runs `confab serve` as a user would, on a free port, and waits until it listens. */
export async function spawnServer(
  args: string[] = [],
  env: Record<string, string> = {},
  /** Keep only this many characters of the server's output (long hostile runs log a lot). */
  keepOutput = Number.POSITIVE_INFINITY,
  /** How long it may take to listen (a start that waits by design needs more). */
  startTimeoutMs = START_TIMEOUT_MS,
): Promise<SpawnedServer> {
  const child = killedAfterFile(
    spawn(
      process.execPath,
      [
        CLI,
        'serve',
        '--port',
        '0',
        '--http-port',
        '0',
        '--log-format',
        'json',
        '--history',
        'memory',
        ...withOwnDataDir(args),
      ],
      {
        env: { ...process.env, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    ),
  );
  let output = '';
  const collect = (d: Buffer) => {
    output += d.toString();
    if (output.length > keepOutput) output = output.slice(output.length - keepOutput);
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  // Every listener logs its address once it is up; the HTTP one comes last.
  const wantHttp = !args.join(' ').includes('--http-port off');
  const wantTls = args.includes('--tls-port');
  const ports = new Map<string, number>();
  const port = await new Promise<number>((resolve, reject) => {
    // Patient (a start on a machine loaded by the rest of the suite has taken over 10 s), yet
    // inside the hooks' default 20 s, so that a start too slow says so with its output.
    const timer = setTimeout(() => {
      // Not left running once the test gives up on it.
      child.kill('SIGKILL');
      reject(new Error(`server did not start:\n${output}`));
    }, startTimeoutMs);
    const check = () => {
      // Complete lines only: a chunk may end mid-line.
      for (const line of output.split('\n').slice(0, -1)) {
        if (!line.startsWith('{')) continue;
        const entry = JSON.parse(line) as { port?: number; transport?: string };
        if (entry.transport !== undefined && typeof entry.port === 'number')
          ports.set(entry.transport, entry.port);
      }
      const tcp = ports.get('tcp');
      if (tcp !== undefined && (!wantHttp || ports.has('http')) && (!wantTls || ports.has('tls'))) {
        clearTimeout(timer);
        child.stdout!.off('data', check);
        resolve(tcp);
      }
    };
    child.stdout!.on('data', check);
    child.once('exit', () => {
      clearTimeout(timer);
      reject(new Error(`server exited:\n${output}`));
    });
  });
  return {
    child,
    port,
    httpPort: ports.get('http'),
    tlsPort: ports.get('tls'),
    output: () => output,
    stop: () => stopProcess(child),
  };
}

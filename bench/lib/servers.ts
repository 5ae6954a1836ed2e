import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BenchRedis, redisPing } from './redis.js';

/**
 * `confab-course` is confab with members that negotiate nothing, as the
 * course client does; `baseline` is confab built from another checkout
 * (StartOptions.baseline), for before/after comparisons in one run,
 * `baseline-sqlite` and `baseline-memory` that checkout storing history, like
 * `confab-sqlite` and `confab-memory`, and `baseline-1node` and `baseline-2nodes`
 * that checkout as one and two nodes with Redis, like `confab-1node` and `confab-2nodes`.
 */
export type ServerName =
  | 'confab'
  | 'confab-course'
  | 'confab-memory'
  | 'confab-sqlite'
  | 'confab-1node'
  | 'confab-2nodes'
  | 'confab-3nodes'
  | 'baseline'
  | 'baseline-sqlite'
  | 'baseline-memory'
  | 'baseline-1node'
  | 'baseline-2nodes'
  | 'seed'
  | 'ngircd'
  | 'inspircd';
/** `course`: the course client's requests to confab, and confab's replies to such a client. */
export type Dialect = 'confab' | 'course' | 'seed' | 'irc';

export interface RunningServer {
  name: ServerName;
  dialect: Dialect;
  /** The first node's port and process (the only ones, but for a cluster). */
  port: number;
  pid: number;
  /** Every node's port: the load generator spreads each room's members over them in turn. */
  ports: number[];
  /**
   * Every process whose CPU and memory count as the server's: a cluster's
   * nodes and its Redis, so a cluster is charged all it costs.
   */
  pids: number[];
  /** A cluster's Redis, whose share is reported on its own as well. */
  redis?: BenchRedis;
  stop(): Promise<void>;
}

/**
 * Servers that are confab nodes sharing one Redis (`--redis`), and how many
 * nodes: `confab-1node` is the Redis hop alone, beside plain `confab`.
 */
export const CLUSTER_NODES: Partial<Record<ServerName, number>> = {
  'confab-1node': 1,
  'confab-2nodes': 2,
  'confab-3nodes': 3,
  'baseline-1node': 1,
  'baseline-2nodes': 2,
};

export const REDIS_SERVER = process.env.CONFAB_REDIS_SERVER ?? '/usr/bin/redis-server';

/** Why the cluster servers cannot run here, or undefined if they can. */
export function redisMissing(): string | undefined {
  if (!existsSync(REDIS_SERVER)) {
    return `the cluster servers need ${REDIS_SERVER} (apt-get install redis-server, or set CONFAB_REDIS_SERVER)`;
  }
  return undefined;
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SHARED = process.env.CONFAB_SHARED_DIR ?? path.resolve(ROOT, '../shared');

const SEED_TOOL = path.join(SHARED, 'tools', 'seed_server.py');

/**
 * Why the course server cannot run on this machine, or undefined if it can:
 * it is not part of this repository but read from ../shared (or
 * CONFAB_SHARED_DIR), and it needs python3.
 */
export function seedMissing(): string | undefined {
  if (!existsSync(SEED_TOOL)) {
    return `the course server needs ${SEED_TOOL} (set CONFAB_SHARED_DIR to the directory holding tools/seed_server.py)`;
  }
  if (spawnSync('python3', ['--version'], { stdio: 'ignore' }).status !== 0) {
    return 'the course server needs python3 on the PATH';
  }
  return undefined;
}

export function seedAvailable(): boolean {
  return seedMissing() === undefined;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/**
 * Whether process `pid` holds a socket listening on `port`, on any address (Linux: the
 * socket's inode in /proc/net/tcp or tcp6 among the process's descriptors).
 */
export function listensOn(pid: number, port: number): boolean {
  const suffix = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      // sl, local_address, rem_address, st (0A: LISTEN), …, inode (the tenth)
      const f = line.trim().split(/\s+/);
      if (f[1]?.endsWith(suffix) && f[3] === '0A' && f[9] !== undefined) inodes.add(f[9]);
    }
  }
  if (inodes.size === 0) return false;
  const fds = `/proc/${pid}/fd`;
  try {
    return readdirSync(fds).some((fd) => {
      try {
        const link = readlinkSync(`${fds}/${fd}`);
        return link.startsWith('socket:[') && inodes.has(link.slice(8, -1));
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}

/**
 * Waits until `child` itself listens on the port. A connection alone is not enough:
 * freePort() leaves a moment in which another process (another test's server) can take
 * the port, and the child then exits with "in use" while the port answers.
 */
export async function waitForPort(port: number, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ port, host: '127.0.0.1' });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok && child.pid !== undefined && listensOn(child.pid, port)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not listen on ${port}`);
}

/** SIGTERM, then SIGKILL if it has not exited within the grace period. */
export function stopProcess(child: ChildProcess, graceMs = 5000): Promise<void> {
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

function launch(cmd: string, args: string[], env?: NodeJS.ProcessEnv): ChildProcess {
  return spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'], env: env ?? process.env });
}

let shim: string | undefined;

/**
 * Builds bench/lib/nodelay.c once per process: preloaded into the IRC peers,
 * it turns Nagle's algorithm off on their accepted sockets, as confab does.
 */
export function nodelayShim(): string {
  if (shim === undefined) {
    const out = path.join(mkdtempSync(path.join(tmpdir(), 'bench-nodelay-')), 'nodelay.so');
    const source = path.join(ROOT, 'bench/lib/nodelay.c');
    execFileSync('cc', ['-shared', '-fPIC', '-O2', '-o', out, source, '-ldl']);
    shim = out;
  }
  return shim;
}

export interface StartOptions {
  /** Run the IRC peers as shipped, with Nagle's algorithm on (default: off, like confab). */
  peerNagle?: boolean;
  /** The root of another confab checkout, built, that server `baseline` runs. */
  baseline?: string;
  /** More flags for confab (and `baseline`), after CONFAB_BENCH_FLAGS. */
  confabArgs?: string[];
  /** Flags for node itself in a cluster's nodes (`--cpu-prof`, for bench/profile.ts). */
  nodeFlags?: string[];
  /** Flags for node itself when it runs `baseline` (and its -sqlite, -memory). */
  baselineNodeFlags?: string[];
}

const helpTexts = new Map<string, string>();

/** A new directory under the system's temporary one, removed when this process exits. */
export function tempDirUntilExit(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Whether the confab built at `root` (this checkout by default) has a serve
 * option, read from its --help: flags come and go between the checkouts a
 * before/after run compares.
 */
export function confabHasOption(flag: string, root = ROOT): boolean {
  let help = helpTexts.get(root);
  if (help === undefined) {
    const out = spawnSync(
      process.execPath,
      [path.join(root, 'dist/cli/main.js'), 'serve', '--help'],
      {
        encoding: 'utf8',
        timeout: 15_000,
      },
    );
    help = `${out.stdout ?? ''}${out.stderr ?? ''}`;
    helpTexts.set(root, help);
  }
  return new RegExp(`^\\s*${flag}\\b`, 'm').test(help);
}

function peerEnv(options: StartOptions): NodeJS.ProcessEnv {
  return options.peerNagle === true ? process.env : { ...process.env, LD_PRELOAD: nodelayShim() };
}

/** Settings that take confab's protective limits out of the way of a load test. */
export const CONFAB_BENCH_FLAGS = [
  '--rate-limit',
  '0',
  '--http-port',
  'off',
  '--max-conns-per-ip',
  '0',
  '--max-conns',
  '100000',
  '--handshake-timeout',
  '0',
  '--log-level',
  'warn',
  '--max-queue',
  String(64 * 1024 * 1024),
];

/**
 * Starts a fresh server of the given kind on a free port. freePort() and the
 * server's own bind leave a moment in which another process can take the
 * port, so a start that fails is tried again, up to three times.
 */
export async function startServer(
  name: ServerName,
  maxUsers: number,
  options: StartOptions = {},
): Promise<RunningServer> {
  const nodes = CLUSTER_NODES[name];
  for (let attempt = 1; ; attempt++) {
    try {
      return nodes === undefined
        ? await startOnce(name, maxUsers, options)
        : await startCluster(name, nodes, maxUsers, options);
    } catch (err) {
      if (attempt >= 3) throw err;
    }
  }
}

async function startOnce(
  name: ServerName,
  maxUsers: number,
  options: StartOptions,
): Promise<RunningServer> {
  const port = await freePort();
  let child: ChildProcess;
  let dialect: Dialect;
  switch (name) {
    case 'confab':
    case 'confab-course':
    case 'confab-memory':
    case 'confab-sqlite':
    case 'baseline':
    case 'baseline-sqlite':
    case 'baseline-memory': {
      dialect = name === 'confab-course' ? 'course' : 'confab';
      const baseline = name.startsWith('baseline');
      if (baseline && options.baseline === undefined)
        throw new Error(`server ${name} needs --baseline DIR`);
      const root = baseline ? options.baseline! : ROOT;
      // `confab` and `baseline` keep no history, as the IRC servers here keep none;
      // -memory and -sqlite measure what storing every chat costs.
      const history =
        name === 'confab-memory' || name === 'baseline-memory'
          ? 'memory'
          : name === 'confab-sqlite' || name === 'baseline-sqlite'
            ? 'sqlite'
            : 'off';
      const historyArgs = confabHasOption('--history', root) ? ['--history', history] : [];
      // A data dir of its own, whatever the history: a server locks its --data-dir, and the
      // default one in the working directory may be another server's.
      if (confabHasOption('--data-dir', root)) {
        const dataDir = mkdtempSync(path.join(tmpdir(), 'confab-bench-data-'));
        historyArgs.push('--data-dir', dataDir);
        cleanups.set(port, () => rmSync(dataDir, { recursive: true, force: true }));
      }
      child = launch(process.execPath, [
        ...(baseline ? (options.baselineNodeFlags ?? []) : []),
        path.join(root, 'dist/cli/main.js'),
        'serve',
        '--port',
        String(port),
        '--max-users',
        String(maxUsers),
        ...CONFAB_BENCH_FLAGS,
        ...historyArgs,
        ...(options.confabArgs ?? []),
      ]);
      break;
    }
    case 'seed': {
      dialect = 'seed';
      const tool = SEED_TOOL;
      const missing = seedMissing();
      if (missing !== undefined) throw new Error(missing);
      child = spawn(
        'python3',
        ['-u', tool, '--port', String(port), '--max-users', String(maxUsers)],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      // A probe connection that closes without CONNECT wedges the seed server
      // (its lock is never released), so wait for its own "listening" line.
      const seed = child;
      const ready = await new Promise<string | undefined>((resolve) => {
        let out = '';
        const timer = setTimeout(() => resolve(`no "listening" line:\n${out}`), 15_000);
        const onData = (d: Buffer) => {
          out += d.toString();
          if (out.includes('is listening on')) {
            clearTimeout(timer);
            resolve(undefined);
          }
        };
        seed.stdout!.on('data', onData);
        seed.stderr!.on('data', onData);
        seed.once('exit', () => {
          clearTimeout(timer);
          resolve(`exited:\n${out}`);
        });
      });
      if (ready !== undefined) {
        await stopProcess(seed);
        throw new Error(`seed server did not start: ${ready}`);
      }
      // It prints a line per command from now on: keep draining, stop keeping.
      for (const stream of [seed.stdout!, seed.stderr!]) {
        stream.removeAllListeners('data');
        stream.resume();
      }
      return {
        name,
        dialect,
        port,
        pid: seed.pid!,
        ports: [port],
        pids: [seed.pid!],
        stop: () => stopProcess(seed),
      };
    }
    case 'confab-1node':
    case 'confab-2nodes':
    case 'confab-3nodes':
    case 'baseline-1node':
    case 'baseline-2nodes':
      throw new Error(`${name} is a cluster: startCluster starts it`);
    case 'ngircd': {
      dialect = 'irc';
      const dir = mkdtempSync(path.join(tmpdir(), 'bench-ngircd-'));
      const conf = path.join(dir, 'ngircd.conf');
      writeFileSync(
        conf,
        `[Global]
Name = bench.ngircd.local
Info = bench
Listen = 127.0.0.1
Ports = ${port}
MotdPhrase = bench
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 30
MaxPenaltyTime = 0
PingTimeout = 600
PongTimeout = 600
[Options]
DNS = no
Ident = no
PAM = no
`,
      );
      child = launch('/usr/sbin/ngircd', ['--nodaemon', '--config', conf], peerEnv(options));
      break;
    }
    case 'inspircd': {
      dialect = 'irc';
      const dir = mkdtempSync(path.join(tmpdir(), 'bench-inspircd-'));
      const conf = path.join(dir, 'inspircd.conf');
      writeFileSync(path.join(dir, 'motd'), 'bench\n');
      writeFileSync(
        conf,
        `<server name="bench.inspircd.local" description="bench" network="bench">
<admin name="bench" nick="bench" email="bench@localhost">
<bind address="127.0.0.1" port="${port}" type="clients">
<connect allow="*" timeout="600" pingfreq="600" threshold="100000000" commandrate="100000000"
         fakelag="no" hardsendq="67108864" softsendq="67108864" recvq="67108864"
         localmax="100000" globalmax="100000" maxconnwarn="no" resolvehostnames="no"
         useident="no" limit="100000">
<files motd="${path.join(dir, 'motd')}">
<channels users="20" opers="60">
<dns server="127.0.0.1" timeout="1">
<pid file="${path.join(dir, 'inspircd.pid')}">
<options prefixquit="Quit: " syntaxhints="no" announcets="yes" hostintopic="yes" pingwarning="15">
<security hideserver="" userstats="Pu" maxtargets="20">
<performance quietbursts="yes" softlimit="100000" somaxconn="4096" netbuffersize="65536">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="sparse" target="${path.join(dir, 'log')}">
`,
      );
      child = launch(
        '/usr/sbin/inspircd',
        ['--config', conf, '--nofork', '--nopid', '--runasroot'],
        peerEnv(options),
      );
      break;
    }
  }
  const stop = async () => {
    await stopProcess(child);
    cleanups.get(port)?.();
    cleanups.delete(port);
  };
  try {
    await waitForPort(port, child, name);
  } catch (err) {
    await stop();
    throw err;
  }
  return { name, dialect, port, pid: child.pid!, ports: [port], pids: [child.pid!], stop };
}

/** redis-server's arguments for a throwaway instance: loopback only, nothing persisted. */
export function redisServerArgs(port: number, dir: string): string[] {
  return [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--dir',
    dir,
    '--daemonize',
    'no',
    '--loglevel',
    'warning',
  ];
}

/**
 * A throwaway redis-server on a free port (no persistence, files in `dir`), once it
 * answers PING. `started` gets the process as soon as it exists, so that a caller can
 * stop it should the wait fail.
 */
export async function launchRedis(
  dir: string,
  started: (child: ChildProcess) => void = () => {},
): Promise<{ port: number; child: ChildProcess }> {
  const port = await freePort();
  const child = launch(REDIS_SERVER, redisServerArgs(port, dir));
  started(child);
  const deadline = Date.now() + 10_000;
  while (!(await redisPing(port))) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error(`redis-server did not answer on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { port, child };
}

/**
 * A throwaway redis-server (no persistence, as the demo runs it) and `nodes`
 * confab processes joined to it, each on its own port with its own data
 * directory. Nothing of a failed start is left running.
 */
async function startCluster(
  name: ServerName,
  nodes: number,
  maxUsers: number,
  options: StartOptions,
): Promise<RunningServer> {
  const missing = redisMissing();
  if (missing !== undefined) throw new Error(missing);
  const baseline = name === 'baseline-1node' || name === 'baseline-2nodes';
  if (baseline && options.baseline === undefined)
    throw new Error(`server ${name} needs --baseline DIR`);
  const root = baseline ? options.baseline! : ROOT;
  if (!confabHasOption('--redis', root)) throw new Error(`${name}: this confab has no --redis`);
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-cluster-'));
  const children: ChildProcess[] = [];
  // Four processes per cluster should not outlive a harness that crashed.
  const killOnExit = () => {
    for (const c of children) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', killOnExit);
  const stop = async () => {
    // The nodes first, so they leave the cluster while Redis is still there.
    await Promise.all(children.slice(1).map((c) => stopProcess(c)));
    if (children[0] !== undefined) await stopProcess(children[0]);
    process.removeListener('exit', killOnExit);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const { port: redisPort } = await launchRedis(dir, (c) => children.push(c));
    const ports: number[] = [];
    for (let i = 0; i < nodes; i++) {
      const port = await freePort();
      const node = launch(process.execPath, [
        ...(options.nodeFlags ?? []),
        path.join(root, 'dist/cli/main.js'),
        'serve',
        '--port',
        String(port),
        '--max-users',
        String(maxUsers),
        ...CONFAB_BENCH_FLAGS,
        '--redis',
        `redis://127.0.0.1:${redisPort}`,
        '--data-dir',
        path.join(dir, `node${i}`),
        ...(options.confabArgs ?? []),
      ]);
      children.push(node);
      ports.push(port);
      await waitForPort(port, node, `${name} node ${i}`);
    }
    const pids = children.map((c) => c.pid!);
    return {
      name,
      dialect: 'confab',
      port: ports[0]!,
      pid: pids[1]!,
      ports,
      // Redis last: the nodes are the server proper, Redis what the cluster adds.
      pids: [...pids.slice(1), pids[0]!],
      redis: { pid: pids[0]!, port: redisPort },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** What to remove once the server on a port has stopped (a data directory). */
const cleanups = new Map<number, () => void>();

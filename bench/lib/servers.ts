import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export type ServerName = 'confab' | 'seed' | 'ngircd' | 'inspircd';
export type Dialect = 'confab' | 'seed' | 'irc';

export interface RunningServer {
  name: ServerName;
  dialect: Dialect;
  port: number;
  pid: number;
  stop(): Promise<void>;
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SHARED = process.env.CONFAB_SHARED_DIR ?? path.resolve(ROOT, '../shared');

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

async function waitForPort(port: number, child: ChildProcess, what: string): Promise<void> {
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
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not listen on ${port}`);
}

function stopper(child: ChildProcess): () => Promise<void> {
  return () =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      child.kill('SIGTERM');
    });
}

function launch(cmd: string, args: string[]): ChildProcess {
  return spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
}

/** Settings that take confab's protective limits out of the way of a load test. */
const CONFAB_BENCH_FLAGS = [
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

export async function startServer(name: ServerName, maxUsers: number): Promise<RunningServer> {
  const port = await freePort();
  let child: ChildProcess;
  let dialect: Dialect;
  switch (name) {
    case 'confab':
      dialect = 'confab';
      child = launch(process.execPath, [
        path.join(ROOT, 'dist/cli/main.js'),
        'serve',
        '--port',
        String(port),
        '--max-users',
        String(maxUsers),
        ...CONFAB_BENCH_FLAGS,
      ]);
      break;
    case 'seed': {
      dialect = 'seed';
      const tool = path.join(SHARED, 'tools', 'seed_server.py');
      if (!existsSync(tool)) throw new Error(`no seed server tool at ${tool}`);
      child = spawn(
        'python3',
        ['-u', tool, '--port', String(port), '--max-users', String(maxUsers)],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      // A probe connection that closes without CONNECT wedges the seed server
      // (its lock is never released), so wait for its own "listening" line.
      await new Promise<void>((resolve, reject) => {
        let out = '';
        const timer = setTimeout(() => reject(new Error('seed server did not start')), 15_000);
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('is listening on')) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      child.stdout!.resume();
      child.stderr!.resume();
      const seed = child;
      return { name, dialect, port, pid: seed.pid!, stop: stopper(seed) };
    }
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
      child = launch('/usr/sbin/ngircd', ['--nodaemon', '--config', conf]);
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
      child = launch('/usr/sbin/inspircd', [
        '--config',
        conf,
        '--nofork',
        '--nopid',
        '--runasroot',
      ]);
      break;
    }
  }
  await waitForPort(port, child, name);
  return { name, dialect, port, pid: child.pid!, stop: stopper(child) };
}

/**
 * Hostile clients against every listener (TCP, TLS, HTTP/WebSocket) of a
 * server running as its own process: after each attack the process must be
 * alive, its memory bounded, and a bystander must still chat.
 */

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RawClient } from '../helpers/raw-client.js';
import { CLI, ownDataDir, stopProcess } from '../helpers/servers.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';
import { makeCertificate } from '../helpers/tls-cert.js';

let server: SpawnedServer | undefined;
let round = 0;
const open: net.Socket[] = [];

beforeAll(() => {
  // The attacks spawn dist/cli/main.js; make sure it exists rather than fail obscurely.
  readFileSync(CLI);
});

afterEach(async () => {
  for (const s of open.splice(0)) s.destroy();
  await server?.stop();
  server = undefined;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Connects a raw socket (optionally from another loopback address); errors are expected. */
function connect(port: number, localAddress = '127.0.0.1'): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    open.push(socket);
    socket.on('error', () => {});
    socket.once('connect', () => resolve(socket));
    socket.once('close', () => reject(new Error('closed before connecting')));
  });
}

function closed(socket: net.Socket, timeoutMs: number): Promise<boolean> {
  if (socket.destroyed && socket.readyState === 'closed') return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/**
 * Waits (bounded) until a TCP connection from `localAddress` is admitted rather
 * than refused with "02". The server frees a closed socket's place in the close
 * phase of the loop turn that closed it, which a client that already saw the
 * close can overtake by a turn.
 */
async function placeFreed(localAddress = '127.0.0.1'): Promise<void> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const probe = await connect(server!.port, localAddress);
    const refused = await closed(probe, 200);
    probe.destroy();
    if (!refused) return;
  }
  throw new Error(`connections from ${localAddress} are still refused`);
}

/** Everything the peer sends until it closes (or `timeoutMs` passes). */
function collect(socket: net.Socket, timeoutMs: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  return closed(socket, timeoutMs).then(() => Buffer.concat(chunks));
}

/** Peak and current resident memory of a process, in MB. */
function memoryOf(pid: number): { hwm: number; rss: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)![1]);
  return { hwm: kb('VmHWM') / 1024, rss: kb('VmRSS') / 1024 };
}

/**
 * The process is alive and two fresh clients (from `localAddress`) chat
 * both ways, with RTT and VERSION answered.
 */
async function assertBystanderChats(localAddress = '127.0.0.1'): Promise<void> {
  expect(server!.child.exitCode).toBeNull();
  const n = round++;
  const joinFrom = async (nickname: string) => {
    const client = RawClient.wrap(await connect(server!.port, localAddress));
    client.sendPy({ cmd: '0', nickname });
    await client.expect('03', 10_000);
    return client;
  };
  const a = await joinFrom(`by-a${n}`);
  const b = await joinFrom(`by-b${n}`);
  a.sendPy({ cmd: '7', msg: `hello ${n}` });
  expect(await b.expect('70', 10_000)).toEqual({ cmd: '70', from: `by-a${n}`, msg: `hello ${n}` });
  b.sendPy({ cmd: '6', beginTime: n });
  expect(await b.expect('60', 10_000)).toEqual({ cmd: '60', beginTime: n });
  a.sendPy({ cmd: '4' });
  await a.expect('40', 10_000);
  a.close();
  b.close();
  expect(server!.child.exitCode).toBeNull();
}

function upgradeRequest(target: string, extra = ''): string {
  return (
    `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`
  );
}

describe('HTTP upgrade requests', () => {
  it('survives an upgrade request whose URL cannot be parsed', async () => {
    server = await spawnServer();
    const port = server.httpPort!;
    for (const target of ['//', '//x:99999/ws', 'http://[::1/ws']) {
      const socket = await connect(port);
      const reply = collect(socket, 5000);
      socket.write(upgradeRequest(target));
      expect((await reply).toString()).toMatch(/^HTTP\/1\.1 4\d\d /);
    }
    // The same targets as plain requests get 400.
    const socket = await connect(port);
    const reply = collect(socket, 5000);
    socket.write('GET // HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    expect((await reply).toString()).toMatch(/^HTTP\/1\.1 400 /);
    await assertBystanderChats();
  });

  it('survives generated request targets, as upgrades and as plain requests', async () => {
    server = await spawnServer();
    const port = server.httpPort!;
    // Printable ASCII without space (Node's parser refuses some of it itself),
    // after prefixes that make a URL parser look for a host.
    const target = fc
      .tuple(
        fc.constantFrom('', '/', '//', '///', 'http://', 'ws://'),
        fc.string({
          unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)),
        }),
      )
      .map(([prefix, rest]) => prefix + rest);
    await fc.assert(
      fc.asyncProperty(target, fc.boolean(), async (t, upgrade) => {
        const socket = await connect(port);
        const reply = collect(socket, 5000);
        socket.write(
          upgrade
            ? upgradeRequest(t)
            : `GET ${t} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
        );
        const text = (await reply).toString();
        socket.destroy();
        // Some reply or a plain close, never a dead server.
        if (text !== '') expect(text).toMatch(/^HTTP\/1\.1 \d{3} /);
        expect(server!.child.exitCode).toBeNull();
      }),
      { numRuns: 60 },
    );
    await assertBystanderChats();
  });

  it('survives refused upgrades (404, 403) whose clients reset the connection', async () => {
    server = await spawnServer();
    const port = server.httpPort!;
    for (let i = 0; i < 10; i++) {
      for (const [request, status] of [
        [upgradeRequest('/nope'), '404'],
        [upgradeRequest('/ws', 'Origin: http://evil.example\r\n'), '403'],
      ] as const) {
        const socket = await connect(port);
        const got = new Promise<string>((r) => socket.once('data', (d: Buffer) => r(d.toString())));
        socket.write(request);
        expect(await got).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
        // The server has answered and half-closed; an RST now reaches a socket it no longer reads.
        socket.resetAndDestroy();
      }
    }
    await sleep(200);
    await assertBystanderChats();
  });
});

describe('TLS handshakes', () => {
  let cert = '';
  let key = '';
  let dir = '';
  beforeAll(() => {
    ({ dir, cert, key } = makeCertificate());
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function spawnTls(flags: string[]): Promise<number> {
    server = await spawnServer(['--tls-port', '0', '--tls-cert', cert, '--tls-key', key, ...flags]);
    for (const line of server.output().split('\n')) {
      if (!line.startsWith('{')) continue;
      const entry = JSON.parse(line) as { transport?: string; port?: number };
      if (entry.transport === 'tls' && entry.port !== undefined) return entry.port;
    }
    throw new Error(`no TLS port in:\n${server.output()}`);
  }

  /** A real TLS client: resolves true if the handshake completes. */
  async function handshake(port: number, localAddress = '127.0.0.1'): Promise<boolean> {
    return (await tlsClient(port, localAddress)) !== undefined;
  }

  /** A TLS socket once its handshake completes, or undefined if it fails. */
  function tlsClient(port: number, localAddress: string): Promise<tls.TLSSocket | undefined> {
    return new Promise((resolve) => {
      // tls.connect hands these options to net.connect, localAddress included.
      const options: tls.ConnectionOptions & net.TcpNetConnectOpts = {
        port,
        host: '127.0.0.1',
        localAddress,
        rejectUnauthorized: false,
      };
      const socket = tls.connect(options);
      open.push(socket);
      socket.on('error', () => resolve(undefined));
      socket.once('close', () => resolve(undefined));
      socket.once('secureConnect', () => resolve(socket));
    });
  }

  it('answers the requests a client sent before it ended its side, as over TCP', async () => {
    const tlsPort = await spawnTls([]);
    const requests = [
      { cmd: '0', nickname: 'leaving', caps: ['errors'] },
      { cmd: '1' },
      { cmd: '4' },
      { cmd: '6', beginTime: 1 },
    ];
    const replies: string[][] = [];
    for (const [port, secure] of [
      [server!.port, false],
      [tlsPort, true],
    ] as const) {
      const socket = secure ? (await tlsClient(port, '127.0.0.1'))! : await connect(port);
      const client = RawClient.wrap(socket);
      // One write (one TLS record) each, and the end right after them.
      for (const request of requests) client.write(`${JSON.stringify(request)}\n`);
      socket.end();
      await client.expectClose(10_000);
      replies.push(client.received.map((m) => m.cmd));
    }
    expect(replies).toEqual([
      ['03', '10', '40', '60'],
      ['03', '10', '40', '60'],
    ]);
  });

  it('counts silent handshakes against --max-conns-per-ip and closes them after --handshake-timeout', async () => {
    const tlsPort = await spawnTls(['--max-conns-per-ip', '4', '--handshake-timeout', '2']);
    const silent = await Promise.all(Array.from({ length: 4 }, () => connect(tlsPort)));
    const ended = silent.map((s) => closed(s, 15_000));
    // The cap is full: one more from the same address is refused...
    expect(await handshake(tlsPort)).toBe(false);
    // ...while another address still gets in, over TLS and plain TCP alike.
    const secure = await tlsClient(tlsPort, '127.0.0.2');
    expect(secure).toBeDefined();
    const member = RawClient.wrap(secure!);
    member.sendPy({ cmd: '0', nickname: 'secure' });
    await member.expect('03');
    await assertBystanderChats('127.0.0.3');
    // None ever sent a ClientHello: each is closed at the deadline.
    expect(await Promise.all(ended)).toEqual([true, true, true, true]);
    // The server counts a socket free once its close completes, a moment after the peer sees it.
    let admitted = false;
    for (let i = 0; i < 20 && !admitted; i++) {
      admitted = await handshake(tlsPort);
      if (!admitted) await sleep(100);
    }
    expect(admitted).toBe(true);
    // The handshake deadline stopped when the handshake ended: past it, the member is still here.
    await sleep(1000);
    member.sendPy({ cmd: '6', beginTime: 1590314400123.5 });
    expect(await member.expect('60')).toEqual({ cmd: '60', beginTime: 1590314400123.5 });
    await assertBystanderChats();
  });

  it('exits on SIGTERM within --shutdown-timeout while handshakes are open', async () => {
    const tlsPort = await spawnTls(['--handshake-timeout', '600', '--shutdown-timeout', '1']);
    await Promise.all(Array.from({ length: 20 }, () => connect(tlsPort)));
    // A client halfway through a TLS record: the first bytes of a ClientHello.
    const partial = await connect(tlsPort);
    partial.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
    // Half an HTTP request, and WebSockets that never send CONNECT nor answer a close.
    const halfRequest = await connect(server!.httpPort!);
    halfRequest.write('GET /healthz HTTP/1.1\r\nHost: 127.0');
    for (let i = 0; i < 3; i++) (await wsRaw(server!.httpPort!)).pause();
    await sleep(200);
    const child = server!.child;
    const exited = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 1000 + 5000);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    child.kill('SIGTERM');
    expect(await exited).toBe(true);
    expect(child.exitCode).toBe(0);
  });
});

describe('HTTP before a request', () => {
  it('counts silent and half-sent requests against --max-conns-per-ip and closes them after --handshake-timeout', async () => {
    server = await spawnServer(['--max-conns-per-ip', '4', '--handshake-timeout', '2']);
    const port = server.httpPort!;
    const silent = await Promise.all(Array.from({ length: 4 }, () => connect(port)));
    silent[0]!.write('GET / HTTP/1.1\r\nHo');
    const ended = silent.map((s) => closed(s, 15_000));
    // Full: the next one from this address gets 503 and is closed.
    const refused = await connect(port);
    expect((await collect(refused, 5000)).toString()).toMatch(/^HTTP\/1\.1 503 /);
    await assertBystanderChats('127.0.0.2');
    expect(await Promise.all(ended)).toEqual([true, true, true, true]);
    await placeFreed();
    await assertBystanderChats();
  });
});

describe('HTTP pipelining', () => {
  it('bounds memory for thousands of pipelined GET /metrics that are never read', async () => {
    server = await spawnServer();
    const pid = server.child.pid!;
    // Warm up, so the baseline includes one ordinary scrape.
    const warm = await connect(server.httpPort!);
    const warmed = collect(warm, 5000);
    warm.write('GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    await warmed;
    const before = memoryOf(pid);
    const attackers = await Promise.all(
      Array.from({ length: 4 }, () => connect(server!.httpPort!)),
    );
    const request = 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';
    for (const socket of attackers) {
      socket.pause();
      socket.write(request.repeat(5000));
    }
    await assertBystanderChats();
    await sleep(500);
    await assertBystanderChats();
    const after = memoryOf(pid);
    expect(after.hwm - before.hwm).toBeLessThan(80);
  });
});

/** A masked client frame carrying `payload`. */
function clientFrame(fin: boolean, opcode: number, payload: Uint8Array): Buffer {
  const mask = Buffer.from([1, 2, 3, 4]);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
  return Buffer.concat([
    Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | payload.length]),
    mask,
    body,
  ]);
}

/** A raw socket after a successful WebSocket upgrade. */
async function wsRaw(port: number): Promise<net.Socket> {
  const socket = await connect(port);
  const head = await new Promise<string>((resolve) => {
    let text = '';
    const onData = (d: Buffer) => {
      text += d.toString('latin1');
      if (!text.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      resolve(text);
    };
    socket.on('data', onData);
    socket.write(upgradeRequest('/ws'));
  });
  expect(head).toMatch(/^HTTP\/1\.1 101 /);
  return socket;
}

describe('an upgrade pipelined behind a request', () => {
  // Its 101 went out before the answer to the request, which then arrived inside the
  // WebSocket stream; and that answer's end restarted the wait for the next HTTP request,
  // which closed the joined session --handshake-timeout later.
  it('is refused, not switched to a WebSocket session', async () => {
    server = await spawnServer(['--handshake-timeout', '1']);
    for (const [n, target] of ['/healthz', '/', '/missing'].entries()) {
      const socket = await connect(server.httpPort!);
      const reply = collect(socket, 10_000);
      const hello = Buffer.from(JSON.stringify({ cmd: '0', nickname: `piped${n}` }));
      socket.write(
        Buffer.concat([
          Buffer.from(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n${upgradeRequest('/ws')}`),
          clientFrame(true, 1, hello),
        ]),
      );
      expect((await reply).toString('latin1')).not.toContain('HTTP/1.1 101 ');
    }
    await assertBystanderChats();
  });
});

describe('WebSocket framing', () => {
  it('closes messages sent as thousands of 1-byte fragments, memory bounded', async () => {
    server = await spawnServer();
    const pid = server.child.pid!;
    const before = memoryOf(pid);
    // Under the ws library's own default cap (16384), far over what --max-frame allows for.
    const fragments = 16_000;
    const one = Buffer.from('x');
    const message = Buffer.concat([
      clientFrame(false, 1, Buffer.from('{')),
      ...Array.from({ length: fragments }, () => clientFrame(false, 0, one)),
    ]);
    const sockets = await Promise.all(Array.from({ length: 16 }, () => wsRaw(server!.httpPort!)));
    const replies = sockets.map((s) => collect(s, 10_000));
    for (const s of sockets) s.write(message);
    for (const reply of await Promise.all(replies)) {
      // A close frame (0x88): 1008 (too many fragments) or 1009 (too big).
      const at = reply.indexOf(0x88);
      expect(at).toBeGreaterThanOrEqual(0);
      expect([1008, 1009]).toContain(reply.readUInt16BE(at + 2));
    }
    const after = memoryOf(pid);
    expect(after.hwm - before.hwm).toBeLessThan(25);
    await assertBystanderChats();
  });

  it('still takes a message in a few large fragments', async () => {
    server = await spawnServer();
    const socket = await wsRaw(server.httpPort!);
    const connect = Buffer.from(JSON.stringify({ cmd: '0', nickname: 'fragmented' }));
    const parts = [connect.subarray(0, 10), connect.subarray(10, 20), connect.subarray(20)];
    const reply = new Promise<string>((resolve) =>
      socket.once('data', (d: Buffer) => resolve(d.toString())),
    );
    socket.write(
      Buffer.concat(parts.map((p, i) => clientFrame(i === parts.length - 1, i === 0 ? 1 : 0, p))),
    );
    expect(await reply).toContain('"cmd":"03"');
  });
});

describe('connection bursts', () => {
  /** Opens `count` raw connections at once; resolves with those that completed within `ms`. */
  async function burst(port: number, count: number, ms: number): Promise<net.Socket[]> {
    const done: net.Socket[] = [];
    const deadline = sleep(ms);
    await Promise.all(
      Array.from({ length: count }, (_, i) =>
        Promise.race([
          // Several source addresses: one has only so many ports free after earlier tests.
          connect(port, `127.0.9.${1 + (i % 8)}`).then(
            (socket) => {
              done.push(socket);
            },
            () => {},
          ),
          deadline,
        ]),
      ),
    );
    return done;
  }

  it('queues a burst that arrives while the process cannot accept, on every listener', async () => {
    // The kernel caps the backlog at somaxconn; below 4096 (kernels before 5.4) the listen
    // queue cannot hold this burst whatever confab asks for.
    const somaxconn = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'));
    if (somaxconn < 4096) {
      console.log(`skipped: net.core.somaxconn is ${somaxconn}, below the 4096 this test assumes`);
      return;
    }
    server = await spawnServer(['--max-conns-per-ip', '5000', '--max-conns', '5000']);
    const pid = server.child.pid!;
    // Well over Node's default backlog of 511, which the kernel would overflow: handshakes
    // past it are dropped, and their clients retry only after a second or more.
    const count = 1200;
    process.kill(pid, 'SIGSTOP');
    let tcp: net.Socket[];
    let http: net.Socket[];
    try {
      tcp = await burst(server.port, count, 10_000);
      http = await burst(server.httpPort!, count, 10_000);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    expect(tcp.length).toBe(count);
    expect(http.length).toBe(count);
    // Accepted once it runs again: the last of them joins.
    const last = RawClient.wrap(tcp[count - 1]!);
    last.sendPy({ cmd: '0', nickname: 'burst' });
    await last.expect('03', 10_000);
    for (const s of open.splice(0)) s.destroy();
    await assertBystanderChats();
  }, 60_000);

  /** Why this machine cannot give a server a network namespace of its own, if it cannot. */
  function noNamespace(): string | undefined {
    if (process.getuid?.() !== 0) return 'not root';
    for (const tool of ['unshare', 'nsenter', 'ip', 'ss']) {
      if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `no ${tool}`;
    }
    if (spawnSync('unshare', ['-n', 'true']).status !== 0) return 'unshare -n fails';
    return undefined;
  }

  it('follows a net.core.somaxconn raised above 4096 on every listener', async () => {
    const missing = noNamespace();
    if (missing !== undefined) {
      console.log(`skipped: a network namespace of its own (${missing})`);
      return;
    }
    // somaxconn belongs to the network namespace: raised in a private one, the machine's
    // own is untouched, and fixed ports cannot meet another test's.
    const tls = makeCertificate();
    const child = spawn(
      'unshare',
      [
        '-n',
        'sh',
        '-c',
        'ip link set lo up && echo 8192 > /proc/sys/net/core/somaxconn && exec "$0" "$@"',
        process.execPath,
        CLI,
        'serve',
        '--data-dir',
        ownDataDir(),
        '--port',
        '4100',
        '--http-port',
        '4101',
        '--tls-port',
        '4102',
        '--tls-cert',
        tls.cert,
        '--tls-key',
        tls.key,
        '--history',
        'off',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    try {
      // A listening socket's Send-Q is its backlog: what it asked for, cut to somaxconn.
      const backlogs = new Map<string, string>();
      for (let i = 0; i < 150 && backlogs.size < 3; i++) {
        await sleep(100);
        if (child.exitCode !== null) break;
        const ss = spawnSync('nsenter', ['-t', String(child.pid), '-n', 'ss', '-Hltn'], {
          encoding: 'utf8',
        });
        for (const line of ss.stdout.split('\n')) {
          const [, , sendQ, local] = line.trim().split(/\s+/);
          if (local !== undefined && sendQ !== undefined) backlogs.set(local, sendQ);
        }
      }
      expect(Object.fromEntries(backlogs), stderr).toEqual({
        '127.0.0.1:4100': '8192',
        '127.0.0.1:4101': '8192',
        '127.0.0.1:4102': '8192',
      });
    } finally {
      await stopProcess(child);
      rmSync(tls.dir, { recursive: true, force: true });
    }
  }, 30_000);
});

/**
 * Clients that never read, many at once: each may hold up to --max-queue of
 * output in the server before it is cut off, so what they hold together is
 * bounded for the process too (--max-queue-total), not only per connection
 * (at the default caps, 10,000 connections could hold 1 MiB each).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { OVER_TOTAL } from '../../src/transports/backlogs.js';
import { RawClient } from '../helpers/raw-client.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';

let server: SpawnedServer | undefined;
let stalled: ChildProcess | undefined;

afterEach(async () => {
  stalled?.kill('SIGKILL');
  stalled = undefined;
  await server?.stop();
  server = undefined;
});

/** Peak resident memory of a process so far, in MiB. */
function peakOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+)/.exec(status)![1]) / 1024;
}

/**
 * Python for clients that read nothing: a socket with a 2 KB receive buffer connected to
 * `port`, upgraded to a WebSocket (the 101 is the last thing it reads), and a masked text frame.
 */
const PY_CLIENTS = `
import json, os, socket, struct, sys
def connect(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.connect(("127.0.0.1", port))
    return s
def upgrade(s, port):
    s.sendall(("GET /ws HTTP/1.1\\r\\nHost: 127.0.0.1:%d\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n" % port).encode())
    reply = b""
    while b"\\r\\n\\r\\n" not in reply:
        reply += s.recv(1)
def frame(text):
    data, mask = text.encode(), os.urandom(4)
    head = bytes([0x81, 0x80 | len(data)]) if len(data) < 126 else bytes([0x81, 0xFE]) + struct.pack(">H", len(data))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))
`;

/**
 * Clients that join `room` and then read nothing until stdin closes: over TCP (JSON lines),
 * or over WebSocket when `ws` is given.
 */
const STALLED_CLIENTS = `${PY_CLIENTS}
port, n, room, ws = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "ws"
held = []
for i in range(n):
    s = connect(port)
    hello = json.dumps({"cmd": "0", "nickname": "stalled%d" % i, "caps": ["rooms"]})
    join = json.dumps({"cmd": "100", "room": room})
    if ws:
        upgrade(s, port)
        s.sendall(frame(hello) + frame(join))
    else:
        s.sendall((hello + "\\n" + join + "\\n").encode())
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
`;

function startStalled(
  port: number,
  n: number,
  room: string,
  over: 'tcp' | 'ws' = 'tcp',
): Promise<ChildProcess> {
  const child = spawn('python3', ['-c', STALLED_CLIENTS, String(port), String(n), room, over], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    child.stdout!.once('data', () => resolve(child));
    child.once('exit', (code) => reject(new Error(`stalled clients exited (${code})`)));
  });
}

/** A client that joins `rooms`, to send into them. */
async function senderIn(
  port: number,
  rooms: string[],
  caps = ['rooms', 'history'],
): Promise<RawClient> {
  const sender = await RawClient.open(port);
  sender.write(`${JSON.stringify({ cmd: '0', nickname: 'sender', caps })}\n`);
  for (const room of rooms) sender.write(`${JSON.stringify({ cmd: '100', room })}\n`);
  await sender.waitFor((m) => m.cmd === '101' && rooms.includes(String(m.room)), rooms.length);
  return sender;
}

/**
 * Sends `chat` to "sink", each once the last is stored ("71"), so in a turn of the server's
 * of its own however loaded the machine, until `victims` have left it, at most `most` times.
 */
async function sendUntilGone(sender: RawClient, chat: string, victims: number, most: number) {
  let seen = 0;
  let stored = 0;
  let left = 0;
  const count = () => {
    for (; seen < sender.received.length; seen++) {
      const m = sender.received[seen]!;
      if (m.cmd === '71') stored++;
      else if (m.cmd === '30' && m.room === 'sink') left++;
    }
  };
  for (let sent = 1; sent <= most && left < victims && !sender.isClosed; sent++) {
    sender.write(chat);
    for (let i = 0; i < 100_000 && stored < sent && !sender.isClosed; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      count();
    }
  }
  await sender.waitFor((m) => m.cmd === '30' && m.room === 'sink', victims);
}

describe('many clients that never read', () => {
  it.each(['tcp', 'ws'] as const)(
    'hold no more than --max-queue-total together (%s)',
    async (over) => {
      const victims = 128;
      // 8 MiB for all: without it each would hold its own 1 MiB (some 1.6 MB of RSS) until cut off.
      const total = String(8 * 1024 * 1024);
      server = await spawnServer(
        [
          ...['--rate-limit', '0', '--max-users', '200', '--room-capacity', '200'],
          ...['--max-conns-per-ip', '0', '--max-queue-total', total],
        ],
        {},
        100_000,
      );
      const pid = server.child.pid!;
      const sender = await senderIn(server.port, ['sink']);
      const port = over === 'tcp' ? server.port : server.httpPort!;
      stalled = await startStalled(port, victims, 'sink', over);
      await sender.waitFor((m) => m.cmd === '8' && m.room === 'sink', victims);
      const before = peakOf(pid);
      const chat = `${JSON.stringify({ cmd: '7', room: 'sink', msg: 'x'.repeat(4096) })}\n`;
      // Until every stalled client is cut off as a slow consumer (each chat reaches all of them).
      await sendUntilGone(sender, chat, victims, 3_000);
      // Most are cut off by the total; the last few (8 MiB / 1 MiB) fill their own queues first.
      // The server's log may reach us after the "30"s it sent.
      const byTotal = () =>
        server!
          .output()
          .split('\n')
          .filter((line) => line.includes(OVER_TOTAL))
          .reduce((n, line) => n + (JSON.parse(line) as { disconnected: number }).disconnected, 0);
      for (let i = 0; i < 100 && byTotal() < victims / 2; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(byTotal()).toBeGreaterThanOrEqual(victims / 2);
      // 128 clients at 1 MiB each could hold 128 MiB (170 MiB more RSS, measured over TCP); 8 MiB
      // of it is allowed, with what Node adds, and the young generation growing to its full size.
      expect(peakOf(pid) - before).toBeLessThan(64);
    },
    60_000,
  );

  it('hold no more than --max-queue each when every chat comes in a turn of its own', async () => {
    const victims = 20;
    server = await spawnServer(['--rate-limit', '0', '--max-users', '100'], {}, 100_000);
    const pid = server.child.pid!;
    const sender = await senderIn(server.port, ['sink']);
    stalled = await startStalled(server.port, victims, 'sink');
    await sender.waitFor((m) => m.cmd === '8' && m.room === 'sink', victims);
    const before = peakOf(pid);
    // Some 560 bytes framed, each turn's batch in a small (4 KiB) buffer.
    const chat = `${JSON.stringify({ cmd: '7', room: 'sink', msg: 'x'.repeat(500) })}\n`;
    await sendUntilGone(sender, chat, victims, 20_000);
    // What they could hold at 1 MiB each, three times over for what Node and the allocator add.
    expect(peakOf(pid) - before).toBeLessThan(3 * victims);
  }, 60_000);
});

/**
 * A client on a slow link (2 KB receive buffer) that reads steadily: asks `pages` pages of
 * `room`'s history back to back, then prints "done" once it has every "107" whole, or "closed" if the
 * server closed it first.
 */
const SLOW_READER = `${PY_CLIENTS}
import time
port, room, pages = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = connect(port)
s.sendall((json.dumps({"cmd": "0", "nickname": "reader", "caps": ["rooms", "history"]}) + "\\n"
           + json.dumps({"cmd": "100", "room": room}) + "\\n").encode())
data = b""
while b'"101"' not in data:
    chunk = s.recv(4096)
    if not chunk:
        print("closed", flush=True); sys.exit()
    data += chunk
s.sendall(("".join(json.dumps({"cmd": "106", "room": room, "limit": 100}) + "\\n" for _ in range(pages))).encode())
data = b""
for _ in range(100_000):
    chunk = s.recv(4096)
    if not chunk:
        print("closed", flush=True); break
    data += chunk
    if data.count(b'"more":') == pages:
        print("done", flush=True); break
    time.sleep(0.004)
`;

describe('the total cap and clients that read', () => {
  // Stalled clients go first, however little each holds, before one that reads steadily but
  // momentarily holds more.
  it('keeps a slow but reading client over stalled ones that hold less each', async () => {
    const victims = 40;
    server = await spawnServer(
      [
        ...['--rate-limit', '0', '--max-users', '200', '--room-capacity', '200'],
        ...['--max-conns-per-ip', '0', '--max-queue-total', String(2 * 1024 * 1024)],
      ],
      {},
      100_000,
    );
    const sender = await senderIn(server.port, ['sink', 'big']);
    // Some 400 KB of history, in pages of about 256 KB.
    for (let i = 0; i < 100; i++) {
      sender.write(`${JSON.stringify({ cmd: '7', room: 'big', msg: 'y'.repeat(4000) })}\n`);
    }
    await sender.waitFor((m) => m.cmd === '71', 100);
    stalled = await startStalled(server.port, victims, 'sink');
    await sender.waitFor((m) => m.cmd === '8' && m.room === 'sink', victims);
    // The stalled clients fill up together until the total first sheds one of them: the
    // rest then hold just under the total, each little.
    const shedding = () => server!.output().includes(OVER_TOTAL);
    const chat = `${JSON.stringify({ cmd: '7', room: 'sink', msg: 'x'.repeat(4000) })}\n`;
    for (let sent = 0; sent < 5_000 && !shedding(); sent++) {
      sender.write(chat);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    expect(shedding()).toBe(true);
    const reader = spawn('python3', ['-c', SLOW_READER, String(server.port), 'big', '8'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const outcome = await new Promise<string>((resolve) => {
      let out = '';
      reader.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
      });
      reader.once('exit', () => resolve(out.trim()));
    });
    expect(outcome).toBe('done');
  }, 60_000);
});

/**
 * WebSocket clients named `prefix`0, 1, ..., that read nothing; each sends EXIT when a line
 * comes on stdin, and they hold on until stdin closes.
 */
const EXITING_CLIENTS = `${PY_CLIENTS}
port, n, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
held = []
for i in range(n):
    s = connect(port)
    upgrade(s, port)
    s.sendall(frame(json.dumps({"cmd": "0", "nickname": "%s%d" % (prefix, i)})))
    held.append(s)
print("ready", flush=True)
sys.stdin.readline()
for s in held:
    s.sendall(frame(json.dumps({"cmd": "3"})))
print("exited", flush=True)
sys.stdin.read()
`;

describe('the total cap and clients that leave', () => {
  // A closing WebSocket connection holds its queue for up to --shutdown-timeout: it counts.
  it('counts what WebSocket clients that left still hold, until their connections close', async () => {
    const batches = 3;
    // Whispers stop at three quarters of --max-queue a client (Peer.busy): 64 of them can
    // hold 48 MiB, well past the total.
    const n = 64;
    const total = 32 * 1024 * 1024;
    server = await spawnServer(
      [
        ...['--rate-limit', '0', '--max-users', '300', '--max-conns-per-ip', '0'],
        ...['--max-queue-total', String(total), '--shutdown-timeout', '60'],
      ],
      {},
      100_000,
    );
    const pid = server.child.pid!;
    const sender = await RawClient.open(server.port);
    sender.write(`${JSON.stringify({ cmd: '0', nickname: 'sender', caps: ['rooms'] })}\n`);
    await sender.expect('03');
    const before = peakOf(pid);
    const checks = () => server!.output().split(OVER_TOTAL).length - 1;
    const children: ChildProcess[] = [];
    try {
      for (let b = 0; b < batches; b++) {
        const child = spawn(
          'python3',
          ['-c', EXITING_CLIENTS, String(server.httpPort!), String(n), `b${b}_`],
          {
            stdio: ['pipe', 'pipe', 'inherit'],
          },
        );
        children.push(child);
        await new Promise((resolve) => child.stdout!.once('data', resolve));
        // A whisper of some 4 KB to each, a round at a time, until the total is passed again.
        const seen = checks();
        for (let round = 0; round < 2_000 && checks() === seen; round++) {
          for (let i = 0; i < n; i++) {
            sender.write(
              `${JSON.stringify({ cmd: '2', to: `b${b}_${i}`, msg: 'x'.repeat(4000) })}\n`,
            );
          }
          await new Promise((resolve) => setTimeout(resolve, 4));
        }
        expect(checks()).toBeGreaterThan(seen);
        child.stdin!.write('exit\n');
        await new Promise((resolve) => child.stdout!.once('data', resolve));
      }
      // What they could hold at the total each time, uncounted once they left: some 140 MiB
      // more measured; counted till closed, about 70.
      expect(peakOf(pid) - before).toBeLessThan(100);
    } finally {
      for (const child of children) child.kill('SIGKILL');
    }
  }, 60_000);
});

import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import tls from 'node:tls';
import { afterEach, describe, expect, it, onTestFinished, vi } from 'vitest';
import { ChatClient } from '../../src/client/chat-client.js';
import { ErrorCode } from '../../src/protocol/codes.js';
import type { ConfabServer } from '../../src/server.js';
import { MemoryHistoryStore } from '../../src/store/memory-history.js';
import { until } from '../helpers/cluster.js';
import { admitted, join, RawClient } from '../helpers/raw-client.js';
import { startConfab } from '../helpers/servers.js';
import { spawnServer } from '../helpers/spawn-server.js';
import { makeCertificate } from '../helpers/tls-cert.js';

let server: ConfabServer | undefined;
let healthCheck = 0;

afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/** Two fresh, well-behaved clients exchange messages both ways; nothing may be lost. */
async function assertHealthy(port: number): Promise<void> {
  const n = healthCheck++;
  const a = await ChatClient.connect({ port, nickname: `ok-a${n}` });
  const b = await ChatClient.connect({ port, nickname: `ok-b${n}` });
  const got: string[] = [];
  const gotA: string[] = [];
  b.on('chat', (m) => got.push(m.msg));
  a.on('chat', (m) => gotA.push(m.msg));
  for (let i = 0; i < 20; i++) {
    a.chat(`a${i}`);
    b.chat(`b${i}`);
  }
  // A round trip on each side orders after its own earlier broadcasts.
  await a.rtt();
  await b.rtt();
  await b.version();
  await a.version();
  expect(got).toEqual(Array.from({ length: 20 }, (_, i) => `a${i}`));
  expect(gotA).toEqual(Array.from({ length: 20 }, (_, i) => `b${i}`));
  await a.exit();
  await b.exit();
}

/** A TCP connection to `port` from `localAddress` (any 127.0.0.0/8 address). */
function connectFrom(port: number, localAddress: string): Promise<RawClient> {
  return new Promise<RawClient>((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress });
    s.once('connect', () => resolve(RawClient.wrap(s)));
  });
}

async function startWith(flags: Record<string, string | boolean>): Promise<number> {
  server = await startConfab(flags);
  return server.address.port;
}

describe('bad input leaves the server healthy', () => {
  const garbage: [string, () => Uint8Array | string][] = [
    ['malformed JSON', () => '{"cmd": "7", "msg": }\n{{{{\n'],
    ['JSON that is not an object', () => '[1,2]\n"x"\n42\nnull\n'],
    ['wrong field types', () => '{"cmd": 0, "nickname": ["x"]}{"cmd":"7","msg":{"a":1}}'],
    ['invalid UTF-8', () => Uint8Array.of(0x7b, 0x22, 0x63, 0xff, 0xfe, 0x22, 0x7d, 0x0a)],
    ['binary garbage', () => Uint8Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) % 256)],
  ];

  for (const [name, payload] of garbage) {
    it(`survives ${name}, before and after joining`, async () => {
      const port = await startWith({});
      const stranger = await RawClient.open(port);
      stranger.write(payload());
      const member = await join(port, 'member');
      member.write(payload());
      await assertHealthy(port);
      stranger.close();
      member.close();
    });
  }

  it('closes a 10 MB frame without buffering it', async () => {
    const port = await startWith({});
    const socket = net.connect({ port, host: '127.0.0.1' });
    socket.on('error', () => {});
    socket.resume();
    await new Promise((r) => socket.once('connect', r));
    socket.write('{"cmd": "0", "nickname": "big"}');
    const closed = new Promise((r) => socket.once('close', r));
    socket.write(`{"cmd": "7", "msg": "${'x'.repeat(10 * 1024 * 1024)}"}`);
    await closed;
    expect(server!.chat.connectionCount).toBe(0);
    await assertHealthy(port);
  });

  it('survives half a frame followed by a disconnect', async () => {
    const port = await startWith({});
    const c = await join(port, 'halfway');
    c.write('{"cmd": "7", "msg": "this never ends');
    c.close();
    await assertHealthy(port);
  });

  it('handles everything a client wrote before it went, also behind a chat being stored', async () => {
    server = await startConfab({ history: 'memory' });
    const port = server.address.port;
    const watcher = await join(port, 'watcher');
    const append = MemoryHistoryStore.prototype.append;
    // A slow store: what follows the first chat waits in the session's backlog.
    const slow = vi.spyOn(MemoryHistoryStore.prototype, 'append').mockImplementation(function (
      this: MemoryHistoryStore,
      room,
      draft,
    ) {
      return append.call(this, room, draft).then((a) => delay(200, a));
    });
    try {
      for (const end of ['half-close', 'close'] as const) {
        const socket = net.connect({ port, host: '127.0.0.1' });
        socket.on('error', () => {});
        await new Promise((resolve) => socket.once('connect', resolve));
        socket.write(`{"cmd":"0","nickname":"writer-${end}"}`);
        await watcher.waitFor((m) => m.cmd === '8' && m.nickname === `writer-${end}`, 1);
        socket.write(
          '{"cmd":"7","msg":"first"}{"cmd":"6","beginTime":1}{"cmd":"7","msg":"second"}',
        );
        if (end === 'half-close') socket.end();
        else socket.destroy();
        await watcher.waitFor((m) => m.cmd === '30' && m.nickname === `writer-${end}`, 1, 5000);
        const heard = watcher.received
          .filter((m) => (m.cmd === '70' && m.from === `writer-${end}`) || m.cmd === '30')
          .map((m) => (m.cmd === '30' ? `left ${String(m.nickname)}` : String(m.msg)));
        expect(heard.slice(-3), end).toEqual(['first', 'second', `left writer-${end}`]);
      }
    } finally {
      slow.mockRestore();
      watcher.close();
    }
  });

  it('closes a connection that never sends CONNECT (--handshake-timeout)', async () => {
    const port = await startWith({ 'handshake-timeout': '1' });
    const idle = await RawClient.open(port);
    await idle.expectClose(5000);
    expect(idle.drain()).toEqual([]);
    await assertHealthy(port);
  });

  it('survives a flood of connects and disconnects', async () => {
    const port = await startWith({ 'max-conns-per-ip': '0' });
    for (let round = 0; round < 5; round++) {
      const sockets = await Promise.all(
        Array.from({ length: 100 }, () => RawClient.open(port).catch(() => undefined)),
      );
      for (const s of sockets) s?.close();
    }
    await assertHealthy(port);
  });
});

describe('limits', () => {
  it('stays healthy after 50 simultaneous joins into a room of 10', async () => {
    // More CONNECTs from one address than its budget: the race is for the room's places.
    const port = await startWith({ 'rate-limit': '0' });
    const all = await Promise.all(Array.from({ length: 50 }, () => RawClient.open(port)));
    for (const [i, c] of all.entries()) c.sendPy({ cmd: '0', nickname: `racer${i}` });
    expect((await admitted(all)).filter(Boolean).length).toBe(10);
    for (const c of all) c.close();
    for (let i = 0; i < 200 && server!.chat.connectionCount > 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    await assertHealthy(port);
  });

  it('hides member addresses with --hide-addresses', async () => {
    const port = await startWith({ 'hide-addresses': true });
    const a = await join(port, 'a');
    a.sendPy({ cmd: '1' });
    expect(await a.expect('10')).toEqual({ cmd: '10', users: [['a', 'hidden', 0]] });
    a.close();
  });

  it('cuts off a member that never reads; memory stays bounded and the others get everything in order', async () => {
    const spawned = await spawnServer(['--rate-limit', '0', '--max-queue', '262144']);
    try {
      const port = spawned.port;
      const reader = await ChatClient.connect({ port, nickname: 'reader' });
      const lazy = await RawClient.open(port);
      lazy.sendPy({ cmd: '0', nickname: 'lazy' });
      await lazy.expect('03');
      await reader.users();
      lazy.socket.pause();
      const sender = await RawClient.open(port);
      sender.sendPy({ cmd: '0', nickname: 'sender' });
      await sender.expect('03');

      const total = 30_000;
      const body = 'x'.repeat(1000);
      let next = 0;
      let outOfOrder = 0;
      let wake = () => {};
      const lazyLeft = new Promise<void>((resolve) =>
        reader.on('leave', (m) => {
          if (m.nickname === 'lazy') resolve();
        }),
      );
      const done = new Promise<void>((resolve) =>
        reader.on('chat', (m) => {
          if (m.from !== 'sender') return;
          if (m.msg !== `${next} ${body}`) outOfOrder++;
          next++;
          if (next === total) resolve();
          wake();
        }),
      );
      // Full speed, but never more than 200 messages (about 200 KB, under
      // --max-queue) ahead of the reader: only the member that never reads
      // can overflow, however fast or slow this machine is.
      for (let i = 0; i < total; i++) {
        while (i - next >= 200) await new Promise<void>((r) => (wake = r));
        sender.socket.write(`{"cmd":"7","msg":"${i} ${body}"}\n`);
      }
      await done;
      await lazyLeft;
      expect(outOfOrder).toBe(0);
      expect(next).toBe(total);
      const status = readFileSync(`/proc/${spawned.child.pid}/status`, 'utf8');
      const peakKiB = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1]);
      // 30 MB went through; a server that queued it for the lazy member would hold most of it.
      expect(peakKiB).toBeLessThan(200 * 1024);
      lazy.close();
      sender.close();
      await reader.exit();
    } finally {
      await spawned.stop();
    }
  }, 60_000);

  it('refuses requests over the rate, tells opted-in clients, and disconnects sustained floods', async () => {
    const port = await startWith({ 'rate-limit': '2', 'rate-burst': '5' });
    const calm = await ChatClient.connect({ port, nickname: 'calm' });
    const flooder = await join(port, 'flooder', { caps: ['errors'] });
    const heard: string[] = [];
    calm.on('chat', (m) => heard.push(m.msg));
    for (let i = 0; i < 8; i++) flooder.sendPy({ cmd: '7', msg: `m${i}` });
    // A burst of five passes; the other three are refused.
    for (let i = 0; i < 3; i++) {
      expect(await flooder.expect('90')).toMatchObject({ code: ErrorCode.RATE_LIMITED });
    }
    // Others stay responsive during the flood.
    expect(await calm.rtt()).toBeGreaterThanOrEqual(0);
    expect(heard).toEqual(['m0', 'm1', 'm2', 'm3', 'm4']);
    for (let i = 0; i < 20; i++) flooder.sendPy({ cmd: '7', msg: 'spam' });
    await flooder.expectClose();
    expect(flooder.drain()).toContainEqual(expect.objectContaining({ code: ErrorCode.FLOODING }));
    await calm.exit();
  });

  it('counts a stream of whitespace against flood control, once per 4 KB', async () => {
    const port = await startWith({ 'rate-limit': '2', 'rate-burst': '5' });
    const streamer = await join(port, 'streamer', { caps: ['errors'] });
    // 160 KB of spaces: nothing but whitespace, as fast as the socket takes it.
    streamer.write(Buffer.alloc(40 * 4096, 0x20));
    await streamer.expectClose();
    expect(streamer.drain()).toContainEqual(expect.objectContaining({ code: ErrorCode.FLOODING }));
  });

  it('answers a member’s keep-alive whitespace with no error, however much of it adds up', async () => {
    const port = await startWith({});
    const member = await join(port, 'member', { caps: ['errors'] });
    member.drain();
    // What a newline a second comes to in three hours, in one go: three runs' worth of tokens.
    member.write(Buffer.alloc(3 * 4096 + 100, 0x0a));
    member.sendPy({ cmd: '1' });
    await member.expect('10');
    expect(member.drain()).toEqual([]);
  });

  it('answers the requests after one left unclosed, with one error for it', async () => {
    const port = await startWith({});
    const member = await join(port, 'member', { caps: ['errors'] });
    member.drain();
    // A line-based client's typo: the object never closed, then the next request.
    member.write('{"cmd":"7","msg":"typo"\n');
    member.sendPy({ cmd: '1' });
    await member.expect('10');
    const seen = member.drain();
    expect(seen.filter((m) => m.cmd === '90')).toEqual([
      expect.objectContaining({ code: ErrorCode.MALFORMED_JSON }),
    ]);
  });

  it('refuses whispers to a member who is not keeping up, and does not cut the member off for them', async () => {
    const port = await startWith({ 'rate-limit': '0', 'max-queue': '262144' });
    const victim = await join(port, 'victim');
    // It reads nothing from now: what it is sent fills the kernel's buffers, then the server's.
    victim.socket.pause();
    const sender = await join(port, 'sender', { caps: ['errors'] });
    const course = await join(port, 'course');
    // 4,000 control characters: some 24 KB as JSON escapes them.
    const msg = '\u0001'.repeat(4_000);
    const answered = (m: { cmd: string }) => m.cmd === '22' || m.cmd === '90';
    let delivered = 0;
    let refusal: { cmd: string } | undefined;
    for (let i = 0; i < 2_000 && refusal === undefined; i++) {
      sender.sendPy({ cmd: '2', to: 'victim', msg });
      await sender.waitFor(answered);
      const reply = sender.drain().find(answered)!;
      if (reply.cmd === '22') delivered++;
      else refusal = reply;
    }
    expect(refusal).toMatchObject({ cmd: '90', code: ErrorCode.TRY_AGAIN, ref: '2' });
    expect(delivered).toBeGreaterThan(0);
    // A course client is told "20", as for a whisper nobody took.
    course.sendPy({ cmd: '2', to: 'victim', msg });
    await course.expect('20');
    // Still a member, it gets every whisper it was told of once it reads again.
    victim.socket.resume();
    await victim.waitFor((m) => m.cmd === '70', delivered, 30_000);
    sender.sendPy({ cmd: '1' });
    const users = (await sender.expect('10')).users as string[][];
    expect(users.map((u) => u[0])).toContain('victim');
  }, 60_000);

  it('refuses messages over --max-message', async () => {
    const port = await startWith({ 'max-message': '10' });
    const a = await join(port, 'a', { caps: ['errors'] });
    const b = await join(port, 'b');
    a.sendPy({ cmd: '7', msg: 'x'.repeat(11) });
    expect(await a.expect('90')).toMatchObject({ code: ErrorCode.MESSAGE_TOO_LONG, ref: '7' });
    a.sendPy({ cmd: '7', msg: 'x'.repeat(10) });
    expect(await b.expect('70')).toMatchObject({ msg: 'x'.repeat(10) });
    a.close();
    b.close();
  });

  it('delivers messages larger than a write batch, between small ones, intact and in order', async () => {
    const port = await startWith({
      'max-message': '60000',
      'max-frame': '262144',
      'rate-limit': '0',
    });
    const a = await join(port, 'a', { caps: [] });
    const b = await join(port, 'b', { caps: [] });
    // Small ones fill batches; the big ones (40 KB ASCII, 60 KB of Hangul)
    // exceed a batch buffer and must go out after what was batched before them.
    const sent: string[] = [];
    for (let i = 0; i < 300; i++) sent.push(`small ${i} ${'s'.repeat(i % 200)}`);
    sent.splice(100, 0, 'A'.repeat(40_000));
    sent.splice(200, 0, '한'.repeat(20_000));
    a.write(sent.map((msg) => `${JSON.stringify({ cmd: '7', msg })}\n`).join(''));
    const got: string[] = [];
    for (const _ of sent) got.push(String((await b.expect('70')).msg));
    expect(got).toEqual(sent);
    a.close();
    b.close();
  });

  it('refuses unread, with "02", the first frame from an address whose CONNECTs are spent', async () => {
    // A burst of ten CONNECTs (--max-conns-per-ip below it), spent by joins of which two stay.
    const port = await startWith({
      'max-users': '20',
      'rate-burst': '10',
      'max-conns-per-ip': '4',
    });
    const from = (localAddress: string) => connectFrom(port, localAddress);
    const joined: RawClient[] = [];
    for (let i = 0; i < 10; i++) {
      const c = await from('127.0.0.5');
      c.sendPy({ cmd: '0', nickname: `spent${i}` });
      await c.expect('03');
      if (joined.length < 2) {
        joined.push(c);
      } else {
        c.sendPy({ cmd: '3' });
        await c.expectClose();
      }
    }
    // Not parsed: what would be an invalid request gets the refusal, not its error.
    const late = await from('127.0.0.5');
    late.write('{"cmd": "0", "nickname": ["x"], "caps": ["errors"]}');
    expect(await late.expect('02')).toEqual({ cmd: '02' });
    await late.expectClose();
    // Bytes that are no request, or the start of one too large, are not read either.
    for (const bytes of ['x}\n', `{"cmd":"7","msg":"${'y'.repeat(70_000)}`]) {
      const c = await from('127.0.0.5');
      c.write(bytes);
      expect(await c.expect('02')).toEqual({ cmd: '02' });
      await c.expectClose();
    }
    // Joined sessions of the address, and other addresses, are read as before.
    joined[0]!.sendPy({ cmd: '1' });
    expect(await joined[0]!.expect('10')).toMatchObject({ cmd: '10' });
    const other = await from('127.0.0.6');
    other.sendPy({ cmd: '0', nickname: 'other' });
    await other.expect('03');
    for (const c of [...joined, other]) c.close();
  });

  it('answers connections over --max-conns-per-ip and --max-conns with "02"', async () => {
    const port = await startWith({ 'max-conns-per-ip': '2', 'max-conns': '3' });
    const open = (localAddress: string) => connectFrom(port, localAddress);
    const a1 = await open('127.0.0.1');
    const a2 = await open('127.0.0.1');
    const a3 = await open('127.0.0.1');
    expect(await a3.expect('02')).toEqual({ cmd: '02' });
    await a3.expectClose();
    const b1 = await open('127.0.0.2');
    const b2 = await open('127.0.0.2');
    expect(await b2.expect('02')).toEqual({ cmd: '02' });
    for (const c of [a1, a2, b1]) {
      expect(c.isClosed).toBe(false);
      c.close();
    }
    for (let i = 0; i < 200 && server!.chat.connectionCount > 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(server!.chat.connectionCount).toBe(0);
    await assertHealthy(port);
  });

  it('counts a connection it closed until its client closes it too, or --shutdown-timeout', async () => {
    const port = await startWith({ 'max-conns-per-ip': '2', 'shutdown-timeout': '3' });
    // A bad first request: the server ends its side at once; this client keeps its own open.
    const refused = async () => {
      // Until it gets a place: a connection over the cap is answered "02" instead.
      for (let attempt = 0; attempt < 40; attempt++) {
        const c = await RawClient.open(port);
        c.socket.allowHalfOpen = true;
        const ended = new Promise<void>((resolve) => c.socket.once('end', resolve));
        c.write('not json\n');
        await ended;
        if (c.drain().length === 0) return c;
        c.close();
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error('never got a place');
    };
    let knocked = 0;
    const admits = async () => {
      const c = await RawClient.open(port);
      c.sendPy({ cmd: '0', nickname: `k${knocked++}` });
      await c.waitFor((m) => m.cmd === '02' || m.cmd === '03', 1, 5_000);
      const answer = c.drain()[0]!.cmd;
      c.close();
      return answer === '03';
    };
    const first = await refused();
    const second = await refused();
    expect(await admits()).toBe(false);
    first.close();
    await until("a place freed by its client's close", admits, 2_000);
    // Neither of these closes its side: the server gives up on them after --shutdown-timeout.
    const third = await refused();
    expect(await admits()).toBe(false);
    await until('places freed by --shutdown-timeout', admits, 10_000);
    second.close();
    third.close();
  });
});

describe('TLS', () => {
  it('serves TLS beside plain TCP, in the same room', async () => {
    const { dir, cert, key } = makeCertificate();
    server = await startConfab({ 'tls-port': '0', 'tls-cert': cert, 'tls-key': key });
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const tlsPort = server.tlsAddress!.port;
    const plain = await join(server.address.port, 'plain');
    const socket = tls.connect({
      port: tlsPort,
      host: '127.0.0.1',
      ca: readFileSync(cert),
      servername: 'localhost',
    });
    await new Promise((r, j) => {
      socket.once('secureConnect', r);
      socket.once('error', j);
    });
    const secure = RawClient.wrap(socket);
    secure.sendPy({ cmd: '0', nickname: 'secure' });
    expect(await secure.expect('03')).toMatchObject({
      serverAddress: ['127.0.0.1', tlsPort],
      userCount: 2,
    });
    await plain.expect('8');
    secure.sendPy({ cmd: '7', msg: 'over TLS' });
    expect(await plain.expect('70')).toEqual({ cmd: '70', from: 'secure', msg: 'over TLS' });
    plain.sendPy({ cmd: '2', to: 'secure', msg: 'back' });
    expect(await secure.expect('70')).toEqual({ cmd: '70', from: 'plain', msg: 'back' });
    secure.close();
    plain.close();
  });
});

describe('graceful shutdown', () => {
  it('flushes queued messages to a client before closing', async () => {
    const port = await startWith({ 'rate-limit': '0' });
    const slow = await join(port, 'slow');
    const sender = await join(port, 'sender');
    await slow.expect('8');
    slow.socket.pause();
    const count = 2000;
    for (let i = 0; i < count; i++) sender.write(`{"cmd":"7","msg":"${i} ${'y'.repeat(200)}"}\n`);
    sender.sendPy({ cmd: '4' });
    await sender.expect('40');
    const stopping = server!.stop();
    server = undefined;
    slow.socket.resume();
    await slow.expectClose(10_000);
    await stopping;
    const got = slow.drain().filter((m) => m.cmd === '70');
    expect(got.length).toBe(count);
    expect(got.at(-1)?.msg).toMatch(/^1999 /);
  });
});

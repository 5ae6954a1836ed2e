import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ChatClient } from '../../src/client/chat-client.js';
import { ErrorCode } from '../../src/protocol/codes.js';
import { CONFAB_VERSION } from '../../src/protocol/version.js';
import type { ConfabServer } from '../../src/server.js';
import { MemoryHistoryStore } from '../../src/store/memory-history.js';
import { join } from '../helpers/raw-client.js';
import { startConfab } from '../helpers/servers.js';
import { spawnServer } from '../helpers/spawn-server.js';
import { wsClient } from '../helpers/ws-client.js';

let server: ConfabServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

async function start(flags: Record<string, string> = {}): Promise<{ tcp: number; http: number }> {
  server = await startConfab({ 'http-port': '0', ...flags });
  return { tcp: server.address.port, http: server.httpAddress!.port };
}

describe('WebSocket listener', () => {
  it('refuses whispers to a WebSocket member who is not keeping up, and keeps the member', async () => {
    const { tcp, http } = await start({ 'rate-limit': '0', 'max-queue': '262144' });
    const web = await wsClient(http);
    web.send({ cmd: '0', nickname: 'web', caps: ['whispers'] });
    await web.expect('03');
    // It reads nothing from now: what it is sent fills the kernel's buffers, then the server's.
    web.ws.pause();
    const sender = await join(tcp, 'sender', { caps: ['errors'] });
    // 4,000 control characters: some 24 KB as JSON escapes them.
    const msg = '\u0001'.repeat(4_000);
    const answered = (m: { cmd: string }) => m.cmd === '22' || m.cmd === '90';
    let refusal: { cmd: string } | undefined;
    for (let i = 0; i < 2_000 && refusal === undefined; i++) {
      sender.sendPy({ cmd: '2', to: 'web', msg });
      await sender.waitFor(answered);
      const reply = sender.drain().find(answered)!;
      if (reply.cmd === '90') refusal = reply;
    }
    expect(refusal).toMatchObject({ cmd: '90', code: ErrorCode.TRY_AGAIN, ref: '2' });
    // Still a member once it reads again.
    web.ws.resume();
    web.send({ cmd: '1' });
    const users = (await web.expect('10', 30_000)).users as string[][];
    expect(users.map((u) => u[0])).toContain('web');
  }, 60_000);

  it('puts WebSocket and TCP users in the same room, one JSON message per frame', async () => {
    const { tcp, http } = await start();
    const raw = await join(tcp, 'tcp');
    const web = await wsClient(http);
    web.send({ cmd: '0', nickname: 'web', caps: ['errors', 'renames', 'whispers'] });
    expect(await web.expect('03')).toEqual({
      cmd: '03',
      serverAddress: ['127.0.0.1', http],
      userCount: 2,
      caps: ['errors', 'renames', 'whispers'],
      limits: { rate: 20, burst: 40, maxMessage: 4096 },
    });
    expect(await raw.expect('8')).toEqual({ cmd: '8', nickname: 'web', userCount: 2 });
    web.send({ cmd: '7', msg: 'from the browser' });
    expect(await raw.expect('70')).toEqual({ cmd: '70', from: 'web', msg: 'from the browser' });
    raw.sendPy({ cmd: '2', to: 'web', msg: 'psst' });
    expect(await web.expect('70')).toEqual({ cmd: '70', from: 'tcp', msg: 'psst', whisper: true });
    raw.sendPy({ cmd: '5', newNickname: 'tcp2' });
    expect(await web.expect('91')).toEqual({ cmd: '91', oldNickname: 'tcp', newNickname: 'tcp2' });
    web.send({ cmd: '1' });
    expect(((await web.expect('10')).users as string[][]).map((u) => u[0])).toEqual([
      'web',
      'tcp2',
    ]);
    web.send({ cmd: '3' });
    expect(await web.closed).toBe(1000);
    expect(await raw.expect('30')).toEqual({ cmd: '30', nickname: 'web', userCount: 1 });
    raw.close();
  });

  it('refuses a foreign Origin unless it is allowed', async () => {
    const { http } = await start({ 'allowed-origins': 'https://chat.example.org' });
    await expect(wsClient(http, { origin: 'https://evil.example.com' })).rejects.toThrow(/403/);
    const same = await wsClient(http, { origin: `http://127.0.0.1:${http}` });
    const listed = await wsClient(http, { origin: 'https://chat.example.org' });
    // Behind a proxy that ends TLS the page's own origin is https, the listener plain.
    const proxied = await wsClient(http, { origin: `https://127.0.0.1:${http}` });
    await expect(wsClient(http, { origin: `https://127.0.0.1:${http + 1}` })).rejects.toThrow(
      /403/,
    );
    same.ws.close();
    listed.ws.close();
    proxied.ws.close();
  });

  it('answers only IP addresses, localhost and --allowed-hosts: a rebound name gets 403, page and /ws alike', async () => {
    // Listed with a trailing dot or without, a name answers in either spelling.
    const { http: port } = await start({ 'allowed-hosts': 'chat.example.org,other.example.' });
    /** The status a GET of `path` with this Host gets, and for /ws an upgrade's. */
    const status = (host: string, path = '/', upgrade = false) =>
      new Promise<number>((resolve, reject) => {
        const headers: http.OutgoingHttpHeaders = { host };
        if (upgrade) {
          Object.assign(headers, {
            connection: 'Upgrade',
            upgrade: 'websocket',
            'sec-websocket-version': '13',
            'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
            origin: `http://${host}`,
          });
        }
        const req = http.get({ host: '127.0.0.1', port, path, headers, agent: false });
        req.on('response', (res) => {
          res.resume();
          resolve(res.statusCode!);
        });
        req.on('upgrade', (res, socket) => {
          socket.destroy();
          resolve(res.statusCode!);
        });
        req.on('error', reject);
      });
    for (const host of [
      `127.0.0.1:${port}`,
      `localhost:${port}`,
      `[::1]:${port}`,
      'app.localhost',
    ]) {
      expect(await status(host), host).toBe(200);
    }
    expect(await status('chat.example.org')).toBe(200);
    // A fully qualified name's trailing dot names the same host.
    expect(await status('chat.example.org.')).toBe(200);
    expect(await status(`localhost.:${port}`)).toBe(200);
    expect(await status('other.example')).toBe(200);
    expect(await status('other.example.')).toBe(200);
    expect(await status(`chat.example.org:${port}`, '/ws', true)).toBe(101);
    // A page of evil.example whose name now points here reads nothing and joins nobody.
    for (const path of ['/', '/metrics', '/healthz']) {
      expect(await status(`evil.example:${port}`, path), path).toBe(403);
    }
    expect(await status(`evil.example:${port}`, '/ws', true)).toBe(403);
    expect(await status('chat.example.org.evil.example')).toBe(403);
    // A Host is a name and a port: read as a URL, what follows "@" or comes before "/" was
    // taken as the host.
    for (const host of [
      `evil.example:${port}@127.0.0.1`,
      `127.0.0.1/evil.example`,
      `127.0.0.1?evil`,
      `127.0.0.1#evil`,
      `127.0.0.1\\evil`,
    ]) {
      expect(await status(host), host).toBe(403);
    }
  });

  it('refuses unread, with "02", the first message of a WebSocket whose address has no CONNECT left', async () => {
    // One CONNECT every 5 s after the burst (not two a second): ten joins slowed by a busy
    // machine must not earn the late one a CONNECT.
    // A burst of ten (--max-conns-per-ip below it), spent by joins of which two stay.
    const { http: port } = await start({
      'max-users': '20',
      'rate-burst': '10',
      'rate-limit': '2',
      'max-conns-per-ip': '4',
    });
    const joined = [];
    for (let i = 0; i < 10; i++) {
      const c = await wsClient(port);
      c.send({ cmd: '0', nickname: `w${i}` });
      await c.expect('03');
      if (joined.length < 2) {
        joined.push(c);
      } else {
        c.ws.close();
        await c.closed;
      }
    }
    const late = await wsClient(port);
    // Not parsed: an invalid request gets the refusal, not its error.
    late.ws.send('{"cmd": "0", "nickname": ["x"], "caps": ["errors"]}');
    expect(await late.expect('02')).toEqual({ cmd: '02' });
    await late.closed;
    for (const c of joined) c.ws.close();
  });

  it('closes a message over the payload limit, and only that connection', async () => {
    const { tcp, http } = await start({ 'max-frame': '1024' });
    const raw = await join(tcp, 'tcp');
    const big = await wsClient(http);
    big.send({ cmd: '0', nickname: 'big', caps: ['errors'] });
    await big.expect('03');
    big.ws.send(JSON.stringify({ cmd: '7', msg: 'x'.repeat(5000) }));
    expect(await big.closed).toBe(1009);
    expect(await raw.expect('30')).toMatchObject({ nickname: 'big' });
    raw.close();
  });

  it('logs WebSocket connections with no CONNECT in time once per ten seconds, and what it held back at stop', async () => {
    const spawned = await spawnServer(['--handshake-timeout', '1']);
    try {
      const silent = await Promise.all([0, 1, 2].map(() => wsClient(spawned.httpPort!)));
      await Promise.all(silent.map((c) => c.closed));
      const lines = () =>
        spawned
          .output()
          .split('\n')
          .filter((l) => l.includes('no CONNECT in time'));
      expect(lines()).toHaveLength(1);
      await spawned.stop();
      expect(lines()).toHaveLength(2);
      expect(JSON.parse(lines()[1]!)).toMatchObject({ held: 2 });
    } finally {
      await spawned.stop();
    }
  });

  it('cuts off a WebSocket member that stops reading, without slowing the others', async () => {
    // A separate server process, so the test's own clients do not compete with it for one event loop.
    const spawned = await spawnServer(['--max-queue', '262144', '--rate-limit', '0']);
    try {
      const tcp = spawned.port;
      const http = spawned.httpPort!;
      const reader = await ChatClient.connect({ port: tcp, nickname: 'reader' });
      const sender = await join(tcp, 'sender');
      const lazy = await wsClient(http);
      lazy.send({ cmd: '0', nickname: 'lazy', caps: [] });
      await lazy.expect('03');
      (lazy.ws as unknown as { _socket: { pause(): void } })._socket.pause();
      let next = 0;
      let outOfOrder = 0;
      let wake = () => {};
      const all = new Promise<void>((resolve) =>
        reader.on('chat', (m) => {
          if (!m.msg.startsWith(`${next} `)) outOfOrder++;
          if (++next === 40_000) resolve();
          wake();
        }),
      );
      const lazyLeft = new Promise((resolve) => reader.on('leave', resolve));
      // The reader reads; the sender stays at most 200 messages (about 200 KB,
      // under --max-queue) ahead of it, so only the member that never reads can
      // overflow its queue, however fast this machine is.
      for (let i = 0; i < 40_000; i++) {
        while (i - next >= 200) await new Promise<void>((r) => (wake = r));
        sender.socket.write(`{"cmd":"7","msg":"${i} ${'z'.repeat(1000)}"}\n`);
      }
      expect(await lazyLeft).toEqual({ nickname: 'lazy', userCount: 2, room: 'lobby' });
      await all;
      expect(outOfOrder).toBe(0);
      await reader.exit();
      sender.close();
      lazy.ws.terminate();
    } finally {
      await spawned.stop();
    }
  }, 40_000);

  it('drops a WebSocket peer that stops answering keepalive pings', async () => {
    const { tcp, http } = await start({ keepalive: '1' });
    const raw = await join(tcp, 'watcher');
    const dead = await wsClient(http);
    dead.send({ cmd: '0', nickname: 'ghost', caps: [] });
    await dead.expect('03');
    // A paused socket reads nothing, so the pings go unanswered, as with a vanished peer.
    (dead.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    expect(await raw.expect('30', 8000)).toEqual({ cmd: '30', nickname: 'ghost', userCount: 1 });
    expect(server!.chat.stats.ended.get('timeout')).toBe(1);
    raw.close();
    dead.ws.terminate();
  });

  it('waits for a live peer whose requests wait behind a slow one, its reading paused, past the keepalive', async () => {
    const { http } = await start({ keepalive: '1', 'rate-limit': '0' });
    const append = MemoryHistoryStore.prototype.append;
    // A store slow to take one chat (a slow disk): the requests behind it fill the backlog
    // until reading pauses, and the peer's pongs wait unread with them.
    const slow = vi.spyOn(MemoryHistoryStore.prototype, 'append').mockImplementation(function (
      this: MemoryHistoryStore,
      room,
      draft,
    ) {
      const result = append.call(this, room, draft);
      return draft.msg !== 'slow' ? result : result.then((a) => delay(3000, a));
    });
    try {
      const web = await wsClient(http);
      web.send({ cmd: '0', nickname: 'webby', caps: ['errors', 'rooms', 'history'] });
      await web.expect('101');
      web.send({ cmd: '7', msg: 'slow' });
      for (let i = 0; i < 70; i++) web.send({ cmd: '4' });
      await web.expect('71', 8000);
      for (let i = 0; i < 70; i++) await web.expect('40');
      expect(server!.chat.stats.ended.get('timeout')).toBeUndefined();
      web.ws.close();
    } finally {
      slow.mockRestore();
    }
  }, 20_000);

  it('counts a member’s WebSocket pings and pongs against flood control, answering them only when refused', async () => {
    for (const kind of ['ping', 'pong'] as const) {
      // A server each: a connection starts with what its address's others left.
      await server?.stop();
      const { http } = await start({ 'rate-limit': '1', 'rate-burst': '4' });
      const c = await wsClient(http);
      c.send({ cmd: '0', nickname: kind, caps: ['errors'] });
      await c.expect('03');
      c.ws[kind]();
      c.send({ cmd: '4' });
      await c.expect('40');
      expect(c.received.filter((m) => m.cmd === '90')).toEqual([]);
      for (let i = 0; i < 50; i++) c.ws[kind]();
      expect(await c.expect('90')).toMatchObject({ code: ErrorCode.RATE_LIMITED });
      await c.closed;
      expect(c.received, kind).toContainEqual(
        expect.objectContaining({ code: ErrorCode.FLOODING }),
      );
    }
  });

  it('lets a few pongs come before CONNECT, and closes a connection that sends a stream of them instead', async () => {
    const { http } = await start({ 'rate-limit': '1', 'rate-burst': '4' });
    const polite = await wsClient(http);
    polite.ws.pong();
    polite.ws.pong();
    polite.send({ cmd: '0', nickname: 'polite' });
    await polite.expect('03');
    const flood = await wsClient(http);
    for (let i = 0; i < 200; i++) flood.ws.pong();
    expect(await flood.closed).toBe(1008);
    expect(flood.received).toEqual([]);
    polite.ws.close();
  });

  it('cuts off at once a connection closed for flooding that goes on streaming frames', async () => {
    // The close waits as long as --shutdown-timeout for the client's close frame.
    const { http } = await start({
      'rate-limit': '1',
      'rate-burst': '4',
      'shutdown-timeout': '30',
    });
    const socket = net.connect(http, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(
      `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${http}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    let received = '';
    socket.on('data', (d: Buffer) => {
      received += d.toString('latin1');
    });
    const ended = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())));
    socket.on('error', () => {});
    const masked = (opcode: number, payload: string) => {
      const body = Buffer.from(payload);
      const mask = randomBytes(4);
      for (let i = 0; i < body.length; i++) body[i]! ^= mask[i & 3]!;
      return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | body.length]), mask, body]);
    };
    socket.write(masked(1, JSON.stringify({ cmd: '0', nickname: 'streamer' })));
    const pongs = Buffer.concat(Array.from({ length: 200 }, () => masked(10, 'k')));
    // Pongs until well past the flooding close; the client never answers the close frame.
    const started = Date.now();
    while (!socket.destroyed && Date.now() - started < 10_000) {
      socket.write(pongs);
      await delay(5);
    }
    const end = await ended;
    expect(received).toContain('flooding');
    // Cut off within moments of the close, not after --shutdown-timeout's 30 s (nor the loop's 10).
    expect(end - started).toBeLessThan(5_000);
  }, 20_000);

  it('rate-limits WebSocket sessions with the same core rules', async () => {
    const { http } = await start({ 'rate-limit': '1', 'rate-burst': '2' });
    const c = await wsClient(http);
    c.send({ cmd: '0', nickname: 'fast', caps: ['errors'] });
    await c.expect('03');
    for (let i = 0; i < 3; i++) c.send({ cmd: '4' });
    await c.expect('40');
    expect(await c.expect('90')).toMatchObject({ code: ErrorCode.RATE_LIMITED });
    c.ws.close();
  });
});

describe('HTTP endpoints', () => {
  it('serves the web app with a strict content security policy', async () => {
    const { http } = await start();
    const res = await fetch(`http://127.0.0.1:${http}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/html');
    expect(res.headers.get('content-security-policy')).toContain("default-src 'self'");
    const html = await res.text();
    expect(html).toContain('<title>confab</title>');
    // Nothing from any other host: every src and href is local.
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    expect(script).toBeDefined();
    const js = await fetch(`http://127.0.0.1:${http}${script}`);
    expect(js.status).toBe(200);
    expect(js.headers.get('cache-control')).toContain('immutable');
    expect((await fetch(`http://127.0.0.1:${http}/../package.json`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${http}/nope`)).status).toBe(404);
  });

  it('reports health and Prometheus metrics by transport', async () => {
    const { tcp, http } = await start();
    const a = await join(tcp, 'a');
    const w = await wsClient(http);
    w.send({ cmd: '0', nickname: 'w', caps: [] });
    await w.expect('03');
    a.sendPy({ cmd: '7', msg: 'hello' });
    await w.expect('70');
    expect(await (await fetch(`http://127.0.0.1:${http}/healthz`)).json()).toEqual({
      status: 'ok',
      version: CONFAB_VERSION,
      users: 2,
      connections: 2,
    });
    a.sendPy({ cmd: '7', msg: 'i hate professor' });
    await a.expectClose();
    await w.expect('30');
    // The server sees the banned sender's socket close a moment after the client does.
    let text = '';
    for (let i = 0; i < 100; i++) {
      text = await (await fetch(`http://127.0.0.1:${http}/metrics`)).text();
      if (/confab_connections\{transport="tcp"\} 0/.test(text)) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(text).toMatch(/confab_connections\{transport="tcp"\} 0/);
    expect(text).toMatch(/confab_connections_accepted_total\{transport="tcp"\} 1/);
    expect(text).toMatch(/confab_connections\{transport="ws"\} 1/);
    expect(text).toMatch(/confab_joins_total 2/);
    expect(text).toMatch(/confab_leaves_total 1/);
    expect(text).toMatch(/confab_messages_in_total\{transport="tcp"\} 3/);
    expect(text).toMatch(/confab_messages_out_total\{transport="ws"\} [1-9]/);
    expect(text).toMatch(/confab_disconnects_total\{reason="banned-words"\} 1/);
    expect(text).toMatch(/confab_queue_high_water_bytes\{transport="ws"\} \d+/);
    expect(text).toMatch(/confab_queued_bytes 0/);
    // Node's own, under the names dashboards for other Node services look for.
    expect(text).toMatch(/^confab_process_cpu_seconds_total \d/m);
    expect(text).toMatch(/^confab_nodejs_heap_size_used_bytes \d/m);
    expect(text).not.toContain('process_process');
    expect(text).toContain(`confab_build_info{version="${CONFAB_VERSION}"} 1`);
    w.ws.close();
  });
});

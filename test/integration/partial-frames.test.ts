/**
 * Unfinished requests are capped for all clients together (--max-partial-total), not only
 * each at --max-frame: connections that send most of a frame and never its end are closed,
 * the slowest first, and the server, and a client whose long chat arrives in pieces
 * meanwhile, go on.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { OVER_PARTIAL } from '../../src/transports/partial-frames.js';
import { until } from '../helpers/cluster.js';
import { join, RawClient } from '../helpers/raw-client.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';
import { wsClient } from '../helpers/ws-client.js';

let server: SpawnedServer | undefined;
const clients: RawClient[] = [];
const sockets: { terminate(): void }[] = [];
afterEach(async () => {
  for (const client of clients.splice(0)) client.socket.destroy();
  for (const ws of sockets.splice(0)) ws.terminate();
  await server?.stop();
  server = undefined;
});

/** A CONNECT (or with `head`, another request) of `bytes` whose end never comes. */
function unfinished(bytes: number, head = '{"cmd":"0","nickname":"'): string {
  return head + 'x'.repeat(bytes - head.length);
}

/** A connection, closed after the test. */
async function opened(port: number): Promise<RawClient> {
  const client = await RawClient.open(port);
  clients.push(client);
  return client;
}

/** A connection that sends `bytes` of a CONNECT and stops: it never joins. */
async function connecting(port: number, bytes: number): Promise<RawClient> {
  const client = await opened(port);
  client.write(unfinished(bytes));
  return client;
}

/**
 * A member `name` that sends `bytes` of a chat and stops: members, since connections that have
 * not joined are closed before any member whatever their speed.
 */
async function holding(port: number, name: string, bytes: number): Promise<RawClient> {
  const client = await join(port, name);
  clients.push(client);
  client.write(unfinished(bytes, '{"cmd":"7","msg":"'));
  return client;
}

/** A course client's longest chat as Python's json.dumps escapes it: 48 KB. */
const LONG_CHAT = JSON.stringify({ cmd: '7', msg: '😀'.repeat(4000) }).replace(
  /😀/g,
  '\\ud83d\\ude00',
);

const settle = () => new Promise((resolve) => setTimeout(resolve, 300));

/** A server whose unfinished requests may total 1 MiB, with a member who chats and a reader. */
async function memberAndReader(): Promise<{
  port: number;
  member: RawClient;
  reader: RawClient;
  output: () => string;
}> {
  server = await spawnServer([
    '--max-partial-total',
    '1048576',
    '--rate-limit',
    '0',
    '--max-users',
    '80',
  ]);
  const port = server.port;
  const member = await join(port, 'member');
  clients.push(member);
  const reader = await join(port, 'reader');
  clients.push(reader);
  const spawned = server;
  return { port, member, reader, output: () => spawned.output() };
}

/** Writes `text` in pieces of `size` characters, one every `everyMs`, until it is closed. */
async function trickle(client: RawClient, text: string, size: number, everyMs: number) {
  for (let at = 0; at < text.length && !client.isClosed; at += size) {
    client.write(text.slice(at, at + size));
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** The member's long chat reached the reader, the member stays, and some holders were closed. */
async function wentThrough(
  { member, reader, output }: { member: RawClient; reader: RawClient; output: () => string },
  holders: RawClient[],
): Promise<void> {
  const got = await reader.waitFor((m) => m.cmd === '70' && m.from === 'member', 1, 10_000);
  expect(String(got.msg)).toMatch(/^(😀)+$/u);
  expect(member.isClosed).toBe(false);
  expect(output()).toContain(OVER_PARTIAL);
  expect(holders.filter((c) => c.isClosed).length).toBeGreaterThan(0);
}

describe('unfinished requests of many connections', () => {
  it('are closed past --max-partial-total, those that stopped first; a long chat in pieces meanwhile goes through', async () => {
    const { port, member, reader, output } = await memberAndReader();
    // 52 of 20,000 bytes: 1,040,000, just under the total, each less than the chat below.
    const holders: RawClient[] = [];
    for (let i = 0; i < 52; i++) holders.push(await holding(port, `h${i}`, 20_000));
    await settle();
    expect(holders.filter((c) => c.isClosed)).toEqual([]);
    // A course client's longest chat as Python's json.dumps escapes it (48 KB), in two pieces:
    // its first half passes the total.
    member.write(LONG_CHAT.slice(0, 25_000));
    await settle();
    expect(member.isClosed).toBe(false);
    const closed = holders.filter((c) => c.isClosed).length;
    // Down to three quarters of the total: the 13 or more that stopped (and began) first.
    expect(closed).toBeGreaterThanOrEqual(13);
    expect(holders.slice(0, closed).every((c) => c.isClosed)).toBe(true);
    expect(output()).toContain(OVER_PARTIAL);
    member.write(LONG_CHAT.slice(25_000));
    // A course client reads it in frames of 1,024 bytes: the first is enough.
    const got = await reader.waitFor((m) => m.cmd === '70' && m.from === 'member', 1, 10_000);
    expect(String(got.msg)).toMatch(/^(😀)+$/u);
    member.sendPy({ cmd: '6', beginTime: 1 });
    await member.expect('60', 10_000);
  }, 60_000);

  it('close connections that stopped before a chat still arriving on a slow link, though it began first', async () => {
    const chatting = await memberAndReader();
    const { port, member } = chatting;
    // 48 KB in pieces of 4 KB, one every 200 ms: 2.4 s in all.
    const sending = trickle(member, LONG_CHAT, 4_096, 200);
    await new Promise((resolve) => setTimeout(resolve, 450));
    // Opened after it began, each sends 60,000 bytes of a request and stops: 1.2 MB in all.
    const holders: RawClient[] = [];
    for (let i = 0; i < 20; i++) {
      holders.push(await holding(port, `h${i}`, 60_000));
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await sending;
    await wentThrough(chatting, holders);
  }, 60_000);

  it('close connections that have not joined before a member whose chat arrives slower than their requests grow', async () => {
    const chatting = await memberAndReader();
    const { port, member } = chatting;
    // 48 KB in pieces of 2 KB, one every 100 ms: 20 KB/s, a slow link.
    const sending = trickle(member, LONG_CHAT, 2_048, 100);
    // Twenty CONNECTs that never end, each growing 8 KB every 100 ms (80 KB/s) up to 60,000
    // bytes: 1.2 MB in all, past the total while the chat still arrives.
    const holders: RawClient[] = [];
    for (let i = 0; i < 20; i++) holders.push(await opened(port));
    await Promise.all(holders.map((c) => trickle(c, unfinished(60_000), 8_000, 100)));
    await sending;
    await wentThrough(chatting, holders);
  }, 60_000);

  it('tell why in the line of a member closed for it: its request was not too large', async () => {
    server = await spawnServer(['--max-partial-total', '262144', '--rate-limit', '0']);
    const { port, httpPort } = server;
    const spawned = server;
    const output = () => spawned.output();
    // Members each sending 45,000 bytes of a chat and stopping, a browser first, then a TCP
    // client, in turn: the total passes with the sixth, and the first of each kind go.
    for (let i = 0; i < 6; i++) {
      if (i % 2 === 0) {
        const browser = await wsClient(httpPort!);
        sockets.push(browser.ws);
        browser.send({ cmd: '0', nickname: `held${i}` });
        await browser.expect('03');
        browser.ws.send(Buffer.alloc(45_000, 0x20), { fin: false });
      } else {
        await holding(port, `held${i}`, 45_000);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const left = /held(\d+) left\./;
    await until(
      'a browser and a TCP member closed',
      () => {
        const gone = output()
          .split('\n')
          .map((l) => left.exec(l)?.[1])
          .filter((n) => n !== undefined);
        return gone.includes('0') && gone.includes('1');
      },
      10_000,
    );
    expect(output()).toContain(OVER_PARTIAL);
    const leaves = output()
      .split('\n')
      .filter((l) => left.test(l));
    for (const l of leaves) expect(l).toContain('partial-total');
    expect(output()).not.toContain('frame-too-large');
  }, 60_000);

  it('count a WebSocket message whose last fragment never comes in the same total', async () => {
    server = await spawnServer(['--max-partial-total', '1048576', '--rate-limit', '0']);
    const port = server.port;
    const member = await join(port, 'member');
    clients.push(member);
    // 26 browsers' messages of 20,000 bytes with framing, each in a first fragment alone
    // (then a ping, which is no part of it), and 26 TCP requests of 20,000 after them.
    const browsers = [];
    for (let i = 0; i < 26; i++) {
      const browser = await wsClient(server.httpPort!);
      sockets.push(browser.ws);
      browser.ws.send(Buffer.alloc(19_992, 0x20), { fin: false });
      browser.ws.ping();
      browsers.push(browser);
    }
    const holders: RawClient[] = [];
    for (let i = 0; i < 26; i++) holders.push(await connecting(port, 20_000));
    await settle();
    expect(server.output()).not.toContain(OVER_PARTIAL);
    // 25,000 more pass the total: the browsers, whose messages began first, are closed first.
    member.write(LONG_CHAT.slice(0, 25_000));
    await settle();
    expect(server.output()).toContain(OVER_PARTIAL);
    const open = browsers.filter((b) => b.ws.readyState === b.ws.OPEN).length;
    expect(open).toBeLessThanOrEqual(26 - 13);
    expect(holders.filter((c) => c.isClosed)).toEqual([]);
    expect(member.isClosed).toBe(false);
    // A browser whose message ends is held to nothing more: it joins and chats.
    const browser = await wsClient(server.httpPort!);
    sockets.push(browser.ws);
    browser.ws.send('{"cmd":"0","nick', { fin: false });
    browser.ws.send('name":"web","caps":["ack"]}', { fin: true });
    await browser.expect('03', 10_000);
    member.write(LONG_CHAT.slice(25_000));
    const chat = await browser.expect('70', 10_000);
    expect(chat.msg).toBe('😀'.repeat(4000));
  }, 60_000);

  it('count the memory held, not the bytes: a request in pieces is held in a buffer that doubles', async () => {
    server = await spawnServer(['--max-partial-total', '1048576', '--rate-limit', '0']);
    const holders: RawClient[] = [];
    for (let i = 0; i < 60; i++) holders.push(await opened(server.port));
    // 16,001 bytes each, 960,060 in all, under the total; in pieces of 1,000 each is held in
    // a buffer grown to 32,000, 1.9 MB in all.
    await Promise.all(holders.map((c) => trickle(c, unfinished(16_001), 1_000, 20)));
    await settle();
    expect(server.output()).toContain(OVER_PARTIAL);
    expect(holders.filter((c) => c.isClosed).length).toBeGreaterThan(0);
  }, 60_000);

  it('stop counting a WebSocket once it has sent its close frame: ws reads nothing after it', async () => {
    server = await spawnServer(['--max-partial-total', '1048576', '--rate-limit', '0']);
    const socket = net.connect(server.httpPort!, '127.0.0.1');
    sockets.push({ terminate: () => socket.destroy() });
    socket.on('error', () => {});
    socket.write(
      'GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    await new Promise((resolve) => socket.once('data', resolve));
    // A masked close frame, then the header of a text frame of 2^40 bytes, and 1.2 MB of it.
    socket.write(Buffer.from([0x88, 0x80, 1, 2, 3, 4]));
    const head = Buffer.from([0x01, 0xff, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
    socket.write(head);
    for (let i = 0; i < 20; i++) socket.write(Buffer.alloc(60_000));
    await settle();
    expect(server.output()).not.toContain(OVER_PARTIAL);
  }, 60_000);
});

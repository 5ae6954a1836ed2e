import { execFile } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ChatClient, ChatClientError } from '../../src/client/chat-client.js';
import { COMMANDS } from '../../src/core/commands.js';
import { Cmd, ErrorCode } from '../../src/protocol/codes.js';
import type { ConfabServer } from '../../src/server.js';
import { join } from '../helpers/raw-client.js';
import { ROOT, startConfab } from '../helpers/servers.js';
import { wsClient } from '../helpers/ws-client.js';

let server: ConfabServer | undefined;
const realVersion = COMMANDS[Cmd.VERSION].handle;

afterEach(async () => {
  COMMANDS[Cmd.VERSION].handle = realVersion;
  await server?.stop();
  server = undefined;
});

/** Makes the VERSION handler throw for one nickname: a stand-in for any bug on a connection's path. */
function breakVersionFor(victim: string): void {
  COMMANDS[Cmd.VERSION].handle = (ctx, session, req) => {
    if (session.nickname === victim) throw new RangeError('Maximum call stack size exceeded');
    realVersion(ctx, session, req);
  };
}

describe('the fault boundary', () => {
  it('ends only the connection whose request threw, over TCP and WebSocket', async () => {
    server = await startConfab({ 'http-port': '0' });
    const port = server.address.port;
    const watcher = await ChatClient.connect({ port, nickname: 'watcher' });
    const course = await join(port, 'course');
    breakVersionFor('victim');

    // A client that negotiated errors is told 3005 (transient) before the close.
    const victim = await join(port, 'victim', { caps: ['errors'] });
    victim.sendPy({ cmd: '4' });
    expect(await victim.expect('90')).toMatchObject({ code: ErrorCode.INTERNAL_ERROR });
    await victim.expectClose();
    expect(await course.expect('30')).toMatchObject({ nickname: 'victim' });

    breakVersionFor('wsvictim');
    const ws = await wsClient(server.httpAddress!.port);
    ws.send({ cmd: '0', nickname: 'wsvictim', caps: ['errors'] });
    await ws.expect('03');
    ws.send({ cmd: '4' });
    expect(await ws.expect('90')).toMatchObject({ code: ErrorCode.INTERNAL_ERROR });
    expect(await ws.closed).toBe(1011);

    // Everyone else is served as before.
    const heard: string[] = [];
    watcher.on('chat', (m) => heard.push(m.msg));
    course.sendPy({ cmd: '7', msg: 'still here' });
    expect(await watcher.version()).toBe('1');
    await watcher.rtt();
    expect(heard).toEqual(['still here']);
    expect(server.chat.stats.faults).toBe(2);
    course.close();
    await watcher.exit();
  });

  it('holds for a request that waited behind a chat being stored, and the process stays up', async () => {
    server = await startConfab({ history: 'memory' });
    const port = server.address.port;
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on('unhandledRejection', onRejection);
    try {
      const course = await join(port, 'course');
      breakVersionFor('victim');
      const victim = await join(port, 'victim', { caps: ['errors', 'rooms', 'history'] });
      await victim.expect('101');
      // One segment: VERSION and RTT wait while the chat is stored, and are handled once it is.
      victim.write('{"cmd":"7","msg":"hi","cid":"c1"}{"cmd":"4"}{"cmd":"6","beginTime":1}');
      await victim.expect('71');
      expect(await victim.expect('90')).toMatchObject({ code: ErrorCode.INTERNAL_ERROR });
      await victim.expectClose();
      expect(victim.received.some((m) => m.cmd === '60')).toBe(false);
      expect(await course.expect('30')).toMatchObject({ nickname: 'victim' });
      expect(rejections).toEqual([]);
      expect(server.chat.stats.faults).toBe(1);
      course.close();
    } finally {
      process.off('unhandledRejection', onRejection);
    }
  });
});

describe('replies pair with their requests', () => {
  it('names the refused request in a rate-limit refusal, so no call waits forever or takes another reply', async () => {
    server = await startConfab({ 'rate-limit': '1', 'rate-burst': '3' });
    // Unpaced, so that the server refuses some (a paced client never meets a refusal).
    const client = await ChatClient.connect({
      port: server.address.port,
      nickname: 'eager',
      pace: false,
    });
    const calls = Array.from({ length: 6 }, () =>
      client.users().then(
        (users) => users.map((u) => u[0]),
        (err: unknown) => (err instanceof ChatClientError ? err.code : err),
      ),
    );
    const results = await Promise.all(calls);
    expect(results.slice(0, 3)).toEqual([['eager'], ['eager'], ['eager']]);
    expect(results.slice(3)).toEqual(Array(3).fill(ErrorCode.RATE_LIMITED));
    await client.exit();
  });
});

describe('course clients survive bursts', () => {
  it('a course-style reader that sleeps per message reads all of 20 chats sent in one segment', async () => {
    server = await startConfab({ 'rate-limit': '0' });
    const port = server.address.port;
    const reader = execFile('python3', [
      path.join(ROOT, 'test', 'fixtures', 'course_reader.py'),
      String(port),
      'reader',
      '20',
    ]);
    let out = '';
    reader.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const exited = new Promise<number | null>((resolve) => reader.once('exit', resolve));
    for (let i = 0; i < 200 && !out.includes('ready'); i++)
      await new Promise((r) => setTimeout(r, 20));
    const paster = await join(port, 'paster');
    // Twenty lines pasted at once arrive back to back at the reader.
    paster.write(Array.from({ length: 20 }, (_, i) => `{"cmd": "7", "msg": "line ${i}"}`).join(''));
    expect(await exited).toBe(0);
    expect(out.trim().split('\n')).toEqual([
      'ready',
      ...Array.from({ length: 20 }, (_, i) => `line ${i}`),
    ]);
    paster.close();
  });

  it('splits a chat too long for one recv(1024) into several "70"s from the same sender', async () => {
    server = await startConfab();
    const port = server.address.port;
    const course = await join(port, 'course');
    const sender = await join(port, 'sender');
    const long = `${'가'.repeat(700)}|${'x'.repeat(700)}`;
    sender.sendPy({ cmd: '7', msg: long });
    const parts: string[] = [];
    while (parts.join('') !== long) {
      const m = await course.expect('70');
      expect(m.from).toBe('sender');
      parts.push(String(m.msg));
    }
    expect(parts.length).toBeGreaterThan(1);
    for (const frame of course.rawFrames)
      expect(Buffer.byteLength(frame)).toBeLessThanOrEqual(1024);
    course.close();
    sender.close();
  });
});

describe('the slow-consumer cap', () => {
  it('cuts off a batched client that never reads at --max-queue plus at most one batch', async () => {
    const maxQueue = 65536;
    server = await startConfab({ 'rate-limit': '0', 'max-queue': String(maxQueue) });
    const port = server.address.port;
    // What was waiting in user space for each connection the server destroyed.
    let worst = 0;
    const destroy = net.Socket.prototype.destroy;
    net.Socket.prototype.destroy = function (this: net.Socket, error?: Error) {
      worst = Math.max(worst, this.writableLength);
      return destroy.call(this, error);
    };
    try {
      const lazy = await join(port, 'lazy', { caps: [] });
      lazy.socket.pause();
      const sender = await join(port, 'sender', { caps: [] });
      // The paused client cannot see its reset, and a watcher in the room
      // would itself have to keep up with the flood in this process: ask the
      // server whether the member is gone.
      const gone = async () => {
        for (let i = 0; server!.chat.find('lazy') !== undefined; i++) {
          if (i > 500) throw new Error('the member that never reads was not cut off');
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      // Far more than the kernel's socket buffers hold, in large writes, so
      // that one event-loop turn reads and fans out megabytes.
      const line = `{"cmd":"7","msg":"${'z'.repeat(1000)}"}\n`;
      const chunk = line.repeat(2000);
      for (let i = 0; i < 20 && server.chat.find('lazy') !== undefined; i++) {
        if (!sender.socket.write(chunk)) await new Promise((r) => sender.socket.once('drain', r));
      }
      await gone();
      expect(worst).toBeGreaterThan(0);
      expect(worst).toBeLessThanOrEqual(maxQueue + 16 * 1024 + line.length);
      sender.close();
      lazy.close();
    } finally {
      net.Socket.prototype.destroy = destroy;
    }
  });
});

import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/protocol/codes.js';
import type { ConfabServer } from '../../src/server.js';
import { admitted, join, pyDumps, RawClient } from '../helpers/raw-client.js';
import { startConfab } from '../helpers/servers.js';

let server: ConfabServer;
let port: number;
const clients: RawClient[] = [];

async function open(): Promise<RawClient> {
  const c = await RawClient.open(port);
  clients.push(c);
  return c;
}

async function member(nickname: string, extra: object = {}): Promise<RawClient> {
  const c = await join(port, nickname, extra);
  clients.push(c);
  return c;
}

beforeEach(async () => {
  server = await startConfab({ 'max-users': '10' });
  port = server.address.port;
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await server.stop();
});

describe('course protocol over TCP', () => {
  it('joins, announces, and reports the listening address', async () => {
    const ann = await open();
    ann.sendPy({ cmd: '0', nickname: 'ann' });
    expect(await ann.expect('03')).toEqual({
      cmd: '03',
      serverAddress: ['127.0.0.1', port],
      userCount: 1,
    });
    const bob = await member('bob');
    expect(await ann.expect('8')).toEqual({ cmd: '8', nickname: 'bob', userCount: 2 });
    expect(bob.drain()).toEqual([]);
  });

  it('answers every command with the course reply codes', async () => {
    const ann = await member('ann');
    const bob = await member('bob');
    await ann.expect('8');

    ann.sendPy({ cmd: '1' });
    const users = await ann.expect('10');
    const annLocal = ann.socket.address() as net.AddressInfo;
    const bobLocal = bob.socket.address() as net.AddressInfo;
    expect(users.users).toEqual([
      ['ann', '127.0.0.1', annLocal.port],
      ['bob', '127.0.0.1', bobLocal.port],
    ]);

    ann.sendPy({ cmd: '2', to: 'zed', msg: 'x' });
    await ann.expect('20');
    ann.sendPy({ cmd: '2', to: 'ann', msg: 'x' });
    await ann.expect('21');
    ann.sendPy({ cmd: '2', to: 'bob', msg: '안녕' });
    await ann.expect('22');
    expect(await bob.expect('70')).toEqual({ cmd: '70', from: 'ann', msg: '안녕' });

    ann.sendPy({ cmd: '4' });
    expect(await ann.expect('40')).toEqual({ cmd: '40', serverVersion: '1' });

    ann.sendPy({ cmd: '5', newNickname: 'bob' });
    await ann.expect('50');
    ann.sendPy({ cmd: '5', newNickname: 'ann' });
    await ann.expect('50');
    ann.sendPy({ cmd: '5', newNickname: 'anna' });
    expect(await ann.expect('51')).toEqual({ cmd: '51', newNickname: 'anna' });

    const begin = 1590000000123.4568;
    ann.sendPy({ cmd: '6', beginTime: begin });
    const rtt = await ann.expect('60');
    expect(Object.is(rtt.beginTime, begin)).toBe(true);

    ann.sendPy({ cmd: '7', msg: 'hello all' });
    expect(await bob.expect('70')).toEqual({ cmd: '70', from: 'anna', msg: 'hello all' });

    ann.sendPy({ cmd: '3' });
    await ann.expectClose();
    expect(await bob.expect('30')).toEqual({ cmd: '30', nickname: 'anna', userCount: 1 });
    // Nothing but course codes reached these clients, which asked for no extensions.
    expect([...ann.drain(), ...bob.drain()]).toEqual([]);
  });

  it('refuses a taken nickname ("01") before a full room ("02"), then closes', async () => {
    await server.stop();
    server = await startConfab({ 'max-users': '1' });
    port = server.address.port;
    await member('ann');
    const dup = await open();
    dup.sendPy({ cmd: '0', nickname: 'ann' });
    await dup.expect('01');
    await dup.expectClose();
    const full = await open();
    full.sendPy({ cmd: '0', nickname: 'bob' });
    await full.expect('02');
    await full.expectClose();
  });

  it('disconnects a banned-word sender; the others get "30" and never the message', async () => {
    const ann = await member('ann');
    const bob = await member('bob');
    await ann.expect('8');
    bob.sendPy({ cmd: '7', msg: 'I Hate Professor Kim' });
    await bob.expectClose();
    expect(await ann.expect('30')).toEqual({ cmd: '30', nickname: 'bob', userCount: 1 });
    expect(ann.drain()).toEqual([]);
  });

  it('sends "30" when a member just drops the connection', async () => {
    const ann = await member('ann');
    const bob = await member('bob');
    await ann.expect('8');
    bob.close();
    expect(await ann.expect('30')).toEqual({ cmd: '30', nickname: 'bob', userCount: 1 });
  });

  it('ends the connection when the first request is not CONNECT', async () => {
    const c = await open();
    c.sendPy({ cmd: '1' });
    await c.expectClose();
    expect(c.drain()).toEqual([]);
  });

  it('keeps the connection after an unknown command', async () => {
    const ann = await member('ann');
    ann.sendPy({ cmd: '42' });
    ann.sendPy({ cmd: '4' });
    await ann.expect('40');
    expect(ann.isClosed).toBe(false);
  });
});

describe('framing', () => {
  it('ends every reply with a newline, one JSON object per line', async () => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let text = '';
    socket.on('data', (d) => {
      text += d.toString();
    });
    await new Promise((r) => socket.once('connect', r));
    socket.write(pyDumps({ cmd: '0', nickname: 'ann' }));
    socket.write(pyDumps({ cmd: '4' }));
    socket.write(pyDumps({ cmd: '1' }));
    for (let i = 0; i < 100 && text.split('\n').length < 4; i++)
      await new Promise((r) => setTimeout(r, 10));
    socket.destroy();
    const lines = text.split('\n');
    expect(lines.at(-1)).toBe('');
    expect(lines.slice(0, -1).map((l) => JSON.parse(l).cmd)).toEqual(['03', '40', '10']);
  });

  it('accepts requests back to back, newline-delimited, several per segment, and split byte by byte', async () => {
    const ann = await open();
    const bob = await member('bob');
    // Several bare objects in one write, no delimiter.
    ann.write(`${pyDumps({ cmd: '0', nickname: 'ann' })}${pyDumps({ cmd: '7', msg: 'one' })}`);
    await ann.expect('03');
    // Newline-delimited, several in one segment.
    ann.write(`{"cmd":"7","msg":"two"}\n{"cmd":"7","msg":"three"}\r\n`);
    // One request split into single bytes, each its own write.
    const bytes = Buffer.from(pyDumps({ cmd: '7', msg: 'fo{u}r "q"' }));
    for (const b of bytes) {
      ann.write(Uint8Array.of(b));
      await new Promise((r) => setImmediate(r));
    }
    const got: unknown[] = [];
    for (let i = 0; i < 4; i++) got.push((await bob.expect('70')).msg);
    expect(got).toEqual(['one', 'two', 'three', 'fo{u}r "q"']);
  });

  it('closes only the connection that sends a frame over --max-frame', async () => {
    await server.stop();
    server = await startConfab({ 'max-frame': '1024' });
    port = server.address.port;
    const ann = await member('ann');
    const bob = await member('bob', { caps: ['errors'] });
    await ann.expect('8');
    bob.write(`{"cmd":"7","msg":"${'x'.repeat(5000)}"}`);
    expect(await bob.expect('90')).toMatchObject({ code: ErrorCode.FRAME_TOO_LARGE });
    await bob.expectClose();
    expect(await ann.expect('30')).toMatchObject({ nickname: 'bob' });
    const cat = await member('cat');
    cat.sendPy({ cmd: '7', msg: 'fine' });
    expect(await ann.expect('70')).toEqual({ cmd: '70', from: 'cat', msg: 'fine' });
  });
});

describe('bad input', () => {
  it('survives invalid requests without disturbing others; opted-in clients get error codes', async () => {
    const ann = await member('ann');
    const bob = await member('bob', { caps: ['errors'] });
    await ann.expect('8');
    const junk = [
      'this is not json\n',
      '[1, 2, 3]',
      '"a string"\n',
      '{"cmd": 7, "msg": "x"}',
      '{"cmd": "7"}',
      '{"cmd": "7", "msg": ["x"]}',
      '{"cmd": "2", "to": 5, "msg": "x"}',
      '{"cmd": "5", "newNickname": ""}',
    ];
    for (const j of junk) {
      ann.write(j);
      bob.write(j);
    }
    bob.write(Uint8Array.of(0x7b, 0x22, 0xc3, 0x28, 0x22, 0x7d));
    const codes: number[] = [];
    // An array cannot start a frame: it and the string after it are one run of garbage.
    for (let i = 0; i < junk.length; i++) codes.push((await bob.expect('90')).code as number);
    expect(codes).toEqual([
      ErrorCode.MALFORMED_JSON,
      ErrorCode.MALFORMED_JSON,
      ErrorCode.INVALID_FIELD,
      ErrorCode.INVALID_FIELD,
      ErrorCode.INVALID_FIELD,
      ErrorCode.INVALID_FIELD,
      ErrorCode.INVALID_NICKNAME,
      ErrorCode.INVALID_ENCODING,
    ]);
    // The legacy client heard the nearest course code for the bad rename, and nothing else.
    await ann.expect('50');
    ann.sendPy({ cmd: '7', msg: 'still fine' });
    expect(await bob.expect('70')).toEqual({ cmd: '70', from: 'ann', msg: 'still fine' });
    expect(ann.drain()).toEqual([]);
  });

  it('closes a first request with an empty nickname as a refused name', async () => {
    const c = await open();
    c.sendPy({ cmd: '0', nickname: '' });
    await c.expect('01');
    await c.expectClose();
  });
});

describe('concurrency', () => {
  it('lets exactly max-users of 50 simultaneous joins in', async () => {
    const all = await Promise.all(Array.from({ length: 50 }, () => open()));
    for (const [i, c] of all.entries()) c.sendPy({ cmd: '0', nickname: `user${i}` });
    const wasAdmitted = await admitted(all, 10_000);
    const joined = all.filter((_, i) => wasAdmitted[i]);
    expect(joined.length).toBe(10);
    for (const c of all.filter((_, i) => !wasAdmitted[i])) {
      expect(c.drain().map((m) => m.cmd)).toEqual(['02']);
    }
    joined[0]!.sendPy({ cmd: '1' });
    const list = (await joined[0]!.expect('10')).users as string[][];
    expect(list.length).toBe(10);
  });

  it('never gives one nickname to two clients racing for it', async () => {
    const all = await Promise.all(Array.from({ length: 30 }, () => open()));
    for (const [i, c] of all.entries()) c.sendPy({ cmd: '0', nickname: `name${i % 3}` });
    const wasAdmitted = await admitted(all, 5000);
    const winners = all.filter((_, i) => wasAdmitted[i]);
    expect(winners.length).toBe(3);
    winners[0]!.sendPy({ cmd: '1' });
    const names = ((await winners[0]!.expect('10')).users as string[][]).map((u) => u[0]);
    expect(new Set(names)).toEqual(new Set(['name0', 'name1', 'name2']));
  });
});

describe('shutdown', () => {
  it('closes every client; opted-in ones are told why', async () => {
    const ann = await member('ann');
    const bob = await member('bob', { caps: ['errors'] });
    await server.stop();
    await ann.expectClose();
    await bob.expectClose();
    expect(bob.drain()).toContainEqual(
      expect.objectContaining({ cmd: '90', code: ErrorCode.SERVER_SHUTDOWN }),
    );
    // A course client hears only the join it saw before; no extension code.
    expect(ann.drain().map((m) => m.cmd)).toEqual(['8']);
    server = await startConfab();
    port = server.address.port;
  });
});

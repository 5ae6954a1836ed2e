/**
 * Attacks on one confab process from outside, through what was added last:
 * hostile text in batched SQLite history, read back across a restart over
 * TCP and WebSocket; HISTORY pipelined by clients that never read and then
 * vanish; and what `confab chat` prints on a color terminal. The server runs
 * as its own process (`npm run build` first).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { chat } from '../../src/cli/chat.js';
import { HISTORY_CAPS, line, stalledSocket } from '../helpers/history-harness.js';
import { RawClient } from '../helpers/raw-client.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';
import { wsClient } from '../helpers/ws-client.js';

const dirs: string[] = [];
const servers: SpawnedServer[] = [];
const sockets: { close(): void }[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.close();
  for (const s of servers.splice(0)) await s.stop();
});
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function serve(dir: string): Promise<SpawnedServer> {
  const server = await spawnServer(['--history', 'sqlite', '--data-dir', dir, '--rate-limit', '0']);
  servers.push(server);
  return server;
}

async function stop(server: SpawnedServer): Promise<void> {
  servers.splice(servers.indexOf(server), 1);
  await server.stop();
}

/** The resume token each client's "03" gave it. */
const tokens = new WeakMap<RawClient, string>();

async function tcp(port: number, nickname: string, extra: object = {}): Promise<RawClient> {
  const client = await RawClient.open(port);
  sockets.push(client);
  client.write(line({ cmd: '0', nickname, caps: HISTORY_CAPS, ...extra }));
  const welcome = await client.expect('03');
  if (typeof welcome.resume === 'string') tokens.set(client, welcome.resume);
  return client;
}

interface Stored {
  id: number;
  from: string;
  msg: string;
}

/**
 * Text a JSON codec, a JSON column or a terminal may mishandle: quotes,
 * backslashes, escapes spelled out, NUL and every control, U+2028/2029, lone
 * surrogates of both halves, BOM, noncharacters, astral characters.
 */
const HOSTILE_UNITS = [
  '"',
  '\\',
  '\\u0000',
  '\\"',
  '\u0000',
  '\u001b',
  '\u009b',
  '\u007f',
  '\n',
  '\r',
  '\u2028',
  '\u2029',
  '\ud800',
  '\udfff',
  '\udbff\udfff',
  '\ufeff',
  '\uffff',
  '\ufffe',
  '😀',
  '[',
  ']',
  '{',
  '}',
  ',',
  '\u202e',
];
const hostileText = (maxLength: number) =>
  fc
    .array(
      fc.oneof(
        fc.constantFrom(...HOSTILE_UNITS),
        fc.string({ unit: 'binary', maxLength: 4 }),
        fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)),
      ),
      { minLength: 1, maxLength },
    )
    .map((parts) => parts.join(''))
    .filter((s) => s.length >= 1 && s.length <= maxLength && s.trim() !== '');

describe('hostile text through batched SQLite history', () => {
  it('reads every chat back as stored, live, by HISTORY, and by resume after a restart, over TCP and WebSocket', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'confab-outside-'));
    dirs.push(dir);
    // Fixed seed: a failure replays. Long ones push batches past one SQLite page.
    const msgs = fc.sample(fc.oneof(hostileText(40), hostileText(2000)), {
      numRuns: 150,
      seed: 37,
    });
    msgs.push('\\'.repeat(4096), '\u0000'.repeat(4096), '\u2028'.repeat(4096), '\ud800x');
    // Unique cids, whose tails are just as hostile (lone surrogates may merge tails, not heads).
    const cids = fc
      .sample(hostileText(50), { numRuns: msgs.length, seed: 38 })
      .map((tail, i) => `${i}:${tail}`.slice(0, 64));

    let server = await serve(dir);
    const ann = await tcp(server.port, 'ann');
    const bob = await wsClient(server.httpPort!);
    sockets.push({ close: () => bob.ws.terminate() });
    bob.send({ cmd: '0', nickname: 'bob', caps: HISTORY_CAPS });
    await bob.expect('03');
    const lobby = (await bob.expect('101')) as { epoch: string };
    await ann.expect('101');

    // All in one write: one turn's chats share batches. Each gets "71", or 1002 when the
    // server refuses it (lone surrogates, an over-long cid); replies come in request order.
    ann.write(msgs.map((msg, i) => line({ cmd: '7', msg, cid: cids[i] })).join(''));
    const accepted: number[] = [];
    for (let i = 0; i < msgs.length; i++) {
      const reply = await ann.waitFor((m) => m.cmd === '71' || m.cmd === '90', 1, 10_000);
      ann.received.splice(ann.received.indexOf(reply), 1);
      if (reply.cmd === '71') accepted.push(i);
      else expect(reply).toMatchObject({ code: 1002, ref: '7' });
    }
    // Most of them are stored: the test is not vacuous.
    expect(accepted.length).toBeGreaterThan(msgs.length / 3);
    const want: Stored[] = accepted.map((i, n) => ({ id: n + 1, from: 'ann', msg: msgs[i]! }));

    const live: Stored[] = [];
    for (let i = 0; i < want.length; i++) live.push((await bob.expect('70', 10_000)) as never);
    expect(live.map(({ id, from, msg }) => ({ id, from, msg }))).toEqual(want);

    // HISTORY pages back to the start, over TCP.
    const paged = async (client: RawClient): Promise<Stored[]> => {
      const out: Stored[] = [];
      let before: number | undefined;
      for (let page = 0; page < 200; page++) {
        client.write(
          line({ cmd: '106', room: 'lobby', limit: 100, ...(before ? { before } : {}) }),
        );
        const got = (await client.expect('107', 10_000)) as unknown as {
          messages: Stored[];
          more: boolean;
        };
        out.unshift(...got.messages.map(({ id, from, msg }) => ({ id, from, msg })));
        if (!got.more || got.messages.length === 0) break;
        before = got.messages[0]!.id;
      }
      return out;
    };
    expect(await paged(ann)).toEqual(want);

    await stop(server);
    server = await serve(dir);

    // A resume from before the first message, over TCP and WebSocket, after the restart.
    const since = [{ room: 'lobby', epoch: lobby.epoch, id: 0 }];
    const carl = await tcp(server.port, 'carl', { since });
    expect(await carl.expect('101')).toMatchObject({ epoch: lobby.epoch, recovered: true });
    const dora = await wsClient(server.httpPort!);
    sockets.push({ close: () => dora.ws.terminate() });
    dora.send({ cmd: '0', nickname: 'dora', caps: HISTORY_CAPS, since });
    await dora.expect('03');
    expect(await dora.expect('101')).toMatchObject({ epoch: lobby.epoch, recovered: true });
    const replayed = async (take: () => Promise<Record<string, unknown>>) => {
      const out: Stored[] = [];
      for (let i = 0; i < want.length; i++) {
        const { id, from, msg } = (await take()) as unknown as Stored;
        out.push({ id, from, msg });
      }
      return out;
    };
    expect(await replayed(() => carl.expect('70', 10_000) as never)).toEqual(want);
    expect(await replayed(() => dora.expect('70', 10_000))).toEqual(want);
    expect(await paged(carl)).toEqual(want);

    // The same cids again from the same client, after the restart (its last token takes
    // nothing back, but still names its session): each a duplicate of its first.
    const ann2 = await tcp(server.port, 'ann', { resume: tokens.get(ann) });
    ann2.write(accepted.map((i) => line({ cmd: '7', msg: msgs[i], cid: cids[i] })).join(''));
    for (let n = 0; n < accepted.length; n++) {
      expect(await ann2.expect('71', 10_000)).toMatchObject({ id: n + 1, duplicate: true });
    }
    // And nothing new was stored or sent.
    ann2.write(line({ cmd: '7', msg: 'after', cid: 'fresh' }));
    expect(await ann2.expect('71')).toMatchObject({ id: want.length + 1 });
    expect(await carl.expect('70')).toMatchObject({ id: want.length + 1, msg: 'after' });
  }, 60_000);
});

describe('confab chat with colors', () => {
  it('shows its own colors as colors, not as escaped text, when it lists who is in a room just joined', async () => {
    const server = await spawnServer(['--http-port', 'off']);
    servers.push(server);
    const bob = await tcp(server.port, 'bob');
    bob.write(line({ cmd: '100', room: 'physics' }));
    await bob.expect('101');
    // A terminal for output (colors on), lines from a pipe (no line editing).
    const stdin = new PassThrough();
    const stdout = Object.assign(new PassThrough(), { isTTY: true });
    const stderr = new PassThrough();
    let out = '';
    stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const io = {
      stdin: stdin as unknown as NodeJS.ReadStream,
      stdout: stdout as unknown as NodeJS.WriteStream,
      stderr: stderr as unknown as NodeJS.WriteStream,
      // Not saving: this env has no XDG_STATE_HOME, and the real home is not the tests'.
      env: { CONFAB_RECONNECT: 'off', CONFAB_SAVE_SESSION: '0' },
    };
    const done = chat(['ann', '--port', String(server.port)], io);
    stdin.write('\\join physics\n');
    for (let i = 0; i < 500 && !out.includes('Type \\room physics'); i++)
      await new Promise((r) => setTimeout(r, 10));
    stdin.write('\\exit\n');
    expect(await done).toBe(0);
    const joinedLine = out.split('\n').find((l) => l.includes('You joined physics'));
    expect(joinedLine).toBeDefined();
    // Nobody sent a control character: a caret form is the client escaping its own colors.
    expect(out).not.toContain('^[');
    expect(joinedLine).toContain('\x1b[1;');
  });
});

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

describe('HISTORY asked for in a tight loop by clients that never read', () => {
  it('holds about a page per client, however many pages they ask for, and serves the room on when they go', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'confab-outside-'));
    dirs.push(dir);
    const server = await serve(dir);
    const pid = server.child.pid!;
    // Messages that escape six times larger: a page is about 256 KB as sent, ten messages.
    const filler = await tcp(server.port, 'filler');
    const stored = 300;
    filler.write(
      Array.from({ length: stored }, () => line({ cmd: '7', msg: '\u0000'.repeat(4096) })).join(''),
    );
    for (let i = 0; i < stored; i++) await filler.expect('71', 10_000);
    const bystander = await tcp(server.port, 'bystander');
    const before = rssMb(pid);

    // Each asks for thousands of pages at once and reads none of them.
    const attackers = 8;
    const asks = 3000;
    const stalled: net.Socket[] = [];
    for (let a = 0; a < attackers; a++) {
      let requests = line({ cmd: '0', nickname: `greedy${a}`, caps: HISTORY_CAPS });
      for (let i = 0; i < asks; i++) {
        requests += line({ cmd: '106', room: 'lobby', limit: 100, before: stored + 1 - (i % 50) });
      }
      const socket = await stalledSocket(server.port, requests);
      sockets.push({ close: () => socket.destroy() });
      stalled.push(socket);
    }
    // They are in, and the server has worked through what it lets them have.
    await bystander.waitFor((m) => m.cmd === '8', attackers, 10_000);
    for (let round = 0; round < 5; round++) {
      filler.write(line({ cmd: '7', msg: `round ${round}` }));
      await bystander.waitFor((m) => m.cmd === '70' && m.msg === `round ${round}`, 1, 10_000);
      await new Promise((r) => setTimeout(r, 200));
    }
    // Asked for: attackers x asks x 256 KB, some 6 GB. Held: a page or two and a queue each.
    const grown = rssMb(pid) - before;
    expect(grown).toBeLessThan(attackers * 8 + 60);
    // Gone, with thousands of pages still asked for: their sessions end, and the room goes on.
    for (const s of stalled) s.destroy();
    filler.write(line({ cmd: '7', msg: 'after' }));
    await bystander.waitFor((m) => m.cmd === '70' && m.msg === 'after', 1, 10_000);
    await bystander.waitFor((m) => m.cmd === '30', attackers, 10_000);
  }, 60_000);
});

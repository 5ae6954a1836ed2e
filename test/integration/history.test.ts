import { spawnSync } from 'node:child_process';
import { copyFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import type { ParsedServerMessage } from '../../src/protocol/message-codec.js';
import { HistoryHarness, line } from '../helpers/history-harness.js';
import { join, RawClient } from '../helpers/raw-client.js';
import { CLI } from '../helpers/servers.js';
import { type SpawnedServer, waitFor } from '../helpers/spawn-server.js';

const harness = HistoryHarness.use();
const dataDir = () => harness.dataDir();
// Flood control off: these tests send bursts no typist would.
const serve = (args: string[]): Promise<SpawnedServer> =>
  harness.serve(['--rate-limit', '0', ...args]);

interface Joined {
  client: RawClient;
  welcome: ParsedServerMessage;
  lobby: ParsedServerMessage;
}

/** CONNECT with history; returns "03" and the lobby's "101". */
async function connect(port: number, nickname: string, extra: object = {}): Promise<Joined> {
  const { client, welcome } = await harness.connect(port, nickname, extra);
  const lobby = await client.expect('101');
  return { client, welcome, lobby };
}

/** The lobby chats a client has received so far, as [id, msg]. */
function chats(client: RawClient): [number, string][] {
  return client.received
    .filter((m) => m.cmd === '70')
    .map((m) => {
      const chat = m as unknown as { id: number; msg: string };
      return [chat.id, chat.msg];
    });
}

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function say(client: RawClient, from: number, to: number, prefix = 'm'): void {
  let batch = '';
  for (let i = from; i <= to; i++) batch += line({ cmd: '7', msg: `${prefix}${i}`, cid: `c${i}` });
  client.write(batch);
}

function ids(from: number, to: number, prefix = 'm'): [number, string][] {
  const out: [number, string][] = [];
  for (let i = from; i <= to; i++) out.push([i, `${prefix}${i}`]);
  return out;
}

describe('history and resume', () => {
  it('gives the sender ids, and a cut client everything it missed, exactly once, then live', async () => {
    const server = await serve(['--history', 'sqlite', '--data-dir', dataDir()]);
    const ann = await connect(server.port, 'ann');
    const bob = await connect(server.port, 'bob');
    expect(bob.lobby).toMatchObject({ room: 'lobby', top: 0, members: ['ann', 'bob'] });
    expect(bob.lobby).not.toHaveProperty('recovered');
    say(ann.client, 1, 5);
    await until('bob to hear 5', () => chats(bob.client).length === 5);
    expect(await ann.client.expect('71')).toMatchObject({ room: 'lobby', id: 1, cid: 'c1' });
    const epoch = bob.lobby.epoch as string;

    // Cut mid-stream: whatever bob had when the connection died is what he resumes from.
    bob.client.close();
    say(ann.client, 6, 40);
    const back = await connect(server.port, 'bob', {
      since: [{ room: 'lobby', epoch, id: 5 }],
    });
    expect(back.lobby).toMatchObject({ epoch, recovered: true });
    say(ann.client, 41, 45);
    await until('bob to have 6..45', () => chats(back.client).length >= 40);
    await new Promise((r) => setTimeout(r, 100));
    expect(chats(back.client)).toEqual(ids(6, 45));
  });

  it('takes the nickname and rooms back from a half-open connection, unseen by the others', async () => {
    const server = await serve([]);
    const ann = await connect(server.port, 'ann');
    const bob = await connect(server.port, 'bob');
    bob.client.write(line({ cmd: '100', room: 'physics' }));
    ann.client.write(line({ cmd: '100', room: 'physics' }));
    const physics = await bob.client.expect('101');
    await ann.client.expect('101');
    ann.client.drain();
    // Bob's connection goes silent: the server still thinks it is open.
    bob.client.socket.pause();
    const token = bob.welcome.resume as string;
    expect(token).toMatch(/^[\w-]{20,}$/);
    say(ann.client, 1, 3);
    ann.client.write(line({ cmd: '7', msg: 'p1', room: 'physics' }));
    const back = await connect(server.port, 'someone-else', {
      resume: token,
      since: [
        { room: 'lobby', epoch: bob.lobby.epoch, id: 0 },
        { room: 'physics', epoch: physics.epoch, id: 0 },
      ],
    });
    expect(back.welcome).toMatchObject({ resumed: true, nickname: 'bob' });
    expect(back.welcome.resume).not.toBe(token);
    expect(back.lobby).toMatchObject({ recovered: true, members: ['ann', 'bob'] });
    const physicsBack = await back.client.expect('101');
    expect(physicsBack).toMatchObject({ room: 'physics', recovered: true, top: 1 });
    // Reading again, the ghost sees that the server closed it.
    bob.client.socket.resume();
    expect(await bob.client.expect('90')).toMatchObject({ code: 2007 });
    await bob.client.expectClose();
    ann.client.write(line({ cmd: '1' }));
    expect(await ann.client.expect('10')).toMatchObject({
      users: [['ann'], ['bob']].map((u) => expect.arrayContaining(u)),
    });
    // No leave, no join: ann saw nothing of the takeover.
    expect(ann.client.received.filter((m) => m.cmd === '30' || m.cmd === '8')).toEqual([]);
    await until('bob to have the lobby and physics', () => chats(back.client).length === 4);
    expect(chats(back.client)).toEqual([...ids(1, 3), [1, 'p1']]);
    // The old token no longer works: a CONNECT with it is an ordinary one.
    const again = await connect(server.port, 'carl', { resume: token });
    expect(again.welcome).toMatchObject({ resumed: false, nickname: 'carl' });
  });

  it('replays nothing to a client resuming twice with nothing new, and a chat sent during a resume once', async () => {
    const server = await serve(['--history', 'sqlite', '--data-dir', dataDir()]);
    const ann = await connect(server.port, 'ann');
    say(ann.client, 1, 3);
    await ann.client.expect('71');
    const epoch = ann.lobby.epoch;
    for (let round = 0; round < 2; round++) {
      const bob = await connect(server.port, `bob${round}`, {
        since: [{ room: 'lobby', epoch, id: 3 }],
      });
      expect(bob.lobby).toMatchObject({ recovered: true, top: 3 });
      await new Promise((r) => setTimeout(r, 50));
      expect(chats(bob.client)).toEqual([]);
      bob.client.close();
    }
    // Chats keep coming while clients resume: each arrives once, in order, whatever the timing.
    let sent = 3;
    const sender = setInterval(() => {
      if (sent >= 600) return;
      say(ann.client, sent + 1, sent + 3);
      sent += 3;
    }, 1);
    const resumed: RawClient[] = [];
    for (let i = 0; i < 8; i++) {
      const c = await connect(server.port, `carl${i}`, {
        since: [{ room: 'lobby', epoch, id: 3 }],
      });
      resumed.push(c.client);
      await new Promise((r) => setTimeout(r, 15));
    }
    await until('ann to send 600', () => sent >= 600);
    clearInterval(sender);
    for (const c of resumed) {
      await until('4..600', () => chats(c).length >= 597);
      await new Promise((r) => setTimeout(r, 50));
      expect(chats(c)).toEqual(ids(4, 600));
    }
  });

  it('says why a gap could not be recovered, and sends the newest messages instead', async () => {
    const server = await serve(['--history-max-messages', '20', '--history-on-join', '3']);
    const ann = await connect(server.port, 'ann');
    const epoch = ann.lobby.epoch as string;
    say(ann.client, 1, 30);
    await until('30 stored', () => ann.client.received.filter((m) => m.cmd === '71').length === 30);
    const cases: [object, string][] = [
      [{ epoch: 'not-this-one', id: 25 }, 'epoch'],
      [{ epoch, id: 31 }, 'ahead'],
      [{ epoch, id: 5 }, 'deleted'],
    ];
    for (const [since, reason] of cases) {
      const c = await connect(server.port, `c${reason}`, { since: [{ room: 'lobby', ...since }] });
      expect(c.lobby).toMatchObject({ recovered: false, reason, top: 30 });
      await until('the newest 3', () => chats(c.client).length === 3);
      expect(chats(c.client)).toEqual(ids(28, 30));
      c.client.close();
    }
    // Within what is kept: recovered.
    const ok = await connect(server.port, 'ok', { since: [{ room: 'lobby', epoch, id: 10 }] });
    expect(ok.lobby).toMatchObject({ recovered: true });
    await until('11..30', () => chats(ok.client).length === 20);
  });

  it('calls a gap of more than 1000 messages too many, and pages older history on request', async () => {
    const server = await serve(['--history-max-messages', '5000', '--rate-limit', '0']);
    const ann = await connect(server.port, 'ann');
    const epoch = ann.lobby.epoch as string;
    say(ann.client, 1, 1500);
    await until(
      '1500 stored',
      () => ann.client.received.filter((m) => m.cmd === '71').length === 1500,
    );
    const bob = await connect(server.port, 'bob', { since: [{ room: 'lobby', epoch, id: 100 }] });
    expect(bob.lobby).toMatchObject({ recovered: false, reason: 'too-many', top: 1500 });
    bob.client.write(line({ cmd: '106', room: 'lobby', before: 1451, limit: 100 }));
    const page = await bob.client.expect('107');
    expect(page).toMatchObject({ room: 'lobby', epoch, more: true });
    const messages = page.messages as { id: number; msg: string }[];
    expect(messages.map((m) => m.id)).toEqual(Array.from({ length: 100 }, (_, i) => 1351 + i));
    bob.client.write(line({ cmd: '106', room: 'physics' }));
    expect(await bob.client.expect('90')).toMatchObject({ code: 1018, ref: '106' });
  });

  it('stores and delivers a chat re-sent with the same cid once', async () => {
    const server = await serve([]);
    const ann = await connect(server.port, 'ann');
    const bob = await connect(server.port, 'bob');
    ann.client.write(line({ cmd: '7', msg: 'hello', cid: 'x1' }));
    ann.client.write(line({ cmd: '7', msg: 'hello', cid: 'x1' }));
    ann.client.write(line({ cmd: '7', msg: 'next', cid: 'x2' }));
    expect(await ann.client.expect('71')).toMatchObject({ id: 1, cid: 'x1' });
    expect(await ann.client.expect('71')).toMatchObject({ id: 1, cid: 'x1', duplicate: true });
    expect(await ann.client.expect('71')).toMatchObject({ id: 2, cid: 'x2' });
    await until('bob to hear next', () => chats(bob.client).length === 2);
    expect(chats(bob.client)).toEqual([
      [1, 'hello'],
      [2, 'next'],
    ]);
  });

  it('on SIGTERM, acknowledges and delivers every chat it stores before saying it stops', async () => {
    // Three stops, each at another moment of a stream of chats written 20 at a time.
    for (let round = 0; round < 3; round++) {
      const dir = dataDir();
      const first = await serve(['--history', 'sqlite', '--data-dir', dir]);
      const ann = await connect(first.port, 'ann');
      const bob = await connect(first.port, 'bob');
      let n = 0;
      let stopped: Promise<void> | undefined;
      const start = Date.now();
      while (Date.now() - start < 2_000 && !ann.client.isClosed) {
        let burst = '';
        for (let i = 0; i < 20; i++) burst += line({ cmd: '7', msg: `m${n++}` });
        ann.client.write(burst);
        await new Promise((r) => setTimeout(r, 1));
        if (stopped === undefined && Date.now() - start > 60 + round * 40) {
          stopped = harness.stop(first);
        }
      }
      await stopped;
      await until('both told of the stop', () => ann.client.isClosed && bob.client.isClosed);
      const acked = ann.client.received.filter((m) => m.cmd === '71').length;
      const delivered = chats(bob.client).length;
      expect(acked).toBeGreaterThan(0);
      const second = await serve(['--history', 'sqlite', '--data-dir', dir]);
      const reader = await connect(second.port, 'cy');
      // Every chat stored was acknowledged to its sender and delivered to the room.
      expect([round, reader.lobby.top]).toEqual([round, acked]);
      expect([round, delivered]).toEqual([round, acked]);
      await harness.stop(second);
    }
  }, 60_000);

  it('keeps ids and epoch across SIGTERM and a restart, and never reuses an id retention deleted', async () => {
    const dir = dataDir();
    const first = await serve([
      '--history',
      'sqlite',
      '--data-dir',
      dir,
      '--history-max-messages',
      '3',
    ]);
    const ann = await connect(first.port, 'ann');
    const epoch = ann.lobby.epoch as string;
    say(ann.client, 1, 10);
    await until('10 stored', () => ann.client.received.filter((m) => m.cmd === '71').length === 10);
    await harness.stop(first);

    const second = await serve([
      '--history',
      'sqlite',
      '--data-dir',
      dir,
      '--history-max-messages',
      '3',
    ]);
    const bob = await connect(second.port, 'bob', { since: [{ room: 'lobby', epoch, id: 8 }] });
    expect(bob.lobby).toMatchObject({ epoch, top: 10, recovered: true });
    await until('9 and 10', () => chats(bob.client).length === 2);
    expect(chats(bob.client)).toEqual(ids(9, 10));
    bob.client.write(line({ cmd: '7', msg: 'after', cid: 'a' }));
    expect(await bob.client.expect('71')).toMatchObject({ id: 11 });
  });

  it('keeps every id a client saw through kill -9 in the middle of a burst', async () => {
    const dir = dataDir();
    const keep = ['--history-max-messages', '10000'];
    const first = await serve(['--history', 'sqlite', '--data-dir', dir, ...keep]);
    const ann = await connect(first.port, 'ann');
    const bob = await connect(first.port, 'bob');
    const epoch = ann.lobby.epoch as string;
    say(ann.client, 1, 3000);
    await until('bob to hear some', () => chats(bob.client).length > 200);
    first.child.kill('SIGKILL');
    await bob.client.expectClose();
    await harness.stop(first);
    const seen = Math.max(
      ...chats(bob.client).map(([id]) => id),
      ...ann.client.received.filter((m) => m.cmd === '71').map((m) => m.id as number),
    );
    expect(seen).toBeGreaterThan(200);

    const second = await serve(['--history', 'sqlite', '--data-dir', dir, ...keep]);
    const carl = await connect(second.port, 'carl');
    expect(carl.lobby.epoch).toBe(epoch);
    expect(carl.lobby.top as number).toBeGreaterThanOrEqual(seen);
    // Page back from the newest id seen to the first: every one is there.
    const stored: number[] = [];
    for (let before = seen + 1; before > 1; ) {
      carl.client.write(line({ cmd: '106', room: 'lobby', before, limit: 100 }));
      const page = (await carl.client.expect('107')).messages as { id: number }[];
      stored.unshift(...page.map((m) => m.id));
      before = page[0]!.id;
    }
    expect(stored).toEqual(Array.from({ length: seen }, (_, i) => i + 1));
  });

  it('says not recovered after a restart with memory history, never a silent hole', async () => {
    const first = await serve(['--history', 'memory']);
    const ann = await connect(first.port, 'ann');
    const epoch = ann.lobby.epoch as string;
    say(ann.client, 1, 5);
    await until('5 stored', () => ann.client.received.filter((m) => m.cmd === '71').length === 5);
    await harness.stop(first);
    const second = await serve(['--history', 'memory']);
    const bob = await connect(second.port, 'bob', { since: [{ room: 'lobby', epoch, id: 5 }] });
    expect(bob.lobby).toMatchObject({ recovered: false, reason: 'epoch', top: 0 });
    expect(bob.lobby.epoch).not.toBe(epoch);
  });

  it('keeps a course client in step: its chat is stored, its bytes unchanged', async () => {
    const server = await serve(['--history', 'sqlite', '--data-dir', dataDir()]);
    const course = await join(server.port, 'course');
    harness.track(course);
    const ann = await connect(server.port, 'ann');
    course.sendPy({ cmd: '7', msg: 'from the course' });
    await until('ann hears it', () => chats(ann.client).length === 1);
    expect(chats(ann.client)).toEqual([[1, 'from the course']]);
    course.sendPy({ cmd: '1' });
    await course.expect('10');
    expect(course.rawFrames.some((f) => f.includes('"101"') || f.includes('"71"'))).toBe(false);
  });

  it('lets a client with rooms stay out of the lobby', async () => {
    const server = await serve(['--max-users', '1']);
    const course = await join(server.port, 'course');
    harness.track(course);
    const roomer = await RawClient.open(server.port);
    harness.track(roomer);
    roomer.write(line({ cmd: '0', nickname: 'roomer', caps: ['errors', 'rooms'], lobby: false }));
    expect(await roomer.expect('03')).toMatchObject({ userCount: 1 });
    roomer.write(line({ cmd: '7', msg: 'where am I' }));
    expect(await roomer.expect('90')).toMatchObject({ code: 1018, ref: '7' });
    // Not in the lobby, so not "leaving the lobby means EXIT" either.
    roomer.write(line({ cmd: '102', room: 'lobby' }));
    expect(await roomer.expect('90')).toMatchObject({ code: 1018, ref: '102' });
    roomer.write(line({ cmd: '100', room: 'maths' }));
    expect(await roomer.expect('101')).toMatchObject({ room: 'maths', members: ['roomer'] });
    await new Promise((r) => setTimeout(r, 50));
    expect(course.received.filter((m) => m.cmd === '8')).toEqual([]);
  });
  // Five server processes start in it, three of them refused: on a loaded machine some 15 s.
  it('says so when history.db was restored from a backup, and tells a client past the backup its gap was not recovered', async () => {
    const dir = dataDir();
    const file = path.join(dir, 'history.db');
    const args = ['--history', 'sqlite', '--data-dir', dir];
    const server = await serve(args);
    // A second server on the same directory is refused, saying why, whatever its history:
    // each would rewrite bans.json whole from its own list.
    for (const history of ['sqlite', 'memory', 'off']) {
      const second = spawnSync(
        process.execPath,
        [CLI, 'serve', '--port', '0', '--http-port', 'off', ...args, '--history', history],
        { encoding: 'utf8', timeout: 15_000 },
      );
      expect(second.status).toBe(1);
      expect(second.stderr).toContain(`--data-dir ${dir}: another confab is using it`);
    }

    const ann = await connect(server.port, 'ann');
    const bob = await connect(server.port, 'bob');
    const epoch = bob.lobby.epoch as string;
    say(ann.client, 1, 3);
    await until('bob to hear 3', () => chats(bob.client).length === 3);
    // What `sqlite3 history.db ".backup history.db.backup"` does while the server runs.
    const reader = new Database(file, { readonly: true });
    await reader.backup(`${file}.backup`);
    reader.close();
    say(ann.client, 4, 5);
    await until('bob to hear 5', () => chats(bob.client).length === 5);
    await harness.stop(server);
    for (const suffix of ['-wal', '-shm']) rmSync(`${file}${suffix}`, { force: true });
    copyFileSync(`${file}.backup`, file);

    const restored = await serve(args);
    await waitFor(restored.output, 'restored from a backup?');
    // Id 4 is given out again; bob saw the first 4 and must not take this one for it.
    const ann2 = await connect(restored.port, 'ann');
    say(ann2.client, 4, 4, 'again');
    expect(await ann2.client.expect('71')).toMatchObject({ id: 4 });
    const back = await connect(restored.port, 'bob', { since: [{ room: 'lobby', epoch, id: 4 }] });
    expect(back.lobby).toMatchObject({ recovered: false, reason: 'epoch', top: 4 });
    expect(back.lobby.epoch).not.toBe(epoch);
  }, 60_000);
});

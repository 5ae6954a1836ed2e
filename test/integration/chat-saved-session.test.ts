import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { saveSession, serverKey } from '../../src/cli/saved-sessions.js';
import { ChatClient } from '../../src/client/chat-client.js';
import type { ConfabServer } from '../../src/server.js';
import { ChatProcess } from '../helpers/chat-process.js';
import { until } from '../helpers/cluster.js';
import { type ScriptedRequest, scriptedServer } from '../helpers/scripted-server.js';
import { CLI, startConfab } from '../helpers/servers.js';
import { TcpRelay } from '../helpers/tcp-relay.js';
import { useTempDir } from '../helpers/temp-dir.js';

/**
 * `confab chat` keeps its resume token in $XDG_STATE_HOME/confab/sessions.json, so that a
 * client started again after a connection the server has not seen die takes its session back.
 * A dead connection is a relay's stranded link: the client's side closed, the server's left
 * open, as after a laptop's sleep.
 */
const state = useTempDir('confab-saved-session-');
const file = () => path.join(state.path, 'confab', 'sessions.json');
// vitest.config.ts turns saving off for every other test.
const env = () => ({ XDG_STATE_HOME: state.path, CONFAB_SAVE_SESSION: '' });

interface Entry {
  server: string;
  nickname: string;
  token: string;
  pid: number;
  rooms?: { room: string; epoch?: string; id?: number }[];
}
const entries = (): Entry[] => {
  try {
    // A FIFO left in its place would block this read, and the test with it.
    if (!statSync(file()).isFile()) return [];
    return (JSON.parse(readFileSync(file(), 'utf8')) as { sessions: Entry[] }).sessions;
  } catch {
    return [];
  }
};

/** The rooms the first entry keeps, in order, as one string. */
const savedRooms = () => (entries()[0]?.rooms ?? []).map((r) => r.room).join();

let cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const step of cleanup.reverse()) await step();
  cleanup = [];
});

async function serverWithRelay(): Promise<{ server: ConfabServer; relay: TcpRelay }> {
  const server = await startConfab();
  const relay = await TcpRelay.start(server.address.port);
  cleanup.push(
    () => server.stop(),
    () => relay.close(),
  );
  return { server, relay };
}

function chatProcess(args: string[]): ChatProcess {
  const chat = ChatProcess.start(args, env());
  cleanup.push(async () => {
    // A stopped process hears SIGTERM only once it runs again.
    if (chat.child.exitCode === null && chat.child.signalCode === null) chat.child.kill('SIGCONT');
    await chat.stop();
  });
  return chat;
}

async function bobIn(port: number, room?: string): Promise<ChatClient> {
  const bob = await ChatClient.connect({ port, nickname: 'bob' });
  if (room !== undefined) await bob.join(room);
  cleanup.push(() => bob.exit().catch(() => {}));
  return bob;
}

/** A server with bob (a library client) and ann (`confab chat`) both in physics. */
async function annAndBobInPhysics() {
  const { server } = await serverWithRelay();
  const bob = await bobIn(server.address.port, 'physics');
  const ann = chatProcess(['ann', '--port', String(server.address.port)]);
  await ann.waitFor('You are the 2nd user.');
  ann.type('\\join physics');
  await ann.waitFor('You joined physics');
  return { server, bob, ann };
}

describe('confab chat saves its session token', () => {
  it('takes its own dead session back when started again, rooms and all, with nobody seeing it leave', async () => {
    const { server, relay } = await serverWithRelay();
    const bob = await bobIn(server.address.port, 'physics');
    const ann = chatProcess(['ann', '--port', String(relay.port)]);
    await ann.waitFor('You are the 2nd user.');
    ann.type('\\join physics');
    await ann.waitFor('You joined physics');
    const seen: string[] = [];
    bob.on('leave', (m) => seen.push(`left ${m.nickname} ${m.room}`));
    bob.on('join', (m) => seen.push(`joined ${m.nickname} ${m.room}`));

    // The network dies and the user, seeing no answer, kills the client: the server still
    // holds ann's connection open.
    relay.hold();
    relay.strand();
    ann.child.kill('SIGKILL');
    await ann.exited;
    relay.release();

    // Another spelling of the same name to the server finds the same saved session.
    const again = chatProcess(['Ann', '--port', String(relay.port)]);
    await again.waitFor('Took back your session as ann');
    expect(again.output).not.toContain('taken');
    // Its rooms came back with it: physics can be typed into at once.
    again.type('\\room physics');
    await again.waitFor('You are typing into physics.');
    const heard = new Promise((resolve) => bob.once('chat', resolve));
    again.type('back again');
    expect(await heard).toMatchObject({ from: 'ann', msg: 'back again', room: 'physics' });
    expect(seen).toEqual([]);
    // The new token replaced the spent one, held by the new client.
    expect(entries()).toEqual([expect.objectContaining({ nickname: 'ann', pid: again.child.pid })]);
  });

  it('joins the rooms of a session that had ended again, with what was said there meanwhile (the client was killed, its connection closed)', async () => {
    const { server, bob, ann } = await annAndBobInPhysics();
    ann.type('\\join math');
    await ann.waitFor('You joined math');
    bob.chat('seen before', 'physics');
    await ann.waitFor('bob: seen before');
    // The last message seen is saved within a few seconds of it.
    await until(
      'the position in physics to be saved',
      () => entries()[0]?.rooms?.some((r) => r.room === 'physics' && (r.id ?? 0) > 0) === true,
      10_000,
    );
    // Killed with its connection alive: the kernel closes it, and the server lets ann go.
    ann.child.kill('SIGKILL');
    await ann.exited;
    expect(entries()).toHaveLength(1);
    await until('ann to leave', () => server.chat.members().length === 1, 10_000);
    bob.chat('said while ann was away', 'physics');

    const again = chatProcess(['ann', '--port', String(server.address.port)]);
    await again.waitFor(
      'already ended on the server, so this is a new one; joining its rooms again: physics, math.',
    );
    await again.waitFor('You joined math');
    expect(again.output).not.toContain('Took back');
    // What was missed, once, after its "You joined"; what was seen before, not again.
    const out = again.output;
    expect(out.indexOf('bob: said while ann was away')).toBeGreaterThan(
      out.indexOf('You joined physics'),
    );
    expect(out.split('said while ann was away')).toHaveLength(2);
    expect(out).not.toContain('seen before');
    const heard = new Promise((resolve) => bob.once('chat', resolve));
    again.type('\\room physics');
    await again.waitFor('You are typing into physics.');
    again.type('back');
    expect(await heard).toMatchObject({ from: 'ann', msg: 'back', room: 'physics' });
  });

  it('saves the last message seen in each room when it is ended with SIGTERM', async () => {
    const { bob, ann } = await annAndBobInPhysics();
    bob.chat('one', 'physics');
    bob.chat('two', 'physics');
    await ann.waitFor('bob: two');
    ann.child.kill('SIGTERM');
    // Ended by the signal, as before.
    expect(await ann.exited).toBe(null);
    expect(ann.child.signalCode).toBe('SIGTERM');
    // At once, not after the few seconds positions otherwise wait to be saved.
    expect(entries()[0]?.rooms).toEqual([{ room: 'physics', epoch: expect.any(String), id: 2 }]);
  });

  /** A server of the test's own that takes any CONNECT and gives out tokens (see `rooms`). */
  async function roomServer(
    join: (room: string, connection: number) => 'join' | 'drop' | 'ignore',
  ) {
    let connections = 0;
    const server = await scriptedServer((request, send, socket) => {
      const r = request as ScriptedRequest & { room?: string };
      if (r.cmd === '0') {
        connections++;
        send({
          cmd: '03',
          serverAddress: ['127.0.0.1', 1],
          userCount: 1,
          caps: ['errors', 'rooms'],
          resume: `token-${connections}`,
        });
      } else if (r.cmd === '6') send({ cmd: '60', beginTime: r.beginTime });
      else if (r.cmd === '3') socket.end();
      else if (r.cmd === '100') {
        const what = join(String(r.room), connections);
        if (what === 'join') send({ cmd: '101', room: r.room, members: ['ann'] });
        if (what === 'drop') socket.destroy();
      }
    });
    cleanup.push(() => server.close());
    // A session of a client gone (its PID is no process's), that was in three rooms.
    const gone = execFileSync(process.execPath, ['-e', 'console.log(process.pid)']).toString();
    saveSession(
      file(),
      serverKey([{ host: '127.0.0.1', port: server.port }], false),
      'ann',
      'token-0',
      Number(gone),
      [{ room: 'a' }, { room: 'b' }, { room: 'c' }],
    );
    const joins = () =>
      server.requests.flatMap((r) => (r.cmd === '100' ? [(r as { room?: string }).room] : []));
    return { server, joins };
  }

  it('joins every saved room again when the connection is lost on the way, keeping them in the file until then', async () => {
    let fileAtB: Entry[] = [];
    const { server, joins } = await roomServer((room, connection) => {
      if (room !== 'b' || connection > 1) return 'join';
      fileAtB = entries();
      return 'drop';
    });
    const ann = chatProcess(['ann', '--port', String(server.port)]);
    await ann.waitFor('joining its rooms again: a, b, c.');
    await ann.waitFor('You joined c');
    // a, then b (lost), then a again with the reconnect, and b and c after it.
    expect(joins()).toEqual(['a', 'b', 'a', 'b', 'c']);
    expect(ann.output).toContain('You joined b');
    // Rooms not yet joined again stayed in the file, as the client dying then would need.
    expect(fileAtB[0]?.rooms?.map((r) => r.room)).toEqual(['a', 'b', 'c']);
    await until('the file to list the three rooms', () => savedRooms() === 'a,b,c', 10_000);
  });

  it('stops joining the rooms again after three lost connections on the way, and keeps them for the next start', async () => {
    const { server, joins } = await roomServer((room) => (room === 'b' ? 'drop' : 'join'));
    const ann = chatProcess(['ann', '--port', String(server.port)]);
    await ann.waitFor('Stopped joining your rooms again after 3 lost connections: b, c.', 30_000);
    expect(joins().filter((r) => r === 'b')).toHaveLength(4);
    expect(joins()).not.toContain('c');
    await until('b and c to be in the file still', () => savedRooms() === 'a,b,c', 10_000);
  }, 40_000);

  it('lets lines typed meanwhile go once a reply would have been given up on, when no room is joined', async () => {
    const { server, joins } = await roomServer(() => 'ignore');
    const ann = chatProcess(['ann', '--port', String(server.port)]);
    await ann.waitFor('joining its rooms again: a, b, c.');
    ann.type('hello');
    const said = () => server.requests.some((r) => r.cmd === '7' && r.msg === 'hello');
    await new Promise((r) => setTimeout(r, 2000));
    // Held behind the rooms at first, as a \room to one of them must find it...
    expect(said()).toBe(false);
    // ...but not for as long as the rooms take (each up to a reply's deadline: 30 s here).
    await until('hello to be sent', said, 15_000);
    expect(joins()[0]).toBe('a');
  }, 30_000);

  it('says only that the session had ended when it was in no room but the lobby', async () => {
    const { server } = await serverWithRelay();
    const ann = chatProcess(['ann', '--port', String(server.address.port)]);
    await ann.waitFor('You are the 1st user.');
    ann.child.kill('SIGKILL');
    await ann.exited;
    await until('ann to leave', () => server.chat.members().length === 0, 10_000);
    const again = chatProcess(['ann', '--port', String(server.address.port)]);
    await again.waitFor('already ended on the server, so this is a new one.');
    expect(again.output).not.toContain('joining');
  });

  it('never presents the token of a client that still runs, even a frozen one', async () => {
    const { server, relay } = await serverWithRelay();
    const bob = await bobIn(server.address.port);
    const ann = chatProcess(['ann', '--port', String(relay.port)]);
    await ann.waitFor('You are the 2nd user.');
    const saved = entries();
    expect(saved).toEqual([expect.objectContaining({ nickname: 'ann', pid: ann.child.pid })]);

    // Stopped (Ctrl+Z, or a debugger): alive, and its session is its own.
    ann.child.kill('SIGSTOP');
    const second = chatProcess(['ann', '--port', String(relay.port)]);
    await second.waitFor('The nickname "ann" is taken');
    expect(await second.exited).toBe(1);
    expect(entries()).toEqual(saved);

    ann.child.kill('SIGCONT');
    const heard = new Promise((resolve) => bob.once('chat', resolve));
    ann.type('still mine');
    expect(await heard).toMatchObject({ from: 'ann', msg: 'still mine' });
    expect(ann.output).not.toContain('Connection lost');
  });

  it.each([
    ['\\quit', (chat: ChatProcess) => chat.type('\\quit')],
    ['Ctrl+C', (chat: ChatProcess) => chat.child.kill('SIGINT')],
    ['the end of its input (Ctrl+D)', (chat: ChatProcess) => chat.child.stdin!.end()],
  ])('removes the token when the user leaves with %s', async (_how, leave) => {
    const { relay } = await serverWithRelay();
    const ann = chatProcess(['ann', '--port', String(relay.port)]);
    await ann.waitFor('You are the 1st user.');
    expect(entries()).toHaveLength(1);
    leave(ann);
    expect(await ann.exited).toBe(0);
    expect(entries()).toEqual([]);
  });

  it('keeps the token when the terminal closes (SIGHUP), and only its own entry goes at a quit', async () => {
    const { relay } = await serverWithRelay();
    const ann = chatProcess(['ann', '--port', String(relay.port)]);
    await ann.waitFor('You are the 1st user.');
    const cat = chatProcess(['cat', '--port', String(relay.port)]);
    await cat.waitFor('You are the 2nd user.');
    expect(
      entries()
        .map((e) => e.nickname)
        .sort(),
    ).toEqual(['ann', 'cat']);
    ann.child.kill('SIGHUP');
    await ann.exited;
    cat.type('\\exit');
    expect(await cat.exited).toBe(0);
    expect(entries()).toEqual([expect.objectContaining({ nickname: 'ann' })]);
  });

  it('writes the file 0600 in a directory 0700', async () => {
    const { relay } = await serverWithRelay();
    const ann = chatProcess(['ann', '--port', String(relay.port)]);
    await ann.waitFor('You are the 1st user.');
    expect(statSync(file()).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(file())).mode & 0o777).toBe(0o700);
    expect(entries()[0]?.token).toMatch(/.{8}/);
  });

  it.each([
    ['garbage', () => writeFileSync(file(), '{"sessions":[{"server":1}, nul')],
    ['a file over the size cap', () => writeFileSync(file(), ' '.repeat(1024 * 1024))],
    ['a FIFO', () => execFileSync('mkfifo', [file()])],
  ])('starts as usual over %s in the file’s place, and saves anew', async (_what, make) => {
    mkdirSync(path.dirname(file()), { recursive: true, mode: 0o700 });
    make();
    const { relay } = await serverWithRelay();
    const ann = chatProcess(['ann', '--port', String(relay.port)]);
    await ann.waitFor('You are the 1st user.', 10_000);
    expect(entries()).toEqual([expect.objectContaining({ nickname: 'ann', pid: ann.child.pid })]);
  });

  it('goes on chatting when the file cannot be written, and says so once', async () => {
    // A directory in the file's place: the rename onto it fails.
    mkdirSync(file(), { recursive: true });
    const { server, relay } = await serverWithRelay();
    const bob = await bobIn(server.address.port);
    const ann = chatProcess(['ann', '--port', String(relay.port)]);
    await ann.waitFor('Could not save the session in');
    const heard = new Promise((resolve) => bob.once('chat', resolve));
    ann.type('hello');
    expect(await heard).toMatchObject({ from: 'ann', msg: 'hello' });
    // A rename saves again, and fails again, in silence.
    ann.type('\\rename anna');
    await ann.waitFor('You are now known as anna.');
    expect(ann.output.match(/Could not save the session/g)).toHaveLength(1);
  });

  it('with --no-save-session neither presents a saved token nor touches the file', async () => {
    const { relay } = await serverWithRelay();
    const ann = chatProcess(['ann', '--port', String(relay.port)]);
    await ann.waitFor('You are the 1st user.');
    relay.hold();
    relay.strand();
    ann.child.kill('SIGKILL');
    await ann.exited;
    relay.release();
    const saved = readFileSync(file(), 'utf8');
    const again = chatProcess(['ann', '--port', String(relay.port), '--no-save-session']);
    await again.waitFor('The nickname "ann" is taken');
    expect(await again.exited).toBe(1);
    expect(readFileSync(file(), 'utf8')).toBe(saved);
  });

  it("loses no client's entry when several save at the same moment", async () => {
    // Each process saves its own nickname 30 times, all starting at one moment.
    const module = pathToFileURL(path.join(path.dirname(CLI), 'saved-sessions.js')).href;
    const start = Date.now() + 500;
    const script = (n: number) => `
      import { saveSession, serverKey } from ${JSON.stringify(module)};
      const server = serverKey([{ host: 'h', port: 1 }], false);
      while (Date.now() < ${start}) {}
      for (let i = 0; i < 30; i++) saveSession(${JSON.stringify(file())}, server, 'user${n}', 't${n}-' + i);
    `;
    const children = Array.from({ length: 6 }, (_, n) =>
      spawn(process.execPath, ['--input-type=module', '-e', script(n)], { stdio: 'ignore' }),
    );
    const codes = await Promise.all(
      children.map((c) => new Promise<number | null>((resolve) => c.once('exit', resolve))),
    );
    expect(codes).toEqual([0, 0, 0, 0, 0, 0]);
    expect(
      entries()
        .map((e) => e.token)
        .sort(),
    ).toEqual(Array.from({ length: 6 }, (_, n) => `t${n}-29`));
  });

  it('documents the flag and the file in its help', async () => {
    const help = chatProcess(['--help']);
    expect(await help.exited).toBe(0);
    expect(help.output).toContain('--no-save-session');
    expect(help.output).toContain('$XDG_STATE_HOME/confab/sessions.json');
  });
});

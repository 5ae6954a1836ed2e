import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { ChatClient } from '../../src/client/chat-client.js';
import type { ConfabServer } from '../../src/server.js';
import { join } from '../helpers/raw-client.js';
import { scriptedServer, welcome } from '../helpers/scripted-server.js';
import { CLI, startConfab } from '../helpers/servers.js';
import { spawnServer } from '../helpers/spawn-server.js';
import { TcpRelay } from '../helpers/tcp-relay.js';
import { privateTmux } from '../helpers/tmux.js';

const { tmux, screen, chatAs, newChat, kill } = privateTmux('confab-test');

async function until(check: () => boolean, what: string, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}; screen:\n${screen()}`);
    await new Promise((r) => setTimeout(r, 30));
  }
}

describe('confab chat in a real terminal', () => {
  let server: ConfabServer;
  beforeAll(async () => {
    server = await startConfab();
  });
  afterAll(async () => {
    kill();
    await server.stop();
  });

  it('keeps the typed line intact while messages arrive, colors nicknames, and recalls history', async () => {
    const port = server.address.port;
    await chatAs('ann', port, { color: true });
    await until(() => screen().includes('You are the 1st user'), 'the welcome');
    tmux('send-keys', '-t', 'chat', '-l', 'hello wor');
    await until(() => screen().includes('ann> hello wor'), 'the typed text');

    const bob = await ChatClient.connect({ port, nickname: 'bob' });
    const heard: string[] = [];
    bob.on('chat', (m) => heard.push(m.msg));
    bob.chat('hi ann');
    await bob.whisper('ann', 'a secret');
    await until(() => screen().includes('(whisper) bob: a secret'), 'the whisper');

    const lines = screen().trimEnd().split('\n');
    // The partial input is redrawn below the new messages, not interleaved with them.
    expect(lines.at(-1)).toBe('ann> hello wor');
    expect(lines.some((l) => /^\d\d:\d\d bob: hi ann$/.test(l))).toBe(true);
    expect(lines.some((l) => /^\d\d:\d\d --> bob joined \(2 users\)$/.test(l))).toBe(true);
    // Nicknames are colored on a terminal.
    expect(screen(true)).toMatch(new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m(bob|ann)`));

    tmux('send-keys', '-t', 'chat', '-l', 'ld');
    tmux('send-keys', '-t', 'chat', 'Enter');
    await until(() => heard.includes('hello world'), 'bob to hear the message');
    await until(() => /\d\d:\d\d ann: hello world/.test(screen()), 'the sent message, formatted');

    tmux('send-keys', '-t', 'chat', 'Up');
    await until(
      () => screen().trimEnd().split('\n').at(-1) === 'ann> hello world',
      'history recall',
    );
    tmux('send-keys', '-t', 'chat', 'C-u');

    const left = new Promise((r) => bob.once('leave', r));
    tmux('send-keys', '-t', 'chat', 'C-c');
    expect(await left).toEqual({ nickname: 'ann', userCount: 1, room: 'lobby' });
    await bob.exit();
  });

  it('underlines a stored message that names its reader, dimmed as history', async () => {
    // A server of its own: the shared one's lobby history would push other tests' lines away.
    const own = await startConfab({ history: 'memory' });
    onTestFinished(() => own.stop());
    const port = own.address.port;
    const bob = await ChatClient.connect({ port, nickname: 'bob', history: true });
    const stored = (n: number) =>
      new Promise<void>((resolve) => {
        let left = n;
        bob.on('stored', () => {
          if (--left === 0) resolve();
        });
      });
    const both = stored(2);
    bob.chat('kim, are you there?');
    bob.chat('hello all');
    await both;
    await chatAs('kim', port, { color: true });
    await until(() => screen().includes('(history) bob: hello all'), 'the history');
    const rows = screen(true).split('\n');
    const esc = String.fromCharCode(27);
    const underlined = new RegExp(`${esc}\\[(?:[0-9;]*;)?4(?:;[0-9;]*)?m`);
    const named = rows.find((r) => r.includes('kim, are you there?'))!;
    expect(named.split('kim, are you there?')[0]).toMatch(underlined);
    expect(rows.find((r) => r.includes('hello all'))).not.toMatch(underlined);
    tmux('send-keys', '-t', 'chat', 'C-c');
    await bob.exit();
  });

  it('leaves no prompt below its last lines when the server ends the session (a banned word)', async () => {
    await chatAs('rude', server.address.port);
    await until(() => screen().includes('You are the'), 'the welcome');
    // The pane stays once the client has exited, to be read.
    tmux('set-option', '-t', 'chat', 'remain-on-exit', 'on');
    tmux('send-keys', '-t', 'chat', '-l', 'well, I hate professor X');
    tmux('send-keys', '-t', 'chat', 'Enter');
    await until(
      () => tmux('display-message', '-p', '-t', 'chat', '#{pane_dead}').trim() === '1',
      'the client to exit',
    );
    const lines = screen()
      .split('\n')
      .filter((l) => l.trim() !== '' && !l.startsWith('Pane is dead'));
    expect(lines.at(-2)).toBe('You were disconnected: your message contained a banned word.');
    expect(lines.at(-1)).toBe('Not sent: well, I hate professor X');
    expect(lines.filter((l) => l.startsWith('rude>'))).toEqual([]);
  });

  it('shows every message above a typed line longer than the terminal is wide', async () => {
    const port = server.address.port;
    await chatAs('wen', port, { columns: 60 });
    await until(() => screen().includes('You are the 1st user'), 'the welcome');
    const typed = `long ${'0123456789'.repeat(9)} end`;
    tmux('send-keys', '-t', 'chat', '-l', typed);
    await until(() => screen().replaceAll('\n', '').includes(' end'), 'the typed text');
    const peer = await join(port, 'peer');
    for (const msg of ['incoming one', 'incoming two', 'incoming three']) {
      peer.sendPy({ cmd: '7', msg });
    }
    peer.sendPy({ cmd: '3' });
    await peer.expectClose();
    await until(() => screen().includes('peer left'), 'the leave');
    const rows = screen().trimEnd().split('\n');
    for (const msg of ['incoming one', 'incoming two', 'incoming three']) {
      expect(
        rows.filter((row) => row.endsWith(`peer: ${msg}`)),
        msg,
      ).toHaveLength(1);
    }
    // The typed line once, below them, whole.
    expect(rows.filter((row) => row.startsWith('wen> '))).toHaveLength(1);
    const from = rows.findIndex((row) => row.startsWith('wen> '));
    expect(rows.slice(from).join('')).toBe(`wen> ${typed}`);
    tmux('send-keys', '-t', 'chat', 'C-u');
    tmux('send-keys', '-t', 'chat', 'C-c');
  });

  it('replaces every row of a sent chat wider than the terminal with the message', async () => {
    // A server of its own: the shared one's history would push the later tests' welcomes off
    // their screens.
    const own = await startConfab();
    onTestFinished(() => own.stop());
    await chatAs('sam', own.address.port, { columns: 60 });
    await until(() => screen().includes('You are the 1st user'), 'the welcome');
    // "sam> " and 130 characters: three rows of 60.
    const typed = `wide ${'0123456789'.repeat(12)} tail`;
    tmux('send-keys', '-t', 'chat', '-l', typed);
    await until(() => screen().replaceAll('\n', '').includes(' tail'), 'the typed text');
    tmux('send-keys', '-t', 'chat', 'Enter');
    await until(() => /\d\d:\d\d sam: wide/.test(screen()), 'the sent message, formatted');
    await until(() => screen().trimEnd().endsWith('sam>'), 'the empty prompt');
    const rows = screen().trimEnd().split('\n');
    // Nothing of the echoed input is left: only the formatted message and the prompt.
    expect(
      rows.filter((row) => row.includes('sam> wide') || row.startsWith('0123')),
      screen(),
    ).toEqual([]);
    tmux('send-keys', '-t', 'chat', 'C-c');
  });

  // Past its third attempt the client says nothing until the tenth (most of a minute): the
  // prompt says all along that it is reconnecting, and no more once it is back.
  it('says in the prompt while the connection is being restored, the typed line kept', async () => {
    const relay = await TcpRelay.start(server.address.port);
    onTestFinished(() => relay.close());
    await chatAs('rex', relay.port, { columns: 100 });
    await until(() => screen().includes('You are the'), 'the welcome');
    tmux('send-keys', '-t', 'chat', '-l', 'half typed');
    await until(() => screen().trimEnd().endsWith('rex> half typed'), 'the typed text');
    relay.hold();
    relay.cut();
    await until(
      () => screen().trimEnd().endsWith('rex (reconnecting)> half typed'),
      'the prompt to say it is reconnecting',
    );
    relay.release();
    await until(() => screen().includes('Reconnected as rex'), 'the reconnect');
    await until(() => screen().trimEnd().endsWith('rex> half typed'), 'the usual prompt');
    tmux('send-keys', '-t', 'chat', 'C-u');
    tmux('send-keys', '-t', 'chat', 'C-c');
  });

  it('leaves no operator password on the screen or among the lines Up recalls', async () => {
    await chatAs('opal', server.address.port, { columns: 100 });
    await until(() => screen().includes('You are the'), 'the welcome');
    tmux('send-keys', '-t', 'chat', '-l', 'said before');
    tmux('send-keys', '-t', 'chat', 'Enter');
    tmux('send-keys', '-t', 'chat', '-l', '\\oper teacher open-sesame');
    tmux('send-keys', '-t', 'chat', 'Enter');
    await until(() => screen().includes('\\oper teacher ********'), 'the masked command');
    await until(
      () => /Refused|operator|oper/i.test(screen().split('********')[1] ?? ''),
      'the answer',
    );
    expect(screen()).not.toContain('open-sesame');
    tmux('send-keys', '-t', 'chat', 'Up');
    await until(() => screen().trimEnd().endsWith('opal> said before'), 'the line before it');
    expect(screen()).not.toContain('open-sesame');
    tmux('send-keys', '-t', 'chat', 'C-u');
    tmux('send-keys', '-t', 'chat', 'C-c');
  });

  it('shows each line of a paste once, formatted, not also as it was echoed', async () => {
    const own = await startConfab();
    onTestFinished(() => own.stop());
    await chatAs('pam', own.address.port, { columns: 100 });
    await until(() => screen().includes('You are the 1st user'), 'the welcome');
    tmux('set-buffer', '-b', 'paste', 'pasted 1\npasted 2\n\npasted 3\npasted 4\n');
    tmux('paste-buffer', '-b', 'paste', '-t', 'chat');
    await until(() => /\d\d:\d\d pam: pasted 4/.test(screen()), 'the last pasted line');
    await until(() => screen().trimEnd().endsWith('pam>'), 'the empty prompt');
    const rows = screen().trimEnd().split('\n');
    for (const n of [1, 2, 3, 4]) {
      expect(
        rows.filter((row) => row.includes(`pasted ${n}`)),
        screen(),
      ).toEqual([expect.stringMatching(new RegExp(`^\\d\\d:\\d\\d pam: pasted ${n}$`))]);
    }
    tmux('send-keys', '-t', 'chat', 'C-c');
  });

  it('reads what is typed again after Ctrl+Z and fg', async () => {
    const own = await startConfab();
    onTestFinished(() => own.stop());
    // A shell with job control: Ctrl+Z stops no process of an orphaned process group.
    await newChat('-x', '100', '-y', '20', 'env PS1=$ bash --norc --noprofile -i');
    tmux(
      'send-keys',
      '-t',
      'chat',
      '-l',
      `NO_COLOR=1 TERM=xterm-256color ${process.execPath} ${CLI} chat zed --port ${own.address.port}`,
    );
    tmux('send-keys', '-t', 'chat', 'Enter');
    await until(() => screen().includes('You are the 1st user'), 'the welcome');
    tmux('send-keys', '-t', 'chat', 'C-z');
    await until(() => /Stopped/.test(screen()), 'the client to stop');
    tmux('send-keys', '-t', 'chat', '-l', 'fg');
    tmux('send-keys', '-t', 'chat', 'Enter');
    await until(() => screen().trimEnd().endsWith('zed>'), 'the prompt again');
    tmux('send-keys', '-t', 'chat', '-l', 'after fg');
    tmux('send-keys', '-t', 'chat', 'Enter');
    await until(() => /\d\d:\d\d zed: after fg/.test(screen()), 'the line typed after fg');
    tmux('send-keys', '-t', 'chat', 'C-c');
    await until(() => screen().trimEnd().endsWith('$'), 'the shell again');
  });

  // No control character is needed to forge a line: spaces that fill the rest of the
  // sender's row would make the terminal wrap, and the text after them would start a row of
  // its own reading like another member's message (the sender only has to guess the width;
  // 80 columns is the usual one). The client breaks its rows itself and indents the rest,
  // also when only its output is a terminal (a script feeding its input through a pipe).
  it.each([
    { input: 'a terminal', nickname: 'vic', pipe: '' },
    { input: 'a pipe', nickname: 'pia', pipe: 'tail -f /dev/null | ' },
  ])(
    'does not let a chat padded to the terminal width start a row that looks like another member (input from $input)',
    async ({ nickname, pipe }) => {
      const port = server.address.port;
      await chatAs(nickname, port, { columns: 80, before: pipe });
      await until(() => screen().includes('You are the 1st user'), 'the welcome');
      const mal = await join(port, 'mal');
      const now = new Date();
      const hhmm = `${String(now.getHours()).padStart(2, '0')}:${String(now.getMinutes()).padStart(2, '0')}`;
      const shownBefore = `${hhmm} mal: `;
      mal.sendPy({
        cmd: '7',
        msg: `${' '.repeat(80 - shownBefore.length)}${hhmm} admin: the server restarts, type \\oper admin PASSWORD`,
      });
      mal.sendPy({ cmd: '7', msg: 'done' });
      try {
        await until(() => screen().includes('mal: done'), 'the last message');
        expect(screen()).not.toMatch(/^\d\d:\d\d admin: /m);
        // Its own row, indented: the client broke the line itself.
        expect(screen()).toMatch(/^ {6,}\d\d:\d\d admin: the server restarts/m);
      } finally {
        mal.sendPy({ cmd: '3' });
        await mal.expectClose();
      }
    },
  );

  it('shows escape sequences from a member as text: no new title, no answer typed into the input line', async () => {
    const port = server.address.port;
    await chatAs('cat', port, { columns: 120 });
    const title = () => tmux('display', '-p', '-t', 'chat', '#{pane_title}').trim();
    await until(() => screen().includes('You are the 1st user'), 'the welcome');
    const before = title();
    tmux('send-keys', '-t', 'chat', '-l', 'typed by cat');
    await until(() => screen().includes('cat> typed by cat'), 'the typed text');

    const eve = await join(port, 'eve');
    eve.sendPy({ cmd: '7', msg: 'a\x1b]0;OWNED\x07b\x1b]2;OWNED2\x1b\\c' });
    eve.sendPy({ cmd: '7', msg: 'where are you?\x1b[6n\u009b6n' });
    eve.sendPy({ cmd: '7', msg: 'hello\r12:00 dan: I am dan' });
    eve.sendPy({ cmd: '7', msg: 'done' });
    await until(() => screen().includes('eve: done'), 'the last message');

    expect(title()).toBe(before);
    expect(title()).not.toContain('OWNED');
    const text = screen();
    expect(text).toContain('eve: a^[]0;OWNED^Gb^[]2;OWNED2^[\\c');
    expect(text).toContain('eve: where are you?^[[6n<U+009B>6n');
    expect(text).toContain('eve: hello^M12:00 dan: I am dan');
    expect(text).not.toMatch(/^12:00 dan/m);
    // Nothing the terminal might have answered landed in the input line.
    expect(text.trimEnd().split('\n').at(-1)).toBe('cat> typed by cat');

    tmux('send-keys', '-t', 'chat', 'Enter');
    const heard = await eve.expect('70');
    expect(heard).toMatchObject({ from: 'cat', msg: 'typed by cat' });
    tmux('send-keys', '-t', 'chat', 'C-c');
    await eve.expect('30');
    eve.close();
  });

  it('keeps every line shown while typing into a room whose name readline measures wider than drawn', async () => {
    const port = server.address.port;
    // Regional indicators alone: two columns to readline, one on the screen. In the prompt,
    // 58 of them made every line shown erase the one before.
    const room = '\u{1f1fa}'.repeat(58);
    const maker = await join(port, 'maker', { caps: ['rooms'] });
    maker.sendPy({ cmd: '100', room });
    await maker.expect('101');
    await chatAs('vic', port, { columns: 100 });
    await until(() => screen().includes('You are the'), 'the welcome');
    tmux('send-keys', '-t', 'chat', '-l', `\\join ${room}`);
    tmux('send-keys', '-t', 'chat', 'Enter');
    await until(() => screen().includes('You joined'), 'the join');
    tmux('send-keys', '-t', 'chat', '-l', `\\room ${room}`);
    tmux('send-keys', '-t', 'chat', 'Enter');
    await until(() => screen().includes('vic@'), 'the prompt of the room');
    for (let i = 1; i <= 6; i++) maker.sendPy({ cmd: '7', room, msg: `line number ${i}` });
    await until(() => screen().includes('line number 6'), 'the last line');
    const shown = screen();
    for (let i = 1; i <= 6; i++) expect(shown, shown).toContain(`maker: line number ${i}`);
    // Shown in the prompt as characters of one width everywhere.
    expect(shown).toContain(`vic@${'?'.repeat(58)}>`);
    tmux('send-keys', '-t', 'chat', 'C-c');
    maker.close();
  });

  it('keeps the "You joined" line when a chat was typed before the join was answered', async () => {
    const port = server.address.port;
    await chatAs('dot', port, { columns: 120 });
    await until(() => screen().includes('You are the'), 'the welcome');
    // One tmux call: both lines reach the client at once, the chat before the join's answer.
    tmux('send-keys', '-t', 'chat', '\\join bio', 'Enter', 'right after', 'Enter');
    await until(() => /\d\d:\d\d dot: right after/.test(screen()), 'the chat, formatted');
    expect(screen()).toContain('You joined bio');
    tmux('send-keys', '-t', 'chat', 'C-c');
  });

  it.each([
    { how: 'Ctrl+C', keys: ['-l', 'half typed'], last: 'C-c' },
    { how: 'Ctrl+D', keys: ['C-u'], last: 'C-d' },
    { how: '/quit with a message', keys: ['-l', '/quit bye now'], last: 'Enter' },
  ])('leaves the shell its own row after $how', async ({ how, keys, last }) => {
    const own = await startConfab();
    onTestFinished(() => own.stop());
    await newChat(
      '-x',
      '100',
      '-y',
      '20',
      `env NO_COLOR=1 TERM=xterm-256color ${process.execPath} ${CLI} chat liv --port ${own.address.port}; echo EXITED:$?; sleep 60`,
    );
    await until(() => screen().includes('You are the'), 'the welcome');
    tmux('send-keys', '-t', 'chat', ...keys);
    tmux('send-keys', '-t', 'chat', last);
    await until(() => screen().includes('EXITED:0'), 'the client to exit');
    // What the shell writes next starts a row of its own, not after the prompt.
    expect(screen()).toMatch(/^EXITED:0$/m);
    if (how.startsWith('/quit')) {
      // Told the message is not sent, with no prompt drawn again after it.
      const after = screen().split('Quit messages are not sent')[1] ?? '';
      expect(after).toContain('EXITED:0');
      expect(after).not.toContain('liv>');
    }
  });

  it('leaves at Ctrl+C while a request waits on a server that stopped answering', async () => {
    const stopped = await spawnServer(['--http-port', 'off']);
    try {
      tmux(
        'new-session',
        '-d',
        '-s',
        'stuck',
        '-x',
        '100',
        '-y',
        '20',
        `${process.execPath} ${CLI} chat dan --port ${stopped.port}; echo EXITED:$?; sleep 60`,
      );
      const pane = () => tmux('capture-pane', '-p', '-t', 'stuck');
      await until(() => pane().includes('You are the 1st user'), 'the welcome');
      stopped.child.kill('SIGSTOP');
      tmux('send-keys', '-t', 'stuck', '-l', '\\users');
      tmux('send-keys', '-t', 'stuck', 'Enter');
      tmux('send-keys', '-t', 'stuck', 'C-c');
      await until(() => pane().includes('EXITED:0'), 'the client to exit');
      tmux('kill-session', '-t', 'stuck');
    } finally {
      stopped.child.kill('SIGCONT');
      await stopped.stop();
    }
  });
});

// The prompt changes (\rename, \room, a resume) while a typed line wider than the terminal
// is on the screen. A scripted server holds the rename's "51" until the typed line is shown.
describe('confab chat in a real terminal, its prompt changing', () => {
  it('keeps the line a prompt change prints above a typed line wider than the terminal', async () => {
    let answerRename: (() => void) | undefined;
    const server = await scriptedServer((request, send, socket) => {
      if (request.cmd === '0') {
        send(welcome(['errors', 'rooms']));
      } else if (request.cmd === '5') {
        answerRename = () => send({ cmd: '51', newNickname: 'w' });
      } else if (request.cmd === '3') socket.end();
    });
    try {
      const long = 'wenceslas-the-long-name';
      await chatAs(long, server.port, { columns: 60 });
      await until(() => screen().replaceAll('\n', '').includes('1st user'), 'the welcome');
      tmux('send-keys', '-t', 'chat', '-l', '\\rename w');
      tmux('send-keys', '-t', 'chat', 'Enter');
      await until(() => answerRename !== undefined, 'the rename request');
      // 25 columns of old prompt and 95 typed take three rows of 60; behind "w> ", two.
      const typed = `x${'0123456789'.repeat(9).slice(0, 85)}abcdefgh.`;
      tmux('send-keys', '-t', 'chat', '-l', typed);
      await until(() => screen().replaceAll('\n', '').includes('abcdefgh.'), 'the typed text');
      answerRename!();
      await until(() => screen().includes('w> '), 'the new prompt');
      const shown = screen();
      expect(shown, shown).toContain('You are now known as w');
      const rows = shown.trimEnd().split('\n');
      const from = rows.findIndex((row) => row.startsWith('w> '));
      expect(rows.slice(from).join(''), shown).toBe(`w> ${typed}`);
      // Nothing of the typed line is left behind the old prompt.
      expect(
        rows.filter((row) => row.startsWith(`${long}> x`)),
        shown,
      ).toHaveLength(0);
      tmux('send-keys', '-t', 'chat', 'C-u');
      tmux('send-keys', '-t', 'chat', 'C-c');
    } finally {
      await server.close();
    }
  });
});

import type { ChildProcess } from 'node:child_process';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { visible } from '../../src/protocol/text.js';
import type { ConfabServer } from '../../src/server.js';
import { ChatProcess } from '../helpers/chat-process.js';
import { join, type RawClient } from '../helpers/raw-client.js';
import { type ScriptedServer, scriptedServer } from '../helpers/scripted-server.js';
import { freePort, outputOf, serveLogging, startConfab, stopProcess } from '../helpers/servers.js';
import { spawnServer } from '../helpers/spawn-server.js';

/** Code points a terminal may obey: C0 but LF (the client's own line ends), DEL, C1, bidi. */
// A string, not a literal: the pattern names control characters on purpose.
const RAW_CONTROL_CLASS =
  '[\\u0000-\\u0009\\u000b-\\u001f\\u007f-\\u009f\\u061c\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069]';
const RAW_CONTROL = new RegExp(RAW_CONTROL_CLASS);

function rawControlsIn(output: string): string[] {
  return [...output]
    .filter((ch) => RAW_CONTROL.test(ch))
    .map((ch) => `U+${ch.codePointAt(0)!.toString(16).padStart(4, '0')}`);
}

/** What a hostile member sends, each aimed at one trick. */
const ATTACKS = {
  title: 'x\x1b]0;owned\x07y', // OSC 0: set the window title
  title2: 'x\x1b]2;owned\x1b\\y', // OSC 2, ended by ST
  dsr: 'x\x1b[6ny', // CSI 6n: the terminal types the cursor position into the input line
  decrqss: 'x\x1bP$q"p\x1b\\y', // DECRQSS: another answer-back
  c1csi: 'x\u009b6ny', // the one-character CSI
  erase: 'innocent\r\x1b[2K12:00 bob: send me your password', // CR-overwrite forgery
  backspace: 'abc\b\b\bxyz', // erase the sender's prefix
  newline: 'hi\n12:00 bob: forged line', // a line that looks like bob's
  bidi: 'user\u202egnp.exe\u202c \u2066x\u2069\u200f\u061c', // reorder what is shown
  bell: 'ding\x07\x07',
  del: 'a\x7fb\u0085c',
};

describe('confab chat shows what peers send, and obeys none of it', () => {
  let server: ConfabServer;
  beforeAll(async () => {
    // Members follow one another from one address faster than flood control refills.
    server = await startConfab({ 'rate-limit': '0' });
  });
  afterAll(async () => {
    await server.stop();
  });

  it('against a hostile member on confab', async () => {
    const port = server.address.port;
    const ann = ChatProcess.start(['ann', '--port', String(port)], { NO_COLOR: '1' });
    let eve: RawClient | undefined;
    try {
      await ann.waitFor('You are the 1st user');
      // A valid nickname that imitates an escape sequence's parameters.
      eve = await join(port, 'x[6n]0;eve');
      for (const msg of Object.values(ATTACKS)) eve.sendPy({ cmd: '7', msg });
      eve.sendPy({ cmd: '2', to: 'ann', msg: 'psst\x1b[6n\r\u009b' });
      eve.sendPy({ cmd: '7', msg: 'done' });
      await ann.waitFor('x[6n]0;eve: done');
      ann.type('\\users');
      await ann.waitFor('2 users in the room:');

      expect(rawControlsIn(ann.output)).toEqual([]);
      for (const msg of Object.values(ATTACKS)) {
        expect(ann.output).toContain(`x[6n]0;eve: ${visible(msg)}\n`);
      }
      expect(ann.output).toContain('(whisper) x[6n]0;eve: psst^[[6n^M<U+009B>\n');
      expect(ann.output).toContain('x^[]0;owned^Gy');
      expect(ann.output).toContain('x<U+009B>6ny');
      expect(ann.output).toContain('user<U+202E>gnp.exe<U+202C>');
      // No line pretends to come from bob.
      expect(ann.output).not.toMatch(/^\d\d:\d\d bob:/m);
      expect(ann.output).not.toMatch(/^12:00/m);
    } finally {
      eve?.close();
      await ann.stop();
    }
  });

  it('sends a course client, which prints what it gets, the text made visible', async () => {
    const port = server.address.port;
    // A course client negotiates nothing; eve's client does, and gets text as sent.
    const kim = await join(port, 'kim');
    const eve = await join(port, 'eve3', { caps: ['errors'] });
    const long = `${ATTACKS.title.repeat(60)}end`;
    const sent = [...Object.values(ATTACKS), long, 'plain text, 여러분'];
    try {
      for (const msg of sent) eve.sendPy({ cmd: '7', msg });
      eve.sendPy({ cmd: '2', to: 'kim', msg: 'psst\x1b[6n\r\u009b' });
      kim.sendPy({ cmd: '7', msg: `back${ATTACKS.dsr}` });
      await eve.waitFor((m) => m.cmd === '70' && String(m.msg).startsWith('back'), 1);
      await kim.waitFor((m) => m.cmd === '70' && String(m.msg).startsWith('psst'), 1);
      const chats = kim.received.filter((m) => m.cmd === '70').map((m) => String(m.msg));
      // A long text comes in several "70"s (each a 1024-byte frame) whose texts join.
      expect(chats.join('')).toBe([...sent, 'psst\x1b[6n\r\u009b'].map(visible).join(''));
      for (const msg of chats) expect(rawControlsIn(msg)).toEqual([]);
      expect(chats).toContain('x^[]0;owned^Gy');
      expect(chats).toContain('plain text, 여러분');
      // Negotiated clients get it as it was sent.
      expect(eve.received).toContainEqual(
        expect.objectContaining({ cmd: '70', from: 'kim', msg: `back${ATTACKS.dsr}` }),
      );
    } finally {
      kim.close();
      eve.close();
    }
  });

  it('for generated hostile messages', async () => {
    const port = server.address.port;
    const ann = ChatProcess.start(['ann2', '--port', String(port)], { NO_COLOR: '1' });
    let eve: RawClient | undefined;
    try {
      await ann.waitFor('You are the');
      eve = await join(port, 'eve2');
      const pieces = fc.oneof(
        fc.string({ unit: 'binary', maxLength: 6 }),
        fc.constantFrom(...Object.values(ATTACKS), '\x1b', '\x9b', '\x07', '\r', '\b', '\n'),
        fc.integer({ min: 0, max: 0x9f }).map((cp) => String.fromCodePoint(cp)),
      );
      const messages = fc
        .sample(
          fc.array(pieces, { minLength: 1, maxLength: 12 }).map((p) => p.join('')),
          { numRuns: 30, seed: 20825 },
        )
        .filter((m) => m.length > 0 && !/\p{Cs}/u.test(m) && !/i hate professor/i.test(m));
      for (const msg of messages) eve.sendPy({ cmd: '7', msg });
      eve.sendPy({ cmd: '7', msg: 'done' });
      await ann.waitFor('eve2: done');
      expect(rawControlsIn(ann.output)).toEqual([]);
      for (const msg of messages) expect(ann.output).toContain(`eve2: ${visible(msg)}\n`);
    } finally {
      eve?.close();
      await ann.stop();
    }
  });
});

/**
 * A hostile server: everything it sends the client -- its address, nicknames,
 * the member list, error texts, the version -- carries escape sequences.
 */
const ODD = { toString: '', valueOf: '' };

function hostileServer(): Promise<ScriptedServer> {
  const e = '\x1b]0;owned\x07\x1b[6n\u009b6n\r\u202e';
  return scriptedServer((request, send, socket) => {
    switch (request.cmd) {
      case '0':
        send({
          cmd: '03',
          serverAddress: [`10.0.0.1${e}`, `1${e}`],
          userCount: `2${e}`,
          caps: ['errors', 'renames', 'whispers'],
        });
        send({ cmd: '8', nickname: `mal${e}`, userCount: 2 });
        send({ cmd: '70', from: `mal${e}`, msg: `hi${e}` });
        send({ cmd: '70', from: `mal${e}`, msg: `psst${e}`, whisper: true });
        send({ cmd: '91', oldNickname: `mal${e}`, newNickname: `bob${e}` });
        send({ cmd: '90', code: 1001, message: `unknown command "${e}"` });
        // Objects whose conversion to text throws, which JSON can carry: shown, not fatal.
        send({ cmd: '70', from: ODD, msg: ODD });
        send({ cmd: '8', nickname: ODD, userCount: ODD });
        break;
      case '1':
        send({
          cmd: '10',
          users: [
            [`ann`, `127.0.0.1${e}`, 1],
            [`bob${e}`, '::1', `7${e}`],
          ],
        });
        break;
      case '4':
        send({ cmd: '40', serverVersion: `9${e}` });
        break;
      case '5':
        send({ cmd: '51', newNickname: `ann${e}` });
        break;
      case '3':
        send({ cmd: '30', nickname: `bob${e}`, userCount: 1 });
        socket.end();
        break;
    }
  });
}

describe('confab chat against a hostile server', () => {
  it('shows its addresses, names, lists, versions and error texts inertly', async () => {
    const srv = await hostileServer();
    const ann = ChatProcess.start(['ann', '--port', String(srv.port)], { NO_COLOR: '1' });
    try {
      await ann.waitFor('Refused: unknown command');
      ann.type('\\users');
      await ann.waitFor('2 users in the room:');
      ann.type('\\version');
      await ann.waitFor('Server version 9');
      ann.type('\\rename x');
      await ann.waitFor('You are now known as');
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
      expect(rawControlsIn(ann.output)).toEqual([]);
      const shown = visible('\x1b]0;owned\x07\x1b[6n\u009b6n\r\u202e');
      expect(shown).toBe('^[]0;owned^G^[[6n<U+009B>6n^M<U+202E>');
      for (const line of [
        `Connected to 10.0.0.1${shown}:1${shown} as ann.`,
        `mal${shown} joined`,
        `mal${shown}: hi${shown}`,
        `(whisper) mal${shown}: psst${shown}`,
        `mal${shown} is now known as bob${shown}`,
        `Refused: unknown command "${shown}".`,
        `  ann 127.0.0.1${shown}:1`,
        `  bob${shown} ::1:7${shown}`,
        `Server version 9${shown}, client confab`,
        `You are now known as ann${shown}.`,
        '[object Object]: [object Object]',
        '[object Object] joined (NaN users)',
      ]) {
        expect(ann.output).toContain(line);
      }
    } finally {
      await ann.stop();
      await srv.close();
    }
  });
});

describe('leaving is prompt even when the server stops answering', () => {
  for (const how of ['\\exit', 'SIGINT'] as const) {
    it(`with ${how} while a \\users awaits its reply`, { timeout: 20_000 }, async () => {
      const srv = await spawnServer(['--http-port', 'off']);
      const ann = ChatProcess.start(['ann', '--port', String(srv.port)], { NO_COLOR: '1' });
      try {
        await ann.waitFor('You are the 1st user');
        srv.child.kill('SIGSTOP');
        ann.type('\\users');
        ann.type('hello, anyone?');
        if (how === '\\exit') ann.type('\\exit');
        else ann.child.kill('SIGINT');
        expect(await ann.exited).toBe(0);
      } finally {
        srv.child.kill('SIGCONT');
        await ann.stop();
        await srv.stop();
      }
    });
  }
});

/** `confab serve` with the given log format; resolves once it listens. */
async function serveWithLogs(format: 'pretty' | 'json'): Promise<{
  child: ChildProcess;
  port: number;
  output: () => string;
}> {
  const port = await freePort();
  const child = serveLogging(format, port, 'off');
  const output = outputOf(child);
  await waitUntil(() => output().includes('listening'), output);
  return { child, port, output };
}

async function waitUntil(check: () => boolean, output: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out; output:\n${output()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('client strings cannot forge or flood log lines', () => {
  for (const format of ['pretty', 'json'] as const) {
    it(`in the ${format} format`, { timeout: 20_000 }, async () => {
      const srv = await serveWithLogs(format);
      try {
        const eve = await join(srv.port, 'eve');
        await waitUntil(() => srv.output().includes('eve joined'), srv.output);
        const before = srv.output();
        // The largest frame the server takes: 32,000 newlines in the command.
        const flood = `{"cmd":"${'\\n'.repeat(32_000)}"}\n`;
        expect(Buffer.byteLength(flood)).toBeLessThanOrEqual(65_536);
        eve.write(flood);
        eve.write('{"cmd":"x\\n", "msg": 1}\n');
        eve.write('{"cmd":"7"}\n'); // a known command with a field missing
        // Unknown commands are logged one per 10 s: the last one held back comes at stop.
        eve.write('{"cmd":"x\\nFAKE LOG LINE\\r\\u001b]0;owned\\u0007\\u009b6n\\u202e"}\n');
        await waitUntil(() => srv.output().includes('well-formed'), srv.output);
        eve.close();
        await stopProcess(srv.child);
        const added = srv.output().slice(before.length);

        const lines = added.split('\n').filter((l) => l.includes('Invalid request'));
        expect(lines.filter((l) => /^\s*FAKE/.test(l))).toEqual([]);
        // One line per kind of bad request, and the last held back, each short.
        expect(lines).toHaveLength(3);
        expect(added.length).toBeLessThan(4_000);
        expect(rawControlsIn(added)).toEqual([]);
        if (format === 'json') {
          for (const line of added.split('\n').filter((l) => l !== '')) JSON.parse(line);
          expect(added).toContain('x^JFAKE LOG LINE^M^[]0;owned^G<U+009B>6n<U+202E>');
        } else {
          expect(added).toContain(
            'Invalid request command. Command: x^JFAKE LOG LINE^M^[]0;owned^G<U+009B>6n<U+202E>',
          );
        }
        expect(added).toContain('...(+');
      } finally {
        await stopProcess(srv.child);
      }
    });
  }
});

import { describe, expect, it } from 'vitest';
import { ChatClient } from '../../src/client/chat-client.js';
import { ChatProcess } from '../helpers/chat-process.js';
import { type ScriptedRequest, scriptedServer, welcome } from '../helpers/scripted-server.js';

// `confab chat` against a server that sends what the protocol does not say: a user may point
// it at any host, and the course's server relays whatever its users send. Values of the wrong
// shape or type must be shown as text, never end the client with a stack trace or leave it
// running after \exit. JSON can send an object whose conversion to text throws
// ({"toString": ""}): String() of it throws a TypeError.
const POISON = { toString: '' };
const ALL_CAPS = ['errors', 'renames', 'whispers', 'moderation', 'rooms', 'history'];

/** A server that sends `welcome` for "03", then `after`, and answers RTT, EXIT and `replies`. */
function hostile(
  welcome: object,
  after: object[] = [],
  replies: Record<string, (request: ScriptedRequest) => object> = {},
) {
  return scriptedServer((request, send, socket) => {
    if (request.cmd === '0') {
      send(welcome);
      for (const value of after) send(value);
    } else if (replies[request.cmd] !== undefined) send(replies[request.cmd]!(request));
    else if (request.cmd === '6') send({ cmd: '60', beginTime: request.beginTime });
    else if (request.cmd === '3') socket.end();
  });
}

/** Joins, types `lines`, waits for `expected` after them, then leaves: status 0, no stack. */
async function survives(
  srv: Awaited<ReturnType<typeof hostile>>,
  lines: string[],
  expected: string,
): Promise<string> {
  const ann = ChatProcess.start(['ann', '--port', String(srv.port), '--no-reconnect'], {
    NO_COLOR: '1',
  });
  try {
    await ann.waitFor('Type \\help for commands.');
    for (const line of lines) ann.type(line);
    // A chat the server sends back once the lines were handled: the client still reads.
    await ann.waitFor(expected);
    ann.type('\\exit');
    expect(await ann.exited).toBe(0);
    expect(ann.output).not.toMatch(/TypeError|\n\s+at /);
    return ann.output;
  } finally {
    await ann.stop();
    await srv.close();
  }
}

describe('confab chat against a hostile server', () => {
  it('joins when "03" has no serverAddress or userCount', { timeout: 40_000 }, async () => {
    // The welcome line read serverAddress[0] of undefined: a stack trace, and the process
    // stayed connected and running, deaf to \exit, until killed.
    const srv = await hostile({ cmd: '03' }, [{ cmd: '70', from: 'bob', msg: 'still here' }]);
    const output = await survives(srv, [], 'bob: still here');
    expect(output).toContain('Connected to ');
  });

  it('joins when serverAddress is null or an object', { timeout: 40_000 }, async () => {
    const srv = await hostile({ cmd: '03', serverAddress: null, userCount: POISON }, [
      { cmd: '70', from: 'bob', msg: 'still here' },
    ]);
    await survives(srv, [], 'bob: still here');
  });

  it('shows a "101" whose member cannot be made text', { timeout: 40_000 }, async () => {
    // The client library's String() on each member threw inside the socket's data handler:
    // an uncaught exception that ended the process.
    const srv = await hostile({ cmd: '03', serverAddress: ['127.0.0.1', 1], caps: ALL_CAPS }, [
      { cmd: '101', room: 'lobby', members: [POISON, 'bob'], userCount: 2 },
      { cmd: '70', from: 'bob', msg: 'still here' },
    ]);
    await survives(srv, [], 'bob: still here');
  });

  it.each([
    ['no list', { cmd: '98' }],
    ['a list that is text', { cmd: '98', bans: 'all of them' }],
    [
      'entries of every wrong kind',
      {
        cmd: '98',
        bans: [null, 7, 'x', { mask: POISON, by: ['x'], reason: POISON, expires: 'soon' }],
      },
    ],
  ])('shows a ban list with %s', { timeout: 40_000 }, async (_, reply) => {
    // banListLines read .length of undefined, describeBan .expires of null: the rejection
    // of the line's handler ended the process with a stack trace.
    const srv = await hostile({ cmd: '03', serverAddress: ['127.0.0.1', 1], caps: ALL_CAPS }, [], {
      '97': () => reply,
      '7': () => ({ cmd: '70', from: 'bob', msg: 'after the list' }),
    });
    await survives(srv, ['\\bans', 'hello'], 'bob: after the list');
  });
});

describe('confab chat against a hostile server that announces limits', () => {
  it('queues lines under a rate too low for a timer, quietly', { timeout: 40_000 }, async () => {
    // A wait over 2^31 - 1 ms made Node fire the queue's timer after 1 ms instead, with a
    // TimeoutOverflowWarning on stderr each time: the terminal filled with warnings.
    const srv = await hostile({
      cmd: '03',
      serverAddress: ['127.0.0.1', 1],
      caps: ['errors'],
      limits: { rate: 1e-300, burst: 0, maxMessage: 4096 },
    });
    const ann = ChatProcess.start(['ann', '--port', String(srv.port), '--no-reconnect'], {
      NO_COLOR: '1',
    });
    try {
      await ann.waitFor('Type \\help for commands.');
      ann.type('one');
      ann.type('two');
      await ann.waitFor('line queued');
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
      expect(ann.output).not.toContain('Warning');
      expect(srv.requests.map((r) => r.msg ?? r.cmd)).toEqual(['0', 'one', '3']);
    } finally {
      await ann.stop();
      await srv.close();
    }
  });
});

describe('the client library against a hostile server', () => {
  it("cuts a server's reasons short: a refusal, a disconnect's, a notice's", async () => {
    const long = 'y'.repeat(100_000);
    const srv = await scriptedServer((request, send) => {
      if (request.cmd === '0') send(welcome(['errors', 'rooms', 'moderation']));
      else if (request.cmd === '100') {
        send({ cmd: '99', action: 'kick', nickname: 'bob', by: 'op', reason: long });
        send({ cmd: '90', code: 1002, message: long, ref: '100' });
      }
    });
    try {
      const ann = await ChatClient.connect({ port: srv.port, nickname: 'ann' });
      const notice = new Promise<{ reason: string }>((resolve) => ann.once('moderation', resolve));
      const refused = (await ann.join('physics').catch((e: Error) => e)) as Error;
      expect(refused.message).toBe(`${'y'.repeat(4096)}…`);
      expect((await notice).reason).toHaveLength(4097);
      ann.destroy();
    } finally {
      await srv.close();
    }
  });

  it('says a welcome that never ends is too large, before its deadline', {
    timeout: 40_000,
  }, async () => {
    // 2 MiB of one "03" that never closes, then silence: skipped to an end that never comes,
    // it had read as "no answer" at the deadline.
    let timer: NodeJS.Timeout | undefined;
    const srv = await scriptedServer((request, _send, socket) => {
      if (request.cmd !== '0') return;
      socket.write('{"cmd":"03","motd":"');
      let sent = 0;
      timer = setInterval(() => {
        if (++sent > 32 || socket.destroyed) clearInterval(timer);
        else socket.write('a'.repeat(64 * 1024));
      }, 2);
    });
    try {
      const connect = ChatClient.connect({ port: srv.port, nickname: 'ann', timeoutMs: 20_000 });
      await expect(connect).rejects.toThrow('reply too large');
    } finally {
      clearInterval(timer);
      await srv.close();
    }
  });

  it('holds a bounded history for a "101" whose top never comes', { timeout: 40_000 }, async () => {
    // The history after a "101" is held until its `top` or the answer to an RTT sent after the
    // join. A server claiming a top it never reaches, and not answering RTT, made the client
    // hold every chat it sent for good: 400,000 ran a 48 MB heap out. confab sends at most
    // 1,000 for one "101"; past 4,096 the replay ends, and what follows is live chat.
    const srv = await scriptedServer((request, send) => {
      if (request.cmd !== '0') return; // RTT unanswered
      send({ cmd: '03', serverAddress: ['127.0.0.1', 1], userCount: 1, caps: ALL_CAPS });
      send({ cmd: '101', room: 'lobby', members: ['ann'], userCount: 1, epoch: 'e', top: 1e300 });
      for (let id = 1; id <= 5000; id++)
        send({ cmd: '70', from: 'bob', msg: `old ${id}`, room: 'lobby', id, at: 1 });
    });
    const client = await ChatClient.connect({ port: srv.port, nickname: 'ann', history: true });
    try {
      const held = new Promise<number>((resolve) =>
        client.once('room', (r) => resolve(r.history.length)),
      );
      const live = new Promise<string>((resolve) =>
        client.on('chat', (m) => {
          if (m.msg === 'old 5000') resolve(m.msg);
        }),
      );
      expect(await held).toBe(4096);
      expect(await live).toBe('old 5000');
    } finally {
      client.destroy();
      await srv.close();
    }
  });
});

import fc from 'fast-check';
import { expect, it } from 'vitest';
import { ChatClient } from '../../src/client/chat-client.js';
import { Cmd, REQUEST_CODES } from '../../src/protocol/codes.js';
import { scriptedServer } from '../helpers/scripted-server.js';

// The client library against generated server messages: every code it knows and some it
// does not, each field missing or of any JSON type, including objects whose conversion to
// text throws ({"toString": ""}) at any depth. Whatever arrives, no exception may escape
// into the socket's handlers (an uncaught exception ends the process of every program
// using the library, `confab chat` included), and the calls still settle.

const POISONS: unknown[] = [
  { toString: '' },
  { toString: '', valueOf: '' },
  { __proto__: null },
  [],
  null,
];
const value: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  any: fc.oneof(
    { depthSize: 'small' },
    { arbitrary: fc.constantFrom(...POISONS), weight: 3 },
    fc.string({ maxLength: 8 }),
    fc.double(),
    fc.integer(),
    fc.boolean(),
    { arbitrary: fc.array(tie('any'), { maxLength: 3 }), weight: 3 },
    fc.dictionary(
      fc.constantFrom('toString', 'valueOf', 'room', 'id', 'from', 'msg', 'mask'),
      tie('any'),
      {
        maxKeys: 3,
      },
    ),
  ),
})).any;
const FIELDS = [
  'from',
  'msg',
  'room',
  'id',
  'at',
  'members',
  'userCount',
  'nickname',
  'users',
  'rooms',
  'messages',
  'epoch',
  'top',
  'recovered',
  'reason',
  'code',
  'message',
  'ref',
  'cid',
  'whisper',
  'oldNickname',
  'newNickname',
  'action',
  'by',
  'seconds',
  'bans',
  'serverVersion',
  'more',
  'duplicate',
  'name',
  'caps',
  'serverAddress',
  'limits',
  'resume',
  'resumed',
] as const;
/**
 * Every code a server sends but "60" (the RTT that ends each run is answered by REPLIES),
 * and one nobody knows; a code added to the protocol is generated too.
 */
const CODES = [
  ...Object.values(Cmd).filter(
    (code) => !(REQUEST_CODES as readonly string[]).includes(code) && code !== Cmd.RTT_RESPONSE,
  ),
  'zz',
];
/** What an honest server answers each request the test makes with. */
const REPLIES: Record<string, (request: { beginTime?: number }) => object> = {
  '1': () => ({ cmd: '10', users: [['ann', '127.0.0.1', 1]] }),
  '4': () => ({ cmd: '40', serverVersion: '1' }),
  '6': (request) => ({ cmd: '60', beginTime: request.beginTime }),
  '97': () => ({ cmd: '98', bans: [] }),
  '100': () => ({ cmd: '101', room: 'r', members: ['ann'], userCount: 1 }),
  '104': () => ({ cmd: '105', rooms: [] }),
  '106': () => ({ cmd: '107', room: 'lobby', epoch: 'e', messages: [], more: false }),
};
const message = fc
  .tuple(
    fc.constantFrom(...CODES),
    // Each field there or not, half the time: many at once, as real messages have them.
    fc.record(Object.fromEntries(FIELDS.map((f) => [f, value])), { requiredKeys: [] }),
  )
  .map(([cmd, fields]) => JSON.stringify({ ...fields, cmd }));

it('survives any message a server sends', { timeout: 60_000 }, async () => {
  let script: string[] = [];
  let caps = true;
  const srv = await scriptedServer((request, send, socket) => {
    if (request.cmd === '0') {
      const welcome = { cmd: '03', serverAddress: ['127.0.0.1', 1], userCount: 1 };
      const granted = ['errors', 'renames', 'whispers', 'moderation', 'rooms', 'history'];
      send(caps ? { ...welcome, caps: granted } : welcome);
      // The script first: every reply below comes after it, and a call it answered
      // leaves the reply below unclaimed.
      for (const text of script) socket.write(`${text}\n`);
    } else {
      const reply = REPLIES[request.cmd];
      if (reply !== undefined) send(reply(request));
    }
  });
  // An exception thrown in the client's socket handlers reaches no caller: collected here
  // (it would otherwise end the process) and checked after every run.
  const uncaught: unknown[] = [];
  const collect = (error: unknown) => uncaught.push(error);
  process.on('uncaughtException', collect);
  const port = srv.port;
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.array(message, { maxLength: 12 }),
        fc.boolean(),
        async (messages, granted) => {
          script = [...messages];
          uncaught.length = 0;
          caps = granted;
          const client = await ChatClient.connect({ port, nickname: 'ann', history: granted });
          for (const event of [
            'chat',
            'join',
            'leave',
            'rename',
            'room',
            'stored',
            'gap',
            'moderation',
            'server-error',
          ] as const)
            client.on(event, () => {});
          try {
            const calls: Promise<unknown>[] = [client.users(), client.version(), client.bans()];
            if (granted) calls.push(client.rooms(), client.history('lobby'), client.join('r'));
            // Watched from now on: a call the script refuses meanwhile is not left unhandled.
            const all = Promise.allSettled(calls);
            await client.rtt().catch(() => {});
            client.destroy();
            // Every call settles, answered or not, once the connection is gone.
            const settled = await all;
            expect(settled).toHaveLength(calls.length);
            expect(uncaught).toEqual([]);
          } finally {
            client.destroy();
          }
        },
      ),
      { numRuns: 300 },
    );
  } finally {
    process.off('uncaughtException', collect);
    await srv.close();
  }
});

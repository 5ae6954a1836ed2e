import { describe, expect, it } from 'vitest';
import { ChatProcess } from '../helpers/chat-process.js';
import { silentOnUsers } from '../helpers/scripted-server.js';

// Against a server that granted no extensions (the course protocol) the client sends one
// request at a time, the next once a reply comes: there, after an unanswered USERS, the chat
// typed next was shown as said but stayed in the client's outbox for ever, and the \\rtt
// after it waited for ever too (its deadline restarts while the outbox holds lines).
// Replies carry no request id, and the call given up on stays pending: it took the reply to
// the next \\users, which was then reported unanswered too (holding the lines typed after it).
describe.each([
  { server: 'a server with extensions', caps: ['errors'] },
  { server: 'a course server (no extensions)', caps: undefined },
])('confab chat when a reply never comes, against $server', ({ caps }) => {
  it('says so and goes on with the lines typed after it', { timeout: 30_000 }, async () => {
    const srv = await silentOnUsers({ caps });
    const ann = ChatProcess.start(['ann', '--port', String(srv.port)], { NO_COLOR: '1' });
    try {
      await ann.waitFor('You are the 1st user');
      ann.type('\\users');
      ann.type('hello after users');
      ann.type('\\rtt');
      // Without a deadline the chat and the RTT waited for ever behind the USERS.
      await ann.waitFor('No answer from the server', 20_000);
      await ann.waitFor('RTT: ', 5_000);
      // The first "6" is the client's probe: its answer ends the USERS call as unanswered.
      expect(srv.requests.map((r) => r.msg ?? r.cmd)).toEqual([
        '0',
        '1',
        '6',
        'hello after users',
        '6',
      ]);
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
    } finally {
      await ann.stop();
      await srv.close();
    }
  });

  it('gives a later reply to the call typed later', { timeout: 40_000 }, async () => {
    const srv = await silentOnUsers({ caps, answerFrom: 2 });
    const ann = ChatProcess.start(['ann', '--port', String(srv.port)], { NO_COLOR: '1' });
    try {
      await ann.waitFor('You are the 1st user');
      ann.type('\\users');
      await ann.waitFor('No answer from the server', 20_000);
      ann.type('\\users');
      await ann.waitFor('1 user in the room', 5_000);
      await new Promise((r) => setTimeout(r, 11_000));
      expect(ann.output.split('No answer from the server').length - 1).toBe(1);
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
    } finally {
      await ann.stop();
      await srv.close();
    }
  });
});

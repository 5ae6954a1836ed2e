import { describe, expect, it } from 'vitest';
import { ChatProcess } from '../helpers/chat-process.js';
import { type ScriptedRequest, scriptedServer, welcome } from '../helpers/scripted-server.js';

// An honest server whose replies come in order but late (a link that stalls for a while,
// a server that is slow to answer): the reply to a whisper comes 11 s after it, after
// `confab chat` has said it had no answer, and the whisper typed next is answered after it.
// The client gives a reply of a kind to the oldest pending call of that kind written less
// than 10 s ago (so that a reply that was lost does not shift every later answer by one),
// so the late "20" went to the second whisper and the second whisper's "22" to the first:
// ann was told carl does not exist and that her whisper to bob went out, the reverse of
// what the server said. Replies to WHISPER (and USERS, RENAME...) name nothing to match.
describe('confab chat when replies come in order but late', () => {
  it('shows each reply for the line it answers', { timeout: 40_000 }, async () => {
    let inOrder = Promise.resolve();
    const srv = await scriptedServer((request, send, socket) => {
      const to = (request as ScriptedRequest & { to?: string }).to;
      if (request.cmd === '0') {
        send(welcome(['errors']));
      } else if (request.cmd === '2') {
        const delay = to === 'bob' ? 11_000 : 0;
        inOrder = inOrder
          .then(() => new Promise((resolve) => setTimeout(resolve, delay)))
          .then(() => send(to === 'bob' ? { cmd: '20' } : { cmd: '22' }));
      } else if (request.cmd === '3') socket.end();
    });
    const ann = ChatProcess.start(['ann', '--port', String(srv.port)], { NO_COLOR: '1' });
    try {
      await ann.waitFor('You are the 1st user');
      ann.type('\\wh bob are you there');
      await ann.waitFor('No answer from the server', 15_000);
      ann.type('\\wh carl hello');
      await ann.waitFor('no user named', 5_000);
      await ann.waitFor('(whisper to', 5_000);
      expect(ann.output).toContain('There is no user named "bob"');
      expect(ann.output).toContain('(whisper to carl) hello');
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
    } finally {
      await ann.stop();
      await srv.close();
    }
  });

  it('does not move the room typed into when a \\join is answered after the client went on', {
    timeout: 40_000,
  }, async () => {
    const srv = await scriptedServer((request, send, socket) => {
      const room = (request as ScriptedRequest & { room?: string }).room;
      if (request.cmd === '0') {
        send(welcome(['errors', 'rooms']));
      } else if (request.cmd === '100') {
        setTimeout(() => send({ cmd: '101', room, members: ['ann'], userCount: 1 }), 11_000);
      } else if (request.cmd === '3') socket.end();
    });
    const ann = ChatProcess.start(['ann', '--port', String(srv.port)], { NO_COLOR: '1' });
    try {
      await ann.waitFor('You are the 1st user');
      ann.type('\\join physics');
      await ann.waitFor('No answer from the server to \\join', 15_000);
      await ann.waitFor(
        'You joined physics (1 user: ann). Type \\room physics to talk there.',
        5_000,
      );
      ann.type('still the lobby');
      const said = () =>
        srv.requests.find((r) => r.cmd === '7' && r.msg === 'still the lobby') as
          | (ScriptedRequest & { room?: string })
          | undefined;
      for (let i = 0; i < 100 && said() === undefined; i++)
        await new Promise((resolve) => setTimeout(resolve, 50));
      expect(said()).toBeDefined();
      expect(said()!.room ?? 'lobby').toBe('lobby');
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
    } finally {
      await ann.stop();
      await srv.close();
    }
  });
});

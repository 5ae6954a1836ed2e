import { describe, expect, it } from 'vitest';
import { ChatClient } from '../../src/client/chat-client.js';
import { ChatProcess } from '../helpers/chat-process.js';
import { startConfab } from '../helpers/servers.js';
import { TcpRelay } from '../helpers/tcp-relay.js';

describe('confab chat reconnects by itself', () => {
  it('says when it lost the connection and when it is back, rejoins its rooms, and sends what was typed meanwhile', async () => {
    const server = await startConfab();
    const relay = await TcpRelay.start(server.address.port);
    const bob = await ChatClient.connect({ port: server.address.port, nickname: 'bob' });
    const ann = ChatProcess.start(['ann', '--port', String(relay.port)]);
    try {
      await ann.waitFor('You are the 2nd user.');
      ann.type('\\join physics');
      await ann.waitFor('You joined physics');
      await bob.join('physics');
      ann.type('\\room physics');
      await ann.waitFor('You are typing into physics.');
      relay.cut();
      await ann.waitFor(/Connection lost\. Reconnecting in \d+\.\d s \(attempt 1 of 10\)\.\.\./);
      const heard = new Promise((r) => bob.once('chat', r));
      ann.type('sent while away');
      await ann.waitFor('Reconnected as ann');
      expect(await heard).toMatchObject({ from: 'ann', msg: 'sent while away', room: 'physics' });
      // Only once per room, and only for the rooms it is in.
      await ann.waitFor('Messages in physics may be missing');
      expect(ann.output.match(/Messages in lobby may be missing/g)).toHaveLength(1);
      bob.chat('welcome back', 'physics');
      await ann.waitFor(/\d\d:\d\d bob: welcome back/);
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
    } finally {
      await ann.stop();
      await bob.exit();
      await relay.stop();
      await server.stop();
    }
  });

  it('with --no-reconnect, exits when the connection is lost', async () => {
    const server = await startConfab();
    const relay = await TcpRelay.start(server.address.port);
    const ann = ChatProcess.start(['ann', '--port', String(relay.port), '--no-reconnect']);
    try {
      await ann.waitFor('You are the 1st user.');
      relay.cut();
      expect(await ann.exited).toBe(1);
      expect(ann.output).toContain('The server closed the connection.');
      expect(ann.output).not.toContain('Reconnecting');
    } finally {
      await ann.stop();
      await relay.stop();
      await server.stop();
    }
  });
});

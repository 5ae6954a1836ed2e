import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { ChatProcess } from '../helpers/chat-process.js';

/**
 * A server that joins the client, answers RTT, and never answers USERS: a
 * hostile server, or an honest one that lost the reply (a reply over the
 * client's frame limit is dropped, and its call stays pending). It records
 * every request it gets.
 */
async function silentOnUsers(): Promise<{
  port: number;
  requests: { cmd: string; msg?: string }[];
  close(): Promise<void>;
}> {
  const sockets = new Set<net.Socket>();
  const requests: { cmd: string; msg?: string }[] = [];
  const srv = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    const send = (value: object) => socket.write(`${JSON.stringify(value)}\n`);
    let buffered = '';
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        const request = JSON.parse(line) as { cmd: string; msg?: string; beginTime?: number };
        requests.push(request);
        if (request.cmd === '0') send({ cmd: '03', serverAddress: ['127.0.0.1', 1], userCount: 1 });
        else if (request.cmd === '6') send({ cmd: '60', beginTime: request.beginTime });
        else if (request.cmd === '3') socket.end();
        // '1' (USERS): never answered.
      }
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    port: (srv.address() as net.AddressInfo).port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        srv.close(() => resolve());
      }),
  };
}

// Against a server that granted no extensions (the course protocol) the client sends one
// request at a time, the next once a reply comes: after an unanswered USERS the chat typed
// next was shown as said but stayed in the client's outbox for ever, and the \\rtt after it
// waited for ever too (its deadline restarts while the outbox holds lines).
describe('confab chat, course server, when a reply never comes', () => {
  it('says so and goes on with the lines typed after it', { timeout: 30_000 }, async () => {
    const srv = await silentOnUsers();
    const ann = ChatProcess.start(['ann', '--port', String(srv.port)], { NO_COLOR: '1' });
    try {
      await ann.waitFor('You are the 1st user');
      ann.type('\\users');
      ann.type('hello after users');
      ann.type('\\rtt');
      // Without a deadline the chat and the RTT waited for ever behind the USERS.
      await ann.waitFor('No answer from the server', 20_000);
      await ann.waitFor('RTT: ', 5_000);
      expect(srv.requests.map((r) => r.msg ?? r.cmd)).toEqual(['0', '1', 'hello after users', '6']);
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
    } finally {
      await ann.stop();
      await srv.close();
    }
  });
});

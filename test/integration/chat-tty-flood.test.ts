import net from 'node:net';
import { afterAll, expect, it } from 'vitest';
import { CLI } from '../helpers/servers.js';
import { privateTmux } from '../helpers/tmux.js';

// `confab chat` in a real terminal (a private tmux server) while a server floods it with
// chats, as a hostile one can, or the course server relaying a member's script. Ctrl+D
// left the process running for good: readline's close paused stdin, and the next line
// shown redrew the prompt, which resumes it, so stdin held the event loop open. Before it
// got there, each read of the socket was a burst of lines written one by one to the
// terminal, and the Ctrl+D waited seconds to be read.

const { tmux, screen, newChat, kill } = privateTmux('confab-flood');

async function until(check: () => boolean, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}; screen:\n${screen()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

afterAll(kill);

it('leaves on Ctrl+D while a server floods it', { timeout: 45_000 }, async () => {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.once('data', () => {
      socket.write(
        `${JSON.stringify({ cmd: '03', serverAddress: ['127.0.0.1', 1], userCount: 1, caps: ['errors'] })}\n`,
      );
      let sent = 0;
      // Bounded, and far more than the test takes to run.
      const pump = () => {
        while (sent < 2_000_000 && !socket.destroyed) {
          sent++;
          if (!socket.write(`{"cmd":"70","from":"bob","msg":"flood ${sent}"}\n`)) {
            socket.once('drain', pump);
            return;
          }
        }
      };
      pump();
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  try {
    await newChat(
      '-x',
      '100',
      '-y',
      '20',
      `${process.execPath} ${CLI} chat ann --port ${port} --no-reconnect; echo "EXITED $?"; sleep 60`,
    );
    await until(() => /bob: flood \d{4,}/.test(screen()), 'the flood', 15_000);
    tmux('send-keys', '-t', 'chat', 'C-d');
    // The status is printed once the client's process has ended; it never was.
    await until(() => screen().includes('EXITED'), 'the client to exit', 20_000);
    expect(screen()).toContain('EXITED 0');
  } finally {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => srv.close(() => resolve()));
  }
});

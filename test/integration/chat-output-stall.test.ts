import { spawn } from 'node:child_process';
import { expect, it } from 'vitest';
import { ChatClient } from '../../src/client/chat-client.js';
import { scriptedServer } from '../helpers/scripted-server.js';
import { CLI, stopProcess } from '../helpers/servers.js';

// `confab chat ann | tee log`, or a script reading its output slowly: writes to a pipe queue
// in the process's memory when the reader falls behind, and the client read from the server
// as fast as it sent. A server flooding chats (a hostile one; the course server relays
// whatever its users send) made the client hold every line it could not print yet, without
// bound: 300,000 chats held 188 MB. The client now stops reading from the server while its
// output is behind, and the flood waits in the network instead.
const CHATS = 16_384;
const TEXT = 'x'.repeat(4000); // 64 MB of chat in all, more than the 40 MB heap given below

it('stops reading from a flooding server while its output is not read', {
  timeout: 60_000,
}, async () => {
  let sent = 0;
  let lastProgress = Date.now();
  let done = false;
  const srv = await scriptedServer((request, send, socket) => {
    if (request.cmd === '0') {
      send({ cmd: '03', serverAddress: ['127.0.0.1', 1], userCount: 1, caps: ['errors'] });
    } else if (request.cmd === '7') {
      // The flood starts once the test has stopped reading the client's output.
      const pump = () => {
        while (sent < CHATS) {
          const ok = socket.write(`{"cmd":"70","from":"bob","msg":"${sent} ${TEXT}"}\n`);
          sent++;
          lastProgress = Date.now();
          if (!ok) {
            socket.once('drain', pump);
            return;
          }
        }
        socket.write('{"cmd":"70","from":"bob","msg":"the end"}\n');
        done = true;
      };
      pump();
    } else if (request.cmd === '3') socket.end();
  });
  const port = srv.port;
  // A small heap: a client that holds the flood in memory runs out of it and dies.
  const child = spawn(
    process.execPath,
    ['--max-old-space-size=40', CLI, 'chat', 'ann', '--port', String(port), '--no-reconnect'],
    {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1' },
    },
  );
  let tail = '';
  let errors = '';
  child.stdout.setEncoding('utf8');
  child.stderr.on('data', (d: Buffer) => {
    errors += d.toString();
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  const stdout = child.stdout;
  const waitForOutput = (text: string) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (tail.includes(text)) {
          stdout.off('data', onData);
          resolve();
        }
      };
      const onData = (d: string) => {
        tail = (tail + d).slice(-8192);
        check();
      };
      stdout.on('data', onData);
      void exited.then((code) =>
        reject(new Error(`exited with ${code}: ${errors.slice(0, 2000)}`)),
      );
      check();
    });
  try {
    await waitForOutput('Type \\help for commands.');
    stdout.pause();
    child.stdin.write('go\n');
    // Until the server has written everything, is stuck (the client stopped reading), or the
    // client has died: only how long the test waits for the flood depends on time.
    let gone = false;
    void exited.then(() => {
      gone = true;
    });
    while (!done && !gone && Date.now() - lastProgress < 2000)
      await new Promise((r) => setTimeout(r, 50));
    const shown = waitForOutput('bob: the end');
    stdout.resume();
    await shown;
    expect(sent).toBe(CHATS);
    child.stdin.write('\\exit\n');
    expect(await exited).toBe(0);
    expect(errors).toBe('');
  } finally {
    await stopProcess(child);
    await srv.close();
  }
});

it('leaves with exit() while reading is paused', { timeout: 20_000 }, async () => {
  // Paused behind a flood it has not read, the client cannot see the server close after
  // EXIT (the close comes after the flood): exit() waited for ever.
  const srv = await scriptedServer((request, send, socket) => {
    if (request.cmd === '0') {
      send({ cmd: '03', serverAddress: ['127.0.0.1', 1], userCount: 1, caps: ['errors'] });
      for (let i = 0; i < 4096; i++) send({ cmd: '70', from: 'bob', msg: TEXT });
    } else if (request.cmd === '3') socket.end();
  });
  try {
    const client = await ChatClient.connect({ port: srv.port, nickname: 'ann' });
    client.pauseReading();
    await client.exit();
    expect(client.isClosed).toBe(true);
    // EXIT was said, and reaches the server after the client has closed its end.
    await expect.poll(() => srv.requests.map((r) => r.cmd)).toEqual(['0', '3']);
  } finally {
    await srv.close();
  }
});

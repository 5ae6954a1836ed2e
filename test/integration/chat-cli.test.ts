import { execFileSync } from 'node:child_process';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ChatClient, ChatClientError } from '../../src/client/chat-client.js';
import { ChatProcess } from '../helpers/chat-process.js';
import { join } from '../helpers/raw-client.js';
import {
  CLI,
  freePort,
  type SeedServer,
  startConfab,
  startSeed,
  withoutSeed,
} from '../helpers/servers.js';

interface Target {
  name: string;
  /** True when this target cannot run here. */
  skip: boolean;
  start(): Promise<{ port: number; stop(): Promise<void> }>;
}

const targets: Target[] = [
  {
    name: 'confab',
    skip: false,
    start: async () => {
      const s = await startConfab();
      return { port: s.address.port, stop: () => s.stop() };
    },
  },
  {
    name: 'the course server',
    skip: withoutSeed(),
    start: async () => {
      const s: SeedServer = await startSeed();
      return { port: s.port, stop: () => s.stop() };
    },
  },
];

/**
 * A member for the tests to watch from. The course server fails a CONNECT while a user who
 * just left is still in its table (it writes the join notice to that closed socket and gives
 * up on the new one), so against it a closed connection is tried again, for up to 5 s: on a
 * loaded machine its leaving thread can take more than a second to remove that user.
 */
async function watcher(port: number, nickname: string): Promise<ChatClient> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await ChatClient.connect({ port, nickname });
    } catch (err) {
      if (attempt >= 25 || !(err instanceof ChatClientError) || err.kind !== 'closed') throw err;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

for (const target of targets) {
  describe.skipIf(target.skip)(`confab chat against ${target.name}`, () => {
    let server: { port: number; stop(): Promise<void> };
    // A server per test: the course server can wedge (a thread that fails while it holds
    // its lock), and one test's leavers would then fail the next test's CONNECT.
    beforeEach(async () => {
      server = await target.start();
    });
    afterEach(async () => {
      await server.stop();
    });

    it('runs every command as a user types it', async () => {
      const bob = await watcher(server.port, 'bob');
      const heard: string[] = [];
      bob.on('chat', (m) => heard.push(`${m.from}:${m.msg}`));
      const ann = ChatProcess.start(['ann', '--port', String(server.port)]);
      try {
        await ann.waitFor(`Connected to 127.0.0.1:${server.port} as ann. You are the 2nd user.`);
        ann.type('hello bob');
        await ann.waitFor(/\d\d:\d\d ann: hello bob/);
        ann.type('\\users');
        await ann.waitFor('2 users in the room:');
        expect(ann.output).toMatch(/ {2}bob 127\.0\.0\.1:\d+/);
        ann.type('\\wh bob just you');
        await ann.waitFor('(whisper to bob) just you');
        ann.type('\\wh nobody x');
        await ann.waitFor('There is no user named "nobody".');
        ann.type('\\wh ann x');
        await ann.waitFor("You can't whisper to yourself.");
        ann.type('\\rtt');
        await ann.waitFor(/RTT: \d+\.\d{3} ms/);
        ann.type('\\version');
        await ann.waitFor('Server version 1, client confab');
        ann.type('\\rename bob');
        await ann.waitFor('The nickname "bob" is taken.');
        ann.type('\\rename anna');
        await ann.waitFor('You are now known as anna.');
        ann.type('\\dance');
        await ann.waitFor(
          'Unknown command \\dance. Type \\help for the list, or start the line with a space to send it as chat.',
        );
        ann.type('\\help');
        await ann.waitFor('\\wh <nickname> <text>');
        bob.chat('hi there');
        await ann.waitFor(/\d\d:\d\d bob: hi there/);
        if (target.name === 'confab') {
          // Against confab the client negotiated "renames", so others' renames show.
          await bob.rename('bobby');
          await ann.waitFor(/-- bob is now known as bobby/);
          await bob.rename('bob');
        }
        await bob.whisper('anna', 'psst');
        await ann.waitFor(/bob: psst/);
        const left = new Promise((r) => bob.once('leave', r));
        // As IRC users quit: the message is not sent, and the client says so.
        ann.type('/quit see you all');
        expect(await ann.exited).toBe(0);
        expect(await left).toEqual({ nickname: 'anna', userCount: 1, room: 'lobby' });
        expect(ann.output).toContain('Quit messages are not sent');
        expect(heard).toEqual(['ann:hello bob', 'ann:just you']);
        // Output to a pipe carries no color codes.
        expect(ann.output).not.toContain('\u001b[');
        // The unknown command sent nothing: bob heard only the two messages.
      } finally {
        await ann.stop();
        await bob.exit();
      }
    });

    it('says clearly when the nickname is taken', async () => {
      const bob = await watcher(server.port, 'taken');
      const dup = ChatProcess.start(['taken', '--port', String(server.port)]);
      expect(await dup.exited).toBe(1);
      expect(dup.output).toContain('The nickname "taken" is taken');
      await bob.exit();
    });

    it('says so when disconnected for a banned word, and exits non-zero', async () => {
      const bob = await watcher(server.port, 'bob2');
      const rude = ChatProcess.start(['rude', '--port', String(server.port)]);
      await rude.waitFor('You are the');
      rude.type('well, I hate professor X');
      expect(await rude.exited).toBe(1);
      expect(rude.output).toMatch(/banned word/);
      await bob.exit();
    });

    it('sends EXIT when stdin ends (Ctrl+D)', async () => {
      const bob = await watcher(server.port, 'bob3');
      const left = new Promise((r) => bob.once('leave', r));
      const quick = ChatProcess.start(['quick', '--port', String(server.port)]);
      await quick.waitFor('You are the');
      quick.child.stdin!.end();
      expect(await quick.exited).toBe(0);
      expect(await left).toMatchObject({ nickname: 'quick' });
      await bob.exit();
    });
  });
}

describe('confab chat failures', () => {
  it('says a chat or whisper longer than the server takes is not sent, rather than show it as said', async () => {
    const server = await startConfab({ 'max-message': '10' });
    const bob = await ChatClient.connect({ port: server.address.port, nickname: 'bob' });
    const heard: string[] = [];
    bob.on('chat', (m: { msg: string }) => heard.push(m.msg));
    try {
      const ann = ChatProcess.start(['ann', '--port', String(server.address.port)]);
      await ann.waitFor('You are the 2nd user');
      ann.type('twelve chars');
      await ann.waitFor('Not sent: the message is 12 characters long; the most is 10.');
      ann.type('\\wh bob eleven char');
      await ann.waitFor('Not sent: the message is 11 characters long; the most is 10.');
      ann.type('ten chars!');
      await ann.waitFor(/ann: ten chars!/);
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
      expect(heard).toEqual(['ten chars!']);
      // Neither was shown as said, nor refused by the server after.
      expect(ann.output).not.toMatch(/ann: twelve chars|whisper to bob|too long/);
    } finally {
      await bob.exit();
      await server.stop();
    }
  });

  it('does not call its own nickname, in other letter case, taken', async () => {
    const server = await startConfab();
    try {
      const ann = ChatProcess.start(['ann', '--port', String(server.address.port)]);
      await ann.waitFor('You are the 1st user');
      ann.type('\\rename Ann');
      await ann.waitFor('"Ann" is your own nickname to the server');
      expect(ann.output).not.toContain('is taken');
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
    } finally {
      await server.stop();
    }
  });

  it('says once why it was disconnected for a banned word in a whisper', async () => {
    const server = await startConfab();
    try {
      const bob = await ChatClient.connect({ port: server.address.port, nickname: 'bob' });
      const rude = ChatProcess.start(['rude', '--port', String(server.address.port)]);
      await rude.waitFor('You are the');
      rude.type('\\wh bob I hate professor X');
      expect(await rude.exited).toBe(1);
      expect(rude.output).toContain('You were disconnected: your message contained a banned word.');
      // Not again as the whisper's own failure, the server's words after the client's.
      expect(rude.output.match(/banned word/g)).toHaveLength(1);
      await bob.exit();
    } finally {
      await server.stop();
    }
  });

  it('with --no-reconnect, reports a full room at once', async () => {
    const server = await startConfab({ 'max-users': '1' });
    try {
      const a = await join(server.address.port, 'a');
      const p = ChatProcess.start(['b', '--port', String(server.address.port), '--no-reconnect']);
      expect(await p.exited).toBe(1);
      expect(p.output).toContain('The chat room is full.');
      a.close();
    } finally {
      await server.stop();
    }
  });

  it('waits for a place in a full room instead of giving up at once', async () => {
    const server = await startConfab({ 'max-users': '1' });
    try {
      const a = await join(server.address.port, 'a');
      const p = ChatProcess.start(['b', '--port', String(server.address.port)]);
      await p.waitFor('trying again in 1 s (1 of 5');
      a.sendPy({ cmd: '3' });
      await a.expectClose();
      await p.waitFor('You are the 1st user');
      p.type('\\exit');
      expect(await p.exited).toBe(0);
      expect(p.output).not.toContain('The chat room is full.');
    } finally {
      await server.stop();
    }
  });

  // Flood control answers a CONNECT past its address's budget with "02" too, the code of a
  // full room: a user who started the client just after a burst of connections (a script,
  // a class behind one NAT) was told the room was full and left, where a moment's wait lets
  // the same CONNECT in.
  it('joins once its address may CONNECT again, when a fresh start finds the budget spent', async () => {
    // Ten CONNECTs at once, then one per five seconds (a tenth of --rate-limit): ten joins
    // slowed by a busy machine must not earn the client a CONNECT.
    const server = await startConfab({
      'rate-limit': '2',
      'rate-burst': '10',
      'max-conns-per-ip': '10',
    });
    try {
      const port = server.address.port;
      for (let i = 0; i < 10; i++) {
        const c = await join(port, `burst${i}`);
        c.sendPy({ cmd: '3' });
        await c.expectClose();
      }
      const p = ChatProcess.start(['ann', '--port', String(port)]);
      await p.waitFor('You are the 1st user', 20_000);
      expect(p.output).toContain('full or busy; trying again');
      expect(p.output).not.toContain('The chat room is full.');
      p.type('\\exit');
      expect(await p.exited).toBe(0);
    } finally {
      await server.stop();
    }
  }, 30_000);

  it('reports a refused connection', async () => {
    const port = await freePort();
    const p = ChatProcess.start(['a', '--port', String(port)]);
    expect(await p.exited).toBe(1);
    expect(p.output).toContain(`Could not connect to 127.0.0.1:${port}: connection refused`);
  });

  it('with --no-reconnect, says the server went away and exits 1', async () => {
    const server = await startConfab();
    const p = ChatProcess.start(['a', '--port', String(server.address.port), '--no-reconnect']);
    await p.waitFor('You are the');
    await server.stop();
    expect(await p.exited).toBe(1);
    // Said once: not first as a passing reason, then again as the end.
    expect(p.output.match(/disconnected: the server is shutting down/gi)).toHaveLength(1);
  });

  it('leaves quietly when the reader of its output goes away', async () => {
    const server = await startConfab();
    try {
      const port = server.address.port;
      const bob = await ChatClient.connect({ port, nickname: 'bob' });
      const p = ChatProcess.start(['ann', '--port', String(port)]);
      await p.waitFor('You are the 2nd user');
      const left = new Promise((resolve) => bob.once('leave', resolve));
      // As `confab chat ann | head -3` once head has read its lines.
      p.child.stdout!.destroy();
      for (let i = 0; i < 5; i++) bob.chat(`line ${i}`);
      expect(await p.exited).toBe(0);
      expect(await left).toMatchObject({ nickname: 'ann' });
      expect(p.output).not.toMatch(/EPIPE|Error/);
      await bob.exit();
    } finally {
      await server.stop();
    }
  });

  it('names the variable a bad port came from, not a flag nobody gave', async () => {
    // The server's own variable, exported in the shell the client is started from.
    const fromEnv = ChatProcess.start(['a'], { CONFAB_PORT: '0' });
    expect(await fromEnv.exited).toBe(2);
    expect(fromEnv.output).toContain(
      'confab chat: CONFAB_PORT (from the environment; --port overrides it) must be a number from 1 to 65535, not "0"',
    );
    const fromFlag = ChatProcess.start(['a', '--port', '70000'], { CONFAB_PORT: '0' });
    expect(await fromFlag.exited).toBe(2);
    expect(fromFlag.output).toContain(
      'confab chat: --port must be a number from 1 to 65535, not "70000"',
    );
  });

  it('shows usage for a missing nickname', () => {
    let status = 0;
    let stderr = '';
    try {
      execFileSync(process.execPath, [CLI, 'chat'], { stdio: 'pipe' });
    } catch (err) {
      status = (err as { status: number }).status;
      stderr = String((err as { stderr: Buffer }).stderr);
    }
    expect(status).toBe(2);
    expect(stderr).toContain('Usage: confab chat <nickname>');
  });
});

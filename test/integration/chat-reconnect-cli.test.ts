import type net from 'node:net';
import { describe, expect, it } from 'vitest';
import { ChatClient } from '../../src/client/chat-client.js';
import { ChatProcess } from '../helpers/chat-process.js';
import { until } from '../helpers/cluster.js';
import { addTeacher, makeOperator } from '../helpers/operator-server.js';
import { join } from '../helpers/raw-client.js';
import { scriptedServer, welcome } from '../helpers/scripted-server.js';
import { startConfab } from '../helpers/servers.js';
import { TcpRelay } from '../helpers/tcp-relay.js';

describe('confab chat reconnects by itself', () => {
  it('says why the server closed the connection when it gives a passing reason, then reconnects', async () => {
    const server = await startConfab({ history: 'off' });
    const ann = ChatProcess.start(['ann', '--port', String(server.address.port)]);
    try {
      await ann.waitFor('You are the 1st user.');
      await server.stop();
      await ann.waitFor(
        /Disconnected: the server is shutting down\.\n.*Connection lost\. Reconnecting in/,
      );
    } finally {
      await ann.stop();
    }
  });

  it('says when it lost the connection and when it is back, rejoins its rooms, and sends what was typed meanwhile', async () => {
    const server = await startConfab({ history: 'off' });
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
      // Held until the line typed meanwhile is shown: it is typed while the client is away.
      relay.hold();
      relay.cut();
      // It never gives up while the user waits: no "of N".
      await ann.waitFor(/Connection lost\. Reconnecting in \d+\.\d s \(attempt 1\)\.\.\./);
      const heard = new Promise((r) => bob.once('chat', r));
      ann.type('sent while away');
      // Shown at once, and marked: it waits for the connection.
      await ann.waitFor(
        /\d\d:\d\d ann: sent while away \(waiting for the connection: sent once it is back\)/,
      );
      relay.release();
      await ann.waitFor('Reconnected as ann');
      expect(await heard).toMatchObject({ from: 'ann', msg: 'sent while away', room: 'physics' });
      // Only once per room, and only for the rooms it is in.
      await ann.waitFor('Messages in physics may be missing: the server keeps no history.');
      expect(ann.output.match(/Messages in lobby may be missing/g)).toHaveLength(1);
      bob.chat('welcome back', 'physics');
      await ann.waitFor(/\d\d:\d\d bob: welcome back/);
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
    } finally {
      await ann.stop();
      await bob.exit();
      await relay.close();
      await server.stop();
    }
  });

  it('says that operator status did not come back with a new session', async () => {
    const server = await startConfab({ history: 'off' });
    addTeacher(server);
    const relay = await TcpRelay.start(server.address.port);
    const ann = ChatProcess.start(['ann', '--port', String(relay.port)]);
    try {
      await ann.waitFor('You are the 1st user.');
      ann.type('\\oper teacher sesame');
      await ann.waitFor('You are now operator teacher.');
      relay.cut();
      await ann.waitFor('Reconnected as ann (a new session');
      await ann.waitFor('You are no longer operator teacher: \\oper again.');
      // Ended by a reload instead: said once, and not again at a new session.
      ann.type('\\oper teacher sesame');
      await ann.waitFor(/You are now operator teacher\.[\s\S]*You are now operator teacher\./);
      server.chat.reconfigure({ operators: [] });
      await ann.waitFor("You are no longer operator teacher: the server's operators list changed.");
      relay.cut();
      await ann.waitFor(
        /Reconnected as ann \(a new session[\s\S]*Reconnected as ann \(a new session/,
      );
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
      expect(ann.output.match(/You are no longer operator teacher/g)).toHaveLength(2);
    } finally {
      await ann.stop();
      await relay.close();
      await server.stop();
    }
  });

  it('says which typed lines were given up with a room it could not join again', async () => {
    const server = await startConfab({ history: 'memory', 'room-capacity': '1' });
    const relay = await TcpRelay.start(server.address.port);
    const ann = ChatProcess.start(['ann', '--port', String(relay.port)]);
    try {
      await ann.waitFor('You are the 1st user.');
      ann.type('\\join r2');
      await ann.waitFor('You are typing into r2.');
      // Lost on the way: never stored, never acknowledged.
      const dropped = relay.arm('lost in r2', 'drop');
      ann.type('lost in r2');
      await dropped;
      relay.hold();
      relay.cut();
      await ann.waitFor('Connection lost.');
      // The room's one place is taken while ann is away.
      const bob = await ChatClient.connect({ port: server.address.port, nickname: 'bob' });
      await until(
        'bob in r2',
        async () => {
          try {
            await bob.join('r2');
            return true;
          } catch {
            return false;
          }
        },
        10_000,
      );
      relay.release();
      await ann.waitFor('You are no longer in r2');
      await ann.waitFor('Not sent to r2: lost in r2');
      await bob.exit();
    } finally {
      await ann.stop();
      await relay.close();
      await server.stop();
    }
  });

  it('says it was kicked when the kick came while its connection was dead, and does not come back', async () => {
    const server = await startConfab({ history: 'memory' });
    const relay = await TcpRelay.start(server.address.port);
    const ann = ChatProcess.start(['ann', '--port', String(relay.port)]);
    const op = await join(server.address.port, 'op', { caps: ['errors', 'moderation'] });
    try {
      await ann.waitFor(/You are the \d\w+ user\./);
      await makeOperator(server, op);
      // The server keeps a connection that reads nothing; the client's reconnect waits.
      relay.hold();
      relay.strand();
      await ann.waitFor('Connection lost.');
      op.sendPy({ cmd: '94', nickname: 'ann', reason: 'spam' });
      await op.expect('99');
      relay.release();
      await ann.waitFor('kicked by teacher: spam');
      expect(await ann.exited).toBe(1);
      expect(server.chat.find('ann')).toBeUndefined();
    } finally {
      op.close();
      await ann.stop();
      await relay.close();
      await server.stop();
    }
  });

  it('says why the server refuses its reconnects when someone took its nickname meanwhile', async () => {
    const server = await startConfab({ history: 'off' });
    const relay = await TcpRelay.start(server.address.port);
    const ann = ChatProcess.start(['ann', '--port', String(relay.port)]);
    try {
      await ann.waitFor('You are the 1st user.');
      relay.hold();
      relay.cut();
      await ann.waitFor('Connection lost.');
      const thief = await join(server.address.port, 'ann');
      relay.release();
      await ann.waitFor(
        'The nickname "ann" is taken (perhaps by the lost connection, not yet gone); still trying.',
      );
      thief.sendPy({ cmd: '3' });
      await thief.expectClose();
      await ann.waitFor('Reconnected as ann', 30_000);
      // Once for the outage, not once per attempt.
      expect(ann.output.match(/The nickname "ann" is taken/g)).toHaveLength(1);
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
    } finally {
      await ann.stop();
      await relay.close();
      await server.stop();
    }
  }, 45_000);

  it('says once why its reconnects fail when the server answers them with a welcome too large', async () => {
    // The first connection is welcomed and then dropped; every later one gets a "03" past the
    // client's frame limit. The client tried on with no word of why after its third attempt.
    let connects = 0;
    const srv = await scriptedServer((request, send, socket) => {
      if (request.cmd !== '0') return;
      if (++connects === 1) {
        // "errors": a server that explains its closes, which the client reconnects to.
        send(welcome(['errors']));
        setTimeout(() => socket.destroy(), 200);
      } else socket.write(`{"cmd":"03","motd":"${'a'.repeat(1100 * 1024)}`);
    });
    const ann = ChatProcess.start(['ann', '--port', String(srv.port)]);
    try {
      await ann.waitFor('You are the 1st user.');
      await ann.waitFor('Connection lost.');
      await ann.waitFor('The last attempt failed: reply too large; still trying.', 10_000);
      // Attempts 1 to 4 made, and the failures of the first three told at the next.
      await until('a fourth reconnect', () => connects >= 5, 20_000);
      expect(ann.output.match(/The last attempt failed/g)).toHaveLength(1);
    } finally {
      await ann.stop();
      await srv.close();
    }
  }, 45_000);

  it('says why a connection just restored was lost again, once, and cuts a long reason short', async () => {
    // Every connection is welcomed, then closed with a long reason a moment later: each
    // reconnect "succeeds", so no attempt fails, and past the third no line said anything.
    const reason = `going away ${'x'.repeat(5000)}`;
    let connects = 0;
    const srv = await scriptedServer((request, send, socket) => {
      if (request.cmd !== '0') return;
      connects++;
      send(welcome(['errors']));
      setTimeout(() => {
        send({ cmd: '90', code: 3001, message: reason });
        socket.end();
      }, 150);
    });
    const ann = ChatProcess.start(['ann', '--port', String(srv.port)]);
    try {
      await ann.waitFor('You are the 1st user.');
      await ann.waitFor(
        /The connection was lost again: going away x+\.\.\.\(\+\d+\); still trying\./,
        15_000,
      );
      await until('a sixth connection', () => connects >= 6, 25_000);
      expect(ann.output.match(/The connection was lost again/g)).toHaveLength(1);
      // The first loss is said as it came; the ones after, within the same outage, are that
      // one line. The restores are said with the attempts' own lines, the first three.
      expect(ann.output.match(/Disconnected: going away/g)).toHaveLength(1);
      expect(ann.output.match(/Reconnected as ann/g)).toHaveLength(3);
      // Cut short wherever the client shows it: 4,096 characters at most.
      expect(ann.output).not.toContain('x'.repeat(4100));
    } finally {
      await ann.stop();
      await srv.close();
    }
  }, 45_000);

  it('says it is back after an outage longer than the attempts it shows', async () => {
    // Down for 4 s: the attempts past the third are not shown, the reconnect is.
    let down = false;
    let connects = 0;
    let first: net.Socket | undefined;
    const srv = await scriptedServer((request, send, socket) => {
      if (request.cmd !== '0') return;
      connects++;
      if (down) {
        socket.destroy();
        return;
      }
      first ??= socket;
      send(welcome(['errors']));
    });
    const ann = ChatProcess.start(['ann', '--port', String(srv.port)]);
    try {
      await ann.waitFor('You are the 1st user.');
      down = true;
      first!.end(`${JSON.stringify({ cmd: '90', code: 3001, message: 'restarting' })}\n`);
      await new Promise((r) => setTimeout(r, 4000));
      down = false;
      await ann.waitFor('Reconnected as ann', 15_000);
      // Past the third attempt, whose lines are shown.
      expect(connects).toBeGreaterThan(4);
      expect(ann.output).toContain('Disconnected: restarting.');
    } finally {
      await ann.stop();
      await srv.close();
    }
  }, 30_000);

  it('when it stops, says which typed lines the server never acknowledged', async () => {
    const server = await startConfab({ history: 'memory' });
    const relay = await TcpRelay.start(server.address.port);
    const ann = ChatProcess.start(['ann', '--port', String(relay.port), '--no-reconnect']);
    try {
      await ann.waitFor('You are the 1st user.');
      ann.type('this one arrives');
      await ann.waitFor(/\d\d:\d\d ann: this one arrives/);
      // Printed as typed, before its "71": the answer to a later request tells it came.
      ann.type('\\rtt');
      await ann.waitFor(/RTT: \d/);
      // Its "71" held back: an action, listed as it would be typed again.
      relay.holdReplies();
      ann.type('/me waves');
      await ann.waitFor(/\d\d:\d\d \* ann waves/);
      const dropped = relay.arm('lost on the way', 'drop');
      ann.type('lost on the way');
      await dropped;
      relay.cut();
      expect(await ann.exited).toBe(1);
      expect(ann.output).toContain('Not sent: /me waves\n');
      expect(ann.output).toContain('Not sent: lost on the way');
      expect(ann.output).not.toContain('Not sent: this one arrives');
    } finally {
      await ann.stop();
      await relay.close();
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
      await relay.close();
      await server.stop();
    }
  });
});

describe('confab chat with history', () => {
  it('shows the last messages on join, marked, and older ones with \\history', async () => {
    const server = await startConfab({ history: 'memory', 'rate-limit': '0' });
    const bob = await ChatClient.connect({
      port: server.address.port,
      nickname: 'bob',
      history: true,
    });
    let acks = 0;
    bob.on('stored', () => acks++);
    for (let i = 1; i <= 55; i++) bob.chat(`old ${i}`);
    const deadline = Date.now() + 10_000;
    while (acks < 55 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    const ann = ChatProcess.start(['ann', '--port', String(server.address.port)]);
    try {
      await ann.waitFor(/\d\d:\d\d \(history\) bob: old 55\n/);
      expect(ann.output).toMatch(/\d\d:\d\d \(history\) bob: old 6\n/);
      expect(ann.output).not.toMatch(/bob: old 5\n/);
      ann.type('\\history 3');
      await ann.waitFor('Earlier in lobby:');
      await ann.waitFor(
        /\(history\) bob: old 3\n.*\(history\) bob: old 4\n.*\(history\) bob: old 5\n/s,
      );
      ann.type('\\history');
      await ann.waitFor(/\(history\) bob: old 2\n.*That is the beginning of lobby\./s);
      ann.type('\\history');
      await ann.waitFor('No earlier messages in lobby.');
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
    } finally {
      await ann.stop();
      await bob.exit();
      await server.stop();
    }
  });

  it('after a cut mid-stream, shows each of the messages sent meanwhile exactly once, in order', async () => {
    const N = 100;
    const server = await startConfab({ history: 'memory', 'rate-limit': '0' });
    const relay = await TcpRelay.start(server.address.port);
    const bob = await ChatClient.connect({
      port: server.address.port,
      nickname: 'bob',
      history: true,
    });
    const ann = ChatProcess.start(['ann', '--port', String(relay.port)]);
    try {
      await ann.waitFor('You are the 2nd user.');
      for (let i = 1; i <= N / 2; i++) bob.chat(`m ${i}`);
      await ann.waitFor(`bob: m ${N / 2}\n`);
      // What bob says next is stored, and lost on its way to ann.
      relay.holdReplies();
      let acks = 0;
      bob.on('stored', () => acks++);
      for (let i = N / 2 + 1; i <= N; i++) bob.chat(`m ${i}`);
      const deadline = Date.now() + 10_000;
      while (acks < N / 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      relay.cut();
      await ann.waitFor('Reconnected as ann');
      await ann.waitFor(`bob: m ${N}\n`);
      const shown = [...ann.output.matchAll(/^\d\d:\d\d bob: m (\d+)$/gm)].map((m) => Number(m[1]));
      expect(shown).toEqual(Array.from({ length: N }, (_, i) => i + 1));
      expect(ann.output).not.toContain('may be missing');
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
    } finally {
      await ann.stop();
      await bob.exit();
      await relay.close();
      await server.stop();
    }
  });
});

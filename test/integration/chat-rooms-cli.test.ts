import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { ChatClient } from '../../src/client/chat-client.js';
import { ChatProcess } from '../helpers/chat-process.js';
import { startConfab, startSeed, withoutSeed } from '../helpers/servers.js';

describe('confab chat rooms', () => {
  it('joins, switches, chats, lists and leaves rooms; other rooms print with their name', async () => {
    const server = await startConfab();
    const port = String(server.address.port);
    const bob = await ChatClient.connect({ port: server.address.port, nickname: 'bob' });
    const ann = ChatProcess.start(['ann', '--port', port]);
    try {
      await ann.waitFor('You are the 2nd user.');
      ann.type('\\join physics');
      // As in IRC and the web app: the room joined is the one typed into.
      await ann.waitFor('You joined physics (1 user: ann). You are typing into physics.');
      ann.type('\\room lobby');
      await ann.waitFor('You are typing into lobby.');
      await bob.join('Physics');
      await ann.waitFor(/\[physics\] --> bob joined \(2 users\)/);
      ann.type('\\room PHYSICS');
      await ann.waitFor(/You are typing into lobby\.[\s\S]*You are typing into physics\./);
      const heard = new Promise((r) => bob.once('chat', r));
      ann.type('about atoms');
      expect(await heard).toMatchObject({ from: 'ann', msg: 'about atoms', room: 'physics' });
      // Typed into physics, the lobby is the other room now.
      bob.chat('in the lobby');
      await ann.waitFor(/\d\d:\d\d \[lobby\] bob: in the lobby/);
      bob.chat('in physics', 'physics');
      await ann.waitFor(/\d\d:\d\d bob: in physics/);
      expect(ann.output).not.toContain('[physics] bob: in physics');
      ann.type('\\users');
      await ann.waitFor('2 users in the room:');
      ann.type('\\rooms');
      await ann.waitFor('2 rooms:');
      await ann.waitFor(
        / {2}lobby \(2 users, joined\)\n {2}physics \(2 users, joined, typing here\)/,
      );
      ann.type('\\room chemistry');
      await ann.waitFor('You are not in chemistry; \\join it first.');
      // Typed as IRC users do, for a room it is in: said, and typed into.
      ann.type('\\room lobby');
      await ann.waitFor('You are typing into lobby.');
      // Another room's members, asked for as IRC users do, while typing into the lobby.
      ann.type('/names #Physics');
      await ann.waitFor('2 users in physics:');
      ann.type('\\users biology');
      await ann.waitFor('You are not in biology.');
      ann.type('/join #Physics');
      await ann.waitFor('You are already in physics; typing there now.');
      // A look-alike spelling (a Cyrillic "у"), which only the server's 1016 tells is physics.
      ann.type('\\join ph\u0443sics');
      await ann.waitFor(/(You are already in physics; typing there now\.[\s\S]*){2}/);
      ann.type('\\leave lobby');
      await ann.waitFor('Everyone stays in the lobby; \\exit leaves the server.');
      // Said as the client says it for \room, not as the server's bare "you are not in that room".
      ann.type('\\leave chemistry');
      await ann.waitFor('You are not in chemistry.');
      const left = new Promise((r) => bob.once('leave', r));
      // A reason with no room ("see" is none joined): neither guessed, a room nor a typo.
      ann.type('/part see you');
      await ann.waitFor(
        'You are not in see. To leave the room you are typing into, type \\leave alone',
      );
      ann.type('\\leave');
      await ann.waitFor('You left physics.');
      await ann.waitFor('You are typing into the lobby.');
      expect(await left).toEqual({ nickname: 'ann', userCount: 1, room: 'physics' });
      bob.chat('back in physics', 'physics');
      bob.chat('lobby again');
      await ann.waitFor(/\d\d:\d\d bob: lobby again/);
      expect(ann.output).not.toContain('back in physics');
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
    } finally {
      await ann.stop();
      await bob.exit();
      await server.stop();
    }
  });

  it('shows a member who joined just after it below its own join, though its answer waits a round trip', async () => {
    const server = await startConfab();
    // Between ann and the server: holds ann's requests from the first RTT after her JOIN_ROOM
    // (the client's fence, which its join's answer waits for) until `release`.
    let release = () => {};
    const proxy = net.createServer((inbound) => {
      const outbound = net.connect(server.address.port, '127.0.0.1');
      for (const s of [inbound, outbound]) s.on('error', () => s.destroy());
      outbound.pipe(inbound);
      let state: 'before' | 'armed' | 'holding' | 'passed' = 'before';
      const held: Buffer[] = [];
      release = () => {
        state = 'passed';
        for (const chunk of held.splice(0)) outbound.write(chunk);
      };
      inbound.on('data', (chunk: Buffer) => {
        if (state === 'holding') {
          held.push(chunk);
          return;
        }
        let from = 0;
        if (state === 'before') {
          const join = chunk.indexOf('"cmd":"100"');
          if (join >= 0) {
            state = 'armed';
            from = join;
          }
        }
        const rtt = state === 'armed' ? chunk.indexOf('{"cmd":"6"', from) : -1;
        if (rtt < 0) {
          outbound.write(chunk);
          return;
        }
        outbound.write(chunk.subarray(0, rtt));
        held.push(chunk.subarray(rtt));
        state = 'holding';
      });
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const port = String((proxy.address() as net.AddressInfo).port);
    const bob = await ChatClient.connect({ port: server.address.port, nickname: 'bob' });
    await bob.join('physics');
    const ann = ChatProcess.start(['ann', '--port', port]);
    let carl: ChatClient | undefined;
    try {
      await ann.waitFor('You are the 2nd user.');
      const annIn = new Promise<void>((r) =>
        bob.on('join', (m) => {
          if (m.nickname === 'ann' && m.room === 'physics') r();
        }),
      );
      ann.type('\\join physics');
      await annIn;
      carl = await ChatClient.connect({ port: server.address.port, nickname: 'carl' });
      await carl.join('physics');
      // carl's "8" reaches ann while her join's fence is held.
      await new Promise((r) => setTimeout(r, 300));
      release();
      await ann.waitFor(/--> carl joined \(3 users\)/);
      await ann.waitFor('You joined physics');
      const own = ann.output.indexOf('You joined physics (2 users: bob, ann)');
      expect(own).toBeGreaterThan(0);
      expect(ann.output.indexOf('carl joined')).toBeGreaterThan(own);
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
    } finally {
      await ann.stop();
      await carl?.exit();
      await bob.exit();
      proxy.close();
      await server.stop();
    }
  });

  it.skipIf(withoutSeed())(
    'says rooms and actions are not supported by the course server',
    async () => {
      const seed = await startSeed();
      const ann = ChatProcess.start(['ann', '--port', String(seed.port)]);
      try {
        await ann.waitFor('You are the 1st user.');
        for (const line of ['\\join physics', '\\rooms', '\\room physics', '\\leave physics']) {
          ann.type(line);
        }
        await ann.waitFor(/(This server does not support rooms\.[\s\S]*){4}/);
        ann.type('still here');
        ann.type('\\users');
        await ann.waitFor('1 user in the room:');
        // Nor actions: said, not sent as chat.
        ann.type('/me waves');
        await ann.waitFor('This server does not take \\me.');
        ann.type('\\exit');
        expect(await ann.exited).toBe(0);
      } finally {
        await ann.stop();
        await seed.stop();
      }
    },
  );
});

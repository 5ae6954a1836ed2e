import { expect, it } from 'vitest';
import { ChatClient } from '../../src/client/chat-client.js';
import { scriptedServer } from '../helpers/scripted-server.js';
import { startConfab } from '../helpers/servers.js';

/**
 * A client with history, connected to a hostile server that answers its CONNECT with the
 * welcome, then `flood` (one JSON line each), then a USERS reply; resolved once the client
 * has read that reply, and so every line before it.
 */
async function flooded(flood: object[]): Promise<{ client: ChatClient; close(): Promise<void> }> {
  const welcome = {
    cmd: '03',
    serverAddress: ['127.0.0.1', 1],
    userCount: 1,
    caps: ['errors', 'rooms', 'history'],
    resume: 'token',
    resumed: false,
    nickname: 'ann',
  };
  const users = { cmd: '10', users: [['ann', '127.0.0.1', 1]] };
  const srv = await scriptedServer((request, _send, socket) => {
    if (request.cmd !== '0') return;
    socket.write([welcome, ...flood, users].map((m) => `${JSON.stringify(m)}\n`).join(''));
  });
  const client = await ChatClient.connect({
    host: '127.0.0.1',
    port: srv.port,
    nickname: 'ann',
    history: true,
  });
  await new Promise<void>((resolve) => client.on('message', (m) => m.cmd === '10' && resolve()));
  return {
    client,
    close: async () => {
      client.destroy();
      await srv.close();
    },
  };
}

// A hostile server that tells the client, unasked, it is in room after room ("101"s for
// 20,000 rooms): every one was kept (its members, position and replay state) for as long as
// the client lived, 200,000 of them 163 MB of heap.
it('keeps state for a bounded number of rooms a hostile server makes up', async () => {
  const flood = Array.from({ length: 20_000 }, (_, i) => ({
    cmd: '101',
    room: `r${i}`,
    members: ['ann'],
    userCount: 1,
    epoch: 'e',
    top: 0,
  }));
  const { client, close } = await flooded(flood);
  try {
    expect(client.joinedRooms.length).toBeLessThanOrEqual(1_000);
  } finally {
    await close();
  }
});

// The same flood with each room left as soon as it is joined ("101" then "103"): the rooms
// were forgotten, but what the client kept for a resume ("rejoined") and each room's replay
// stayed, so the bound above was never reached while they grew without end.
it('forgets a room left, with what it kept for a resume and its replay', async () => {
  const flood = Array.from({ length: 5_000 }, (_, i) => [
    { cmd: '101', room: `r${i}`, members: ['ann'], userCount: 1, epoch: 'e', top: 5 },
    { cmd: '103', room: `r${i}` },
  ]).flat();
  const { client, close } = await flooded(flood);
  try {
    // Private state, read by name: the maps a room left must not stay in.
    const kept = client as unknown as {
      rejoined: Map<string, unknown>;
      replays: Map<string, unknown>;
    };
    expect(client.joinedRooms.length).toBe(1);
    expect(kept.rejoined.size).toBeLessThanOrEqual(1);
    expect(kept.replays.size).toBe(0);
  } finally {
    await close();
  }
});

// The bound is on rooms a server makes up, not on rooms the client asks for: confab lets
// --max-rooms-per-client go to 1,000,000, and there the reply to the join of a 1,000th
// room was ignored, the join left waiting until the probe called it unanswered, while the
// server had the client in the room.
it('keeps a room it asked to join past the bound', { timeout: 60_000 }, async () => {
  const server = await startConfab({
    'max-rooms-per-client': '1100',
    'max-rooms': '2000',
    'rate-limit': '0',
  });
  const client = await ChatClient.connect({ port: server.address.port, nickname: 'ann' });
  try {
    const joins: Promise<unknown>[] = [];
    for (let i = 0; i < 1_000; i++) joins.push(client.join(`r${i}`));
    await Promise.all(joins);
    const last = await Promise.race([
      client.join('one-more').then((joined) => joined.room),
      new Promise((resolve) => setTimeout(() => resolve('no answer in 5 s'), 5_000)),
    ]);
    expect(last).toBe('one-more');
    expect(client.joinedRooms).toContain('one-more');
  } finally {
    client.destroy();
    await server.stop();
  }
});

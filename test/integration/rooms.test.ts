import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from '../helpers/raw-client.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';

const ROOMS = ['errors', 'renames', 'whispers', 'rooms'];
let server: SpawnedServer;

beforeAll(async () => {
  // Some 60 clients from one address, more CONNECTs than its budget at the default limits.
  server = await spawnServer(['--max-users', '100', '--room-capacity', '10', '--rate-limit', '0']);
});
afterAll(async () => {
  await server.stop();
});

function line(value: object): string {
  return `${JSON.stringify(value)}\n`;
}

describe('rooms over real sockets', () => {
  it('keeps a course client in the lobby, seeing only lobby traffic in the course shape', async () => {
    const course = await join(server.port, 'course');
    const ann = await join(server.port, 'ann', { caps: ROOMS });
    const bob = await join(server.port, 'bob', { caps: ROOMS });
    for (const c of [ann, bob]) {
      c.write(line({ cmd: '100', room: 'physics' }));
      await c.expect('101');
    }
    ann.write(line({ cmd: '7', msg: 'only physics', room: 'physics' }));
    ann.write(line({ cmd: '7', msg: 'everyone' }));
    expect(await bob.expect('70')).toMatchObject({ msg: 'only physics', room: 'physics', id: 1 });
    expect(await bob.expect('70')).toMatchObject({ msg: 'everyone', room: 'lobby' });
    await course.expect('70');
    // Padded course frames, exactly today's message: nothing of physics came first.
    const frames = course.rawFrames.filter((f) => f.includes('"70"'));
    expect(frames).toEqual(['{"cmd":"70","from":"ann","msg":"everyone"}']);
    expect(course.drain()).toEqual([
      { cmd: '8', nickname: 'ann', userCount: 2 },
      { cmd: '8', nickname: 'bob', userCount: 3 },
    ]);

    // USERS per room.
    ann.write(line({ cmd: '1', room: 'physics' }));
    const physics = await ann.expect('10');
    expect((physics.users as string[][]).map((u) => u[0])).toEqual(['ann', 'bob']);
    ann.write(line({ cmd: '1' }));
    const lobby = await ann.expect('10');
    expect((lobby.users as string[][]).map((u) => u[0])).toEqual(['course', 'ann', 'bob']);

    // Disconnecting parts every room: "30" in each, the course client's as today.
    bob.close();
    expect(await ann.expect('30')).toEqual({
      cmd: '30',
      nickname: 'bob',
      userCount: 2,
      room: 'lobby',
    });
    expect(await ann.expect('30')).toEqual({
      cmd: '30',
      nickname: 'bob',
      userCount: 1,
      room: 'physics',
    });
    expect(await course.expect('30')).toEqual({ cmd: '30', nickname: 'bob', userCount: 2 });
    ann.write(line({ cmd: '104' }));
    expect(await ann.expect('105')).toEqual({
      cmd: '105',
      rooms: [
        { room: 'lobby', userCount: 2, joined: true },
        { room: 'physics', userCount: 1, joined: true },
      ],
    });
    ann.close();
    course.close();
  });

  it('admits exactly the capacity of 50 racing joins, three rounds', async () => {
    const clients = await Promise.all(
      Array.from({ length: 50 }, (_, i) => join(server.port, `racer${i}`, { caps: ROOMS })),
    );
    for (let round = 0; round < 3; round++) {
      const room = `race${round}`;
      for (const c of clients) c.write(line({ cmd: '100', room }));
      // Replies come in request order: once VERSION is answered, so is the join.
      for (const c of clients) c.write(line({ cmd: '4' }));
      const answers = await Promise.all(
        clients.map(async (c) => {
          await c.expect('40');
          const all = c.drain();
          return all.find((m) => m.cmd === '101' || (m.cmd === '90' && m.ref === '100'))!;
        }),
      );
      const admitted = answers.filter((m) => m.cmd === '101');
      expect(admitted).toHaveLength(10);
      expect(answers.filter((m) => m.cmd === '90').every((m) => m.code === 1012)).toBe(true);
      expect(new Set(admitted.map((m) => m.userCount))).toEqual(
        new Set(Array.from({ length: 10 }, (_, i) => i + 1)),
      );
    }
    for (const c of clients) c.close();
  });
});

// A hostile mix of room requests from a client without "rooms" changes nothing it sees.
describe('room requests from clients that did not ask', () => {
  it('are unknown commands, and never make a room', async () => {
    const ext = await join(server.port, 'extonly', { caps: ['errors'] });
    const watcher = await join(server.port, 'watcher', { caps: ROOMS });
    ext.drain();
    ext.write(line({ cmd: '100', room: 'sneaky' }));
    ext.write(line({ cmd: '104' }));
    expect(await ext.expect('90')).toMatchObject({ code: 1003, ref: '100' });
    expect(await ext.expect('90')).toMatchObject({ code: 1003, ref: '104' });
    watcher.write(line({ cmd: '104' }));
    const list = await watcher.expect('105');
    expect((list.rooms as { room: string }[]).map((r) => r.room)).not.toContain('sneaky');
    ext.close();
    watcher.close();
  });
});

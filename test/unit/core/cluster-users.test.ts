/**
 * USERS on a node of a cluster. Reading a room's members costs Redis a call
 * per member (some 14 ms for a room of 2,000, 0.5 ms for 100), and any member
 * may ask at the flood-control rate from each of its address's connections:
 * read per request, one address could keep Redis, and so every node, busy.
 * A node reads a room's members again only once they changed or a second has
 * passed, and what its members are shown stays what Presence says.
 */
import { describe, expect, it, vi } from 'vitest';
import {
  joinChat as connect,
  connectWith,
  type FakePeer,
  sendRequest as send,
} from '../../helpers/fake-peer.js';
import { type MemoryNode, memoryNodes, settle } from '../../helpers/quiet-node.js';

/** Two nodes of an in-process cluster, with a clock the test moves. */
function cluster(): { a: MemoryNode; b: MemoryNode; clock: { now: number } } {
  const clock = { now: 1_000_000 };
  return { ...memoryNodes({ clock: () => clock.now }), clock };
}

/** The nicknames in `peer`'s last "10". */
function listed(peer: FakePeer): string[] {
  const reply = peer
    .take()
    .filter((m) => m.cmd === '10')
    .at(-1) as { users: [string, string, number][] } | undefined;
  if (reply === undefined) throw new Error('no "10"');
  return reply.users.map(([nickname]) => nickname);
}

async function users(peer: FakePeer, request: object = { cmd: '1' }): Promise<string[]> {
  peer.take();
  send(peer, request as { cmd: '1' });
  await settle();
  return listed(peer);
}

describe('USERS on a node of a cluster', () => {
  it('asked back to back, reads the room from Presence once', async () => {
    const { a, b } = cluster();
    const ann = connect(a.chat, 'ann');
    connect(b.chat, 'bob');
    await settle();
    const reads = vi.spyOn(a.presence, 'members');
    for (let i = 0; i < 50; i++) send(ann, { cmd: '1' });
    await settle();
    const replies = ann.take().filter((m) => m.cmd === '10');
    expect(replies).toHaveLength(50);
    for (const reply of replies) {
      expect(reply).toEqual({
        cmd: '10',
        users: [
          ['ann', '127.0.0.1', expect.any(Number)],
          ['bob', '127.0.0.1', expect.any(Number)],
        ],
      });
    }
    expect(reads).toHaveBeenCalledTimes(1);
    // Still one read, spread over turns of the event loop.
    for (let i = 0; i < 20; i++) expect(await users(ann)).toEqual(['ann', 'bob']);
    expect(reads).toHaveBeenCalledTimes(1);
  });

  it('shows a join, a rename and a leave on another node as soon as they are shown', async () => {
    const { a, b } = cluster();
    const ann = connect(a.chat, 'ann', ['renames']);
    await settle();
    expect(await users(ann)).toEqual(['ann']);
    const bob = connect(b.chat, 'bob', ['renames']);
    await settle();
    expect(await users(ann)).toEqual(['ann', 'bob']);
    send(bob, { cmd: '5', newNickname: 'rob' });
    await settle();
    expect(await users(ann)).toEqual(['ann', 'rob']);
    send(bob, { cmd: '3' });
    await settle();
    expect(await users(ann)).toEqual(['ann']);
  });

  it("shows a member its own join and rename at once, before the room's events are back", async () => {
    const { a } = cluster();
    const caps = ['errors', 'rooms', 'renames', 'history'];
    const ann = connect(a.chat, 'ann', caps);
    const cid = connect(a.chat, 'cid', caps);
    await settle();
    send(ann, { cmd: '100', room: 'den' });
    await settle();
    expect(await users(ann, { cmd: '1', room: 'den' })).toEqual(['ann']);
    // From here the node's own events wait (its subscriber connection is down): only the
    // claims themselves can tell it that the room's members changed.
    a.broker.interrupt();
    send(cid, { cmd: '100', room: 'den' });
    await settle();
    expect(cid.take()).toContainEqual(expect.objectContaining({ cmd: '101', room: 'den' }));
    expect(await users(cid, { cmd: '1', room: 'den' })).toEqual(['ann', 'cid']);
    send(ann, { cmd: '5', newNickname: 'anna' });
    await settle();
    // Presence's order after a rename is its own: what counts is the new name.
    expect((await users(ann, { cmd: '1', room: 'den' })).sort()).toEqual(['anna', 'cid']);
    a.broker.reconnect();
    await settle();
    expect((await users(cid, { cmd: '1', room: 'den' })).sort()).toEqual(['anna', 'cid']);
  });

  it('reads again after a second: a change no event tells (an address after a resume) shows then', async () => {
    const { a, b, clock } = cluster();
    const caps = ['errors', 'rooms', 'renames', 'history'];
    const ann = connect(a.chat, 'ann');
    const bob = connect(b.chat, 'bob', caps);
    await settle();
    const token = (bob.take().find((m) => m.cmd === '03') as { resume: string }).resume;
    const addressOf = async (nickname: string) => {
      ann.take();
      send(ann, { cmd: '1' });
      await settle();
      const reply = ann.take().find((m) => m.cmd === '10') as {
        users: [string, string, number][];
      };
      return reply.users.find(([n]) => n === nickname)?.[2];
    };
    expect(await addressOf('bob')).toBe(bob.remote.port);
    // bob's connection comes back on his own node from another port: a resume, told to
    // nobody, so node a's list holds his old address until it is a second old.
    const back = connectWith(b.chat, { cmd: '0', nickname: 'bob', caps, resume: token });
    await settle();
    expect(back.take()[0]).toMatchObject({ cmd: '03', resumed: true });
    clock.now += 999;
    expect(await addressOf('bob')).toBe(bob.remote.port);
    clock.now += 1;
    expect(await addressOf('bob')).toBe(back.remote.port);
  });

  it('does not keep a failed read: the next USERS asks Presence again', async () => {
    const { a } = cluster();
    const ann = connect(a.chat, 'ann', ['errors']);
    const bob = connect(a.chat, 'bob', ['errors']);
    await settle();
    const reads = vi
      .spyOn(a.presence, 'members')
      .mockRejectedValueOnce(new Error('Redis went away'));
    ann.take();
    send(ann, { cmd: '1' });
    await settle();
    expect(ann.take().some((m) => m.cmd === '10')).toBe(false);
    expect(await users(bob)).toContain('bob');
    expect(reads).toHaveBeenCalledTimes(2);
  });
});

describe('ROOMS on a node of a cluster', () => {
  /** The rooms in `peer`'s last "105". */
  async function rooms(peer: FakePeer): Promise<{ room: string; userCount: number }[]> {
    peer.take();
    send(peer, { cmd: '104' });
    await settle();
    const reply = peer
      .take()
      .filter((m) => m.cmd === '105')
      .at(-1) as { rooms: { room: string; userCount: number }[] } | undefined;
    if (reply === undefined) throw new Error('no "105"');
    return reply.rooms.map(({ room, userCount }) => ({ room, userCount }));
  }

  it('reads the room list from Presence at most once a second, and lists a room joined here since', async () => {
    const { a, b, clock } = cluster();
    const ann = connect(a.chat, 'ann', ['rooms']);
    const bob = connect(b.chat, 'bob', ['rooms']);
    send(bob, { cmd: '100', room: 'physics' });
    await settle();
    const reads = vi.spyOn(a.presence, 'rooms');
    for (let i = 0; i < 50; i++) send(ann, { cmd: '104' });
    await settle();
    expect(ann.take().filter((m) => m.cmd === '105')).toHaveLength(50);
    expect(reads).toHaveBeenCalledTimes(1);
    // Joined on this node since the list was read: counted with its members here.
    send(ann, { cmd: '100', room: 'chemistry' });
    send(ann, { cmd: '100', room: 'physics' });
    const cat = connect(a.chat, 'cat', ['rooms']);
    send(cat, { cmd: '100', room: 'physics' });
    await settle();
    // Never fewer than this node's own (the lobby's third, cat, shows once the list is read).
    expect(await rooms(ann)).toEqual([
      { room: 'lobby', userCount: 2 },
      { room: 'physics', userCount: 2 },
      { room: 'chemistry', userCount: 1 },
    ]);
    expect(reads).toHaveBeenCalledTimes(1);
    clock.now += 1000;
    expect(await rooms(ann)).toEqual([
      { room: 'lobby', userCount: 3 },
      { room: 'physics', userCount: 3 },
      { room: 'chemistry', userCount: 1 },
    ]);
    expect(reads).toHaveBeenCalledTimes(2);
  });
});

describe('whitespace behind a CONNECT under way on a cluster', () => {
  it('costs flood control, as from a member, and earns no error once joined', async () => {
    const { a } = memoryNodes({ rateLimit: 1, rateBurst: 10 });
    const ann = connectWith(a.chat, { cmd: '0', nickname: 'ann', caps: ['errors'] });
    expect(ann.session.state).toBe('greeting');
    expect(ann.session.pending).toBeGreaterThan(0);
    const before = ann.session.bucket!.available;
    ann.session.blank('whitespace');
    await settle();
    expect(ann.take().map((m) => m.cmd)).toEqual(['03']);
    expect(ann.session.bucket!.available).toBeLessThan(before);
  });
});

import fc from 'fast-check';
import { beforeEach, describe, expect, it } from 'vitest';
import { Chat, type ChatOptions } from '../../../src/core/chat.js';
import { ErrorCode } from '../../../src/protocol/codes.js';
import type { Request } from '../../../src/protocol/messages.js';
import { parseRequestText } from '../../../src/protocol/request-codec.js';
import { FakePeer } from '../../helpers/fake-peer.js';

let chat: Chat;
let now = 1_700_000_000_000;
const ROOMS = ['errors', 'renames', 'whispers', 'rooms'];

function setup(options: ChatOptions = {}): void {
  chat = new Chat({ clock: () => now, ...options });
}

function connect(nickname: string, caps?: string[]): FakePeer {
  const peer = new FakePeer();
  peer.session = chat.open(peer);
  send(peer, caps === undefined ? { cmd: '0', nickname } : { cmd: '0', nickname, caps });
  peer.take();
  return peer;
}

function send(peer: FakePeer, request: Request): void {
  peer.session.receive({ ok: true, request });
}

function sendText(peer: FakePeer, text: string): void {
  peer.session.receive(parseRequestText(text));
}

function join(peer: FakePeer, room: string) {
  send(peer, { cmd: '100', room });
  return peer.take();
}

function refusal(code: number, ref: string) {
  return [expect.objectContaining({ cmd: '90', code, ref })];
}

beforeEach(() => setup());

describe('joining and parting rooms', () => {
  it('tells the room\'s others first, then answers "101" with the members', () => {
    const ann = connect('ann', ROOMS);
    const bob = connect('bob', ROOMS);
    ann.take();
    expect(join(ann, 'physics')).toEqual([
      { cmd: '101', room: 'physics', members: ['ann'], userCount: 1 },
    ]);
    expect(bob.take()).toEqual([]);
    expect(join(bob, 'physics')).toEqual([
      { cmd: '101', room: 'physics', members: ['ann', 'bob'], userCount: 2 },
    ]);
    expect(ann.take()).toEqual([{ cmd: '8', nickname: 'bob', userCount: 2, room: 'physics' }]);
  });

  it('parts a room: "103" to the parter, "30" with the room to the others', () => {
    const ann = connect('ann', ROOMS);
    const bob = connect('bob', ROOMS);
    join(ann, 'physics');
    join(bob, 'physics');
    ann.take();
    send(bob, { cmd: '102', room: 'physics' });
    expect(bob.take()).toEqual([{ cmd: '103', room: 'physics' }]);
    expect(ann.take()).toEqual([{ cmd: '30', nickname: 'bob', userCount: 1, room: 'physics' }]);
    send(bob, { cmd: '102', room: 'physics' });
    expect(bob.take()).toEqual(refusal(ErrorCode.NOT_IN_ROOM, '102'));
    send(bob, { cmd: '102', room: 'nowhere' });
    expect(bob.take()).toEqual(refusal(ErrorCode.NOT_IN_ROOM, '102'));
  });

  it('refuses to part the lobby, in any spelling', () => {
    const ann = connect('ann', ROOMS);
    for (const name of ['lobby', 'LOBBY', '1obby']) {
      send(ann, { cmd: '102', room: name });
      expect(ann.take()).toEqual(refusal(ErrorCode.CANNOT_LEAVE_LOBBY, '102'));
    }
    expect(chat.lobby.has(ann.session)).toBe(true);
  });

  it('refuses joining a room twice, the lobby included', () => {
    const ann = connect('ann', ROOMS);
    join(ann, 'physics');
    // Named as the server has it: a client may not tell that a look-alike is the same room.
    expect(join(ann, 'PHYSICS')).toEqual([
      {
        cmd: '90',
        code: ErrorCode.ALREADY_IN_ROOM,
        message: expect.any(String),
        ref: '100',
        room: 'physics',
      },
    ]);
    expect(join(ann, 'Lobby')).toEqual(refusal(ErrorCode.ALREADY_IN_ROOM, '100'));
    expect(join(ann, 'ph\u0443sics')).toEqual([expect.objectContaining({ room: 'physics' })]);
  });

  it('lists every room with its count and whether you are in it', () => {
    setup({ rooms: [{ name: 'maths', capacity: 5 }] });
    const ann = connect('ann', ROOMS);
    const bob = connect('bob', ROOMS);
    join(ann, 'physics');
    send(bob, { cmd: '104' });
    expect(bob.take()).toEqual([
      {
        cmd: '105',
        rooms: [
          { room: 'lobby', userCount: 2, joined: true },
          { room: 'physics', userCount: 1, joined: false },
          { room: 'maths', userCount: 0, joined: false },
        ],
      },
    ]);
  });
  it('lists the rooms people are in first, so that rooms made by the dozen do not push them out', () => {
    setup({ rooms: [] });
    // One member makes room after room, and stays in them.
    const maker = connect('maker', ROOMS);
    for (let i = 0; i < 19; i++) join(maker, `${'\u{20000}'.repeat(60)}${i}`);
    const ann = connect('ann', ROOMS);
    const bob = connect('bob', ROOMS);
    join(ann, 'homework');
    join(bob, 'homework');
    send(bob, { cmd: '104' });
    const [reply] = bob.take() as { rooms: { room: string; userCount: number }[] }[];
    expect(reply!.rooms.slice(0, 2)).toEqual([
      { room: 'lobby', userCount: 3, joined: true },
      { room: 'homework', userCount: 2, joined: true },
    ]);
    expect(reply!.rooms).toHaveLength(21);
  });
  it('lists at most about 64 KB of rooms, the lobby first, however long their names', () => {
    const rooms = Array.from({ length: 1000 }, (_, i) => ({
      name: `${'\u{20000}'.repeat(58)}${String(i).padStart(4, '0')}`,
      capacity: 5,
    }));
    setup({ rooms });
    const ann = connect('ann', ROOMS);
    send(ann, { cmd: '104' });
    const [reply] = ann.take() as { rooms: { room: string }[] }[];
    const bytes = Buffer.byteLength(JSON.stringify(reply));
    expect(bytes).toBeLessThanOrEqual(64 * 1024);
    expect(bytes).toBeGreaterThan(60 * 1024);
    expect(reply!.rooms[0]!.room).toBe('lobby');
    expect(reply!.rooms[1]!.room).toBe(rooms[0]!.name);
  });
});

describe('room names', () => {
  it('treats look-alike names as one room, shown as first created', () => {
    const ann = connect('ann', ROOMS);
    const bob = connect('bob', ROOMS);
    join(ann, 'Physics');
    // Cyrillic і (U+0456) in place of the Latin i.
    expect(join(bob, 'phys\u0456cs')).toEqual([
      { cmd: '101', room: 'Physics', members: ['ann', 'bob'], userCount: 2 },
    ]);
    send(ann, { cmd: '7', msg: 'hi', room: 'PHYSICS' });
    expect(bob.take()).toEqual([
      expect.objectContaining({ cmd: '70', from: 'ann', msg: 'hi', room: 'Physics' }),
    ]);
  });

  it('refuses names that break the nickname rules or are longer than 64 characters', () => {
    const ann = connect('ann', ROOMS);
    for (const bad of ['', 'a b', 'tab\there', 'zero\u200bwidth', 'x'.repeat(65), '\u0301x']) {
      expect(join(ann, bad)).toEqual(refusal(ErrorCode.INVALID_ROOM_NAME, '100'));
    }
    expect(join(ann, 'x'.repeat(64))).toMatchObject([{ cmd: '101' }]);
  });

  it('never lets any generated name make a second room with the same look-alike key', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ maxLength: 8 }), { maxLength: 12 }), (names) => {
        setup({ maxRoomsPerClient: 100 });
        const ann = connect('ann', ROOMS);
        for (const name of names) send(ann, { cmd: '100', room: name });
        ann.take();
        const shown = [...chat.rooms.all()].map((r) => r.name);
        expect(new Set(shown.map((n) => chat.rooms.find(n))).size).toBe(shown.length);
        for (const room of chat.rooms.all()) expect(room.has(ann.session)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });
});

describe('limits and lifetimes', () => {
  it('admits exactly the capacity when many join at once', () => {
    setup({ maxUsers: 100, roomCapacity: 10 });
    const peers = Array.from({ length: 50 }, (_, i) => connect(`u${i}`, ROOMS));
    for (const peer of peers) send(peer, { cmd: '100', room: 'physics' });
    const admitted = peers.filter((p) => p.take().some((m) => m.cmd === '101'));
    expect(admitted).toHaveLength(10);
    expect(chat.rooms.find('physics')?.size).toBe(10);
  });

  it('gives a declared room its own capacity', () => {
    setup({ roomCapacity: 1, rooms: [{ name: 'big', capacity: 2 }] });
    const [a, b, c] = ['a', 'b', 'c'].map((n) => connect(n, ROOMS)) as [
      FakePeer,
      FakePeer,
      FakePeer,
    ];
    join(a, 'big');
    join(b, 'big');
    expect(join(c, 'big')).toEqual(refusal(ErrorCode.ROOM_FULL, '100'));
    join(a, 'small');
    expect(join(b, 'small')).toEqual(refusal(ErrorCode.ROOM_FULL, '100'));
  });

  it('applies a new --room-capacity to joins from then on', () => {
    setup({ roomCapacity: 1 });
    const a = connect('a', ROOMS);
    const b = connect('b', ROOMS);
    join(a, 'physics');
    expect(join(b, 'physics')).toEqual(refusal(ErrorCode.ROOM_FULL, '100'));
    chat.reconfigure({ roomCapacity: 2 });
    expect(join(b, 'physics')).toMatchObject([{ cmd: '101' }]);
  });

  it('limits the rooms one client is in, the lobby counted', () => {
    setup({ maxRoomsPerClient: 3 });
    const ann = connect('ann', ROOMS);
    join(ann, 'a');
    join(ann, 'b');
    expect(join(ann, 'c')).toEqual(refusal(ErrorCode.TOO_MANY_ROOMS, '100'));
    send(ann, { cmd: '102', room: 'a' });
    ann.take();
    expect(join(ann, 'c')).toMatchObject([{ cmd: '101' }]);
  });

  it('makes no room when creation is off, but joins declared ones', () => {
    setup({ createRooms: false, rooms: [{ name: 'maths', capacity: 5 }] });
    const ann = connect('ann', ROOMS);
    expect(join(ann, 'physics')).toEqual(refusal(ErrorCode.NO_SUCH_ROOM, '100'));
    expect(join(ann, 'maths')).toMatchObject([{ cmd: '101' }]);
    expect(chat.rooms.find('physics')).toBeUndefined();
  });

  it('limits the rooms that exist at once, declared ones counted, the lobby not', () => {
    setup({ maxRooms: 3, rooms: [{ name: 'maths', capacity: 5 }] });
    const ann = connect('ann', ROOMS);
    const bob = connect('bob', ROOMS);
    join(ann, 'a');
    join(ann, 'b');
    expect(join(bob, 'c')).toEqual(refusal(ErrorCode.TOO_MANY_ROOMS_ON_SERVER, '100'));
    // Existing rooms, declared or made, still take members.
    expect(join(bob, 'maths')).toMatchObject([{ cmd: '101' }]);
    expect(join(bob, 'a')).toMatchObject([{ cmd: '101', room: 'a' }]);
    expect(chat.rooms.count).toBe(3);
    send(ann, { cmd: '102', room: 'b' });
    ann.take();
    expect(join(bob, 'c')).toMatchObject([{ cmd: '101', room: 'c' }]);
    chat.reconfigure({ maxRooms: 10 });
    expect(join(bob, 'd')).toMatchObject([{ cmd: '101', room: 'd' }]);
  });

  it("holds a new room's place from admission until it is entered or given up", () => {
    setup({ maxRooms: 2 });
    const ann = connect('ann', ROOMS);
    const bob = connect('bob', ROOMS);
    // What a cluster node does across its wait for Redis.
    const first = chat.rooms.admit(bob.session, 'x');
    const again = chat.rooms.admit(ann.session, 'X');
    const second = chat.rooms.admit(ann.session, 'y');
    expect([first, again, second].every((r) => 'key' in r)).toBe(true);
    expect(chat.rooms.count).toBe(2);
    expect(chat.rooms.admit(ann.session, 'z')).toMatchObject({
      code: ErrorCode.TOO_MANY_ROOMS_ON_SERVER,
    });
    if (!('key' in second) || !('key' in first) || !('key' in again)) return;
    chat.rooms.abandon(second);
    expect(chat.rooms.count).toBe(1);
    chat.rooms.add(bob.session, first);
    chat.rooms.abandon(again);
    expect(chat.rooms.count).toBe(1);
    ann.take();
    expect(join(ann, 'z')).toMatchObject([{ cmd: '101', room: 'z' }]);
    expect(join(ann, 'w')).toEqual(refusal(ErrorCode.TOO_MANY_ROOMS_ON_SERVER, '100'));
  });

  it('keeps a declared room when it empties and removes an undeclared one', () => {
    setup({ rooms: [{ name: 'maths', capacity: 5 }] });
    const ann = connect('ann', ROOMS);
    join(ann, 'maths');
    join(ann, 'physics');
    send(ann, { cmd: '3' });
    expect(chat.rooms.find('maths')?.size).toBe(0);
    expect(chat.rooms.find('physics')).toBeUndefined();
  });

  it('never reuses a chat id in a room made again after it emptied', () => {
    const ann = connect('ann', ROOMS);
    const bob = connect('bob', ROOMS);
    join(ann, 'physics');
    join(bob, 'physics');
    ann.take();
    send(bob, { cmd: '7', msg: 'one', room: 'physics' });
    send(bob, { cmd: '7', msg: 'two', room: 'physics' });
    const first = ann.take().map((m) => (m as { id: number }).id);
    expect(first).toEqual([1, 2]);
    for (const p of [ann, bob]) send(p, { cmd: '102', room: 'physics' });
    join(ann, 'physics');
    join(bob, 'physics');
    ann.take();
    send(bob, { cmd: '7', msg: 'three', room: 'physics' });
    expect(ann.take()).toMatchObject([{ cmd: '70', id: 3 }]);
  });

  it("parts every room on disconnect, telling each room's others", () => {
    const ann = connect('ann', ROOMS);
    const bob = connect('bob', ROOMS);
    const cat = connect('cat');
    join(ann, 'physics');
    join(bob, 'physics');
    for (const p of [ann, bob, cat]) p.take();
    send(bob, { cmd: '3' });
    expect(ann.take()).toEqual([
      { cmd: '30', nickname: 'bob', userCount: 2, room: 'lobby' },
      { cmd: '30', nickname: 'bob', userCount: 1, room: 'physics' },
    ]);
    expect(cat.take()).toEqual([{ cmd: '30', nickname: 'bob', userCount: 2 }]);
  });
});

describe('what each kind of client sees', () => {
  it("sends room, id and time only to rooms clients; course clients get today's lobby messages", () => {
    const course = connect('course');
    const ann = connect('ann', ROOMS);
    const old = connect('old', ['errors', 'renames', 'whispers']);
    for (const p of [course, ann]) p.take();
    now += 5;
    send(old, { cmd: '7', msg: 'hello' });
    expect(course.take()).toEqual([{ cmd: '70', from: 'old', msg: 'hello' }]);
    expect(ann.take()).toEqual([
      { cmd: '70', from: 'old', msg: 'hello', room: 'lobby', id: 1, at: now },
    ]);
    join(ann, 'physics');
    expect(course.take()).toEqual([]);
    expect(old.take()).toEqual([]);
  });

  it('never shows a course client anything of another room', () => {
    const course = connect('course');
    const ann = connect('ann', ROOMS);
    const bob = connect('bob', ROOMS);
    course.take();
    ann.take();
    join(ann, 'physics');
    join(bob, 'physics');
    send(ann, { cmd: '7', msg: 'in physics', room: 'physics' });
    send(ann, { cmd: '5', newNickname: 'anna' });
    send(bob, { cmd: '102', room: 'physics' });
    expect(bob.take()).toEqual([
      { cmd: '70', from: 'ann', msg: 'in physics', room: 'physics', id: 1, at: now },
      { cmd: '91', oldNickname: 'ann', newNickname: 'anna', room: 'lobby' },
      { cmd: '91', oldNickname: 'ann', newNickname: 'anna', room: 'physics' },
      { cmd: '103', room: 'physics' },
    ]);
    expect(course.take()).toEqual([]);
  });

  it('ignores a course client\'s "room" field and room commands as unknown', () => {
    const course = connect('course');
    const ext = connect('ext', ['errors']);
    const ann = connect('ann', ROOMS);
    ann.take();
    join(ann, 'physics');
    sendText(course, '{"cmd":"7","msg":"hi","room":"physics"}');
    sendText(ext, '{"cmd":"7","msg":"yo","room":5}');
    expect(ann.take()).toEqual([
      expect.objectContaining({ cmd: '70', from: 'course', msg: 'hi', room: 'lobby' }),
      expect.objectContaining({ cmd: '70', from: 'ext', msg: 'yo', room: 'lobby' }),
    ]);
    course.take();
    ext.take();
    sendText(course, '{"cmd":"100","room":"physics"}');
    expect(course.take()).toEqual([]);
    sendText(ext, '{"cmd":"100","room":"physics"}');
    sendText(ext, '{"cmd":"100"}');
    sendText(ext, '{"cmd":"104"}');
    expect(ext.take()).toEqual([
      { cmd: '90', code: ErrorCode.UNKNOWN_COMMAND, message: 'unknown command "100"', ref: '100' },
      { cmd: '90', code: ErrorCode.UNKNOWN_COMMAND, message: 'unknown command "100"', ref: '100' },
      { cmd: '90', code: ErrorCode.UNKNOWN_COMMAND, message: 'unknown command "104"', ref: '104' },
    ]);
    expect(chat.rooms.find('physics')?.size).toBe(1);
  });

  it('lists a room in USERS and refuses chat or USERS for a room you are not in', () => {
    const ann = connect('ann', ROOMS);
    const bob = connect('bob', ROOMS);
    join(ann, 'physics');
    bob.take();
    send(ann, { cmd: '1', room: 'physics' });
    expect(ann.take()).toEqual([{ cmd: '10', users: [['ann', '127.0.0.1', ann.remote.port]] }]);
    send(bob, { cmd: '1', room: 'physics' });
    expect(bob.take()).toEqual(refusal(ErrorCode.NOT_IN_ROOM, '1'));
    send(bob, { cmd: '7', msg: 'x', room: 'physics' });
    expect(bob.take()).toEqual(refusal(ErrorCode.NOT_IN_ROOM, '7'));
    sendText(bob, '{"cmd":"7","msg":"x","room":null}');
    expect(bob.take()).toEqual(refusal(ErrorCode.INVALID_FIELD, '7'));
    expect(ann.take()).toEqual([]);
  });
});

/** Whether the join was answered "101". */
function joined(peer: FakePeer, room: string): boolean {
  return join(peer, room).some((m) => m.cmd === '101');
}

describe('new rooms from one address', () => {
  it('are made within a budget (burst, then one every twenty requests of the flood rate), which joins of existing rooms do not spend', () => {
    setup({ rateLimit: 20, rateBurst: 3 });
    const ann = connect('ann', ROOMS);
    const bob = connect('bob', ROOMS);
    for (const room of ['r1', 'r2', 'r3']) expect(joined(ann, room)).toBe(true);
    send(ann, { cmd: '102', room: 'r1' });
    ann.take();
    expect(join(bob, 'r4').filter((m) => m.cmd === '90')).toEqual(
      refusal(ErrorCode.RATE_LIMITED, '100'),
    );
    // An existing room costs nothing, and the room is still there to join.
    expect(joined(bob, 'r2')).toBe(true);
    now += 1000; // one room's worth at 20 / 20 a second
    expect(joined(bob, 'r4')).toBe(true);
    expect(join(ann, 'r5').filter((m) => m.cmd === '90')).toEqual(
      refusal(ErrorCode.RATE_LIMITED, '100'),
    );
    // Another address has a budget of its own.
    const cat = new FakePeer('192.0.2.8');
    cat.session = chat.open(cat);
    send(cat, { cmd: '0', nickname: 'cat', caps: ROOMS });
    cat.take();
    expect(joined(cat, 'r5')).toBe(true);
  });

  it('are not limited with flood control off', () => {
    setup({ rateLimit: 0 });
    const ann = connect('ann', ROOMS);
    for (let i = 0; i < 60; i++) {
      expect(joined(ann, `room${i}`), `room${i}`).toBe(true);
      send(ann, { cmd: '102', room: `room${i}` });
      ann.take();
    }
  });
});

import { describe, expect, it } from 'vitest';
import { ChatClient, ChatClientError } from '../../src/client/chat-client.js';
import { ErrorCode } from '../../src/protocol/codes.js';
import { startConfab, startSeed, withoutSeed } from '../helpers/servers.js';

describe('ChatClient against confab', () => {
  it('negotiates extensions and surfaces them as typed events', async () => {
    const server = await startConfab();
    try {
      const port = server.address.port;
      const ann = await ChatClient.connect({ port, nickname: 'ann' });
      // History changes what join() and chat() carry: it is asked for by name.
      expect(ann.caps).toEqual(['errors', 'renames', 'whispers', 'moderation', 'rooms']);
      const withHistory = await ChatClient.connect({ port, nickname: 'hal', history: true });
      expect(withHistory.caps).toEqual([
        'errors',
        'renames',
        'whispers',
        'moderation',
        'rooms',
        'history',
      ]);
      await withHistory.exit();
      expect(ann.serverAddress).toEqual(['127.0.0.1', port]);
      const bob = await ChatClient.connect({ port, nickname: 'bob' });
      const renamed = new Promise((r) => ann.once('rename', r));
      expect(await bob.rename('bea')).toBe('bea');
      expect(await renamed).toEqual({ oldNickname: 'bob', newNickname: 'bea', room: 'lobby' });
      const whispered = new Promise((r) => ann.once('chat', r));
      await bob.whisper('ann', 'psst');
      expect(await whispered).toEqual({ from: 'bea', msg: 'psst', whisper: true, room: 'lobby' });
      await expect(bob.whisper('zed', 'x')).rejects.toMatchObject({ kind: 'no-such-user' });
      await expect(bob.whisper('bea', 'x')).rejects.toMatchObject({ kind: 'whisper-to-self' });
      await expect(bob.rename('ANN')).rejects.toMatchObject({ kind: 'nickname-taken' });
      await expect(bob.rename('has space')).rejects.toMatchObject({
        kind: 'server-error',
        code: ErrorCode.INVALID_NICKNAME,
      });
      expect(await ann.users()).toEqual([
        ['ann', '127.0.0.1', expect.any(Number)],
        ['bea', '127.0.0.1', expect.any(Number)],
      ]);
      const closed = new Promise<{ error?: ChatClientError }>((r) => bob.once('close', r));
      bob.chat('i hate professor');
      const { error } = await closed;
      expect(error?.code).toBe(ErrorCode.BANNED_WORDS);
      expect(bob.mayReconnect).toBe(false);
      await expect(bob.version()).rejects.toBeInstanceOf(ChatClientError);
      await ann.exit();
    } finally {
      await server.stop();
    }
  });

  it('behaves as a course client when it asks for no extensions', async () => {
    const server = await startConfab();
    try {
      const plain = await ChatClient.connect({
        port: server.address.port,
        nickname: 'plain',
        caps: [],
      });
      expect(plain.caps).toEqual([]);
      const frames: string[] = [];
      plain.on('message', (m) => frames.push(m.cmd));
      const other = await ChatClient.connect({ port: server.address.port, nickname: 'other' });
      await other.rename('other2');
      await plain.version();
      expect(frames).toEqual(['8', '40']);
      await other.exit();
      await plain.exit();
    } finally {
      await server.stop();
    }
  });
});

describe('ChatClient rooms', () => {
  it('joins, chats in, lists and parts rooms, with room events', async () => {
    const server = await startConfab();
    try {
      const port = server.address.port;
      const ann = await ChatClient.connect({ port, nickname: 'ann' });
      const bob = await ChatClient.connect({ port, nickname: 'bob' });
      expect(ann.hasRooms).toBe(true);
      expect(await ann.join('Physics')).toEqual({
        room: 'Physics',
        members: ['ann'],
        userCount: 1,
        history: [],
      });
      const joined = new Promise((r) => ann.once('join', r));
      expect(await bob.join('physics')).toEqual({
        room: 'Physics',
        members: ['ann', 'bob'],
        userCount: 2,
        history: [],
      });
      expect(await joined).toEqual({ nickname: 'bob', userCount: 2, room: 'Physics' });
      const heard = new Promise((r) => ann.once('chat', r));
      bob.chat('in physics', 'Physics');
      expect(await heard).toEqual({
        from: 'bob',
        msg: 'in physics',
        whisper: false,
        room: 'Physics',
        id: 1,
        at: expect.any(Number),
      });
      expect((await ann.users('Physics')).map((u) => u[0])).toEqual(['ann', 'bob']);
      expect(await ann.rooms()).toEqual([
        { room: 'lobby', userCount: 2, joined: true },
        { room: 'Physics', userCount: 2, joined: true },
      ]);
      await expect(ann.join('physics')).rejects.toMatchObject({
        kind: 'server-error',
        code: ErrorCode.ALREADY_IN_ROOM,
        room: 'Physics',
      });
      await expect(ann.part('lobby')).rejects.toMatchObject({
        code: ErrorCode.CANNOT_LEAVE_LOBBY,
      });
      const left = new Promise((r) => ann.once('leave', r));
      expect(await bob.part('physics')).toBe('Physics');
      expect(await left).toEqual({ nickname: 'bob', userCount: 1, room: 'Physics' });
      await expect(bob.users('physics')).rejects.toMatchObject({ code: ErrorCode.NOT_IN_ROOM });
      await ann.exit();
      await bob.exit();
    } finally {
      await server.stop();
    }
  });

  it('says rooms are not supported when the server did not grant them', async () => {
    const server = await startConfab();
    try {
      const plain = await ChatClient.connect({
        port: server.address.port,
        nickname: 'plain',
        caps: ['errors'],
      });
      expect(plain.hasRooms).toBe(false);
      for (const call of [plain.join('x'), plain.part('x'), plain.rooms(), plain.users('x')]) {
        await expect(call).rejects.toMatchObject({ kind: 'not-supported' });
      }
      expect(() => plain.chat('hi', 'x')).toThrow(/does not support rooms/);
      expect(await plain.version()).toBe('1');
      await plain.exit();
    } finally {
      await server.stop();
    }
  });
});

describe.skipIf(withoutSeed())('ChatClient against the course server', () => {
  it('paces requests so the course server never reads two at once', async () => {
    const seed = await startSeed();
    try {
      const ann = await ChatClient.connect({ port: seed.port, nickname: 'ann' });
      const bob = await ChatClient.connect({ port: seed.port, nickname: 'bob' });
      expect(ann.caps).toEqual([]);
      await expect(ann.join('physics')).rejects.toMatchObject({ kind: 'not-supported' });
      const heard: string[] = [];
      bob.on('chat', (m) => heard.push(m.msg));
      // Fired without waiting: unpaced, the server would read several in one
      // recv(), fail to parse them, and drop ann.
      for (let i = 0; i < 8; i++) ann.chat(`m${i}`);
      const [users, version, rtt] = await Promise.all([ann.users(), ann.version(), ann.rtt()]);
      expect(users.map((u) => u[0])).toEqual(['ann', 'bob']);
      expect(version).toBe('1');
      expect(rtt).toBeGreaterThan(0);
      await bob.version();
      expect(heard).toEqual(['m0', 'm1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7']);
      await ann.exit();
      await bob.exit();
    } finally {
      await seed.stop();
    }
  });
});

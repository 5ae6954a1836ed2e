import { describe, expect, it } from 'vitest';
import { ChatClient, type ChatEvents } from '../../src/client/chat-client.js';
import { ErrorCode } from '../../src/protocol/codes.js';
import { scriptedServer } from '../helpers/scripted-server.js';
import { startConfab } from '../helpers/servers.js';
import { TcpRelay } from '../helpers/tcp-relay.js';

const FAST = { minDelayMs: 20, maxDelayMs: 200 };

function next<K extends keyof ChatEvents>(client: ChatClient, event: K): Promise<ChatEvents[K][0]> {
  return new Promise((resolve) => {
    const on = (...args: ChatEvents[K]) => resolve(args[0]);
    (client as unknown as { once(e: K, l: typeof on): void }).once(event, on);
  });
}

describe('ChatClient reconnect without history', () => {
  it('connects again, joins its rooms again, says what may be missing, and sends what was typed meanwhile', async () => {
    const server = await startConfab();
    const relay = await TcpRelay.start(server.address.port);
    try {
      const ann = await ChatClient.connect({
        port: relay.port,
        nickname: 'ann',
        reconnect: FAST,
      });
      const bob = await ChatClient.connect({ port: server.address.port, nickname: 'bob' });
      await ann.join('physics');
      await bob.join('physics');
      const reconnecting = next(ann, 'reconnecting');
      const resumed = next(ann, 'resumed');
      relay.cut();
      expect(await reconnecting).toMatchObject({ attempt: 1, attempts: 10 });
      ann.chat('typed while away', 'physics');
      await expect(ann.users()).rejects.toMatchObject({ kind: 'reconnecting' });
      const heard = next(bob, 'chat');
      expect(await resumed).toEqual({
        resumed: false,
        nickname: 'ann',
        rooms: [
          { room: 'lobby', recovered: false, reason: 'off' },
          { room: 'physics', recovered: false, reason: 'off' },
        ],
      });
      expect(await heard).toMatchObject({ from: 'ann', msg: 'typed while away', room: 'physics' });
      const live = next(ann, 'chat');
      bob.chat('still here?', 'physics');
      expect(await live).toMatchObject({ from: 'bob', msg: 'still here?', room: 'physics' });
      expect(ann.isClosed).toBe(false);
      await ann.exit();
      await bob.exit();
    } finally {
      await relay.close();
      await server.stop();
    }
  });

  it('waits longer each time a server closes the connection right after taking it back, as for attempts that failed', async () => {
    // As a server whose disk is full does: each connection is taken, then closed (3005) at
    // the first chat. Before, every loss started again from the shortest wait.
    const server = await scriptedServer((request, send, socket) => {
      if (request.cmd !== '0') return;
      send({ cmd: '03', serverAddress: ['127.0.0.1', 1], userCount: 1, caps: ['errors'] });
      setTimeout(() => {
        send({ cmd: '90', code: ErrorCode.INTERNAL_ERROR, message: 'could not store' });
        socket.end();
      }, 20);
    });
    const attempts: number[] = [];
    const ann = await ChatClient.connect({
      port: server.port,
      nickname: 'ann',
      reconnect: { attempts: 5, minDelayMs: 10, maxDelayMs: 100 },
    });
    try {
      ann.on('reconnecting', (r) => attempts.push(r.attempt));
      const closed = next(ann, 'close');
      expect(await closed).toMatchObject({ error: { message: /after 5 attempts/ } });
      expect(attempts).toEqual([1, 2, 3, 4, 5]);
    } finally {
      ann.destroy();
      await server.close();
    }
  });

  it('gives a connection up once the server answers nothing, not even a probe, and makes it again', async () => {
    // A server whose loop is stuck: it took the connection and then went silent.
    const server = await scriptedServer((request, send) => {
      if (request.cmd === '0')
        send({ cmd: '03', serverAddress: ['127.0.0.1', 1], userCount: 1, caps: ['errors'] });
    });
    const opened = Date.now();
    const ann = await ChatClient.connect({ port: server.port, nickname: 'ann', reconnect: FAST });
    try {
      const reconnecting = next(ann, 'reconnecting');
      const started = Date.now();
      await expect(ann.users()).rejects.toMatchObject({
        kind: expect.stringMatching(/unanswered|reconnecting/),
      });
      // The call is probed after 10 s; the probe unanswered 10 s more, the connection goes.
      const lost = await reconnecting;
      expect(lost.attempt).toBe(1);
      // How long it was, as measured: not less than the two deadlines.
      const silent = /^the server sent nothing for (\d+) s$/.exec(lost.error.message);
      expect(Number(silent?.[1])).toBeGreaterThanOrEqual(20);
      expect(Number(silent?.[1])).toBeLessThanOrEqual((Date.now() - opened) / 1000);
      expect(Date.now() - started).toBeGreaterThanOrEqual(19_000);
      expect(server.requests.filter((r) => r.cmd === '6')).toHaveLength(1);
    } finally {
      ann.destroy();
      await server.close();
    }
  }, 40_000);

  it('keeps a connection on which the server is heard, however long a reply takes', async () => {
    // As on a slow link, a reply (and a probe's) waiting behind a long replay: the server
    // answers nothing asked, but sends all along.
    const server = await scriptedServer((request, send) => {
      if (request.cmd !== '0') return;
      send({ cmd: '03', serverAddress: ['127.0.0.1', 1], userCount: 2, caps: ['errors'] });
      const timer = setInterval(() => send({ cmd: '70', nickname: 'bob', msg: 'still here' }), 500);
      setTimeout(() => clearInterval(timer), 26_000);
    });
    const ann = await ChatClient.connect({ port: server.port, nickname: 'ann', reconnect: FAST });
    try {
      let lost = false;
      ann.on('reconnecting', () => {
        lost = true;
      });
      void ann.users().catch(() => {});
      await new Promise((r) => setTimeout(r, 25_000));
      expect(server.requests.some((r) => r.cmd === '6')).toBe(true);
      expect(lost).toBe(false);
    } finally {
      ann.destroy();
      await server.close();
    }
  }, 40_000);

  it('does not reconnect after a refusal that says not to (2xxx), nor after exit()', async () => {
    const server = await startConfab();
    const relay = await TcpRelay.start(server.address.port);
    try {
      const ann = await ChatClient.connect({ port: relay.port, nickname: 'ann', reconnect: FAST });
      let attempts = 0;
      ann.on('reconnecting', () => attempts++);
      const closed = next(ann, 'close');
      ann.chat('i hate professor');
      expect((await closed).error?.code).toBe(ErrorCode.BANNED_WORDS);
      const bea = await ChatClient.connect({ port: relay.port, nickname: 'bea', reconnect: FAST });
      bea.on('reconnecting', () => attempts++);
      await bea.exit();
      expect(bea.isClosed).toBe(true);
      expect(attempts).toBe(0);
    } finally {
      await relay.close();
      await server.stop();
    }
  });

  it('gives up after its attempts, and exit() while reconnecting ends at once', async () => {
    const server = await startConfab();
    const relay = await TcpRelay.start(server.address.port);
    try {
      const ann = await ChatClient.connect({
        port: relay.port,
        nickname: 'ann',
        reconnect: { attempts: 2, minDelayMs: 10, maxDelayMs: 20 },
      });
      const bea = await ChatClient.connect({
        port: relay.port,
        nickname: 'bea',
        reconnect: { attempts: 50, minDelayMs: 5000, maxDelayMs: 5000 },
      });
      const seen: number[] = [];
      ann.on('reconnecting', (r) => seen.push(r.attempt));
      const closed = next(ann, 'close');
      const beaAway = next(bea, 'reconnecting');
      await relay.close();
      const { error } = await closed;
      expect(error?.message).toMatch(/could not reconnect after 2 attempts/);
      expect(seen).toEqual([1, 2]);
      await beaAway;
      await bea.exit();
      expect(bea.isClosed).toBe(true);
    } finally {
      await server.stop();
    }
  });
});

/** Waits until `check` holds, polling; fails after `ms`. */
async function until(check: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('ChatClient with history', () => {
  it('gets the last messages on connect and join, not as live chat, and older ones on demand', async () => {
    const server = await startConfab({ history: 'memory', 'rate-limit': '0' });
    try {
      const port = server.address.port;
      const bob = await ChatClient.connect({ port, nickname: 'bob', history: true });
      await bob.join('physics');
      const acks: number[] = [];
      bob.on('stored', (s) => acks.push(s.id));
      for (let i = 1; i <= 60; i++) bob.chat(`lobby ${i}`);
      for (let i = 1; i <= 3; i++) bob.chat(`physics ${i}`, 'physics');
      await until(() => acks.length === 63, 'bob’s acknowledgements');
      const ann = await ChatClient.connect({ port, nickname: 'ann', history: true });
      const live: string[] = [];
      ann.on('chat', (m) => live.push(m.msg));
      const lobby = await next(ann, 'room');
      expect(lobby).toMatchObject({ room: 'lobby', origin: 'connect', top: 60 });
      // The default --history-on-join: the newest 50, oldest first.
      expect(lobby.history.map((m) => m.msg)).toEqual(
        Array.from({ length: 50 }, (_, i) => `lobby ${i + 11}`),
      );
      expect(ann.position('lobby')).toEqual({ epoch: lobby.epoch, id: 60 });
      const physics = await ann.join('physics');
      expect(physics.history.map((m) => [m.id, m.msg])).toEqual([
        [1, 'physics 1'],
        [2, 'physics 2'],
        [3, 'physics 3'],
      ]);
      const older = await ann.history('lobby', undefined, 7);
      expect(older.messages.map((m) => m.msg)).toEqual(
        Array.from({ length: 7 }, (_, i) => `lobby ${i + 4}`),
      );
      expect(older.more).toBe(true);
      const rest = await ann.history('lobby');
      expect(rest.messages.map((m) => m.id)).toEqual([1, 2, 3]);
      expect(rest.more).toBe(false);
      expect(live).toEqual([]);
      await ann.exit();
      await bob.exit();
    } finally {
      await server.stop();
    }
  });

  it('stores and delivers a chat re-sent with the same cid once', async () => {
    const server = await startConfab({ history: 'memory' });
    try {
      const port = server.address.port;
      const ann = await ChatClient.connect({ port, nickname: 'ann', history: true });
      const bob = await ChatClient.connect({ port, nickname: 'bob', history: true });
      const heard: string[] = [];
      bob.on('chat', (m) => heard.push(m.msg));
      const stored: { id: number; duplicate: boolean }[] = [];
      ann.on('stored', (s) => stored.push({ id: s.id, duplicate: s.duplicate }));
      ann.send({ cmd: '7', msg: 'once', cid: 'x-1' });
      ann.send({ cmd: '7', msg: 'once', cid: 'x-1' });
      ann.chat('after');
      await until(() => heard.includes('after'), 'the last chat');
      expect(heard).toEqual(['once', 'after']);
      expect(stored).toEqual([
        { id: stored[0]!.id, duplicate: false },
        { id: stored[0]!.id, duplicate: true },
        { id: stored[0]!.id + 1, duplicate: false },
      ]);
      await ann.exit();
      await bob.exit();
    } finally {
      await server.stop();
    }
  });

  for (const mode of ['cut', 'strand'] as const) {
    it(`after a connection ${mode === 'cut' ? 'cut' : 'left half-open'} mid-stream, has every message once and in order, and its own unacknowledged chat is delivered once`, async () => {
      const N = 300;
      const server = await startConfab({ history: 'memory', 'rate-limit': '0' });
      const relay = await TcpRelay.start(server.address.port);
      try {
        const port = server.address.port;
        const ann = await ChatClient.connect({
          port: relay.port,
          nickname: 'ann',
          history: true,
          reconnect: FAST,
        });
        await ann.join('physics');
        const bob = await ChatClient.connect({ port, nickname: 'bob', history: true });
        await bob.join('physics');
        const got = new Map<string, number[]>([
          ['lobby', []],
          ['physics', []],
        ]);
        const mine: string[] = [];
        bob.on('chat', (m) => {
          if (m.from === 'ann') mine.push(m.msg);
        });
        const resumed = next(ann, 'resumed');
        ann.on('chat', (m) => {
          got.get(m.room)!.push(Number(m.msg.split(' ')[1]));
          if (m.room === 'lobby' && m.msg === 'lobby 50') {
            // Ann's chat reaches the server, its "71" never reaches her.
            relay.holdReplies();
            ann.chat('sent as the line died', 'physics');
            void until(() => mine.length === 1, 'ann’s chat at bob').then(() =>
              mode === 'cut' ? relay.cut() : relay.strand(),
            );
          }
        });
        for (let i = 1; i <= N; i++) {
          bob.chat(`lobby ${i}`);
          bob.chat(`physics ${i}`, 'physics');
        }
        const back = await resumed;
        expect(back.rooms).toEqual([
          { room: 'lobby', recovered: true },
          { room: 'physics', recovered: true },
        ]);
        // Half-open, the old session was still there to take back.
        expect(back.resumed).toBe(mode === 'strand');
        await until(
          () => got.get('lobby')!.at(-1) === N && got.get('physics')!.at(-1) === N,
          'the last messages',
        );
        const all = Array.from({ length: N }, (_, i) => i + 1);
        expect(got.get('lobby')).toEqual(all);
        expect(got.get('physics')).toEqual(all);
        await until(() => ann.unacknowledged === 0, 'the re-sent chat’s acknowledgement');
        await bob.rtt();
        expect(mine).toEqual(['sent as the line died']);
        expect(ann.nickname).toBe('ann');
        await ann.exit();
        await bob.exit();
      } finally {
        await relay.close();
        await server.stop();
      }
    });
  }
});

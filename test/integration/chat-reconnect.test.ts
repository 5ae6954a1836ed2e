import { describe, expect, it } from 'vitest';
import { ChatClient, type ChatEvents } from '../../src/client/chat-client.js';
import { ErrorCode } from '../../src/protocol/codes.js';
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
      await relay.stop();
      await server.stop();
    }
  });

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
      await relay.stop();
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
      await relay.stop();
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

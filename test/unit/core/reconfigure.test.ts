import { describe, expect, it } from 'vitest';
import { BannedWords } from '../../../src/core/banned-words.js';
import { Chat } from '../../../src/core/chat.js';
import { ErrorCode } from '../../../src/protocol/codes.js';
import { joinChat, sendRequest as send } from '../../helpers/fake-peer.js';

const connect = (chat: Chat, nickname: string, ip?: string) =>
  joinChat(chat, nickname, ['errors'], ip);

describe('Chat.reconfigure', () => {
  it('applies new rules to the next request and disconnects nobody', () => {
    const chat = new Chat({ maxUsers: 3, maxMessage: 100 });
    const ann = connect(chat, 'ann');
    const bob = connect(chat, 'bob');
    const cat = connect(chat, 'cat');
    for (const p of [ann, bob, cat]) p.take();
    chat.reconfigure({
      maxUsers: 2,
      maxMessage: 5,
      bannedWords: new BannedWords(['boo']),
      hideAddresses: true,
    });
    expect([ann, bob, cat].map((p) => p.closedWith)).toEqual([undefined, undefined, undefined]);
    send(ann, { cmd: '7', msg: 'too long' });
    expect(ann.take()).toMatchObject([{ cmd: '90', code: ErrorCode.MESSAGE_TOO_LONG }]);
    send(ann, { cmd: '1' });
    expect(ann.take()).toMatchObject([
      {
        cmd: '10',
        users: [
          ['ann', 'hidden', 0],
          ['bob', 'hidden', 0],
          ['cat', 'hidden', 0],
        ],
      },
    ]);
    send(bob, { cmd: '7', msg: 'BOO' });
    expect(bob.closedWith).toBe('banned-words');
    // Two members remain in a room of two now: full for a newcomer.
    const dan = connect(chat, 'dan');
    expect(dan.take()).toEqual([{ cmd: '02' }]);
  });

  it('gives open sessions a bucket at the new rate, or none', () => {
    const now = 0;
    const chat = new Chat({ rateLimit: 5, rateBurst: 5, clock: () => now });
    const ann = connect(chat, 'ann');
    ann.take();
    chat.reconfigure({ rateLimit: 0 });
    for (let i = 0; i < 8; i++) send(ann, { cmd: '4' });
    expect(ann.take().filter((m) => m.cmd === '90')).toEqual([]);
    chat.reconfigure({ rateLimit: 6, rateBurst: 6 });
    for (let i = 0; i < 7; i++) send(ann, { cmd: '4' });
    expect(ann.take().map((m) => m.cmd)).toEqual([...Array(6).fill('40'), '90']);
  });

  it('keeps flood control off, until it reconnects, for a client told there was none; a course client gets it', () => {
    const now = 0;
    const chat = new Chat({ rateLimit: 0, clock: () => now });
    const ann = connect(chat, 'ann');
    expect(ann.take()[0]).toMatchObject({ cmd: '03', limits: { rate: 0 } });
    // Told nothing: the course protocol.
    const course = joinChat(chat, 'course', undefined);
    course.take();
    ann.take();
    chat.reconfigure({ rateLimit: 1, rateBurst: 2 });
    // A page pasted at once, which it had no pace to keep to: none refused, nobody cut off.
    for (let i = 0; i < 60; i++) send(ann, { cmd: '4' });
    expect(ann.take().map((m) => m.cmd)).toEqual(Array(60).fill('40'));
    expect(ann.closedWith).toBeUndefined();
    for (let i = 0; i < 3; i++) send(course, { cmd: '1' });
    expect(course.take().map((m) => m.cmd)).toEqual(['10', '10']);
    // Its next connection is told the limits, and held to them.
    const bea = connect(chat, 'bea', '192.0.2.9');
    expect(bea.take()[0]).toMatchObject({ cmd: '03', limits: { rate: 1, burst: 2 } });
    for (let i = 0; i < 3; i++) send(bea, { cmd: '4' });
    expect(bea.take().map((m) => m.cmd)).toEqual(['40', '40', '90']);
  });

  it('never lowers a session below the flood limits its "03" told it', () => {
    let now = 0;
    const chat = new Chat({ rateLimit: 2, rateBurst: 3, clock: () => now });
    const ann = connect(chat, 'ann');
    expect(ann.take()[0]).toMatchObject({ cmd: '03', limits: { rate: 2, burst: 3 } });
    // A course client is told nothing: the new limits are its limits.
    const bob = joinChat(chat, 'bob');
    bob.take();
    ann.take();
    chat.reconfigure({ rateLimit: 1, rateBurst: 1 });
    for (let i = 0; i < 4; i++) send(ann, { cmd: '4' });
    expect(ann.take().map((m) => m.cmd)).toEqual(['40', '40', '40', '90']);
    for (let i = 0; i < 2; i++) send(bob, { cmd: '4' });
    expect(bob.take().map((m) => m.cmd)).toEqual(['40']);
    // Raised limits apply to it at once; a newcomer is told (and held to) the new ones.
    now += 10_000;
    chat.reconfigure({ rateLimit: 4, rateBurst: 5 });
    for (let i = 0; i < 6; i++) send(ann, { cmd: '4' });
    expect(ann.take().map((m) => m.cmd)).toEqual(['40', '40', '40', '40', '40', '90']);
    chat.reconfigure({ rateLimit: 1, rateBurst: 1 });
    // From another address: ann's has just spent its allowance, which a newcomer there shares.
    const cat = connect(chat, 'cat', '192.0.2.3');
    ann.take();
    expect(cat.take()[0]).toMatchObject({ cmd: '03', limits: { rate: 1, burst: 1 } });
    for (let i = 0; i < 2; i++) send(cat, { cmd: '4' });
    expect(cat.take().map((m) => m.cmd)).toEqual(['40', '90']);
  });

  it('applies new connection caps to new connections only', () => {
    const chat = new Chat({ maxConnectionsPerIp: 0 });
    const a = connect(chat, 'a', '10.0.0.1');
    expect(chat.admission.tryOpen('10.0.0.1')).toBe(true);
    expect(chat.admission.tryOpen('10.0.0.1')).toBe(true);
    chat.reconfigure({ maxConnectionsPerIp: 2 });
    // Listeners count every socket at accept: the third from that address is turned away.
    expect(chat.admission.tryOpen('10.0.0.1')).toBe(false);
    expect(chat.admission.tryOpen('10.0.0.2')).toBe(true);
    expect(a.closedWith).toBeUndefined();
  });
});

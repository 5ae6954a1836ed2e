import { afterEach, expect, it, vi } from 'vitest';
import { Chat } from '../../../src/core/chat.js';
import type { Request, ServerMessage } from '../../../src/protocol/messages.js';
import { MemoryHistoryStore } from '../../../src/store/memory-history.js';
import { FakePeer } from '../../helpers/fake-peer.js';

const CAPS = ['errors', 'rooms', 'history'];
let chat: Chat;

afterEach(() => chat?.shutdown());

function connect(nickname: string, extra: Partial<Request> = {}): FakePeer {
  const peer = new FakePeer();
  peer.session = chat.open(peer);
  send(peer, { cmd: '0', nickname, caps: CAPS, ...extra } as Request);
  return peer;
}

function send(peer: FakePeer, request: Request): void {
  peer.session.receive({ ok: true, request });
}

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 2));
  if (!check()) throw new Error('timed out');
}

const count = (messages: ServerMessage[], cmd: string) =>
  messages.filter((m) => m.cmd === cmd).length;

it('looks up each "since" room name once per CONNECT, however many rooms a resume takes back', async () => {
  chat = new Chat({
    history: new MemoryHistoryStore({ retention: { maxMessages: 100, maxAgeMs: 0 } }),
  });
  const ann = connect('ann');
  for (let i = 1; i < 20; i++) send(ann, { cmd: '100', room: `room${i}` });
  await until(() => count(ann.outbox, '101') === 20);
  const token = (ann.outbox.find((m) => m.cmd === '03') as { resume: string }).resume;
  // Names that match no room: each costs a look-alike fold as long as the name.
  const since = Array.from({ length: 32 }, (_, i) => ({ room: `x${i}`, epoch: 'e', id: 1 }));
  const find = vi.spyOn(chat.rooms, 'find');
  const back = connect('ignored', { resume: token, since });
  await until(() => count(back.outbox, '101') === 20);
  expect(find.mock.calls.filter(([name]) => name.startsWith('x')).length).toBe(32);
});

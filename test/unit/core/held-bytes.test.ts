/**
 * Live events of a room whose history is being replayed wait, held, in the
 * session (docs/protocol.md, "History and resume"). They were capped at 10,000
 * per room, whatever their size: 10,000 chats of 4,096 emoji are some 300 MB
 * kept alive for one client that reads nothing of its replay (20 rooms resumed
 * at once: 20 times that). Against a running server, a client that asked for
 * 1,000 messages and read nothing while 20 members chatted long messages for 16 s
 * grew it from 114 to 463 MB (the same chat with nobody holding: 178 MB).
 * The held events are now also capped in bytes; past it the session is closed
 * as a slow consumer, as past the count.
 */
import { afterEach, expect, it } from 'vitest';
import { Chat } from '../../../src/core/chat.js';
import type { HistoryStore, RoomHistory } from '../../../src/core/history.js';
import type { Request } from '../../../src/protocol/messages.js';
import { MemoryHistoryStore } from '../../../src/store/memory-history.js';
import { connectWith, type FakePeer, joinChat, sendRequest } from '../../helpers/fake-peer.js';

let chat: Chat | undefined;
afterEach(() => chat?.shutdown());

/** A memory store whose `room()` waits for `open()` once `gate()` was called: a replay under way. */
function gatedStore(): { store: HistoryStore; gate: () => void; open: () => void } {
  const inner = new MemoryHistoryStore({ retention: { maxMessages: 100, maxAgeMs: 0 } });
  let wait: Promise<void> | undefined;
  let open: () => void = () => {};
  const store: HistoryStore = {
    append: (room, draft) => inner.append(room, draft),
    room: async (room): Promise<RoomHistory> => {
      if (wait !== undefined) await wait;
      return inner.room(room);
    },
    read: (room, query) => inner.read(room, query),
    prune: (now) => inner.prune(now),
    close: () => inner.close(),
  };
  const gate = () => {
    wait = new Promise<void>((resolve) => {
      open = resolve;
    });
  };
  return { store, gate, open: () => open() };
}

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

/** A client with history that joins "busy" once the store is gated: its replay waits. */
async function slowJoiner(chat: Chat, gate: () => void): Promise<FakePeer> {
  const slow = connectWith(chat, {
    cmd: '0',
    nickname: 'slow',
    caps: ['rooms', 'history'],
    lobby: false,
  } as Request);
  await turns(2);
  gate();
  sendRequest(slow, { cmd: '100', room: 'busy' } as Request);
  await turns(2);
  return slow;
}

it('closes a client whose held live events pass some MB long before 10,000 of them', async () => {
  const { store, gate, open } = gatedStore();
  chat = new Chat({ history: store, maxMessage: 4096 });
  const talkers = Array.from({ length: 4 }, (_, i) => joinChat(chat!, `talker${i}`, ['rooms']));
  for (const t of talkers) sendRequest(t, { cmd: '100', room: 'busy' } as Request);
  await turns(5);
  // The replay waits on the store: the room's live chats are held for the slow client.
  const slow = await slowJoiner(chat, gate);
  const msg = '\u{1F600}'.repeat(4096);
  for (let round = 0; round < 100 && slow.closedWith === undefined; round++) {
    for (const t of talkers) sendRequest(t, { cmd: '7', room: 'busy', msg } as Request);
    await turns(2);
  }
  // 400 chats of 8,192 UTF-16 units each (6.5 MB of text) were sent; 10,000 were allowed before.
  expect(slow.closedWith).toBe('slow-consumer');
  open();
});

it('still holds the ordinary traffic of a busy room during a replay, and ends with its last chat', async () => {
  const { store, gate, open } = gatedStore();
  chat = new Chat({ history: store });
  const talker = joinChat(chat, 'talker', ['rooms']);
  sendRequest(talker, { cmd: '100', room: 'busy' } as Request);
  await turns(5);
  const slow = await slowJoiner(chat, gate);
  for (let i = 0; i < 2000; i++) {
    sendRequest(talker, {
      cmd: '7',
      room: 'busy',
      msg: `message ${i} ${'x'.repeat(200)}`,
    } as Request);
  }
  await turns(5);
  expect(slow.closedWith).toBeUndefined();
  open();
  await turns(20);
  // The replay shows the newest of them; the held copies it covers are dropped.
  const chats = slow.outbox.filter((m) => m.cmd === '70') as { msg: string }[];
  expect(chats.at(-1)?.msg).toMatch(/^message 1999 /);
});

/**
 * A recovery reads the store a page at a time, each page once the client has
 * taken the one before, and holds that page meanwhile: one per room, and a
 * resume takes up to 20 rooms back at once. A page was 100 messages whatever
 * their size: of 4,096 emoji each, 1.6 MB a room, so a client that resumed 20
 * rooms and read nothing held some 32 MB (against a running server with SQLite
 * history: ten such clients, 174 MB). Pages are now also bounded in bytes.
 */
import { afterEach, expect, it } from 'vitest';
import { Chat } from '../../../src/core/chat.js';
import type { HistoryQuery, HistoryStore, StoredMessage } from '../../../src/core/history.js';
import type { Request } from '../../../src/protocol/messages.js';
import { MemoryHistoryStore } from '../../../src/store/memory-history.js';
import { connectWith, type FakePeer, joinChat, sendRequest } from '../../helpers/fake-peer.js';

let chat: Chat | undefined;
afterEach(() => chat?.shutdown());

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 2000 && !check(); i++) await new Promise((r) => setImmediate(r));
  if (!check()) throw new Error('timed out');
}

/** The store, recording the UTF-16 units of text each replay read (one with `after`) returned. */
function recordingStore(): { store: HistoryStore; pages: number[]; counts: number[] } {
  const inner = new MemoryHistoryStore({ retention: { maxMessages: 1000, maxAgeMs: 0 } });
  const pages: number[] = [];
  const counts: number[] = [];
  const store: HistoryStore = {
    append: (room, draft) => inner.append(room, draft),
    room: (room) => inner.room(room),
    read: async (room: string, query: HistoryQuery): Promise<StoredMessage[]> => {
      const read = await inner.read(room, query);
      if (query.after !== undefined) {
        pages.push(read.reduce((n, m) => n + m.msg.length, 0));
        counts.push(read.length);
      }
      return read;
    },
    prune: (now) => inner.prune(now),
    close: () => inner.close(),
  };
  return { store, pages, counts };
}

/**
 * ann stores 300 chats (`request(i)`), then resumes its session asking for every message
 * after id 0: the connection it resumed on, once all 300 have come back.
 */
async function storeThenRecover(chat: Chat, request: (i: number) => Request): Promise<FakePeer> {
  const ann = joinChat(chat, 'ann', ['rooms', 'history']);
  await until(() => ann.outbox.some((m) => m.cmd === '101'));
  const welcome = ann.outbox.find((m) => m.cmd === '03') as { resume: string };
  const lobby = ann.outbox.find((m) => m.cmd === '101') as { epoch: string };
  for (let i = 0; i < 300; i++) sendRequest(ann, request(i));
  await until(() => ann.outbox.filter((m) => m.cmd === '71').length === 300);
  const back = connectWith(chat, {
    cmd: '0',
    nickname: 'ann',
    caps: ['rooms', 'history'],
    resume: welcome.resume,
    since: [{ room: 'lobby', epoch: lobby.epoch, id: 0 }],
  } as Request);
  await until(() => back.outbox.filter((m) => m.cmd === '70').length === 300);
  return back;
}

it('reads a recovery of long messages in pages of a few hundred KB, not 100 messages', async () => {
  const { store, pages, counts } = recordingStore();
  chat = new Chat({ history: store, maxMessage: 4096 });
  const msg = '\u{1F600}'.repeat(4096);
  const back = await storeThenRecover(chat, (i) => ({ cmd: '7', msg, cid: `c${i}` }) as Request);
  // Every message came back, in order, once.
  const ids = back.outbox.filter((m) => m.cmd === '70').map((m) => (m as { id: number }).id);
  expect(ids).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
  // 8,192 UTF-16 units a message: a page of 100 was 819,200 units (1.6 MB).
  expect(counts.reduce((a, b) => a + b, 0)).toBe(300);
  expect(Math.max(...pages)).toBeLessThanOrEqual(256 * 1024);
});

it('still reads short messages 100 at a time', async () => {
  const { store, counts } = recordingStore();
  chat = new Chat({ history: store });
  await storeThenRecover(chat, (i) => ({ cmd: '7', msg: `short ${i}` }) as Request);
  expect(Math.max(...counts)).toBe(100);
});

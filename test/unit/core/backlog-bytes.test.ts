/**
 * The backlog of requests waiting behind an unfinished one (a history read the
 * client asked for, paced to a client that reads slowly) is bounded in bytes,
 * not only in count: 64 frames of --max-frame each are 4 MiB per connection,
 * and sixty connections from one address that trickle-read their history held
 * some 220 MB of request text in a server this way.
 */
import { afterEach, expect, it } from 'vitest';
import { Chat } from '../../../src/core/chat.js';
import type { HistoryStore, RoomHistory } from '../../../src/core/history.js';
import type { Request } from '../../../src/protocol/messages.js';
import { MemoryHistoryStore } from '../../../src/store/memory-history.js';
import { FakePeer, sendRequest } from '../../helpers/fake-peer.js';

let chat: Chat | undefined;
afterEach(() => chat?.shutdown());

/** A peer that records whether its reading is paused, as a socket would be. */
class PausablePeer extends FakePeer {
  paused = false;
  pause(paused: boolean): void {
    this.paused = paused;
  }
}

/** A memory store whose `room()` answers only once `open()` is called: a history read under way. */
function gatedStore(): { store: HistoryStore; open: () => void } {
  const inner = new MemoryHistoryStore({ retention: { maxMessages: 100, maxAgeMs: 0 } });
  let open!: () => void;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  const store: HistoryStore = {
    append: (room, draft) => inner.append(room, draft),
    room: async (room): Promise<RoomHistory> => {
      await gate;
      return inner.room(room);
    },
    read: (room, query) => inner.read(room, query),
    prune: (now) => inner.prune(now),
    close: () => inner.close(),
  };
  return { store, open };
}

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

it('pauses reading once the requests waiting behind a history read hold a few hundred KB', async () => {
  const { store, open } = gatedStore();
  chat = new Chat({ history: store });
  const peer = new PausablePeer();
  peer.session = chat.open(peer);
  sendRequest(peer, {
    cmd: '0',
    nickname: 'hoarder',
    caps: ['errors', 'rooms', 'history'],
    lobby: false,
  } as Request);
  await turns(2);
  expect(peer.session.state).toBe('joined');
  sendRequest(peer, { cmd: '100', room: 'big' } as Request);
  // The join's replay waits on the store: everything after it waits in the backlog.
  const big = 'A'.repeat(60_000);
  for (let i = 0; i < 10; i++) sendRequest(peer, { cmd: '7', room: 'big', msg: big } as Request);
  // 10 frames of 60 KB (600 KB) wait, far fewer than the 64 that pause by count.
  expect(peer.paused).toBe(true);

  open();
  await turns(10);
  // Once the read is done the backlog is handled (each chat refused as too long) and reading resumes.
  expect(peer.paused).toBe(false);
  expect(peer.take().filter((m) => m.cmd === '90' && m.code === 1007)).toHaveLength(10);
});

it('does not pause a backlog of small requests before 64 of them', async () => {
  const { store, open } = gatedStore();
  chat = new Chat({ history: store, rateLimit: 0 });
  const peer = new PausablePeer();
  peer.session = chat.open(peer);
  sendRequest(peer, { cmd: '0', nickname: 'polite', caps: ['rooms', 'history'] } as Request);
  for (let i = 0; i < 63; i++) sendRequest(peer, { cmd: '4' } as Request);
  expect(peer.paused).toBe(false);
  sendRequest(peer, { cmd: '4' } as Request);
  expect(peer.paused).toBe(true);
  open();
  await turns(10);
  expect(peer.paused).toBe(false);
});

it('stores at most 64 chats of a session at once; the rest wait, and reading pauses', async () => {
  const inner = new MemoryHistoryStore({ retention: { maxMessages: 1000, maxAgeMs: 0 } });
  const gates: (() => void)[] = [];
  // A store that answers only when let: Redis stalled.
  const store: HistoryStore = {
    append: async (room, draft) => {
      await new Promise<void>((resolve) => gates.push(resolve));
      return inner.append(room, draft);
    },
    room: (room) => inner.room(room),
    read: (room, query) => inner.read(room, query),
    prune: (now) => inner.prune(now),
    close: () => inner.close(),
  };
  chat = new Chat({ history: store, rateLimit: 0 });
  const peer = new PausablePeer();
  peer.session = chat.open(peer);
  sendRequest(peer, { cmd: '0', nickname: 'fast', caps: ['rooms', 'history'] } as Request);
  await turns(5);
  peer.take();
  for (let i = 0; i < 200; i++) sendRequest(peer, { cmd: '7', msg: `m${i}` } as Request);
  expect(gates).toHaveLength(64);
  expect(peer.paused).toBe(true);
  // The store answers: every chat is stored, in order, and reading resumes.
  for (let round = 0; round < 10 && gates.length > 0; round++) {
    for (const open of gates.splice(0)) open();
    await turns(10);
  }
  const ids = peer
    .take()
    .filter((m) => m.cmd === '71')
    .map((m) => (m as { id?: number }).id);
  expect(ids).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
  expect(peer.paused).toBe(false);
});

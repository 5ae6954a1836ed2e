/**
 * A chat re-sent with its cid after a reconnect is stored once (docs/protocol.md,
 * "History and resume"). The store finds a cid by the sender's nickname, so a
 * RENAME between the first send and the re-send (a client that pipelined CHAT and
 * RENAME and lost the connection before either reply) made the re-send a new
 * message: the room got it twice.
 *
 * The store keeps each cid under the sending session's lasting identity instead
 * (MessageDraft.sender), which its resume token carries: to the connection that
 * takes the session back, on any node, and to a new session that presents a
 * token that takes nothing back any more (after a restart). A nickname's next
 * holder is never taken for the session that gave it up.
 */

import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { Chat } from '../../../src/core/chat.js';
import type { HistoryStore } from '../../../src/core/history.js';
import { MemoryPresence, PresenceHub } from '../../../src/core/memory-presence.js';
import type { Request, ServerMessage } from '../../../src/protocol/messages.js';
import { senderOrigin } from '../../../src/store/common.js';
import { MemoryBroker, MemoryBrokerHub } from '../../../src/store/memory-broker.js';
import { MemoryHistoryStore } from '../../../src/store/memory-history.js';
import { SqliteHistoryStore } from '../../../src/store/sqlite-history.js';
import { connectWith, type FakePeer, joinChat, sendRequest } from '../../helpers/fake-peer.js';
import { useTempDir } from '../../helpers/temp-dir.js';

const retention = { maxMessages: 100, maxAgeMs: 0 };
const caps = ['rooms', 'history'];
const STORES: [string, (maxMessages?: number) => HistoryStore][] = [
  [
    'memory',
    (maxMessages = 100) => new MemoryHistoryStore({ retention: { maxMessages, maxAgeMs: 0 } }),
  ],
  [
    'SQLite',
    (maxMessages = 100) =>
      new SqliteHistoryStore(':memory:', {
        retention: { maxMessages, maxAgeMs: 0 },
        pruneIntervalMs: 0,
      }),
  ],
];

let chat: Chat | undefined;
let store: HistoryStore | undefined;
afterEach(async () => {
  chat?.shutdown();
  await store?.close();
});

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 2));
  if (!check()) throw new Error('timed out');
}

const chats = (peer: FakePeer) =>
  peer.outbox.filter((m): m is ServerMessage & { from: string; msg: string } => m.cmd === '70');

/** A watcher, then ann, both with history, in a chat on `open`'s store. */
async function lobby(
  open: () => HistoryStore,
): Promise<{ chat: Chat; watcher: FakePeer; ann: FakePeer }> {
  store = open();
  chat = new Chat({ history: store });
  const watcher = joinChat(chat, 'watcher', caps);
  const ann = joinChat(chat, 'ann', caps);
  await until(() => ann.outbox.some((m) => m.cmd === '101'));
  return { chat, watcher, ann };
}

describe.each(STORES)('%s', (_name, open) => {
  it('stores a chat re-sent with its cid once, also when its sender renamed in between', async () => {
    const { chat, watcher, ann } = await lobby(open);
    const token = (ann.outbox.find((m) => m.cmd === '03') as { resume: string }).resume;
    // Pipelined; the replies are lost with the connection.
    sendRequest(ann, { cmd: '7', msg: 'pay bob 100', cid: 'a7f3-1' } as Request);
    sendRequest(ann, { cmd: '5', newNickname: 'anna' } as Request);
    await until(() => ann.outbox.some((m) => m.cmd === '51'));
    // The client comes back with its token and sends again what was never acknowledged.
    const back = connectWith(chat, { cmd: '0', nickname: 'ann', caps, resume: token } as Request);
    await until(() => back.outbox.some((m) => m.cmd === '101'));
    sendRequest(back, { cmd: '7', msg: 'pay bob 100', cid: 'a7f3-1' } as Request);
    await until(() => back.outbox.some((m) => m.cmd === '71' && m.cid === 'a7f3-1'));
    const stored = back.outbox.find((m) => m.cmd === '71') as { duplicate?: boolean };
    expect(stored.duplicate).toBe(true);
    expect(chats(watcher).filter((m) => m.msg === 'pay bob 100')).toHaveLength(1);
  });

  it('finds a cid under the name it was first sent with on the same connection, per room', async () => {
    const { watcher, ann } = await lobby(open);
    sendRequest(watcher, { cmd: '100', room: 'physics' } as Request);
    sendRequest(ann, { cmd: '100', room: 'physics' } as Request);
    await until(() => ann.outbox.filter((m) => m.cmd === '101').length === 2);
    sendRequest(ann, { cmd: '7', msg: 'one', cid: 'c1' } as Request);
    sendRequest(ann, { cmd: '5', newNickname: 'anna' } as Request);
    sendRequest(ann, { cmd: '7', msg: 'one', cid: 'c1' } as Request);
    // The same cid in another room is another message, sent as anna.
    sendRequest(ann, { cmd: '7', msg: 'two', cid: 'c1', room: 'physics' } as Request);
    sendRequest(ann, { cmd: '5', newNickname: 'ann' } as Request);
    sendRequest(ann, { cmd: '7', msg: 'two', cid: 'c1', room: 'physics' } as Request);
    const acks = () =>
      ann.outbox.filter((m) => m.cmd === '71') as { id: number; duplicate?: boolean }[];
    await until(() => acks().length === 4);
    expect(acks().map((m) => [m.id, m.duplicate === true])).toEqual([
      [1, false],
      [1, true],
      [1, false],
      [1, true],
    ]);
    expect(chats(watcher).map((m) => [m.from, m.msg])).toEqual([
      ['ann', 'one'],
      ['anna', 'two'],
    ]);
  });

  it("finds a cid re-sent by a new session that presents the old one's spent token, under any nickname", async () => {
    const { chat, watcher, ann } = await lobby(open);
    const token = (ann.outbox.find((m) => m.cmd === '03') as { resume: string }).resume;
    sendRequest(ann, { cmd: '7', msg: 'hello', cid: 'c1' } as Request);
    await until(() => ann.outbox.some((m) => m.cmd === '71'));
    sendRequest(ann, { cmd: '3' } as Request);
    await until(() => watcher.outbox.some((m) => m.cmd === '30'));
    const again = connectWith(chat, { cmd: '0', nickname: 'anna', caps, resume: token } as Request);
    await until(() => again.outbox.some((m) => m.cmd === '101'));
    expect(again.outbox.find((m) => m.cmd === '03')).toMatchObject({ resumed: false });
    sendRequest(again, { cmd: '7', msg: 'hello', cid: 'c1' } as Request);
    await until(() => again.outbox.some((m) => m.cmd === '71'));
    expect(again.outbox.find((m) => m.cmd === '71')).toMatchObject({ id: 1, duplicate: true });
    // A session without the token is another sender, under the first nickname too.
    const stranger = joinChat(chat, 'ann', caps);
    await until(() => stranger.outbox.some((m) => m.cmd === '101'));
    sendRequest(stranger, { cmd: '7', msg: 'hello', cid: 'c1' } as Request);
    await until(() => stranger.outbox.some((m) => m.cmd === '71'));
    const stored = stranger.outbox.find((m) => m.cmd === '71');
    expect(stored).toMatchObject({ id: 2 });
    expect(stored).not.toMatchObject({ duplicate: true });
    expect(chats(watcher).filter((m) => m.msg === 'hello')).toHaveLength(2);
  });
});

it("does not let a client presenting another session's spent token suppress that session's chats", async () => {
  const { chat, watcher, ann } = await lobby(STORES[0]![1]);
  const spent = (ann.outbox.find((m) => m.cmd === '03') as { resume: string }).resume;
  // ann's client takes its session back: the first token is spent, ann goes on.
  const back = connectWith(chat, { cmd: '0', nickname: 'ann', caps, resume: spent } as Request);
  await until(() => back.outbox.some((m) => m.cmd === '101'));
  expect(back.outbox.find((m) => m.cmd === '03')).toMatchObject({ resumed: true });
  // Someone else got hold of the spent token (a log, a shared machine) and presents it.
  const mallory = connectWith(chat, {
    cmd: '0',
    nickname: 'mallory',
    caps,
    resume: spent,
  } as Request);
  await until(() => mallory.outbox.some((m) => m.cmd === '101'));
  expect(mallory.outbox.find((m) => m.cmd === '03')).toMatchObject({ resumed: false });
  for (const cid of ['1', '2', '3']) {
    sendRequest(mallory, { cmd: '7', msg: 'noise', cid } as Request);
  }
  await until(() => mallory.outbox.filter((m) => m.cmd === '71').length === 3);
  sendRequest(back, { cmd: '7', msg: 'meet at noon', cid: '2' } as Request);
  await until(() => back.outbox.some((m) => m.cmd === '71'));
  expect(back.outbox.find((m) => m.cmd === '71')).not.toMatchObject({ duplicate: true });
  await until(() => chats(watcher).some((m) => m.msg === 'meet at noon'));
});

describe('after a restart on the same SQLite file', () => {
  const dir = useTempDir('confab-cid-restart-');

  it('stores once a chat re-sent, after a rename, by a client presenting the token from before', async () => {
    const file = path.join(dir.path, 'history.db');
    const open = () => new SqliteHistoryStore(file, { retention, pruneIntervalMs: 0 });
    store = open();
    chat = new Chat({ history: store });
    const ann = joinChat(chat, 'ann', caps);
    await until(() => ann.outbox.some((m) => m.cmd === '101'));
    const token = (ann.outbox.find((m) => m.cmd === '03') as { resume: string }).resume;
    sendRequest(ann, { cmd: '7', msg: 'pay bob 100', cid: 'a7f3-1' } as Request);
    sendRequest(ann, { cmd: '5', newNickname: 'anna' } as Request);
    await until(() => ann.outbox.some((m) => m.cmd === '51'));
    chat.shutdown();
    await store.close();
    store = open();
    chat = new Chat({ history: store });
    const watcher = joinChat(chat, 'watcher', caps);
    const back = connectWith(chat, { cmd: '0', nickname: 'anna', caps, resume: token } as Request);
    await until(() => back.outbox.some((m) => m.cmd === '101'));
    sendRequest(back, { cmd: '7', msg: 'pay bob 100', cid: 'a7f3-1' } as Request);
    await until(() => back.outbox.some((m) => m.cmd === '71'));
    expect(back.outbox.find((m) => m.cmd === '71')).toMatchObject({ id: 1, duplicate: true });
    // The watcher was shown it once, from history as it joined (a chat is delivered before its "71").
    expect(chats(watcher).filter((m) => m.msg === 'pay bob 100')).toHaveLength(1);
    // The file keeps a hash of the session's identity, from which no token can be made.
    await store.close();
    const db = new Database(file, { readonly: true });
    const names = db.prepare('SELECT "from" AS name FROM cids').all() as { name: string }[];
    db.close();
    expect(names).toHaveLength(1);
    expect(names[0]!.name).not.toContain(token.slice(0, 12));
  });
});

/** Two nodes of a cluster over one store; a watcher on the second. */
function twoNodes(): { a: Chat; b: Chat; watcher: FakePeer } {
  store = new MemoryHistoryStore({ retention });
  const presenceHub = new PresenceHub();
  const brokerHub = new MemoryBrokerHub();
  const [a, b] = ['n0', 'n1'].map(
    (node) =>
      new Chat({
        history: store!,
        cluster: {
          presence: new MemoryPresence({ hub: presenceHub, node }),
          broker: new MemoryBroker({ hub: brokerHub, node }),
          originOf: senderOrigin,
        },
      }),
  );
  return { a: a!, b: b!, watcher: joinChat(b!, 'watcher', caps) };
}

it.each([
  ['the same node', 0],
  ['another node', 1],
])('stores it once on a node of a cluster when the resume is on %s', async (_where, to) => {
  const { a, b, watcher } = twoNodes();
  try {
    const ann = joinChat(a, 'ann', caps);
    await until(() => ann.outbox.some((m) => m.cmd === '101'));
    await until(() => watcher.outbox.some((m) => m.cmd === '101'));
    const token = (ann.outbox.find((m) => m.cmd === '03') as { resume: string }).resume;
    sendRequest(ann, { cmd: '7', msg: 'pay bob 100', cid: 'a7f3-1' } as Request);
    sendRequest(ann, { cmd: '5', newNickname: 'anna' } as Request);
    await until(() => ann.outbox.some((m) => m.cmd === '51'));
    const node = to === 0 ? a : b;
    const back = connectWith(node, { cmd: '0', nickname: 'x', caps, resume: token } as Request);
    await until(() => back.outbox.some((m) => m.cmd === '101'));
    expect(back.outbox.find((m) => m.cmd === '03')).toMatchObject({
      resumed: true,
      nickname: 'anna',
    });
    sendRequest(back, { cmd: '7', msg: 'pay bob 100', cid: 'a7f3-1' } as Request);
    await until(() => back.outbox.some((m) => m.cmd === '71'));
    expect(back.outbox.find((m) => m.cmd === '71')).toMatchObject({ id: 1, duplicate: true });
    await until(() => chats(watcher).length > 0);
    expect(chats(watcher).filter((m) => m.msg === 'pay bob 100')).toHaveLength(1);
  } finally {
    a.shutdown();
    b.shutdown();
  }
});

it.each(STORES)(
  "does not take a renamed member's chat for a duplicate of the chat of whoever took its old name (%s)",
  async (_name, open) => {
    // The first message with the cid is gone (the count limit), so the cid is free again;
    // ann, now anna, sends it with a new chat, after the new holder of "ann" used the same cid.
    store = open(1);
    chat = new Chat({ history: store });
    const watcher = joinChat(chat, 'watcher', caps);
    const ann = joinChat(chat, 'ann', caps);
    await until(() => ann.outbox.some((m) => m.cmd === '101'));
    sendRequest(ann, { cmd: '7', msg: 'first', cid: 'X' } as Request);
    sendRequest(ann, { cmd: '7', msg: 'second' } as Request);
    sendRequest(ann, { cmd: '5', newNickname: 'anna' } as Request);
    await until(() => ann.outbox.some((m) => m.cmd === '51'));
    const other = joinChat(chat, 'ann', caps);
    await until(() => other.outbox.some((m) => m.cmd === '101'));
    sendRequest(other, { cmd: '7', msg: 'not yours', cid: 'X' } as Request);
    await until(() => other.outbox.some((m) => m.cmd === '71'));
    sendRequest(ann, { cmd: '7', msg: 'third', cid: 'X' } as Request);
    await until(() => ann.outbox.filter((m) => m.cmd === '71').length === 3);
    expect(ann.outbox.filter((m) => m.cmd === '71').at(-1)).not.toMatchObject({ duplicate: true });
    expect(chats(watcher).map((m) => m.msg)).toContain('third');
  },
);

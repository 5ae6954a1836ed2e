/**
 * Replays alone, against a memory store and a recorded session: what "101" says and what
 * follows it on a join (the newest messages, or the recovery after a position, then the
 * held events), and HISTORY's page. history-flow, replay-page-bytes and the history
 * integration tests run the same through Chat and real connections.
 */
import { expect, it, vi } from 'vitest';
import type { Delivery, Reply } from '../../../src/core/events.js';
import type { DisconnectReason } from '../../../src/core/ports.js';
import {
  MAX_REPLAY,
  PAGES_PER_TURN,
  PageTurns,
  type Recipient,
  Replays,
} from '../../../src/core/replay.js';
import type { SessionState } from '../../../src/core/session.js';
import type { Position } from '../../../src/protocol/messages.js';
import { MemoryHistoryStore } from '../../../src/store/memory-history.js';

/** A session that records, in order, what it is sent (chats by id) and what it releases. */
class Recorded implements Recipient {
  state: SessionState = 'joined';
  goneWith: DisconnectReason | undefined;
  readonly log: unknown[] = [];

  reply(reply: Reply): void {
    this.log.push(reply);
  }

  async sendPaced(deliveries: readonly Delivery[]): Promise<void> {
    for (const { item } of deliveries) this.log.push(item.type === 'chat' ? item.id : item);
  }

  async release(room: string, top: number, epoch: string): Promise<void> {
    this.log.push({ release: room, top, epoch });
  }
}

const lobby = { key: 'lobby', name: 'lobby', lastId: 7 };

async function storeWith(count: number, maxMessages = 2 * MAX_REPLAY): Promise<MemoryHistoryStore> {
  const store = new MemoryHistoryStore({ retention: { maxMessages, maxAgeMs: 0 } });
  for (let i = 1; i <= count; i++)
    await store.append('lobby', { at: i, from: 'ann', msg: `m${i}` });
  return store;
}

async function join(replays: Replays, since?: Position): Promise<Recorded> {
  const session = new Recorded();
  await replays.join(session, lobby, ['ann'], 1, since);
  return session;
}

function joined(epoch: string, top: number, recovered?: boolean, reason?: string) {
  return {
    type: 'room-joined',
    room: 'lobby',
    members: ['ann'],
    count: 1,
    history: { epoch, top, recovered, reason },
  };
}

it('without a store says so, and releases the room above its own last id', async () => {
  const replays = new Replays(undefined, 50);
  expect((await join(replays)).log).toEqual([
    joined('', 7),
    { release: 'lobby', top: 7, epoch: '' },
  ]);
  expect((await join(replays, { epoch: 'e', id: 3 })).log).toEqual([
    joined('', 7, false, 'off'),
    { release: 'lobby', top: 7, epoch: '' },
  ]);
});

it('sends the newest messages after "101" to a member that asks for nothing', async () => {
  const store = await storeWith(10);
  const { epoch } = await store.room('lobby');
  const replays = new Replays(store, 3);
  expect((await join(replays)).log).toEqual([
    joined(epoch, 10),
    8,
    9,
    10,
    { release: 'lobby', top: 10, epoch },
  ]);
  // A new setting counts from the next join on.
  replays.onJoin = 1;
  expect((await join(replays)).log).toEqual([
    joined(epoch, 10),
    10,
    { release: 'lobby', top: 10, epoch },
  ]);
});

it('recovers every message after the position, in order, however many pages it takes', async () => {
  const store = await storeWith(MAX_REPLAY);
  const { epoch } = await store.room('lobby');
  const session = await join(new Replays(store, 3), { epoch, id: 0 });
  expect(session.log[0]).toEqual(joined(epoch, MAX_REPLAY, true));
  expect(session.log.slice(1, -1)).toEqual(Array.from({ length: MAX_REPLAY }, (_, i) => i + 1));
  expect(session.log.at(-1)).toEqual({ release: 'lobby', top: MAX_REPLAY, epoch });
});

it('takes a turn of the event loop for each page of a recovery, so that others are served', async () => {
  const store = await storeWith(MAX_REPLAY);
  const { epoch } = await store.room('lobby');
  // Another connection's I/O, due all along: it waits for a turn.
  let turns = 0;
  const other = () => {
    if (++turns < 1000) setImmediate(other);
  };
  setImmediate(other);
  const session = await join(new Replays(store, 3), { epoch, id: 0 });
  const pages = turns;
  turns = 1000;
  expect(session.log).toHaveLength(MAX_REPLAY + 2);
  // Pages of 100 after a first of 16: eleven.
  expect(pages).toBeGreaterThanOrEqual(11);
});

it('stops a recovery once its client has gone, and reads nothing for a join after that', async () => {
  const store = await storeWith(MAX_REPLAY);
  const { epoch } = await store.room('lobby');
  const replays = new Replays(store, 3);
  const session = new Recorded();
  const send = session.sendPaced.bind(session);
  session.sendPaced = async (deliveries) => {
    await send(deliveries);
    // The connection closed while the first page was written.
    if (deliveries.length > 0) session.goneWith = 'lost';
  };
  await replays.join(session, lobby, ['ann'], 1, { epoch, id: 0 });
  expect(session.log.filter((e) => typeof e === 'number')).toHaveLength(16);
  expect(session.log.at(-1)).toEqual({ release: 'lobby', top: MAX_REPLAY, epoch });
  // Its next JOIN_ROOM, read before it went, is handled (others see it) without a replay.
  const read = vi.spyOn(store, 'read');
  await replays.join(session, lobby, ['ann'], 1, { epoch, id: 0 });
  expect(read).not.toHaveBeenCalled();
});

it('tells why a position cannot be recovered from, and sends the newest instead', async () => {
  const store = await storeWith(MAX_REPLAY + 2);
  const { epoch } = await store.room('lobby');
  const top = MAX_REPLAY + 2;
  const replays = new Replays(store, 1);
  const cases: [Position, string][] = [
    [{ epoch: 'other', id: 5 }, 'epoch'],
    [{ epoch, id: top + 1 }, 'ahead'],
    [{ epoch, id: 1 }, 'too-many'],
  ];
  for (const [since, reason] of cases) {
    expect((await join(replays, since)).log).toEqual([
      joined(epoch, top, false, reason),
      top,
      { release: 'lobby', top, epoch },
    ]);
  }
  // MAX_REPLAY behind is still recovered; nothing missing is recovered too.
  expect((await join(replays, { epoch, id: 2 })).log[0]).toEqual(joined(epoch, top, true));
  expect((await join(replays, { epoch, id: top })).log).toEqual([
    joined(epoch, top, true),
    { release: 'lobby', top, epoch },
  ]);
});

it('says "deleted" when retention removed messages after the position', async () => {
  const store = await storeWith(10, 5);
  const { epoch } = await store.room('lobby');
  expect((await join(new Replays(store, 2), { epoch, id: 3 })).log).toEqual([
    joined(epoch, 10, false, 'deleted'),
    9,
    10,
    { release: 'lobby', top: 10, epoch },
  ]);
});

it('sends nothing to a session closed while the store was read', async () => {
  const store = await storeWith(3);
  const session = new Recorded();
  const work = new Replays(store, 50).join(session, lobby, ['ann'], 1, undefined);
  session.state = 'closed';
  await work;
  expect(session.log).toEqual([]);
});

it('answers HISTORY without a store at once, with nothing to wait for', () => {
  const session = new Recorded();
  expect(new Replays(undefined, 50).page(session, lobby, undefined, 10)).toBeUndefined();
  expect(session.log).toEqual([
    { type: 'history', room: 'lobby', epoch: '', messages: [], more: false },
  ]);
});

it('pages HISTORY back from the newest, and says whether older ones are stored', async () => {
  const store = await storeWith(10);
  const { epoch } = await store.room('lobby');
  const replays = new Replays(store, 50);
  const ids = async (before: number | undefined, limit: number) => {
    const session = new Recorded();
    await replays.page(session, lobby, before, limit);
    const [page] = session.log as { epoch: string; messages: { id: number }[]; more: boolean }[];
    expect(page!.epoch).toBe(epoch);
    return { ids: page!.messages.map((m) => m.id), more: page!.more };
  };
  expect(await ids(undefined, 3)).toEqual({ ids: [8, 9, 10], more: true });
  expect(await ids(4, 5)).toEqual({ ids: [1, 2, 3], more: false });
  expect(await ids(1, 5)).toEqual({ ids: [], more: false });
});

/** Counts the turns of the event loop until stopped. */
function turnCounter() {
  const counter = { turn: 0, ticking: true };
  const tick = () => {
    counter.turn++;
    if (counter.ticking) setImmediate(tick);
  };
  setImmediate(tick);
  return counter;
}

/** A store of 30 messages that records which turn of the event loop each of its reads came in. */
async function storeCountingTurns() {
  const store = await storeWith(30);
  const counter = turnCounter();
  const turns: number[] = [];
  const read = store.read.bind(store);
  store.read = (room, query) => {
    turns.push(counter.turn);
    return read(room, query);
  };
  return { store, turns, stop: () => (counter.ticking = false) };
}

it('lets at most PAGES_PER_TURN pages through a turn of the event loop, for all sessions together', async () => {
  const { store, turns, stop } = await storeCountingTurns();
  const replays = new Replays(store, 50);
  const sessions = Array.from({ length: 40 }, () => new Recorded());
  await Promise.all(sessions.map((s) => replays.page(s, lobby, undefined, 10)));
  stop();
  expect(turns).toHaveLength(40);
  const perTurn = new Map<number, number>();
  for (const t of turns) perTurn.set(t, (perTurn.get(t) ?? 0) + 1);
  expect(Math.max(...perTurn.values())).toBeLessThanOrEqual(PAGES_PER_TURN);
  // Every session got its page.
  for (const s of sessions) expect(s.log).toHaveLength(1);
});

it('gives pages their turns in the order they asked, PAGES_PER_TURN a turn', async () => {
  const turns = new PageTurns();
  const gone: number[] = [];
  const all = Array.from({ length: 10 }, (_, i) => turns.next().then(() => gone.push(i)));
  const aTurn = () => new Promise((resolve) => setImmediate(resolve));
  await aTurn();
  expect(gone).toEqual([0, 1, 2, 3]);
  await aTurn();
  expect(gone).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  await aTurn();
  expect(gone).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  await Promise.all(all);
  // Asked for again later, a page gets the next turn.
  await turns.next();
});

it('encodes at most PAGES_PER_TURN pages a turn, with a store whose answers come back together', async () => {
  const store = await storeWith(30);
  const read = store.read.bind(store);
  // A store across a network: every answer a few turns later, many in one socket read.
  let answer: (() => void) | undefined;
  const answered = new Promise<void>((resolve) => {
    answer = resolve;
  });
  let reads = 0;
  store.read = async (room, query) => {
    reads++;
    await answered;
    return read(room, query);
  };
  const counter = turnCounter();
  const sentIn: number[] = [];
  class Counted extends Recorded {
    override async sendPaced(deliveries: readonly Delivery[]): Promise<void> {
      sentIn.push(counter.turn);
      await super.sendPaced(deliveries);
    }
  }
  const replays = new Replays(store, 50);
  const sessions = Array.from({ length: 40 }, () => new Counted());
  const pages = Promise.all(sessions.map((s) => replays.page(s, lobby, undefined, 10)));
  // Every read starts, PAGES_PER_TURN a turn, without waiting for the ones before.
  while (reads < 40) await new Promise((resolve) => setImmediate(resolve));
  answer!();
  await pages;
  counter.ticking = false;
  for (const s of sessions) expect(s.log).toHaveLength(1);
  const perTurn = new Map<number, number>();
  for (const t of sentIn) perTurn.set(t, (perTurn.get(t) ?? 0) + 1);
  expect(Math.max(...perTurn.values())).toBe(PAGES_PER_TURN);
});

it('lets the page of a session gone meanwhile go without taking one of the turn’s places', async () => {
  const turns = new PageTurns();
  const gone: number[] = [];
  for (let i = 0; i < 10; i++) void turns.next(() => i < 6).then(() => gone.push(i));
  await new Promise((resolve) => setImmediate(resolve));
  expect(gone).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

it('does not make joins wait for each other: each reads its page in a turn of its own', async () => {
  const { store, turns, stop } = await storeCountingTurns();
  const replays = new Replays(store, 10);
  // Thousands of clients coming back after a restart each join the lobby at once.
  await Promise.all(Array.from({ length: 40 }, () => join(replays)));
  stop();
  expect(turns).toHaveLength(40);
  expect(new Set(turns).size).toBe(1);
});

/**
 * A room's stored history sent to one member: after "101" when it joins or resumes
 * (`join`: the newest messages, or the recovery after the position it asks for, then its
 * held live events) and on HISTORY (`page`: a "107").
 *
 * The store is read a page at a time as the client takes the one before, and what is sent
 * is paced by the client's reading: a slow reader is waited for, not cut off, and holds
 * one page per room meanwhile. `Chat` owns one and runs what it returns as the request's
 * work (`Chat.background`), so later requests wait for it.
 */
import type { NotRecovered, Position } from '../protocol/messages.js';
import { Delivery, type HistoryHeader, type Reply, type SaidEvent } from './events.js';
import {
  asAction,
  type HistoryQuery,
  type HistoryStore,
  type RoomHistory,
  type StoredMessage,
} from './history.js';
import type { DisconnectReason } from './ports.js';
import type { Room } from './room.js';
import type { SessionState } from './session.js';

/** What a replay needs of the session it is for. */
export interface Recipient {
  readonly state: SessionState;
  /**
   * Its connection closed while its requests were still being handled (Session.goneWith):
   * they are handled for what others see, but nothing sent reaches it.
   */
  readonly goneWith: DisconnectReason | undefined;
  reply(reply: Reply): void;
  /** Resolves once the client has taken them (or is gone). */
  sendPaced(deliveries: readonly Delivery[]): Promise<void>;
  /** Sends the live events held for `room` but the chats the replay covered (see Session). */
  release(room: string, top: number, epoch: string, current?: () => Promise<string>): Promise<void>;
}

/** Nothing sent to it reaches its client any more. */
function unreachable(session: Recipient): boolean {
  return session.state === 'closed' || session.goneWith !== undefined;
}

/** What a replay needs of the room. */
export type ReplayedRoom = Pick<Room, 'key' | 'name' | 'lastId'>;

/** The most messages one recovery replays; a larger gap is "too-many" (HISTORY pages through it). */
export const MAX_REPLAY = 1000;
/**
 * A "107", or the newest history after a "101" that recovers nothing, takes
 * about this many bytes at most (the newest messages that fit, and always
 * one). A "107" is one frame, which pacing cannot split: a larger one could
 * pass the default --max-queue (1 MiB) and cut off the client that asked. A
 * message escapes to up to six bytes a character (control characters). A
 * recovery is not bounded by bytes: it is sent message by message, paced.
 */
const MAX_PAGE_BYTES = 256 * 1024;

/** About what one message takes on the wire: its text as JSON, in UTF-8, and the fields around it. */
function wireSize(m: StoredMessage): number {
  return Buffer.byteLength(JSON.stringify(m.msg)) + Buffer.byteLength(JSON.stringify(m.from)) + 100;
}

/** Attempts of readInEpoch before it gives up on a page. */
const EPOCH_READS = 3;

/**
 * A page of a room's history with the epoch it belongs to: the room's epoch before and
 * after the read (an epoch never comes back, so a page read between two equal ones is
 * of that epoch). A Redis restarted empty between the two would otherwise label the new
 * epoch's ids 1, 2, … with the old one. Read again if it changed; an empty page of the
 * newest epoch if it keeps changing. `known`: the room as just read, if it was.
 */
async function readInEpoch(
  history: HistoryStore,
  key: string,
  query: HistoryQuery,
  known?: RoomHistory,
): Promise<{ info: RoomHistory; messages: readonly StoredMessage[] }> {
  let info = known ?? (await history.room(key));
  for (let attempt = 1; ; attempt++) {
    const messages = await history.read(key, query);
    const after = await history.room(key);
    if (after.epoch === info.epoch) return { info, messages };
    info = after;
    if (attempt >= EPOCH_READS) return { info, messages: [] };
  }
}

/** The newest of `messages` (oldest first) that fit in one page; at least one. */
function newestPage(messages: readonly StoredMessage[]): readonly StoredMessage[] {
  let bytes = 0;
  let first = messages.length;
  while (first > 0) {
    bytes += wireSize(messages[first - 1]!);
    if (bytes > MAX_PAGE_BYTES && first < messages.length) break;
    first--;
  }
  return messages.slice(first);
}

/**
 * Messages a page reads first, before their size is known; more only if the page has room
 * for them. Read whole, a HISTORY of 100 long messages read all 100 (2.4 MB from the store)
 * to send the ten that fit in a page.
 */
const FIRST_PAGE_READ = 16;

/**
 * The newest messages before `before` (all the newest without it), at most `limit`, that
 * fit in one page (newestPage), with the epoch they belong to. Read in at most two steps,
 * so that a page of long messages costs the store about what it sends.
 */
async function readNewest(
  history: HistoryStore,
  key: string,
  before: number | undefined,
  limit: number,
  known?: RoomHistory,
): Promise<{ info: RoomHistory; messages: readonly StoredMessage[] }> {
  const first = Math.min(limit, FIRST_PAGE_READ);
  const page = await readInEpoch(
    history,
    key,
    before === undefined ? { limit: first } : { before, limit: first },
    known,
  );
  let messages = page.messages;
  const oldest = messages[0];
  if (oldest !== undefined && messages.length === first && first < limit) {
    let bytes = 0;
    for (const m of messages) bytes += wireSize(m);
    // As many more as fit by the average size of those read, and at least the one
    // newestPage may drop.
    const fit = Math.floor(((MAX_PAGE_BYTES - bytes) * messages.length) / bytes) + 1;
    const more = Math.min(limit - first, Math.max(0, fit));
    if (more > 0) {
      const older = await readInEpoch(history, key, { before: oldest.id, limit: more }, page.info);
      // Of another epoch (Redis restarted empty between the two): the newer part alone.
      if (older.info.epoch === page.info.epoch) messages = [...older.messages, ...messages];
    }
  }
  return { info: page.info, messages: newestPage(messages) };
}

/** Resolves on the next turn of the event loop, after every callback already due. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Pages of history read and sent in one turn of the event loop, for all sessions together. */
export const PAGES_PER_TURN = 4;

interface PageWaiter {
  readonly go: () => void;
  /** Its session is gone: it goes at once, without taking one of the turn's pages. */
  readonly gone: () => boolean;
}

/**
 * The turns the pages of history after the first share (HISTORY, and a recovery's later
 * pages; a join's one page takes a turn of its own): each waits for a turn of the event
 * loop, and a turn lets at most PAGES_PER_TURN go, in the order they asked, the rest waiting
 * for the next. A turn a page per session let 40 connections of one address, each asking for
 * pages within flood control, hold every other client's I/O for 0.3–0.7 s a turn (a page is
 * a store read and the encoding of up to 256 KB). A page waits for two: one to read
 * (Replays.turns), one to encode once read (Replays.encodes), so that with a store across a
 * network, whose answers to reads started over many turns may come back in one socket read,
 * no more than PAGES_PER_TURN are encoded in a turn either.
 */
export class PageTurns {
  private waiting: PageWaiter[] = [];
  /** Where the waiting start in `waiting` (those before it have gone). */
  private head = 0;
  private scheduled = false;

  /** Resolves in a later turn of the event loop, once this page's turn comes. */
  next(gone: () => boolean = () => false): Promise<void> {
    return new Promise((go) => {
      this.waiting.push({ go, gone });
      if (this.scheduled) return;
      this.scheduled = true;
      setImmediate(this.turn);
    });
  }

  private readonly turn = (): void => {
    const now: (() => void)[] = [];
    let given = 0;
    while (this.head < this.waiting.length && given < PAGES_PER_TURN) {
      const waiter = this.waiting[this.head++]!;
      if (!waiter.gone()) given++;
      now.push(waiter.go);
    }
    if (this.head === this.waiting.length) {
      this.waiting = [];
      this.head = 0;
      this.scheduled = false;
    } else {
      // Thousands of pages may wait here: the array is not shifted a page at a time.
      if (this.head > 1024 && this.head * 2 > this.waiting.length) {
        this.waiting = this.waiting.slice(this.head);
        this.head = 0;
      }
      setImmediate(this.turn);
    }
    for (const go of now) go();
  };
}

/** Why `since` cannot be recovered from, or undefined when every message after it is stored. */
function notRecovered(room: RoomHistory, since: Position): NotRecovered | undefined {
  // A client that had seen nothing of the room, which holds nothing now, misses nothing it
  // could be given: on a cluster a room nobody wrote to gets a new epoch once it has been
  // empty for a while, and a member coming back to it is not told of a
  // loss. The one loss this hides is of chats it never saw, in a Redis restarted empty.
  if (since.epoch !== room.epoch) return since.id === 0 && room.top === 0 ? undefined : 'epoch';
  if (since.id > room.top) return 'ahead';
  const from = replayFrom(room, since);
  // A quiet room whose messages all aged out still has nothing missing.
  if (from === room.top) return undefined;
  if (from < room.oldest - 1) return 'deleted';
  if (room.top - from > MAX_REPLAY) return 'too-many';
  return undefined;
}

/** Where a recovery from `since` reads on from: ids up to the room's base were never used. */
function replayFrom(room: RoomHistory, since: Position): number {
  return Math.max(since.id, room.base ?? 0);
}

function chatDelivery(room: string, m: StoredMessage): Delivery {
  const chat: SaidEvent = { type: 'chat', room, id: m.id, at: m.at, from: m.from, msg: m.msg };
  return new Delivery(asAction(chat, m.action === true));
}

/**
 * Messages a recovery reads from the store at once. The replay is read page by
 * page as the client takes it: read whole, a slow reader's resume of 20 rooms
 * would hold 20,000 messages (80 MB) for as long as it keeps reading.
 */
const REPLAY_PAGE = 100;
/**
 * The first page of a recovery, before the size of its messages is known. Later
 * pages hold about MAX_PAGE_BYTES as sent (at most REPLAY_PAGE messages): 100
 * messages of 4,096 emoji are 1.6 MB, held per room while the client reads
 * the page before, and a resume replays up to 20 rooms at once.
 */
const FIRST_REPLAY_PAGE = 16;

/** Where a recovery's next page starts, and what it is of. */
interface ReplayCursor {
  readonly from: number;
  readonly top: number;
  readonly limit: number;
  readonly epoch: string;
}

/** A page of a recovery handed to the client's queue, and where the next one starts. */
interface ReplayPage {
  readonly sent: Promise<void>;
  readonly next?: { readonly from: number; readonly limit: number };
}

/** The history replays of one Chat. */
export class Replays {
  /** Shared by the HISTORY pages and recoveries' later pages of this Chat's sessions. */
  private readonly turns = new PageTurns();
  /** The same pages once read, to be encoded (PageTurns). */
  private readonly encodes = new PageTurns();

  /**
   * `history`: where room history is kept; without one nothing is stored and nothing can
   * be recovered. `onJoin`: messages sent after "101" to a client that does not ask to
   * recover; Chat.reconfigure changes it, and a join reads it when it reads the store.
   */
  constructor(
    private readonly history: HistoryStore | undefined,
    public onJoin: number,
  ) {}

  /**
   * "101" for a member just added to `room`, with the room's history, recovered from
   * `since` when it can be, then the live events of the room held meanwhile
   * (Session.holdRoom), so nothing is missed or repeated between the two.
   */
  async join(
    session: Recipient,
    room: ReplayedRoom,
    members: readonly string[],
    count: number,
    since: Position | undefined,
  ): Promise<void> {
    // A turn first, as for HISTORY (readPage): pipelined JOIN_ROOMs with `since` are each a
    // replay of up to MAX_REPLAY messages, and a client that closed is seen to be gone. Its
    // own turn, not a shared one (PageTurns): every CONNECT joins the lobby, and thousands
    // of clients coming back after a restart would wait for each other's joins, their
    // rooms' live events piling up behind them meanwhile. A join reads one page.
    await nextTurn();
    const history = this.history;
    let header: HistoryHeader;
    let messages: readonly StoredMessage[] = [];
    /** Where a recovery reads on from. */
    let after = 0;
    if (history === undefined || unreachable(session)) {
      header = {
        epoch: '',
        top: room.lastId,
        recovered: since === undefined ? undefined : false,
        reason: since === undefined ? undefined : 'off',
      };
    } else {
      let info = await history.room(room.key);
      let reason = since === undefined ? undefined : notRecovered(info, since);
      const recovered = since === undefined ? undefined : reason === undefined;
      if (recovered === true) after = replayFrom(info, since!);
      else {
        const page = await readNewest(history, room.key, undefined, this.onJoin, info);
        // The page is of another epoch than the one the reason was found in: told against it.
        if (since !== undefined && page.info.epoch !== info.epoch) {
          reason = notRecovered(page.info, since) ?? reason;
        }
        info = page.info;
        messages = page.messages;
      }
      const last = messages.length > 0 ? messages[messages.length - 1]!.id : 0;
      const top = Math.max(info.top, last, recovered === true ? since!.id : 0);
      header = { epoch: info.epoch, top, recovered, reason };
    }
    if (session.state === 'closed') return;
    session.reply({ type: 'room-joined', room: room.name, members, count, history: header });
    // At the client's pace: a resume on a slow link gets all it asked for
    // rather than being cut off as a slow consumer; live events wait, held.
    await session.sendPaced(messages.map((m) => chatDelivery(room.name, m)));
    if (header.recovered === true && history !== undefined) {
      await this.replayAfter(session, history, room, after, header.top, header.epoch);
    }
    // A message the read saw may still be on its way to the room's members;
    // one turn later it has arrived, held, and release() drops it.
    await nextTurn();
    await session.release(
      room.name,
      header.top,
      header.epoch,
      history === undefined ? undefined : async () => (await history.room(room.key)).epoch,
    );
  }

  /**
   * The recovery: the messages after `after` up to `top`, read a page at a time
   * as the client takes the one before. Later ones come live, held meanwhile.
   */
  private async replayAfter(
    session: Recipient,
    history: HistoryStore,
    room: ReplayedRoom,
    after: number,
    top: number,
    epoch: string,
  ): Promise<void> {
    let at: ReplayCursor = { from: after, top, limit: FIRST_REPLAY_PAGE, epoch };
    // Every page holds at least one message, so MAX_REPLAY pages end any replay.
    for (let page = 0; page <= MAX_REPLAY + 1 && at.from < top; page++) {
      // A page a turn: a store that answers at once would otherwise run the whole replay
      // as one chain of microtasks, nobody else's I/O served, this client's close unseen.
      const later = page > 0;
      if (later) await this.turns.next(() => unreachable(session));
      const read = await this.replayPage(session, history, room, at, later);
      if (read === undefined) return;
      await read.sent;
      if (read.next === undefined) return;
      at = { ...at, ...read.next };
    }
  }

  /**
   * One page of a recovery, read and handed to the client's queue (`sent` resolves once it
   * is taken), the later ones (`later`) encoded in their turn (encodes); undefined when
   * there is nothing more to send.
   */
  private async replayPage(
    session: Recipient,
    history: HistoryStore,
    room: ReplayedRoom,
    { from, top, limit, epoch }: ReplayCursor,
    later: boolean,
  ): Promise<ReplayPage | undefined> {
    if (unreachable(session)) return undefined;
    const read = await history.read(room.key, { after: from, limit });
    const batch = read.filter((m) => m.id <= top);
    if (unreachable(session)) return undefined;
    // The epoch after every read: the page is of `epoch` only if it still is (an epoch
    // never comes back). A Redis restarted empty while the client read would otherwise
    // give the new epoch's ids 1, 2, … as the rest of the old one's; what follows then
    // is the new epoch's "108", held with the live chats.
    const info = await history.room(room.key);
    if (info.epoch !== epoch) return undefined;
    if (later) await this.encodes.next(() => unreachable(session));
    if (unreachable(session)) return undefined;
    const out = batch.map((m) => chatDelivery(room.name, m));
    // An empty page is a gap too: retention, or the memory store's budget, may have
    // deleted every message up to `top` that the client has not read yet, and the
    // live ones above `top` must not follow as if nothing were missing. Told as live,
    // in line with the chats.
    if ((batch[0]?.id ?? top + 1) > from + 1 && info.oldest > from + 1) {
      out.unshift(new Delivery({ type: 'gap', room: room.name, epoch, reason: 'deleted' }));
    }
    if (batch.length === 0) {
      return out.length > 0 ? { sent: session.sendPaced(out) } : undefined;
    }
    let bytes = 0;
    for (const m of batch) bytes += wireSize(m);
    return {
      sent: session.sendPaced(out),
      next: {
        from: batch[batch.length - 1]!.id,
        limit: Math.max(1, Math.min(REPLAY_PAGE, Math.floor((limit * MAX_PAGE_BYTES) / bytes))),
      },
    };
  }

  /**
   * HISTORY: the newest messages before `before`, at most `limit`, for a member of
   * `room`. Without a store the empty page is sent at once and there is nothing to wait
   * for (undefined).
   */
  page(
    session: Recipient,
    room: ReplayedRoom,
    before: number | undefined,
    limit: number,
  ): Promise<void> | undefined {
    const history = this.history;
    if (history === undefined) {
      session.reply({ type: 'history', room: room.name, epoch: '', messages: [], more: false });
      return undefined;
    }
    return this.readPage(session, history, room, before, limit);
  }

  private async readPage(
    session: Recipient,
    history: HistoryStore,
    room: ReplayedRoom,
    before: number | undefined,
    limit: number,
  ): Promise<void> {
    // A turn of the event loop first. Otherwise a client's pipelined HISTORYs, each a
    // store read and the encoding of a page, run back to back as microtasks while it has
    // room in its queue, or is gone without its close seen yet: nobody else's I/O, and
    // not that close, is served until the last one is done. The turn is shared (PageTurns).
    await this.turns.next(() => unreachable(session));
    if (unreachable(session)) return;
    // A page too large to write at once loses its oldest messages.
    const { info, messages } = await readNewest(history, room.key, before, limit);
    await this.encodes.next(() => unreachable(session));
    if (unreachable(session)) return;
    // Nothing read, nothing older: below a room's base no id was used (RoomHistory.base).
    const more = messages.length > 0 && messages[0]!.id > info.oldest;
    // Paced: pages asked for back to back wait for the client to read the ones before.
    await session.sendPaced([
      new Delivery({
        type: 'history',
        room: room.name,
        epoch: info.epoch,
        messages,
        more,
      }),
    ]);
  }
}

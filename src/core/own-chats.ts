/**
 * On a cluster, which local member sent each chat the broker hands back: this node's own
 * chats, so that their senders are not shown them, whatever order the copy, the append's
 * reply and a Redis restart's "lost" come in, and whatever the sender is called by then.
 *
 * A chat of this node's is known by id and epoch once its append replied (`handing`,
 * `expect`), by name, time and text while it has not (`takeOff`, `land`). `Chat` owns one
 * and asks it for every chat that arrives (`senderOf`). Synchronous, and nothing is
 * allocated for a chat that comes back at once but its flight: it is on every chat's path.
 */
import { wellFormed } from '../protocol/text.js';
import type { ChatEvent } from './events.js';
import { nicknameKey } from './nickname.js';

/** What OwnChats reads of a session. */
export interface Sender<S> {
  /** The session that took this one over with its token; its chats still being stored are its. */
  readonly successor: S | undefined;
  /** Took its member over with a resume token and has kept that nickname since. */
  readonly resumed: boolean;
  /** Has sent a chat under its current nickname. */
  readonly spoke: boolean;
}

/**
 * This node's chats remembered per room while they wait for their place (`echoes`); past
 * it the oldest are known by their sender's name again.
 */
export const WAITING_CHATS = 4096;
/** Senders' look-alike keys remembered for `sender`; cleared when full. */
const SENDER_KEYS = 4096;

/** This node's chats waiting to come back in a room. */
interface Echoes<S> {
  /**
   * The epoch of the chats being handed over, as far as this node knows (the broker's,
   * with each chat it hands over and each "lost"; before the first, this node's first
   * append's): after a Redis restart an append can give an id of the new epoch while chats
   * of the old one still arrive, and ids compare only within one.
   */
  epoch: string | undefined;
  /** By id: the sender and the epoch its append gave the id in. */
  readonly senders: Map<number, Waiting<S>>;
  /** The highest id pushed out of `senders` past WAITING_CHATS (0: none). */
  forgotten: number;
}
interface Waiting<S> {
  readonly session: S;
  readonly epoch: string | undefined;
}
/** A chat of this node's whose append has not replied: its copy may come back first. */
export interface Flight<S> {
  readonly at: number;
  readonly msg: string;
  readonly session: S;
  /** The queue it waits in: its room's, for its sender's nickname then. */
  readonly queue: Flight<S>[];
}

export class OwnChats<S extends Sender<S>> {
  /**
   * Chat senders' look-alike keys: every node looks up the sender of every chat
   * it delivers, and the key (a pure function of the name) costs more than the
   * lookup.
   */
  private readonly senderKeys = new Map<string, string>();
  /** The chat being handed to the broker now, and its sender (see `origin`). */
  private sendingKey: string | undefined;
  private sendingId = 0;
  private sendingFrom: S | undefined;
  /**
   * Per subscribed room: the epoch of the chats being handed over, and the senders of this
   * node's chats the broker has not handed back yet (an earlier id had not arrived), by id.
   */
  private readonly echoes = new Map<string, Echoes<S>>();
  /**
   * Per room key and then by sender's nickname, this node's chats being appended, oldest
   * first: a copy that comes back before its append's reply is known by its text and
   * time, whatever its sender is called by then (`landed`).
   */
  private readonly flights = new Map<string, Map<string, Flight<S>[]>>();

  /** `nicknames`: the local members by nickname key, as they are now. */
  constructor(private readonly nicknames: ReadonlyMap<string, S>) {}

  /**
   * Chat `id` of `from` is being handed to the broker in room `key`: a copy handed back
   * at once, before `handedBack`, is known by it.
   */
  handing(key: string, id: number, from: S): void {
    this.sendingKey = key;
    this.sendingId = id;
    this.sendingFrom = from;
  }

  /** Ends `handing`: whether the chat's copy came back while it was being handed over. */
  handedBack(): boolean {
    const back = this.sendingFrom === undefined;
    this.sendingFrom = undefined;
    this.sendingKey = undefined;
    return back;
  }

  /**
   * Chat `id` of `from`, not handed back at once, waits for its place in room `key`;
   * `epoch`: the one its append gave the id in.
   */
  expect(key: string, id: number, from: S, epoch: string | undefined): void {
    const echoes = this.echoesOf(key, epoch);
    const senders = echoes.senders;
    if (senders.size >= WAITING_CHATS) {
      const oldest = senders.keys().next().value!;
      senders.delete(oldest);
      echoes.forgotten = Math.max(echoes.forgotten, oldest);
    }
    senders.set(id, { session: from, epoch });
  }

  private echoesOf(key: string, epoch: string | undefined): Echoes<S> {
    let echoes = this.echoes.get(key);
    if (echoes === undefined) {
      echoes = { epoch, senders: new Map(), forgotten: 0 };
      this.echoes.set(key, echoes);
    }
    return echoes;
  }

  /**
   * The local member a chat the broker handed over in room `key` comes from, if any;
   * `epoch`: the chat's, when the broker tells it.
   */
  senderOf(
    key: string,
    event: ChatEvent & { type: 'chat' },
    epoch: string | undefined,
  ): S | undefined {
    return (
      this.origin(key, event.id, epoch) ??
      this.landed(key, event) ??
      this.chatSender(key, event.id, event.from)
    );
  }

  /**
   * The broker's chats of room `key` are of a new `epoch`: ids start over in it, so what
   * waited for the old ones will not come, but this node's chats already stored in the new
   * one will (after a Redis restart, the appends that waited for it).
   */
  newEpoch(key: string, epoch: string): void {
    const echoes = this.echoes.get(key);
    if (echoes === undefined) return;
    echoes.epoch = epoch;
    echoes.forgotten = 0;
    for (const [id, waiting] of echoes.senders) {
      if (waiting.epoch !== epoch) echoes.senders.delete(id);
    }
  }

  /** This node left room `key`: none of its chats there will be handed back any more. */
  forget(key: string): void {
    this.echoes.delete(key);
  }

  /**
   * The local member a chat neither `origin` nor `landed` places comes from, found by the
   * chat's nickname, but only where the holder of that name may have sent it: it took its
   * session over by a resume and kept the name (its replaced connection, on another node,
   * may have sent it), or the chat is one of this node's whose sender was pushed out of
   * `echoes` and the holder has chatted under the name. Anyone else holding the name took
   * it after the chat was sent, freed by a rename, and is shown the chat as one process
   * would show it.
   */
  private chatSender(key: string, id: number, nickname: string): S | undefined {
    const session = this.sender(nickname);
    if (session === undefined) return undefined;
    if (session.resumed) return session;
    const forgotten = this.echoes.get(key)?.forgotten ?? 0;
    return session.spoke && id <= forgotten ? session : undefined;
  }

  private sender(nickname: string): S | undefined {
    let key = this.senderKeys.get(nickname);
    if (key === undefined) {
      if (this.senderKeys.size >= SENDER_KEYS) this.senderKeys.clear();
      key = nicknameKey(nickname);
      this.senderKeys.set(nickname, key);
    }
    return this.nicknames.get(key);
  }

  /**
   * Remembers a chat of this node's while its append is on its way: on a cluster its
   * copy can come back first, before this node knows its id (`landed`).
   */
  takeOff(key: string, from: string, at: number, msg: string, session: S): Flight<S> {
    let bySender = this.flights.get(key);
    if (bySender === undefined) {
      bySender = new Map();
      this.flights.set(key, bySender);
    }
    let queue = bySender.get(from);
    if (queue === undefined) {
      queue = [];
      bySender.set(from, queue);
    }
    const flight = { at, msg, session, queue };
    queue.push(flight);
    return flight;
  }

  /**
   * The append of `flight` replied (or failed): its copy, if still to come, has its id.
   * False when its copy came already (`landed`).
   */
  land(key: string, from: string, flight: Flight<S>): boolean {
    const at = flight.queue.indexOf(flight);
    if (at < 0) return false;
    this.ground(key, from, flight.queue, at);
    return true;
  }

  private ground(key: string, from: string, queue: Flight<S>[], at: number): void {
    if (at === 0) queue.shift();
    else queue.splice(at, 1);
    if (queue.length > 0) return;
    const bySender = this.flights.get(key);
    if (bySender?.get(from) !== queue) return;
    bySender.delete(from);
    if (bySender.size === 0) this.flights.delete(key);
  }

  /**
   * The local member whose chat this is, when it is one of this node's that came back
   * before its append replied: the oldest still on its way with the same name, time and
   * text (one sender's appends are stored in the order sent).
   */
  private landed(key: string, event: ChatEvent & { type: 'chat' }): S | undefined {
    const queue = this.flights.get(key)?.get(event.from);
    if (queue === undefined) return undefined;
    for (let i = 0; i < queue.length; i++) {
      const flight = queue[i]!;
      // The copy carries the stored text, where a lone surrogate is U+FFFD: the sent text
      // is made well-formed here, when it differs, not for every chat sent.
      if (flight.at !== event.at) continue;
      if (flight.msg !== event.msg && wellFormed(flight.msg) !== event.msg) continue;
      this.ground(key, event.from, queue, i);
      let from = flight.session;
      while (from.successor !== undefined) from = from.successor;
      return from;
    }
    return undefined;
  }

  /**
   * The session that sent this node's chat `id` in the room, if this node published it;
   * `epoch`: the chat's, when the broker tells it.
   */
  private origin(key: string, id: number, epoch: string | undefined): S | undefined {
    let from: S | undefined;
    if (this.sendingFrom !== undefined && id === this.sendingId && key === this.sendingKey) {
      from = this.sendingFrom;
      this.sendingFrom = undefined;
    }
    // Kept for rooms this node has published to (a chat that did not come back at once).
    const echoes = this.echoes.get(key);
    if (echoes !== undefined) {
      // Made by an append whose epoch may not be the one handed over yet (its room's first
      // chat of this node after a Redis restart, while the old epoch's chats still arrive).
      if (epoch !== undefined) echoes.epoch = epoch;
      // Chats come in id order: none waiting at or below this one comes any more. But a
      // chat stored in an epoch this node has not heard of yet (Redis restarted, the old
      // epoch's chats still arriving) waits for that epoch's "lost": against the old ids
      // its id says nothing, and of another epoch the same id is another chat.
      for (const [waiting, sender] of echoes.senders) {
        const sameEpoch =
          sender.epoch === undefined || echoes.epoch === undefined || sender.epoch === echoes.epoch;
        if (!sameEpoch) continue;
        if (waiting > id) break;
        echoes.senders.delete(waiting);
        if (waiting === id) from ??= sender.session;
      }
    }
    // Taken over meanwhile: the sender is now the connection that took the session.
    while (from?.successor !== undefined) from = from.successor;
    return from;
  }
}

import type { ChatPlace, JoinedEvent } from './broker.js';

/** A member waiting for its join's place. */
interface Waiting {
  /** The name it joined as: what its "joined" carries. */
  readonly nickname: string;
  /** Its join's place, or undefined when it will not come (see `giveUp`). */
  readonly settle: (after: ChatPlace | undefined) => void;
  /** Ends its wait regardless, PLACE_TIMEOUT_MS after it began. */
  timer?: ReturnType<typeof setTimeout>;
}

/** A room's members waiting for their joins' places, in the order they joined. */
interface Room {
  readonly entries: Waiting[];
}

/**
 * How long members wait for their joins to come back before they get what was held: far
 * longer than a round trip to Redis, short of what MAX_HELD events take to pile up.
 */
const PLACE_TIMEOUT_MS = 3_000;

/**
 * On a node of a cluster, this node's members without history whose join is on its way
 * through the broker, per room key: each waits for its "joined" to come back in its place
 * among the room's chats (ClusterNode.awaitPlace).
 */
export class JoinPlaces {
  private readonly rooms = new Map<string, Room>();

  /** Resolves with the place of `nickname`'s join in the room `key`, or undefined if it will not come. */
  wait(key: string, nickname: string): Promise<ChatPlace | undefined> {
    return new Promise((settle) => {
      const entry: Waiting = { nickname, settle };
      // Each its own time: a later joiner given up at the first one's would be shown what
      // came before its join.
      entry.timer = setTimeout(() => this.expire(key, entry), PLACE_TIMEOUT_MS);
      entry.timer.unref();
      const waiting = this.rooms.get(key);
      if (waiting !== undefined) waiting.entries.push(entry);
      else this.rooms.set(key, { entries: [entry] });
    });
  }

  /** `entry` has waited long enough: it and those before it (joined earlier) get what was held. */
  private expire(key: string, entry: Waiting): void {
    const waiting = this.rooms.get(key);
    const at = waiting?.entries.indexOf(entry) ?? -1;
    if (at < 0) return;
    for (const done of this.take(key, waiting!, 0, at + 1)) done.settle(undefined);
  }

  /**
   * A join of this node came back, in its place. Joins come back in the order they were
   * published, so any still waiting before it were lost with a subscription: they get all
   * that was held.
   */
  placed(key: string, event: JoinedEvent, after: ChatPlace): void {
    const waiting = this.rooms.get(key);
    const at = waiting?.entries.findIndex((w) => w.nickname === event.nickname) ?? -1;
    if (at < 0) return;
    const done = this.take(key, waiting!, 0, at + 1);
    for (let i = 0; i < done.length; i++) done[i]!.settle(i === at ? after : undefined);
  }

  /**
   * The join of the member waiting as `nickname` will not come back (its PUBLISH failed,
   * BrokerHandler.unplaced): it stops waiting and gets all that was held, as at the
   * timeout, but without waiting for it.
   */
  unplaced(key: string, nickname: string): void {
    const waiting = this.rooms.get(key);
    const at = waiting?.entries.findIndex((w) => w.nickname === nickname) ?? -1;
    if (at < 0) return;
    this.take(key, waiting!, at, 1)[0]!.settle(undefined);
  }

  /** Takes `count` entries from `at` out of the room's wait, which ends with its last. */
  private take(key: string, waiting: Room, at: number, count: number): Waiting[] {
    const taken = waiting.entries.splice(at, count);
    for (const entry of taken) clearTimeout(entry.timer);
    if (waiting.entries.length === 0) this.rooms.delete(key);
    return taken;
  }

  /**
   * Every member still waiting in the room stops waiting and gets all that was held (its
   * join may not come back: a resync, the room left, or too long a wait).
   */
  giveUp(key: string): void {
    const waiting = this.rooms.get(key);
    if (waiting === undefined) return;
    for (const entry of this.take(key, waiting, 0, waiting.entries.length)) entry.settle(undefined);
  }
}

/**
 * On a node of a cluster, USERS answers from each room's member list as
 * Presence last gave it. Reading a room's members costs Redis a call per
 * member (some 14 ms for 2,000, 0.5 ms for 100), and USERS is a request any
 * member may repeat at the flood-control rate from each of its address's
 * connections: read per request, one address could keep Redis busy for every
 * node. A list is read again once the room's members change (an event of the
 * room reaches this node, a local member's join, rename or resume is granted,
 * the node reads the room again after a resync), and at most once a second
 * otherwise, which bounds how long a change that comes without an event (a
 * member's address after a resume on another node) goes unseen.
 *
 * A join needs a read that starts after its own claim (`fresh`). Joins into
 * one room share such reads: while one is on its way, the joins that ask
 * wait for the next, one read for all of them. Read per join, 1,500 members
 * connecting to a lobby of 1,500 cost Redis some 11 s, one read after another,
 * and took 56 s to let them in.
 */
import type { PresenceMember } from './presence.js';

export class MemberLists {
  private readonly lists = new Map<string, RecentRead<readonly PresenceMember[]>>();
  /** Per room: the fresh read on its way, and the one that starts when it ends. */
  private readonly reading = new Map<string, Promise<readonly PresenceMember[]>>();
  private readonly queued = new Map<string, Promise<readonly PresenceMember[]>>();

  constructor(
    private readonly read: (key: string) => Promise<readonly PresenceMember[]>,
    private readonly now: () => number,
    private readonly maxAgeMs = 1000,
  ) {}

  /** The members of the room `key`, read now or shared with a read since its last change. */
  of(key: string): Promise<readonly PresenceMember[]> {
    let list = this.lists.get(key);
    if (list === undefined) {
      list = new RecentRead(() => this.read(key), this.now, this.maxAgeMs);
      this.lists.set(key, list);
    }
    return list.get();
  }

  /**
   * The members of the room `key` as read by a read that starts now or later: it sees every
   * change Presence made before this call.
   */
  fresh(key: string): Promise<readonly PresenceMember[]> {
    const queued = this.queued.get(key);
    if (queued !== undefined) return queued;
    const current = this.reading.get(key);
    if (current === undefined) return this.start(key);
    const next = current.then(
      () => this.startQueued(key),
      () => this.startQueued(key),
    );
    this.queued.set(key, next);
    return next;
  }

  private startQueued(key: string): Promise<readonly PresenceMember[]> {
    this.queued.delete(key);
    return this.start(key);
  }

  private start(key: string): Promise<readonly PresenceMember[]> {
    const list = this.read(key);
    this.reading.set(key, list);
    const done = () => {
      if (this.reading.get(key) === list) this.reading.delete(key);
    };
    list.then(done, done);
    return list;
  }

  /**
   * The room's members changed: the next USERS reads them again. A read already on its way
   * still answers those that asked before the change.
   */
  changed(key: string): void {
    this.lists.delete(key);
  }
}

/**
 * What `read` gave at most `maxAgeMs` ago, read once for everyone who asks meanwhile; a
 * failed read is not kept, so the next asks again. For USERS (above) and ROOMS on a node
 * of a cluster: ROOMS reads a script that reads up to MAX_ROOM_LIST rooms (about 3 ms of
 * Redis for a thousand; at most once a minute, one that walks every room), and fifteen
 * connections of one address asking at the flood-control rate kept the Redis of every node
 * half busy.
 */
export class RecentRead<T> {
  private entry: { at: number; value: Promise<T> } | undefined;

  constructor(
    private readonly read: () => Promise<T>,
    private readonly now: () => number,
    private readonly maxAgeMs = 1000,
  ) {}

  get(): Promise<T> {
    const now = this.now();
    const entry = this.entry;
    if (entry !== undefined && now - entry.at < this.maxAgeMs && now >= entry.at) {
      return entry.value;
    }
    const fresh = { at: now, value: this.read() };
    this.entry = fresh;
    fresh.value.catch(() => {
      if (this.entry === fresh) this.entry = undefined;
    });
    return fresh.value;
  }
}

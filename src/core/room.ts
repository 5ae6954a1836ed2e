import type { Delivery } from './events.js';
import { lookalikeKey } from './lookalike.js';
import type { PeerAddress } from './ports.js';

/** What a room needs of a member. Sessions of every transport implement it. */
export interface Member {
  readonly id: number;
  readonly nickname: string;
  /** Where the member connects from, as USERS reports it. */
  readonly address: PeerAddress;
  /** On a cluster: the claim it descends from, as its joins carry it (ChatEvent.lineage). */
  readonly lineage?: string | undefined;
  deliver(delivery: Delivery): void;
}

/**
 * A chat room: members in join order, a capacity, fan-out to its members, and
 * the ids of its chat messages. The course server has exactly one; confab
 * keeps it a first-class object so that more rooms, history and cluster
 * fan-out attach here rather than to sessions.
 */
export class Room {
  // Insertion order is the order USERS lists members in, as in the course server.
  private readonly members = new Map<number, Member>();
  /** The id of the room's latest chat message; ids are never reused. */
  private top: number;
  /** The name's look-alike fold: what the room is stored under (HistoryStore). */
  readonly key: string;

  constructor(
    readonly name: string,
    /** Changed by Chat.reconfigure; members over a lowered capacity stay. */
    public capacity: number,
    /** Ids continue above this (a room made again must not reuse its old ids). */
    firstIdAfter = 0,
  ) {
    this.top = firstIdAfter;
    this.key = lookalikeKey(name);
  }

  /** The id of the latest chat message (0 before any). */
  get lastId(): number {
    return this.top;
  }

  get size(): number {
    return this.members.size;
  }

  get isFull(): boolean {
    return this.members.size >= this.capacity;
  }

  has(member: Member): boolean {
    return this.members.has(member.id);
  }

  add(member: Member): void {
    this.members.set(member.id, member);
  }

  remove(member: Member): boolean {
    return this.members.delete(member.id);
  }

  /** Moves a member to the end of the listing; the course server's rename does this. */
  moveToEnd(member: Member): void {
    if (this.members.delete(member.id)) this.members.set(member.id, member);
  }

  /** Puts `next` in `previous`'s place, keeping the listing's order (a session taken back). */
  replace(previous: Member, next: Member): void {
    if (!this.members.has(previous.id)) return;
    const members = [...this.members.values()];
    this.members.clear();
    for (const member of members) {
      const kept = member === previous ? next : member;
      this.members.set(kept.id, kept);
    }
  }

  list(): IterableIterator<Member> {
    return this.members.values();
  }

  /** The next chat message's id. */
  nextId(): number {
    return ++this.top;
  }

  /** Hands one delivery to every member but `except`. Returns how many it reached. */
  deliver(delivery: Delivery, except?: Member): number {
    let delivered = 0;
    for (const member of this.members.values()) {
      if (member === except) continue;
      member.deliver(delivery);
      delivered++;
    }
    return delivered;
  }
}

/**
 * The log line of a member leaving a room: the course server's own for the lobby, whose count
 * is everyone connected there; another room's names the room, whose count is its own.
 */
export function leftLine(nickname: string, room: string, count: number, lobby: boolean): string {
  return lobby
    ? `${nickname} left. There are ${count} users connected.`
    : `${nickname} left ${room}. There ${count === 1 ? 'is 1 user' : `are ${count} users`} in ${room}.`;
}

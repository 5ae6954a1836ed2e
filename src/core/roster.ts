/**
 * What a node has told its local members about who is in a room, kept so
 * that, after its subscription was down and events other than chats were
 * lost (Broker `resync`), it can tell them the difference from Presence as
 * ordinary "left"/"joined" events. No I/O: Chat reads Presence and delivers.
 */
import type { RoomEvent } from './broker.js';
import type { MemberMarks } from './events.js';
import { nicknameKey } from './nickname.js';

type Change = Extract<RoomEvent, { readonly type: 'joined' | 'left' }>;

/** How many times the room's capacity of changes read are remembered as expected (Roster.expected). */
const MAX_EXPECTED = 2;

export class Roster {
  /** Nickname key -> nickname, in the order the members were shown joining. */
  private readonly names = new Map<string, string>();
  /**
   * Nickname key -> the origin its holder's join carried (ChatEvent 'joined'.origin), when
   * known: a leave carrying another origin is of an earlier holder of the name, late.
   */
  private readonly origins = new Map<string, string>();
  /**
   * Nickname key -> the lineage its holder's join carried (ChatEvent 'joined'.lineage), when
   * known. Where both sides carry one it decides, not the origin: a client that comes back
   * after its session was released keeps its origin but not its lineage.
   */
  private readonly lineages = new Map<string, string>();
  /** Keys events changed while a read of Presence was out: the events are newer than it may be. */
  private touched: Set<string> | undefined;
  /**
   * Keys the recent reads changed, the oldest first: the event of that change, delayed past
   * the read, would only repeat it, and is not shown. Kept across reads (a joiner's read
   * that disagrees has the room read again, and the next may come before a late event),
   * at most MAX_EXPECTED times the capacity.
   */
  private readonly expected = new Set<string>();
  private reads = 0;
  /**
   * Local joiners shown themselves before their join came here (`showing`): the nickname key
   * they were shown under -> their id, and back. By id: a joiner may rename, and another
   * member take its name, before its join comes.
   */
  private readonly joiners = new Map<string, string>();
  private readonly joinerKeys = new Map<string, string>();
  /** Until a first read settles, the roster knows only the events since it was opened. */
  private seeded = false;
  /**
   * Whether it knows exactly who it has shown: from a read's settling on, until it had to
   * forget a member it holds (`add`). Only then does it give lists, judge repeats by who
   * holds a name, and count.
   */
  private trusted = false;

  /** `limit()` bounds what events alone may add (the room's capacity; Presence holds no more). */
  constructor(private readonly limit: () => number) {}

  get size(): number {
    return this.names.size;
  }

  /** The members as shown, in order. */
  list(): string[] {
    return [...this.names.values()];
  }

  /**
   * The members as shown, for a member about to be shown them: undefined until a first read
   * of Presence settled (the roster knows only the events since it was opened), and after it
   * had to forget a member, until a read settles again.
   */
  shown(): string[] | undefined {
    return this.trusted ? this.list() : undefined;
  }

  /** Whether a read of the room would make it trusted again: it had to forget a member. */
  get stale(): boolean {
    return this.seeded && !this.trusted;
  }

  /**
   * A local joiner of key `key` was given the list with itself at the end, its own join not
   * come here yet: until it comes, the counts it is shown include it (`countFor`).
   */
  showing(key: string, id: string): void {
    this.unjoin(key);
    const before = this.joinerKeys.get(id);
    if (before !== undefined) this.unjoin(before);
    this.joiners.set(key, id);
    this.joinerKeys.set(id, key);
    const bound = Math.max(1, this.limit()) * 2;
    for (const oldest of [...this.joiners.keys()]) {
      if (this.joiners.size <= bound) break;
      this.unjoin(oldest);
    }
  }

  private unjoin(key: string): void {
    const id = this.joiners.get(key);
    if (id === undefined) return;
    this.joiners.delete(key);
    this.joinerKeys.delete(id);
  }

  /**
   * The count of a join or leave (as `apply` gave it) for the local member of id `id`: one
   * more for a joiner shown itself whose own join has not come here, when the count is the
   * roster's.
   */
  countFor(id: string, count: number): number {
    const key = this.joinerKeys.get(id);
    return this.trusted && key !== undefined && !this.names.has(key) ? count + 1 : count;
  }

  /** Whether it shows the member of nickname key `key`. */
  holds(key: string): boolean {
    return this.names.has(key);
  }

  /**
   * Whether Presence's list `read` has exactly the members shown, but the one of key `own`
   * (a joiner, whose own join may not have come here yet).
   */
  agrees(read: readonly { readonly nickname: string }[], own: string): boolean {
    let matched = 0;
    for (const member of read) {
      const key = nicknameKey(member.nickname);
      if (key === own) continue;
      if (!this.names.has(key)) return false;
      matched++;
    }
    return matched === this.names.size - (this.names.has(own) ? 1 : 0);
  }

  /**
   * Follows an event of the room as it is handed to the members. Returns what the members
   * are to be shown for it: the event itself; nothing when it only repeats a change the
   * last read already showed, or a leave shown already (replacing); or, for the rename of
   * a name's earlier holder, that member joining under its new name.
   */
  apply(event: RoomEvent): RoomEvent | undefined {
    switch (event.type) {
      case 'joined': {
        const key = this.touch(event.nickname);
        this.unjoin(key);
        const known = this.names.has(key);
        // Shown already, this very member: a read, or a list given from here (`shown`), had
        // it before its event came.
        const repeated = known && this.trusted && this.sameHolder(key, event) === true;
        this.mark(key, event);
        if (this.expected.delete(key) && known) return undefined;
        if (repeated) return undefined;
        if (!known) this.add(key, event.nickname);
        return this.counted(event);
      }
      case 'left': {
        const key = nicknameKey(event.nickname);
        // The leave of whoever held the name before its present holder joined: their join
        // was shown, and the leave with it (replacing).
        if (this.heldByAnother(key, event)) return undefined;
        this.touch(event.nickname);
        this.unjoin(key);
        if (this.expected.delete(key) && !this.names.has(key)) return undefined;
        this.names.delete(key);
        this.unmark(key);
        return this.counted(event);
      }
      case 'renamed':
        return this.renamed(event);
      default:
        return event;
    }
  }

  /**
   * The event with the number of members as shown after it: Presence counted when the
   * member's claim was made, and claims racing into a room come back in another order.
   */
  private counted<E extends Change>(event: E): E {
    if (!this.trusted || event.count === this.names.size) return event;
    return { ...event, count: this.names.size };
  }

  private renamed(event: Extract<RoomEvent, { readonly type: 'renamed' }>): RoomEvent | undefined {
    const from = this.touch(event.from);
    const to = this.touch(event.to);
    this.unjoin(from);
    this.unjoin(to);
    if (this.heldByAnother(from, event)) {
      // The rename of whoever held `from` before its present holder joined, shown leaving
      // then (replacing): the present holder stays, and the renamer is back under `to`.
      this.expected.delete(to);
      if (this.names.has(to)) return undefined;
      this.add(to, event.to);
      this.mark(to, event);
      const { room, origin, lineage } = event;
      return { type: 'joined', room, nickname: event.to, count: this.names.size, origin, lineage };
    }
    // Shown already under its new name, this very member: a read, or a list given from here,
    // had it.
    if (
      this.trusted &&
      !this.names.has(from) &&
      this.names.has(to) &&
      this.sameHolder(to, event) === true
    ) {
      this.expected.delete(to);
      return undefined;
    }
    // Without marks (a node of an older version) a rename may still be of an earlier holder
    // of `from`: its new name is then known by name only, as after a read, so that its own
    // leave is shown whatever it carries.
    this.unmark(from);
    this.unmark(to);
    const repeated = this.expected.delete(from) && this.expected.delete(to);
    if (repeated && !this.names.has(from) && this.names.has(to)) return undefined;
    this.expected.delete(to);
    this.names.delete(from);
    this.names.delete(to);
    this.add(to, event.to);
    if (event.origin !== undefined) this.mark(to, event);
    return event;
  }

  /**
   * A join of (or a rename to) a nickname the roster holds for another member (another
   * origin): its holder left and someone took the name, on another node, before that leave
   * arrived (Presence freed the name first). Returns that leave, to be shown before the
   * join; the leave itself, when it comes, is not shown (apply). Undefined for anything else.
   */
  replacing(event: RoomEvent): Change | undefined {
    // A rename to a name is taken like a join of it: its earlier holder's leave may be late.
    if (event.type !== 'joined' && event.type !== 'renamed') return undefined;
    const key = nicknameKey(event.type === 'joined' ? event.nickname : event.to);
    const shown = this.names.get(key);
    if (shown === undefined || !this.heldByAnother(key, event)) return undefined;
    const origin = this.origins.get(key);
    const lineage = this.lineages.get(key);
    this.names.delete(key);
    this.unmark(key);
    return {
      type: 'left',
      room: event.room,
      nickname: shown,
      // A rename carries no count: the members shown, without the earlier holder.
      count:
        event.type === 'joined' && !this.trusted ? Math.max(0, event.count - 1) : this.names.size,
      origin,
      lineage,
    };
  }

  /** Whether the event is known to be of another member than the one holding its nickname here. */
  private heldByAnother(key: string, event: MemberMarks): boolean {
    return this.sameHolder(key, event) === false;
  }

  /**
   * Whether the event is of the member that holds its nickname here: by lineage where both
   * carry one, else by origin where both carry one; undefined when that is not known.
   */
  private sameHolder(key: string, event: MemberMarks): boolean | undefined {
    const lineage = this.lineages.get(key);
    if (lineage !== undefined && event.lineage !== undefined) return lineage === event.lineage;
    const origin = this.origins.get(key);
    if (origin === undefined || event.origin === undefined) return undefined;
    return origin === event.origin;
  }

  private mark(key: string, event: MemberMarks): void {
    if (event.origin !== undefined) this.origins.set(key, event.origin);
    if (event.lineage !== undefined) this.lineages.set(key, event.lineage);
    else this.lineages.delete(key);
  }

  private unmark(key: string): void {
    this.origins.delete(key);
    this.lineages.delete(key);
  }

  /** A read of the room's members from Presence starts; pass what it returns to `settle`. */
  begin(): number {
    this.touched = new Set();
    return ++this.reads;
  }

  /**
   * The read `token` returned `members` (Presence's list, in join order).
   * Returns what the local members were not told, as events of `room`:
   * those who left, then those who joined, each with the count after it (a
   * rename is a leave and a join). Nothing for a read a later one
   * overtook, nor for the first read, which only sets what was shown.
   */
  settle(
    token: number,
    members: readonly string[],
    room: string,
    lineages: readonly (string | undefined)[] = [],
  ): Change[] {
    if (token !== this.reads) return [];
    const touched = this.touched ?? new Set<string>();
    this.touched = undefined;
    const target = new Map<string, string>();
    members.forEach((nickname, i) => {
      const key = nicknameKey(nickname);
      // An event of that member arrived during the read: it is at least as new.
      if (touched.has(key)) return;
      target.set(key, nickname);
      // Known by name only so far: the read says which member holds it.
      const lineage = lineages[i];
      if (lineage !== undefined && !this.lineages.has(key)) this.lineages.set(key, lineage);
    });
    const changes: Change[] = [];
    const changed = new Set<string>();
    for (const [key, nickname] of [...this.names]) {
      if (touched.has(key) || target.has(key)) continue;
      this.names.delete(key);
      this.unmark(key);
      changed.add(key);
      changes.push({ type: 'left', room, nickname, count: this.names.size });
    }
    for (const key of [...this.joiners.keys()]) if (target.has(key)) this.unjoin(key);
    for (const [key, nickname] of target) {
      if (this.names.has(key)) continue;
      this.names.set(key, nickname);
      changed.add(key);
      changes.push({ type: 'joined', room, nickname, count: this.names.size });
    }
    this.trusted = true;
    if (!this.seeded) {
      this.seeded = true;
      return [];
    }
    for (const key of changed) {
      this.expected.delete(key);
      this.expected.add(key);
    }
    const bound = Math.max(1, this.limit()) * MAX_EXPECTED;
    for (const key of this.expected) {
      if (this.expected.size <= bound) break;
      this.expected.delete(key);
    }
    return changes;
  }

  private touch(nickname: string): string {
    const key = nicknameKey(nickname);
    this.touched?.add(key);
    return key;
  }

  private add(key: string, nickname: string): void {
    // Only events out of line with Presence could pass the capacity; the next read corrects it.
    if (this.names.size >= Math.max(1, this.limit()) * 2) {
      const oldest = this.names.keys().next().value!;
      this.names.delete(oldest);
      this.unmark(oldest);
      // It no longer knows who was shown: joiners get Presence's list, and events are shown
      // as they come, until a read settles again.
      this.trusted = false;
    }
    this.names.set(key, nickname);
  }
}

/**
 * Presence in one process: plain maps, every step synchronous, so each is
 * atomic by construction. Several `MemoryPresence`s on one `PresenceHub`
 * behave as nodes of one cluster (the contract suite runs them so).
 */
import type { Ban } from './bans.js';
import type { PeerAddress } from './events.js';
import { RecentRemovals, type Removal } from './moderation.js';
import { nicknameKey, nicknameLookupKey } from './nickname.js';
import {
  type Census,
  checkId,
  checkText,
  type DeadNode,
  type DepartedMember,
  type Heartbeat,
  type JoinResult,
  lineageOf,
  MAX_MOVES_FOLLOWED,
  MemberGone,
  type MemberId,
  MOVED_TTL_MS,
  type Presence,
  type PresenceMember,
  parseRef,
  type RoomCount,
  type RoomLeft,
  type TakenOver,
} from './presence.js';
import { senderOf } from './resume-token.js';

interface Entry {
  readonly node: string;
  readonly id: MemberId;
  readonly ref: string;
  /** The ref it was first claimed as: the same for every member a resume moved it to. */
  readonly lin: string;
  nickname: string;
  key: string;
  readonly address: PeerAddress;
  /** The resume token that takes it over, if any. */
  token?: string;
  /** The lasting identity that token carries (senderOf). */
  sender?: string;
  /** Rooms by key, in the order joined. */
  readonly rooms: Set<string>;
  /** The operator it proved itself (operate). */
  operator?: string;
}

/** The state the nodes of one in-process cluster share. */
export class PresenceHub {
  /** Node -> time of its last heartbeat. */
  readonly nodes = new Map<string, number>();
  /** Node -> its timeout: how long it may go without a heartbeat before it is reaped. */
  readonly timeouts = new Map<string, number>();
  readonly nicknames = new Map<string, Entry>();
  /** Room key -> members by ref, in join order (a Map keeps insertion order). */
  readonly rooms = new Map<string, Map<string, Entry>>();
  /** Room key -> the name its first join gave it; kept while it has members. */
  readonly roomNames = new Map<string, string>();
  /** Node -> its members, in claim order. */
  readonly byNode = new Map<string, Map<MemberId, Entry>>();
  /** Resume token -> its member. */
  readonly tokens = new Map<string, Entry>();
  /** Lasting identity -> the member whose token carries it (grant). */
  readonly senders = new Map<string, Entry>();
  /** Ref of a member a resume moved -> where to and until when (oldest first). */
  readonly moved = new Map<
    string,
    { readonly to: string; readonly until: number; readonly lin: string }
  >();
  /**
   * A member's first ref -> the refs of its records in `moved`, oldest first,
   * MAX_MOVES_FOLLOWED at most.
   */
  readonly movesOf = new Map<string, string[]>();
  /** Mask key -> ban; a replaced ban moves to the end, as the newest. */
  readonly bans = new Map<string, Ban>();
  /** Resume tokens of members a KICK or BAN removed (recordRemoval). */
  readonly removals = new RecentRemovals();

  constructor(readonly now: () => number = Date.now) {}
}

export interface MemoryPresenceOptions {
  readonly node?: string;
  /** Default: never (a single process has nobody to reap it). */
  readonly timeoutMs?: number;
  readonly hub?: PresenceHub;
}

function view(entry: Entry): PresenceMember {
  return { node: entry.node, id: entry.id, nickname: entry.nickname, address: entry.address };
}

export class MemoryPresence implements Presence {
  readonly node: string;
  readonly timeoutMs: number;
  private readonly hub: PresenceHub;
  private closed = false;
  /** The members this node registered and has not let go: what a heartbeat checks (`gone`). */
  private readonly held = new Set<MemberId>();

  constructor(options: MemoryPresenceOptions = {}) {
    this.node = options.node ?? `n${globalThis.crypto.randomUUID()}`;
    checkId('node', this.node);
    this.timeoutMs = options.timeoutMs ?? Number.POSITIVE_INFINITY;
    this.hub = options.hub ?? new PresenceHub();
    this.register();
  }

  claim(id: MemberId, nickname: string, address: PeerAddress): Promise<boolean> {
    return settle(() => this.claimNow(id, nickname, address));
  }

  rename(id: MemberId, nickname: string): Promise<boolean> {
    return settle(() => this.renameNow(id, nickname));
  }

  release(id: MemberId): Promise<RoomLeft[]> {
    return settle(() => {
      this.held.delete(id);
      const entry = this.mine(id);
      return entry === undefined ? [] : this.remove(entry);
    });
  }

  expel(id: MemberId): Promise<RoomLeft[] | undefined> {
    return settle(() => {
      this.held.delete(id);
      const entry = this.mine(id);
      return entry === undefined ? undefined : this.remove(entry);
    });
  }

  join(id: MemberId, room: string, capacity: number, name = room): Promise<JoinResult> {
    return settle((): JoinResult => {
      checkText('room', room);
      const entry = this.mine(id);
      if (entry === undefined) throw new MemberGone(id);
      if (entry.rooms.has(room)) return { ok: false, reason: 'already-in' };
      let members = this.hub.rooms.get(room);
      if ((members?.size ?? 0) >= capacity) return { ok: false, reason: 'full' };
      if (members === undefined) {
        members = new Map();
        this.hub.rooms.set(room, members);
        this.hub.roomNames.set(room, name);
      }
      members.set(entry.ref, entry);
      entry.rooms.add(room);
      return { ok: true, count: members.size, name: this.hub.roomNames.get(room) ?? room };
    });
  }

  leave(id: MemberId, room: string): Promise<number | undefined> {
    return settle(() => {
      const entry = this.mine(id);
      if (entry === undefined || !entry.rooms.has(room)) return undefined;
      return this.leaveRoom(entry, room);
    });
  }

  members(room: string): Promise<PresenceMember[]> {
    return settle(() => {
      checkText('room', room);
      return [...(this.hub.rooms.get(room)?.values() ?? [])].map((entry) => ({
        ...view(entry),
        lineage: entry.lin,
      }));
    });
  }

  count(room: string): Promise<number> {
    return settle(() => {
      checkText('room', room);
      return this.hub.rooms.get(room)?.size ?? 0;
    });
  }

  find(nickname: string): Promise<PresenceMember | undefined> {
    return settle(() => {
      checkText('nickname', nickname);
      // Too long to be anyone's: not folded (see MAX_LOOKUP_LENGTH).
      const key = nicknameLookupKey(nickname);
      const entry = key === undefined ? undefined : this.hub.nicknames.get(key);
      return entry === undefined ? undefined : view(entry);
    });
  }

  grant(id: MemberId, token: string): Promise<boolean> {
    return settle(() => {
      const entry = this.mine(id);
      if (entry === undefined) throw new Error(`member ${id} is not registered`);
      // One member at a time holds an identity: a later one is refused it.
      const sender = senderOf(token);
      const holder = sender === undefined ? undefined : this.hub.senders.get(sender);
      if (holder !== undefined && holder !== entry) return false;
      if (entry.token !== undefined) this.hub.tokens.delete(entry.token);
      entry.token = token;
      this.hub.tokens.set(token, entry);
      this.holdSender(entry, token);
      return true;
    });
  }

  recordRemoval(token: string, removal: Removal): Promise<void> {
    return settle(() => this.hub.removals.remember(token, removal, this.hub.now()));
  }

  takeRemoval(token: string): Promise<Removal | undefined> {
    return settle(() => this.hub.removals.take(token, this.hub.now()));
  }

  operate(id: MemberId, operator: string): Promise<void> {
    return settle(() => {
      const entry = this.mine(id);
      if (entry !== undefined) entry.operator = operator;
    });
  }

  takeOver(
    token: string,
    id: MemberId,
    address: PeerAddress,
    next: string,
  ): Promise<TakenOver | undefined> {
    return settle((): TakenOver | undefined => {
      checkId('member', id);
      const old = this.hub.tokens.get(token);
      if (old === undefined) return undefined;
      const members = this.hub.byNode.get(this.node);
      if (members === undefined) throw new Error(`node ${this.node} is not registered`);
      if (members.has(id)) throw new Error(`member ${id} is already registered`);
      const entry: Entry = {
        node: this.node,
        id,
        ref: `${this.node}:${id}`,
        lin: old.lin,
        nickname: old.nickname,
        key: old.key,
        address: { ip: address.ip, port: address.port },
        rooms: new Set(old.rooms),
        token: next,
        ...(old.operator !== undefined ? { operator: old.operator } : {}),
      };
      this.hub.tokens.delete(token);
      this.hub.tokens.set(next, entry);
      this.dropSender(old);
      this.holdSender(entry, next);
      this.recordMove(old, entry);
      this.hub.nicknames.set(entry.key, entry);
      this.hub.byNode.get(old.node)?.delete(old.id);
      members.set(id, entry);
      // Taken from this node's own member: not one a resume took elsewhere.
      if (old.node === this.node) this.held.delete(old.id);
      this.held.add(id);
      for (const room of old.rooms) {
        // In its old place: the map is rebuilt in the same order.
        const before = this.hub.rooms.get(room)!;
        const after = new Map<string, Entry>();
        for (const [ref, e] of before)
          after.set(ref === old.ref ? entry.ref : ref, e === old ? entry : e);
        this.hub.rooms.set(room, after);
      }
      return {
        node: old.node,
        id: old.id,
        nickname: old.nickname,
        lineage: old.lin,
        rooms: [...old.rooms].map((room) => ({ room, name: this.hub.roomNames.get(room) ?? room })),
        ...(old.operator !== undefined ? { operator: old.operator } : {}),
      };
    });
  }

  /** `entry`'s token is `token` now: the identity it carries is the entry's, any other not. */
  private holdSender(entry: Entry, token: string): void {
    const sender = senderOf(token);
    if (entry.sender !== sender) this.dropSender(entry);
    entry.sender = sender;
    if (sender !== undefined) this.hub.senders.set(sender, entry);
  }

  private dropSender(entry: Entry): void {
    if (entry.sender !== undefined && this.hub.senders.get(entry.sender) === entry) {
      this.hub.senders.delete(entry.sender);
    }
  }

  /**
   * As Redis's: each record for MOVED_TTL_MS, and a member's records kept to the moves
   * `successor` follows (an older one leads only to a member that has gone).
   */
  private recordMove(old: Entry, entry: Entry): void {
    const { moved, movesOf } = this.hub;
    const now = this.hub.now();
    for (const [ref, move] of moved) {
      if (move.until > now) break;
      moved.delete(ref);
      const refs = movesOf.get(move.lin);
      if (refs?.[0] === ref) refs.shift();
      if (refs?.length === 0) movesOf.delete(move.lin);
    }
    moved.set(old.ref, { to: entry.ref, until: now + MOVED_TTL_MS, lin: entry.lin });
    const refs = movesOf.get(entry.lin) ?? [];
    refs.push(old.ref);
    while (refs.length > MAX_MOVES_FOLLOWED) moved.delete(refs.shift()!);
    movesOf.set(entry.lin, refs);
  }

  successor(node: string, id: MemberId): Promise<PresenceMember | undefined> {
    return settle(() => {
      const now = this.hub.now();
      let ref = `${node}:${id}`;
      for (let i = 0; i < MAX_MOVES_FOLLOWED; i++) {
        const move = this.hub.moved.get(ref);
        if (move === undefined || move.until <= now) break;
        ref = move.to;
      }
      if (ref === `${node}:${id}`) return undefined;
      const to = parseRef(ref);
      const entry = this.hub.byNode.get(to.node)?.get(to.id);
      return entry === undefined ? undefined : view(entry);
    });
  }

  rooms(limit: number): Promise<RoomCount[]> {
    return settle(() => {
      const out: RoomCount[] = [];
      for (const [room, members] of this.hub.rooms) {
        out.push({ room, name: this.hub.roomNames.get(room) ?? room, count: members.size });
      }
      // Stable: of equal counts, the first made (the map's order) stays first.
      return out.sort((a, b) => b.count - a.count).slice(0, Math.max(0, limit));
    });
  }

  census(): Promise<Census> {
    return settle(() => {
      const now = this.hub.now();
      let nodes = 0;
      for (const [node, last] of this.hub.nodes) if (!this.expired(node, last, now)) nodes++;
      return { users: this.hub.nicknames.size, nodes };
    });
  }

  /** Whether `node`, last heard of at `last`, has gone past its own timeout. */
  private expired(node: string, last: number, now: number): boolean {
    return last < now - (this.hub.timeouts.get(node) ?? this.timeoutMs);
  }

  heartbeat(): Promise<Heartbeat> {
    return settle((): Heartbeat => {
      if (this.hub.nodes.has(this.node)) {
        this.hub.nodes.set(this.node, this.hub.now());
        const members = this.hub.byNode.get(this.node);
        const gone = [...this.held].filter((id) => members?.has(id) !== true);
        for (const id of gone) this.held.delete(id);
        return gone.length > 0 ? { status: 'ok', gone } : { status: 'ok' };
      }
      this.held.clear();
      this.register();
      return { status: 'expired' };
    });
  }

  reap(): Promise<DeadNode[]> {
    return settle(() => {
      const now = this.hub.now();
      const dead: DeadNode[] = [];
      for (const [node, last] of this.hub.nodes) {
        if (node === this.node || !this.expired(node, last, now)) continue;
        dead.push({ node, members: this.removeNode(node) });
      }
      return dead;
    });
  }

  bans(): Promise<Ban[]> {
    return Promise.resolve([...this.hub.bans.values()]);
  }

  ban(key: string, ban: Ban, now: number, seconds?: number): Promise<Ban> {
    for (const [k, b] of this.hub.bans) {
      if (b.expires !== null && b.expires <= now) this.hub.bans.delete(k);
    }
    const stored = seconds === undefined ? ban : { ...ban, expires: now + seconds * 1000 };
    this.hub.bans.delete(key);
    this.hub.bans.set(key, stored);
    return Promise.resolve(stored);
  }

  unban(key: string): Promise<boolean> {
    return Promise.resolve(this.hub.bans.delete(key));
  }

  close(): Promise<DepartedMember[]> {
    if (this.closed) return Promise.resolve([]);
    this.closed = true;
    return settle(() => this.removeNode(this.node));
  }

  private register(): void {
    this.hub.nodes.set(this.node, this.hub.now());
    this.hub.timeouts.set(this.node, this.timeoutMs);
    if (!this.hub.byNode.has(this.node)) this.hub.byNode.set(this.node, new Map());
  }

  private mine(id: MemberId): Entry | undefined {
    return this.hub.byNode.get(this.node)?.get(id);
  }

  private claimNow(id: MemberId, nickname: string, address: PeerAddress): boolean {
    checkId('member', id);
    checkText('nickname', nickname);
    const members = this.hub.byNode.get(this.node);
    if (members === undefined || !this.hub.nodes.has(this.node)) {
      throw new Error(`node ${this.node} is not registered`);
    }
    if (members.has(id)) throw new Error(`member ${id} is already registered`);
    const key = nicknameKey(nickname);
    if (this.hub.nicknames.has(key)) return false;
    const entry: Entry = {
      node: this.node,
      id,
      ref: `${this.node}:${id}`,
      lin: lineageOf(this.node, id),
      nickname,
      key,
      address: { ip: address.ip, port: address.port },
      rooms: new Set(),
    };
    this.hub.nicknames.set(key, entry);
    members.set(id, entry);
    this.held.add(id);
    return true;
  }

  private renameNow(id: MemberId, nickname: string): boolean {
    checkText('nickname', nickname);
    const entry = this.mine(id);
    if (entry === undefined) throw new MemberGone(id);
    const key = nicknameKey(nickname);
    const holder = this.hub.nicknames.get(key);
    if (holder !== undefined && holder !== entry) return false;
    this.hub.nicknames.delete(entry.key);
    this.hub.nicknames.set(key, entry);
    entry.key = key;
    entry.nickname = nickname;
    for (const room of entry.rooms) {
      const members = this.hub.rooms.get(room)!;
      members.delete(entry.ref);
      members.set(entry.ref, entry);
    }
    return true;
  }

  private leaveRoom(entry: Entry, room: string): number {
    entry.rooms.delete(room);
    const members = this.hub.rooms.get(room);
    if (members === undefined) return 0;
    members.delete(entry.ref);
    if (members.size === 0) {
      this.hub.rooms.delete(room);
      this.hub.roomNames.delete(room);
    }
    return members.size;
  }

  private remove(entry: Entry): RoomLeft[] {
    const left = [...entry.rooms].map((room) => ({ room, count: this.leaveRoom(entry, room) }));
    if (this.hub.nicknames.get(entry.key) === entry) this.hub.nicknames.delete(entry.key);
    if (entry.token !== undefined) this.hub.tokens.delete(entry.token);
    this.dropSender(entry);
    this.hub.byNode.get(entry.node)?.delete(entry.id);
    return left;
  }

  private removeNode(node: string): DepartedMember[] {
    const members = [...(this.hub.byNode.get(node)?.values() ?? [])];
    this.hub.nodes.delete(node);
    this.hub.timeouts.delete(node);
    this.hub.byNode.delete(node);
    return members.map((entry) => ({
      id: entry.id,
      nickname: entry.nickname,
      address: entry.address,
      rooms: this.remove(entry),
      lineage: entry.lin,
    }));
  }
}

/** Runs a synchronous step, its result or exception as a promise. */
function settle<T>(step: () => T): Promise<T> {
  try {
    return Promise.resolve(step());
  } catch (error) {
    return Promise.reject(error);
  }
}

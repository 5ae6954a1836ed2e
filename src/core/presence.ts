/**
 * Who is where, cluster-wide: nicknames, room membership with capacity, and
 * which nodes are alive. One process uses the memory implementation
 * (memory-presence.ts); a cluster shares one through Redis
 * (cluster/redis-presence.ts). The contract suite (test/contract/presence.ts)
 * runs against both.
 *
 * Guarantees every implementation gives:
 *
 * - A member is (node, id): `id` is chosen by its node and unique there. All
 *   it holds (its nickname, its places in rooms) is recorded under its node,
 *   so the node's death frees all of it at once.
 * - Nicknames are unique by their look-alike key (`nicknameKey`). `claim`
 *   and `rename` are each one atomic step: of any number of racing claims of
 *   one key, on any nodes, exactly one succeeds; a rename either moves the
 *   member to the new name or leaves it with the old one.
 * - `join` is one atomic check-and-add: racing joins into a room of capacity
 *   N admit at most N members, and exactly N if at least N try. Rooms are
 *   named by their key (`Room.key`, the look-alike fold).
 * - `members` lists a room in join order; a rename moves the member to the
 *   end of every room it is in, as the course server's rename does.
 * - Liveness: every node calls `heartbeat` more often than `timeoutMs`
 *   (`PresenceKeeper` does). A node whose last heartbeat is older than that
 *   is dead: `reap` on any other node removes all its members and returns
 *   them, exactly once across the cluster, so that one node publishes their
 *   "left"s. A node that has not had a heartbeat acknowledged for
 *   `timeoutMs` must assume it was reaped and close its own clients
 *   (`PresenceKeeper` says so through `onExpired`).
 * - A member that does not exist any more (its node was reaped, or a resume
 *   moved it) is ignored by `release` and `leave`, and `join` and `rename`
 *   reject with MemberGone; a release never frees a nickname that has since
 *   been claimed by someone else.
 */
import { hasLoneSurrogate } from '../protocol/text.js';
import type { Ban } from './bans.js';
import type { PeerAddress } from './events.js';
import type { Removal } from './moderation.js';

/** A member's id within its node: letters, digits, '.', '_' or '-', at most 100. */
export type MemberId = string;

const ID = /^[A-Za-z0-9._-]{1,100}$/;

/** Node and member ids are used in Redis key names: keep them to a safe alphabet. */
export function checkId(what: 'node' | 'member', id: string): void {
  if (!ID.test(id)) throw new RangeError(`${what} id must be 1-100 of A-Z a-z 0-9 . _ -`);
}

/** Nicknames and room keys are stored as UTF-8: one with a lone surrogate could merge with another. */
export function checkText(what: 'nickname' | 'room', text: string): void {
  if (hasLoneSurrogate(text)) throw new RangeError(`${what} is not well-formed Unicode`);
}

/**
 * How long Presence remembers where a resume moved a member (`successor`): far
 * longer than a notice takes between nodes, short enough that the records of
 * busy resumes do not pile up.
 */
export const MOVED_TTL_MS = 60_000;

/** How many moves `successor` follows in one step. */
export const MAX_MOVES_FOLLOWED = 8;

export interface PresenceMember {
  readonly node: string;
  readonly id: MemberId;
  readonly nickname: string;
  readonly address: PeerAddress;
  /**
   * The claim it descends from, as its joins carry it (ChatEvent 'joined'.lineage): in room
   * member lists (`members`); undefined elsewhere.
   */
  readonly lineage?: string;
}

/** A room a member left, and how many members it has now. */
export interface RoomLeft {
  /** The room's key. */
  readonly room: string;
  readonly count: number;
}

/** A member removed with everything it held: its rooms in the order it joined them. */
export interface DepartedMember {
  readonly id: MemberId;
  readonly nickname: string;
  readonly address: PeerAddress;
  readonly rooms: readonly RoomLeft[];
  /** Its lineage (lineageOf), which its leaves carry. */
  readonly lineage: string;
}

export interface DeadNode {
  readonly node: string;
  /** In the order they claimed their nicknames. */
  readonly members: readonly DepartedMember[];
}

/** Cluster-wide numbers, for /healthz and /metrics. */
export interface Census {
  /** Members holding a nickname, on every node. */
  readonly users: number;
  /** Nodes whose last heartbeat is within the timeout. */
  readonly nodes: number;
}

/** A room with members somewhere in the cluster. */
export interface RoomCount {
  /** The room's key. */
  readonly room: string;
  /** The name it was made with (its key when that is not known). */
  readonly name: string;
  readonly count: number;
}

/**
 * A member's lineage: the node and id of the claim it descends from. Every takeover (a
 * resume) keeps it; a new claim, by the same client too, starts another. Joins and leaves
 * on a cluster carry it (ChatEvent 'joined'.lineage).
 */
export function lineageOf(node: string, id: MemberId): string {
  return `${node}:${id}`;
}

/** A member taken over with its resume token: who it was, and what it held. */
export interface TakenOver {
  /** The node that held it, and its id there. */
  readonly node: string;
  readonly id: MemberId;
  readonly nickname: string;
  /** Its lineage, which the member keeps (lineageOf). */
  readonly lineage: string;
  /** Its rooms, in the order it joined them, each at the place it had. */
  readonly rooms: readonly { readonly room: string; readonly name: string }[];
  /** The key of the operator it proved with OPER (`operate`; operatorKey), which the session keeps. */
  readonly operator?: string;
}

/**
 * A room's events did not reach this node within ROOM_READY_MS of a join: its Redis instance
 * (a `--redis-shards` one) is down while Presence's is up. Nothing of the join was shown.
 */
export class RoomNotReady extends Error {
  constructor(readonly room: string) {
    super(`room ${room}: its events did not reach this node in time`);
    this.name = 'RoomNotReady';
  }
}

/**
 * The member is not (any longer) registered: on a cluster, most often taken
 * over by a resume on another node while this node's request was under way.
 */
export class MemberGone extends Error {
  constructor(id: MemberId) {
    super(`member ${id} is not registered`);
    this.name = 'MemberGone';
  }
}

/**
 * A `release` or `expel` whose answer did not come (on a cluster: the connection to Redis
 * dropped, before or after Redis made the change). The implementation asks again after its
 * next heartbeat, and `retried` settles with what that step freed, as the first answer would
 * have: the rooms the member left (handed to one caller only, however many asked meanwhile),
 * or undefined when the member was not registered any more (also when this node was reaped
 * with it: the reaping node tells its rooms). It rejects only when Presence closed without
 * asking it again (`close` returns the member if it was still registered).
 */
export class ReleaseRetried extends Error {
  constructor(
    id: MemberId,
    readonly retried: Promise<RoomLeft[] | undefined>,
    cause: unknown,
  ) {
    super(`member ${id} could not be released now: retried after the next heartbeat`, { cause });
    this.name = 'ReleaseRetried';
  }
}

export type JoinResult =
  /** `name`: what the room is shown as, the name it was made with (by this join or an earlier one). */
  | { readonly ok: true; readonly count: number; readonly name: string }
  | { readonly ok: false; readonly reason: 'full' | 'already-in' };

export type Heartbeat =
  /**
   * This node is alive and its members are where it put them, but for `gone` (only when
   * there are some): members this node registered that Presence no longer holds on it, as a
   * resume on another node took them over, and the notice telling this node so was lost
   * (with a connection to Redis). Close them as that notice would have.
   */
  | { readonly status: 'ok'; readonly gone?: readonly MemberId[] }
  /**
   * This node had been reaped (it missed heartbeats for longer than the
   * timeout): its members are gone and others may hold their nicknames. Close
   * every local client; the node is registered again, with no members.
   */
  | { readonly status: 'expired' }
  /**
   * This node may not run in this cluster any more (`reason` says why: another node
   * recorded a setting all nodes must share, with another value, while this one was reaped
   * or before it had recorded its own again). It is not registered: stop it.
   */
  | { readonly status: 'refused'; readonly reason: string }
  /**
   * The shared state was lost (Redis restarted without persistence) and this
   * node registered its members again. `lost` are those whose nickname was
   * claimed by someone else meanwhile, or one of whose rooms others filled,
   * or that a resume had taken over
   * before the reset (a later copy of the member is registered): close them;
   * they are no longer registered. `displaced` (only when there are some) are
   * such earlier copies on other nodes that had registered again first: they
   * were removed for this node's copy (even one then lost to a nickname taken
   * meanwhile), and their nodes must close them as a takeover does.
   */
  | {
      readonly status: 'reset';
      readonly lost: readonly MemberId[];
      readonly displaced?: readonly MemberRef[];
      /**
       * Those of `lost` one of whose rooms others filled (only when there are some): nobody
       * else holds their nicknames, so the rooms where this node showed them hear they left.
       */
      readonly crowded?: readonly MemberId[];
    };

/** A member of any node. */
export interface MemberRef {
  readonly node: string;
  readonly id: MemberId;
}

/** A member's `node:id` ref, as both implementations key members, taken apart (node ids hold no ':'). */
export function parseRef(ref: string): MemberRef {
  const colon = ref.indexOf(':');
  return { node: ref.slice(0, colon), id: ref.slice(colon + 1) };
}

export interface Presence {
  /** This node's id: unique in the cluster and new for every process start. */
  readonly node: string;
  /** How long a node may go without a heartbeat before others reap it. */
  readonly timeoutMs: number;

  /**
   * Registers a new member of this node under `nickname`. False when the
   * nickname's look-alike key is taken (by anyone, on any node). A Presence
   * that lost its state (Redis restarted empty) answers a free nickname (and
   * `rename` to one, `find` of one, `join` of a room not full, `takeOver`
   * with a token that takes nothing over) only once the nodes had time to
   * register their members again: it may be a member's whose node is not
   * back yet.
   */
  claim(id: MemberId, nickname: string, address: PeerAddress): Promise<boolean>;
  /**
   * Atomically frees the member's nickname and takes `nickname`; false (and
   * the old name kept) when the new key is someone else's. A new spelling
   * of the member's own key succeeds. Rejects with MemberGone for a member not
   * registered (a resume took it to another connection, or its node was reaped).
   * Renaming to a free nickname may wait as `claim` does.
   */
  rename(id: MemberId, nickname: string): Promise<boolean>;
  /**
   * Frees the nickname and leaves every room; [] for a member not registered. Each
   * member's rooms are answered once: a later release or expel of it finds nothing. Rejects
   * with `ReleaseRetried` when the answer was lost (then retried), as `expel` does.
   */
  release(id: MemberId): Promise<RoomLeft[]>;
  /**
   * `release`, telling a member still registered (its rooms, maybe none) from
   * one that is not (undefined: taken over by a resume elsewhere, released,
   * or reaped). A removal decides by this one step whether it is still this
   * node's to make.
   */
  expel(id: MemberId): Promise<RoomLeft[] | undefined>;

  /**
   * Adds the member to a room if it has fewer than `capacity` members. `name`
   * is what the room is shown as when this join makes it (default: the key);
   * a room that exists keeps the name it was made with, which the join returns.
   * Joining a room that is not full may wait as `claim` does.
   */
  join(id: MemberId, room: string, capacity: number, name?: string): Promise<JoinResult>;
  /** The room's count after the member left, or undefined if it was not in it. */
  leave(id: MemberId, room: string): Promise<number | undefined>;
  /**
   * Members of a room, on every node, in join order. After Redis restarted empty it waits
   * until every live node has registered its members again (the refill; and before any
   * node has, until this one did): a list read sooner would show them gone.
   */
  members(room: string): Promise<PresenceMember[]>;
  count(room: string): Promise<number>;
  /** Who holds `nickname`'s look-alike key, on any node; nobody may wait as `claim` does. */
  find(nickname: string): Promise<PresenceMember | undefined>;
  /**
   * `token` (a resume token's secret) takes the member back from now on, and
   * its earlier one no longer does. A token lives as long as its member. False, and
   * nothing changed, when another member, on any node, was granted a token carrying the
   * same lasting identity (resume-token.ts's sender) and is still registered: one member at
   * a time holds an identity. A connection named an identity by a token that took nothing
   * over (Identities.namedBy) learns so here that the identity's session goes on, or that
   * another connection presenting the same token was granted it first.
   */
  grant(id: MemberId, token: string): Promise<boolean>;
  /**
   * Member `id` of this node proved itself the operator whose key (operatorKey) is
   * `operator` (OPER): a resume that takes it over, on any node, keeps it (TakenOver.operator)
   * while that node lists an operator of that key. Nothing for a member not registered.
   */
  operate(id: MemberId, operator: string): Promise<void>;
  /**
   * One atomic step: the member `token` was granted to, on any node, becomes
   * member `id` of this node (its nickname, and its place in each of its
   * rooms, kept), `token` stops working and `next` takes its place. Undefined
   * when the token grants nothing: never granted, used already, or its member
   * gone (released, or reaped with its node). Nobody leaves or joins; the
   * caller tells the old node to close its connection. A token that takes
   * nothing over may wait as `claim` does, for its member to come back;
   * `wanted` is asked before each time it asks again, and once false (the
   * connection went) nothing is taken over.
   */
  takeOver(
    token: string,
    id: MemberId,
    address: PeerAddress,
    next: string,
    wanted?: () => boolean,
  ): Promise<TakenOver | undefined>;
  /**
   * Keeps `removal` for REMOVAL_REMEMBERED_MS under `token`, the resume token of a member a
   * KICK or BAN removed: its reconnect, through any node, is told so once (takeRemoval)
   * rather than made a member afresh.
   */
  recordRemoval(token: string, removal: Removal): Promise<void>;
  /** The removal kept for `token`, if any; a second call finds nothing. */
  takeRemoval(token: string): Promise<Removal | undefined>;
  /**
   * The member a resume moved member `id` of `node` to, following later moves
   * too, while that one is still registered: a removal sent for a member that
   * moved on follows the member, never whoever holds its nickname now.
   * Undefined when it was not moved (or its move is older than `MOVED_TTL_MS`),
   * or the member it became has gone.
   */
  successor(node: string, id: MemberId): Promise<PresenceMember | undefined>;
  /**
   * The `limit` rooms with the most members (rooms with none are not kept), most first, and
   * of equal counts the first made first.
   */
  rooms(limit: number): Promise<RoomCount[]>;
  /** Members and live nodes across the cluster: one step, whatever their number. */
  census(): Promise<Census>;

  /**
   * The bans every node enforces, oldest first, expired ones included until a
   * later `ban` drops them. Each is kept under its mask's key (`parseMask(mask).key`),
   * so another spelling of a mask names the same ban.
   */
  bans(): Promise<Ban[]>;
  /**
   * Stores `ban` under `key`, replacing any ban there; drops bans expired before `now`.
   * Given `seconds`, the ban ends that long after it is stored by Presence's own clock (on a
   * cluster Redis's, which every node times bans by), whatever `ban.expires` says. Returns the
   * ban as stored.
   */
  ban(key: string, ban: Ban, now: number, seconds?: number): Promise<Ban>;
  /** Removes the ban under `key`; false if there was none. */
  unban(key: string): Promise<boolean>;

  /**
   * Says this node is alive; first call registers it. `capacityOf` gives a room's capacity
   * by key, for registering members again after a reset: a member whose room was filled
   * meanwhile by others (this node cut off, or paused, past the refill) is not registered
   * again, but `lost`, and the room keeps its capacity.
   */
  heartbeat(capacityOf?: (room: string) => number | undefined): Promise<Heartbeat>;
  /** Removes the nodes that missed heartbeats for longer than the timeout, with their members. */
  reap(): Promise<DeadNode[]>;
  /**
   * Leaves the cluster: removes this node and its members (returned, so the
   * caller can tell the other nodes' members) and stops using the store.
   */
  close(): Promise<DepartedMember[]>;
}

export interface KeeperHandlers {
  /** Members of dead nodes, already removed: tell their rooms ("30") here. */
  onReaped(dead: readonly DeadNode[]): void;
  /**
   * This node may have been reaped: no heartbeat acknowledged for the
   * timeout, or one came back `expired`. Close every local client with a
   * transient code. Called once per outage.
   */
  onExpired(): void;
  /**
   * After a reset: members whose nickname someone else took meanwhile, or (`crowded`, some of
   * `members`) one of whose rooms others filled. Close them.
   */
  onLost?(members: readonly MemberId[], crowded: readonly MemberId[]): void;
  /**
   * After a reset: this node's members are registered again (but those `onLost` closes), later
   * than other nodes may have read their rooms.
   */
  onReset?(): void;
  /** Members a resume took elsewhere whose notice did not arrive (Heartbeat `gone`). */
  onGone?(members: readonly MemberId[]): void;
  /** After a reset: earlier copies of this node's members, removed; their nodes close them. */
  onDisplaced?(members: readonly MemberRef[]): void;
  onError?(error: unknown): void;
  /** A heartbeat was refused (Heartbeat 'refused'): the heartbeats have stopped; stop the node. */
  onRefused?(reason: string): void;
}

/** A heartbeat sent before the keeper started (a starting node's), and when (keeper's clock). */
export interface SentHeartbeat {
  readonly beat: Promise<Heartbeat>;
  readonly sent: number;
}

export interface KeeperOptions {
  /** Between heartbeats; well under the presence's timeout. */
  readonly intervalMs: number;
  /** A room's capacity by key (Presence.heartbeat). */
  readonly capacityOf?: (room: string) => number | undefined;
  readonly now?: () => number;
}

/**
 * Runs a node's liveness: heartbeats, reaps dead nodes, and notices when
 * this node itself has been cut off for longer than the timeout. The cut-off
 * clock starts when a heartbeat is sent, not when it is answered, so the node
 * learns it no later than the others can reap it (but for a heartbeat answered
 * late while the loop turned, which Redis counted late: see ackedAt).
 */
export class PresenceKeeper {
  private timer: ReturnType<typeof setInterval> | undefined;
  private lastAcked: number;
  /** When a tick last ran: long ago means the process was paused (or its loop blocked). */
  private lastTick: number;
  private expired = false;
  private running = false;
  /** A heartbeat was refused: no more are sent. */
  private refused = false;
  private readonly now: () => number;

  constructor(
    private readonly presence: Presence,
    private readonly handlers: KeeperHandlers,
    private readonly options: KeeperOptions,
  ) {
    // Monotonic: a step of the machine's clock (NTP, by hand) is no time without an answer.
    this.now = options.now ?? (() => performance.now());
    this.lastAcked = this.now();
    this.lastTick = this.lastAcked;
  }

  /**
   * Heartbeats once (registering the node), then on every interval. Given one still under
   * way (sent while the node started), its answer is the first round's: dropped, a reset or
   * an expiry it reported after the node opened would reach no handler.
   */
  async start(under?: SentHeartbeat): Promise<void> {
    this.lastAcked = this.now();
    this.lastTick = this.lastAcked;
    await this.tick(under);
    if (this.timer !== undefined || this.refused) return;
    this.timer = setInterval(() => {
      void this.tick();
    }, this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One round: heartbeat (or `under`'s answer), then reap. Overlapping rounds are skipped. */
  async tick(under?: SentHeartbeat): Promise<void> {
    const now = this.now();
    // Back from a pause: its clients are closed before the heartbeat goes out, not after.
    if (this.pausedTooLong(now)) this.expire();
    this.lastTick = now;
    if (this.running) {
      this.checkCutOff();
      return;
    }
    this.running = true;
    const sent = under?.sent ?? this.now();
    try {
      const beat = await (under?.beat ?? this.presence.heartbeat(this.options.capacityOf));
      if (beat.status === 'refused') {
        this.stop();
        if (!this.refused) this.handlers.onRefused?.(beat.reason);
        this.refused = true;
        return;
      }
      const answered = this.now();
      // Reported once per outage: a cut-off noticed here first, then confirmed by `expired`.
      if (beat.status === 'expired') this.expire();
      this.expired = false;
      this.lastAcked = this.ackedAt(sent, answered);
      if (beat.status === 'ok' && beat.gone !== undefined) this.handlers.onGone?.(beat.gone);
      if (beat.status === 'reset') {
        if (beat.lost.length > 0) this.handlers.onLost?.(beat.lost, beat.crowded ?? []);
        this.handlers.onReset?.();
        if (beat.displaced !== undefined) this.handlers.onDisplaced?.(beat.displaced);
      }
      const dead = await this.presence.reap();
      if (dead.length > 0) this.handlers.onReaped(dead);
    } catch (error) {
      this.handlers.onError?.(error);
      this.checkCutOff();
    } finally {
      this.running = false;
    }
  }

  /**
   * True when this process was paused (no tick ran lately: a paused VM or container, a
   * stopped process) for so long that the others may have reaped it; the first time, the
   * node is told (onExpired). A process running again reads its sockets before its timers
   * run: asked first, this keeps it from serving its clients as members meanwhile. A stall
   * of Redis is not this: the ticks go on, and notice it themselves.
   */
  stale(): boolean {
    if (!this.pausedTooLong(this.now())) return false;
    this.expire();
    return true;
  }

  private pausedTooLong(now: number): boolean {
    return (
      now - this.lastTick > 2 * this.options.intervalMs &&
      now - this.lastAcked > this.presence.timeoutMs
    );
  }

  /**
   * From when an answered heartbeat keeps the node registered: when it was sent, the latest
   * Redis can have counted it. A heartbeat that waited out a stall of Redis was counted at
   * the stall's end, though, and counting it from its send would have the node cut off again
   * until the next one is answered. So while the loop turns (a tick ran within two intervals
   * before the answer, so that the answer cannot have waited long unread), it counts from
   * two intervals before its answer, if that is later.
   */
  private ackedAt(sent: number, answered: number): number {
    const margin = 2 * this.options.intervalMs;
    if (answered - this.lastTick > margin) return sent;
    return Math.max(sent, answered - margin);
  }

  private checkCutOff(): void {
    if (this.now() - this.lastAcked > this.presence.timeoutMs) this.expire();
  }

  private expire(): void {
    if (this.expired) return;
    this.expired = true;
    this.handlers.onExpired();
  }
}

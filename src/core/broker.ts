import type { Ban } from './bans.js';
import type { ChatEvent, SessionRef } from './events.js';

/** Every event a room's members are shown: joins, leaves, renames, moderation and chats. */
export type RoomEvent = Exclude<ChatEvent, { readonly type: 'whisper' }>;
export type WhisperEvent = Extract<ChatEvent, { readonly type: 'whisper' }>;
export type JoinedEvent = Extract<ChatEvent, { readonly type: 'joined' }>;

/** A chat's place in a room's history: its epoch and id (0: before the first). */
export interface ChatPlace {
  readonly epoch: string;
  readonly id: number;
}

/**
 * What one node tells another (or all the others): the member to remove or
 * close lives there, or the shared ban list changed.
 */
export type NodeNotice =
  | {
      /** Remove this node's member `member` (its Presence id), as KICK or BAN does. */
      readonly type: 'remove';
      readonly member: string;
      readonly action: 'kick' | 'ban';
      readonly by: string;
      readonly reason: string;
      readonly seconds: number | undefined;
      /**
       * Its nickname when the notice was sent (what its rooms are told if its connection is
       * gone), and how many nodes passed it on: a member that moved to another node (a resume)
       * is followed there by Presence's record of the move (`successor`), a few hops at most.
       */
      readonly nickname?: string;
      readonly hops?: number;
      /**
       * The operator whose KICK this is, to be told "no such member" by the node that
       * finds nobody to remove, as one process tells it at once.
       */
      readonly asker?: KickAsker;
    }
  /** A ban was stored: enforce it, and remove the members it matches. */
  | { readonly type: 'banned'; readonly ban: Ban; readonly seconds: number | undefined }
  /** A ban was lifted. */
  | { readonly type: 'unbanned'; readonly mask: string }
  /**
   * Another node took this node's member `member` over with its resume token: close its
   * connection without a word to the rooms (Presence has moved it already).
   */
  | { readonly type: 'evict'; readonly member: string }
  /** A KICK of this node's member `asker.member` found nobody: refuse it there. */
  | { readonly type: 'missed'; readonly asker: KickAsker }
  /**
   * A KICK of this node's member `asker.member`, passed on to the node a resume moved its
   * target to, was taken by no node there (`lost`: Redis's answer was lost, and it may have
   * been): refuse it there as one that no node heard.
   */
  | { readonly type: 'unheard'; readonly asker: KickAsker; readonly lost: boolean }
  /**
   * A KICK of this node's member `asker.member` removed `nickname`, announced in `room` (a
   * key, or none): the operator is told there unless that room's "99" reached it.
   */
  | {
      readonly type: 'kicked';
      readonly asker: KickAsker;
      readonly room: string | undefined;
      readonly nickname: string;
      readonly by: string;
      readonly reason: string;
    };

/** Who sent a KICK (the operator's session), and the nickname it asked for (a refusal names it). */
export interface KickAsker extends SessionRef {
  readonly nickname: string;
}

/** A room as the broker needs it; a core `Room` is one. */
export interface RoomRef {
  /** The look-alike key: what channels and history are named by, the same on every node. */
  readonly key: string;
  /**
   * The name this node shows: the one the room was made with in Presence, but while a
   * join is making it here (then that joiner's spelling). Events from other nodes are
   * handed over under this one.
   */
  readonly name: string;
}

/** Why a room's chats have a hole this node cannot fill. */
export type LostReason =
  /** History was lost (Redis restarted without persistence): ids start over in a new epoch. */
  | 'epoch'
  /** Retention deleted messages before this node could fetch them. */
  | 'trimmed';

/** Why a room's membership is to be read again (BrokerHandler.resync). */
export type ResyncCause = 'subscription' | 'publish';

/** What a broker hands back. Calls are synchronous and never overlap. */
export interface BrokerHandler {
  /** An event of a room this node subscribes to, under this node's name for it. */
  room(key: string, event: RoomEvent): void;
  /** A whisper addressed to this node. */
  whisper(event: WhisperEvent): void;
  /** A notice sent to this node, or to every node by another one. */
  notice?(notice: NodeNotice): void;
  /**
   * The room's chats could not all be delivered: the next one handed over is not the
   * successor of the last. For 'epoch', the ids that follow belong to `epoch`.
   */
  lost?(key: string, reason: LostReason, epoch: string): void;
  /**
   * This node's own "joined" event came back in its place among the room's chats: every
   * chat published before it is at or below `after`, every later one above it. One
   * published while the subscription was down never comes back; `resync` follows then.
   */
  placed?(key: string, event: JoinedEvent, after: ChatPlace): void;
  /**
   * This node's own "joined" will not come back to `placed`: its PUBLISH failed, and what
   * the node published after that has come back (Redis never ran it). Not as soon as the
   * PUBLISH fails: Redis may have run it and lost only the reply, and then it comes back.
   */
  unplaced?(key: string, event: JoinedEvent): void;
  /**
   * Events other than chats (joins, leaves, renames) may have been missed, so membership
   * shown for the room should be read again from where it is kept (Presence). Called once
   * the room is back in step, so every event published after a read started here is
   * handed over. `missed` says why: 'subscription', this node's subscription was
   * re-established (its own joins published meanwhile never come back either); 'publish',
   * a node could not tell whether one of its PUBLISHes reached Redis (this node's
   * subscription stayed up).
   */
  resync?(key: string, missed: ResyncCause): void;
}

/**
 * How room events travel between the nodes of a cluster; a single process uses an
 * in-memory broker with the same interface and the same guarantees.
 *
 * Chat.publish hands every event to the broker instead of delivering it, and delivers
 * what the broker hands back. A node subscribes to a room when its first local member
 * joins and unsubscribes when its last leaves; whispers travel on a per-node address,
 * since the target's node is known (Presence keeps nickname -> node).
 *
 * Guarantees, per node and per subscribed room:
 *
 * - Chats (which carry the id the history store gave them) are handed over in id order,
 *   each id once, with no gap: every chat whose id is above the room's top when
 *   `subscribe` resolved. A node that sees a gap, or whose subscription was lost, fetches
 *   the missing range from history before handing over anything later; when history no
 *   longer has it (retention, or Redis lost its data), `lost` says so first.
 * - Other events (joins, leaves, renames, moderation) carry no id and are not stored:
 *   they are handed over at most once, in the order they were published relative to the
 *   room's chats, on every node subscribed when they were published. Those published
 *   while a node's subscription was down are not recovered; `resync` says when that may
 *   have happened. A node whose PUBLISH of one failed (its reply lost: it may or may not
 *   have been delivered) tells the room's other nodes to `resync` once it can. The
 *   publishing node gets its own events back at once, synchronously.
 * - A chat the publishing node hands to `publish` is handed back at once when it is the
 *   room's next id on this node, so the sender's own node adds no Redis hop; otherwise it
 *   waits for its place.
 */
export interface Broker {
  /** This node's address, for whispers. */
  readonly node: string;
  onEvent(handler: BrokerHandler): void;
  /**
   * Resolves once this node's whisper address receives. It waits for the connection as
   * long as that takes: a caller that must not hang at startup bounds it.
   */
  start(): Promise<void>;
  /**
   * A room event, under the room's key (names may differ between nodes). A chat must
   * carry the id its history store gave it, and `epoch` the epoch its append gave it in.
   */
  publish(key: string, event: RoomEvent, epoch?: string): void;
  /**
   * Calls `then` once this node hands over the room's chats of `epoch`: at once when it
   * does already (or does not hand the room over at all), otherwise after `lost` has told
   * of the room's move to another epoch, when the room is forgotten, or after a bound on
   * the wait. What tells a sender of its own chat waits here, so that a client hears of a
   * new epoch before any id of it. Callers are called in the order they came. A broker
   * whose epochs never change calls `then` at once. `then` is given the epoch the room moved
   * to when that is not `epoch`: the room's history was lost again before this node handed
   * over any chat of `epoch`, and what `lost` told is another epoch. Given `through`, it
   * waits, within `epoch`, until this node has handed over the room's chats up to that id
   * too: a sender's "71" then never comes before a chat with a lower id another node's
   * member said (a client that counts its own ids as seen would resume past it).
   */
  inEpoch(key: string, epoch: string, then: (movedTo?: string) => void, through?: number): void;
  /**
   * A whisper to a member on `node` (this node included: handed over at once). Resolves
   * once it is sent: `true` when a node listening on that address took it, `false` when
   * none did (that node is gone, and its members with it). Rejects when that is not known
   * (the connection dropped first), and then it may or may not arrive.
   */
  whisper(node: string, event: WhisperEvent): Promise<boolean>;
  /**
   * A notice to `node` (this node included: handed over at once), or with
   * `undefined` to every other node. At most once, like whispers. Resolves, never
   * rejecting, as a whisper's answer does: `true` when a node listening took it (every one
   * to `undefined`), `false` when no node listens on that address, `undefined` when that is
   * not known (the connection dropped first; the error went to the broker's handler).
   */
  notify(node: string | undefined, notice: NodeNotice): Promise<boolean | undefined>;
  /**
   * Asks the room's other nodes to read its members again (BrokerHandler.resync, 'publish'),
   * once this node can reach them: its members there were registered again after Presence
   * lost them, later than the others' own reads.
   */
  askReread(key: string): void;
  /** Resolves once events of the room reach this node; calling it again renames only. */
  subscribe(room: RoomRef): Promise<void>;
  /** Resolves once the room's events no longer reach this node. */
  unsubscribe(key: string): Promise<void>;
  /**
   * Stops receiving and closes its connections, waiting at most `waitMs` for the backend to
   * answer (a stopping process must not wait for a backend that stalls).
   */
  close(waitMs?: number): Promise<void>;
}

import type { Capability } from '../protocol/capabilities.js';
import type { NotRecovered } from '../protocol/messages.js';
import type { Limits } from '../protocol/pacing.js';

export interface PeerAddress {
  ip: string;
  port: number;
}

/**
 * Who a join, leave or rename is of, on a cluster, so that a node can tell an event of a
 * nickname's previous holder, arriving late (after another took the name on another node),
 * from one of its present holder. Shown to nobody; nodes of older versions send none.
 */
export interface MemberMarks {
  /** The member's origin (as a chat's), which stays with it across resumes. */
  readonly origin?: string | undefined;
  /**
   * The member's lineage in Presence (presence.ts lineageOf), which a resume keeps and a new
   * claim does not: it tells a client's earlier session from its later one, same origin.
   */
  readonly lineage?: string | undefined;
}

/** A session on a cluster: its node, and its Presence id there. */
export interface SessionRef {
  readonly node: string;
  readonly member: string;
}

/**
 * What happens in the chat, as the core sees it: no wire format, no codes.
 * Every event goes out through one fan-out point (Chat.publish); each
 * connection's dialect turns it into its own bytes (transports/dialects/),
 * or into nothing when that dialect does not show it.
 */
export type ChatEvent =
  | ({
      readonly type: 'joined';
      readonly room: string;
      readonly nickname: string;
      readonly count: number;
    } & MemberMarks)
  | ({
      readonly type: 'left';
      readonly room: string;
      readonly nickname: string;
      readonly count: number;
    } & MemberMarks)
  | ({
      readonly type: 'renamed';
      readonly room: string;
      readonly from: string;
      readonly to: string;
    } & MemberMarks)
  | {
      readonly type: 'chat';
      readonly room: string;
      /** Per room, increasing, never reused. */
      readonly id: number;
      /** Server time, ms since the epoch. */
      readonly at: number;
      readonly from: string;
      readonly msg: string;
      /**
       * On a cluster: its sender's identity as the shared history store names it
       * (Cluster.originOf of MessageDraft.sender), by which the node its session is on
       * now, after any rename or resume, knows the chat for its own. Shown to nobody.
       */
      readonly origin?: string | undefined;
      /**
       * Where there is history: the epoch its id is of, by which a session's replay tells
       * a held chat of an epoch lost before it (Session.release). Shown to nobody: clients
       * learn epochs from "101" and "108".
       */
      readonly epoch?: string | undefined;
      /** The text says what `from` does (IRC's /me); absent on other chat. */
      readonly action?: true;
    }
  | {
      /** A member is being removed by an operator; published just before its "30". */
      readonly type: 'moderated';
      readonly room: string;
      readonly action: 'kick' | 'ban';
      readonly nickname: string;
      readonly by: string;
      readonly reason: string;
      /** A ban's length; undefined for kicks and bans until unbanned. */
      readonly seconds: number | undefined;
      /**
       * On a cluster, a KICK's: the operator's session (its node, and its Presence id
       * there), whose node tells it its "99" once (kickShownInRoom). Shown to nobody.
       */
      readonly asker?: SessionRef | undefined;
    }
  | {
      /**
       * The room's live chats skip some this server could not deliver: 'epoch'
       * when its history was lost (the chats that follow belong to `epoch`),
       * 'deleted' when retention removed them first.
       */
      readonly type: 'gap';
      readonly room: string;
      readonly epoch: string;
      readonly reason: 'epoch' | 'deleted';
    }
  | {
      readonly type: 'whisper';
      readonly at: number;
      readonly from: string;
      readonly to: string;
      readonly msg: string;
      /**
       * On a cluster, the receiver's member id in Presence: its node finds it by this, so a
       * rename or a resume elsewhere under way does not lose it (`hops`: nodes passed on by).
       */
      readonly member?: string;
      readonly hops?: number;
    };

export interface MemberInfo {
  readonly nickname: string;
  /** Undefined when the operator hides members' addresses. */
  readonly address: PeerAddress | undefined;
}

export interface RoomInfo {
  readonly name: string;
  readonly count: number;
  /** Whether the asking session is a member. */
  readonly joined: boolean;
}

export interface Resumption {
  readonly token: string;
  /** This CONNECT took an open session back. */
  readonly resumed: boolean;
  readonly nickname: string;
}

export interface HistoryHeader {
  readonly epoch: string;
  /** The newest id of the history that follows (0 for none); live messages have higher ids. */
  readonly top: number;
  /** Present when the client asked to recover from a position. */
  readonly recovered: boolean | undefined;
  readonly reason: NotRecovered | undefined;
}

export interface HistoryMessage {
  readonly id: number;
  readonly at: number;
  readonly from: string;
  readonly msg: string;
  readonly action?: true;
}

/** Why a CONNECT or RENAME could not take a nickname. */
export type NameRefusal = 'taken' | 'invalid';

/** One ban as a ban list shows it. */
export interface BanInfo {
  readonly mask: string;
  readonly by: string;
  readonly reason: string;
  readonly expires: number | null;
}

/** The answer to one request, for the session that sent it. */
export type Reply =
  | {
      readonly type: 'welcome';
      readonly address: PeerAddress;
      readonly count: number;
      /** Present when the client asked for extensions: the ones granted. */
      readonly caps: readonly Capability[] | undefined;
      /** Flood control, for clients that negotiated (they pace themselves by it). */
      readonly limits: Limits | undefined;
      /** For clients with "history": the token that takes this session back. */
      readonly resume: Resumption | undefined;
      /** The message of the day, for a client that asked for extensions and joins afresh. */
      readonly motd?: string;
    }
  | {
      readonly type: 'connect-refused';
      readonly reason: NameRefusal | 'room-full' | 'banned';
      readonly detail: string;
    }
  | { readonly type: 'members'; readonly members: readonly MemberInfo[] }
  | { readonly type: 'whispered' }
  | { readonly type: 'whisper-refused'; readonly reason: 'no-such-user' | 'to-self' | 'busy' }
  | { readonly type: 'version'; readonly version: string }
  | { readonly type: 'renamed-you'; readonly nickname: string }
  | {
      readonly type: 'rename-refused';
      readonly reason: NameRefusal | 'banned';
      readonly detail: string;
    }
  | { readonly type: 'oper-ok'; readonly name: string }
  | {
      readonly type: 'ban-list';
      readonly bans: readonly BanInfo[];
      /** In the answer to an UNBAN: whether it lifted a ban. */
      readonly removed?: boolean;
      /** The change could not be written to the store: why, and that a restart undoes it. */
      readonly unsaved?: string;
    }
  | { readonly type: 'rtt'; readonly beginTime: number }
  | {
      readonly type: 'room-joined';
      readonly room: string;
      /** Nicknames in join order, the joiner last. */
      readonly members: readonly string[];
      readonly count: number;
      /** For clients with "history": where the history that follows ends. */
      readonly history: HistoryHeader | undefined;
    }
  | {
      /** The sender's own chat, stored (capability "history"). */
      readonly type: 'stored';
      readonly room: string;
      readonly id: number;
      readonly at: number;
      readonly cid: string | undefined;
      /** The cid was used before: this is the first message, not delivered again. */
      readonly duplicate: boolean;
    }
  | {
      readonly type: 'history';
      readonly room: string;
      readonly epoch: string;
      readonly messages: readonly HistoryMessage[];
      /** Older messages are still stored. */
      readonly more: boolean;
    }
  | { readonly type: 'room-parted'; readonly room: string }
  | { readonly type: 'room-list'; readonly rooms: readonly RoomInfo[] }
  | {
      readonly type: 'error';
      readonly code: number;
      readonly message: string;
      /** The request code the error answers, when it could be read. */
      readonly ref: string | undefined;
      /**
       * The room the error is about, sent as `room` (1016). Not `room`: a reply naming a
       * room is held with the room's events while the client joins it.
       */
      readonly about?: string;
    };

export type Deliverable = ChatEvent | Reply;

/** A chat as its room is told it. */
export type SaidEvent = Extract<ChatEvent, { readonly type: 'chat' }>;

/** Turns what the core delivers into one dialect's bytes; undefined when that dialect shows nothing for it. */
export interface Encoder {
  encode(item: Deliverable): Uint8Array | undefined;
}

/**
 * One event or reply on its way to one or many sessions. Each encoder
 * (one per dialect and capability set) encodes it once, and every session
 * using that encoder gets the same bytes: a broadcast to a thousand members
 * costs one encoding per kind of member, however they alternate.
 */
export class Delivery {
  // Nearly every delivery meets one encoder, so the first is kept in fields
  // (no allocation on the hot path); the others, rare, in a short list.
  private firstEncoder: Encoder | undefined;
  private firstBytes: Uint8Array | undefined;
  private others: { encoder: Encoder; bytes: Uint8Array | undefined }[] | undefined;

  constructor(readonly item: Deliverable) {}

  bytes(encoder: Encoder): Uint8Array | undefined {
    if (encoder === this.firstEncoder) return this.firstBytes;
    if (this.firstEncoder === undefined) {
      this.firstEncoder = encoder;
      this.firstBytes = encoder.encode(this.item);
      return this.firstBytes;
    }
    this.others ??= [];
    for (const other of this.others) if (other.encoder === encoder) return other.bytes;
    const bytes = encoder.encode(this.item);
    this.others.push({ encoder, bytes });
    return bytes;
  }
}

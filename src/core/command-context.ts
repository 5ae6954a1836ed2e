/**
 * What every command handler shares: the chat service as handlers see it (ChatContext),
 * refusals, member names. The handlers are in commands.ts (joining, chat,
 * whispers, renames; and the table of all), moderation-commands.ts and room-commands.ts.
 */
import { ErrorCode, type ErrorCodeValue, type RequestCode } from '../protocol/codes.js';
import type { Position, Request } from '../protocol/messages.js';
import type { Limits } from '../protocol/pacing.js';
import { atMostChars } from '../protocol/text.js';
import type { BannedWords } from './banned-words.js';
import type { BanList } from './bans.js';
import type { Broker, ChatPlace, WhisperEvent } from './broker.js';
import type { ChatEvent } from './events.js';
import type { LogLimiter } from './log-limit.js';
import type { Operator, RecentRemovals } from './moderation.js';
import type { DisconnectReason, Logger } from './ports.js';
import type { Presence, PresenceMember, RoomCount } from './presence.js';
import type { Room } from './room.js';
import type { Rooms } from './rooms.js';
import type { Session } from './session.js';

/** What command handlers may use of the chat service. */
export interface ChatContext {
  readonly lobby: Room;
  readonly rooms: Rooms;
  readonly serverVersion: string;
  readonly bannedWords: BannedWords;
  readonly hideAddresses: boolean;
  /** The message of the day ('' for none): told in "03" to clients that negotiate. */
  readonly motd: string;
  readonly maxMessage: number;
  /** Flood control as announced to opted-in clients in "03". */
  readonly limits: Limits;
  readonly log: Logger;
  /**
   * Lines a client can cause once per request (a refusal), of every kind one per 10 s with
   * how many were held back: written straight, a flood of refused requests is a flood of
   * lines.
   */
  readonly refusals: LogLimiter;
  readonly bans: BanList;
  /** Tokens of sessions removed lately, for a reconnect that never heard of its removal. */
  readonly removals: RecentRemovals;
  /** As configured now; a reload replaces the list for OPERs from then on. */
  readonly operators: readonly Operator[];
  /** The look-alike keys (nicknameKey) of the operators' names, which no nickname may have. */
  readonly operatorNames: ReadonlySet<string>;
  now(): number;
  /**
   * Whether an OPER from this address may be checked now (each check costs a hash), or
   * whose budget, the address's or the server's, is spent.
   */
  operAttempt(ip: string): 'ok' | 'address' | 'server';
  /** An OPER from this address succeeded: its later ones have a server budget of their own. */
  operSucceeded(ip: string): void;
  /** Every joined session, in no promised order. */
  members(): Session[];
  /**
   * On a cluster, the room's members for USERS: read from Presence again only once they
   * changed, or at most once a second (member-lists.ts).
   */
  membersOf(room: Room): Promise<readonly PresenceMember[]>;
  /**
   * On a cluster, the rooms with members on any node for ROOMS: read from Presence at most
   * once a second (member-lists.ts).
   */
  roomCounts(): Promise<readonly RoomCount[]>;
  /** On a cluster, a local member's claim changed the room's members (a join, a rename). */
  membersChanged(key: string): void;
  /** On a cluster, the session proved itself an operator: a resume on any node keeps it. */
  operated(session: Session): void;
  /**
   * On a cluster, the room's members as Presence holds them from now on (a read that starts
   * now or later, shared by the joins that ask meanwhile: member-lists.ts).
   */
  freshMembers(key: string): Promise<readonly PresenceMember[]>;
  /**
   * On a cluster, for a member about to be told who is in `room` ("101", or its welcome's
   * count): the members as this node has shown them to the room so far, and the joins,
   * leaves and renames held for it dropped, as they are in the list; then what comes after
   * follows from it. Undefined where there is no such list (one process, or the room's first
   * read of Presence has not come back): the caller shows what Presence said. The joiner's
   * own read of Presence, given as `read`, that does not agree has the room read again.
   */
  shownMembers(
    session: Session,
    room: Room,
    read?: readonly PresenceMember[],
  ): string[] | undefined;
  /** On a cluster, what the session's joins and leaves carry of it (ChatEvent 'joined'.origin). */
  originOf(session: Session): string | undefined;
  find(nickname: string): Session | undefined;
  /** Registers the nickname and adds the session to the room. */
  join(session: Session, nickname: string, room: Room | undefined): void;
  rename(session: Session, nickname: string): void;
  /**
   * A request that costs `cost` requests' worth of flood allowance (protocol's requestCost
   * and costCap: a RENAME, announced in every room of its sender): takes what the one taken
   * when it was read leaves, if it is there now. False when it is not: nothing is taken.
   */
  affords(session: Session, cost: number): boolean;
  disconnect(session: Session, reason: DisconnectReason, detail?: string): void;
  /** The one fan-out point: every event reaches its room's members (or a whisper's target) here. */
  publish(event: ChatEvent, origin?: Session): void;
  /** Stores (when there is history) and publishes a chat message. */
  say(session: Session, room: Room, msg: string, cid: string | undefined, action?: boolean): void;
  /** "101" for a member just added, with the room's history for clients with "history". */
  enterRoom(
    session: Session,
    room: Room,
    members: readonly string[],
    count: number,
    since: Position | undefined,
  ): void;
  readHistory(session: Session, room: Room, before: number | undefined, limit: number): void;
  /** A new resume token for the session (the old one stops working). */
  issueToken(session: Session): string;
  /** `session` gives back the identity it was named (Identities.disown). */
  disownIdentity(session: Session): void;
  /** Makes `session` the open session that `token` belongs to; false if there is none. */
  takeBack(session: Session, token: string): boolean;
  /**
   * The same on a node of a cluster, for a session on any node: resolves once
   * `session` holds the member's nickname and rooms (their live events held),
   * false if the token takes nothing over.
   */
  takeOver(session: Session, token: string): Promise<boolean>;
  /** Set when this node is one of a cluster: claims then go through Presence and wait for it. */
  readonly cluster: { readonly presence: Presence; readonly broker: Broker } | undefined;
  /** Runs a request's asynchronous part; the session's later requests wait for it. */
  run(session: Session, work: Promise<void>): void;
  /** See ClusterNode.interested / uninterested: a local member joining or leaving a room. */
  interested(room: Room): Promise<void>;
  uninterested(key: string): void;
  /** See ClusterNode.shownAs: a room joined on this node, shown as the cluster made it. */
  shownAs(room: Room, name: string): Room;
  /** See ClusterNode.partInDoubt: a PART whose leave in Presence failed. */
  partInDoubt(session: Session, room: Room): void;
  /** See ClusterNode.awaitPlace and Chat.enterPlaced: a member without history joining on a cluster node. */
  awaitPlace(
    session: Session,
    room: Room,
    nickname: string,
  ): Promise<ChatPlace | undefined> | undefined;
  enterPlaced(session: Session, room: Room, after: ChatPlace | undefined): void;
  /** Frees in Presence what a session claimed but never used (refused, or gone meanwhile). */
  forget(session: Session): void;
  /** Resolves `false` when no node took the whisper (the target's node is gone). */
  whisperTo(node: string, event: WhisperEvent): Promise<boolean>;
}

export type RequestOf<C extends RequestCode> = Extract<Request, { cmd: C }>;
export type Handler<C extends RequestCode> = (
  ctx: ChatContext,
  session: Session,
  req: RequestOf<C>,
) => void;

/** Refuses a request; the session's dialect decides whether and how the client is told. */
export function refuse(
  session: Session,
  code: ErrorCodeValue,
  message: string,
  ref?: string,
  /** The room the error is about, where a client needs its name (1016). */
  room?: string,
): void {
  session.reply(
    room === undefined
      ? { type: 'error', code, message, ref }
      : { type: 'error', code, message, ref, about: room },
  );
}

/**
 * A cluster request found its member gone from Presence. Moved by a resume to another
 * connection, this one goes now as replaced (the node's notice would close it anyway).
 * Not moved, Presence lost it (Redis restarted empty, and the node's next heartbeat
 * registers it again): `otherwise` answers, and the connection stays. Resolves with whether
 * it was moved.
 */
export async function memberGone(
  ctx: ChatContext,
  presence: Presence,
  session: Session,
  otherwise: () => void,
): Promise<boolean> {
  const moved = await presence.successor(presence.node, session.presenceId);
  if (session.state === 'joined') {
    if (moved !== undefined) ctx.disconnect(session, 'replaced');
    else otherwise();
  }
  return moved !== undefined;
}

/** Refuses a message over --max-message. */
export function tooLong(ctx: ChatContext, session: Session, msg: string, ref: string): boolean {
  if (atMostChars(msg, ctx.maxMessage)) return false;
  const { nickname } = session;
  ctx.refusals.log(
    'message-too-long',
    (held) => ctx.log.info({ nickname, length: msg.length, ...held }, 'message too long, refused'),
    session.address.ip,
  );
  refuse(
    session,
    ErrorCode.MESSAGE_TOO_LONG,
    `message is longer than ${ctx.maxMessage} characters`,
    ref,
  );
  return true;
}

export function names(members: readonly PresenceMember[]): string[] {
  return members.map((m) => m.nickname);
}

export function memberNames(room: Room): string[] {
  const names: string[] = [];
  for (const member of room.list()) names.push(member.nickname);
  return names;
}

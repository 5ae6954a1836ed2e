import { type Capability, grant } from '../protocol/capabilities.js';
import { Cmd, ErrorCode, type ErrorCodeValue, type RequestCode } from '../protocol/codes.js';
import type { ChatRequest, Position, Request, RoomPosition } from '../protocol/messages.js';
import type { Limits } from '../protocol/pacing.js';
import { formatDuration } from '../protocol/slash-commands.js';
import { atMostChars, clip } from '../protocol/text.js';
import type { BannedWords } from './banned-words.js';
import { type Ban, type BanList, banMatches, parseMask } from './bans.js';
import type { Broker, ChatPlace, NodeNotice, WhisperEvent } from './broker.js';
import type { ChatEvent, MemberInfo, PeerAddress, RoomInfo } from './events.js';
import { type Operator, removalDetail } from './moderation.js';
import { checkNickname } from './nickname.js';
import type { DisconnectReason, Logger } from './ports.js';
import {
  type JoinResult,
  MemberGone,
  type Presence,
  type PresenceMember,
  type RoomCount,
} from './presence.js';
import { Room } from './room.js';
import type { Rooms } from './rooms.js';
import type { Session } from './session.js';

/** What command handlers may use of the chat service. */
export interface ChatContext {
  readonly lobby: Room;
  readonly rooms: Rooms;
  readonly serverVersion: string;
  readonly bannedWords: BannedWords;
  readonly hideAddresses: boolean;
  readonly maxMessage: number;
  /** Flood control as announced to opted-in clients in "03". */
  readonly limits: Limits;
  readonly log: Logger;
  readonly bans: BanList;
  /** As configured now; a reload replaces the list for OPERs from then on. */
  readonly operators: readonly Operator[];
  now(): number;
  /**
   * Whether an OPER from this address may be checked now (each check costs a hash), or
   * whose budget, the address's or the server's, is spent.
   */
  operAttempt(ip: string): 'ok' | 'address' | 'server';
  /** Every joined session, in no promised order. */
  members(): Session[];
  find(nickname: string): Session | undefined;
  /** Registers the nickname and adds the session to the room. */
  join(session: Session, nickname: string, room: Room | undefined): void;
  rename(session: Session, nickname: string): void;
  disconnect(session: Session, reason: DisconnectReason, detail?: string): void;
  /** The one fan-out point: every event reaches its room's members (or a whisper's target) here. */
  publish(event: ChatEvent, origin?: Session): void;
  /** Stores (when there is history) and publishes a chat message. */
  say(session: Session, room: Room, msg: string, cid: string | undefined): void;
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
  /** See Chat.interested / Chat.uninterested: a local member joining or leaving a room. */
  interested(room: Room): Promise<void>;
  uninterested(key: string): void;
  /** See Chat.awaitPlace and Chat.enterPlaced: a member without history joining on a cluster node. */
  awaitPlace(
    session: Session,
    room: Room,
    nickname: string,
  ): Promise<ChatPlace | undefined> | undefined;
  enterPlaced(session: Session, room: Room, after: ChatPlace | undefined): void;
  /** Frees in Presence what a session claimed but never used (refused, or gone meanwhile). */
  forget(session: Session): void;
  whisperTo(node: string, event: WhisperEvent): void;
}

type RequestOf<C extends RequestCode> = Extract<Request, { cmd: C }>;
type Handler<C extends RequestCode> = (
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
): void {
  session.reply({ type: 'error', code, message, ref });
}

/** Longest BAN mask: longer than any nickname or IPv6 CIDR, so nothing longer could match. */
const MAX_MASK_LENGTH = 64;

/** Refuses a message over --max-message. */
function tooLong(ctx: ChatContext, session: Session, msg: string, ref: string): boolean {
  if (atMostChars(msg, ctx.maxMessage)) return false;
  ctx.log.info({ nickname: session.nickname, length: msg.length }, 'message too long, refused');
  refuse(
    session,
    ErrorCode.MESSAGE_TOO_LONG,
    `message is longer than ${ctx.maxMessage} characters`,
    ref,
  );
  return true;
}

/**
 * CONNECT "0" {nickname, caps?}
 *   -> "01" nickname taken, then close (checked first)
 *   -> "02" room full, then close
 *   -> others get "8" {nickname, userCount}; the joiner gets "03" {serverAddress, userCount,
 *      caps?, limits?}; limits go with caps, so a client that can pace itself knows how
 * An unusable nickname is refused like a taken one ("01"), or with "90" for opted-in clients.
 */
const connect: Handler<typeof Cmd.CONNECT> = (ctx, session, req) => {
  const caps = req.caps === undefined ? undefined : grant(req.caps);
  if (caps !== undefined) session.grant(caps);
  // Flood limits are told to clients that can pace themselves: those that negotiated.
  const limits = caps === undefined ? undefined : ctx.limits;
  if (session.has('history') && req.resume !== undefined) {
    if (ctx.cluster !== undefined) {
      const presence = ctx.cluster.presence;
      ctx.run(session, resumeInCluster(ctx, presence, session, req, req.resume, caps, limits));
      return;
    }
    if (ctx.takeBack(session, req.resume)) {
      const resume = { token: ctx.issueToken(session), resumed: true, nickname: session.nickname };
      const address = session.peer.local;
      session.reply({ type: 'welcome', address, count: ctx.lobby.size, caps, limits, resume });
      const since = positions(ctx, req.since);
      for (const room of session.rooms) {
        ctx.enterRoom(session, room, memberNames(room), room.size, since.get(room));
      }
      return;
    }
  }
  connectAfresh(ctx, session, req, caps, limits);
};

/** CONNECT without a session to take back: claims the nickname and the lobby. */
function connectAfresh(
  ctx: ChatContext,
  session: Session,
  req: RequestOf<typeof Cmd.CONNECT>,
  caps: readonly Capability[] | undefined,
  limits: Limits | undefined,
): void {
  const checked = checkNickname(req.nickname);
  if (!checked.ok) {
    session.reply({ type: 'connect-refused', reason: 'invalid', detail: checked.reason });
    ctx.disconnect(session, 'invalid-nickname');
    return;
  }
  const nickname = checked.nickname;
  const now = ctx.now();
  // The address too: a ban may have come after the connection was accepted.
  const byName = ctx.bans.bansNickname(nickname, now);
  const ban = byName ?? ctx.bans.bansAddress(session.address.ip, now);
  if (ban !== undefined) {
    ctx.log.info(
      { nickname, ip: session.address.ip, mask: ban.mask },
      'banned nickname or address refused at CONNECT',
    );
    const detail = byName === undefined ? 'this address is banned' : 'this nickname is banned';
    session.reply({ type: 'connect-refused', reason: 'banned', detail });
    ctx.disconnect(session, 'banned-nickname');
    return;
  }
  if (ctx.find(nickname) !== undefined) {
    session.reply({ type: 'connect-refused', reason: 'taken', detail: 'nickname is taken' });
    ctx.disconnect(session, 'nickname-taken');
    return;
  }
  // A client with rooms may stay out of the lobby, whose places are few.
  const room = req.lobby === false && session.has('rooms') ? undefined : ctx.lobby;
  if (ctx.cluster !== undefined) {
    const since = room === undefined ? undefined : positions(ctx, req.since).get(room);
    ctx.run(
      session,
      connectInCluster(ctx, ctx.cluster.presence, session, nickname, room, caps, limits, since),
    );
    return;
  }
  if (room?.isFull) {
    session.reply({ type: 'connect-refused', reason: 'room-full', detail: 'the room is full' });
    ctx.disconnect(session, 'room-full');
    return;
  }
  const count = room === undefined ? ctx.lobby.size : room.size + 1;
  // The others hear of the joiner before the joiner hears it is in, as in the course server.
  if (room !== undefined) ctx.publish({ type: 'joined', room: room.name, nickname, count });
  ctx.join(session, nickname, room);
  const resume = session.has('history')
    ? { token: ctx.issueToken(session), resumed: false, nickname }
    : undefined;
  session.reply({ type: 'welcome', address: session.peer.local, count, caps, limits, resume });
  if (room !== undefined && session.has('history')) {
    ctx.enterRoom(session, room, memberNames(room), count, positions(ctx, req.since).get(room));
  }
}

/**
 * CONNECT with `resume` on a node of a cluster: the token's member, on this
 * node or another, is taken over as on one node (nobody sees a leave or a
 * join); an unknown token makes it an ordinary CONNECT.
 */
async function resumeInCluster(
  ctx: ChatContext,
  presence: Presence,
  session: Session,
  req: RequestOf<typeof Cmd.CONNECT>,
  token: string,
  caps: readonly Capability[] | undefined,
  limits: Limits | undefined,
): Promise<void> {
  if (!(await ctx.takeOver(session, token))) {
    if (session.state !== 'closed') connectAfresh(ctx, session, req, caps, limits);
    return;
  }
  const rooms = [...session.rooms];
  const [count, lists] = await Promise.all([
    presence.count(ctx.lobby.key),
    Promise.all(rooms.map((room) => presence.members(room.key))),
  ]);
  if (session.state === 'closed') return;
  const resume = { token: session.resumeToken!, resumed: true, nickname: session.nickname };
  session.reply({ type: 'welcome', address: session.peer.local, count, caps, limits, resume });
  const since = positions(ctx, req.since);
  rooms.forEach((room, i) => {
    const members = lists[i]!;
    ctx.enterRoom(session, room, names(members), members.length, since.get(room));
  });
  recheckBans(ctx, session);
}

/**
 * CONNECT's claims on a node of a cluster: the nickname, then a place in the
 * lobby, each one atomic step across the cluster, in the order the course
 * server checks them ("01" before "02"). What the client sees is the same.
 */
async function connectInCluster(
  ctx: ChatContext,
  presence: Presence,
  session: Session,
  nickname: string,
  room: Room | undefined,
  caps: readonly Capability[] | undefined,
  limits: Limits | undefined,
  since: Position | undefined,
): Promise<void> {
  const gone = () => session.state === 'closed';
  // Until the member is in, whatever it holds in Presence is freed on the way out
  // (also when Redis fails: a claim whose answer was lost may have been applied).
  let settled = false;
  let subscribed = false;
  try {
    if (!(await presence.claim(session.presenceId, nickname, session.address))) {
      settled = true;
      if (gone()) return;
      session.reply({ type: 'connect-refused', reason: 'taken', detail: 'nickname is taken' });
      ctx.disconnect(session, 'nickname-taken');
      return;
    }
    // Granted before "03" tells the client its token, so that any node accepts it.
    const token = session.has('history') ? ctx.issueToken(session) : undefined;
    const granted = token === undefined ? undefined : presence.grant(session.presenceId, token);
    if (room === undefined) {
      const [count] = await Promise.all([presence.count(ctx.lobby.key), granted]);
      if (gone()) return;
      settled = true;
      ctx.join(session, nickname, undefined);
      welcome(session, nickname, count, caps, limits);
      recheckBans(ctx, session);
      return;
    }
    const entered = ctx.interested(room);
    subscribed = true;
    const joined = await presence.join(session.presenceId, room.key, room.capacity, room.name);
    if (!joined.ok) {
      if (gone()) return;
      session.reply({ type: 'connect-refused', reason: 'room-full', detail: 'the room is full' });
      ctx.disconnect(session, 'room-full');
      return;
    }
    const [members] = await Promise.all([presence.members(room.key), entered, granted]);
    if (gone()) return;
    settled = true;
    // Waits from before its "joined" goes out: a broker may hand it back at once.
    const placing = ctx.awaitPlace(session, room, nickname);
    ctx.publish({ type: 'joined', room: room.name, nickname, count: joined.count });
    ctx.join(session, nickname, room);
    if (placing !== undefined) {
      const after = await placing;
      if (gone()) return;
      welcome(session, nickname, joined.count, caps, limits);
      ctx.enterPlaced(session, room, after);
    } else {
      welcome(session, nickname, joined.count, caps, limits);
    }
    if (session.has('history')) {
      ctx.enterRoom(session, room, names(members), joined.count, since);
    }
    recheckBans(ctx, session);
  } finally {
    if (!settled) {
      if (subscribed) ctx.uninterested(room!.key);
      ctx.forget(session);
    }
  }
}

function welcome(
  session: Session,
  nickname: string,
  count: number,
  caps: readonly Capability[] | undefined,
  limits: Limits | undefined,
): void {
  const token = session.resumeToken;
  const resume = token === undefined ? undefined : { token, resumed: false, nickname };
  session.reply({ type: 'welcome', address: session.peer.local, count, caps, limits, resume });
}

function names(members: readonly PresenceMember[]): string[] {
  return members.map((m) => m.nickname);
}

function memberInfo(ctx: ChatContext, nickname: string, address: PeerAddress): MemberInfo {
  return { nickname, address: ctx.hideAddresses ? undefined : address };
}

function memberNames(room: Room): string[] {
  const names: string[] = [];
  for (const member of room.list()) names.push(member.nickname);
  return names;
}

/**
 * The positions a CONNECT gave, by room (any look-alike spelling; the first
 * entry for a room wins). Each name is folded once: folding costs time by its
 * length, and a frame of long names looked up once per room would cost twenty.
 */
function positions(
  ctx: ChatContext,
  since: readonly RoomPosition[] | undefined,
): Map<Room, Position> {
  const out = new Map<Room, Position>();
  for (const entry of since ?? []) {
    const room = ctx.rooms.find(entry.room);
    if (room !== undefined && !out.has(room)) out.set(room, { epoch: entry.epoch, id: entry.id });
  }
  return out;
}

/**
 * USERS "1" {room?} -> "10" {users: [[nickname, ip, port], ...]} in join order.
 * "room" (capability "rooms"; default the lobby) must be one you are in: else 1018.
 */
const users: Handler<typeof Cmd.USERS> = (ctx, session, req) => {
  const room = roomOf(ctx, session, req.room, req.cmd);
  if (room === undefined) return;
  if (ctx.cluster !== undefined) {
    ctx.run(
      session,
      ctx.cluster.presence.members(room.key).then((list) => {
        const members = list.map((m) => memberInfo(ctx, m.nickname, m.address));
        session.reply({ type: 'members', members });
      }),
    );
    return;
  }
  const members: MemberInfo[] = [];
  for (const member of room.list()) members.push(memberInfo(ctx, member.nickname, member.address));
  session.reply({ type: 'members', members });
};

/**
 * WHISPER "2" {to, msg}
 *   -> "20" no such user; "21" to yourself;
 *   -> banned words: the sender is disconnected and nobody receives it;
 *   -> otherwise the receiver gets "70" {from, msg} and the sender "22".
 * Whispers are not stored.
 */
const whisper: Handler<typeof Cmd.WHISPER> = (ctx, session, req) => {
  const target = ctx.find(req.to);
  if (target === undefined && ctx.cluster !== undefined) {
    ctx.run(session, whisperInCluster(ctx, ctx.cluster.presence, session, req.to, req.msg));
    return;
  }
  if (target === undefined) {
    session.reply({ type: 'whisper-refused', reason: 'no-such-user' });
    return;
  }
  if (target === session) {
    session.reply({ type: 'whisper-refused', reason: 'to-self' });
    return;
  }
  if (tooLong(ctx, session, req.msg, req.cmd)) return;
  if (ctx.bannedWords.matches(req.msg)) {
    ctx.disconnect(session, 'banned-words');
    return;
  }
  ctx.publish(
    { type: 'whisper', at: ctx.now(), from: session.nickname, to: target.nickname, msg: req.msg },
    session,
  );
  session.reply({ type: 'whispered' });
};

/** A whisper to someone who is not on this node: Presence says where they are, if anywhere. */
async function whisperInCluster(
  ctx: ChatContext,
  presence: Presence,
  session: Session,
  to: string,
  msg: string,
): Promise<void> {
  const target = await presence.find(to);
  if (session.state === 'closed') return;
  if (target === undefined || target.node === ctx.cluster?.presence.node) {
    session.reply({ type: 'whisper-refused', reason: 'no-such-user' });
    return;
  }
  if (tooLong(ctx, session, msg, Cmd.WHISPER)) return;
  if (ctx.bannedWords.matches(msg)) {
    ctx.disconnect(session, 'banned-words');
    return;
  }
  ctx.whisperTo(target.node, {
    type: 'whisper',
    at: ctx.now(),
    from: session.nickname,
    to: target.nickname,
    msg,
  });
  session.reply({ type: 'whispered' });
}

/** EXIT "3": the server closes the connection; the others get "30". */
const exit: Handler<typeof Cmd.EXIT> = (ctx, session) => {
  ctx.disconnect(session, 'exit');
};

/** VERSION "4" -> "40" {serverVersion} */
const version: Handler<typeof Cmd.VERSION> = (ctx, session) => {
  session.reply({ type: 'version', version: ctx.serverVersion });
};

/**
 * RENAME "5" {newNickname}
 *   -> "50" taken (your own current name included) or unusable;
 *   -> "51" {newNickname}; members with "renames" get "91" {oldNickname, newNickname}.
 */
const rename: Handler<typeof Cmd.RENAME> = (ctx, session, req) => {
  const checked = checkNickname(req.newNickname);
  if (!checked.ok) {
    session.reply({ type: 'rename-refused', reason: 'invalid', detail: checked.reason });
    return;
  }
  const to = checked.nickname;
  if (ctx.bans.bansNickname(to, ctx.now()) !== undefined) {
    ctx.log.info(
      { nickname: session.nickname, to, ip: session.address.ip },
      'banned nickname refused at RENAME',
    );
    session.reply({ type: 'rename-refused', reason: 'banned', detail: 'this nickname is banned' });
    return;
  }
  if (ctx.find(to) !== undefined) {
    session.reply({ type: 'rename-refused', reason: 'taken', detail: 'nickname is taken' });
    return;
  }
  if (ctx.cluster !== undefined) {
    const presence = ctx.cluster.presence;
    ctx.run(
      session,
      presence.rename(session.presenceId, to).then((renamed) => {
        if (session.state === 'closed') return;
        if (renamed) renameTo(ctx, session, to);
        else
          session.reply({ type: 'rename-refused', reason: 'taken', detail: 'nickname is taken' });
      }),
    );
    return;
  }
  renameTo(ctx, session, to);
};

function renameTo(ctx: ChatContext, session: Session, to: string): void {
  const from = session.nickname;
  ctx.rename(session, to);
  session.reply({ type: 'renamed-you', nickname: to });
  // Once per room: a member sharing several rooms with the renamer hears it in each.
  for (const room of session.rooms) {
    ctx.publish({ type: 'renamed', room: room.name, from, to }, session);
  }
}

/** RTT "6" {beginTime} -> "60" {beginTime}, echoed unchanged. */
const rtt: Handler<typeof Cmd.RTT> = (_ctx, session, req) => {
  session.reply({ type: 'rtt', beginTime: req.beginTime });
};

/**
 * CHAT "7" {msg, room?}: everyone else in the room gets "70" {from, msg}
 * (plus room, id, at with "rooms"); nothing comes back to the sender. Banned
 * words disconnect the sender instead. "room" as for USERS.
 */
const chat: Handler<typeof Cmd.CHAT> = (ctx, session, req) => {
  const room = roomOf(ctx, session, req.room, req.cmd);
  if (room === undefined) return;
  if (tooLong(ctx, session, req.msg, req.cmd)) return;
  if (ctx.bannedWords.matches(req.msg)) {
    ctx.disconnect(session, 'banned-words');
    return;
  }
  if (req.cid === null && session.has('history')) {
    refuse(
      session,
      ErrorCode.INVALID_FIELD,
      '"cid" must be a string of 1 to 64 characters',
      req.cmd,
    );
    return;
  }
  ctx.say(session, room, req.msg, session.has('history') ? (req.cid ?? undefined) : undefined);
};

/**
 * Where a chat goes when CHAT would accept it without a word (no refusal,
 * no disconnect); undefined otherwise. Only such a chat may start while the
 * session's earlier requests are unfinished (Chat.route).
 */
export function chatTarget(
  ctx: ChatContext,
  session: Session,
  req: ChatRequest,
): { room: Room; cid: string | undefined } | undefined {
  if (session.state !== 'joined') return undefined;
  let room = session.room;
  if (req.room !== undefined && session.has('rooms')) {
    room = req.room === null ? undefined : ctx.rooms.find(req.room);
  }
  if (room === undefined || !session.rooms.has(room)) return undefined;
  if (!atMostChars(req.msg, ctx.maxMessage) || ctx.bannedWords.matches(req.msg)) return undefined;
  if (!session.has('history')) return { room, cid: undefined };
  if (req.cid === null) return undefined;
  return { room, cid: req.cid };
}

/** The session's operator name, or undefined after refusing it with 1010. */
function operatorOf(ctx: ChatContext, session: Session, cmd: string): string | undefined {
  if (session.operator === undefined) {
    ctx.log.warn(
      { nickname: session.nickname, ip: session.address.ip, cmd },
      'moderation request from a non-operator, refused',
    );
    refuse(session, ErrorCode.NOT_AUTHORIZED, 'you are not an operator', cmd);
  }
  return session.operator;
}

/** Announces a removal to the room (members with "moderation"), then disconnects the member. */
export function removeMember(
  ctx: ChatContext,
  target: Session,
  action: 'kick' | 'ban',
  by: string,
  reason: string,
  seconds: number | undefined,
): void {
  // Announced where the target is seen: the lobby, or else its first room.
  const room = target.room ?? target.rooms.values().next().value;
  const duration = seconds === undefined ? undefined : formatDuration(seconds);
  const detail = removalDetail(action, by, reason, duration);
  ctx.log.warn(
    { nickname: target.nickname, ip: target.address.ip, by, reason, seconds },
    `${target.nickname} was ${detail}`,
  );
  // The target is excluded as the event's origin: it is told by its own "90" instead.
  if (room !== undefined) {
    ctx.publish(
      {
        type: 'moderated',
        room: room.name,
        action,
        nickname: target.nickname,
        by,
        reason,
        seconds,
      },
      target,
    );
  }
  ctx.disconnect(target, action === 'kick' ? 'kicked' : 'banned', detail);
}

function banList(ctx: ChatContext, session: Session): void {
  session.reply({ type: 'ban-list', bans: ctx.bans.list(ctx.now()) });
}

/**
 * OPER "92" {name, password} -> "93" {name}; wrong name or password -> "90" 1010.
 * Failures are logged with the address; the password never is.
 */
const oper: Handler<typeof Cmd.OPER> = (ctx, session, req) => {
  const attempt = ctx.operAttempt(session.address.ip);
  if (attempt !== 'ok') {
    const where = attempt === 'address' ? 'from this address' : 'on this server';
    ctx.log.warn(
      { nickname: session.nickname, ip: session.address.ip, name: clip(req.name) },
      `OPER refused unchecked: too many attempts ${where}`,
    );
    refuse(
      session,
      ErrorCode.NOT_AUTHORIZED,
      attempt === 'address'
        ? 'too many OPER attempts from this address; try again in ten seconds'
        : 'too many OPER attempts on this server; try again in a few seconds',
      req.cmd,
    );
    return;
  }
  const operator = ctx.operators.find((o) => o.name === req.name);
  // Verify even for an unknown name, so the time taken does not tell which names exist.
  const ok =
    (operator ?? ctx.operators[0])?.verify(req.password) === true && operator !== undefined;
  if (!ok) {
    ctx.log.warn(
      { nickname: session.nickname, ip: session.address.ip, name: clip(req.name) },
      'failed OPER',
    );
    refuse(session, ErrorCode.NOT_AUTHORIZED, 'wrong operator name or password', req.cmd);
    return;
  }
  session.operator = operator.name;
  ctx.log.info({ nickname: session.nickname, ip: session.address.ip, name: operator.name }, 'OPER');
  session.reply({ type: 'oper-ok', name: operator.name });
};

/**
 * KICK "94" {nickname, reason?} (operators): the member is disconnected;
 * "99" to members with "moderation", then "30" to everyone. No such member -> 1011.
 */
const kick: Handler<typeof Cmd.KICK> = (ctx, session, req) => {
  const by = operatorOf(ctx, session, req.cmd);
  if (by === undefined) return;
  if (tooLong(ctx, session, req.reason ?? '', req.cmd)) return;
  const target = ctx.find(req.nickname);
  const reason = req.reason ?? '';
  const cluster = ctx.cluster;
  if (cluster !== undefined) {
    // Removed by the node Presence has the member on, only if it still does there (a resume
    // on another node may be taking it over), else followed to where it went; the whole
    // cluster sees the "99" and "30".
    const notice = (member: string, nickname: string): NodeNotice => ({
      type: 'remove',
      member,
      action: 'kick',
      by,
      reason,
      seconds: undefined,
      nickname,
      hops: 0,
      asker: { node: cluster.presence.node, member: session.presenceId, nickname: req.nickname },
    });
    if (target !== undefined) {
      cluster.broker.notify(cluster.presence.node, notice(target.presenceId, target.nickname));
      return;
    }
    ctx.run(
      session,
      cluster.presence.find(req.nickname).then((member) => {
        if (session.state === 'closed') return;
        if (member === undefined) {
          refuse(session, ErrorCode.NO_SUCH_USER, noSuchUser(req.nickname), req.cmd);
          return;
        }
        cluster.broker.notify(member.node, notice(member.id, member.nickname));
      }),
    );
    return;
  }
  if (target === undefined) {
    refuse(session, ErrorCode.NO_SUCH_USER, noSuchUser(req.nickname), req.cmd);
    return;
  }
  removeMember(ctx, target, 'kick', by, reason, undefined);
};

/**
 * A KICK whose removal found nobody on the node it was sent to (the member left, or
 * moved on too often): its operator gets what one process answers at once.
 */
export function kickMissed(session: Session, nickname: string): void {
  refuse(session, ErrorCode.NO_SUCH_USER, noSuchUser(nickname), Cmd.KICK);
}

function noSuchUser(nickname: string): string {
  return `no member is called "${clip(nickname)}"`;
}

/**
 * BAN "95" {mask, seconds?, reason?} (operators) -> "98" the whole list; then
 * every matching member is removed as by KICK (notice action "ban").
 */
const ban: Handler<typeof Cmd.BAN> = (ctx, session, req) => {
  const by = operatorOf(ctx, session, req.cmd);
  if (by === undefined) return;
  const mask = req.mask.trim();
  if (mask === '' || mask.length > MAX_MASK_LENGTH) {
    refuse(
      session,
      ErrorCode.INVALID_FIELD,
      `"mask" must be 1 to ${MAX_MASK_LENGTH} characters`,
      req.cmd,
    );
    return;
  }
  if (tooLong(ctx, session, req.reason ?? '', req.cmd)) return;
  const now = ctx.now();
  const reason = req.reason ?? '';
  const entry = {
    mask,
    by,
    reason,
    expires: req.seconds === undefined ? null : now + req.seconds * 1000,
  };
  const cluster = ctx.cluster;
  if (cluster !== undefined) {
    ctx.run(session, banInCluster(ctx, cluster, session, entry, req.seconds));
    return;
  }
  save(ctx, () => ctx.bans.add(entry, now));
  ctx.log.warn({ mask, by, reason, seconds: req.seconds, ip: session.address.ip }, `ban ${mask}`);
  banList(ctx, session);
  enforceBan(ctx, entry, req.seconds);
};

/**
 * BAN on a node of a cluster: the ban is stored where every node reads it,
 * enforced here at once and by the others when they hear of it, and each
 * node removes its own members that match.
 */
async function banInCluster(
  ctx: ChatContext,
  cluster: { readonly presence: Presence; readonly broker: Broker },
  session: Session,
  entry: Ban,
  seconds: number | undefined,
): Promise<void> {
  const now = ctx.now();
  await cluster.presence.ban(parseMask(entry.mask).key, entry, now);
  ctx.log.warn(
    { mask: entry.mask, by: entry.by, reason: entry.reason, seconds, ip: session.address.ip },
    `ban ${entry.mask}`,
  );
  ctx.bans.replace(await cluster.presence.bans());
  cluster.broker.notify(undefined, { type: 'banned', ban: entry, seconds });
  if (session.state !== 'closed') banList(ctx, session);
  enforceBan(ctx, entry, seconds);
}

/** Removes this node's members that a new ban matches. */
export function enforceBan(ctx: ChatContext, ban: Ban, seconds: number | undefined): void {
  const now = ctx.now();
  for (const member of ctx.members()) {
    if (member.state === 'joined' && banMatches(ban, member.nickname, member.address.ip, now)) {
      removeBanned(ctx, member, ban, seconds);
    }
  }
}

/**
 * On a cluster, a member that has just joined or resumed is checked against the bans
 * again: a ban that reached this node while its claim or resume was in Redis found no
 * member here to remove, and the member it took over may have been removed too late.
 */
function recheckBans(ctx: ChatContext, session: Session): void {
  if (session.state !== 'joined') return;
  const now = ctx.now();
  const ban =
    ctx.bans.bansNickname(session.nickname, now) ?? ctx.bans.bansAddress(session.address.ip, now);
  if (ban === undefined) return;
  removeBanned(ctx, session, ban, secondsLeft(ban, now));
}

/** What is left of a ban, as BAN's `seconds` (undefined: until unbanned). */
export function secondsLeft(ban: Ban, now: number): number | undefined {
  return ban.expires === null ? undefined : Math.max(1, Math.ceil((ban.expires - now) / 1000));
}

function removeBanned(
  ctx: ChatContext,
  member: Session,
  ban: Ban,
  seconds: number | undefined,
): void {
  const cluster = ctx.cluster;
  if (cluster === undefined) {
    removeMember(ctx, member, 'ban', ban.by, ban.reason, seconds);
    return;
  }
  // As a KICK: removed here only while Presence still has the member here, else followed
  // to the node a resume moved it to, so a ban racing a resume misses neither.
  cluster.broker.notify(cluster.presence.node, {
    type: 'remove',
    member: member.presenceId,
    action: 'ban',
    by: ban.by,
    reason: ban.reason,
    seconds,
    nickname: member.nickname,
    hops: 0,
  });
}

/** UNBAN "96" {mask} (operators) -> "98" the whole list. */
const unban: Handler<typeof Cmd.UNBAN> = (ctx, session, req) => {
  const by = operatorOf(ctx, session, req.cmd);
  if (by === undefined) return;
  const cluster = ctx.cluster;
  if (cluster !== undefined) {
    ctx.run(
      session,
      (async () => {
        const found = await cluster.presence.unban(parseMask(req.mask.trim()).key);
        ctx.log.warn({ mask: clip(req.mask), by, found }, `unban ${clip(req.mask)}`);
        ctx.bans.replace(await cluster.presence.bans());
        cluster.broker.notify(undefined, { type: 'unbanned', mask: req.mask });
        if (session.state !== 'closed') banList(ctx, session);
      })(),
    );
    return;
  }
  const now = ctx.now();
  let found = false;
  save(ctx, () => {
    found = ctx.bans.remove(req.mask, now);
  });
  ctx.log.warn({ mask: clip(req.mask), by, found }, `unban ${clip(req.mask)}`);
  banList(ctx, session);
};

/** BANS "97" (operators) -> "98" {bans: [{mask, by, reason, expires}]}. */
const bans: Handler<typeof Cmd.BANS> = (ctx, session, req) => {
  if (operatorOf(ctx, session, req.cmd) === undefined) return;
  const cluster = ctx.cluster;
  if (cluster !== undefined) {
    ctx.run(
      session,
      cluster.presence.bans().then((list) => {
        ctx.bans.replace(list);
        if (session.state !== 'closed') banList(ctx, session);
      }),
    );
    return;
  }
  banList(ctx, session);
};

/** A failed write keeps the change in memory: it applies until a restart. */
function save(ctx: ChatContext, change: () => void): void {
  try {
    change();
  } catch (err) {
    ctx.log.error({ err }, 'could not save the ban list; the change applies until a restart');
  }
}

// ---- rooms (capability "rooms"; see rooms.ts) --------------------------------

/**
 * The room a CHAT or USERS names: the lobby when it names none or the client
 * did not ask for rooms (a course client's extra field changes nothing);
 * otherwise one the session is in, or a refusal and undefined.
 */
function roomOf(
  ctx: ChatContext,
  session: Session,
  name: string | null | undefined,
  ref: string,
): Room | undefined {
  if (name === undefined || !session.has('rooms')) {
    if (session.room === undefined)
      refuse(session, ErrorCode.NOT_IN_ROOM, 'you are in no lobby: name a room', ref);
    return session.room;
  }
  if (name === null) {
    refuse(session, ErrorCode.INVALID_FIELD, '"room" must be a well-formed string', ref);
    return undefined;
  }
  const room = ctx.rooms.find(name);
  if (room === undefined || !session.rooms.has(room)) {
    refuse(session, ErrorCode.NOT_IN_ROOM, 'you are not in that room', ref);
    return undefined;
  }
  return room;
}

/**
 * JOIN_ROOM "100" {room}
 *   -> "90" 1015 bad name, 1016 already in it, 1014 in too many rooms,
 *      1013 no such room (creation off), 1019 no new room past --max-rooms,
 *      1012 full -- checked in this order;
 *   -> the room's others get "8" {nickname, userCount, room}, then the joiner
 *      "101" {room, members, userCount}. A room that does not exist is made.
 */
const joinRoom: Handler<typeof Cmd.JOIN_ROOM> = (ctx, session, req) => {
  const room = ctx.rooms.admit(session, req.room);
  if (!(room instanceof Room)) {
    refuse(session, room.code, room.message, req.cmd);
    return;
  }
  if (ctx.cluster !== undefined) {
    ctx.run(session, joinInCluster(ctx, ctx.cluster.presence, session, room, req.since));
    return;
  }
  const count = room.size + 1;
  ctx.publish({ type: 'joined', room: room.name, nickname: session.nickname, count });
  ctx.rooms.add(session, room);
  ctx.enterRoom(session, room, memberNames(room), count, req.since);
};

/** JOIN_ROOM's place in the room, claimed across the cluster; then as on one node. */
async function joinInCluster(
  ctx: ChatContext,
  presence: Presence,
  session: Session,
  admitted: Room,
  since: Position | undefined,
): Promise<void> {
  const entered = ctx.interested(admitted);
  let inside = false;
  try {
    let joined: JoinResult;
    try {
      joined = await presence.join(
        session.presenceId,
        admitted.key,
        admitted.capacity,
        admitted.name,
      );
    } catch (err) {
      if (!(err instanceof MemberGone)) throw err;
      // A resume took this member to another connection before the join reached Redis
      // (or its node was reaped): the node's notice would close this one anyway.
      if (session.state === 'joined') ctx.disconnect(session, 'replaced');
      return;
    }
    if (!joined.ok) {
      if (joined.reason === 'full') {
        refuse(session, ErrorCode.ROOM_FULL, `${admitted.name} is full`, Cmd.JOIN_ROOM);
      } else {
        refuse(
          session,
          ErrorCode.ALREADY_IN_ROOM,
          `you are already in ${admitted.name}`,
          Cmd.JOIN_ROOM,
        );
      }
      return;
    }
    const [members] = await Promise.all([presence.members(admitted.key), entered]);
    // Its leave releases the place; the "30" tells the room.
    if (session.state !== 'joined') return;
    // Another local member may have made the same new room meanwhile: join that one.
    const room = ctx.rooms.find(admitted.name) ?? admitted;
    inside = true;
    const placing = ctx.awaitPlace(session, room, session.nickname);
    ctx.publish({
      type: 'joined',
      room: room.name,
      nickname: session.nickname,
      count: joined.count,
    });
    ctx.rooms.add(session, room);
    const after = placing === undefined ? undefined : await placing;
    // Closed meanwhile: its leave took it out of the room again.
    if (session.state !== 'joined') return;
    ctx.enterRoom(session, room, names(members), joined.count, since);
    if (placing !== undefined) ctx.enterPlaced(session, room, after);
  } finally {
    if (!inside) {
      ctx.rooms.abandon(admitted);
      ctx.uninterested(admitted.key);
    }
  }
}

/** HISTORY "106" {room, before?, limit?} -> "107" {room, epoch, messages, more}; 1018 not in it. */
const history: Handler<typeof Cmd.HISTORY> = (ctx, session, req) => {
  const room = ctx.rooms.find(req.room);
  if (room === undefined || !session.rooms.has(room)) {
    refuse(session, ErrorCode.NOT_IN_ROOM, 'you are not in that room', req.cmd);
    return;
  }
  ctx.readHistory(session, room, req.before, req.limit ?? 50);
};

/**
 * PART "102" {room} -> "103" {room}; the room's others get "30" {nickname, userCount, room}.
 *   -> "90" 1017 for the lobby (leaving it is EXIT), 1018 not in that room.
 */
const partRoom: Handler<typeof Cmd.PART_ROOM> = (ctx, session, req) => {
  const room = ctx.rooms.find(req.room);
  if (room === ctx.lobby && session.rooms.has(room)) {
    refuse(session, ErrorCode.CANNOT_LEAVE_LOBBY, 'leaving the lobby means EXIT', req.cmd);
    return;
  }
  if (room === undefined || !session.rooms.has(room)) {
    refuse(session, ErrorCode.NOT_IN_ROOM, 'you are not in that room', req.cmd);
    return;
  }
  ctx.rooms.remove(session, room);
  session.reply({ type: 'room-parted', room: room.name });
  if (ctx.cluster !== undefined) {
    ctx.uninterested(room.key);
    const nickname = session.nickname;
    ctx.run(
      session,
      ctx.cluster.presence.leave(session.presenceId, room.key).then((count) => {
        if (count !== undefined) ctx.publish({ type: 'left', room: room.name, nickname, count });
      }),
    );
    return;
  }
  ctx.publish({ type: 'left', room: room.name, nickname: session.nickname, count: room.size });
};

/**
 * The most rooms one "105" lists (some 100 KB as sent, well under --max-queue):
 * however many rooms clients make, the answer stays one bounded write.
 */
export const MAX_ROOM_LIST = 1000;

/**
 * ROOMS "104" -> "105" {rooms: [{room, userCount, joined}]}: every room that exists, the
 * lobby first, then in order of creation; at most MAX_ROOM_LIST.
 */
const listRooms: Handler<typeof Cmd.ROOMS> = (ctx, session) => {
  if (ctx.cluster !== undefined) {
    ctx.run(
      session,
      ctx.cluster.presence.rooms(MAX_ROOM_LIST).then((listed) => {
        session.reply({ type: 'room-list', rooms: clusterRooms(ctx, session, listed) });
      }),
    );
    return;
  }
  const rooms: RoomInfo[] = [];
  for (const room of ctx.rooms.all()) {
    if (rooms.length >= MAX_ROOM_LIST) break;
    rooms.push({ name: room.name, count: room.size, joined: session.rooms.has(room) });
  }
  session.reply({ type: 'room-list', rooms });
};

/**
 * ROOMS on a node of a cluster: the rooms with members on any node (Presence
 * knows them, made on whichever node), shown under this node's name for those
 * it knows; then rooms that exist here though empty everywhere (declared ones).
 */
function clusterRooms(
  ctx: ChatContext,
  session: Session,
  listed: readonly RoomCount[],
): RoomInfo[] {
  const joined = new Set<string>();
  for (const room of session.rooms) joined.add(room.key);
  const counted = new Map<string, number>();
  for (const r of listed) counted.set(r.room, r.count);
  const lobby = ctx.lobby;
  const rooms: RoomInfo[] = [
    { name: lobby.name, count: counted.get(lobby.key) ?? 0, joined: joined.has(lobby.key) },
  ];
  for (const r of listed) {
    if (r.room === lobby.key) continue;
    const name = ctx.rooms.keyed(r.room)?.name ?? r.name;
    rooms.push({ name, count: r.count, joined: joined.has(r.room) });
  }
  // A list cut at the bound says nothing of the rooms it left out.
  if (listed.length < MAX_ROOM_LIST) {
    for (const room of ctx.rooms.all()) {
      if (room === lobby || counted.has(room.key)) continue;
      rooms.push({ name: room.name, count: 0, joined: joined.has(room.key) });
    }
  }
  return rooms.slice(0, MAX_ROOM_LIST);
}

// ---- the table -----------------------------------------------------------------

interface Command<C extends RequestCode> {
  /** Allowed before the client has joined (only CONNECT is). */
  greeting: boolean;
  /**
   * An extension's command: unknown (1003) to a session without this
   * capability, or, for "caps", to one that negotiated nothing (a course client).
   */
  requires?: Capability | 'caps';
  handle: Handler<C>;
}

export const COMMANDS: { [C in RequestCode]: Command<C> } = {
  [Cmd.CONNECT]: { greeting: true, handle: connect },
  [Cmd.USERS]: { greeting: false, handle: users },
  [Cmd.WHISPER]: { greeting: false, handle: whisper },
  [Cmd.EXIT]: { greeting: false, handle: exit },
  [Cmd.VERSION]: { greeting: false, handle: version },
  [Cmd.RENAME]: { greeting: false, handle: rename },
  [Cmd.RTT]: { greeting: false, handle: rtt },
  [Cmd.CHAT]: { greeting: false, handle: chat },
  [Cmd.OPER]: { greeting: false, requires: 'caps', handle: oper },
  [Cmd.KICK]: { greeting: false, requires: 'caps', handle: kick },
  [Cmd.BAN]: { greeting: false, requires: 'caps', handle: ban },
  [Cmd.UNBAN]: { greeting: false, requires: 'caps', handle: unban },
  [Cmd.BANS]: { greeting: false, requires: 'caps', handle: bans },
  [Cmd.JOIN_ROOM]: { greeting: false, requires: 'rooms', handle: joinRoom },
  [Cmd.PART_ROOM]: { greeting: false, requires: 'rooms', handle: partRoom },
  [Cmd.ROOMS]: { greeting: false, requires: 'rooms', handle: listRooms },
  [Cmd.HISTORY]: { greeting: false, requires: 'history', handle: history },
};

export function commandFor<C extends RequestCode>(code: C): Command<C> {
  return COMMANDS[code];
}

/**
 * Whether `session` may use the command `code` names: false only for an
 * extension's command the session did not negotiate, which is then unknown
 * to it, however well-formed the request.
 */
export function permitted(session: Session, code: string): boolean {
  if (!Object.hasOwn(COMMANDS, code)) return true;
  const requires = COMMANDS[code as RequestCode].requires;
  if (requires === undefined) return true;
  return requires === 'caps' ? session.negotiated : session.has(requires);
}

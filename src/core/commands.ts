import { type Capability, grant } from '../protocol/capabilities.js';
import { Cmd, ErrorCode, type RequestCode } from '../protocol/codes.js';
import type { ChatRequest, Position, RoomPosition } from '../protocol/messages.js';
import { type Limits, requestCost } from '../protocol/pacing.js';
import { actionShownAsChat, atMostChars, blank } from '../protocol/text.js';
import {
  type ChatContext,
  type Handler,
  memberGone,
  memberNames,
  names,
  type RequestOf,
  refuse,
  tooLong,
} from './command-context.js';
import type { MemberInfo, PeerAddress } from './events.js';
import {
  ban,
  bans,
  kick,
  oper,
  recheckBans,
  removedIfBanned,
  tellRemoved,
  unban,
} from './moderation-commands.js';
import { checkNickname, type NicknameCheck, nicknameKey } from './nickname.js';
import { lineageOf, MemberGone, type Presence } from './presence.js';
import type { Room } from './room.js';
import { history, joinRoom, listRooms, partRoom } from './room-commands.js';
import type { Session } from './session.js';

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
  session.told = limits;
  if (session.has('history') && req.resume !== undefined) {
    if (ctx.cluster !== undefined) {
      const presence = ctx.cluster.presence;
      ctx.run(session, resumeInCluster(ctx, presence, session, req, req.resume, caps, limits));
      return;
    }
    if (ctx.takeBack(session, req.resume)) {
      // Its connection may come from an address banned since it was accepted: removed as
      // the ban would have removed the member, before its "03" (as on a cluster).
      if (removedIfBanned(ctx, session)) return;
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
/**
 * The nickname rules, and the banned words: a nickname is shown to everyone in member lists
 * and before every chat, so it is held to the rule chats are (an operator's list of single
 * words; the course's one phrase, with its spaces, can be in no nickname).
 */
function usableNickname(ctx: ChatContext, raw: string): NicknameCheck {
  const checked = checkNickname(raw);
  if (!checked.ok) return checked;
  if (ctx.bannedWords.matchesName(checked.nickname)) {
    return { ok: false, reason: 'nickname contains a banned word' };
  }
  // A KICK's or BAN's notice names its operator by the account name ("kicked by teacher"):
  // a member holding that nickname, or one like it, would be read as the one who did it.
  // Not the operator either: its session's name would be refused at the CONNECT of every
  // reconnect that finds the session gone (a server restart), as OPER is not yet proved.
  if (ctx.operatorNames.has(nicknameKey(checked.nickname))) {
    return { ok: false, reason: "nickname is an operator's name" };
  }
  return checked;
}

function connectAfresh(
  ctx: ChatContext,
  session: Session,
  req: RequestOf<typeof Cmd.CONNECT>,
  caps: readonly Capability[] | undefined,
  limits: Limits | undefined,
): void {
  // The token of a session kicked or banned while its connection was dead: told now, not let
  // back in.
  const removed = req.resume === undefined ? undefined : ctx.removals.take(req.resume, ctx.now());
  if (removed !== undefined) {
    tellRemoved(ctx, session, removed);
    return;
  }
  const checked = usableNickname(ctx, req.nickname);
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
    refuseFull(ctx, session, nickname, room);
    return;
  }
  const count = room === undefined ? ctx.lobby.size : room.size + 1;
  // The others hear of the joiner before the joiner hears it is in, as in the course server.
  if (room !== undefined) ctx.publish({ type: 'joined', room: room.name, nickname, count });
  ctx.join(session, nickname, room);
  // Its token, which "03" carries (welcome).
  if (session.has('history')) ctx.issueToken(session);
  welcome(ctx, session, nickname, count, caps, limits);
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
    // A client gone meanwhile took nothing over, and is not made a member of its own (nor
    // spends the one telling of a removal).
    const gone = () => session.state === 'closed' || session.goneWith !== undefined;
    if (gone()) return;
    // Removed by a KICK or BAN, maybe on another node, while its connection was dead.
    const removed = await presence.takeRemoval(token).catch((err: unknown) => {
      ctx.log.warn({ err }, 'could not read whether a resumed session was removed');
      return undefined;
    });
    if (gone()) return;
    if (removed !== undefined) {
      tellRemoved(ctx, session, removed);
      return;
    }
    connectAfresh(ctx, session, req, caps, limits);
    return;
  }
  // Before its "03": no member list, no history, and nothing it sent after the CONNECT is
  // taken from a member banned while away. The ban's own removal, following the member
  // here from its old node, then finds nothing left to remove.
  if (removedIfBanned(ctx, session)) return;
  const rooms = [...session.rooms];
  const [count, lists] = await Promise.all([
    presence.count(ctx.lobby.key),
    Promise.all(rooms.map((room) => ctx.freshMembers(room.key))),
  ]);
  if (session.state === 'closed') return;
  const shown = rooms.map((room, i) => ctx.shownMembers(session, room, lists[i]));
  const lobby = shown[rooms.indexOf(ctx.lobby)]?.length ?? count;
  const resume = { token: session.resumeToken!, resumed: true, nickname: session.nickname };
  session.reply({
    type: 'welcome',
    address: session.peer.local,
    count: lobby,
    caps,
    limits,
    resume,
  });
  const since = positions(ctx, req.since);
  rooms.forEach((room, i) => {
    const members = shown[i] ?? names(lists[i]!);
    ctx.enterRoom(session, room, members, members.length, since.get(room));
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
    session.lineage = lineageOf(presence.node, session.presenceId);
    // Gone meanwhile: its removal is done, and nothing would forget a token issued now (the
    // claim is freed below, as it is unsettled).
    if (gone()) return;
    // Granted before "03" tells the client its token, so that any node accepts it.
    const token = session.has('history') ? ctx.issueToken(session) : undefined;
    const granted = token === undefined ? undefined : grantOwn(ctx, presence, session, token);
    if (room === undefined) {
      const [count] = await Promise.all([presence.count(ctx.lobby.key), granted]);
      if (gone()) return;
      settled = true;
      ctx.join(session, nickname, undefined);
      welcome(ctx, session, nickname, count, caps, limits);
      recheckBans(ctx, session);
      return;
    }
    const entered = ctx.interested(room);
    subscribed = true;
    const joined = await presence.join(session.presenceId, room.key, room.capacity, room.name);
    if (!joined.ok) {
      if (gone()) return;
      refuseFull(ctx, session, nickname, room);
      return;
    }
    // Read once the room's events reach this node (see joinInCluster).
    await Promise.all([entered, granted]);
    const members = await ctx.freshMembers(room.key);
    ctx.membersChanged(room.key);
    if (gone()) return;
    settled = true;
    // Waits from before its "joined" goes out: a broker may hand it back at once.
    const placing = ctx.awaitPlace(session, room, nickname);
    ctx.publish({
      type: 'joined',
      room: room.name,
      nickname,
      count: joined.count,
      origin: ctx.originOf(session),
      lineage: session.lineage,
    });
    ctx.join(session, nickname, room);
    const after = placing === undefined ? undefined : await placing;
    if (gone()) return;
    const shown = ctx.shownMembers(session, room, members);
    const count = shown?.length ?? joined.count;
    // Its "03" tells the chats of its identity that came meanwhile (Session.tellStored):
    // behind the room's replay, which leaves out those it shows.
    if (session.has('history')) session.holdRoom(room.name);
    welcome(ctx, session, nickname, count, caps, limits);
    if (placing !== undefined) ctx.enterPlaced(session, room, after);
    if (session.has('history')) {
      ctx.enterRoom(session, room, shown ?? names(members), count, since);
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
  ctx: ChatContext,
  session: Session,
  nickname: string,
  count: number,
  caps: readonly Capability[] | undefined,
  limits: Limits | undefined,
): void {
  const token = session.resumeToken;
  const resume = token === undefined ? undefined : { token, resumed: false, nickname };
  const motd = motdFor(ctx, caps);
  session.reply({
    type: 'welcome',
    address: session.peer.local,
    count,
    caps,
    limits,
    resume,
    motd,
  });
}

/**
 * The message of the day for a CONNECT that joins afresh: to clients that negotiated (a
 * course client's "03" stays the course's). Not on a resume: its client was told it.
 */
function motdFor(ctx: ChatContext, caps: readonly Capability[] | undefined): string | undefined {
  return caps !== undefined && ctx.motd !== '' ? ctx.motd : undefined;
}

function memberInfo(ctx: ChatContext, nickname: string, address: PeerAddress): MemberInfo {
  return { nickname, address: ctx.hideAddresses ? undefined : address };
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
 * USERS "1" {room?} -> "10" {users: [[nickname, ip, port], ...]} in join order.
 * "room" (capability "rooms"; default the lobby) must be one you are in: else 1018.
 */
const users: Handler<typeof Cmd.USERS> = (ctx, session, req) => {
  const room = roomOf(ctx, session, req.room, req.cmd);
  if (room === undefined) return;
  if (ctx.cluster !== undefined) {
    ctx.run(
      session,
      ctx.membersOf(room).then((list) => {
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
 *   -> a receiver not keeping up with what it is sent (Peer.busy): "20", or for a client
 *      with errors "90" 1022 (try again); the receiver is not cut off for it;
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
  if (target.peer.busy?.() === true) {
    session.reply({ type: 'whisper-refused', reason: 'busy' });
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
  const gone = () => session.state === 'closed';
  const target = await presence.find(to);
  if (gone()) return;
  if (target === undefined || target.node === ctx.cluster?.presence.node) {
    session.reply({ type: 'whisper-refused', reason: 'no-such-user' });
    return;
  }
  if (tooLong(ctx, session, msg, Cmd.WHISPER)) return;
  if (ctx.bannedWords.matches(msg)) {
    ctx.disconnect(session, 'banned-words');
    return;
  }
  // "22" only once Redis took it; if that is not known, the request fails (3005, as any
  // request Redis fails): the whisper may or may not arrive. A target whose node took
  // nothing (it died; Presence frees its members within the timeout) is no such user.
  const taken = await ctx.whisperTo(target.node, {
    type: 'whisper',
    at: ctx.now(),
    from: session.nickname,
    to: target.nickname,
    msg,
    member: target.id,
  });
  if (gone()) return;
  session.reply(
    taken ? { type: 'whispered' } : { type: 'whisper-refused', reason: 'no-such-user' },
  );
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
  const checked = usableNickname(ctx, req.newNickname);
  if (!checked.ok) {
    session.reply({ type: 'rename-refused', reason: 'invalid', detail: checked.reason });
    return;
  }
  const to = checked.nickname;
  if (ctx.bans.bansNickname(to, ctx.now()) !== undefined) {
    const { nickname, address } = session;
    ctx.refusals.log(
      'banned-rename',
      (held) =>
        ctx.log.info(
          { nickname, to, ip: address.ip, ...held },
          'banned nickname refused at RENAME',
        ),
      address.ip,
    );
    session.reply({ type: 'rename-refused', reason: 'banned', detail: 'this nickname is banned' });
    return;
  }
  if (ctx.find(to) !== undefined) {
    session.reply({ type: 'rename-refused', reason: 'taken', detail: 'nickname is taken' });
    return;
  }
  // Announced in every room of its sender: as many requests' worth as a chat to each, or
  // one connection renaming at the flood limit fans out 20 times what its chats could.
  const rooms = session.rooms.size;
  if (!ctx.affords(session, requestCost(req, rooms))) {
    refuse(
      session,
      ErrorCode.RATE_LIMITED,
      `a rename is announced in each of your ${rooms} rooms, and counts as a request in each; slow down`,
      req.cmd,
    );
    return;
  }
  if (ctx.cluster !== undefined) {
    const presence = ctx.cluster.presence;
    ctx.run(
      session,
      presence.rename(session.presenceId, to).then(
        (renamed) => {
          if (session.state === 'closed') return;
          if (renamed) {
            for (const room of session.rooms) ctx.membersChanged(room.key);
            renameTo(ctx, session, to);
          } else
            session.reply({ type: 'rename-refused', reason: 'taken', detail: 'nickname is taken' });
        },
        async (err: unknown) => {
          if (!(err instanceof MemberGone)) throw err;
          await memberGone(ctx, presence, session, () =>
            session.reply({ type: 'rename-refused', reason: 'taken', detail: 'try again' }),
          );
        },
      ),
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
  const origin = ctx.originOf(session);
  for (const room of session.rooms) {
    ctx.publish(
      { type: 'renamed', room: room.name, from, to, origin, lineage: session.lineage },
      session,
    );
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
  if (saysBannedWords(ctx, session, req)) {
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
  const refused = actionRefused(session, req);
  if (refused !== undefined) {
    refuse(session, ErrorCode.INVALID_FIELD, refused, req.cmd);
    return;
  }
  ctx.say(
    session,
    room,
    req.msg,
    session.has('history') ? (req.cid ?? undefined) : undefined,
    isAction(session, req),
  );
};

/** Whether a chat holds banned words in any form it is delivered in (an action's asterisks too). */
function saysBannedWords(ctx: ChatContext, session: Session, req: ChatRequest): boolean {
  if (ctx.bannedWords.matches(req.msg)) return true;
  return isAction(session, req) && ctx.bannedWords.matches(actionShownAsChat(req.msg));
}

/** Whether CHAT is an action (IRC's /me): only from a client with "actions". */
function isAction(session: Session, req: ChatRequest): boolean {
  return req.action === true && session.has('actions');
}

/** Why CHAT's `action` is refused (1002), if it is; a client without "actions" may send anything. */
function actionRefused(session: Session, req: ChatRequest): string | undefined {
  if (req.action === undefined || !session.has('actions')) return undefined;
  if (req.action === null) return '"action" must be true or false';
  // Shown as "* ann " to some and as "**" to others: an action says what its sender does.
  if (req.action && blank(req.msg)) return 'an action says what you do: "msg" is blank';
  return undefined;
}

/**
 * Where a chat goes when CHAT would accept it without a word (no refusal,
 * no disconnect); undefined otherwise. Only such a chat may start while the
 * session's earlier requests are unfinished (Chat.route).
 */
export function chatTarget(
  ctx: ChatContext,
  session: Session,
  req: ChatRequest,
): { room: Room; cid: string | undefined; action: boolean } | undefined {
  if (session.state !== 'joined') return undefined;
  let room = session.room;
  if (req.room !== undefined && session.has('rooms')) {
    room = req.room === null ? undefined : ctx.rooms.find(req.room);
  }
  if (room === undefined || !session.rooms.has(room)) return undefined;
  if (!atMostChars(req.msg, ctx.maxMessage) || saysBannedWords(ctx, session, req)) return undefined;
  if (actionRefused(session, req) !== undefined) return undefined;
  const action = isAction(session, req);
  if (!session.has('history')) return { room, cid: undefined, action };
  if (req.cid === null) return undefined;
  return { room, cid: req.cid, action };
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

/**
 * Grants `token`. Refused (the identity a token named for the session is another member's:
 * the same token presented on another node at once), the session gets one of its own.
 */
async function grantOwn(
  ctx: ChatContext,
  presence: Presence,
  session: Session,
  token: string,
): Promise<void> {
  if (await presence.grant(session.presenceId, token)) return;
  if (session.state === 'closed') return;
  ctx.disownIdentity(session);
  await presence.grant(session.presenceId, ctx.issueToken(session));
}

/**
 * "02" to a CONNECT that found its room full, and a line in the log (once per 10 s, with how
 * many were held back): "we cannot get in" is asked of the log first.
 */
function refuseFull(ctx: ChatContext, session: Session, nickname: string, room: Room): void {
  const ip = session.address.ip;
  ctx.refusals.log(
    'room-full',
    (held) =>
      ctx.log.info(
        { nickname, ip, room: room.name, capacity: room.capacity, ...held },
        'room full, CONNECT refused',
      ),
    ip,
  );
  session.reply({ type: 'connect-refused', reason: 'room-full', detail: 'the room is full' });
  ctx.disconnect(session, 'room-full');
}

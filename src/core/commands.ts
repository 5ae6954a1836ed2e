import { grant } from '../protocol/capabilities.js';
import { Cmd, ErrorCode, type ErrorCodeValue, type RequestCode } from '../protocol/codes.js';
import type { Request } from '../protocol/messages.js';
import type { Limits } from '../protocol/pacing.js';
import type { BannedWords } from './banned-words.js';
import type { ChatEvent, MemberInfo } from './events.js';
import { checkNickname } from './nickname.js';
import type { DisconnectReason, Logger } from './ports.js';
import type { Room } from './room.js';
import type { Session } from './session.js';

/** What command handlers may use of the chat service. */
export interface ChatContext {
  readonly lobby: Room;
  readonly serverVersion: string;
  readonly bannedWords: BannedWords;
  readonly hideAddresses: boolean;
  readonly maxMessage: number;
  /** Flood control as announced to opted-in clients in "03". */
  readonly limits: Limits;
  readonly log: Logger;
  now(): number;
  find(nickname: string): Session | undefined;
  /** Registers the nickname and adds the session to the room. */
  join(session: Session, nickname: string, room: Room): void;
  rename(session: Session, nickname: string): void;
  disconnect(session: Session, reason: DisconnectReason, detail?: string): void;
  /** The one fan-out point: every event reaches its room's members (or a whisper's target) here. */
  publish(event: ChatEvent, origin?: Session): void;
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

/** Refuses a message over --max-message. */
function tooLong(ctx: ChatContext, session: Session, msg: string, ref: string): boolean {
  if (msg.length <= ctx.maxMessage) return false;
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
  const checked = checkNickname(req.nickname);
  if (!checked.ok) {
    session.reply({ type: 'connect-refused', reason: 'invalid', detail: checked.reason });
    ctx.disconnect(session, 'invalid-nickname');
    return;
  }
  const nickname = checked.nickname;
  if (ctx.find(nickname) !== undefined) {
    session.reply({ type: 'connect-refused', reason: 'taken', detail: 'nickname is taken' });
    ctx.disconnect(session, 'nickname-taken');
    return;
  }
  const room = ctx.lobby;
  if (room.isFull) {
    session.reply({ type: 'connect-refused', reason: 'room-full', detail: 'the room is full' });
    ctx.disconnect(session, 'room-full');
    return;
  }
  const count = room.size + 1;
  // The others hear of the joiner before the joiner hears it is in, as in the course server.
  ctx.publish({ type: 'joined', room: room.name, nickname, count });
  ctx.join(session, nickname, room);
  session.reply({
    type: 'welcome',
    address: session.peer.local,
    count,
    caps,
    // Flood limits are told to clients that can pace themselves: those that negotiated.
    limits: caps === undefined ? undefined : ctx.limits,
  });
};

/** USERS "1" -> "10" {users: [[nickname, ip, port], ...]} in join order. */
const users: Handler<typeof Cmd.USERS> = (ctx, session) => {
  const members: MemberInfo[] = [];
  for (const member of session.room?.list() ?? []) {
    members.push({
      nickname: member.nickname,
      address: ctx.hideAddresses ? undefined : member.address,
    });
  }
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
  if (ctx.find(to) !== undefined) {
    session.reply({ type: 'rename-refused', reason: 'taken', detail: 'nickname is taken' });
    return;
  }
  const from = session.nickname;
  ctx.rename(session, to);
  session.reply({ type: 'renamed-you', nickname: to });
  const room = session.room;
  if (room !== undefined) ctx.publish({ type: 'renamed', room: room.name, from, to }, session);
};

/** RTT "6" {beginTime} -> "60" {beginTime}, echoed unchanged. */
const rtt: Handler<typeof Cmd.RTT> = (_ctx, session, req) => {
  session.reply({ type: 'rtt', beginTime: req.beginTime });
};

/**
 * CHAT "7" {msg}: everyone else in the room gets "70" {from, msg}; nothing
 * comes back to the sender. Banned words disconnect the sender instead.
 */
const chat: Handler<typeof Cmd.CHAT> = (ctx, session, req) => {
  if (tooLong(ctx, session, req.msg, req.cmd)) return;
  if (ctx.bannedWords.matches(req.msg)) {
    ctx.disconnect(session, 'banned-words');
    return;
  }
  const room = session.room;
  if (room === undefined) return;
  ctx.publish(
    {
      type: 'chat',
      room: room.name,
      id: room.nextId(),
      at: ctx.now(),
      from: session.nickname,
      msg: req.msg,
    },
    session,
  );
};

interface Command<C extends RequestCode> {
  /** Allowed before the client has joined (only CONNECT is). */
  greeting: boolean;
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
};

export function commandFor<C extends RequestCode>(code: C): Command<C> {
  return COMMANDS[code];
}

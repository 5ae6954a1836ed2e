import { grant } from '../protocol/capabilities.js';
import { Cmd, ErrorCode, type ErrorCodeValue, type RequestCode } from '../protocol/codes.js';
import { Outbound } from '../protocol/message-codec.js';
import type { Request, UserEntry } from '../protocol/messages.js';
import type { Limits } from '../protocol/pacing.js';
import type { BannedWords } from './banned-words.js';
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
  find(nickname: string): Session | undefined;
  /** Registers the nickname and adds the session to the room. */
  join(session: Session, nickname: string, room: Room): void;
  rename(session: Session, nickname: string): void;
  disconnect(session: Session, reason: DisconnectReason, detail?: string): void;
}

type RequestOf<C extends RequestCode> = Extract<Request, { cmd: C }>;
type Handler<C extends RequestCode> = (
  ctx: ChatContext,
  session: Session,
  req: RequestOf<C>,
) => void;

/** Sends an error reply to clients that asked for them; others get silence, as in the course server. */
export function refuse(
  session: Session,
  code: ErrorCodeValue,
  message: string,
  ref?: string,
): void {
  if (!session.has('errors')) return;
  session.reply(
    ref === undefined ? { cmd: Cmd.ERROR, code, message } : { cmd: Cmd.ERROR, code, message, ref },
  );
}

/** Refuses a message over --max-message; only opted-in clients can be told. */
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
  if (req.caps !== undefined) session.grant(grant(req.caps));
  const checked = checkNickname(req.nickname);
  if (!checked.ok) {
    if (session.has('errors')) {
      refuse(session, ErrorCode.INVALID_NICKNAME, checked.reason, Cmd.CONNECT);
    } else {
      session.reply({ cmd: Cmd.CONNECT_DUPLICATE_NICKNAME });
    }
    ctx.disconnect(session, 'invalid-nickname');
    return;
  }
  const nickname = checked.nickname;
  if (ctx.find(nickname) !== undefined) {
    session.reply({ cmd: Cmd.CONNECT_DUPLICATE_NICKNAME });
    ctx.disconnect(session, 'nickname-taken');
    return;
  }
  const room = ctx.lobby;
  if (room.isFull) {
    session.reply({ cmd: Cmd.CONNECT_CHATROOM_FULL });
    ctx.disconnect(session, 'room-full');
    return;
  }
  const userCount = room.size + 1;
  room.broadcast(new Outbound({ cmd: Cmd.NEW_USER_ENTERS, nickname, userCount }));
  ctx.join(session, nickname, room);
  const local = session.peer.local;
  session.reply(
    req.caps === undefined
      ? { cmd: Cmd.CONNECT_SUCCESS, serverAddress: [local.ip, local.port], userCount }
      : {
          cmd: Cmd.CONNECT_SUCCESS,
          serverAddress: [local.ip, local.port],
          userCount,
          caps: grant(req.caps),
          limits: ctx.limits,
        },
  );
};

/** USERS "1" -> "10" {users: [[nickname, ip, port], ...]} in join order. */
const users: Handler<typeof Cmd.USERS> = (ctx, session) => {
  const list: UserEntry[] = [];
  for (const member of session.room?.list() ?? []) {
    const { ip, port } = member.address;
    list.push(ctx.hideAddresses ? [member.nickname, 'hidden', 0] : [member.nickname, ip, port]);
  }
  session.reply({ cmd: Cmd.USERS_RESPONSE, users: list });
};

/**
 * WHISPER "2" {to, msg}
 *   -> "20" no such user; "21" to yourself;
 *   -> banned words: the sender is disconnected and nobody receives it;
 *   -> otherwise the receiver gets "70" {from, msg} and the sender "22".
 */
const whisper: Handler<typeof Cmd.WHISPER> = (ctx, session, req) => {
  const target = ctx.find(req.to);
  if (target === undefined) {
    session.reply({ cmd: Cmd.WHISPER_NO_SUCH_USER });
    return;
  }
  if (target === session) {
    session.reply({ cmd: Cmd.WHISPER_MYSELF });
    return;
  }
  if (tooLong(ctx, session, req.msg, req.cmd)) return;
  if (ctx.bannedWords.matches(req.msg)) {
    ctx.disconnect(session, 'banned-words');
    return;
  }
  target.reply(
    target.has('whispers')
      ? { cmd: Cmd.CHAT_RESPONSE, from: session.nickname, msg: req.msg, whisper: true }
      : { cmd: Cmd.CHAT_RESPONSE, from: session.nickname, msg: req.msg },
  );
  session.reply({ cmd: Cmd.WHISPER_SUCCESS });
};

/** EXIT "3": the server closes the connection; the others get "30". */
const exit: Handler<typeof Cmd.EXIT> = (ctx, session) => {
  ctx.disconnect(session, 'exit');
};

/** VERSION "4" -> "40" {serverVersion} */
const version: Handler<typeof Cmd.VERSION> = (ctx, session) => {
  session.reply({ cmd: Cmd.VERSION_RESPONSE, serverVersion: ctx.serverVersion });
};

/**
 * RENAME "5" {newNickname}
 *   -> "50" taken (your own current name included) or unusable;
 *   -> "51" {newNickname}; members with "renames" get "91" {oldNickname, newNickname}.
 */
const rename: Handler<typeof Cmd.RENAME> = (ctx, session, req) => {
  const checked = checkNickname(req.newNickname);
  if (!checked.ok) {
    if (session.has('errors')) {
      refuse(session, ErrorCode.INVALID_NICKNAME, checked.reason, Cmd.RENAME);
    } else {
      session.reply({ cmd: Cmd.RENAME_DUPLICATE_NICKNAME });
    }
    return;
  }
  const newNickname = checked.nickname;
  if (ctx.find(newNickname) !== undefined) {
    session.reply({ cmd: Cmd.RENAME_DUPLICATE_NICKNAME });
    return;
  }
  const oldNickname = session.nickname;
  ctx.rename(session, newNickname);
  session.reply({ cmd: Cmd.RENAME_SUCCESS, newNickname });
  session.room?.broadcast(
    new Outbound({ cmd: Cmd.USER_RENAMED, oldNickname, newNickname }),
    session,
    'renames',
  );
};

/** RTT "6" {beginTime} -> "60" {beginTime}, echoed unchanged. */
const rtt: Handler<typeof Cmd.RTT> = (_ctx, session, req) => {
  session.reply({ cmd: Cmd.RTT_RESPONSE, beginTime: req.beginTime });
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
  session.room?.broadcast(
    new Outbound({ cmd: Cmd.CHAT_RESPONSE, from: session.nickname, msg: req.msg }),
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

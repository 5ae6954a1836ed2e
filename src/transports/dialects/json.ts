import type { Deliverable, Delivery, Encoder } from '../../core/events.js';
import type { Capability } from '../../protocol/capabilities.js';
import { Cmd, ErrorCode, LOBBY } from '../../protocol/codes.js';
import { encodeCourseFrames } from '../../protocol/course-frame.js';
import { encodePlainChatLine, serializeJson, serializeLine } from '../../protocol/message-codec.js';
import type { HistoryEntry, ServerMessage, UserEntry } from '../../protocol/messages.js';
import { actionShownAsChat } from '../../protocol/text.js';

/** The events that happen in a room (whispers do not). */
const ROOM_EVENTS: ReadonlySet<Deliverable['type']> = new Set([
  'joined',
  'left',
  'renamed',
  'chat',
]);

/**
 * The course protocol and confab's JSON extensions: what a client with these
 * capabilities is sent for each event or reply, or undefined when it is sent
 * nothing. A client that negotiated nothing gets the course server's messages
 * exactly (the differential test holds this to the byte).
 */
export function toServerMessage(
  item: Deliverable,
  caps: ReadonlySet<Capability>,
): ServerMessage | undefined {
  // Rooms: a client with "rooms" is told which room each event is in; any
  // other client only ever sees the lobby's, in the course shape. (It is never
  // a member of another room; this holds even if it were.)
  const rooms = caps.has('rooms');
  if (!rooms && ROOM_EVENTS.has(item.type) && (item as { room: string }).room !== LOBBY) {
    return undefined;
  }
  switch (item.type) {
    case 'joined':
      return rooms
        ? {
            cmd: Cmd.NEW_USER_ENTERS,
            nickname: item.nickname,
            userCount: item.count,
            room: item.room,
          }
        : { cmd: Cmd.NEW_USER_ENTERS, nickname: item.nickname, userCount: item.count };
    case 'left':
      return rooms
        ? {
            cmd: Cmd.EXIT_BROADCAST,
            nickname: item.nickname,
            userCount: item.count,
            room: item.room,
          }
        : { cmd: Cmd.EXIT_BROADCAST, nickname: item.nickname, userCount: item.count };
    case 'renamed':
      if (!caps.has('renames')) return undefined;
      return rooms
        ? { cmd: Cmd.USER_RENAMED, oldNickname: item.from, newNickname: item.to, room: item.room }
        : { cmd: Cmd.USER_RENAMED, oldNickname: item.from, newNickname: item.to };
    case 'chat': {
      const [msg, acted] = shownAction(item, caps);
      const chat: ServerMessage = rooms
        ? {
            cmd: Cmd.CHAT_RESPONSE,
            from: item.from,
            msg,
            room: item.room,
            id: item.id,
            at: item.at,
          }
        : { cmd: Cmd.CHAT_RESPONSE, from: item.from, msg };
      if (acted) chat.action = true;
      return chat;
    }
    case 'gap':
      // Ids and epochs mean something only to clients that keep a position.
      if (!caps.has('history')) return undefined;
      return { cmd: Cmd.HISTORY_GAP, room: item.room, epoch: item.epoch, reason: item.reason };
    case 'moderated': {
      if (!caps.has('moderation')) return undefined;
      const notice: ServerMessage = {
        cmd: Cmd.MODERATION_NOTICE,
        action: item.action,
        nickname: item.nickname,
        by: item.by,
        reason: item.reason,
      };
      if (item.seconds !== undefined) notice.seconds = item.seconds;
      return notice;
    }
    case 'whisper':
      // The course protocol cannot tell a whisper from chat; "whispers" marks it.
      return caps.has('whispers')
        ? { cmd: Cmd.CHAT_RESPONSE, from: item.from, msg: item.msg, whisper: true }
        : { cmd: Cmd.CHAT_RESPONSE, from: item.from, msg: item.msg };
    case 'welcome': {
      const serverAddress: [string, number] = [item.address.ip, item.address.port];
      if (item.caps === undefined)
        return { cmd: Cmd.CONNECT_SUCCESS, serverAddress, userCount: item.count };
      const welcome: ServerMessage = {
        cmd: Cmd.CONNECT_SUCCESS,
        serverAddress,
        userCount: item.count,
        caps: [...item.caps],
      };
      if (item.limits !== undefined) welcome.limits = item.limits;
      if (item.motd !== undefined) welcome.motd = item.motd;
      if (item.resume !== undefined) {
        welcome.resume = item.resume.token;
        welcome.resumed = item.resume.resumed;
        welcome.nickname = item.resume.nickname;
      }
      return welcome;
    }
    case 'connect-refused':
      if (item.reason === 'room-full') return { cmd: Cmd.CONNECT_CHATROOM_FULL };
      if (item.reason === 'banned' && caps.has('errors'))
        return error(ErrorCode.BANNED, item.detail, Cmd.CONNECT);
      // The course protocol has no word for an unusable name: it is refused like a taken one.
      if (item.reason === 'invalid' && caps.has('errors'))
        return error(ErrorCode.INVALID_NICKNAME, item.detail, Cmd.CONNECT);
      return { cmd: Cmd.CONNECT_DUPLICATE_NICKNAME };
    case 'members':
      return {
        cmd: Cmd.USERS_RESPONSE,
        users: item.members.map(
          (m): UserEntry =>
            m.address === undefined
              ? [m.nickname, 'hidden', 0]
              : [m.nickname, m.address.ip, m.address.port],
        ),
      };
    case 'whispered':
      return { cmd: Cmd.WHISPER_SUCCESS };
    case 'whisper-refused':
      if (item.reason === 'busy' && caps.has('errors'))
        return error(
          ErrorCode.TRY_AGAIN,
          'the receiver is not keeping up with what they are sent: not delivered, try again in a few seconds',
          Cmd.WHISPER,
        );
      return { cmd: item.reason === 'to-self' ? Cmd.WHISPER_MYSELF : Cmd.WHISPER_NO_SUCH_USER };
    case 'version':
      return { cmd: Cmd.VERSION_RESPONSE, serverVersion: item.version };
    case 'renamed-you':
      return { cmd: Cmd.RENAME_SUCCESS, newNickname: item.nickname };
    case 'rename-refused':
      if (item.reason === 'invalid' && caps.has('errors'))
        return error(ErrorCode.INVALID_NICKNAME, item.detail, Cmd.RENAME);
      // A refused rename keeps the connection: a 1xxx code, not BANNED's 2xxx.
      if (item.reason === 'banned' && caps.has('errors'))
        return error(ErrorCode.INVALID_NICKNAME, item.detail, Cmd.RENAME);
      return { cmd: Cmd.RENAME_DUPLICATE_NICKNAME };
    case 'oper-ok':
      return { cmd: Cmd.OPER_SUCCESS, name: item.name };
    case 'ban-list': {
      const list: ServerMessage = {
        cmd: Cmd.BAN_LIST,
        bans: item.bans.map((b) => ({
          mask: b.mask,
          by: b.by,
          reason: b.reason,
          expires: b.expires,
        })),
      };
      if (item.removed !== undefined) list.removed = item.removed;
      if (item.unsaved !== undefined) list.unsaved = item.unsaved;
      return list;
    }
    case 'rtt':
      return { cmd: Cmd.RTT_RESPONSE, beginTime: item.beginTime };
    case 'room-joined': {
      const joined: ServerMessage = {
        cmd: Cmd.JOIN_ROOM_SUCCESS,
        room: item.room,
        members: [...item.members],
        userCount: item.count,
      };
      const history = item.history;
      if (history !== undefined) {
        joined.epoch = history.epoch;
        joined.top = history.top;
        if (history.recovered !== undefined) joined.recovered = history.recovered;
        if (history.reason !== undefined) joined.reason = history.reason;
      }
      return joined;
    }
    case 'stored': {
      const stored: ServerMessage = {
        cmd: Cmd.CHAT_STORED,
        room: item.room,
        id: item.id,
        at: item.at,
      };
      if (item.cid !== undefined) stored.cid = item.cid;
      if (item.duplicate) stored.duplicate = true;
      return stored;
    }
    case 'history':
      return {
        cmd: Cmd.HISTORY_RESPONSE,
        room: item.room,
        epoch: item.epoch,
        messages: item.messages.map((m): HistoryEntry => {
          if (m.action !== true) return { id: m.id, at: m.at, from: m.from, msg: m.msg };
          const [msg, acted] = shownAction(m, caps);
          const entry: HistoryEntry = { id: m.id, at: m.at, from: m.from, msg };
          if (acted) entry.action = true;
          return entry;
        }),
        more: item.more,
      };
    case 'room-parted':
      return { cmd: Cmd.PART_ROOM_SUCCESS, room: item.room };
    case 'room-list':
      return {
        cmd: Cmd.ROOMS_RESPONSE,
        rooms: item.rooms.map((r) => ({ room: r.name, userCount: r.count, joined: r.joined })),
      };
    case 'error':
      // Course clients are never sent a code their protocol does not have.
      return caps.has('errors') ? error(item.code, item.message, item.ref, item.about) : undefined;
  }
}

/**
 * A chat's text as a client with these capabilities is sent it, and whether it is marked an
 * action (IRC's /me).
 */
function shownAction(
  chat: { readonly msg: string; readonly action?: true },
  caps: ReadonlySet<Capability>,
): [msg: string, action: boolean] {
  if (chat.action !== true) return [chat.msg, false];
  return caps.has('actions') ? [chat.msg, true] : [actionShownAsChat(chat.msg), false];
}

function error(
  code: number,
  message: string,
  ref: string | undefined,
  room?: string,
): ServerMessage {
  const answer: ServerMessage =
    ref === undefined ? { cmd: Cmd.ERROR, code, message } : { cmd: Cmd.ERROR, code, message, ref };
  return room === undefined ? answer : { ...answer, room };
}

/** How one kind of connection frames a server message as bytes. */
export type Framing = (message: ServerMessage) => Uint8Array;

/**
 * JSON lines, for stream clients that negotiated (they split on newlines):
 * plain ASCII chat straight from its strings, anything else through
 * Buffer.from (pooled, cheaper than TextEncoder for small messages).
 */
export const jsonLines: Framing = (m) => encodePlainChatLine(m) ?? Buffer.from(serializeLine(m));
/** For stream clients that negotiated nothing: each message padded to the course client's recv(1024). */
export const courseFrames: Framing = encodeCourseFrames;
/** One JSON object per WebSocket message, no newline. */
export const wsJson: Framing = (m) => Buffer.from(serializeJson(m));

/**
 * The encoders of one framing, one per capability set, so that a delivery is
 * encoded once per (framing, capability set) however many sessions share it.
 */
export class JsonDialect {
  private readonly encoders = new Map<string, Encoder>();

  constructor(private readonly framing: Framing) {}

  encoderFor(caps: ReadonlySet<Capability>): Encoder {
    const key = [...caps].sort().join(',');
    let encoder = this.encoders.get(key);
    if (encoder === undefined) {
      const framing = this.framing;
      encoder = {
        encode(item) {
          const message = toServerMessage(item, caps);
          return message === undefined ? undefined : framing(message);
        },
      };
      this.encoders.set(key, encoder);
    }
    return encoder;
  }
}

/**
 * A session's current encoder, picked again only when its capabilities
 * change (at CONNECT): the lookup costs nothing per message.
 */
export class EncoderCache {
  private caps: ReadonlySet<Capability> | undefined;
  private encoder: Encoder | undefined;

  constructor(private readonly pick: (caps: ReadonlySet<Capability>) => Encoder) {}

  bytes(delivery: Delivery, caps: ReadonlySet<Capability>): Uint8Array | undefined {
    if (caps !== this.caps) {
      this.caps = caps;
      this.encoder = this.pick(caps);
    }
    return delivery.bytes(this.encoder!);
  }
}

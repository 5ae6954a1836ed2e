import type { Capability } from './capabilities.js';
import type { Cmd } from './codes.js';
import type { Limits } from './pacing.js';

// ---- client -> server -------------------------------------------------------

export interface ConnectRequest {
  cmd: typeof Cmd.CONNECT;
  nickname: string;
  /** Present only for clients that opt into extensions. */
  caps?: string[];
  /** Extension ("history"): the token of a session to take back. */
  resume?: string;
  /** Extension ("history"): the last message the client has of each room. */
  since?: RoomPosition[];
  /** Extension ("rooms"): false keeps the client out of the lobby. */
  lobby?: boolean;
}

/** The last message a client has of a room (capability "history"). */
export interface Position {
  epoch: string;
  id: number;
}
export interface RoomPosition extends Position {
  room: string;
}
export interface UsersRequest {
  cmd: typeof Cmd.USERS;
  /**
   * Extension (capability "rooms"): which room to list, the lobby when absent.
   * null: the field was sent but is not a well-formed string (a course client's
   * extra field, ignored; refused for clients with "rooms").
   */
  room?: string | null;
}
export interface WhisperRequest {
  cmd: typeof Cmd.WHISPER;
  to: string;
  msg: string;
}
export interface ExitRequest {
  cmd: typeof Cmd.EXIT;
}
export interface VersionRequest {
  cmd: typeof Cmd.VERSION;
}
export interface RenameRequest {
  cmd: typeof Cmd.RENAME;
  newNickname: string;
}
export interface RttRequest {
  cmd: typeof Cmd.RTT;
  /** A finite number, echoed bit-exactly (the course client sends time.time()). */
  beginTime: number;
}
export interface ChatRequest {
  cmd: typeof Cmd.CHAT;
  msg: string;
  /** As UsersRequest.room. */
  room?: string | null;
  /**
   * Extension ("history"): the client's id for this message, so a re-send is
   * stored once. null: sent but malformed (ignored unless the client has "history").
   */
  cid?: string | null;
  /**
   * Extension ("actions"): the text says what the sender does (IRC's /me). null: sent but
   * not a boolean (ignored unless the client has "actions").
   */
  action?: boolean | null;
}
export interface JoinRoomRequest {
  cmd: typeof Cmd.JOIN_ROOM;
  room: string;
  /** Extension ("history"): replay everything after this message. */
  since?: Position;
}
export interface HistoryRequest {
  cmd: typeof Cmd.HISTORY;
  room: string;
  /** Messages with ids below this; the newest when absent. */
  before?: number;
  /** 1..100, default 50. */
  limit?: number;
}
export interface PartRoomRequest {
  cmd: typeof Cmd.PART_ROOM;
  room: string;
}
export interface RoomsRequest {
  cmd: typeof Cmd.ROOMS;
}

export interface OperRequest {
  cmd: typeof Cmd.OPER;
  name: string;
  password: string;
}
export interface KickRequest {
  cmd: typeof Cmd.KICK;
  nickname: string;
  reason?: string;
}
export interface BanRequest {
  cmd: typeof Cmd.BAN;
  /** A nickname, an IPv4 or IPv6 address, or a CIDR block. */
  mask: string;
  /** Absent: until unbanned. */
  seconds?: number;
  reason?: string;
}
export interface UnbanRequest {
  cmd: typeof Cmd.UNBAN;
  mask: string;
}
export interface BansRequest {
  cmd: typeof Cmd.BANS;
}

export type Request =
  | ConnectRequest
  | UsersRequest
  | WhisperRequest
  | ExitRequest
  | VersionRequest
  | RenameRequest
  | RttRequest
  | ChatRequest
  | OperRequest
  | KickRequest
  | BanRequest
  | UnbanRequest
  | BansRequest
  | JoinRoomRequest
  | PartRoomRequest
  | RoomsRequest
  | HistoryRequest;

// ---- server -> client -------------------------------------------------------

/** [host, port], as Python's socket.getsockname() serialises. */
export type Address = [string, number];
/** [nickname, ip, port] */
export type UserEntry = [string, string, number];
/** One entry of "105". */
export interface RoomEntry {
  room: string;
  userCount: number;
  joined: boolean;
}

/** One stored message in "107". */
export interface HistoryEntry {
  id: number;
  at: number;
  from: string;
  msg: string;
  /** Extension ("actions"): as on "70". */
  action?: true;
}

/** Why a "101" with since could not replay everything after it. */
export type NotRecovered = 'epoch' | 'ahead' | 'deleted' | 'too-many' | 'off';

export interface BanEntry {
  mask: string;
  by: string;
  reason: string;
  /** ms since the epoch, or null for a ban until unbanned. */
  expires: number | null;
}

export interface ModerationNotice {
  cmd: typeof Cmd.MODERATION_NOTICE;
  action: 'kick' | 'ban';
  nickname: string;
  by: string;
  reason: string;
  /** A ban's length; absent when it lasts until unbanned (and for kicks). */
  seconds?: number;
}

export type ServerMessage =
  | { cmd: typeof Cmd.CONNECT_DUPLICATE_NICKNAME }
  | { cmd: typeof Cmd.CONNECT_CHATROOM_FULL }
  | {
      cmd: typeof Cmd.CONNECT_SUCCESS;
      serverAddress: Address;
      userCount: number;
      caps?: Capability[];
      /** Only to clients that sent caps. */
      limits?: Limits;
      /** Extension ("history"): the token that takes this session back. */
      resume?: string;
      resumed?: boolean;
      nickname?: string;
      /** Only to clients that sent caps, joining afresh: the operator's message of the day. */
      motd?: string;
    }
  | { cmd: typeof Cmd.USERS_RESPONSE; users: UserEntry[] }
  | { cmd: typeof Cmd.WHISPER_NO_SUCH_USER }
  | { cmd: typeof Cmd.WHISPER_MYSELF }
  | { cmd: typeof Cmd.WHISPER_SUCCESS }
  | { cmd: typeof Cmd.EXIT_BROADCAST; nickname: string; userCount: number; room?: string }
  | { cmd: typeof Cmd.VERSION_RESPONSE; serverVersion: string }
  | { cmd: typeof Cmd.RENAME_DUPLICATE_NICKNAME }
  | { cmd: typeof Cmd.RENAME_SUCCESS; newNickname: string }
  | { cmd: typeof Cmd.RTT_RESPONSE; beginTime: number }
  | {
      cmd: typeof Cmd.CHAT_RESPONSE;
      from: string;
      msg: string;
      whisper?: true;
      /** Extension (capability "rooms"): room chat only, never whispers. */
      room?: string;
      id?: number;
      at?: number;
      /** Extension (capability "actions"): the text says what `from` does (IRC's /me). */
      action?: true;
    }
  | { cmd: typeof Cmd.NEW_USER_ENTERS; nickname: string; userCount: number; room?: string }
  | { cmd: typeof Cmd.ERROR; code: number; message: string; ref?: string; room?: string }
  | { cmd: typeof Cmd.USER_RENAMED; oldNickname: string; newNickname: string }
  | { cmd: typeof Cmd.OPER_SUCCESS; name: string }
  | { cmd: typeof Cmd.BAN_LIST; bans: BanEntry[]; removed?: boolean; unsaved?: string }
  | ModerationNotice
  | { cmd: typeof Cmd.USER_RENAMED; oldNickname: string; newNickname: string; room?: string }
  | {
      cmd: typeof Cmd.JOIN_ROOM_SUCCESS;
      room: string;
      members: string[];
      userCount: number;
      /** Extension ("history"): the room's epoch and newest id; history up to it follows. */
      epoch?: string;
      top?: number;
      /** Present when the join asked to recover from a position. */
      recovered?: boolean;
      reason?: NotRecovered;
    }
  | {
      cmd: typeof Cmd.CHAT_STORED;
      room: string;
      id: number;
      at: number;
      cid?: string;
      duplicate?: true;
    }
  | {
      cmd: typeof Cmd.HISTORY_RESPONSE;
      room: string;
      epoch: string;
      messages: HistoryEntry[];
      more: boolean;
    }
  | {
      cmd: typeof Cmd.HISTORY_GAP;
      room: string;
      /** The epoch of the chats that follow. */
      epoch: string;
      reason: Extract<NotRecovered, 'epoch' | 'deleted'>;
    }
  | { cmd: typeof Cmd.PART_ROOM_SUCCESS; room: string }
  | { cmd: typeof Cmd.ROOMS_RESPONSE; rooms: RoomEntry[] };

export type ServerCode = ServerMessage['cmd'];
export type MessageOf<C extends ServerCode> = Extract<ServerMessage, { cmd: C }>;

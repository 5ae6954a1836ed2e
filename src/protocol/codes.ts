/**
 * Command codes. "0".."8" and their replies are the course protocol, byte for byte;
 * "71", "9x" and "100".."108" are confab extensions and reach only clients that sent
 * "caps", most only with the capability that defines them (see capabilities.ts
 * and docs/protocol.md).
 */
export const Cmd = {
  CONNECT: '0',
  CONNECT_DUPLICATE_NICKNAME: '01',
  CONNECT_CHATROOM_FULL: '02',
  CONNECT_SUCCESS: '03',
  USERS: '1',
  USERS_RESPONSE: '10',
  WHISPER: '2',
  WHISPER_NO_SUCH_USER: '20',
  WHISPER_MYSELF: '21',
  WHISPER_SUCCESS: '22',
  EXIT: '3',
  EXIT_BROADCAST: '30',
  VERSION: '4',
  VERSION_RESPONSE: '40',
  RENAME: '5',
  RENAME_DUPLICATE_NICKNAME: '50',
  RENAME_SUCCESS: '51',
  RTT: '6',
  RTT_RESPONSE: '60',
  CHAT: '7',
  CHAT_RESPONSE: '70',
  NEW_USER_ENTERS: '8',
  /** Extension (capability "errors"): a request failed or the server is disconnecting you. */
  ERROR: '90',
  /** Extension (capability "renames"): another member changed nickname. */
  USER_RENAMED: '91',
  /** Extension (capability "moderation"), client -> server: become an operator. */
  OPER: '92',
  /** Extension, server -> client: you are an operator now. */
  OPER_SUCCESS: '93',
  /** Extension, client -> server (operators): disconnect a member. */
  KICK: '94',
  /** Extension, client -> server (operators): ban a nickname or address. */
  BAN: '95',
  /** Extension, client -> server (operators): lift a ban. */
  UNBAN: '96',
  /** Extension, client -> server (operators): list the bans. */
  BANS: '97',
  /** Extension, server -> client: the current ban list (the answer to 95, 96 and 97). */
  BAN_LIST: '98',
  /** Extension (capability "moderation"): a member was kicked or banned. */
  MODERATION_NOTICE: '99',
  // ---- rooms (capability "rooms") ----
  JOIN_ROOM: '100',
  JOIN_ROOM_SUCCESS: '101',
  PART_ROOM: '102',
  PART_ROOM_SUCCESS: '103',
  ROOMS: '104',
  ROOMS_RESPONSE: '105',
  // ---- history (capability "history", with "rooms") ----
  /** Server -> client: your CHAT is stored, with this id. */
  CHAT_STORED: '71',
  HISTORY: '106',
  HISTORY_RESPONSE: '107',
  /**
   * Server -> client ("history"): the room's live chats have a hole this server
   * could not fill (its history was lost or trimmed first).
   */
  HISTORY_GAP: '108',
} as const;

/** The room every client joins at CONNECT; course clients know no other. */
export const LOBBY = 'lobby';

export type CmdName = keyof typeof Cmd;
export type CmdCode = (typeof Cmd)[CmdName];

/** The codes a client may send. */
export const REQUEST_CODES = [
  Cmd.CONNECT,
  Cmd.USERS,
  Cmd.WHISPER,
  Cmd.EXIT,
  Cmd.VERSION,
  Cmd.RENAME,
  Cmd.RTT,
  Cmd.CHAT,
  Cmd.OPER,
  Cmd.KICK,
  Cmd.BAN,
  Cmd.UNBAN,
  Cmd.BANS,
  Cmd.JOIN_ROOM,
  Cmd.PART_ROOM,
  Cmd.ROOMS,
  Cmd.HISTORY,
] as const;
export type RequestCode = (typeof REQUEST_CODES)[number];

/**
 * Error codes carried by "90". Ranges tell a client what to do:
 *   1xxx  the request was refused; the connection stays open.
 *   2xxx  you were disconnected; do not reconnect automatically (fix the cause first).
 *   3xxx  you were disconnected for a transient reason; reconnecting with backoff is fine.
 */
export const ErrorCode = {
  MALFORMED_JSON: 1000,
  NOT_AN_OBJECT: 1001,
  INVALID_FIELD: 1002,
  UNKNOWN_COMMAND: 1003,
  INVALID_ENCODING: 1004,
  ALREADY_CONNECTED: 1005,
  INVALID_NICKNAME: 1006,
  MESSAGE_TOO_LONG: 1007,
  RATE_LIMITED: 1008,
  NESTED_TOO_DEEP: 1009,
  NOT_AUTHORIZED: 1010,
  NO_SUCH_USER: 1011,
  // ---- rooms ----
  ROOM_FULL: 1012,
  NO_SUCH_ROOM: 1013,
  TOO_MANY_ROOMS: 1014,
  INVALID_ROOM_NAME: 1015,
  ALREADY_IN_ROOM: 1016,
  CANNOT_LEAVE_LOBBY: 1017,
  NOT_IN_ROOM: 1018,
  /** JOIN_ROOM would make a room past --max-rooms. */
  TOO_MANY_ROOMS_ON_SERVER: 1019,
  /** The frame holds more object fields and array elements than any request has (MAX_VALUES). */
  TOO_MANY_VALUES: 1020,
  /** BAN of a new mask while the ban list holds MAX_BANS bans in force. */
  TOO_MANY_BANS: 1021,
  /**
   * Nothing was done; ask again in a few seconds. A WHISPER's receiver is not keeping up with
   * what it is sent; or the cluster lost this member's registration for a moment (Redis
   * restarted empty) and the node has not registered it again yet, or a KICK's target is on
   * a node that did not hear it.
   */
  TRY_AGAIN: 1022,

  BANNED_WORDS: 2001,
  FRAME_TOO_LARGE: 2002,
  PROTOCOL_VIOLATION: 2003,
  FLOODING: 2004,
  KICKED: 2005,
  BANNED: 2006,
  /** A CONNECT with this session's resume token took it over. */
  REPLACED: 2007,

  SERVER_SHUTDOWN: 3001,
  SLOW_CONSUMER: 3002,
  TIMEOUT: 3003,
  TOO_MANY_CONNECTIONS: 3004,
  INTERNAL_ERROR: 3005,
  /** This node lost the cluster's shared state (Redis) for too long: reconnect, perhaps to another node. */
  CLUSTER_UNAVAILABLE: 3006,
} as const;
export type ErrorCodeName = keyof typeof ErrorCode;
export type ErrorCodeValue = (typeof ErrorCode)[ErrorCodeName];

/** Whether a client should reconnect after being disconnected with this code. */
export function mayReconnect(code: number): boolean {
  return code >= 3000 && code < 4000;
}

/**
 * How long a restored connection must last before a client's next loss starts its waits
 * again from the shortest; until then they go on growing, as for attempts that failed
 * outright. A server that takes each connection and closes it at once (its disk full, every
 * chat closing its sender) was otherwise reconnected to several times a second for ever,
 * each time a join and a leave for the room. The client library and the web page both keep it:
 * a policy of confab's clients, not part of the protocol.
 */
export const RECONNECT_STABLE_MS = 10_000;

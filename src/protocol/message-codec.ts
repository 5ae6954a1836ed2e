import { Cmd } from './codes.js';
import type { ServerMessage } from './messages.js';
import { inertJson, TERMINAL_UNSAFE_RANGES } from './text.js';

/**
 * What JSON.stringify escapes in a string (quote, backslash, control characters, and lone
 * surrogates: any surrogate is checked, for speed), and what inertJson escapes after it.
 */
const NEEDS_ESCAPE = new RegExp(`["\\\\\\u0000-\\u001f${TERMINAL_UNSAFE_RANGES}\\ud800-\\udfff]`);

/** inertJson(JSON.stringify(s)) for a string, without its cost when nothing needs escaping. */
function jsonString(s: string): string {
  return NEEDS_ESCAPE.test(s) ? inertJson(JSON.stringify(s)) : `"${s}"`;
}

/** A number as JSON.stringify writes it. */
function jsonNumber(n: number): string {
  return Number.isFinite(n) ? String(n) : 'null';
}

/**
 * JSON.stringify of a server message, with the characters a terminal may obey escaped
 * (inertJson: a client relaying text it got sends it back as it came, C1 or bidi
 * controls and all, and someone may watch the stream raw). Fast paths for the messages
 * sent as often as chat: no walk over the object, and plain strings copied as they are.
 * Same text as inertJson(JSON.stringify()) (tested), for the fields in the order the
 * dialects build them.
 */
export function serializeJson(message: ServerMessage): string {
  if (message.cmd === Cmd.CHAT_RESPONSE && message.whisper === undefined) {
    const head = `{"cmd":"70","from":${jsonString(message.from)},"msg":${jsonString(message.msg)}`;
    if (message.room === undefined)
      return message.action === undefined ? `${head}}` : `${head},"action":true}`;
    const id = message.id === undefined ? '' : `,"id":${jsonNumber(message.id)}`;
    const at = message.at === undefined ? '' : `,"at":${jsonNumber(message.at)}`;
    const action = message.action === undefined ? '' : ',"action":true';
    return `${head},"room":${jsonString(message.room)}${id}${at}${action}}`;
  }
  // The sender's "71" for each of its chats (clients with "history").
  if (message.cmd === Cmd.CHAT_STORED) {
    const cid = message.cid === undefined ? '' : `,"cid":${jsonString(message.cid)}`;
    const duplicate = message.duplicate === undefined ? '' : `,"duplicate":${message.duplicate}`;
    return `{"cmd":"71","room":${jsonString(message.room)},"id":${jsonNumber(message.id)},"at":${jsonNumber(message.at)}${cid}${duplicate}}`;
  }
  return inertJson(JSON.stringify(message));
}

/** confab's framing as text: one JSON object, then "\n". */
export function serializeLine(message: ServerMessage): string {
  return `${serializeJson(message)}\n`;
}

const CHAT_HEAD = Array.from('{"cmd":"70","from":"', (c) => c.charCodeAt(0));
const CHAT_MID = Array.from('","msg":"', (c) => c.charCodeAt(0));
const CHAT_TAIL = Array.from('"}\n', (c) => c.charCodeAt(0));
const SLAB_SIZE = 64 * 1024;
let slab = new Uint8Array(SLAB_SIZE);
let slabUsed = 0;

/** Copies printable ASCII other than `"` and `\`; returns the new offset, or -1 at anything else. */
function putPlainAscii(out: Uint8Array, at: number, s: string): number {
  let o = at;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return -1;
    out[o++] = c;
  }
  return o;
}

function putBytes(out: Uint8Array, at: number, bytes: readonly number[]): number {
  for (let i = 0; i < bytes.length; i++) out[at + i] = bytes[i]!;
  return at + bytes.length;
}

/**
 * The bytes of serializeLine() for a plain "70" chat whose sender and text are
 * printable ASCII without quotes or backslashes: one pass straight into a
 * shared slab, with no string built and no escaping to check twice. Anything
 * else returns undefined and takes the general path. Same bytes (tested).
 */
export function encodePlainChatLine(message: ServerMessage): Uint8Array | undefined {
  if (
    message.cmd !== Cmd.CHAT_RESPONSE ||
    message.whisper !== undefined ||
    message.room !== undefined ||
    message.action !== undefined
  )
    return undefined;
  const { from, msg } = message;
  const size = CHAT_HEAD.length + from.length + CHAT_MID.length + msg.length + CHAT_TAIL.length;
  if (size > SLAB_SIZE / 4) return undefined;
  if (SLAB_SIZE - slabUsed < size) {
    // Views handed out keep the old slab alive until their writes are done.
    slab = new Uint8Array(SLAB_SIZE);
    slabUsed = 0;
  }
  const start = slabUsed;
  let at = putBytes(slab, start, CHAT_HEAD);
  at = putPlainAscii(slab, at, from);
  if (at < 0) return undefined;
  at = putBytes(slab, at, CHAT_MID);
  at = putPlainAscii(slab, at, msg);
  if (at < 0) return undefined;
  at = putBytes(slab, at, CHAT_TAIL);
  slabUsed = at;
  return slab.subarray(start, at);
}

export type ParsedServerMessage = { cmd: string } & Record<string, unknown>;

/**
 * Parses a server frame for a client. Loose on purpose: a client must survive a
 * newer server, so unknown codes and extra fields pass through to the caller.
 */
export function parseServerText(text: string): ParsedServerMessage | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const cmd = (value as Record<string, unknown>).cmd;
  if (typeof cmd !== 'string') return undefined;
  return value as ParsedServerMessage;
}

/** Codes that answer a request from the same connection (not broadcasts). */
export const REPLY_CODES: Readonly<Record<string, readonly string[]>> = {
  [Cmd.CONNECT]: [Cmd.CONNECT_DUPLICATE_NICKNAME, Cmd.CONNECT_CHATROOM_FULL, Cmd.CONNECT_SUCCESS],
  [Cmd.USERS]: [Cmd.USERS_RESPONSE],
  [Cmd.WHISPER]: [Cmd.WHISPER_NO_SUCH_USER, Cmd.WHISPER_MYSELF, Cmd.WHISPER_SUCCESS],
  [Cmd.VERSION]: [Cmd.VERSION_RESPONSE],
  [Cmd.RENAME]: [Cmd.RENAME_DUPLICATE_NICKNAME, Cmd.RENAME_SUCCESS],
  [Cmd.RTT]: [Cmd.RTT_RESPONSE],
  [Cmd.OPER]: [Cmd.OPER_SUCCESS],
  [Cmd.BAN]: [Cmd.BAN_LIST],
  [Cmd.UNBAN]: [Cmd.BAN_LIST],
  [Cmd.BANS]: [Cmd.BAN_LIST],
  [Cmd.JOIN_ROOM]: [Cmd.JOIN_ROOM_SUCCESS],
  [Cmd.PART_ROOM]: [Cmd.PART_ROOM_SUCCESS],
  [Cmd.ROOMS]: [Cmd.ROOMS_RESPONSE],
  [Cmd.HISTORY]: [Cmd.HISTORY_RESPONSE],
};
